//! The client of an `http` connection (the only file that imports reqwest): one pooled client
//! per connection (keep-alive; HTTP/2 where the service offers it over TLS), no redirects, no
//! proxy from the environment, and the SSRF guard: every address a connection reaches is
//! checked against [`Networks`] when a connection to it is opened.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::OnceCell;

use crate::config::{
    connection::{HttpConnection, DEFAULT_HTTP_POOL_SIZE},
    ip_list::IpList,
};

/// Where `http` connections may go (`HTTP_ALLOWED_NETWORKS`). Empty: anywhere but the
/// addresses of this host and its cloud (loopback, link-local with the metadata service at
/// 169.254.169.254, unspecified, multicast, broadcast). Listed: only the listed networks, which
/// may include those.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(IpList);

impl std::str::FromStr for Networks {
    type Err = String;
    /// A comma-separated list of IPs and CIDRs.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IpList::parse_commas(s, "HTTP_ALLOWED_NETWORKS").map(Self)
    }
}

impl Networks {
    /// Whether a connection may be opened to `ip`. An IPv4 address written as IPv6
    /// (`::ffff:127.0.0.1`, or NAT64's `64:ff9b::7f00:1`) is judged as the IPv4 address.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = embedded_v4(ip);
        if self.0.is_empty() {
            !always_refused(ip)
        } else {
            self.0.contains(ip)
        }
    }
}

fn embedded_v4(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => {
            let [.., a, b, c, d] = v6.octets();
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        }
        other => other,
    }
}

fn always_refused(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                // 0.0.0.0/8: "this network", which Linux connects to the host itself.
                || v4.octets()[0] == 0
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    }
}

/// A name that resolved only to refused addresses: a config problem, not an outage.
#[derive(Debug, thiserror::Error)]
#[error("`{host}` resolves only to addresses HTTP_ALLOWED_NETWORKS refuses ({addresses})")]
struct Refused {
    host: String,
    addresses: String,
}

/// Resolves names and keeps only the addresses the networks permit; runs for every new
/// connection, so a name whose address changes is judged again.
struct Guard(Arc<Networks>);

impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let networks = Arc::clone(&self.0);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| networks.permits(a.ip()))
                .collect();
            if permitted.is_empty() {
                let addresses = all
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Box::new(Refused { host, addresses }) as _);
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Why a request to a service did not count as delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Retrying cannot help: a 4xx other than 408 and 429, a redirect (never followed), an
    /// address the networks refuse, a client that cannot be built.
    Permanent(String),
    /// Retrying can help: a 5xx, 408, a timeout, a connection error.
    Retryable(String),
    /// 429: retryable, not before `Retry-After` when the service sent one.
    Throttled(String, Option<Duration>),
}

/// What a module sends.
pub struct Outgoing<'a> {
    pub method: &'a str,
    /// Appended to the connection's `base_url` (validated by the module's config).
    pub path: &'a str,
    pub headers: Vec<(&'a str, String)>,
    pub body: bytes::Bytes,
}

/// A connection's client, built on first use on a blocking thread (it reads certificate
/// files and the system's roots); clones share it.
#[derive(Clone)]
pub struct HttpClient {
    /// The connection's name, for the log lines about it.
    name: crate::keys::ConnectionName,
    config: Arc<HttpConnection>,
    /// `base_url` parsed once (`None`: not a URL, which `validate` refuses first).
    base: Option<Arc<reqwest::Url>>,
    networks: Arc<Networks>,
    client: Arc<OnceCell<reqwest::Client>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

/// The most of a refusing answer's body kept in its error (and the dead letter).
const ANSWER_EXCERPT: usize = 256;
/// The longest `Retry-After` honoured; a longer one waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

impl HttpClient {
    /// Checks what can be checked without I/O: that `base_url` is a URL (an address written in
    /// it is judged on every request, with the networks this process has).
    pub fn validate(config: &HttpConnection) -> Result<(), String> {
        reqwest::Url::parse(config.base_url.expose())
            .map(|_| ())
            .map_err(|e| format!("`base_url` is not a URL: {e}"))
    }

    /// The client of `config` (nothing is opened or read until the first request).
    pub fn new(
        name: crate::keys::ConnectionName,
        config: &HttpConnection,
        networks: Arc<Networks>,
    ) -> Self {
        let base = reqwest::Url::parse(config.base_url.expose().trim_end_matches('/')).ok();
        Self {
            name,
            config: Arc::new(config.clone()),
            base: base.map(Arc::new),
            networks,
            client: Arc::new(OnceCell::new()),
        }
    }

    async fn client(&self) -> Result<&reqwest::Client, Failure> {
        self.client
            .get_or_try_init(|| {
                let config = Arc::clone(&self.config);
                let networks = Arc::clone(&self.networks);
                let name = self.name.clone();
                async move {
                    tokio::task::spawn_blocking(move || build(&name, &config, networks))
                        .await
                        .map_err(|e| format!("building the client failed: {e}"))?
                }
            })
            .await
            .map_err(Failure::Permanent)
    }

    /// Sends one request; `Ok` once the service answered 2xx.
    pub async fn send(&self, outgoing: Outgoing<'_>) -> Result<(), Failure> {
        let url = self.url(outgoing.path)?;
        let client = self.client().await?;
        let method = reqwest::Method::from_bytes(outgoing.method.as_bytes())
            .map_err(|_| Failure::Permanent(format!("invalid method {:?}", outgoing.method)))?;
        let mut request = client.request(method, url).body(outgoing.body);
        for (name, value) in outgoing.headers {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(failure)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = (status == reqwest::StatusCode::TOO_MANY_REQUESTS)
            .then(|| retry_after(response.headers(), SystemTime::now()))
            .flatten();
        let location = status
            .is_redirection()
            .then(|| {
                response
                    .headers()
                    .get("location")?
                    .to_str()
                    .ok()
                    .map(str::to_owned)
            })
            .flatten();
        let excerpt = excerpt(response).await;
        let message = match location {
            Some(location) => {
                format!("answered {status} to {location:?}; redirects are not followed{excerpt}")
            }
            None => format!("answered {status}{excerpt}"),
        };
        Err(match status.as_u16() {
            429 => Failure::Throttled(message, retry_after),
            408 | 500..=599 => Failure::Retryable(message),
            _ => Failure::Permanent(message),
        })
    }

    /// `base_url` and `path`, and the check that the path changed neither the scheme, the
    /// host nor the port (the module's config refuses such paths; this keeps it so), nor
    /// reaches an address the networks refuse when it is written in the URL (names are
    /// checked when resolved).
    fn url(&self, path: &str) -> Result<reqwest::Url, Failure> {
        let invalid = |what: &str| Failure::Permanent(format!("`base_url` and `path`: {what}"));
        let parsed = self.base.as_deref().ok_or_else(|| invalid("not a URL"))?;
        let base = self.config.base_url.expose().trim_end_matches('/');
        let url =
            reqwest::Url::parse(&format!("{base}{path}")).map_err(|_| invalid("not a URL"))?;
        if (url.scheme(), url.host(), url.port_or_known_default())
            != (
                parsed.scheme(),
                parsed.host(),
                parsed.port_or_known_default(),
            )
        {
            return Err(invalid("the path changes the scheme, host or port"));
        }
        let host = url.host_str().unwrap_or_default();
        let literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        if let Some(ip) = literal.filter(|ip| !self.networks.permits(*ip)) {
            return Err(Failure::Permanent(format!(
                "{ip} is an address HTTP_ALLOWED_NETWORKS refuses"
            )));
        }
        Ok(url)
    }
}

/// The pooled client of a connection.
fn build(
    name: &crate::keys::ConnectionName,
    config: &HttpConnection,
    networks: Arc<Networks>,
) -> Result<reqwest::Client, String> {
    let read = |what: &str, path: &str| {
        std::fs::read(path).map_err(|e| format!("cannot read `{what}` {path}: {e}"))
    };
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &config.headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`headers`: {name:?} is not a header name"))?;
        let mut value = reqwest::header::HeaderValue::from_str(value.expose())
            .map_err(|_| format!("`headers`: the value of {name:?} is not a header value"))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(config.timeout())
        .connect_timeout(config.timeout())
        .pool_max_idle_per_host(config.pool_size.unwrap_or(DEFAULT_HTTP_POOL_SIZE))
        .dns_resolver(Arc::new(Guard(networks)))
        .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
        .default_headers(headers);
    if let Some(path) = &config.ca_file {
        let pem = read("ca_file", path)?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("`ca_file` {path}: {e}"))?;
        if certificates.is_empty() {
            return Err(format!("`ca_file` {path} holds no PEM certificate"));
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
        let mut pem = read("cert_file", cert)?;
        pem.push(b'\n');
        pem.extend(read("key_file", key)?);
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|e| format!("`cert_file`/`key_file`: {e}"))?;
        builder = builder.identity(identity);
    }
    if config.insecure_skip_verify {
        tracing::warn!(
            connection = %name,
            "An http connection has `insecure_skip_verify: true`: any certificate is accepted."
        );
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the client: {e}"))
}

/// A request that got no answer: refused by the guard (permanent), or an outage.
fn failure(error: reqwest::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return Failure::Permanent(refused.to_string());
        }
        source = cause.source();
    }
    // A request that could not even be built is the same next time.
    if error.is_builder() {
        return Failure::Permanent(format!("the request cannot be built: {error}"));
    }
    let what = if error.is_timeout() {
        "no answer in time"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "the request failed"
    };
    // reqwest's text names the URL; the causes say what happened.
    let mut text = String::from(what);
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    Failure::Retryable(text)
}

/// `Retry-After` as seconds or an HTTP date, at most [`MAX_RETRY_AFTER`].
fn retry_after(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get("retry-after")?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_rfc3339_weak(value)
            .ok()
            .or_else(|| httpdate(value))?
            .duration_since(now)
            .unwrap_or_default(),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form `Retry-After` dates take.
fn httpdate(value: &str) -> Option<SystemTime> {
    let mut parts = value.split_whitespace();
    let (_, day, month, year, time, zone) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if zone != "GMT" || parts.next().is_some() {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? + 1;
    let text = format!("{year}-{month:02}-{day:0>2}T{time}Z");
    humantime::parse_rfc3339(&text).ok()
}

/// The first bytes of a refusing answer, as `: <text>` (escaped, one line), or nothing.
async fn excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ANSWER_EXCERPT {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(ANSWER_EXCERPT);
    if bytes.is_empty() {
        return String::new();
    }
    let text: String = String::from_utf8_lossy(&bytes).escape_debug().collect();
    format!(": {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_networks_refuse_this_host_and_its_cloud_and_nothing_else() {
        let default = Networks::default();
        for refused in [
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "169.254.169.254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "fd00:ec2::254",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!default.permits(refused.parse().unwrap()), "{refused}");
        }
        for permitted in [
            "10.0.0.5",
            "192.168.1.1",
            "203.0.113.9",
            "fd12::1",
            "2001:db8::1",
        ] {
            assert!(default.permits(permitted.parse().unwrap()), "{permitted}");
        }
    }

    #[test]
    fn a_listed_network_is_the_only_one_permitted_and_may_be_loopback() {
        let listed: Networks = "127.0.0.0/8, 10.1.0.0/16".parse().unwrap();
        assert!(listed.permits("127.0.0.1".parse().unwrap()));
        assert!(listed.permits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(listed.permits("10.1.2.3".parse().unwrap()));
        assert!(!listed.permits("10.2.0.1".parse().unwrap()));
        assert!(!listed.permits("169.254.169.254".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Networks>().is_err());
        assert_eq!("".parse::<Networks>().unwrap(), Networks::default());
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        let now = humantime::parse_rfc3339("2026-12-07T12:00:00Z").unwrap();
        let header = |value: &str| {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert("retry-after", value.parse().unwrap());
            retry_after(&headers, now)
        };
        assert_eq!(header("120"), Some(Duration::from_secs(120)));
        assert_eq!(header("99999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            header("Mon, 07 Dec 2026 12:00:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            header("Mon, 07 Dec 2026 11:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(header("soon"), None);
    }
}
