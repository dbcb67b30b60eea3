"""Integrity: the hashing engine, manifests, and the immutable flag."""

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
