"""What the fuzz tests (tests/platform/test_fuzz.py, tests/web/test_web_fuzz.py) share: how many
examples, and Hypothesis's settings for a bounded, repeatable run."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Examples per operation or route: 20 in CI, more with `make fuzz`.
EXAMPLES = int(os.environ.get("EXPENSETRACKER_FUZZ_EXAMPLES", "20"))

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the fixed seed: the same requests on every run
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
