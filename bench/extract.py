"""Metadata extraction throughput on small OME-TIFFs (issue 13; target >= 200 files/s).

    PYTHONPATH=src python bench/extract.py [--files 1000] [--repeat 3]

Makes N small OME-TIFFs (2 channels x 3 planes of 64 x 80 uint16, ~63 KB, with OME-XML
naming the instrument, objective and channels), then measures, medians of --repeat:

- plugin: the TIFF plugin alone in this process (open, check, parse OME-XML);
- isolated: the same files through the child process that extraction jobs use
  (:class:`labkeep.extract.runner.Isolated`: one JSON request and answer per file),
  without and with thumbnails (a plane read, scaled and written as PNG);
- job: ``keep.extract(P/D)`` on an ingested dataset of the N files, catalog rows
  included (SQLite), the way the extract job runs it.

Files are in the page cache (just written). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import imaging_samples as samples


def _make(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        path = folder / f"cell-{i:05d}.ome.tif"
        samples.ome_tiff(path, seed=i)
        paths.append(path)
    return paths


def _rate(n: int, seconds: list[float]) -> str:
    best = statistics.median(seconds)
    return f"{n / best:,.0f} files/s ({best:.2f} s)"


def _cpu(pid: int | None = None) -> float:
    """CPU seconds (user + system) of this process, plus those of *pid* (a child)."""
    total = time.process_time()
    if pid is not None:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from labkeep import Keep
    from labkeep.extract.runner import Isolated
    from labkeep.extract.tiff import TiffExtractor

    n = args.files
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        paths = _make(base / "src", n)
        plugin = TiffExtractor()
        keys = ("plugin", "isolated", "thumbs", "job")
        results: dict[str, list[float]] = {k: [] for k in keys}
        cpu: dict[str, list[float]] = {k: [] for k in keys}
        for r in range(args.repeat):
            t, c = time.perf_counter(), _cpu()
            for p in paths:
                fields = plugin.extract(str(p), p.name)
            results["plugin"].append(time.perf_counter() - t)
            cpu["plugin"].append(_cpu() - c)
            assert fields["objective"]["magnification"] == 63.0
            with Isolated() as child:
                child.extract(str(paths[0]), paths[0].name)  # start the child first
                pid = child._proc.pid if child._proc else None
                t, c = time.perf_counter(), _cpu(pid)
                for p in paths:
                    answer = child.extract(str(p), p.name)
                results["isolated"].append(time.perf_counter() - t)
                cpu["isolated"].append(_cpu(pid) - c)
                assert answer["status"] == "ok"
                t, c = time.perf_counter(), _cpu(pid)
                for i, p in enumerate(paths):
                    answer = child.extract(
                        str(p), p.name, thumb=str(base / f"thumbs{r}" / f"{i}.png")
                    )
                results["thumbs"].append(time.perf_counter() - t)
                cpu["thumbs"].append(_cpu(pid) - c)
                assert answer["preview"] == "ok"
            keep = Keep.init(base / f"keep{r}")
            try:
                keep.config.extract = type(keep.config.extract)(after_ingest=False)
                keep.create_project("bench")
                keep.ingest(base / "src", "bench/s1", keep_results=False)
                t = time.perf_counter()
                report = keep.extract("bench/s1", keep_results=False)
                results["job"].append(time.perf_counter() - t)
                assert report.counts() == {"ok": n}, report.counts()
            finally:
                keep.close()
    print(
        f"{n} OME-TIFFs of ~63 KB, medians of {args.repeat}; load average before: "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n"
    )
    print("| what | wall clock | per CPU second |\n| --- | --- | --- |")
    labels = {
        "plugin": "TIFF plugin in process",
        "isolated": "through the extraction child process",
        "thumbs": "child process, with 256 px PNG thumbnails",
        "job": "keep.extract (the job: child, thumbnails, catalog rows, SQLite)",
    }
    for key, label in labels.items():
        per_cpu = f"{n / statistics.median(cpu[key]):,.0f} files/s" if cpu[key] else "-"
        print(f"| {label} | {_rate(n, results[key])} | {per_cpu} |")


if __name__ == "__main__":
    main()
