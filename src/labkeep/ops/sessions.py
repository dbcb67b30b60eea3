"""Web sign-in: password checks slowed down after failures, and server-side sessions.

Throttling slows the guesser, not the account's owner (OWASP's advice: no lockouts):

- per **account and client** (``pair:USER|CLIENT``): after ``FREE_ATTEMPTS`` failures
  each further attempt from that client must wait ``2 ** (n - FREE_ATTEMPTS)`` seconds
  after its last failure, at most ``MAX_DELAY``;
- per **client** across accounts (``client:CLIENT``): the same after
  ``FREE_CLIENT_ATTEMPTS`` failures (one address trying many accounts);
- per **account** across clients (``user:USER``): after ``FREE_ACCOUNT_ATTEMPTS``
  failures, at most ``MAX_ACCOUNT_DELAY`` (a guesser spread over many addresses), but only
  for clients that have themselves failed on that account: the owner signing in from a
  client with no failures of its own is never slowed by someone else's guessing.

Counters decay: a key whose last failure is ``DECAY`` old starts again from zero. An
attempt is **reserved** before its (slow, Argon2) password check, in one write transaction
that locks the counters and counts it as a failure; a success clears the account's
counters and takes one failure off the client's. So concurrent attempts cannot all pass
the check "may I try?" before any of them is counted: at most the free attempts are ever
checked at once.
Counters live in the catalog, so every server worker agrees.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update

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
FREE_CLIENT_ATTEMPTS = 10
FREE_ACCOUNT_ATTEMPTS = 10
MAX_DELAY = 300
MAX_ACCOUNT_DELAY = 60
DECAY = timedelta(minutes=15)
SESSION_LIFETIME = timedelta(hours=12)
SESSION_PREFIX = "lkw_"


def _delay(failures: int, free: int = FREE_ATTEMPTS, most: int = MAX_DELAY) -> int:
    return 0 if failures < free else min(most, 2 ** (failures - free))


def _keys(name: str, client: str) -> dict[str, tuple[int, int]]:
    """The counters of an attempt: key -> (free attempts, longest delay)."""
    user = name.lower()[:150]
    keys = {f"user:{user}": (FREE_ACCOUNT_ATTEMPTS, MAX_ACCOUNT_DELAY)}
    if client:
        keys[f"pair:{user}|{client[:150]}"] = (FREE_ATTEMPTS, MAX_DELAY)
        keys[f"client:{client[:150]}"] = (FREE_CLIENT_ATTEMPTS, MAX_DELAY)
    return keys


def _live(row: AuthFailure, now: datetime) -> int:
    """The row's failures, or 0 once they have decayed."""
    return row.failures if now - row.last_failure_at < DECAY else 0


def _reserve(keep: Keep, name: str, client: str) -> None:
    """Count this attempt as a failure before checking it, or refuse it (atomically)."""
    keys = _keys(name, client)
    now = utcnow()
    with keep.catalog.write() as session:
        rows = _locked_rows(session, sorted(keys), now)
        pair = next((r for k, r in rows.items() if k.startswith("pair:")), None)
        own_failures = _live(pair, now) if pair is not None else 0
        wait = 0
        for key, row in rows.items():
            if key.startswith("user:") and client and own_failures == 0:
                continue  # someone else's guessing does not slow a client with no failures
            free, most = keys[key]
            ready = row.last_failure_at + timedelta(seconds=_delay(_live(row, now), free, most))
            wait = max(wait, int((ready - now).total_seconds() + 0.999))
        if wait > 0:
            raise TooManyAttempts(
                f"too many failed sign-ins: try again in {wait} s",
                retry_after=wait,
                hint="the wait grows with each failure, and ends after a successful sign-in",
            )
        for row in rows.values():
            row.failures = _live(row, now) + 1
            row.last_failure_at = now


def _locked_rows(session: Session, keys: list[str], now: datetime) -> dict[str, AuthFailure]:
    """The counters of *keys*, created if missing, locked until the transaction ends."""
    insert = _insert_ignoring_duplicates(session)
    session.execute(
        insert.values([{"key": k, "failures": 0, "last_failure_at": now} for k in keys])
    )
    rows = session.execute(
        select(AuthFailure)
        .where(AuthFailure.key.in_(keys))
        .order_by(AuthFailure.key)
        .with_for_update()
    ).scalars()
    return {row.key: row for row in rows}


def _insert_ignoring_duplicates(session: Session) -> Any:
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(AuthFailure).on_conflict_do_nothing(index_elements=["key"])
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(AuthFailure).on_conflict_do_nothing(index_elements=["key"])


def check_password(keep: Keep, name: str, password: str, *, client: str = "") -> Principal:
    """A password check slowed down after failures (the only way the web checks passwords).

    Raises TooManyAttempts (with the seconds to wait) while slowed down, and one
    AuthenticationFailed for every kind of wrong credential.
    """
    _reserve(keep, name, client)
    try:
        principal = authenticate_password(keep, name, password)
    except AuthenticationFailed:
        with keep.catalog.write() as session:
            append_event(
                session, "anonymous", "login-failed", f"user:{name[:64]}", {"client": client[:64]}
            )
        raise
    keys = _keys(name, client)
    with keep.catalog.write() as session:
        # the account's owner got in: their account and their client start afresh
        session.execute(
            delete(AuthFailure).where(
                AuthFailure.key.in_([k for k in keys if not k.startswith("client:")])
            )
        )
        session.execute(
            update(AuthFailure)
            .where(AuthFailure.key.in_([k for k in keys if k.startswith("client:")]))
            .where(AuthFailure.failures > 0)
            .values(failures=AuthFailure.failures - 1)
        )
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
