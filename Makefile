# Kiln's entry points. `make test` runs every test; `make help` lists targets.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
HELM = $(shell e2e/tools/helm.sh)

.PHONY: help test test-unit test-crds test-chart test-images lint fmt crds chart-crds images bench-train

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

test-chart: ## helm lint, rendered-manifest checks and schema refusals of charts/kiln
	charts/tests/run.sh

images: ## build every defined container image (kiln/NAME:<version> and kiln/NAME:dev)
	images/build.sh all

test-images: ## build the operator and runtime images and check them (non-root, locked down, runtime trains)
	images/operator/test.sh
	images/runtime/test.sh

bench-train: ## kiln-runtime train vs scikit-learn: times, ratios and the k-means machine limit
	eval "$$(images/runtime/torch-env.sh --with-sklearn)" && \
	  $(CARGO) build --release --locked -p kiln-runtime && \
	  python images/runtime/bench/bench_train.py "$$(realpath "$${CARGO_TARGET_DIR:-target}")/release/kiln-runtime" "$${KILN_CACHE:-$$HOME/.cache/kiln}/bench-train"
