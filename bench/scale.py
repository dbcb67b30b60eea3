"""Scale: a keep of 10^6 entries on SQLite (10^7 on PostgreSQL with --pg), then the
pages people open, with 1 and 20 concurrent clients.

    .venv/bin/python bench/scale.py --workdir /tmp/labkeep-scale                 # 10^6, SQLite
    .venv/bin/python bench/scale.py --workdir /tmp/labkeep-scale --pg auto       # 10^7, PostgreSQL
    .venv/bin/python bench/scale.py ... --files 20000 --requests 100             # a quick run

Building (once per size; the keep is reused by later runs):

- SQLite: through the real ingest path. bench/web.py's ``build_keep`` writes --files
  tiny files (500 per folder) and ``Keep.ingest`` copies, hashes and catalogues them
  (hours of work for a person, ~10 minutes here);
- PostgreSQL (--pg URL, or ``auto``: a throwaway server from tests/pgserver.py), or
  SQLite with --bulk: a bulk loader, since ingesting 10^7 files would take hours. It
  inserts the same rows ingest would (one committed version, entries
  ``raw/dNNNNN/fNNNNNNNN.dat`` with sizes, SHA-256 and mtimes) in batches of 50,000
  (SQLite) or with ``COPY`` (PostgreSQL: the search trigger is off during the load, and
  the search documents and their GIN indexes are built after it, set-wise), then
  ANALYZE. Pages read only the catalog, so the tree holds no files for it.

Measured against ``uvicorn --workers 2`` (bench/web.py's server), --requests per page
and client count, after a warm-up:

- ``ls page of 500``: ``GET /api/v1/datasets/P/D/entries?limit=500&after=<middle>``;
- ``dataset page`` (``/p/P/D``), ``file page`` (``/p/P/D/-/PATH``), ``dashboard``
  (``/``): HTML for a signed-in reader;
- ``labkeep status``: wall time of the command (a new process each time, --rounds).

Targets (2 cores): single-client p95 < 100 ms for the listing and landing pages; status
< 1 s. Results go to bench/results/scale-*.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import web  # noqa: E402  (bench/web.py: the keep builder, the server, the load driver)

PG_FILES_PER_DIR = 500


def build_bulk(workdir: Path, url: str | None, files: int) -> web.Bench:
    """A keep (on PostgreSQL at *url*, else SQLite) whose dataset bench/many has *files*
    entries, written by the bulk loader."""
    from sqlalchemy import insert, select, text

    from labkeep import Keep
    from labkeep.catalog import Dataset, Entry, Version
    from labkeep.clock import utcnow

    root = workdir / f"keep-{'pg' if url else 'bulk'}-{files}"
    bench = web.Bench(root, files, 0)
    if not (root / "ready").exists():
        t0 = time.perf_counter()
        with Keep.init(root, catalog_url=url) as keep:
            keep.create_project(web.PROJECT)
            keep.add_user("reader", password=web.PASSWORD)
            keep.grant("reader", "read", web.PROJECT)
            keep.create_dataset(f"{web.PROJECT}/{web.MANY}")
            with keep.catalog.write() as session:
                dataset = session.execute(
                    select(Dataset).where(Dataset.name == web.MANY)
                ).scalar_one()
                now = utcnow()
                session.add(
                    Version(dataset_id=dataset.id, number=1, state="committed", kind="ingest",
                            author="bench", message="bulk load", created_at=now,
                            committed_at=now, n_files=files, n_bytes=0)
                )  # fmt: skip
                dataset.head_version = 1
                dataset_id = dataset.id
            total = _pg_copy_entries(keep, dataset_id, files) if url else 0
            batch: list[dict[str, Any]] = []
            for i in range(0 if url else files):
                size = 16 + i % 4096
                total += size
                batch.append({
                    "dataset_id": dataset_id, "valid_from": 1,
                    "path": _pg_path(i), "size": size,
                    "sha256": hashlib.sha256(b"%d" % i).digest(),
                    "mtime_ns": 1_700_000_000_000_000_000 + i,
                })  # fmt: skip
                if len(batch) == 50_000 or i == files - 1:  # (SQLite)
                    with keep.catalog.write() as session:
                        session.execute(insert(Entry), batch)
                    batch = []
                    if i % 1_000_000 < 50_000:
                        print(f"  {i + 1:,} entries", file=sys.stderr)
            with keep.catalog.write() as session:
                session.execute(
                    Version.__table__.update()
                    .where(Version.dataset_id == dataset_id)
                    .values(n_bytes=total)
                )
            with keep.catalog.write() as session:
                session.execute(text("ANALYZE"))
        bench.build = {"bulk_load_s": round(time.perf_counter() - t0, 1)}
        (root / "ready").write_text(json.dumps(bench.build))
    else:
        bench.build = json.loads((root / "ready").read_text())
    from labkeep import Keep as _Keep

    with _Keep.open(root) as keep:
        reader = keep.acting_as(keep.principal_for("reader"))
        bench.token, _ = reader.create_token("bench", expires="1d", read_only=True)
        bench.cookie, _csrf, _ = keep.login("reader", web.PASSWORD)
        bench.sample = _pg_path(files // 2)
    return bench


#: the search index of migration 0010 on PostgreSQL: built once after the load, not row by
#: row by its trigger (what `labkeep search reindex` does; the pages measured here do not
#: search)
_PG_SEARCH_INDEXES = {
    "ix_search_docs_tsv": "USING gin (tsv)",
    "ix_search_docs_path_trgm": "USING gin (path gin_trgm_ops)",
    "ix_search_docs_name_trgm": "USING gin (name gin_trgm_ops)",
}


def _pg_copy_entries(keep: Any, dataset_id: int, files: int) -> int:
    """The bulk loader for PostgreSQL (10^7 rows): COPY, the search trigger off during
    the load, the file documents and the search indexes built set-wise afterwards."""
    from sqlalchemy import text

    total = 0
    with keep.catalog.engine.begin() as conn:
        conn.execute(text("ALTER TABLE entries DISABLE TRIGGER entries_search"))
        for name in _PG_SEARCH_INDEXES:
            conn.execute(text(f"DROP INDEX {name}"))
        raw = conn.connection.dbapi_connection
        with (
            raw.cursor() as cursor,
            cursor.copy(
                "COPY entries (dataset_id, valid_from, path, size, sha256, mtime_ns) FROM STDIN"
            ) as copy,
        ):
            for i in range(files):
                size = 16 + i % 4096
                total += size
                copy.write_row((dataset_id, 1, _pg_path(i), size,
                                hashlib.sha256(b"%d" % i).digest(),
                                1_700_000_000_000_000_000 + i))  # fmt: skip
                if i % 1_000_000 == 0:
                    print(f"  {i + 1:,} entries", file=sys.stderr, flush=True)
    with keep.catalog.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO search_docs (kind, project_id, dataset_id, sample_id, path, name,"
            " text, meta, day) SELECT 'file', d.project_id, e.dataset_id, 0, e.path,"
            " regexp_replace(e.path, '^.*/', ''), e.path, '', to_char(to_timestamp("
            "e.mtime_ns / 1000000000) AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM entries e"
            " JOIN datasets d ON d.id = e.dataset_id WHERE e.valid_to IS NULL"
            " ON CONFLICT DO NOTHING"
        ))  # fmt: skip
        print("  search documents written", file=sys.stderr, flush=True)
        conn.execute(text("SET maintenance_work_mem = '512MB'"))
        for name, how in _PG_SEARCH_INDEXES.items():
            conn.execute(text(f"CREATE INDEX {name} ON search_docs {how}"))
        conn.execute(text("ALTER TABLE entries ENABLE TRIGGER entries_search"))
    return total


def _pg_path(i: int) -> str:
    return f"raw/d{i // PG_FILES_PER_DIR:05d}/f{i:08d}.dat"


def pages(bench: web.Bench) -> dict[str, tuple[str, dict[str, str]]]:
    session = {"Cookie": f"labkeep_session={bench.cookie}"}
    token = {"Authorization": f"Bearer {bench.token}"}
    p, d = web.PROJECT, web.MANY
    return {
        "ls page of 500": (
            f"/api/v1/datasets/{p}/{d}/entries?limit={web.PAGE}&after={bench.sample}",
            token,
        ),
        "dataset page": (f"/p/{p}/{d}", session),
        "file page": (f"/p/{p}/{d}/-/{bench.sample}", session),
        "dashboard": ("/", session),
    }


def measure_pages(url: str, bench: web.Bench, requests: int) -> dict[str, Any]:
    import httpx

    results: dict[str, Any] = {}
    with httpx.Client(base_url=url, timeout=120) as probe:
        for name, (path, headers) in pages(bench).items():
            response = probe.get(path, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"{name}: {path} answered {response.status_code}")
            results[name] = {
                str(clients): web._concurrent(url, [path], clients, requests, headers)
                for clients in (1, 20)
            }
    return results


def measure_status(root: Path, rounds: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABKEEP_")}
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "labkeep", "status", "--json", "--root", str(root)],
            env=env,
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - t)
    return {
        "n": rounds,
        "median_s": round(statistics.median(times), 3),
        "max_s": round(max(times), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/labkeep-scale"))
    parser.add_argument("--files", type=int, default=None)
    parser.add_argument("--pg", default=None, help="a PostgreSQL URL, or 'auto'")
    parser.add_argument(
        "--bulk", action="store_true", help="SQLite, built by the bulk loader (not ingest)"
    )
    parser.add_argument("--requests", type=int, default=400, help="per page and client count")
    parser.add_argument("--rounds", type=int, default=5, help="labkeep status runs")
    parser.add_argument("--server-workers", type=int, default=2)
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    pg = None
    try:
        if args.pg:
            files = args.files or 10_000_000
            url = args.pg
            if url == "auto":
                sys.path.insert(0, str(HERE.parent))
                from tests.pgserver import PostgresServer

                pg = PostgresServer(durable=True)
                pg.start()
                url = pg.create_database()
            bench = build_bulk(args.workdir, url, files)
            engine = "postgresql"
        elif args.bulk:
            files = args.files or 1_000_000
            bench = build_bulk(args.workdir, None, files)
            engine = "sqlite-bulk"
        else:
            files = args.files or 1_000_000
            bench = web.build_keep(args.workdir, files, 1)
            engine = "sqlite"
        with web.server(bench.root, args.server_workers) as url_:
            results = measure_pages(url_, bench, args.requests)
        results["labkeep status"] = measure_status(bench.root, args.rounds)
    finally:
        if pg is not None:
            pg.stop()
    record = {
        "engine": engine,
        "files": files,
        "build": bench.build,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "results": results,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = HERE / "results" / f"scale-{engine}-{files}-{int(time.time())}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(table(record))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def table(record: dict[str, Any]) -> str:
    lines = [
        f"{record['engine']}, {record['files']:,} entries; build {record['build']}",
        "| page | clients | p50 ms | p95 ms | req/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, by_clients in record["results"].items():
        if name == "labkeep status":
            continue
        for clients, r in by_clients.items():
            lines.append(
                f"| {name} | {clients} | {r['p50_ms']} | {r['p95_ms']} | {r['req_per_s']} |"
            )
    status = record["results"]["labkeep status"]
    lines.append(f"`labkeep status`: median {status['median_s']} s, max {status['max_s']} s")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
