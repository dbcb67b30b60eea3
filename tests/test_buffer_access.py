"""Who may browse a watched buffer and import a folder of it (the web's "import this
folder"), and that jobs never read outside the buffers shown to the person who queued
them: workers read with the service account's rights."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkeep import Keep
from labkeep.errors import Forbidden, NotFound, UsageError
from labkeep.ops.worker import JobWorker
from tests.conftest import make_files

PASSWORD = "a long enough password 1"


@pytest.fixture
def lab(keep: Keep, tmp_path: Path) -> Iterator[tuple[Keep, Keep, Keep, Path]]:
    """A buffer with two acquisitions shown to group "lab"; alice is in it, bob is not."""
    buffer = tmp_path / "buffer"
    for run in ("run-1", "run-2"):
        make_files(buffer / run, 4, seed=len(run) + int(run[-1]))
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "x.txt").write_text("not for alice")
    keep.create_group("lab")
    for name in ("alice", "bob"):
        keep.add_user(name, password=PASSWORD)
    keep.set_member("lab", "alice", "member")
    keep.create_project("screen", group="lab")
    keep.add_watch(str(buffer), name="confocal", ready="marker:.done")
    alice = keep.acting_as(keep.principal_for("alice"))
    bob = keep.acting_as(keep.principal_for("bob"))
    yield keep, alice, bob, buffer


def test_a_buffer_is_seen_only_by_the_groups_it_is_shown_to(
    lab: tuple[Keep, Keep, Keep, Path],
) -> None:
    admin, alice, bob, _ = lab
    assert [b.name for b in admin.visible_buffers()] == ["confocal"]
    assert alice.visible_buffers() == []  # not shown to anyone yet
    with pytest.raises(Forbidden):
        alice.show_buffer_to("confocal", ["lab"])
    with pytest.raises(NotFound, match="no group"):
        admin.show_buffer_to("confocal", ["nope"])
    assert admin.show_buffer_to("confocal", ["lab"]).groups == ("lab",)
    alice = admin.acting_as(admin.principal_for("alice"))
    assert [b.name for b in alice.visible_buffers()] == ["confocal"]
    assert bob.visible_buffers() == []
    with pytest.raises(NotFound):
        bob.browse_buffer("confocal")
    listing = alice.browse_buffer("confocal")
    assert [f["name"] for f in listing["folders"]] == ["run-1", "run-2"]
    assert [f["state"] for f in listing["folders"]] == [None, None]
    page = alice.browse_buffer("confocal", limit=1)
    assert [f["name"] for f in page["folders"]] == ["run-1"] and page["next"] == "run-1"
    rest = alice.browse_buffer("confocal", after=page["next"], limit=1)
    assert [f["name"] for f in rest["folders"]] == ["run-2"] and rest["next"] is None
    # hidden again: gone for alice
    admin.show_buffer_to("confocal", ["lab"], show=False)
    alice = admin.acting_as(admin.principal_for("alice"))
    assert alice.visible_buffers() == []


def test_import_this_folder_runs_as_the_user_and_never_leaves_the_buffer(
    lab: tuple[Keep, Keep, Keep, Path], tmp_path: Path
) -> None:
    admin, _, bob, buffer = lab
    admin.show_buffer_to("confocal", ["lab"])
    alice = admin.acting_as(admin.principal_for("alice"))
    for escape in ("../secret", "run-1/../../secret", "/etc"):
        with pytest.raises(UsageError, match="not a folder of this buffer"):
            alice.import_folder("confocal", escape, "screen/x")
    os.symlink(tmp_path / "secret", buffer / "sneaky")
    with pytest.raises(UsageError, match="not a folder of this buffer"):
        alice.import_folder("confocal", "sneaky", "screen/x")
    with pytest.raises(UsageError, match="not the buffer itself"):
        alice.import_folder("confocal", "", "screen/x")
    # the same holds for ingest jobs queued by hand: only folders of buffers shown to you
    with pytest.raises(Forbidden, match="only from buffers shown to you"):
        alice.enqueue("ingest", {"source": str(tmp_path / "secret"), "dataset": "screen/x"})
    with pytest.raises(Forbidden, match="only from buffers shown to you"):
        alice.enqueue("ingest", {"source": str(buffer / "sneaky"), "dataset": "screen/x"})
    with pytest.raises(NotFound):  # bob sees neither the buffer nor the project
        bob.import_folder("confocal", "run-1", "screen/run-1")

    job = alice.import_folder("confocal", "run-1", "screen/run-1")
    assert alice.import_folder("confocal", "run-1", "screen/run-1").id == job.id  # a 2nd click
    assert job.created_by == "alice" and job.target == "screen/run-1"
    JobWorker(admin, drain=True, log=io.StringIO(), schedule=False).run()
    done = alice.get_job(job.id)
    assert done.state == "done", done.last_error
    assert done.result is not None and done.result["summary"] == {"ok": 4}
    dataset = alice.get_dataset("screen/run-1")
    assert dataset.created_by == "alice"
    assert len(list(alice.stream_entries("screen/run-1").entries)) == 4
    with pytest.raises(NotFound):
        bob.get_job(job.id)
    # a project alone: the dataset is named after the folder
    named = alice.import_folder("confocal", "run-2/", "screen")
    assert named.target == "screen/run-2"
