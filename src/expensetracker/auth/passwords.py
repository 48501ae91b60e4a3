"""Password policy (OWASP ASVS 5) and argon2id hashing.

Policy: at least 8 characters after NFKC normalisation, up to 1024, any characters, no
composition rules, none of the 20,000 most common breached passwords, not the email address.
"""

from __future__ import annotations

import asyncio
import gzip
import secrets
import unicodedata
from functools import cache
from importlib.resources import files

import argon2

from expensetracker.platform.config import Settings

MIN_LENGTH = 8
MAX_LENGTH = 1024


@cache
def common_passwords() -> frozenset[str]:
    data = files("expensetracker.auth").joinpath("data/common-passwords.txt.gz").read_bytes()
    return frozenset(gzip.decompress(data).decode().split())


def normalise(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def policy_violation(password: str, *, email: str) -> str | None:
    """Why the password may not be used, or None."""
    password = normalise(password)
    if len(password) < MIN_LENGTH:
        return f"Use at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"Use at most {MAX_LENGTH} characters."
    if password.lower() in common_passwords():
        return "This password is one of the most common ones found in breaches; choose another."
    if password.lower() in {email.lower(), email.split("@")[0].lower()}:
        return "The password must not be your email address."
    return None


class PasswordHasher:
    """argon2id with the cost from settings; the work runs in a thread, off the event loop."""

    def __init__(self, settings: Settings) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=settings.password_hash_iterations,
            memory_cost=settings.password_hash_memory_kib,
            parallelism=settings.password_hash_parallelism,
            type=argon2.Type.ID,
        )
        # Verified against when an email is unknown, so that the answer takes as long.
        self._decoy = self._hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, normalise(password))

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """True when the password matches; with no hash, the same work and False."""
        try:
            await asyncio.to_thread(
                self._hasher.verify, password_hash or self._decoy, normalise(password)
            )
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
        return password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)
