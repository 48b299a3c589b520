//! Every config object refuses a field it does not know: a misspelt security field must never
//! silently turn a check off. Valid entries covering every variant of every config type (each
//! preset, handshake, module, credential check, connection type) get an unknown field added at
//! each of their objects in turn, and each such entry must be refused, naming the field.

use serde_json::{json, Value};

use super::{parse_connection_unguarded, parse_webhook_unguarded, Rules};
use crate::config::Secrets;

fn no_env(_: &str) -> Option<String> {
    None
}

fn rules() -> Rules {
    Rules {
        max_body_bytes_ceiling: 1 << 20,
        max_chain_length: 16,
    }
}

const SECRET: &str = "a-long-enough-shared-secret";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Webhook entries that between them use every variant of every webhook config type.
fn webhooks() -> Vec<Value> {
    let mut entries = vec![
        json!({"module": "log", "module-config": {"pretty_print": true, "headers": ["x-a"],
                                                   "max_body_bytes": 100}}),
        json!({"module": "kafka", "connection": "k",
               "module-config": {"topic": "t", "key": {"header": "x-id"}, "partition": 0,
                                 "forward_headers": ["x-a"]}}),
        json!({"module": "kafka", "connection": "k",
               "module-config": {"topic": "t", "key": {"json_pointer": "/id"}}}),
        json!({"module": "http", "connection": "h",
               "module-config": {"path": "/x", "method": "PUT", "forward_headers": ["x-a"],
                                 "sign": {"scheme": "standard_webhooks", "secret": WHSEC}}}),
        json!({"module": "redis_publish", "connection": "r", "module-config": {"channel": "c"}}),
        json!({"module": "redis_stream", "connection": "r",
               "module-config": {"stream": "s", "maxlen": 10}}),
        json!({"module": "redis_list", "connection": "r",
               "module-config": {"key": "l", "direction": "rpush", "max_length": 10}}),
        json!({"chain": [{"module": "log"}, {"module": "redis_stream", "connection": "r",
                                              "module-config": {"stream": "s"}}],
               "chain-config": {"execution": "parallel"}}),
        json!({"module": "log", "timeout_ms": 1000, "data_type": "json", "authorization": "Bearer x",
               "ip_whitelist": ["10.0.0.0/8"], "max_body_bytes": 1000, "spool": "always",
               "rate_limit": {"max_requests": 10, "window_seconds": 60},
               "credential_cleanup": {"enabled": true, "mode": "mask", "fields": ["token"]},
               "retry": {"max_age_seconds": 60, "max_attempts": 3},
               "response": {"status": 200, "content_type": "text/plain", "body": "OK"}}),
        json!({"module": "log", "header_auth": {"header_name": "x-key", "api_key": SECRET,
                                                "case_sensitive": true}}),
        json!({"module": "log", "query_auth": {"parameter_name": "key", "api_key": SECRET}}),
        json!({"module": "log", "basic_auth": {"username": "u", "password": SECRET}}),
        json!({"module": "log", "jwt": {"secret": SECRET, "algorithm": "HS256", "issuer": "me"}}),
        json!({"module": "log", "hmac": {"secret": SECRET, "header": "x-sig",
                                         "algorithm": "sha256", "encoding": "hex"}}),
        json!({"module": "log", "hmac": {"provider": "github", "secret": SECRET},
               "dedup": {"key": {"header": "X-GitHub-Delivery"}, "ttl_seconds": 60,
                         "store": {"connection": "r"}}}),
        json!({"module": "log", "dedup": {"key": {"json_pointer": "/id"}}}),
        json!({"module": "log", "handshake": {"provider": "meta", "verify_token": SECRET}}),
        json!({"module": "log", "handshake": {"provider": "x", "consumer_secret": SECRET}}),
        json!({"module": "log", "handshake": {"provider": "msgraph"}}),
        json!({"module": "log", "handshake": {"provider": "okta"}}),
        json!({"module": "log", "handshake": {"provider": "dropbox"}}),
        json!({"module": "log", "handshake": {"provider": "websub",
                                              "topic": "https://example.com/feed"}}),
        json!({"module": "log", "handshake": {"provider": "strava", "verify_token": SECRET}}),
        json!({"module": "log", "handshake": {"provider": "asana"}}),
        json!({"module": "log", "hmac": {"provider": "trello", "secret": SECRET,
                                         "url": "https://example.com/hook"}}),
        json!({"module": "log", "hmac": {"provider": "asana", "secret": SECRET}}),
        json!({"module": "log", "hmac": {"provider": "twilio", "secret": SECRET,
                                         "url": "https://example.com/hook"}}),
    ];
    for provider in [
        "stripe",
        "shopify",
        "slack",
        "twitch",
        "zoom",
        "meta",
        "standard_webhooks",
        "pagerduty",
        "intercom",
        "linear",
        "mailgun",
    ] {
        let secret = if provider == "standard_webhooks" {
            WHSEC
        } else {
            SECRET
        };
        let mut hmac = json!({"provider": provider, "secret": [secret, secret]});
        if !matches!(provider, "shopify" | "meta" | "pagerduty" | "intercom") {
            hmac["tolerance_seconds"] = json!(60);
        }
        let mut entry = json!({"module": "log", "hmac": hmac});
        if !matches!(provider, "zoom" | "meta") {
            entry["dedup"] = json!(true);
        }
        entries.push(entry);
    }
    entries
}

/// Connection entries of every type.
fn connections() -> Vec<Value> {
    vec![
        json!({"type": "kafka", "bootstrap_servers": "127.0.0.1:9092", "acks": "all",
               "idempotence": true, "client_config": {"linger.ms": "5"},
               "namespaces": ["acme"], "target_prefix": "acme."}),
        json!({"type": "redis", "host": "127.0.0.1", "port": 6379, "db": 0, "username": "u",
               "password": "p", "tls": false}),
        json!({"type": "redis", "url": "redis://127.0.0.1:6379/0"}),
        json!({"type": "http", "base_url": "https://svc.example", "headers": {"x-key": "v"},
               "timeout_ms": 1000, "pool_size": 4, "insecure_skip_verify": false}),
    ]
}

/// Objects whose keys are data, not fields: names are free there.
const FREE_FORM: &[&str] = &["/client_config", "/headers", "/json_schema"];

/// The JSON pointer of every object in `value` that has fields (not a free-form map).
fn objects(value: &Value, at: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if !FREE_FORM.contains(&at) {
                found.push(at.to_owned());
            }
            for (key, item) in map {
                objects(item, &format!("{at}/{key}"), found);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                objects(item, &format!("{at}/{index}"), found);
            }
        }
        _ => {}
    }
}

fn with_unknown_field(entry: &Value, at: &str) -> Value {
    let mut changed = entry.clone();
    if let Some(Value::Object(map)) = changed.pointer_mut(at) {
        map.insert("zz_unknown".to_owned(), json!("x"));
    }
    changed
}

#[test]
fn every_object_of_every_entry_refuses_an_unknown_field() {
    let parse_webhook = |v: &Value| {
        parse_webhook_unguarded(
            v.to_string().as_bytes(),
            &Secrets::env_only(&no_env),
            rules(),
        )
        .map(|_| ())
    };
    let parse_connection = |v: &Value| {
        parse_connection_unguarded(v.to_string().as_bytes(), &Secrets::env_only(&no_env))
            .map(|_| ())
    };
    type Parse<'a> = &'a dyn Fn(&Value) -> Result<(), crate::config::ConfigError>;
    let parsers: [(&str, Vec<Value>, Parse<'_>); 2] = [
        ("webhook", webhooks(), &parse_webhook),
        ("connection", connections(), &parse_connection),
    ];
    let mut accepted = Vec::new();
    let mut tried = 0;
    for (kind, entries, parse) in parsers {
        for entry in entries {
            if let Err(e) = parse(&entry) {
                panic!("the {kind} corpus entry {entry} must be valid: {e}");
            }
            let mut at = Vec::new();
            objects(&entry, "", &mut at);
            for pointer in at {
                tried += 1;
                let changed = with_unknown_field(&entry, &pointer);
                match parse(&changed) {
                    Ok(()) => accepted.push(format!("{kind} {entry} at `{pointer}`")),
                    // A one-key object (`{"header": ..}` or `{"json_pointer": ..}`) says it
                    // wants a single key; every other object names the field.
                    Err(e) => assert!(
                        e.to_string().contains("zz_unknown")
                            || e.to_string().contains("single key"),
                        "{kind} at `{pointer}`: the reason names the field: {e}"
                    ),
                }
            }
        }
    }
    assert!(tried > 60, "only {tried} objects tried");
    assert!(
        accepted.is_empty(),
        "unknown fields accepted:\n{}",
        accepted.join("\n")
    );
}
