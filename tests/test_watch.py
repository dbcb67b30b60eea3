"""Watched buffers on real folders: ready rules, odd names, renames, polling and inotify,
owner rules, one job per acquisition, and the import through a real worker."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from labkeep import Keep
from labkeep.catalog import BufferFolder, Dataset, Event, Job, Project, Version
from labkeep.errors import Forbidden
from labkeep.ops.worker import JobWorker
from tests.conftest import unseal_tree

NOBODY = 65534  # an OS account of this machine, mapped to a labkeep user in some tests


@pytest.fixture
def buffer(tmp_path: Path) -> Path:
    path = tmp_path / "buffer"
    path.mkdir()
    yield path
    unseal_tree(path)


def acquire(folder: Path, files: dict[str, bytes], marker: str | None = None) -> None:
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if marker:
        (folder / marker).write_bytes(b"")


def drain(keep: Keep) -> None:
    JobWorker(keep, concurrency=1, drain=True, log=io.StringIO(), schedule=False).run()


def rows(keep: Keep) -> dict[str, BufferFolder]:
    with keep.catalog.read() as session:
        found = {r.folder: r for r in session.execute(select(BufferFolder)).scalars()}
        session.expunge_all()
        return found


def jobs(keep: Keep) -> list[Job]:
    with keep.catalog.read() as session:
        found = list(session.execute(select(Job).where(Job.kind == "buffer-import")).scalars())
        session.expunge_all()
        return found


def entries(keep: Keep, address: str) -> dict[str, int]:
    return {e["path"]: e["size"] for e in keep.stream_entries(address).entries}


def alice(keep: Keep, **kw: Any) -> None:
    keep.add_user("alice", password="correct horse battery", **kw)


FILES = {"img_000.tif": b"a" * 1000, "sub/img_001.tif": b"b" * 2000, "meta.json": b"{}"}


def test_marker_import_end_to_end_as_the_folders_owner(keep: Keep, buffer: Path) -> None:
    """watch -> scan -> queue -> worker: the dataset holds the files (not the marker),
    hard-linked, and is attributed to the OS owner's labkeep user."""
    alice(keep, os_user="nobody")
    keep.add_watch(str(buffer), name="confocal", project_template="imaging-{year}",
                   ready="marker:.done", link=True, owner_from="folder-owner")  # fmt: skip
    acq = buffer / "Run 17"
    acquire(acq, FILES)
    os.chown(acq, NOBODY, NOBODY)
    assert [c["state"] for c in keep.scan_watch("confocal")] == ["waiting"]
    assert not jobs(keep)
    (acq / ".done").write_bytes(b"")
    changes = keep.scan_watch("confocal")
    assert changes[-1]["state"] == "queued" and changes[-1]["owner"] == "alice"
    drain(keep)
    row = rows(keep)["Run 17"]
    assert row.state == "imported", row.message
    assert row.linked is True and row.imported_at is not None
    year = time.localtime().tm_year
    address = f"imaging-{year}/run-17"
    assert row.project == f"imaging-{year}" and row.dataset == "run-17"
    assert entries(keep, address) == {f"raw/{k}": len(v) for k, v in FILES.items()}
    tree = keep.tree.dataset_dir(f"imaging-{year}", "run-17") / "raw" / "img_000.tif"
    assert tree.stat().st_ino == (acq / "img_000.tif").stat().st_ino  # a hard link
    with keep.catalog.read() as session:
        ds = session.execute(select(Dataset).where(Dataset.name == "run-17")).scalar_one()
        version = session.execute(select(Version).where(Version.dataset_id == ds.id)).scalar()
        project = session.execute(select(Project).where(Project.id == ds.project_id)).scalar()
        actions = {
            (e.actor, e.action)
            for e in session.execute(select(Event).where(Event.target == address)).scalars()
        }
        assert ds.created_by == "alice" and version is not None and version.author == "alice"
        assert project is not None and project.created_by != "alice"  # the watch's creator
    assert ("alice", "buffer.import") in actions and ("alice", "ingest") in actions
    imports = [j for j in keep.list_jobs() if j.kind == "buffer-import"]
    assert [j.created_by for j in imports] == ["alice"]
    # the import queued the extraction of what it imported (acting as the keep itself)
    assert [j.kind for j in keep.list_jobs() if j.kind != "buffer-import"] == ["extract"]
    # nothing more happens on later scans
    assert keep.scan_watch("confocal") == []
    assert len(jobs(keep)) == 1


def test_quiet_period_waits_for_a_file_still_being_written(keep: Keep, buffer: Path) -> None:
    keep.add_watch(str(buffer), name="scope", ready="quiet:1s", owner_from="user:" + keep.actor)
    acq = buffer / "acq"
    acquire(acq, {"a.tif": b"x"})
    stop = threading.Event()

    def write() -> None:  # an instrument appending to a file, a little at a time
        with open(acq / "stack.tif", "ab") as handle:
            while not stop.wait(0.2):
                handle.write(b"y" * 100)
                handle.flush()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            keep.scan_watch("scope")
            assert rows(keep)["acq"].state == "waiting"
            time.sleep(0.3)
    finally:
        stop.set()
        writer.join()
    keep.scan_watch("scope")
    assert rows(keep)["acq"].state == "waiting"  # quiet only since the last write
    time.sleep(1.2)
    keep.scan_watch("scope")
    assert rows(keep)["acq"].state == "queued"


def test_a_file_with_a_newer_mtime_delays_readiness(keep: Keep, buffer: Path) -> None:
    """An unchanged listing is not enough: a file whose mtime is newer than the quiet
    period (a writer on another host with its clock ahead) keeps the folder waiting."""
    keep.add_watch(str(buffer), name="scope", ready="quiet:1s", owner_from="user:" + keep.actor)
    acquire(buffer / "acq", {"a.tif": b"x"})
    ahead = time.time() + 2.0
    os.utime(buffer / "acq" / "a.tif", (ahead, ahead))
    keep.scan_watch("scope")
    time.sleep(1.2)
    keep.scan_watch("scope")
    assert rows(keep)["acq"].state == "waiting"
    time.sleep(max(0.0, ahead + 1.05 - time.time()))
    keep.scan_watch("scope")
    assert rows(keep)["acq"].state == "queued"


def test_odd_names_are_imported_and_the_dataset_name_is_sanitised(keep: Keep, buffer: Path) -> None:
    keep.add_watch(str(buffer), name="scope", project_template="proj",
                   ready="marker:.done", owner_from="user:" + keep.actor)  # fmt: skip
    odd = {"a b.tif": b"1", "ünï €.tif": b"22", "new\nline.txt": b"333", "%#?.dat": b"4444"}
    acquire(buffer / "Run 1 é%#?", odd, marker=".done")
    keep.scan_watch("scope")
    drain(keep)
    row = rows(keep)["Run 1 é%#?"]
    assert row.state == "imported" and row.dataset == "run-1-e"
    assert entries(keep, "proj/run-1-e") == {f"raw/{k}": len(v) for k, v in odd.items()}


def test_a_folder_renamed_mid_acquisition_is_never_half_imported(keep: Keep, buffer: Path) -> None:
    keep.add_watch(str(buffer), name="scope", project_template="proj",
                   ready="quiet:1s", owner_from="user:" + keep.actor)  # fmt: skip
    acquire(buffer / "acq", {"a.tif": b"1"})
    keep.scan_watch("scope")
    (buffer / "acq").rename(buffer / "acq-final")
    acquire(buffer / "acq-final", {"b.tif": b"2"})
    states = {c["folder"]: c["state"] for c in keep.scan_watch("scope")}
    assert states == {"acq": "vanished", "acq-final": "waiting"}
    time.sleep(1.1)
    keep.scan_watch("scope")
    drain(keep)
    found = rows(keep)
    assert found["acq"].state == "vanished" and found["acq-final"].state == "imported"
    assert [j.state for j in jobs(keep)] == ["done"]
    assert entries(keep, "proj/acq-final") == {"raw/a.tif": 1, "raw/b.tif": 1}
    assert [d.name for d in keep.list_datasets("proj")] == ["acq-final"]


def test_a_folder_changed_after_import_is_reported_not_reimported(keep: Keep, buffer: Path) -> None:
    keep.add_watch(str(buffer), name="scope", project_template="proj",
                   ready="marker:.done", owner_from="user:" + keep.actor)  # fmt: skip
    acquire(buffer / "acq", FILES, marker=".done")
    keep.scan_watch("scope")
    drain(keep)
    assert rows(keep)["acq"].state == "imported"
    (buffer / "acq" / "late.tif").write_bytes(b"late")
    change = keep.scan_watch("scope")
    assert [c["state"] for c in change] == ["changed"]
    assert "not imported again" in change[0]["message"]
    keep.scan_watch("scope")
    assert len(jobs(keep)) == 1
    status = {r["folder"]: r for r in keep.buffer_status("scope", older_than="1d")}
    assert status["acq"]["state"] == "changed" and not status["acq"]["may_delete"]
    assert "raw/late.tif" not in entries(keep, "proj/acq")
    with keep.catalog.read() as session:
        assert session.execute(select(Event).where(Event.action == "buffer.changed")).first()


def test_a_folder_changed_before_its_job_ran_waits_again(keep: Keep, buffer: Path) -> None:
    keep.add_watch(str(buffer), name="scope", project_template="proj",
                   ready="marker:.done", owner_from="user:" + keep.actor)  # fmt: skip
    acquire(buffer / "acq", FILES, marker=".done")
    keep.scan_watch("scope")
    (buffer / "acq" / "late.tif").write_bytes(b"late")
    drain(keep)
    row = rows(keep)["acq"]
    assert row.state == "waiting" and "changed" in row.message
    assert jobs(keep)[0].state == "done"
    keep.scan_watch("scope")
    drain(keep)
    assert rows(keep)["acq"].state == "imported"
    assert "raw/late.tif" in entries(keep, "proj/acq")


def test_owner_rules_folder_name_map_and_failures(keep: Keep, buffer: Path) -> None:
    alice(keep)
    keep.add_user("bob", password="correct horse battery")
    # folder-name: buffer/USER/ACQUISITION, into a project the watch creates
    users = buffer / "users"
    users.mkdir()
    keep.add_watch(str(users), name="byname", project_template="lab-{user}",
                   ready="marker:.done", owner_from="folder-name")  # fmt: skip
    acquire(users / "alice" / "acq1", {"a": b"1"}, marker=".done")
    acquire(users / "nobody-known" / "acq2", {"a": b"1"}, marker=".done")
    keep.scan_watch("byname")
    # map: the instrument's system account -> bob, into an existing project of others
    mapped = buffer / "mapped"
    mapped.mkdir()
    keep.add_watch(str(mapped), name="bymap", project_template="proj",
                   ready="marker:.done", owner_from="map", owner_map=["nobody=bob"])  # fmt: skip
    acquire(mapped / "acq3", {"a": b"1"}, marker=".done")
    os.chown(mapped / "acq3", NOBODY, NOBODY)
    acquire(mapped / "acq4", {"a": b"1"}, marker=".done")  # owned by root: not in the map
    keep.scan_watch("bymap")
    found = rows(keep)
    assert found["alice/acq1"].state == "queued" and found["alice/acq1"].owner == "alice"
    assert found["nobody-known/acq2"].state == "failed"
    assert "not a usable labkeep user" in found["nobody-known/acq2"].message
    assert found["acq3"].state == "failed"  # bob may not add datasets to proj
    assert "grant bob write proj" in found["acq3"].message
    assert found["acq4"].state == "failed" and "not in the owner map" in found["acq4"].message
    keep.grant("bob", "write", "proj")
    assert keep.retry_buffer_folders("bymap", ["acq3"]) == ["acq3"]
    keep.scan_watch("bymap")
    drain(keep)
    found = rows(keep)
    assert found["alice/acq1"].state == "imported" and found["acq3"].state == "imported"
    assert keep.acting_as(keep.principal_for("alice")).get_dataset("lab-alice/acq1")
    assert keep.acting_as(keep.principal_for("bob")).get_dataset("proj/acq3")
    with keep.catalog.read() as session:
        creators = dict(session.execute(select(Dataset.name, Dataset.created_by)).all())
    assert creators == {"acq1": "alice", "acq3": "bob"}


def test_two_scans_and_two_watchers_queue_one_job(
    keep: Keep, keep_root: Path, buffer: Path
) -> None:
    keep.add_watch(str(buffer), name="scope", project_template="proj",
                   ready="marker:.done", owner_from="user:" + keep.actor)  # fmt: skip
    acquire(buffer / "acq", FILES, marker=".done")
    others = [Keep.open(keep_root) for _ in range(3)]
    try:
        barrier = threading.Barrier(len(others))
        errors: list[BaseException] = []

        def scan(k: Keep) -> None:
            try:
                barrier.wait()
                for _ in range(3):
                    k.scan_watch("scope")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=scan, args=(k,)) for k in others]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
    finally:
        for k in others:
            k.close()
    keep.scan_watch("scope")
    assert len(jobs(keep)) == 1
    drain(keep)
    keep.scan_watch("scope")
    assert len(jobs(keep)) == 1 and rows(keep)["acq"].state == "imported"


def _run_watchers(keep: Keep) -> tuple[threading.Event, threading.Event, threading.Thread]:
    from labkeep.ops.watch import run_watchers

    stop, queued, scanned = threading.Event(), threading.Event(), threading.Event()

    def log(event: str, **fields: Any) -> None:
        scanned.set()

    thread = threading.Thread(
        target=run_watchers,
        args=(keep,),
        kwargs={"stop": stop, "on_queued": queued.set, "log": log},
    )
    thread.start()
    return stop, queued, thread


@pytest.mark.parametrize("mode", ["poll", "inotify"])
def test_the_watcher_finds_acquisitions_by_polling_and_by_inotify(
    keep: Keep, buffer: Path, mode: str
) -> None:
    """Polling rescans every poll_seconds; in inotify mode polling is an hour away, so
    only the inotify wake-up can find the acquisition within seconds."""
    keep.add_watch(str(buffer), name="scope", project_template="proj", ready="marker:.done",
                   owner_from="user:" + keep.actor, mode=mode,
                   poll_seconds=1 if mode == "poll" else 3600)  # fmt: skip
    (buffer / "before").mkdir()
    stop, queued, thread = _run_watchers(keep)
    try:
        deadline = time.monotonic() + 5
        while "before" not in rows(keep) and time.monotonic() < deadline:
            time.sleep(0.05)  # the first scan ran: the watcher is up
        acquire(buffer / "acq", FILES, marker=".done")
        assert queued.wait(5), "the watcher did not queue the acquisition"
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert rows(keep)["acq"].state == "queued"


def test_only_site_admins_configure_and_scan(keep: Keep, buffer: Path) -> None:
    alice(keep)
    as_alice = keep.acting_as(keep.principal_for("alice"))
    with pytest.raises(Forbidden):
        as_alice.add_watch(str(buffer), name="scope")
    keep.add_watch(str(buffer), name="scope")
    for call in (
        lambda: as_alice.scan_watch("scope"),
        lambda: as_alice.list_watches(),
        lambda: as_alice.buffer_status("scope"),
        lambda: as_alice.clean_buffer("scope", older_than="1d"),
    ):
        with pytest.raises(Forbidden):
            call()


def test_link_falls_back_to_a_copy_across_filesystems(keep: Keep, small_disk: Any) -> None:
    other = small_disk(1024)  # a tmpfs: another filesystem than the keep's
    keep.add_watch(str(other), name="scope", project_template="proj", ready="marker:.done",
                   owner_from="user:" + keep.actor, link=True)  # fmt: skip
    acquire(other / "acq", FILES, marker=".done")
    keep.scan_watch("scope")
    drain(keep)
    row = rows(keep)["acq"]
    assert row.state == "imported" and row.linked is False
    assert "different filesystems" in row.message
    tree = keep.tree.dataset_dir("proj", "acq") / "raw" / "meta.json"
    assert tree.stat().st_ino != (other / "acq" / "meta.json").stat().st_ino


@pytest.mark.parametrize(
    ("raw", "slug"),
    [
        ("Run 1 é%#?", "run-1-e"),
        ("  __Émile's\nscan..v2  ", "emile-s-scan.v2"),
        ("UPPER.case--name", "upper.case-name"),
        ("x" * 80, "x" * 64),
    ],
)
def test_template_sanitisation(raw: str, slug: str) -> None:
    from labkeep.ops._buffer_scan import render_name, sanitise

    assert sanitise(raw) == slug
    assert render_name("{folder}", {"folder": raw}, "dataset") == slug


@pytest.mark.parametrize("bad", ["%%%", "con", "{nope}"])
def test_templates_that_give_no_valid_name_are_refused(bad: str) -> None:
    from labkeep.errors import UsageError
    from labkeep.ops._buffer_scan import render_name

    with pytest.raises(UsageError):
        render_name(bad if "{" in bad else "{folder}", {"folder": bad}, "dataset")
