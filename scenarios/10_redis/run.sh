#!/usr/bin/env bash
# Scenario 10: webhooks into Redis (stream, list, pub/sub), and what a Redis outage looks like.
#
# What it shows, on one machine and without Docker:
#   - redis_stream: a POST answered 200 is already in the stream (XRANGE): the `payload` field is
#     the body byte for byte, `request_id` is the one the 200 carried;
#   - redis_list: the pushed envelope (LRANGE) embeds the body verbatim ("payload":<body>);
#   - redis_publish: a subscriber that was listening (SUBSCRIBE, started before the POST) gets the
#     envelope with the body verbatim;
#   - Redis stopped: the POST answers 202 stored (the spool keeps it on disk, within
#     SPOOL_HANDOFF_MS); a webhook with "spool": "off" answers 503 destination_unavailable with
#     Retry-After, so its sender retries (nothing is acknowledged that was not stored);
#   - Redis started again: the stored request is forwarded without touching Switchyard, then a
#     POST answers 200 again, and the entry written before the outage is still there (Redis runs
#     with appendfsync always): the stream holds the three bodies, once each, in order.
#
# It starts a throwaway redis-server and a Switchyard (file backend, config files written into a
# temp dir) on free loopback ports, checks each behaviour (one PASS/FAIL line per check), then
# stops both and removes its temp dir. It exits 0 only when every check passed.
#
# Run it from anywhere:
#   scenarios/10_redis/run.sh
# Needs: redis-server and redis-cli 7+ (Debian: redis-server, redis-tools), curl, jq, python3.
# It uses target/release/switchyard (built with `cargo build --release` if missing), or
# $SWITCHYARD_BIN; $REDIS_SERVER_BIN / $REDIS_CLI_BIN point at other Redis binaries.
# Tunables: DEADLINE_SECONDS (default 10): how long any one wait may take.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$HERE/../lib.sh" # settings, counters and helpers shared by the scenarios
REDIS_SERVER_BIN=${REDIS_SERVER_BIN:-redis-server}
REDIS_CLI_BIN=${REDIS_CLI_BIN:-redis-cli}
POST_HEADERS=(-H 'X-GitHub-Event: push') # on every POST; the stream check finds it in the entry

# The bodies keep their odd spacing and key order on purpose: Switchyard must hand them on
# byte for byte, not re-serialize them.
STREAM_BODY='{"event":"push",  "repository":{"id":4711,"name":"switchyard"}, "commits":[1,2,3]}'
LIST_BODY='{"job":"resize-image","args":{"width":640, "height":480},"id":"job-1"}'
PUBLISH_BODY='{"alert":"disk almost full", "host":"db-3","free_pct":4.5}'
OUTAGE_BODY='{"event":"push","during":"outage"}'
OFF_BODY='{"event":"push","during":"outage","spool":"off"}'
RECOVERY_BODY='{"event":"push","during":"recovery"}'

redis_pid=""
subscriber_pid=""
STOP_AT_EXIT=(subscriber_pid router_pid redis_pid)
LOGS_ON_FAILURE=(switchyard.log redis.log)

# --- helpers ------------------------------------------------------------------------------------

rcli() { "$REDIS_CLI_BIN" -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

redis_ready() { alive "$redis_pid" && [ "$(rcli ping 2>/dev/null)" = PONG ]; }
subscribed() { [ "$(rcli PUBSUB NUMSUB notifications | sed -n 2p)" = 1 ]; }
message_received() { grep -q '^\["message"' "$work_dir/subscriber.out"; }

start_redis() {
    # appendfsync always: Redis answers a write only once it is on disk, so a 200 survives a
    # Redis restart.
    "$REDIS_SERVER_BIN" --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$work_dir/redis" \
        --save '' --appendonly yes --appendfsync always \
        >>"$work_dir/redis.log" 2>&1 &
    redis_pid=$!
}

# The fields of the newest entry of stream $1, as one JSON object (field -> value).
newest_stream_entry() {
    rcli --json XREVRANGE "$1" + - COUNT 1 |
        jq -c '.[0][1] as $f | [range(0; $f | length; 2) as $i | {($f[$i]): $f[$i + 1]}] | add'
}

# check_envelope NAME ENVELOPE BODY REQUEST_ID: the JSON envelope of redis_list/redis_publish
# carries the request id and embeds BODY verbatim (the payload is its last field).
check_envelope() {
    local name=$1 envelope=$2 body=$3 rid=$4 got_rid encoding
    got_rid=$(jq -r '.request_id' <<<"$envelope" 2>/dev/null || echo "-")
    encoding=$(jq -r '.payload_encoding' <<<"$envelope" 2>/dev/null || echo "-")
    if [[ "$envelope" == *"\"payload\":$body}" ]] && [ "$encoding" = json ] && [ "$got_rid" = "$rid" ]; then
        pass "$name: envelope has \"payload\":<the body, byte for byte>, request_id $rid"
    else
        fail "$name: envelope is $envelope (expected payload $body, payload_encoding json, request_id $rid)"
    fi
}

# --- setup --------------------------------------------------------------------------------------

for tool in "$REDIS_SERVER_BIN" "$REDIS_CLI_BIN" curl jq python3; do need "$tool"; done
need_switchyard
make_work_dir scenario10
mkdir "$work_dir/redis"

read -r REDIS_PORT ROUTER_PORT <<<"$(free_ports 2)"
ROUTER_URL=http://127.0.0.1:$ROUTER_PORT

say "Starting redis-server on 127.0.0.1:$REDIS_PORT (data in $work_dir/redis)"
start_redis
wait_for "redis is up (redis-cli ping -> PONG)" redis_ready

# One connection, shared by three webhooks. The webhooks are config/webhooks.json beside this
# script (the same file docker-compose.yml mounts); only the connection differs: here it points
# at the throwaway redis-server. timeout_ms bounds how long a POST waits for Redis.
cat >"$work_dir/connections.json" <<EOF
{
  "cache": { "type": "redis", "host": "127.0.0.1", "port": $REDIS_PORT }
}
EOF
cp "$HERE/config/webhooks.json" "$work_dir/webhooks.json"

say "Starting switchyard on $ROUTER_URL (file backend: $work_dir/webhooks.json, connections.json)"
start_switchyard WEBHOOKS_CONFIG_FILE="$work_dir/webhooks.json" CONNECTIONS_CONFIG_FILE="$work_dir/connections.json" \
    SHUTDOWN_GRACE_SECONDS=5

# --- redis_stream -------------------------------------------------------------------------------

say ""
say "redis_stream -> XADD events"
check_post "stream" /webhook/github-events "$STREAM_BODY" "200 accepted"
stream_rid=$request_id
entry=$(newest_stream_entry events || echo '{}')
say "      XREVRANGE events + - COUNT 1 -> $(jq -c '{namespace, webhook, request_id, headers}' <<<"$entry")"
if [ "$(jq -r '.payload' <<<"$entry")" = "$STREAM_BODY" ]; then
    pass "stream: the payload field is the body, byte for byte"
else
    fail "stream: payload field is $(jq -r '.payload' <<<"$entry"), expected $STREAM_BODY"
fi
if [ "$(jq -r '.request_id' <<<"$entry")" = "$stream_rid" ] &&
    [ "$(jq -r '.headers | fromjson | ."x-github-event"' <<<"$entry")" = push ]; then
    pass "stream: request_id is the 200's ($stream_rid), headers carry x-github-event"
else
    fail "stream: entry $entry (expected request_id $stream_rid and x-github-event in headers)"
fi

# --- redis_list ---------------------------------------------------------------------------------

say ""
say "redis_list -> RPUSH jobs"
check_post "list" /webhook/jobs "$LIST_BODY" "200 accepted"
envelope=$(rcli --json LRANGE jobs -1 -1 | jq -r '.[0] // ""')
say "      LRANGE jobs -1 -1 -> $envelope"
check_envelope "list" "$envelope" "$LIST_BODY" "$request_id"

# --- redis_publish ------------------------------------------------------------------------------

say ""
say "redis_publish -> PUBLISH notifications (a subscriber listens first: Redis keeps nothing)"
rcli --json SUBSCRIBE notifications >"$work_dir/subscriber.out" 2>&1 &
subscriber_pid=$!
wait_for "subscriber is listening (PUBSUB NUMSUB notifications -> 1)" subscribed
check_post "publish" /webhook/alerts "$PUBLISH_BODY" "200 accepted"
publish_rid=$request_id
wait_for "subscriber received a message" message_received
envelope=$(grep '^\["message"' "$work_dir/subscriber.out" | head -n 1 | jq -r '.[2]')
say "      SUBSCRIBE notifications -> $envelope"
check_envelope "publish" "$envelope" "$PUBLISH_BODY" "$publish_rid"
stop "$subscriber_pid"
subscriber_pid=""

# --- outage and recovery ------------------------------------------------------------------------

say ""
say "Redis outage: stopping redis-server"
stop "$redis_pid"
redis_pid=""
check_post "outage, spool on" /webhook/github-events "$OUTAGE_BODY" "202 stored"
check_unavailable "outage, spool off" /webhook/github-events-direct "$OFF_BODY"

say ""
say "Redis back: starting redis-server again on the same port and data dir"
start_redis
wait_for "redis is up again (redis-cli ping -> PONG)" redis_ready

# The spool forwards what it stored (its retries back off from 1 s); until then new requests for
# the stream queue behind it (202), so the next POST waits for the backlog to drain.
DEADLINE_SECONDS=$((DEADLINE_SECONDS * 3)) wait_for "the stored request was forwarded (GET /health: spool.backlog 0)" spool_drained

# Switchyard reconnects by itself; the first POST after the restart may still meet the dead
# connection, so it is retried, as a sender would.
deadline=$((SECONDS + DEADLINE_SECONDS))
tries=0
while :; do
    post /webhook/github-events "$RECOVERY_BODY"
    tries=$((tries + 1))
    [ "$code" = 200 ] && break
    [ "$SECONDS" -ge "$deadline" ] && break
    sleep "$POLL_INTERVAL"
done
if [ "$code $word" = "200 accepted" ]; then
    pass "recovery: POST /webhook/github-events -> $code $word (after $tries tries, no restart of switchyard)"
else
    fail "recovery: POST /webhook/github-events -> $code $word, still not 200 after ${DEADLINE_SECONDS}s"
fi

payloads=$(rcli --json XRANGE events - + | jq -c '[.[] | .[1] as $f | [range(0; $f | length; 2) as $i | {($f[$i]): $f[$i + 1]}] | add | .payload]')
expected=$(jq -cn --arg a "$STREAM_BODY" --arg b "$OUTAGE_BODY" --arg c "$RECOVERY_BODY" '[$a, $b, $c]')
if [ "$payloads" = "$expected" ]; then
    pass "recovery: XRANGE events has the entry from before the outage, the stored one, and the new one, nothing else"
else
    fail "recovery: XRANGE events payloads are $payloads (expected $expected)"
fi

summary
