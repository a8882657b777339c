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
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup setup-browser setup-postgres sweep status report retest retune schedule ui test \
	test-fast chaos lint check bench bench-search bench-tracking bench-driver bench-peers \
	bench-packing cluster cluster-down clean

setup: $(BIN)/caviar

# The example plugin (examples/plugin) is installed too: the tests sweep with its model family
# and data source, as a user's own package would be used.
$(BIN)/caviar: pyproject.toml examples/plugin/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps -e examples/plugin
	@touch $@

# Debian's Chromium and ChromeDriver for the browser test (skipped, with the reason, without).
setup-browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver; }

# A PostgreSQL server for the cluster test (Optuna storage and MLflow store); skipped without.
setup-postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q postgresql; }

sweep: setup
	$(BIN)/caviar sweep $(SPEC) --run-dir $(RUN_DIR)

status: setup
	$(BIN)/caviar status $(SPEC) --run-dir $(RUN_DIR)

report: setup
	$(BIN)/caviar report $(SPEC) --run-dir $(RUN_DIR)

# Re-test the champion of SPEC on the data as it is now (exit 3: stale), re-tune it, or keep
# re-testing on each spec's schedule (`make schedule SPECS="a.yaml b.yaml"`).
retest: setup
	$(BIN)/caviar retest $(SPEC) --run-dir $(RUN_DIR)

retune: setup
	$(BIN)/caviar retune $(SPEC) --run-dir $(RUN_DIR)

schedule: setup
	$(BIN)/caviar schedule $(or $(SPECS),$(SPEC)) --run-dir $(RUN_DIR)

ui: setup
	$(BIN)/caviar ui --run-dir $(RUN_DIR) --port $(PORT)

# A persistent Ray cluster on 127.0.0.1 (token auth) that `make sweep` joins while it is up;
# its workers stay warm between sweeps. `make cluster-down` stops it.
cluster: setup
	$(BIN)/caviar cluster up --run-dir $(RUN_DIR)

cluster-down: setup
	$(BIN)/caviar cluster down --run-dir $(RUN_DIR)

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not cluster"

# The fault suite alone: killed, hung and stopped workers and drivers, a tracking server
# that answers 503 and 400, two drivers on one sweep, a corpus of malformed specs and data.
chaos: setup
	$(BIN)/python -m pytest -m chaos

# mypy reads the packages under their import names (caviar.models, ...) through links, since
# it cannot follow the editable install's import hook.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@mkdir -p build/typecheck/caviar
	@ln -sf ../../../caviar/__init__.py build/typecheck/caviar/__init__.py
	@for p in models sweeps cluster; do ln -sfn ../../../$$p build/typecheck/caviar/$$p; done
	$(BIN)/mypy

check: lint test

# Grid vs random vs coarse-to-fine on MNIST-1D at equal budget, 5 seeds each (~3 min).
bench-search: setup
	$(BIN)/python -m bench search --out $(RUN_DIR)/bench-search

# MLflow's share of sweep wall time for every shipped spec, local SQLite store and tracking
# server (~12 min).
bench-tracking: setup
	$(BIN)/python -m bench tracking --out $(RUN_DIR)/bench-tracking

# The driver's own cost per trial with trials that cost nothing: 100 / 1,000 / 10,000 trials
# (random sampler, median pruner) and TPE at 1,000 (~5 min).
bench-driver: setup
	$(BIN)/python -m bench driver --out $(RUN_DIR)/bench-driver

# caviar against Ray Tune (OptunaSearch + ASHA) and plain Optuna (threads) on one workload:
# MNIST-1D, 40 trials x <= 20 epochs, 2 workers; cold and on a warm local cluster (~8 min).
bench-peers: setup
	$(BIN)/python -m bench peers --out $(RUN_DIR)/bench-peers

# Epochs per second of K = 1, 4, 16, 64 trials one after another vs packed into one batched
# model, on one CPU thread (mlp and cnn1d), and how far their curves differ; then the peers'
# sweep end to end with its trials alone and packed 4 and 8 per worker (~8 min).
bench-packing: setup
	$(BIN)/python -m bench packing --out $(RUN_DIR)/bench-packing

bench: bench-search bench-tracking bench-driver bench-peers bench-packing

clean:
	rm -rf $(RUN_DIR) build .pytest_cache .mypy_cache .ruff_cache
