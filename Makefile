# make demo  — run the demo (creates .venv on first use)
# make test  — lint, type-check, build the docs and run the tests
# make docs  — build the docs site into site/ (mkdocs --strict)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.demo-installed

.DEFAULT_GOAL := check
.PHONY: check demo test docs docs-serve lint typecheck pytest bench bench-pg bench-pg-scale bench-sqlite-scale bench-scale bench-crons bench-memory bench-dashboard bench-pipeline bench-limits format clean css css-check

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

# The demo installs only what it needs (tickerq[demo]: SQLite, the dashboard, rich).
$(DEMO_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[demo]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/tickerq demo

test: lint typecheck css-check docs pytest

check: test

LINTED := src tests bench examples docs/snippets docs/_ext

lint: $(STAMP)
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)

typecheck: $(STAMP)
	$(PY) -m mypy src
	$(PY) -m mypy --strict tests/typing/ok_usage.py
	for example in examples/*/; do \
		(cd $$example && $(abspath $(PY)) -m mypy --strict --config-file $(CURDIR)/pyproject.toml *.py) || exit 1; \
	done

pytest: $(STAMP)
	$(PY) -m pytest

# The docs site (mkdocs.yml, docs/): any warning (a broken link, a missing snippet,
# an API name that does not resolve) fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

bench: $(STAMP)
	$(PY) bench/run.py
	$(PY) bench/idle.py

# The job pipeline's cost: the in-memory drain with and without middleware.
bench-pipeline: $(STAMP)
	$(PY) bench/pipeline.py

bench-limits: $(STAMP)
	$(PY) bench/limits.py --n 20000 --rounds 9 --seconds 60

bench-pg: $(STAMP)
	$(PY) bench/pg.py

# Single enqueue vs Procrastinate, and 25 nodes on one default PostgreSQL server.
bench-pg-scale: $(STAMP)
	$(PY) bench/pg_scale.py

# SQLite: single enqueue rate and worker RSS, against huey and APScheduler 3.
bench-sqlite-scale: $(STAMP)
	$(PY) bench/sqlite_scale.py

# Drain and idle CPU on top of 1,000,000 pending or finished rows (PostgreSQL, SQLite).
bench-scale: $(STAMP)
	$(PY) bench/scale.py --rounds 7

# 10,000 every-minute crons due at once, before (per-cron) and after (batched), PostgreSQL and SQLite.
bench-crons: $(STAMP)
	$(PY) bench/crons.py

# Memory store: RSS over 1,000,000 jobs with a history limit, enqueue with 10,000 crons,
# app.sync.enqueue vs the async call, purge behind 1,000,000 waiting rows.
bench-memory: $(STAMP)
	$(PY) bench/memory.py

# Dashboard pages and API with 1,000,000 time tickers in the local PostgreSQL.
bench-dashboard: $(STAMP)
	$(PY) bench/dashboard.py --notes bench/dashboard-notes.md

format: $(STAMP)
	$(PY) -m ruff format $(LINTED)
	$(PY) -m ruff check --fix $(LINTED)

# The dashboard's CSS is built from its templates at development time and committed.
CSS_SRC := src/tickerq/dashboard/tailwind.css
CSS_OUT := src/tickerq/dashboard/static/app.css

css: $(STAMP)
	$(VENV)/bin/tailwindcss -i $(CSS_SRC) -o $(CSS_OUT) --minify

css-check: $(STAMP)
	@tmp=$$(mktemp --suffix=.css) && $(VENV)/bin/tailwindcss -i $(CSS_SRC) -o $$tmp --minify 2>/dev/null \
	  && if cmp -s $$tmp $(CSS_OUT); then echo "css: $(CSS_OUT) is current"; rm -f $$tmp; \
	  else echo "css: $(CSS_OUT) is stale; run make css" >&2; rm -f $$tmp; exit 1; fi

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache site
