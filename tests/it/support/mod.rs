//! Test harness: the real application on port 0, real etcd on free ports, and helpers.

#![allow(dead_code)]

pub mod app;
pub mod etcd;
pub mod files;
pub mod inproc;
pub mod kafka;
pub mod load;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod recording;
pub mod redis;
pub mod tls;
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
