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
            keep = Keep.init(root, catalog_url=server.create_database())
            with keep, keep.catalog.write() as session:
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


def _bench_ingest() -> Any:
    """bench/ingest.py (its data generator), loaded by path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_ingest", HERE / "ingest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_ingest"] = module
    spec.loader.exec_module(module)
    return module


#: times Keep.ingest(--link) alone in a fresh process (argv: root, source, dataset)
ENGINE = """
import sys, time
from labkeep import Keep
with Keep.open(sys.argv[1]) as keep:
    t0 = time.monotonic()
    keep.ingest(sys.argv[2], sys.argv[3], link=True, keep_results=False)
    print(time.monotonic() - t0)
"""


def _job_done(db: Path, target: str) -> bool:
    import sqlite3

    with sqlite3.connect(db, timeout=30) as con:
        row = con.execute(
            "SELECT state FROM jobs WHERE kind='buffer-import' AND target=?", (target,)
        ).fetchone()
    if row and row[0] == "failed":
        raise SystemExit(f"the import of {target} failed: see the worker log")
    return bool(row and row[0] == "done")


def bench_watch(workdir: Path, *, quick: bool, reps: int = 3) -> dict[str, Any]:
    """Watcher -> queue -> worker against a direct `labkeep ingest --link`, same set."""
    from labkeep import Keep

    files = 1000 if quick else 10_000
    src = workdir / f"set-{files}"
    if not (src / ".complete").exists():
        shutil.rmtree(src, ignore_errors=True)
        _bench_ingest().generate_small(src, files, 16, 256)
        (src / ".complete").touch()
    root = workdir / "watch-keep"
    buffer = workdir / "buffer"
    staging = workdir / "staging"
    for path in (root, buffer, staging):
        subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True)
        shutil.rmtree(path, ignore_errors=True)
    buffer.mkdir()
    staging.mkdir()
    with Keep.init(root) as keep:
        keep.create_project("bench")
        keep.add_watch(str(buffer), name="bench", project_template="bench",
                       dataset_template="{folder}", ready="marker:.done", link=True)  # fmt: skip
    log = workdir / "watch-worker.log"
    log.unlink(missing_ok=True)
    worker = _worker(root, log, "--watch", "--concurrency", "1", "--no-schedule")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    direct: list[float] = []
    engine: list[float] = []
    watched: list[float] = []
    try:
        time.sleep(2)  # the worker and its watcher are up
        for rep in range(reps):
            order = ("direct", "engine", "watch") if rep % 2 == 0 else ("watch", "engine", "direct")
            for method in order:
                name = f"{method}-{rep}"
                folder = staging / name
                subprocess.run(["cp", "-al", str(src), str(folder)], check=True)
                (folder / ".complete").unlink()
                subprocess.run(["sync"], check=True)
                if method == "direct":
                    t0 = time.monotonic()
                    subprocess.run(
                        [sys.executable, "-m", "labkeep", "ingest", "--link", str(folder),
                         f"bench/{name}", "--root", str(root), "--json"],
                        check=True, stdout=subprocess.DEVNULL, env=env,
                    )  # fmt: skip
                    direct.append(time.monotonic() - t0)
                elif method == "engine":  # Keep.ingest alone, in a process already started
                    timed = subprocess.run(
                        [sys.executable, "-c", ENGINE, str(root), str(folder), f"bench/{name}"],
                        check=True, capture_output=True, text=True, env=env,
                    )  # fmt: skip
                    engine.append(float(timed.stdout.strip().splitlines()[-1]))
                else:
                    os.rename(folder, buffer / name)
                    t0 = time.monotonic()
                    (buffer / name / ".done").touch()
                    while not _job_done(root / "catalog.db", f"bench/{name}"):
                        time.sleep(0.02)
                    watched.append(time.monotonic() - t0)
                took = {"direct": direct, "engine": engine, "watch": watched}[method][-1]
                print(f"watch   rep {rep} {method}: {took:.2f} s", flush=True)
    finally:
        worker.terminate()
        worker.wait(60)
    d, e, w = (statistics.median(x) for x in (direct, engine, watched))
    result = {
        "files": files,
        "direct_s": [round(x, 3) for x in direct],
        "engine_s": [round(x, 3) for x in engine],
        "watch_s": [round(x, 3) for x in watched],
        "direct_median_s": round(d, 3),
        "engine_median_s": round(e, 3),
        "watch_median_s": round(w, 3),
        "overhead_vs_command": round(w / d - 1, 3),
        "overhead_vs_engine": round(w / e - 1, 3),
    }
    print(
        f"watch   {files} files: marker -> imported {w:.2f} s; 'labkeep ingest --link' "
        f"{d:.2f} s (overhead {100 * (w / d - 1):+.1f} %); Keep.ingest alone {e:.2f} s "
        f"(overhead {100 * (w / e - 1):+.1f} %)",
        flush=True,
    )
    for path in (root, buffer, staging):
        subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True)
        shutil.rmtree(path, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
