#!/usr/bin/env bash
# Builds the image from this repo's Dockerfile and runs it against a real etcd.
#
# Checks: GET /health answers 200, a webhook stored in etcd accepts a POST, Docker's HEALTHCHECK
# reports healthy, the binary in the image is stripped and under MAX_BINARY_MB, the process runs as
# uid 10001, and `docker stop` (SIGTERM) ends it with exit code 0.
#
# By default nothing is pulled (no registry is reachable here): the runtime base is a local image
# made once with debootstrap (minbase, Debian's mirror) and `docker import`, and the binary is built
# on the host (`cargo build --profile dist`) and copied in with `--target prebuilt`.
# BUILD_IN=docker compiles in the Dockerfile's Rust stage instead (`--target compiled`, BuildKit,
# BUILDER_IMAGE: a registry, or a local stand-in).
#
# Idempotent, and skips what is done: installs docker.io, debootstrap, etcd only when missing;
# starts dockerd only when `docker info` fails (and leaves it running for the next run); makes the
# base image only when it is missing; cargo and Docker's layer cache skip unchanged work.
# Run: `make docker-check` (not part of `make test`).
# Tunables: BUILD_IN (host | docker), BASE_IMAGE (switchyard-base:bookworm; made here when missing
# if named switchyard-base:*, else used as is, e.g. debian:bookworm-slim), BUILDER_IMAGE (the
# Dockerfile's default), IMAGE (switchyard:check), DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR,
# MAX_BINARY_MB (60), DEADLINE_SECONDS (90): how long any one wait may take.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE_IMAGE=${BASE_IMAGE:-switchyard-base:bookworm}
IMAGE=${IMAGE:-switchyard:check}
BUILD_IN=${BUILD_IN:-host}
BUILDER_IMAGE=${BUILDER_IMAGE:-}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
MAX_BINARY_MB=${MAX_BINARY_MB:-60}
DEADLINE_SECONDS=${DEADLINE_SECONDS:-90}
DOCKERD_LOG=/tmp/dockerd.log
POLL_INTERVAL=0.5

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
DOCKER=(docker)
container=""
etcd_pid=""
work_dir=""
rootfs_dir=""

say() { printf 'docker-check: %s\n' "$*"; }
die() { say "FAILED: $*"; exit 1; }

case "$BUILD_IN" in
    host | docker) ;;
    *) say "BUILD_IN must be host or docker, not '$BUILD_IN'"; exit 2 ;;
esac

cleanup() {
    local code=$?
    trap '' INT TERM # a second Ctrl-C must not cut the cleanup short
    if [ -n "$container" ]; then
        if [ "$code" -ne 0 ] && [ "$code" -ne 130 ]; then
            say "--- last lines of the container's log ---"
            "${DOCKER[@]}" logs --tail 20 "$container" 2>&1 || true
        fi
        "${DOCKER[@]}" rm -f "$container" >/dev/null 2>&1 || true
    fi
    if [ -n "$etcd_pid" ]; then
        kill "$etcd_pid" 2>/dev/null || true
        wait "$etcd_pid" 2>/dev/null || true
    fi
    if [ "$code" -ne 0 ] && [ "$code" -ne 130 ] && [ -s "${work_dir:-/nonexistent}/etcd.log" ]; then
        say "--- last lines of etcd's log ---"
        tail -n 10 "$work_dir/etcd.log"
    fi
    if [ -n "$rootfs_dir" ]; then $SUDO rm -rf "$rootfs_dir"; fi
    if [ -n "$work_dir" ]; then rm -rf "$work_dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for WHAT COMMAND...: runs COMMAND every POLL_INTERVAL until it succeeds; fails the check
# when DEADLINE_SECONDS pass first.
wait_for() {
    local what=$1 deadline=$((SECONDS + DEADLINE_SECONDS))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "$what: not within ${DEADLINE_SECONDS}s"
        sleep "$POLL_INTERVAL"
    done
    say "$what"
}

# N distinct TCP ports free on 127.0.0.1 right now (all N sockets are held together, so they differ).
free_ports() {
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# --- tools --------------------------------------------------------------------------------------

docker_up() { "${DOCKER[@]}" info >/dev/null 2>&1; }
base_present() { "${DOCKER[@]}" image inspect "$BASE_IMAGE" >/dev/null 2>&1; }
base_is_ours() { [[ "$BASE_IMAGE" == switchyard-base:* ]]; }

# Which Debian packages are missing. docker.io only when no daemon answers and none is installed;
# debootstrap only when the base image has to be made.
need_apt=()
if ! docker_up && ! $SUDO docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
fi
command -v docker >/dev/null 2>&1 || need_apt+=(docker.io)
if base_is_ours && ! base_present && ! $SUDO docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
fi
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need_apt+=(etcd-client)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v readelf >/dev/null 2>&1 || need_apt+=(binutils)
if [ "${#need_apt[@]}" -gt 0 ]; then
    mapfile -t need_apt < <(printf '%s\n' "${need_apt[@]}" | sort -u)
    say "installing ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# --- docker daemon ------------------------------------------------------------------------------

if ! docker_up && ! $SUDO docker info >/dev/null 2>&1; then
    say "no Docker daemon answers; starting dockerd (log: $DOCKERD_LOG)"
    # As on these machines: no iptables rules and no docker0 bridge, so containers and the build's
    # RUN steps use --network host.
    # setsid: the daemon outlives this script (and its Ctrl-C), so the next run reuses it.
    $SUDO setsid dockerd --iptables=false --ip6tables=false --bridge=none \
        >"$DOCKERD_LOG" 2>&1 </dev/null &
    deadline=$((SECONDS + DEADLINE_SECONDS))
    until $SUDO docker info >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$DOCKERD_LOG" || true
            die "dockerd did not answer within ${DEADLINE_SECONDS}s (log above)"
        fi
        sleep "$POLL_INTERVAL"
    done
fi
if ! docker_up && [ -n "$SUDO" ]; then DOCKER=(sudo docker); fi # not in the docker group
say "Docker daemon $("${DOCKER[@]}" version --format '{{.Server.Version}}') is up"

work_dir=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-docker-check.XXXXXX")

# --- base image ---------------------------------------------------------------------------------

if base_present; then
    say "base image $BASE_IMAGE exists"
elif ! base_is_ours; then
    say "base image $BASE_IMAGE is not here; docker build will pull it"
else
    say "making base image $BASE_IMAGE: debootstrap --variant=minbase bookworm from $DEBIAN_MIRROR"
    rootfs_dir=$(mktemp -d /var/tmp/switchyard-rootfs.XXXXXX)
    $SUDO debootstrap --variant=minbase bookworm "$rootfs_dir" "$DEBIAN_MIRROR" \
        >"$work_dir/debootstrap.log" 2>&1 ||
        { tail -n 20 "$work_dir/debootstrap.log"; die "debootstrap failed (log above)"; }
    # Updates and security fixes too, as in Debian's own images.
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
        "$DEBIAN_MIRROR" "$DEBIAN_MIRROR" "$DEBIAN_SECURITY_MIRROR" |
        $SUDO tee "$rootfs_dir/etc/apt/sources.list" >/dev/null
    # Slim, as debian:bookworm-slim is: no docs (but copyrights), man pages or translations, now
    # or in packages installed later; no package lists or apt caches.
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/groff/*' \
        'path-exclude /usr/share/info/*' 'path-exclude /usr/share/lintian/*' \
        'path-exclude /usr/share/locale/*' |
        $SUDO tee "$rootfs_dir/etc/dpkg/dpkg.cfg.d/docker-slim" >/dev/null
    $SUDO find "$rootfs_dir/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    $SUDO find "$rootfs_dir/usr/share/doc" -mindepth 1 -type d -empty -delete
    $SUDO rm -rf "$rootfs_dir"/usr/share/{man,groff,info,lintian,locale}/* \
        "$rootfs_dir"/var/lib/apt/lists/* "$rootfs_dir"/var/cache/apt/*.bin \
        "$rootfs_dir"/var/cache/apt/archives/*.deb
    $SUDO tar -C "$rootfs_dir" --numeric-owner -c . | "${DOCKER[@]}" import - "$BASE_IMAGE" >/dev/null
    $SUDO rm -rf "$rootfs_dir"
    rootfs_dir=""
    say "base image $BASE_IMAGE imported"
fi

# --- binary and image ---------------------------------------------------------------------------

# --network host: RUN steps reach Debian's mirror although the daemon has no bridge.
build_args=(--network host --build-arg "RUNTIME_IMAGE=$BASE_IMAGE" -t "$IMAGE")
if [ "$BUILD_IN" = host ]; then
    # Wherever cargo puts it (CARGO_TARGET_DIR, .cargo/config.toml): cargo metadata says.
    target_dir=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    say "building the binary: cargo build --profile dist --locked (in $target_dir)"
    (cd "$ROOT" && cargo build --profile dist --locked)
    mkdir -p "$ROOT/dist"
    cmp -s "$target_dir/dist/switchyard" "$ROOT/dist/switchyard" ||
        cp "$target_dir/dist/switchyard" "$ROOT/dist/switchyard"
    build_args+=(--target prebuilt --build-arg PREBUILT=dist/switchyard)
else
    # The Rust stage uses cache mounts, which only BuildKit has.
    export DOCKER_BUILDKIT=1
    build_args+=(--target compiled)
    if [ -n "$BUILDER_IMAGE" ]; then build_args+=(--build-arg "BUILDER_IMAGE=$BUILDER_IMAGE"); fi
fi

say "building image $IMAGE from $ROOT/Dockerfile (${build_args[*]})"
"${DOCKER[@]}" build "${build_args[@]}" "$ROOT" >"$work_dir/build.log" 2>&1 ||
    { tail -n 30 "$work_dir/build.log"; die "docker build failed (log above)"; }
image_bytes=$("${DOCKER[@]}" image inspect -f '{{.Size}}' "$IMAGE")
builder=BuildKit
if grep -q '^Step 1/' "$work_dir/build.log"; then builder="the legacy builder"; fi
say "image $IMAGE built with $builder: $((image_bytes / 1000000)) MB"

# The binary as it is in the image, not as it is on the host.
probe=$("${DOCKER[@]}" create "$IMAGE")
"${DOCKER[@]}" cp "$probe:/usr/local/bin/switchyard" "$work_dir/switchyard" >/dev/null
"${DOCKER[@]}" rm "$probe" >/dev/null
binary_bytes=$(stat -c %s "$work_dir/switchyard")
binary_mb=$((binary_bytes / 1000000))
say "binary in the image: $binary_bytes bytes (${binary_mb} MB)"
[ "$binary_bytes" -le $((MAX_BINARY_MB * 1000000)) ] ||
    die "the binary is ${binary_mb} MB, over MAX_BINARY_MB=$MAX_BINARY_MB: is [profile.dist] stripped?"
if readelf -S --wide "$work_dir/switchyard" | grep -qE '\.debug_|\.symtab'; then
    die "the binary in the image still has debug info or a symbol table (readelf -S)"
fi
say "binary in the image is stripped (no .debug_* or .symtab section)"

# --- etcd ---------------------------------------------------------------------------------------

read -r etcd_port peer_port app_port <<<"$(free_ports 3)"
etcd_url=http://127.0.0.1:$etcd_port
app_url=http://127.0.0.1:$app_port
etcdctl_() { ETCDCTL_API=3 etcdctl --endpoints="$etcd_url" "$@"; }

say "starting etcd on $etcd_url (data in $work_dir/etcd)"
etcd --name docker-check --data-dir "$work_dir/etcd" \
    --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "docker-check=http://127.0.0.1:$peer_port" \
    >"$work_dir/etcd.log" 2>&1 &
etcd_pid=$!
wait_for "etcd is up" etcdctl_ endpoint health
etcdctl_ put /cwm/acme/webhooks/hello '{"module":"log"}' >/dev/null
say "put /cwm/acme/webhooks/hello {\"module\":\"log\"}"

# --- the container ------------------------------------------------------------------------------

container=switchyard-docker-check-$$
say "running $IMAGE as $container on $app_url (--network host, CONFIG_BACKEND=etcd)"
"${DOCKER[@]}" run -d --name "$container" --network host \
    -e HOST=127.0.0.1 -e PORT="$app_port" -e NO_COLOR=1 \
    -e CONFIG_BACKEND=etcd -e ETCD_ENDPOINTS="$etcd_url" \
    "$IMAGE" >/dev/null

running() { [ "$("${DOCKER[@]}" inspect -f '{{.State.Running}}' "$container")" = true ]; }
serving() { running && curl -sf --max-time 2 -o /dev/null "$app_url/health"; }
healthy() { [ "$("${DOCKER[@]}" inspect -f '{{.State.Health.Status}}' "$container")" = healthy ]; }

deadline=$((SECONDS + DEADLINE_SECONDS))
until serving; do
    running || die "the container stopped before serving /health"
    [ "$SECONDS" -lt "$deadline" ] || die "GET /health: no 200 within ${DEADLINE_SECONDS}s"
    sleep "$POLL_INTERVAL"
done
say "GET /health -> 200"

code=$(curl -s --max-time 5 -o "$work_dir/body" -w '%{http_code}' -X POST \
    -H 'Content-Type: application/json' --data '{"hello":"world"}' "$app_url/webhook/acme/hello" ||
    true)
body=$(cat "$work_dir/body" 2>/dev/null || true)
if [ "$code" != 200 ] || ! grep -q '"accepted"' <<<"$body"; then
    die "POST /webhook/acme/hello -> ${code:-000} $body (expected 200 with \"accepted\")"
fi
say "POST /webhook/acme/hello -> 200 $body"

uid=$("${DOCKER[@]}" exec "$container" cat /proc/1/status | awk '/^Uid:/ {print $2}')
[ "$uid" = 10001 ] || die "switchyard runs as uid ${uid:-?}, expected 10001"
say "switchyard (PID 1 in the container) runs as uid 10001"

# The first probe runs one --interval (10 s) after the start.
wait_for "Docker's HEALTHCHECK reports healthy" healthy

say "docker stop (SIGTERM)"
"${DOCKER[@]}" stop -t 30 "$container" >/dev/null
exit_code=$("${DOCKER[@]}" wait "$container")
[ "$exit_code" = 0 ] || die "the container exited with $exit_code after SIGTERM, expected 0"
say "the container exited with 0 after SIGTERM"

say "OK"
