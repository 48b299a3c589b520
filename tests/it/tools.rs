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
