"""Job queue benchmark (issue #9).

    .venv/bin/python bench/jobs.py --workdir /tmp/labkeep-bench-jobs          # full size
    .venv/bin/python bench/jobs.py --quick --workdir /tmp/labkeep-bench-jobs  # smoke run

(b) ``claims``: claim throughput and claim latency of 1, 4 and 8 ``labkeep worker``
    processes on PostgreSQL (a throwaway server with fsync ON, as deployed) draining
    10,000 no-op jobs. Throughput is jobs / (last job done - first job started), from the
    workers' own JSON log lines, so process start-up is not counted; the claim latency
    (p50/p95/max) is the time of the claim statement each worker logs with ``job.start``.
    A no-op job costs a claim and a fenced completion: two write transactions.

(a) ``watch``: the 10,000-file set (16-256 KiB, BENCHMARKING.md's "small") dropped into
    a watched buffer (marker rule, ``--link``) and imported by watcher -> queue -> worker,
    against a direct ``labkeep ingest --link`` of the same set in the same run: the
    overhead is (marker written -> job done) / (direct ingest's wall time) - 1.

Results go to ``bench/results/jobs-*.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(REPO / "src")]


def _lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def _worker(root: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "labkeep", "worker", "--root", str(root), *args],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        )


def bench_claims(workdir: Path, jobs: int, counts: list[int]) -> list[dict[str, Any]]:
    from tests.pgserver import PostgresServer

    from labkeep import Keep
    from labkeep.ops import jobs as q

    server = PostgresServer(durable=True)
    server.start()
    results = []
    try:
        for n in counts:
            root = workdir / f"claims-{n}"
            shutil.rmtree(root, ignore_errors=True)
            with Keep.init(root, catalog_url=server.create_database()) as keep:
                with keep.catalog.write() as session:
                    for _ in range(jobs):
                        q.enqueue(keep, "noop", {}, session=session)
            log = workdir / f"claims-{n}.log"
            log.unlink(missing_ok=True)
            wall0 = time.monotonic()
            procs = [_worker(root, log, "--drain", "--no-schedule") for _ in range(n)]
            for p in procs:
                p.wait(timeout=3600)
            wall = time.monotonic() - wall0
            lines = _lines(log)
            starts = [r for r in lines if r["event"] == "job.start"]
            dones = [r for r in lines if r["event"] == "job.done"]
            assert len(dones) == jobs, f"{len(dones)} of {jobs} jobs done"
            assert len({r["job"] for r in dones}) == jobs, "a job ran twice"
            # first start to last done, from the log's timestamps (1 s resolution) and
            # the process wall time minus start-up: report both
            from datetime import datetime

            def ts(r: dict[str, Any]) -> float:
                return datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp()

            span = max(ts(r) for r in dones) - min(ts(r) for r in starts)
            claim_ms = [float(r["claim_ms"]) for r in starts]
            result = {
                "workers": n,
                "jobs": jobs,
                "wall_s": round(wall, 2),
                "span_s": span,
                "jobs_per_s_wall": round(jobs / wall, 1),
                "claim_ms_p50": round(statistics.median(claim_ms), 2),
                "claim_ms_p95": round(_pct(claim_ms, 95), 2),
                "claim_ms_max": round(max(claim_ms), 2),
            }
            results.append(result)
            print(
                f"claims  {n} worker(s): {jobs} jobs in {wall:.1f} s "
                f"({result['jobs_per_s_wall']} jobs/s incl. start-up); claim p50 "
                f"{result['claim_ms_p50']} ms, p95 {result['claim_ms_p95']} ms, "
                f"max {result['claim_ms_max']} ms",
                flush=True,
            )
            shutil.rmtree(root, ignore_errors=True)
    finally:
        server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/labkeep-bench-jobs"))
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1,000 jobs")
    parser.add_argument("--parts", default="claims,watch")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    parts = args.parts.split(",")
    report: dict[str, Any] = {"quick": args.quick}
    if "claims" in parts:
        report["claims"] = bench_claims(args.workdir, 1000 if args.quick else 10_000, [1, 4, 8])
    if "watch" in parts:
        report["watch"] = bench_watch(args.workdir, quick=args.quick)
    out = HERE / "results" / f"jobs-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"results: {out}")


def bench_watch(workdir: Path, *, quick: bool) -> dict[str, Any]:
    raise SystemExit("part (a) needs the watcher")


if __name__ == "__main__":
    main()
