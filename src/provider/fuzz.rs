//! Structure-aware fuzzing of config entries: webhook and connection entries generated from the
//! config's own fields (every field, edge and absurd numbers, wrong types, deep nesting, huge
//! strings) plus random JSON, parsed and built exactly as the provider does, without the panic
//! guard, so that a panic is found here rather than contained in production.
//!
//! `make test` runs a modest number of cases; `make fuzz` runs many more
//! (`PROPTEST_CASES`).

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::{parse_connection_unguarded, parse_webhook_unguarded, Rules};
use crate::{
    connections::ConnectionPool,
    dispatch::Route,
    keys::{Namespace, WebhookId, WebhookKey},
};

/// The keys and the entry every generated entry is read with: a sealed value made for
/// `hmac.secret` opens there (and feeds its opened text to the checks), anywhere else it does not.
static KEYS: std::sync::LazyLock<crate::config::seal::Keyring> = std::sync::LazyLock::new(|| {
    crate::config::seal::Keyring::parse("k1=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "fuzz")
        .expect("a valid key")
});
static ENTRY: std::sync::LazyLock<crate::keys::ConfigKey> = std::sync::LazyLock::new(|| {
    crate::keys::ConfigKey::Webhook(WebhookKey::new(
        Namespace::parse("acme").expect("a valid namespace"),
        WebhookId::parse("w").expect("a valid id"),
    ))
});

fn secrets() -> crate::config::Secrets<'static> {
    crate::config::Secrets::new(&env, &KEYS, &ENTRY)
}

/// `secret` sealed for `field` of the fuzzed entry.
fn sealed(field: &str, secret: &str) -> Value {
    Value::String(
        KEYS.seal(None, &ENTRY.to_string(), field, secret)
            .expect("sealing works"),
    )
}

fn env(name: &str) -> Option<String> {
    match name {
        "SET" => Some("value-of-set".to_owned()),
        "EMPTY" => Some(String::new()),
        "HUGE" => Some("h".repeat(70_000)),
        _ => None,
    }
}

/// Numbers at and past every edge a field could have.
fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(-1)),
        Just(json!(255)),
        Just(json!(65_535)),
        Just(json!(65_536)),
        Just(json!(86_400)),
        Just(json!(120_000)),
        Just(json!(u32::MAX)),
        Just(json!(u64::from(u32::MAX) + 1)),
        Just(json!(i64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(u64::MAX)),
        Just(json!(1e300)),
        Just(json!(-0.5)),
        Just(json!(20_000_000_000u64)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        (1u64..100_000).prop_map(|n| json!(n)),
    ]
}

/// Strings: plausible, hostile and huge (no `{$VAR}`: only credentials take one).
fn text() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => "[a-z0-9_.-]{1,12}".prop_map(Value::String),
        2 => "\\PC{0,24}".prop_map(|s| Value::String(s.replace("{$", "{"))),
        1 => Just(Value::String(String::new())),
        1 => Just(Value::String("a\u{0}b\n\u{202e}".into())),
        1 => (1usize..200_000).prop_map(|n| Value::String("s".repeat(n))),
        1 => Just(Value::String("^(?:(a|a)*\\1c|.*)$".into())),
        1 => Just(Value::String("/ref".into())),
    ]
}

/// A credential: a string as above, or a `{$VAR}` reference (set, unset, empty, huge).
fn credential() -> impl Strategy<Value = Value> {
    prop_oneof![
        12 => text(),
        1 => Just(Value::String("{$SET}".into())),
        1 => prop_oneof![
            Just(Value::String("{$UNSET}".into())),
            Just(Value::String("{$EMPTY}".into())),
        ],
        1 => Just(Value::String("{$HUGE}".into())),
        1 => Just(Value::String("{$X:default}".into())),
        1 => Just(Value::String("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into())),
    ]
}

/// A value of the wrong type, or nested deeply.
fn anything() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text(),
    ];
    leaf.prop_recursive(24, 128, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Mostly `good`, sometimes anything at all. Wrong types are rare: one makes the whole entry
/// fail early, and the deep steps (compiling limits, schemas, keys) are where panics hide.
fn or_wrong(good: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
    prop_oneof![20 => good, 1 => anything()].boxed()
}

/// An object holding some of `fields` (name and value strategy each), each present with
/// probability `presence`.
fn object_with(
    presence: f64,
    fields: Vec<(&'static str, BoxedStrategy<Value>)>,
) -> BoxedStrategy<Value> {
    let picks: Vec<BoxedStrategy<Option<(&'static str, Value)>>> = fields
        .into_iter()
        .map(|(name, value)| {
            proptest::option::weighted(presence, value.prop_map(move |v| (name, v))).boxed()
        })
        .collect();
    picks
        .prop_map(|chosen| {
            Value::Object(
                chosen
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect::<Map<_, _>>(),
            )
        })
        .boxed()
}

/// An object holding most of `fields` (a missing required field refuses the entry early).
fn object(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    object_with(0.85, fields)
}

fn one_of(words: &'static [&'static str]) -> BoxedStrategy<Value> {
    proptest::sample::select(words)
        .prop_map(|w| Value::String(w.to_owned()))
        .boxed()
}

fn secret() -> BoxedStrategy<Value> {
    or_wrong(credential())
}

/// `hmac.secret`: one secret or a rotation list, or a sealed value (that opens, with a secret
/// of any length, or not).
fn secret_or_list() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => credential(),
        1 => prop_oneof![
            4 => Just(sealed("hmac.secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
            1 => Just(sealed("hmac.secret", &"h".repeat(40_000))),
            1 => "[A-Za-z0-9+/=:]{0,80}".prop_map(|s| Value::String(format!("sealed:v1:k1:{s}"))),
        ],
        1 => proptest::collection::vec(credential(), 0..7).prop_map(Value::Array),
    ]
    .boxed()
}

/// A `module-config` for `module`: its required field always, its others now and then (so
/// that most get past serde).
fn module_config(module: &str) -> BoxedStrategy<Value> {
    let bool_value = || or_wrong(any::<bool>().prop_map(Value::Bool));
    let names = || or_wrong(proptest::collection::vec(text(), 0..25).prop_map(Value::Array));
    let (required, optional): (
        Option<&'static str>,
        Vec<(&'static str, BoxedStrategy<Value>)>,
    ) = match module {
        "log" => (
            None,
            vec![
                ("pretty_print", bool_value()),
                ("headers", names()),
                ("max_body_bytes", or_wrong(number())),
            ],
        ),
        "kafka" => (
            Some("topic"),
            vec![
                ("partition", or_wrong(number())),
                (
                    "key",
                    or_wrong(prop_oneof![
                        text().prop_map(|t| json!({"header": t})),
                        text().prop_map(|t| json!({"json_pointer": t})),
                    ]),
                ),
                ("forward_headers", names()),
            ],
        ),
        "redis_publish" => (Some("channel"), vec![]),
        "redis_stream" => (Some("stream"), vec![("maxlen", or_wrong(number()))]),
        _ => (
            Some("key"),
            vec![
                ("direction", or_wrong(one_of(&["lpush", "rpush"]))),
                ("max_length", or_wrong(number())),
            ],
        ),
    };
    // The target: a name, or now and then a mapping (light mapping) of any shape.
    let source = prop_oneof![
        or_wrong(text()).prop_map(|t| ("from_header", t)),
        or_wrong(one_of(&["/type", "", "a", "/~2"])).prop_map(|p| ("from_json_pointer", p)),
    ];
    let allowed = prop_oneof![
        8 => proptest::collection::vec(text(), 1..4),
        1 => proptest::collection::vec(text(), 60..70),
    ]
    .prop_map(Value::Array);
    let mapping = (
        source,
        object_with(
            0.3,
            vec![("prefix", or_wrong(text())), ("default", or_wrong(text()))],
        ),
        or_wrong(allowed),
    )
        .prop_map(|((field, source), mut mapping, allowed)| {
            if let Value::Object(map) = &mut mapping {
                map.insert(field.to_owned(), source);
                map.insert("allowed".to_owned(), allowed);
            }
            mapping
        });
    let target = prop_oneof![10 => or_wrong(text()), 1 => mapping];
    (object_with(0.3, optional), target)
        .prop_map(move |(config, value)| {
            let mut config = config;
            if let (Some(name), Value::Object(map)) = (required, &mut config) {
                map.insert(name.to_owned(), value);
            }
            config
        })
        .boxed()
}

/// A destination: `module`, `module-config` and `connection` of matching (or mismatched) shape.
fn destination() -> BoxedStrategy<Value> {
    let module = prop_oneof![
        12 => one_of(&["log", "kafka", "redis_publish", "redis_stream", "redis_list"]),
        1 => one_of(&["redis_rq", "kafak"]),
    ];
    let connection =
        prop_oneof![8 => one_of(&["k", "r"]), 1 => one_of(&["bad name", "x", "q", "c"])];
    let config = module.prop_flat_map(|module| {
        let name = module.as_str().unwrap_or_default().to_owned();
        (
            Just(module),
            proptest::option::weighted(0.95, module_config(&name)),
        )
    });
    (config, proptest::option::weighted(0.9, connection))
        .prop_map(|((module, config), connection)| {
            let mut entry = Map::new();
            entry.insert("module".into(), module);
            if let Some(config) = config {
                entry.insert("module-config".into(), config);
            }
            if let Some(connection) = connection {
                entry.insert("connection".into(), connection);
            }
            Value::Object(entry)
        })
        .boxed()
}

/// A webhook entry built from every field the config knows.
fn webhook() -> BoxedStrategy<Value> {
    let fields =
        vec![
        ("data_type", or_wrong(one_of(&["json", "blob", "form"]))),
        ("timeout_ms", or_wrong(number())),
        ("authorization", or_wrong(credential())),
        (
            "header_auth",
            or_wrong(object(vec![
                ("header_name", or_wrong(text())),
                ("api_key", secret()),
                (
                    "case_sensitive",
                    or_wrong(any::<bool>().prop_map(Value::Bool)),
                ),
            ])),
        ),
        (
            "query_auth",
            or_wrong(object(vec![
                ("parameter_name", or_wrong(text())),
                ("api_key", secret()),
            ])),
        ),
        (
            "basic_auth",
            or_wrong(object(vec![("username", secret()), ("password", secret())])),
        ),
        (
            "hmac",
            or_wrong(object(vec![
                (
                    "provider",
                    or_wrong(one_of(&[
                        "github",
                        "stripe",
                        "shopify",
                        "slack",
                        "standard_webhooks",
                        "twitch",
                        "zoom",
                        "meta",
                        "twilio",
                        "pagerduty",
                        "intercom",
                        "trello",
                        "asana",
                        "linear",
                        "mailgun",
                        "gitlab",
                    ])),
                ),
                ("secret", secret_or_list()),
                ("header", or_wrong(text())),
                ("algorithm", or_wrong(one_of(&["sha256", "sha1", "sha512"]))),
                ("encoding", or_wrong(one_of(&["hex", "base64"]))),
                ("tolerance_seconds", or_wrong(number())),
                ("url", or_wrong(text())),
            ])),
        ),
        (
            "jwt",
            or_wrong(object(vec![
                ("secret", secret()),
                ("public_key", secret()),
                (
                    "algorithm",
                    or_wrong(one_of(&["HS256", "RS256", "ES256", "EdDSA", "none"])),
                ),
                ("issuer", or_wrong(text())),
                ("audience", or_wrong(text())),
                ("verify_exp", or_wrong(any::<bool>().prop_map(Value::Bool))),
                ("leeway_seconds", or_wrong(number())),
            ])),
        ),
        (
            "ip_whitelist",
            or_wrong(
                proptest::collection::vec(
                    prop_oneof![
                        one_of(&[
                            "10.0.0.0/8",
                            "::1",
                            "0.0.0.0/0",
                            "1.2.3.4/33",
                            "fe80::/200",
                            "x"
                        ]),
                        text(),
                    ],
                    0..5,
                )
                .prop_map(Value::Array),
            ),
        ),
        (
            "rate_limit",
            or_wrong(object(vec![
                ("max_requests", or_wrong(number())),
                ("window_seconds", or_wrong(number())),
            ])),
        ),
        (
            "json_schema",
            or_wrong(prop_oneof![
                text().prop_map(|p| json!({"type": "object", "properties": {"a": {"pattern": p}}})),
                text().prop_map(|p| json!({"patternProperties": {p.as_str().unwrap_or("x"): {}}})),
                number().prop_map(|n| json!({"maxLength": n, "minItems": n, "multipleOf": n})),
                anything(),
            ]),
        ),
        ("max_body_bytes", or_wrong(number())),
        (
            "credential_cleanup",
            or_wrong(object(vec![
                ("enabled", or_wrong(any::<bool>().prop_map(Value::Bool))),
                ("mode", or_wrong(one_of(&["mask", "remove"]))),
                (
                    "fields",
                    or_wrong(proptest::collection::vec(text(), 0..4).prop_map(Value::Array)),
                ),
            ])),
        ),
        (
            "handshake",
            or_wrong(prop_oneof![
                // Each provider with its own fields, and any fields with any provider.
                2 => prop_oneof![
                    secret().prop_map(|s| json!({"provider": "meta", "verify_token": s})),
                    secret().prop_map(|s| json!({"provider": "x", "consumer_secret": s})),
                    Just(json!({"provider": "msgraph"})),
                    secret().prop_map(|s| json!({"provider": "msgraph", "client_state": s})),
                    Just(json!({"provider": "okta"})),
                    Just(json!({"provider": "dropbox"})),
                    Just(json!({"provider": "asana"})),
                    text().prop_map(|t| json!({"provider": "websub", "topic": t})),
                    secret().prop_map(|s| json!({"provider": "strava", "verify_token": s})),
                ],
                1 => object(vec![
                    (
                        "provider",
                        or_wrong(one_of(&[
                            "meta", "x", "msgraph", "okta", "dropbox", "websub", "strava",
                            "asana", "zoom"
                        ])),
                    ),
                    ("verify_token", secret()),
                    ("topic", or_wrong(text())),
                    ("consumer_secret", secret()),
                    ("client_state", secret()),
                ]),
            ]
            .boxed()),
        ),
        (
            "dedup",
            or_wrong(prop_oneof![
                any::<bool>().prop_map(Value::Bool),
                object(vec![
                    (
                        "key",
                        or_wrong(prop_oneof![
                            text().prop_map(|t| json!({"header": t})),
                            text().prop_map(|t| json!({"json_pointer": t})),
                        ])
                    ),
                    ("ttl_seconds", or_wrong(number())),
                    (
                        "store",
                        or_wrong(text().prop_map(|t| json!({"connection": t})))
                    ),
                ]),
            ]),
        ),
        ("spool", or_wrong(one_of(&["on_failure", "always", "off"]))),
        (
            "retry",
            or_wrong(object(vec![
                ("max_age_seconds", or_wrong(number())),
                ("max_attempts", or_wrong(number())),
            ])),
        ),
    ];
    let execution = or_wrong(one_of(&["parallel", "sequential"]));
    let shape = prop_oneof![
        3 => destination(),
        1 => (
            prop_oneof![4 => proptest::collection::vec(destination(), 0..5),
                        1 => proptest::collection::vec(destination(), 15..19)],
            proptest::option::of(execution),
        )
            .prop_map(|(chain, execution)| match execution {
                Some(execution) => json!({"chain": chain, "chain-config": {"execution": execution}}),
                None => json!({"chain": chain}),
            }),
    ];
    // A few top-level fields per entry, so that most entries get past serde to the checks.
    (shape, object_with(0.1, fields))
        .prop_map(|(shape, rest)| {
            let (Value::Object(mut entry), Value::Object(rest)) = (shape, rest) else {
                return Value::Null;
            };
            entry.extend(rest);
            Value::Object(entry)
        })
        .boxed()
}

/// A connection entry built from every field the config knows.
fn connection() -> BoxedStrategy<Value> {
    object(vec![
        (
            "type",
            or_wrong(one_of(&["kafka", "redis", "redis-rq", "http", "connect"])),
        ),
        ("bootstrap_servers", or_wrong(credential())),
        // `connect` (a channel).
        (
            "token_sha256",
            or_wrong(
                proptest::collection::vec(
                    prop_oneof![
                        Just(Value::String("ab".repeat(32))),
                        Just(Value::String("AB".repeat(32))),
                        text()
                    ],
                    0..18,
                )
                .prop_map(Value::Array),
            ),
        ),
        ("retention_seconds", or_wrong(number())),
        ("max_bytes", or_wrong(number())),
        (
            "store",
            or_wrong(prop_oneof![
                one_of(&["r", "k", "bad name", ""]).prop_map(|c| json!({"connection": c})),
                text().prop_map(|t| json!({"connection": t, "extra": 1})),
            ]),
        ),
        (
            "client_config",
            or_wrong(
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("linger.ms".to_owned()),
                        Just("security.protocol".to_owned()),
                        Just("sasl.password".to_owned()),
                        Just("queue.buffering.max.kbytes".to_owned()),
                        "[a-z.]{1,20}",
                    ],
                    prop_oneof![text(), number(), any::<bool>().prop_map(Value::Bool)],
                    0..4,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ),
        ),
        (
            "acks",
            or_wrong(prop_oneof![
                one_of(&["all", "1", "0", "-1", "some"]),
                number()
            ]),
        ),
        ("idempotence", or_wrong(any::<bool>().prop_map(Value::Bool))),
        ("host", or_wrong(credential())),
        ("port", or_wrong(prop_oneof![number(), text()])),
        ("db", or_wrong(number())),
        ("username", or_wrong(credential())),
        ("password", or_wrong(credential())),
        ("tls", or_wrong(any::<bool>().prop_map(Value::Bool))),
        (
            "url",
            or_wrong(prop_oneof![
                one_of(&[
                    "redis://h:1/0",
                    "rediss://u:p@h/99999999999",
                    "unix:///x",
                    "http://x"
                ]),
                text(),
            ]),
        ),
        (
            "namespaces",
            or_wrong(proptest::collection::vec(text(), 0..4).prop_map(Value::Array)),
        ),
        (
            "target_prefix",
            or_wrong(prop_oneof![one_of(&["{namespace}-", ""]), text()]),
        ),
    ])
}

fn rules() -> Rules {
    Rules {
        max_body_bytes_ceiling: 1 << 20,
        max_chain_length: 16,
    }
}

/// Parses and builds a webhook entry as the provider does (the pool holds one connection of
/// each type, so destinations find what they name).
fn parse_and_build(bytes: &[u8]) {
    let pool = ConnectionPool::new(tokio_util::task::TaskTracker::new());
    for (name, entry) in [
        (
            "k",
            json!({"type": "kafka", "bootstrap_servers": "127.0.0.1:1"}),
        ),
        (
            "r",
            json!({"type": "redis", "host": "127.0.0.1", "port": 1, "target_prefix": "{namespace}-"}),
        ),
        // A channel kept in `q`: destinations naming `q` are refused.
        (
            "q",
            json!({"type": "redis", "host": "127.0.0.1", "port": 1}),
        ),
        (
            "c",
            json!({"type": "connect", "token_sha256": ["ab".repeat(32)], "store": {"connection": "q"}}),
        ),
    ] {
        let connection =
            parse_connection_unguarded(entry.to_string().as_bytes(), &secrets()).unwrap();
        pool.upsert(
            crate::keys::ConnectionName::parse(name).unwrap(),
            std::sync::Arc::new(connection),
        );
    }
    if let Ok(webhook) = parse_webhook_unguarded(bytes, &secrets(), rules()) {
        let key = WebhookKey::new(
            Namespace::parse("acme").unwrap(),
            WebhookId::parse("w").unwrap(),
        );
        let _ = super::fits_connections(
            &webhook,
            "acme",
            |name| pool.config(name),
            |name| pool.keeps_channels(name),
        );
        let _ = Route::build(key, webhook, &pool);
    }
    let _ = parse_connection_unguarded(bytes, &secrets());
}

#[test]
fn most_generated_entries_get_past_serde_to_the_checks() {
    use proptest::strategy::ValueTree as _;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = webhook();
    let total = 500;
    let valid = (0..total)
        .filter(|_| {
            let entry = strategy.new_tree(&mut runner).unwrap().current();
            parse_webhook_unguarded(entry.to_string().as_bytes(), &secrets(), rules()).is_ok()
        })
        .count();
    // Invalid entries test the refusals; valid ones reach every compile step. About one in six
    // is valid; the bound leaves room for the random stream to shift when a field is added.
    assert!(
        valid * 8 >= total,
        "only {valid} of {total} generated entries are valid"
    );
}

proptest! {
    #[test]
    fn generated_webhook_entries_never_panic(entry in webhook()) {
        parse_and_build(entry.to_string().as_bytes());
    }

    #[test]
    fn generated_connection_entries_never_panic(entry in connection()) {
        parse_and_build(entry.to_string().as_bytes());
    }

    #[test]
    fn random_json_never_panics(entry in anything()) {
        parse_and_build(entry.to_string().as_bytes());
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        parse_and_build(&bytes);
    }
}

#[test]
fn the_entry_that_once_panicked_the_provider_is_refused() {
    let err = parse_webhook_unguarded(
        br#"{"module":"log","rate_limit":{"max_requests":1,"window_seconds":20000000000}}"#,
        &secrets(),
        rules(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("window_seconds"), "{err}");
}

#[test]
fn a_panic_while_building_one_entry_makes_that_entry_invalid() {
    let refused: Result<(), _> =
        crate::config::contained(|| panic!("a library met a value nobody bounded"));
    assert!(matches!(refused, Err(crate::config::ConfigError::Internal)));
    assert!(refused
        .unwrap_err()
        .to_string()
        .contains("internal error while building"));
}
