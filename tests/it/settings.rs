//! Every setting, given a bad value, stops start-up with one line naming it and exit code 64.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use clap::CommandFactory as _;
use switchyard::settings::Cli;

/// A bad value for every setting (the test fails when a new setting is not listed here).
const BAD: &[(&str, &str)] = &[
    ("HOST", "notanip"),
    ("PORT", "70000"),
    ("CONFIG_BACKEND", "consul"),
    ("WEBHOOKS_CONFIG_FILE", "/"),
    ("CONNECTIONS_CONFIG_FILE", "/tmp"),
    ("ETCD_HOST", "not a host"),
    ("ETCD_PORT", "x"),
    ("ETCD_ENDPOINTS", "not a url"),
    ("ETCD_PREFIX", "cwm"),
    ("ETCD_NAMESPACE", "global"),
    ("ETCD_USERNAME", "only-the-user"),
    ("ETCD_PASSWORD", "only-the-password"),
    ("ETCD_CA_FILE", "/nonexistent/ca.pem"),
    ("ETCD_CERT_FILE", "/nonexistent/cert.pem"),
    ("ETCD_KEY_FILE", "/nonexistent/key.pem"),
    ("MAX_BODY_BYTES", "0"),
    ("MAX_BODY_BYTES_CEILING", "0"),
    ("BODY_MEMORY_BYTES", "1024"),
    ("MAX_IN_FLIGHT", "0"),
    ("BODY_READ_TIMEOUT_MS", "0"),
    ("MAX_BODY_READERS", "0"),
    ("MAX_BODY_READERS_PER_CLIENT", "0"),
    ("KEEP_ALIVE_SECONDS", "forever"),
    ("CLIENT_REQUEST_TIMEOUT_MS", "0"),
    ("CLIENT_DISCONNECT_TIMEOUT_MS", "0"),
    ("MAX_CONNECTIONS", "0"),
    ("ADMIN_HOST", "admin.local"),
    ("ADMIN_PORT", "x"),
    ("TRUSTED_PROXIES", "10.0.0.0/99"),
    ("METRICS_MAX_WEBHOOKS", "-1"),
    ("LOG_FORMAT", "xml"),
    ("RUST_LOG", "switchyard=loud"),
    ("HTTP_WORKERS", "100000"),
    ("SPOOL_DIR", "/etc/hostname"),
    ("SPOOL_MAX_BYTES", "10"),
    ("SPOOL_NAMESPACE_SHARE", "0"),
    ("SPOOL_HANDOFF_MS", "0"),
    ("SPOOL_MAX_FORWARDS", "0"),
    ("SPOOL_WRITE_TIMEOUT_MS", "0"),
    ("SPOOL_ON_DAMAGE", "ignore"),
    ("MAX_CHAIN_LENGTH", "257"),
    ("ADMIN_HOSTS", "http://evil"),
    ("DEDUP_MAX_KEYS", "0"),
    ("SHUTDOWN_DRAIN_SECONDS", "x"),
    ("SHUTDOWN_GRACE_SECONDS", "x"),
    ("HTTP_ALLOWED_NETWORKS", "10.0.0.0/33"),
    ("SEAL_KEYS_FILE", "/nonexistent/seal.keys"),
    ("CONNECTOR_URL", "ftp://public/connect/v1/edge"),
    ("CONNECTOR_TOKEN", "a-token-without-a-url"),
    ("CONNECTOR_TOKEN_FILE", "/nonexistent/token"),
    ("CONNECTOR_ALLOW_INSECURE", "maybe"),
    ("CONNECTOR_CA_FILE", "/nonexistent/ca.pem"),
    ("CONNECTOR_CERT_FILE", "/nonexistent/cert.pem"),
    ("CONNECTOR_KEY_FILE", "/nonexistent/key.pem"),
    ("CONNECTOR_PROTOCOL", "carrier_pigeon"),
    ("CONNECTOR_NAMESPACE", "global"),
    ("CONNECTOR_ETCD_HOST", "not a host"),
    ("CONNECTOR_ETCD_PORT", "x"),
    ("CONNECTOR_ETCD_PREFIX", "cwm"),
];

#[test]
fn the_table_covers_every_setting() {
    let mut names: Vec<String> = Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    let mut listed: Vec<String> = BAD.iter().map(|(n, _)| (*n).to_owned()).collect();
    listed.sort();
    assert_eq!(names, listed);
}

#[test]
fn every_bad_setting_exits_64_with_one_line_naming_it() {
    for (name, value) in BAD {
        exits_64_naming(name, &[(name, value)]);
    }
}

/// The standard OpenTelemetry variables Switchyard reads itself (traces are off without an
/// endpoint, so each bad value comes with one).
#[test]
fn a_bad_tracing_variable_exits_64_naming_it() {
    const ENDPOINT: (&str, &str) = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
    for (name, value) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "thrift"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
    ] {
        exits_64_naming(name, &[ENDPOINT, (name, value)]);
    }
    exits_64_naming(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://bad host:4318")],
    );
}

fn exits_64_naming(name: &str, env: &[(&str, &str)]) {
    let value = env.iter().find(|(n, _)| *n == name).map_or("", |(_, v)| *v);
    {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .env_clear()
            .envs(env.iter().copied())
            // A free port, so a setting that is wrongly accepted shows up as a running server.
            .env("PORT", if name == "PORT" { value } else { "0" })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("{name}={value:?} was accepted: the server started");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(status.code(), Some(64), "{name}={value:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.contains(name), "{name}={value:?}: {stderr}");
    }
}

/// `SPOOL_DIR=` (empty) turns the spool off, as documented: the server starts (it once refused
/// the empty value, exit 64) and runs without a spool.
#[tokio::test]
async fn an_empty_spool_dir_turns_the_spool_off() {
    use crate::support::{files::write_json, process::Router};
    let dir = tempfile::tempdir().unwrap();
    write_json(
        dir.path(),
        "webhooks.json",
        &serde_json::json!({"w": {"module": "log"}}),
    );
    write_json(dir.path(), "connections.json", &serde_json::json!({}));
    let router = Router::start(dir.path(), &[("SPOOL_DIR", "")]);
    router.wait_ready().await;
    let health = crate::support::get_json(&router.url(""), "/health").await;
    assert!(health["components"].get("spool").is_none(), "{health}");
    assert!(!dir.path().join("spool").exists());
}
