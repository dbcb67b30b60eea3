"""Passwords (Argon2id) and bearer secrets (API tokens, share links).

Secrets are random 256-bit strings shown once; the catalog stores only their SHA-256, so
a stolen catalog gives no usable token. Passwords are hashed with Argon2id.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from functools import cache
from typing import Any

TOKEN_PREFIX = "lk_"  # noqa: S105 (a prefix, not a secret)
SHARE_PREFIX = "lks_"


@cache
def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


def hash_password(password: str) -> str:
    return str(_hasher().hash(password))


def verify_password(stored: str | None, password: str) -> bool:
    """Constant-time check; also spends the same time when there is no stored hash."""
    from argon2.exceptions import InvalidHashError, VerificationError

    hasher = _hasher()
    if not stored:
        # burn the same time as a real check so timing does not reveal unknown accounts
        with contextlib.suppress(VerificationError):
            hasher.verify(_dummy_hash(), password + "x")
        return False
    try:
        return bool(hasher.verify(stored, password))
    except (VerificationError, InvalidHashError):
        return False


@cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_hex(16))


def new_secret(prefix: str) -> str:
    """A new random bearer secret (256 bits), recognisable by its prefix."""
    return prefix + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()
