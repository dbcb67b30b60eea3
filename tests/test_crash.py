"""SIGKILL an ingest at many points, resume it, and check catalog == tree == manifest.

The ingest runs as a real ``python -m labkeep ingest --json`` process and is killed with
SIGKILL (no cleanup code runs) when it reaches a crash point: while copies are in flight,
after it has reported k files, while a multi-MB file sits in ``.labkeep/partial``, or at
random times. Right after the kill we check what a crash may leave (never a final name
on incomplete content, never a catalog row without its content); then the same ingest
is run again to completion and everything must agree with the source.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from labkeep import Keep
from labkeep.catalog import Dataset, Entry, Project, Version
from tests.conftest import make_files, unseal_tree

ADDRESS = "proj/s001"
BATCH_FILES = 5
BIG = 3 << 20


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """200 small files of varied sizes in nested folders plus two multi-MB ones: 40 and
    more batches of 5 files. The tests only read it."""
    src = tmp_path_factory.mktemp("crash") / "buffer"
    files = make_files(src, 200, seed=3, max_size=12000)
    rng = random.Random(5)
    for i in range(2):
        rel = f"big/stack{i}.tif"
        files[rel] = rng.randbytes(BIG + i)
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(files[rel])
    return src, files


@pytest.fixture
def keep_root(tmp_path: Path, catalog_url: str | None) -> Iterator[Path]:
    """A keep (on SQLite or PostgreSQL) whose labkeep.toml asks for batches of 5 files."""
    root = tmp_path / "keep"
    with Keep.init(root, catalog_url=catalog_url) as keep:
        keep.create_project("proj")
    config = root / "labkeep.toml"
    text = config.read_text()
    assert "batch_files = 2000" in text
    config.write_text(text.replace("batch_files = 2000", f"batch_files = {BATCH_FILES}"))
    yield root
    unseal_tree(root)


class IngestProcess:
    """``labkeep ingest SRC proj/s001 --json`` in a child process, read line by line."""

    def __init__(
        self, src: Path, root: Path, command: list[str] | None = None, *options: str
    ) -> None:
        self.stderr_path = root.parent / f"ingest-stderr-{time.monotonic_ns()}.txt"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        args = ["ingest", str(src), ADDRESS, "--root", str(root), "--json", *options]
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [*(command or [sys.executable, "-m", "labkeep"]), *args],
                stdout=subprocess.PIPE, stderr=stderr, env=env,
            )  # fmt: skip
        self.records: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.endswith(b"\n"):  # a line cut by the kill is not a record
                self.records.append(json.loads(line))

    def ok_paths(self) -> list[str]:
        return [r["path"] for r in list(self.records) if r.get("status") == "ok"]

    def kill_when(self, condition: Callable[[], bool], timeout: float = 60) -> bool:
        """SIGKILL the process as soon as *condition* holds; False if it ended first."""
        deadline = time.monotonic() + timeout
        killed = False
        while self.proc.poll() is None:
            if condition():
                os.kill(self.proc.pid, signal.SIGKILL)
                killed = True
                break
            if time.monotonic() > deadline:
                self.proc.kill()
                self.wait()
                pytest.fail("crash point not reached in time: " + self.stderr())
            time.sleep(0.0005)
        self.wait()
        return killed and self.proc.returncode == -signal.SIGKILL

    def wait(self) -> int:
        code = self.proc.wait(timeout=120)
        self._reader.join(timeout=30)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def partials(root: Path) -> list[os.DirEntry[str]]:
    folder = root / "data" / ADDRESS / ".labkeep" / "partial"
    try:
        with os.scandir(folder) as it:
            return list(it)
    except FileNotFoundError:
        return []


# crash points
def _any_partial(root: Path) -> bool:
    return bool(partials(root))


def _reported(ingest: IngestProcess, k: int) -> bool:
    return len(ingest.ok_paths()) >= k


def _past(deadline: float) -> bool:
    return time.monotonic() >= deadline


class CopyingFor:
    """True once copies have been running for *seconds* (time counted from the first
    partial file seen)."""

    def __init__(self, root: Path, seconds: float) -> None:
        self.root = root
        self.seconds = seconds
        self.since: float | None = None

    def __call__(self) -> bool:
        if self.since is None and partials(self.root):
            self.since = time.monotonic()
        return self.since is not None and time.monotonic() - self.since >= self.seconds


def _big_partial(root: Path) -> bool:
    for entry in partials(root):
        try:
            if entry.stat().st_size >= BIG:
                return True
        except FileNotFoundError:
            continue
    return False


def tree_files(root: Path) -> dict[str, bytes]:
    raw = root / "data" / ADDRESS / "raw"
    found: dict[str, bytes] = {}
    for folder, _dirs, names in os.walk(raw):
        for name in names:
            path = Path(folder, name)
            found[path.relative_to(raw).as_posix()] = path.read_bytes()
    return found


def dataset_id(session: Session) -> int:
    return int(
        session.execute(
            select(Dataset.id)
            .join(Project, Project.id == Dataset.project_id)
            .where(Project.name == "proj", Dataset.name == "s001")
        ).scalar_one()
    )


def catalog_rows(keep: Keep) -> list[tuple[str, int, str, int, int | None]]:
    """Every entry row of the dataset: (path, size, sha256, valid_from, valid_to)."""
    with keep.catalog.read() as session:
        rows = session.execute(
            select(Entry.path, Entry.size, Entry.sha256, Entry.valid_from, Entry.valid_to).where(
                Entry.dataset_id == dataset_id(session)
            )
        ).all()
    return [(p, s, d.hex(), f, t) for p, s, d, f, t in rows]


def open_versions(keep: Keep) -> list[int]:
    with keep.catalog.read() as session:
        return list(
            session.execute(
                select(Version.number).where(
                    Version.dataset_id == dataset_id(session), Version.state == "open"
                )
            ).scalars()
        )


def expected_entries(files: dict[str, bytes]) -> dict[str, tuple[int, str]]:
    return {f"raw/{rel}": (len(d), hashlib.sha256(d).hexdigest()) for rel, d in files.items()}


def assert_crash_safe(root: Path, files: dict[str, bytes], shown_ok: list[str]) -> set[str]:
    """What a SIGKILL may leave: rows only for complete files, final names only on
    complete content. Returns the paths that have catalog rows."""
    expected = expected_entries(files)
    on_disk = tree_files(root)
    for rel, data in on_disk.items():
        assert data == files[rel], f"final name on incomplete or wrong content: raw/{rel}"
    with Keep.open(root) as keep:
        rows = catalog_rows(keep)
    paths = [r[0] for r in rows]
    assert [p for p, n in Counter(paths).items() if n > 1] == []
    for path, size, digest, _from, _to in rows:
        assert (size, digest) == expected[path], path
        assert path.removeprefix("raw/") in on_disk, f"catalog row without content: {path}"
    assert set(shown_ok) <= set(paths), "a file was reported ok before its row was committed"
    return set(paths)


def assert_consistent(root: Path, files: dict[str, bytes]) -> None:
    """After the resumed ingest: catalog == tree == manifest == source."""
    expected = expected_entries(files)
    with Keep.open(root) as keep:
        rows = catalog_rows(keep)
        # every source file registered exactly once, with its size and SHA-256
        assert [p for p, n in Counter(r[0] for r in rows).items() if n > 1] == []
        assert {p: (s, d) for p, s, d, _f, _t in rows} == expected
        assert {(f, t) for *_, f, t in rows} == {(1, None)}
        # the tree holds exactly the source's bytes, no partial files are left
        assert tree_files(root) == files
        assert partials(root) == []
        folder = keep.tree.dataset_dir("proj", "s001")
        check = subprocess.run(["sha256sum", "--strict", "-c", "MANIFEST.sha256"], cwd=folder,
                               capture_output=True, text=True)  # fmt: skip
        assert check.returncode == 0, check.stdout[-2000:] + check.stderr
        assert check.stdout.count(": OK\n") == len(files)
        report = keep.verify(ADDRESS)
        assert not report.failed, [r.to_dict() for r in report.results if r.state != "ok"]
        assert report.info["states"] == {"ok": len(files), "modified": 0, "missing": 0,
                                         "extra": 0}  # fmt: skip
        # one committed version, nothing left open, and an intact audit chain
        versions = keep.versions(ADDRESS)
        assert [(v["version"], v["files"]) for v in versions] == [(1, len(files))]
        assert versions[0]["bytes"] == sum(map(len, files.values()))
        assert open_versions(keep) == []
        assert keep.check_events().ok
        ingest_events = keep.events(action="ingest", limit=None)
        assert [e["details"]["version"] for e in ingest_events] == [1]


def resume(root: Path, src: Path, files: dict[str, bytes], registered: set[str],
           shown_ok: list[str]) -> dict[str, Any]:  # fmt: skip
    """Run the same ingest again in-process; check its records against the crash state."""
    with Keep.open(root) as keep:
        assert keep.config.batch_files == BATCH_FILES
        had_open_version = bool(open_versions(keep))
        report = keep.ingest(src, ADDRESS)
    assert not report.failed, [r.to_dict() for r in report.results if r.status != "ok"]
    status = {r.path: r.status for r in report.results}
    assert len(report.results) == len(status) == len(files)
    # what was committed before the crash is not copied or registered again
    assert {p for p, s in status.items() if s == "notneeded"} == registered
    assert {p for p, s in status.items() if s == "ok"} == set(expected_entries(files)) - registered
    assert set(shown_ok) <= registered
    assert report.info["version"] == 1
    event = keep_events_last_ingest(root)
    # the version opened by the killed run is the one the resumed run commits
    assert event["details"]["resumed"] is had_open_version
    assert had_open_version is bool(registered)
    return {r.path: r.extra for r in report.results}


def keep_events_last_ingest(root: Path) -> dict[str, Any]:
    with Keep.open(root) as keep:
        return keep.events(action="ingest", limit=1)[0]


CRASH_POINTS = ["copying", "reported-1", "reported-7", "reported-40", "reported-120", "big-file"]
#: every crash point on SQLite, a few on PostgreSQL (whose server rolls back the killed
#: client's transaction instead of SQLite's journal recovery)
CASES = [("sqlite", p) for p in CRASH_POINTS] + [("postgresql", p) for p in ("copying", "big-file")]


@pytest.mark.parametrize(("catalog_url", "point"), CASES, indirect=["catalog_url"])
def test_sigkill_then_resume(
    point: str, keep_root: Path, source: tuple[Path, dict[str, bytes]]
) -> None:
    src, files = source
    ingest = IngestProcess(src, keep_root)
    if point == "copying":
        condition = functools.partial(_any_partial, keep_root)
    elif point == "big-file":
        condition = functools.partial(_big_partial, keep_root)
    else:
        condition = functools.partial(_reported, ingest, int(point.removeprefix("reported-")))
    assert ingest.kill_when(condition), "the ingest finished before the crash point"
    assert not any("summary" in r for r in ingest.records)
    shown_ok = ingest.ok_paths()
    registered = assert_crash_safe(keep_root, files, shown_ok)
    if point.startswith("reported-"):
        assert len(registered) >= int(point.removeprefix("reported-"))
    assert len(registered) < len(files)
    resume(keep_root, src, files, registered, shown_ok)
    assert_consistent(keep_root, files)


@pytest.mark.slow
def test_sigkill_at_random_points_repeatedly(
    keep_root: Path, source: tuple[Path, dict[str, bytes]]
) -> None:
    """Kill, resume, kill the resumed run, ...: each crash lands somewhere else."""
    src, files = source
    rng = random.Random(20260)
    kills = 0
    shown: list[str] = []
    finished = False
    for _attempt in range(6):
        ingest = IngestProcess(src, keep_root)
        mode = rng.random()
        if mode < 0.25:
            # from interpreter start-up through opening the catalog, scanning, copying
            condition: Callable[[], bool] = functools.partial(
                _past, time.monotonic() + rng.uniform(0.0, 0.6)
            )
        elif mode < 0.6:
            condition = CopyingFor(keep_root, rng.uniform(0.0, 0.25))
        else:
            condition = functools.partial(_reported, ingest, rng.randint(1, 30))
        killed = ingest.kill_when(condition)
        shown += ingest.ok_paths()
        registered = assert_crash_safe(keep_root, files, shown)
        if not killed:  # this attempt ran to the end before its crash point
            assert ingest.proc.returncode == 0, ingest.stderr()
            finished = True
            break
        kills += 1
    with Keep.open(keep_root) as keep:
        # a kill that came after the version's commit leaves nothing to resume
        committed = registered == set(expected_entries(files)) and not open_versions(keep)
    assert kills >= 3, "too few attempts were actually killed mid-way"
    if not finished and not committed:
        resume(keep_root, src, files, registered, shown)
    assert_consistent(keep_root, files)


def _any_final(root: Path) -> bool:
    """A file has its final name below raw/ (--link names files there directly)."""
    return any(names for _f, _d, names in os.walk(root / "data" / ADDRESS / "raw"))


@pytest.mark.parametrize("point", ["linking", "reported-7", "reported-60"])
def test_sigkill_of_a_linking_ingest_then_resume(
    point: str, keep_root: Path, source: tuple[Path, dict[str, bytes]]
) -> None:
    """--link names each file at its final place at once (no partial file): a kill leaves
    names only for the source's own bytes, and the resumed run adopts them."""
    src, files = source
    ingest = IngestProcess(src, keep_root, None, "--link")
    if point == "linking":
        condition = functools.partial(_any_final, keep_root)
    else:
        condition = functools.partial(_reported, ingest, int(point.removeprefix("reported-")))
    assert ingest.kill_when(condition), "the ingest finished before the crash point"
    shown_ok = ingest.ok_paths()
    registered = assert_crash_safe(keep_root, files, shown_ok)
    assert len(registered) < len(files)
    raw = keep_root / "data" / ADDRESS / "raw"
    orphans = {f"raw/{rel}" for rel in tree_files(keep_root)} - registered
    with Keep.open(keep_root) as keep:
        report = keep.ingest(src, ADDRESS, link=True)
    assert not report.failed, [r.to_dict() for r in report.results if r.status != "ok"]
    status = {r.path: r.status for r in report.results}
    assert {p for p, s in status.items() if s == "notneeded"} == registered
    resumed = {r.path for r in report.results if r.extra.get("resumed")}
    assert resumed == orphans
    assert_consistent(keep_root, files)
    # every tree file is the source's inode: linked, never copied
    for rel in files:
        assert (raw / rel).stat().st_ino == (src / rel).stat().st_ino, rel


CRASH_BEFORE_COMMIT = """
import os, signal, sys
from labkeep.cli import main
from labkeep.ops import ingest

calls = 0
open_version = ingest._IngestRun._open_version

def crash_on_third_batch(self, session):
    # called inside the batch's catalog transaction, after its files were renamed
    # into place and the renames made durable: die before the commit
    global calls
    calls += 1
    if calls == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return open_version(self, session)

ingest._IngestRun._open_version = crash_on_third_batch
sys.argv[0] = "labkeep"
main()
"""


def test_crash_between_rename_and_commit_is_adopted_without_copying(
    keep_root: Path, source: tuple[Path, dict[str, bytes]]
) -> None:
    src, files = source
    ingest = IngestProcess(src, keep_root, [sys.executable, "-c", CRASH_BEFORE_COMMIT])
    assert ingest.wait() == -signal.SIGKILL, ingest.stderr()
    shown_ok = ingest.ok_paths()
    registered = assert_crash_safe(keep_root, files, shown_ok)
    assert len(registered) >= 2 * BATCH_FILES  # two batches were committed
    raw = keep_root / "data" / ADDRESS / "raw"
    orphans = {f"raw/{rel}" for rel in tree_files(keep_root)} - registered
    assert orphans, "the crash left no final file without a catalog row"
    inodes = {path: (raw.parent / path).stat().st_ino for path in orphans}
    extras = resume(keep_root, src, files, registered, shown_ok)
    # the orphans were adopted (re-hashed in place), not copied again
    assert {p for p, extra in extras.items() if extra.get("resumed")} == orphans
    assert {path: (raw.parent / path).stat().st_ino for path in orphans} == inodes
    assert_consistent(keep_root, files)


# -- kills at exact points: the manifest's fsync and rename, seal and unseal -------------
#: ``python -c KILL_AT POINT N labkeep ARGS...``: labkeep's CLI, SIGKILLed by itself at the
#: N-th call of one system call (patched here, in the test, not in labkeep):
#: ``manifest-fsync`` (the fsync of the manifest's temp file), ``manifest-rename`` (its
#: rename onto MANIFEST.sha256), ``chmod`` (a mode change below raw/: seal and unseal)
KILL_AT = """
import os, signal, sys

point, nth = sys.argv[1], int(sys.argv[2])
del sys.argv[1:3]
calls = 0


def hit():
    global calls
    calls += 1
    if calls == nth:
        os.kill(os.getpid(), signal.SIGKILL)


def manifest_temp(fd):
    try:
        name = os.path.basename(os.readlink(f"/proc/self/fd/{int(fd)}"))
    except (OSError, TypeError, ValueError):
        return False
    return "MANIFEST.sha256" in name and name != "MANIFEST.sha256"


real_fsync, real_replace, real_rename, real_chmod = os.fsync, os.replace, os.rename, os.chmod


def fsync(fd):
    if point == "manifest-fsync" and manifest_temp(fd):
        hit()
    return real_fsync(fd)


def onto_manifest(real):
    def move(src, dst, **kwargs):
        if point == "manifest-rename" and os.path.basename(os.fspath(dst)) == "MANIFEST.sha256":
            hit()
        return real(src, dst, **kwargs)
    return move


def chmod(path, mode, **kwargs):
    if point == "chmod" and "/raw" in os.fspath(path):
        hit()
    return real_chmod(path, mode, **kwargs)


os.fsync, os.chmod = fsync, chmod
os.replace, os.rename = onto_manifest(real_replace), onto_manifest(real_rename)
from labkeep.cli import main

sys.argv[0] = "labkeep"
main()
"""


def killed_at(point: str, nth: int = 1) -> list[str]:
    return [sys.executable, "-c", KILL_AT, point, str(nth)]


def leftovers(dataset: Path) -> list[str]:
    """Files in a dataset folder that are neither data (raw/), nor the manifest, nor the
    dataset's lock: what a crash may leave behind."""
    found = []
    for folder, _dirs, names in os.walk(dataset):
        for name in names:
            rel = Path(folder, name).relative_to(dataset).as_posix()
            if not rel.startswith("raw/") and rel not in ("MANIFEST.sha256", ".labkeep/lock"):
                found.append(rel)
    return found


MANIFEST_KILLS = [("sqlite", "manifest-fsync"), ("sqlite", "manifest-rename"),
                  ("postgresql", "manifest-rename")]  # fmt: skip


@pytest.mark.parametrize(("catalog_url", "point"), MANIFEST_KILLS, indirect=["catalog_url"])
def test_kill_while_the_manifest_is_written_leaves_nothing_behind(
    point: str, keep_root: Path, source: tuple[Path, dict[str, bytes]]
) -> None:
    src, files = source
    ingest = IngestProcess(src, keep_root, killed_at(point))
    assert ingest.wait() == -signal.SIGKILL, ingest.stderr()
    shown_ok = ingest.ok_paths()
    registered = assert_crash_safe(keep_root, files, shown_ok)
    assert registered == set(expected_entries(files))  # every row is in; the version open
    dataset = keep_root / "data" / ADDRESS
    assert any("MANIFEST" in name for name in leftovers(dataset)), leftovers(dataset)
    # the next run that takes the dataset's lock (here: verify) removes it, and never
    # reports labkeep's own temp file as data
    with Keep.open(keep_root) as keep:
        report = keep.verify(ADDRESS)
    assert [r.path for r in report.results if r.state == "extra"] == []
    assert report.info["states"]["ok"] == len(files)
    assert leftovers(dataset) == []
    resume(keep_root, src, files, registered, shown_ok)
    assert_consistent(keep_root, files)
    assert leftovers(dataset) == []


@pytest.mark.parametrize("point", ["manifest-fsync", "manifest-rename"])
def test_kill_while_the_manifest_command_writes(
    point: str, keep_root: Path, tmp_path: Path
) -> None:
    src = tmp_path / "buffer"
    files = make_files(src, 12)
    with Keep.open(keep_root) as keep:
        keep.ingest(src, ADDRESS)
    dataset = keep_root / "data" / ADDRESS
    manifest = (dataset / "MANIFEST.sha256").read_bytes()
    args = ["manifest", ADDRESS, "--root", str(keep_root)]
    killed = subprocess.run([*killed_at(point), *args], capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert leftovers(dataset), "the kill left no temp file: the test would prove nothing"
    assert (dataset / "MANIFEST.sha256").read_bytes() == manifest  # the old one, whole
    again = subprocess.run([sys.executable, "-m", "labkeep", *args], capture_output=True,
                           timeout=120)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert leftovers(dataset) == []
    assert (dataset / "MANIFEST.sha256").read_bytes() == manifest
    with Keep.open(keep_root) as keep:
        assert keep.verify(ADDRESS).info["states"] == {"ok": len(files), "modified": 0,
                                                        "missing": 0, "extra": 0}  # fmt: skip


# -- seal and unseal converge from any interrupted state ---------------------------------
#: "immutable": as root on ext4 (chattr +i works); "bits-only": the same processes without
#: CAP_LINUX_IMMUTABLE, as on a filesystem or for a user where only read-only bits work
PROTECTIONS = ["immutable", "bits-only"]
#: before the first mode change, after 8 files and folders were protected (or cleared),
#: and with the whole tree done, when the manifest is renamed into place
SEAL_KILLS = [("chmod", 1), ("chmod", 9), ("manifest-rename", 1)]


def run_cli(prefix: list[str], root: Path, *args: str,
            kill: tuple[str, int] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    command = killed_at(*kill) if kill else [sys.executable, "-m", "labkeep"]
    return subprocess.run([*prefix, *command, *args, "--root", str(root), "--json"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def last_record(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines, result.stderr
    record: dict[str, Any] = json.loads(lines[-1])
    return record


def raw_paths(root: Path) -> list[str]:
    raw = root / "data" / ADDRESS / "raw"
    found = [str(raw)]
    for folder, dirs, names in os.walk(raw):
        found += [os.path.join(folder, name) for name in dirs + names]
    return found


def assert_sealed(root: Path, protection: str) -> None:
    from labkeep.integrity.immutable import get_immutable

    with Keep.open(root) as keep:
        assert keep.get_dataset(ADDRESS).sealed
        report = keep.verify(ADDRESS)
        assert not report.failed, [r.to_dict() for r in report.results if r.state != "ok"]
    for path in raw_paths(root):
        assert os.lstat(path).st_mode & 0o222 == 0, path
        assert get_immutable(path) is (protection == "immutable"), path
    assert leftovers(root / "data" / ADDRESS) == []  # nothing half-done is recorded


def assert_unsealed(root: Path) -> None:
    from labkeep.integrity.immutable import get_immutable

    with Keep.open(root) as keep:
        assert not keep.get_dataset(ADDRESS).sealed
        report = keep.verify(ADDRESS)
        assert not report.failed, [r.to_dict() for r in report.results if r.state != "ok"]
    for path in raw_paths(root):
        assert os.lstat(path).st_mode & 0o200, path
        assert not get_immutable(path), path
    assert leftovers(root / "data" / ADDRESS) == []


#: every kill point on SQLite, one of them also without the immutable flag and one on
#: PostgreSQL
CONVERGE_CASES = [("sqlite", *kill, "immutable") for kill in SEAL_KILLS] + [
    ("sqlite", "chmod", 9, "bits-only"),
    ("postgresql", "chmod", 9, "immutable"),
]


class Actions:
    """ingest, seal and unseal to completion: in this process (as root, with the immutable
    flag) or, for "bits-only", as CLI processes without CAP_LINUX_IMMUTABLE."""

    def __init__(self, root: Path, protection: str) -> None:
        self.root = root
        self.prefix = [] if protection == "immutable" else [
            "setpriv", "--bounding-set=-linux_immutable"
        ]  # fmt: skip
        if self.prefix and shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is needed to drop CAP_LINUX_IMMUTABLE")

    def run(self, *args: str) -> dict[str, Any]:
        result = run_cli(self.prefix, self.root, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        return last_record(result)

    def ingest(self, src: Path) -> dict[str, Any]:
        if self.prefix:
            return self.run("ingest", str(src), ADDRESS)
        with Keep.open(self.root) as keep:
            return keep.ingest(src, ADDRESS).summary()

    def seal(self) -> dict[str, Any]:
        if self.prefix:
            return self.run("seal", ADDRESS)
        with Keep.open(self.root) as keep:
            return keep.seal(ADDRESS).to_dict()

    def unseal(self) -> dict[str, Any]:
        if self.prefix:
            return self.run("unseal", ADDRESS, "--force")
        with Keep.open(self.root) as keep:
            return keep.unseal(ADDRESS, force=True).to_dict()

    def kill(self, *args: str, point: str, nth: int) -> None:
        killed = run_cli(self.prefix, self.root, *args, kill=(point, nth))
        assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr


@pytest.mark.parametrize(
    ("catalog_url", "point", "nth", "protection"), CONVERGE_CASES, indirect=["catalog_url"]
)
def test_killed_seal_and_unseal_converge(
    protection: str, point: str, nth: int, keep_root: Path, tmp_path: Path
) -> None:
    act = Actions(keep_root, protection)
    src = tmp_path / "buffer"
    files = make_files(src, 24)
    assert act.ingest(src)["summary"] == {"ok": len(files)}
    if act.seal()["immutable"] is not (protection == "immutable"):
        pytest.skip(f"chattr +i does not behave as '{protection}' needs here")
    assert act.unseal()["status"] == "ok"
    dataset = keep_root / "data" / ADDRESS
    kill = {"point": point, "nth": nth}

    # 1. a seal killed half way: ingest refuses with a clear error; the seal, run again,
    # finishes it
    act.kill("seal", ADDRESS, **kill)
    with Keep.open(keep_root) as keep:
        assert not keep.get_dataset(ADDRESS).sealed
    (src / "more.txt").write_bytes(b"more")
    refused = run_cli(act.prefix, keep_root, "ingest", str(src), ADDRESS)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    said = last_record(refused)["message"] + last_record(refused).get("hint", "")
    assert "labkeep seal" in said and "labkeep unseal --force" in said, said
    assert not (dataset / "raw/more.txt").exists()
    (src / "more.txt").unlink()
    assert act.seal()["status"] == "ok"
    assert_sealed(keep_root, protection)

    # 2. an unseal killed half way: the unseal, run again, finishes it
    act.kill("unseal", ADDRESS, "--force", **kill)
    assert act.unseal()["status"] == "ok"
    assert_unsealed(keep_root)

    # 3. a seal killed half way, undone: the catalog never said sealed; unseal --force
    # clears what the seal had done and says so
    act.kill("seal", ADDRESS, **kill)
    undone = act.unseal()
    assert undone["status"] == "ok" and "interrupted seal" in undone["message"], undone
    assert_unsealed(keep_root)
    (src / "more.txt").write_bytes(b"more")
    assert act.ingest(src)["summary"] == {"ok": 1, "notneeded": len(files)}

    # 4. an unseal killed half way, then seal: sealed again
    assert act.seal()["status"] == "ok"
    act.kill("unseal", ADDRESS, "--force", **kill)
    resealed = act.seal()
    assert resealed["status"] == "ok" and "interrupted" in resealed["message"], resealed
    assert_sealed(keep_root, protection)
