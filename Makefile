# specmill: `make run` starts the platform, `make test` runs the whole suite.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install bench-gateway bench-kb eval clean-data lint

$(BIN)/python:
	@command -v $(PY) >/dev/null 2>&1 || { echo "need Python 3.11 ($(PY))"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,bench]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/specmill run

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench-gateway: install
	$(BIN)/python bench/gateway.py

bench-kb: install
	$(BIN)/python bench/kb.py

eval: install
	$(BIN)/python bench/eval.py $(EVAL_ARGS)

clean-data:
	rm -rf .specmill
