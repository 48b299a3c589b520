//! A real Kafka-protocol broker (`tansu`, in-memory storage) on a free loopback port, and a real
//! consumer to read back what was produced.

use super::Freeze as _;
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    message::{Headers, Message},
    Offset, TopicPartitionList,
};

use super::{ports::free_port, wait_until};

pub struct Kafka {
    child: Option<Child>,
    pub port: u16,
}

/// One consumed record.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU_BIN") {
        return PathBuf::from(path);
    }
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin").join("tansu"));
    match cargo_bin {
        Some(path) if path.exists() => path,
        _ => PathBuf::from("tansu"),
    }
}

impl Kafka {
    pub async fn start() -> Self {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(binary())
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start tansu ({e}); install it with `make deps` or set TANSU_BIN")
            });
        let kafka = Self {
            child: Some(child),
            port,
        };
        wait_until(Duration::from_secs(20), "tansu to listen", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        kafka
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The connection entry pointing at this broker.
    pub fn connection(&self) -> String {
        serde_json::json!({"type": "kafka", "bootstrap_servers": self.bootstrap()}).to_string()
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let status = tokio::process::Command::new(binary())
            .args(["topic", "create", name])
            .args(["--partitions", &partitions.to_string()])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .unwrap();
        assert!(status.success(), "tansu topic create {name} failed");
    }

    /// Reads every partition of `topic` from the beginning: at least `count` records, and on until
    /// every partition is at its end.
    pub async fn consume(&self, topic: &str, partitions: i32, count: usize) -> Vec<Record> {
        let bootstrap = self.bootstrap();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", "switchyard-tests")
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .set("enable.partition.eof", "true")
                .create()
                .unwrap();
            let mut assignment = TopicPartitionList::new();
            for p in 0..partitions {
                assignment
                    .add_partition_offset(&topic, p, Offset::Beginning)
                    .unwrap();
            }
            consumer.assign(&assignment).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let mut records = Vec::new();
            let mut at_end = std::collections::HashSet::new();
            while std::time::Instant::now() < deadline {
                if records.len() >= count && at_end.len() == partitions as usize {
                    break;
                }
                let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                    continue;
                };
                let message = match message {
                    Ok(message) => message,
                    Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                        at_end.insert(p);
                        continue;
                    }
                    Err(_) => continue,
                };
                at_end.remove(&message.partition());
                let headers = message
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                let value =
                                    h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                                (h.key.to_owned(), value.unwrap_or_default())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                records.push(Record {
                    partition: message.partition(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    headers,
                });
            }
            records
        })
        .await
        .unwrap()
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        self.resume();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl super::Freeze for Kafka {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }
}
