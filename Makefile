# Switchyard developer commands. `make help` lists them.
.PHONY: help run deps build test lint fmt bench fuzz ci alerts manifests scenario scenarios docker-check

CARGO ?= cargo

help:
	@echo "make run       run with the file backend and the sample config/ (no services needed)"
	@echo "make test      install test dependencies if missing, then run every test"
	@echo "make lint      rustfmt check and clippy -D warnings"
	@echo "make fmt       format the code"
	@echo "make bench     run the benchmarks and print figures"
	@echo "make fuzz      the config fuzz tests with many cases (FUZZ_CASES, default 50000) and the spool's model test (MODEL_CASES, default 500)"
	@echo "make scenario  run scenarios/05_etcd_namespaces (needs etcd, installed by make deps)"
	@echo "make ci        what CI runs: deps, lint, test, alerts, manifests, scenarios"
	@echo "make scenarios run the scenarios (etcd, Redis, Kafka, http + sealed) against the debug build"
	@echo "make manifests validate deploy/kubernetes offline (kubernetes-validate)"
	@echo "make alerts    check and unit-test the Prometheus alert rules (deploy/prometheus)"
	@echo "make docker-check  build the image here and run it against etcd (not part of test or ci)"

# The build needs protoc (etcd-client's build script), libssl-dev and pkg-config (rdkafka's TLS):
# installed here when missing, so a fresh machine runs the product with this one command.
run:
	@./scripts/install-deps.sh --build
	$(CARGO) run --release

deps:
	@./scripts/install-deps.sh

build: deps
	$(CARGO) build --all-targets --locked

# nextest when installed (parallel, per-test timeouts); plain cargo test otherwise.
test: deps
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --locked --no-fail-fast; \
	else \
		$(CARGO) test --locked --no-fail-fast; \
	fi

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings
	@# Each client crate is imported in exactly one folder.
	@! grep -rn "actix_web" src --include=*.rs | grep -v "^src/http/" | grep -v "^src/startup.rs" || \
		{ echo "actix_web imported outside src/http and startup.rs"; exit 1; }
	@! grep -rln "etcd_client" src --include=*.rs | grep -v "^src/provider/etcd/" || \
		{ echo "etcd_client imported outside src/provider/etcd"; exit 1; }
	@! grep -rln "rdkafka::" src --include=*.rs | grep -v "^src/connections/kafka.rs" || \
		{ echo "rdkafka imported outside src/connections/kafka.rs"; exit 1; }
	@# Two files, two stores: the spool's, and the channels' (connector mode).
	@! grep -rln "redb::" src --include=*.rs | grep -v "^src/spool/store.rs" | grep -v "^src/connect/store.rs" || \
		{ echo "redb imported outside src/spool/store.rs and src/connect/store.rs"; exit 1; }
	@! grep -rlnE "use redis::|redis::(cmd|pipe|aio|Client|RedisError)" src --include=*.rs | \
		grep -v "^src/connections/redis.rs" || \
		{ echo "the redis crate imported outside src/connections/redis.rs"; exit 1; }
	@! grep -rlnE "opentelemetry(_sdk|_otlp)?::" src --include=*.rs | grep -v "^src/telemetry/trace.rs" || \
		{ echo "OpenTelemetry imported outside src/telemetry/trace.rs"; exit 1; }
	@# The http module's client, and the connector's long poll.
	@! grep -rln "reqwest::" src --include=*.rs | grep -v "^src/connections/http.rs" | grep -v "^src/connector/link.rs" || \
		{ echo "reqwest imported outside src/connections/http.rs and src/connector/link.rs"; exit 1; }
	@! grep -rlnE "actix_ws::" src --include=*.rs | grep -v "^src/http/connect.rs" || \
		{ echo "actix_ws imported outside src/http/connect.rs"; exit 1; }
	@! grep -rlnE "tokio_tungstenite::|rustls::" src --include=*.rs | grep -v "^src/connector/link.rs" || \
		{ echo "tokio_tungstenite or rustls imported outside src/connector/link.rs"; exit 1; }
	@! grep -rln "aes_gcm::" src --include=*.rs | grep -v "^src/config/seal.rs" || \
		{ echo "aes_gcm imported outside src/config/seal.rs"; exit 1; }
	@# Dependencies point one way: http -> dispatch -> webhook -> modules -> connections -> config.
	@! grep -rnE "crate::(cache|provider|http|dispatch|webhook)\b" src/connections src/modules || \
		{ echo "connections/ and modules/ must not import the cache or anything above them"; exit 1; }
	@! grep -rnE "crate::(cache|provider|http|dispatch|webhook|modules|verify|connections)\b" src/config || \
		{ echo "config/ is the ground floor: it imports none of the layers above"; exit 1; }
	@! grep -rnE "crate::(cache|provider|http|dispatch|webhook|redelivery|verify|tools)\b" src/spool || \
		{ echo "spool/ sits below dispatch: it knows deliveries and keys, never routes or HTTP"; exit 1; }

fmt:
	$(CARGO) fmt --all

# The structure-aware config fuzz tests (`src/provider/fuzz.rs`, the parser fuzz in
# `src/webhook.rs`) with many more cases than `make test` runs.
FUZZ_CASES ?= 50000
MODEL_CASES ?= 500
# The Kubernetes manifests, validated offline against the API's schemas (kubernetes-validate,
# installed by `make deps`; the ServiceMonitor is a CRD without a schema there: a warning).
manifests: deps
	target/tools-venv/bin/kubernetes-validate --strict --quiet deploy/kubernetes/*.yaml

# The Prometheus alert rules: valid, and their unit tests pass (promtool from `make deps`).
alerts: deps
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/alerts.test.yml

fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release --locked --lib fuzz
	MODEL_CASES=$(MODEL_CASES) $(CARGO) test --release --locked --lib spool::model

bench: deps
	$(CARGO) bench --bench http_throughput
	$(CARGO) bench --bench config_load

scenario: deps
	$(CARGO) build --release
	./scenarios/05_etcd_namespaces/run.sh

# The operator scenarios (etcd namespaces, Redis, Kafka, http with sealed secrets) against the binary the tests
# built, with etcd, Redis and tansu from `make deps`: a scenario cannot go stale unnoticed.
# `cargo test --no-run` builds the binary with the tests' feature set: after `make test` it is a no-op,
# where `cargo build` would build every dependency a second time for the binary's own feature set.
scenarios: deps
	$(CARGO) test --locked --no-run
	for s in 05_etcd_namespaces 10_redis 20_kafka 30_http_sealed; do \
		SWITCHYARD_BIN=target/debug/switchyard ./scenarios/$$s/run.sh || exit 1; \
	done

ci: deps lint test alerts manifests scenarios
	@if command -v cargo-deny >/dev/null 2>&1; then $(CARGO) deny check; fi

# Builds the image from the Dockerfile (local debootstrap base, host-built binary) and runs it
# against a real etcd; starts dockerd when none answers. Not part of test or ci.
docker-check:
	./scripts/docker-check.sh
