"""Peak memory (RSS) of ingest, and of verify, against the number of files (issue 8, part 0).

    .venv/bin/python bench/memory.py --files 100000,1000000 --workdir /tmp/labkeep-mem
    .venv/bin/python bench/memory.py --files 100000 --what ingest,verify

For each file count a source folder of empty files (1,000 a folder; ``--size`` gives them
bytes) is generated once under the workdir and reused. Each measurement runs in its own
child process: a fresh keep (``Keep.init``), then ``keep.ingest(src, "bench/d",
keep_results=False)`` with an ``on_result`` that drops the records (as the CLI does after
printing them); with ``verify``, the same keep is then verified in a second child
(``keep.verify("bench/d", keep_results=False)``). The child's peak RSS comes from
``wait4`` (``ru_maxrss``); the RSS of a child that only imports labkeep and opens a keep
is shown for comparison. Nothing is timed against other methods: the times printed are
only there to show the run was complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PER_FOLDER = 1000

CHILD = """
import sys, time
from labkeep import Keep
what, src, root = sys.argv[1:4]
t0 = time.perf_counter()
if what == "import":
    Keep.init(root).close()
elif what == "ingest":
    with Keep.init(root) as keep:
        keep.create_project("bench")
        report = keep.ingest(src, "bench/d", keep_results=False, on_result=lambda r: None)
        assert not report.failed, report.counts()
        print(report.counts())
elif what == "verify":
    with Keep.open(root) as keep:
        report = keep.verify("bench/d", keep_results=False, on_result=lambda r: None)
        assert not report.failed, report.counts()
        print(report.counts())
print(f"seconds {time.perf_counter() - t0:.1f}")
"""


def make_source(folder: Path, files: int, size: int) -> None:
    stamp = folder.parent / f"{folder.name}.params.json"
    params = {"files": files, "size": size, "per_folder": PER_FOLDER}
    if folder.is_dir() and stamp.is_file() and json.loads(stamp.read_text()) == params:
        print(f"reusing {folder}")
        return
    if folder.exists():
        shutil.rmtree(folder)
    t0 = time.perf_counter()
    data = b"x" * size
    for start in range(0, files, PER_FOLDER):
        sub = folder / f"d{start // PER_FOLDER:05d}"
        sub.mkdir(parents=True)
        for i in range(start, min(files, start + PER_FOLDER)):
            fd = os.open(sub / f"f{i:07d}.dat", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            if data:
                os.write(fd, data)
            os.close(fd)
    stamp.write_text(json.dumps(params))
    print(f"generated {folder} ({files} files) in {time.perf_counter() - t0:.0f} s")


def run_child(what: str, src: Path, root: Path) -> tuple[float, float, str]:
    """Peak RSS (MiB) and wall time of one child; its output."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, what, str(src), str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{what} failed:\n{output}")
    # ru_maxrss is in KiB on Linux
    return usage.ru_maxrss / 1024, time.perf_counter() - t0, output.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--files", default="100000,1000000", help="file counts, comma-separated")
    p.add_argument("--size", type=int, default=0, help="bytes per file")
    p.add_argument("--what", default="ingest", help="ingest[,verify]")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/labkeep-mem"))
    p.add_argument("--keep-source", action="store_true", help="keep the generated sources")
    args = p.parse_args()
    counts = [int(n) for n in args.files.split(",") if n]
    what = [w for w in args.what.split(",") if w]
    if set(what) - {"ingest", "verify"}:
        p.error("--what takes ingest and/or verify")
    workdir: Path = args.workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    try:
        base_rss, _, _ = run_child("import", workdir, workdir / "keep-import")
        print(f"baseline (import labkeep, open a keep): {base_rss:.0f} MiB")
        for n in counts:
            src = workdir / f"src-{n}"
            make_source(src, n, args.size)
            root = workdir / f"keep-{n}-{time.strftime('%H%M%S')}"
            for step in ["ingest", *(w for w in what if w != "ingest")]:
                rss, seconds, output = run_child(step, src, root)
                line = output.splitlines()[0] if output else ""
                print(f"{step:7} {n:>9,} files: peak RSS {rss:6.0f} MiB  ({seconds:.0f} s; {line})")
                if step in what:
                    rows.append({"what": step, "files": n, "peak_rss_mib": round(rss, 1),
                                 "seconds": round(seconds, 1)})  # fmt: skip
            shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(workdir / "keep-import", ignore_errors=True)
        if not args.keep_source:
            for n in counts:
                shutil.rmtree(workdir / f"src-{n}", ignore_errors=True)
                (workdir / f"src-{n}.params.json").unlink(missing_ok=True)
    print(f"\ncommand: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"baseline RSS {base_rss:.0f} MiB")
    for row in rows:
        print(f"{row['what']:7} {row['files']:>9,} files  peak RSS {row['peak_rss_mib']:>7} MiB")
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"memory-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"argv": sys.argv, "baseline_mib": base_rss, "rows": rows}, indent=2))
    print(f"results written to {out}")


if __name__ == "__main__":
    main()
