"""Log lines never carry secrets, whatever a caller passes (checked in a process of its own,
as the server would log)."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from tests.helpers.database import connected
from tests.helpers.processes import clean_env, cli, free_port, spawn
from tests.helpers.users import PASSWORD

LOGGING_PROGRAM = """
import logging, structlog
from expensetracker.platform.logging import configure_logging
configure_logging(level="INFO", fmt="json", service="auth")
structlog.get_logger("t").info(
    "login", password="hunter2", refresh_token="rt-1", database_url="postgresql://u:pw@h/d",
    authorization="Bearer x", user_id=7,
    error="Client error '404 Not Found' for url 'https://bob:pw-in-url@rates.example/d.xml'",
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
    # A URL's user and password, inside any text (an error repeats its URL).
    assert login["error"].endswith("for url 'https://***@rates.example/d.xml'")
    assert login["user_id"] == 7
    assert login["service"] == "auth"
    assert login["level"] == "info"
    assert login["timestamp"].endswith("Z")
    assert uvicorn["event"] == "Started server process"
    assert uvicorn["service"] == "auth"


@pytest.mark.database
async def test_failed_statements_leave_no_values_in_logs_or_answers(database_url: str) -> None:
    """A statement failing during registration (a CHECK constraint that refuses every new row)
    logs the error, but neither its parameters nor the row PostgreSQL describes in DETAIL: the
    e-mail address and the argon2 hash stay out."""
    async with connected(database_url) as connection:
        await connection.execute(
            "ALTER TABLE auth.users ADD CONSTRAINT refuse_all CHECK (false) NOT VALID"
        )
    email = "secret-person@example.org"
    env = clean_env(
        EXPENSETRACKER_DATABASE_URL=database_url,
        EXPENSETRACKER_LOG_FORMAT="json",
        EXPENSETRACKER_RATE_LIMIT="off",
    )
    with spawn(cli("serve", "--target", "auth", "--port", str(free_port())), env) as process:
        url = process.wait_ready()
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            response = await client.post(
                "/api/v1/auth/register",
                json={"email": email, "password": PASSWORD, "display_name": "Secret Name"},
            )
        process.stop()
    assert response.status_code == 500
    output = process.output
    assert "unhandled_exception" in output and "refuse_all" in output  # the error is logged
    for value in (email, "secret-person", "$argon2", "Secret Name"):
        assert value not in output, value
        assert value not in response.text
