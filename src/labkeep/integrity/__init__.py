"""Integrity: the hashing engine, manifests, and the immutable flag.

The submodules are imported when a name is first used: reading a manifest does not load
the hashing engine (ctypes, thread pools).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labkeep.integrity.hashing import (
        FileChanged,
        Hashed,
        NotRegularFile,
        copy_hash,
        hash_file,
        link_hash,
        syncfs,
    )
    from labkeep.integrity.manifest import (
        MANIFEST_NAME,
        OutOfOrder,
        format_lines,
        format_manifest,
        parse_manifest,
    )

_WHERE = {
    "FileChanged": "hashing",
    "Hashed": "hashing",
    "NotRegularFile": "hashing",
    "copy_hash": "hashing",
    "hash_file": "hashing",
    "link_hash": "hashing",
    "syncfs": "hashing",
    "MANIFEST_NAME": "manifest",
    "OutOfOrder": "manifest",
    "format_lines": "manifest",
    "format_manifest": "manifest",
    "parse_manifest": "manifest",
}
__all__ = [
    "MANIFEST_NAME",
    "FileChanged",
    "Hashed",
    "NotRegularFile",
    "OutOfOrder",
    "copy_hash",
    "format_lines",
    "format_manifest",
    "hash_file",
    "link_hash",
    "parse_manifest",
    "syncfs",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'labkeep.integrity' has no attribute {name!r}")
    return getattr(importlib.import_module(f"labkeep.integrity.{module}"), name)
