"""The auth service's signing keys: Ed25519, stored in the database with the private half
encrypted under the key-encryption key, rotated by ``expensetracker auth rotate-keys``.

The newest unretired key signs. A retired key stays in the JWKS until every token it can have
signed has expired (the token lifetime, plus the time replicas may still sign with a cached key,
plus clock skew), then it is deleted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from expensetracker.auth.models import SigningKey
from expensetracker.platform.config import Environment, Settings
from expensetracker.platform.errors import Problem
from expensetracker.platform.tokens import CLOCK_SKEW_SECONDS

ALGORITHM = "EdDSA"
# How long a replica signs with the key it loaded before looking for a newer one.
SIGNING_KEY_CACHE_SECONDS = 30
# Refused outside development by the settings; here only so a laptop needs no configuration.
DEVELOPMENT_KEK = "development-only-key-encryption-key-never-protects-real-data"

audit = structlog.get_logger("expensetracker.audit")
log = structlog.get_logger(__name__)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _public_jwk(private_key: Ed25519PrivateKey) -> dict[str, str]:
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    jwk = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
    # RFC 7638 thumbprint as the key id: derived from the key, never reused.
    thumbprint = hashlib.sha256(json.dumps(jwk, separators=(",", ":")).encode()).digest()
    return {**jwk, "kid": _b64url(thumbprint), "alg": ALGORITHM, "use": "sig"}


class KeyEncryption:
    """AES-256-GCM with a key derived (HKDF-SHA256) from the configured secret; the key id is
    authenticated with each private key, so one cannot be swapped for another."""

    def __init__(self, secret: str) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"expensetracker signing keys"
        ).derive(secret.encode())
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: bytes, *, kid: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, kid.encode())

    def decrypt(self, blob: bytes, *, kid: str) -> bytes:
        return self._aead.decrypt(blob[:12], blob[12:], kid.encode())

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyEncryption:
        if settings.key_encryption_key is not None:
            return cls(settings.key_encryption_key.get_secret_value())
        assert settings.env is Environment.development, "settings refuse this outside development"
        return cls(DEVELOPMENT_KEK)


class SigningKeyUnreadable(Problem):
    """The signing key was encrypted under another key-encryption key than the one set: no
    token can be signed until the right one is (a 503, not a 500: nothing is wrong with the
    request, and the cause is named in the log)."""

    status = 503
    default_detail = "Signing in is unavailable right now: the server cannot read its signing key."


@dataclass(frozen=True)
class ActiveKey:
    kid: str
    private_key: Ed25519PrivateKey
    loaded_at: float


class KeyStore:
    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        encryption: KeyEncryption,
        token_ttl_seconds: int,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.encryption = encryption
        self.publish_after_retirement = timedelta(
            seconds=token_ttl_seconds + 2 * SIGNING_KEY_CACHE_SECONDS + CLOCK_SKEW_SECONDS
        )
        self._active: ActiveKey | None = None

    @property
    def loaded(self) -> bool:
        return self._active is not None

    async def ensure_signing_key(self) -> None:
        """At start-up: create the first key if there is none, then load the signing key."""
        async with self.sessionmaker.begin() as session:
            await _lock_keys(session)
            current = await session.scalar(
                select(SigningKey.kid).where(SigningKey.retired_at.is_(None)).limit(1)
            )
            if current is None:
                kid = self._add_key(session)
                audit.info("signing_key_created", kid=kid)
        await self._load()

    async def signing_key(self) -> ActiveKey:
        active = self._active
        if active is None or time.monotonic() - active.loaded_at > SIGNING_KEY_CACHE_SECONDS:
            active = await self._load()
        return active

    async def rotate(self) -> str:
        """A new key signs from now on; the old ones are retired (still published for a while),
        and keys retired long enough ago are deleted."""
        now = datetime.now(UTC)
        async with self.sessionmaker.begin() as session:
            await _lock_keys(session)
            await session.execute(
                update(SigningKey).where(SigningKey.retired_at.is_(None)).values(retired_at=now)
            )
            await session.execute(
                delete(SigningKey).where(
                    SigningKey.retired_at < now - self.publish_after_retirement
                )
            )
            kid = self._add_key(session)
        audit.info("signing_keys_rotated", kid=kid)
        await self._load()
        return kid

    async def jwks(self) -> dict[str, list[dict[str, Any]]]:
        cutoff = datetime.now(UTC) - self.publish_after_retirement
        async with self.sessionmaker() as session:
            keys = await session.scalars(
                select(SigningKey.public_jwk)
                .where(or_(SigningKey.retired_at.is_(None), SigningKey.retired_at > cutoff))
                .order_by(SigningKey.created_at.desc())
            )
            return {"keys": list(keys)}

    def _add_key(self, session: AsyncSession) -> str:
        private_key = Ed25519PrivateKey.generate()
        jwk = _public_jwk(private_key)
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        session.add(
            SigningKey(
                kid=jwk["kid"],
                algorithm=ALGORITHM,
                public_jwk=jwk,
                private_key_encrypted=self.encryption.encrypt(pem, kid=jwk["kid"]),
            )
        )
        return jwk["kid"]

    async def _load(self) -> ActiveKey:
        async with self.sessionmaker() as session:
            row = (
                await session.execute(
                    select(SigningKey.kid, SigningKey.private_key_encrypted)
                    .where(SigningKey.retired_at.is_(None))
                    .order_by(SigningKey.created_at.desc())
                    .limit(1)
                )
            ).one_or_none()
        if row is None:
            raise RuntimeError("no signing key: run `expensetracker auth rotate-keys`")
        try:
            pem = self.encryption.decrypt(row.private_key_encrypted, kid=row.kid)
        except InvalidTag:
            log.error(
                "signing_key_unreadable",
                kid=row.kid,
                cause="encrypted under another EXPENSETRACKER_KEY_ENCRYPTION_KEY than the one set",
            )
            raise SigningKeyUnreadable from None
        private_key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(private_key, Ed25519PrivateKey)
        self._active = ActiveKey(kid=row.kid, private_key=private_key, loaded_at=time.monotonic())
        return self._active


async def _lock_keys(session: AsyncSession) -> None:
    # Replicas starting together, or a rotation during start-up: one at a time.
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext('auth:signing-keys'))"))
