//! Requests whose body is not read to its end must not keep their connection.
//!
//! actix-web drains a request body that the handler dropped, and for a chunked body it does so
//! with no timer: a client that sends a chunked head to any route and then goes silent would
//! hold its connection forever. Keeping the unread body alive until the answer is written makes
//! actix close the connection instead. The webhook handler does this itself (it reads bodies);
//! [`hold_body`] wraps every other route.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use actix_web::{
    body::{BodySize, BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    HttpMessage as _, HttpResponse,
};
use bytes::Bytes;

/// A response body that holds the request's unread payload until it has been written.
pub struct Holding<P> {
    body: BoxBody,
    _payload: P,
}

impl<P: Unpin + 'static> MessageBody for Holding<P> {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

/// `response` with `payload` kept alive until it is written.
pub fn hold<P: Unpin + 'static>(response: HttpResponse, payload: P) -> HttpResponse {
    response.map_body(|_, body| {
        BoxBody::new(Holding {
            body,
            _payload: payload,
        })
    })
}

/// Takes the request body so no handler drops it, and keeps it until the answer is written.
/// Wraps every route but the webhook handler.
pub async fn hold_body(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let payload = req.take_payload();
    let response = next.call(req).await?;
    Ok(response.map_body(|_, body| {
        BoxBody::new(Holding {
            body: BoxBody::new(body),
            _payload: payload,
        })
    }))
}
