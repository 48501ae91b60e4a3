"""The browser session and CSRF protection.

The session cookie holds the user's tokens, encrypted and authenticated (AES-GCM) with
``EXPENSETRACKER_WEB_SESSION_KEY``: any replica can read it, and page scripts cannot (HttpOnly).
Forms carry a CSRF token derived from a second random cookie (a signed double submit), and an
unsafe request from another site is refused before it is read (Sec-Fetch-Site / Origin).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "et_session"
CSRF_COOKIE = "et_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
# Refreshed this long before the access token expires, so that no API call meets an expired one.
REFRESH_MARGIN_SECONDS = 30
_NONCE_BYTES = 12


@dataclass(frozen=True)
class Tokens:
    access: str
    refresh: str
    expires_at: float

    def expiring(self, now: float) -> bool:
        return self.expires_at - REFRESH_MARGIN_SECONDS <= now


class SessionCodec:
    def __init__(self, secret: str | None) -> None:
        # Without a configured key (development only), sessions last as long as the process.
        material = secret.encode() if secret else secrets.token_bytes(32)
        self._aead = AESGCM(hashlib.sha256(b"session:" + material).digest())
        self._csrf_key = hashlib.sha256(b"csrf:" + material).digest()

    def seal(self, tokens: Tokens) -> str:
        plain = json.dumps([tokens.access, tokens.refresh, tokens.expires_at]).encode()
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = base64.urlsafe_b64encode(nonce + self._aead.encrypt(nonce, plain, None))
        # Without the padding: a cookie value with "=" would be sent quoted.
        return sealed.decode().rstrip("=")

    def open(self, value: str | None) -> Tokens | None:
        if not value:
            return None
        try:
            raw = base64.urlsafe_b64decode(value.encode() + b"=" * (-len(value) % 4))
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], None)
            access, refresh, expires_at = json.loads(plain)
            return Tokens(access=str(access), refresh=str(refresh), expires_at=float(expires_at))
        except (ValueError, InvalidTag, TypeError):
            return None

    def csrf_token(self, secret: str) -> str:
        return hmac.new(self._csrf_key, secret.encode(), hashlib.sha256).hexdigest()

    def csrf_valid(self, secret: str | None, token: str | None) -> bool:
        return bool(secret and token) and hmac.compare_digest(
            self.csrf_token(secret or ""), token or ""
        )


def tokens_from(pair: dict[str, object], *, now: float | None = None) -> Tokens:
    return Tokens(
        access=str(pair["access_token"]),
        refresh=str(pair["refresh_token"]),
        expires_at=(now or time.time()) + float(str(pair["expires_in"])),
    )


def is_secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session_cookie(
    response: Response, request: Request, value: str, *, max_age: int | None
) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=max_age,
        httponly=True,
        secure=is_secure(request),
        samesite="lax",
        path="/",
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE, httponly=True, secure=is_secure(request), samesite="lax", path="/"
    )


def set_csrf_cookie(response: Response, request: Request, secret: str, *, max_age: int) -> None:
    """Kept as long as a session can last (``max_age``): without an age, a phone's browser drops
    it when closed, and a form in a tab it kept would be refused, still signed in."""
    response.set_cookie(
        CSRF_COOKIE,
        secret,
        max_age=max_age,
        httponly=True,
        secure=is_secure(request),
        samesite="strict",
        path="/",
    )


def cross_site(request: Request) -> bool:
    """True for a request that another site made the browser send (Fetch Metadata, or failing
    that the Origin header). Browsers without either header are judged by the CSRF token alone."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":  # "null" under Referrer-Policy: no-referrer
        return False
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] != host
