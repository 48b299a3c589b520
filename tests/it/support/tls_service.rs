//! A real HTTPS service on a free loopback port for the `http` module's TLS options: hyper 1
//! (HTTP/1.1 and HTTP/2, chosen by ALPN) over tokio-rustls, on a thread and runtime of its own,
//! with the server certificate of [`tls::generate`](super::tls::generate). It can require a
//! client certificate signed by the same CA. It answers 200 to every request, records each one
//! with its HTTP version, and records each TLS handshake it refused, so a test can tell "refused
//! in the handshake" from "never connected".

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    thread::JoinHandle,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, service::service_fn, Request, Response, Version};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto::Builder,
};
use rustls::{
    pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use super::tls::TlsFiles;

/// Whether the service asks for a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    Off,
    /// A client certificate signed by the test CA is required; a handshake without one fails.
    Required,
}

/// One request as the service received it, with what only TLS tells.
#[derive(Debug, Clone)]
pub struct Received {
    /// `HTTP/1.1` or `HTTP/2.0`, as negotiated.
    pub version: Version,
    /// Whether the connection it came on presented a client certificate.
    pub client_certificate: bool,
    pub request: super::service::Received,
}

impl std::ops::Deref for Received {
    type Target = super::service::Received;
    fn deref(&self) -> &Self::Target {
        &self.request
    }
}

#[derive(Default)]
struct State {
    received: Mutex<Vec<Received>>,
    refused_handshakes: Mutex<Vec<String>>,
}

/// The running service; stopped (its runtime and every connection dropped) on `Drop`.
pub struct TlsService {
    pub port: u16,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TlsService {
    /// Starts the service with the server certificate and key of `files`.
    pub fn start(files: &TlsFiles, client_auth: ClientAuth) -> Self {
        let acceptor = TlsAcceptor::from(Arc::new(server_config(files, client_auth)));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(serve(listener, acceptor, shared, stopped));
        });
        Self {
            port,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `https://localhost:<port>` (the certificate names `localhost` and `127.0.0.1`).
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Why each refused TLS handshake failed, as rustls put it.
    pub fn refused_handshakes(&self) -> Vec<String> {
        self.state.refused_handshakes.lock().unwrap().clone()
    }
}

impl Drop for TlsService {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A server config on the ring provider (no process-wide default needed), offering `h2` and
/// `http/1.1`.
fn server_config(files: &TlsFiles, client_auth: ClientAuth) -> ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.server_cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&files.server_key).unwrap();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_auth {
        ClientAuth::Off => builder.with_no_client_auth(),
        ClientAuth::Required => {
            let mut roots = RootCertStore::empty();
            for ca in CertificateDer::pem_file_iter(&files.ca).unwrap() {
                roots.add(ca.unwrap()).unwrap();
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// Accepts connections until `stopped`; each is served on a task of its own.
async fn serve(
    listener: std::net::TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<State>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let acceptor = acceptor.clone();
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(e) => {
                    state.refused_handshakes.lock().unwrap().push(e.to_string());
                    return;
                }
            };
            let client_certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|chain| !chain.is_empty());
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { answer(&state, request, client_certificate).await }
            });
            let _ = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn answer(
    state: &State,
    request: Request<Incoming>,
    client_certificate: bool,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    state.received.lock().unwrap().push(Received {
        version: parts.version,
        client_certificate,
        request: super::service::Received::new(
            parts.method.to_string(),
            parts.uri.path_and_query().map(|p| p.as_str()),
            parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_bytes())),
            body,
        ),
    });
    Ok(Response::new(Full::new(Bytes::from_static(b"thanks"))))
}
