//! Reading a webhook's body under its own bounds: a reader slot (overall and per client), the
//! size limit (refused before buffering the rest), `BODY_READ_TIMEOUT_MS` for the whole body,
//! and its bytes reserved from `BODY_MEMORY_BYTES` (the declared length up front, or as a
//! chunked body grows). Bodies that arrived with their head take no slot.

use std::net::IpAddr;

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::{error::ApiError, AppState};
use crate::admission::{Refusal, Reservation};

/// The request body and whether it was read to its end.
pub struct RequestBody {
    pub payload: web::Payload,
    pub complete: bool,
}

impl RequestBody {
    /// An answer given before the body was read to its end must close the connection: actix
    /// would otherwise keep it open to drain a chunked body that a stalling client never ends.
    /// Keeping the payload alive until the answer is written makes actix close it.
    pub fn close_if_unread(self, response: HttpResponse) -> HttpResponse {
        if self.complete {
            return response;
        }
        super::unread::hold(response, self.payload)
    }
}

/// Reads the body under its own bounds: a reader slot (overall and per client), the size limit
/// (refused before buffering the rest), `BODY_READ_TIMEOUT_MS` for the whole body, and memory
/// from `BODY_MEMORY_BYTES` (503 `overloaded` when there is none). The reservation must be held
/// as long as the body is.
pub async fn read_body(
    state: &AppState,
    req: &HttpRequest,
    client: IpAddr,
    body: &mut RequestBody,
    limit: u64,
) -> Result<(Bytes, Reservation), ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let expected = declared.unwrap_or(0).min(limit);
    let mut buffer = Buffer {
        reservation: state
            .body_memory
            .reserve(expected)
            .map_err(|_| ApiError::Overloaded)?,
        bytes: BytesMut::with_capacity(usize::try_from(expected).unwrap_or(0)),
        limit,
    };
    // Most bodies arrive with their head, but actix hands the body over only after the handler
    // first waits: one yield lets it, then whatever has arrived is taken without waiting. Only a
    // body still in transit takes a reader slot and the deadline, so stalled uploads can fill
    // the reader slots without delaying requests whose bodies are complete.
    tokio::task::yield_now().await;
    if arrived(body, &mut buffer)? {
        return Ok(buffer.finish());
    }
    let _slot = state.body_readers.admit(client).map_err(|r| match r {
        Refusal::Busy => ApiError::Overloaded,
        Refusal::ClientShare => ApiError::TooManyUploads,
    })?;
    tokio::time::timeout(state.body_read_timeout, collect(body, buffer))
        .await
        .map_err(|_| ApiError::RequestTimeout {
            timeout_ms: u64::try_from(state.body_read_timeout.as_millis()).unwrap_or(u64::MAX),
        })?
}

/// A body being read, with the memory it holds.
struct Buffer {
    reservation: Reservation,
    bytes: BytesMut,
    limit: u64,
}

impl Buffer {
    /// Appends a chunk, refusing the body as soon as it passes the limit, or when the memory
    /// it grows into is not to be had.
    fn append(&mut self, chunk: &[u8]) -> Result<(), ApiError> {
        let needed = self.bytes.len() + chunk.len();
        if needed as u64 > self.limit {
            return Err(ApiError::PayloadTooLarge { limit: self.limit });
        }
        if needed > self.bytes.capacity() {
            // Grown the way the buffer grows (doubling), reserved before it is allocated.
            let grown = needed.max(self.bytes.capacity().saturating_mul(2)) as u64;
            self.reservation
                .grow_to(grown.min(self.limit))
                .map_err(|_| ApiError::Overloaded)?;
            self.bytes.reserve(chunk.len());
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    fn finish(self) -> (Bytes, Reservation) {
        (self.bytes.freeze(), self.reservation)
    }
}

/// Takes the chunks that are ready now; `true` when the body is complete.
fn arrived(request: &mut RequestBody, buffer: &mut Buffer) -> Result<bool, ApiError> {
    use futures_util::FutureExt as _;
    loop {
        match request.payload.next().now_or_never() {
            Some(Some(chunk)) => {
                let chunk = chunk.map_err(|e| ApiError::BodyRead(e.to_string()))?;
                buffer.append(&chunk)?;
            }
            Some(None) => {
                request.complete = true;
                return Ok(true);
            }
            None => return Ok(false),
        }
    }
}

async fn collect(
    request: &mut RequestBody,
    mut buffer: Buffer,
) -> Result<(Bytes, Reservation), ApiError> {
    while let Some(chunk) = request.payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BodyRead(e.to_string()))?;
        buffer.append(&chunk)?;
    }
    request.complete = true;
    Ok(buffer.finish())
}
