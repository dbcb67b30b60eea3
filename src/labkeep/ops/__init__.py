"""Use cases: each module holds operations bound into :class:`labkeep.Keep`.

Modules are imported when first used (``labkeep.ops.MODULE``), not with the package, so
a command loads only the use cases it runs.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labkeep.ops import (
        accounts,
        audit,
        buffer_access,
        buffers,
        copies,
        deposit,
        environment,
        export,
        files,
        fixity,
        grants,
        ingest,
        job_kinds,
        jobs,
        leases,
        listing,
        manifests,
        metadata,
        projects,
        provenance_export,
        release,
        repair,
        run_slurm,
        runs,
        save,
        seal,
        sessions,
        shares,
        slurm,
        status,
        stores,
        tokens,
        upload,
        verify,
        versions,
        watch,
        whereis,
        worker,
    )

__all__ = [
    "accounts",
    "audit",
    "buffer_access",
    "buffers",
    "copies",
    "deposit",
    "environment",
    "export",
    "files",
    "fixity",
    "grants",
    "ingest",
    "job_kinds",
    "jobs",
    "leases",
    "listing",
    "manifests",
    "metadata",
    "projects",
    "provenance_export",
    "release",
    "repair",
    "run_slurm",
    "runs",
    "save",
    "seal",
    "sessions",
    "shares",
    "slurm",
    "status",
    "stores",
    "tokens",
    "upload",
    "verify",
    "versions",
    "watch",
    "whereis",
    "worker",
]


def __getattr__(name: str) -> ModuleType:
    if name in __all__:
        return importlib.import_module(f"labkeep.ops.{name}")
    raise AttributeError(f"module 'labkeep.ops' has no attribute {name!r}")
