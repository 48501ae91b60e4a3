# Two commands on a fresh machine with python3 (>= 3.11) and make: `make up` and `make test`.
PYTHON ?= python3
VENV ?= .venv
UV_VERSION ?= 0.13.9
PYTEST_ARGS ?=
# `make up ARGS=--demo` loads the demo account.
ARGS ?=
# A uv on PATH is used as it is; otherwise pip installs one into the venv.
UV = $(shell command -v uv 2>/dev/null || echo $(VENV)/bin/uv)

.PHONY: bootstrap up test lint bench bench-backup bench-web screenshots clean

bootstrap:
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@test -x "$(UV)" || $(VENV)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	@# --inexact keeps pip and uv themselves in the venv.
	@UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --locked --inexact --quiet

up: bootstrap
	$(VENV)/bin/expensetracker up $(ARGS)

test: bootstrap
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: bootstrap
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/ruff format --check src tests bench scripts

# Needs wrk (apt-get install wrk); about four minutes, most of it loading 1,000,000 expenses.
bench: bootstrap
	$(VENV)/bin/python bench/reports.py

# Backup create, verify and restore times on 1,000,000 expenses; about a minute and a half.
bench-backup: bootstrap
	$(VENV)/bin/python bench/backup.py

# The web app's dashboard and expense list against the API calls behind them; about a minute.
bench-web: bootstrap
	$(VENV)/bin/python bench/web.py

# Desktop and phone screenshots of every main page into docs/screenshots/ (needs Debian's
# chromium: apt-get install chromium).
screenshots: bootstrap
	$(VENV)/bin/python scripts/screenshots.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
