#!/usr/bin/env bash
# Installs what the tests need (etcd, protoc for etcd-client's build), skipping what is present.
# Idempotent: safe to run before every `make test`.
set -euo pipefail

need_apt=()
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need_apt+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)

if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "install-deps: installing ${need_apt[*]}"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
echo "install-deps: etcd $(etcd --version 2>/dev/null | head -n1 | awk '{print $3}'), protoc $(protoc --version | awk '{print $2}')"
