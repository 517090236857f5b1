# Everything a fresh machine needs is installed from here: uv (pinned, from PyPI)
# into a cache folder, the virtual environment from uv.lock, and the Go-built
# test binaries through hack/ (see `make binaries`).
SHELL := /bin/bash
CACHE_DIR ?= $(HOME)/.cache/azure-keyvault-issuer
UV_VERSION := 0.13.9
UV_HOME := $(CACHE_DIR)/uv-$(UV_VERSION)
UV := $(UV_HOME)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS := never

.PHONY: all venv lint typecheck test demo demo-node image binaries bench clean node-deps

all: test

$(UV):
	python3 -m venv $(UV_HOME)
	$(UV_HOME)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The dev group holds the test tools (workspace member tools/), installed editable.
$(VENV)/.synced: $(UV) pyproject.toml tools/pyproject.toml uv.lock
	$(UV) sync --locked --quiet --compile-bytecode
	touch $@

venv: $(VENV)/.synced

lint: venv
	$(VENV)/bin/ruff check src tools tests
	$(VENV)/bin/ruff format --check src tools tests
	$(VENV)/bin/lint-imports --no-cache

typecheck: venv
	$(VENV)/bin/mypy

# Debian packages of the dev cluster's node and of `make image` (idempotent apt-get).
node-deps:
	bash hack/install-node-deps.sh

# Go-built upstream binaries (kube-apiserver, etcd, kubectl, kubelet, ...) cached under $(CACHE_DIR).
binaries: venv
	$(PY) -m akv_devcluster.binaries ensure

# Test tiers (tests/README.md): `make <tier>` is `pytest -m <tier>` under a time
# limit in seconds (hack/tier.sh prints the tier's result and duration); the tier
# of a test is its folder's (tests/support/tiers.py). PYTEST_ARGS go to pytest,
# e.g. `make unit PYTEST_ARGS="-x -k crl"`.
.PHONY: unit emulator cluster deploy e2e e2e-oldest node harness node-unavailable
TIER := bash hack/tier.sh

unit: venv
	@$(TIER) unit 120 $(PYTEST_ARGS)

emulator: venv
	@$(TIER) emulator 900 $(PYTEST_ARGS)

cluster: binaries
	@$(TIER) cluster 1800 $(PYTEST_ARGS)

deploy: binaries
	@$(TIER) deploy 900 $(PYTEST_ARGS)

e2e: binaries
	@$(TIER) e2e 900 $(PYTEST_ARGS)

# The e2e tier again on the oldest supported Kubernetes and cert-manager
# (AKV_MATRIX=oldest: their kube-apiserver, kubectl, controller and CRDs;
# docs/e2e.md "Support matrix").
e2e-oldest: binaries
	@AKV_MATRIX=oldest TIER_LABEL=e2e-oldest $(TIER) e2e 900 $(PYTEST_ARGS)

# `image` first: the node tests load it (their own build is then a warm one).
node: binaries image
	@$(TIER) node 2400 $(PYTEST_ARGS)

harness: binaries
	@$(TIER) harness 1200 $(PYTEST_ARGS)

# The node tier needs root and Debian's apt (hack/node-tier-check.sh); elsewhere
# `make test` says so in one line and runs every other tier.
NODE_UNAVAILABLE := $(shell bash hack/node-tier-check.sh)
ifeq ($(NODE_UNAVAILABLE),)
NODE_TIER := node-beside
NODE_TIER_END := node-beside-wait
else
NODE_TIER := node-unavailable
NODE_TIER_END :=
endif

# In `make test` the node tier runs in the background beside e2e, e2e-oldest
# and harness (hack/beside.sh): most of its time is the kubelet's certificate
# refresh wait, idle. Each keeps its own cluster, time limit and result line;
# the node tier's output is printed whole when it ends (node-beside-wait). It
# keeps its own pytest cache: two sessions ending at once would both write
# .pytest_cache/v/cache/lastfailed.
.PHONY: node-beside node-beside-wait
node-beside: binaries image
	@bash hack/beside.sh start node 2400 -o cache_dir=.pytest_cache/beside/cache $(PYTEST_ARGS)

node-beside-wait:
	@bash hack/beside.sh wait node

node-unavailable:
	@line="tier node     skipped: $(NODE_UNAVAILABLE)"; echo "$$line"; \
	if [ -n "$$TIER_TIMES" ]; then echo "$$line" >> "$$TIER_TIMES"; fi

# ruff, mypy, then every tier in order, each its own pytest session (.ci/run runs
# this); a summary of the tiers' times at the end.
TIER_TIMES_FILE := $(abspath .pytest_cache/tier-times)
test: export TIER_TIMES := $(TIER_TIMES_FILE)
test: tier-times-reset lint typecheck unit emulator cluster deploy $(NODE_TIER) e2e e2e-oldest harness $(NODE_TIER_END)
	@echo "make test: every tier passed"; cat $(TIER_TIMES_FILE)

.PHONY: tier-times-reset
tier-times-reset:
	@mkdir -p $(dir $(TIER_TIMES_FILE)); : > $(TIER_TIMES_FILE); rm -rf .pytest_cache/beside

demo: venv
	bash hack/demo.sh

# The same journey with the controller as the chart's Pods on a real node
# (docs/devcluster.md "A node"); root, ~12 min cold on 2 cores, ~2 min warm.
demo-node: venv node-deps
	bash hack/demo-node.sh

# The controller image from the Dockerfile without Docker or a registry
# (buildah on a local Debian base); the archive path is the last line.
image: venv node-deps
	@$(PY) -m akv_devcluster.dockerfile

# Benchmarks on the local control plane + emulator (docs/benchmarks.md): writes
# bench/results.json and bench/RESULTS.md. Run it on a quiet machine (< 15 min on 2 cores).
bench: venv binaries
	$(PY) -m bench

# The same harness with small N, one concurrency, one latency (< 3 min), output in a
# temp folder; `make test` runs it through tests/bench to keep the harness working.
.PHONY: bench-quick bench-crl bench-budget
bench-quick: venv binaries
	BENCH_QUICK=1 $(PY) -m bench

# The chaos suite (issue 15, docs/chaos.md): Key Vault faults, API server/etcd
# kills, split brain, 410 Gone, leader SIGKILLs, a soak and hostile CSRs;
# writes bench/chaos.json and bench/CHAOS.md (< 20 min on 2 cores).
# CHAOS_QUICK=1 is the small variant `make test` runs (tests/chaos).
.PHONY: chaos
chaos: venv binaries
	$(PY) -m bench.chaos

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis

# Key Vault's limits and the throttling budget alone (bench/budget.py, also part of
# `make bench`): 429s for the same burst with the budget on and off, and a neighbour
# issuer's latency beside a burst on the same vault; writes bench/budget.json (~4 min).
bench-budget: venv binaries
	$(PY) -m bench.budget

# A CA pool across vaults alone (bench/pools.py, also part of `make bench`): one issuer
# on an HSM RSA-4096 key against a pool of four such keys in four emulated vaults, and
# a member's vault killed mid-burst; writes bench/pools.json (~4 min).
.PHONY: bench-pools
bench-pools: venv binaries
	$(PY) -m bench.pools

# Size and time of a 100,000-entry CRL signed through `akv-issuer ca crl` and
# the emulator (BENCH_CRL_ENTRIES to change the count); prints a table.
bench-crl: venv
	$(PY) -m bench.crl


# A release of pyproject.toml's version into dist/release/ (docs/versioning.md):
# wheel and sdist (uv build), the packaged chart (helm package), the image
# archive (as `make image`), its SBOM (syft, CycloneDX JSON) and SHA256SUMS.
# Not part of `make test`; tests/node/test_node_release.py makes one in a temp folder.
.PHONY: release
release: venv node-deps
	UV=$(UV) $(PY) -m akv_devcluster.release
