//! `ApiError`: every error a client can see, mapped to HTTP in exactly one `match`.

use actix_web::{
    http::{header, StatusCode},
    HttpResponse, ResponseError,
};

use crate::{connections::PoolError, keys::NameError, modules::DeliveryError, verify::VerifyError};

/// Seconds a sender is asked to wait before retrying a 503.
pub const RETRY_AFTER_SECS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("configuration is not loaded yet; retry shortly")]
    NotReady,
    #[error("invalid namespace: {0}")]
    InvalidNamespace(NameError),
    #[error("invalid webhook id: {0}")]
    InvalidWebhookId(NameError),
    #[error("no webhook `{id}` in namespace `{namespace}`")]
    WebhookNotFound { namespace: String, id: String },
    #[error("this webhook's entry is invalid; its operator can see why in /status; retry later")]
    WebhookInvalid,
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("request body could not be read: {0}")]
    BodyRead(String),
    #[error("the request body did not arrive within {timeout_ms} ms")]
    RequestTimeout { timeout_ms: u64 },
    #[error("too many request bodies in progress from this client; retry shortly")]
    TooManyUploads,
    #[error("a destination could not take the payload; retry later")]
    DestinationUnavailable(#[source] DeliveryError),
    /// The destination refused the payload for good (see [`DeliveryError::is_permanent`]).
    #[error("a destination refused the payload; its operator can see why in the log")]
    DestinationRejected(#[source] DeliveryError),
    #[error("a destination could not take the payload and the spool is full; retry later")]
    SpoolFull,
    #[error(
        "a destination could not take the payload and the spool could not store it; retry later"
    )]
    SpoolUnavailable(#[source] crate::spool::SpoolError),
    #[error("too many requests in progress; retry later")]
    Overloaded,
    #[error("the instance is shutting down and the destinations did not answer in time; retry")]
    ShuttingDown,
    #[error("{0}")]
    Refused(VerifyError),
    #[error("method not allowed; use {allowed}")]
    MethodNotAllowed { allowed: &'static str },
    #[error("no such endpoint")]
    NotFound,
    #[error("this endpoint changes the spool and only answers clients on the same host")]
    LocalOnly,
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("the spool is off (SPOOL_DIR is empty)")]
    SpoolOff,
    #[error("a copy of this delivery (same delivery id) is still being delivered; retry shortly")]
    CopyInFlight,
    #[error("the Host header is not `host[:port]`")]
    InvalidHost,
    #[error("the admin listener does not answer this Host; list the name in ADMIN_HOSTS")]
    HostNotAllowed,
    #[error("the admin listener does not answer requests made by a web page (Origin header)")]
    CrossOrigin,
    #[error("a connector's token goes in `Authorization: Bearer`, never in the query")]
    TokenInQuery,
    #[error("invalid channel name: {0}")]
    InvalidChannel(String),
    #[error("this token does not open this channel")]
    ConnectUnauthorized,
    #[error("no such channel")]
    UnknownChannel,
    #[error("the channel store could not answer: {0}")]
    ChannelUnavailable(String),
}

impl ApiError {
    /// The status and the machine-readable `error` code: the one table of this crate.
    pub fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            ApiError::InvalidNamespace(_) => (StatusCode::BAD_REQUEST, "invalid_namespace"),
            ApiError::InvalidWebhookId(_) => (StatusCode::BAD_REQUEST, "invalid_webhook_id"),
            ApiError::WebhookNotFound { .. } => (StatusCode::NOT_FOUND, "webhook_not_found"),
            ApiError::WebhookInvalid => (StatusCode::SERVICE_UNAVAILABLE, "webhook_invalid"),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::BodyRead(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            ApiError::RequestTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::TooManyUploads => (StatusCode::TOO_MANY_REQUESTS, "too_many_uploads"),
            ApiError::DestinationUnavailable(DeliveryError::Connection(
                PoolError::Missing { .. } | PoolError::Mismatch { .. },
            )) => (StatusCode::SERVICE_UNAVAILABLE, "connection_missing"),
            // Refused for good: retrying cannot help, so no 503 (which asks for a retry).
            ApiError::DestinationRejected(_) => (StatusCode::BAD_GATEWAY, "destination_rejected"),
            ApiError::DestinationUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "destination_unavailable")
            }
            ApiError::SpoolFull => (StatusCode::SERVICE_UNAVAILABLE, "spool_full"),
            ApiError::SpoolUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "spool_unavailable"),
            ApiError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            ApiError::Refused(VerifyError::Unauthorized(_) | VerifyError::BasicUnauthorized(_)) => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            ApiError::Refused(VerifyError::Forbidden) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Refused(VerifyError::NotSubscribed) => {
                (StatusCode::NOT_FOUND, "not_subscribed")
            }
            ApiError::Refused(VerifyError::RateLimited { .. }) => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
            }
            ApiError::Refused(VerifyError::SchemaViolation { .. }) => {
                (StatusCode::BAD_REQUEST, "schema_violation")
            }
            ApiError::Refused(VerifyError::InvalidJson(_)) => {
                (StatusCode::BAD_REQUEST, "invalid_json")
            }
            ApiError::Refused(VerifyError::InvalidForm(_)) => {
                (StatusCode::BAD_REQUEST, "invalid_form")
            }
            // Never a 4xx: the sender did nothing wrong; the body stays opaque.
            ApiError::Refused(VerifyError::CleanupFailed) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
            ApiError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::LocalOnly => (StatusCode::FORBIDDEN, "local_only"),
            ApiError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::SpoolOff => (StatusCode::NOT_FOUND, "spool_off"),
            ApiError::CopyInFlight => (StatusCode::SERVICE_UNAVAILABLE, "copy_in_flight"),
            ApiError::InvalidHost => (StatusCode::BAD_REQUEST, "invalid_host"),
            ApiError::HostNotAllowed => (StatusCode::FORBIDDEN, "host_not_allowed"),
            ApiError::CrossOrigin => (StatusCode::FORBIDDEN, "origin_not_allowed"),
            ApiError::TokenInQuery => (StatusCode::BAD_REQUEST, "token_in_query"),
            ApiError::InvalidChannel(_) => (StatusCode::BAD_REQUEST, "invalid_channel"),
            ApiError::ConnectUnauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::UnknownChannel => (StatusCode::NOT_FOUND, "unknown_channel"),
            ApiError::ChannelUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "channel_unavailable")
            }
        }
    }

    pub fn code(&self) -> &'static str {
        self.parts().1
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.parts();
        let mut response = HttpResponse::build(status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
        }
        match self {
            ApiError::MethodNotAllowed { allowed } => {
                response.insert_header((header::ALLOW, *allowed));
            }
            ApiError::Refused(VerifyError::RateLimited { retry_after_secs }) => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs.max(&1).to_string()));
            }
            ApiError::Refused(VerifyError::BasicUnauthorized(_)) => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    r#"Basic realm="switchyard", charset="UTF-8""#,
                ));
            }
            ApiError::TooManyUploads => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            ApiError::ConnectUnauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            _ => {}
        }
        response.json(serde_json::json!({ "error": code, "message": self.to_string() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_503_and_429_carries_retry_after_and_nothing_else_does() {
        let errors = [
            ApiError::NotReady,
            ApiError::CopyInFlight,
            ApiError::Overloaded,
            ApiError::ShuttingDown,
            ApiError::WebhookInvalid,
            ApiError::SpoolFull,
            ApiError::SpoolUnavailable(crate::spool::SpoolError::Stopped),
            ApiError::DestinationUnavailable(DeliveryError::Timeout { timeout_ms: 1 }),
            ApiError::NotFound,
            ApiError::Refused(VerifyError::InvalidJson("x".into())),
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::RequestTimeout { timeout_ms: 1 },
            ApiError::TooManyUploads,
            ApiError::Refused(VerifyError::RateLimited {
                retry_after_secs: 3,
            }),
            ApiError::Refused(VerifyError::Unauthorized(crate::verify::Why::BadSignature)),
        ];
        for e in errors {
            let response = e.error_response();
            let has = response.headers().contains_key(header::RETRY_AFTER);
            let retryable = response.status() == StatusCode::SERVICE_UNAVAILABLE
                || response.status() == StatusCode::TOO_MANY_REQUESTS;
            assert_eq!(has, retryable, "{e:?}");
        }
    }

    #[test]
    fn a_destination_that_refuses_for_good_is_a_502_without_retry_after() {
        let e = ApiError::DestinationRejected(DeliveryError::Rejected {
            module: "redis_stream",
            reason: "WRONGTYPE".into(),
        });
        assert_eq!(e.parts(), (StatusCode::BAD_GATEWAY, "destination_rejected"));
        assert!(!e
            .error_response()
            .headers()
            .contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn a_cleanup_fault_is_an_opaque_500() {
        let e = ApiError::Refused(VerifyError::CleanupFailed);
        assert_eq!(
            e.parts(),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
        );
    }

    #[test]
    fn server_side_faults_are_never_4xx() {
        let e = ApiError::DestinationUnavailable(DeliveryError::Unavailable {
            module: "log",
            reason: "down".into(),
        });
        assert!(e.parts().0.is_server_error());
        let missing =
            ApiError::DestinationUnavailable(DeliveryError::Connection(PoolError::Missing {
                name: crate::keys::ConnectionName::parse("c").unwrap(),
            }));
        assert_eq!(
            missing.parts(),
            (StatusCode::SERVICE_UNAVAILABLE, "connection_missing")
        );
    }
}
