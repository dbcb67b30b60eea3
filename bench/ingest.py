"""Ingest benchmark (issue part 9): labkeep ingest against the seed workflow and the limits.

    .venv/bin/python bench/ingest.py --workdir /tmp/labkeep-bench            # full size
    .venv/bin/python bench/ingest.py --quick --workdir /tmp/labkeep-bench    # smoke run

Two data sets are generated (small: many 16-256 KiB files; large: a few 1 GiB files; and
with ``--sets small,large,tiny`` also 20,000 files of 1-4 KiB) and, for each, these
methods are run in the same process, alternating per repetition (the order rotates each
repetition), and the medians of the repetitions reported:

- ``labkeep-copy``  ``Keep.ingest(src, "bench/rN")``: copy + SHA-256 + catalog (SQLite)
                    + the durability labkeep promises (``durability`` from labkeep.toml);
- ``labkeep-link``  the same with ``link=True`` (hard links; source on the same fs);
- ``cp+sha256sum``  the seed workflow: ``cp -r SRC DST`` then
                    ``find DST -type f -print0 | xargs -0 sha256sum > DST.sha256``;
- ``reference``     plain Python, one pass per file (read a chunk into a buffer, SHA-256
                    it, write it), files over ``os.cpu_count()`` threads, no catalog, no
                    fsync: the copy + hash CPU limit;
- ``hash-only``     SHA-256 of the same files on all cores, no writes (the --link limit).

Following /work/shared/BENCHMARKING.md: ``sync`` before each repetition; every repetition
writes to its own destination and nothing is deleted before the end (unless
``--delete-each-rep``, for disks too small to hold them all); the share of the source in
the page cache (mincore) and the load average are recorded before every repetition. The
``sync`` that follows a method is timed too and reported as "+sync": labkeep makes its
copies durable inside the timed run, ``cp`` and the reference loop leave dirty pages.

Results are printed as a table and written as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import mmap
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labkeep import Keep

HERE = Path(__file__).resolve().parent
KiB, MiB = 1 << 10, 1 << 20
CHUNK = 1 * MiB
FILES_PER_DIR = 500
METHODS = ("labkeep-copy", "labkeep-link", "cp+sha256sum", "reference", "hash-only")
#: methods that write a full copy of the data set (for the disk-space estimate)
COPYING = ("labkeep-copy", "cp+sha256sum", "reference")


# -- machine ----------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mount_of(path: Path) -> dict[str, str]:
    """The /proc/mounts entry holding *path* (longest matching mount point)."""
    best = {"device": "?", "mount": "/", "fstype": "?", "options": ""}
    real = str(path.resolve())
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return best
    length = -1
    for line in lines:
        dev, mnt, fstype, opts, *_ = line.split()
        mnt = mnt.replace("\\040", " ")
        inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) > length:
            best = {"device": dev, "mount": mnt, "fstype": fstype, "options": opts}
            length = len(mnt)
    return best


def _meminfo_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * KiB / (1 << 30)
    except OSError:
        pass
    return 0.0


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=HERE,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return out.stdout.strip()


def machine_info(workdir: Path) -> dict[str, object]:
    import sqlalchemy

    import labkeep

    mount = _mount_of(workdir)
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(_meminfo_gib(), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl": __import__("ssl").OPENSSL_VERSION,
        "sqlalchemy": sqlalchemy.__version__,
        "sqlite": __import__("sqlite3").sqlite_version,
        "labkeep": getattr(labkeep, "__version__", "?"),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": _git("status", "--porcelain", "--untracked-files=no") not in ("", "?"),
        "workdir": str(workdir),
        "filesystem": f"{mount['fstype']} on {mount['device']} at {mount['mount']}",
        "mount_options": mount["options"],
    }


# -- page cache ------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_PAGE = mmap.PAGESIZE
_MAP_FAILED = ctypes.c_void_p(-1).value


def cached_fraction(files: list[tuple[str, int]]) -> float:
    """Share of the bytes of *files* resident in the page cache (mincore(2))."""
    resident = total = 0
    for path, size in files:
        if size == 0:
            continue
        pages = (size + _PAGE - 1) // _PAGE
        total += pages
        fd = os.open(path, os.O_RDONLY)
        try:
            addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            if addr in (None, _MAP_FAILED):
                continue
            try:
                vec = (ctypes.c_ubyte * pages)()
                if _libc.mincore(addr, size, vec) == 0:
                    resident += sum(b & 1 for b in vec)
            finally:
                _libc.munmap(addr, size)
        finally:
            os.close(fd)
    return resident / total if total else 1.0


# -- data sets -------------------------------------------------------------------------
def _pool(seed: int) -> bytes:
    return random.Random(seed).randbytes(16 * MiB)


def generate_small(folder: Path, n: int, min_kib: int, max_kib: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    pool = _pool(seed)
    for i in range(n):
        sub = folder / f"d{i // FILES_PER_DIR:03d}"
        if i % FILES_PER_DIR == 0:
            sub.mkdir(parents=True, exist_ok=True)
        size = rng.randint(min_kib * KiB, max_kib * KiB)
        start = rng.randrange(0, len(pool) - size)
        header = i.to_bytes(8, "little")  # every file differs
        with open(sub / f"f{i:06d}.bin", "wb") as handle:
            handle.write(header + pool[start + len(header) : start + size])


def generate_large(folder: Path, n: int, size_mib: int, seed: int = 2) -> None:
    rng = random.Random(seed)
    pool = _pool(seed)
    block = 8 * MiB
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        with open(folder / f"large{i:02d}.bin", "wb") as handle:
            left = size_mib * MiB
            while left:
                k = min(block, left)
                start = rng.randrange(0, len(pool) - k)
                handle.write(pool[start : start + k])
                left -= k


def list_files(root: Path) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            out.append((path, os.lstat(path).st_size))
    out.sort()
    return out


def prepare_source(folder: Path, params: dict[str, object], make: Callable[[], None]) -> None:
    """Generate a source folder unless one with the same parameters is there already."""
    stamp = folder.parent / f"{folder.name}.params.json"
    if folder.is_dir() and stamp.is_file() and json.loads(stamp.read_text()) == params:
        print(f"  reusing {folder}")
        return
    if folder.exists():
        shutil.rmtree(folder)
    t0 = time.perf_counter()
    make()
    os.sync()
    stamp.write_text(json.dumps(params))
    print(f"  generated {folder} in {time.perf_counter() - t0:.1f} s")


# -- the methods -----------------------------------------------------------------------
_local = threading.local()


def _buf() -> memoryview:
    buf: memoryview | None = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = memoryview(bytearray(CHUNK))
    return buf


def _ref_copy(src: str, dst: str) -> bytes:
    buf = _buf()
    digest = hashlib.sha256()
    fd = os.open(src, os.O_RDONLY)
    try:
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            while n := os.readv(fd, [buf]):
                view = buf[:n]
                digest.update(view)
                written = 0
                while written < n:
                    written += os.write(out, view[written:])
        finally:
            os.close(out)
    finally:
        os.close(fd)
    return digest.digest()


def _ref_hash(src: str) -> bytes:
    buf = _buf()
    digest = hashlib.sha256()
    fd = os.open(src, os.O_RDONLY)
    try:
        while n := os.readv(fd, [buf]):
            digest.update(buf[:n])
    finally:
        os.close(fd)
    return digest.digest()


def _walk_pairs(src: Path, dst: Path | None) -> list[tuple[str, str]]:
    """(source, destination) for every file; creates the destination folders."""
    pairs: list[tuple[str, str]] = []
    stack = [(str(src), str(dst) if dst is not None else "")]
    while stack:
        folder, target = stack.pop()
        if dst is not None:
            os.mkdir(target)
        with os.scandir(folder) as it:
            for entry in it:
                out = os.path.join(target, entry.name) if dst is not None else ""
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, out))
                elif entry.is_file(follow_symlinks=False):
                    pairs.append((entry.path, out))
    return pairs


def run_reference(src: Path, dst: Path) -> int:
    pairs = _walk_pairs(src, dst)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return len(list(pool.map(lambda p: _ref_copy(*p), pairs)))


def run_hash_only(src: Path) -> int:
    pairs = _walk_pairs(src, None)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return len(list(pool.map(lambda p: _ref_hash(p[0]), pairs)))


def run_cp_sha256sum(src: Path, dst: Path) -> int:
    manifest = dst.with_name(dst.name + ".sha256")
    script = 'cp -r "$1" "$2" && find "$2" -type f -print0 | xargs -0 sha256sum > "$3"'
    subprocess.run(["bash", "-c", script, "bash", str(src), str(dst), str(manifest)], check=True)
    return sum(1 for _ in manifest.open())


class LabkeepMethod:
    """One keep per (data set, mode); every repetition ingests into its own dataset."""

    def __init__(self, root: Path, *, link: bool, durability: str | None, jobs: int | None):
        self.keep = Keep.init(root)
        if durability is not None:
            self.keep.config.durability = durability
        self.keep.create_project("bench")
        self.link, self.jobs = link, jobs

    def __call__(self, src: Path, rep: int) -> int:
        report = self.keep.ingest(src, f"bench/r{rep}", link=self.link, jobs=self.jobs)
        counts = report.counts()
        if report.failed or set(counts) != {"ok"}:
            raise SystemExit(f"labkeep ingest failed: {counts} {report.results[:3]}")
        return counts["ok"]

    def close(self) -> None:
        self.keep.close()


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


# -- the run ---------------------------------------------------------------------------
def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def bench_set(
    name: str,
    src: Path,
    run_dir: Path,
    methods: list[str],
    reps: int,
    args: argparse.Namespace,
) -> dict[str, object]:
    files = list_files(src)
    n_files, n_bytes = len(files), sum(s for _, s in files)
    print(f"\n== {name}: {n_files} files, {n_bytes / 1e9:.2f} GB in {src}")
    run_dir.mkdir(parents=True)
    # warm the page cache (and the code paths) untimed
    run_hash_only(src)
    keeps: dict[str, LabkeepMethod] = {}
    for method in methods:
        if method.startswith("labkeep-"):
            keeps[method] = LabkeepMethod(
                run_dir / method,
                link=method == "labkeep-link",
                durability=args.durability,
                jobs=args.jobs,
            )
    results: dict[str, dict[str, list[float]]] = {
        m: {"seconds": [], "sync_after": [], "cached": [], "load": []} for m in methods
    }
    try:
        for rep in range(reps):
            shift = rep % len(methods)
            for method in methods[shift:] + methods[:shift]:
                os.sync()
                cached = cached_fraction(files)
                load = os.getloadavg()[0]
                dst = run_dir / f"{method.replace('+', '-')}-r{rep}"
                t0 = time.perf_counter()
                if method in keeps:
                    count = keeps[method](src, rep)
                elif method == "cp+sha256sum":
                    count = run_cp_sha256sum(src, dst)
                elif method == "reference":
                    count = run_reference(src, dst)
                else:
                    count = run_hash_only(src)
                seconds = time.perf_counter() - t0
                t1 = time.perf_counter()
                os.sync()
                sync_after = time.perf_counter() - t1
                if count != n_files:
                    raise SystemExit(f"{method}: {count} files, expected {n_files}")
                results[method]["seconds"].append(seconds)
                results[method]["sync_after"].append(sync_after)
                results[method]["cached"].append(cached)
                results[method]["load"].append(load)
                print(
                    f"  rep {rep} {method:<13} {seconds:8.2f} s  (+sync {sync_after:5.2f} s)"
                    f"  source in page cache {cached:6.1%}  load {load:.1f}",
                    flush=True,
                )
            if args.delete_each_rep:  # only when the disk is too small to keep them all
                for path in run_dir.glob(f"*-r{rep}*"):
                    _remove(path)
                for method in keeps:
                    _remove(run_dir / method / "data" / "bench" / f"r{rep}")
                os.sync()
    finally:
        for method in keeps.values():
            method.close()
    summary: dict[str, object] = {}
    for method, r in results.items():
        med = _median(r["seconds"])
        summary[method] = {
            "seconds": r["seconds"],
            "sync_after": r["sync_after"],
            "cached": r["cached"],
            "load_1min": r["load"],
            "median_s": med,
            "median_sync_after_s": _median(r["sync_after"]),
            "mb_per_s": n_bytes / 1e6 / med,
            "files_per_s": n_files / med,
        }
    return {"files": n_files, "bytes": n_bytes, "methods": summary}


def _ratio(res: dict[str, object], num: str, den: str) -> float | None:
    """t(num) / t(den): the throughput of *den* relative to *num*."""
    methods = res["methods"]
    assert isinstance(methods, dict)
    if num not in methods or den not in methods:
        return None
    return float(methods[num]["median_s"] / methods[den]["median_s"])


def _durable_ratio(res: dict[str, object]) -> float | None:
    """labkeep copy against the reference loop plus the sync that makes its copy durable."""
    methods = res["methods"]
    assert isinstance(methods, dict)
    if "reference" not in methods or "labkeep-copy" not in methods:
        return None
    ref = methods["reference"]
    return float(
        (ref["median_s"] + ref["median_sync_after_s"]) / methods["labkeep-copy"]["median_s"]
    )


def ratios(res: dict[str, object]) -> dict[str, float | None]:
    return {
        # throughput of labkeep relative to the limit (1.0 = as fast as the limit)
        "copy_vs_reference": _ratio(res, "reference", "labkeep-copy"),
        "link_vs_hash_only": _ratio(res, "hash-only", "labkeep-link"),
        "copy_vs_reference_plus_sync": _durable_ratio(res),
        # how many times faster than the seed workflow
        "copy_speedup_vs_cp_sha256sum": _ratio(res, "cp+sha256sum", "labkeep-copy"),
        "link_speedup_vs_cp_sha256sum": _ratio(res, "cp+sha256sum", "labkeep-link"),
    }


def print_table(name: str, res: dict[str, object]) -> None:
    methods = res["methods"]
    assert isinstance(methods, dict)
    n_files, n_bytes = int(res["files"]), int(res["bytes"])
    print(f"\n{name}: {n_files} files, {n_bytes / 1e9:.2f} GB (medians)")
    head = f"{'method':<14}{'s':>9}{'+sync s':>9}{'MB/s':>9}{'files/s':>10}"
    print(f"  {head}  cached  load  runs (s)")
    for method, m in methods.items():
        runs = " ".join(f"{s:.2f}" for s in m["seconds"])
        print(
            f"  {method:<14}{m['median_s']:9.2f}{m['median_sync_after_s']:9.2f}"
            f"{m['mb_per_s']:9.0f}{m['files_per_s']:10.0f}  {min(m['cached']):6.0%}"
            f"  {_median(m['load_1min']):4.1f}  {runs}"
        )
    r = ratios(res)
    labels = {
        "copy_vs_reference": "labkeep copy / reference loop (throughput)",
        "link_vs_hash_only": "labkeep link / hash-only (throughput)",
        "copy_vs_reference_plus_sync": "labkeep copy / (reference loop + its sync)",
        "copy_speedup_vs_cp_sha256sum": "labkeep copy speedup over cp + sha256sum",
        "link_speedup_vs_cp_sha256sum": "labkeep link speedup over cp + sha256sum",
    }
    for key, label in labels.items():
        if r[key] is not None:
            print(f"  {label:<46} {r[key]:6.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--small-files", type=int, default=10_000)
    p.add_argument("--small-min", type=int, default=16, help="KiB")
    p.add_argument("--small-max", type=int, default=256, help="KiB")
    p.add_argument("--tiny-files", type=int, default=20_000, help="for --sets ...,tiny")
    p.add_argument("--tiny-min", type=int, default=1, help="KiB")
    p.add_argument("--tiny-max", type=int, default=4, help="KiB")
    p.add_argument("--large-files", type=int, default=4)
    p.add_argument("--large-size", type=int, default=1024, help="MiB")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/labkeep-bench"))
    p.add_argument("--quick", action="store_true", help="1000 small files, 4 x 64 MiB")
    p.add_argument("--sets", default="small,large", help="small,large[,tiny]")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--durability", choices=("batch", "file"), help="override labkeep.toml")
    p.add_argument("--jobs", type=int, help="labkeep ingest jobs (default: its config)")
    p.add_argument("--keep-source", action="store_true", help="keep the generated sources")
    p.add_argument("--force", action="store_true", help="run even if disk space looks short")
    p.add_argument(
        "--delete-each-rep",
        action="store_true",
        help="delete a repetition's copies after it (for small disks; see BENCHMARKING.md)",
    )
    args = p.parse_args()
    if args.quick:
        args.small_files, args.large_files, args.large_size = 1000, 4, 64
        args.tiny_files = 2000
    sets = [s for s in args.sets.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    if unknown := (set(sets) - {"small", "large", "tiny"}) | (set(methods) - set(METHODS)):
        p.error(f"unknown: {sorted(unknown)}")

    workdir: Path = args.workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    info = machine_info(workdir)
    print("machine:", json.dumps(info, indent=2))

    avg_small = (args.small_min + args.small_max) / 2 * KiB
    size = {
        "small": args.small_files * avg_small,
        "tiny": args.tiny_files * (args.tiny_min + args.tiny_max) / 2 * KiB,
        "large": args.large_files * args.large_size * MiB,
    }
    # nothing is deleted before the end (creating files right after deleting many is slow
    # here), unless --delete-each-rep: then one repetition's copies of one set at a time
    copies = sum(m in COPYING for m in methods)
    if args.delete_each_rep:
        need = sum(size[s] for s in sets) + max(size[s] for s in sets) * copies
    else:
        need = sum(size[s] * (1 + copies * args.reps) for s in sets)
    free = shutil.disk_usage(workdir).free
    print(f"disk: needs about {need / 1e9:.1f} GB, {free / 1e9:.1f} GB free in {workdir}")
    if need > free - 5e9 and not args.force:
        raise SystemExit("not enough free space (keep 5 GB spare); use --force to run anyway")

    run_root = workdir / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    results: dict[str, object] = {}
    try:
        print("sources:")
        sources: dict[str, Path] = {}
        if "small" in sets:
            sources["small"] = workdir / "src-small"
            prepare_source(
                sources["small"],
                {"n": args.small_files, "min": args.small_min, "max": args.small_max},
                lambda: generate_small(
                    sources["small"], args.small_files, args.small_min, args.small_max
                ),
            )
        if "tiny" in sets:
            sources["tiny"] = workdir / "src-tiny"
            prepare_source(
                sources["tiny"],
                {"n": args.tiny_files, "min": args.tiny_min, "max": args.tiny_max},
                lambda: generate_small(
                    sources["tiny"], args.tiny_files, args.tiny_min, args.tiny_max, seed=3
                ),
            )
        if "large" in sets:
            sources["large"] = workdir / "src-large"
            prepare_source(
                sources["large"],
                {"n": args.large_files, "size_mib": args.large_size},
                lambda: generate_large(sources["large"], args.large_files, args.large_size),
            )
        for name in sets:
            res = bench_set(name, sources[name], run_root / name, methods, args.reps, args)
            res["ratios"] = ratios(res)
            results[name] = res
    finally:
        t0 = time.perf_counter()
        shutil.rmtree(run_root, ignore_errors=True)
        if not args.keep_source:
            for name in ("small", "large", "tiny"):
                shutil.rmtree(workdir / f"src-{name}", ignore_errors=True)
                (workdir / f"src-{name}.params.json").unlink(missing_ok=True)
        print(f"\ncleaned up {run_root} in {time.perf_counter() - t0:.1f} s")

    print(f"\ncommand: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
          f"{info['filesystem']} ({info['mount_options']})")  # fmt: skip
    print("cached: share of the source in the page cache before each repetition (the least)")
    print("load: median 1-minute load average before the repetitions (other users' work)")
    print("+sync: the `sync` right after the method (not in 's'); labkeep syncs inside 's'")
    for name in sets:
        print_table(name, results[name])

    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"ingest-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.json"
    payload = {"machine": info, "argv": sys.argv, "args": vars(args) | {"workdir": str(workdir)}}
    out.write_text(json.dumps(payload | {"results": results}, indent=2, default=str))
    print(f"\nresults written to {out}")


if __name__ == "__main__":
    main()
