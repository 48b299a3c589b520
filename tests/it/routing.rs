//! Route by content: a webhook's `filter` through the real binary, delivering to a real Redis.
//! Requests that do not match are answered `filtered` after every check and never reach a
//! destination; invalid rules make the entry invalid, naming their path.

use serde_json::{json, Value};

use crate::{
    support::{
        files::write_json, get_json, get_text, hmac_sha256, process::Router, wait_until, Redis,
    },
    unique,
};

/// A ready router on the file backend with `webhooks` and the connection `r` to `redis`; its
/// files' folder, to change them live.
async fn redis_router(redis: &Redis, webhooks: &Value) -> (tempfile::TempDir, Router) {
    let dir = tempfile::tempdir().unwrap();
    let connection: Value = serde_json::from_str(&redis.connection()).unwrap();
    write_json(dir.path(), "connections.json", &json!({"r": connection}));
    write_json(dir.path(), "webhooks.json", webhooks);
    let router = Router::start(dir.path(), &[]);
    router.wait_ready().await;
    (dir, router)
}

/// GitHub pushes to `main` only: the README's first worked example.
#[tokio::test]
async fn a_filter_delivers_only_what_matches_and_answers_the_rest_filtered() {
    let redis = Redis::start().await;
    let stream = unique!("pushes");
    let (dir, router) = redis_router(
        &redis,
        &json!({"gh": {
            "module": "redis_stream", "connection": "r", "module-config": {"stream": stream},
            "hmac": {"provider": "github", "secret": "s3cret"}, "dedup": true,
            "filter": {"all": [
                {"header": "X-GitHub-Event", "eq": "push"},
                {"json_pointer": "/ref", "eq": "refs/heads/main"},
            ]},
        }}),
    )
    .await;
    let client = reqwest::Client::new();
    let post = |event: &str, body: &str, delivery: &str| {
        let signature = hex::encode(hmac_sha256(b"s3cret", &[body.as_bytes()]));
        client
            .post(router.url("/webhook/gh"))
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", format!("sha256={signature}"))
            .body(body.to_owned())
            .send()
    };
    let main = r#"{"ref":"refs/heads/main","after":"abc"}"#;
    let dev = r#"{"ref":"refs/heads/dev","after":"def"}"#;
    let mut answers = Vec::new();
    for (event, body, delivery) in [
        ("push", main, "d-1"),
        ("push", dev, "d-2"),
        ("release", main, "d-3"),
        ("push", main, "d-1"),
    ] {
        let response = post(event, body, delivery).await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let answer: Value = response.json().await.unwrap();
        answers.push(answer["status"].clone());
    }
    // The filter runs after dedup: a copy of a delivered request is a duplicate.
    assert_eq!(answers, ["accepted", "filtered", "filtered", "duplicate"]);
    assert_eq!(redis.stream_payloads(&stream).await, vec![main.to_owned()]);
    // A request that fails a check is refused, not filtered.
    let unsigned = client
        .post(router.url("/webhook/gh"))
        .header("x-github-event", "push")
        .body(dev)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), reqwest::StatusCode::UNAUTHORIZED);
    let metrics = get_text(&router.base(), "/metrics").await;
    assert!(
        metrics
            .contains(r#"switchyard_requests_filtered_total{namespace="default",webhook="gh"} 2"#),
        "{metrics}"
    );

    // A live change of the rule applies; an invalid one is skipped with its path named and
    // the last good rule keeps serving.
    let with_filter = |filter: Value| {
        let entry = json!({"gh": {
            "module": "redis_stream", "connection": "r", "module-config": {"stream": stream},
            "hmac": {"provider": "github", "secret": "s3cret"}, "filter": filter,
        }});
        write_json(dir.path(), "webhooks.json", &entry);
    };
    with_filter(json!({"json_pointer": "/ref", "prefix": "refs/heads/"}));
    wait_until(
        std::time::Duration::from_secs(10),
        "the new rule applied",
        || async {
            let answer: Value = post("push", dev, "d-9")
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer["status"] == "accepted"
        },
    )
    .await;
    with_filter(json!({"any": [{"json_pointer": "/ref", "regex": "(unclosed"}]}));
    wait_until(
        std::time::Duration::from_secs(10),
        "the invalid rule reported",
        || async {
            get_json(&router.base(), "/status")
                .await
                .to_string()
                .contains("filter.any[0].regex")
        },
    )
    .await;
    let answer: Value = post("push", dev, "d-10")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["status"], "accepted");
}

/// Per-destination `when` in a chain, sequential and parallel (the latter through the spool:
/// a stored request goes only to the destinations chosen at intake). Stripe `invoice.*` to one
/// stream and the rest to another; Slack events by `event.type`, with a destination that takes
/// everything.
#[tokio::test]
async fn chain_destinations_take_only_what_their_when_matches() {
    let redis = Redis::start().await;
    let [invoices, rest, messages, reactions, everything] =
        ["invoices", "rest", "messages", "reactions", "everything"].map(|s| unique!(s));
    let stream = |name: &str, when: Option<Value>| {
        let mut element = json!({"module": "redis_stream", "connection": "r",
                                 "module-config": {"stream": name}});
        if let Some(when) = when {
            element["when"] = when;
        }
        element
    };
    let invoice = json!({"json_pointer": "/type", "prefix": "invoice."});
    let (_dir, router) = redis_router(
        &redis,
        &json!({
            "stripe": {"chain": [stream(&invoices, Some(invoice.clone())),
                                 stream(&rest, Some(json!({"not": invoice})))]},
            "slack": {"spool": "always", "chain-config": {"execution": "parallel"}, "chain": [
                stream(&messages, Some(json!({"json_pointer": "/event/type", "eq": "message"}))),
                stream(&reactions, Some(json!({"json_pointer": "/event/type",
                                               "in": ["reaction_added", "reaction_removed"]}))),
                stream(&everything, None)]},
            "picky": {"chain": [
                stream(&messages, Some(json!({"header": "X-Kind", "eq": "a"}))),
                stream(&reactions, Some(json!({"header": "X-Kind", "eq": "b"})))]},
        }),
    )
    .await;
    let client = reqwest::Client::new();
    let post = |webhook: &str, body: Value| {
        client
            .post(router.url(&format!("/webhook/{webhook}")))
            .body(body.to_string())
            .send()
    };
    let status = |response: reqwest::Response| async move {
        response.json::<Value>().await.unwrap()["status"].clone()
    };
    let paid = json!({"id": "evt_1", "type": "invoice.paid"});
    let charge = json!({"id": "evt_2", "type": "charge.succeeded"});
    assert_eq!(
        status(post("stripe", paid.clone()).await.unwrap()).await,
        "accepted"
    );
    assert_eq!(
        status(post("stripe", charge.clone()).await.unwrap()).await,
        "accepted"
    );
    assert_eq!(
        redis.stream_payloads(&invoices).await,
        vec![paid.to_string()]
    );
    assert_eq!(redis.stream_payloads(&rest).await, vec![charge.to_string()]);

    let message = json!({"type": "event_callback", "event": {"type": "message"}});
    let mention = json!({"type": "event_callback", "event": {"type": "app_mention"}});
    for body in [&message, &mention] {
        assert_eq!(
            status(post("slack", body.clone()).await.unwrap()).await,
            "stored"
        );
    }
    wait_until(
        std::time::Duration::from_secs(10),
        "the stored requests forwarded to `everything` and `messages`",
        || async {
            redis.stream_payloads(&everything).await.len() == 2
                && redis.stream_payloads(&messages).await.len() == 1
        },
    )
    .await;
    assert_eq!(
        redis.stream_payloads(&messages).await,
        vec![message.to_string()]
    );
    assert!(redis.stream_payloads(&reactions).await.is_empty());

    // No destination matches: answered like a filtered request.
    let kind = |k: &str| {
        client
            .post(router.url("/webhook/picky"))
            .header("x-kind", k.to_owned())
            .body("{}")
            .send()
    };
    assert_eq!(status(kind("c").await.unwrap()).await, "filtered");
    assert_eq!(status(kind("b").await.unwrap()).await, "accepted");
    assert_eq!(
        redis.stream_payloads(&reactions).await,
        vec!["{}".to_owned()]
    );
    assert_eq!(redis.stream_payloads(&messages).await.len(), 1);
}

/// Every operator and combinator through the HTTP stack: each rule is a webhook's `filter`, and
/// the request is answered `accepted` when it matches, `filtered` when not (the unit tests cover
/// each operator's edge cases).
#[actix_web::test]
async fn each_operator_and_combinator_decides_through_the_http_stack() {
    use crate::support::inproc::{call_text, one_webhook, post_bytes};
    let body = r#"{"ref":"refs/heads/main","n":5,"tags":["a","b"],"event":{"type":"message"}}"#;
    let push = json!({"header": "X-GitHub-Event", "eq": "push"});
    let main = json!({"json_pointer": "/ref", "eq": "refs/heads/main"});
    for (filter, accepted) in [
        (push.clone(), true),
        (json!({"header": "X-GitHub-Event", "ne": "push"}), false),
        (
            json!({"header": "X-GitHub-Event", "in": ["release", "push"]}),
            true,
        ),
        (json!({"header": "X-Other", "exists": true}), false),
        (json!({"query": "source", "eq": "ci"}), true),
        (json!({"query": "source", "prefix": "c"}), true),
        (json!({"json_pointer": "/ref", "suffix": "/main"}), true),
        (
            json!({"json_pointer": "/event/type", "contains": "ess"}),
            true,
        ),
        (
            json!({"json_pointer": "/ref", "regex": "^refs/tags/"}),
            false,
        ),
        (json!({"json_pointer": "/n", "gt": 5}), false),
        (json!({"json_pointer": "/n", "gte": 5}), true),
        (json!({"json_pointer": "/n", "lt": 10}), true),
        (json!({"json_pointer": "/n", "lte": 4.5}), false),
        (json!({"json_pointer": "/tags/1", "eq": "b"}), true),
        (json!({"all": [push.clone(), main.clone()]}), true),
        (json!({"all": [push.clone(), {"not": main.clone()}]}), false),
        (json!({"any": [{"not": push.clone()}, main.clone()]}), true),
        (json!({"not": {"any": [push, main]}}), false),
    ] {
        let (h, module) = one_webhook(json!({"module": "log", "filter": filter}));
        let request =
            post_bytes("/webhook/a/w?source=ci", body).insert_header(("x-github-event", "push"));
        let (status, _, text) = call_text(&h, request).await;
        assert_eq!(status, actix_web::http::StatusCode::OK, "{filter}: {text}");
        let word = serde_json::from_str::<Value>(&text).unwrap()["status"].clone();
        let expected = if accepted { "accepted" } else { "filtered" };
        assert_eq!(word, expected, "{filter}");
        assert_eq!(module.taken().len(), usize::from(accepted), "{filter}");
    }
    // A form body is read by field.
    let (h, module) = one_webhook(json!({"module": "log", "data_type": "form",
        "filter": {"form": "command", "eq": "/deploy"}}));
    for (form, expected) in [
        ("command=%2Fdeploy&text=x", "accepted"),
        ("command=%2Fhelp", "filtered"),
    ] {
        let (_, _, text) = call_text(&h, post_bytes("/webhook/a/w", form)).await;
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap()["status"],
            expected
        );
    }
    assert_eq!(module.taken().len(), 1);
}

/// Conditions read the body as it is delivered: after `credential_cleanup`, and after a
/// `schema` (the paths where the strict check cannot keep what the pointers name, so the
/// delivered body is read again).
#[actix_web::test]
async fn conditions_read_the_body_as_delivered() {
    use crate::support::inproc::{call_text, one_webhook, post_bytes};
    let body = r#"{"kind":"a","token":"secret","n":[1,2]}"#;
    for (extra, filter, expected) in [
        (
            json!({"credential_cleanup": {"fields": ["token"]}}),
            json!({"json_pointer": "/token", "eq": "***"}),
            "accepted",
        ),
        (
            json!({"credential_cleanup": {"fields": ["token"]}}),
            json!({"json_pointer": "/token", "eq": "secret"}),
            "filtered",
        ),
        (
            json!({"credential_cleanup": {"fields": ["token"], "mode": "remove"}}),
            json!({"json_pointer": "/token", "exists": false}),
            "accepted",
        ),
        (
            json!({"json_schema": {"type": "object", "required": ["kind"]}}),
            json!({"all": [{"json_pointer": "/kind", "eq": "a"}, {"json_pointer": "/n/1", "eq": 2}]}),
            "accepted",
        ),
        (
            json!({}),
            json!({"all": [{"json_pointer": "/kind", "eq": "a"}, {"json_pointer": "/n/1", "eq": 2},
                           {"json_pointer": "/n/2", "exists": false}]}),
            "accepted",
        ),
    ] {
        let mut entry = json!({"module": "log", "filter": filter});
        for (k, v) in extra.as_object().unwrap() {
            entry[k] = v.clone();
        }
        let (h, module) = one_webhook(entry.clone());
        let (_, _, text) = call_text(&h, post_bytes("/webhook/a/w", body)).await;
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["status"], expected, "{entry}: {text}");
        assert_eq!(
            module.taken().len(),
            usize::from(expected == "accepted"),
            "{entry}"
        );
    }
}

/// A rule changed in etcd applies within the watch's latency, like any change of the entry.
#[tokio::test]
async fn a_rule_changed_in_etcd_applies_live() {
    use crate::support::Etcd;
    let etcd = Etcd::start().await;
    let prefix = format!("/{}/", unique!("cwm"));
    let key = format!("{prefix}acme/webhooks/gh");
    let entry = |event: &str| {
        json!({"module": "log", "filter": {"header": "X-GitHub-Event", "eq": event}}).to_string()
    };
    etcd.put(&key, &entry("release")).await;
    let dir = tempfile::tempdir().unwrap();
    let router = Router::on_etcd(dir.path(), &etcd, &prefix, &[]);
    router.wait_ready().await;
    let client = reqwest::Client::new();
    let push = || async {
        let response = client
            .post(router.url("/webhook/acme/gh"))
            .header("x-github-event", "push")
            .body("{}")
            .send()
            .await
            .unwrap();
        response.json::<Value>().await.unwrap()["status"].clone()
    };
    assert_eq!(push().await, "filtered");
    let changed = std::time::Instant::now();
    etcd.put(&key, &entry("push")).await;
    wait_until(
        std::time::Duration::from_secs(5),
        "the new rule applied",
        || async { push().await == "accepted" },
    )
    .await;
    eprintln!("rule applied {:?} after the etcd put", changed.elapsed());
}

/// Light mapping: a Kafka topic taken from `X-GitHub-Event` and a Redis stream from Slack's
/// `/event/type`, each only within its allow-list (real tansu and Redis). Outside the list a
/// request goes to the `default`, or, without one, is filtered; a list naming a target outside
/// the connection's `target_prefix` makes the entry invalid.
#[tokio::test]
async fn mapped_targets_fan_out_only_within_the_allow_list() {
    use crate::support::kafka::Kafka;
    let (kafka, redis) = tokio::join!(Kafka::start(), Redis::start());
    let gh = format!("{}-", unique!("gh"));
    let [push, release] = ["push", "release"].map(|e| format!("{gh}{e}"));
    for topic in [&push, &release] {
        kafka.create_topic(topic, 1).await;
    }
    let slack = format!("{}-", unique!("slack"));
    let [messages, other] = ["message", "other"].map(|s| format!("{slack}{s}"));
    let dir = tempfile::tempdir().unwrap();
    let mut kafka_connection: Value = serde_json::from_str(&kafka.connection()).unwrap();
    kafka_connection["target_prefix"] = json!("gh-");
    let redis_connection: Value = serde_json::from_str(&redis.connection()).unwrap();
    write_json(
        dir.path(),
        "connections.json",
        &json!({"k": kafka_connection, "r": redis_connection}),
    );
    write_json(
        dir.path(),
        "webhooks.json",
        &json!({
            "gh": {"module": "kafka", "connection": "k", "module-config": {
                "topic": {"from_header": "X-GitHub-Event", "prefix": gh,
                          "allowed": [push, release]}}},
            "slack": {"spool": "always", "module": "redis_stream", "connection": "r",
                "module-config": {"stream": {"from_json_pointer": "/event/type", "prefix": slack,
                                             "allowed": [messages], "default": other}}},
            "sneaky": {"module": "kafka", "connection": "k", "module-config": {
                "topic": {"from_header": "X-GitHub-Event",
                          "allowed": ["gh-push", "payments"]}}},
        }),
    );
    let router = Router::start(dir.path(), &[]);
    router.wait_ready().await;
    let client = reqwest::Client::new();
    let github = |event: Option<&str>, body: &str| {
        let mut request = client.post(router.url("/webhook/gh")).body(body.to_owned());
        if let Some(event) = event {
            request = request.header("x-github-event", event.to_owned());
        }
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), reqwest::StatusCode::OK);
            response.json::<Value>().await.unwrap()["status"].clone()
        }
    };
    assert_eq!(github(Some("push"), r#"{"n":1}"#).await, "accepted");
    assert_eq!(github(Some("release"), r#"{"n":2}"#).await, "accepted");
    for outside in [Some("issues"), Some(push.as_str()), Some("../push"), None] {
        assert_eq!(
            github(outside, r#"{"n":3}"#).await,
            "filtered",
            "{outside:?}"
        );
    }
    let values = |records: Vec<crate::support::kafka::Record>| -> Vec<String> {
        records
            .into_iter()
            .map(|r| String::from_utf8(r.value).unwrap())
            .collect()
    };
    assert_eq!(values(kafka.consume(&push, 1, 1).await), [r#"{"n":1}"#]);
    assert_eq!(values(kafka.consume(&release, 1, 1).await), [r#"{"n":2}"#]);

    // Through the spool: each stored request is forwarded to the stream chosen at intake.
    let event = |t: &str| json!({"type": "event_callback", "event": {"type": t}});
    for t in ["message", "app_mention", "message"] {
        let response = client
            .post(router.url("/webhook/slack"))
            .body(event(t).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.json::<Value>().await.unwrap()["status"], "stored");
    }
    wait_until(
        std::time::Duration::from_secs(10),
        "the stored requests forwarded to their streams",
        || async {
            redis.stream_payloads(&messages).await.len() == 2
                && redis.stream_payloads(&other).await.len() == 1
        },
    )
    .await;
    assert_eq!(
        redis.stream_payloads(&other).await,
        [event("app_mention").to_string()]
    );

    // A tenant's list naming a topic outside its connection's `target_prefix` is refused.
    let status = get_json(&router.base(), "/status").await.to_string();
    assert!(
        status.contains("sneaky") && status.contains("payments"),
        "{status}"
    );
    let refused = client
        .post(router.url("/webhook/sneaky"))
        .header("x-github-event", "payments")
        .body("{}")
        .send()
        .await
        .unwrap();
    // An invalid entry is answered 503 (the sender retries while the operator fixes it).
    assert_eq!(refused.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.text().await.unwrap().contains("webhook_invalid"));
}

/// A stored request keeps the decision made at intake: a rule changed while it waits in the
/// spool does not re-route it.
#[tokio::test]
async fn a_rule_change_does_not_reroute_stored_requests() {
    let mut redis = Redis::start().await;
    let [first, second] = ["first", "second"].map(|s| unique!(s));
    // `X-Kind: <to_first>` goes to `first`, the rest to `second`; `stop-<to_first>` is
    // filtered (what shows that a new rule applies).
    let entry = |to_first: &str| {
        let when = json!({"header": "X-Kind", "eq": to_first});
        json!({"routed": {"spool": "always",
            "filter": {"header": "X-Kind", "ne": format!("stop-{to_first}")},
            "chain": [
                {"module": "redis_stream", "connection": "r", "module-config": {"stream": first},
                 "when": when},
                {"module": "redis_stream", "connection": "r", "module-config": {"stream": second},
                 "when": {"not": when}},
        ]}})
    };
    let (dir, router) = redis_router(&redis, &entry("a")).await;
    redis.stop();
    let client = reqwest::Client::new();
    let post = |kind: &str| {
        let request = client
            .post(router.url("/webhook/routed"))
            .header("x-kind", kind.to_owned())
            .body(format!(r#"{{"kind":"{kind}"}}"#));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap()["status"].clone() }
    };
    for kind in ["a", "a", "b"] {
        assert_eq!(post(kind).await, "stored");
    }
    // The rule flips while the three wait for Redis.
    write_json(dir.path(), "webhooks.json", &entry("b"));
    wait_until(
        std::time::Duration::from_secs(10),
        "the flipped rule applied",
        || async { post("stop-b").await == "filtered" },
    )
    .await;
    redis.restart().await;
    wait_until(
        std::time::Duration::from_secs(20),
        "the stored requests forwarded",
        || async {
            redis.stream_payloads(&first).await.len() == 2
                && redis
                    .stream_payloads(&second)
                    .await
                    .contains(&r#"{"kind":"b"}"#.to_owned())
        },
    )
    .await;
    assert_eq!(
        redis.stream_payloads(&first).await,
        [r#"{"kind":"a"}"#, r#"{"kind":"a"}"#]
    );
}
