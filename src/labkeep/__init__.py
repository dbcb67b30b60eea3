"""labkeep: research data management for labs and imaging/sequencing facilities.

    from labkeep import Keep
    with Keep.open("/srv/keep") as keep:
        keep.ingest("/mnt/buffer/run-17", "imaging-2026/s017-confocal")

Names are imported lazily so that ``labkeep --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Keep", "LabkeepError", "Report", "Result", "__version__"]

if TYPE_CHECKING:
    from labkeep.errors import LabkeepError
    from labkeep.keep import Keep
    from labkeep.results import Report, Result

_LAZY = {
    "Keep": "labkeep.keep",
    "LabkeepError": "labkeep.errors",
    "Report": "labkeep.results",
    "Result": "labkeep.results",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'labkeep' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
