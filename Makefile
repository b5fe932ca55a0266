# Kiln's entry points. `make test` runs every test; `make help` lists targets.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
HELM = $(shell e2e/tools/helm.sh)

.PHONY: help test test-unit test-crds test-chart test-images lint fmt crds chart-crds image-runtime test-image-runtime bench-train

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

test: lint test-unit test-crds test-chart test-images ## every test: unit, CRD drift, chart, images
	@echo "make test: all suites passed"

# kiln-runtime links libtorch: whatever compiles the whole workspace gets the
# PyTorch 2.11.0 environment (installed once under KILN_CACHE).
TORCH_ENV = eval "$$(images/runtime/torch-env.sh)" &&

test-unit: ## Rust unit and integration tests of the workspace
	$(TORCH_ENV) KILN_FIXTURES="$$(images/runtime/fixtures.sh)" $(CARGO) test --workspace --locked

lint: ## rustfmt and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(TORCH_ENV) $(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt: ## format the code
	$(CARGO) fmt --all

crds: ## regenerate crds/*.yaml and the chart's copy from the Rust types
	$(CARGO) run --locked -q -p kiln-api --bin crdgen -- crds charts/kiln/crds

test-crds: ## fail when crds/ differs from what the types generate
	$(CARGO) run --locked -q -p kiln-api --bin crdgen -- --check crds charts/kiln/crds

image-runtime: ## build the CPU kiln-runtime image (kiln/runtime:dev) in the project's Docker engine
	images/runtime/stage.sh "$${KILN_CACHE:-$$HOME/.cache/kiln}/stage/runtime"
	eval "$$(e2e/docker/engine.sh up)" && docker build -q -t kiln/runtime:dev "$${KILN_CACHE:-$$HOME/.cache/kiln}/stage/runtime"

test-image-runtime: image-runtime ## the runtime image starts, runs as non-root and trains a tiny job
	eval "$$(e2e/docker/engine.sh up)" && images/runtime/test-image.sh kiln/runtime:dev

bench-train: ## kiln-runtime train vs scikit-learn: times, ratios and the k-means machine limit
	eval "$$(images/runtime/torch-env.sh --with-sklearn)" && \
	  $(CARGO) build --release --locked -p kiln-runtime && \
	  python images/runtime/bench/bench_train.py "$$(realpath "$${CARGO_TARGET_DIR:-target}")/release/kiln-runtime" "$${KILN_CACHE:-$$HOME/.cache/kiln}/bench-train"
