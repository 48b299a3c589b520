//! A real HTTP service on a free loopback port (actix-web on a thread of its own) for the
//! `http` module: it records every request and answers by path:
//! `/ok*` 200; `/reject` 400 with a body; `/fail` 500; `/slow` after 30 s; `/redirect` 302 to
//! `/ok`; `/throttle` 429 with `Retry-After: 2` the first time, then 200; `/flaky` 503 until
//! [`Service::set_up`], then 200.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

/// One request as the service received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    /// A request received now: headers that are not text are kept as empty strings.
    pub fn new<'a>(
        method: String,
        path: Option<&str>,
        headers: impl Iterator<Item = (&'a str, &'a [u8])>,
        body: Vec<u8>,
    ) -> Self {
        Self {
            method,
            path: path.unwrap_or("/").to_owned(),
            headers: headers
                .map(|(n, v)| {
                    (
                        n.to_owned(),
                        std::str::from_utf8(v).unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
            body,
            at: Instant::now(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    received: Mutex<Vec<Received>>,
    up: AtomicBool,
    throttled: AtomicUsize,
}

pub struct Service {
    pub port: u16,
    state: Arc<State>,
    handle: actix_web::dev::ServerHandle,
}

impl Service {
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        let server = HttpServer::new(move || {
            let state = Arc::clone(&shared);
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let state = Arc::clone(&state);
                async move { answer(&state, &req, body).await }
            }))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        std::thread::spawn(move || actix_web::rt::System::new().block_on(server));
        Self {
            port,
            state,
            handle,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// The requests received on `path` (without the query).
    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path.split('?').next() == Some(path))
            .collect()
    }

    /// `/flaky` answers 200 from now on.
    pub fn set_up(&self) {
        self.state.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

async fn answer(state: &State, req: &HttpRequest, body: web::Bytes) -> HttpResponse {
    state.received.lock().unwrap().push(Received::new(
        req.method().to_string(),
        req.uri().path_and_query().map(|p| p.as_str()),
        req.headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
        body.to_vec(),
    ));
    // A connection's `base_url` may carry a prefix: `/api` is ignored.
    let path = req.path();
    match path.strip_prefix("/api").unwrap_or(path) {
        path if path.starts_with("/ok") => HttpResponse::Ok().body("thanks"),
        "/reject" => HttpResponse::BadRequest().body("order 42 is unknown"),
        "/fail" => HttpResponse::InternalServerError().body("boom"),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            HttpResponse::Ok().finish()
        }
        "/redirect" => HttpResponse::Found()
            .insert_header(("location", "/ok/redirected"))
            .finish(),
        "/throttle" if state.throttled.fetch_add(1, Ordering::SeqCst) == 0 => {
            HttpResponse::TooManyRequests()
                .insert_header(("retry-after", "2"))
                .finish()
        }
        "/throttle" => HttpResponse::Ok().finish(),
        "/flaky" if state.up.load(Ordering::SeqCst) => HttpResponse::Ok().finish(),
        "/flaky" => HttpResponse::ServiceUnavailable().finish(),
        _ => HttpResponse::NotFound().finish(),
    }
}

/// A port that accepts connections and closes each at once, answering nothing.
pub async fn closing_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    port
}
