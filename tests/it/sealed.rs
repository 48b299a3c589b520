//! Sealed credentials as an operator uses them: `switchyard seal` (the real binary) makes the
//! value, `etcdctl put` (here the etcd client) writes it, the router opens it. A live change
//! from plain to sealed; values that do not open (altered, moved to another entry, unknown key,
//! another field) leave the last good version serving and are named in `/status` without the
//! secret; a sealed header of an `http` connection reaches the service; `check`, `export` and
//! key rotation agree with the server.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    support::{
        app::etcd_settings, files::write_json, get_json, hmac_sha256, process::Router,
        service::Service, wait_until, Etcd, TestApp,
    },
    unique,
};

/// Two 32-byte keys, base64.
const OLD: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const NEW: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// A key file of `lines` in `dir`, readable by its owner only.
fn key_file(dir: &Path, name: &str, lines: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, lines).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Runs the binary with `env` (and nothing else from this process's environment), `stdin` on
/// its standard input.
fn switchyard(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the switchyard binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `printf %s SECRET | switchyard seal --entry ENTRY --field FIELD` with `keys`.
fn seal(keys: &Path, prefix: &str, entry: &str, field: &str, secret: &str) -> String {
    let keys = keys.to_str().unwrap();
    let out = switchyard(
        &["seal", "--entry", entry, "--field", field],
        &[("SEAL_KEYS_FILE", keys), ("ETCD_PREFIX", prefix)],
        secret,
    );
    assert!(out.status.success(), "seal: {}", text(&out.stderr));
    let sealed = text(&out.stdout).trim_end().to_owned();
    assert!(sealed.starts_with("sealed:v1:"), "{sealed}");
    assert!(!sealed.contains(secret));
    sealed
}

async fn signed(app: &TestApp, secret: &str) -> StatusCode {
    let body = r#"{"zen":"Keep it logically awesome."}"#;
    let signature = hex::encode(hmac_sha256(secret.as_bytes(), &[body.as_bytes()]));
    app.client
        .post(app.url("/webhook/acme/gh"))
        .header("x-github-event", "ping")
        .header("x-hub-signature-256", format!("sha256={signature}"))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

fn github(secret: &str) -> String {
    json!({"module": "log", "hmac": {"provider": "github", "secret": secret}}).to_string()
}

#[tokio::test]
async fn a_live_change_from_plain_to_sealed_and_values_that_do_not_open() {
    let etcd = Etcd::start().await;
    let p = format!("/{}/", unique!("cwm"));
    let key = format!("{p}acme/webhooks/gh");
    let dir = tempfile::tempdir().unwrap();
    let keys = key_file(dir.path(), "seal.keys", &format!("k1={OLD}\n"));
    etcd.put(&key, &github("plain-secret")).await;
    let settings = switchyard::settings::Settings {
        seal_keys_file: Some(keys.clone()),
        ..etcd_settings(&etcd.endpoint(), &p)
    };
    let app = TestApp::spawn_ready(settings).await;
    assert_eq!(signed(&app, "plain-secret").await, StatusCode::OK);

    // Plain to sealed, live: the new secret verifies, the old one no longer does.
    let sealed = seal(&keys, &p, &key, "hmac.secret", "sealed-secret");
    let revision = etcd.put(&key, &github(&sealed)).await;
    wait_until(
        Duration::from_secs(10),
        "the sealed entry applied",
        || async { app.health().await.1["config"]["revision"] == revision },
    )
    .await;
    assert_eq!(signed(&app, "sealed-secret").await, StatusCode::OK);
    assert_eq!(signed(&app, "plain-secret").await, StatusCode::UNAUTHORIZED);

    // `export` keeps the value sealed, byte for byte.
    let endpoint = etcd.endpoint();
    let keys_path = keys.to_str().unwrap();
    let tool_env = [
        ("SEAL_KEYS_FILE", keys_path),
        ("ETCD_ENDPOINTS", endpoint.as_str()),
        ("ETCD_PREFIX", p.as_str()),
    ];
    let export = switchyard(&["export", "--namespace", "acme"], &tool_env, "");
    assert!(export.status.success(), "{}", text(&export.stderr));
    let exported: Value = serde_json::from_slice(&export.stdout).unwrap();
    assert_eq!(exported["gh"]["hmac"]["secret"], sealed.as_str());

    // Values that do not open: each is refused with its field and why, never the secret, and
    // the last good version keeps serving.
    let other_keys = key_file(dir.path(), "other.keys", &format!("k2={NEW}\n"));
    let (head, encoded) = sealed.rsplit_once(':').unwrap();
    let flipped = if encoded.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{head}:{flipped}{}", &encoded[1..]);
    let cases = [
        (tampered, "does not open with key `k1`"),
        (
            seal(
                &keys,
                &p,
                &format!("{p}acme/webhooks/other"),
                "hmac.secret",
                "sealed-secret",
            ),
            "does not open with key `k1`",
        ),
        (
            seal(&keys, &p, &key, "jwt.secret", "sealed-secret"),
            "does not open with key `k1`",
        ),
        (
            seal(&other_keys, &p, &key, "hmac.secret", "sealed-secret"),
            "uses key `k2`, which is not in SEAL_KEYS_FILE",
        ),
        (
            "sealed:v1:k1:%%%".to_owned(),
            "is not of the form sealed:v1:",
        ),
    ];
    for (value, why) in &cases {
        etcd.put(&key, &github(value)).await;
        let refused = |status: &Value| {
            status["skipped"].as_array().into_iter().flatten().any(|s| {
                s["key"] == key.as_str() && s["reason"].as_str().is_some_and(|r| r.contains(why))
            })
        };
        wait_until(Duration::from_secs(10), why, || async {
            refused(&get_json(&app.base(), "/status").await)
        })
        .await;
        let shown = get_json(&app.base(), "/status").await.to_string();
        assert!(shown.contains("sealed value at `hmac.secret`"), "{shown}");
        assert!(!shown.contains("sealed-secret") && !shown.contains(value.as_str()));
        assert_eq!(signed(&app, "sealed-secret").await, StatusCode::OK, "{why}");
        // `check` refuses it with the same words.
        let check = switchyard(&["check", "--etcd"], &tool_env, "");
        assert_eq!(check.status.code(), Some(1), "{why}");
        assert!(text(&check.stdout).contains(why), "{}", text(&check.stdout));
    }

    // Fixed: applied, and no longer listed.
    etcd.put(&key, &github(&sealed)).await;
    wait_until(
        Duration::from_secs(10),
        "the fixed entry applied",
        || async {
            let status = get_json(&app.base(), "/status").await;
            !status.to_string().contains(key.as_str())
        },
    )
    .await;
    let check = switchyard(&["check", "--etcd"], &tool_env, "");
    assert!(check.status.success(), "{}", text(&check.stdout));
}

#[tokio::test]
async fn a_sealed_header_reaches_the_service_and_rotation_keeps_old_values_open() {
    let service = Service::start();
    let dir = tempfile::tempdir().unwrap();
    let old = key_file(dir.path(), "old.keys", &format!("old={OLD}\n"));
    let header = seal(
        &old,
        "/cwm/",
        "global/connections/svc",
        "headers.X-Api-Key",
        "api-key-123",
    );
    write_json(
        dir.path(),
        "connections.json",
        &json!({"svc": {"type": "http", "base_url": service.url(),
                        "headers": {"X-Api-Key": header}}}),
    );
    write_json(
        dir.path(),
        "webhooks.json",
        &json!({"hook": {"module": "http", "connection": "svc", "spool": "off",
                         "module-config": {"path": "/ok"}}}),
    );
    // Rotation: the new key seals, the old one still opens what it sealed.
    let rotated = key_file(
        dir.path(),
        "rotated.keys",
        &format!("# new first: it seals\nnew={NEW}\nold={OLD}\n"),
    );
    let resealed = seal(
        &rotated,
        "/cwm/",
        "/cwm/global/connections/svc",
        "headers.X-Api-Key",
        "api-key-123",
    );
    assert!(resealed.starts_with("sealed:v1:new:"), "{resealed}");
    let router = Router::start(
        dir.path(),
        &[
            ("HTTP_ALLOWED_NETWORKS", "127.0.0.0/8"),
            ("SEAL_KEYS_FILE", rotated.to_str().unwrap()),
        ],
    );
    router.wait_ready().await;
    let response = reqwest::Client::new()
        .post(router.url("/webhook/hook"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let received = service.received_on("/ok");
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].header("x-api-key"), Some("api-key-123"));
    assert!(!router.logs().contains("api-key-123"));

    // `check` on the files: with a key that opens it, valid; without keys, or with only a key
    // that did not seal it, the header is named and the entry invalid.
    let files = [
        "check",
        "--webhooks",
        dir.path().join("webhooks.json").to_str().unwrap(),
        "--connections",
        dir.path().join("connections.json").to_str().unwrap(),
    ]
    .map(str::to_owned);
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let check = |env: &[(&str, &str)]| switchyard(&files, env, "");
    let ok = check(&[("SEAL_KEYS_FILE", rotated.to_str().unwrap())]);
    assert!(ok.status.success(), "{}", text(&ok.stdout));
    let only_new = key_file(dir.path(), "new.keys", &format!("new={NEW}\n"));
    for (env, why) in [
        (
            vec![],
            "uses key `old`, but no SEAL_KEYS_FILE is configured",
        ),
        (
            vec![("SEAL_KEYS_FILE", only_new.to_str().unwrap())],
            "uses key `old`, which is not in SEAL_KEYS_FILE",
        ),
    ] {
        let out = check(&env);
        assert_eq!(out.status.code(), Some(1), "{why}");
        let printed = text(&out.stdout);
        assert!(
            printed.contains("sealed value at `headers.X-Api-Key`") && printed.contains(why),
            "{printed}"
        );
    }
}

#[test]
fn seal_refuses_what_would_never_open_and_a_bad_key_file_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let keys = key_file(dir.path(), "seal.keys", &format!("k1={OLD}\n"));
    let keys = keys.to_str().unwrap();
    for (args, stdin, why) in [
        (
            ["--entry", "acme/webhooks/gh", "--field", "data_type"],
            "s",
            "--field data_type: not a credential field",
        ),
        (
            ["--entry", "global/connections/c", "--field", "hmac.secret"],
            "s",
            "--field hmac.secret: not a credential field",
        ),
        (
            ["--entry", "acme/hooks/gh", "--field", "hmac.secret"],
            "s",
            "not a webhook or connection key",
        ),
        (
            ["--entry", "acme/webhooks/gh", "--field", "hmac.secret"],
            "\n",
            "no secret on stdin",
        ),
    ] {
        let out = switchyard(
            &[&["seal"][..], &args[..]].concat(),
            &[("SEAL_KEYS_FILE", keys)],
            stdin,
        );
        assert_eq!(out.status.code(), Some(2), "{why}");
        assert!(text(&out.stderr).contains(why), "{}", text(&out.stderr));
        assert!(out.stdout.is_empty());
    }
    let out = switchyard(
        &[
            "seal",
            "--entry",
            "acme/webhooks/gh",
            "--field",
            "hmac.secret",
        ],
        &[],
        "s",
    );
    assert!(text(&out.stderr).contains("SEAL_KEYS_FILE is not set"));

    // A key file with a bad line: start-up stops with exit 64, naming the setting, the file and
    // the line, and never the key material.
    let bad = key_file(
        dir.path(),
        "bad.keys",
        &format!("k1={OLD}\nk2=c2hvcnQta2V5\n"),
    );
    let out = switchyard(
        &[],
        &[("SEAL_KEYS_FILE", bad.to_str().unwrap()), ("PORT", "0")],
        "",
    );
    assert_eq!(out.status.code(), Some(64));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("SEAL_KEYS_FILE")
            && stderr.contains(bad.to_str().unwrap())
            && stderr.contains("line 2"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("c2hvcnQta2V5") && !stderr.contains(OLD),
        "{stderr}"
    );
}
