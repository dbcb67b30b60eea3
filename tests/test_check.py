"""``labkeep check``: each inconsistency made for real, found, named, with its fix."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy import text, update

from labkeep import Keep
from labkeep.catalog import Job, Run
from labkeep.clock import utcnow
from tests.conftest import make_files
from tests.test_cli import records, run


def _kinds(keep: Keep) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for finding in keep.check():
        assert finding.fix and finding.message
        found.setdefault(finding.kind, []).append(finding.target)
    return found


def _dead_owner() -> str:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return f"{socket.gethostname()}:{child.pid}:1:deadbeef"


def test_check_finds_each_inconsistency(keep: Keep, keep_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "buffer"
    make_files(src, 20)
    assert not keep.ingest(str(src), "proj/s1").failed
    assert not keep.ingest(str(src), "proj/s2").failed
    assert not keep.ingest(str(src), "proj/s3").failed
    assert _kinds(keep) == {}

    data = keep_root / "data" / "proj"
    (data / "s1" / "raw" / "top0000.dat").unlink()  # entry without file
    (data / "s1" / "raw" / "stray.bin").write_bytes(b"x")  # file without entry
    (data / "s2" / "notes.txt").write_text("unsaved")  # unsaved work
    with open(data / "s3" / "MANIFEST.sha256", "a") as handle:  # manifest drift
        handle.write("0" * 64 + "  raw/forged\n")
    partial = data / "s2" / ".labkeep" / "partial" / "abc.part"
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(partial, (old, old))
    killed = keep_root / ".labkeep-backup-abc123"  # a backup that was killed
    killed.mkdir()
    os.utime(killed, (old, old))
    ghost = data / "ghost" / "raw"
    ghost.mkdir(parents=True)
    (ghost / "a.bin").write_bytes(b"made after the backup")
    keep.set_policy("proj", min_copies=2)  # replicas below policy

    with keep.catalog.write() as session:
        s1 = session.execute(text("SELECT id FROM datasets WHERE name = 's1'")).scalar_one()
        session.add(
            Run(
                state="running", command='["true"]', output_dataset_id=s1, created_by="t",
                created_at=utcnow(), owner=_dead_owner(),
            )
        )  # fmt: skip
    job = keep.enqueue("verify", {"target": "proj/s1"})
    with keep.catalog.write() as session:
        session.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(
                state="running", lease_owner="gone:1:1:x", lease_until=utcnow() - timedelta(hours=1)
            )
        )
    # the audit chain: a checkpoint outside the catalog that the chain does not match
    anchor = keep_root / "data" / ".labkeep" / "audit-anchor.log"
    with keep.catalog.read() as session:
        last = session.execute(text("SELECT max(id) FROM events")).scalar_one()
    with open(anchor, "a") as handle:
        handle.write(f"{last}\t{'f' * 64}\t2026-01-01T00:00:00Z\n")

    found = _kinds(keep)
    assert found == {
        "event-chain-broken": ["events"],
        "dataset-not-in-catalog": ["proj/ghost"],
        "entry-without-file": ["proj/s1/raw/top0000.dat"],
        "file-without-entry": ["proj/s1/raw/stray.bin", "proj/s2/notes.txt"],
        "stale-partial": ["proj/s2", str(killed)],
        "manifest-drift": ["proj/s3"],
        "below-policy": ["proj/s1", "proj/s2", "proj/s3"],
        "orphan-run": [found["orphan-run"][0]],
        "expired-job-lease": [f"job {job.id}"],
    }

    # the command: one JSON record per finding, exit 1 (problems found)
    result = run("check", "--root", str(keep_root), "--json", check=1)
    lines = records(result)
    assert lines[-1]["status"] == "error" and lines[-1]["found"]["file-without-entry"] == 2
    assert {r["kind"] for r in lines[:-1]} == set(found)
    assert all(r["fix"] for r in lines[:-1])
    with keep.catalog.read() as session:
        assert session.execute(text("SELECT count(*) FROM datasets")).scalar_one() == 3


def test_check_is_clean_and_tells_a_broken_environment_apart(
    keep: Keep, keep_root: Path, tmp_path: Path
) -> None:
    src = tmp_path / "buffer"
    make_files(src, 5)
    keep.ingest(str(src), "proj/s1", seal=True)
    ok = run("check", "--root", str(keep_root), "--json")
    assert records(ok) == [{"action": "check", "status": "ok", "found": {}}]
    # the catalog cannot be reached: exit 3, not "problems found"
    config = keep_root / "labkeep.toml"
    text_ = config.read_text()
    url_line = next(line for line in text_.splitlines() if line.startswith("url = "))
    config.write_text(
        text_.replace(url_line, 'url = "postgresql+psycopg://nobody@127.0.0.1:1/none"').replace(
            "retry_seconds = 30", "retry_seconds = 0"
        )
    )
    broken = run("check", "--root", str(keep_root), "--json", check=3)
    assert records(broken)[-1]["status"] == "error"
