"""Use cases: each module holds operations bound into :class:`labkeep.Keep`."""

from labkeep.ops import audit, ingest, listing, manifests, projects, seal, status, verify

__all__ = ["audit", "ingest", "listing", "manifests", "projects", "seal", "status", "verify"]
