# Kiln's entry points. `make test` runs every test; `make help` lists targets.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
HELM = $(shell e2e/tools/helm.sh)
export KILN_CACHE ?= $(HOME)/.cache/kiln
# Rows of the timing summary that `make test` prints (e2e/tools/timing.sh).
export KILN_TIMINGS ?= $(CURDIR)/.out/timings.tsv

.PHONY: help test test-tools test-unit test-unit-deps test-crds test-chart test-images lint fmt crds chart-crds images bench-train bench-serve bench-endpoint bench-tuning fuzz-serve

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

# The suites of `make test`, in order; the first failure stops the run.
SUITES = lint test-tools test-unit test-crds test-chart test-images test-e2e

# The host is checked first (e2e/cluster.sh preflight: root, cgroups, Go,
# Python, disk, kernel), so a missing piece fails at once, not 40 minutes in.
# While the first suites compile and run Rust, the cluster's binaries and the
# e2e images are built, the cluster is brought up and those images are loaded
# into its nodes, in the background (e2e/tools/prefetch.sh, log in
# .out/prefetch.log); test-e2e then finds them cached and loaded, or waits on
# their locks for the build or load in progress. The summary lists every suite and build.
test: ## every test: unit, CRD drift, chart, images, e2e on the local cluster; ends with a timing summary
	@e2e/tools/timing.sh start
	@e2e/cluster.sh preflight
	@e2e/tools/prefetch.sh start
	@trap 'e2e/tools/prefetch.sh stop' EXIT; \
	status=0; \
	for suite in $(SUITES); do \
	  e2e/tools/timing.sh suite $$suite $(MAKE) --no-print-directory $$suite || { status=$$?; break; }; \
	done; \
	e2e/tools/prefetch.sh stop; \
	e2e/tools/timing.sh summary; \
	if [[ $$status == 0 ]]; then echo "make test: all suites passed"; else echo "make test: $$suite FAILED"; fi; \
	exit $$status

test-tools: ## the cache helpers of e2e/tools: parallel callers on an empty cache, failed builds, locks
	e2e/tools/tests/cache.sh

# kiln-runtime links libtorch: whatever compiles the whole workspace gets the
# PyTorch 2.11.0 environment (installed once under KILN_CACHE).
TORCH_ENV = eval "$$(images/runtime/torch-env.sh)" &&

test-unit-deps: ## what the unit tests need, built before they start: torch, fixtures, SeaweedFS, the v2 clients
	@echo "test-unit: the torch environment"; images/runtime/torch-env.sh >/dev/null
	@echo "test-unit: the scikit-learn fixtures"; images/runtime/fixtures.sh >/dev/null
	@echo "test-unit: SeaweedFS, the S3 store of the storage tests"; e2e/tools/seaweedfs.sh >/dev/null
	@echo "test-unit: Triton's Python clients"; images/runtime/python-env.sh clients >/dev/null

# The tests compile while test-unit-deps builds what they need (on a cold
# machine SeaweedFS alone takes minutes); they start once both are done. Each
# script prints its cached entry's path at once the second time.
test-unit: ## Rust unit and integration tests of the workspace
	($(TORCH_ENV) $(CARGO) test --workspace --locked --no-run) & build=$$!; \
	$(MAKE) --no-print-directory test-unit-deps || { wait $$build || true; exit 1; }; \
	wait $$build; \
	$(TORCH_ENV) KILN_FIXTURES="$$(images/runtime/fixtures.sh)" KILN_WEED="$$(e2e/tools/seaweedfs.sh)" \
	  KILN_CLIENTS_PYTHON="$$(images/runtime/python-env.sh clients)" $(CARGO) test --workspace --locked

lint: ## rustfmt, clippy with warnings as errors, shellcheck of every script
	$(CARGO) fmt --all -- --check
	source e2e/tools/common.sh && apt_ensure shellcheck shellcheck
	git ls-files '*.sh' | xargs shellcheck -x -S warning
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

bench-train: ## kiln-runtime train vs scikit-learn: times, ratios and the k-means machine limit (ONLY=kmeans,pca,... for a subset)
	eval "$$(images/runtime/torch-env.sh --with-sklearn)" && \
	  $(CARGO) build --release --locked -p kiln-runtime && \
	  python images/runtime/bench/bench_train.py "$$(realpath "$${CARGO_TARGET_DIR:-target}")/release/kiln-runtime" "$${KILN_CACHE:-$$HOME/.cache/kiln}/bench-train" "$(ONLY)"

bench-serve: ## kiln-runtime serve vs MLServer and the bare HTTP limit: req/s, p50, p99 and ratios (wrk)
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -q wrk; } >/dev/null || { echo "bench-serve needs wrk (apt-get install wrk)"; exit 1; }
	py="$$(images/runtime/python-env.sh mlserver)" && \
	  $(TORCH_ENV) $(CARGO) build --release --locked -p kiln-runtime --bin kiln-runtime --example bare_http && \
	  target="$$(realpath "$${CARGO_TARGET_DIR:-target}")/release" && \
	  "$$py" images/runtime/bench/bench_serve.py "$$target/kiln-runtime" "$$target/examples/bare_http" "$${KILN_CACHE:-$$HOME/.cache/kiln}/bench-serve"

# One serve and one router (release builds) on loopback: wrk straight to
# serve and through the router, alternating rounds; then capture, a shadow
# and a one-thread router. About 4 minutes once built; timings never fail it.
bench-endpoint: ## kiln-router's own cost: req/s, p50, p99 straight to serve vs through the router, with capture and a shadow (wrk)
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -q wrk; } >/dev/null || { echo "bench-endpoint needs wrk (apt-get install wrk)"; exit 1; }
	$(TORCH_ENV) $(CARGO) build --release --locked -p kiln-runtime --bin kiln-runtime -p kiln-router --bin kiln-router && \
	  target="$$(realpath "$${CARGO_TARGET_DIR:-target}")/release" && \
	  python3 operator/router/bench/bench_endpoint.py "$$target/kiln-runtime" "$$target/kiln-router" "$${KILN_CACHE:-$$HOME/.cache/kiln}/bench-endpoint"

bench-tuning: ## kiln-tuning's Bayesian, TPE and random search vs Optuna's samplers: median regret per budget, hypervolume vs NSGA-II (SEEDS=20, ONLY=branin,...)
	py="$$(images/runtime/python-env.sh optuna)" && \
	  $(CARGO) build --release --locked -p kiln-tuning --example bench && \
	  "$$py" operator/tuning/bench/bench_tuning.py "$$(realpath "$${CARGO_TARGET_DIR:-target}")/release/examples/bench" "$(SEEDS)" "$(ONLY)"

fuzz-serve: ## fuzz the server's request parsers (FUZZ_SECONDS per target, default 120)
	images/runtime/fuzz/run.sh $${FUZZ_SECONDS:-120}

# ---- The local Kubernetes (e2e/, see README.md "The local cluster") ----
.PHONY: tools cluster-up cluster-down cluster-delete cluster-kubeconfig cluster-status cluster-memory cluster-reclaim cluster-logs cluster-images test-e2e test-e2e-scale demo

tools: ## build every binary of the local cluster, kwok included (cached by version in ~/.cache/kiln/bin)
	e2e/tools/all.sh --kwok >/dev/null

cluster-up: ## bring the local cluster up from e2e/cluster.yaml (reuses a running one)
	e2e/cluster.sh up

cluster-down: ## stop the local cluster (keeps its state, images and caches)
	e2e/cluster.sh down

cluster-delete: ## stop the local cluster and forget its state (PKI, etcd, node volumes)
	e2e/cluster.sh delete

cluster-kubeconfig: ## print the path of the local cluster's admin kubeconfig
	@e2e/cluster.sh kubeconfig

cluster-status: ## control-plane processes, node containers and Nodes
	e2e/cluster.sh status

cluster-memory: ## the running cluster's memory per component (PSS and RSS, MiB)
	e2e/cluster.sh memory

cluster-reclaim: ## simulate a spot reclaim of NODE (make cluster-reclaim NODE=kiln-spot-0)
	e2e/cluster.sh reclaim $(NODE)

cluster-logs: ## copy every log of the local cluster into .out/cluster-logs
	e2e/cluster.sh export-logs .out/cluster-logs

cluster-images: cluster-up ## build the e2e, PyTorch and Kiln images and load them into the nodes
	e2e/images.sh build
	e2e/images.sh build-torch
	if [[ -x images/build.sh ]]; then images/build.sh all; fi
	e2e/images.sh load

test-e2e: cluster-images ## the e2e suite against the local cluster (logs in .out/cluster-logs when it fails)
	$(CARGO) build --locked -q -p kubectl-kiln
	KILN_KUBECTL_KILN="$${CARGO_TARGET_DIR:-$(CURDIR)/target}/debug/kubectl-kiln" \
	  $(CARGO) test --locked -p kiln-e2e --test cluster --test kiln -- --ignored --test-threads=4 \
	  || { e2e/cluster.sh export-logs .out/cluster-logs; exit 1; }

test-e2e-scale: ## scale tests on kwok's fake GPU nodes (switches kwok on)
	KILN_KWOK=1 e2e/cluster.sh up
	KILN_KWOK=1 $(CARGO) test --locked -p kiln-e2e --test scale -- --ignored --nocapture

demo: cluster-images ## the quickstart on the local cluster: install Kiln with Helm, train, register, approve, deploy, predict
	e2e/demo.sh
