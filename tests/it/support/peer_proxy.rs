//! A proxy in front of an etcd member's peer port that can refuse traffic from chosen members,
//! to cut one member off from its peers while its clients still reach it.
//!
//! Every member reaches a peer at the same advertised URL, so the proxy tells senders apart by
//! the `X-Server-From` header etcd puts on each raft request (stream, pipeline, snapshot), read
//! on every request of a connection.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    task::AbortHandle,
};

/// A request head longer than this is forwarded as it is.
const MAX_HEAD: usize = 64 * 1024;

#[derive(Default)]
struct Shared {
    /// Member ids (hex, as etcd writes them) whose traffic is refused.
    refused: HashSet<String>,
    /// Open connections with their sender.
    connections: Vec<(Option<String>, AbortHandle)>,
}

pub struct PeerProxy {
    pub port: u16,
    shared: Arc<Mutex<Shared>>,
    accept: AbortHandle,
}

/// The `X-Server-From` value of an HTTP request head, if any.
fn sender(head: &[u8]) -> Option<String> {
    String::from_utf8_lossy(head).lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("x-server-from")
            .then(|| value.trim().to_ascii_lowercase())
    })
}

/// How the body after a request head is framed.
enum Body {
    Length(u64),
    /// Chunked or unknown: the rest of the connection is copied as it comes.
    Rest,
}

fn body(head: &[u8]) -> Body {
    let text = String::from_utf8_lossy(head);
    let header = |name: &str| {
        text.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    if header("transfer-encoding").is_some() {
        return Body::Rest;
    }
    Body::Length(
        header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    )
}

/// Whether the connection may carry a request from `from`; tags the connection with it (so
/// `refuse` can cut it later).
fn admit(shared: &Mutex<Shared>, from: Option<String>) -> bool {
    let mut s = shared.lock().unwrap();
    let me = tokio::task::try_id();
    let refused = from.as_ref().is_some_and(|f| s.refused.contains(f));
    if from.is_some() {
        if let Some(entry) = s.connections.iter_mut().find(|(_, h)| Some(h.id()) == me) {
            entry.0 = from;
        }
    }
    !refused
}

/// Forwards requests one by one, checking the sender of each: HTTP/1.1 connections are reused,
/// so a connection first used for an unsigned request (`/version`) may carry raft messages later.
async fn forward_requests(
    inbound: impl AsyncRead + Unpin,
    mut outbound: impl AsyncWrite + Unpin,
    shared: &Mutex<Shared>,
) {
    let mut reader = BufReader::new(inbound);
    loop {
        let mut head = Vec::new();
        loop {
            let before = head.len();
            match reader.read_until(b'\n', &mut head).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = &head[before..];
            if line == b"\r\n" || line == b"\n" || head.len() > MAX_HEAD {
                break;
            }
        }
        if !admit(shared, sender(&head)) || outbound.write_all(&head).await.is_err() {
            return;
        }
        match body(&head) {
            Body::Length(n) => {
                let mut part = (&mut reader).take(n);
                if tokio::io::copy(&mut part, &mut outbound).await.is_err() {
                    return;
                }
            }
            Body::Rest => {
                let _ = tokio::io::copy(&mut reader, &mut outbound).await;
                return;
            }
        }
    }
}

/// Forwards one connection while its requests' senders are admitted. Runs as a task the accept
/// loop has registered (it holds the lock while spawning), so it can tag its own entry.
async fn serve(inbound: TcpStream, target: u16, shared: Arc<Mutex<Shared>>) {
    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    let (ri, mut wi) = inbound.into_split();
    let (mut ro, wo) = outbound.into_split();
    tokio::select! {
        () = forward_requests(ri, wo, &shared) => {}
        _ = tokio::io::copy(&mut ro, &mut wi) => {}
    }
}

impl PeerProxy {
    /// Forwards 127.0.0.1:<port> to 127.0.0.1:<target>.
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let accept = {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    let mut s = shared.lock().unwrap();
                    s.connections.retain(|(_, h)| !h.is_finished());
                    let task = tokio::spawn(serve(inbound, target, Arc::clone(&shared)));
                    s.connections.push((None, task.abort_handle()));
                }
            })
            .abort_handle()
        };
        Self {
            port,
            shared,
            accept,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Refuses traffic from these members (hex ids) from now on and cuts what is open.
    pub fn refuse(&self, members: &[String]) {
        let mut s = self.shared.lock().unwrap();
        s.refused.extend(members.iter().cloned());
        let Shared {
            refused,
            connections,
        } = &mut *s;
        connections.retain(|(from, handle)| {
            let cut = from.as_ref().is_some_and(|f| refused.contains(f));
            if cut {
                handle.abort();
            }
            !cut
        });
    }

    /// Lets every member through again.
    pub fn admit_all(&self) {
        self.shared.lock().unwrap().refused.clear();
    }
}

impl Drop for PeerProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for (_, c) in self.shared.lock().unwrap().connections.drain(..) {
            c.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sender;

    #[test]
    fn the_sender_is_read_from_the_request_head() {
        let head = b"GET /raft/stream/message/8e9e05c52164694d HTTP/1.1\r\nHost: x\r\nX-Server-From: 91BC3C398FB3C146\r\n\r\n";
        assert_eq!(sender(head).as_deref(), Some("91bc3c398fb3c146"));
        assert_eq!(sender(b"GET /version HTTP/1.1\r\n\r\n"), None);
    }
}
