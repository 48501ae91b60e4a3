"""Accounts and sessions: register, login, refresh, logout, password change, deletion."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.helpers.apps import AppFactory, counter
from tests.helpers.database import connected
from tests.helpers.users import PASSWORD, login, new_email, register, signed_up

pytestmark = pytest.mark.database


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/api/v1/auth/refresh", json={"refresh_token": token})


async def test_register_then_login_and_me(client: httpx.AsyncClient) -> None:
    before = counter("expensetracker_users_registered_total")
    email = new_email()
    response = await client.post(
        "/api/v1/auth/register",
        json={"email": email.upper(), "password": PASSWORD, "display_name": "Ann"},
    )
    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    account = await login(client, email)  # the address is case-insensitive
    me = await client.get("/api/v1/auth/me", headers=account.headers)
    assert me.status_code == 200
    assert me.json()["email"] == email
    assert me.json()["display_name"] == "Ann"
    assert counter("expensetracker_users_registered_total") == before + 1


async def test_register_without_display_name_uses_the_email_local_part(
    client: httpx.AsyncClient,
) -> None:
    email = new_email()
    response = await client.post(
        "/api/v1/auth/register", json={"email": email, "password": PASSWORD}
    )
    assert response.status_code == 202, response.text
    account = await login(client, email)
    me = (await client.get("/api/v1/auth/me", headers=account.headers)).json()
    assert me["display_name"] == email.split("@")[0]
    other = new_email()
    body = {"email": other, "password": PASSWORD, "display_name": None}
    assert (await client.post("/api/v1/auth/register", json=body)).status_code == 202
    me = (await client.get("/api/v1/auth/me", headers=(await login(client, other)).headers)).json()
    assert me["display_name"] == other.split("@")[0]


async def test_login_answer_has_the_token_pair(client: httpx.AsyncClient) -> None:
    email = new_email()
    await register(client, email)
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900


@pytest.mark.parametrize(
    ("payload", "field", "error_type"),
    [
        ({"email": "not-an-email"}, "body.email", "value_error"),
        ({"password": "short7!"}, "body.password", "password_policy"),
        ({"password": "iloveyou"}, "body.password", "password_policy"),  # breached, common
        ({"password": "Password1"}, "body.password", "password_policy"),  # case-insensitive
        ({"display_name": ""}, "body.display_name", "string_too_short"),
        ({"is_admin": True}, "body.is_admin", "extra_forbidden"),
        ({"display_name": "Ann\x00"}, "body.display_name", "value_error"),
        ({"password": "correct horse\x00battery"}, "body.password", "value_error"),
    ],
)
async def test_register_refuses_bad_input(
    client: httpx.AsyncClient, payload: dict, field: str, error_type: str
) -> None:
    body = {"email": new_email(), "password": PASSWORD, "display_name": "Ann", **payload}
    response = await client.post("/api/v1/auth/register", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    errors = {error["field"]: error["type"] for error in response.json()["errors"]}
    assert errors == {field: error_type}
    assert (await client.post("/api/v1/auth/login", json=body)).status_code in (401, 422)


async def test_register_says_every_refused_field_at_once(client: httpx.AsyncClient) -> None:
    # The password's policy was checked after the body was: an address and a password both
    # refused came back one at a time.
    body = {"email": "not-an-email", "password": "short7!", "display_name": ""}
    response = await client.post("/api/v1/auth/register", json=body)
    assert response.status_code == 422
    errors = {error["field"]: error for error in response.json()["errors"]}
    assert set(errors) == {"body.email", "body.password", "body.display_name"}
    assert errors["body.password"]["message"] == "Use at least 8 characters."


async def test_password_rules_follow_asvs(client: httpx.AsyncClient) -> None:
    # Any characters, no composition rules, long passphrases welcome; not the email itself.
    for password in ("ünïcödé-пароль-密码", "a" * 8 + "🙂", "x" * 1024, "lowercase only words"):
        account = await signed_up(client, password)
        assert account.access_token
    email = new_email()
    response = await client.post(
        "/api/v1/auth/register",
        json={"email": email, "password": email, "display_name": "Ann"},
    )
    assert response.status_code == 422
    too_long = await client.post(
        "/api/v1/auth/register",
        json={"email": new_email(), "password": "y" * 1025, "display_name": "Ann"},
    )
    assert too_long.status_code == 422


async def test_refresh_rotates_the_token(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    response = await refresh(client, account.refresh_token)
    assert response.status_code == 200
    rotated = response.json()
    assert rotated["refresh_token"] != account.refresh_token
    me = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {rotated['access_token']}"}
    )
    assert me.status_code == 200
    assert (await refresh(client, rotated["refresh_token"])).status_code == 200


async def test_reused_refresh_token_revokes_the_whole_session(client: httpx.AsyncClient) -> None:
    before = counter("expensetracker_refresh_token_reuse_detected_total")
    account = await signed_up(client)
    other_session = await login(client, account.email)
    rotated = (await refresh(client, account.refresh_token)).json()

    reused = await refresh(client, account.refresh_token)  # the stolen copy comes back
    assert reused.status_code == 401
    assert reused.headers["content-type"] == "application/problem+json"
    # The thief's and the owner's latest tokens of that session are both dead now...
    assert (await refresh(client, rotated["refresh_token"])).status_code == 401
    # ...but another session of the same user is untouched.
    assert (await refresh(client, other_session.refresh_token)).status_code == 200
    assert counter("expensetracker_refresh_token_reuse_detected_total") == before + 1


@pytest.mark.parametrize("token", ["", "garbage", "x" * 43])
async def test_unknown_refresh_tokens_are_refused(client: httpx.AsyncClient, token: str) -> None:
    response = await refresh(client, token)
    assert response.status_code in (401, 422)


async def test_logout_ends_only_this_session(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    other = await login(client, account.email)
    response = await client.post("/api/v1/auth/logout", headers=account.headers)
    assert response.status_code == 204
    assert (await refresh(client, account.refresh_token)).status_code == 401
    assert (await refresh(client, other.refresh_token)).status_code == 200


async def test_logout_all_ends_every_session(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    others = [await login(client, account.email) for _ in range(2)]
    response = await client.post("/api/v1/auth/logout-all", headers=account.headers)
    assert response.status_code == 204
    for session in [account, *others]:
        assert (await refresh(client, session.refresh_token)).status_code == 401


async def test_password_change_revokes_every_other_session(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    other = await login(client, account.email)
    new_password = "a completely different passphrase"
    response = await client.post(
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": new_password},
        headers=account.headers,
    )
    assert response.status_code == 204
    assert (await refresh(client, other.refresh_token)).status_code == 401
    assert (await refresh(client, account.refresh_token)).status_code == 200  # this session stays
    old = await client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
    )
    assert old.status_code == 401
    await login(client, account.email, new_password)


async def test_concurrent_password_changes_need_the_password_of_their_time(
    client: httpx.AsyncClient,
) -> None:
    # Someone who knows the old password must not win a race with the owner changing it: each
    # change is checked against the password as the changes before it left it.
    account = await signed_up(client)
    new_passwords = [f"a fresh passphrase number {n}" for n in range(4)]
    answers = await asyncio.gather(
        *(
            client.post(
                "/api/v1/auth/password",
                json={"current_password": PASSWORD, "new_password": new_password},
                headers=account.headers,
            )
            for new_password in new_passwords
        )
    )
    statuses = [answer.status_code for answer in answers]
    assert sorted(statuses) == [204, 403, 403, 403], statuses
    await login(client, account.email, new_passwords[statuses.index(204)])


async def test_password_change_checks_the_current_and_the_new_password(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    wrong = await client.post(
        "/api/v1/auth/password",
        json={"current_password": "not the password", "new_password": "another good phrase"},
        headers=account.headers,
    )
    weak = await client.post(
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": "12345678"},
        headers=account.headers,
    )
    same = await client.post(
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": PASSWORD},
        headers=account.headers,
    )
    anonymous = await client.post(
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": "another good phrase"},
    )
    assert wrong.status_code == 403
    assert weak.status_code == 422
    assert weak.json()["errors"][0]["field"] == "body.new_password"
    assert same.status_code == 422
    assert same.json()["errors"] == [
        {
            "field": "body.new_password",
            "message": "must differ from the current password",
            "type": "value_error",
        }
    ]
    assert anonymous.status_code == 401
    await login(client, account.email)  # the password did not change


async def test_account_deletion_writes_one_event_in_the_same_transaction(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    me = (await client.get("/api/v1/auth/me", headers=account.headers)).json()
    refused = await client.request(
        "DELETE", "/api/v1/auth/me", json={"password": "wrong password!"}, headers=account.headers
    )
    assert refused.status_code == 403

    deleted = await client.request(
        "DELETE", "/api/v1/auth/me", json={"password": PASSWORD}, headers=account.headers
    )
    assert deleted.status_code == 204
    again = await client.request(
        "DELETE", "/api/v1/auth/me", json={"password": PASSWORD}, headers=account.headers
    )
    assert again.status_code == 401  # the token outlives the account, but finds nobody

    async with connected(database_url) as connection:
        events = await connection.fetch(
            "SELECT event_type, payload FROM auth.user_events_v1 WHERE user_id = $1", me["id"]
        )
        users = await connection.fetchval("SELECT count(*) FROM auth.users WHERE id = $1", me["id"])
        tokens = await connection.fetchval(
            "SELECT count(*) FROM auth.refresh_tokens WHERE user_id = $1", me["id"]
        )
    assert [event["event_type"] for event in events] == ["user.deleted"]
    assert users == tokens == 0
    assert (await refresh(client, account.refresh_token)).status_code == 401
    login_again = await client.post(
        "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
    )
    assert login_again.status_code == 401


async def test_account_is_kept_when_its_event_cannot_be_written(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    async with connected(database_url) as connection:
        # The outbox refuses writes: the deletion must roll back with it.
        await connection.execute(
            """
            CREATE FUNCTION auth.refuse() RETURNS trigger LANGUAGE plpgsql
            AS $$ BEGIN RAISE EXCEPTION 'outbox unavailable'; END $$;
            CREATE TRIGGER refuse BEFORE INSERT ON auth.outbox
            FOR EACH ROW EXECUTE FUNCTION auth.refuse();
            """
        )
        response = await client.request(
            "DELETE", "/api/v1/auth/me", json={"password": PASSWORD}, headers=account.headers
        )
        remaining = await connection.fetchval(
            "SELECT count(*) FROM auth.users WHERE email = $1", account.email
        )
        events = await connection.fetchval("SELECT count(*) FROM auth.outbox")
    assert response.status_code == 500
    assert remaining == 1
    assert events == 0
    assert (await client.get("/api/v1/auth/me", headers=account.headers)).status_code == 200


async def test_rehash_on_login_when_the_cost_changes(
    serve_app: AppFactory, database_url: str
) -> None:
    email = new_email()
    async with serve_app() as client:
        await register(client, email)
    assert (await stored_hash(database_url, email)).startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    async with serve_app(password_hash_iterations=3) as stronger:
        await login(stronger, email)
    assert (await stored_hash(database_url, email)).startswith("$argon2id$v=19$m=19456,t=3,p=1$")


async def stored_hash(database_url: str, email: str) -> str:
    async with connected(database_url) as connection:
        return await connection.fetchval(
            "SELECT password_hash FROM auth.users WHERE email = $1", email
        )


async def test_the_session_route_answers_401_once_the_session_has_ended(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    live = await client.get("/api/v1/auth/session", headers=account.headers)
    assert live.status_code == 200 and live.json()["email"] == account.email
    other = await login(client, account.email)
    assert (await client.post("/api/v1/auth/logout", headers=account.headers)).status_code == 204
    ended = await client.get("/api/v1/auth/session", headers=account.headers)
    assert ended.status_code == 401
    # The access token itself stays valid until it expires; the other session is untouched.
    assert (await client.get("/api/v1/auth/me", headers=account.headers)).status_code == 200
    assert (await client.get("/api/v1/auth/session", headers=other.headers)).status_code == 200
