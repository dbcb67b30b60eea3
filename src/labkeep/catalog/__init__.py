"""The catalog: models, sessions and migrations."""

from labkeep.catalog._db import Catalog, safe_url
from labkeep.catalog.models import (
    Base,
    Dataset,
    Entry,
    Event,
    KeepState,
    Project,
    Store,
    Version,
)

__all__ = [
    "Base",
    "Catalog",
    "Dataset",
    "Entry",
    "Event",
    "KeepState",
    "Project",
    "Store",
    "Version",
    "safe_url",
]
