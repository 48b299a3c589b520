# Switchyard image: a stripped `--profile dist` binary on Debian bookworm, run as a non-root user.
#
# Two ways to get the binary in:
#   docker build -t switchyard .                      # compile in the Rust image (needs BuildKit)
#   cargo build --profile dist --locked && mkdir -p dist && cp target/dist/switchyard dist/
#   docker build --target prebuilt -t switchyard .    # copy that binary; no Rust image needed
#
# Build args (the base images are args so a local base can stand in where no registry is reachable):
#   BUILDER_IMAGE  rust:1-bookworm       toolchain of the compiling stage
#   RUNTIME_IMAGE  debian:bookworm-slim  any Debian bookworm with apt, e.g. a `docker import`ed
#                                        debootstrap minbase (scripts/docker-check.sh makes one)
#   PREBUILT       dist/switchyard       binary that `--target prebuilt` copies (path in the context)
# Add `--network host` to `docker build` where the daemon runs without a bridge (--bridge=none).
#
#   docker run --rm -p 8000:8000 switchyard                                  # file backend, config/
#   docker run --rm --network host -e CONFIG_BACKEND=etcd \
#       -e ETCD_ENDPOINTS=http://127.0.0.1:2379 switchyard                   # etcd, host network
# Every setting is an environment variable (see `switchyard --help`).
#
# Stage order matters: the legacy builder (DOCKER_BUILDKIT=0, or a client without buildx) builds
# every stage up to the target, so `runtime` and `prebuilt` come before the Rust stage and
# `--target prebuilt` never needs the Rust image. There is no `# syntax=` line: it would make
# BuildKit pull a frontend image, and the built-in frontend already knows `RUN --mount`.

ARG BUILDER_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# --- runtime: everything but the binary ---------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime

# libssl3: Kafka and Redis TLS; ca-certificates: to verify servers; curl: the health check.
# `apt-get clean`: a debootstrap base lacks the slim image's hook that drops apt's caches (80 MB).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates curl libssl3 \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home \
        --shell /usr/sbin/nologin switchyard \
    && mkdir -p /var/lib/switchyard/spool && chown -R 10001:10001 /var/lib/switchyard

# The file backend's defaults (config/webhooks.json, config/connections.json) resolve from /app.
COPY config/ /app/config/
WORKDIR /app

# All interfaces: reachable through -p, and on every host address with --network host (set
# HOST=127.0.0.1 there to keep it on loopback).
ENV HOST=0.0.0.0 PORT=8000

# The spool (deliveries a destination could not take yet) lives on a volume: give each instance
# a persistent volume of its own (a StatefulSet's volumeClaimTemplates), or it is lost with the
# container.
ENV SPOOL_DIR=/var/lib/switchyard/spool
VOLUME /var/lib/switchyard

# Numeric, so orchestrators can verify "runs as non-root" without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000

# 200 once config is loaded; 503 while starting (e.g. etcd not reached yet), hence the start period.
# Probes the address switchyard listens on: loopback for the wildcard addresses, else HOST itself.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD h="${HOST:-0.0.0.0}"; \
        case "$h" in 0.0.0.0) h=127.0.0.1 ;; ::) h='[::1]' ;; *:*) h="[$h]" ;; esac; \
        curl -fsS -o /dev/null "http://$h:${PORT:-8000}/health" || exit 1

# Exec form: switchyard is PID 1 and receives SIGTERM itself, then drains in-flight requests.
ENTRYPOINT ["switchyard"]

# --- prebuilt: a binary built outside Docker ----------------------------------------------------
FROM runtime AS prebuilt
ARG PREBUILT=dist/switchyard
COPY ${PREBUILT} /usr/local/bin/switchyard

# --- builder: compile in the Rust image ---------------------------------------------------------
FROM ${BUILDER_IMAGE} AS builder

# protoc: the etcd-client crate compiles etcd's .proto files in its build script; libprotobuf-dev
# has the google/protobuf/*.proto they import (only recommended by protobuf-compiler, so named).
# (The base image already has the C toolchain, libssl-dev and zlib1g-dev that librdkafka needs.)
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The cache mounts keep downloaded crates and compiled dependencies between builds; the binary is
# copied out of the cached target dir in the same step, since the cache is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked \
    && cp target/dist/switchyard /usr/local/bin/switchyard

# --- compiled (the default target): runtime + the binary from the builder -----------------------
FROM runtime AS compiled
COPY --from=builder /usr/local/bin/switchyard /usr/local/bin/switchyard
