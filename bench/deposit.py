"""Deposit throughput and memory: publish to the local InvenioRDM test server.

    .venv/bin/python bench/deposit.py --workdir /tmp/labkeep-bench-deposit [--files 2000]
        [--big-mib 512]

Three deposits of sealed datasets, each into a fresh server on loopback (in this process,
keeping only the size and MD5 of what it receives): N small files sent one by one, the
same files packed (one zip per top folder, ``max_files`` 100), and one large file. Prints
seconds, files/s, MB/s, requests, and for the large file Python's peak traced memory
during the publish (tracemalloc: a whole file held in memory would show as its size).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import unseal_tree
from tests.invenio_server import InvenioServer

from labkeep import Keep

TOKEN = "bench-token"


def build(keep: Keep, root: Path, files: int, big_mib: int) -> None:
    small = root / "src-small"
    for i in range(files):
        path = small / f"plate{i % 20:02d}" / f"well{i:05d}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(hashlib.sha256(str(i).encode()).digest() * 128)  # 4 KiB
    big = root / "src-big"
    big.mkdir()
    block = hashlib.sha256(b"big").digest() * (1 << 15)
    with open(big / "stack.tif", "wb") as handle:
        for _ in range(big_mib):
            handle.write(block)
    keep.create_project("bench")
    keep.set_metadata("bench", {"creators": [{"name": "Imaging Facility"}]})
    keep.ingest(small, "bench/small", seal=True, link=True)
    keep.ingest(big, "bench/big", seal=True, link=True)


def deposit(
    keep: Keep, address: str, target: str, max_files: int, *, trace: bool = False
) -> dict[str, object]:
    """Publish *address* to a fresh server as target *target* (each target of a dataset
    holds one deposit)."""
    os.environ[f"LABKEEP_{target.upper()}_TOKEN"] = TOKEN
    with InvenioServer(token=TOKEN, max_files=max(max_files, 100), keep_content=False) as server:
        keep.config.publish_targets = {target: {"url": server.url, "max_files": max_files}}
        if trace:
            tracemalloc.start()
        start = time.perf_counter()
        result = keep.publish(address, to=target)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] if trace else 0
        tracemalloc.stop()
        assert result.state == "published" and len(server.published()) == 1
        return {
            "dataset": address,
            "keys": result.files_total,
            "source_files": result.source_files,
            "packaged": result.packaged,
            "bytes": result.bytes_total,
            "seconds": round(seconds, 2),
            "files_per_s": round(result.source_files / seconds, 1),
            "MB_per_s": round(result.bytes_total / seconds / 1e6, 1),
            "requests": len(server.log),
            "peak_traced_MiB": round(peak / (1 << 20), 1) if trace else None,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--big-mib", type=int, default=512)
    args = parser.parse_args()
    if args.workdir.exists():
        unseal_tree(args.workdir)
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True)
    with Keep.init(args.workdir / "keep") as keep:
        build(keep, args.workdir, args.files, args.big_mib)
        rows = [
            deposit(keep, "bench/small", "single", max_files=args.files),
            deposit(keep, "bench/small", "packed", max_files=100),
            deposit(keep, "bench/big", "big", max_files=100, trace=True),
        ]
    for row in rows:
        print(json.dumps(row))
    unseal_tree(args.workdir)
    shutil.rmtree(args.workdir)


if __name__ == "__main__":
    main()
