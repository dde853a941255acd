# wavegen: set-up, tests, demo and benchmarks. Every target creates the virtual
# environment first (`make setup`), so a fresh clone needs nothing installed by hand.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup cluster-deps test test-fast lint demo cluster-demo bench lock clean

setup: $(STAMP)

# Reinstall only when the dependency pins change; otherwise `make setup` is instant.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import sys; assert sys.version_info[:2] == (3, 11), "wavegen needs Python 3.11, got " + sys.version' 
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[test]'
	@touch $(STAMP)

# What the local Flink and Spark clusters need (scripts/cluster.sh; tests marked
# `cluster`), downloaded once into .cluster/: each job server's jars (Maven, pinned in
# scripts/cluster/pom.xml), Spark (pyspark in its own environment), a Java if none is here.
cluster-deps: setup
	scripts/cluster.sh flink install
	scripts/cluster.sh spark install

test: setup cluster-deps
	$(PY) -m pytest $(PYTEST_ARGS)

# The quick tier while working: every module's quick tests, without the cluster tests
# (`-m cluster`) and the slow end-to-end runs (`-m slow`); a few minutes on 2 cores, and
# nothing downloaded beyond `make setup`. `make test` still runs everything.
test-fast: setup
	$(PY) -m pytest -m "not slow and not cluster" $(PYTEST_ARGS)

# ruff (configured in pyproject.toml: pyflakes, import order, pycodestyle's errors).
lint: setup
	$(PY) -m ruff check .

# The whole system on an embedded corpus (or SONGS=... METADATA=... for real data).
SONGS ?=
METADATA ?=
STEPS ?=
MINUTES ?=
DEMO_DIR ?= $(if $(SONGS),demo-$(basename $(notdir $(patsubst %/,%,$(SONGS)))),demo)
demo: setup
	$(PY) -m experiments.demo --dir $(DEMO_DIR) $(if $(SONGS),--songs $(SONGS)) \
		$(if $(METADATA),--metadata $(METADATA)) $(if $(STEPS),--steps $(STEPS)) \
		$(if $(MINUTES),--minutes $(MINUTES))

# Start a local Flink or Spark cluster, run the pipeline on the demo corpus there and
# locally, compare the datasets, stop the cluster.
ENGINE ?= flink
cluster-demo: setup cluster-deps
	$(PY) -m experiments.cluster_demo --engine $(ENGINE) --dir cluster-demo

# Every benchmark, one table, also written as JSON (bench_results/bench.json).
bench: setup cluster-deps
	$(PY) -m experiments.bench.run_all --json bench_results/bench.json

# Re-pin the whole environment after changing pyproject.toml's direct pins.
lock:
	rm -rf /tmp/wavegen-lock && $(PYTHON) -m venv /tmp/wavegen-lock
	/tmp/wavegen-lock/bin/pip install --quiet --upgrade pip
	/tmp/wavegen-lock/bin/pip install --quiet -e '.[test]'
	/tmp/wavegen-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf $(VENV) build *.egg-info .cluster
