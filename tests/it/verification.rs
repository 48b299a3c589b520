//! Per-webhook verification through the real HTTP stack: each check accepts the right request
//! and refuses every wrong one, before any module is touched.

use std::net::SocketAddr;

use actix_web::{
    http::{header, StatusCode},
    test,
};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::{
    hmac_sha256,
    inproc::{add, call, harness, harness_trusting, post_bytes, Harness},
    recording::RecordingModule,
    unix_now,
};

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// One webhook `a/w` with `entry`; returns the harness and the module it delivers to.
fn webhook(entry: Value) -> (Harness, std::sync::Arc<RecordingModule>) {
    let h = harness(true);
    let module = RecordingModule::new();
    add(&h.cache, "a", "w", entry, &module);
    (h, module)
}

async fn status(h: &Harness, req: test::TestRequest) -> StatusCode {
    call(h, req).await.0
}

fn req(body: &str) -> test::TestRequest {
    post_bytes("/webhook/a/w", body.to_owned())
}

#[actix_web::test]
async fn authorization_header_must_match_exactly() {
    let (h, module) = webhook(json!({"module": "log", "authorization": "Bearer s3cret"}));
    let ok = req("{}").insert_header(("authorization", "Bearer s3cret"));
    assert_eq!(status(&h, ok).await, StatusCode::OK);
    for wrong in [
        "Bearer s3cres",
        "bearer s3cret",
        "Bearer s3cret ",
        "s3cret",
        "",
    ] {
        let (status, _, body) = call(&h, req("{}").insert_header(("authorization", wrong))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong:?}");
        assert_eq!(body["error"], "unauthorized");
        assert!(!body.to_string().contains("s3cret"));
    }
    assert_eq!(status(&h, req("{}")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(module.taken().len(), 1);
}

#[actix_web::test]
async fn header_auth_with_and_without_case_sensitivity() {
    let (h, _) = webhook(json!({"module": "log",
        "header_auth": {"header_name": "X-API-Key", "api_key": "AbC123"}}));
    assert_eq!(
        status(&h, req("{}").insert_header(("x-api-key", "AbC123"))).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&h, req("{}").insert_header(("x-api-key", "abc123"))).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status(&h, req("{}")).await, StatusCode::UNAUTHORIZED);

    let (h, _) = webhook(json!({"module": "log", "header_auth":
        {"header_name": "X-API-Key", "api_key": "AbC123", "case_sensitive": false}}));
    assert_eq!(
        status(&h, req("{}").insert_header(("x-api-key", "abc123"))).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&h, req("{}").insert_header(("x-api-key", "abc124"))).await,
        StatusCode::UNAUTHORIZED
    );
}

#[actix_web::test]
async fn query_auth_checks_the_parameter() {
    let (h, _) = webhook(json!({"module": "log",
        "query_auth": {"parameter_name": "api_key", "api_key": "k&y=1"}}));
    let with = |q: &str| post_bytes(&format!("/webhook/a/w?{q}"), "{}");
    assert_eq!(status(&h, with("api_key=k%26y%3D1")).await, StatusCode::OK);
    assert_eq!(
        status(&h, with("x=1&api_key=k%26y%3D1")).await,
        StatusCode::OK
    );
    for q in [
        "api_key=k",
        "apikey=k%26y%3D1",
        "",
        "api_key=k%26y%3D1&api_key=other",
    ] {
        assert_eq!(status(&h, with(q)).await, StatusCode::UNAUTHORIZED, "{q}");
    }
}

#[actix_web::test]
async fn basic_auth_refuses_with_www_authenticate() {
    let (h, _) = webhook(json!({"module": "log",
        "basic_auth": {"username": "hook", "password": "pa:ss"}}));
    let basic = |user_pass: &str| format!("Basic {}", BASE64.encode(user_pass));
    assert_eq!(
        status(
            &h,
            req("{}").insert_header(("authorization", basic("hook:pa:ss")))
        )
        .await,
        StatusCode::OK
    );
    for wrong in [
        basic("hook:pass"),
        basic("Hook:pa:ss"),
        basic("hookpa:ss"),
        "Basic !!".into(),
        "Bearer x".into(),
    ] {
        let (status, headers, body) = call(
            &h,
            req("{}").insert_header(("authorization", wrong.clone())),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong}");
        assert!(headers
            .get(header::WWW_AUTHENTICATE)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Basic"));
        assert_eq!(
            body["message"], "authentication failed",
            "never says which part was wrong"
        );
    }
}

#[actix_web::test]
async fn generic_hmac_accepts_raw_and_prefixed_digests() {
    let (h, module) =
        webhook(json!({"module": "log", "hmac": {"secret": "k", "algorithm": "sha256"}}));
    let body = r#"{"a":1}"#;
    let sig = hex::encode(hmac_sha256(b"k", &[body.as_bytes()]));
    let signed = |value: String| req(body).insert_header(("x-hmac-signature", value));
    assert_eq!(status(&h, signed(sig.clone())).await, StatusCode::OK);
    assert_eq!(
        status(&h, signed(format!("sha256={sig}"))).await,
        StatusCode::OK
    );
    let mut tampered = sig.clone();
    tampered.replace_range(0..2, if &sig[0..2] == "00" { "01" } else { "00" });
    for wrong in [tampered, "zz".into(), String::new(), sig[..10].to_owned()] {
        assert_eq!(
            status(&h, signed(wrong.clone())).await,
            StatusCode::UNAUTHORIZED,
            "{wrong}"
        );
    }
    // Same signature, other body.
    let other = req(r#"{"a":2}"#).insert_header(("x-hmac-signature", sig));
    assert_eq!(status(&h, other).await, StatusCode::UNAUTHORIZED);
    assert_eq!(module.taken().len(), 2);

    let (h, _) = webhook(
        json!({"module": "log", "hmac": {"secret": "k", "algorithm": "sha512",
        "encoding": "base64", "header": "X-Sig"}}),
    );
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha512>::new_from_slice(b"k").unwrap();
    mac.update(body.as_bytes());
    let sig = BASE64.encode(mac.finalize().into_bytes());
    assert_eq!(
        status(&h, req(body).insert_header(("x-sig", sig))).await,
        StatusCode::OK
    );
}

#[actix_web::test]
async fn github_preset_matches_the_published_example() {
    // docs.github.com "Validating webhook deliveries".
    let (h, _) = webhook(json!({"module": "log", "data_type": "blob",
        "hmac": {"provider": "github", "secret": "It's a Secret to Everybody"}}));
    let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let ok = req("Hello, World!").insert_header(("x-hub-signature-256", sig));
    assert_eq!(status(&h, ok).await, StatusCode::OK);
    let wrong = req("Hello, World?").insert_header(("x-hub-signature-256", sig));
    assert_eq!(status(&h, wrong).await, StatusCode::UNAUTHORIZED);
    let unprefixed = req("Hello, World!").insert_header(("x-hub-signature-256", &sig[7..]));
    assert_eq!(status(&h, unprefixed).await, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn stripe_preset_checks_timestamp_tolerance_and_any_v1() {
    let secret = "whsec_test_secret";
    let (h, _) = webhook(json!({"module": "log",
        "hmac": {"provider": "stripe", "secret": secret, "tolerance_seconds": 300}}));
    let body = r#"{"id":"evt_1","type":"charge.succeeded"}"#;
    let sign = |t: i64| {
        hex::encode(hmac_sha256(
            secret.as_bytes(),
            &[t.to_string().as_bytes(), b".", body.as_bytes()],
        ))
    };
    let t = unix_now();
    let header = |value: String| req(body).insert_header(("stripe-signature", value));
    assert_eq!(
        status(&h, header(format!("t={t},v1={}", sign(t)))).await,
        StatusCode::OK
    );
    // Several v1 entries (secret rotation): any match is enough.
    assert_eq!(
        status(
            &h,
            header(format!(
                "t={t},v1={},v1={},v0=abc",
                "00".repeat(32),
                sign(t)
            ))
        )
        .await,
        StatusCode::OK
    );
    // Replayed outside the tolerance, even with a valid signature.
    let old = t - 301;
    assert_eq!(
        status(&h, header(format!("t={old},v1={}", sign(old)))).await,
        StatusCode::UNAUTHORIZED
    );
    let future = t + 400;
    assert_eq!(
        status(&h, header(format!("t={future},v1={}", sign(future)))).await,
        StatusCode::UNAUTHORIZED
    );
    for wrong in [
        format!("t={t}"),
        format!("v1={}", sign(t)),
        format!("t=x,v1={}", sign(t)),
        format!("t={t},v1={}", sign(t - 1)),
        "garbage".into(),
    ] {
        assert_eq!(
            status(&h, header(wrong.clone())).await,
            StatusCode::UNAUTHORIZED,
            "{wrong}"
        );
    }
}

#[actix_web::test]
async fn shopify_preset_uses_base64() {
    let (h, _) =
        webhook(json!({"module": "log", "hmac": {"provider": "shopify", "secret": "shpss"}}));
    let body = r#"{"order":1}"#;
    let sig = BASE64.encode(hmac_sha256(b"shpss", &[body.as_bytes()]));
    assert_eq!(
        status(
            &h,
            req(body).insert_header(("x-shopify-hmac-sha256", sig.clone()))
        )
        .await,
        StatusCode::OK
    );
    let hex_sig = hex::encode(hmac_sha256(b"shpss", &[body.as_bytes()]));
    assert_eq!(
        status(
            &h,
            req(body).insert_header(("x-shopify-hmac-sha256", hex_sig))
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
}

#[actix_web::test]
async fn slack_preset_signs_version_timestamp_and_body() {
    let secret = "8f742231b10e8888abcd99yyyzzz85a5";
    let (h, _) = webhook(json!({"module": "log", "data_type": "blob",
        "hmac": {"provider": "slack", "secret": secret}}));
    let body = "token=abc&team_id=T1";
    let t = unix_now();
    let sign = |t: i64| {
        format!(
            "v0={}",
            hex::encode(hmac_sha256(
                secret.as_bytes(),
                &[b"v0:", t.to_string().as_bytes(), b":", body.as_bytes()]
            ))
        )
    };
    let signed = |t: i64, sig: String| {
        req(body)
            .insert_header(("x-slack-request-timestamp", t.to_string()))
            .insert_header(("x-slack-signature", sig))
    };
    assert_eq!(status(&h, signed(t, sign(t))).await, StatusCode::OK);
    assert_eq!(
        status(&h, signed(t - 600, sign(t - 600))).await,
        StatusCode::UNAUTHORIZED,
        "replay"
    );
    assert_eq!(
        status(&h, signed(t + 1, sign(t))).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&h, req(body).insert_header(("x-slack-signature", sign(t)))).await,
        StatusCode::UNAUTHORIZED
    );
}

/// Rotation: with `secret` a list, a request signed with any of its secrets passes, one signed
/// with any other is refused; for every preset and the generic check.
#[actix_web::test]
async fn every_hmac_check_takes_a_list_of_secrets_while_rotating() {
    let whsec = |k: &[u8]| format!("whsec_{}", BASE64.encode(k));
    let (old, new, other) = (
        b"the old 24-byte key here".as_slice(),
        b"the new 24-byte key here".as_slice(),
        b"someone else's 24b key!!".as_slice(),
    );
    let body = r#"{"id":"evt_1","type":"x"}"#;
    let t = unix_now();
    type Sign = Box<dyn Fn(&[u8]) -> Vec<(&'static str, String)>>;
    let cases: Vec<(&str, Value, Sign)> = vec![
        (
            "generic",
            json!([String::from_utf8_lossy(old), String::from_utf8_lossy(new)]),
            Box::new(move |k: &[u8]| {
                vec![(
                    "x-hmac-signature",
                    hex::encode(hmac_sha256(k, &[body.as_bytes()])),
                )]
            }),
        ),
        (
            "github",
            json!([String::from_utf8_lossy(old), String::from_utf8_lossy(new)]),
            Box::new(move |k: &[u8]| {
                let sig = hex::encode(hmac_sha256(k, &[body.as_bytes()]));
                vec![("x-hub-signature-256", format!("sha256={sig}"))]
            }),
        ),
        (
            "shopify",
            json!([String::from_utf8_lossy(old), String::from_utf8_lossy(new)]),
            Box::new(move |k: &[u8]| {
                vec![(
                    "x-shopify-hmac-sha256",
                    BASE64.encode(hmac_sha256(k, &[body.as_bytes()])),
                )]
            }),
        ),
        (
            "stripe",
            json!([String::from_utf8_lossy(old), String::from_utf8_lossy(new)]),
            Box::new(move |k: &[u8]| {
                let ts = t.to_string();
                let sig = hex::encode(hmac_sha256(k, &[ts.as_bytes(), b".", body.as_bytes()]));
                vec![("stripe-signature", format!("t={t},v1={sig}"))]
            }),
        ),
        (
            "slack",
            json!([String::from_utf8_lossy(old), String::from_utf8_lossy(new)]),
            Box::new(move |k: &[u8]| {
                let ts = t.to_string();
                let sig = hex::encode(hmac_sha256(
                    k,
                    &[b"v0:", ts.as_bytes(), b":", body.as_bytes()],
                ));
                vec![
                    ("x-slack-request-timestamp", ts),
                    ("x-slack-signature", format!("v0={sig}")),
                ]
            }),
        ),
        (
            "standard_webhooks",
            json!([whsec(old), whsec(new)]),
            Box::new(move |k: &[u8]| {
                let ts = t.to_string();
                let sig = BASE64.encode(hmac_sha256(
                    k,
                    &[b"msg_1", b".", ts.as_bytes(), b".", body.as_bytes()],
                ));
                vec![
                    ("webhook-id", "msg_1".to_owned()),
                    ("webhook-timestamp", ts),
                    ("webhook-signature", format!("v1,{sig}")),
                ]
            }),
        ),
    ];
    for (provider, secrets, sign) in cases {
        let mut hmac = json!({"secret": secrets});
        if provider != "generic" {
            hmac["provider"] = json!(provider);
        }
        let (h, module) = webhook(json!({"module": "log", "hmac": hmac}));
        for (key, expected) in [
            (old, StatusCode::OK),
            (new, StatusCode::OK),
            (other, StatusCode::UNAUTHORIZED),
        ] {
            let mut request = req(body);
            for header in sign(key) {
                request = request.insert_header(header);
            }
            assert_eq!(status(&h, request).await, expected, "{provider}");
        }
        assert_eq!(
            module.taken().len(),
            2,
            "{provider}: both secrets delivered"
        );
    }
}

#[actix_web::test]
async fn standard_webhooks_preset_with_whsec_secret_and_several_signatures() {
    let key = b"a 24 byte key for tests!";
    let secret = format!("whsec_{}", BASE64.encode(key));
    let (h, _) = webhook(
        json!({"module": "log", "hmac": {"provider": "standard_webhooks", "secret": secret}}),
    );
    let body = r#"{"type":"user.created"}"#;
    let t = unix_now();
    let sign = |id: &str, t: i64| {
        BASE64.encode(hmac_sha256(
            key,
            &[
                id.as_bytes(),
                b".",
                t.to_string().as_bytes(),
                b".",
                body.as_bytes(),
            ],
        ))
    };
    let signed = |id: &str, t: i64, sig: String| {
        req(body)
            .insert_header(("webhook-id", id.to_owned()))
            .insert_header(("webhook-timestamp", t.to_string()))
            .insert_header(("webhook-signature", sig))
    };
    assert_eq!(
        status(&h, signed("msg_1", t, format!("v1,{}", sign("msg_1", t)))).await,
        StatusCode::OK
    );
    assert_eq!(
        status(
            &h,
            signed(
                "msg_1",
                t,
                format!("v1,bm90IGl0 v1a,xxx v1,{}", sign("msg_1", t))
            )
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        status(&h, signed("msg_2", t, format!("v1,{}", sign("msg_1", t)))).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(
            &h,
            signed("msg_1", t - 301, format!("v1,{}", sign("msg_1", t - 301)))
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&h, signed("msg_1", t, format!("v2,{}", sign("msg_1", t)))).await,
        StatusCode::UNAUTHORIZED
    );
}

#[actix_web::test]
async fn jwt_hs256_checks_signature_issuer_audience_and_expiry() {
    let (h, _) = webhook(
        json!({"module": "log", "jwt": {"secret": "jwt-secret", "algorithm": "HS256",
        "issuer": "billing", "audience": "switchyard"}}),
    );
    let token = |claims: Value, secret: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let good = json!({"iss": "billing", "aud": "switchyard", "exp": unix_now() + 60});
    let bearer = |t: String| req("{}").insert_header(("authorization", format!("Bearer {t}")));
    assert_eq!(
        status(&h, bearer(token(good.clone(), "jwt-secret"))).await,
        StatusCode::OK
    );
    for (claims, secret) in [
        (good.clone(), "other"),
        (
            json!({"iss": "other", "aud": "switchyard", "exp": unix_now() + 60}),
            "jwt-secret",
        ),
        (
            json!({"iss": "billing", "aud": "other", "exp": unix_now() + 60}),
            "jwt-secret",
        ),
        (
            json!({"iss": "billing", "aud": "switchyard", "exp": unix_now() - 120}),
            "jwt-secret",
        ),
        (json!({"iss": "billing", "aud": "switchyard"}), "jwt-secret"),
    ] {
        assert_eq!(
            status(&h, bearer(token(claims.clone(), secret))).await,
            StatusCode::UNAUTHORIZED,
            "{claims}"
        );
    }
    // alg=none is never accepted.
    let none_header = BASE64
        .encode(r#"{"alg":"none","typ":"JWT"}"#)
        .trim_end_matches('=')
        .to_owned();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(good.to_string());
    assert_eq!(
        status(&h, bearer(format!("{none_header}.{payload}."))).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status(&h, req("{}")).await, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn jwt_none_algorithm_is_refused_in_config() {
    let err = switchyard::webhook::Webhook::from_value(
        json!({"module": "log", "jwt": {"secret": "s", "algorithm": "none"}}),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("never none"), "{err}");
}

#[actix_web::test]
async fn ip_whitelist_uses_the_peer_unless_it_is_a_trusted_proxy() {
    let entry = json!({"module": "log", "ip_whitelist": ["198.51.100.0/24", "2001:db8::1"]});
    let from = |peer: &str| req("{}").peer_addr(peer.parse::<SocketAddr>().unwrap());

    let h = harness(true);
    add(&h.cache, "a", "w", entry.clone(), &RecordingModule::new());
    assert_eq!(status(&h, from("198.51.100.7:4000")).await, StatusCode::OK);
    assert_eq!(status(&h, from("[2001:db8::1]:4000")).await, StatusCode::OK);
    let (s, _, body) = call(&h, from("203.0.113.5:4000")).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    // A spoofed X-Forwarded-For from an untrusted peer is ignored.
    let spoofed = from("203.0.113.5:4000").insert_header(("x-forwarded-for", "198.51.100.7"));
    assert_eq!(status(&h, spoofed).await, StatusCode::FORBIDDEN);

    let h = harness_trusting("10.0.0.0/8");
    add(&h.cache, "a", "w", entry, &RecordingModule::new());
    let via_proxy =
        |xff: &str| from("10.1.1.1:4000").insert_header(("x-forwarded-for", xff.to_owned()));
    assert_eq!(status(&h, via_proxy("198.51.100.7")).await, StatusCode::OK);
    // The client prepends a fake entry; the right-most untrusted one counts.
    assert_eq!(
        status(&h, via_proxy("198.51.100.7, 203.0.113.5")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(&h, via_proxy("203.0.113.5, 198.51.100.7, 10.2.2.2")).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&h, from("10.1.1.1:4000")).await,
        StatusCode::FORBIDDEN
    );
}

#[actix_web::test]
async fn rate_limit_answers_429_with_retry_after() {
    let (h, module) = webhook(json!({"module": "log",
        "rate_limit": {"max_requests": 3, "window_seconds": 60}}));
    for _ in 0..3 {
        assert_eq!(status(&h, req("{}")).await, StatusCode::OK);
    }
    let (s, headers, body) = call(&h, req("{}")).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"], "rate_limited");
    let retry: u64 = headers
        .get(header::RETRY_AFTER)
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(module.taken().len(), 3);
}

#[actix_web::test]
async fn json_schema_violation_names_the_path() {
    let (h, module) = webhook(json!({"module": "log", "json_schema": {
        "type": "object", "required": ["action"],
        "properties": {"repository": {"type": "object", "properties": {"id": {"type": "integer"}}}}}}));
    assert_eq!(
        status(&h, req(r#"{"action":"push","repository":{"id":1}}"#)).await,
        StatusCode::OK
    );
    let (s, _, body) = call(&h, req(r#"{"action":"push","repository":{"id":"x"}}"#)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "schema_violation");
    assert!(
        body["message"].as_str().unwrap().contains("/repository/id"),
        "{body}"
    );
    assert_eq!(module.taken().len(), 1);
}

#[actix_web::test]
async fn per_webhook_max_body_bytes_overrides_the_global_limit() {
    let (h, _) = webhook(json!({"module": "log", "data_type": "blob", "max_body_bytes": 10}));
    assert_eq!(status(&h, req("0123456789")).await, StatusCode::OK);
    let (s, _, body) = call(&h, req("0123456789A")).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    assert!(body["message"].as_str().unwrap().contains("10 bytes"));
}

#[actix_web::test]
async fn credential_cleanup_masks_fields_before_the_module_sees_them() {
    let (h, module) = webhook(json!({"module": "log", "credential_cleanup": {"enabled": true}}));
    let body = r#"{"user":{"name":"n","password":"p"},"list":[{"api_key":"k"}]}"#;
    assert_eq!(status(&h, req(body)).await, StatusCode::OK);
    let delivered: Value = serde_json::from_slice(&module.taken()[0].body).unwrap();
    assert_eq!(
        delivered,
        json!({"user":{"name":"n","password":"***"},"list":[{"api_key":"***"}]})
    );

    let (h, module) = webhook(json!({"module": "log",
        "credential_cleanup": {"mode": "remove", "fields": ["pin"]}}));
    assert_eq!(status(&h, req(r#"{"pin":1,"x":2}"#)).await, StatusCode::OK);
    assert_eq!(module.taken()[0].body.as_ref(), br#"{"x":2}"#);
}

#[actix_web::test]
async fn several_checks_combine_with_and() {
    let (h, module) = webhook(json!({"module": "log",
        "authorization": "Bearer t",
        "hmac": {"provider": "shopify", "secret": "s"},
        "ip_whitelist": ["127.0.0.0/8"]}));
    let body = "{}";
    let sig = BASE64.encode(hmac_sha256(b"s", &[body.as_bytes()]));
    let full = || {
        req(body)
            .peer_addr("127.0.0.1:1".parse().unwrap())
            .insert_header(("authorization", "Bearer t"))
            .insert_header(("x-shopify-hmac-sha256", sig.clone()))
    };
    assert_eq!(status(&h, full()).await, StatusCode::OK);
    assert_eq!(
        status(&h, full().peer_addr("192.0.2.1:1".parse().unwrap())).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(&h, full().insert_header(("authorization", "Bearer x"))).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(&h, full().insert_header(("x-shopify-hmac-sha256", "AAAA"))).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(module.taken().len(), 1);
}

#[actix_web::test]
async fn misspelt_security_fields_make_the_entry_invalid() {
    for entry in [
        json!({"module": "log", "hmca": {"secret": "s"}}),
        json!({"module": "log", "hmac": {"secret": "s", "provder": "github"}}),
        json!({"module": "log", "hmac": {"secret": "s", "provider": "gitlab"}}),
        json!({"module": "log", "hmac": {"secret": "s", "provider": "github", "header": "X"}}),
        json!({"module": "log", "basic_auth": {"user": "u", "password": "p"}}),
        json!({"module": "log", "ip_whitelist": ["10.0.0.0/33"]}),
        json!({"module": "log", "rate_limit": {"max_requests": 0, "window_seconds": 1}}),
        json!({"module": "log", "json_schema": {"type": 5}}),
        json!({"module": "log", "data_type": "blob", "json_schema": {}}),
        json!({"module": "log", "hmac": {"provider": "standard_webhooks", "secret": "whsec_!!"}}),
        json!({"module": "log", "jwt": {"secret": "not a pem", "algorithm": "RS256"}}),
    ] {
        assert!(
            switchyard::webhook::Webhook::from_value(entry.clone()).is_err(),
            "{entry}"
        );
    }
}

mod live {
    //! Through the real server and a real etcd.

    use std::time::Duration;

    use futures_util::stream;
    use reqwest::StatusCode;
    use serde_json::json;

    use super::hmac_sha256;
    use crate::{
        support::{app::etcd_settings, Etcd, TestApp},
        unique,
    };

    async fn signed(app: &TestApp, body: &str, secret: &str) -> StatusCode {
        let sig = format!(
            "sha256={}",
            hex::encode(hmac_sha256(secret.as_bytes(), &[body.as_bytes()]))
        );
        app.client
            .post(app.url("/webhook/acme/gh"))
            .header("x-hub-signature-256", sig)
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn rotating_the_hmac_secret_in_etcd_refuses_old_signatures_at_once() {
        let etcd = Etcd::start().await;
        let p = format!("/{}/", unique!("cwm"));
        let key = format!("{p}acme/webhooks/gh");
        let entry = |secret: &str| {
            json!({"module": "log", "hmac": {"provider": "github", "secret": secret}}).to_string()
        };
        etcd.put(&key, &entry("old-secret")).await;
        let app = TestApp::spawn_ready(etcd_settings(&etcd.endpoint(), &p)).await;
        assert_eq!(signed(&app, "{}", "old-secret").await, StatusCode::OK);
        assert_eq!(
            signed(&app, "{}", "new-secret").await,
            StatusCode::UNAUTHORIZED
        );

        let rotated = etcd.put(&key, &entry("new-secret")).await;
        crate::support::wait_until(Duration::from_secs(10), "rotation applied", || async {
            app.health().await.1["config"]["revision"] == rotated
        })
        .await;
        // Applied means enforced: the very next request with the old secret is refused.
        assert_eq!(
            signed(&app, "{}", "old-secret").await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(signed(&app, "{}", "new-secret").await, StatusCode::OK);
    }

    #[tokio::test]
    async fn per_webhook_limit_refuses_a_chunked_body_without_content_length() {
        let etcd = Etcd::start().await;
        let p = format!("/{}/", unique!("cwm"));
        etcd.put(
            &format!("{p}acme/webhooks/small"),
            &json!({"module": "log", "data_type": "blob", "max_body_bytes": 100}).to_string(),
        )
        .await;
        let app = TestApp::spawn_ready(etcd_settings(&etcd.endpoint(), &p)).await;
        let chunks = stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 10])));
        let response = app
            .client
            .post(app.url("/webhook/acme/small"))
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let ok = app
            .client
            .post(app.url("/webhook/acme/small"))
            .body(vec![b'x'; 100])
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
    }
}

/// A refused request's log line carries its request id (the one answered in `x-request-id`)
/// and the class of its cause, while every sender gets the same 401 whatever the cause.
#[tokio::test]
async fn a_refusal_is_logged_with_its_request_id_and_cause_and_answered_the_same() {
    use crate::support::{process::Router, unix_now};
    let (_dir, router) = Router::serving(
        json!({
            "gh": {"module": "log", "hmac": {"provider": "github", "secret": "s3cret"}},
            "stripe": {"module": "log", "hmac": {"provider": "stripe", "secret": "whsec_x"}},
            "key": {"module": "log", "header_auth": {"header_name": "x-api-key", "api_key": "k3y"}},
            "jwt": {"module": "log", "jwt": {"secret": "jwt-secret"}},
            "graph": {"module": "log", "handshake": {"provider": "msgraph", "client_state": "st"}},
            "meta": {"module": "log", "handshake": {"provider": "meta", "verify_token": "vt"}},
        }),
        &[("LOG_FORMAT", "json")],
    )
    .await;
    let client = reqwest::Client::new();
    let body = r#"{"zen":"hi"}"#;
    let old = unix_now() - 3600;
    let stripe_sig = hex::encode(hmac_sha256(
        b"whsec_x",
        &[old.to_string().as_bytes(), b".", body.as_bytes()],
    ));
    let cases: Vec<(&str, reqwest::RequestBuilder, &str)> = vec![
        (
            "gh",
            client.post(router.url("/webhook/gh")).body(body),
            "missing_header",
        ),
        (
            "gh",
            client
                .post(router.url("/webhook/gh"))
                .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
                .body(body),
            "bad_signature",
        ),
        (
            "stripe",
            client
                .post(router.url("/webhook/stripe"))
                .header("stripe-signature", format!("t={old},v1={stripe_sig}"))
                .body(body),
            "timestamp_out_of_tolerance",
        ),
        (
            "key",
            client.post(router.url("/webhook/key")).body(body),
            "missing_credential",
        ),
        (
            "key",
            client
                .post(router.url("/webhook/key"))
                .header("x-api-key", "wrong")
                .body(body),
            "wrong_credential",
        ),
        (
            "jwt",
            client
                .post(router.url("/webhook/jwt"))
                .header("authorization", "Bearer not.a.token")
                .body(body),
            "invalid_token",
        ),
        (
            "graph",
            client
                .post(router.url("/webhook/graph"))
                .body(r#"{"value":[{"clientState":"other"}]}"#),
            "client_state_mismatch",
        ),
        (
            "meta",
            client
                .get(router.url(
                    "/webhook/meta?hub.mode=subscribe&hub.challenge=c&hub.verify_token=wrong",
                )),
            "handshake_token_mismatch",
        ),
    ];
    let mut answers = std::collections::BTreeSet::new();
    for (webhook, request, class) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            reqwest::StatusCode::UNAUTHORIZED,
            "{class}"
        );
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let answer: Value = response.json().await.unwrap();
        answers.insert(answer["error"].to_string() + &answer["message"].to_string());
        crate::support::wait_until(
            std::time::Duration::from_secs(5),
            &format!("the refusal of {id} logged as {class}"),
            || async {
                router.logs().lines().any(|line| {
                    let Ok(entry) = serde_json::from_str::<Value>(line) else {
                        return false;
                    };
                    entry["message"] == "Request refused."
                        && entry["request_id"] == id.as_str()
                        && entry["reason_class"] == class
                        && entry["webhook"] == format!("default/{webhook}")
                })
            },
        )
        .await;
    }
    assert_eq!(answers.len(), 1, "one answer for every cause: {answers:?}");
}

/// Presets log their provider's event type and delivery id without any `headers` configured; a
/// JSON body is logged as an object even when it came pretty-printed, and `headers` is an
/// object too (`LOG_FORMAT=json`).
#[tokio::test]
async fn a_preset_logs_its_event_type_and_delivery_id_and_json_stays_json() {
    use crate::support::{process::Router, unix_now};
    let (_dir, router) = Router::serving(
        json!({
            "gh": {"module": "log", "module-config": {"headers": ["user-agent"]},
                   "hmac": {"provider": "github", "secret": "s3cret"}},
            "stripe": {"module": "log", "hmac": {"provider": "stripe", "secret": "whsec_x"}},
        }),
        &[("LOG_FORMAT", "json")],
    )
    .await;
    let client = reqwest::Client::new();
    let pretty = "{\n  \"ref\": \"refs/heads/main\",\n  \"commits\": [\n    {\"id\": 1}\n  ]\n}\n";
    let signature = hex::encode(hmac_sha256(b"s3cret", &[pretty.as_bytes()]));
    let response = client
        .post(router.url("/webhook/gh"))
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/044aadd")
        .header("x-github-event", "push")
        .header("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
        .header("x-hub-signature-256", format!("sha256={signature}"))
        .body(pretty)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let event = r#"{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","type":"invoice.paid","data":{}}"#;
    let t = unix_now();
    let sig = hex::encode(hmac_sha256(
        b"whsec_x",
        &[t.to_string().as_bytes(), b".", event.as_bytes()],
    ));
    let response = client
        .post(router.url("/webhook/stripe"))
        .header("stripe-signature", format!("t={t},v1={sig}"))
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let received = |webhook: &'static str| {
        let logs = router.logs();
        logs.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|entry| entry["message"] == "Webhook received." && entry["webhook"] == webhook)
    };
    crate::support::wait_until(
        std::time::Duration::from_secs(5),
        "both deliveries logged",
        || async { received("gh").is_some() && received("stripe").is_some() },
    )
    .await;
    let gh = received("gh").unwrap();
    assert_eq!(gh["event_type"], "push", "{gh}");
    assert_eq!(gh["delivery_id"], "72d3162e-cc78-11e3-81ab-4c9367dc0958");
    assert_eq!(
        gh["headers"],
        json!({"user-agent": "GitHub-Hookshot/044aadd"})
    );
    assert_eq!(
        gh["body_json"],
        serde_json::from_str::<Value>(pretty).unwrap(),
        "the pretty-printed body is logged as an object: {gh}"
    );
    let stripe = received("stripe").unwrap();
    assert_eq!(stripe["event_type"], "invoice.paid", "{stripe}");
    assert_eq!(stripe["delivery_id"], "evt_1NG8Du2eZvKYlo2CUI79vXWy");
}
