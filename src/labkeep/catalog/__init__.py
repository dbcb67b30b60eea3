"""The catalog: models, sessions and migrations."""

from labkeep.catalog._db import Catalog, safe_url
from labkeep.catalog.models import (
    ApiToken,
    Base,
    Dataset,
    Entry,
    Event,
    Grant,
    Group,
    KeepState,
    Membership,
    Project,
    ShareLink,
    Store,
    User,
    Version,
)

__all__ = [
    "ApiToken",
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
    "ShareLink",
    "Store",
    "User",
    "Version",
    "safe_url",
]
