# The two commands of the README: `make demo` (the main job) and `make test` (the whole suite).
SHELL := /bin/bash
CARGO ?= cargo
KUBECTL = $(shell source scripts/lib.sh && echo $$KONTRAST_CACHE)/kubernetes/bin/kubectl

.PHONY: demo test setup build lint unit cluster-up cluster-down cluster-status clean-state

## demo: set up, build, start the local cluster, run the demo workload on it, tear down
demo: setup build
	scripts/demo.sh

## test: set up, then formatting, clippy and every test (unit, integration, real-cluster)
test: setup lint
	@# The NCCL path must keep compiling and linking without a GPU; the default build follows, so
	@# target/debug/kontrast is the Gloo-only binary the tests run.
	$(CARGO) build -p kontrast-worker --features nccl --bins
	$(CARGO) build --workspace --bins
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

## setup: Debian packages, Python venv with torch 2.13.0, Kubernetes v1.20.2 from source (cached)
setup:
	scripts/setup.sh

## build: every binary of the workspace (kontrast, kontrast-dev, kontrast-node, ...)
build:
	$(CARGO) build --workspace --bins

## lint: formatting, clippy, and the dependency policy of deny.toml (docs/licences.md)
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@# cargo-deny comes from scripts/setup-tools.sh; offline, so no advisories (they need the network).
	PATH="$$(source scripts/lib.sh && echo $$KONTRAST_CACHE)/tools/bin:$$PATH" $(CARGO) deny --offline check --hide-inclusion-graph licenses bans sources

cluster-up: build
	target/debug/kontrast-dev cluster up
cluster-down:
	target/debug/kontrast-dev cluster down
cluster-status:
	target/debug/kontrast-dev cluster status
