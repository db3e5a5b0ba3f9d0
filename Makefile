# Every target bootstraps .venv with the machine's python3 when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.PHONY: venv test lint demo bench serve twin clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	@touch $(STAMP)

venv: $(STAMP)

test: venv
	$(BIN)/python -m pytest -n 2 --cov --cov-report=term $(ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

demo: venv
	$(BIN)/python -m localdev demo $(ARGS)

bench: venv
	$(BIN)/python -m bench $(ARGS)

serve: venv
	$(BIN)/python -m localdev serve $(ARGS)

twin: venv
	$(BIN)/python -m localdev twin $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov
