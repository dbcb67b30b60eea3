"""Copy benchmark (issue #8): ``labkeep copy`` to S3 and to an objects folder, against
``rclone copy`` to the same S3 server and ``cp -r`` to the same disk, in one run.

(Named copies.py, not copy.py: a copy.py in bench/ would be imported instead of the
standard library's copy module by every script in this folder.)

    .venv/bin/python bench/copies.py --workdir /tmp/labkeep-bench-copy           # full size
    .venv/bin/python bench/copies.py --quick --workdir /tmp/labkeep-bench-copy   # smoke run

Two data sets are generated once and ingested (``--link``: no second copy) into a keep:
``small`` (10,000 files of 16-256 KiB) and ``large`` (four 1 GiB files). A real
SeaweedFS (``weed mini``, as the tests start it) listens on loopback. For each set and
repetition, in rotating order, every method copies the whole set to a fresh target:

- ``labkeep-s3``       ``Keep.copy(P/D, to=STORE)``: every object sent with its SHA-256,
                       which the server checks, and recorded in the catalog once stored;
- ``rclone-s3``        ``rclone copy SRC s3:BUCKET`` with rclone's defaults (4
                       transfers; it sends MD5s, not SHA-256s, and records nothing);
- ``labkeep-objects``  ``Keep.copy`` to a content-addressed folder on the same disk
                       (hashed while written, fsynced, renamed);
- ``cp``               ``cp -r SRC DST`` (no hashing, no fsync: its ``sync`` is timed
                       separately and shown as "+sync").

Each target is a new bucket or folder, so nothing is skipped as already there. Medians of
the repetitions are printed with MB/s, files/s and the ratios labkeep / baseline; the
results go to ``bench/results/copy-*.json``. Follows ../shared/BENCHMARKING.md: ``sync``
before each repetition, the load average recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "src")]


def _bench_ingest() -> Any:
    """bench/ingest.py (its data generators and machine facts), loaded by path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_ingest", HERE / "ingest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_ingest"] = module
    spec.loader.exec_module(module)
    return module


_ingest = _bench_ingest()
generate_large, generate_small = _ingest.generate_large, _ingest.generate_small
machine_info, prepare_source = _ingest.machine_info, _ingest.prepare_source

from tests.s3server import S3Server  # noqa: E402

from labkeep import Keep  # noqa: E402

MiB = 1 << 20
METHODS = ("labkeep-s3", "rclone-s3", "labkeep-objects", "cp")


def _tree_size(root: Path) -> tuple[int, int]:
    files = size = 0
    for folder, _dirs, names in os.walk(root):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(folder, name)).st_size
    return files, size


class Bench:
    def __init__(self, args: argparse.Namespace, server: S3Server) -> None:
        self.args = args
        self.server = server
        self.work: Path = args.workdir
        self.keep_root = self.work / "keep"
        self.targets = self.work / "targets"
        self.rclone_env = {
            # AWS_CA_BUNDLE (set on some machines) makes rclone 1.60 refuse plain http
            **{k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"},
            "RCLONE_CONFIG_BENCH_TYPE": "s3",
            "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
            "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": server.access_key,
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": server.secret_key,
            "RCLONE_CONFIG_BENCH_ENDPOINT": server.endpoint,
            "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
            "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
        }

    def keep(self) -> Keep:
        if not (self.keep_root / "labkeep.toml").exists():
            Keep.init(self.keep_root).close()
        return Keep.open(self.keep_root)

    def ingest(self, name: str, source: Path) -> None:
        with self.keep() as keep:
            if "bench" not in [p.name for p in keep.list_projects()]:
                keep.create_project("bench")
            report = keep.ingest(source, f"bench/{name}", link=True, keep_results=False)
            assert not report.failed, report.summary()

    def add_store(self, keep: Keep, kind: str) -> str:
        name = f"{kind[:3]}{uuid.uuid4().hex[:8]}"
        if kind == "s3":
            keep.add_store(
                name,
                kind="s3",
                endpoint=self.server.endpoint,
                bucket=f"lk-{name}",
                credentials=self.server.profile,
                credentials_file=str(self.server.credentials_file),
                create_bucket=True,
            )
        else:
            self.targets.mkdir(parents=True, exist_ok=True)
            keep.add_store(name, kind="objects", path=str(self.targets / name))
        return name

    def run(self, method: str, name: str, source: Path) -> dict[str, float]:
        """One timed copy of the set to a fresh target; returns seconds (and +sync)."""
        os.sync()
        if method.startswith("labkeep"):
            with self.keep() as keep:
                store = self.add_store(keep, "s3" if method == "labkeep-s3" else "objects")
                t0 = time.perf_counter()
                report = keep.copy(f"bench/{name}", to=store, keep_results=False)
                seconds = time.perf_counter() - t0
                assert not report.failed, report.summary()
            return {"seconds": seconds, "sync": 0.0}
        if method == "rclone-s3":
            bucket = f"rc-{uuid.uuid4().hex[:10]}"
            # the same kind of bucket labkeep makes (versioned, Object Lock enabled): a
            # versioned bucket costs the server more per put than a plain one
            self.server.client().create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
            t0 = time.perf_counter()
            subprocess.run(
                ["rclone", "copy", str(source), f"bench:{bucket}"],
                env=self.rclone_env,
                check=True,
            )
            return {"seconds": time.perf_counter() - t0, "sync": 0.0}
        dest = self.targets / f"cp-{uuid.uuid4().hex[:8]}"
        self.targets.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        subprocess.run(["cp", "-r", str(source), str(dest)], check=True)
        seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        os.sync()
        return {"seconds": seconds, "sync": time.perf_counter() - t1}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--small-files", type=int, default=10_000)
    p.add_argument("--large-files", type=int, default=4)
    p.add_argument("--large-size", type=int, default=1024, help="MiB")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/labkeep-bench-copy"))
    p.add_argument("--quick", action="store_true", help="1000 small files, 2 x 64 MiB, 1 rep")
    p.add_argument("--sets", default="small,large")
    p.add_argument("--methods", default=",".join(METHODS))
    args = p.parse_args()
    if args.quick:
        args.small_files, args.large_files, args.large_size, args.reps = 1000, 2, 64, 1
    if shutil.which("rclone") is None and "rclone-s3" in args.methods:
        sys.exit("rclone is not installed (apt-get install rclone), or leave out rclone-s3")
    args.workdir.mkdir(parents=True, exist_ok=True)
    sets: dict[str, tuple[Path, Callable[[], None], dict[str, object]]] = {}
    src = args.workdir / "src"
    small_params = {"n": args.small_files, "min": 16, "max": 256}
    large_params = {"n": args.large_files, "mib": args.large_size}
    sets["small"] = (
        src / "small",
        lambda: generate_small(src / "small", args.small_files, 16, 256),
        small_params,
    )
    sets["large"] = (
        src / "large",
        lambda: generate_large(src / "large", args.large_files, args.large_size),
        large_params,
    )
    methods = [m for m in args.methods.split(",") if m]
    # SeaweedFS's own volume size (the tests' 16 MB volumes split every 64 MiB part)
    server = S3Server(volume_mb=None)
    server.start()
    try:
        if (args.workdir / "keep").exists():
            shutil.rmtree(args.workdir / "keep")
        if (args.workdir / "targets").exists():
            shutil.rmtree(args.workdir / "targets")
        bench = Bench(args, server)
        results: dict[str, dict[str, list[dict[str, float]]]] = {}
        info: dict[str, dict[str, int]] = {}
        for name in args.sets.split(","):
            folder, make, params = sets[name]
            prepare_source(folder, params, make)
            files, size = _tree_size(folder)
            info[name] = {"files": files, "bytes": size}
            bench.ingest(name, folder)
            results[name] = {m: [] for m in methods}
            order = list(methods)
            for rep in range(args.reps):
                random.Random(rep).shuffle(order)
                load = os.getloadavg()[0]
                for method in order:
                    timing = bench.run(method, name, folder)
                    timing["load"] = load
                    results[name][method].append(timing)
                    print(f"  {name} rep {rep + 1} {method:16} {timing['seconds']:7.2f} s")
                if args.workdir.joinpath("targets").exists():
                    shutil.rmtree(args.workdir / "targets")  # the next rep writes fresh ones
        report(results, info)
        out = HERE / "results" / f"copies-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(
            json.dumps(
                {
                    "machine": machine_info(args.workdir),
                    "seaweedfs_start_seconds": server.start_seconds,
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "sets": info,
                    "results": results,
                },
                indent=1,
            )
        )
        print(f"\nwritten to {out}")
    finally:
        server.stop()


def report(
    results: dict[str, dict[str, list[dict[str, float]]]], info: dict[str, dict[str, int]]
) -> None:
    print()
    print(f"{'set':6} {'method':16} {'median s':>9} {'MB/s':>8} {'files/s':>9} {'+sync s':>8}")
    medians: dict[tuple[str, str], float] = {}
    for name, by_method in results.items():
        for method, runs in by_method.items():
            seconds = statistics.median(r["seconds"] for r in runs)
            sync = statistics.median(r["sync"] for r in runs)
            medians[name, method] = seconds
            mb = info[name]["bytes"] / 1e6 / seconds
            fps = info[name]["files"] / seconds
            print(f"{name:6} {method:16} {seconds:9.2f} {mb:8.1f} {fps:9.0f} {sync:8.2f}")
    print()
    for name in results:
        for ours, theirs in (("labkeep-s3", "rclone-s3"), ("labkeep-objects", "cp")):
            if (name, ours) in medians and (name, theirs) in medians:
                ratio = medians[name, theirs] / medians[name, ours]
                print(f"{name:6} {ours} vs {theirs}: {ratio:.2f}x the speed")


if __name__ == "__main__":
    main()
