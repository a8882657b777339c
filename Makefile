# caviar: the commands a user needs. `make setup` first; everything else uses .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU wheel on this machine; PyPI's torch 2.13.0 on Linux is a CUDA build, so a GPU
# machine gets CUDA from the same pin. Override with `make setup TORCH=torch==X.Y`.
TORCH  ?= torch==2.13.0
SPEC   ?= sweeps/specs/quick.yaml
RUN_DIR ?= runs
PORT   ?= 5000

.PHONY: setup sweep status report ui test test-fast lint check bench bench-search clean

setup: $(BIN)/caviar

$(BIN)/caviar: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

sweep: setup
	$(BIN)/caviar sweep $(SPEC) --run-dir $(RUN_DIR)

status: setup
	$(BIN)/caviar status $(SPEC) --run-dir $(RUN_DIR)

report: setup
	$(BIN)/caviar report $(SPEC) --run-dir $(RUN_DIR)

ui: setup
	$(BIN)/caviar ui --run-dir $(RUN_DIR) --port $(PORT)

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not cluster"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint test

# Grid vs random vs coarse-to-fine on MNIST-1D at equal budget, 5 seeds each (~3 min).
bench-search: setup
	$(BIN)/python -m sweeps.bench search --out $(RUN_DIR)/bench-search

bench: bench-search

clean:
	rm -rf $(RUN_DIR) .pytest_cache .mypy_cache .ruff_cache
