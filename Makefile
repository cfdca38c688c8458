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

# The loop on the shapes world with the shipped weights (itercomp/weights): round 0 evaluates the base model, then
# 3 rounds of gallery -> simulated rankings -> reward models -> fine-tuning -> evaluation -> gallery expansion.
# Ends with a table (round x aspect oracle accuracy) and the paths of report.json, scores.png and grids/.
# --resume: running `make demo` again continues (or just re-prints) the run instead of refusing the folder.
# It fine-tunes 100 steps a round (the loop's default is 200) and measures each round on 100 test prompts per
# aspect x 2 seeds (the default 50 x 1 has a standard error near 4 points) to fit 25 minutes with the install
# on a 2-core CPU (docs/iterate.md, "make demo, measured").
DEMO := runs/demo
demo: install
	$(BIN)/itercomp iterate --rounds 3 --output-dir $(DEMO) --resume --finetune max_steps=100 \
		--eval-prompts-per-aspect 100 --eval-seeds 0 1

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
