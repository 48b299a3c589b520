//! Who may reach what: the `Host` grammar every request must meet, the admin listener's
//! `Host` and `Origin` rules (DNS rebinding), and `/spool*` for local peers only when it shares
//! the public port.

use actix_web::{
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::header,
    middleware::Next,
    web, HttpMessage as _, ResponseError,
};

use super::{error::ApiError, AppState};

/// Whether `value` is `host[:port]`: a name of letters, digits, `-`, `_` and `.`, an IPv4
/// address, or an IPv6 address in brackets, then an optional decimal port. Anything else (a
/// path, `@`, spaces, a second colon) could change the URL a signature is checked against.
pub fn host_is_valid(value: &str) -> bool {
    let (host, port) = match value.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, after)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match after {
                    "" => return true,
                    _ => match after.strip_prefix(':') {
                        Some(port) => (v6, Some(port)),
                        None => return false,
                    },
                }
            }
            None => return false,
        },
        None => match value.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        },
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok()
    });
    let name_ok = value.starts_with('[')
        || (!host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')));
    port_ok && name_ok
}

/// The `Host` of a request without its port (brackets of an IPv6 address removed).
fn host_name(value: &str) -> &str {
    match value.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(v6, _)| v6),
        None => value.split_once(':').map_or(value, |(host, _)| host),
    }
}

/// Whether the admin listener answers a request with this `Host`: an IP address, or a name in
/// `ADMIN_HOSTS` (`localhost` by default). A name an attacker controls (DNS rebinding: a page
/// whose name now resolves to 127.0.0.1) is refused.
fn admin_host_allowed(value: Option<&str>, allowed: &[String]) -> bool {
    let Some(value) = value else {
        // HTTP/1.0 without `Host`: no browser sends that.
        return true;
    };
    let name = host_name(value);
    name.parse::<std::net::IpAddr>().is_ok() || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// Answers `req` with `error` before any route saw it, holding its unread body so that the
/// connection is closed rather than drained (see `unread`).
pub fn refuse(mut req: ServiceRequest, error: &ApiError) -> ServiceResponse {
    let payload = req.take_payload();
    req.into_response(super::unread::hold(error.error_response(), payload))
}

/// The admin listener's gate: no browser-made request (any `Origin`), no foreign `Host`.
pub async fn admin(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let allowed = req
        .app_data::<web::Data<AppState>>()
        .map(|state| std::sync::Arc::clone(&state.admin_hosts))
        .unwrap_or_default();
    let refusal = if req.headers().contains_key(header::ORIGIN) {
        Some(ApiError::CrossOrigin)
    } else {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok());
        (!admin_host_allowed(host, &allowed)).then_some(ApiError::HostNotAllowed)
    };
    match refusal {
        Some(error) => Ok(refuse(req, &error).map_into_right_body()),
        None => Ok(next.call(req).await?.map_into_left_body()),
    }
}

/// Whether a request came from this host and not through a proxy.
pub fn is_local(req: &actix_web::HttpRequest) -> bool {
    let local = req
        .peer_addr()
        .is_some_and(|peer| peer.ip().to_canonical().is_loopback());
    let proxied = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|h| req.headers().contains_key(*h));
    local && !proxied
}

/// `/spool*` on the public port (no `ADMIN_PORT`): local peers only.
pub async fn local_only(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if is_local(req.request()) {
        Ok(next.call(req).await?.map_into_left_body())
    } else {
        Ok(refuse(req, &ApiError::LocalOnly).map_into_right_body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_grammar_takes_names_addresses_and_ports_only() {
        for good in [
            "example.com",
            "example.com:8080",
            "127.0.0.1",
            "127.0.0.1:3000",
            "[::1]",
            "[::1]:3000",
            "my_host.internal",
            "localhost:65535",
        ] {
            assert!(host_is_valid(good), "{good}");
        }
        for bad in [
            "",
            "public.example/webhook/twilioBody",
            "a@b",
            "host:port",
            "host:",
            "host:65536",
            "host:1:2",
            "[::1",
            "[nothost]:80",
            "[::1]x",
            "a b",
            "host?x=1",
            "host#x",
            "ho%2fst",
        ] {
            assert!(!host_is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn the_admin_listener_takes_addresses_and_listed_names_only() {
        let allowed = vec!["localhost".to_owned(), "admin.internal".to_owned()];
        for ok in [
            None,
            Some("127.0.0.1:9000"),
            Some("[::1]:9000"),
            Some("10.0.0.5"),
            Some("localhost:9000"),
            Some("ADMIN.internal"),
        ] {
            assert!(admin_host_allowed(ok, &allowed), "{ok:?}");
        }
        for refused in [
            Some("attacker.example:9000"),
            Some("localhost.attacker.example"),
        ] {
            assert!(!admin_host_allowed(refused, &allowed), "{refused:?}");
        }
    }
}
