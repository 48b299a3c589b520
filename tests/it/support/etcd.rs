//! A real etcd (`etcd` from Debian's etcd-server) on free loopback ports with a temp data dir.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions, Txn, TxnOp,
};

use super::{ports::free_port, tls::TlsFiles, wait::poll_until};

/// How to run the server.
#[derive(Debug, Clone, Default)]
pub struct EtcdOptions {
    /// Serve TLS only and require client certificates signed by the CA.
    pub tls: Option<TlsFiles>,
    /// `--auth-token-ttl` in seconds (simple tokens), for token expiry tests.
    pub auth_token_ttl: Option<u64>,
}

pub struct Etcd {
    child: Option<Child>,
    pub client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    options: EtcdOptions,
    membership: Membership,
    /// Credentials the test's own client uses once auth is enabled.
    user: Option<(String, String)>,
}

/// How a member finds its cluster.
#[derive(Debug, Clone)]
pub struct Membership {
    pub name: String,
    /// The peer URL the others use to reach this member (a proxy, to partition it).
    pub advertise_peer: String,
    /// `name=peer-url,...` of every member.
    pub initial_cluster: String,
    pub token: String,
}

fn binary() -> PathBuf {
    std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("etcd"))
}

impl Etcd {
    /// Starts a new single-node cluster and waits until it answers.
    pub async fn start() -> Self {
        Self::start_with(EtcdOptions::default()).await
    }

    pub async fn start_with(options: EtcdOptions) -> Self {
        let peer_port = free_port();
        let peer = format!("http://127.0.0.1:{peer_port}");
        let membership = Membership {
            name: "test".into(),
            advertise_peer: peer.clone(),
            initial_cluster: format!("test={peer}"),
            token: "etcd-cluster".into(),
        };
        let mut etcd = Self::unstarted(peer_port, membership, options);
        etcd.spawn().await;
        etcd
    }

    /// A member listening for peers on `peer_port`, not started yet ([`Etcd::launch`]).
    pub fn unstarted(peer_port: u16, membership: Membership, options: EtcdOptions) -> Self {
        Self {
            child: None,
            client_port: free_port(),
            peer_port,
            dir: tempfile::tempdir().unwrap(),
            options,
            membership,
            user: None,
        }
    }

    async fn spawn(&mut self) {
        self.launch();
        self.wait_answering().await;
    }

    /// Starts the process without waiting (a cluster member answers only once a quorum runs).
    pub fn launch(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .unwrap();
        let m = &self.membership;
        let child = Command::new(binary())
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &m.advertise_peer])
            .args(["--initial-cluster", &m.initial_cluster])
            .args(["--initial-cluster-token", &m.token])
            .args(["--initial-cluster-state", "new"])
            .args(["--log-level", "warn", "--logger", "zap"])
            .args(self.extra_args())
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
    }

    /// Waits until a read (which needs a leader) succeeds; when none does, panics with the
    /// member's log (it lives in a temporary directory that is gone after the test).
    pub async fn wait_answering(&self) {
        let answered = poll_until(Duration::from_secs(20), || async {
            match self.try_client().await {
                Ok(mut c) => c.get("health-probe", None).await.is_ok(),
                Err(_) => false,
            }
        })
        .await;
        if !answered {
            let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "timed out after 20s waiting for etcd on port {} to answer; its log ends:\n{}",
                self.client_port,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }

    fn extra_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(tls) = &self.options.tls {
            let path = |p: &PathBuf| p.display().to_string();
            args.extend([
                "--cert-file".to_owned(),
                path(&tls.server_cert),
                "--key-file".into(),
                path(&tls.server_key),
                "--trusted-ca-file".into(),
                path(&tls.ca),
                "--client-cert-auth".into(),
            ]);
        }
        if let Some(ttl) = self.options.auth_token_ttl {
            args.extend(["--auth-token-ttl".to_owned(), ttl.to_string()]);
        }
        args
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub async fn try_client(&self) -> Result<Client, etcd_client::Error> {
        let mut options = ConnectOptions::new();
        if let Some(tls) = &self.options.tls {
            let read = |p: &PathBuf| std::fs::read(p).unwrap();
            options = options.with_tls(
                TlsOptions::new()
                    .ca_certificate(Certificate::from_pem(read(&tls.ca)))
                    .identity(Identity::from_pem(
                        read(&tls.client_cert),
                        read(&tls.client_key),
                    )),
            );
        }
        if let Some((user, password)) = &self.user {
            options = options.with_user(user, password);
        }
        Client::connect([self.endpoint()], Some(options)).await
    }

    pub async fn client(&self) -> Client {
        self.try_client().await.unwrap()
    }

    /// Adds `root` with `password`, enables auth, and uses the credentials from now on.
    pub async fn enable_auth(&mut self, password: &str) {
        let mut client = self.client().await;
        client.user_add("root", password, None).await.unwrap();
        client.user_grant_role("root", "root").await.unwrap();
        client.auth_enable().await.unwrap();
        self.user = Some(("root".into(), password.into()));
    }

    /// The server's log so far (warnings and errors), for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
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

    /// The value of `key`, if any.
    pub async fn get(&self, key: &str) -> Option<String> {
        let response = self.client().await.get(key, None).await.unwrap();
        response
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
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

impl super::Freeze for Etcd {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
