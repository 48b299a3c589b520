//! `/spool`: the spool for operators (and `switchyard spool`): its state, its dead letters,
//! replay and purge. The state is served where `/status` is. Replay and purge change what will
//! be delivered, so they answer only clients on the same host that did not come through a proxy
//! (on the admin listener, `ADMIN_PORT`, or without one on the public port, where every
//! `/spool*` endpoint is local-only), and only take a JSON body (a web page cannot send one
//! without a preflight; the admin listener also refuses any `Origin`).

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
    let spool = spool(&state)?.clone();
    let report = web::block(move || spool.report()).await.map_err(|e| {
        ApiError::SpoolUnavailable(crate::spool::SpoolError::Store(
            crate::spool::StoreError::Commit(e.to_string()),
        ))
    })?;
    Ok(json(report))
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
    /// A channel (connector mode) whose dead letters go back to its end (replay only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
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

/// Largest replay or purge body (a list of ids).
const MAX_SELECTION_BYTES: usize = 1 << 20;

/// The selection of a replay or purge, read only once the request is known to be local.
async fn local_selection(
    req: &HttpRequest,
    payload: &mut web::Payload,
) -> Result<Selection, ApiError> {
    use futures_util::StreamExt as _;
    if !super::guard::is_local(req) {
        return Err(ApiError::LocalOnly);
    }
    let json = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(ApiError::InvalidRequest(
            "send the selection as `Content-Type: application/json`".into(),
        ));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BodyRead(e.to_string()))?;
        if body.len() + chunk.len() > MAX_SELECTION_BYTES {
            return Err(ApiError::PayloadTooLarge {
                limit: MAX_SELECTION_BYTES as u64,
            });
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice::<Selection>(&body).map_err(|e| ApiError::InvalidRequest(e.to_string()))
}

/// `POST /spool/replay`: dead letters back into their forwarders' queues.
pub async fn replay(
    state: web::Data<AppState>,
    req: HttpRequest,
    mut payload: web::Payload,
) -> HttpResponse {
    use actix_web::ResponseError as _;
    let selection = match local_selection(&req, &mut payload).await {
        Ok(selection) => selection,
        Err(error) => return super::unread::hold(error.error_response(), payload),
    };
    if let Some(name) = &selection.channel {
        return match super::connect::replay(&state, name).await {
            Ok(replayed) => {
                tracing::info!(channel = %name, replayed, "Channel dead letters replayed.");
                json(serde_json::json!({ "replayed": replayed }))
            }
            Err(error) => error.error_response(),
        };
    }
    changing(&state, selection, |spool, ids| async move {
        let replayed = spool.replay(ids).await?;
        tracing::info!(replayed, "Dead letters replayed.");
        Ok(serde_json::json!({ "replayed": replayed }))
    })
    .await
}

/// `POST /spool/purge`: dead letters deleted.
pub async fn purge(
    state: web::Data<AppState>,
    req: HttpRequest,
    mut payload: web::Payload,
) -> HttpResponse {
    use actix_web::ResponseError as _;
    let selection = match local_selection(&req, &mut payload).await {
        Ok(selection) => selection,
        Err(error) => return super::unread::hold(error.error_response(), payload),
    };
    changing(&state, selection, |spool, ids| async move {
        let purged = spool.purge(ids).await?;
        tracing::warn!(purged, "Dead letters purged.");
        Ok(serde_json::json!({ "purged": purged }))
    })
    .await
}

/// Runs a replay or purge of the dead letters `selection` names, for a local request.
async fn changing<F, Fut>(state: &AppState, selection: Selection, change: F) -> HttpResponse
where
    F: FnOnce(Spool, Option<Vec<u64>>) -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value, crate::spool::StoreError>>,
{
    use actix_web::ResponseError as _;
    let ids = match selection.ids() {
        Ok(ids) => ids,
        Err(error) => return error.error_response(),
    };
    let outcome = match spool(state) {
        Ok(spool) => change(spool.clone(), ids)
            .await
            .map_err(|e| ApiError::SpoolUnavailable(e.into())),
        Err(error) => Err(error),
    };
    match outcome {
        Ok(value) => json(value),
        Err(error) => error.error_response(),
    }
}
