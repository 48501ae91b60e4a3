# Two commands on a fresh machine with python3 (>= 3.11) and make: `make up` and `make test`.
PYTHON ?= python3
VENV ?= .venv
UV_VERSION ?= 0.13.9
PYTEST_ARGS ?=
# `make up ARGS=--demo` loads the demo account.
ARGS ?=
# Debian packages the tests run: buildah and debootstrap build the image
# (tests/deploy/test_image.py); Prometheus, Alertmanager (promtool, amtool) and the PostgreSQL
# exporter check the monitoring rules and run its end-to-end test; PgBouncer stands in front of
# PostgreSQL as the cluster's Pooler does (tests/deploy/test_pgbouncer.py); Chromium runs the web
# app's browser tests. Add a package here and `make test` installs it.
TEST_DEBIAN_PACKAGES ?= buildah debootstrap prometheus prometheus-alertmanager pgbouncer \
	prometheus-postgres-exporter chromium
# A uv on PATH is used as it is; otherwise pip installs one into the venv.
UV = $(shell command -v uv 2>/dev/null || echo $(VENV)/bin/uv)

.PHONY: bootstrap up test test-fast test-deps fuzz properties lint typecheck bench bench-backup \
	bench-expenses bench-web soak screenshots clean sbom

bootstrap:
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@test -x "$(UV)" || $(VENV)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	@# --inexact keeps pip and uv themselves in the venv. --compile-bytecode writes the .pyc files
	@# once, as pip does and uv does not: where PYTHONDONTWRITEBYTECODE is set, every command and
	@# server would otherwise compile its libraries from source as it starts (1.5 s of a command's
	@# 2.5 s start on a slow machine). Once they are compiled, it only checks them.
	@UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --locked --inexact --quiet --compile-bytecode

up: bootstrap
	$(VENV)/bin/expensetracker up $(ARGS)

# As root, installs the missing packages with apt-get; otherwise prints the command to run.
test-deps:
	@scripts/test-prerequisites $(TEST_DEBIAN_PACKAGES)

test: bootstrap test-deps
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The inner loop while developing: everything but the tests marked slow (the image build, the
# 100,000-row and backup-volume tests, the Prometheus end-to-end test). `make test` runs them.
test-fast: bootstrap test-deps
	$(VENV)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The CI fuzz tests (tests/platform/test_fuzz.py, the API; tests/web/test_web_fuzz.py, the web
# app's forms) with many more examples per operation or route: a longer search with the same
# fixed seed. FUZZ_EXAMPLES=2000 make fuzz searches longer still.
FUZZ_EXAMPLES ?= 500
fuzz: bootstrap
	EXPENSETRACKER_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VENV)/bin/python -m pytest \
		tests/platform/test_fuzz.py tests/web/test_web_fuzz.py -p no:cacheprovider -s \
		-o timeout=3600 $(PYTEST_ARGS)

# The CI property test of the expenses API (tests/expenses/test_expense_properties.py: random
# sequences of creates, PATCHes, DELETEs and imports against a reference in Python) with many more
# and longer sequences (about 7 minutes), the same fixed seed, and a failure shrunk to a shorter
# sequence (for up to Hypothesis's five minutes).
# PROPERTY_EXAMPLES=1000 PROPERTY_STEPS=50 make properties searches longer still.
PROPERTY_EXAMPLES ?= 300
PROPERTY_STEPS ?= 30
properties: bootstrap
	EXPENSETRACKER_PROPERTY_EXAMPLES=$(PROPERTY_EXAMPLES) EXPENSETRACKER_PROPERTY_STEPS=$(PROPERTY_STEPS) \
		EXPENSETRACKER_PROPERTY_SHRINK=1 $(VENV)/bin/python -m pytest \
		tests/expenses/test_expense_properties.py -p no:cacheprovider -o timeout=3600 $(PYTEST_ARGS)

# The CycloneDX SBOM (JSON) of the image's Python environment, read from uv.lock: the packages and
# versions the Dockerfile's `uv sync --locked --no-dev` installs, with the lock's hashes. CI
# attaches it to the image (.github/workflows/ci.yaml).
SBOM ?= sbom.cdx.json
sbom: bootstrap
	@$(UV) export --frozen --no-dev --no-emit-project --format requirements-txt --quiet \
		--output-file $(SBOM).requirements.txt
	$(VENV)/bin/cyclonedx-py requirements --mc-type application --output-reproducible \
		--output-format JSON --outfile $(SBOM) $(SBOM).requirements.txt
	@rm $(SBOM).requirements.txt

lint: bootstrap
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/ruff format --check src tests bench scripts

# mypy on the package, as pyproject.toml's [tool.mypy] configures it: strict on platform/, on
# each service's service.py and schemas.py and on the modules split out of a service.py, the rest
# checked non-strict.
typecheck: bootstrap
	$(VENV)/bin/mypy

# Needs wrk (apt-get install wrk); about four minutes, most of it loading 1,000,000 expenses.
bench: bootstrap
	$(VENV)/bin/python bench/reports.py

# Backup create, verify and restore times on 1,000,000 expenses; about a minute and a half.
bench-backup: bootstrap
	$(VENV)/bin/python bench/backup.py

# The expenses service against a bare FastAPI + asyncpg app and pgbench, on 1,000,000 expenses
# (needs wrk); about eight minutes.
bench-expenses: bootstrap
	$(VENV)/bin/python bench/expenses.py

# The web app's dashboard and expense list against the API calls behind them; about a minute.
bench-web: bootstrap
	$(VENV)/bin/python bench/web.py

# Desktop and phone screenshots of every main page into docs/screenshots/ (needs Debian's
# chromium: apt-get install chromium).
screenshots: bootstrap
	$(VENV)/bin/python scripts/screenshots.py

# A mixed workload at a fixed rate (bench/soak.py): per-minute p50, p99, errors and RSS.
# SOAK_SECONDS (600) and SOAK_RATE (50 requests/s) are settable: SOAK_SECONDS=120 make soak.
soak: bootstrap
	$(VENV)/bin/python bench/soak.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
