"""EXPENSETRACKER_DATABASE_READ_URL: the reports' read-only paths read there (in Kubernetes, the
CloudNativePG read-only Pooler in front of the replicas), everything that writes stays on the
database URL. The read URL here is a role whose every transaction is read-only, as on a replica:
the reports answer through it, and the writes, which it would refuse, still succeed."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from sqlalchemy import make_url

from expensetracker.platform.state import app_state
from tests.helpers.apps import AppFactory, app_of
from tests.helpers.database import admin_execute
from tests.helpers.expenses import create
from tests.helpers.reports import budget, status_of
from tests.helpers.users import signed_up

pytestmark = pytest.mark.database


async def test_reports_read_from_the_read_url_and_write_to_the_primary(
    database_url: str, serve_app: AppFactory
) -> None:
    reader = f"et_reader_{uuid.uuid4().hex[:10]}"
    password = "read-only-test-password"
    schemas = ("expenses", "reports")
    await admin_execute(
        database_url,
        f"CREATE ROLE {reader} LOGIN PASSWORD '{password}'",
        f"ALTER ROLE {reader} SET default_transaction_read_only = on",
        *(f"GRANT USAGE ON SCHEMA {schema} TO {reader}" for schema in schemas),
        *(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {reader}" for schema in schemas),
    )
    read_url = make_url(database_url).set(username=reader, password=password)
    try:
        async with serve_app(
            database_read_url=read_url.render_as_string(hide_password=False)
        ) as client:
            app = app_of(client)
            account = await signed_up(client)
            await create(client, account, amount="12.34", occurred_on="2026-03-15")
            await budget(client, account, amount="10.00")

            summary = await client.get(
                "/api/v1/reports/summary",
                params={"from": "2026-03-01", "to": "2026-03-31"},
                headers=account.headers,
            )
            assert summary.status_code == 200, summary.text
            [group] = summary.json()["groups"]
            assert group["totals"] == [{"currency": "EUR", "amount": "12.34", "count": 1}]
            for path, params in (
                ("/api/v1/reports/trends", {"month": "2026-03"}),
                ("/api/v1/reports/merchants", {"from": "2026-03-01", "to": "2026-03-31"}),
            ):
                response = await client.get(path, params=params, headers=account.headers)
                assert response.status_code == 200, (path, response.text)

            # The reads went to the read-only role, and nothing it would refuse was sent there.
            async with app_state(app).db.read_driver_pool.connection() as connection:
                assert await connection.fetchval("SELECT current_user") == reader
                with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                    await connection.execute("DELETE FROM reports.budgets")
            async with app_state(app).db.driver_pool.connection() as connection:
                assert await connection.fetchval("SELECT current_user") != reader

            # The budget report records the alerts it finds: on the primary, and it does.
            exceeded = (await status_of(client, account, "2026-03"))["Everything"]
            assert exceeded["state"] == "over"
            alerts = await client.get("/api/v1/reports/alerts", headers=account.headers)
            assert sorted(a["threshold"] for a in alerts.json()["items"]) == [80, 100]
    finally:
        # Revoked one by one: DROP OWNED needs membership of the role, which CI's non-superuser
        # server role does not have.
        await admin_execute(
            database_url,
            *(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {reader}" for schema in schemas),
            *(f"REVOKE USAGE ON SCHEMA {schema} FROM {reader}" for schema in schemas),
            f"DROP ROLE {reader}",
        )
