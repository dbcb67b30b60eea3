"""Web server benchmark: listing, landing pages and downloads over real HTTP on loopback.

    .venv/bin/python bench/web.py --workdir /tmp/labkeep-bench-web            # full size
    .venv/bin/python bench/web.py --workdir /tmp/labkeep-bench-web --quick    # smoke run

A keep is built once in WORKDIR (kept between runs: building it is the slow part) with
``bench/many``, a dataset of --files tiny files (100,000 by default, ingested from a
temporary folder), and ``bench/big``, one --big-mib file (1 GiB by default, hard-linked
in). ``uvicorn --workers W`` serves it from a subprocess on 127.0.0.1, and this script
measures, as a client on the same machine:

- listing: the whole dataset page by page through /api/v1/datasets/bench/many/entries
  (limit=500, following next_after), one client: time per page p50/p95 and total;
- landing pages: the dataset page /p/bench/many and a file page /p/bench/many/-/PATH
  (signed-in session cookie, as a browser), and their API equivalents (bearer token),
  --clients concurrent clients with keep-alive, --requests requests in all: p50/p95;
- downloads: one client fetching the 1 GiB file (data in the page cache, a warm-up
  download first), and --clients clients fetching it at once: MB/s.

Targets (from the issue): p95 < 200 ms for a listing page and a landing page; a single
download >= 500 MB/s. Everything is measured --rounds times against the same server and
the table shows the median of each number; every round is in the JSON written to
bench/results/. Shared machines are noisy: the load average at start and end is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from labkeep import Keep

HERE = Path(__file__).resolve().parent
MiB = 1 << 20
PROJECT = "bench"
MANY = "many"
BIG = "big"
PAGE = 500
FILES_PER_DIR = 500
READ_CHUNK = 4 * MiB
PASSWORD = "benchmark password"


# -- machine ----------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    load = os.getloadavg()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / (1 << 30), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_at_start": [round(x, 2) for x in load],
    }


# -- the keep ---------------------------------------------------------------------------
@dataclass
class Bench:
    root: Path
    files: int
    big_bytes: int
    token: str = ""
    cookie: str = ""
    sample: str = ""  # a file of bench/many, e.g. raw/d0042/f021000.dat
    build: dict[str, float] = field(default_factory=dict)


def _make_many(folder: Path, count: int) -> None:
    for i in range(count):
        sub = folder / f"d{i // FILES_PER_DIR:04d}"
        if i % FILES_PER_DIR == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:06d}.dat").write_bytes(b"%06d tiny file\n" % i)


def _make_big(path: Path, size: int) -> None:
    block = os.urandom(16 * MiB)
    with open(path, "wb") as out:
        left = size
        while left > 0:
            out.write(block[: min(left, len(block))])
            left -= len(block)


def build_keep(workdir: Path, files: int, big_mib: int) -> Bench:
    """The keep for these sizes, built once and reused by later runs."""
    root = workdir / f"keep-{files}-{big_mib}m"
    bench = Bench(root, files, big_mib * MiB)
    if not (root / "labkeep.toml").exists():
        if root.exists():
            shutil.rmtree(root)  # an interrupted build
        src = workdir / f"src-{files}"
        big_src = workdir / f"big-{big_mib}m"
        for folder in (src, big_src):
            if folder.exists():
                shutil.rmtree(folder)
        t0 = time.perf_counter()
        _make_many(src, files)
        big_src.mkdir(parents=True)
        _make_big(big_src / "big.bin", big_mib * MiB)
        t1 = time.perf_counter()
        with Keep.init(root) as keep:
            keep.create_project(PROJECT)
            keep.add_user("reader", password=PASSWORD)
            keep.grant("reader", "read", PROJECT)
            report = keep.ingest(src, f"{PROJECT}/{MANY}")
            t2 = time.perf_counter()
            assert not report.failed, report.summary()
            report = keep.ingest(big_src, f"{PROJECT}/{BIG}", link=True)
            assert not report.failed, report.summary()
        t3 = time.perf_counter()
        bench.build = {
            "generate_s": round(t1 - t0, 1),
            "ingest_many_s": round(t2 - t1, 1),
            "ingest_big_link_s": round(t3 - t2, 1),
        }
        shutil.rmtree(src)
        print(f"built {root}: {bench.build}", file=sys.stderr)
    with Keep.open(root) as keep:
        reader = keep.acting_as(keep.principal_for("reader"))
        bench.token, _ = reader.create_token("bench", expires="1d", read_only=True)
        bench.cookie, _csrf, _ = keep.login("reader", PASSWORD)
        middle = files // 2
        bench.sample = f"raw/d{middle // FILES_PER_DIR:04d}/f{middle:06d}.dat"
    return bench


# -- the server -------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(root: Path, workers: int) -> Iterator[str]:
    """``uvicorn --workers W`` on the keep, in a subprocess; yields its base URL."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABKEEP_")}
    env["LABKEEP_ROOT"] = str(root)
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "labkeep.web:app_from_env",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start")
            time.sleep(0.1)
        if workers > 1:
            time.sleep(1.0)  # let every worker finish importing
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# -- measurements -------------------------------------------------------------------------
def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _ms(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(_pct(values, 50) * 1000, 1),
        "p95_ms": round(_pct(values, 95) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
        "mean_ms": round(statistics.fmean(values) * 1000, 1),
    }


def bench_listing(url: str, bench: Bench) -> dict[str, Any]:
    """Every page of bench/many, following next_after, as one client."""
    headers = {"Authorization": f"Bearer {bench.token}"}
    times: list[float] = []
    seen = 0
    after: str | None = None
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        client.get(f"/api/v1/datasets/{PROJECT}/{MANY}/entries", params={"limit": 1})
        start = time.perf_counter()
        while True:
            params: dict[str, Any] = {"limit": PAGE}
            if after is not None:
                params["after"] = after
            t = time.perf_counter()
            response = client.get(f"/api/v1/datasets/{PROJECT}/{MANY}/entries", params=params)
            response.raise_for_status()
            page = response.json()
            times.append(time.perf_counter() - t)
            seen += len(page["items"])
            after = page["next_after"]
            if after is None:
                break
        total = time.perf_counter() - start
    assert seen == bench.files, (seen, bench.files)
    return {**_ms(times), "pages": len(times), "entries": seen, "total_s": round(total, 2)}


def _concurrent(
    url: str, paths: list[str], clients: int, requests: int, headers: dict[str, str]
) -> dict[str, Any]:
    """*requests* GETs spread over *clients* concurrent keep-alive connections.

    One asyncio loop drives them all: a client of 20 Python threads spends more time
    fighting over the GIL than the server spends answering small requests.
    """
    per_client = max(1, requests // clients)

    async def run() -> tuple[list[float], list[str], float]:
        latencies: list[float] = []
        errors: list[str] = []
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

        async def one(n: int, client: httpx.AsyncClient, start: asyncio.Event) -> None:
            (await client.get(paths[0])).raise_for_status()  # warm: connection, caches
            await start.wait()
            for i in range(per_client):
                path = paths[(n + i) % len(paths)]
                t = time.perf_counter()
                response = await client.get(path)
                latencies.append(time.perf_counter() - t)
                if response.status_code != 200:
                    errors.append(f"{path}: {response.status_code}")

        start = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            pool = [
                await stack.enter_async_context(
                    httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits)
                )
                for _ in range(clients)
            ]
            tasks = [asyncio.create_task(one(n, c, start)) for n, c in enumerate(pool)]
            await asyncio.sleep(0.5)  # every connection open and warm
            t0 = time.perf_counter()
            start.set()
            await asyncio.gather(*tasks)
            wall = time.perf_counter() - t0
        return latencies, errors, wall

    latencies, errors, wall = asyncio.run(run())
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[:3]}")
    return {**_ms(latencies), "clients": clients, "req_per_s": round(len(latencies) / wall, 1)}


def bench_landing(url: str, bench: Bench, clients: int, requests: int) -> dict[str, Any]:
    session = {"Cookie": f"labkeep_session={bench.cookie}"}
    token = {"Authorization": f"Bearer {bench.token}"}
    pages = {
        # the floor: a route that does almost nothing (one catalog query)
        "health check": ("/healthz", {}),
        "dataset page": (f"/p/{PROJECT}/{MANY}", session),
        "file page": (f"/p/{PROJECT}/{MANY}/-/{bench.sample}", session),
        "dataset API": (f"/api/v1/datasets/{PROJECT}/{MANY}", token),
        # the same with the session cookie: shows what the token's bookkeeping costs
        "dataset API, session cookie": (f"/api/v1/datasets/{PROJECT}/{MANY}", session),
        "file API (entries?path=)": (
            f"/api/v1/datasets/{PROJECT}/{MANY}/entries?path={bench.sample}",
            token,
        ),
        "listing page, concurrent": (
            f"/api/v1/datasets/{PROJECT}/{MANY}/entries?limit={PAGE}&after={bench.sample}",
            token,
        ),
    }
    results: dict[str, Any] = {}
    with httpx.Client(base_url=url, timeout=60) as probe:
        for name, (path, headers) in pages.items():
            status = probe.get(path, headers=headers).status_code
            if status != 200:
                results[name] = {"status": status, "note": "not served: skipped"}
                continue
            results[name] = _concurrent(url, [path], clients, requests, headers)
    return results


def _download(port: int, path: str, token: str) -> tuple[int, float]:
    """One GET read to the end with readinto into one buffer: (bytes, seconds)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    buffer = bytearray(READ_CHUNK)
    view = memoryview(buffer)
    try:
        start = time.perf_counter()
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {response.read()[:200]!r}")
        got = 0
        while n := response.readinto(view):
            got += n
        return got, time.perf_counter() - start
    finally:
        conn.close()


def bench_downloads(url: str, bench: Bench, clients: int, repeat: int) -> dict[str, Any]:
    port = int(url.rsplit(":", 1)[1])
    path = f"/api/v1/files/{PROJECT}/{BIG}/raw/big.bin"
    size, _ = _download(port, path, bench.token)  # warm-up: the file into the page cache
    assert size == bench.big_bytes, (size, bench.big_bytes)
    singles = []
    for _ in range(repeat):
        got, seconds = _download(port, path, bench.token)
        singles.append(got / seconds / 1e6)
    curl = None
    if shutil.which("curl"):
        auth = f"Authorization: Bearer {bench.token}"
        out = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{speed_download}", "-H", auth, url + path],
            capture_output=True,
            text=True,
            check=True,
        )
        curl = round(float(out.stdout) / 1e6, 1)
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def one() -> None:
        barrier.wait()
        result = _download(port, path, bench.token)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=one) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    total = sum(got for got, _ in results)
    per_client = [got / seconds / 1e6 for got, seconds in results]
    return {
        "size_mib": round(bench.big_bytes / MiB),
        "single_mb_s": round(statistics.median(singles), 1),
        "single_runs_mb_s": [round(x, 1) for x in singles],
        "single_curl_mb_s": curl,
        "concurrent_clients": clients,
        "concurrent_total_mb_s": round(total / wall / 1e6, 1),
        "concurrent_per_client_p50_mb_s": round(statistics.median(per_client), 1),
        "concurrent_wall_s": round(wall, 1),
    }


# -- report -------------------------------------------------------------------------------
def median_of(rounds: list[Any]) -> Any:
    """The median of each number across rounds (same-shaped dicts); other values as in
    the first round."""
    first = rounds[0]
    if isinstance(first, dict):
        return {key: median_of([r[key] for r in rounds]) for key in first}
    if isinstance(first, int | float) and not isinstance(first, bool):
        value = statistics.median(rounds)
        return round(value, 1) if isinstance(value, float) else value
    return first


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []

    def target(ok: bool) -> str:
        return "met" if ok else "MISSED"

    listing = results["listing"]
    rows.append(
        (
            f"listing, {listing['pages']} pages of {PAGE} (1 client)",
            f"p50 {listing['p50_ms']} ms, p95 {listing['p95_ms']} ms",
            f"total {listing['total_s']} s",
            "p95 < 200 ms: " + target(listing["p95_ms"] < 200),
        )
    )
    for name, value in results["landing"].items():
        if "p95_ms" not in value:
            rows.append((name, f"HTTP {value['status']}", value["note"], "-"))
            continue
        goal = "p95 < 200 ms: " + target(value["p95_ms"] < 200) if "check" not in name else "-"
        rows.append(
            (
                f"{name} ({value['clients']} clients)",
                f"p50 {value['p50_ms']} ms, p95 {value['p95_ms']} ms",
                f"{value['req_per_s']} req/s",
                goal,
            )
        )
    dl = results["downloads"]
    rows.append(
        (
            f"download {dl['size_mib']} MiB (1 client)",
            f"{dl['single_mb_s']} MB/s",
            f"curl: {dl['single_curl_mb_s']} MB/s",
            ">= 500 MB/s: " + target(dl["single_mb_s"] >= 500),
        )
    )
    rows.append(
        (
            f"download {dl['size_mib']} MiB ({dl['concurrent_clients']} clients)",
            f"{dl['concurrent_total_mb_s']} MB/s in all",
            f"{dl['concurrent_per_client_p50_mb_s']} MB/s each (p50)",
            "-",
        )
    )
    header = ("measurement", "latency / rate", "also", "target")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]

    def line(r: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    out = [line(header), "| " + " | ".join("-" * w for w in widths) + " |"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/labkeep-bench-web"))
    parser.add_argument("--files", type=int, default=100_000, help="files in bench/many")
    parser.add_argument("--big-mib", type=int, default=1024, help="size of the big file")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=400, help="per landing page")
    parser.add_argument("--repeat", type=int, default=3, help="single downloads")
    parser.add_argument("--rounds", type=int, default=3, help="medians of this many rounds")
    parser.add_argument("--quick", action="store_true", help="2,000 files, 64 MiB, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.files, args.big_mib, args.requests, args.repeat, args.rounds = 2000, 64, 100, 1, 1
    args.workdir.mkdir(parents=True, exist_ok=True)
    bench = build_keep(args.workdir, args.files, args.big_mib)
    info = machine()
    results: dict[str, Any] = {
        "machine": info,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "workers": args.workers,
        "files": args.files,
        "build": bench.build,
    }
    with server(bench.root, args.workers) as url:
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("listing", lambda: bench_listing(url, bench)),
            ("landing", lambda: bench_landing(url, bench, args.clients, args.requests)),
            ("downloads", lambda: bench_downloads(url, bench, args.clients, args.repeat)),
        ]
        rounds: list[dict[str, Any]] = []
        for n in range(args.rounds):
            measured: dict[str, Any] = {}
            for name, step in steps:
                print(f"round {n + 1}/{args.rounds}: {name}...", file=sys.stderr)
                measured[name] = step()
            rounds.append(measured)
    results["rounds"] = rounds
    for name, _ in steps:
        results[name] = median_of([r[name] for r in rounds])
    results["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(table(results))
    out = HERE / "results" / time.strftime("web-%Y%m%d-%H%M%S.json")
    if args.quick:
        out = out.with_name(out.stem + "-quick.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {out.relative_to(HERE.parent)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
