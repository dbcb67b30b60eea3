"""Package benchmark (issue 11): labkeep's BagIt export against bagit-python.

    nice .venv/bin/python bench/publish.py --workdir /tmp/labkeep-bench-publish
    nice .venv/bin/python bench/publish.py --quick --workdir /tmp/labkeep-bench-publish

A 10,000-file data set (16-256 KiB each, bench/ingest.py's generator) is ingested into a
keep once. Then, in the same run:

- ``labkeep-first``  ``Keep.export_package(..., format="bagit")`` when no SHA-512 is known
                     yet: every byte read once (SHA-256 checked, SHA-512 and MD5 kept);
                     measured once, it is a one-time cost per content;
- ``labkeep``        the same export again into a new folder: the digests are known, files
                     are copied by the kernel (``copy_file_range``), no byte is hashed;
- ``bagit``          ``bagit.make_bag(copy, checksums=["sha256", "sha512"], processes=N)``
                     on a copy of the source folder (the copy, made with ``cp -r``, is
                     not timed: make_bag moves files into data/ and hashes them);

and both bags are validated with ``bagit.Bag(p).validate(processes=N)`` (full, with
checksums). The order alternates every repetition, ``sync`` runs before each timed step,
every repetition writes to its own folders and nothing is deleted before the end
(/work/shared/BENCHMARKING.md). Medians and ratios are printed and written to
bench/results/publish-*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "src")]


def _bench_ingest() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_ingest", HERE / "ingest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_ingest"] = module
    spec.loader.exec_module(module)
    return module


_ingest = _bench_ingest()
generate_small, prepare_source = _ingest.generate_small, _ingest.prepare_source
machine_info = _ingest.machine_info

import bagit  # noqa: E402

from labkeep import Keep  # noqa: E402

CPU: dict[str, list[float]] = {}


def _cpu() -> float:
    """CPU seconds (user + system) of this process, its threads and its waited-for
    children (bagit's worker processes): robust where wall time is not, on a shared host."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(step: Any, name: str = "") -> tuple[float, Any]:
    os.sync()
    c0, t0 = _cpu(), time.perf_counter()
    value = step()
    wall = time.perf_counter() - t0
    if name:
        CPU.setdefault(name, []).append(_cpu() - c0)
    return wall, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/labkeep-bench-publish"))
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--min-kib", type=int, default=16)
    parser.add_argument("--max-kib", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true", help="1,000 files, 2 repetitions")
    args = parser.parse_args()
    if args.quick:
        args.files, args.reps = 1000, 2
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    params = {"files": args.files, "min_kib": args.min_kib, "max_kib": args.max_kib}
    src = work / "source"
    prepare_source(src, params, lambda: generate_small(src, args.files, args.min_kib, args.max_kib))
    run_dir = work / f"run-{int(time.time())}"
    run_dir.mkdir()
    keep = Keep.init(run_dir / "keep")
    keep.create_project("bench")
    t_ingest, _ = timed(lambda: keep.ingest(src, "bench/data", link=True))
    print(f"ingest (hard links): {t_ingest:.2f} s")
    n = args.processes
    first_s, first = timed(
        lambda: keep.export_package("bench/data", run_dir / "first", jobs=n), "labkeep-first"
    )
    assert first.info["finished"], first.info
    print(f"labkeep-first: {first_s:.2f} s, {first.info['bytes_read'] / 1e9:.2f} GB read")
    times: dict[str, list[float]] = {k: [] for k in ("labkeep", "bagit", "validate-labkeep",
                                                     "validate-bagit")}  # fmt: skip
    bytes_read = []
    for rep in range(args.reps):
        rdir = run_dir / f"r{rep}"
        copy = rdir / "bagit"
        rdir.mkdir()
        subprocess.run(["cp", "-r", str(src), str(copy)], check=True)

        def labkeep_step(rdir: Path = rdir) -> None:
            t, report = timed(
                lambda: keep.export_package("bench/data", rdir / "lk", jobs=n), "labkeep"
            )
            assert report.info["finished"], report.info
            times["labkeep"].append(t)
            bytes_read.append(report.info["bytes_read"])

        def bagit_step(copy: Path = copy) -> None:
            t, _ = timed(lambda: bagit.make_bag(str(copy), checksums=["sha256", "sha512"],
                                                processes=n), "bagit")  # fmt: skip
            times["bagit"].append(t)

        for step in (labkeep_step, bagit_step) if rep % 2 == 0 else (bagit_step, labkeep_step):
            step()
        lk_bag = rdir / "lk" / "data-v1"
        bags = [("validate-labkeep", lk_bag), ("validate-bagit", copy)]
        for name, path in bags if rep % 2 == 0 else bags[::-1]:  # the order alternates too
            t, _ = timed(lambda path=path: bagit.Bag(str(path)).validate(processes=n), name)
            times[name].append(t)
        print(f"rep {rep}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "machine": machine_info(work),
        "params": {**params, "reps": args.reps, "processes": n},
        "total_bytes": first.info["bytes"],
        "labkeep_first_s": first_s,
        "times_s": times,
        "median_s": med,
        "cpu_s": CPU,
        "median_cpu_s": {k: statistics.median(v) for k, v in CPU.items()},
        "labkeep_bytes_read": bytes_read,
        "export_speedup": med["bagit"] / med["labkeep"],
        "first_export_speedup": med["bagit"] / first_s,
        "validation_ratio": med["validate-labkeep"] / med["validate-bagit"],
    }
    print(f"\n{args.files} files, {first.info['bytes'] / 1e9:.2f} GB, processes={n}")
    cpu = result["median_cpu_s"]
    print(f"{'step':20} {'median s':>9} {'CPU s':>9}")
    for k, v in med.items():
        print(f"{k:20} {v:9.2f} {cpu[k]:9.2f}")
    print(f"{'labkeep-first':20} {first_s:9.2f} {cpu['labkeep-first']:9.2f}")
    print(f"CPU: labkeep export {cpu['bagit'] / cpu['labkeep']:.2f}x less than bagit.make_bag")
    print(f"export: labkeep {result['export_speedup']:.1f}x faster than bagit.make_bag "
          f"(first export, digests unknown: {result['first_export_speedup']:.2f}x)")  # fmt: skip
    print(f"validation of labkeep's bag / bagit's bag: {result['validation_ratio']:.2f}")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    target = out / f"publish-{time.strftime('%Y%m%dT%H%M%S')}.json"
    target.write_text(json.dumps(result, indent=1))
    print(f"results: {target}")
    keep.close()
    shutil.rmtree(run_dir)


if __name__ == "__main__":
    main()
