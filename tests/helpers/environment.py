"""What the environment names for the tests: an external PostgreSQL, a Redis, and whether this
is CI (where every prerequisite must be present)."""

from __future__ import annotations

import os

EXTERNAL_DATABASE_URL = os.environ.get("EXPENSETRACKER_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("EXPENSETRACKER_TEST_REDIS_URL")
# CI systems (GitHub Actions, GitLab, .ci/run) set CI=true.
IN_CI = os.environ.get("CI", "").lower() in {"true", "1"}
