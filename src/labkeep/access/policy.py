"""The one place that decides who may do what: :func:`check`.

Pure logic: the caller loads the facts (who the principal is, what the resource is and
which grants touch it) and this module decides. Every use case in the Keep calls
``check``; nothing else makes access decisions.

The model, on one page:
- **site-admin**: everything.
- **group roles**: ``admin`` (the group's data steward: manages members and gets
  ``manage`` on the group's projects) and ``member`` (``write`` on the group's projects,
  unless a project is private: then only its explicit grants count).
- **grants** on a project or one dataset, to a user or a group: ``read`` < ``write`` <
  ``manage``. A project grant covers its datasets; a dataset grant covers that dataset and
  lets its holder see the project's name and metadata, nothing else of it.
- **share links**: read-only, within their scope (project, dataset, version or file).
- **public datasets**: readable by anyone.
- **API tokens** act as their user, capped at ``read`` when read-only.
- **disabled users** can do nothing.
- **copies**: ``write`` copies a dataset to a store; ``manage`` drops copies, repairs them
  and sets the project's copy policy; stores and the keep's default policy are the site
  admin's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum

from labkeep.errors import Forbidden


class Permission(IntEnum):
    NONE = 0
    READ = 1
    WRITE = 2
    MANAGE = 3

    @classmethod
    def parse(cls, text: str) -> Permission:
        try:
            value = cls[text.upper()]
        except KeyError:
            value = cls.NONE
        if value is cls.NONE:
            from labkeep.errors import UsageError

            raise UsageError(f"unknown permission {text!r}", hint="use read, write or manage")
        return value


#: what each action on a project or dataset needs
RESOURCE_ACTIONS: dict[str, Permission] = {
    "project.read": Permission.READ,
    "project.edit": Permission.MANAGE,
    "project.grant": Permission.MANAGE,
    "dataset.create": Permission.WRITE,
    "dataset.read": Permission.READ,
    "dataset.download": Permission.READ,
    "dataset.ingest": Permission.WRITE,
    "dataset.save": Permission.WRITE,
    "dataset.edit": Permission.WRITE,
    "dataset.seal": Permission.WRITE,
    "dataset.verify": Permission.WRITE,
    "dataset.publish": Permission.MANAGE,
    "dataset.copy": Permission.WRITE,
    "dataset.drop": Permission.MANAGE,
    "dataset.repair": Permission.MANAGE,
    "project.policy": Permission.MANAGE,
    "share.create": Permission.WRITE,
    "share.manage": Permission.MANAGE,
    "events.read": Permission.READ,
    "project.annotate": Permission.WRITE,
}
#: all a share link's holder may do
SHARE_ACTIONS = frozenset({"project.read", "dataset.read", "dataset.download"})
#: actions only a site-admin may do
SITE_ADMIN_ACTIONS = frozenset(
    {
        "dataset.unseal",
        "user.create",
        "user.manage",
        "group.create",
        "keep.admin",
        "events.all",
        "store.manage",
    }
)
#: actions for any signed-in user (not anonymous, not a share link)
USER_ACTIONS = frozenset({"user.self", "group.list", "token.create", "sample.create"})
#: user actions a read-only API token may not do
_WRITING_USER_ACTIONS = frozenset({"token.create", "sample.create"})
ALL_ACTIONS = (
    frozenset(RESOURCE_ACTIONS)
    | SITE_ADMIN_ACTIONS
    | USER_ACTIONS
    | {"project.create", "group.manage", "user.list"}
)


@dataclass(frozen=True)
class ShareScope:
    """What a share link opens: a project, or a dataset (optionally a version or path)."""

    link_id: int
    project_id: int
    dataset_id: int | None = None
    version: int | None = None
    path: str | None = None


@dataclass(frozen=True)
class Principal:
    """Who is asking. Built by authentication, never by front ends."""

    kind: str  # user | anonymous | share
    name: str = "anonymous"
    user_id: int | None = None
    site_admin: bool = False
    disabled: bool = False
    #: group id -> role ("admin" or "member")
    groups: dict[int, str] = field(default_factory=dict)
    #: an API token marked read-only caps every permission at READ
    read_only: bool = False
    share: ShareScope | None = None

    @property
    def authenticated(self) -> bool:
        return self.kind == "user" and not self.disabled


ANONYMOUS = Principal("anonymous")


@dataclass(frozen=True)
class Grant:
    permission: Permission
    user_id: int | None = None
    group_id: int | None = None
    dataset_id: int | None = None  # None: on the whole project


@dataclass(frozen=True)
class Resource:
    """The facts about a project (and optionally one of its datasets) that decide access."""

    kind: str  # site | group | project | dataset
    project_id: int | None = None
    project_group_id: int | None = None
    project_private: bool = False
    dataset_id: int | None = None
    dataset_public: bool = False
    group_id: int | None = None  # for kind == "group"
    grants: tuple[Grant, ...] = ()
    #: for share scopes narrower than a dataset
    version: int | None = None
    path: str | None = None


SITE = Resource("site")


def _grant_applies(principal: Principal, grant: Grant, dataset_id: int | None) -> bool:
    if grant.dataset_id is not None and grant.dataset_id != dataset_id:
        return False
    if grant.user_id is not None:
        return grant.user_id == principal.user_id
    return grant.group_id is not None and grant.group_id in principal.groups


def permission(principal: Principal, resource: Resource) -> Permission:
    """The principal's effective permission on a project or dataset resource."""
    if principal.disabled:
        return Permission.NONE
    if principal.kind == "share":
        return _share_permission(principal, resource)
    level = Permission.NONE
    if principal.kind == "user":
        if principal.site_admin:
            level = Permission.MANAGE
        else:
            role = principal.groups.get(resource.project_group_id or -1)
            if role == "admin":
                level = Permission.MANAGE
            elif role == "member" and not resource.project_private:
                level = Permission.WRITE
            for grant in resource.grants:
                if _grant_applies(principal, grant, resource.dataset_id):
                    level = max(level, grant.permission)
    if resource.dataset_public and resource.dataset_id is not None:
        level = max(level, Permission.READ)
    if principal.read_only:
        level = min(level, Permission.READ)
    return level


def _share_permission(principal: Principal, resource: Resource) -> Permission:
    scope = principal.share
    if scope is None or scope.project_id != resource.project_id:
        return Permission.NONE
    if scope.dataset_id is None:
        return Permission.READ
    if resource.dataset_id is None:
        # the project page of a dataset link shows only what the link opens
        return Permission.NONE
    if resource.dataset_id != scope.dataset_id:
        return Permission.NONE
    # a link to a version opens that version only; a link to a path opens that file or
    # folder only (not the listing of the whole dataset)
    if scope.version is not None and resource.version != scope.version:
        return Permission.NONE
    inside = scope.path is None or (
        resource.path is not None
        and (resource.path == scope.path or resource.path.startswith(scope.path + "/"))
    )
    return Permission.READ if inside else Permission.NONE


def can_see_project(principal: Principal, project: Resource, datasets: Iterable[Resource]) -> bool:
    """May the principal know the project exists (its name and title)?

    Yes with READ on the project, or on any of its datasets (a dataset grant, a share
    link to one dataset, a public dataset: their landing pages name the project).
    """
    return permission(principal, project) >= Permission.READ or any(
        can_see_dataset(principal, d) for d in datasets
    )


def can_see_dataset(principal: Principal, dataset: Resource) -> bool:
    """May the principal know the dataset exists (its name, in listings)?

    READ on it, or a share link into it (even one scoped to a single file or version).
    """
    scope = principal.share
    if principal.kind == "share" and scope is not None and not principal.disabled:
        return scope.project_id == dataset.project_id and scope.dataset_id in (
            None,
            dataset.dataset_id,
        )
    return permission(principal, dataset) >= Permission.READ


def allowed(principal: Principal, action: str, resource: Resource = SITE) -> bool:
    if action not in ALL_ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    if principal.disabled:
        return False
    if action in RESOURCE_ACTIONS:
        if principal.kind == "share" and action not in SHARE_ACTIONS:
            return False
        return permission(principal, resource) >= RESOURCE_ACTIONS[action]
    if principal.kind != "user":
        return False
    if action in USER_ACTIONS:
        return not (principal.read_only and action in _WRITING_USER_ACTIONS)
    if principal.read_only:
        return False
    if principal.site_admin:
        return True
    if action in SITE_ADMIN_ACTIONS:
        return False
    if action == "project.create":
        return resource.group_id is not None and resource.group_id in principal.groups
    if action == "group.manage":
        return principal.groups.get(resource.group_id or -1) == "admin"
    if action == "user.list":
        return "admin" in principal.groups.values()
    return False


#: what each action does, for messages: "alice may not <this>."
ACTION_WORDS = {
    "project.read": "see this project",
    "project.edit": "change this project's description",
    "project.annotate": "change this project's key-values",
    "sample.create": "register samples",
    "project.grant": "manage who has access to this project",
    "project.create": "create projects in this group",
    "dataset.create": "add datasets to this project",
    "dataset.read": "see this dataset",
    "dataset.download": "download files of this dataset",
    "dataset.ingest": "add files to this dataset",
    "dataset.save": "save new versions of this dataset (save, restore, run)",
    "dataset.edit": "change this dataset",
    "dataset.seal": "seal this dataset",
    "dataset.unseal": "unseal datasets",
    "dataset.verify": "verify this dataset",
    "dataset.publish": "make this dataset public",
    "dataset.copy": "copy this dataset to another store",
    "dataset.drop": "drop copies of this dataset",
    "dataset.repair": "repair copies of this dataset",
    "project.policy": "set this project's copy policy",
    "store.manage": "add or remove stores",
    "share.create": "create share links to this",
    "share.manage": "manage the share links of this",
    "events.read": "read this audit log",
    "events.all": "read the whole keep's audit log",
    "keep.admin": "run this on the whole keep",
    "user.create": "create accounts",
    "user.manage": "manage other people's accounts",
    "user.list": "list the accounts",
    "user.self": "change an account",
    "group.create": "create groups",
    "group.manage": "manage this group's members",
    "group.list": "list the groups",
    "token.create": "create API tokens",
}


def can_see_sample(
    principal: Principal, created_by: str, group_id: int | None, *, via_dataset: bool
) -> bool:
    """May the principal know a sample exists? Its creator, its group's members, site
    admins, and whoever may see a dataset linked to it (*via_dataset*)."""
    if principal.disabled:
        return False
    if via_dataset or (principal.site_admin and principal.kind == "user"):
        return True
    if principal.kind != "user":
        return False
    return principal.name == created_by or (group_id is not None and group_id in principal.groups)


def can_edit_sample(principal: Principal, created_by: str, group_id: int | None) -> bool:
    """May the principal change a sample, or link it to datasets (which also needs write
    on the dataset)? Its creator, its group's members and site admins, not read-only."""
    if principal.disabled or principal.kind != "user" or principal.read_only:
        return False
    return (
        principal.site_admin
        or principal.name == created_by
        or (group_id is not None and group_id in principal.groups)
    )


def denial(principal: Principal, action: str) -> Forbidden:
    """The :class:`Forbidden` for *principal* not being allowed *action*: a plain
    sentence and what to do about it."""
    what = ACTION_WORDS.get(action, action.replace(".", " "))
    if principal.disabled:
        return Forbidden("this account is disabled", hint="ask a site admin to enable it")
    if principal.kind == "anonymous":
        return Forbidden(
            f"you are not signed in: sign in to {what}",
            hint="sign in (labkeep login URL), or ask for a share link",
        )
    if principal.kind == "share":
        return Forbidden(
            f"a share link gives read-only access: it cannot {what}",
            hint="sign in with an account that may do this",
        )
    if principal.read_only:
        return Forbidden(
            f"this API token is read-only: it cannot {what}",
            hint="use a token made without --read-only",
        )
    if action in SITE_ADMIN_ACTIONS:
        hint = "only a site admin may do this"
    elif action in RESOURCE_ACTIONS:
        needed = RESOURCE_ACTIONS[action].name.lower()
        hint = f"this needs {needed} access: ask who manages it for a grant"
    else:
        hint = "ask a site admin or your group's admin"
    return Forbidden(f"{principal.name} may not {what}", hint=hint)


def check(principal: Principal, action: str, resource: Resource = SITE) -> None:
    """Raise :class:`Forbidden` unless *principal* may do *action* on *resource*."""
    if not allowed(principal, action, resource):
        raise denial(principal, action)
