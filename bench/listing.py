"""Listing a dataset of a million files from the command line: first line, whole listing,
memory, and how long a command takes to start.

    .venv/bin/python bench/listing.py --workdir /tmp/labkeep-bench-listing             # 1,000,000
    .venv/bin/python bench/listing.py --workdir /tmp/labkeep-bench-listing --files 20000
    .venv/bin/python bench/listing.py ... --baseline /path/to/old/src   # also an older labkeep

The keep is built once in WORKDIR (SQLite, kept between runs): one dataset whose catalog
holds --files entries, written straight into the catalog in one transaction (a listing
reads only the catalog; building a million files through ingest takes an hour here). Then,
alternating the commands, --rounds times each:

- ``labkeep ls bench/many --all | head -5``: time until head has its five lines and the
  pipeline ends (the first lines arrive at once when the listing streams);
- ``labkeep ls bench/many --all > /dev/null`` and ``--json``: the whole listing, with the
  peak memory of the labkeep process;
- ``labkeep ls bench`` and ``labkeep --help``: how long a command takes to start;
- the floors: the same rows read by Python's sqlite3 module with no labkeep, and
  ``python -c 'import sqlalchemy.orm'`` (what any command that reads the catalog pays).

With --baseline SRC, ``PYTHONPATH=SRC`` runs an older labkeep's ``ls`` on the same keep
(the issue's numbers: 270 s and 3.1 GB for a million files) in the same run. Results go
to bench/results/listing-*.json; the table prints medians and ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECT, DATASET = "bench", "many"


def build(workdir: Path, files: int) -> Path:
    """A keep whose dataset bench/many has *files* entries (built once, reused)."""
    root = workdir / f"keep-{files}"
    if (root / "ready").exists():
        return root
    from sqlalchemy import insert, select

    from labkeep import Keep
    from labkeep.catalog import Dataset, Entry, Version
    from labkeep.clock import utcnow

    started = time.monotonic()
    with Keep.init(root) as keep:
        keep.create_project(PROJECT)
        keep.create_dataset(f"{PROJECT}/{DATASET}")
        rng = random.Random(7)
        with keep.catalog.write() as session:
            dataset = session.execute(select(Dataset).where(Dataset.name == DATASET)).scalar_one()
            now = utcnow()
            session.add(
                Version(dataset_id=dataset.id, number=1, state="committed", kind="ingest",
                        author="bench", message="synthetic", created_at=now,
                        committed_at=now, n_files=files, n_bytes=0)
            )  # fmt: skip
            dataset.head_version = 1
            batch: list[dict[str, Any]] = []
            total = 0
            for i in range(files):
                size = rng.randint(1, 4 << 20)
                total += size
                batch.append({
                    "dataset_id": dataset.id, "valid_from": 1,
                    "path": f"raw/plate{i // 10000:03d}/well{i // 100 % 100:02d}/img-{i:07d}.tif",
                    "size": size, "sha256": hashlib.sha256(b"%d" % i).digest(),
                    "mtime_ns": 1_700_000_000_000_000_000 + i,
                })  # fmt: skip
                if len(batch) == 20000:
                    session.execute(insert(Entry), batch)
                    batch = []
            if batch:
                session.execute(insert(Entry), batch)
            session.execute(
                Version.__table__.update()
                .where(Version.dataset_id == dataset.id)
                .values(n_bytes=total)
            )
    (root / "ready").write_text(f"built in {time.monotonic() - started:.0f} s\n")
    return root


def run(command: str, env: dict[str, str]) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of the labkeep process of a shell pipeline."""
    marker = Path(f"/tmp/labkeep-bench-rss-{os.getpid()}")
    wrapped = command.replace(
        "LABKEEP", f"/usr/bin/time -f %M -o {marker} {sys.executable} -m labkeep"
    )
    started = time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", wrapped], env=env, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    elapsed = time.perf_counter() - started
    try:
        rss = int(marker.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        rss = 0
    marker.unlink(missing_ok=True)
    return elapsed, rss


def floor_sqlite(root: Path) -> float:
    code = (
        "import sqlite3,sys\n"
        f"db=sqlite3.connect({str(root / 'catalog.db')!r})\n"
        "n=0\n"
        "for path,size,sha in db.execute('SELECT path,size,sha256 FROM entries "
        "WHERE valid_to IS NULL ORDER BY dataset_id,path'):\n"
        "    sys.stdout.write(f'{size} {sha.hex()[:16]} {path}\\n')\n"
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/labkeep-bench-listing"))
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="src folder of an older labkeep")
    parser.add_argument("--baseline-rounds", type=int, default=1)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    root = build(args.workdir, args.files)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABKEEP_")}
    env["LABKEEP_ROOT"] = str(root)
    address = f"{PROJECT}/{DATASET}"
    commands = {
        "ls --all | head -5": f"LABKEEP ls {address} --all | head -5",
        "ls --all > /dev/null": f"LABKEEP ls {address} --all > /dev/null",
        "ls --json > /dev/null": f"LABKEEP ls {address} --json > /dev/null",
        "ls (first 1,000)": f"LABKEEP ls {address} > /dev/null",
        "ls PROJECT": f"LABKEEP ls {PROJECT} > /dev/null",
        "--help": "LABKEEP --help > /dev/null",
    }
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in commands}
    floors: dict[str, list[float]] = {"sqlite3 rows, no labkeep": [], "import sqlalchemy.orm": []}
    baseline: dict[str, list[tuple[float, int]]] = {}
    load_start = os.getloadavg()
    for _ in range(args.rounds):
        for name, command in commands.items():
            results[name].append(run(command, env))
        floors["sqlite3 rows, no labkeep"].append(floor_sqlite(root))
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import sqlalchemy.orm"], check=True)
        floors["import sqlalchemy.orm"].append(time.perf_counter() - started)
        if args.baseline and len(next(iter(baseline.values()), [])) < args.baseline_rounds:
            old_env = dict(env, PYTHONPATH=str(args.baseline))
            for name in ("ls | head -5 (old)", "ls > /dev/null (old)"):
                cmd = f"LABKEEP ls {address}" + (" | head -5" if "head" in name else " > /dev/null")
                baseline.setdefault(name, []).append(run(cmd, old_env))
    load_end = os.getloadavg()

    def med(values: list[float]) -> float:
        return statistics.median(values)

    print(f"\n{args.files:,} files; medians of {args.rounds}; load {load_start[0]:.1f} -> "
          f"{load_end[0]:.1f}\n")  # fmt: skip
    print("| command | wall | peak RSS | vs. sqlite3 floor |\n| --- | --- | --- | --- |")
    floor = med(floors["sqlite3 rows, no labkeep"])
    for name, values in {**results, **baseline}.items():
        wall = med([v[0] for v in values])
        rss = med([float(v[1]) for v in values])
        shown = name.replace("|", "\\|")
        print(f"| `labkeep {shown}` | {wall:.2f} s | {rss / 1024:.0f} MiB | {wall / floor:.2f}x |")
    for name, values in floors.items():
        print(f"| {name} | {med(values):.2f} s | | |")
    out = HERE / "results" / f"listing-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "files": args.files, "rounds": args.rounds, "load": [load_start, load_end],
        "machine": platform.uname()._asdict(), "cpus": os.cpu_count(),
        "results": results, "baseline": baseline, "floors": floors,
        "children_maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }, indent=1))  # fmt: skip
    print(f"\nwritten: {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
