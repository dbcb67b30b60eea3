"""The catalog: models, sessions and migrations."""

from labkeep.catalog._db import Catalog, safe_url
from labkeep.catalog.models import (
    ApiToken,
    AuthFailure,
    Base,
    Dataset,
    Entry,
    Event,
    Grant,
    Group,
    KeepState,
    Membership,
    Project,
    ShareDownload,
    ShareLink,
    Store,
    User,
    Version,
    WebSession,
)

__all__ = [
    "ApiToken",
    "AuthFailure",
    "Base",
    "Catalog",
    "Dataset",
    "Entry",
    "Event",
    "Grant",
    "Group",
    "KeepState",
    "Membership",
    "Project",
    "ShareDownload",
    "ShareLink",
    "Store",
    "User",
    "Version",
    "WebSession",
    "safe_url",
]
