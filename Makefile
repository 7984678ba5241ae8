# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Each installs what is missing (Debian packages, the venv, the pinned Python packages,
# the Apache Kafka jars; for `make test` also the workflow engines the engines tests run:
# Temporal, Airflow, Prefect, each in its own venv) before it runs.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The venv is rebuilt when the dependency pins change.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
DEB_PACKAGES := openjdk-17-jre-headless maven postgresql
PYTEST_ARGS ?=

.PHONY: help setup system-deps browser jars engines promtool demo test lint typecheck unit bench images k8s clean

help:
	@echo "make demo   - start a real local Kafka and run the main job on embedded defaults"
	@echo "make test   - lint, type-check and run every test against real Kafka/PostgreSQL"
	@echo "make bench  - throughput/latency benchmark against a raw confluent-kafka consumer"
	@echo "make images - build the connector, Kafka, PostgreSQL and Prometheus images (needs a Docker engine)"
	@echo "make k8s    - render deploy/kubernetes with that connector image into $(K8S_OUT), validated"

system-deps:
	@missing=""; \
	command -v java >/dev/null 2>&1 || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null 2>&1 || missing="$$missing maven"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

# The admin console's browser tests (tests/browser) drive Debian's chromium through its
# chromium-driver (Selenium, pinned in constraints.txt): no browser download of its own.
browser:
	@command -v chromedriver >/dev/null 2>&1 && \
	  { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; } || { \
	  echo "installing Debian packages: chromium chromium-driver"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver; }

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test,temporal]'
	@rm -f $(VENV)/.installed-*; touch $@

setup: system-deps $(STAMP)

# The Kafka broker's jars, and the schema registry of the tests (Apicurio, built once with
# Quarkus from docker/registry/pom.xml into ~/.cache/kafka-event-connector).
jars: setup
	$(BIN)/event-connector dev-broker --resolve-only
	$(BIN)/python -m devkit.registry

# Each engine in its own venv, pinned by tests/engines/pins/ENGINE.txt and cached under
# ~/.cache/kafka-event-connector/engines (a few minutes once, then nothing).
engines: setup
	$(BIN)/python -m tests.engines.venvs

# promtool checks docker/prometheus/alerts.yml in the unit tests. It comes from Debian's
# prometheus package, unpacked into the cache rather than installed: no Prometheus service
# on the machine. (tests/unit/test_observability.py looks there and on PATH.)
PROMTOOL_DIR := $(or $(KEC_CACHE_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/kafka-event-connector)/promtool
promtool:
	@command -v promtool >/dev/null 2>&1 || test -x $(PROMTOOL_DIR)/usr/bin/promtool || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  mkdir -p $(PROMTOOL_DIR) && cd $(PROMTOOL_DIR) && \
	  { apt-get download -q prometheus 2>/dev/null || { $$SUDO apt-get update -q && apt-get download -q prometheus; }; } && \
	  dpkg-deb -x prometheus_*.deb . && rm -f prometheus_*.deb && ./usr/bin/promtool --version | head -1; }

demo: jars
	$(BIN)/event-connector demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

test: jars engines promtool browser lint typecheck
	$(BIN)/pytest --require-browser $(PYTEST_ARGS)

# The local base image is made with debootstrap: no image registry is needed.
images: jars
	@command -v debootstrap >/dev/null 2>&1 || [ -n "$$KEC_BASE_IMAGE" ] || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends debootstrap; }
	$(BIN)/python -m devkit.images

# The Kubernetes manifests with the image `make images` builds (KEC_CONNECTOR_IMAGE to
# name another), validated against the schemas of the Kubernetes version they target.
K8S_OUT ?= build/kubernetes.yaml

k8s: setup
	$(BIN)/python -m devkit.kubernetes render -o $(K8S_OUT)

# The benchmark's peer (quixstreams) pins other versions than the connector: its own venv.
PEER := $(HOME)/.cache/kafka-event-connector/bench-peer
PEER_STAMP := $(PEER)/.installed-$(shell cat bench/peer/requirements.txt bench/peer/constraints.txt | sha1sum | cut -c1-12)

$(PEER_STAMP): bench/peer/requirements.txt bench/peer/constraints.txt
	@test -x $(PEER)/bin/python || $(PYTHON) -m venv $(PEER)
	$(PEER)/bin/python -m pip install -q --disable-pip-version-check -c bench/peer/constraints.txt -r bench/peer/requirements.txt
	@rm -f $(PEER)/.installed-*; touch $@

bench: jars $(PEER_STAMP)
	$(BIN)/python -m bench.throughput $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
	rm -f docker/wheels/*.whl docker/wheels/.inputs docker/kafka/libs/*.jar
