//! Test harness: the real application on port 0, real etcd on free ports, and helpers.

#![allow(dead_code)]

pub mod app;
pub mod cluster;
pub mod etcd;
pub mod files;
pub mod inproc;
pub mod kafka;
pub mod load;
pub mod otlp;
pub mod peer_proxy;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod recording;
pub mod redis;
pub mod sdk;
pub mod service;
pub mod strace;
pub mod tls;
pub mod tls_service;
pub mod wait;

pub use self::redis::Redis;
pub use app::TestApp;
pub use etcd::Etcd;
pub use kafka::Kafka;
pub use proxy::Proxy;
pub use wait::wait_until;

/// A name unique to this test run, for etcd prefixes, topics and keys.
#[macro_export]
macro_rules! unique {
    ($base:expr) => {
        format!(
            "{}-{}",
            $base,
            uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
        )
    };
}

/// Sends `signal` (`-STOP`, `-CONT`, `-TERM`) to a process a test started.
pub fn send_signal(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

/// A service process a test can freeze (SIGSTOP: connections stay open, nothing is answered)
/// and thaw (SIGCONT).
pub trait Freeze {
    /// The process id, while it runs.
    fn pid(&self) -> Option<u32>;

    fn pause(&self) {
        if let Some(pid) = self.pid() {
            send_signal(pid, "-STOP");
        }
    }

    fn resume(&self) {
        if let Some(pid) = self.pid() {
            send_signal(pid, "-CONT");
        }
    }
}

/// HMAC-SHA256 of the concatenated `parts` (how providers sign).
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `GET base + path` as JSON.
pub async fn get_json(base: &str, path: &str) -> serde_json::Value {
    reqwest::get(format!("{base}{path}"))
        .await
        .expect("GET answered")
        .json()
        .await
        .expect("a JSON answer")
}

/// `GET base + path` as text.
pub async fn get_text(base: &str, path: &str) -> String {
    reqwest::get(format!("{base}{path}"))
        .await
        .expect("GET answered")
        .text()
        .await
        .expect("a text answer")
}

/// One unlabelled metric from `base/metrics` (NaN when absent).
pub async fn metric(base: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics answered")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// Logs go to the test output only with `TEST_LOG=1`.
pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = switchyard::telemetry::init(
            switchyard::settings::LogFormat::Text,
            "switchyard=debug,info",
            std::io::stderr,
        );
    }
}
