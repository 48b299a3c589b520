#!/usr/bin/env bash
# Installs what the build, the tests and the benchmarks need, skipping what is present:
#   etcd + etcdctl (Debian etcd-server, etcd-client), redis-server, protoc (etcd-client's build),
#   wrk (benchmarks), strace (slow-disk tests), promtool (alert rules), python3 with venv and node with npm (provider SDK tests), and the tansu Kafka-protocol broker (crates.io; ~15 min to build once,
#   then found in ~/.cargo/bin).
# Idempotent: safe to run before every `make test`. With `--build`, only what compiling needs
# (protoc, libssl-dev, pkg-config): `make run` uses that on a fresh machine.
set -euo pipefail

build_only=false
if [ "${1:-}" = "--build" ]; then build_only=true; fi

TANSU_VERSION=0.6.0
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

need_apt=()
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
dpkg -s libssl-dev >/dev/null 2>&1 || need_apt+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
if ! $build_only; then
    command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
    command -v etcdctl >/dev/null 2>&1 || need_apt+=(etcd-client)
    command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
    command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
    command -v curl >/dev/null 2>&1 || need_apt+=(curl)
    # The scenarios read JSON with jq and sign requests with openssl.
    command -v jq >/dev/null 2>&1 || need_apt+=(jq)
    command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
    # Slow-disk tests delay the router's writes with strace's fault injection.
    command -v strace >/dev/null 2>&1 || need_apt+=(strace)
    # Provider SDK tests install the providers' libraries into a virtualenv.
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
    # Linear's library (@linear/sdk) is only on npm.
    command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
# promtool (the alert rules' checks and unit tests) comes with Debian's prometheus package;
# installed alone, without the exporters it recommends.
need_promtool=false
if ! $build_only && ! command -v promtool >/dev/null 2>&1; then need_promtool=true; fi
if [ "${#need_apt[@]}" -gt 0 ] || $need_promtool; then
    echo "install-deps: installing ${need_apt[*]}"
    $SUDO apt-get update -qq
    if [ "${#need_apt[@]}" -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
    fi
    if $need_promtool; then
        echo "install-deps: installing prometheus (for promtool)"
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
            prometheus >/dev/null
    fi
    # The Debian package starts a system redis on :6379; tests start their own on free ports.
    if printf '%s\n' "${need_apt[@]}" | grep -qx redis-server; then
        $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
    fi
fi

if $build_only; then
    echo "install-deps: build dependencies present (protoc $(protoc --version | awk '{print $2}'))"
    exit 0
fi

# kubernetes-validate (PyPI) checks the manifests in deploy/kubernetes offline (make manifests),
# schemathesis tests the running router against openapi.yaml (a test in make test), and rotel
# (a Rust OpenTelemetry collector shipped on PyPI) receives the traces tests export, in a
# virtualenv of the project's own under target/.
TOOLS_VENV="$(dirname "$0")/../target/tools-venv"
ROTEL_VERSION=0.0.1a15
if [ ! -x "$TOOLS_VENV/bin/kubernetes-validate" ] || [ ! -x "$TOOLS_VENV/bin/schemathesis" ] \
    || [ ! -x "$TOOLS_VENV/bin/rotel-agent" ]; then
    echo "install-deps: installing kubernetes-validate, schemathesis and rotel into $TOOLS_VENV"
    python3 -m venv "$TOOLS_VENV"
    "$TOOLS_VENV/bin/pip" install -q kubernetes-validate schemathesis "rotel==$ROTEL_VERSION"
    # The wheel carries the collector's binary inside the package; tests start it by this name.
    agent="$(find "$TOOLS_VENV/lib" -path '*/site-packages/rotel/rotel-agent' -type f | head -n1)"
    [ -n "$agent" ] || { echo "install-deps: rotel-agent not found in the rotel wheel" >&2; exit 1; }
    ln -sf "$(realpath "$agent")" "$TOOLS_VENV/bin/rotel-agent"
fi

if ! tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    echo "install-deps: building tansu $TANSU_VERSION (takes a while, once)"
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore
fi

echo "install-deps: etcd $(etcd --version 2>/dev/null | head -n1 | awk '{print $3}')," \
    "redis $(redis-server --version | awk '{print $3}' | cut -d= -f2)," \
    "tansu $(tansu --version 2>/dev/null | awk '{print $2}')," \
    "protoc $(protoc --version | awk '{print $2}')"
