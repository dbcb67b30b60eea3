"""Faults are tests: a full disk, a flipped byte in a sealed file, --delete-source with
failures, --link, and a dataset that another process holds."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from labkeep import Keep
from labkeep.errors import Busy
from labkeep.integrity.immutable import get_immutable, set_immutable
from tests.conftest import make_files

ADDRESS = "proj/s001"


def labkeep(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labkeep", *args], capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def json_records(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def tree_files(keep: Keep, project: str = "proj", dataset: str = "s001") -> dict[str, bytes]:
    """Every file under the dataset's raw/ folder, read from the disk."""
    raw = keep.tree.dataset_dir(project, dataset) / "raw"
    found: dict[str, bytes] = {}
    for folder, _dirs, names in os.walk(raw):
        for name in names:
            path = Path(folder, name)
            found[path.relative_to(raw).as_posix()] = path.read_bytes()
    return found


def listed(keep: Keep, address: str = ADDRESS) -> dict[str, tuple[int, str]]:
    return {e["path"]: (e["size"], e["sha256"]) for e in keep.ls(address).items}


def expected(files: dict[str, bytes]) -> dict[str, tuple[int, str]]:
    return {f"raw/{rel}": (len(d), hashlib.sha256(d).hexdigest()) for rel, d in files.items()}


def sha256sum_check(folder: Path) -> int:
    """Run coreutils' check in the dataset folder; return how many files it found OK."""
    result = subprocess.run(["sha256sum", "--strict", "-c", "MANIFEST.sha256"], cwd=folder,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.count(": OK\n")


def assert_verifies(keep: Keep, n_files: int, address: str = ADDRESS) -> None:
    report = keep.verify(address)
    assert not report.failed, [r.to_dict() for r in report.results if r.state != "ok"]
    assert report.info["states"]["ok"] == n_files


# -- a full disk (small_disk: tests/conftest.py) -----------------------------------------
def test_full_disk_keeps_what_fits_and_reports_the_rest(
    tmp_path: Path, catalog_url: str | None, small_disk: Callable[[int], Path]
) -> None:
    disk = small_disk(5120)
    filler = disk / "filler"  # something else on the NAS, deleted later to free space
    filler.write_bytes(b"\0" * (2048 << 10))
    src = tmp_path / "buffer"
    src.mkdir()
    files: dict[str, bytes] = {}
    for i in range(3):  # 1.2 MB: space is reserved up front (posix_fallocate)
        files[f"stack{i}.tif"] = os.urandom(1_200_000)
    for i in range(10):  # 100 kB: the disk fills up while they are written
        files[f"small/s{i}.bin"] = os.urandom(100_000 + i)
    for rel, data in files.items():
        (src / rel).parent.mkdir(exist_ok=True)
        (src / rel).write_bytes(data)

    with Keep.init(tmp_path / "keep", catalog_url=catalog_url,
                   data_path=str(disk / "tree")) as keep:  # fmt: skip
        keep.create_project("proj")
        keep.config.batch_files = 3
        report = keep.ingest(src, ADDRESS)
        status = {r.path: r for r in report.results}
        assert len(report.results) == len(status) == len(files)
        fitted = {p for p, r in status.items() if r.status == "ok"}
        refused = {p for p, r in status.items() if r.status != "ok"}
        assert fitted and refused, "the test data should only partly fit"
        for path in refused:
            assert status[path].status == "error"
            assert "no space left" in (status[path].message or ""), status[path]
        # catalog rows and final names only for complete files; no partial file is left
        kept = {rel: data for rel, data in files.items() if f"raw/{rel}" in fitted}
        assert listed(keep) == expected(kept)
        assert tree_files(keep) == kept
        assert list(keep.tree.partial_dir("proj", "s001").iterdir()) == []
        assert_verifies(keep, len(kept))
        assert sha256sum_check(keep.tree.dataset_dir("proj", "s001")) == len(kept)
        assert [(v["version"], v["files"]) for v in keep.versions(ADDRESS)] == [(1, len(kept))]

        filler.unlink()
        again = keep.ingest(src, ADDRESS)
        assert not again.failed, [r.to_dict() for r in again.results if r.status != "ok"]
        assert {r.path for r in again.results if r.status == "ok"} == refused
        assert {r.path for r in again.results if r.status == "notneeded"} == fitted
        assert listed(keep) == expected(files)
        assert tree_files(keep) == files
        assert_verifies(keep, len(files))
        assert sha256sum_check(keep.tree.dataset_dir("proj", "s001")) == len(files)
        assert [(v["version"], v["files"]) for v in keep.versions(ADDRESS)] == [
            (1, len(kept)),
            (2, len(files)),
        ]


def test_disk_full_when_the_manifest_is_written(
    tmp_path: Path, small_disk: Callable[[int], Path]
) -> None:
    """The last file fills the disk to the byte: the manifest cannot be written. The
    ingest stops with a clear error (not a traceback), nothing is lost, and once space is
    freed the same command finishes."""
    disk = small_disk(2048)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (64 << 10))
    root = tmp_path / "keep"
    src = tmp_path / "buffer"
    src.mkdir()
    (src / "first.txt").write_bytes(b"the first file")
    with Keep.init(root, data_path=str(disk / "tree")) as keep:
        keep.create_project("proj")
        keep.ingest(src, ADDRESS)
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        assert free > 1 << 20
        last = os.urandom(free)
        (src / "last.bin").write_bytes(last)

        full = labkeep("ingest", str(src), ADDRESS, "--root", str(root), "--json")
        assert os.statvfs(disk).f_bavail == 0
        assert "Traceback" not in full.stderr, full.stderr
        assert full.returncode == 3, full.stderr
        assert "no space left" in full.stderr.lower()
        error = json_records(full)[-1]
        assert error["status"] == "error" and "no space left" in error["message"].lower()
        # the file is complete and registered; the version stays open until the re-run
        assert listed(keep) == expected({"first.txt": b"the first file", "last.bin": last})
        assert tree_files(keep)["last.bin"] == last
        assert [v["version"] for v in keep.versions(ADDRESS)] == [1]
        assert list(keep.tree.dataset_dir("proj", "s001").glob(".MANIFEST*")) == []

        filler.unlink()
        done = labkeep("ingest", str(src), ADDRESS, "--root", str(root), "--json")
        assert done.returncode == 0, done.stderr
        assert json_records(done)[-1]["version"] == 2
        assert [v["version"] for v in keep.versions(ADDRESS)] == [1, 2]
        assert_verifies(keep, 2)
        assert sha256sum_check(keep.tree.dataset_dir("proj", "s001")) == 2


# -- a flipped byte in a sealed file ---------------------------------------------------
def test_verify_names_a_flipped_byte_in_a_sealed_file(
    keep: Keep, keep_root: Path, tmp_path: Path
) -> None:
    src = tmp_path / "buffer"
    files = make_files(src, 6, min_size=10)
    report = keep.ingest(src, ADDRESS, seal=True)
    assert report.info["seal"]["status"] == "ok"
    victim = keep.tree.dataset_dir("proj", "s001") / "raw/d1/sub1/f0001.bin"
    # an attacker with root: clear the immutable flag and the read-only bit, flip a byte
    if get_immutable(str(victim)):
        set_immutable(str(victim), False)
    victim.chmod(0o644)
    with open(victim, "r+b") as handle:
        handle.seek(5)
        byte = handle.read(1)
        handle.seek(5)
        handle.write(bytes([byte[0] ^ 0x40]))
    assert victim.read_bytes() != files["d1/sub1/f0001.bin"]

    human = labkeep("verify", ADDRESS, "--root", str(keep_root))
    assert human.returncode == 1, human.stdout + human.stderr
    problems = [line for line in human.stdout.splitlines() if line.startswith("MODIFIED")]
    assert len(problems) == 1 and "proj/s001/raw/d1/sub1/f0001.bin" in problems[0]
    assert "SHA-256" in problems[0]

    machine = labkeep("verify", ADDRESS, "--root", str(keep_root), "--json")
    assert machine.returncode == 1
    records = json_records(machine)
    bad = [r for r in records if r.get("state") not in (None, "ok")]
    assert [(r["path"], r["state"], r["status"]) for r in bad] == [
        ("raw/d1/sub1/f0001.bin", "modified", "error")
    ]
    assert records[-1]["states"] == {"ok": 5, "modified": 1, "missing": 0, "extra": 0}


# -- --delete-source --------------------------------------------------------------------
class GrowWhileCopying:
    """A progress hook that starts appending to a file once the scan is done, as an
    instrument still writing would."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._append, daemon=True)

    def _append(self) -> None:
        # a few MB/s, far slower than a copy: the copy reaches the end, then sees the change
        with open(self.path, "ab") as handle:
            for _ in range(20_000):
                if self.stop.wait(0.001):
                    return
                handle.write(b"x" * 4096)
                handle.flush()

    def start(self, total_files: int, total_bytes: int) -> None:
        self.thread.start()

    def advance(self, files: int, nbytes: int) -> None:
        pass

    def join(self) -> None:
        self.stop.set()
        self.thread.join()


def test_delete_source_only_for_registered_and_verified_copies(keep: Keep, tmp_path: Path) -> None:
    earlier = tmp_path / "earlier"
    (earlier / "conflict").mkdir(parents=True)
    (earlier / "conflict/a.txt").write_bytes(b"first")
    (earlier / "same.txt").write_bytes(b"same content")
    keep.ingest(earlier, ADDRESS)

    src = tmp_path / "buffer"
    files = make_files(src, 12)
    (src / "conflict").mkdir()
    (src / "conflict/a.txt").write_bytes(b"second, longer")  # conflicts with the dataset
    (src / "same.txt").write_bytes(b"same content")  # already there, identical
    (src / "late").mkdir()
    growing = src / "late/growing.bin"
    growing.write_bytes(os.urandom(8 << 20))
    hook = GrowWhileCopying(growing)
    try:
        report = keep.ingest(src, ADDRESS, delete_source=True, progress=hook)
    finally:
        hook.join()
    by_path = {r.path: r for r in report.results}
    assert len(by_path) == len(report.results) == 15

    # copied, registered, re-read: the source is gone
    for rel in files:
        record = by_path[f"raw/{rel}"]
        assert (record.status, record.extra.get("source_deleted")) == ("ok", True), record
        assert not (src / rel).exists()
    same = by_path["raw/same.txt"]
    assert (same.status, same.extra.get("source_deleted")) == ("notneeded", True)
    assert not (src / "same.txt").exists()
    # failed: the source stays
    assert by_path["raw/conflict/a.txt"].status == "error"
    assert "different content" in (by_path["raw/conflict/a.txt"].message or "")
    assert (src / "conflict/a.txt").read_bytes() == b"second, longer"
    assert by_path["raw/late/growing.bin"].status == "error"
    assert "changed while it was read" in (by_path["raw/late/growing.bin"].message or "")
    assert growing.stat().st_size > 8 << 20
    # what was deleted is exactly what the catalog and the tree hold
    registered = expected({**files, "conflict/a.txt": b"first", "same.txt": b"same content"})
    assert listed(keep) == registered
    assert tree_files(keep) == {**files, "conflict/a.txt": b"first", "same.txt": b"same content"}
    assert_verifies(keep, len(registered))
    # emptied folders are removed, folders still holding files and the root stay
    assert sorted(p.relative_to(src).as_posix() for p in src.rglob("*")) == [
        "conflict", "conflict/a.txt", "late", "late/growing.bin",
    ]  # fmt: skip

    # the instrument finished; the conflicting file is dealt with; run again
    (src / "conflict/a.txt").unlink()
    final = growing.read_bytes()
    again = keep.ingest(src, ADDRESS, delete_source=True)
    assert [(r.path, r.status, r.extra.get("source_deleted")) for r in again.results] == [
        ("raw/late/growing.bin", "ok", True)
    ]
    assert src.is_dir() and list(src.iterdir()) == []
    assert tree_files(keep)["late/growing.bin"] == final


# -- --link -----------------------------------------------------------------------------
def test_link_shares_the_inode_and_delete_source_removes_only_the_source_link(
    keep: Keep, tmp_path: Path
) -> None:
    src = tmp_path / "buffer"
    files = make_files(src, 6)
    report = keep.ingest(src, ADDRESS, link=True)
    assert report.counts() == {"ok": 6}
    raw = keep.tree.dataset_dir("proj", "s001") / "raw"
    for rel in files:
        mine, theirs = (raw / rel).stat(), (src / rel).stat()
        assert (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino), rel
        assert mine.st_nlink == 2
    assert listed(keep) == expected(files)
    assert_verifies(keep, 6)

    src2 = tmp_path / "buffer2"
    files2 = make_files(src2, 5, seed=2)
    inodes = {rel: (src2 / rel).stat().st_ino for rel in files2}
    report = keep.ingest(src2, "proj/s002", link=True, delete_source=True)
    assert [r.extra.get("source_deleted") for r in report.results] == [True] * 5
    raw2 = keep.tree.dataset_dir("proj", "s002") / "raw"
    for rel, data in files2.items():
        assert not (src2 / rel).exists()
        st = (raw2 / rel).stat()
        assert (st.st_ino, st.st_nlink) == (inodes[rel], 1), rel
        assert (raw2 / rel).read_bytes() == data
    assert src2.is_dir() and list(src2.iterdir()) == []
    assert listed(keep, "proj/s002") == expected(files2)
    assert_verifies(keep, 5, "proj/s002")


def test_link_over_names_already_taken_in_raw(keep: Keep, tmp_path: Path) -> None:
    """A name in raw/ the catalog does not know (left by hand): a file is replaced by the
    source's link, as a copy would replace it; a folder is reported and kept."""
    src = tmp_path / "buffer"
    files = make_files(src, 4)
    keep.create_dataset(ADDRESS)
    raw = keep.tree.dataset_dir("proj", "s001") / "raw"
    taken, folder = sorted(files)[:2]
    (raw / taken).parent.mkdir(parents=True, exist_ok=True)
    (raw / taken).write_bytes(b"left here by hand")
    (raw / folder).mkdir(parents=True)
    (raw / folder / "inside.txt").write_bytes(b"keep me")
    report = keep.ingest(src, ADDRESS, link=True)
    by_path = {r.path: r for r in report.results}
    assert by_path[f"raw/{folder}"].status == "error"
    assert "a folder of that name is already in the dataset" in by_path[f"raw/{folder}"].message
    assert (raw / folder / "inside.txt").read_bytes() == b"keep me"
    assert report.counts() == {"ok": 3, "error": 1}
    assert (raw / taken).stat().st_ino == (src / taken).stat().st_ino
    assert (raw / taken).read_bytes() == files[taken]
    assert listed(keep) == {k: v for k, v in expected(files).items() if k != f"raw/{folder}"}
    assert not list((raw.parent / ".labkeep" / "partial").iterdir())


# -- busy ---------------------------------------------------------------------------------
def test_second_ingest_fails_at_once_while_the_dataset_is_locked(
    keep: Keep, keep_root: Path, tmp_path: Path
) -> None:
    src = tmp_path / "buffer"
    files = make_files(src, 4)
    keep.create_dataset(ADDRESS)
    with keep.tree.lock("proj", "s001", what="test"):
        started = time.monotonic()
        other = labkeep("ingest", str(src), ADDRESS, "--root", str(keep_root), "--json",
                        timeout=60)  # fmt: skip
        elapsed = time.monotonic() - started
        assert other.returncode == 4, other.stdout + other.stderr
        assert elapsed < 30
        [record] = json_records(other)
        assert (record["status"], record["error"]) == ("error", "busy")
        assert "proj/s001 is busy: another labkeep process" in record["message"]
        assert "proj/s001 is busy" in other.stderr
        with pytest.raises(Busy, match="another labkeep process"):
            keep.ingest(src, ADDRESS)
        assert keep.ls(ADDRESS).items == []
        assert not (keep.tree.dataset_dir("proj", "s001") / "raw").exists()
    assert keep.versions(ADDRESS) == []
    assert keep.ingest(src, ADDRESS).counts() == {"ok": len(files)}


# -- temp files: never data, cleaned by the next run ------------------------------------
LEGACY_PART = ".MANIFEST.sha256.0123456789abcdef0123456789abcdef.part"


def plant_leftovers(dataset: Path) -> list[Path]:
    """What crashed runs of this and older labkeep versions leave in a dataset folder."""
    planted = [
        dataset / LEGACY_PART,  # an older labkeep wrote the manifest's temp file beside it
        dataset / ".labkeep/partial/0a1b2c3d4e5f-7",
        dataset / ".labkeep/tmp/MANIFEST.sha256.feedfacefeedfacefeedfacefeedface.part",
    ]
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a manifest")
    return planted


@pytest.mark.parametrize("command", ["verify", "ingest", "manifest", "seal", "unseal"])
def test_every_run_on_a_dataset_cleans_the_temp_files_of_crashed_runs(
    keep: Keep, tmp_path: Path, command: str
) -> None:
    src = tmp_path / "buffer"
    files = make_files(src, 5)
    keep.ingest(src, ADDRESS)
    dataset = keep.tree.dataset_dir("proj", "s001")
    if command == "unseal":
        keep.seal(ADDRESS)
    planted = plant_leftovers(dataset)
    {
        "verify": lambda: keep.verify(ADDRESS),
        "ingest": lambda: keep.ingest(src, ADDRESS),
        "manifest": lambda: keep.write_manifest(ADDRESS),
        "seal": lambda: keep.seal(ADDRESS),
        "unseal": lambda: keep.unseal(ADDRESS, force=True),
    }[command]()
    assert [p for p in planted if p.exists()] == []
    assert_verifies(keep, len(files))


def test_verify_reports_user_files_but_not_labkeeps_own_temp_files(
    keep: Keep, keep_root: Path, tmp_path: Path
) -> None:
    src = tmp_path / "buffer"
    files = make_files(src, 5)
    keep.ingest(src, ADDRESS)
    dataset = keep.tree.dataset_dir("proj", "s001")
    plant_leftovers(dataset)
    # files of people that only look like labkeep's: they are data, and are reported
    (dataset / "raw" / LEGACY_PART).write_bytes(b"a user's file")
    (dataset / ".MANIFEST.sha256.notes.part").write_bytes(b"a user's file")
    (dataset / "README.txt").write_bytes(b"a user's file")
    result = labkeep("verify", ADDRESS, "--root", str(keep_root), "--json")
    assert result.returncode == 1, result.stderr
    extra = sorted(r["path"] for r in json_records(result) if r.get("state") == "extra")
    assert extra == [f"raw/{LEGACY_PART}"]
    # outside raw/ a file is part of the dataset's working tree: not saved yet, not damage
    unsaved = sorted(r["path"] for r in json_records(result) if r.get("state") == "unsaved")
    assert unsaved == [".MANIFEST.sha256.notes.part", "README.txt"]
    states = {"ok": len(files), "modified": 0, "missing": 0, "extra": 1, "unsaved": 2}
    assert json_records(result)[-1]["states"] == states
    assert not (dataset / LEGACY_PART).exists()


def test_status_names_datasets_with_extra_files_and_manifest_drift(
    keep: Keep, keep_root: Path, tmp_path: Path
) -> None:
    src = tmp_path / "buffer"
    make_files(src, 5)
    keep.ingest(src, ADDRESS)
    keep.ingest(src, "proj/s002")
    assert not keep.verify("proj").failed
    # the metadata extraction that each ingest queued, run as a worker would
    import io

    from labkeep.ops.worker import JobWorker

    JobWorker(keep, drain=True, log=io.StringIO(), schedule=False).run()
    assert keep.status()["attention"] == []
    assert keep.status(deep=True)["attention"] == []

    # a stray file in one dataset, a hand-edited manifest in the other
    (keep.tree.dataset_dir("proj", "s001") / "raw/stray.txt").write_bytes(b"not ingested")
    manifest = keep.tree.manifest_path("proj", "s002")
    manifest.write_text(manifest.read_text().replace("raw/", "raw/x", 1))
    # without a verify run, only the deep status (one manifest read per dataset) sees drift
    deep = keep.status(deep=True)
    assert [d["dataset"] for d in deep["manifest_drift"]] == ["proj/s002"]
    assert any("proj/s002" in line and "manifest" in line for line in deep["attention"])

    assert keep.verify("proj").failed
    info = keep.status()
    problems = {p["dataset"]: p for p in info["verify_problems"]}
    assert set(problems) == {"proj/s001", "proj/s002"}
    assert problems["proj/s001"]["extra"] == 1
    assert problems["proj/s002"]["manifest"] == "modified"
    assert (info["extra_files"], info["manifests_not_matching"]) == (1, 1)
    assert any("proj/s001" in line and "EXTRA 1" in line for line in info["attention"])
    assert any("proj/s002" in line and "manifest" in line for line in info["attention"])
    human = labkeep("status", "--root", str(keep_root))
    assert "all well" not in human.stdout
    assert "proj/s001" in human.stdout and "proj/s002" in human.stdout

    (keep.tree.dataset_dir("proj", "s001") / "raw/stray.txt").unlink()
    keep.write_manifest("proj/s002")
    assert not keep.verify("proj").failed
    assert keep.status()["verify_problems"] == []
    assert keep.status(deep=True)["attention"] == []


# -- seal / unseal / ingest on a tree protected behind the catalog's back --------------
def test_protection_without_a_record_is_named_and_cleared(keep: Keep, tmp_path: Path) -> None:
    """An older labkeep's interrupted seal (no intent recorded) or a hand-made chattr:
    the catalog says unsealed, parts of raw/ are write-protected."""
    src = tmp_path / "buffer"
    files = make_files(src, 8)
    keep.ingest(src, ADDRESS)
    raw = keep.tree.dataset_dir("proj", "s001") / "raw"
    protected = [raw / "top0000.dat", raw / "d1/sub1/f0001.bin", raw]
    for path in protected:
        path.chmod(0o555 if path.is_dir() else 0o444)
    can_flag = True
    try:
        for path in protected:
            set_immutable(str(path), True)
    except OSError:
        can_flag = False  # read-only bits only (no effect on root: ingest then works)
    (src / "more.txt").write_bytes(b"more")
    if can_flag:
        for link in (False, True):
            report = keep.ingest(src, ADDRESS, link=link)
            [bad] = [r for r in report.results if r.status == "error"]
            assert bad.path == "raw/more.txt"
            assert "write-protected" in (bad.message or "")
            assert "labkeep seal proj/s001" in (bad.message or "")
            assert "labkeep unseal --force proj/s001" in (bad.message or "")
    result = keep.unseal(ADDRESS, force=True)
    assert result.status == "ok", result
    assert "write-protected" in (result.message or "")
    for path in protected:
        assert path.stat().st_mode & 0o200 and not get_immutable(str(path)), path
    assert keep.events(action="unseal-repair", limit=1)[0]["details"]["cleared"] >= 3
    assert keep.unseal(ADDRESS, force=True).status == "notneeded"
    assert keep.ingest(src, ADDRESS).counts().get("error", 0) == 0
    assert_verifies(keep, len(files) + 1)

    # and the other way round: a sealed dataset whose protection was removed by hand
    keep.seal(ADDRESS)
    if can_flag:
        set_immutable(str(raw / "top0000.dat"), False)
    (raw / "top0000.dat").chmod(0o644)
    again = keep.seal(ADDRESS)
    assert again.status == "ok" and "protected again" in (again.message or "")
    assert (raw / "top0000.dat").stat().st_mode & 0o222 == 0
    assert get_immutable(str(raw / "top0000.dat")) is can_flag
    assert keep.seal(ADDRESS).status == "notneeded"


# -- re-ingest compares with the tree and restores from a good source -------------------
def flip_byte(path: Path, offset: int = 5) -> None:
    """Bit rot: one byte changes, the size and the mtime stay."""
    before = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x40]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_reingest_after_verify_restores_a_flipped_byte(
    keep: Keep, keep_root: Path, tmp_path: Path
) -> None:
    src = tmp_path / "buffer"
    files = make_files(src, 9, min_size=10)
    keep.ingest(src, ADDRESS, seal=True)
    victim = keep.tree.dataset_dir("proj", "s001") / "raw/d1/sub1/f0001.bin"
    if get_immutable(str(victim)):
        set_immutable(str(victim), False)
    victim.chmod(0o644)
    flip_byte(victim)
    victim.chmod(0o444)
    assert victim.read_bytes() != files["d1/sub1/f0001.bin"]

    assert labkeep("verify", ADDRESS, "--root", str(keep_root)).returncode == 1
    keep.unseal(ADDRESS, force=True)
    result = labkeep("ingest", str(src), ADDRESS, "--root", str(keep_root), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    records = json_records(result)
    by_path = {r["path"]: r for r in records[:-1]}
    assert by_path["raw/d1/sub1/f0001.bin"]["status"] == "ok"
    assert by_path["raw/d1/sub1/f0001.bin"]["repaired"] is True
    assert "restored" in by_path["raw/d1/sub1/f0001.bin"]["message"]
    assert records[-1]["summary"] == {"ok": 1, "notneeded": len(files) - 1}
    assert records[-1]["repaired"] == 1
    assert victim.read_bytes() == files["d1/sub1/f0001.bin"]
    assert tree_files(keep) == files
    assert labkeep("verify", ADDRESS, "--root", str(keep_root)).returncode == 0
    # restored with the catalog's mtime: the quick check trusts it again, nothing to do
    assert keep.ingest(src, ADDRESS).counts() == {"notneeded": len(files)}
    assert keep.events(action="ingest", limit=1)[0]["details"]["repaired"] == 1


def test_reingest_restores_deleted_and_truncated_files(keep: Keep, tmp_path: Path) -> None:
    src = tmp_path / "buffer"
    files = make_files(src, 9, min_size=10)
    keep.ingest(src, ADDRESS)
    raw = keep.tree.dataset_dir("proj", "s001") / "raw"
    (raw / "top0000.dat").unlink()
    with open(raw / "d2/sub0/f0002.bin", "r+b") as handle:
        handle.truncate(3)
    touched = raw / "d1/sub1/f0001.bin"  # intact, but its mtime changed
    mtime = touched.stat().st_mtime_ns
    os.utime(touched, ns=(mtime, mtime + 10**9))
    versions = keep.versions(ADDRESS)
    report = keep.ingest(src, ADDRESS)
    repaired = {r.path for r in report.results if r.extra.get("repaired")}
    assert repaired == {"raw/top0000.dat", "raw/d2/sub0/f0002.bin"}
    assert report.counts() == {"ok": 2, "notneeded": len(files) - 2}
    assert touched.stat().st_mtime_ns == mtime  # re-hashed, intact: the mtime is put back
    assert report.info["repaired"] == 2
    assert tree_files(keep) == files
    assert keep.versions(ADDRESS) == versions  # the dataset's content did not change
    assert listed(keep) == expected(files)
    assert_verifies(keep, len(files))
    assert sha256sum_check(keep.tree.dataset_dir("proj", "s001")) == len(files)


def test_reingest_from_a_different_source_does_not_overwrite(keep: Keep, tmp_path: Path) -> None:
    src = tmp_path / "buffer"
    files = make_files(src, 6, min_size=10)
    keep.ingest(src, ADDRESS)
    raw = keep.tree.dataset_dir("proj", "s001") / "raw"
    with open(raw / "d1/sub1/f0001.bin", "r+b") as handle:
        handle.truncate(4)
    (raw / "d2/sub0/f0002.bin").unlink()
    other = tmp_path / "other"
    make_files(other, 6, seed=9, min_size=10)  # the same names, other content
    report = keep.ingest(other, ADDRESS)
    by_path = {r.path: r for r in report.results}
    for path in ("raw/d1/sub1/f0001.bin", "raw/d2/sub0/f0002.bin", "raw/top0000.dat"):
        assert by_path[path].status == "error", by_path[path]
        assert "different content" in (by_path[path].message or "")
    assert report.info.get("repaired", 0) == 0
    # nothing in the tree was replaced by the other source's bytes
    assert (raw / "d1/sub1/f0001.bin").read_bytes() == files["d1/sub1/f0001.bin"][:4]
    assert not (raw / "d2/sub0/f0002.bin").exists()
    assert (raw / "top0000.dat").read_bytes() == files["top0000.dat"]
    assert list(keep.tree.partial_dir("proj", "s001").iterdir()) == []
    assert listed(keep) == expected(files)
