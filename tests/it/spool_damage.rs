//! The spool's files damaged or failing, from outside: a journal frame flipped, a file deleted
//! or cut after a SIGKILL (the router refuses to start, `switchyard spool recover` keeps all
//! but what was damaged and says what was lost), and disk writes failing with `EIO` while the
//! router runs (503, never 202; back in service once the disk works, nothing acknowledged lost).

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{
    files::write_json, get_json, process::Router, strace::Strace, wait_until, Redis,
};

/// Every call that writes or syncs a file.
const DISK_WRITES: &str = "pwrite64,pwritev,pwritev2,fsync,fdatasync";

/// A request acknowledged (or refused) by the router.
#[derive(Debug, Clone)]
struct Sent {
    body: String,
    request_id: String,
    status: StatusCode,
}

/// A `spool: always` webhook `s` to a Redis stream, with Redis stopped (records stay spooled).
struct Setup {
    redis: Redis,
    dir: tempfile::TempDir,
    stream: String,
}

impl Setup {
    async fn new() -> Self {
        let mut redis = Redis::start().await;
        let stream = crate::unique!("damage");
        let dir = tempfile::tempdir().unwrap();
        let connection: Value = serde_json::from_str(&redis.connection()).unwrap();
        write_json(dir.path(), "connections.json", &json!({ "r": connection }));
        write_json(
            dir.path(),
            "webhooks.json",
            &json!({"s": {"module": "redis_stream", "connection": "r", "spool": "always",
                          "module-config": {"stream": stream}}}),
        );
        redis.stop();
        Self { redis, dir, stream }
    }

    fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    fn router(&self) -> Router {
        Router::start(self.dir.path(), &[("SHUTDOWN_DRAIN_SECONDS", "0")])
    }

    /// Posts `n` requests while the redb file cannot be written (its writes held by strace),
    /// so every acknowledged record is in the journal only; then kills the router.
    async fn journal_only(&self, n: usize) -> Vec<Sent> {
        let mut router = self.router();
        router.wait_ready().await;
        let redb = self.spool().join("spool.redb");
        let held = Strace::attach(
            router.pid(),
            DISK_WRITES,
            "delay_enter=60000000",
            &[&redb],
            self.dir.path(),
        )
        .await;
        let sent = post(&router, "journal", 0..n).await;
        assert!(
            sent.iter().all(|s| s.status == StatusCode::ACCEPTED),
            "{sent:?}"
        );
        router.kill();
        drop(held);
        sent
    }

    /// The router with 10 requests acknowledged (202), then every write to `files` (in the
    /// spool directory) failing with `EIO` until the returned strace is dropped.
    async fn with_failing_writes(&self, files: &[&str]) -> (Router, Vec<Sent>, Strace) {
        let router = self.router();
        router.wait_ready().await;
        let acknowledged = post(&router, "before", 0..10).await;
        assert!(acknowledged
            .iter()
            .all(|s| s.status == StatusCode::ACCEPTED));
        let paths: Vec<PathBuf> = files.iter().map(|f| self.spool().join(f)).collect();
        let paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let failing = Strace::attach(
            router.pid(),
            DISK_WRITES,
            "error=EIO",
            &paths,
            self.dir.path(),
        )
        .await;
        (router, acknowledged, failing)
    }

    /// The bodies in the stream once every one of `expected` is there.
    async fn delivered(&self, expected: &[Sent]) -> HashSet<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let have: HashSet<String> = self
                .redis
                .stream_payloads(&self.stream)
                .await
                .into_iter()
                .collect();
            let missing: Vec<&Sent> = expected
                .iter()
                .filter(|s| !have.contains(&s.body))
                .collect();
            if missing.is_empty() {
                return have;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not delivered: {missing:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Posts one request per number in `range` to webhook `s`, in order.
async fn post(router: &Router, tag: &str, range: std::ops::Range<usize>) -> Vec<Sent> {
    let client = reqwest::Client::new();
    let mut sent = Vec::new();
    for n in range {
        let body = format!(r#"{{"{tag}":{n}}}"#);
        let response = client
            .post(router.url("/webhook/s"))
            .header("content-type", "application/json")
            .body(body.clone())
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        sent.push(Sent {
            body,
            request_id,
            status: response.status(),
        });
    }
    sent
}

/// Starts the router on a damaged spool: it must exit 1 and say what is wrong; its log.
async fn refused_start(setup: &Setup) -> String {
    let mut router = setup.router();
    let exit = router
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("a damaged spool stops start-up");
    let logs = router.logs();
    assert_eq!(exit.code(), Some(1), "{logs}");
    assert!(logs.contains("switchyard spool recover"), "{logs}");
    assert!(logs.contains("SPOOL_ON_DAMAGE=salvage"), "{logs}");
    logs
}

/// `switchyard spool recover --dir <spool>`: exit 0 and its JSON report.
fn recover(spool: &Path) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["spool", "recover", "--dir"])
        .arg(spool)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Where each frame of a journal file starts.
fn frames(path: &Path) -> (Vec<u8>, Vec<usize>) {
    let bytes = std::fs::read(path).unwrap();
    let starts = bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"SWJ2")
        .map(|(i, _)| i)
        .collect();
    (bytes, starts)
}

#[tokio::test]
async fn a_damaged_frame_refuses_start_and_recover_loses_only_that_frame() {
    let mut setup = Setup::new().await;
    let sent = setup.journal_only(40).await;
    // One flipped byte at the end of the first frame (its record): the request's id before it
    // stays readable.
    let journal = setup.spool().join("spool.journal.0");
    let (mut bytes, starts) = frames(&journal);
    assert!(starts.len() >= 2, "frames in {}", journal.display());
    bytes[starts[1] - 1] ^= 0x55;
    std::fs::write(&journal, &bytes).unwrap();

    let logs = refused_start(&setup).await;
    assert!(logs.contains("spool.journal.0: 1 record(s) lost"), "{logs}");

    let report = recover(&setup.spool());
    assert_eq!(report["damaged"], true, "{report}");
    assert_eq!(report["salvaged"], 39, "{report}");
    let lost = &report["lost"][0];
    assert_eq!(lost["records"], 1, "{report}");
    assert_eq!(lost["file"], "spool.journal.0", "{report}");
    assert_eq!(lost["request_ids"], json!([sent[0].request_id]), "{report}");
    assert!(
        lost["destinations"][0]
            .as_str()
            .is_some_and(|d| d.contains("s")),
        "{report}"
    );
    // Recovered: the next start serves, and everything but the damaged frame is delivered.
    assert_eq!(recover(&setup.spool())["damaged"], false);
    setup.redis.restart().await;
    let router = setup.router();
    router.wait_ready().await;
    let delivered = setup.delivered(&sent[1..]).await;
    assert!(!delivered.contains(&sent[0].body));
}

#[tokio::test]
async fn a_deleted_or_cut_journal_file_refuses_start_until_recovered() {
    for cut in [None, Some(1000)] {
        let setup = Setup::new().await;
        setup.journal_only(10).await;
        let journal = setup.spool().join("spool.journal.0");
        match cut {
            None => std::fs::remove_file(&journal).unwrap(),
            Some(len) => std::fs::File::options()
                .write(true)
                .open(&journal)
                .unwrap()
                .set_len(len)
                .unwrap(),
        }
        let logs = refused_start(&setup).await;
        let said = match cut {
            None => "spool.journal.0 is missing",
            Some(_) => "spool.journal.0 was cut to 1000 bytes",
        };
        assert!(logs.contains(said), "{logs}");
        let report = recover(&setup.spool());
        assert_eq!(report["damaged"], true, "{report}");
        assert!(
            report["lost"].to_string().contains("spool.journal.0"),
            "{report}"
        );
        let router = setup.router();
        router.wait_ready().await;
    }
}

#[tokio::test]
async fn an_emptied_spool_file_refuses_start_and_salvage_keeps_the_journal() {
    let mut setup = Setup::new().await;
    let sent = setup.journal_only(10).await;
    let redb = setup.spool().join("spool.redb");
    std::fs::File::options()
        .write(true)
        .open(&redb)
        .unwrap()
        .set_len(0)
        .unwrap();
    let logs = refused_start(&setup).await;
    assert!(logs.contains("spool.redb is missing or empty"), "{logs}");
    // SPOOL_ON_DAMAGE=salvage goes on with what the journal holds, and says what happened.
    setup.redis.restart().await;
    let router = Router::start(
        setup.dir.path(),
        &[
            ("SHUTDOWN_DRAIN_SECONDS", "0"),
            ("SPOOL_ON_DAMAGE", "salvage"),
        ],
    );
    router.wait_ready().await;
    assert!(router.logs().contains("every readable record was kept"));
    setup.delivered(&sent).await;
}

#[tokio::test]
async fn journal_write_errors_answer_503_and_the_spool_comes_back_losing_nothing() {
    let mut setup = Setup::new().await;
    let (router, acknowledged, failing) = setup
        .with_failing_writes(&["spool.journal.0", "spool.journal.1"])
        .await;
    let mut refused = Vec::new();
    let mut health = Value::Null;
    for n in 0..10 {
        refused.extend(post(&router, "failing", n..n + 1).await);
        health = get_json(&router.base(), "/health").await;
        if health["components"]["spool"] == "unavailable" {
            break;
        }
    }
    assert!(
        refused
            .iter()
            .all(|s| s.status == StatusCode::SERVICE_UNAVAILABLE),
        "never 202 on a failing disk: {refused:?}"
    );
    assert_eq!(health["components"]["spool"], "unavailable", "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["spool"]["unavailable"]
            .as_str()
            .is_some_and(|r| r.contains("Input/output error")),
        "{health}"
    );
    // Unavailable: refused at once, without touching the disk.
    refused.extend(post(&router, "unavailable", 0..3).await);
    assert!(refused
        .iter()
        .all(|s| s.status == StatusCode::SERVICE_UNAVAILABLE));
    drop(failing);
    let delivered = back_in_service(&mut setup, &router, acknowledged).await;
    for s in &refused {
        assert!(!delivered.contains(&s.body), "refused but delivered: {s:?}");
    }
}

#[tokio::test]
async fn spool_file_write_errors_make_it_unavailable_until_it_is_reopened() {
    let mut setup = Setup::new().await;
    let (router, mut acknowledged, failing) = setup.with_failing_writes(&["spool.redb"]).await;
    // The journal switches files once a second while requests arrive, and the switch needs
    // the redb file durable: that fails, and the spool says so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for n in 0.. {
        let sent = post(&router, "during", n..n + 1).await;
        acknowledged.extend(
            sent.into_iter()
                .filter(|s| s.status == StatusCode::ACCEPTED),
        );
        let health = get_json(&router.base(), "/health").await;
        if health["components"]["spool"] == "unavailable" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spool never unavailable: {health}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(failing);
    back_in_service(&mut setup, &router, acknowledged).await;
}

/// The disk works again: a probe puts the spool back in service without a restart, new
/// requests are stored, and once Redis is back everything acknowledged is delivered (what was
/// delivered is returned).
async fn back_in_service(
    setup: &mut Setup,
    router: &Router,
    mut acknowledged: Vec<Sent>,
) -> HashSet<String> {
    wait_until(Duration::from_secs(20), "spool back in service", || async {
        get_json(&router.base(), "/health").await["components"]["spool"] != "unavailable"
    })
    .await;
    let after = post(router, "after", 0..10).await;
    assert!(
        after.iter().all(|s| s.status == StatusCode::ACCEPTED),
        "{after:?}"
    );
    acknowledged.extend(after);
    setup.redis.restart().await;
    setup.delivered(&acknowledged).await
}

#[tokio::test]
async fn a_disk_failing_every_write_of_the_spool_comes_back_without_a_restart() {
    let mut setup = Setup::new().await;
    let (router, acknowledged, failing) = setup
        .with_failing_writes(&["spool.journal.0", "spool.journal.1", "spool.redb"])
        .await;
    let mut refused = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        refused.extend(post(&router, "failing", refused.len()..refused.len() + 1).await);
        let health = get_json(&router.base(), "/health").await;
        if health["components"]["spool"] == "unavailable" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spool never unavailable: {health}"
        );
    }
    assert!(
        refused
            .iter()
            .all(|s| s.status == StatusCode::SERVICE_UNAVAILABLE),
        "never 202 on a failing disk: {refused:?}"
    );
    drop(failing);
    let delivered = back_in_service(&mut setup, &router, acknowledged).await;
    for s in &refused {
        assert!(!delivered.contains(&s.body), "refused but delivered: {s:?}");
    }
}
