"""Property tests (Hypothesis): the manifest format, path and name rules, and a state
machine that drives ingest/seal against a plain dict model of a dataset's history."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from labkeep import Keep
from labkeep.errors import SealedError, UsageError
from labkeep.integrity.manifest import format_line, format_manifest, parse_manifest
from labkeep.names import (
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    address_text,
    check_relpath,
    check_slug,
    parse_address,
)
from labkeep.storage import TreeStore
from tests.conftest import unseal_tree

FAST = settings(max_examples=200, deadline=None, database=None)
#: no "explain" phase where examples use real files: it re-runs them under a tracer
NO_EXPLAIN = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
REAL_FILES = settings(max_examples=25, deadline=None, database=None, phases=NO_EXPLAIN,
                      suppress_health_check=[HealthCheck.too_slow])  # fmt: skip

# -- strategies -------------------------------------------------------------------------
#: characters an instrument may put in a file name: anything but NUL and '/', with the
#: ones that need escaping in a manifest (or quoting in a shell) drawn often
HOSTILE = st.sampled_from(["\\", "\n", "\r", " ", "*", "\t", "-", ":", "@", "1", "é", "日",
                           "\u200b", "\U0001f52c", ".", "~", "$", "'", '"'])  # fmt: skip
NAME_CHAR = st.one_of(
    HOSTILE, st.characters(exclude_characters="\x00/", exclude_categories=("Cs",))
)
names = (
    st.lists(NAME_CHAR, min_size=1, max_size=16)
    .map("".join)
    .filter(lambda n: n not in (".", "..") and len(n.encode()) <= MAX_NAME_BYTES)
)
relpaths = st.lists(names, min_size=1, max_size=4).map("/".join)
digests = st.binary(min_size=32, max_size=32).map(bytes.hex)

#: pieces that try to escape a dataset or confuse a parser
NASTY = st.sampled_from(["..", ".", "", "/", "\x00", "\\", "..\\..", "~", "a", "b.txt",
                         "\udcff", "@1", "@", " ", "\n", ".labkeep", "%2e%2e"])  # fmt: skip
nasty_paths = st.one_of(
    st.text(max_size=12),
    st.lists(st.one_of(NASTY, st.text(max_size=3)), max_size=6).map("/".join),
    relpaths,
)


def scratch_base() -> str | None:
    """/dev/shm where there is one: the keeps made here test logic, not the disk, and on
    a RAM file system their many fsyncs cost nothing (None: the default temp folder)."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def safe_relpath(path: str) -> bool:
    """The documented rule for a path inside a dataset (see names.check_relpath)."""
    if not path or "\x00" in path or path.startswith("/"):
        return False
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return len(encoded) <= MAX_PATH_BYTES and all(
        part not in ("", ".", "..") and len(part.encode()) <= MAX_NAME_BYTES
        for part in path.split("/")
    )


def documented_slug(name: str) -> bool:
    """DESIGN.md: lowercase letters, digits, '.', '_', '-'; starts with a letter or digit;
    at most 64 characters. check_slug also refuses '..' anywhere in a name."""
    return re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", name) is not None and ".." not in name


def inside(base: str, path: str) -> bool:
    return os.path.normpath(path).startswith(base.rstrip("/") + "/")


# -- the manifest format ----------------------------------------------------------------
@FAST
@given(st.dictionaries(relpaths, digests, max_size=8))
def test_manifest_round_trips(entries: dict[str, str]) -> None:
    text = format_manifest(entries.items())
    parsed = list(parse_manifest(text))
    assert dict(parsed) == entries
    assert [p for p, _ in parsed] == sorted(entries, key=lambda p: p.encode())
    # one line per file: names with newlines never break a line
    assert text.count("\n") == len(entries)


@FAST
@given(relpaths, digests)
def test_manifest_line_round_trips(path: str, digest: str) -> None:
    line = format_line(digest, path)
    assert line.endswith("\n") and line.count("\n") == 1
    assert line.startswith("\\") == any(c in path for c in "\\\n\r")
    assert list(parse_manifest(line)) == [(path, digest)]


def test_sha256sum_checks_manifests_of_hostile_names(tmp_path: Path) -> None:
    """Real files with hostile names, ingested by labkeep, checked by coreutils."""
    with tempfile.TemporaryDirectory(dir=scratch_base()) as scratch, \
            Keep.init(Path(scratch) / "keep") as keep:  # fmt: skip
        keep.create_project("proj")
        counter = itertools.count(1)

        @REAL_FILES
        @given(st.lists(names, min_size=1, max_size=4, unique=True), names)
        def check(file_names: list[str], folder: str) -> None:
            assume(folder not in file_names)
            n = next(counter)
            src = tmp_path / f"src{n}"
            files: dict[str, bytes] = {}
            for i, name in enumerate(file_names):
                rel = name if i % 2 == 0 else f"{folder}/{name}"
                files[rel] = name.encode() + b"\n" + os.urandom(i * 37)
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                (src / rel).write_bytes(files[rel])
            report = keep.ingest(src, f"proj/s{n:04d}")
            assert report.counts() == {"ok": len(files)}, [r.to_dict() for r in report.results]
            dataset = keep.tree.dataset_dir("proj", f"s{n:04d}")
            manifest = (dataset / "MANIFEST.sha256").read_text(encoding="utf-8")
            assert dict(parse_manifest(manifest)) == {
                f"raw/{rel}": hashlib.sha256(data).hexdigest() for rel, data in files.items()
            }
            result = subprocess.run(["sha256sum", "--strict", "-c", "MANIFEST.sha256"],
                                    cwd=dataset, capture_output=True)  # fmt: skip
            assert result.returncode == 0, (result.stdout, result.stderr)
            assert result.stdout.count(b": OK\n") == len(files)

        check()


# -- paths and names --------------------------------------------------------------------
@FAST
@given(nasty_paths)
@example("a" * (MAX_NAME_BYTES + 1))
@example("é" * 128)
@example(("a" * 200 + "/") * 10 + "a" * 60)
@example("/etc/passwd")
@example("a/../../b")
def test_check_relpath_accepts_exactly_the_safe_paths(path: str) -> None:
    try:
        result = check_relpath(path)
    except UsageError:
        assert not safe_relpath(path)
        return
    assert safe_relpath(path)
    assert result == path
    assert inside("/keep/data/proj/ds", os.path.join("/keep/data/proj/ds", result))


@FAST
@given(nasty_paths)
def test_tree_paths_stay_inside_the_dataset(path: str) -> None:
    store = TreeStore(Path("/keep/data"))
    dataset = str(store.dataset_dir("proj", "ds"))
    try:
        result = str(store.file_path("proj", "ds", path))
    except UsageError:
        return
    assert inside(dataset, result)
    assert os.path.normpath(result) == result  # no '.', '..' or '//' left to resolve
    assert Path(result).relative_to(dataset).parts[0] != ".labkeep"  # labkeep's own folder


slug_like = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,5}", fullmatch=True)
addresses = st.one_of(
    st.text(max_size=20),
    st.tuples(
        st.lists(st.one_of(NASTY, slug_like, st.text(max_size=3)), max_size=6).map("/".join),
        st.sampled_from(["", "@1", "@", "@01", "@1\n", "@\u0663", "/"]),
    ).map("".join),
)


@pytest.mark.parametrize("suffix", ["-1", "abc", "1.5", "0x2", " 3"])
def test_something_after_at_that_is_no_version_is_named_as_such(suffix: str) -> None:
    for text in (f"proj/seg@{suffix}", f"proj@{suffix}"):
        with pytest.raises(UsageError, match="is not a version") as caught:
            parse_address(text)
        assert "dataset name" not in caught.value.message
    # in a file's path "@" is just a character
    assert parse_address(f"proj/seg/raw/scan@{suffix}").path == f"raw/scan@{suffix}"


@FAST
@given(addresses)
@example("proj\n")
@example("proj/ds\n")
@example("proj/ds/raw/x@1\n")
def test_parse_address_never_accepts_an_escape(text: str) -> None:
    try:
        addr = parse_address(text)
    except UsageError:
        return
    assert documented_slug(addr.project)
    assert addr.dataset is None or documented_slug(addr.dataset)
    if addr.path is not None:
        assert addr.dataset is not None
        assert safe_relpath(addr.path)
        assert inside("/keep/data/p/d", os.path.join("/keep/data/p/d", addr.path))
    assert addr.version is None or addr.version >= 0


slugs = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,63}", fullmatch=True).filter(documented_slug)


@FAST
@given(slugs, slugs, relpaths, st.one_of(st.none(), st.integers(0, 10**6)))
@example("proj", "ds", "raw/x@1\n", None)
@example("proj", "ds", "raw/x@\u0663", None)
@example("proj", "ds", "raw/scan@2", None)
@example("proj", "ds", "raw/x@", None)
@example("proj", "ds", "raw/x@", 3)
def test_addresses_round_trip(project: str, dataset: str, path: str, version: int | None) -> None:
    """Any parts written with address_text read back as exactly those parts (routes rely
    on it: a file named scan@2 is a file, not version 2 of its folder)."""
    addr = parse_address(address_text(project, dataset, path, version))
    assert (addr.project, addr.dataset, addr.path, addr.version) == (
        project, dataset, path, version,
    )  # fmt: skip
    # typed by hand, an address needs the closing '@' only when the path looks versioned
    if version is not None or not re.search(r"@[0-9]*\Z", path):
        text = f"{project}/{dataset}/{path}" + ("" if version is None else f"@{version}")
        assert parse_address(text) == addr


@FAST
@given(st.one_of(st.text(max_size=70), slugs, st.from_regex(r"[a-z0-9._\-]{0,66}\n?",
                                                          fullmatch=True)))  # fmt: skip
@example("a" * 64)
@example("a" * 65)
@example("abc\n")
@example("a..b")
def test_check_slug_accepts_exactly_the_documented_pattern(name: str) -> None:
    try:
        check_slug(name)
    except UsageError:
        assert not documented_slug(name)
    else:
        assert documented_slug(name)


# -- a state machine: ingest and seal against a dict model ------------------------------
ADDRESS = "proj/s001"
#: a small pool of names, so that rules meet the same path again (no name is a folder of
#: another, as on a real disk)
POOL = ["a.txt", "b/c.bin", "b/d.dat", "deep/er/x", "with space", "back\\slash",
        "new\nline", "ünï.txt", "-dash", "*star"]  # fmt: skip


#: a keep with project and dataset, made once and copied for each example (faster than
#: creating the catalog every time)
TEMPLATE: dict[str, Path] = {}


@pytest.fixture(scope="module", autouse=True)
def template_keep() -> Iterator[None]:
    with tempfile.TemporaryDirectory(dir=scratch_base()) as scratch:
        with Keep.init(Path(scratch) / "keep") as keep:
            keep.create_project("proj")
            keep.create_dataset(ADDRESS)
        TEMPLATE["keep"] = Path(scratch) / "keep"
        yield
        TEMPLATE.clear()


class IngestMachine(RuleBasedStateMachine):
    """An instrument buffer that changes between ingests; the model is a dict per
    committed version."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="labkeep-stateful-", dir=scratch_base()))
        shutil.copytree(TEMPLATE["keep"], self.tmp / "keep")
        self.keep = Keep.open(self.tmp / "keep")
        self.keep.config.batch_files = 2
        self.buffer = self.tmp / "buffer"
        self.buffer.mkdir()
        self.mtime_ns = 1_700_000_000 * 10**9
        self.source: dict[str, bytes] = {}  # what the buffer holds now
        self.current: dict[str, bytes] = {}  # what the dataset holds now
        self.history: list[tuple[str, dict[str, bytes]]] = []  # (kind, files) per version
        self.sealed = False

    def teardown(self) -> None:
        self.keep.close()
        unseal_tree(self.tmp)
        shutil.rmtree(self.tmp)

    def _write(self, name: str, content: bytes) -> None:
        path = self.buffer / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        self.mtime_ns += 10**9  # every write gets a new mtime, as on a real instrument
        os.utime(path, ns=(self.mtime_ns, self.mtime_ns))
        self.source[name] = content

    def _ingest(self) -> None:
        """Ingest the buffer and check every record and the new version against the model."""
        if self.sealed:
            with pytest.raises(SealedError):
                self.keep.ingest(self.buffer, ADDRESS)
            return
        report = self.keep.ingest(self.buffer, ADDRESS)
        expected = {}
        for name, content in self.source.items():
            if name not in self.current:
                expected[f"raw/{name}"] = "ok"
            elif self.current[name] == content:
                expected[f"raw/{name}"] = "notneeded"
            else:  # changed content at an existing path is refused, never replaced
                expected[f"raw/{name}"] = "error"
        assert {r.path: r.status for r in report.results} == expected
        assert len(report.results) == len(expected)
        new = {n: c for n, c in self.source.items() if n not in self.current}
        if new:
            self.current.update(new)
            self.history.append(("ingest", dict(self.current)))
            assert report.info["version"] == len(self.history)
        else:
            assert "version" not in report.info

    @precondition(lambda self: len(self.source) < len(POOL))
    @rule(data=st.data())
    def ingest_new_files(self, data: st.DataObject) -> None:
        free = [n for n in POOL if n not in self.source]
        for name in data.draw(st.lists(st.sampled_from(free), min_size=1, max_size=3)):
            self._write(name, data.draw(st.binary(max_size=40)))
        self._ingest()

    @rule(data=st.data())
    def ingest_again_unchanged(self, data: st.DataObject) -> None:
        """Re-ingest; some files the dataset holds were written again, same content."""
        held = sorted(set(self.current) & set(self.source))
        for name in data.draw(st.lists(st.sampled_from(held), max_size=2)) if held else []:
            self._write(name, self.current[name])
        self._ingest()

    @precondition(lambda self: bool(self.current))
    @rule(data=st.data())
    def ingest_changed_content(self, data: st.DataObject) -> None:
        """New content at a path the dataset already holds: refused, the rest goes on."""
        name = data.draw(st.sampled_from(sorted(self.current)))
        content = data.draw(st.binary(max_size=40).filter(lambda c: c != self.current[name]))
        self._write(name, content)
        self._ingest()

    @precondition(lambda self: bool(self.source))
    @rule(data=st.data())
    def buffer_is_cleaned(self, data: st.DataObject) -> None:
        """The instrument's buffer loses a file: the dataset keeps it."""
        name = data.draw(st.sampled_from(sorted(self.source)))
        (self.buffer / name).unlink()
        del self.source[name]

    @rule()
    def seal(self) -> None:
        result = self.keep.seal(ADDRESS)
        if self.sealed:
            assert result.status == "notneeded"
            return
        assert result.status == "ok"
        self.history.append(("seal", dict(self.current)))
        assert result.version == len(self.history)
        self.sealed = True

    @precondition(lambda self: self.sealed)
    @rule()
    def unseal(self) -> None:
        result = self.keep.unseal(ADDRESS, force=True, reason="stateful test")
        assert result.status == "ok"
        self.history.append(("unseal", dict(self.current)))
        self.sealed = False

    @invariant()
    def every_version_matches_the_model(self) -> None:
        versions = self.keep.versions(ADDRESS)
        assert [(v["version"], v["kind"], v["files"]) for v in versions] == [
            (i, kind, len(files)) for i, (kind, files) in enumerate(self.history, start=1)
        ]
        for number, (_kind, files) in enumerate(self.history, start=1):
            listing = self.keep.ls(f"{ADDRESS}@{number}").items
            assert {e["path"]: e["sha256"] for e in listing} == digests_of(files)

    @invariant()
    def head_and_tree_match_the_model(self) -> None:
        listing = self.keep.ls(ADDRESS).items
        assert {e["path"]: e["sha256"] for e in listing} == digests_of(self.current)
        raw = self.keep.tree.dataset_dir("proj", "s001") / "raw"
        on_disk = {
            Path(folder, name).relative_to(raw).as_posix(): Path(folder, name).read_bytes()
            for folder, _dirs, files in os.walk(raw)
            for name in files
        }
        assert on_disk == self.current


def digests_of(files: dict[str, bytes]) -> dict[str, str]:
    return {f"raw/{name}": hashlib.sha256(data).hexdigest() for name, data in files.items()}


IngestMachine.TestCase.settings = settings(
    max_examples=15, stateful_step_count=12, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=NO_EXPLAIN,  # re-running a failing machine under a tracer takes minutes
)  # fmt: skip
TestIngestMachine = IngestMachine.TestCase
