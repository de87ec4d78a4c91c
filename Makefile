# The make targets of the README:
#   make quick   install everything, then run the main job (the `quick` suite on the bundled digits)
#   make test    install everything (with the test tools and data), then run the tests
#   make board   the leaderboard page of the committed studies (ffbench-out/board)
#   make lint    ruff (lint and format check) and the import-layer contract, as CI runs them
#   make docs    the documentation site, built with --strict into site/ (open site/index.html)
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PKGS := postgresql chromium dataset-fashion-mnist

.PHONY: quick test lint docs install system-packages data board clean

quick: install
	$(BIN)/ffbench run quick

test: install system-packages data
	$(BIN)/python -m pytest -q

# the habits CI keeps: ruff's lint and format check, and the layers of ffbench/ importing only downwards
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_layers.py

# the site: generated pages (methods, suite and command-line references, results) and the hand-written ones
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev,postgres,ray]'
	touch $@

# What the tests need beyond Python: a PostgreSQL server binary (multi-machine store test), headless
# Chromium (report rendering test) and Fashion-MNIST (data loader test).
system-packages:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing || \
	  { $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; }; \
	fi

data: install
	$(BIN)/ffbench data fetch fashion-mnist mnist

# the leaderboard of the committed studies and reproductions (README: Board)
board: install
	$(BIN)/ffbench board benchmarks/studies/*.csv benchmarks/reproduction/*.csv --to ffbench-out/board

clean:
	rm -rf ffbench-out .pytest_cache site docs/generated
