# Two commands on a fresh machine: `make demo` (set up + run the main job) and `make test` (set up + test).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo test test-slow lint bench clean-venv chromium

install: $(STAMP)

# torch is pinned first (the CPU build on local disk) so nothing later pulls a 5 GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[app,dev]"
	rm -f $(VENV)/.installed-*
	touch $@

demo: install
	$(BIN)/itercomp world sample --aspect all -n 8 --out runs/demo-world
	$(BIN)/itercomp world score --prompts runs/demo-world/prompts.jsonl --images runs/demo-world/images --out runs/demo-world/score.json

test: install chromium
	$(BIN)/python -m pytest -q

# The annotation app's browser test drives Debian's chromium through playwright (never `playwright install`).
chromium:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	$(BIN)/python bench/oracle.py
