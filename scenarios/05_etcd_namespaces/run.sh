#!/usr/bin/env bash
# Scenario 05: etcd namespaces.
#
# What it shows, on one machine and without Docker:
#   - a webhook stored at /cwm/<namespace>/webhooks/<id> answers POST /webhook/<namespace>/<id>;
#   - namespaces are isolated: acme's `github` is not reachable as globex's `github`;
#   - a key put into etcd goes live without a restart, and a deleted key stops answering;
#   - POST /webhook/<id> is served from the default namespace (/cwm/default/webhooks/<id>);
#   - GET /health reports etcd as healthy.
#
# It starts a throwaway etcd and a Switchyard on free loopback ports, seeds keys with etcdctl,
# checks each behaviour with curl (one PASS/FAIL line per check), then stops both and removes its
# temp dir. It exits 0 only when every check passed.
#
# Run it from anywhere:
#   scenarios/05_etcd_namespaces/run.sh
# Needs: etcd + etcdctl (Debian: etcd-server, etcd-client), curl, jq, python3. It uses
# target/release/switchyard (built with `cargo build --release` if missing), or $SWITCHYARD_BIN.
# Tunables: DEADLINE_SECONDS (default 10): how long any one wait may take.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$HERE/../lib.sh" # settings, counters and helpers shared by the scenarios
PREFIX=/cwm/
BODY='{"hello":"world"}'
POST_TIMEOUT=5 # seconds a POST may take

STOP_AT_EXIT=(router_pid etcd_pid)
LOGS_ON_FAILURE=(switchyard.log etcd.log)

# --- helpers ------------------------------------------------------------------------------------

# check_eventually NAME PATH EXPECTED: POST every POLL_INTERVAL until EXPECTED or the deadline.
check_eventually() {
    local name=$1 path=$2 expected=$3 got deadline=$((SECONDS + DEADLINE_SECONDS)) tries=0
    while :; do
        post "$path" "$BODY"
        got="$code $word"
        tries=$((tries + 1))
        [ "$got" = "$expected" ] && { pass "$name: POST $path -> $got (after $tries tries)"; return; }
        [ "$SECONDS" -ge "$deadline" ] && break
        sleep "$POLL_INTERVAL"
    done
    fail "$name: POST $path -> $got, still not $expected after ${DEADLINE_SECONDS}s"
}

# --- setup --------------------------------------------------------------------------------------

for tool in etcd etcdctl curl jq python3; do need "$tool"; done
need_switchyard
make_work_dir scenario05

read -r ETCD_PORT ETCD_PEER_PORT ROUTER_PORT <<<"$(free_ports 3)"
ETCD_URL=http://127.0.0.1:$ETCD_PORT
ROUTER_URL=http://127.0.0.1:$ROUTER_PORT

start_etcd scenario05

say "Starting switchyard on $ROUTER_URL (CONFIG_BACKEND=etcd, ETCD_PREFIX=$PREFIX)"
start_switchyard CONFIG_BACKEND=etcd ETCD_ENDPOINTS="$ETCD_URL" ETCD_PREFIX="$PREFIX" ETCD_NAMESPACE=default \
    SHUTDOWN_GRACE_SECONDS=5

say "Seeding etcd"
for entry in \
    "${PREFIX}acme/webhooks/github" \
    "${PREFIX}globex/webhooks/stripe" \
    "${PREFIX}default/webhooks/ping"; do
    etcdctl_ put "$entry" '{"module":"log"}' >/dev/null
    say "      put $entry {\"module\":\"log\"}"
done
seeded=$(etcd_revision)
wait_for "switchyard applied the seed (revision $seeded)" router_at_revision "$seeded"

# --- checks -------------------------------------------------------------------------------------

say "Checks"
check_post "namespace routing" /webhook/acme/github "$BODY" "200 accepted"
check_post "namespace routing" /webhook/globex/stripe "$BODY" "200 accepted"
check_post "isolation (only acme has github)" /webhook/globex/github "$BODY" "404 webhook_not_found"
check_post "isolation (only globex has stripe)" /webhook/acme/stripe "$BODY" "404 webhook_not_found"

check_post "live add: not there yet" /webhook/acme/deploy "$BODY" "404 webhook_not_found"
etcdctl_ put "${PREFIX}acme/webhooks/deploy" '{"module":"log"}' >/dev/null
say "      put ${PREFIX}acme/webhooks/deploy {\"module\":\"log\"}"
check_eventually "live add" /webhook/acme/deploy "200 accepted"

etcdctl_ del "${PREFIX}acme/webhooks/deploy" >/dev/null
say "      del ${PREFIX}acme/webhooks/deploy"
check_eventually "live delete" /webhook/acme/deploy "404 webhook_not_found"

check_post "default-namespace fallback (${PREFIX}default/webhooks/ping)" /webhook/ping "$BODY" "200 accepted"
check_post "default-namespace fallback (explicit)" /webhook/default/ping "$BODY" "200 accepted"

health=$(curl -s --max-time 5 -w '\n%{http_code}' "$ROUTER_URL/health" || true)
health_code=${health##*$'\n'}
health_etcd=$(printf '%s' "${health%$'\n'*}" | jq -r '.components.etcd // "-"' 2>/dev/null || echo "-")
if [ "$health_code" = 200 ] && [ "$health_etcd" = healthy ]; then
    pass "health: GET /health -> 200, components.etcd=$health_etcd"
else
    fail "health: GET /health -> $health_code, components.etcd=$health_etcd (expected 200, healthy)"
fi

summary
