"""Catalog backups: take, list, rotate, drill, and restore after losing the catalog (a
deleted SQLite file; a wiped PostgreSQL data directory), on both catalogs."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from labkeep import Keep
from labkeep.ops.backup import PREFIX, to_keep
from tests.conftest import make_files, unseal_tree
from tests.pgserver import PostgresServer
from tests.s3server import S3Server
from tests.test_cli import records, run


def _ingest(keep: Keep, tmp_path: Path, name: str, count: int = 5, seed: int = 1) -> None:
    source = tmp_path / f"src-{name}"
    make_files(source, count, seed=seed)
    report = keep.ingest(str(source), f"proj/{name}")
    assert not report.failed


def test_backup_list_drill_and_the_status_warning(
    keep: Keep, keep_root: Path, tmp_path: Path
) -> None:
    _ingest(keep, tmp_path, "s1", 12)
    store = tmp_path / "backups"
    store.mkdir()
    assert not any("backup" in a for a in keep.status()["attention"])  # no backups set up
    keep.add_store("backup", kind="objects", path=str(store))
    assert any("backup drill" in a for a in keep.status()["attention"])  # never drilled

    taken = keep.backup()
    # the dump and its sidecar are in the store, and the dump is what the sidecar says
    dump = store.joinpath(*taken["key"].split("/"))
    sidecar = json.loads((store / PREFIX / f"{taken['id']}.json").read_text())
    import hashlib

    assert hashlib.sha256(dump.read_bytes()).hexdigest() == sidecar["sha256"] == taken["sha256"]
    assert sidecar["schema"] == keep.catalog.schema_revision()
    newest = keep.events(limit=1)[0]  # the "backup" event itself came after the copy
    assert newest["action"] == "backup" and sidecar["head_event_id"] == newest["id"] - 1
    assert [b.id for b in keep.list_backups()] == [taken["id"]]

    report = keep.drill_backup(sample=5)
    assert report.ok, report.checks
    checks = {c["check"]: c["status"] for c in report.checks}
    assert checks == dict.fromkeys(
        ("sha256", "restore", "schema", "events", "manifests", "sample"), "ok"
    )
    event = keep.events(action="backup-drill", limit=1)[0]
    assert event["target"] == taken["id"] and event["details"]["ok"] is True
    status = keep.status()
    assert not any("backup drill" in a for a in status["attention"])
    assert status["last_good_drill"] == event["at"]
    assert keep.check_events().ok

    # a dataset ingested after the backup is named by the next drill, not failed
    more = tmp_path / "more"
    more.mkdir()
    (more / "later.bin").write_bytes(b"acquired after the backup")
    assert not keep.ingest(str(more), "proj/s1").failed
    again = keep.drill_backup(sample=3)
    assert again.ok
    assert [c["dataset"] for c in again.changed_since] == ["proj/s1"]

    # the configured interval passed: the dashboard's list warns again
    keep.config.backup = type(keep.config.backup)(store="backup", drill_max_age=1e-6)
    assert any("backup drill" in a for a in keep.status()["attention"])


def test_a_damaged_backup_fails_its_drill(keep: Keep, keep_root: Path, tmp_path: Path) -> None:
    _ingest(keep, tmp_path, "s1")
    store = tmp_path / "backups"
    store.mkdir()
    taken = keep.backup(to=str(store))
    dump = store.joinpath(*taken["key"].split("/"))
    dump.chmod(0o644)
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    result = run("backup", "drill", "--to", str(store), "--root", str(keep_root), "--json", check=1)
    report = records(result)[-1]
    assert report["status"] == "error"
    assert report["checks"][0]["check"] == "restore"
    assert "damaged" in report["checks"][0]["message"]
    assert keep.events(action="backup-drill", limit=1)[0]["details"]["ok"] is False


def test_rotation_keeps_days_weeks_and_months() -> None:
    start = datetime(2026, 1, 1, 3, 0)
    ids = [f"{start + timedelta(hours=12 * i):%Y%m%dT%H%M%SZ}-abcdef" for i in range(2 * 400)]
    kept = to_keep(ids, daily=7, weekly=4, monthly=6)
    newest = max(ids)
    assert newest in kept
    days = {i[:8] for i in kept}
    # 7 days + at most 4 weeks + 6 months, one backup each (overlaps allowed)
    assert len(kept) <= 7 + 4 + 6 and len(kept) == len({i for i in kept})
    assert len(days) == len(kept)  # never two of the same day
    last7 = sorted({i[:8] for i in ids}, reverse=True)[:7]
    assert set(last7) <= days
    months = {i[:6] for i in kept}
    assert len(months) == 6
    assert to_keep(ids, 0, 0, 0) == {newest}


def test_restore_after_the_sqlite_catalog_is_deleted(tmp_path: Path) -> None:
    """Lose catalog.db; restore the backup without it; what was ingested after the backup
    is named by the documented procedure and registered again."""
    root = tmp_path / "keep"
    run("init", str(root))
    store = tmp_path / "backups"
    store.mkdir()
    (root / "labkeep.toml").write_text(
        (root / "labkeep.toml").read_text().replace('path = ""', f'path = "{store}"')
    )
    run("project", "create", "proj", "--root", str(root))
    source = tmp_path / "src1"
    make_files(source, 6)
    run("ingest", str(source), "proj/s1", "--root", str(root))
    run("backup", "--root", str(root))
    later = tmp_path / "src2"
    made = make_files(later, 4, seed=7)
    run("ingest", str(later), "proj/s2", "--root", str(root))
    run("seal", "proj/s2", "--root", str(root))
    try:
        for name in ("catalog.db", "catalog.db-wal", "catalog.db-shm"):
            (root / name).unlink(missing_ok=True)
        failed = run("ls", "--root", str(root), check=3)  # leaves an empty catalog file
        assert "empty" in failed.stderr
        listed = records(run("backup", "list", "--root", str(root), "--json", check=None))
        assert listed[-1]["status"] == "error"  # no catalog: list needs it; restore does not
        url = f"sqlite:///{root / 'catalog.db'}"
        restored = records(run("restore-catalog", "latest", "--into", url,
                               "--root", str(root), "--json"))[0]  # fmt: skip
        assert restored["activated"] is True
        shown = records(run("ls", "proj", "--root", str(root), "--json"))
        assert [r["dataset"] for r in shown] == ["proj/s1"]
        assert records(run("events", "--check", "--root", str(root), "--json"))[0]["status"] == "ok"
        run("verify", "--root", str(root))

        found = records(run("check", "--root", str(root), "--json", check=1))
        missing = [f for f in found if f.get("kind") == "dataset-not-in-catalog"]
        assert [f["target"] for f in missing] == ["proj/s2"]
        # the procedure of docs/operations.md: move it out of the tree, ingest it again
        recovered = tmp_path / "recovered" / "s2"
        recovered.parent.mkdir()
        unseal_tree(root / "data" / "proj" / "s2")
        shutil.move(root / "data" / "proj" / "s2", recovered)
        assert missing[0]["fix"].startswith("mkdir -p ") and " mv " in missing[0]["fix"]
        run("ingest", str(recovered / "raw"), "proj/s2", "--root", str(root))
        run("seal", "proj/s2", "--root", str(root))
        back = root / "data" / "proj" / "s2" / "raw"
        files = {str(p.relative_to(back)): p.read_bytes() for p in back.rglob("*") if p.is_file()}
        assert files == made
        run("check", "--root", str(root))
    finally:
        unseal_tree(root)


@pytest.mark.timeout(300)
def test_restore_after_the_postgresql_data_directory_is_wiped(tmp_path: Path) -> None:
    server = PostgresServer()
    server.start()
    root = tmp_path / "keep"
    try:
        url = server.create_database()
        keep = Keep.init(root, catalog_url=url)
        keep.create_project("proj")
        _ingest(keep, tmp_path, "s1", 9)
        store = tmp_path / "backups"
        store.mkdir()
        keep.add_store("backup", kind="objects", path=str(store))
        taken = keep.backup()
        assert taken["engine"] == "postgresql" and taken["pg_major"] >= 15
        assert keep.drill_backup(sample=4).ok
        keep.close()

        # the server's data directory is lost
        subprocess_run(server.stop_command())
        shutil.rmtree(server.data)
        server.start()  # a fresh, empty cluster on the same port
        fresh = server.create_database()
        config = root / "labkeep.toml"
        config.write_text(config.read_text().replace(url, fresh))
        restored = records(run("restore-catalog", taken["id"], "--into", fresh,
                               "--root", str(root), "--json"))[0]  # fmt: skip
        assert restored["backup"] == taken["id"] and restored["activated"]
        with Keep.open(root) as again:
            assert [d.name for d in again.list_datasets("proj")] == ["s1"]
            assert again.check_events().ok
            assert not again.verify("proj/s1").failed
        # a restore never overwrites a catalog
        refused = run("restore-catalog", taken["id"], "--into", fresh, "--root", str(root),
                      check=2)  # fmt: skip
        assert "not empty" in refused.stderr
    finally:
        server.stop()
        unseal_tree(root)


def subprocess_run(cmd: list[str]) -> None:
    import subprocess

    subprocess.run(cmd, check=True, capture_output=True)


def test_backups_in_a_worm_s3_bucket(
    keep: Keep,
    keep_root: Path,
    tmp_path: Path,
    s3_server: S3Server,
    request: pytest.FixtureRequest,
) -> None:
    """A real S3 server with Object Lock: the backup goes through the store interface,
    rotation keeps what retention protects, and the restore finds the bucket without the
    catalog (the store's description the backup left in the tree)."""
    from tests.test_copies_s3 import add_s3, bucket_objects

    _ingest(keep, tmp_path, "s1", 6)
    bucket = add_s3(keep, s3_server, "backup", object_lock="compliance", retention="1d")
    first = keep.backup()
    second = keep.backup()
    assert second["retention_locked"] == [first["id"]] and second["rotated_out"] == []
    keys = set(bucket_objects(s3_server, bucket))
    assert {first["key"], second["key"], f"{PREFIX}{second['id']}.json"} <= keys
    assert [b.id for b in keep.list_backups()] == [second["id"], first["id"]]
    assert keep.drill_backup(sample=3).ok
    dialect = keep.catalog.dialect
    keep.close()
    if dialect == "sqlite":
        target = tmp_path / "restored.db"
        url = f"sqlite:///{target}"
    else:
        url = request.getfixturevalue("pg_server").create_database()
    restored = records(run("restore-catalog", first["id"], "--into", url,
                           "--root", str(keep_root), "--json"))[0]  # fmt: skip
    assert restored["backup"] == first["id"] and restored["activated"] is False
    from labkeep.catalog import Catalog

    catalog = Catalog(url)
    try:
        with catalog.read() as session:
            assert session.execute(text("SELECT count(*) FROM datasets")).scalar_one() == 1
    finally:
        catalog.close()


def test_workers_take_backups_and_drill_them_as_jobs(
    keep: Keep, keep_root: Path, tmp_path: Path
) -> None:
    import io

    from labkeep.ops.worker import JobWorker

    _ingest(keep, tmp_path, "s1", 4)
    store = tmp_path / "backups"
    store.mkdir()
    keep.add_store("backup", kind="objects", path=str(store))
    backup_job = keep.enqueue("backup")
    drill_job = keep.enqueue("backup-drill", {"sample": 2}, priority=-1)  # after the backup
    JobWorker(keep, drain=True, log=io.StringIO(), schedule=False).run()
    assert keep.get_job(backup_job.id).state == "done"
    assert keep.get_job(drill_job.id).state == "done"
    assert len(keep.list_backups()) == 1
    assert keep.events(action="backup-drill", limit=1)[0]["details"]["ok"] is True
    # a drill that fails fails its job, with the reason
    (dump,) = [p for p in (store / PREFIX).iterdir() if p.suffix != ".json"]
    dump.chmod(0o644)
    dump.write_bytes(b"not a catalog")
    failing = keep.enqueue("backup-drill")
    JobWorker(keep, drain=True, log=io.StringIO(), schedule=False).run()
    job = keep.get_job(failing.id)
    assert job.state == "failed" and "drill" in job.last_error


def test_the_tree_remembers_where_the_last_backup_went(
    keep: Keep, keep_root: Path, tmp_path: Path
) -> None:
    from labkeep.ops.backup import find_backups

    usual, other = tmp_path / "usual", tmp_path / "other"
    usual.mkdir()
    other.mkdir()
    keep.add_store("backup", kind="objects", path=str(usual))
    taken = keep.backup(to=str(other))  # a folder given for once
    note = json.loads((keep_root / "data" / ".labkeep" / "backup-store.json").read_text())
    assert note["backup"]["location"] == str(other)
    # found from the note, without asking the catalog
    assert [b.id for b in find_backups(keep.config)] == [taken["id"]]
    assert not list(usual.rglob("*.json"))
