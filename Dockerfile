# syntax=docker/dockerfile:1
# Switchyard image: built with the Rust toolchain, run on slim Debian as a non-root user.
#
#   docker build -t switchyard .
#   docker run --rm -p 8000:8000 switchyard                     # file backend, sample config/
#   docker run --rm -p 8000:8000 -e CONFIG_BACKEND=etcd \
#       -e ETCD_ENDPOINTS=http://etcd:2379 switchyard           # etcd backend
#
# Every setting is an environment variable (see `switchyard --help`).

# --- build --------------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder

# protoc: the etcd-client crate compiles etcd's .proto files in its build script.
# (The base image already has the C toolchain, libssl-dev and zlib1g-dev that librdkafka needs.)
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The cache mounts keep downloaded crates and compiled dependencies between builds; the binary is
# copied out of the cached target dir in the same step, since the cache is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && cp target/release/switchyard /usr/local/bin/switchyard

# --- run ----------------------------------------------------------------------------------------
FROM debian:bookworm-slim

# libssl3: Kafka and Redis TLS; ca-certificates: to verify servers; curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home \
        --shell /usr/sbin/nologin switchyard

COPY --from=builder /usr/local/bin/switchyard /usr/local/bin/switchyard
# The file backend's defaults (config/webhooks.json, config/connections.json) resolve from /app.
COPY config/ /app/config/
WORKDIR /app

# Numeric, so orchestrators can verify "runs as non-root" without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000

# 200 once config is loaded; 503 while starting (e.g. etcd not reached yet), hence the start period.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${PORT:-8000}/health" || exit 1

# Exec form: switchyard is PID 1 and receives SIGTERM itself, then drains in-flight requests.
ENTRYPOINT ["switchyard"]
