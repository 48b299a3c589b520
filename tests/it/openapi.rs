//! `openapi.yaml` kept true: schemathesis (installed by `make deps` into `target/tools-venv`)
//! generates requests for every documented route, valid and invalid, against the real binary,
//! and checks every answer against the description: documented status, content type, headers
//! and body shape, and no 5xx.

use std::process::Command;

use serde_json::json;

use crate::support::{files::write_json, process::Router};

#[tokio::test]
async fn the_router_answers_as_openapi_yaml_describes() {
    let root = env!("CARGO_MANIFEST_DIR");
    let schemathesis = format!("{root}/target/tools-venv/bin/schemathesis");
    assert!(
        std::path::Path::new(&schemathesis).exists(),
        "schemathesis is missing: run ./scripts/install-deps.sh (make deps)"
    );
    let dir = tempfile::tempdir().unwrap();
    write_json(
        dir.path(),
        "webhooks.json",
        &json!({"w": {"module": "log"}}),
    );
    write_json(dir.path(), "connections.json", &json!({}));
    let router = Router::start(dir.path(), &[]);
    router.wait_ready().await;
    let url = router.base();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(schemathesis)
            .arg("run")
            .arg(format!("{root}/openapi.yaml"))
            .args(["--url", &url, "--checks", "all", "-n", "20", "--seed", "1"])
            .args(["--generation-database", "none", "--no-color"])
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
