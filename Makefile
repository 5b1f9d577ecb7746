# The two commands of the README: `make up` (set up and run with a demo) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install broker-jars browser up test bench lint schemas clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

install: $(STAMP)  ## virtual environment with runstream and its test tools

broker-jars: $(STAMP)  ## resolve the local Kafka broker's jars from Maven Central (cached)
	$(BIN)/runstream broker --prepare

up: broker-jars  ## start broker, projector and API on http://127.0.0.1:5005, then log a demo training job
	$(BIN)/runstream up --demo

browser:  ## Debian's chromium for the web UI's browser tests (needs root; else they are skipped)
	@[ -x /usr/bin/chromium ] || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium; } \
		|| echo "chromium not installed: the browser tests will be skipped"

test: broker-jars browser  ## the whole test suite (starts its own Kafka broker)
	@# pytest exits 5 when it collects no tests: not a failure of the build.
	$(BIN)/pytest; rc=$$?; if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc

bench: broker-jars  ## benchmarks, printing their figures (slow)
	$(BIN)/pytest tests/bench -s -p no:cacheprovider --override-ini addopts=

lint: $(STAMP)  ## ruff, and mypy on the pure packages (the import contract is a unit test)
	$(BIN)/ruff check services schemas projections deploy tests
	$(BIN)/mypy schemas projections

schemas: $(STAMP)  ## regenerate schemas/json from the event models
	$(BIN)/python -m runstream.schemas.json_schema_export

clean:  ## remove the virtual environment and local data
	rm -rf $(VENV) runstream-data
