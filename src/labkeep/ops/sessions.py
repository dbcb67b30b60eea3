"""Web sign-in: password checks slowed down after failures, and server-side sessions.

Failed attempts are counted per account and per client in the catalog (so every server
worker sees them). After ``FREE_ATTEMPTS`` failures, each further attempt must wait
``2 ** (failures - FREE_ATTEMPTS)`` seconds after the last failure, at most
``MAX_DELAY``: guessing becomes slow, and nobody is ever locked out for good.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from labkeep.access import Principal
from labkeep.access.secrets import new_secret, secret_hash
from labkeep.catalog import AuthFailure, User, WebSession
from labkeep.clock import utcnow
from labkeep.errors import AuthenticationFailed, TooManyAttempts
from labkeep.ops._access import load_principal
from labkeep.ops.accounts import authenticate_password
from labkeep.ops.audit import append_event

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep

FREE_ATTEMPTS = 3
MAX_DELAY = 300
SESSION_LIFETIME = timedelta(hours=12)
SESSION_PREFIX = "lkw_"


def _delay(failures: int) -> int:
    return 0 if failures < FREE_ATTEMPTS else min(MAX_DELAY, 2 ** (failures - FREE_ATTEMPTS))


def _wait_needed(session: Session, keys: list[str]) -> int:
    now = utcnow()
    wait = 0
    for row in session.execute(select(AuthFailure).where(AuthFailure.key.in_(keys))).scalars():
        ready = row.last_failure_at + timedelta(seconds=_delay(row.failures))
        wait = max(wait, int((ready - now).total_seconds() + 0.999))
    return wait


def _record_failure(session: Session, keys: list[str]) -> None:
    now = utcnow()
    for key in keys:
        row = session.get(AuthFailure, key, with_for_update=True)
        if row is None:
            session.add(AuthFailure(key=key, failures=1, last_failure_at=now))
        else:
            row.failures += 1
            row.last_failure_at = now


def check_password(keep: Keep, name: str, password: str, *, client: str = "") -> Principal:
    """A password check slowed down after failures (the only way the web checks passwords).

    Raises TooManyAttempts (with the seconds to wait) while slowed down, and one
    AuthenticationFailed for every kind of wrong credential.
    """
    keys = [f"user:{name.lower()[:200]}"] + ([f"client:{client[:200]}"] if client else [])
    with keep.catalog.read() as session:
        wait = _wait_needed(session, keys)
    if wait > 0:
        raise TooManyAttempts(
            f"too many failed sign-ins: try again in {wait} s",
            retry_after=wait,
            hint="the wait grows with each failure and resets after a successful sign-in",
        )
    try:
        principal = authenticate_password(keep, name, password)
    except AuthenticationFailed:
        with keep.catalog.write() as session:
            _record_failure(session, keys)
            append_event(
                session, "anonymous", "login-failed", f"user:{name[:64]}", {"client": client[:64]}
            )
        raise
    with keep.catalog.write() as session:
        for key in keys:
            row = session.get(AuthFailure, key)
            if row is not None:
                session.delete(row)
    return principal


def login(keep: Keep, name: str, password: str, *, client: str = "") -> tuple[str, str, Principal]:
    """Check a password and open a session; returns (session secret, CSRF token, principal)."""
    principal = check_password(keep, name, password, client=client)
    secret = new_secret(SESSION_PREFIX)
    csrf = secrets.token_urlsafe(32)
    now = utcnow()
    with keep.catalog.write() as session:
        user = session.execute(select(User).where(User.name == principal.name)).scalar_one()
        session.add(
            WebSession(
                token_hash=secret_hash(secret),
                user_id=user.id,
                csrf_token=csrf,
                auth_epoch=user.auth_epoch,
                created_at=now,
                last_seen_at=now,
                expires_at=now + SESSION_LIFETIME,
                revoked_at=None,
            )
        )
        append_event(
            session, principal.name, "login", f"user:{principal.name}", {"client": client[:64]}
        )
    return secret, csrf, principal


def resume_session(keep: Keep, secret: str) -> tuple[Principal, str] | None:
    """The principal and CSRF token of a live session, or None (expired, revoked, or the
    user was disabled or changed password since)."""
    if not secret.startswith(SESSION_PREFIX):
        return None
    now = utcnow()
    with keep.catalog.read() as session:
        row = session.execute(
            select(WebSession, User)
            .join(User, User.id == WebSession.user_id)
            .where(WebSession.token_hash == secret_hash(secret))
        ).first()
        if row is None:
            return None
        web, user = row
        if (
            web.revoked_at is not None
            or web.expires_at <= now
            or user.disabled
            or web.auth_epoch != user.auth_epoch
        ):
            return None
        return load_principal(session, user), web.csrf_token


def logout(keep: Keep, secret: str) -> None:
    """End a session on the server (the cookie alone is then worthless)."""
    with keep.catalog.write() as session:
        session.execute(
            update(WebSession)
            .where(WebSession.token_hash == secret_hash(secret), WebSession.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )


def login_token(
    keep: Keep,
    name: str,
    password: str,
    *,
    client: str = "",
    token_name: str = "",
    expires: str = "90d",
) -> tuple[str, Any]:
    """Exchange a password for an API token (how ``labkeep login URL`` signs in)."""
    from labkeep.ops.tokens import create_token

    principal = check_password(keep, name, password, client=client)
    return create_token(keep.acting_as(principal), token_name or "labkeep login", expires=expires)
