"""Schema fuzzing with Schemathesis: every operation of every service's published OpenAPI,
authenticated, over real HTTP against a real server process and PostgreSQL. Checks: no server
error, every status is one the operation documents, and every answer conforms to the schema
documented for it (issue 13), errors included.

Bounded for CI: a fixed seed (derandomized generation) and EXPENSETRACKER_FUZZ_EXAMPLES examples
per operation, and as many sequences of linked operations (default 20). `make fuzz` runs the
same tests with many more examples. No operation is excluded: a test checks that the fuzzed
document holds every operation of every service.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import schemathesis
from hypothesis import settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.stateful import run_state_machine_as_test
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from expensetracker.platform.application import create_app
from expensetracker.platform.config import Settings
from expensetracker.targets import SERVICES
from tests.helpers.database import scratch_database
from tests.helpers.fuzzing import FUZZ_SETTINGS
from tests.helpers.processes import clean_env, cli, free_port, spawn
from tests.helpers.users import PASSWORD, signed_up

pytestmark = pytest.mark.database

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
METHODS = {"get", "put", "post", "delete", "patch"}
# The services with a JSON API (SERVICES), named rather than `all`: a component that serves
# pages instead of an API (the web UI) is not what an OpenAPI fuzzer can judge.
API_TARGETS = ",".join(SERVICES)


@dataclass
class FuzzTarget:
    base_url: str
    headers: dict[str, str]
    calls: int = 0


def status_classes(metrics: str) -> dict[str, int]:
    """Requests answered per status class, from the server's /metrics."""
    totals: dict[str, int] = {}
    for line in metrics.splitlines():
        if line.startswith("http_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            status = labels.split('status_class="')[1][:3]
            totals[status] = totals.get(status, 0) + int(float(value))
    return dict(sorted(totals.items()))


@pytest.fixture(scope="module")
async def fuzz_target(postgres_admin_url: str, migrated_template: str) -> AsyncIterator[FuzzTarget]:
    """`expensetracker serve` of every API service on a database of its own, with one account
    that has some data, so that lists and reports have something to page and sum."""
    async with scratch_database(postgres_admin_url, migrated_template) as url:
        env = clean_env(
            EXPENSETRACKER_DATABASE_URL=url,
            EXPENSETRACKER_RATE_LIMIT="off",
            EXPENSETRACKER_LOG_LEVEL="WARNING",
            # All fuzzed logins come from 127.0.0.1 and nearly all fail: the address limit
            # would soon refuse the logins of the stateful sequences' own accounts.
            EXPENSETRACKER_LOGIN_MAX_FAILURES_PER_ADDRESS="1000000",
        )
        command = cli("serve", "--target", API_TARGETS, "--port", str(free_port()))
        with spawn(command, env) as process:
            base_url = process.wait_ready()
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
                account = await signed_up(client)
                for n in range(3):
                    await client.post(
                        "/api/v1/expenses",
                        json={
                            "amount": f"{n + 1}.50",
                            "currency": "EUR",
                            "occurred_on": "2026-11-0" + str(n + 1),
                            "description": f"seed {n}",
                            "tags": ["seed"],
                        },
                        headers=account.headers,
                    )
                await client.post(
                    "/api/v1/budgets",
                    json={"name": "all", "amount": "100", "currency": "EUR"},
                    headers=account.headers,
                )
            target = FuzzTarget(base_url, account.headers)
            yield target
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
                metrics = (await client.get("/metrics")).text
            answers = status_classes(metrics)
            print(f"\nschemathesis: {target.calls} requests fuzzed, answers {answers}")
            process.stop()
            errors = [n for n, line in enumerate(process.lines) if "unhandled_exception" in line]
            for n in errors[:3]:  # the server's account of a failure, for the CI log
                print("\n".join(process.lines[n : n + 60]))
            # The server never crashed: no 5xx is checked per answer, and it is still here.
            assert process.popen.returncode in (-9, None, 0) or process.popen.returncode < 0


def sign_up_sync(base_url: str) -> dict[str, str]:
    """A new account's Authorization header."""
    body = {"email": f"fuzz-{uuid.uuid4().hex[:12]}@example.org", "password": PASSWORD}
    with httpx.Client(base_url=base_url, timeout=30) as client:
        client.post("/api/v1/auth/register", json=body).raise_for_status()
        login = client.post("/api/v1/auth/login", json=body)
        login.raise_for_status()
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


@pytest.fixture(scope="module")
# Unannotated: the OpenApiSchema it returns is not exported by Schemathesis.
def fuzz_schema(fuzz_target: FuzzTarget):  # type: ignore[no-untyped-def]
    return schemathesis.openapi.from_url(f"{fuzz_target.base_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("fuzz_schema")


@schema.parametrize()
@FUZZ_SETTINGS
def test_every_operation(case: schemathesis.Case, fuzz_target: FuzzTarget) -> None:
    fuzz_target.calls += 1
    case.call_and_validate(
        base_url=fuzz_target.base_url, headers=fuzz_target.headers, checks=CHECKS, timeout=30
    )


def test_the_fuzzed_document_holds_every_operation_of_every_service(
    fuzz_schema,  # type: ignore[no-untyped-def]  # Schemathesis's OpenApiSchema: not exported
) -> None:
    fuzzed = {
        (method, path)
        for path, item in fuzz_schema.raw_schema["paths"].items()
        for method in item
        if method in METHODS
    }
    published = set()
    for spec in SERVICES.values():
        app = create_app([spec], Settings(auth_url="http://127.0.0.1:9", rate_limit="off"))
        published |= {
            (method, path)
            for path, item in app.openapi()["paths"].items()
            for method in item
            if method in METHODS
        }
    assert published and fuzzed == published


def test_stateful_sequences_of_linked_operations(
    fuzz_schema,  # type: ignore[no-untyped-def]  # Schemathesis's OpenApiSchema: not exported
    fuzz_target: FuzzTarget,
) -> None:
    """Sequences where one answer feeds the next request (a created expense's id into its GET,
    PATCH and DELETE...): Schemathesis infers the links between operations from the document
    (FastAPI publishes none), so the success paths of the routes with ids are fuzzed too."""
    machine = fuzz_schema.as_state_machine()
    assert fuzz_schema.statistic.transitions.total > 0  # inferred when the machine is built

    # The base is the state machine class Schemathesis builds at run time from the document.
    class Workflow(machine):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            # Each sequence starts from an account of its own: what a request answers then
            # depends on the sequence alone, as Hypothesis needs to replay it (a category name
            # taken by an earlier sequence would turn a 201 into a 409).
            self.headers = sign_up_sync(fuzz_target.base_url)

        def get_call_kwargs(self, case: schemathesis.Case) -> dict:
            fuzz_target.calls += 1
            return {"base_url": fuzz_target.base_url, "headers": self.headers, "timeout": 30}

        # Schemathesis's hook with its parameters as they are; unannotated, as the dynamic base
        # above leaves the override unchecked anyway.
        def validate_response(  # type: ignore[no-untyped-def]
            self, response, case, additional_checks=None, **kwargs
        ) -> None:
            case.validate_response(response, checks=CHECKS)

    run_state_machine_as_test(
        Workflow,
        settings=settings(FUZZ_SETTINGS, stateful_step_count=6),
    )
