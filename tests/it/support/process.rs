//! The real `switchyard` binary as a child process with the file backend, its log in a file.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{ports::free_port, wait_until};

/// A running router process; killed on drop.
pub struct Router {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Router {
    /// Starts the binary on a free port with the config files in `dir` and the extra `env`.
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_on(dir, free_port(), env)
    }

    /// As [`Router::start`], on `port` (a restart where the senders expect it).
    pub fn start_on(dir: &Path, port: u16, env: &[(&str, &str)]) -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let log = dir.join(format!("switchyard-{port}-{started}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        command
            .env("CONFIG_BACKEND", "file")
            .env("WEBHOOKS_CONFIG_FILE", dir.join("webhooks.json"))
            .env("CONNECTIONS_CONFIG_FILE", dir.join("connections.json"))
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("HTTP_WORKERS", "1")
            .env("RUST_LOG", "info")
            // Each instance has a spool of its own (the default, `data/spool`, is shared).
            .env("SPOOL_DIR", dir.join("spool"))
            .stdout(Stdio::from(file.try_clone().expect("log file")))
            .stderr(Stdio::from(file));
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("the switchyard binary starts");
        Self { child, port, log }
    }

    /// As [`Router::start`], on the etcd backend: `etcd` under `prefix`, with the extra `env`.
    pub fn on_etcd(dir: &Path, etcd: &super::Etcd, prefix: &str, env: &[(&str, &str)]) -> Self {
        let endpoint = etcd.endpoint();
        let mut all = vec![
            ("CONFIG_BACKEND", "etcd"),
            ("ETCD_ENDPOINTS", endpoint.as_str()),
            ("ETCD_PREFIX", prefix),
        ];
        all.extend_from_slice(env);
        Self::start(dir, &all)
    }

    /// A ready router on the file backend serving `webhooks` (and no connections) with `env`,
    /// its files in a temp dir of its own (returned with it, to keep it).
    pub async fn serving(
        webhooks: serde_json::Value,
        env: &[(&str, &str)],
    ) -> (tempfile::TempDir, Self) {
        let dir = tempfile::tempdir().expect("a temp dir");
        super::files::write_json(dir.path(), "connections.json", &serde_json::json!({}));
        super::files::write_json(dir.path(), "webhooks.json", &webhooks);
        let router = Self::start(dir.path(), env);
        router.wait_ready().await;
        (dir, router)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until `/health` answers 200.
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        wait_until(Duration::from_secs(20), "router health 200", || async {
            client
                .get(self.url("/health"))
                .send()
                .await
                .is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
        })
        .await;
    }

    /// Kills the process (SIGKILL: no shutdown at all, as in a crash or an OOM kill).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM, as an orchestrator does.
    pub fn terminate(&self) {
        super::send_signal(self.child.id(), "-TERM");
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits for the process to exit; `None` if it is still running at the deadline.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the process logged so far.
    pub fn logs(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Waits until the log holds `needle`.
    pub async fn wait_log(&self, needle: &str) {
        wait_until(
            Duration::from_secs(10),
            &format!("log line with {needle:?}"),
            || async { self.logs().contains(needle) },
        )
        .await;
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
