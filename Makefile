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

# Until `itercomp iterate` lands (issue 7): world samples -> a gallery of the procedural members -> oracle
# scores -> simulated annotators -> agreement statistics. Every step is resumable and takes seconds.
DEMO := runs/demo
demo: install
	$(BIN)/itercomp world sample --aspect all -n 8 --out $(DEMO)/world
	$(BIN)/itercomp gallery generate --gallery gallery/shapes.yaml --members layout_planner,bag_of_words,colour_leak \
		--aspect spatial_relationship --split val -n 12 --images-per-prompt 2 --out $(DEMO)/gallery
	$(BIN)/itercomp world score --prompts $(DEMO)/gallery/prompts.jsonl --images $(DEMO)/gallery/images --out $(DEMO)/gallery/score.json
	$(BIN)/itercomp annotate simulate --db $(DEMO)/annotations.sqlite --gallery-run $(DEMO)/gallery --annotators 5 --overlap 3
	$(BIN)/itercomp annotate stats --db $(DEMO)/annotations.sqlite
	@echo "pictures: $(DEMO)/world/grid.png and $(DEMO)/gallery/grids/"

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
