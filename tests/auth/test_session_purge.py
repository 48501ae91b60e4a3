"""The auth maintenance job: refresh tokens of sessions that have ended are deleted, those of
live sessions kept (used ones too, for reuse detection), and /session reads only live rows."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from expensetracker.auth.service import _LIVE_SESSION, purge_ended_sessions
from expensetracker.platform.db import async_url
from tests.helpers.apps import AppFactory, counter
from tests.helpers.database import connected
from tests.helpers.users import Account, login, signed_up

pytestmark = pytest.mark.database


@pytest.fixture
async def sessionmaker(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(async_url(database_url))
    try:
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()


def nodes(plan: dict) -> Iterator[dict]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def session_id(account: Account) -> str:
    return jwt.decode(account.access_token, options={"verify_signature": False})["sid"]


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/api/v1/auth/refresh", json={"refresh_token": token})


async def rotated(client: httpx.AsyncClient, account: Account, times: int) -> Account:
    for _ in range(times):
        response = await refresh(client, account.refresh_token)
        assert response.status_code == 200, response.text
        pair = response.json()
        account = Account(
            account.email, account.password, pair["access_token"], pair["refresh_token"]
        )
    return account


async def rows(database_url: str, family: str) -> int:
    async with connected(database_url) as connection:
        return await connection.fetchval(
            "SELECT count(*) FROM auth.refresh_tokens WHERE family_id = $1::uuid", family
        )


async def expire(
    database_url: str, family: str, *, ago: timedelta, used_only: bool = False
) -> None:
    async with connected(database_url) as connection:
        await connection.execute(
            "UPDATE auth.refresh_tokens SET expires_at = now() - $2::interval "
            "WHERE family_id = $1::uuid AND (used_at IS NOT NULL OR NOT $3)",
            family,
            ago,
            used_only,
        )


async def test_ended_sessions_are_purged_and_live_ones_kept_with_reuse_detection(
    client: httpx.AsyncClient,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    first = await signed_up(client)
    # A long session: its used tokens expired long ago, its latest one is live.
    long_lived = await rotated(client, first, 3)
    stolen = first.refresh_token
    await expire(database_url, session_id(first), ago=timedelta(days=400), used_only=True)
    logged_out = await rotated(client, await login(client, first.email), 2)
    assert (await client.post("/api/v1/auth/logout", headers=logged_out.headers)).status_code == 204
    expired = await rotated(client, await login(client, first.email), 1)
    await expire(database_url, session_id(expired), ago=timedelta(hours=1))
    just_expired = await login(client, first.email)  # within the grace: kept a while longer
    await expire(database_url, session_id(just_expired), ago=timedelta(seconds=30))

    assert await purge_ended_sessions(sessionmaker, now=datetime.now(UTC)) == 3 + 2
    assert await rows(database_url, session_id(logged_out)) == 0
    assert await rows(database_url, session_id(expired)) == 0
    assert await rows(database_url, session_id(just_expired)) == 1
    assert await rows(database_url, session_id(long_lived)) == 4
    session = await client.get("/api/v1/auth/session", headers=long_lived.headers)
    assert session.status_code == 200 and session.json()["email"] == first.email
    # Nothing more to do the second time.
    assert await purge_ended_sessions(sessionmaker, now=datetime.now(UTC)) == 0

    # The oldest token of the live session, presented again, still ends that session.
    before = counter("expensetracker_refresh_token_reuse_detected_total")
    assert (await refresh(client, stolen)).status_code == 401
    assert counter("expensetracker_refresh_token_reuse_detected_total") == before + 1
    assert (await refresh(client, long_lived.refresh_token)).status_code == 401
    ended = await client.get("/api/v1/auth/session", headers=long_lived.headers)
    assert ended.status_code == 401
    # Revoked now, it goes at the next turn.
    assert await purge_ended_sessions(sessionmaker, now=datetime.now(UTC)) == 4
    assert await rows(database_url, session_id(long_lived)) == 0


async def test_purge_deletes_in_batches_until_done(
    client: httpx.AsyncClient,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    account = await rotated(client, await signed_up(client), 6)
    assert (await client.post("/api/v1/auth/logout", headers=account.headers)).status_code == 204
    assert await purge_ended_sessions(sessionmaker, now=datetime.now(UTC), batch=2) == 7
    assert await rows(database_url, session_id(account)) == 0


async def test_session_reads_only_live_rows_of_a_long_session(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await rotated(client, await signed_up(client), 1)
    family = session_id(account)
    async with connected(database_url) as connection:
        # A year of rotations: used tokens the session keeps for reuse detection.
        await connection.execute(
            "INSERT INTO auth.refresh_tokens"
            " (id, user_id, family_id, token_hash, expires_at, used_at)"
            " SELECT gen_random_uuid(), t.user_id, t.family_id,"
            "  sha256(convert_to(n::text || t.id::text, 'UTF8')), now(), now()"
            " FROM auth.refresh_tokens t, generate_series(1, 20000) n"
            " WHERE t.family_id = $1::uuid AND t.used_at IS NOT NULL",
            family,
        )
        await connection.execute("ANALYZE auth.refresh_tokens")
        user_id = jwt.decode(account.access_token, options={"verify_signature": False})["sub"]
        plan = await connection.fetchval(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {_LIVE_SESSION}", user_id, family
        )
    tokens = next(
        node
        for node in nodes(json.loads(plan)[0]["Plan"])
        if node.get("Relation Name") == "refresh_tokens"
    )
    # The live token only, not the session's 20,001 used ones.
    assert tokens.get("Index Name") == "ix_refresh_tokens_family_id_live"
    assert tokens["Actual Rows"] == 1 and tokens.get("Rows Removed by Filter", 0) == 0
    session = await client.get("/api/v1/auth/session", headers=account.headers)
    assert session.status_code == 200 and session.json()["email"] == account.email


async def test_the_auth_service_runs_the_purge_in_the_background(
    serve_app: AppFactory, database_url: str
) -> None:
    async with serve_app(maintenance_interval_seconds=0.1) as client:
        account = await signed_up(client)
        assert (
            await client.post("/api/v1/auth/logout", headers=account.headers)
        ).status_code == 204
        for _ in range(100):
            if await rows(database_url, session_id(account)) == 0:
                break
            await asyncio.sleep(0.05)
        assert await rows(database_url, session_id(account)) == 0
