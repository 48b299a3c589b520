//! `x-request-id`: reuse a sane incoming id or make one, and echo it on every response.

use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderName, HeaderValue},
    middleware::Next,
    HttpMessage,
};

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, stored in the request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Incoming ids longer than this, or with other than `[A-Za-z0-9._:-]`, are replaced.
const MAX_LEN: usize = 128;

fn acceptable(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The one middleware every request passes: gives it an id (echoed on the response) and refuses
/// a `Host` outside the `host[:port]` grammar (400 `invalid_host`) before any route sees it.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(&HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(ToOwned::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let bad_host = req
        .headers()
        .get(actix_web::http::header::HOST)
        .is_some_and(|v| v.to_str().map_or(true, |v| !super::guard::host_is_valid(v)));
    let mut response = if bad_host {
        super::guard::refuse(req, &super::error::ApiError::InvalidHost).map_into_right_body()
    } else {
        next.call(req).await?.map_into_left_body()
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_ids_are_reused() {
        assert!(acceptable("abc-123_x.y:z"));
        assert!(!acceptable(""));
        assert!(!acceptable("a b"));
        assert!(!acceptable("<script>"));
        assert!(!acceptable(&"a".repeat(129)));
    }
}
