"""A Hypothesis state machine: save / restore / diff / get of a working tree against a
dict-of-versions model, writes in place (same size, other bytes included: the quick
check's blind spot), removals and folders: the temporal table's ``valid_to`` path."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from labkeep import Keep
from labkeep.errors import UsageError
from tests.conftest import unseal_tree

PATHS = ["a.txt", "b.txt", "d/c.txt", "d/e/f.txt"]
#: equal sizes with other bytes on purpose ("x"/"y", "ab"/"ba")
CONTENTS = [b"", b"x", b"y", b"ab", b"ba", b"hello world"]

Snapshot = dict[str, bytes]


def model_diff(old: Snapshot, new: Snapshot) -> list[tuple[str, str]]:
    out = []
    for path in sorted(old.keys() | new.keys(), key=lambda p: p.encode()):
        if path not in new:
            out.append(("removed", path))
        elif path not in old:
            out.append(("added", path))
        elif old[path] != new[path]:
            out.append(("modified", path))
    return out


def make_machine(new_catalog: Callable[[], str | None]) -> type[RuleBasedStateMachine]:
    counter = itertools.count()

    class Versions(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.base = Path(tempfile.mkdtemp(prefix="lk-model-"))
            self.keep = Keep.init(self.base / "keep", catalog_url=new_catalog())
            self.keep.create_project("proj")
            self.name = f"ds{next(counter)}"
            self.keep.create_dataset(f"proj/{self.name}", kind="analysis")
            self.root = self.keep.tree.dataset_dir("proj", self.name)
            self.versions: list[Snapshot] = []
            self.working: Snapshot = {}

        @property
        def address(self) -> str:
            return f"proj/{self.name}"

        @property
        def head(self) -> Snapshot:
            return self.versions[-1] if self.versions else {}

        def teardown(self) -> None:
            self.keep.close()
            unseal_tree(self.base)
            shutil.rmtree(self.base, ignore_errors=True)

        # -- changes to the working tree ------------------------------------------------
        @rule(path=st.sampled_from(PATHS), content=st.sampled_from(CONTENTS))
        def write(self, path: str, content: bytes) -> None:
            target = self.root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as handle:  # in place, the same inode
                handle.write(content)
            self.working[path] = content

        @precondition(lambda self: bool(self.working))
        @rule(data=st.data())
        def remove(self, data: st.DataObject) -> None:
            path = data.draw(st.sampled_from(sorted(self.working)))
            os.unlink(self.root / path)
            del self.working[path]

        # -- labkeep ---------------------------------------------------------------------
        @rule()
        def save(self) -> None:
            report = self.keep.save(self.address)
            if self.working == self.head:
                assert report.info["version"] is None
            else:
                assert report.info["version"] == len(self.versions) + 1
                self.versions.append(dict(self.working))

        @precondition(lambda self: bool(self.versions))
        @rule(data=st.data(), force=st.booleans())
        def restore(self, data: st.DataObject, force: bool) -> None:
            n = data.draw(st.integers(1, len(self.versions)))
            dirty = self.working != self.head
            if dirty and not force:
                with pytest.raises(UsageError, match="not saved"):
                    self.keep.restore(f"{self.address}@{n}")
                return
            report = self.keep.restore(f"{self.address}@{n}", force=force)
            if dirty:  # saved first
                self.versions.append(dict(self.working))
            target = self.versions[n - 1]
            if target != self.head:
                assert report.info["version"] == len(self.versions) + 1
                self.versions.append(dict(target))
            else:
                assert report.info["version"] is None
            self.working = dict(target)

        @precondition(lambda self: bool(self.versions))
        @rule(data=st.data())
        def diff(self, data: st.DataObject) -> None:
            a = data.draw(st.integers(1, len(self.versions)))
            b = data.draw(st.integers(1, len(self.versions)))
            got = [
                (c.status, c.path) for c in self.keep.diff(f"{self.address}@{a}", f"@{b}").changes
            ]
            assert got == model_diff(self.versions[a - 1], self.versions[b - 1])

        @precondition(lambda self: bool(self.versions))
        @rule(data=st.data())
        def get(self, data: st.DataObject) -> None:
            n = data.draw(st.integers(1, len(self.versions)))
            expected = self.versions[n - 1]
            if not expected:
                return  # an empty version: nothing to copy
            dest = self.base / f"get-{next(counter)}"
            report = self.keep.export(f"{self.address}@{n}", dest)
            assert not report.failed
            found = {
                str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()
            }
            assert found == expected

        @invariant()
        def manifest_is_the_catalogs(self) -> None:
            from labkeep.catalog import Dataset
            from labkeep.ops.manifests import manifest_text

            manifest = self.root / "MANIFEST.sha256"
            if not manifest.exists():
                return
            with self.keep.catalog.read() as session:
                dataset_id = session.query(Dataset.id).filter(Dataset.name == self.name).scalar()
                assert manifest.read_text() == manifest_text(session, dataset_id)

        @invariant()
        def working_tree_is_the_model(self) -> None:
            on_disk = {
                str(p.relative_to(self.root)): p.read_bytes()
                for p in self.root.rglob("*")
                if p.is_file() and ".labkeep" not in p.parts and p.name != "MANIFEST.sha256"
            }
            assert on_disk == self.working

    return Versions


@pytest.mark.timeout(600)
def test_versions_behave_like_a_dict_of_snapshots(
    catalog_url: str | None, request: pytest.FixtureRequest
) -> None:
    if catalog_url is None:
        machine = make_machine(lambda: None)
    else:  # a fresh PostgreSQL database per example
        machine = make_machine(request.getfixturevalue("pg_server").create_database)
    examples = 25 if catalog_url is None else 8
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
