"""Operations at scale: backup, drill, check and a /metrics scrape's catalog gauges.

Builds a keep of FILES tiny files in DATASETS datasets through the real ingest path
(once, in --workdir; reused afterwards), then times each operation ROUNDS times and
prints the medians as JSON (and writes them to bench/results/ops-*.json).

    .venv/bin/python bench/ops.py --workdir /tmp/labkeep-bench-ops --files 20000
    .venv/bin/python bench/ops.py --workdir /tmp/labkeep-bench-ops-pg --files 20000 --pg
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build(root: Path, files: int, datasets: int, url: str | None) -> None:
    from labkeep import Keep

    if (root / "keep" / "labkeep.toml").exists():
        return
    keep = Keep.init(root / "keep", catalog_url=url)
    keep.create_project("bench")
    per = files // datasets
    for d in range(datasets):
        source = root / "src" / f"d{d:03d}"
        for i in range(per):
            path = source / f"f{i // 1000:03d}" / f"{i:06d}.dat"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"%d-%d\n" % (d, i))
        report = keep.ingest(str(source), f"bench/s{d:03d}", keep_results=False)
        assert not report.failed
    (root / "backups").mkdir()
    keep.add_store("backup", kind="objects", path=str(root / "backups"))
    keep.close()


def timed(fn: Any, rounds: int) -> dict[str, float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--datasets", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg", action="store_true", help="PostgreSQL catalog (own server)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    server = None
    url = None
    if args.pg:
        from tests.pgserver import PostgresServer

        server = PostgresServer(durable=True)
        server.start()
        url = server.create_database()
        import shutil

        shutil.rmtree(args.workdir / "keep", ignore_errors=True)
        shutil.rmtree(args.workdir / "src", ignore_errors=True)
        shutil.rmtree(args.workdir / "backups", ignore_errors=True)
    try:
        start = time.perf_counter()
        build(args.workdir, args.files, args.datasets, url)
        built = time.perf_counter() - start
        from labkeep import Keep
        from labkeep.web.metrics import CatalogCollector

        with Keep.open(args.workdir / "keep") as keep:
            results: dict[str, Any] = {
                "files": args.files,
                "datasets": args.datasets,
                "catalog": keep.catalog.dialect,
                "build_s": round(built, 1),
                "backup": timed(lambda: keep.backup(rotate=False), args.rounds),
                "drill (sample 20)": timed(lambda: keep.drill_backup(sample=20), args.rounds),
                "check": timed(lambda: list(keep.check()), args.rounds),
                "metrics gauges (uncached)": timed(
                    lambda: list(CatalogCollector(keep, 0).collect()), args.rounds
                ),
                "status": timed(keep.status, args.rounds),
            }
            results["backup_bytes"] = keep.list_backups()[0].size
            results["findings"] = len(list(keep.check()))
    finally:
        if server is not None:
            server.stop()
    results["load_average"] = os.getloadavg()
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    name = out / f"ops-{results['catalog']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    name.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
