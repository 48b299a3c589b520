//! `switchyard spool status | dead-letters | replay | purge`: against the spool directory when
//! no instance holds it, or through the running instance's admin listener (`/spool`) when one
//! does (the file is locked while an instance runs). Output is JSON, the same either way.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{
    http::spool::Selection,
    settings::Settings,
    spool::{self, store::FILE_NAME, Store, StoreError},
};

/// What to do.
#[derive(Debug, Clone)]
pub enum Action {
    Status,
    DeadLetters { limit: usize },
    Replay(Option<Vec<u64>>),
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

fn pretty(value: impl serde::Serialize) -> Result<String, String> {
    serde_json::to_string_pretty(&value).map_err(|e| e.to_string())
}

/// Straight on the file (no instance running).
fn local(store: &Store, action: Action) -> Result<String, String> {
    let failed = |e: StoreError| e.to_string();
    match action {
        Action::Status => pretty(spool::report_of(store).map_err(failed)?),
        Action::DeadLetters { limit } => pretty(store.dead_letter_reports(limit).map_err(failed)?),
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
    })
    .map_err(|e| e.to_string())
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`): the status and body.
async fn request(
    url: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let authority = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// admin URLs are supported"))?
        .trim_end_matches('/');
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("cannot reach the instance at {url}: {e}"))?;
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream
            .write_all(format!("{head}{body}").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        parse_response(&answer)
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| format!("{url} did not answer within 30 s"))?
}

/// Status code and body of a `Connection: close` response (sized or chunked). Works on bytes:
/// a chunk may end inside a UTF-8 character.
fn parse_response(answer: &[u8]) -> Result<(u16, String), String> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the instance sent an incomplete answer")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let mut body = &answer[split + 4..];
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("the instance sent no status")?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    if !chunked {
        return Ok((status, String::from_utf8_lossy(body).into_owned()));
    }
    let mut out = Vec::new();
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        let data = &body[line_end + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        body = data[size..].strip_prefix(b"\r\n").unwrap_or(&data[size..]);
    }
    Ok((status, String::from_utf8_lossy(&out).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_and_chunked_answers_are_read() {
        let sized = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(sized).unwrap(), (200, "{}".to_owned()));
        let chunked = b"HTTP/1.1 403 Forbidden\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"a\r\n3\r\n\":1\r\n1\r\n}\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked).unwrap(),
            (403, "{\"a\":1}".to_owned())
        );
        // A chunk boundary inside a character.
        let split = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\n\u{e9}";
        let mut bytes = split.as_bytes()[..split.len() - 1].to_vec();
        bytes.extend_from_slice(b"\r\n1\r\n\xa9\r\n0\r\n\r\n");
        assert_eq!(parse_response(&bytes).unwrap(), (200, "\u{e9}".to_owned()));
    }
}
