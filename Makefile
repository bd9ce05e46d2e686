# One command to run it all (make demo), one to prove it (make test). `make` alone lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
KAFKA_JARS := .deps/.kafka-jars
SCHEMA_REGISTRY := .deps/.schema-registry
# The Java serving program (ml/streams/): a thin jar beside its lib/, rebuilt when its sources or the schemas change.
STREAMS_JAR := ml/streams/target/car-failure-streams.jar
STREAMS_SOURCES := ml/streams/pom.xml $(shell find ml/streams/src schemas -type f 2>/dev/null)
# HiveMQ CE embedded (scripts/runtime/hivemq/), the MQTT broker of MQTT_BROKER=hivemq: a thin jar beside its lib/.
HIVEMQ_JAR := scripts/runtime/hivemq/target/car-hivemq.jar
HIVEMQ_SOURCES := scripts/runtime/hivemq/pom.xml $(shell find scripts/runtime/hivemq/src -type f 2>/dev/null)
PIP_TOOLS := .deps/pip-tools

CARS ?= 25
DURATION ?= 120
RUNTIME ?=
REGISTRY ?=
SECURE ?=
# The program that serves the model in the demo: python (`python -m ml predict`) or java (ml/streams/, Kafka Streams).
SERVING ?=
# Training workers (`make demo TRAIN_WORKERS=N`; the compose stack's trainer replicas). Exported: the demo and the
# compose CLI that make runs read it from the environment (compose/docker-compose.yml).
TRAIN_WORKERS ?= 1
export TRAIN_WORKERS
# Kafka as one broker or a cluster of three (`make up|demo BROKERS=3`). Exported: the runtimes read it.
BROKERS ?=
export BROKERS
BENCH_OUT ?= bench-results.json
CHAOS_OUT ?= $(BENCH_OUT)
CHAOS_ARGS ?=
PYTEST_ARGS ?=
# The OS programs `make setup` installs when missing: demo (Java and a JDK, Maven, Mosquitto) or test (and
# mosquitto-clients, kcat, chromium: the tests' own clients and browser). The test targets ask for the test set.
PREREQUISITES ?= demo

UPGRADE ?=

.PHONY: help prerequisites setup lock images up down status demo test test-containers test-compose test-unit test-integration bench chaos lint fmt clean

help: ## Show this help
	@echo "Usage: make <target> [CARS=25] [DURATION=120] [RUNTIME=local|compose] [SERVING=python|java] [TRAIN_WORKERS=N] [BROKERS=1|3] [MQTT_BROKER=mosquitto|hivemq] [SECURE=1] [CONTINUAL=1] [BENCH_OUT=path.json]"
	@echo
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

prerequisites: ## Install the missing OS programs with apt-get or Homebrew, or name them in one line [PREREQUISITES=demo|test]
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 (Debian: apt-get install python3 python3-venv)"; exit 2; }
	@$(PYTHON) -m scripts.runtime.prerequisites --for $(PREREQUISITES)

setup: prerequisites $(INSTALLED) $(KAFKA_JARS) $(SCHEMA_REGISTRY) $(STREAMS_JAR) $(HIVEMQ_JAR) ## Install everything: the OS programs, .venv with pinned packages, the Kafka jars, the test schema registry, the Java serving program, HiveMQ (idempotent)

$(INSTALLED): pyproject.toml requirements.lock | prerequisites
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	@touch $@

# pip-compile (pip-tools, in a venv of its own under .deps/) resolves pyproject's dependencies and the dev extra for
# the Python running it, which must be 3.11 (the image's). Without UPGRADE it keeps every pin of the current lock
# that still fits pyproject (only what changed there is resolved again); UPGRADE=1 takes the newest versions.
lock: ## Regenerate requirements.lock from pyproject.toml (dependencies + dev, Python 3.11) with pip-compile [UPGRADE=1]
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "error: requirements.lock is resolved for Python 3.11 and $(PYTHON) is $$($(PYTHON) -V 2>&1); name a 3.11 one: make lock PYTHON=python3.11"; exit 2; }
	@[ -x $(PIP_TOOLS)/bin/pip-compile ] || { $(PYTHON) -m venv $(PIP_TOOLS) && $(PIP_TOOLS)/bin/python -m pip install -q pip-tools==7.6.2; }
	CUSTOM_COMPILE_COMMAND="make lock" $(PIP_TOOLS)/bin/pip-compile --quiet --extra dev --strip-extras \
		--no-emit-index-url --no-emit-trusted-host --no-emit-find-links $(if $(UPGRADE),--upgrade) \
		--output-file requirements.lock pyproject.toml

$(KAFKA_JARS): scripts/runtime/kafka/pom.xml | $(INSTALLED)
	$(PY) -m scripts.runtime.local install
	@touch $@

$(SCHEMA_REGISTRY): scripts/runtime/schema_registry.py | $(INSTALLED)
	$(PY) -m scripts.runtime.schema_registry install
	@touch $@

# mvn package runs the module's unit tests (JUnit) before it packs the jar.
$(STREAMS_JAR): $(STREAMS_SOURCES) | prerequisites
	mvn -B -q -f ml/streams/pom.xml package
	@touch $@

$(HIVEMQ_JAR): $(HIVEMQ_SOURCES) | prerequisites
	mvn -B -q -f scripts/runtime/hivemq/pom.xml package
	@touch $@

images: setup ## Build the stack's images without any image registry (Debian base, Kafka, Mosquitto, HiveMQ, registry, services)
	$(PY) -m scripts.runtime.images

up: setup ## Start the infrastructure (local: Kafka KRaft + Mosquitto processes, REGISTRY=1 adds a schema registry, SECURE=1 secures it; RUNTIME=compose: containers; BROKERS=3: three Kafka brokers)
ifeq ($(RUNTIME),compose)
	$(PY) -m scripts.runtime.compose up $(if $(SECURE),--secure topics) kafka mosquitto schema-registry
else
	$(PY) -m scripts.runtime.local up $(if $(BROKERS),--brokers $(BROKERS)) $(if $(REGISTRY),--schema-registry) $(if $(SECURE),--secure --cars $(CARS))
endif

down: ## Stop the infrastructure; leaves no process behind
ifeq ($(RUNTIME),compose)
	$(PY) -m scripts.runtime.compose down
else
	@if [ -x $(PY) ]; then $(PY) -m scripts.runtime.local down; else echo "nothing was running (no .venv)"; fi
endif

status: ## Show whether the local servers run and answer
	@$(PY) -m scripts.runtime.local status

demo: setup ## Run the whole pipeline: make demo [CARS=25] [DURATION=120] [RUNTIME=local|compose] [SERVING=python|java] [TRAIN_WORKERS=N] [BROKERS=1|3] [SECURE=1] [CONTINUAL=1]
	$(PY) -m scripts.demo --cars $(CARS) --duration $(DURATION) $(if $(RUNTIME),--runtime $(RUNTIME)) $(if $(SERVING),--serving $(SERVING)) $(if $(TRAIN_WORKERS),--train-workers $(TRAIN_WORKERS)) $(if $(SECURE),--secure) $(if $(CONTINUAL),--continual)

# Target-specific: the setup these targets run installs the tests' programs too.
test test-containers test-compose test-integration: PREREQUISITES = test

test: setup ## The whole suite, unit and integration, against a real Kafka and Mosquitto run as local processes
	$(PY) -m pytest $(PYTEST_ARGS)

test-containers: setup ## The tests marked `containers` on Kafka and Mosquitto containers (testcontainers; make images first where nothing can be pulled)
	TEST_SERVERS=containers $(PY) -m pytest -m containers $(PYTEST_ARGS)

test-compose: setup ## The compose stack end to end on Docker (make images first where nothing can be pulled)
	$(PY) -m pytest --compose-stack -s $(PYTEST_ARGS)

test-unit: setup ## Unit tests only (no servers)
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

test-integration: setup ## Integration tests only (starts its own Kafka and Mosquitto unless TEST_* name running ones)
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

bench: setup ## Benchmarks: make bench [BENCH_OUT=bench-results.json]
	$(PY) -m scripts.bench --out $(BENCH_OUT)

chaos: setup ## Chaos soak: SIGKILL and restart Mosquitto, Kafka, bridge, predictor in turn under load (BROKERS=3: one broker of a cluster a Kafka turn); key "chaos" in CHAOS_OUT [CHAOS_ARGS="--minutes 2"]
	$(PY) -m scripts.studies.chaos --out $(CHAOS_OUT) $(CHAOS_ARGS)

lint: setup ## ruff check and format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

fmt: setup ## Format the code with ruff
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean: down ## Remove run data, the virtual environment, the Kafka jars and the schema registry
	rm -rf .run $(VENV) .deps
