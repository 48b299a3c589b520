//! A real Redis (`redis-server` from Debian) on a free loopback port, with fsync-always AOF so
//! acknowledged writes survive a restart.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{ports::free_port, wait_until};

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

fn binary() -> PathBuf {
    std::env::var_os("REDIS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

impl Redis {
    pub async fn start() -> Self {
        let mut redis = Self {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        let child = Command::new(binary())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", ""])
            .args(["--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}); install it with `make deps`")
            });
        self.child = Some(child);
        let url = self.url();
        wait_until(Duration::from_secs(20), "redis to answer", || {
            let url = url.clone();
            async move {
                let Ok(client) = redis::Client::open(url) else {
                    return false;
                };
                match client.get_multiplexed_async_connection().await {
                    Ok(mut c) => redis::cmd("PING")
                        .query_async::<String>(&mut c)
                        .await
                        .is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The connection entry pointing at this server.
    pub fn connection(&self) -> String {
        serde_json::json!({"type": "redis", "host": "127.0.0.1", "port": self.port}).to_string()
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Stops the server gracefully (SIGTERM: it finishes writing its append-only file).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Kills the server (SIGKILL: no chance to flush; `appendfsync always` keeps what it
    /// acknowledged).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The `payload` field of every entry of `stream`, in order. Read in pages (a stream of
    /// tens of thousands of entries in one reply can outlast the client's response timeout on
    /// a loaded machine), each page tried again after a timeout.
    pub async fn stream_payloads(&self, stream: &str) -> Vec<String> {
        const PAGE: usize = 2000;
        let mut conn = self.conn().await;
        let mut payloads = Vec::new();
        let mut start = "-".to_owned();
        loop {
            let mut tries = 0;
            let page: redis::streams::StreamRangeReply = loop {
                let reply = redis::cmd("XRANGE")
                    .arg(stream)
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(PAGE)
                    .query_async(&mut conn)
                    .await;
                match reply {
                    Ok(page) => break page,
                    Err(error) if tries < 5 => {
                        tries += 1;
                        eprintln!("XRANGE {stream} from {start}: {error}; trying again");
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                    Err(error) => panic!("XRANGE {stream}: {error}"),
                }
            };
            payloads.extend(
                page.ids
                    .iter()
                    .filter_map(|e| e.map.get("payload"))
                    .map(|v| {
                        let bytes: Vec<u8> = redis::from_redis_value_ref(v).unwrap();
                        String::from_utf8(bytes).unwrap()
                    }),
            );
            match page.ids.last() {
                Some(last) if page.ids.len() == PAGE => start = format!("({}", last.id),
                _ => return payloads,
            }
        }
    }

    /// Starts the server again on the same port and data.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl super::Freeze for Redis {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }
}
