# Vocelio Gateway developer entry points. `make run` and `make test` work on a
# fresh machine: they create .venv and install what they need.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8080
# HTTPS port of `make run` (a development certificate, docs/tls.md).
HTTPS_PORT ?= 8443

.PHONY: help run test lint unit cluster-bins dev-cluster system-deps bench bench-operator schema images kind-up kind-deploy clean
.PHONY: lock dev-control-plane
.PHONY: bench-workers
.DEFAULT_GOAL := help

## help: list the targets with what they do (this text)
help:
	@echo "Vocelio Gateway - make targets:"
	@awk '/^## [a-z-]+: / { line = substr($$0, 4); i = index(line, ": "); printf "  %-16s %s\n", substr(line, 1, i - 1), substr(line, i + 2) }' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml requirements-dev.lock
	@echo "setup: installing the Python dependencies into $(VENV) from requirements-dev.lock (hashes checked; 1-3 minutes the first time)"
	@start=$$(date +%s); \
	test -x $(BIN)/python || $(PY) -m venv $(VENV); \
	$(BIN)/pip install --quiet --upgrade pip && \
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock && \
	$(BIN)/pip install --quiet --no-build-isolation -e '.[dev]' && \
	touch $(STAMP) && \
	echo "setup: Python dependencies installed in $$(( $$(date +%s) - start ))s"

## run: start the standalone gateway with the 18 example services and demo backends (HTTP on PORT, HTTPS on HTTPS_PORT)
run: $(STAMP)
	$(BIN)/vocelio-gateway standalone --resources examples/resources --demo-backends --port $(PORT) \
		--https-port $(HTTPS_PORT)

## system-deps: Debian packages the tests need (redis-server, nginx, wrk, iproute2, promtool)
system-deps:
	bash scripts/install-system-deps.sh

## cluster-bins: build kube-apiserver/controller-manager/etcd/kubectl and helm into .cache/bin
cluster-bins:
	@echo "cluster-bins: Kubernetes control plane and helm for the cluster tests, built from source with Go into .cache/bin"
	@echo "cluster-bins: about 8-10 minutes on 2 cores the first time, seconds when cached"
	@start=$$(date +%s); bash tests/controlplane/build.sh && \
	echo "cluster-bins: ready in $$(( $$(date +%s) - start ))s"

## dev-cluster: a real single-node cluster (containerd, kubelet, kube-proxy) with the built images; prints how to helm install (Ctrl-C stops it)
dev-cluster: $(STAMP) system-deps cluster-bins
	$(BIN)/python -m tests.harness.node_devcluster

## dev-control-plane: only the test control plane (no node), printing a KUBECONFIG line (Ctrl-C stops it)
dev-control-plane: $(STAMP) cluster-bins
	$(BIN)/python -m tests.harness.devcluster

## lint: ruff, mypy --strict and the import-layering contracts
lint: $(STAMP)
	$(BIN)/ruff check contract proxy operator tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

## test: install everything the tests need, then lint and run the whole suite
test: $(STAMP) system-deps cluster-bins lint
	@echo "test: running the whole suite (unit, proxy, cluster, helm: 10-20 minutes)"
	$(BIN)/pytest

## unit: the unit tests only (seconds; no cluster, no Debian packages)
unit: $(STAMP)
	$(BIN)/pytest tests/unit

## schema: regenerate the checked-in GatewayConfig JSON Schema
schema: $(STAMP)
	$(BIN)/vocelio-proxy schema > schema/gateway-config.schema.json

## bench: throughput/latency of the gateway beside nginx and a minimal aiohttp proxy (prints figures)
bench: $(STAMP) system-deps
	$(BIN)/python bench/proxy_bench.py

## images: build both images with docker or podman (offline Debian base when no registry answers)
images:
	bash scripts/images/build.sh

## lock: regenerate requirements.lock and requirements-dev.lock (pins with hashes) from pyproject.toml
lock: $(STAMP)
	bash scripts/lock.sh

## kind-up: a local kind cluster (needs Docker and kind; cannot run on the CI machines)
kind-up:
	kind create cluster --name vocelio

## kind-deploy: load the images into kind and install the chart with development values
kind-deploy: images
	kind load docker-image localhost/vocelio/gateway-operator:0.1.0 localhost/vocelio/gateway-proxy:0.1.0 --name vocelio
	helm upgrade --install vocelio charts/vocelio-gateway -n vocelio-system --create-namespace \
	  -f charts/vocelio-gateway/values-development.yaml --set image.repository=localhost/vocelio --set image.tag=0.1.0

## bench-workers: gateway with workers 1 and 2 beside nginx with worker_processes 1 and 2 (prints figures)
bench-workers: $(STAMP) system-deps
	$(BIN)/python bench/proxy_bench.py --workers-compare

## bench-operator: reconcile latency and render time (prints figures)
bench-operator: $(STAMP) cluster-bins
	$(BIN)/python -m bench.operator_bench

## clean: remove the virtualenv, the built cluster binaries and the tool caches
clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache

# --- Chart operations and checks (issue 14) ---
.PHONY: crds-apply chart-readme chart-checks
KUBECTL ?= kubectl
CHECKS_VENV := .cache/chart-checks
CHECKS_STAMP := $(CHECKS_VENV)/.installed

## crds-apply: install or upgrade the CRDs on kubectl's current cluster (helm never upgrades crds/)
crds-apply:
	$(KUBECTL) apply --server-side --force-conflicts --field-manager=vocelio-gateway-crds -f crds/

## chart-readme: regenerate charts/vocelio-gateway/README.md from the values' `# --` comments
chart-readme: $(STAMP)
	$(BIN)/python scripts/chart_readme.py

# checkov and kubernetes-validate, at the versions of pyproject's chart-checks extra, in their own
# venv: checkov pins packaging<24, which pytest 9 (in .venv) refuses.
$(CHECKS_STAMP): pyproject.toml
	@echo "chart-checks: installing checkov and kubernetes-validate into $(CHECKS_VENV) (about a minute)"
	test -x $(CHECKS_VENV)/bin/python || $(PY) -m venv $(CHECKS_VENV)
	$(PY) -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["chart-checks"]))' > $(CHECKS_VENV)/requirements.txt
	$(CHECKS_VENV)/bin/pip install --quiet -r $(CHECKS_VENV)/requirements.txt
	touch $(CHECKS_STAMP)

## chart-checks: the chart policy tools the tests run (checkov, kubernetes-validate)
chart-checks: $(CHECKS_STAMP)

test: chart-checks

# --- Compiled hot path (issue 16) ---
.PHONY: compile test-compiled

## compile: compile the hot-path modules (pyproject [tool.vocelio.compiled]) with mypyc; used while their sources are unchanged
compile: $(STAMP)
	$(BIN)/python scripts/compile_hot_path.py

## test-compiled: the proxy's unit, wire and adversarial tests against the compiled hot path (the suite itself runs pure Python)
test-compiled: compile
	VOCELIO_COMPILED=require $(BIN)/pytest -m "not cluster" tests/unit tests/proxy tests/adversarial tests/edge

test: test-compiled
# The benchmarks measure the gateway as the images ship it: compiled.
bench: compile
