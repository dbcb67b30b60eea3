"""Browser uploads: small files written to a private staging folder, then ingested by the
very same ingest use case (hashing, durability, manifest, version, event)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, BinaryIO

from labkeep.errors import UsageError
from labkeep.names import check_relpath, parse_address
from labkeep.ops._access import find_dataset
from labkeep.ops.ingest import ingest
from labkeep.results import Report

if TYPE_CHECKING:
    from labkeep.keep import Keep

UPLOADS_DIR = "uploads"
CHUNK = 1 << 20


def upload(
    keep: Keep, address: str, files: Iterable[tuple[str, BinaryIO]], *, max_bytes: int | None = None
) -> Report:
    """Add ``(relative path, stream)`` pairs to ``PROJECT/DATASET/raw/``.

    Access is checked before a byte is written; each path is validated like any path in a
    dataset; the staging folder is removed whatever happens.
    """
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.read() as session:
        find_dataset(keep, session, addr.project, addr.dataset, "dataset.ingest")
    limit = max_bytes if max_bytes is not None else keep.config.web.max_upload_bytes
    staging = keep.root / UPLOADS_DIR / uuid.uuid4().hex
    staging.mkdir(parents=True)
    try:
        total = 0
        count = 0
        for name, stream in files:
            rel = check_relpath(name.replace("\\", "/").lstrip("/"))
            target = staging / rel
            if target.exists():
                raise UsageError(f"{rel!r} is uploaded twice")
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as out:
                while chunk := stream.read(CHUNK):
                    total += len(chunk)
                    if total > limit:
                        raise UsageError(
                            f"upload larger than {limit} bytes",
                            hint="use 'labkeep ingest' for large data",
                        )
                    out.write(chunk)
            count += 1
        if not count:
            raise UsageError("no files in the upload")
        report = ingest(keep, staging, addr.dataset_address, message="upload from the browser")
        report.info["source"] = "upload"  # not the server's staging folder
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)
