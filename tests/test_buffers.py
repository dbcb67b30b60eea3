"""Buffer retention: the pure rule as a Hypothesis property, and the real clean path on
real folders and a real catalog (deletes only what is safely kept), and the CLI."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, update

from labkeep import Keep
from labkeep.catalog import BufferFolder, Event
from labkeep.ops.buffers import KeptState, decide
from tests.test_cli import records, run
from tests.test_watch import FILES, acquire, buffer, drain, rows  # noqa: F401 (fixture)

states = st.builds(
    KeptState,
    state=st.sampled_from(
        ["waiting", "queued", "imported", "changed", "failed", "vanished", "cleaning", "cleaned"]
    ),
    unchanged=st.booleans(),
    files_missing=st.integers(0, 3),
    linked=st.booleans(),
    tree_verified=st.booleans(),
    seal_required=st.booleans(),
    sealed=st.booleans(),
    copies=st.integers(0, 4),
    min_copies=st.integers(0, 4),
    age_days=st.none() | st.floats(0, 400),
    retention_days=st.none() | st.floats(0.001, 365),
)


def safely_kept(s: KeptState) -> bool:
    """The oracle, written independently of decide(): what 'safely kept' means."""
    return (
        s.state in ("imported", "cleaning")
        and s.unchanged
        and s.files_missing == 0
        and (s.linked or s.tree_verified)
        and (s.sealed or not s.seal_required)
        and s.copies >= max(1, s.min_copies)
        and s.retention_days is not None
        and s.age_days is not None
        and s.age_days >= s.retention_days
    )


@given(states)
def test_never_a_deletion_of_something_not_safely_kept(s: KeptState) -> None:
    decision = decide(s)
    assert decision.may_delete == safely_kept(s)
    assert decision.may_delete == (not decision.reasons)


@given(states, st.data())
def test_making_any_fact_worse_never_allows_a_deletion(s: KeptState, data: st.DataObject) -> None:
    worse = data.draw(
        st.sampled_from(
            [
                {"unchanged": False},
                {"files_missing": s.files_missing + 1},
                {"copies": max(0, s.copies - 1)},
                {"sealed": False, "seal_required": True},
                {"age_days": None if s.age_days is None else s.age_days / 2},
                {"state": "changed"},
            ]
        )
    )
    before = decide(s).may_delete
    after = decide(KeptState(**{**s.__dict__, **worse})).may_delete
    assert not (after and not before)


def imported(keep: Keep, buffer: Path, names: list[str], **watch: object) -> None:  # noqa: F811
    keep.add_watch(str(buffer), name="scope", project_template="proj", ready="marker:.done",
                   owner_from="user:" + keep.actor, **watch)  # type: ignore[arg-type]  # fmt: skip
    for name in names:
        acquire(buffer / name, FILES, marker=".done")
    keep.scan_watch("scope")
    drain(keep)
    assert all(r.state == "imported" for r in rows(keep).values())


def age(keep: Keep, folder: str, days: float) -> None:
    with keep.catalog.write() as session:
        row = session.execute(select(BufferFolder).where(BufferFolder.folder == folder)).scalar()
        assert row is not None and row.imported_at is not None
        session.execute(
            update(BufferFolder)
            .where(BufferFolder.id == row.id)
            .values(imported_at=row.imported_at - timedelta(days=days))
        )


def test_clean_deletes_only_safely_kept_old_folders(keep: Keep, buffer: Path) -> None:  # noqa: F811
    imported(keep, buffer, ["old-verified", "old-unverified", "new-verified", "old-changed"])
    for name in ("old-verified", "old-unverified", "old-changed"):
        age(keep, name, 90)
    for name in ("old-verified", "new-verified", "old-changed"):
        assert not keep.verify(f"proj/{name}").failed
    (buffer / "old-changed" / "img_000.tif").write_bytes(b"c" * 1000)  # same size, new mtime
    status = {r["folder"]: r for r in keep.buffer_status("scope", older_than="60d")}
    assert status["old-verified"]["may_delete"]
    assert any("not verified" in r for r in status["old-unverified"]["reasons"])
    assert any("days ago" in r for r in status["new-verified"]["reasons"])
    assert any("changed" in r for r in status["old-changed"]["reasons"])
    dry = keep.clean_buffer("scope", older_than="60d", dry_run=True)
    assert [r.path for r in dry.results if r.status == "ok"] == ["old-verified"]
    assert (buffer / "old-verified" / "img_000.tif").exists()
    report = keep.clean_buffer("scope", older_than="60d")
    assert [r.path for r in report.results if r.status == "ok"] == ["old-verified"]
    assert not (buffer / "old-verified").exists()
    for name in ("old-unverified", "new-verified", "old-changed"):
        assert sorted(p.name for p in (buffer / name).rglob("*") if p.is_file()) == sorted(
            [".done", "img_000.tif", "img_001.tif", "meta.json"]
        )
    found = rows(keep)
    assert found["old-verified"].state == "cleaned" and found["old-verified"].cleaned_at
    # the keep still holds everything
    assert {e["path"] for e in keep.stream_entries("proj/old-verified").entries} == {
        f"raw/{k}" for k in FILES
    }
    with keep.catalog.read() as session:
        event = session.execute(select(Event).where(Event.action == "buffer.clean")).scalar_one()
        assert json.loads(event.details)["files"] == len(FILES) + 1  # with the marker
    # a folder of the same name later is a new acquisition
    acquire(buffer / "old-verified", {"x.tif": b"x"})
    changes = {c["folder"]: c["state"] for c in keep.scan_watch("scope")}
    assert changes == {"old-verified": "waiting", "old-changed": "changed"}


def test_clean_needs_seal_and_min_copies(keep: Keep, buffer: Path, tmp_path: Path) -> None:  # noqa: F811
    imported(keep, buffer, ["acq"], seal=False)
    age(keep, "acq", 90)
    assert not keep.verify("proj/acq").failed
    keep.set_policy("proj", min_copies=2)
    reasons = keep.buffer_status("scope", older_than="60d")[0]["reasons"]
    assert reasons == ["1 of 2 good copies"]
    keep.add_store("backup", kind="objects", path=str(tmp_path / "backup"))
    assert not keep.copy("proj/acq", to="backup").failed
    assert keep.buffer_status("scope", older_than="60d")[0]["may_delete"]
    keep.set_policy("proj", min_copies=2, on_seal=["backup"])  # copy-on-seal: seal needed
    assert keep.buffer_status("scope", older_than="60d")[0]["reasons"] == [
        "the dataset is not sealed"
    ]
    keep.seal("proj/acq")
    report = keep.clean_buffer("scope", older_than="60d")
    assert report.counts() == {"ok": 1} and not (buffer / "acq").exists()


def test_a_linked_sealed_import_is_kept_with_a_clear_message(keep: Keep, buffer: Path) -> None:  # noqa: F811
    """With --link --seal the buffer file is the keep's immutable inode: unlinking it
    fails (EPERM); clean says why and marks nothing cleaned."""
    imported(keep, buffer, ["acq"], link=True, seal=True)
    age(keep, "acq", 90)
    from labkeep.integrity.immutable import get_immutable

    if not get_immutable(str(buffer / "acq" / "img_000.tif")):
        pytest.skip("no immutable flag here (seal could not chattr +i)")
    report = keep.clean_buffer("scope", older_than="60d")
    assert report.failed and "immutable" in (report.results[0].message or "")
    assert (buffer / "acq" / "img_000.tif").exists()
    assert rows(keep)["acq"].state == "imported"
    assert keep.scan_watch("scope") == []  # the partial clean is not a "change"


def test_cli_watch_and_buffer_json(tmp_path: Path, buffer: Path) -> None:  # noqa: F811
    root = tmp_path / "keep"
    with Keep.init(root) as keep:
        keep.create_project("proj")
    out = run("watch", "add", str(buffer), "--name", "scope", "--project-template", "proj",
              "--ready", "marker:.done", "--owner-from", "user:root", "--link",
              "--retention", "60d", "--json", cwd=root)  # fmt: skip
    assert records(out)[0]["retention_days"] == 60 and records(out)[0]["link"] is True
    acquire(buffer / "acq", FILES, marker=".done")
    scan = records(run("watch", "scan", "scope", "--json", cwd=root))
    assert [r["state"] for r in scan] == ["waiting", "queued"]
    with Keep.open(root) as keep:
        drain(keep)
    dry = records(run("buffer", "clean", str(buffer), "--dry-run", "--json", cwd=root))
    assert dry[0]["status"] == "notneeded" and "0.0 of 60 days" in dry[0]["message"]
    assert (buffer / "acq" / "meta.json").exists()
    text = run("buffer", "status", "scope", cwd=root).stdout
    assert "imported" in text and "0.0 of 60 days ago" in text
    bad = run("watch", "add", str(buffer), "--ready", "soon", cwd=root, check=2)
    assert "invalid ready rule" in bad.stderr


def test_the_buffer_clean_job_cleans_watches_with_a_retention(keep: Keep, buffer: Path) -> None:  # noqa: F811
    imported(keep, buffer, ["acq"], retention="30d")
    age(keep, "acq", 31)
    assert not keep.verify("proj/acq").failed
    job = keep.enqueue("buffer-clean", {}, system=True)
    drain(keep)
    done = keep.get_job(job.id)
    assert done.state == "done" and done.result == {
        "watches": {"scope": {"ok": 1}},
        "files": len(FILES) + 1,
        "bytes": sum(len(v) for v in FILES.values()),
    }
    assert rows(keep)["acq"].state == "cleaned" and not (buffer / "acq").exists()


@pytest.mark.parametrize("seal", [False, True])
def test_two_acquisitions_landing_in_one_dataset_never_lose_bytes(
    keep: Keep,
    buffer: Path,  # noqa: F811
    seal: bool,
) -> None:
    """ "Run 1" and "run-1" are both the dataset run-1; their files have the same names,
    sizes and mtimes but other bytes. The second import is a conflict, never "already
    there", and a clean keeps it: its bytes are nowhere else."""
    keep.add_watch(str(buffer), name="scope", project_template="proj", ready="marker:.done",
                   owner_from="user:" + keep.actor, seal=seal)  # fmt: skip
    for name, byte in (("Run 1", b"a"), ("run-1", b"b")):
        acquire(buffer / name, {"img.raw": byte * 1000})
        os.utime(buffer / name / "img.raw", ns=(1_767_261_600_000_000_000,) * 2)
    (buffer / "Run 1" / ".done").write_bytes(b"")
    keep.scan_watch("scope")
    drain(keep)
    (buffer / "run-1" / ".done").write_bytes(b"")
    keep.scan_watch("scope")
    drain(keep)
    found = rows(keep)
    assert found["Run 1"].state == "imported"
    assert found["run-1"].state == "failed", found["run-1"].message
    why = found["run-1"].message or ""
    assert ("is sealed" if seal else "different content") in why, why
    age(keep, "Run 1", 90)
    keep.verify("proj/run-1")
    keep.clean_buffer("scope", older_than="60d")
    assert (buffer / "run-1" / "img.raw").read_bytes() == b"b" * 1000
