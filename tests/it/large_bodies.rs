//! Large bodies, bounded by bytes: a GitHub push of 25 MB is accepted with the default settings
//! (the preset brings GitHub's size; GitHub never retries a refused delivery), and 50 uploads of
//! 25 MB at once keep the router's memory within `BODY_MEMORY_BYTES` plus a fixed overhead: the
//! bodies that do not fit are refused with 503 `overloaded` (the real binary, its peak RSS read
//! from `/proc`).

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{hmac_sha256, process::Router};

const SECRET: &str = "It's a Secret to Everybody";
const MIB: usize = 1 << 20;

/// A JSON push of `size` bytes.
fn push(size: usize) -> Vec<u8> {
    let head = br#"{"ref":"refs/heads/main","padding":""#;
    let tail = br#""}"#;
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(head);
    body.resize(size - tail.len(), b'x');
    body.extend_from_slice(tail);
    body
}

fn signature(body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(SECRET.as_bytes(), &[body]))
    )
}

async fn start(env: &[(&str, &str)]) -> (tempfile::TempDir, Router) {
    Router::serving(
        json!({
            "github": {"module": "log", "hmac": {"provider": "github", "secret": SECRET}},
            "plain": {"module": "log"},
        }),
        env,
    )
    .await
}

async fn post(router: &Router, webhook: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(router.url(&format!("/webhook/{webhook}")))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-hub-signature-256", signature(&body))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_25_mb_github_push_is_accepted_with_the_default_settings() {
    let (_dir, router) = start(&[]).await;
    let (status, answer) = post(&router, "github", push(25_000_000)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "accepted");
    // Past the preset's size, and past MAX_BODY_BYTES for a webhook without a preset.
    let (status, answer) = post(&router, "github", push(25 * MIB + 1)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    let (status, answer) = post(&router, "plain", push(2_600_000)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    let (status, _) = post(&router, "plain", push(MIB)).await;
    assert_eq!(status, StatusCode::OK);
}

/// The process's peak resident memory (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// Uploads `body` in 1 MiB chunks, 40 ms apart (about a second in all, so that the uploads
/// overlap); with a `Content-Length` or chunked. `None`: the connection ended before an answer.
async fn slow_upload(
    url: String,
    body: Bytes,
    signature: String,
    with_length: bool,
) -> Option<(StatusCode, Value)> {
    let length = body.len();
    let chunks: Vec<Bytes> = (0..length)
        .step_by(MIB)
        .map(|at| body.slice(at..(at + MIB).min(length)))
        .collect();
    let stream = futures_util::stream::iter(chunks).then(|chunk| async move {
        tokio::time::sleep(Duration::from_millis(40)).await;
        Ok::<_, std::io::Error>(chunk)
    });
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .body(reqwest::Body::wrap_stream(stream));
    if with_length {
        request = request.header("content-length", length.to_string());
    }
    let response = request.send().await.ok()?;
    let status = response.status();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn fifty_concurrent_25_mb_uploads_keep_memory_within_the_budget() {
    const BUDGET: u64 = 256 << 20;
    const OVERHEAD: u64 = 160 << 20;
    // Every upload comes from this one address: its reader share is raised to let them all in.
    let budget = BUDGET.to_string();
    let (_dir, router) = start(&[
        ("BODY_MEMORY_BYTES", budget.as_str()),
        ("MAX_BODY_READERS_PER_CLIENT", "100"),
    ])
    .await;
    let before = peak_rss(router.pid());
    let body = Bytes::from(push(25_000_000));
    let signature = signature(&body);
    let uploads: Vec<_> = (0..50)
        .map(|i| {
            tokio::spawn(slow_upload(
                router.url("/webhook/github"),
                body.clone(),
                signature.clone(),
                i % 2 == 0,
            ))
        })
        .collect();
    let mut accepted = 0;
    let mut refused = 0;
    for upload in uploads {
        match upload.await.unwrap() {
            Some((StatusCode::OK, answer)) => {
                assert_eq!(answer["status"], "accepted");
                accepted += 1;
            }
            Some((StatusCode::SERVICE_UNAVAILABLE, answer)) => {
                assert_eq!(answer["error"], "overloaded", "{answer}");
                refused += 1;
            }
            Some((status, answer)) => panic!("unexpected answer {status}: {answer}"),
            // Refused before its body was read: the router closed the connection after its
            // answer, which the client may see as an error while it is still sending.
            None => refused += 1,
        }
    }
    let peak = peak_rss(router.pid());
    assert!(accepted >= 5, "{accepted} accepted, {refused} refused");
    assert!(refused >= 1, "50 x 25 MB cannot all fit in 256 MiB at once");
    assert!(
        peak <= BUDGET + OVERHEAD,
        "peak RSS {} MiB (before the uploads {} MiB) is above the budget {} MiB + {} MiB",
        peak >> 20,
        before >> 20,
        BUDGET >> 20,
        OVERHEAD >> 20
    );
    // Every reservation was given back.
    let held = crate::support::metric(&router.base(), "switchyard_body_memory_bytes").await;
    assert_eq!(held, 0.0);
    eprintln!(
        "accepted {accepted}, refused {refused}, peak RSS {} MiB (before: {} MiB)",
        peak >> 20,
        before >> 20
    );
}
