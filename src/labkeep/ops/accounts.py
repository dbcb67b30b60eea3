"""Users and groups: accounts, roles, passwords, and who the local OS user is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from labkeep.access import Principal, Resource, check
from labkeep.access.secrets import hash_password, verify_password
from labkeep.catalog import ApiToken, Group, Membership, User, add_unique
from labkeep.clock import isoformat, utcnow
from labkeep.errors import AlreadyExists, AuthenticationFailed, NotFound, UsageError
from labkeep.names import MAX_EMAIL, MAX_LABEL, MAX_TITLE, SLUG_RE, check_slug, check_text
from labkeep.ops._access import load_principal
from labkeep.ops.audit import append_event

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep

ROLES = ("admin", "member")
MIN_PASSWORD = 10


@dataclass
class UserInfo:
    name: str
    display_name: str
    email: str
    source: str
    site_admin: bool
    disabled: bool
    os_user: str | None
    created_at: datetime
    groups: dict[str, str]
    #: share links of this account that stopped working (disable) or work again (enable)
    suspended_shares: int | None = None
    resumed_shares: int | None = None

    def _shares(self) -> dict[str, Any]:
        from labkeep.ops.shares import links_message

        for key, state in (("suspended_shares", "suspended"), ("resumed_shares", "working again")):
            count = getattr(self, key)
            if count:
                return {key: count, "message": links_message(count, self.name, state)}
        return {}

    @classmethod
    def of(cls, user: User, groups: dict[str, str]) -> UserInfo:
        return cls(
            user.name,
            user.display_name,
            user.email,
            user.source,
            user.site_admin,
            user.disabled,
            user.os_user,
            user.created_at,
            groups,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": self.name,
            "display_name": self.display_name,
            "email": self.email,
            "source": self.source,
            "site_admin": self.site_admin,
            "disabled": self.disabled,
            "os_user": self.os_user,
            "created_at": isoformat(self.created_at),
            "groups": self.groups,
            **self._shares(),
        }


def check_username(name: str) -> str:
    return check_slug(name, "user name")


def _valid_username(name: str) -> bool:
    try:
        check_username(name)
    except UsageError:
        return False
    return True


def _user(session: Session, name: str) -> User:
    user = session.execute(select(User).where(User.name == name)).scalar_one_or_none()
    if user is None:
        raise NotFound(f"no user {name!r}", hint="see 'labkeep user list'")
    return user


def _group(session: Session, name: str) -> Group:
    group = session.execute(select(Group).where(Group.name == name)).scalar_one_or_none()
    if group is None:
        raise NotFound(f"no group {name!r}", hint="see 'labkeep group list'")
    return group


def _user_groups(session: Session, user_id: int) -> dict[str, str]:
    return {
        str(g): str(r)
        for g, r in session.execute(
            select(Group.name, Membership.role)
            .join(Membership, Membership.group_id == Group.id)
            .where(Membership.user_id == user_id)
            .order_by(Group.name)
        )
    }


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"password too short: use at least {MIN_PASSWORD} characters")


def _new_user(name: str, **fields: Any) -> User:
    """A User row with the defaults of a new account (the caller adds it to a session)."""
    values: dict[str, Any] = {
        "display_name": "",
        "email": "",
        "password_hash": None,
        "source": "local",
        "site_admin": False,
        "disabled": False,
        "os_user": None,
        "auth_epoch": 0,
    }
    values.update(fields)
    return User(name=name, created_at=utcnow(), **values)


# -- the local OS user ----------------------------------------------------------------
def create_first_admin(session: Session, os_user: str, name: str | None) -> User:
    """The account of whoever ran ``labkeep init``: the first site admin."""
    candidate = (name or os_user).lower()
    if not SLUG_RE.match(candidate):
        candidate = "admin"
    user = _new_user(candidate, site_admin=True, os_user=os_user)
    session.add(user)
    session.flush()
    return user


def local_principal(keep: Keep, os_user: str) -> Principal:
    """The labkeep user that the OS account acts as on this machine.

    A user whose ``os_user`` is the account, else a user of the same name without an
    ``os_user``; otherwise the local account has no rights (anonymous, named ``os:NAME``).
    """
    with keep.catalog.read() as session:
        user = session.execute(select(User).where(User.os_user == os_user)).scalar_one_or_none()
        if user is None:
            user = session.execute(
                select(User).where(User.name == os_user.lower(), User.os_user.is_(None))
            ).scalar_one_or_none()
        if user is None:
            return Principal("anonymous", name=f"os:{os_user}")
        return load_principal(session, user)


def principal_for(keep: Keep, name: str, *, read_only: bool = False) -> Principal:
    """The principal of an existing, enabled user (after the caller authenticated them)."""
    with keep.catalog.read() as session:
        user = _user(session, name)
        if user.disabled:
            raise AuthenticationFailed("this account is disabled")
        return load_principal(session, user, read_only=read_only)


def authenticate_password(keep: Keep, name: str, password: str) -> Principal:
    """Check a password (local Argon2 hash, or the LDAP directory for LDAP accounts).

    Unknown users, wrong passwords and disabled accounts get the same error. An LDAP user
    who signs in for the first time gets a labkeep account (with no groups yet).
    """
    failed = AuthenticationFailed("wrong user name or password")
    with keep.catalog.read() as session:
        user = session.execute(select(User).where(User.name == name)).scalar_one_or_none()
        stored = user.password_hash if user is not None else None
        source = user.source if user is not None else None
    if user is None and keep.config.ldap is not None and not _valid_username(name):
        # could never become an account; and the directory matches "ALICE", " alice" or
        # fullwidth letters to alice, so do not ask it
        raise failed
    if source == "ldap" or (user is None and keep.config.ldap is not None):
        from labkeep.access.ldap import ldap_bind

        if keep.config.ldap is None or not ldap_bind(keep.config.ldap, name, password):
            raise failed
        if user is None:
            with keep.catalog.write() as session:
                # (two first sign-ins at once: the second finds the account the first made)
                if add_unique(session, _new_user(check_username(name), source="ldap")):
                    append_event(session, name, "user-create", f"user:{name}", {"source": "ldap"})
    elif not verify_password(stored, password):
        raise failed
    with keep.catalog.read() as session:
        user = _user(session, name)
        if user.disabled:
            raise failed
        return load_principal(session, user)


# -- users ------------------------------------------------------------------------------
def add_user(
    keep: Keep,
    name: str,
    *,
    password: str | None = None,
    display_name: str = "",
    email: str = "",
    site_admin: bool = False,
    os_user: str | None = None,
    ldap: bool = False,
) -> UserInfo:
    """Create an account (site admins). LDAP accounts have no password here."""
    check(keep.principal, "user.create")
    check_username(name)
    check_text(display_name, "the display name", MAX_LABEL)
    check_text(email, "the e-mail address", MAX_EMAIL)
    if password is not None:
        if ldap:
            raise UsageError("LDAP accounts have their password in the directory")
        _check_password(password)
    with keep.catalog.write() as session:
        user = _new_user(
            name,
            display_name=display_name,
            email=email,
            password_hash=hash_password(password) if password else None,
            source="ldap" if ldap else "local",
            site_admin=site_admin,
            os_user=os_user,
        )
        if not add_unique(session, user):
            if session.execute(select(User.id).where(User.name == name)).first():
                raise AlreadyExists(f"user {name!r} already exists")
            raise AlreadyExists(f"OS account {os_user!r} is already mapped to a user")
        append_event(
            session,
            keep.actor,
            "user-create",
            f"user:{name}",
            {"site_admin": site_admin, "source": user.source, "os_user": os_user},
        )
        return UserInfo.of(user, {})


def list_users(keep: Keep) -> list[UserInfo]:
    check(keep.principal, "user.list")
    with keep.catalog.read() as session:
        return [
            UserInfo.of(u, _user_groups(session, u.id))
            for u in session.execute(select(User).order_by(User.name)).scalars()
        ]


def set_disabled(keep: Keep, name: str, disabled: bool = True) -> UserInfo:
    """Disable (or enable) an account. Disabling ends its sessions and revokes its tokens."""
    check(keep.principal, "user.manage")
    with keep.catalog.write() as session:
        user = _user(session, name)
        if user.id == keep.principal.user_id and disabled:
            raise UsageError("you cannot disable your own account")
        user.disabled = disabled
        user.auth_epoch += 1
        if disabled:
            session.execute(
                update(ApiToken)
                .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        from labkeep.ops.shares import count_live

        session.flush()
        live = count_live(session, creator_id=user.id)
        append_event(
            session,
            keep.actor,
            "user-disable" if disabled else "user-enable",
            f"user:{name}",
            {"share_links": live},
        )
        info = UserInfo.of(user, _user_groups(session, user.id))
        if disabled:
            info.suspended_shares = live
        else:
            info.resumed_shares = count_live(session, creator_id=user.id, working=True)
        return info


def set_password(keep: Keep, name: str, password: str, *, current: str | None = None) -> None:
    """Change a local password: your own (giving the current one), or anyone's as site admin."""
    own = keep.principal.kind == "user" and keep.principal.name == name
    check(keep.principal, "user.self" if own else "user.manage")
    _check_password(password)
    with keep.catalog.write() as session:
        user = _user(session, name)
        if user.source != "local":
            raise UsageError(f"{name} signs in through LDAP: change the password there")
        needs_current = own and not keep.principal.site_admin and user.password_hash is not None
        if needs_current and (current is None or not verify_password(user.password_hash, current)):
            raise AuthenticationFailed("the current password is wrong")
        user.password_hash = hash_password(password)
        user.auth_epoch += 1
        append_event(session, keep.actor, "user-password", f"user:{name}", {})


def ensure_admin_password(keep: Keep) -> str | None:
    """Give the acting site admin a random password if they have none; return it (once).

    This is how ``labkeep serve`` on a new keep lets its creator sign in to the web UI.
    """
    import secrets

    p = keep.principal
    if not (p.kind == "user" and p.site_admin):
        return None
    with keep.catalog.write() as session:
        user = _user(session, p.name)
        if user.password_hash is not None or user.source != "local":
            return None
        password = secrets.token_urlsafe(12)
        user.password_hash = hash_password(password)
        append_event(session, keep.actor, "user-password", f"user:{p.name}", {"generated": True})
    return password


def whoami(keep: Keep) -> dict[str, Any]:
    p = keep.principal
    record: dict[str, Any] = {
        "kind": p.kind,
        "name": keep.actor,
        "site_admin": p.site_admin,
        "read_only": p.read_only,
    }
    if p.user_id is not None:
        with keep.catalog.read() as session:
            record["groups"] = _user_groups(session, p.user_id)
    return record


# -- groups -----------------------------------------------------------------------------
def create_group(keep: Keep, name: str, *, title: str = "") -> dict[str, Any]:
    check(keep.principal, "group.create")
    check_slug(name, "group name")
    check_text(title, "the title", MAX_TITLE)
    with keep.catalog.write() as session:
        if not add_unique(session, Group(name=name, title=title, created_at=utcnow())):
            raise AlreadyExists(f"group {name!r} already exists")
        append_event(session, keep.actor, "group-create", f"group:{name}", {"title": title})
    return {"group": name, "title": title, "members": {}}


def set_member(keep: Keep, group: str, user: str, role: str | None) -> dict[str, Any]:
    """Add a member with *role* (``admin`` or ``member``), change it, or remove (None)."""
    if role is not None and role not in ROLES:
        raise UsageError(f"unknown role {role!r}", hint="use admin or member")
    with keep.catalog.write() as session:
        g = _group(session, group)
        check(keep.principal, "group.manage", Resource("group", group_id=g.id))
        u = _user(session, user)
        row = session.execute(
            select(Membership).where(Membership.group_id == g.id, Membership.user_id == u.id)
        ).scalar_one_or_none()
        if role is None:
            if row is None:
                raise NotFound(f"{user} is not a member of {group}")
            session.delete(row)
        elif row is None:
            if not add_unique(session, Membership(group_id=g.id, user_id=u.id, role=role)):
                # added by someone else a moment ago: this call's role wins
                session.execute(
                    update(Membership)
                    .where(Membership.group_id == g.id, Membership.user_id == u.id)
                    .values(role=role)
                )
        else:
            row.role = role
        append_event(
            session, keep.actor, "group-member", f"group:{group}", {"user": user, "role": role}
        )
        session.flush()
        return _group_record(session, g)


def _group_record(session: Session, group: Group) -> dict[str, Any]:
    members = {
        str(n): str(r)
        for n, r in session.execute(
            select(User.name, Membership.role)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.group_id == group.id)
            .order_by(User.name)
        )
    }
    return {"group": group.name, "title": group.title, "members": members}


def list_groups(keep: Keep) -> list[dict[str, Any]]:
    """Groups; members are listed for site admins and for the group's own members."""
    check(keep.principal, "group.list")
    p = keep.principal
    with keep.catalog.read() as session:
        result = []
        for g in session.execute(select(Group).order_by(Group.name)).scalars():
            record = _group_record(session, g)
            if not (p.site_admin or g.id in p.groups):
                count = session.execute(
                    select(func.count(Membership.id)).where(Membership.group_id == g.id)
                ).scalar_one()
                record["members"] = {}
                record["member_count"] = count
            result.append(record)
        return result
