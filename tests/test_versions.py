"""`labkeep diff`: what changed between two versions of a dataset, from the temporal
entries table, streamed in path order."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select, update

from labkeep import Keep
from labkeep.catalog import Dataset, Entry, Version
from labkeep.clock import utcnow
from labkeep.errors import NotFound, UsageError
from labkeep.ops import versions as versions_mod
from tests.conftest import make_files


def changes(keep: Keep, old: str, new: str | None = None) -> list[tuple[str, str]]:
    return [(c.status, c.path) for c in keep.diff(old, new).changes]


def test_diff_of_two_ingests_in_either_order(keep: Keep, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_files(src, 5)
    keep.ingest(src, "proj/s1")
    (src / "late.txt").write_text("written after the first ingest")
    keep.ingest(src, "proj/s1")
    assert changes(keep, "proj/s1@1", "proj/s1@2") == [("added", "raw/late.txt")]
    assert changes(keep, "proj/s1@1") == [("added", "raw/late.txt")]  # to the newest
    assert changes(keep, "proj/s1@2", "@1") == [("removed", "raw/late.txt")]
    assert changes(keep, "proj/s1@2", "@2") == []
    added = next(iter(keep.diff("proj/s1@1", "@2").changes)).to_dict()
    digest = hashlib.sha256(b"written after the first ingest").hexdigest()
    assert added == {"status": "added", "path": "raw/late.txt", "size": 30, "sha256": digest}
    with pytest.raises(UsageError, match="no version 7"):
        keep.diff("proj/s1@1", "@7")
    with pytest.raises(UsageError, match="one dataset"):
        keep.diff("proj/s1@1", "proj/other@1")
    keep.add_user("bob", password="a long enough password 1")
    with pytest.raises(NotFound):
        keep.acting_as(keep.principal_for("bob")).diff("proj/s1@1", "@2")


def test_diff_follows_replaced_and_removed_rows(keep: Keep, tmp_path: Path) -> None:
    """Version 3 written the way a save records one: the old row of a changed file ends
    (valid_to) and a new row begins; a removed file's row just ends; a file registered
    again with the same content is no difference."""
    src = tmp_path / "src"
    files = make_files(src, 6)
    keep.ingest(src, "proj/s1")
    paths = sorted("raw/" + p for p in files)
    changed, removed, same = paths[0], paths[1], paths[2]
    with keep.catalog.write() as session:
        dataset = session.execute(select(Dataset).where(Dataset.name == "s1")).scalar_one()
        rows = {
            e.path: e
            for e in session.execute(
                select(Entry).where(Entry.dataset_id == dataset.id, Entry.valid_to.is_(None))
            ).scalars()
        }
        session.execute(
            update(Entry)
            .where(Entry.id.in_([rows[p].id for p in (changed, removed, same)]))
            .values(valid_to=2)
        )
        for path, content in ((changed, b"new content"), (same, files[same[4:]])):
            session.add(Entry(dataset_id=dataset.id, path=path, size=len(content),
                              sha256=hashlib.sha256(content).digest(), mtime_ns=0,
                              valid_from=2, valid_to=None))  # fmt: skip
        session.add(Version(dataset_id=dataset.id, number=2, state="committed", kind="save",
                            author="test", created_at=utcnow(), committed_at=utcnow()))  # fmt: skip
        dataset.head_version = 2
    assert changes(keep, "proj/s1@1", "@2") == sorted(
        [("modified", changed), ("removed", removed)], key=lambda c: c[1]
    )
    assert changes(keep, "proj/s1@2", "@1") == sorted(
        [("modified", changed), ("added", removed)], key=lambda c: c[1]
    )
    modified = next(c for c in keep.diff("proj/s1@1", "@2").changes if c.status == "modified")
    assert modified.old_size == len(files[changed[4:]]) and modified.size == len(b"new content")
    assert modified.sha256 == hashlib.sha256(b"new content").hexdigest()


def test_diff_streams_across_pages(
    keep: Keep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(versions_mod, "PAGE", 3)
    src = tmp_path / "src"
    make_files(src, 10)
    keep.ingest(src, "proj/s1")
    more = make_files(tmp_path / "more", 11, seed=7)
    for rel, data in more.items():
        target = src / "more" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    keep.ingest(src, "proj/s1")
    found = changes(keep, "proj/s1@1", "@2")
    assert found == [("added", p) for p in sorted("raw/more/" + r for r in more)]


def test_the_cli_diff(keep: Keep, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_files(src, 3)
    keep.ingest(src, "proj/s1")
    (src / "odd [name].txt").write_text("x")
    keep.ingest(src, "proj/s1")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "labkeep", "diff", *args, "--root", str(keep.root)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    text = run("proj/s1@1", "@2")
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines() == ["A raw/odd [name].txt"]
    assert "1 added, 0 removed, 0 modified" in text.stderr
    records = [json.loads(line) for line in run("proj/s1@1", "--json").stdout.splitlines()]
    assert records[0]["status"] == "added" and records[0]["path"] == "raw/odd [name].txt"
    assert records[-1]["summary"] == {"added": 1, "removed": 0, "modified": 0}
    bad = run("proj/s1@1", "@9")
    assert bad.returncode == 2 and "no version 9" in bad.stderr
