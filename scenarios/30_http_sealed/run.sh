#!/usr/bin/env bash
# Scenario 30: forward to a local HTTP service, with a sealed GitHub secret in etcd.
#
# What it shows, on one machine and without Docker (the README's worked example, step by step):
#   - `switchyard seal` turns a GitHub secret into a sealed value bound to its entry and field,
#     and etcd holds only that (reading the prefix does not reveal the secret);
#   - a request signed with the secret is forwarded by the `http` module to a local service: the
#     body byte for byte, the forwarded header, and a Standard Webhooks signature that verifies;
#   - a wrong signature is refused (401) and never reaches the service;
#   - `switchyard check --etcd` opens every sealed value with SEAL_KEYS_FILE, and fails without it;
#   - the sealed value copied into another entry does not open there: that entry is invalid,
#     named in /status, and answers 503 webhook_invalid.
#
# Run it from anywhere:
#   scenarios/30_http_sealed/run.sh
# Needs: etcd + etcdctl (Debian: etcd-server, etcd-client), curl, jq, python3, openssl. It uses
# target/release/switchyard (built with `cargo build --release` if missing), or $SWITCHYARD_BIN.
# Tunables: DEADLINE_SECONDS (default 10): how long any one wait may take.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib.sh
. "$HERE/../lib.sh" # settings, counters and helpers shared by the scenarios
PREFIX=/cwm/
GITHUB_SECRET=change-me
SIGNING_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
BODY='{"zen":"Keep it logically awesome.","hook_id":1}'

service_pid=""
STOP_AT_EXIT=(router_pid service_pid etcd_pid)
LOGS_ON_FAILURE=(switchyard.log etcd.log service.jsonl)

service_ready() { alive "$service_pid" && curl -s -o /dev/null --max-time 2 -X POST "$SERVICE_URL/ready"; }
# received PATH: how many requests the service got on PATH.
received() { grep -c "\"path\": \"$1\"" "$work_dir/service.jsonl" || true; }
skipped_names() { curl -sf --max-time 2 "$ROUTER_URL/status" | jq -e --arg k "$1" --arg why "$2" \
    '.skipped[] | select(.key == $k and (.reason | contains($why)))' >/dev/null; }
signature() { printf '%s' "$1" | openssl dgst -sha256 -hmac "$2" | awk '{print $NF}'; }

# --- setup --------------------------------------------------------------------------------------

for tool in etcd etcdctl curl jq python3 openssl; do need "$tool"; done
need_switchyard
make_work_dir scenario30

read -r ETCD_PORT ETCD_PEER_PORT ROUTER_PORT SERVICE_PORT <<<"$(free_ports 4)"
ETCD_URL=http://127.0.0.1:$ETCD_PORT
ROUTER_URL=http://127.0.0.1:$ROUTER_PORT
SERVICE_URL=http://127.0.0.1:$SERVICE_PORT

start_etcd scenario30

say "Starting the service on $SERVICE_URL (answers 204, prints each request)"
python3 "$HERE/service.py" "$SERVICE_PORT" "$SIGNING_SECRET" >"$work_dir/service.jsonl" 2>&1 &
service_pid=$!
wait_for "the service answers" service_ready

say "Making a seal key and sealing the GitHub secret for ${PREFIX}acme/webhooks/orders hmac.secret"
(umask 077 && echo "k1=$(head -c 32 /dev/urandom | base64)" >"$work_dir/seal.keys")
export SEAL_KEYS_FILE=$work_dir/seal.keys
sealed=$(printf %s "$GITHUB_SECRET" | ETCD_PREFIX=$PREFIX "$SWITCHYARD_BIN" seal \
    --entry "${PREFIX}acme/webhooks/orders" --field hmac.secret)
say "      $sealed"

connection=$(jq -nc --arg url "$SERVICE_URL" \
    '{type: "http", base_url: $url, namespaces: ["acme"], target_prefix: "/hooks/"}')
webhook() {
    jq -nc --arg sealed "$1" --arg sign "$SIGNING_SECRET" '{
      module: "http", connection: "orders-svc",
      "module-config": {path: "/hooks/github", forward_headers: ["x-github-event"],
                        sign: {scheme: "standard_webhooks", secret: $sign}},
      hmac: {provider: "github", secret: $sealed}}'
}
etcdctl_ put "${PREFIX}global/connections/orders-svc" "$connection" >/dev/null
etcdctl_ put "${PREFIX}acme/webhooks/orders" "$(webhook "$sealed")" >/dev/null
say "      put ${PREFIX}global/connections/orders-svc and ${PREFIX}acme/webhooks/orders"

say "Starting switchyard on $ROUTER_URL (etcd, HTTP_ALLOWED_NETWORKS=127.0.0.1/32, SEAL_KEYS_FILE)"
start_switchyard CONFIG_BACKEND=etcd ETCD_ENDPOINTS="$ETCD_URL" ETCD_PREFIX="$PREFIX" \
    HTTP_ALLOWED_NETWORKS=127.0.0.1/32 SEAL_KEYS_FILE="$SEAL_KEYS_FILE" SHUTDOWN_GRACE_SECONDS=5
seeded=$(etcd_revision)
wait_for "switchyard applied the config (revision $seeded)" router_at_revision "$seeded"

# --- checks -------------------------------------------------------------------------------------

say "Checks"
stored=$(etcdctl_ get "${PREFIX}acme/webhooks/orders" --print-value-only)
if [[ "$stored" == *"$sealed"* && "$stored" != *"$GITHUB_SECRET"* ]]; then
    pass "etcd holds the sealed value, not the secret"
else
    fail "etcd holds: $stored"
fi

POST_HEADERS=(-H 'X-GitHub-Event: ping' -H "X-Hub-Signature-256: sha256=$(signature "$BODY" "$GITHUB_SECRET")")
check_post "signed with the sealed secret" /webhook/acme/orders "$BODY" "200 accepted"
line=$(grep '"path": "/hooks/github"' "$work_dir/service.jsonl" | tail -n 1 || true)
if [ -n "$line" ] &&
    [ "$(jq -r .body <<<"$line")" = "$BODY" ] &&
    [ "$(jq -r '.headers["x-github-event"]' <<<"$line")" = ping ] &&
    [ "$(jq -r '.headers["switchyard-request-id"]' <<<"$line")" = "$request_id" ] &&
    [ "$(jq -r .signature_verified <<<"$line")" = true ]; then
    pass "the service got the body byte for byte, x-github-event, the request id and a Standard Webhooks signature that verifies"
else
    fail "the service got: ${line:-nothing}"
fi

POST_HEADERS=(-H 'X-GitHub-Event: ping' -H "X-Hub-Signature-256: sha256=$(signature "$BODY" wrong-secret)")
check_post "signed with another secret" /webhook/acme/orders "$BODY" "401 unauthorized"
if [ "$(received /hooks/github)" = 1 ]; then
    pass "the refused request never reached the service"
else
    fail "the service got $(received /hooks/github) requests, expected 1"
fi

if check_out=$(ETCD_ENDPOINTS=$ETCD_URL ETCD_PREFIX=$PREFIX "$SWITCHYARD_BIN" check --etcd); then
    pass "switchyard check --etcd: every sealed value opens ($(tail -n 1 <<<"$check_out"))"
else
    fail "switchyard check --etcd: $check_out"
fi
if check_out=$(env -u SEAL_KEYS_FILE ETCD_ENDPOINTS="$ETCD_URL" ETCD_PREFIX=$PREFIX "$SWITCHYARD_BIN" check --etcd); then
    fail "switchyard check --etcd without SEAL_KEYS_FILE passed: $check_out"
else
    pass "without SEAL_KEYS_FILE, check fails: $(grep -m1 invalid <<<"$check_out")"
fi

etcdctl_ put "${PREFIX}acme/webhooks/copy" "$(webhook "$sealed")" >/dev/null
say "      put ${PREFIX}acme/webhooks/copy with the same sealed value"
wait_for "the copied value does not open in another entry (/status names it)" \
    skipped_names "${PREFIX}acme/webhooks/copy" "does not open"
say "      $(curl -s "$ROUTER_URL/status" | jq -r '.skipped[0] | "\(.key): \(.reason)"')"
POST_HEADERS=(-H 'X-GitHub-Event: ping' -H "X-Hub-Signature-256: sha256=$(signature "$BODY" "$GITHUB_SECRET")")
check_post "the copy is not served" /webhook/acme/copy "$BODY" "503 webhook_invalid"
if grep -q "$GITHUB_SECRET" "$work_dir/switchyard.log"; then
    fail "the secret appears in switchyard's log"
else
    pass "the secret appears nowhere in switchyard's log"
fi

summary
