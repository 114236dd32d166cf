# Vocelio Gateway developer entry points. `make run` and `make test` work on a
# fresh machine: they create .venv and install what they need.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8080

.PHONY: run test lint unit cluster-bins dev-cluster system-deps bench bench-operator schema images kind-up kind-deploy clean
.PHONY: lock dev-control-plane

$(STAMP): pyproject.toml requirements-dev.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-build-isolation -e '.[dev]'
	touch $(STAMP)

## run: start the standalone gateway with the 18 example services and demo backends
run: $(STAMP)
	$(BIN)/vocelio-gateway standalone --resources examples/resources --demo-backends --port $(PORT)

## system-deps: Debian packages the tests need (redis-server, nginx, wrk, iproute2)
system-deps:
	bash scripts/install-system-deps.sh

## cluster-bins: build kube-apiserver/controller-manager/etcd/kubectl and helm into .cache/bin
cluster-bins:
	bash tests/controlplane/build.sh

## dev-cluster: a real single-node cluster (containerd, kubelet, kube-proxy) with the built images; prints how to helm install (Ctrl-C stops it)
dev-cluster: $(STAMP) system-deps cluster-bins
	$(BIN)/python -m tests.harness.node_devcluster

## dev-control-plane: only the test control plane (no node), printing a KUBECONFIG line (Ctrl-C stops it)
dev-control-plane: $(STAMP) cluster-bins
	$(BIN)/python -m tests.harness.devcluster

## lint: ruff, mypy --strict and the import-layering contracts
lint: $(STAMP)
	$(BIN)/ruff check proxy operator tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

## test: install everything the tests need, then lint and run the whole suite
test: $(STAMP) system-deps cluster-bins lint
	$(BIN)/pytest

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

## bench-operator: reconcile latency and render time (prints figures)
bench-operator: $(STAMP) cluster-bins
	$(BIN)/python -m bench.operator_bench

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
