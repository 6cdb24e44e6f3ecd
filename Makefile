# learnscope: `make demo` runs every study at its quick size; `make test` runs the test suite.
# Both create .venv on first use. torch 2.13.0 is installed first: any other torch version
# would pull several GB of CUDA packages.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-all lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/learnscope tour --quick

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: setup
	$(BIN)/ruff check src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/cka_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache
