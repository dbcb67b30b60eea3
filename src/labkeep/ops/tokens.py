"""API tokens: bearer secrets for scripts and the CLI against a server, acting as their
user (optionally read-only), expiring, revocable, stored hashed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from labkeep.access import Principal, check
from labkeep.access.secrets import TOKEN_PREFIX, new_secret, secret_hash
from labkeep.catalog import ApiToken, User
from labkeep.clock import isoformat, parse_duration, utcnow
from labkeep.errors import AuthenticationFailed, NotFound
from labkeep.names import MAX_LABEL, check_text
from labkeep.ops._access import load_principal
from labkeep.ops.audit import append_event

if TYPE_CHECKING:
    from labkeep.keep import Keep

#: how precisely "last used" is kept (one catalog write per token per interval, at most)
LAST_USED_EVERY = timedelta(minutes=1)


@dataclass
class TokenInfo:
    id: int
    user: str
    name: str
    read_only: bool
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, token: ApiToken, user: str) -> TokenInfo:
        return cls(
            token.id,
            user,
            token.name,
            token.read_only,
            token.created_at,
            token.expires_at,
            token.revoked_at,
            token.last_used_at,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "name": self.name,
            "read_only": self.read_only,
            "created_at": isoformat(self.created_at),
            "expires_at": isoformat(self.expires_at),
            "revoked_at": isoformat(self.revoked_at),
            "last_used_at": isoformat(self.last_used_at),
            "active": self.revoked_at is None and self.expires_at > utcnow(),
        }


def create_token(
    keep: Keep, name: str = "", *, expires: str = "90d", read_only: bool = False
) -> tuple[str, TokenInfo]:
    """A new token for the acting user; the secret is returned once and stored hashed."""
    check(keep.principal, "token.create")
    assert keep.principal.user_id is not None
    check_text(name, "the token's name", MAX_LABEL)
    delta = parse_duration(expires)
    secret = new_secret(TOKEN_PREFIX)
    now = utcnow()
    with keep.catalog.write() as session:
        token = ApiToken(
            token_hash=secret_hash(secret),
            user_id=keep.principal.user_id,
            name=name,
            read_only=read_only,
            created_at=now,
            expires_at=now + delta,
            revoked_at=None,
            last_used_at=None,
        )
        session.add(token)
        session.flush()
        append_event(
            session,
            keep.actor,
            "token-create",
            f"user:{keep.actor}",
            {
                "token": token.id,
                "name": name,
                "read_only": read_only,
                "expires_at": isoformat(token.expires_at),
            },
        )
        return secret, TokenInfo.of(token, keep.actor)


def list_tokens(keep: Keep) -> list[TokenInfo]:
    """The acting user's tokens (a site admin sees everyone's)."""
    check(keep.principal, "user.self")
    query = select(ApiToken, User.name).join(User, User.id == ApiToken.user_id)
    if not keep.principal.site_admin:
        query = query.where(ApiToken.user_id == keep.principal.user_id)
    with keep.catalog.read() as session:
        return [TokenInfo.of(t, u) for t, u in session.execute(query.order_by(ApiToken.id))]


def revoke_token(keep: Keep, token_id: int) -> TokenInfo:
    check(keep.principal, "user.self")
    with keep.catalog.write() as session:
        row = session.execute(
            select(ApiToken, User.name)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.id == token_id)
        ).first()
        if row is None or (
            row[0].user_id != keep.principal.user_id and not keep.principal.site_admin
        ):
            raise NotFound(f"no token {token_id}", hint="see 'labkeep token list'")
        token, user = row
        if token.revoked_at is None:
            token.revoked_at = utcnow()
        append_event(session, keep.actor, "token-revoke", f"user:{user}", {"token": token.id})
        return TokenInfo.of(token, user)


def authenticate_token(keep: Keep, secret: str) -> Principal:
    """The principal a bearer token acts as; one error for every kind of bad token."""
    failed = AuthenticationFailed(
        "invalid, expired or revoked API token", hint="create a new one with 'labkeep token create'"
    )
    if not secret.startswith(TOKEN_PREFIX):
        raise failed
    with keep.catalog.read() as session:
        row = session.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash == secret_hash(secret))
        ).first()
        if row is None:
            raise failed
        token, user = row
        now = utcnow()
        if token.revoked_at is not None or token.expires_at <= now or user.disabled:
            raise failed
        principal = load_principal(session, user, read_only=token.read_only)
        stale = token.last_used_at is None or now - token.last_used_at > LAST_USED_EVERY
        token_id = token.id
    if stale:
        # a write per request would queue every API call on the catalog's writer
        with keep.catalog.write() as session:
            session.execute(
                update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now)
            )
    return principal
