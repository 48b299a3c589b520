//! `POST /webhook/{namespace}/{id}` and `POST /webhook/{id}`: validate, read, hand over, answer.
//!
//! The handler reads in the order of the README's "Order" line: route, head checks, body (its
//! own reader slot and deadline), signature, rate limit, body stage, delivery slot, delivery.
//! Provider handshakes are answered on the way, never handed on: `GET` ones (a webhook without
//! one answers `GET` with 405), Microsoft Graph's from the query, signed ones after the signature.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Instant, SystemTime},
};

use actix_web::{http::header, web, HttpMessage, HttpRequest, HttpResponse, ResponseError};

use super::{
    body::{read_body, RequestBody},
    error::ApiError,
    request_id::RequestId,
    AppState,
};
use crate::{
    condition::{Json, Request},
    dispatch::{Chosen, DispatchError, Outcome, Route, Routing, SpoolPath},
    keys::{Namespace, WebhookId, WebhookKey},
    modules::{is_forwardable, Delivery},
    telemetry::trace::Span,
    verify::{ip::client_ip, Inbound, VerifyError},
    webhook::DataType,
};

/// The webhook a request named, kept in the request's extensions for the access log; `routed`
/// once it was found in the cache (only then does it get its own metric labels).
#[derive(Debug, Clone)]
struct Target {
    key: WebhookKey,
    routed: bool,
}

/// `/webhook/<namespace>/<id>` or `/webhook/<id>` (the default namespace), POST only.
pub async fn post(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let started = Instant::now();
    let span = request_span(&req);
    let mut body = RequestBody {
        payload,
        complete: false,
    };
    let result = match (req.method().clone(), target(&state, &req)) {
        (actix_web::http::Method::POST, Ok(key)) => {
            receive(&state, &req, key, &mut body, &span).await
        }
        (actix_web::http::Method::GET | actix_web::http::Method::HEAD, Ok(key)) => {
            handshake_bodiless(&state, &req, &key)
        }
        (
            actix_web::http::Method::POST
            | actix_web::http::Method::GET
            | actix_web::http::Method::HEAD,
            Err(error),
        ) => Err(error),
        // The route takes POST, and GET or HEAD for a provider's handshake.
        _ => Err(ApiError::MethodNotAllowed {
            allowed: "GET, HEAD, POST",
        }),
    };
    body.close_if_unread(answered(&state, &req, started, result, &span))
}

/// The request's root span: named by method and route (the ids are attributes), with the
/// request id. A `traceparent` the sender sent is only linked (see [`Span::request`]).
fn request_span(req: &HttpRequest) -> Span {
    use actix_web::http::Method;
    if !crate::telemetry::trace::enabled() {
        return Span::default();
    }
    let short = !req
        .path()
        .strip_prefix("/webhook/")
        .unwrap_or_default()
        .contains('/');
    let name = match (req.method(), short) {
        (&Method::POST, false) => "POST /webhook/{namespace}/{id}",
        (&Method::POST, true) => "POST /webhook/{id}",
        (&Method::GET, false) => "GET /webhook/{namespace}/{id}",
        (&Method::GET, true) => "GET /webhook/{id}",
        (&Method::HEAD, false) => "HEAD /webhook/{namespace}/{id}",
        (&Method::HEAD, true) => "HEAD /webhook/{id}",
        _ => "HTTP",
    };
    let sent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok());
    let span = Span::request(name, sent);
    if span.is_on() {
        span.set("http.request.method", req.method().as_str().to_owned());
        span.set("http.route", name.split_once(' ').map_or(name, |(_, r)| r));
        span.set("request_id", request_id(req));
    }
    span
}

/// The webhook key named by the path.
fn target(state: &AppState, req: &HttpRequest) -> Result<WebhookKey, ApiError> {
    let rest = req.path().strip_prefix("/webhook/").unwrap_or_default();
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let (namespace, id) = match rest.split_once('/') {
        _ if rest.is_empty() => return Err(ApiError::NotFound),
        None => (state.default_namespace.clone(), decode(rest)),
        Some((namespace, id)) if !id.contains('/') => (
            Namespace::parse(&decode(namespace)).map_err(ApiError::InvalidNamespace)?,
            decode(id),
        ),
        Some(_) => return Err(ApiError::NotFound),
    };
    let id = WebhookId::parse(&id).map_err(ApiError::InvalidWebhookId)?;
    Ok(WebhookKey::new(namespace, id))
}

/// Counts the request, writes the access log line and gives the answer.
fn answered(
    state: &AppState,
    req: &HttpRequest,
    started: Instant,
    result: Result<HttpResponse, ApiError>,
    span: &Span,
) -> HttpResponse {
    let elapsed = started.elapsed();
    let status = match &result {
        Ok(response) => response.status().as_u16(),
        Err(error) => error.parts().0.as_u16(),
    };
    let extensions = req.extensions();
    let target = extensions.get::<Target>();
    // Made-up ids must not take the label slots of real webhooks.
    let labelled = target.filter(|t| t.routed).map(|t| &t.key);
    state.metrics.request(labelled, status, elapsed);
    let request_id = extensions.get::<RequestId>().map_or("", |r| r.0.as_str());
    if span.is_on() {
        span.set("http.response.status_code", i64::from(status));
        if let Some(target) = target {
            span.set("switchyard.namespace", target.key.namespace.to_string());
            span.set("switchyard.webhook", target.key.id.to_string());
        }
        if let Err(error) = &result {
            span.set("error.type", error.parts().1);
            // A refusal is the sender's fault, not ours (the HTTP conventions: only 5xx fail
            // a server span).
            if status >= 500 {
                span.fail(error);
            }
        }
    }
    tracing::info!(
        target: "switchyard::access",
        request_id,
        namespace = target.map_or("-", |t| t.key.namespace.as_str()),
        webhook = target.map_or("-", |t| t.key.id.as_str()),
        status,
        latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "Request answered."
    );
    result.unwrap_or_else(|error| error.error_response())
}

/// What a request tells the checks, built from its head.
fn inbound<'a>(
    state: &AppState,
    req: &'a HttpRequest,
    headers: &'a dyn Fn(&str) -> Option<&'a str>,
    url: &'a dyn Fn() -> Option<String>,
) -> Inbound<'a> {
    Inbound {
        headers,
        query: Some(req.query_string()),
        client_ip: resolve_client(state, req, peer(req)),
        now: SystemTime::now(),
        url,
    }
}

fn peer(req: &HttpRequest) -> IpAddr {
    req.peer_addr()
        .map_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), |a| a.ip())
}

/// The URL the sender called: `https` only when a trusted proxy says so (`X-Forwarded-Proto`;
/// this server itself speaks plain HTTP), the `Host` header, the path and query as received.
fn called_url(state: &AppState, req: &HttpRequest) -> Option<String> {
    let host = req.headers().get(header::HOST)?.to_str().ok()?;
    let from_proxy = !state.trusted_proxies.is_empty() && state.trusted_proxies.contains(peer(req));
    let scheme = req
        .headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|_| from_proxy)
        .map_or("http", |proto| {
            if proto.trim().eq_ignore_ascii_case("https") {
                "https"
            } else {
                "http"
            }
        });
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    Some(format!("{scheme}://{host}{path}"))
}

/// A provider's bodiless handshake: a `GET` (Meta, X, Okta, Dropbox, WebSub, Strava) or
/// Trello's `HEAD` (answered 200, empty); 405 for a webhook without one.
fn handshake_bodiless(
    state: &AppState,
    req: &HttpRequest,
    key: &WebhookKey,
) -> Result<HttpResponse, ApiError> {
    let route = lookup(state, req, key)?;
    let checks = &route.webhook.checks;
    let get = match (
        req.method() == actix_web::http::Method::HEAD,
        checks.get_handshake(),
    ) {
        (true, _) if checks.answers_head() => None,
        (false, Some(handshake)) => Some(handshake),
        _ => return Err(ApiError::MethodNotAllowed { allowed: "POST" }),
    };
    let headers = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let url = || called_url(state, req);
    let inbound = inbound(state, req, &headers, &url);
    // Every check a GET can carry runs first: the address list and the head credentials (Okta's
    // challenge carries the webhook's `authorization`; others may use `query_auth`).
    checks
        .check_head(&inbound)
        .map_err(|e| refused(&route, req, e))?;
    let Some(handshake) = get else {
        tracing::info!(webhook = %route.key, provider = "trello", "Handshake answered.");
        return Ok(HttpResponse::Ok().finish());
    };
    let answered = handshake
        .answer_get(&inbound)
        .map_err(|e| refused(&route, req, e))?;
    Ok(handshake_answer(state, &route, answered))
}

/// The answer to a handshake: `text/plain` (or JSON where the provider asks for it), never
/// sniffed as anything else.
fn handshake_answer(
    state: &AppState,
    route: &Route,
    answered: crate::verify::handshake::Answered,
) -> HttpResponse {
    use crate::verify::handshake::Answer;
    tracing::info!(webhook = %route.key, provider = answered.provider, "Handshake answered.");
    let (content_type, body) = match answered.answer {
        Answer::Text(text) => ("text/plain; charset=utf-8", text),
        Answer::Json(json) => ("application/json", json),
        Answer::Header(name, value) => {
            return HttpResponse::NoContent()
                .insert_header((name, value))
                .finish()
        }
        Answer::HookSecret(secret) => {
            if let Err(refused) = log_hook_secret(state, route, &secret) {
                return refused.error_response();
            }
            return HttpResponse::NoContent()
                .insert_header(("x-hook-secret", secret.expose()))
                .finish();
        }
    };
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

/// Asana hands its signing secret over once, in the handshake, and Switchyard never writes
/// config: the operator takes it from this log line into the entry's `hmac`, sealed for that
/// entry's `hmac.secret` so that it can be pasted as it is. Secrets never reach the log in
/// clear: without `SEAL_KEYS_FILE` the handshake is refused (Asana then creates no webhook),
/// saying why.
fn log_hook_secret(
    state: &AppState,
    route: &Route,
    secret: &crate::config::secret::Secret,
) -> Result<(), ApiError> {
    let entry = crate::keys::ConfigKey::Webhook(route.key.clone()).to_string();
    match state
        .seal_keys
        .seal(None, &entry, "hmac.secret", secret.expose())
    {
        Ok(sealed) => {
            tracing::warn!(
                webhook = %route.key,
                secret = sealed,
                "Asana handed over its signing secret: put it into the entry as \
                 `\"hmac\": {{\"provider\": \"asana\", \"secret\": \"<secret>\"}}` (sealed for \
                 this entry's hmac.secret) in place of `handshake`; until then deliveries are \
                 refused 401 and Asana retries them."
            );
            Ok(())
        }
        Err(error) => {
            tracing::error!(
                webhook = %route.key,
                reason = %error,
                "Asana's handshake refused: the secret it hands over is logged sealed, and that \
                 needs SEAL_KEYS_FILE."
            );
            Err(ApiError::Refused(VerifyError::Unauthorized(
                crate::verify::Why::SecretNotConfigured,
            )))
        }
    }
}

/// Bodies up to this size are checked on the HTTP worker; larger ones on a blocking thread.
const INLINE_CHECK_BYTES: usize = 256 * 1024;

/// What a request's body checks decided.
enum BodyVerdict {
    /// A handshake in the body (Slack, Zoom, Twitch), answered instead of delivered.
    Handshake(crate::verify::handshake::Answered),
    /// The bytes to hand on, and where they go.
    Deliver(bytes::Bytes, Routing),
}

/// What the body checks read of the request, owned, for a blocking thread.
struct Snapshot {
    headers: actix_web::http::header::HeaderMap,
    query: String,
    url: Option<String>,
    client_ip: Option<IpAddr>,
    now: SystemTime,
}

/// The checks that read the body, in the README's order: the signature (and what else in the
/// body proves the sender), a handshake in the body, the rate limit (spent only once the
/// sender is proven), then the data type's checks.
fn check_body(
    route: &Route,
    inbound: &Inbound<'_>,
    body: bytes::Bytes,
) -> Result<BodyVerdict, VerifyError> {
    let checks = &route.webhook.checks;
    checks.check_signature(inbound, &body)?;
    if let Some(answered) = checks.body_handshake(inbound, &body) {
        return answered.map(BodyVerdict::Handshake);
    }
    checks.charge_rate_limit()?;
    // Routing is decided here, where a large body is on its blocking thread; acted on after
    // `dedup`.
    let decide = |body: &[u8], json: Option<Json<'_>>| {
        route.route(&Request::new(inbound.headers, inbound.query, body).with_json(json))
    };
    let (body, routing) = match route.data_type() {
        DataType::Json => checks.check_json_body(body, &route.webhook.reads, decide)?,
        DataType::Form => {
            let body = checks.check_form_body(body)?;
            let routing = decide(&body, None);
            (body, routing)
        }
        DataType::Blob => {
            let routing = decide(&body, None);
            (body, routing)
        }
    };
    Ok(BodyVerdict::Deliver(body, routing))
}

/// The pipeline, in the order of the README's "Order" line.
async fn receive(
    state: &AppState,
    req: &HttpRequest,
    key: WebhookKey,
    body: &mut RequestBody,
    span: &Span,
) -> Result<HttpResponse, ApiError> {
    let route = lookup(state, req, &key)?;
    let checks = &route.webhook.checks;
    let headers = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let url = || called_url(state, req);
    let inbound = inbound(state, req, &headers, &url);
    let client = inbound.client_ip;
    // Every check, the body's reading among them.
    let verify = span.child("verify");
    let refused = |e: VerifyError| {
        verify.fail(&e);
        refused(&route, req, e)
    };
    checks.check_head(&inbound).map_err(refused)?;
    // Microsoft Graph and Asana validate a URL with an unsigned POST whose body says nothing
    // (after the head checks, like every handshake).
    if let Some(answered) = checks.head_handshake(&inbound) {
        return Ok(handshake_answer(state, &route, answered.map_err(refused)?));
    }
    let limit = checks.body_limit(state.max_body_bytes, state.max_body_bytes_ceiling);
    // An unknown client shares one budget with the other unknown ones, never the proxy's.
    let share = client.unwrap_or(UNKNOWN_CLIENT);
    // The reservation holds the body's bytes in BODY_MEMORY_BYTES until the request is answered.
    let (body, _memory) = read_body(state, req, share, body, limit)
        .await
        .inspect_err(|e| verify.fail(e))?;
    // The body's checks take time in proportion to its size: a large body is checked on a
    // blocking thread, so that this worker keeps serving every other connection it holds.
    let verdict = if body.len() <= INLINE_CHECK_BYTES {
        check_body(&route, &inbound, body)
    } else {
        let snapshot = Snapshot {
            headers: req.headers().clone(),
            query: req.query_string().to_owned(),
            url: url(),
            client_ip: inbound.client_ip,
            now: inbound.now,
        };
        let route = Arc::clone(&route);
        web::block(move || {
            let headers = |name: &str| snapshot.headers.get(name).and_then(|v| v.to_str().ok());
            let url = || snapshot.url.clone();
            let inbound = Inbound {
                headers: &headers,
                query: Some(&snapshot.query),
                client_ip: snapshot.client_ip,
                now: snapshot.now,
                url: &url,
            };
            check_body(&route, &inbound, body)
        })
        .await
        .map_err(|_| ApiError::Overloaded)?
    };
    let (body, routing) = match verdict.map_err(refused)? {
        BodyVerdict::Handshake(answered) => return Ok(handshake_answer(state, &route, answered)),
        BodyVerdict::Deliver(body, routing) => (body, routing),
    };
    drop(verify);
    // Held until the destinations answered: bounds memory and work, never queues. Taken before
    // a duplicate's wait, so requests waiting on another copy's outcome (each holding its body)
    // count against the same bound.
    let _permit = state
        .in_flight
        .try_acquire()
        .map_err(|_| ApiError::Overloaded)?;
    let claim = match claim_delivery_id(state, &route, &headers, &body, span).await? {
        DeliveryId::Fresh(claim) => claim,
        DeliveryId::Duplicate => {
            tracing::info!(webhook = %route.key, "Delivery id seen within the window; not delivered again.");
            if let Some(fixed) = &route.webhook.response {
                return Ok(static_response(fixed));
            }
            return Ok(HttpResponse::Ok()
                .content_type("application/json")
                .body(r#"{"status":"duplicate"}"#));
        }
    };
    let Routing::To(chosen) = routing else {
        // A retry of it would be filtered again: its delivery id is not recorded.
        drop(claim);
        state.metrics.filtered(&route.key);
        tracing::debug!(webhook = %route.key, request_id = %request_id(req), "Filtered out; not delivered.");
        if let Some(fixed) = &route.webhook.response {
            return Ok(static_response(fixed));
        }
        return Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(format!(
                r#"{{"status":"filtered","request_id":"{}"}}"#,
                request_id(req)
            )));
    };
    let delivery = Delivery {
        namespace: key.namespace.clone(),
        webhook: key.id.clone(),
        request_id: request_id(req),
        received_at: SystemTime::now(),
        headers: forwardable_headers(req, &route),
        body,
        json: route.data_type() == DataType::Json,
        trace: span.parent_of_later(),
        relayed: if route.relays() {
            relayed_headers(req)
        } else {
            Vec::new()
        },
    };
    let (mut response, word) = match deliver(state, &route, &delivery, &chosen).await? {
        Outcome::Delivered => (HttpResponse::Ok(), "accepted"),
        Outcome::Stored => (HttpResponse::Accepted(), "stored"),
    };
    // Delivered or stored: from now on a copy is a duplicate (a failure above dropped the claim
    // unrecorded, so the sender's retry goes through).
    if let Some(claim) = claim {
        claim.delivered().await;
    }
    if let Some(fixed) = &route.webhook.response {
        return Ok(static_response(fixed));
    }
    // The request id is `[A-Za-z0-9._:-]` (see `request_id`): nothing to escape.
    Ok(response.content_type("application/json").body(format!(
        r#"{{"status":"{word}","request_id":"{}"}}"#,
        delivery.request_id
    )))
}

/// A webhook's fixed answer (`response`), for delivered, stored and duplicate requests alike.
fn static_response(fixed: &crate::webhook::StaticResponse) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(fixed.status)
        .unwrap_or(actix_web::http::StatusCode::OK);
    HttpResponse::build(status)
        .content_type(fixed.content_type.as_str())
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(fixed.body.clone())
}

/// What `dedup` made of a request's delivery id.
enum DeliveryId {
    /// Deliver it; record the claim (if the webhook and request have an id) once delivered.
    Fresh(Option<crate::dedup::Claimed>),
    /// Seen and delivered within the window.
    Duplicate,
}

/// With `dedup`, claims the request's delivery id; a copy still in flight after the wait is
/// 503 `copy_in_flight`.
async fn claim_delivery_id<'a>(
    state: &AppState,
    route: &Route,
    headers: &dyn Fn(&str) -> Option<&'a str>,
    body: &[u8],
    span: &Span,
) -> Result<DeliveryId, ApiError> {
    use crate::dedup::Claim;
    let Some((dedup, id)) = route
        .webhook
        .dedup
        .as_ref()
        .and_then(|d| Some((d, d.key_of(headers, body)?)))
    else {
        return Ok(DeliveryId::Fresh(None));
    };
    // A copy in flight is waited for as long as a delivery may take.
    let wait = route.webhook.timeout;
    let span = span.child("dedup");
    let (answer, outcome) =
        match crate::dedup::claim(&state.dedup, &state.pool, &route.key, dedup, &id, wait).await {
            Claim::Claimed(claim) => (Ok(DeliveryId::Fresh(Some(claim))), "claimed"),
            Claim::Duplicate => (Ok(DeliveryId::Duplicate), "duplicate"),
            Claim::Busy => (Err(ApiError::CopyInFlight), "in_flight"),
        };
    span.set("switchyard.dedup", outcome);
    answer
}

/// The webhook's live route; records the target for the access log and metrics.
fn lookup(state: &AppState, req: &HttpRequest, key: &WebhookKey) -> Result<Arc<Route>, ApiError> {
    let route = state.cache.webhook(key);
    req.extensions_mut().insert(Target {
        key: key.clone(),
        routed: route.is_some(),
    });
    if !state.status.borrow().loaded {
        return Err(ApiError::NotReady);
    }
    route.ok_or_else(|| {
        if state.cache.is_invalid(key) {
            ApiError::WebhookInvalid
        } else {
            ApiError::WebhookNotFound {
                namespace: key.namespace.to_string(),
                id: key.id.to_string(),
            }
        }
    })
}

fn request_id(req: &HttpRequest) -> String {
    req.extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default()
}

/// The per-client share of clients whose address could not be read: an address in the
/// discard-only prefix `100::/64` (RFC 6666), which no real client has.
const UNKNOWN_CLIENT: IpAddr = IpAddr::V6(std::net::Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0));

/// The client address behind trusted proxies (`None`: a forwarded hop could not be read).
fn resolve_client(state: &AppState, req: &HttpRequest, peer: IpAddr) -> Option<IpAddr> {
    if state.trusted_proxies.is_empty() {
        return Some(peer.to_canonical());
    }
    // Every line, in order, as bytes: entries are decoded one by one.
    let lines: Vec<&[u8]> = req
        .headers()
        .get_all("x-forwarded-for")
        .map(|v| v.as_bytes())
        .collect();
    client_ip(peer, &lines, &state.trusted_proxies)
}

/// A refusal, logged with its request id and its class (`bad_signature`,
/// `timestamp_out_of_tolerance`, ...): the sender gets one generic answer per status, the
/// operator the cause.
fn refused(route: &Route, req: &HttpRequest, error: VerifyError) -> ApiError {
    tracing::info!(
        webhook = %route.key,
        request_id = %request_id(req),
        reason_class = error.class(),
        reason = %error,
        "Request refused."
    );
    ApiError::Refused(error)
}

/// Hands the delivery to the route's destinations (or the spool). A stop must not cut a
/// delivery off unanswered: at the stop's deadline it gets a 503 instead.
async fn deliver(
    state: &AppState,
    route: &Arc<Route>,
    delivery: &Delivery,
    chosen: &Chosen,
) -> Result<Outcome, ApiError> {
    let spool = state.spool.as_ref().map(|spool| SpoolPath {
        spool,
        handoff: state.spool_handoff,
    });
    tokio::select! {
        // Delivery first: one that completes on its first poll never sets up the deadline.
        biased;
        result = route.dispatch(delivery, chosen, &state.metrics, spool) => result.map_err(|error| {
            tracing::warn!(
                webhook = %route.key,
                request_id = %delivery.request_id,
                %error,
                "Request not taken; the sender was asked to retry."
            );
            match error {
                DispatchError::Delivery(error) if error.is_full() => ApiError::SpoolFull,
                DispatchError::Delivery(error) if error.is_permanent() => {
                    ApiError::DestinationRejected(error)
                }
                DispatchError::Delivery(error) => ApiError::DestinationUnavailable(error),
                DispatchError::Spool(error) if error.is_full() => ApiError::SpoolFull,
                DispatchError::Spool(error) => ApiError::SpoolUnavailable(error),
            }
        }),
        () = crate::shutdown::answer_deadline(state.phase.clone()) => {
            tracing::warn!(
                webhook = %route.key,
                request_id = %delivery.request_id,
                "Shutting down before the destinations answered; the sender was asked to retry."
            );
            Err(ApiError::ShuttingDown)
        }
    }
}

/// Headers handed to modules: not credentials by name, and not a header this webhook's own
/// checks read a credential from (`header_auth.header_name`, a generic `hmac.header`).
fn forwardable_headers(req: &HttpRequest, route: &Route) -> Vec<(String, String)> {
    let checks = &route.webhook.checks;
    headers_where(req, |name| {
        is_forwardable(name) && !checks.reads_credential_from(name)
    })
}

/// The headers a channel carries on besides the forwardable ones: the sender's signatures
/// (and the other non-forwardable headers), so that the private side can verify them. Never
/// cookies or the `Authorization` headers, which authenticate to this instance.
fn relayed_headers(req: &HttpRequest) -> Vec<(String, String)> {
    const KEPT_HERE: &[&str] = &["cookie", "authorization", "proxy-authorization"];
    headers_where(req, |name| {
        !is_forwardable(name) && !KEPT_HERE.contains(&name)
    })
}

/// The request's headers (lower-case names) that `keep` keeps, as text.
fn headers_where(req: &HttpRequest, keep: impl Fn(&str) -> bool) -> Vec<(String, String)> {
    req.headers()
        .iter()
        .filter(|(name, _)| keep(name.as_str()))
        .filter_map(|(name, value)| {
            value
                .to_str()
                .ok()
                .map(|v| (name.as_str().to_owned(), v.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_signatures_are_not_forwardable() {
        for name in [
            "authorization",
            "proxy-authorization",
            "cookie",
            "x-hub-signature-256",
            "stripe-signature",
            "x-shopify-hmac-sha256",
            "x-api-key",
            "x-slack-signature",
            "webhook-signature",
            "x-gitlab-token",
        ] {
            assert!(!is_forwardable(name), "{name}");
        }
        for name in [
            "content-type",
            "user-agent",
            "x-github-delivery",
            "x-github-event",
        ] {
            assert!(is_forwardable(name), "{name}");
        }
    }
}
