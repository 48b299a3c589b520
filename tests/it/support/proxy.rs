//! A loopback TCP proxy the test can cut or freeze, to take etcd away from the router while etcd
//! stays reachable for the test itself.

use std::sync::{
    atomic::{AtomicBool, AtomicU16, Ordering},
    Arc, Mutex,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::AbortHandle,
};

pub struct Proxy {
    pub port: u16,
    target: Arc<AtomicU16>,
    blocked: Arc<AtomicBool>,
    frozen: watch::Sender<bool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

/// Copies one direction; while frozen, holds the bytes (the peer sees silence, not a reset).
async fn forward(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while *frozen.borrow_and_update() {
            if frozen.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    /// Forwards 127.0.0.1:<port> to 127.0.0.1:<target>.
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(AtomicU16::new(target));
        let blocked = Arc::new(AtomicBool::new(false));
        let (frozen, frozen_rx) = watch::channel(false);
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (target, blocked, connections) = (
                Arc::clone(&target),
                Arc::clone(&blocked),
                Arc::clone(&connections),
            );
            tokio::spawn(async move {
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if blocked.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let to = target.load(Ordering::SeqCst);
                    let frozen = frozen_rx.clone();
                    let task = tokio::spawn(async move {
                        let Ok(outbound) = TcpStream::connect(("127.0.0.1", to)).await else {
                            return;
                        };
                        let (ri, wi) = inbound.into_split();
                        let (ro, wo) = outbound.into_split();
                        tokio::select! {
                            () = forward(ri, wo, frozen.clone()) => {}
                            () = forward(ro, wi, frozen) => {}
                        }
                    });
                    connections.lock().unwrap().push(task.abort_handle());
                }
            })
            .abort_handle()
        };
        Self {
            port,
            target,
            blocked,
            frozen,
            connections,
            accept,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Cuts every open connection and refuses new ones.
    pub fn block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn unblock(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }

    /// Stops forwarding bytes but keeps every connection open: a silently dead peer.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    /// Sends new connections to another port.
    pub fn retarget(&self, port: u16) {
        self.target.store(port, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}
