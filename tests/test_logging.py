"""Log lines never carry secrets, whatever a caller passes (checked in a process of its own,
as the server would log)."""

from __future__ import annotations

import json
import subprocess
import sys

LOGGING_PROGRAM = """
import logging, structlog
from expensetracker.platform.logging import configure_logging
configure_logging(level="INFO", fmt="json", service="auth")
structlog.get_logger("t").info(
    "login", password="hunter2", refresh_token="rt-1", database_url="postgresql://u:pw@h/d",
    authorization="Bearer x", user_id=7,
)
logging.getLogger("uvicorn.error").info("Started server process")
"""


def json_lines() -> list[dict]:
    result = subprocess.run(
        [sys.executable, "-c", LOGGING_PROGRAM], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stderr.splitlines()]


def test_secret_looking_fields_are_masked_and_stdlib_records_share_the_format() -> None:
    login, uvicorn = json_lines()
    for key in ("password", "refresh_token", "database_url", "authorization"):
        assert login[key] == "***"
    assert login["user_id"] == 7
    assert login["service"] == "auth"
    assert login["level"] == "info"
    assert login["timestamp"].endswith("Z")
    assert uvicorn["event"] == "Started server process"
    assert uvicorn["service"] == "auth"
