"""Stores: places that hold content.

``tree`` is the human-readable primary (:class:`TreeStore`, addressed by path); the
content stores behind :class:`~labkeep.storage.base.ContentStore` hold replicas by
SHA-256: ``objects`` (a folder) and ``s3`` (any S3-compatible endpoint; boto3 is the
``labkeep[s3]`` extra, imported when an S3 store is opened).
"""

from labkeep.storage._tree import PRIVATE_DIR, TreeStore, fsync_dir, write_atomic

__all__ = ["PRIVATE_DIR", "TreeStore", "fsync_dir", "write_atomic"]
