#!/usr/bin/env bash
# Scenario 20: webhooks into Kafka, checked by reading the topic back.
#
# What it shows, on one machine and without Docker:
#   - a POST answered 200 is already in the topic: a consumer reading the partition right after
#     the 200 finds one record per request;
#   - the record value is the request body byte for byte (spacing and key order kept);
#   - the record key comes from the payload with `"key": {"json_pointer": "/id"}`: a string id is
#     the key as is, a number is its JSON text, a body without /id gives a record without key;
#   - the record's `switchyard-request-id` header is the request id the 200 carried (what
#     consumers deduplicate on);
#   - a webhook whose topic does not exist answers, with "spool": "off", 503
#     destination_unavailable with Retry-After (the sender retries; Switchyard does not create
#     topics), and the other webhook on the same connection keeps working;
#   - with the spool on (the default), a request for a topic that does not exist yet is answered
#     202 stored and delivered once the topic is created.
#
# It starts a throwaway tansu broker (Kafka protocol, in-memory storage) and a Switchyard (file
# backend, config files written into a temp dir) on free loopback ports, creates the topic with
# `tansu topic create`, checks each behaviour (one PASS/FAIL line per check), then stops both and
# removes its temp dir. It exits 0 only when every check passed.
#
# The topic is read with consume.py beside this script (Python standard library only, a minimal
# Fetch client), because it shows the exact bytes of keys and values (see its docstring for why
# not `tansu cat consume` or kcat).
#
# Run it from anywhere:
#   scenarios/20_kafka/run.sh
# Needs: tansu (`cargo install --locked tansu`, or `make deps`), curl, jq, python3. It uses
# ~/.cargo/bin/tansu or the tansu on PATH (or $TANSU_BIN), and target/release/switchyard (built
# with `cargo build --release` if missing) or $SWITCHYARD_BIN.
# Tunables: DEADLINE_SECONDS (default 10): how long any one wait may take.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$HERE/../lib.sh" # settings, counters and helpers shared by the scenarios
CHECK_POST_SHOWS_BODY=1 # PASS lines show each body: its /id is the record key
if [ -z "${TANSU_BIN:-}" ]; then
    if [ -x "$HOME/.cargo/bin/tansu" ]; then TANSU_BIN=$HOME/.cargo/bin/tansu; else TANSU_BIN=tansu; fi
fi
# The topics of the two webhooks in config/webhooks.json (read after the tool check below).
TOPIC=""
MISSING_TOPIC=""

# Three orders and one event without an id. Odd spacing and key order on purpose: the record
# value must be the body byte for byte. Expected keys: /id as a string, a number's JSON text,
# and none.
BODIES=(
    '{"id":"ord-1001","amount":  42.5,"currency":"EUR"}'
    '{"currency":"USD", "id":"ord-1002","amount":7}'
    '{"id":1003,"amount":1}'
    '{"type":"ping"}'
)
KEYS=('"ord-1001"' '"ord-1002"' '"1003"' 'null') # as JSON, null: no key

tansu_pid=""
STOP_AT_EXIT=(router_pid tansu_pid)
LOGS_ON_FAILURE=(switchyard.log tansu.log)

# --- helpers ------------------------------------------------------------------------------------

tansu_ready() {
    alive "$tansu_pid" &&
        python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()' "$KAFKA_PORT"
}
topics() { "$TANSU_BIN" topic list --broker "$KAFKA_URL" | jq -r '.[].name'; }
topic_exists() { topics | grep -qx "$1"; }
consume() { python3 "$HERE/consume.py" --broker "127.0.0.1:$KAFKA_PORT" --topic "$TOPIC" "$@"; }

# --- setup --------------------------------------------------------------------------------------

for tool in "$TANSU_BIN" curl jq python3; do need "$tool"; done
TOPIC=$(jq -r '.orders."module-config".topic' "$HERE/config/webhooks.json")
MISSING_TOPIC=$(jq -r '.lost."module-config".topic' "$HERE/config/webhooks.json")
LATER_TOPIC=$(jq -r '.later."module-config".topic' "$HERE/config/webhooks.json")
need_switchyard
make_work_dir scenario20

read -r KAFKA_PORT ROUTER_PORT <<<"$(free_ports 2)"
KAFKA_URL=tcp://127.0.0.1:$KAFKA_PORT
ROUTER_URL=http://127.0.0.1:$ROUTER_PORT

say "Starting tansu on $KAFKA_URL (in-memory storage)"
"$TANSU_BIN" broker --listener-url "$KAFKA_URL" --advertised-listener-url "$KAFKA_URL" \
    --storage-engine memory://tansu/ >"$work_dir/tansu.log" 2>&1 &
tansu_pid=$!
wait_for "tansu is up (TCP connect to 127.0.0.1:$KAFKA_PORT)" tansu_ready

if "$TANSU_BIN" topic create "$TOPIC" --partitions 1 --broker "$KAFKA_URL" >"$work_dir/topic.out" 2>&1 &&
    topic_exists "$TOPIC"; then
    pass "topic created: tansu topic create $TOPIC --partitions 1"
else
    fail "tansu topic create $TOPIC: $(cat "$work_dir/topic.out")"
    exit 1
fi

# One Kafka connection, two webhooks (config/webhooks.json beside this script, the same file
# docker-compose.yml mounts): `orders` into the topic, keyed by /id, and `lost` into a topic that
# does not exist. Only the connection differs from the compose setup: here it points at the
# throwaway tansu.
cat >"$work_dir/connections.json" <<EOF
{
  "events-kafka": { "type": "kafka", "bootstrap_servers": "127.0.0.1:$KAFKA_PORT", "acks": "all" }
}
EOF
cp "$HERE/config/webhooks.json" "$work_dir/webhooks.json"

# SHUTDOWN_GRACE_SECONDS=2: the record for the missing topic stays in the producer's queue
# (librdkafka keeps trying it for message.timeout.ms, 30 s), so the flush at shutdown waits the
# whole grace; 2 s keeps the scenario short.
say "Starting switchyard on $ROUTER_URL (file backend: $work_dir/webhooks.json, connections.json)"
start_switchyard WEBHOOKS_CONFIG_FILE="$work_dir/webhooks.json" CONNECTIONS_CONFIG_FILE="$work_dir/connections.json" \
    SHUTDOWN_GRACE_SECONDS=2

# --- deliveries ---------------------------------------------------------------------------------

say ""
say "kafka -> topic $TOPIC, key from /id"
request_ids=()
for body in "${BODIES[@]}"; do
    check_post "produce" /webhook/orders "$body" "200 accepted"
    request_ids+=("$request_id")
done

# Read once, right after the last 200: a 200 means the broker has acknowledged the record.
say ""
say "Reading $TOPIC partition 0 from offset 0 (consume.py)"
if consume >"$work_dir/records" 2>"$work_dir/consume.err"; then
    sed 's/^/      /' "$work_dir/records"
else
    fail "consume.py: $(cat "$work_dir/consume.err")"
fi
count=$(grep -c . "$work_dir/records" || true)
if [ "$count" -eq "${#BODIES[@]}" ]; then
    pass "the topic holds ${#BODIES[@]} records, one per 200"
else
    fail "the topic holds $count records, expected ${#BODIES[@]}"
fi

for i in "${!BODIES[@]}"; do
    record=$(sed -n "$((i + 1))p" "$work_dir/records")
    [ -n "$record" ] || { fail "record $i: missing"; continue; }
    if jq -e --arg body "${BODIES[$i]}" '.value == $body' <<<"$record" >/dev/null; then
        pass "record $i: value is the body, byte for byte"
    else
        fail "record $i: value $(jq -c .value <<<"$record"), expected ${BODIES[$i]}"
    fi
    if jq -e --argjson key "${KEYS[$i]}" '.key == $key' <<<"$record" >/dev/null; then
        pass "record $i: key is $(jq -c .key <<<"$record") (/id of the body)"
    else
        fail "record $i: key $(jq -c .key <<<"$record"), expected ${KEYS[$i]}"
    fi
    if jq -e --arg rid "${request_ids[$i]}" '.headers."switchyard-request-id" == $rid' <<<"$record" >/dev/null; then
        pass "record $i: header switchyard-request-id is the 200's request id"
    else
        fail "record $i: headers $(jq -c .headers <<<"$record"), expected switchyard-request-id ${request_ids[$i]}"
    fi
done

# --- a topic that does not exist ----------------------------------------------------------------

say ""
say "kafka -> topic $MISSING_TOPIC, which does not exist"
check_unavailable "missing topic" /webhook/lost '{"id":"x-1"}' "the webhook's timeout_ms is 2000"
if topic_exists "$TOPIC" && ! topic_exists "$MISSING_TOPIC"; then
    pass "missing topic: still not created (tansu topic list: $(topics | paste -sd, -))"
else
    fail "missing topic: tansu topic list says $(topics | paste -sd, -)"
fi

check_post "same connection still works" /webhook/orders '{"id":"ord-1004"}' "200 accepted"
last=$(consume --offset "${#BODIES[@]}" 2>/dev/null | head -n 1)
if jq -e '.value == "{\"id\":\"ord-1004\"}" and .key == "ord-1004"' <<<"$last" >/dev/null 2>&1; then
    pass "same connection still works: record ${#BODIES[@]} is {\"id\":\"ord-1004\"}, key ord-1004"
else
    fail "same connection still works: record ${#BODIES[@]} is '$last'"
fi

# --- a topic created later, with the spool ---------------------------------------------------------

say ""
say "kafka -> topic $LATER_TOPIC, created after the request (the spool keeps it meanwhile)"
LATER_BODY='{"id":"ord-2001","note":"sent before its topic existed"}'
check_post "topic created later" /webhook/later "$LATER_BODY" "202 stored"
if "$TANSU_BIN" topic create "$LATER_TOPIC" --partitions 1 --broker "$KAFKA_URL" >"$work_dir/later.out" 2>&1; then
    pass "topic created: tansu topic create $LATER_TOPIC --partitions 1"
else
    fail "tansu topic create $LATER_TOPIC: $(cat "$work_dir/later.out")"
fi
later_delivered() {
    python3 "$HERE/consume.py" --broker "127.0.0.1:$KAFKA_PORT" --topic "$LATER_TOPIC" 2>/dev/null |
        head -n 1 | jq -e --arg body "$LATER_BODY" '.value == $body' >/dev/null
}
# The spool's retries back off from 1 s.
DEADLINE_SECONDS=$((DEADLINE_SECONDS * 3)) wait_for "topic created later: the stored request is in $LATER_TOPIC, byte for byte" later_delivered

summary
