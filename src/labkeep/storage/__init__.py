"""Stores: places that hold content. Only the primary tree exists so far."""

from labkeep.storage._tree import PRIVATE_DIR, TreeStore, fsync_dir, write_atomic

__all__ = ["PRIVATE_DIR", "TreeStore", "fsync_dir", "write_atomic"]
