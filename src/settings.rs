//! `Settings`: every process setting, each with its flag, environment variable, default and help.

use std::{path::PathBuf, time::Duration};

use clap::{builder::TypedValueParser as _, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::{config::secret::Secret, keys::Namespace, verify::ip::IpList};

/// Where webhook and connection configs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// `webhooks.json` and `connections.json`, watched for changes.
    File,
    /// etcd under `ETCD_PREFIX`, watched for changes.
    Etcd,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::File => "file",
            Backend::Etcd => "etcd",
        }
    }
}

/// What the router does when the spool's files are damaged at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnDamage {
    /// Refuse to start (exit 1) and say what is damaged.
    Refuse,
    /// Keep every readable record, log what was lost, and serve.
    Salvage,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// How a connector pulls its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum ConnectorProtocol {
    Websocket,
    LongPoll,
}

/// Switchyard: a read-only, etcd-driven webhook receiver and router.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Address to listen on: an IP address (`0.0.0.0` all IPv4, `::` all IPv6, `127.0.0.1`).
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,

    /// Port to listen on (0 picks a free port).
    #[arg(long, env = "PORT", default_value_t = 8000)]
    pub port: u16,

    /// Where config comes from: `file` or `etcd`.
    #[arg(long, env = "CONFIG_BACKEND", value_enum, default_value_t = Backend::File)]
    pub config_backend: Backend,

    /// Webhooks file of the file backend (object: webhook id -> webhook config).
    #[arg(
        long,
        env = "WEBHOOKS_CONFIG_FILE",
        default_value = "config/webhooks.json"
    )]
    pub webhooks_config_file: PathBuf,

    /// Connections file of the file backend (object: connection name -> connection config).
    #[arg(
        long,
        env = "CONNECTIONS_CONFIG_FILE",
        default_value = "config/connections.json"
    )]
    pub connections_config_file: PathBuf,

    /// etcd host (used when ETCD_ENDPOINTS is not set).
    #[arg(long, env = "ETCD_HOST", default_value = "localhost")]
    pub etcd_host: String,

    /// etcd client port (used when ETCD_ENDPOINTS is not set).
    #[arg(long, env = "ETCD_PORT", default_value_t = 2379)]
    pub etcd_port: u16,

    /// Comma-separated etcd endpoints, e.g. `http://10.0.0.1:2379,http://10.0.0.2:2379`;
    /// wins over ETCD_HOST/ETCD_PORT.
    #[arg(long, env = "ETCD_ENDPOINTS")]
    pub etcd_endpoints: Option<String>,

    /// Key prefix of all Switchyard config in etcd.
    #[arg(long, env = "ETCD_PREFIX", default_value = "/cwm/")]
    pub etcd_prefix: String,

    /// Namespace of `/webhook/<id>` and of every file-backend webhook.
    #[arg(long, env = "ETCD_NAMESPACE", default_value = "default")]
    pub etcd_namespace: Namespace,

    /// etcd user (auth enabled clusters).
    #[arg(long, env = "ETCD_USERNAME")]
    pub etcd_username: Option<String>,

    /// etcd password (never logged).
    #[arg(long, env = "ETCD_PASSWORD", hide_env_values = true)]
    pub etcd_password: Option<Secret>,

    /// CA certificate (PEM) to verify etcd's server certificate; enables TLS (`https://`).
    #[arg(long, env = "ETCD_CA_FILE")]
    pub etcd_ca_file: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS with etcd; needs ETCD_KEY_FILE.
    #[arg(long, env = "ETCD_CERT_FILE")]
    pub etcd_cert_file: Option<PathBuf>,

    /// Client private key (PEM) for mutual TLS with etcd; needs ETCD_CERT_FILE.
    #[arg(long, env = "ETCD_KEY_FILE")]
    pub etcd_key_file: Option<PathBuf>,

    /// Keys that open sealed credentials (`sealed:v1:<key-id>:...`): one `key-id=base64key`
    /// per line (32-byte keys); the first seals, all open. Unset: sealed values are refused.
    #[arg(long, env = "SEAL_KEYS_FILE")]
    pub seal_keys_file: Option<PathBuf>,

    /// Largest accepted request body in bytes for a webhook that sets no `max_body_bytes` (and
    /// whose preset brings no size of its own); larger bodies get 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_body_bytes: u64,

    /// The largest `max_body_bytes` a webhook may set (or its preset bring, e.g. GitHub's
    /// 25 MiB); a larger one makes the entry invalid.
    #[arg(long, env = "MAX_BODY_BYTES_CEILING", default_value_t = 32 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_body_bytes_ceiling: u64,

    /// Bytes of request bodies held in memory at once, from their arrival until their request
    /// is answered; a body that does not fit gets 503 `overloaded` with `Retry-After`.
    #[arg(long, env = "BODY_MEMORY_BYTES", default_value_t = 256 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_memory_bytes: u64,

    /// Destinations one webhook may have (its `chain`, or 1 for `module`); a longer chain makes
    /// the entry invalid. Each destination costs work, memory and, spooled, a queue per request.
    #[arg(long, env = "MAX_CHAIN_LENGTH", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256).map(usize::from))]
    pub max_chain_length: usize,

    /// Deliveries in flight at most (each holds its body); past it requests get 503 at once.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,

    /// Milliseconds a request may take to send its whole body once its head arrived; slower
    /// bodies get 408 `request_timeout` (stalled uploads cannot hold a slot longer).
    #[arg(long, env = "BODY_READ_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub body_read_timeout_ms: u64,

    /// Request bodies being read at once, at most; past it requests get 503 `overloaded` at once.
    /// Separate from MAX_IN_FLIGHT: a body holds a delivery slot only once it is complete.
    #[arg(long, env = "MAX_BODY_READERS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_body_readers: u32,

    /// Bodies one client (address, or /64 for IPv6; after TRUSTED_PROXIES) may be sending at
    /// once; past it its requests get 429 `too_many_uploads`. With the defaults, 100 addresses
    /// stalling every upload they can hold take 800 of the 1,024 reader slots.
    #[arg(long, env = "MAX_BODY_READERS_PER_CLIENT", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_body_readers_per_client: u32,

    /// Seconds an idle keep-alive connection stays open (0 turns keep-alive off). Keep it above
    /// your load balancer's idle timeout.
    #[arg(long, env = "KEEP_ALIVE_SECONDS", default_value_t = 75, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub keep_alive_seconds: u64,

    /// Milliseconds a new connection has to send a complete request head; then 408.
    #[arg(long, env = "CLIENT_REQUEST_TIMEOUT_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub client_request_timeout_ms: u64,

    /// Milliseconds to wait for a client to close after the response before dropping it.
    #[arg(long, env = "CLIENT_DISCONNECT_TIMEOUT_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub client_disconnect_timeout_ms: u64,

    /// Open connections at most, for the whole process (split across HTTP workers); past it new
    /// connections wait in the kernel's accept queue.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 25_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Address of the admin listener (with ADMIN_PORT).
    #[arg(long, env = "ADMIN_HOST", default_value = "127.0.0.1")]
    pub admin_host: String,

    /// Comma-separated host names the admin listener answers to, besides IP addresses
    /// (default `localhost`). A request with any other `Host`, or with an `Origin` header, is
    /// refused 403: a web page cannot reach the admin endpoints through DNS rebinding.
    #[arg(long, env = "ADMIN_HOSTS", default_value = "localhost", value_parser = host_list)]
    pub admin_hosts: HostList,

    /// Port of the admin listener: when set, `/metrics` and `/status` are served only there
    /// (404 on the public port); `/health` is served on both.
    #[arg(long, env = "ADMIN_PORT")]
    pub admin_port: Option<u16>,

    /// Comma-separated proxies (IPs or CIDRs) whose `X-Forwarded-For` is believed; from any other
    /// peer the socket address is the client address.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: IpList,

    /// Comma-separated networks (IPs or CIDRs) the `http` module may connect to. Empty: any
    /// address but loopback, link-local (cloud metadata), unspecified, multicast and broadcast.
    #[arg(long, env = "HTTP_ALLOWED_NETWORKS", default_value = "")]
    pub http_allowed_networks: crate::connections::Networks,

    /// Webhooks that get their own metric labels; the rest share `_other` (bounds memory).
    #[arg(long, env = "METRICS_MAX_WEBHOOKS", default_value_t = 1000)]
    pub metrics_max_webhooks: usize,

    /// Log format: `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in `tracing` syntax, e.g. `info` or `switchyard=debug,info`.
    #[arg(
        long = "rust-log",
        alias = "log",
        env = "RUST_LOG",
        default_value = "info"
    )]
    pub log_filter: String,

    /// HTTP worker threads (0: one per CPU core; at most 256).
    #[arg(long, env = "HTTP_WORKERS", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=256).map(usize::from))]
    pub http_workers: usize,

    /// Directory of the spool (deliveries a destination could not take yet, kept on local disk
    /// and forwarded when it is back). Empty turns the spool off: every webhook then behaves as
    /// `"spool": "off"`. One directory per instance.
    // Any path, the empty one included (clap's path parser refuses an empty value, which is how
    // the spool is turned off).
    #[arg(long, env = "SPOOL_DIR", default_value = "data/spool", value_parser = any_path)]
    pub spool_dir: PathBuf,

    /// Connector mode: the public channel this instance pulls,
    /// `wss://host/connect/v1/<channel>` (`ws://` only with CONNECTOR_ALLOW_INSECURE=true).
    /// Its messages are delivered by this instance's own webhooks.
    #[arg(long, env = "CONNECTOR_URL")]
    pub connector_url: Option<String>,

    /// The channel's token (a connector's credential; never logged).
    #[arg(long, env = "CONNECTOR_TOKEN", hide_env_values = true)]
    pub connector_token: Option<String>,

    /// A file holding the channel's token (instead of CONNECTOR_TOKEN).
    #[arg(long, env = "CONNECTOR_TOKEN_FILE")]
    pub connector_token_file: Option<PathBuf>,

    /// Allow `ws://` and `http://` CONNECTOR_URLs (the token then travels in clear): tests and
    /// private links only.
    #[arg(long, env = "CONNECTOR_ALLOW_INSECURE", default_value_t = false, action = clap::ArgAction::Set)]
    pub connector_allow_insecure: bool,

    /// CA certificate(s) (PEM) the public side's certificate must chain to, besides the
    /// system's roots.
    #[arg(long, env = "CONNECTOR_CA_FILE")]
    pub connector_ca_file: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS with the public side, with CONNECTOR_KEY_FILE.
    #[arg(long, env = "CONNECTOR_CERT_FILE")]
    pub connector_cert_file: Option<PathBuf>,

    /// Client private key (PEM) for mutual TLS.
    #[arg(long, env = "CONNECTOR_KEY_FILE")]
    pub connector_key_file: Option<PathBuf>,

    /// How the connector pulls: `websocket`, or `long_poll` where WebSockets are blocked.
    #[arg(long, env = "CONNECTOR_PROTOCOL", value_enum, default_value_t = ConnectorProtocol::Websocket)]
    pub connector_protocol: ConnectorProtocol,

    /// The namespace whose webhooks deliver the channel's messages (default: the public
    /// webhook's own namespace).
    #[arg(long, env = "CONNECTOR_NAMESPACE")]
    pub connector_namespace: Option<String>,

    /// The private side's etcd (connector mode): routes come from there (TLS and auth as
    /// ETCD_*), else from the files.
    #[arg(long, env = "CONNECTOR_ETCD_HOST")]
    pub connector_etcd_host: Option<String>,

    /// The private side's etcd port (default 2379).
    #[arg(long, env = "CONNECTOR_ETCD_PORT")]
    pub connector_etcd_port: Option<u16>,

    /// The private side's key prefix (default ETCD_PREFIX).
    #[arg(long, env = "CONNECTOR_ETCD_PREFIX")]
    pub connector_etcd_prefix: Option<String>,

    /// Bytes the spool may hold; when full, requests that need it get 503 + `Retry-After` and
    /// nothing already acknowledged is dropped (default 1 GiB; at least 1 MiB).
    #[arg(long, env = "SPOOL_MAX_BYTES", default_value_t = 1 << 30, value_parser = clap::value_parser!(u64).range(1 << 20..))]
    pub spool_max_bytes: u64,

    /// Percent of SPOOL_MAX_BYTES that the queued requests and dead letters of one namespace may
    /// hold, so one
    /// tenant whose destination is down (or that spools everything) cannot take the whole spool
    /// from the others (1-100; 100 for a single-tenant instance). The file backend, with its one
    /// namespace, always uses the whole spool.
    #[arg(long, env = "SPOOL_NAMESPACE_SHARE", default_value_t = 25, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub spool_namespace_share: u8,

    /// Spooled destinations forwarded at once (1-1024). Any number of destinations may have a
    /// backlog; this many take a step at a time, so threads and memory stay flat however many
    /// are down.
    #[arg(long, env = "SPOOL_MAX_FORWARDS", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024).map(usize::from))]
    pub spool_max_forwards: usize,

    /// Milliseconds a request waits for its spool write to be durable; past it the request
    /// gets 503 `spool_unavailable` (never 202) and `/health` shows the spool `degraded`.
    #[arg(long, env = "SPOOL_WRITE_TIMEOUT_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub spool_write_timeout_ms: u64,

    /// When the spool's files are damaged at start (a damaged journal frame, a missing or cut
    /// file): `refuse` exits 1 naming the file; `salvage` keeps every readable record, logs
    /// what was lost and serves (as `switchyard spool recover` does).
    #[arg(long, env = "SPOOL_ON_DAMAGE", value_enum, default_value_t = OnDamage::Refuse)]
    pub spool_on_damage: OnDamage,

    /// With `"spool": "on_failure"`, how long (ms) the destinations get to acknowledge before the
    /// request is spooled instead (capped by the webhook's `timeout_ms`), so an outage is
    /// answered quickly: senders such as Slack give up after 3 s.
    #[arg(long, env = "SPOOL_HANDOFF_MS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub spool_handoff_ms: u64,

    /// Most delivery ids the in-process deduplication store keeps (all webhooks with `dedup`
    /// together); when full, the oldest go first (the window shortens, memory does not grow).
    #[arg(long, env = "DEDUP_MAX_KEYS", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub dedup_max_keys: u64,

    /// Seconds `/health` answers 503 `draining` after SIGTERM/SIGINT while requests are still
    /// served, so load balancers stop sending before the listener closes.
    #[arg(long, env = "SHUTDOWN_DRAIN_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_drain_seconds: u64,

    /// Seconds to let in-flight requests and background tasks finish on SIGTERM/SIGINT.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_grace_seconds: u64,
}

/// The command line: settings, and optionally one of the config tools.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "switchyard",
    version,
    about,
    args_conflicts_with_subcommands = false
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

/// Config tools; without one, the server runs.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Validate every entry exactly as the server would; print each problem with its key and
    /// reason; exit 1 if any. Checks the files of the file backend, or etcd with --etcd.
    Check {
        /// Webhooks file (default: WEBHOOKS_CONFIG_FILE).
        #[arg(long)]
        webhooks: Option<PathBuf>,
        /// Connections file (default: CONNECTIONS_CONFIG_FILE).
        #[arg(long)]
        connections: Option<PathBuf>,
        /// Check the entries under ETCD_PREFIX in etcd instead of files.
        #[arg(long, conflicts_with_all = ["webhooks", "connections"])]
        etcd: bool,
        /// Show how a request to this webhook (`<namespace>/<id>`, or `<id>` in ETCD_NAMESPACE)
        /// would be routed: which conditions of its `filter` and each `when` match, and where
        /// it would go. Sends nothing.
        #[arg(long, value_name = "WEBHOOK")]
        explain: Option<String>,
        /// The request's body, for --explain.
        #[arg(long, requires = "explain", value_name = "FILE")]
        body: Option<PathBuf>,
        /// A request header `Name: value`, for --explain (repeatable).
        #[arg(long = "header", requires = "explain", value_name = "NAME:VALUE")]
        headers: Vec<String>,
        /// The request's query string (`a=1&b=2`), for --explain.
        #[arg(long, requires = "explain")]
        query: Option<String>,
    },
    /// Write a file-backend config into etcd under the key layout (webhooks into --namespace,
    /// connections into global). Writes nothing when any entry is invalid, or when a key already
    /// holds a different value (unless --force).
    Migrate {
        #[arg(long)]
        webhooks: PathBuf,
        #[arg(long)]
        connections: PathBuf,
        #[arg(long)]
        namespace: Namespace,
        /// Print the plan (put, unchanged, conflict) without writing.
        #[arg(long)]
        dry_run: bool,
        /// Overwrite keys that hold a different value.
        #[arg(long)]
        force: bool,
    },
    /// Print one namespace's webhooks from etcd as a webhooks.json file (and write the global
    /// connections as a connections.json file with --connections). Exit 1 when any entry was
    /// skipped or would be refused by the server.
    Export {
        #[arg(long)]
        namespace: Namespace,
        /// Also write the global connections to this file.
        #[arg(long)]
        connections: Option<PathBuf>,
    },
    /// Seal a secret read from stdin for one field of one entry; prints the `sealed:v1:...`
    /// value to write in that field. Keys from SEAL_KEYS_FILE.
    Seal {
        /// The key to seal with (default: the first in SEAL_KEYS_FILE).
        #[arg(long)]
        key_id: Option<String>,
        /// The entry's key: `/cwm/acme/webhooks/github` (or without the prefix).
        #[arg(long)]
        entry: String,
        /// The field, dotted: `hmac.secret`, `chain.0.module-config.sign.secret`,
        /// `headers.X-Api-Key`.
        #[arg(long)]
        field: String,
    },
    /// The spool of SPOOL_DIR: its state, dead letters, replay, purge. Works on the directory
    /// when no instance runs, through the running instance's admin listener when one does.
    Spool {
        #[command(subcommand)]
        action: SpoolCommand,
        /// The instance's admin URL (default: the directory, or this host's ADMIN_PORT / PORT
        /// when an instance holds it).
        #[arg(long, global = true)]
        url: Option<String>,
    },
}

/// `switchyard spool ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum SpoolCommand {
    /// Depth, bytes, oldest entry, retries and dead letters per destination (JSON).
    Status,
    /// List dead letters, oldest first (JSON; bodies are not printed).
    DeadLetters {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Put dead letters back into their destination's queue (a fresh retry horizon), or a
    /// channel's back at its end (`--channel`, connector mode).
    Replay {
        /// Dead letter ids (from `dead-letters`).
        #[arg(long = "id", required_unless_present_any = ["all", "channel"], conflicts_with_all = ["all", "channel"])]
        ids: Vec<u64>,
        #[arg(long, conflicts_with = "channel")]
        all: bool,
        /// Every dead letter of this channel.
        #[arg(long)]
        channel: Option<String>,
    },
    /// With the instance stopped: keep every readable record of damaged spool files, start the
    /// journal afresh, and print what was lost (JSON). Exit 0, also when nothing was damaged.
    Recover {
        /// The spool directory (default: SPOOL_DIR).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Delete dead letters for good; asks for confirmation unless --yes.
    Purge {
        #[arg(long = "id", required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<u64>,
        #[arg(long)]
        all: bool,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

impl Cli {
    /// Parses flags and environment; the error is ready to print.
    pub fn from_args<I, T>(args: I) -> Result<Self, SettingsError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        match Self::try_parse_from(args) {
            Ok(mut cli) => {
                cli.settings.connector_etcd();
                cli.settings.validate().map(|()| cli)
            }
            Err(e) => match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    Err(SettingsError::Info(e.render().to_string()))
                }
                _ => Err(SettingsError::Invalid(one_line(&e))),
            },
        }
    }
}

/// Why settings were refused: one line naming the setting.
#[derive(Debug)]
pub enum SettingsError {
    /// `--help` or `--version`: print and exit 0.
    Info(String),
    /// An invalid setting: print and exit 64.
    Invalid(String),
}

/// A comma-separated list of host names (`ADMIN_HOSTS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostList(pub Vec<String>);

fn host_list(value: &str) -> Result<HostList, String> {
    let names: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let name = |n: &String| {
        n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    match names.iter().find(|n| !name(n)) {
        Some(bad) => Err(format!("{bad:?} is not a host name (no port, no scheme)")),
        None => Ok(HostList(names)),
    }
}

/// A path as given, empty included.
fn any_path(value: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(value))
}

impl Settings {
    /// Parses flags and environment (no subcommand); the error is ready to print.
    pub fn from_args<I, T>(args: I) -> Result<Self, SettingsError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Cli::from_args(args).map(|cli| cli.settings)
    }

    /// With CONNECTOR_ETCD_HOST, the private side's routes come from that etcd.
    fn connector_etcd(&mut self) {
        if let Some(host) = self.connector_etcd_host.clone() {
            self.config_backend = Backend::Etcd;
            self.etcd_endpoints = None;
            self.etcd_host = host;
            self.etcd_port = self.connector_etcd_port.unwrap_or(2379);
            if let Some(prefix) = &self.connector_etcd_prefix {
                self.etcd_prefix = prefix.clone();
            }
        }
    }

    /// The connector's token: CONNECTOR_TOKEN, or the first line of CONNECTOR_TOKEN_FILE.
    pub fn connector_token(&self) -> Result<String, String> {
        match (&self.connector_token, &self.connector_token_file) {
            (Some(token), None) => Ok(token.clone()),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|text| text.lines().next().unwrap_or_default().trim().to_owned())
                .map_err(|e| format!("CONNECTOR_TOKEN_FILE {}: {e}", path.display())),
            _ => Err("give CONNECTOR_TOKEN or CONNECTOR_TOKEN_FILE (one of them)".into()),
        }
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |name: &str, why: String| {
            Err(SettingsError::Invalid(format!(
                "invalid setting {name}: {why}"
            )))
        };
        if let Some(url) = &self.connector_url {
            let secure = url.starts_with("wss://") || url.starts_with("https://");
            let plain = url.starts_with("ws://") || url.starts_with("http://");
            if !(secure || plain) {
                return invalid("CONNECTOR_URL", "must start with wss:// (or ws://)".into());
            }
            if plain && !self.connector_allow_insecure {
                return invalid(
                    "CONNECTOR_URL",
                    "ws:// sends the token in clear; use wss://, or set CONNECTOR_ALLOW_INSECURE=true"
                        .into(),
                );
            }
            let channel = url
                .split_once("/connect/v1/")
                .map(|(_, channel)| channel.trim_end_matches('/'));
            if channel.is_none_or(|c| crate::keys::ConnectionName::parse(c).is_err()) {
                return invalid(
                    "CONNECTOR_URL",
                    "must end with /connect/v1/<channel> (a channel name)".into(),
                );
            }
            if let Err(why) = self.connector_token() {
                return invalid("CONNECTOR_TOKEN", why);
            }
            if self.spool_dir().is_none() {
                return invalid(
                    "SPOOL_DIR",
                    "a connector needs it: each message is on its disk before it is acknowledged"
                        .into(),
                );
            }
            if self.connector_cert_file.is_some() != self.connector_key_file.is_some() {
                return invalid(
                    "CONNECTOR_CERT_FILE",
                    "give CONNECTOR_CERT_FILE and CONNECTOR_KEY_FILE together".into(),
                );
            }
        }
        if let Some(namespace) = &self.connector_namespace {
            if let Err(e) = Namespace::parse(namespace) {
                return invalid("CONNECTOR_NAMESPACE", e.to_string());
            }
        }
        for (name, path) in [
            ("CONNECTOR_TOKEN_FILE", &self.connector_token_file),
            ("CONNECTOR_CA_FILE", &self.connector_ca_file),
            ("CONNECTOR_CERT_FILE", &self.connector_cert_file),
            ("CONNECTOR_KEY_FILE", &self.connector_key_file),
        ] {
            if let Some(path) = path {
                if let Err(e) = std::fs::metadata(path) {
                    return invalid(name, format!("cannot read {}: {e}", path.display()));
                }
            }
        }
        if self.connector_url.is_none() && self.connector_token.is_some() {
            return invalid(
                "CONNECTOR_TOKEN",
                "set without CONNECTOR_URL (the channel it opens)".into(),
            );
        }
        if let Some(host) = &self.connector_etcd_host {
            if host.is_empty()
                || host.contains(['/', ' ', ':']) && host.parse::<std::net::IpAddr>().is_err()
            {
                return invalid(
                    "CONNECTOR_ETCD_HOST",
                    format!("{host:?} is not a host name or address"),
                );
            }
        }
        if let Some(prefix) = &self.connector_etcd_prefix {
            if !prefix.starts_with('/') {
                return invalid("CONNECTOR_ETCD_PREFIX", "must start with `/`".into());
            }
        }
        for (name, value) in [("HOST", &self.host), ("ADMIN_HOST", &self.admin_host)] {
            if value.parse::<std::net::IpAddr>().is_err() {
                return invalid(
                    name,
                    format!("{value:?} is not an IP address (e.g. 0.0.0.0, 127.0.0.1, ::)"),
                );
            }
        }
        for (name, path) in [
            ("WEBHOOKS_CONFIG_FILE", &self.webhooks_config_file),
            ("CONNECTIONS_CONFIG_FILE", &self.connections_config_file),
        ] {
            if path.as_os_str().is_empty() || path.is_dir() {
                return invalid(
                    name,
                    format!("{:?} is not a file path", path.display().to_string()),
                );
            }
        }
        if self.etcd_host.is_empty()
            || self.etcd_host.contains(['/', ' ', ':'])
                && self.etcd_host.parse::<std::net::IpAddr>().is_err()
        {
            return invalid(
                "ETCD_HOST",
                format!("{:?} is not a host name or address", self.etcd_host),
            );
        }
        if self.etcd_endpoints.is_some() {
            for endpoint in self.etcd_endpoints() {
                if let Err(why) = check_endpoint(&endpoint) {
                    return invalid("ETCD_ENDPOINTS", format!("{endpoint:?} {why}"));
                }
            }
        }
        if self.spool_dir.is_file() {
            return invalid(
                "SPOOL_DIR",
                format!(
                    "{:?} is a file, not a directory",
                    self.spool_dir.display().to_string()
                ),
            );
        }
        if self.admin_port.is_some() && self.admin_port == Some(self.port) && self.port != 0 {
            return invalid("ADMIN_PORT", "must differ from PORT".into());
        }
        if self.config_backend == Backend::Etcd && self.etcd_endpoints().is_empty() {
            return Err(SettingsError::Invalid(
                "invalid setting ETCD_ENDPOINTS: no endpoint given".into(),
            ));
        }
        if !self.etcd_prefix.starts_with('/') {
            return Err(SettingsError::Invalid(format!(
                "invalid setting ETCD_PREFIX: {:?} must start with `/`",
                self.etcd_prefix
            )));
        }
        if self.etcd_cert_file.is_some() != self.etcd_key_file.is_some() {
            return Err(SettingsError::Invalid(
                "invalid settings ETCD_CERT_FILE/ETCD_KEY_FILE: give both or neither".into(),
            ));
        }
        for (name, path) in [
            ("ETCD_CA_FILE", &self.etcd_ca_file),
            ("ETCD_CERT_FILE", &self.etcd_cert_file),
            ("ETCD_KEY_FILE", &self.etcd_key_file),
        ] {
            if let Some(path) = path {
                if let Err(e) = std::fs::metadata(path) {
                    return Err(SettingsError::Invalid(format!(
                        "invalid setting {name}: cannot read {}: {e}",
                        path.display()
                    )));
                }
            }
        }
        if self.max_body_bytes > self.max_body_bytes_ceiling {
            return Err(SettingsError::Invalid(format!(
                "invalid setting MAX_BODY_BYTES: {} is above MAX_BODY_BYTES_CEILING ({})",
                self.max_body_bytes, self.max_body_bytes_ceiling
            )));
        }
        if self.max_body_bytes_ceiling > self.body_memory_bytes {
            return Err(SettingsError::Invalid(format!(
                "invalid setting MAX_BODY_BYTES_CEILING: {} is above BODY_MEMORY_BYTES ({}), so \
                 a body of that size could never be held",
                self.max_body_bytes_ceiling, self.body_memory_bytes
            )));
        }
        if let Err(e) = crate::config::seal::Keyring::from_setting(self.seal_keys_file.as_deref()) {
            return Err(SettingsError::Invalid(format!(
                "invalid setting SEAL_KEYS_FILE: {e}"
            )));
        }
        if self.etcd_tls() {
            if let Some(plain) = self
                .etcd_endpoints()
                .iter()
                .find(|e| e.starts_with("http://"))
            {
                return Err(SettingsError::Invalid(format!(
                    "invalid setting ETCD_ENDPOINTS: {plain} is plain http but TLS files are set; \
                     use https://"
                )));
            }
        }
        if self.etcd_password.is_some() != self.etcd_username.is_some() {
            return Err(SettingsError::Invalid(
                "invalid settings ETCD_USERNAME/ETCD_PASSWORD: give both or neither".into(),
            ));
        }
        Ok(())
    }

    /// Whether the etcd link uses TLS (any of the TLS files is set).
    pub fn etcd_tls(&self) -> bool {
        self.etcd_ca_file.is_some() || self.etcd_cert_file.is_some()
    }

    /// The etcd endpoints to use, as URLs (`https://` when TLS is on and no scheme is given).
    pub fn etcd_endpoints(&self) -> Vec<String> {
        let scheme = if self.etcd_tls() { "https" } else { "http" };
        match &self.etcd_endpoints {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(|e| {
                    if e.contains("://") {
                        e.to_owned()
                    } else {
                        format!("{scheme}://{e}")
                    }
                })
                .collect(),
            None => vec![format!("{scheme}://{}:{}", self.etcd_host, self.etcd_port)],
        }
    }

    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }

    /// The spool directory, unless the spool is off (`SPOOL_DIR=`).
    pub fn spool_dir(&self) -> Option<&std::path::Path> {
        (!self.spool_dir.as_os_str().is_empty()).then_some(self.spool_dir.as_path())
    }

    pub fn spool_handoff(&self) -> Duration {
        Duration::from_millis(self.spool_handoff_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

/// An etcd endpoint: `http://` or `https://`, a host, an optional port, nothing else.
fn check_endpoint(endpoint: &str) -> Result<(), &'static str> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or("must start with http:// or https://")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', ' ', '?', '#', '@']) {
        return Err("must be scheme://host:port");
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => (host, Some(port)),
        _ => (rest, None),
    };
    if host.is_empty() {
        return Err("has no host");
    }
    match port {
        Some(port) if port.parse::<u16>().map_or(true, |p| p == 0) => Err("has an invalid port"),
        _ => Ok(()),
    }
}

/// The first line of a clap error, with the environment variable of the offending flag.
fn one_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid settings")
        .trim_start_matches("error: ")
        .to_owned();
    let env = e.get(clap::error::ContextKind::InvalidArg).and_then(|arg| {
        let flag = arg.to_string();
        let long = flag
            .trim_start_matches("--")
            .split([' ', '='])
            .next()?
            .to_owned();
        Cli::command()
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
            .and_then(|a| a.get_env().map(|v| v.to_string_lossy().into_owned()))
    });
    match env {
        Some(env) => format!("invalid setting {env}: {first}"),
        None => format!("invalid settings: {first}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_value_names_the_environment_variable() {
        let Err(SettingsError::Invalid(msg)) = Settings::from_args(["switchyard", "--port", "x"])
        else {
            panic!("expected an error")
        };
        assert!(msg.contains("PORT"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn invalid_namespace_is_refused() {
        let Err(SettingsError::Invalid(msg)) =
            Settings::from_args(["switchyard", "--etcd-namespace", "global"])
        else {
            panic!("expected an error")
        };
        assert!(msg.contains("ETCD_NAMESPACE"), "{msg}");
    }

    #[test]
    fn endpoints_win_over_host_and_port_and_get_a_scheme() {
        let s = Settings::from_args([
            "switchyard",
            "--etcd-endpoints",
            "10.0.0.1:2379, https://e2:2379",
        ])
        .unwrap_or_else(|_| panic!("valid settings"));
        assert_eq!(
            s.etcd_endpoints(),
            vec!["http://10.0.0.1:2379", "https://e2:2379"]
        );
    }

    #[test]
    fn username_without_password_is_refused() {
        assert!(matches!(
            Settings::from_args(["switchyard", "--etcd-username", "u"]),
            Err(SettingsError::Invalid(_))
        ));
    }
}
