//! Several identical instances behind a load balancer: two real processes against one etcd.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use reqwest::StatusCode;

use crate::{
    support::{ports::free_port, wait_until, Etcd},
    unique,
};

struct Instance {
    child: Child,
    port: u16,
    /// Each instance has a spool directory of its own.
    _spool: tempfile::TempDir,
}

impl Instance {
    fn start(endpoint: &str, prefix: &str) -> Self {
        let port = free_port();
        let spool = tempfile::tempdir().expect("spool dir");
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .env("SPOOL_DIR", spool.path())
            .env("CONFIG_BACKEND", "etcd")
            .env("ETCD_ENDPOINTS", endpoint)
            .env("ETCD_PREFIX", prefix)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("HTTP_WORKERS", "1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the switchyard binary starts");
        Self {
            child,
            port,
            _spool: spool,
        }
    }

    async fn status_of(&self, path: &str) -> Option<StatusCode> {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/webhook/{path}", self.port))
            .body("{}")
            .send()
            .await
            .ok()
            .map(|r| r.status())
    }

    async fn wait_status(&self, path: &str, status: StatusCode) {
        wait_until(
            Duration::from_secs(20),
            &format!("{path} -> {status} on :{}", self.port),
            || async { self.status_of(path).await == Some(status) },
        )
        .await;
    }

    fn stop(&mut self) {
        // SIGTERM: the graceful path.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn two_instances_see_every_change_and_survive_each_others_restart() {
    let etcd = Etcd::start().await;
    let p = format!("/{}/", unique!("cwm"));
    etcd.put(&format!("{p}acme/webhooks/a"), r#"{"module":"log"}"#)
        .await;
    let mut first = Instance::start(&etcd.endpoint(), &p);
    let second = Instance::start(&etcd.endpoint(), &p);
    first.wait_status("acme/a", StatusCode::OK).await;
    second.wait_status("acme/a", StatusCode::OK).await;

    etcd.put(&format!("{p}acme/webhooks/b"), r#"{"module":"log"}"#)
        .await;
    etcd.delete(&format!("{p}acme/webhooks/a")).await;
    for instance in [&first, &second] {
        instance.wait_status("acme/b", StatusCode::OK).await;
        instance.wait_status("acme/a", StatusCode::NOT_FOUND).await;
    }

    // One instance restarts; the other keeps serving throughout and both converge.
    first.stop();
    let exit = first.child.try_wait().unwrap().expect("stopped");
    assert!(exit.success(), "graceful stop exits 0, got {exit:?}");
    assert_eq!(second.status_of("acme/b").await, Some(StatusCode::OK));
    etcd.put(&format!("{p}acme/webhooks/c"), r#"{"module":"log"}"#)
        .await;
    second.wait_status("acme/c", StatusCode::OK).await;
    let restarted = Instance::start(&etcd.endpoint(), &p);
    restarted.wait_status("acme/c", StatusCode::OK).await;
    restarted.wait_status("acme/a", StatusCode::NOT_FOUND).await;
    assert_eq!(second.status_of("acme/b").await, Some(StatusCode::OK));
}
