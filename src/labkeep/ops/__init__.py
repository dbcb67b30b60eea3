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
    sessions,
    shares,
    status,
    tokens,
    upload,
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
    "sessions",
    "shares",
    "status",
    "tokens",
    "upload",
    "verify",
]
