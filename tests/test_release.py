"""`labkeep release P/D@N --name NAME`: an immutable, sealed dataset made from a version,
with every file checked, resumable, and refused where it would be wrong."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from labkeep import Keep
from labkeep.errors import AlreadyExists, Forbidden, NotFound, SealedError, UsageError
from labkeep.integrity.immutable import get_immutable
from tests.test_cli import records, run


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:  # in place, as programs rewrite outputs
        handle.write(data)


@pytest.fixture
def seg(keep: Keep) -> Keep:
    keep.create_project("imaging-2026")
    keep.create_dataset("imaging-2026/seg", kind="analysis", title="Masks")
    wt = keep.tree.dataset_dir("imaging-2026", "seg")
    write(wt / "masks" / "cell 01.png", b"mask one")
    write(wt / "tables" / "areas.csv", b"cell,area\n1,10\n")
    keep.save("imaging-2026/seg", message="first")
    time.sleep(0.01)
    write(wt / "tables" / "areas.csv", b"cell,area\n1,12\n")
    (wt / "masks" / "cell 01.png").unlink()
    keep.save("imaging-2026/seg", message="second")
    return keep


def test_a_release_of_an_old_version_holds_that_version_sealed(seg: Keep, tmp_path: Path) -> None:
    seg.set_metadata("imaging-2026/seg", {"keywords": ["nuclei"], "license": "CC-BY-4.0"})
    result = seg.release("imaging-2026/seg@1", name="seg-v1", message="for the paper")
    assert result.status == "ok" and (result.files, result.source) == (2, "imaging-2026/seg@1")
    info = seg.get_dataset("imaging-2026/seg-v1")
    assert (info.kind, info.sealed, info.release_of) == ("release", True, "imaging-2026/seg@1")
    folder = seg.tree.dataset_dir("imaging-2026", "seg-v1")
    assert (folder / "raw" / "masks" / "cell 01.png").read_bytes() == b"mask one"
    assert (folder / "raw" / "tables" / "areas.csv").read_bytes() == b"cell,area\n1,10\n"
    listed = {e["path"]: e["sha256"] for e in seg.stream_entries("imaging-2026/seg-v1").entries}
    assert listed == {
        "raw/masks/cell 01.png": sha(b"mask one"),
        "raw/tables/areas.csv": sha(b"cell,area\n1,10\n"),
    }
    # coreutils can check it, and it is write-once
    check = subprocess.run(
        ["sha256sum", "-c", "MANIFEST.sha256"], cwd=folder, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    target = folder / "raw" / "tables" / "areas.csv"
    assert not os.stat(target).st_mode & 0o222
    if os.geteuid() == 0:
        assert get_immutable(str(target))
    with pytest.raises(SealedError):
        (tmp_path / "more").mkdir()
        seg.ingest(tmp_path / "more", "imaging-2026/seg-v1")
    with pytest.raises(SealedError):
        seg.save("imaging-2026/seg-v1")
    # the release took the source's metadata, and its own record says where it came from
    assert seg.get_metadata("imaging-2026/seg-v1").own["keywords"] == ["nuclei"]
    events = [e for e in seg.events(limit=50) if e["target"] == "imaging-2026/seg-v1"]
    assert events[0]["action"] == "release"
    assert events[0]["details"]["source"] == "imaging-2026/seg@1"
    # the source goes on changing; the release does not
    write(seg.tree.dataset_dir("imaging-2026", "seg") / "tables" / "areas.csv", b"changed")
    seg.save("imaging-2026/seg")
    assert target.read_bytes() == b"cell,area\n1,10\n"
    assert seg.verify("imaging-2026/seg-v1").counts() == {"ok": 2}


def test_running_it_again_and_names_that_are_taken(seg: Keep) -> None:
    seg.release("imaging-2026/seg@1", name="seg-v1")
    again = seg.release("imaging-2026/seg@1", name="seg-v1")
    assert again.status == "notneeded" and "already released" in again.message
    with pytest.raises(AlreadyExists, match="is not a release of imaging-2026/seg@2"):
        seg.release("imaging-2026/seg@2", name="seg-v1")
    with pytest.raises(AlreadyExists):
        seg.release("imaging-2026/seg@2", name="seg")
    with pytest.raises(UsageError, match="already a release"):
        seg.release("imaging-2026/seg-v1", name="seg-v1-v1")
    with pytest.raises(UsageError, match="has no version 9"):
        seg.release("imaging-2026/seg@9", name="seg-v9")
    seg.create_dataset("imaging-2026/empty", kind="analysis")
    with pytest.raises(UsageError, match="no saved version"):
        seg.release("imaging-2026/empty", name="empty-v1")
    with pytest.raises(UsageError):
        seg.release("imaging-2026/seg@1", name="../escape")
    with pytest.raises(UsageError, match="whole dataset version"):
        seg.release("imaging-2026/seg/tables@1", name="part")


def test_access(seg: Keep) -> None:
    seg.add_user("bob", password="a long enough password")
    bob = seg.acting_as(seg.principal_for("bob"))
    with pytest.raises(NotFound):
        bob.release("imaging-2026/seg@1", name="bob-v1")
    seg.grant("bob", "read", "imaging-2026")
    with pytest.raises(Forbidden):
        bob.release("imaging-2026/seg@1", name="bob-v1")
    assert "bob-v1" not in {d.name for d in seg.list_datasets("imaging-2026")}


def test_a_damaged_source_releases_nothing_then_a_repair_and_a_rerun_finish(
    seg: Keep, monkeypatch: pytest.MonkeyPatch
) -> None:
    seg.seal("imaging-2026/seg")  # nothing in raw/: sealing only fixes the version
    head = seg.get_dataset("imaging-2026/seg").head_version
    areas = seg.tree.dataset_dir("imaging-2026", "seg") / "tables" / "areas.csv"
    st = areas.stat()
    data = areas.read_bytes()
    write(areas, bytes([data[0] ^ 1]) + data[1:])  # bit rot: same size, same mtime
    os.utime(areas, ns=(st.st_atime_ns, st.st_mtime_ns))
    result = seg.release(f"imaging-2026/seg@{head}", name="seg-v2")
    assert result.status == "error"
    assert [p["path"] for p in result.problems] == ["tables/areas.csv"]
    assert not seg.get_dataset("imaging-2026/seg-v2").sealed
    seg.verify("imaging-2026/seg", repair=True)
    # a crash between staging and ingest: the next run finishes from what was staged
    real_ingest = Keep.ingest

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Keep, "ingest", crash)
    with pytest.raises(KeyboardInterrupt):
        seg.release(f"imaging-2026/seg@{head}", name="seg-v2")
    monkeypatch.setattr(Keep, "ingest", real_ingest)
    done = seg.release(f"imaging-2026/seg@{head}", name="seg-v2")
    assert done.status == "ok", done.to_dict()
    released = seg.tree.dataset_dir("imaging-2026", "seg-v2") / "raw" / "tables" / "areas.csv"
    assert released.read_bytes() == data
    assert not (seg.config.runs_path / "release-1").exists()
    assert not list(seg.config.runs_path.glob("release-*"))


def test_cli(tmp_path: Path) -> None:
    root = tmp_path / "k"
    run("init", str(root))
    src = tmp_path / "buffer"
    src.mkdir()
    (src / "img-0001.tif").write_bytes(b"pixels")
    run("project", "create", "imaging-2026", cwd=root)
    run("ingest", str(src), "imaging-2026/s017", "--seal", cwd=root)
    out = run("release", "imaging-2026/s017", "--name", "s017-v1", "-m", "paper", cwd=root)
    assert "Released imaging-2026/s017@2 as imaging-2026/s017-v1: 1 file" in out.stdout
    again = records(run("release", "imaging-2026/s017", "-n", "s017-v1", "--json", cwd=root))
    assert again[0]["status"] == "notneeded"
    bad = run("release", "imaging-2026/nope", "--name", "x", cwd=root, check=2)
    assert "no dataset" in bad.stderr and "Traceback" not in bad.stderr


def test_a_release_job_and_big_releases_from_the_web_go_to_a_worker(
    seg: Keep, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from labkeep.ops import release as release_module
    from labkeep.ops.worker import JobWorker

    job = seg.enqueue("release", {"source": "imaging-2026/seg@1", "name": "seg-v1"})
    assert job.target == "imaging-2026/seg-v1"
    seg.add_user("bob", password="a long enough password")
    seg.grant("bob", "read", "imaging-2026")
    bob = seg.acting_as(seg.principal_for("bob"))
    with pytest.raises(Forbidden):  # may read, may not add datasets
        bob.enqueue("release", {"source": "imaging-2026/seg@1", "name": "bob-v1"})
    JobWorker(seg, drain=True, log=io.StringIO(), schedule=False).run()
    done = seg.get_job(job.id)
    assert done.state == "done", done.to_dict()
    assert seg.get_dataset("imaging-2026/seg-v1").release_of == "imaging-2026/seg@1"
    # the API queues a release larger than INLINE_FILES instead of making it in a request
    import httpx

    from tests.webserver import LiveServer

    monkeypatch.setattr(release_module, "INLINE_FILES", 0)
    token, _ = seg.create_token("t")
    with LiveServer(seg) as live:
        answer = httpx.post(
            f"{live.url}/api/v1/datasets/imaging-2026/seg/release",
            json={"name": "seg-v2", "version": 2},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert answer.status_code == 202, answer.text
    assert answer.json()["job"]["kind"] == "release"
    JobWorker(seg, drain=True, log=io.StringIO(), schedule=False).run()
    assert seg.get_dataset("imaging-2026/seg-v2").sealed
