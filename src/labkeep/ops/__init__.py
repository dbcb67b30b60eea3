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
        backup,
        backup_drill,
        backup_jobs,
        buffer_access,
        buffers,
        check,
        convert,
        copies,
        environment,
        export,
        extract,
        files,
        fixity,
        grants,
        ingest,
        job_kinds,
        jobs,
        keyvalues,
        leases,
        listing,
        manifests,
        metadata,
        package,
        projects,
        provenance_export,
        release,
        repair,
        run_slurm,
        runs,
        samples,
        save,
        seal,
        search,
        search_index,
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
    "backup",
    "backup_drill",
    "backup_jobs",
    "buffer_access",
    "buffers",
    "check",
    "convert",
    "copies",
    "environment",
    "export",
    "extract",
    "files",
    "fixity",
    "grants",
    "ingest",
    "job_kinds",
    "jobs",
    "keyvalues",
    "leases",
    "listing",
    "manifests",
    "metadata",
    "package",
    "projects",
    "provenance_export",
    "release",
    "repair",
    "run_slurm",
    "runs",
    "samples",
    "save",
    "seal",
    "search",
    "search_index",
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
