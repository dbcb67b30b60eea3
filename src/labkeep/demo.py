"""A demo keep with generated instrument-like data: ingest, seal, verify."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labkeep.config import CONFIG_NAME
from labkeep.errors import AlreadyExists
from labkeep.keep import Keep

PROJECT = "demo-2026"
DATASET = "s001-confocal"


def make_sample(folder: Path, *, files: int = 60, seed: int = 17) -> int:
    """Write a fake acquisition session (frames, metadata, a log); return bytes written."""
    rng = random.Random(seed)
    total = 0
    (folder / "frames").mkdir(parents=True, exist_ok=True)
    for i in range(files):
        data = rng.randbytes(rng.randint(16, 256) * 1024)
        (folder / "frames" / f"frame-{i:05d}.tif").write_bytes(data)
        total += len(data)
    meta = f"instrument: confocal-1\nobjective: 63x/1.4 oil\nframes: {files}\n"
    (folder / "acquisition.yaml").write_text(meta, encoding="utf-8")
    (folder / "notes é.txt").write_text("sample notes, with a non-ASCII name\n", encoding="utf-8")
    return total + len(meta)


def run_demo(
    path: str | os.PathLike[str], log: Callable[[str], Any] | None = None
) -> dict[str, Any]:
    say = log or (lambda _msg: None)
    root = Path(path).absolute()
    keep = Keep.open(root) if (root / CONFIG_NAME).exists() else Keep.init(root)
    with keep:
        say(f"keep: {root}")
        with contextlib.suppress(AlreadyExists):
            keep.create_project(PROJECT, title="Demo confocal screen")
        buffer = root.parent / "demo-buffer" / "run-001"
        if not buffer.exists():
            size = make_sample(buffer)
            say(f"generated sample session in {buffer} ({size} bytes)")
        ingest = keep.ingest(buffer, f"{PROJECT}/{DATASET}", seal=True)
        say(f"ingest: {ingest.counts()}")
        verify = keep.verify(f"{PROJECT}/{DATASET}")
        say(f"verify: {verify.info['states']} (log {verify.info['log']})")
        chain = keep.check_events()
        say(f"audit log: {chain.message}")
        dataset = keep.tree.dataset_dir(PROJECT, DATASET)
        say(f"check it without labkeep: cd {dataset} && sha256sum -c MANIFEST.sha256")
        ok = not ingest.failed and not verify.failed and chain.ok
        return {
            "action": "demo",
            "status": "ok" if ok else "error",
            "root": str(root),
            "dataset": f"{PROJECT}/{DATASET}",
            "ingest": ingest.counts(),
            "verify": verify.info["states"],
            "events_ok": chain.ok,
        }
