//! A real etcd (`etcd` from Debian's etcd-server) on free loopback ports with a temp data dir.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use etcd_client::{Client, GetOptions, Txn, TxnOp};

use super::{ports::free_port, wait_until};

pub struct Etcd {
    child: Option<Child>,
    pub client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
}

fn binary() -> PathBuf {
    std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("etcd"))
}

impl Etcd {
    /// Starts a new single-node cluster and waits until it answers.
    pub async fn start() -> Self {
        let mut etcd = Self {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        etcd.spawn().await;
        etcd
    }

    async fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).unwrap();
        let child = Command::new(binary())
            .args(["--name", "test"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(["--initial-cluster-state", "new"])
            .args(["--log-level", "warn", "--logger", "zap"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start etcd ({e}); install it with `make deps` \
                     (Debian etcd-server) or set ETCD_BIN"
                )
            });
        self.child = Some(child);
        let endpoint = self.endpoint();
        wait_until(Duration::from_secs(20), "etcd to answer", || {
            let endpoint = endpoint.clone();
            async move {
                match Client::connect([endpoint], None).await {
                    Ok(mut c) => c.get("health-probe", None).await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub async fn client(&self) -> Client {
        Client::connect([self.endpoint()], None).await.unwrap()
    }

    /// SIGKILLs the server (data stays for a restart).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and data.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    pub async fn put(&self, key: &str, value: &str) -> i64 {
        let response = self.client().await.put(key, value, None).await.unwrap();
        response.header().unwrap().revision()
    }

    pub async fn delete(&self, key: &str) -> i64 {
        let response = self.client().await.delete(key, None).await.unwrap();
        response.header().unwrap().revision()
    }

    /// Puts many keys, 128 per transaction (etcd's default --max-txn-ops).
    pub async fn put_many(&self, entries: &[(String, String)]) {
        let mut client = self.client().await;
        for chunk in entries.chunks(128) {
            let ops: Vec<_> = chunk
                .iter()
                .map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None))
                .collect();
            client.txn(Txn::new().and_then(ops)).await.unwrap();
        }
    }

    pub async fn revision(&self) -> i64 {
        let response = self
            .client()
            .await
            .get("x", Some(GetOptions::new().with_count_only()))
            .await
            .unwrap();
        response.header().unwrap().revision()
    }

    /// Compacts history up to the current revision, physically.
    pub async fn compact(&self) -> i64 {
        let revision = self.revision().await;
        self.client()
            .await
            .compact(
                revision,
                Some(etcd_client::CompactionOptions::new().with_physical()),
            )
            .await
            .unwrap();
        revision
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
