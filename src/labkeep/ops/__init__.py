"""Use cases: each module holds operations bound into :class:`labkeep.Keep`."""

from labkeep.ops import (
    accounts,
    audit,
    files,
    grants,
    ingest,
    listing,
    manifests,
    projects,
    seal,
    shares,
    status,
    tokens,
    verify,
)

__all__ = [
    "accounts",
    "audit",
    "files",
    "grants",
    "ingest",
    "listing",
    "manifests",
    "projects",
    "seal",
    "shares",
    "status",
    "tokens",
    "verify",
]
