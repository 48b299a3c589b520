//! The config tools (`check`, `migrate`, `export`) as an operator runs them: the real binary
//! against a real etcd.

use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::{support::Etcd, unique};

fn switchyard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env_remove("CONFIG_BACKEND")
        .output()
        .expect("the switchyard binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn migrate_then_export_round_trips_and_check_agrees() {
    let etcd = Etcd::start().await;
    let prefix = format!("/{}/", unique!("cwm"));
    let dir = tempfile::tempdir().unwrap();
    let webhooks = json!({
        "github": {"module": "log", "hmac": {"provider": "github", "secret": "{$GH_SECRET:dev}"}},
        "raw": {"module": "log", "data_type": "blob"},
    });
    let connections = json!({"cache": {"type": "redis", "host": "localhost"}});
    let (w, c) = (
        dir.path().join("webhooks.json"),
        dir.path().join("connections.json"),
    );
    std::fs::write(&w, webhooks.to_string()).unwrap();
    std::fs::write(&c, connections.to_string()).unwrap();
    let endpoint = etcd.endpoint();
    let base = [
        "--etcd-endpoints",
        endpoint.as_str(),
        "--etcd-prefix",
        prefix.as_str(),
    ];

    let dry = switchyard(
        &[
            &base[..],
            &[
                "migrate",
                "--webhooks",
                w.to_str().unwrap(),
                "--connections",
                c.to_str().unwrap(),
                "--namespace",
                "acme",
                "--dry-run",
            ],
        ]
        .concat(),
    );
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert!(text(&dry.stdout).contains(&format!("would put  {prefix}acme/webhooks/github")));
    assert_eq!(etcd.revision().await, 1, "a dry run writes nothing");

    let real = switchyard(
        &[
            &base[..],
            &[
                "migrate",
                "--webhooks",
                w.to_str().unwrap(),
                "--connections",
                c.to_str().unwrap(),
                "--namespace",
                "acme",
            ],
        ]
        .concat(),
    );
    assert!(real.status.success(), "{}", text(&real.stderr));

    let check = switchyard(&[&base[..], &["check", "--etcd"]].concat());
    assert!(check.status.success(), "{}", text(&check.stdout));
    assert!(text(&check.stdout).contains("3 valid, 0 invalid"));

    let export = switchyard(&[&base[..], &["export", "--namespace", "acme"]].concat());
    assert!(export.status.success(), "{}", text(&export.stderr));
    let exported: Value = serde_json::from_slice(&export.stdout).unwrap();
    // Placeholders are stored and exported unexpanded.
    assert_eq!(exported, webhooks);
}

#[tokio::test]
async fn invalid_entries_are_reported_with_key_and_reason_and_nothing_is_written() {
    let etcd = Etcd::start().await;
    let prefix = format!("/{}/", unique!("cwm"));
    let dir = tempfile::tempdir().unwrap();
    let (w, c) = (
        dir.path().join("webhooks.json"),
        dir.path().join("connections.json"),
    );
    std::fs::write(
        &w,
        r#"{"ok": {"module": "log"}, "typo": {"module": "log", "hmca": {}}}"#,
    )
    .unwrap();
    std::fs::write(&c, "{}").unwrap();
    let endpoint = etcd.endpoint();
    let base = [
        "--etcd-endpoints",
        endpoint.as_str(),
        "--etcd-prefix",
        prefix.as_str(),
    ];

    let migrate = switchyard(
        &[
            &base[..],
            &[
                "migrate",
                "--webhooks",
                w.to_str().unwrap(),
                "--connections",
                c.to_str().unwrap(),
                "--namespace",
                "acme",
            ],
        ]
        .concat(),
    );
    assert_eq!(migrate.status.code(), Some(1));
    assert!(
        text(&migrate.stdout).contains("#typo: unknown field `hmca`"),
        "{}",
        text(&migrate.stdout)
    );
    assert!(text(&migrate.stderr).contains("nothing written"));
    assert_eq!(etcd.revision().await, 1);

    let check = switchyard(&[
        "check",
        "--webhooks",
        w.to_str().unwrap(),
        "--connections",
        c.to_str().unwrap(),
    ]);
    assert_eq!(check.status.code(), Some(1));
    assert!(text(&check.stdout).contains("1 valid, 1 invalid"));

    etcd.put(&format!("{prefix}acme/webhooks/bad"), "{not json")
        .await;
    etcd.put(
        &format!("{prefix}acme/webhooks/good"),
        r#"{"module":"log"}"#,
    )
    .await;
    let check = switchyard(&[&base[..], &["check", "--etcd"]].concat());
    assert_eq!(check.status.code(), Some(1));
    let out = text(&check.stdout);
    assert!(
        out.contains(&format!(
            "{prefix}acme/webhooks/bad: value is not valid JSON"
        )),
        "{out}"
    );
}

fn write_pair(dir: &std::path::Path, webhooks: &str, connections: &str) -> (String, String) {
    let (w, c) = (dir.join("webhooks.json"), dir.join("connections.json"));
    std::fs::write(&w, webhooks).unwrap();
    std::fs::write(&c, connections).unwrap();
    (
        w.to_str().unwrap().to_owned(),
        c.to_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn migrate_refuses_to_overwrite_a_different_value_without_force() {
    let etcd = Etcd::start().await;
    let prefix = format!("/{}/", unique!("cwm"));
    let shared = format!("{prefix}global/connections/cache");
    etcd.put(&shared, r#"{"type": "redis", "host": "prod-redis"}"#)
        .await;
    let dir = tempfile::tempdir().unwrap();
    // Written with its own key order and spacing: migrate keeps both.
    let hook = r#"{ "timeout_ms": 250,  "module": "log" }"#;
    let (w, c) = write_pair(
        dir.path(),
        &format!(r#"{{"hook": {hook}}}"#),
        r#"{"cache": {"type": "redis", "host": "localhost"}}"#,
    );
    let endpoint = etcd.endpoint();
    let migrate = |extra: &[&str]| {
        let mut args = vec![
            "--etcd-endpoints",
            endpoint.as_str(),
            "--etcd-prefix",
            prefix.as_str(),
            "migrate",
            "--webhooks",
            w.as_str(),
            "--connections",
            c.as_str(),
            "--namespace",
            "acme",
        ];
        args.extend_from_slice(extra);
        switchyard(&args)
    };

    let dry = migrate(&["--dry-run"]);
    assert_eq!(dry.status.code(), Some(1), "{}", text(&dry.stdout));
    assert!(
        text(&dry.stdout).contains(&format!("conflict  {shared}")),
        "{}",
        text(&dry.stdout)
    );
    assert!(text(&dry.stdout).contains(&format!("would put  {prefix}acme/webhooks/hook")));

    let refused = migrate(&[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("--force"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(
        etcd.get(&shared).await.as_deref(),
        Some(r#"{"type": "redis", "host": "prod-redis"}"#)
    );
    assert_eq!(
        etcd.get(&format!("{prefix}acme/webhooks/hook")).await,
        None,
        "nothing written"
    );

    let forced = migrate(&["--force"]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert_eq!(
        etcd.get(&shared).await.as_deref(),
        Some(r#"{"type": "redis", "host": "localhost"}"#)
    );
    assert_eq!(
        etcd.get(&format!("{prefix}acme/webhooks/hook"))
            .await
            .as_deref(),
        Some(hook)
    );

    let again = migrate(&[]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(text(&again.stdout).contains(&format!("unchanged  {shared}")));
}

#[tokio::test]
async fn export_writes_connections_and_flags_what_the_server_would_refuse() {
    let etcd = Etcd::start().await;
    let prefix = format!("/{}/", unique!("cwm"));
    etcd.put(
        &format!("{prefix}acme/webhooks/good"),
        r#"{"module":"log"}"#,
    )
    .await;
    etcd.put(
        &format!("{prefix}acme/webhooks/typo"),
        r#"{"module":"lgo"}"#,
    )
    .await;
    etcd.put(
        &format!("{prefix}other/webhooks/elsewhere"),
        r#"{"module":"log"}"#,
    )
    .await;
    // Another namespace's problems are not this export's.
    etcd.put(
        &format!("{prefix}other/webhooks/bad id!"),
        r#"{"module":"log"}"#,
    )
    .await;
    etcd.put(&format!("{prefix}other/webhooks/broken"), "{nope")
        .await;
    etcd.put(
        &format!("{prefix}global/connections/cache"),
        r#"{"type":"redis","host":"r"}"#,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("connections.json");
    let endpoint = etcd.endpoint();
    let export = switchyard(&[
        "--etcd-endpoints",
        &endpoint,
        "--etcd-prefix",
        &prefix,
        "export",
        "--namespace",
        "acme",
        "--connections",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        export.status.code(),
        Some(1),
        "an invalid entry was exported: exit 1"
    );
    let webhooks: Value = serde_json::from_slice(&export.stdout).unwrap();
    assert_eq!(
        webhooks,
        json!({"good": {"module": "log"}, "typo": {"module": "lgo"}})
    );
    assert!(
        text(&export.stderr).contains("acme/webhooks/typo: unknown module `lgo`"),
        "{}",
        text(&export.stderr)
    );
    assert!(
        !text(&export.stderr).contains("other/"),
        "{}",
        text(&export.stderr)
    );
    let connections: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(
        connections,
        json!({"cache": {"type": "redis", "host": "r"}})
    );
}

#[test]
fn check_refuses_a_missing_file_and_reports_what_only_the_client_library_knows() {
    let dir = tempfile::tempdir().unwrap();
    let missing = switchyard(&[
        "check",
        "--webhooks",
        "/nonexistent.json",
        "--connections",
        "/nonexistent2.json",
    ]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing.stdout));
    assert!(
        text(&missing.stderr).contains("/nonexistent.json"),
        "{}",
        text(&missing.stderr)
    );

    let (w, c) = write_pair(
        dir.path(),
        r#"{"big": {"module": "log", "max_body_bytes": 40000000}}"#,
        r#"{"k": {"type": "kafka", "bootstrap_servers": "k:9092",
                  "client_config": {"no.such.property": "1"}}}"#,
    );
    let check = switchyard(&["check", "--webhooks", &w, "--connections", &c]);
    assert_eq!(check.status.code(), Some(1));
    let out = text(&check.stdout);
    assert!(
        out.contains("#k: librdkafka refuses `client_config`"),
        "{out}"
    );
    assert!(out.contains("no.such.property"), "{out}");
    assert!(
        out.contains(
            "#big: `max_body_bytes` is 40000000, above this instance's MAX_BODY_BYTES_CEILING"
        ),
        "{out}"
    );
}

#[test]
fn check_reports_a_name_written_twice_in_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (w, c) = write_pair(
        dir.path(),
        r#"{"hook": {"module": "log"}, "other": {"module": "log"}, "hook": {"module": "log", "data_type": "blob"}}"#,
        "{}",
    );
    let check = switchyard(&["check", "--webhooks", &w, "--connections", &c]);
    assert_eq!(check.status.code(), Some(1));
    let out = text(&check.stdout);
    assert!(
        out.contains("#hook: written more than once in the file (the server uses the last one)"),
        "{out}"
    );
    assert!(out.contains("2 valid, 1 invalid"), "{out}");
}

#[test]
fn check_warns_when_a_webhook_may_answer_after_its_provider_gives_up() {
    let dir = tempfile::tempdir().unwrap();
    let (w, c) = write_pair(
        dir.path(),
        r#"{
            "slack": {"module": "log", "hmac": {"provider": "slack", "secret": "s"}},
            "slow-github": {"module": "log", "timeout_ms": 15000,
                "hmac": {"provider": "github", "secret": "s"}},
            "quick-slack": {"module": "log", "timeout_ms": 2500,
                "hmac": {"provider": "slack", "secret": "s"}},
            "okta": {"module": "log", "handshake": {"provider": "okta"}, "spool": "always"}
        }"#,
        "{}",
    );
    let run = |spool_dir: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["check", "--webhooks", &w, "--connections", &c])
            .env_remove("CONFIG_BACKEND")
            .env("SPOOL_DIR", spool_dir)
            .output()
            .expect("the switchyard binary runs");
        assert_eq!(
            output.status.code(),
            Some(0),
            "warnings do not fail the check"
        );
        text(&output.stdout)
    };
    // Spool off: a webhook answers when its destinations did, within `timeout_ms` (5 s default).
    let off = run("");
    assert!(
        off.contains("webhooks.json#slack: may answer after 5000 ms (timeout_ms; the spool is off), but Slack gives up after 3000 ms"),
        "{off}"
    );
    assert!(
        off.contains("json#slow-github: may answer after 15000 ms"),
        "{off}"
    );
    assert!(!off.contains("#quick-slack"), "{off}");
    assert_eq!(off.matches("warning  ").count(), 3, "{off}");
    assert!(off.contains("json#okta: may answer after 5000 ms"), "{off}");
    // Spool on: failed deliveries are stored after SPOOL_HANDOFF_MS (2 s), `always` at once.
    let spool = dir.path().join("spool");
    let on = run(spool.to_str().unwrap());
    assert!(!on.contains("json#slack"), "{on}");
    assert!(!on.contains("json#okta"), "{on}");
    assert!(!on.contains("warning"), "{on}");
    assert!(on.contains("4 valid, 0 invalid"), "{on}");
}

#[test]
fn check_says_what_a_missing_connection_means_with_the_spool_on_or_off() {
    let dir = tempfile::tempdir().unwrap();
    let (w, c) = write_pair(
        dir.path(),
        r#"{"late": {"module": "redis_list", "connection": "later", "module-config": {"key": "k"}}}"#,
        "{}",
    );
    let check = switchyard(&["check", "--webhooks", &w, "--connections", &c]);
    assert_eq!(check.status.code(), Some(1));
    let out = text(&check.stdout);
    assert!(
        out.contains(
            "#late: connection `later` is not defined (requests would wait in the spool, 202"
        ),
        "{out}"
    );
    assert!(out.contains("503 connection_missing"), "{out}");
}

/// A channel kept in Redis must name a redis connection of the same config, which no webhook
/// may use.
#[test]
fn check_refuses_a_channel_kept_in_a_missing_or_wrong_store() {
    let dir = tempfile::tempdir().unwrap();
    let hash = "0".repeat(64);
    let (w, c) = write_pair(
        dir.path(),
        r#"{"sneaky": {"module": "redis_stream", "connection": "r", "module-config": {"stream": "switchyard:channel:{good}:messages"}}}"#,
        &format!(
            r#"{{"good": {{"type": "connect", "token_sha256": ["{hash}"], "store": {{"connection": "r"}}}},
                "lost": {{"type": "connect", "token_sha256": ["{hash}"], "store": {{"connection": "nowhere"}}}},
                "odd": {{"type": "connect", "token_sha256": ["{hash}"], "store": {{"connection": "k"}}}},
                "r": {{"type": "redis", "host": "localhost"}},
                "k": {{"type": "kafka", "bootstrap_servers": "localhost:9092"}}}}"#
        ),
    );
    let check = switchyard(&["check", "--webhooks", &w, "--connections", &c]);
    assert_eq!(check.status.code(), Some(1));
    let out = text(&check.stdout);
    assert!(
        out.contains("#lost: `store.connection` `nowhere` is not defined"),
        "{out}"
    );
    assert!(
        out.contains(
            "#odd: `store.connection` `k` is a kafka connection; a channel is kept in a redis one"
        ),
        "{out}"
    );
    assert!(
        out.contains("#sneaky: connection `r` keeps channels (a `connect` connection's `store`); no webhook may write to it"),
        "{out}"
    );
    assert!(!out.contains("#good"), "{out}");
    assert!(out.contains("3 valid, 3 invalid"), "{out}");
}

/// `check --explain` routes a request on paper: each condition of the `filter` and of every
/// `when` with the value it read, and where the request would go; nothing is sent.
#[test]
fn check_explains_where_a_request_would_go() {
    let dir = tempfile::tempdir().unwrap();
    let (w, c) = write_pair(
        dir.path(),
        r#"{"gh": {"filter": {"all": [{"header": "X-GitHub-Event", "in": ["push", "release"]},
                                     {"json_pointer": "/ref", "prefix": "refs/heads/"}]},
                   "chain": [{"module": "log", "when": {"json_pointer": "/ref", "eq": "refs/heads/main"}},
                             {"module": "log", "when": {"not": {"json_pointer": "/ref", "eq": "refs/heads/main"}}},
                             {"module": "log"},
                             {"module": "redis_stream", "connection": "r", "module-config": {"stream":
                               {"from_header": "X-GitHub-Event", "prefix": "gh-", "allowed": ["gh-push"]}}}]}}"#,
        r#"{"r": {"type": "redis", "host": "127.0.0.1", "port": 6379}}"#,
    );
    let body = dir.path().join("body.json");
    std::fs::write(&body, r#"{"ref":"refs/heads/dev"}"#).unwrap();
    let check = |more: &[&str]| {
        let mut args = vec!["check", "--webhooks", &w, "--connections", &c];
        args.extend_from_slice(more);
        switchyard(&args)
    };
    let explain = |event: &str| {
        let header = format!("X-GitHub-Event: {event}");
        let body = body.to_str().unwrap();
        let out = check(&[
            "--explain",
            "default/gh",
            "--body",
            body,
            "--header",
            &header,
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let push = explain("push");
    for line in [
        r#"      match: {"header":"X-GitHub-Event","in":["push","release"]} (read: "push")"#,
        r#"    no match: {"eq":"refs/heads/main","json_pointer":"/ref"} (read: "refs/heads/dev")"#,
        "  chain[2] log: every request",
        r#"    target: read "push": to "gh-push""#,
        "  => delivered to: chain[1] log, chain[2] log, chain[3] redis_stream (gh-push)",
    ] {
        assert!(push.lines().any(|l| l == line), "{line:?} not in:\n{push}");
    }
    let release = explain("release");
    for line in [
        r#"    target: read "release": not allowed and no default, so not delivered here"#,
        "  => delivered to: chain[1] log, chain[2] log",
    ] {
        assert!(
            release.lines().any(|l| l == line),
            "{line:?} not in:\n{release}"
        );
    }
    let ping = explain("ping");
    assert!(ping.contains("    no match: all"), "{ping}");
    assert!(
        ping.contains(r#"  => filtered: answered 200 {"status":"filtered"}, delivered nowhere"#),
        "{ping}"
    );
    // A webhook that is not there, and a header written without its colon.
    let out = check(&["--explain", "nope"]);
    assert!(
        text(&out.stderr).contains("no webhook `default/nope`"),
        "{}",
        text(&out.stderr)
    );
    let out = check(&["--explain", "gh", "--header", "X-A"]);
    assert!(
        text(&out.stderr).contains("write it as `Name: value`"),
        "{}",
        text(&out.stderr)
    );
}
