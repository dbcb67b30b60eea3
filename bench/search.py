"""Search on a keep of a million files: p50/p95 of a name, a metadata value and a combined
filter, one client and 20 clients, on SQLite and PostgreSQL.

    nice .venv/bin/python bench/search.py --workdir /tmp/labkeep-bench-search            # SQLite
    nice .venv/bin/python bench/search.py --workdir /tmp/labkeep-bench-search --postgresql
    ... --postgresql-url URL   # measure again on a server that holds WORKDIR's keep
    ... --files 20000 --rounds 10     # a quick run

The keep is built once per engine in WORKDIR and reused: 5 groups with 10 projects each,
1,000 session datasets of --files/1000 files. Entries are bulk-inserted straight into the
catalog in transactions of 10,000 rows (ingesting a million real files takes an hour
here); the search index is NOT bulk-loaded: the triggers of migration 0010 write it, row
by row, as they do for ingest and save, so the build time includes the index's cost.
Each dataset gets key-values through ``Keep.set_values`` (sample=mouse-N, instrument,
operator) and is linked to its sample (on SQLite the build runs with synchronous=OFF:
thousands of small transactions; the measured searches write nothing); 2 % of the files
get extracted fields through ``index_file_fields`` (objective, channel). File mtimes
spread over 2026.

Queries, as a member of one group (who sees a fifth of the keep: the access check runs
inside each query) and as a site admin:

- name: ``cell-0421337`` (one file's name);
- metadata value: ``mouse-42`` (a sample: its datasets and the sample);
- combined: ``mouse-42 objective:63x date:2026-03`` (the 63x files of mouse 42's
  datasets modified in March).

One client runs --rounds of each in turn; 20 clients are 20 processes each running
--rounds / 2 of each. Latencies are of ``Keep.search`` (a page of 20 and the count).
Results go to bench/results/search-*.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
GROUPS, PROJECTS_PER_GROUP, DATASETS = 5, 10, 1000
QUERIES = {
    "name": "cell-0421337",
    "metadata value": "mouse-42",
    "combined": "mouse-42 objective:63x date:2026-03",
}
EPOCH_2026 = 1_767_225_600  # 2026-01-01T00:00:00Z


def _dataset_name(d: int) -> str:
    return f"s{d:04d}"


def _project_of(d: int) -> str:
    return f"proj-{d % (GROUPS * PROJECTS_PER_GROUP):02d}"


def build(root: Path, files: int, catalog_url: str | None) -> dict[str, Any]:
    """The keep (built once; its ``ready`` file holds the build's facts)."""
    ready = root / "ready"
    if ready.exists():
        return dict(json.loads(ready.read_text()))
    from sqlalchemy import insert, select

    from labkeep import Keep
    from labkeep.catalog import Dataset, Entry, Project, Version
    from labkeep.clock import utcnow
    from labkeep.ops.search_index import index_file_fields

    started = time.monotonic()
    per = files // DATASETS
    rng = random.Random(13)
    with Keep.init(root, catalog_url=catalog_url) as keep:
        if keep.catalog.dialect == "sqlite":
            # the build only: no fsync per transaction (thousands of small ones below)
            from sqlalchemy import event

            keep.catalog.engine.dispose()
            event.listen(
                keep.catalog.engine,
                "connect",
                lambda conn, _rec: conn.execute("PRAGMA synchronous=OFF"),
            )
        keep.add_user("member", password="bench password 1")
        for g in range(GROUPS):
            keep.create_group(f"lab-{g}")
        keep.set_member("lab-0", "member", "member")
        for p in range(GROUPS * PROJECTS_PER_GROUP):
            keep.create_project(f"proj-{p:02d}", title=f"Screen {p}", group=f"lab-{p % GROUPS}")
        for s in range(300):
            genotype = rng.choice(["WT", "KO"])
            keep.add_sample(f"mouse-{s}", type="mouse", attrs={"genotype": genotype})
        now = utcnow()
        inserted = time.monotonic()
        with keep.catalog.write() as session:
            ids = {
                str(n): int(i) for n, i in session.execute(select(Project.name, Project.id)).all()
            }
            for d in range(DATASETS):
                session.add(
                    Dataset(project_id=ids[_project_of(d)], name=_dataset_name(d), kind="session",
                            title=f"Confocal session {d}", created_at=now, created_by="bench",
                            head_version=1, sealed=d % 3 == 0)
                )  # fmt: skip
        dataset_ids: dict[int, int] = {}
        with keep.catalog.read() as session:
            for name, did in session.execute(select(Dataset.name, Dataset.id)).all():
                dataset_ids[int(str(name)[1:])] = int(did)
        batch: list[dict[str, Any]] = []
        n = 0
        for d in range(DATASETS):
            for f in range(per):
                batch.append({
                    "dataset_id": dataset_ids[d], "valid_from": 1,
                    "path": f"raw/tile{f // 100:02d}/cell-{n:07d}.czi", "size": 1000 + f,
                    "sha256": hashlib.sha256(b"%d" % n).digest(),
                    "mtime_ns": (EPOCH_2026 + rng.randrange(365 * 86400)) * 10**9,
                })  # fmt: skip
                n += 1
                if len(batch) == 10000:
                    with keep.catalog.write() as session:
                        session.execute(insert(Entry), batch)
                    batch = []
        if batch:
            with keep.catalog.write() as session:
                session.execute(insert(Entry), batch)
        with keep.catalog.write() as session:
            for d in range(DATASETS):
                session.add(
                    Version(dataset_id=dataset_ids[d], number=1, state="committed", kind="ingest",
                            author="bench", message="synthetic", created_at=now, committed_at=now,
                            n_files=per, n_bytes=0)
                )  # fmt: skip
        entries_s = time.monotonic() - inserted
        for d in range(DATASETS):
            address = f"{_project_of(d)}/{_dataset_name(d)}"
            sample = f"mouse-{d % 300}"
            keep.set_values(
                address,
                {"sample": sample, "instrument": rng.choice(["LSM 980", "SP8", "Ti2"]),
                 "operator": rng.choice(["ana", "ben", "chen"])},
            )  # fmt: skip
            keep.link_sample(address, sample)
        extracted = 0
        with keep.catalog.write() as session:
            for n in range(0, files, 50):
                d = n // per
                index_file_fields(
                    session, dataset_id=dataset_ids[d],
                    path=f"raw/tile{(n % per) // 100:02d}/cell-{n:07d}.czi",
                    fields={"objective": rng.choice(["63x", "40x", "20x"]), "channel": "DAPI"},
                )  # fmt: skip
                extracted += 1
        from sqlalchemy import func

        from labkeep.catalog import SearchDoc

        with keep.catalog.read() as session:
            docs = int(session.execute(select(func.count()).select_from(SearchDoc)).scalar() or 0)
    facts = {
        "files": files,
        "datasets": DATASETS,
        "documents": docs,
        "extracted": extracted,
        "build_s": round(time.monotonic() - started, 1),
        "entries_with_index_s": round(entries_s, 1),
    }
    ready.write_text(json.dumps(facts))
    return facts


def _client(args: tuple[str, str, int, str]) -> dict[str, list[float]]:
    root, who, rounds, _tag = args
    from labkeep import Keep

    with Keep.open(root) as admin:
        keep = admin if who == "site_admin" else admin.acting_as(admin.principal_for(who))
        times: dict[str, list[float]] = {k: [] for k in QUERIES}
        keep.search("warm-up")
        for _ in range(rounds):
            for label, query in QUERIES.items():
                t0 = time.perf_counter()
                keep.search(query)
                times[label].append((time.perf_counter() - t0) * 1000)
        return times


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure(root: Path, who: str, clients: int, rounds: int) -> dict[str, dict[str, float]]:
    if clients == 1:
        runs = [_client((str(root), who, rounds, "1"))]
    else:
        with multiprocessing.get_context("spawn").Pool(clients) as pool:
            runs = pool.map(_client, [(str(root), who, rounds, str(i)) for i in range(clients)])
    out: dict[str, dict[str, float]] = {}
    for label in QUERIES:
        values = [v for r in runs for v in r[label]]
        out[label] = {
            "p50_ms": round(statistics.median(values), 1),
            "p95_ms": round(_pct(values, 95), 1),
            "n": len(values),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--postgresql", action="store_true")
    parser.add_argument(
        "--postgresql-url",
        help="a database on a running server that already holds WORKDIR's keep (it is "
        "reused: no throwaway server, no rebuild)",
    )
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    server = None
    engine = "postgresql" if args.postgresql or args.postgresql_url else "sqlite"
    root = args.workdir / f"keep-{engine}-{args.files}"
    url = args.postgresql_url
    if args.postgresql and not url:
        from tests.pgserver import PostgresServer

        server = PostgresServer(durable=True)
        server.start()
        url = server.create_database()
        if (root / "ready").exists():  # a new server each run: the old keep's catalog is gone
            import shutil

            shutil.rmtree(root)
    try:
        facts = build(root, args.files, url)
        print(f"{engine}: {json.dumps(facts)}", flush=True)
        results: dict[str, Any] = {"engine": engine, "build": facts, "host": platform.node()}
        for who in ("member", "site_admin"):
            for clients in (1, 20):
                rounds = args.rounds if clients == 1 else max(2, args.rounds // 2)
                got = measure(root, who, clients, rounds)
                results[f"{who} x{clients}"] = got
                for label, r in got.items():
                    print(f"{engine} {who:10} {clients:2} clients {label:15} "
                          f"p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  (n={r['n']})",
                          flush=True)  # fmt: skip
        out = HERE / "results" / f"search-{engine}-{args.files}-{int(time.time())}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
        print(f"written {out}")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
