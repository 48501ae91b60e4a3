"""Access tokens as every service sees them: issued by auth, verified with its JWKS, forged
ones refused (checked on a route of the expenses service and on auth's own /me)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import signal
import time
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from prometheus_client import REGISTRY

from expensetracker.auth.service import AuthContext
from expensetracker.platform.state import app_state
from expensetracker.targets import SERVICES
from tests.helpers.apps import AppFactory, app_of
from tests.helpers.database import connected
from tests.helpers.processes import clean_env, cli, free_port, spawn
from tests.helpers.users import PASSWORD, Account, signed_up

pytestmark = pytest.mark.database

PROTECTED = ("/api/v1/categories", "/api/v1/auth/me")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def forgeries(app: FastAPI, account: Account) -> dict[str, str]:
    key = await app_state(app).get(AuthContext).keys.signing_key()
    claims = jwt.decode(account.access_token, options={"verify_signature": False})
    header, payload, signature = account.access_token.split(".")
    now = int(time.time())
    stranger = Ed25519PrivateKey.generate()
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def sign(changes: dict, private=key.private_key, kid: str = key.kid) -> str:
        body = {k: v for k, v in {**claims, **changes}.items() if v is not None}
        return jwt.encode(body, private, algorithm="EdDSA", headers={"kid": kid})

    def unsigned(alg: str) -> str:
        head = b64(json.dumps({"alg": alg, "typ": "JWT", "kid": key.kid}).encode())
        return f"{head}.{payload}."

    # The classic confusion attack: HMAC keyed with the (public) verification key.
    hs_head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    hs_mac = hmac.new(public_pem, f"{hs_head}.{payload}".encode(), hashlib.sha256).digest()
    tampered = b64(json.dumps({**claims, "sub": str(uuid.uuid4())}).encode())
    return {
        "alg none": unsigned("none"),
        "alg None": unsigned("None"),
        "HS256 keyed with the public key": f"{hs_head}.{payload}.{b64(hs_mac)}",
        "expired": sign({"iat": now - 3600, "nbf": now - 3600, "exp": now - 60}),
        "not valid yet": sign({"nbf": now + 600}),
        "wrong audience": sign({"aud": "urn:someone-else"}),
        "wrong issuer": sign({"iss": "urn:evil"}),
        "no expiry": sign({"exp": None}),
        # Signed by the real key, but living a day where auth issues 15 minutes.
        "lifetime beyond the configured TTL": sign({"iat": now, "nbf": now, "exp": now + 86400}),
        "lifetime just beyond TTL plus leeway": sign({"iat": now, "nbf": now, "exp": now + 906}),
        "no jti": sign({"jti": None}),
        "tampered claims": f"{header}.{tampered}.{signature}",
        "truncated signature": f"{header}.{payload}.{signature[:-4]}",
        "unknown kid": sign({}, private=stranger, kid="unknown-" + uuid.uuid4().hex),
        "right kid, wrong key": sign({}, private=stranger),
        "not a JWT": "definitely-not-a-jwt",
    }


async def test_fresh_token_is_accepted_and_forged_ones_refused(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    for path in PROTECTED:
        assert (await client.get(path, headers=account.headers)).status_code == 200
    for name, token in (await forgeries(app_of(client), account)).items():
        for path in PROTECTED:
            response = await client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401, (name, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Basic dXNlcjpwYXNz", "Token abc", "Bearer  "]
)
async def test_missing_or_malformed_authorization_is_a_401(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await client.get("/api/v1/categories", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_two_authorization_headers_are_a_401_whichever_comes_first(
    client: httpx.AsyncClient,
) -> None:
    # The first used to be taken alone: a valid token first let the request through, whatever
    # a proxy in front had made of the second.
    account = await signed_up(client)
    for path in PROTECTED:
        for second in ("Bearer not-a-token", account.headers["Authorization"]):
            response = await client.get(
                path,
                headers=[
                    ("Authorization", account.headers["Authorization"]),
                    ("Authorization", second),
                ],
            )
            assert response.status_code == 401, (path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.json()["detail"] == "Send one Authorization header, not several."


async def test_token_claims_and_header(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    header = jwt.get_unverified_header(account.access_token)
    claims = jwt.decode(account.access_token, options={"verify_signature": False})
    me = (await client.get("/api/v1/auth/me", headers=account.headers)).json()
    assert header["alg"] == "EdDSA"
    jwks = (await client.get("/api/v1/auth/.well-known/jwks.json")).json()
    assert header["kid"] in {key["kid"] for key in jwks["keys"]}
    assert {"iss", "aud", "sub", "exp", "iat", "nbf", "jti", "sid"} <= set(claims)
    assert claims["sub"] == me["id"]
    assert claims["exp"] - claims["iat"] == 900
    # The JWKS holds public keys only.
    assert all(set(key) == {"kty", "crv", "x", "kid", "alg", "use"} for key in jwks["keys"])


def jwks_fetches() -> float:
    labels = {
        "service": "auth",
        "method": "GET",
        "route": "/api/v1/auth/.well-known/jwks.json",
        "status_class": "2xx",
    }
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


async def test_unknown_kids_cannot_flood_the_jwks(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    forged = (await forgeries(app_of(client), account))["unknown kid"]
    before = jwks_fetches()
    statuses = {
        (
            await client.get("/api/v1/categories", headers={"Authorization": f"Bearer {forged}"})
        ).status_code
        for _ in range(25)
    }
    assert statuses == {401}
    assert jwks_fetches() - before <= 1  # one refetch per 10 s at most


async def test_key_rotation_keeps_old_tokens_valid_until_they_expire(
    client: httpx.AsyncClient, database_url: str
) -> None:
    before = await signed_up(client)
    old_kid = jwt.get_unverified_header(before.access_token)["kid"]

    rotation = await run_cli(["auth", "rotate-keys"], database_url)
    assert rotation.startswith("new signing key: ")
    new_kid = rotation.removeprefix("new signing key: ").strip()
    assert await published_kids(client) == {old_kid, new_kid}

    # This replica picks up the new key within its cache period; force it now.
    app = app_of(client)
    await app_state(app).get(AuthContext).keys._load()
    after = await signed_up(client)
    assert jwt.get_unverified_header(after.access_token)["kid"] == new_kid
    for account in (before, after):  # the verifier refetches the JWKS for the new kid
        assert (await client.get("/api/v1/categories", headers=account.headers)).status_code == 200


async def run_cli(args: list[str], database_url: str) -> str:
    """The last line the command printed."""
    env = clean_env(EXPENSETRACKER_DATABASE_URL=database_url)
    with spawn(cli(*args), env) as process:
        assert await asyncio.to_thread(process.wait, 60) == 0, process.output
    return process.lines[-1]


async def published_kids(client: httpx.AsyncClient) -> set[str]:
    jwks = (await client.get("/api/v1/auth/.well-known/jwks.json")).json()
    return {key["kid"] for key in jwks["keys"]}


async def test_retired_keys_leave_the_jwks_after_their_tokens_expire(
    serve_app: AppFactory, database_url: str
) -> None:
    async with serve_app() as client:
        account = await signed_up(client)
        keys = app_state(app_of(client)).get(AuthContext).keys
        old_kid = jwt.get_unverified_header(account.access_token)["kid"]
        await keys.rotate()
        assert old_kid in await published_kids(client)
        # Time passes: the old key retired longer ago than any token it signed can live.
        async with connected(database_url) as connection:
            await connection.execute(
                "UPDATE auth.signing_keys SET retired_at = now() - interval '1 hour' "
                "WHERE kid = $1",
                old_kid,
            )
        assert old_kid not in await published_kids(client)
    async with serve_app() as fresh:  # a verifier that never saw the old key
        response = await fresh.get("/api/v1/categories", headers=account.headers)
    assert response.status_code == 401


async def test_a_signing_key_under_another_key_encryption_key_is_a_503_saying_so(
    serve_app: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serve_app(key_encryption_key="first-key-encryption-key-" * 2) as client:
        account = await signed_up(client)
    # Started again with another key-encryption key: the stored signing key cannot be read.
    async with serve_app(key_encryption_key="another-key-encryption-key-" * 2) as client:
        refused = await client.post(
            "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
        )
        ready = await client.get("/readyz")
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert "cannot read its signing key" in refused.json()["detail"]
    assert ready.status_code == 503 and ready.json()["checks"]["signing_key"] == "not loaded"
    logged = capsys.readouterr()
    said = logged.out + logged.err
    assert "signing_key_unreadable" in said and "EXPENSETRACKER_KEY_ENCRYPTION_KEY" in said
    assert "another-key-encryption-key" not in said and "unhandled_exception" not in said


async def test_services_in_separate_processes_verify_with_the_auth_jwks(
    serve_app: AppFactory, database_url: str
) -> None:
    """Kubernetes mode: auth is another process; expenses fetches its JWKS over HTTP."""
    env = clean_env(EXPENSETRACKER_DATABASE_URL=database_url, EXPENSETRACKER_RATE_LIMIT="off")
    with spawn(cli("serve", "--target", "auth", "--port", str(free_port())), env) as auth:
        auth_url = auth.wait_ready()
        async with httpx.AsyncClient(base_url=auth_url, timeout=10) as auth_client:
            account = await signed_up(auth_client)
        async with serve_app([SERVICES["expenses"]], auth_url=auth_url) as expenses:
            accepted = await expenses.get("/api/v1/categories", headers=account.headers)
            forged = await expenses.get(
                "/api/v1/categories",
                headers={"Authorization": f"Bearer {account.access_token[:-3]}AAA"},
            )
        auth.signal(signal.SIGTERM)
        assert auth.wait() == 0
    assert accepted.status_code == 200
    assert forged.status_code == 401
