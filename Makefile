# Developer entry points. `make setup` is idempotent and fast when nothing changed (stamp file).
#   make run    the main job (marl run): demo, train quickstart, evaluate it (sim and PyBullet, video), export it
#               to C for a Cortex-M4 (JLCM 3-bit, verified on host and QEMU, closed loop), simulator benchmark,
#               then a one-screen summary
#   make test   lint + unit tests + the documentation site built with --strict (what CI runs)
#   make docs   the documentation site into site/ (mkdocs.yml, docs/)
#   make bench  drone-count sweep of the simulator against the PettingZoo path
#   make train-quickstart  train configs/quickstart.yaml into runs/quickstart, plot and evaluate it (~10 min)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp
# System packages: the Cortex-M4 cross toolchain and QEMU for deploy/ (tests/test_deploy.py needs them).
APT_PACKAGES ?= gcc gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BENCH_ARGS ?= --steps 100 --density 0.2

.PHONY: setup apt test lint docs run bench train-quickstart clean distclean

setup: apt $(STAMP)

# Installs the apt packages only when the list is non-empty and some are missing.
apt:
ifneq ($(strip $(APT_PACKAGES)),)
	@missing="$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done)"; \
	if [ -n "$$missing" ]; then \
		echo "apt: installing $$missing"; \
		$(SUDO) apt-get update && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	fi
endif

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt "setuptools>=64"
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: setup
	$(BIN)/ruff check .

# The documentation site (mkdocs.yml, docs/) into site/; --strict: a broken link or a missing page fails.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# One list of steps (marl.pipeline.main_job) serves this target and tests/test_pipeline.py (--quick).
run: setup
	$(BIN)/marl run

# Starts over in runs/quickstart each time; TRAIN_ARGS adds overrides or flags (e.g. --steps 2000000).
TRAIN_ARGS ?=
train-quickstart: setup
	$(BIN)/marl train quickstart --run-dir runs/quickstart --overwrite $(TRAIN_ARGS)
	$(BIN)/marl plot runs/quickstart
	$(BIN)/marl eval runs/quickstart --episodes 64

bench: setup
	$(BIN)/marl bench sim --sweep $(BENCH_ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache site .import_linter_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
