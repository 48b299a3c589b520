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
ROOT=$(cd "$HERE/../.." && pwd)
DEFAULT_BIN=$ROOT/target/release/switchyard
SWITCHYARD_BIN=${SWITCHYARD_BIN:-$DEFAULT_BIN}
DEADLINE_SECONDS=${DEADLINE_SECONDS:-10}
POLL_INTERVAL=0.1
PREFIX=/cwm/
BODY='{"hello":"world"}'

passed=0
failed=0
etcd_pid=""
router_pid=""
work_dir=""

# --- helpers ------------------------------------------------------------------------------------

say() { printf '%s\n' "$*"; }
pass() { passed=$((passed + 1)); say "PASS  $*"; }
fail() { failed=$((failed + 1)); say "FAIL  $*"; }

need() {
    command -v "$1" >/dev/null 2>&1 || { say "run.sh: $1 is needed but not installed"; exit 2; }
}

# N distinct TCP ports that are free on 127.0.0.1 right now (the OS picks them; all N sockets are
# held open together, so the ports differ).
free_ports() {
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# Stops a process we started: SIGTERM, then SIGKILL if it is still there after 5 seconds.
stop() {
    local pid=$1 waited=0
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 50 ]; do
        sleep "$POLL_INTERVAL"
        waited=$((waited + 1))
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local code=$?
    trap '' INT TERM # a second Ctrl-C must not cut the cleanup short
    stop "$router_pid"
    stop "$etcd_pid"
    # On a failure, the logs usually say why; on Ctrl-C (130) they are just noise.
    if [ "$code" -ne 130 ] && { [ "$failed" -gt 0 ] || [ "$code" -ne 0 ]; }; then
        for log in "$work_dir/switchyard.log" "$work_dir/etcd.log"; do
            [ -f "$log" ] || continue
            say ""
            say "--- last lines of $(basename "$log") ---"
            tail -n 15 "$log"
        done
    fi
    if [ -n "$work_dir" ]; then rm -rf "$work_dir"; fi
}

etcdctl_() { ETCDCTL_API=3 etcdctl --endpoints="$ETCD_URL" "$@"; }

# The cluster's current revision: what the router must have applied to be in sync.
etcd_revision() { etcdctl_ endpoint status -w json | jq '.[0].Status.header.revision'; }

# POSTs a JSON body and prints "<http status> <body .status or .error>", e.g. "200 accepted" or
# "404 webhook_not_found" ("000 -" when nothing answered).
post() {
    local path=$1 code word
    rm -f "$work_dir/body"
    code=$(curl -s --max-time 5 -o "$work_dir/body" -w '%{http_code}' -X POST \
        -H 'Content-Type: application/json' --data "$BODY" "$ROUTER_URL$path" || true)
    word=$(jq -r '.status // .error // "-"' "$work_dir/body" 2>/dev/null || echo "-")
    printf '%s %s\n' "${code:-000}" "$word"
}

# check NAME PATH EXPECTED: one POST, now.
check() {
    local name=$1 path=$2 expected=$3 got
    got=$(post "$path")
    if [ "$got" = "$expected" ]; then
        pass "$name: POST $path -> $got"
    else
        fail "$name: POST $path -> $got (expected $expected; body: $(cat "$work_dir/body" 2>/dev/null))"
    fi
}

# check_eventually NAME PATH EXPECTED: POST every POLL_INTERVAL until EXPECTED or the deadline.
check_eventually() {
    local name=$1 path=$2 expected=$3 got deadline=$((SECONDS + DEADLINE_SECONDS)) tries=0
    while :; do
        got=$(post "$path")
        tries=$((tries + 1))
        [ "$got" = "$expected" ] && { pass "$name: POST $path -> $got (after $tries tries)"; return; }
        [ "$SECONDS" -ge "$deadline" ] && break
        sleep "$POLL_INTERVAL"
    done
    fail "$name: POST $path -> $got, still not $expected after ${DEADLINE_SECONDS}s"
}

# wait_for NAME COMMAND...: runs COMMAND every POLL_INTERVAL until it succeeds or the deadline;
# stops the whole run when the deadline passes (nothing after it can be checked).
wait_for() {
    local name=$1 deadline=$((SECONDS + DEADLINE_SECONDS))
    shift
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            fail "$name (not within ${DEADLINE_SECONDS}s)"
            exit 1
        fi
        sleep "$POLL_INTERVAL"
    done
    pass "$name"
}

alive() { kill -0 "$1" 2>/dev/null; }
etcd_ready() { alive "$etcd_pid" && etcdctl_ endpoint health; }
router_ready() { alive "$router_pid" && curl -sf --max-time 2 -o /dev/null "$ROUTER_URL/health"; }
router_at_revision() {
    local applied
    applied=$(curl -sf --max-time 2 "$ROUTER_URL/health" | jq -e '.config.revision')
    [ "$applied" -ge "$1" ]
}

# --- setup --------------------------------------------------------------------------------------

for tool in etcd etcdctl curl jq python3; do need "$tool"; done
if [ ! -x "$SWITCHYARD_BIN" ]; then
    if [ "$SWITCHYARD_BIN" != "$DEFAULT_BIN" ]; then
        say "run.sh: SWITCHYARD_BIN=$SWITCHYARD_BIN is not an executable file"
        exit 2
    fi
    say "Building switchyard (cargo build --release) ..."
    (cd "$ROOT" && cargo build --release)
fi

trap cleanup EXIT
trap 'exit 130' INT TERM
work_dir=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-scenario05.XXXXXX")

read -r ETCD_PORT ETCD_PEER_PORT ROUTER_PORT <<<"$(free_ports 3)"
ETCD_URL=http://127.0.0.1:$ETCD_PORT
ROUTER_URL=http://127.0.0.1:$ROUTER_PORT

say "Starting etcd on $ETCD_URL (data in $work_dir/etcd)"
etcd --name scenario05 --data-dir "$work_dir/etcd" \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "scenario05=http://127.0.0.1:$ETCD_PEER_PORT" \
    >"$work_dir/etcd.log" 2>&1 &
etcd_pid=$!
wait_for "etcd is up" etcd_ready

say "Starting switchyard on $ROUTER_URL (CONFIG_BACKEND=etcd, ETCD_PREFIX=$PREFIX)"
CONFIG_BACKEND=etcd ETCD_ENDPOINTS=$ETCD_URL ETCD_PREFIX=$PREFIX ETCD_NAMESPACE=default \
    HOST=127.0.0.1 PORT=$ROUTER_PORT SHUTDOWN_GRACE_SECONDS=5 NO_COLOR=1 \
    "$SWITCHYARD_BIN" >"$work_dir/switchyard.log" 2>&1 &
router_pid=$!
wait_for "switchyard is ready (GET /health -> 200)" router_ready

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
check "namespace routing" /webhook/acme/github "200 accepted"
check "namespace routing" /webhook/globex/stripe "200 accepted"
check "isolation (only acme has github)" /webhook/globex/github "404 webhook_not_found"
check "isolation (only globex has stripe)" /webhook/acme/stripe "404 webhook_not_found"

check "live add: not there yet" /webhook/acme/deploy "404 webhook_not_found"
etcdctl_ put "${PREFIX}acme/webhooks/deploy" '{"module":"log"}' >/dev/null
say "      put ${PREFIX}acme/webhooks/deploy {\"module\":\"log\"}"
check_eventually "live add" /webhook/acme/deploy "200 accepted"

etcdctl_ del "${PREFIX}acme/webhooks/deploy" >/dev/null
say "      del ${PREFIX}acme/webhooks/deploy"
check_eventually "live delete" /webhook/acme/deploy "404 webhook_not_found"

check "default-namespace fallback (${PREFIX}default/webhooks/ping)" /webhook/ping "200 accepted"
check "default-namespace fallback (explicit)" /webhook/default/ping "200 accepted"

health=$(curl -s --max-time 5 -w '\n%{http_code}' "$ROUTER_URL/health" || true)
health_code=${health##*$'\n'}
health_etcd=$(printf '%s' "${health%$'\n'*}" | jq -r '.components.etcd // "-"' 2>/dev/null || echo "-")
if [ "$health_code" = 200 ] && [ "$health_etcd" = healthy ]; then
    pass "health: GET /health -> 200, components.etcd=$health_etcd"
else
    fail "health: GET /health -> $health_code, components.etcd=$health_etcd (expected 200, healthy)"
fi

say ""
say "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
