# What every scenarios/*/run.sh shares: the settings, the PASS/FAIL counters and the helpers that
# start, probe, check and clean up. Sourced, not run: `. "$HERE/../lib.sh"` right after HERE.
#
# A script sets, after sourcing (cleanup reads them when the run ends):
#   STOP_AT_EXIT     names of the variables holding the pids to stop, in this order;
#   LOGS_ON_FAILURE  files in $work_dir whose last lines are printed when the run failed;
# and, when the defaults below do not fit: POST_TIMEOUT, POST_HEADERS, CHECK_POST_SHOWS_BODY.
# The helpers use ROUTER_URL and ROUTER_PORT, which the script sets once it has its ports.
# shellcheck shell=bash disable=SC2034,SC2154 # variables used by the script / set by the script

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEFAULT_BIN=$ROOT/target/release/switchyard
SWITCHYARD_BIN=${SWITCHYARD_BIN:-$DEFAULT_BIN}
DEADLINE_SECONDS=${DEADLINE_SECONDS:-10}
POLL_INTERVAL=0.1

STOP_AT_EXIT=()
LOGS_ON_FAILURE=(switchyard.log)
POST_TIMEOUT=15         # seconds a POST may take (curl --max-time)
POST_HEADERS=()         # more curl arguments for every POST, e.g. (-H 'X-GitHub-Event: push')
CHECK_POST_SHOWS_BODY=0 # 1: check_post prints the body it sent in its PASS line

passed=0
failed=0
work_dir=""
router_pid=""

# say TEXT...: one line on stdout.
say() { printf '%s\n' "$*"; }
# pass TEXT / fail TEXT: counts the check and prints its PASS or FAIL line.
pass() { passed=$((passed + 1)); say "PASS  $*"; }
fail() { failed=$((failed + 1)); say "FAIL  $*"; }

# need TOOL: stops the run (exit 2) when TOOL is not installed.
need() {
    command -v "$1" >/dev/null 2>&1 || { say "run.sh: $1 is needed but not installed"; exit 2; }
}

# need_switchyard: $SWITCHYARD_BIN must be executable; the default one is built when missing.
need_switchyard() {
    [ -x "$SWITCHYARD_BIN" ] && return 0
    if [ "$SWITCHYARD_BIN" != "$DEFAULT_BIN" ]; then
        say "run.sh: SWITCHYARD_BIN=$SWITCHYARD_BIN is not an executable file"
        exit 2
    fi
    say "Building switchyard (cargo build --release) ..."
    (cd "$ROOT" && cargo build --release)
}

# free_ports N: N distinct TCP ports that are free on 127.0.0.1 right now (the OS picks them; all
# N sockets are held open together, so the ports differ).
free_ports() {
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# make_work_dir NAME: creates $work_dir (a temp dir named after NAME) and arranges for cleanup to
# run on exit and Ctrl-C.
make_work_dir() {
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    work_dir=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-$1.XXXXXX")
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

# The EXIT trap: stops the processes named in STOP_AT_EXIT, prints the LOGS_ON_FAILURE when the
# run failed, and removes $work_dir.
cleanup() {
    local code=$? name log
    trap '' INT TERM # a second Ctrl-C must not cut the cleanup short
    for name in "${STOP_AT_EXIT[@]}"; do stop "${!name}"; done
    # On a failure, the logs usually say why; on Ctrl-C (130) they are just noise.
    if [ "$code" -ne 130 ] && { [ "$failed" -gt 0 ] || [ "$code" -ne 0 ]; }; then
        for log in "${LOGS_ON_FAILURE[@]}"; do
            [ -f "$work_dir/$log" ] || continue
            say ""
            say "--- last lines of $log ---"
            tail -n 15 "$work_dir/$log"
        done
    fi
    if [ -n "$work_dir" ]; then rm -rf "$work_dir"; fi
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

# alive PID: the process is still running.
alive() { kill -0 "$1" 2>/dev/null; }
# router_ready: the switchyard we started runs and GET /health answers 2xx.
router_ready() { alive "$router_pid" && curl -sf --max-time 2 -o /dev/null "$ROUTER_URL/health"; }

# start_switchyard NAME=VALUE...: starts $SWITCHYARD_BIN on 127.0.0.1:$ROUTER_PORT with these
# settings in its environment (log: $work_dir/switchyard.log; spool: $work_dir/spool), then
# waits until it is ready.
start_switchyard() {
    env HOST=127.0.0.1 PORT="$ROUTER_PORT" NO_COLOR=1 SPOOL_DIR="$work_dir/spool" "$@" \
        "$SWITCHYARD_BIN" >"$work_dir/switchyard.log" 2>&1 &
    router_pid=$!
    wait_for "switchyard is ready (GET /health -> 200)" router_ready
}

# post PATH BODY: POSTs BODY as JSON; sets $code (HTTP status, 000 when nothing answered), $word
# (the answer's .status or .error, - when none), $request_id, $retry_after (the Retry-After
# header, empty if absent) and $took (seconds until the answer).
post() {
    local path=$1 body=$2 out
    rm -f "$work_dir/body" "$work_dir/headers"
    out=$(curl -s --max-time "$POST_TIMEOUT" -o "$work_dir/body" -D "$work_dir/headers" \
        -w '%{http_code} %{time_total}' -X POST -H 'Content-Type: application/json' \
        ${POST_HEADERS[@]+"${POST_HEADERS[@]}"} --data-binary "$body" "$ROUTER_URL$path" || true)
    code=${out%% *}
    code=${code:-000}
    took=${out#* }
    word=$(jq -r '.status // .error // "-"' "$work_dir/body" 2>/dev/null || echo "-")
    request_id=$(jq -r '.request_id // ""' "$work_dir/body" 2>/dev/null || true)
    retry_after=$(tr -d '\r' <"$work_dir/headers" 2>/dev/null | awk -F': ' 'tolower($1) == "retry-after" { print $2 }')
}

# check_post NAME PATH BODY EXPECTED ("200 accepted"): one POST, now.
check_post() {
    local name=$1 path=$2 body=$3 expected=$4 sent=$2
    if [ "$CHECK_POST_SHOWS_BODY" = 1 ]; then sent="$path $body"; fi
    post "$path" "$body"
    if [ "$code $word" = "$expected" ]; then
        pass "$name: POST $sent -> $code $word"
    else
        fail "$name: POST $path -> $code $word (expected $expected; body: $(cat "$work_dir/body" 2>/dev/null))"
    fi
}

# check_unavailable NAME PATH BODY [NOTE]: one POST, now, answered 503 destination_unavailable
# with a Retry-After header (the sender retries later); NOTE explains how long it took.
check_unavailable() {
    local name=$1 path=$2 body=$3 note=${4:-}
    post "$path" "$body"
    if [ "$code $word" = "503 destination_unavailable" ] && [ -n "$retry_after" ]; then
        pass "$name: POST $path -> $code $word, Retry-After: $retry_after (after ${took}s${note:+: $note})"
    else
        fail "$name: POST $path -> $code $word, Retry-After: '${retry_after}' (expected 503 destination_unavailable with Retry-After; body: $(cat "$work_dir/body" 2>/dev/null))"
    fi
}

# --- etcd (scenarios that set ETCD_PORT, ETCD_PEER_PORT and ETCD_URL) ----------------------------

etcd_pid=""
etcdctl_() { ETCDCTL_API=3 etcdctl --endpoints="$ETCD_URL" "$@"; }
# etcd_revision: the cluster's current revision: what the router must have applied to be in sync.
etcd_revision() { etcdctl_ endpoint status -w json | jq '.[0].Status.header.revision'; }
etcd_ready() { alive "$etcd_pid" && etcdctl_ endpoint health; }
# router_at_revision REV: the router has applied etcd revision REV (GET /health).
router_at_revision() {
    local applied
    applied=$(curl -sf --max-time 2 "$ROUTER_URL/health" | jq -e '.config.revision')
    [ "$applied" -ge "$1" ]
}

# start_etcd NAME: a throwaway single-member etcd on $ETCD_URL (data and etcd.log in $work_dir);
# waits until it is healthy.
start_etcd() {
    say "Starting etcd on $ETCD_URL (data in $work_dir/etcd)"
    etcd --name "$1" --data-dir "$work_dir/etcd" \
        --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "$1=http://127.0.0.1:$ETCD_PEER_PORT" \
        >"$work_dir/etcd.log" 2>&1 &
    etcd_pid=$!
    wait_for "etcd is up" etcd_ready
}

# spool_drained: the router's spool holds nothing (GET /health: spool.backlog is 0).
spool_drained() { [ "$(curl -s --max-time 2 "$ROUTER_URL/health" | jq -r '.spool.backlog')" = 0 ]; }

# summary: prints the totals; its status (the script's last command) is 0 only if nothing failed.
summary() {
    say ""
    say "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}
