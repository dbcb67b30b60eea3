"""The Python API end to end, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labkeep import Keep
from labkeep.errors import (
    AlreadyExists,
    KeepExists,
    KeepNotFound,
    NotFound,
    SealedError,
    UsageError,
)
from tests.conftest import make_files


def test_init_creates_config_catalog_and_tree(keep: Keep, keep_root: Path) -> None:
    assert (keep_root / "labkeep.toml").is_file()
    assert (keep_root / "data").is_dir()
    if keep.catalog.dialect == "sqlite":
        assert (keep_root / "catalog.db").is_file()
    assert keep.catalog.schema_revision() == keep.catalog.head_revision()
    with pytest.raises(KeepExists):
        Keep.init(keep_root)


def test_open_finds_keep_from_env_and_parents(keep: Keep, keep_root: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("LABKEEP_ROOT", str(keep_root))
    with Keep.open() as k:
        assert k.root == keep_root
    monkeypatch.delenv("LABKEEP_ROOT")
    monkeypatch.chdir(keep_root / "data")
    with Keep.open() as k:
        assert k.root == keep_root
    monkeypatch.chdir(keep_root.parent)
    with pytest.raises(KeepNotFound):
        Keep.open()


def test_ingest_copies_hashes_and_registers(keep: Keep, tmp_path: Path) -> None:
    src = tmp_path / "buffer"
    files = make_files(src, 30)
    report = keep.ingest(src, "proj/s001")
    assert report.counts() == {"ok": 30}
    assert report.info["version"] == 1
    tree = keep.tree.dataset_dir("proj", "s001")
    listing = {e["path"]: e for e in keep.ls("proj/s001").items}
    assert set(listing) == {f"raw/{rel}" for rel in files}
    for rel, data in files.items():
        assert (tree / "raw" / rel).read_bytes() == data
        assert listing[f"raw/{rel}"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert listing[f"raw/{rel}"]["size"] == len(data)
        assert (tree / "raw" / rel).stat().st_mtime_ns == (src / rel).stat().st_mtime_ns
    # the source is untouched, the partial folder is empty
    assert all((src / rel).read_bytes() == data for rel, data in files.items())
    assert list((tree / ".labkeep" / "partial").iterdir()) == []
    info = keep.get_dataset("proj/s001")
    assert (info.files, info.bytes, info.kind) == (30, sum(map(len, files.values())), "session")


def test_ingest_again_is_idempotent(keep: Keep, tmp_path: Path) -> None:
    src = tmp_path / "buffer"
    make_files(src, 12)
    keep.ingest(src, "proj/s001")
    tree = keep.tree.dataset_dir("proj", "s001")
    inode_before = {p: p.stat().st_ino for p in (tree / "raw").rglob("*") if p.is_file()}
    again = keep.ingest(src, "proj/s001")
    assert again.counts() == {"notneeded": 12}
    assert "version" not in again.info
    inode_after = {p: p.stat().st_ino for p in (tree / "raw").rglob("*") if p.is_file()}
    assert inode_after == inode_before  # nothing copied again
    assert len(keep.ls("proj/s001").items) == 12
    assert [v["version"] for v in keep.versions("proj/s001")] == [1]


def test_ingest_adds_new_files_as_a_new_version(keep: Keep, tmp_path: Path) -> None:
    src = tmp_path / "buffer"
    make_files(src, 5)
    keep.ingest(src, "proj/s001")
    (src / "late.txt").write_bytes(b"acquired later")
    report = keep.ingest(src, "proj/s001")
    assert report.counts() == {"ok": 1, "notneeded": 5}
    assert report.info["version"] == 2
    assert len(keep.ls("proj/s001@1").items) == 5
    assert len(keep.ls("proj/s001@2").items) == 6
    assert len(keep.ls("proj/s001").items) == 6


def test_changed_content_at_same_path_is_refused(keep: Keep, tmp_path: Path) -> None:
    src = tmp_path / "buffer"
    src.mkdir()
    (src / "a.txt").write_bytes(b"first")
    keep.ingest(src, "proj/s001")
    (src / "a.txt").write_bytes(b"second, longer")
    report = keep.ingest(src, "proj/s001")
    assert report.counts() == {"error": 1}
    assert "different content" in (report.results[0].message or "")
    assert (keep.tree.dataset_dir("proj", "s001") / "raw/a.txt").read_bytes() == b"first"


def test_same_content_with_new_mtime_is_notneeded(keep: Keep, tmp_path: Path) -> None:
    src = tmp_path / "buffer"
    src.mkdir()
    (src / "a.txt").write_bytes(b"same")
    keep.ingest(src, "proj/s001")
    os.utime(src / "a.txt", ns=(1, 1_000_000_000))
    assert keep.ingest(src, "proj/s001").counts() == {"notneeded": 1}


def test_ingest_refuses_bad_sources(keep: Keep, tmp_path: Path, keep_root: Path) -> None:
    from labkeep.errors import SourceError

    with pytest.raises(SourceError, match="does not exist"):
        keep.ingest(tmp_path / "missing", "proj/s001")
    with pytest.raises(SourceError, match="overlaps"):
        keep.ingest(keep_root / "data", "proj/s001")
    with pytest.raises(SourceError, match="overlaps"):
        keep.ingest(keep_root, "proj/s001")
    (tmp_path / "b").mkdir()
    with pytest.raises(NotFound, match="no project 'nope'"):
        keep.ingest(tmp_path / "b", "nope/s001")
    with pytest.raises(UsageError):
        keep.ingest(tmp_path / "b", "proj")
    with pytest.raises(UsageError):
        keep.ingest(tmp_path / "b", "proj/Bad Name")


def test_odd_sources_get_records_and_the_rest_goes_on(keep: Keep, tmp_path: Path) -> None:
    src = tmp_path / "buffer"
    src.mkdir()
    (src / "good.txt").write_bytes(b"good")
    (src / "link").symlink_to("good.txt")
    os.mkfifo(src / "fifo")
    bad_name = os.fsencode(str(src)) + b"/bad-\xff-name"
    with open(bad_name, "wb") as handle:
        handle.write(b"x")
    (src / "noread").mkdir()
    (src / "noread" / "x").write_bytes(b"x")
    report = keep.ingest(src, "proj/s001")
    by_path = {r.path: r for r in report.results}
    assert by_path["raw/good.txt"].status == "ok"
    assert by_path["raw/link"].status == "impossible"
    assert "symbolic link" in (by_path["raw/link"].message or "")
    assert by_path["raw/fifo"].status == "impossible"
    bad = [r for r in report.results if "UTF-8" in (r.message or "")]
    assert len(bad) == 1 and bad[0].status == "impossible"
    assert report.failed
    assert {e["path"] for e in keep.ls("proj/s001").items} == {"raw/good.txt", "raw/noread/x"}


def test_files_that_vanish_or_change_while_read_get_error_records(
    keep: Keep, tmp_path: Path
) -> None:
    import threading

    src = tmp_path / "buffer"
    src.mkdir()
    for i in range(5):
        (src / f"ok{i}.txt").write_bytes(b"fine %d" % i)
    (src / "vanishing.txt").write_bytes(b"here at scan time")
    growing = src / "growing.bin"
    growing.write_bytes(os.urandom(32 << 20))
    stop = threading.Event()

    def append_forever() -> None:
        """Grow the file steadily while it is copied, but boundedly (at most 256 MiB):
        an unthrottled writer fills the disk of a busy machine before the test ends."""
        import time

        with open(growing, "ab") as handle:
            for _ in range(4096):
                if stop.is_set():
                    break
                handle.write(b"x" * 65536)
                handle.flush()
                time.sleep(0.001)

    class Hook:
        """Runs between the scan and the copies, as a slow instrument would."""

        def start(self, total_files: int, total_bytes: int) -> None:
            (src / "vanishing.txt").unlink()
            threading.Thread(target=append_forever, daemon=True).start()

        def advance(self, files: int, nbytes: int) -> None:
            pass

    try:
        report = keep.ingest(src, "proj/s001", progress=Hook())
    finally:
        stop.set()
    by_path = {r.path: r for r in report.results}
    assert by_path["raw/vanishing.txt"].status == "error"
    assert "vanished" in (by_path["raw/vanishing.txt"].message or "")
    assert by_path["raw/growing.bin"].status == "error"
    assert "changed while it was read" in (by_path["raw/growing.bin"].message or "")
    assert sum(r.status == "ok" for r in report.results) == 5
    tree = keep.tree.dataset_dir("proj", "s001")
    assert not (tree / "raw/growing.bin").exists()
    assert list((tree / ".labkeep/partial").iterdir()) == []


def test_manifest_is_checked_by_coreutils(keep: Keep, tmp_path: Path) -> None:
    src = tmp_path / "buffer"
    make_files(src, 9)
    for name in ["with space.txt", "back\\slash", "new\nline", "carriage\rreturn", "ünïcode.txt",
                 "-dash", "*star"]:  # fmt: skip
        (src / name).write_bytes(name.encode())
    keep.ingest(src, "proj/s001")
    folder = keep.tree.dataset_dir("proj", "s001")
    result = subprocess.run(["sha256sum", "--strict", "-c", "MANIFEST.sha256"], cwd=folder,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": OK") == 16


def test_seal_makes_raw_write_once(keep: Keep, tmp_path: Path) -> None:
    src = tmp_path / "buffer"
    make_files(src, 4)
    keep.ingest(src, "proj/s001")
    result = keep.seal("proj/s001")
    assert result.status == "ok" and result.version == 2
    raw = keep.tree.dataset_dir("proj", "s001") / "raw"
    for path in [raw, *raw.rglob("*")]:
        assert path.stat().st_mode & 0o222 == 0, path
    if result.immutable:
        with pytest.raises(PermissionError):
            (raw / "top0000.dat").write_bytes(b"overwrite")
        with pytest.raises(PermissionError):
            (raw / "new-file").write_bytes(b"new")
        with pytest.raises(PermissionError):
            (raw / "top0000.dat").unlink()
    else:
        assert result.warnings
    # every labkeep write path refuses
    (src / "more.txt").write_bytes(b"more")
    with pytest.raises(SealedError, match="sealed"):
        keep.ingest(src, "proj/s001")
    assert keep.seal("proj/s001").status == "notneeded"
    versions = keep.versions("proj/s001")
    assert [v["kind"] for v in versions] == ["ingest", "seal"]
    seal_event = keep.events(action="seal")[0]
    assert seal_event["details"]["manifest_sha256"] == result.manifest_sha256
    manifest = (raw.parent / "MANIFEST.sha256").read_bytes()
    assert hashlib.sha256(manifest).hexdigest() == result.manifest_sha256


def test_unseal_needs_force_and_is_audited(keep: Keep, tmp_path: Path) -> None:
    src = tmp_path / "buffer"
    make_files(src, 3)
    keep.ingest(src, "proj/s001", seal=True)
    with pytest.raises(UsageError, match="--force"):
        keep.unseal("proj/s001")
    result = keep.unseal("proj/s001", force=True, reason="fix a mislabelled file")
    assert result.status == "ok"
    raw = keep.tree.dataset_dir("proj", "s001") / "raw"
    (raw / "top0000.dat").chmod(0o644)
    event = keep.events(action="unseal")[0]
    assert event["details"]["reason"] == "fix a mislabelled file"
    (src / "more.txt").write_bytes(b"more")
    assert keep.ingest(src, "proj/s001").counts() == {"ok": 1, "notneeded": 3}


def test_verify_finds_and_names_every_problem(keep: Keep, tmp_path: Path) -> None:
    src = tmp_path / "buffer"
    make_files(src, 10, min_size=10)
    keep.ingest(src, "proj/s001")
    assert not keep.verify("proj/s001").failed
    raw = keep.tree.dataset_dir("proj", "s001") / "raw"
    flip = raw / "d1/sub1/f0001.bin"
    data = bytearray(flip.read_bytes())
    data[len(data) // 2] ^= 0x01
    flip.write_bytes(bytes(data))
    (raw / "d2/sub0/f0002.bin").unlink()
    (raw / "stray.txt").write_bytes(b"not ingested")
    (raw / "d2/sub1/f0005.bin").write_bytes(b"short")
    report = keep.verify("proj")
    states = {(r.path, r.state) for r in report.results if r.state != "ok"}
    assert states == {
        ("raw/d1/sub1/f0001.bin", "modified"),
        ("raw/d2/sub0/f0002.bin", "missing"),
        ("raw/stray.txt", "extra"),
        ("raw/d2/sub1/f0005.bin", "modified"),
    }
    assert report.failed
    assert report.info["states"] == {"ok": 7, "modified": 2, "missing": 1, "extra": 1}
    log = Path(report.info["log"]).read_text()
    assert "MODIFIED proj/s001/raw/d1/sub1/f0001.bin" in log
    assert "MISSING  proj/s001/raw/d2/sub0/f0002.bin" in log
    assert "EXTRA    proj/s001/raw/stray.txt" in log
    statuses = {e["path"]: e["verify_status"] for e in keep.ls("proj/s001").items}
    assert statuses["raw/d1/sub1/f0001.bin"] == "modified"
    assert statuses["raw/top0000.dat"] == "ok"
    assert all(e["verified_at"] for e in keep.ls("proj/s001").items)
    assert keep.events(action="verify")[0]["details"]["modified"] == 2
    assert keep.status()["failed_verification"] == 3


def test_verify_reports_a_tampered_manifest(keep: Keep, tmp_path: Path) -> None:
    src = tmp_path / "buffer"
    make_files(src, 3)
    keep.ingest(src, "proj/s001")
    manifest = keep.tree.manifest_path("proj", "s001")
    manifest.write_text(manifest.read_text().replace("raw/", "raw/x", 1))
    report = keep.verify("proj/s001")
    assert [(r.path, r.state) for r in report.results if r.state != "ok"] == [
        ("MANIFEST.sha256", "modified")
    ]
    keep.write_manifest("proj/s001")
    assert not keep.verify("proj/s001").failed


def test_events_chain_detects_tampering(keep: Keep, tmp_path: Path) -> None:
    from sqlalchemy import text

    src = tmp_path / "buffer"
    make_files(src, 3)
    keep.ingest(src, "proj/s001", seal=True)
    check = keep.check_events()
    assert check.ok and check.checked == len(keep.events(limit=None))
    # the database itself refuses updates and deletes
    from sqlalchemy.exc import DBAPIError

    with pytest.raises(DBAPIError, match="append-only"), keep.catalog.write() as session:
        session.execute(text("UPDATE events SET actor = 'mallory' WHERE id = 2"))
    with pytest.raises(DBAPIError, match="append-only"), keep.catalog.write() as session:
        session.execute(text("DELETE FROM events WHERE id = 2"))
    # someone with database rights drops the trigger and rewrites history: the chain shows it
    with keep.catalog.write() as session:
        session.execute(
            text(
                "DROP TRIGGER events_no_update"
                + (" ON events" if keep.catalog.dialect == "postgresql" else "")
            )
        )
        session.execute(text("UPDATE events SET actor = 'mallory' WHERE id = 2"))
    check = keep.check_events()
    assert not check.ok and check.first_bad_id == 2


def test_projects_and_datasets(keep: Keep) -> None:
    with pytest.raises(AlreadyExists):
        keep.create_project("proj")
    with pytest.raises(UsageError, match="invalid project name"):
        keep.create_project("Bad/Name")
    keep.create_dataset("proj/analysis-1", kind="analysis", title="Segmentation")
    with pytest.raises(AlreadyExists):
        keep.create_dataset("proj/analysis-1")
    with pytest.raises(UsageError, match="kind"):
        keep.create_dataset("proj/x", kind="bogus")
    assert [d.name for d in keep.list_datasets("proj")] == ["analysis-1"]
    with pytest.raises(NotFound):
        keep.ls("proj/nope")
    with pytest.raises(NotFound):
        keep.ls("proj/analysis-1@7")


class RecordingProgress:
    """A Progress that writes down every call (from any thread)."""

    def __init__(self) -> None:
        import threading

        self.calls: list[tuple[int, int]] = []
        self.started: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def start(self, total_files: int, total_bytes: int) -> None:
        self.started = (total_files, total_bytes)

    def advance(self, files: int, nbytes: int) -> None:
        with self._lock:
            self.calls.append((files, nbytes))

    def totals(self) -> tuple[int, int]:
        return sum(f for f, _ in self.calls), sum(b for _, b in self.calls)


def test_progress_moves_with_the_bytes_not_the_commits(keep: Keep, tmp_path: Path) -> None:
    """Three big files: the bar advances while each one is copied (chunk by chunk), long
    before any is committed, and ends exactly at the totals it announced."""
    src = tmp_path / "big"
    src.mkdir()
    for i in range(3):
        (src / f"stack{i}.tif").write_bytes(os.urandom(6 << 20))
    (src / "link").symlink_to("stack0.tif")  # refused: counts as done, not as bytes read
    progress = RecordingProgress()
    keep.ingest(src, "proj/big", progress=progress)
    assert progress.started == (3, 18 << 20)
    first_file = next(i for i, (files, _) in enumerate(progress.calls) if files)
    assert sum(b for _, b in progress.calls[:first_file]) >= 6 << 20  # bytes before files
    assert len(progress.calls) > 3 * 6  # at least one step per MiB read
    assert progress.totals() == (3, 18 << 20)
    # verify moves the same way
    checked = RecordingProgress()
    keep.verify("proj/big", progress=checked)
    assert checked.totals() == (3, 18 << 20) and len(checked.calls) > 3 * 6
    # and nothing is counted twice when a file is already there or fails
    again = RecordingProgress()
    keep.ingest(src, "proj/big", progress=again)
    assert again.totals() == (3, 18 << 20)


#: names whose order differs between byte order and other orders people meet: case,
#: accents (composed and not), punctuation around '/', a character above the BMP next to
#: one just below it (UTF-16 orders them the other way round), escapes of the manifest
TRICKY_NAMES = ["a", "A", "B", "b", "Z", "_", "-x", ".x", "~", "a b", "a-b", "a.b", "a0",
                "é", "e\u0301", "E", "ß", "Ω", "日本", "\uff5e", "\U0001f600", "a\\b",
                "new\nline", "tab\tname", "z", "sub-x", "sub.x", "sub/x", "sub0", "sub/X",
                "sub/é"]  # fmt: skip


def test_manifest_streams_in_byte_order_on_both_catalogs(keep: Keep, tmp_path: Path) -> None:
    from labkeep.integrity.manifest import format_manifest, parse_manifest, sort_key

    src = tmp_path / "buffer"
    for name in TRICKY_NAMES:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(name.encode())
    keep.ingest(src, "proj/s001")
    folder = keep.tree.dataset_dir("proj", "s001")
    on_disk = (folder / "MANIFEST.sha256").read_bytes()
    streamed = b"".join(keep.iter_manifest("proj/s001"))
    paths = [f"raw/{name}" for name in TRICKY_NAMES]
    digests = {f"raw/{n}": hashlib.sha256(n.encode()).hexdigest() for n in TRICKY_NAMES}
    # exactly the whole-text format (sorted in Python) and what is on disk
    assert streamed == format_manifest(digests.items()).encode() == on_disk
    assert keep.read_manifest("proj/s001").encode() == on_disk
    assert [p for p, _ in parse_manifest(on_disk.decode())] == sorted(paths, key=sort_key)
    # the catalog's own order (used by listings and the streamed manifest) is byte order
    assert [e["path"] for e in keep.ls("proj/s001").items] == sorted(paths, key=sort_key)
    result = subprocess.run(["sha256sum", "--strict", "-c", "MANIFEST.sha256"], cwd=folder,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": OK") == len(TRICKY_NAMES)


def test_catalog_path_order_is_manifest_order(keep: Keep) -> None:
    """Hypothesis: any set of paths, written as catalog rows, streams in sort_key order."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from sqlalchemy import select

    from labkeep.catalog import Dataset, Entry
    from labkeep.integrity.manifest import parse_manifest, sort_key

    name = st.text(
        st.characters(exclude_characters="\x00/", exclude_categories=("Cs",)),
        min_size=1, max_size=6,
    ).filter(lambda n: n not in (".", ".."))  # fmt: skip
    counter = iter(range(10**6))

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
    @given(st.sets(st.lists(name, min_size=1, max_size=3).map("/".join), min_size=1,
                   max_size=12))  # fmt: skip
    def check(paths: set[str]) -> None:
        name = f"h{next(counter)}"
        keep.create_dataset(f"proj/{name}")
        with keep.catalog.write() as session:
            dataset_id = session.execute(
                select(Dataset.id).where(Dataset.name == name)
            ).scalar_one()
            session.add_all(
                Entry(
                    dataset_id=dataset_id,
                    path=p,
                    size=0,
                    sha256=bytes(32),
                    mtime_ns=0,
                    valid_from=1,
                )
                for p in paths
            )
        text = b"".join(keep.iter_manifest(f"proj/{name}")).decode()
        assert [p for p, _ in parse_manifest(text)] == sorted(paths, key=sort_key)

    check()


# -- the audit chain's anchor outside the catalog ---------------------------------------
def make_history(keep: Keep, tmp_path: Path) -> None:
    src = tmp_path / "buffer"
    make_files(src, 4)
    keep.ingest(src, "proj/s001")
    keep.seal("proj/s001")
    keep.verify("proj")
    (src / "more.txt").write_bytes(b"more")
    keep.ingest(src, "proj/s002")


def drop_event_triggers(keep: Keep) -> None:
    """What an attacker with rights on the database does first."""
    from sqlalchemy import text

    with keep.catalog.write() as session:
        if keep.catalog.dialect == "postgresql":
            session.execute(text("DROP TRIGGER events_no_update ON events"))
        else:
            session.execute(text("DROP TRIGGER events_no_update"))
            session.execute(text("DROP TRIGGER events_no_delete"))


def anchor_lines(keep: Keep) -> list[list[str]]:
    path = keep.tree.base / ".labkeep" / "audit-anchor.log"
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_chain_head_is_checkpointed_outside_the_catalog(
    keep: Keep, keep_root: Path, tmp_path: Path
) -> None:
    make_history(keep, tmp_path)
    newest = keep.events(limit=1)[0]
    lines = anchor_lines(keep)
    # a checkpoint with every version committed and every verify: id, hash, time
    assert len(lines) >= 4 and all(len(line) == 3 for line in lines)
    assert lines[-1][:2] == [str(newest["id"]), newest["hash"]]
    verify_event = keep.events(action="verify", limit=1)[0]
    assert [str(verify_event["id"]), verify_event["hash"]] in [line[:2] for line in lines]
    log = (keep_root / "logs").glob("verify_*.log")
    assert f"audit chain head: event {verify_event['id']} {verify_event['hash']}" in "".join(
        p.read_text() for p in log
    )
    check = keep.check_events()
    assert check.ok, check.message
    assert check.to_dict()["anchor"]["event_id"] == newest["id"]
    result = subprocess.run([sys.executable, "-m", "labkeep", "events", "--check", "--root",
                             str(keep_root)], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr


def rechain(keep: Keep) -> None:
    """Rewrite an old event, then recompute every hash after it, correctly."""
    from sqlalchemy import select, text

    from labkeep.catalog import Event
    from labkeep.ops.audit import GENESIS, HEAD_KEY, event_hash

    with keep.catalog.write() as session:
        rows = session.execute(select(Event).order_by(Event.id)).scalars().all()
        prev = GENESIS
        for row in rows:
            actor = "mallory" if row.id == rows[1].id else row.actor
            digest = event_hash(prev, row.at, actor, row.action, row.target, row.details)
            session.execute(
                text("UPDATE events SET actor = :a, prev_hash = :p, hash = :h WHERE id = :i"),
                {"a": actor, "p": prev, "h": digest, "i": row.id},
            )
            prev = digest
        session.execute(
            text("UPDATE keep_state SET value = :v WHERE key = :k"), {"v": prev, "k": HEAD_KEY}
        )


@pytest.mark.parametrize("tampering", ["delete-tail", "wipe", "wipe-and-anchor", "rechain"])
def test_events_check_catches_tampering_the_chain_alone_cannot(
    keep: Keep, keep_root: Path, tmp_path: Path, tampering: str
) -> None:
    from sqlalchemy import select, text

    from labkeep.catalog import Event
    from labkeep.ops.audit import HEAD_KEY

    make_history(keep, tmp_path)
    assert keep.check_events().ok
    drop_event_triggers(keep)
    with keep.catalog.write() as session:
        ids = [(i, h) for i, h in session.execute(select(Event.id, Event.hash).order_by(Event.id))]
        if tampering == "delete-tail":
            # cut the history after the first ingest; make the catalog's head match
            keep_id, keep_hash = next((i, h) for i, h in ids if i > 3)
            session.execute(text("DELETE FROM events WHERE id > :i"), {"i": keep_id})
            session.execute(text("UPDATE keep_state SET value = :v WHERE key = :k"),
                            {"v": keep_hash, "k": HEAD_KEY})  # fmt: skip
            expected = f"events after {keep_id} were removed"
        elif tampering.startswith("wipe"):
            session.execute(text("DELETE FROM events"))
            session.execute(text("DELETE FROM keep_state WHERE key = :k"), {"k": HEAD_KEY})
            expected = "empty"
    if tampering == "wipe-and-anchor":
        (keep.tree.base / ".labkeep" / "audit-anchor.log").unlink()
    if tampering == "rechain":
        rechain(keep)  # every hash recomputed: the chain itself is consistent again
        expected = "does not match the checkpoint"
    check = keep.check_events()
    assert not check.ok
    assert expected in check.message, check.message
    result = subprocess.run([sys.executable, "-m", "labkeep", "events", "--check", "--root",
                             str(keep_root)], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout and expected in result.stdout.replace("\n", " ")


def test_verify_merges_tree_and_catalog_in_byte_order(keep: Keep, tmp_path: Path) -> None:
    """Names that sort differently as paths and as strings ("a.txt" < "a/b" < "a0",
    non-ASCII after ASCII) are matched one to one, and an extra file among them is named."""
    src = tmp_path / "odd"
    names = ["a.txt", "a/b", "a/b.c/d", "a-b/c", "a0", "a", "é/x", "Z", "z/z", "a b/c"]
    for i, name in enumerate(names):
        if name == "a":
            continue  # a file and a folder of one name cannot both exist
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"%d" % i)
    keep.ingest(src, "proj/odd")
    report = keep.verify("proj/odd")
    assert report.info["states"] == {"ok": len(names) - 1, "modified": 0, "missing": 0, "extra": 0}
    extra = keep.tree.dataset_dir("proj", "odd") / "raw" / "a.u"
    extra.write_bytes(b"stray")
    report = keep.verify("proj/odd")
    assert [(r.state, r.path) for r in report.results if r.state != "ok"] == [("extra", "raw/a.u")]
