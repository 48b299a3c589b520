//! `switchyard spool status | dead-letters | replay | purge`: against the spool directory when
//! no instance holds it, or through the running instance's admin listener (`/spool`) when one
//! does (the file is locked while an instance runs). Output is JSON, the same either way.

use std::time::Duration;

use crate::{
    http::spool::Selection,
    settings::Settings,
    spool::{self, store::FILE_NAME, Store, StoreError},
};

/// What to do.
#[derive(Debug, Clone)]
pub enum Action {
    Status,
    DeadLetters {
        limit: usize,
    },
    Replay(Option<Vec<u64>>),
    /// A channel's dead letters (connector mode) back at its end.
    ReplayChannel(String),
    Purge(Option<Vec<u64>>),
}

/// Runs `action`; returns the JSON to print.
pub async fn run(settings: &Settings, action: Action, url: Option<&str>) -> Result<String, String> {
    if let Some(url) = url {
        return remote(url, &action).await;
    }
    let dir = settings
        .spool_dir()
        .ok_or("the spool is off (SPOOL_DIR is empty)")?;
    if let Action::ReplayChannel(name) = &action {
        return match crate::connect::Channels::open(dir) {
            Ok(channels) => {
                let channel = channels
                    .all()
                    .into_iter()
                    .find(|c| c.name == *name)
                    .ok_or_else(|| format!("no channel `{name}` in {}", dir.display()))?;
                let replayed = channels
                    .replay(channel, spool::now_ms())
                    .await
                    .map_err(|e| e.to_string())?;
                pretty(serde_json::json!({ "replayed": replayed }))
            }
            Err(crate::connect::ChannelError::InUse) => remote(&admin_url(settings), &action).await,
            Err(error) => Err(error.to_string()),
        };
    }
    let path = dir.join(FILE_NAME);
    if !path.exists() {
        return Err(format!("no spool at {}", path.display()));
    }
    match Store::open(&path, settings.spool_max_bytes) {
        Ok(store) => local(&store, action),
        Err(error) if error.in_use() => {
            // An instance runs on this directory: ask it.
            remote(&admin_url(settings), &action).await
        }
        Err(error) => Err(error.to_string()),
    }
}

/// `switchyard spool recover`: opens the spool in `dir` (or `SPOOL_DIR`) keeping every
/// readable record, starts the journal afresh, and says what was lost (JSON). The instance must
/// be stopped (it holds the file).
pub fn recover(settings: &Settings, dir: Option<&std::path::Path>) -> Result<String, String> {
    let dir = match dir {
        Some(dir) => dir,
        None => settings
            .spool_dir()
            .ok_or("the spool is off (SPOOL_DIR is empty); pass --dir")?,
    };
    if !dir.is_dir() {
        return Err(format!("no spool directory at {}", dir.display()));
    }
    let opened = Store::open_with(
        &dir.join(FILE_NAME),
        settings.spool_max_bytes,
        spool::damage::OnDamage::Salvage,
    );
    let (store, damage) = match opened {
        Ok(opened) => opened,
        Err(error) if error.in_use() => {
            return Err(format!(
                "an instance is running on {}: stop it first",
                dir.display()
            ))
        }
        Err(error) => return Err(error.to_string()),
    };
    // Missing or cut journal files are made whole again (their frames are in the file now).
    spool::journal::Journal::open(dir).map_err(|e| format!("journal: {e}"))?;
    store.journal_created().map_err(|e| e.to_string())?;
    let report = spool::report_of(&store).map_err(|e| e.to_string())?;
    drop(store);
    let Some(damage) = damage else {
        return pretty(serde_json::json!({
            "damaged": false,
            "message": "nothing to recover: the spool's files are whole",
            "records": report.backlog,
        }));
    };
    let lost: Vec<serde_json::Value> = damage
        .problems
        .iter()
        .map(|problem| {
            let mut entry = serde_json::json!({ "problem": problem.to_string() });
            if let spool::damage::Problem::Lost(lost) = problem {
                entry["file"] = lost.file.into();
                entry["records"] = lost.count().into();
                entry["sequence_numbers"] = format!("{}..={}", lost.first, lost.last).into();
                entry["destinations"] = serde_json::json!(lost.destinations);
                entry["request_ids"] = serde_json::json!(lost.request_ids);
            }
            entry
        })
        .collect();
    pretty(serde_json::json!({
        "damaged": true,
        "salvaged": damage.readable,
        "records": report.backlog,
        "lost": lost,
    }))
}

fn pretty(value: impl serde::Serialize) -> Result<String, String> {
    serde_json::to_string_pretty(&value).map_err(|e| e.to_string())
}

/// Straight on the file (no instance running).
fn local(store: &Store, action: Action) -> Result<String, String> {
    let failed = |e: StoreError| e.to_string();
    match action {
        Action::Status => pretty(spool::report_of(store).map_err(failed)?),
        Action::DeadLetters { limit } => pretty(store.dead_letter_reports(limit).map_err(failed)?),
        Action::ReplayChannel(_) => Err("a channel is replayed on the channels' file".into()),
        Action::Replay(ids) => {
            let moved = store
                .replay(ids.as_deref(), spool::now_ms())
                .map_err(failed)?;
            pretty(serde_json::json!({ "replayed": moved.len() }))
        }
        Action::Purge(ids) => {
            let purged = store.purge(ids.as_deref()).map_err(failed)?;
            pretty(serde_json::json!({ "purged": purged.len() }))
        }
    }
}

/// The admin listener of the instance these settings describe, on this host.
fn admin_url(settings: &Settings) -> String {
    let (host, port) = match settings.admin_port {
        Some(port) => (settings.admin_host.as_str(), port),
        None => (settings.host.as_str(), settings.port),
    };
    let host = match host {
        "0.0.0.0" => "127.0.0.1",
        "::" => "::1",
        other => other,
    };
    if host.contains(':') {
        format!("http://[{host}]:{port}")
    } else {
        format!("http://{host}:{port}")
    }
}

async fn remote(url: &str, action: &Action) -> Result<String, String> {
    let (method, path, body) = match action {
        Action::Status => ("GET", "/spool".to_owned(), None),
        Action::DeadLetters { limit } => {
            ("GET", format!("/spool/dead-letters?limit={limit}"), None)
        }
        Action::Replay(ids) => ("POST", "/spool/replay".to_owned(), Some(selection(ids)?)),
        Action::ReplayChannel(name) => (
            "POST",
            "/spool/replay".to_owned(),
            Some(serde_json::json!({ "channel": name }).to_string()),
        ),
        Action::Purge(ids) => ("POST", "/spool/purge".to_owned(), Some(selection(ids)?)),
    };
    let (status, text) = request(url, method, &path, body.as_deref()).await?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|_| format!("{url}{path} answered {status}: {text}"))?;
    if status != 200 {
        return Err(format!(
            "{url}{path} answered {status}: {}",
            value["message"].as_str().unwrap_or(&text)
        ));
    }
    pretty(value)
}

fn selection(ids: &Option<Vec<u64>>) -> Result<String, String> {
    serde_json::to_string(&Selection {
        ids: ids.clone(),
        all: ids.is_none(),
        channel: None,
    })
    .map_err(|e| e.to_string())
}

/// One HTTP/1.1 request on a fresh connection (hyper's client): the status and body.
async fn request(
    url: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    use http_body_util::BodyExt as _;
    let authority = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// admin URLs are supported"))?
        .trim_end_matches('/');
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("cannot reach the instance at {url}: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("{url}: {e}"))?;
        // Drives the connection until the answer is read (it ends with the exchange).
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.unwrap_or("").to_owned(),
            )))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{url}{path}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{url}{path}: {e}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| format!("{url} did not answer within 30 s"))?
}
