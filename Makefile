# learnscope: `make demo` runs every study at its quick size; `make test` runs the test suite.
# Both create .venv on first use. torch 2.13.0 is installed first: any other torch version
# would pull several GB of CUDA packages.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-verdicts test-all lint bench clean

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

# Every study's --quick verdict (slow tests), in parallel over the cores.
test-verdicts: setup
	$(BIN)/python -m pytest -q -m slow -n 2 tests/test_studies_e2e.py -k "quick"

test-all: setup
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: setup
	$(BIN)/ruff check src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/cka_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache
