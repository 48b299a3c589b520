//! `/spool`: the spool for operators (and `switchyard spool`): its state, its dead letters,
//! replay and purge. Served where `/status` is; replay and purge change what will be delivered,
//! so they only answer clients on the same host (the CLI, `kubectl exec`, a port-forward).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::{error::ApiError, AppState};
use crate::spool::Spool;

/// Dead letters listed at most per call.
const MAX_LISTED: usize = 10_000;

fn spool(state: &AppState) -> Result<&Spool, ApiError> {
    state.spool.as_ref().ok_or(ApiError::SpoolOff)
}

fn json(value: impl Serialize) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(value)
}

/// `GET /spool`.
pub async fn status(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(json(spool(&state)?.report()))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<usize>,
}

/// `GET /spool/dead-letters?limit=N` (default 100).
pub async fn dead_letters(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(100).min(MAX_LISTED);
    let letters = spool(&state)?
        .dead_letters(limit)
        .await
        .map_err(|e| ApiError::SpoolUnavailable(e.into()))?;
    Ok(json(letters))
}

/// The body of replay and purge: `{"ids": [..]}` or `{"all": true}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    #[serde(default)]
    pub ids: Option<Vec<u64>>,
    #[serde(default)]
    pub all: bool,
}

impl Selection {
    /// `None`: every dead letter.
    fn ids(self) -> Result<Option<Vec<u64>>, ApiError> {
        match (self.ids, self.all) {
            (Some(ids), false) if !ids.is_empty() => Ok(Some(ids)),
            (None, true) => Ok(None),
            _ => Err(ApiError::InvalidRequest(
                "give either a non-empty `ids` list or `\"all\": true`".into(),
            )),
        }
    }
}

fn local_only(req: &HttpRequest) -> Result<(), ApiError> {
    match req.peer_addr() {
        Some(peer) if peer.ip().to_canonical().is_loopback() => Ok(()),
        _ => Err(ApiError::LocalOnly),
    }
}

fn selection(body: &[u8]) -> Result<Option<Vec<u64>>, ApiError> {
    serde_json::from_slice::<Selection>(body)
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?
        .ids()
}

/// `POST /spool/replay`: dead letters back into their forwarders' queues.
pub async fn replay(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    local_only(&req)?;
    let ids = selection(&body)?;
    let replayed = spool(&state)?
        .replay(ids)
        .await
        .map_err(|e| ApiError::SpoolUnavailable(e.into()))?;
    tracing::info!(replayed, "Dead letters replayed.");
    Ok(json(serde_json::json!({ "replayed": replayed })))
}

/// `POST /spool/purge`: dead letters deleted.
pub async fn purge(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    local_only(&req)?;
    let ids = selection(&body)?;
    let purged = spool(&state)?
        .purge(ids)
        .await
        .map_err(|e| ApiError::SpoolUnavailable(e.into()))?;
    tracing::warn!(purged, "Dead letters purged.");
    Ok(json(serde_json::json!({ "purged": purged })))
}
