"""Brute-force protection shared by replicas, and answers that reveal no account's existence."""

from __future__ import annotations

import statistics
import time

import httpx
import pytest
import structlog

from tests.helpers.apps import AppFactory, app_of, counter
from tests.helpers.users import PASSWORD, new_email, register, signed_up

pytestmark = pytest.mark.database


async def attempt(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/api/v1/auth/login", json={"email": email, "password": password})


async def test_wrong_password_and_unknown_email_answer_alike(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    wrong = await attempt(client, account.email, "not the password")
    unknown = await attempt(client, new_email(), "not the password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.headers["content-type"] == unknown.headers["content-type"]


async def test_wrong_password_and_unknown_email_take_similar_time(
    client: httpx.AsyncClient,
) -> None:
    # Both verify an argon2id hash (a decoy for unknown addresses); without the decoy the unknown
    # address would answer in a fraction of the time.
    account = await signed_up(client)

    async def median_seconds(email: str) -> float:
        durations = []
        for _ in range(4):  # below the per-account limit of 5
            started = time.perf_counter()
            await attempt(client, email, "not the password")
            durations.append(time.perf_counter() - started)
        return statistics.median(durations)

    existing = await median_seconds(account.email)
    unknown = await median_seconds(new_email())
    assert 0.5 < unknown / existing < 2.0, (existing, unknown)


async def test_register_answers_alike_for_new_and_taken_addresses(
    client: httpx.AsyncClient,
) -> None:
    email = new_email()
    body = {"email": email, "password": PASSWORD, "display_name": "Ann"}
    first = await client.post("/api/v1/auth/register", json=body)
    taken = await client.post(
        "/api/v1/auth/register", json={**body, "email": email.upper(), "password": "other pass 42"}
    )
    assert first.status_code == taken.status_code == 202
    assert first.json() == taken.json()
    # The second registration changed nothing: the first password still works.
    assert (await attempt(client, email, PASSWORD)).status_code == 200


async def test_account_is_throttled_after_repeated_failures(serve_app: AppFactory) -> None:
    before = counter("expensetracker_logins_total", outcome="throttled")
    async with serve_app(login_max_failures_per_account_address=3) as client:
        account = await signed_up(client)
        failures = [
            (await attempt(client, account.email, "wrong!!!")).status_code for _ in range(3)
        ]
        throttled = await attempt(client, account.email, PASSWORD)  # even the right password
        unknown = new_email()
        unknown_failures = [
            (await attempt(client, unknown, "wrong!!!")).status_code for _ in range(3)
        ]
        unknown_throttled = await attempt(client, unknown, "wrong!!!")
    assert failures == [401, 401, 401]
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["retry-after"]) <= 900
    assert throttled.headers["content-type"] == "application/problem+json"
    # An address nobody registered is throttled the same way: no hint that it is unknown.
    assert unknown_failures == [401, 401, 401]
    assert unknown_throttled.status_code == 429
    assert counter("expensetracker_logins_total", outcome="throttled") == before + 2


async def test_success_resets_the_count_of_its_address(serve_app: AppFactory) -> None:
    async with serve_app(login_max_failures_per_account_address=3) as client:
        account = await signed_up(client)
        for _ in range(2):
            await attempt(client, account.email, "wrong!!!")
        assert (await attempt(client, account.email, PASSWORD)).status_code == 200
        for _ in range(2):
            await attempt(client, account.email, "wrong!!!")
        assert (await attempt(client, account.email, PASSWORD)).status_code == 200


async def test_client_address_is_throttled_across_accounts(serve_app: AppFactory) -> None:
    async with serve_app(
        login_max_failures_per_address=4, client_address="198.51.100.20"
    ) as client:
        statuses = [(await attempt(client, new_email(), "wrong!!!")).status_code for _ in range(5)]
    async with serve_app(client_address="198.51.100.21") as elsewhere:
        other_address = await attempt(elsewhere, new_email(), "wrong!!!")
    assert statuses == [401, 401, 401, 401, 429]
    assert other_address.status_code == 401


async def test_throttling_is_shared_by_two_app_instances(serve_app: AppFactory) -> None:
    # Two replicas on one database: failures counted by one refuse logins on the other.
    async with (
        serve_app(login_max_failures_per_account_address=4) as first,
        serve_app(login_max_failures_per_account_address=4) as second,
    ):
        account = await signed_up(first)
        for replica in (first, second, first, second):
            assert (await attempt(replica, account.email, "wrong!!!")).status_code == 401
        assert (await attempt(first, account.email, PASSWORD)).status_code == 429
        assert (await attempt(second, account.email, PASSWORD)).status_code == 429


async def test_password_change_failures_count_as_login_failures(serve_app: AppFactory) -> None:
    async with serve_app(login_max_failures_per_account_address=2) as client:
        account = await signed_up(client)
        statuses = []
        for _ in range(3):
            response = await client.post(
                "/api/v1/auth/password",
                json={"current_password": "guess guess", "new_password": "brand new phrase"},
                headers=account.headers,
            )
            statuses.append(response.status_code)
    assert statuses == [403, 403, 429]


async def test_security_events_are_audited_without_secrets(client: httpx.AsyncClient) -> None:
    email = new_email()
    with structlog.testing.capture_logs() as logs:
        await register(client, email)
        await attempt(client, email, "wrong password 1")
        ok = await attempt(client, email, PASSWORD)
        await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": ok.json()["refresh_token"]}
        )
        await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": ok.json()["refresh_token"]}
        )
    events = [entry["event"] for entry in logs]
    for expected in (
        "user_registered",
        "login_failed",
        "login_succeeded",
        "refresh_token_reuse_detected",
    ):
        assert expected in events
    text = repr(logs)
    assert PASSWORD not in text
    assert "wrong password 1" not in text
    assert ok.json()["refresh_token"] not in text
    assert email not in text  # accounts appear as user ids or hashed subjects


def from_address(client: httpx.AsyncClient, address: str) -> httpx.AsyncClient:
    """Another client of the same running app, connecting from ``address``."""
    # httpx types the transport as a BaseTransport; an in-process client's is an ASGITransport.
    app = app_of(client)
    transport = httpx.ASGITransport(app=app, client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_failures_from_elsewhere_never_lock_the_owner_out(serve_app: AppFactory) -> None:
    """Issue 13, finding 7: wrong passwords from anyone used to lock the owner out for 15
    minutes. Now attackers' addresses are throttled, and slowed down more and more once the
    account has many failures, while the owner's address, which has not failed, gets in."""
    async with serve_app(
        login_max_failures_per_account_address=3, login_max_failures_per_account=6
    ) as client:
        account = await signed_up(client)
        attackers = [from_address(client, f"198.51.100.{n}") for n in range(1, 4)]
        owner = from_address(client, "203.0.113.50")
        # Two attackers, three wrong passwords each: each one's address is now refused on this
        # account, and the account has 6 failures, its limit. A third attacker gets one guess;
        # having failed past the account limit, it must wait.
        statuses = [
            (await attempt(attacker, account.email, "wrong!!!")).status_code
            for attacker in attackers[:2]
            for _ in range(3)
        ]
        statuses += [
            (await attempt(attackers[2], account.email, "wrong!!!")).status_code for _ in range(2)
        ]
        refused = await attempt(attackers[0], account.email, PASSWORD)
        owner_login = await attempt(owner, account.email, PASSWORD)
        # So does every fresh address, and the delay doubles with every failure on the account.
        delays = []
        for n in range(10, 13):
            fresh = from_address(client, f"192.0.2.{n}")
            assert (await attempt(fresh, account.email, "wrong!!!")).status_code == 401
            again = await attempt(fresh, account.email, "wrong!!!")
            assert again.status_code == 429, again.text
            delays.append(int(again.headers["retry-after"]))
        owner_again = await attempt(owner, account.email, PASSWORD)
        for extra in (*attackers, owner):
            await extra.aclose()
    assert statuses == [401] * 7 + [429]
    assert refused.status_code == 429  # even with the right password, from a failing address
    assert owner_login.status_code == 200, owner_login.text
    assert owner_again.status_code == 200, owner_again.text
    # 8, 9 and 10 failures with a limit of 6: 4, 8 and 16 seconds after the last one.
    assert delays == [4, 8, 16] or (delays[0] < delays[1] < delays[2] <= 16), delays
