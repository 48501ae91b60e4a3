"""Where the repository and the tests' own data files are."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
# Sample ECB rates (eurofxref-sample.xml) and bank statements in the shapes banks send.
DATA = TESTS / "data"
STATEMENTS = TESTS / "statements"
# Upstream CRD schemas for the custom resources of deploy/ (tests/crd-schemas/README.md).
CRD_SCHEMAS = TESTS / "crd-schemas"
ECB_SAMPLE = DATA / "eurofxref-sample.xml"
