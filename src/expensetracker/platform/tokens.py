"""Access-token verification, the same in every service.

Tokens are signed by the auth service; every service verifies them locally with the public keys
from auth's JWKS (fetched over HTTP: in-process in single-process mode, from the auth Service in
Kubernetes), cached and refetched when a token names an unknown key. Only the algorithms in
``ALLOWED_ALGORITHMS`` are accepted: never ``none``, never HMAC. Routes take the verified
caller as ``deps.CurrentUser``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import structlog

from expensetracker.platform.errors import InvalidToken

log = structlog.get_logger(__name__)

JWKS_PATH = "/api/v1/auth/.well-known/jwks.json"
ALLOWED_ALGORITHMS = ("EdDSA",)
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "nbf", "jti")
CLOCK_SKEW_SECONDS = 5
VERIFIED_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a user, in one session, with one token."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    token_id: str


class TokenVerifier:
    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        issuer: str,
        audience: str,
        max_lifetime_seconds: int,
        cache_seconds: float = 300.0,
        min_refetch_seconds: float = 10.0,
    ) -> None:
        self.http = http
        self.issuer = issuer
        self.audience = audience
        # No token lives longer than auth issues them for: a longer one was not made by auth as
        # configured (a leaked key, or an old configuration), whatever its signature.
        self.max_lifetime_seconds = max_lifetime_seconds
        self.cache_seconds = cache_seconds
        self.min_refetch_seconds = min_refetch_seconds
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        # Tokens already verified, until they expire: a client sends the same token for up to
        # 15 minutes, and the signature check is the costliest step of a request.
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    async def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            self._verified.move_to_end(token)
            return cached[0]
        principal, expires_at = await self._verify(token)
        self._verified[token] = (principal, expires_at)
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken from None
        if header.get("alg") not in ALLOWED_ALGORITHMS or not isinstance(header.get("kid"), str):
            raise InvalidToken
        key = await self._key(header["kid"])
        if key is None:
            raise InvalidToken
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=list(ALLOWED_ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": list(REQUIRED_CLAIMS)},
            )
            lifetime = claims["exp"] - claims["iat"]
            if not 0 < lifetime <= self.max_lifetime_seconds + CLOCK_SKEW_SECONDS:
                raise InvalidToken
            principal = Principal(
                user_id=uuid.UUID(claims["sub"]),
                session_id=uuid.UUID(claims["sid"]),
                token_id=str(claims["jti"]),
            )
            return principal, float(claims["exp"])
        except (jwt.PyJWTError, KeyError, ValueError, TypeError):
            raise InvalidToken from None

    async def _key(self, kid: str) -> jwt.PyJWK | None:
        stale = time.monotonic() - self._fetched_at > self.cache_seconds
        if kid not in self._keys or stale:
            await self._refresh(force=stale)
        return self._keys.get(kid)

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            since = time.monotonic() - self._fetched_at
            # An unknown kid refetches at most every `min_refetch_seconds`: forged kids
            # cannot turn every request into a JWKS fetch.
            if not force and since < self.min_refetch_seconds:
                return
            try:
                response = await self.http.get(JWKS_PATH)
                response.raise_for_status()
                self._keys = _parse_jwks(response.json())
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("jwks_fetch_failed", error=type(exc).__name__)
            finally:
                self._fetched_at = time.monotonic()


def _parse_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    keys = {}
    for entry in document.get("keys", []):
        if entry.get("alg") in ALLOWED_ALGORITHMS and isinstance(entry.get("kid"), str):
            keys[entry["kid"]] = jwt.PyJWK(entry)
    return keys
