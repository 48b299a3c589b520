//! `POST /webhook/{namespace}/{id}` and `POST /webhook/{id}`: validate, read, hand over, answer.

use std::{
    sync::Arc,
    time::{Instant, SystemTime},
};

use actix_web::{http::header, web, HttpMessage, HttpRequest, HttpResponse};
use bytes::BytesMut;
use futures_util::StreamExt;

use super::{error::ApiError, request_id::RequestId, AppState};
use crate::{
    config::DataType,
    dispatch::Route,
    keys::{Namespace, WebhookId, WebhookKey},
    modules::Delivery,
    verify::{ip::client_ip, Inbound},
};

/// `/webhook/<namespace>/<id>` or `/webhook/<id>` (the default namespace), POST only.
pub async fn post(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    if req.method() != actix_web::http::Method::POST {
        return Err(ApiError::MethodNotAllowed { allowed: "POST" });
    }
    let started = Instant::now();
    let rest = req.path().strip_prefix("/webhook/").unwrap_or_default();
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut key = None;
    let result = match rest.split_once('/') {
        _ if rest.is_empty() => Err(ApiError::NotFound),
        None => {
            let namespace = state.default_namespace.clone();
            receive(&state, &req, namespace, &decode(rest), payload, &mut key).await
        }
        Some((namespace, id)) if !id.contains('/') => match Namespace::parse(&decode(namespace)) {
            Ok(namespace) => receive(&state, &req, namespace, &decode(id), payload, &mut key).await,
            Err(e) => Err(ApiError::InvalidNamespace(e)),
        },
        Some(_) => Err(ApiError::NotFound),
    };
    answered(&state, &req, key.as_ref(), started, result)
}

/// Counts the request and writes the access log line.
fn answered(
    state: &AppState,
    req: &HttpRequest,
    key: Option<&WebhookKey>,
    started: Instant,
    result: Result<HttpResponse, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let elapsed = started.elapsed();
    let status = match &result {
        Ok(response) => response.status().as_u16(),
        Err(error) => error.parts().0.as_u16(),
    };
    state.metrics.request(key, status, elapsed);
    let extensions = req.extensions();
    let request_id = extensions.get::<RequestId>().map_or("", |r| r.0.as_str());
    tracing::info!(
        target: "switchyard::access",
        request_id,
        namespace = key.map_or("-", |k| k.namespace.as_str()),
        webhook = key.map_or("-", |k| k.id.as_str()),
        status,
        latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "Request answered."
    );
    result
}

async fn receive(
    state: &AppState,
    req: &HttpRequest,
    namespace: Namespace,
    id: &str,
    payload: web::Payload,
    known: &mut Option<WebhookKey>,
) -> Result<HttpResponse, ApiError> {
    if !state.status.borrow().loaded {
        return Err(ApiError::NotReady);
    }
    let id = WebhookId::parse(id).map_err(ApiError::InvalidWebhookId)?;
    let key = WebhookKey::new(namespace, id);
    *known = Some(key.clone());
    let route = state
        .cache
        .webhook(&key)
        .ok_or_else(|| ApiError::WebhookNotFound {
            namespace: key.namespace.to_string(),
            id: key.id.to_string(),
        })?;
    let headers = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let peer = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
    let inbound = Inbound {
        headers: &headers,
        query: Some(req.query_string()),
        client_ip: client_ip(peer, headers("x-forwarded-for"), &state.trusted_proxies),
        now: SystemTime::now(),
    };
    let checks = &route.webhook.checks;
    checks
        .check_head(&inbound)
        .map_err(|e| refused(&route, e))?;
    // Held until the destinations answered: bounds memory and work, never queues.
    let _permit = state
        .in_flight
        .try_acquire()
        .map_err(|_| ApiError::Overloaded)?;
    let limit = checks.max_body_bytes.unwrap_or(state.max_body_bytes);
    let mut body = read_body(req, payload, limit).await?;
    checks
        .check_signature(&inbound, &body)
        .map_err(|e| refused(&route, e))?;
    if route.data_type() == DataType::Json {
        if checks.needs_payload() {
            let mut value: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
            let cleaned = checks
                .check_payload(&mut value)
                .map_err(|e| refused(&route, e))?;
            if cleaned {
                body = serde_json::to_vec(&value)
                    .map(bytes::Bytes::from)
                    .map_err(|e| ApiError::InvalidJson(e.to_string()))?;
            }
        } else {
            serde_json::from_slice::<serde::de::IgnoredAny>(&body)
                .map_err(|e| ApiError::InvalidJson(e.to_string()))?;
        }
    }
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let delivery = Delivery {
        namespace: key.namespace.clone(),
        webhook: key.id.clone(),
        request_id,
        received_at: SystemTime::now(),
        headers: forwardable_headers(req),
        body,
        json: route.data_type() == DataType::Json,
    };
    deliver(&route, &delivery, &state.metrics).await?;
    // The request id is `[A-Za-z0-9._:-]` (see `request_id`): nothing to escape.
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(format!(
            r#"{{"status":"accepted","request_id":"{}"}}"#,
            delivery.request_id
        )))
}

fn refused(route: &Route, error: crate::verify::VerifyError) -> ApiError {
    tracing::info!(webhook = %route.key, reason = %error, "Request refused.");
    ApiError::Refused(error)
}

async fn deliver(
    route: &Arc<Route>,
    delivery: &Delivery,
    metrics: &crate::metrics::Metrics,
) -> Result<(), ApiError> {
    route.dispatch(delivery, metrics).await.map_err(|error| {
        tracing::warn!(
            webhook = %route.key,
            request_id = %delivery.request_id,
            %error,
            "Delivery failed; the sender was asked to retry."
        );
        ApiError::DestinationUnavailable(error)
    })
}

/// Reads the body, refusing it as soon as it passes `limit` (before buffering the rest).
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: u64,
) -> Result<bytes::Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let capacity = usize::try_from(declared.unwrap_or(0).min(limit)).unwrap_or(0);
    let mut body = BytesMut::with_capacity(capacity);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BodyRead(e.to_string()))?;
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Name fragments of headers that carry credentials or signatures; such headers never leave.
const SENSITIVE: &[&str] = &[
    "auth",
    "cookie",
    "signature",
    "secret",
    "token",
    "hmac",
    "api-key",
    "apikey",
    "api_key",
    "password",
    "session",
];

/// Whether a header (by lower-case name) may be logged or forwarded.
pub fn is_forwardable(name: &str) -> bool {
    !SENSITIVE.iter().any(|s| name.contains(s))
}

fn forwardable_headers(req: &HttpRequest) -> Vec<(String, String)> {
    req.headers()
        .iter()
        .filter(|(name, _)| is_forwardable(name.as_str()))
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
