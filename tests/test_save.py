"""`labkeep save`, `log`, `restore`, `get P/D@N --to`: versions of a working tree, every
old content retrievable after the working tree was changed in place."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from labkeep import Keep
from labkeep.catalog import Entry, Replica, Store
from labkeep.errors import NotFound, SealedError, UsageError
from labkeep.results import Result
from tests.conftest import make_files
from tests.test_cli import records, run


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree(keep: Keep, dataset: str = "proj/seg") -> Path:
    project, name = dataset.split("/")
    return keep.tree.dataset_dir(project, name)


def write(path: Path, text: str) -> None:
    """Write in place (same inode), as programs that rewrite outputs do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def changes(keep: Keep, old: str, new: str | None = None) -> list[tuple[str, str]]:
    return [(c.status, c.path) for c in keep.diff(old, new).changes]


@pytest.fixture
def seg(keep: Keep) -> Path:
    keep.create_dataset("proj/seg", kind="analysis")
    return tree(keep)


def test_save_records_only_what_changed_and_keeps_every_version(
    keep: Keep, seg: Path, tmp_path: Path
) -> None:
    write(seg / "masks/a.png", "mask a v1")
    write(seg / "masks/b.png", "mask b v1")
    write(seg / "table.csv", "id,area\n1,10\n")
    first = keep.save("proj/seg", message="first masks")
    assert first.info["version"] == 1 and first.info["added"] == 3
    # nothing changed: no version
    again = keep.save("proj/seg")
    assert again.info["version"] is None and again.info["unchanged"] == 3
    # modify in place, remove, add
    time.sleep(0.01)
    write(seg / "masks/a.png", "mask a v2!")
    os.unlink(seg / "table.csv")
    write(seg / "masks/c.png", "mask c")
    second = keep.save("proj/seg", message="second")
    assert (
        second.info["version"],
        second.info["added"],
        second.info["modified"],
        second.info["removed"],
        second.info["unchanged"],
    ) == (2, 1, 1, 1, 1)
    assert changes(keep, "proj/seg@1", "@2") == [
        ("modified", "masks/a.png"),
        ("added", "masks/c.png"),
        ("removed", "table.csv"),
    ]
    # the log, newest last in versions(); the message and kind recorded
    log = keep.versions("proj/seg")
    assert [(v["version"], v["kind"], v["message"], v["files"]) for v in log] == [
        (1, "save", "first masks", 3),
        (2, "save", "second", 3),
    ]
    # version 1 is whole again out of the keep, though a.png was overwritten in place
    # and table.csv deleted: the old bytes come from the versions store, verified
    out = tmp_path / "old"
    report = keep.export("proj/seg@1", out)
    assert not report.failed
    assert (out / "masks/a.png").read_text() == "mask a v1"
    # staging leaves nothing behind in the versions store (its threads' temp folders
    # are removed with their store object)
    assert not list((keep.config.versions_path / ".tmp").iterdir())
    assert (out / "table.csv").read_text() == "id,area\n1,10\n"
    assert not (out / "masks/c.png").exists()
    # one file of an old version, through the download path the web uses
    _, handle = keep.open_file("proj/seg/masks/a.png@1")
    with handle:
        assert handle.read() == b"mask a v1"
    # the manifest is the head's, checkable with coreutils
    manifest = (seg / "MANIFEST.sha256").read_text()
    assert "table.csv" not in manifest and sha(b"mask a v2!") in manifest
    check = subprocess.run(
        ["sha256sum", "-c", "MANIFEST.sha256"], cwd=seg, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout


def test_content_is_in_the_versions_store_before_entries_refer_to_it(keep: Keep, seg: Path) -> None:
    write(seg / "x.dat", "payload")
    keep.save("proj/seg")
    with keep.catalog.read() as session:
        store = session.execute(select(Store).where(Store.name == "versions")).scalar_one()
        entry = session.execute(select(Entry).where(Entry.path == "x.dat")).scalar_one()
        replica = session.execute(
            select(Replica).where(Replica.store_id == store.id, Replica.sha256 == entry.sha256)
        ).scalar_one()
        key_path = Path(store.location) / replica.key
        assert (store.kind, replica.status) == ("objects", "ok")
    assert key_path.read_bytes() == b"payload"
    assert key_path.stat().st_mode & 0o222 == 0  # stored read-only
    assert key_path.stat().st_ino != (seg / "x.dat").stat().st_ino  # a copy, not a link
    # whereis names both copies
    where = keep.whereis("proj/seg/x.dat")
    assert {c["store"] for c in where["copies"]} == {"tree", "versions"}


def test_an_old_version_comes_out_whole_in_path_order_and_damage_is_named(
    keep: Keep, seg: Path, tmp_path: Path
) -> None:
    """get --to of an old version copies several files at a time: the results still come
    in the catalog's path order, a damaged stored copy is named and never written under
    its final name, and a second run only fetches what is missing."""
    files = make_files(seg, 120, seed=7, min_size=1)
    keep.save("proj/seg", message="v1")
    rels = sorted(files)
    for rel in rels[::2]:  # rewritten: their first bytes are only in the versions store
        (seg / rel).write_bytes(b"new " + rel.encode())
    keep.save("proj/seg", message="v2")
    victim = rels[10]
    with keep.catalog.read() as session:
        store = session.execute(select(Store).where(Store.name == "versions")).scalar_one()
        key = session.execute(
            select(Replica.key).where(
                Replica.store_id == store.id,
                Replica.sha256 == hashlib.sha256(files[victim]).digest(),
            )
        ).scalar_one()
        stored = Path(store.location) / key
    stored.chmod(0o644)
    damaged = bytearray(stored.read_bytes())
    damaged[0] ^= 1
    stored.write_bytes(bytes(damaged))

    into = tmp_path / "old"
    into.mkdir()  # an existing folder: the files go into old/seg/ (like cp -r)
    out = into / "seg"
    seen: list[Result] = []
    report = keep.export("proj/seg@1", into, jobs=4, on_result=seen.append)
    assert [r.path for r in seen] == sorted(files, key=lambda p: p.encode())
    assert {r.path: r.status for r in seen if r.status != "ok"} == {victim: "error"}
    [bad] = report.results
    assert (bad.path, bad.status) == (victim, "error")
    assert "does not match its SHA-256" in (bad.message or ""), bad.message
    assert not (out / victim).exists()
    assert {rel: (out / rel).read_bytes() for rel in files if rel != victim} == {
        rel: data for rel, data in files.items() if rel != victim
    }
    assert not [p for p in out.rglob("*") if p.name.endswith(".labkeep-part")]
    again = keep.export("proj/seg@1", into, jobs=4)
    assert again.counts() == {"notneeded": len(files) - 1, "error": 1}


def test_restore_puts_old_content_back_as_a_new_version(keep: Keep, seg: Path) -> None:
    write(seg / "a.txt", "one")
    write(seg / "sub/b.txt", "bee")
    keep.save("proj/seg", message="v1")
    time.sleep(0.01)
    write(seg / "a.txt", "two")
    os.unlink(seg / "sub/b.txt")
    write(seg / "new.txt", "new")
    keep.save("proj/seg", message="v2")
    # unsaved work is never overwritten silently
    time.sleep(0.01)
    write(seg / "a.txt", "unsaved edit")
    with pytest.raises(UsageError, match="not saved"):
        keep.restore("proj/seg@1")
    assert (seg / "a.txt").read_text() == "unsaved edit"
    # --force saves the unsaved work first (a version), then restores
    report = keep.restore("proj/seg@1", force=True)
    assert report.info["version"] == 4
    assert (seg / "a.txt").read_text() == "one" and (seg / "sub/b.txt").read_text() == "bee"
    assert not (seg / "new.txt").exists()
    log = keep.versions("proj/seg")
    assert [v["kind"] for v in log] == ["save", "save", "save", "restore"]
    assert log[2]["message"] == "before restoring @1"
    assert changes(keep, "proj/seg@1", "@4") == []
    # the forced-away edit is still there, at version 3
    _, handle = keep.open_file("proj/seg/a.txt@3")
    with handle:
        assert handle.read() == b"unsaved edit"
    # restore one path only
    time.sleep(0.01)
    write(seg / "a.txt", "three")
    write(seg / "sub/b.txt", "bee two")
    keep.save("proj/seg")
    keep.restore("proj/seg/sub@1")
    assert (seg / "sub/b.txt").read_text() == "bee" and (seg / "a.txt").read_text() == "three"
    with pytest.raises(UsageError, match="no version 99"):
        keep.restore("proj/seg@99")
    with pytest.raises(UsageError, match="needs the version"):
        keep.restore("proj/seg")


def test_restore_never_deletes_what_it_could_not_save(
    keep: Keep, keep_root: Path, seg: Path
) -> None:
    write(seg / "a.txt", "one")
    keep.save("proj/seg", message="v1")
    time.sleep(0.01)
    write(seg / "a.txt", "two")
    keep.save("proj/seg", message="v2")
    # things a version cannot hold are named, and restore (even --force) leaves them
    (seg / "link").symlink_to("/etc/hostname")
    os.mkfifo(seg / "pipe")
    odd = os.fsencode(seg) + b"/bad\xff.txt"
    with open(odd, "wb") as out:
        out.write(b"odd name")
    for force in (False, True):
        with pytest.raises(UsageError, match="a version cannot keep") as caught:
            keep.restore("proj/seg@1", force=force)
        assert "link" in caught.value.message and "pipe" in caught.value.message
    assert (seg / "link").is_symlink() and (seg / "pipe").exists() and os.path.exists(odd)
    assert (seg / "a.txt").read_text() == "two"
    for name in ("link", "pipe"):
        (seg / name).unlink()
    os.unlink(odd)
    # an unsaved file that cannot be read (a process without root's file overrides): the
    # save made before a forced restore fails for it, so nothing is replaced or deleted
    write(seg / "new.dat", "precious unsaved results")
    (seg / "new.dat").chmod(0)
    write(seg / "a.txt", "unsaved edit")
    keep.close()
    done = subprocess.run(
        ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m",
         "labkeep", "restore", "proj/seg@1", "--force", "--json", "--root", str(keep_root)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    last = json.loads(done.stdout.splitlines()[-1])
    assert last["error"] == "usage" and "nothing was restored" in last["message"]
    (seg / "new.dat").chmod(0o644)
    assert (seg / "new.dat").read_text() == "precious unsaved results"
    assert (seg / "a.txt").read_text() == "unsaved edit"


def test_the_longest_names_come_out_of_an_old_version(
    keep: Keep, seg: Path, tmp_path: Path
) -> None:
    long = "x" * 250  # its temporary name beside it would pass 255 bytes
    write(seg / long, "v1")
    keep.save("proj/seg")
    write(seg / long, "v2 longer")
    keep.save("proj/seg")
    out = tmp_path / "out"
    report = keep.export("proj/seg@1", out)
    assert report.counts() == {"ok": 1}, [r.to_dict() for r in report.results]
    assert (out / long).read_text() == "v1"
    assert sorted(p.name for p in out.iterdir()) == [long]


def test_an_unreadable_folder_stops_the_save_and_removes_nothing(
    keep: Keep, keep_root: Path, seg: Path
) -> None:
    write(seg / "sub/deep/f.txt", "in a folder")
    write(seg / "top.txt", "top")
    keep.save("proj/seg")
    write(seg / "top.txt", "top, changed")
    (seg / "sub").chmod(0)
    keep.close()
    try:
        done = subprocess.run(
            ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m",
             "labkeep", "save", "proj/seg", "--json", "--root", str(keep_root)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        (seg / "sub").chmod(0o755)
    assert done.returncode == 3, done.stdout + done.stderr
    last = json.loads(done.stdout.splitlines()[-1])
    assert "cannot read the folder sub of proj/seg" in last["message"]
    with Keep.open(keep_root) as again:
        assert [v["version"] for v in again.versions("proj/seg")] == [1]
        assert {e["path"] for e in again.ls("proj/seg/sub/deep").items} == {"sub/deep/f.txt"}


def test_restore_of_a_file_that_is_a_folder_now(keep: Keep, seg: Path) -> None:
    write(seg / "x", "file x")
    write(seg / "k", "keep")
    keep.save("proj/seg")
    os.unlink(seg / "x")
    write(seg / "x/inner/deep", "in a folder now")
    keep.save("proj/seg")
    report = keep.restore("proj/seg@1")
    assert not report.failed, [r.to_dict() for r in report.results]
    assert (seg / "x").read_text() == "file x"
    assert changes(keep, "proj/seg@1", f"@{report.info['version']}") == []
    assert keep.verify("proj/seg").counts() == {"ok": 2}


def test_paths_that_name_nothing_are_refused(keep: Keep, seg: Path) -> None:
    write(seg / "k", "keep")
    keep.save("proj/seg")
    write(seg / "k", "changed")
    for bad in ("nosuch.txt", "nosuch/dir"):
        with pytest.raises(NotFound, match="no file or folder"):
            keep.save("proj/seg", paths=[bad])
        with pytest.raises(NotFound, match="no file or folder"):
            keep.restore(f"proj/seg/{bad}@1")
    with pytest.raises(UsageError, match="labkeep's own folder"):
        keep.save("proj/seg", paths=[".labkeep"])
    with pytest.raises(UsageError, match="not in proj/seg's working tree"):
        keep.save("proj/seg", paths=["/etc/hostname"])
    # an absolute path into the working tree is the same as the relative one
    report = keep.save("proj/seg", paths=[str(seg / "k")])
    assert (report.info["version"], report.info["modified"]) == (2, 1)


def test_a_name_that_is_not_utf8_is_named_and_the_rest_saved(keep: Keep, seg: Path) -> None:
    write(seg / "ok.txt", "fine")
    with open(os.fsencode(seg) + b"/bad\xff.txt", "wb") as out:
        out.write(b"odd")
    report = keep.save("proj/seg")
    assert (report.info["version"], report.info["added"]) == (1, 1)
    [bad] = [r for r in report.results if r.status != "ok"]
    assert bad.status == "impossible" and "not UTF-8" in (bad.message or "")


def test_a_touched_file_is_neither_a_change_nor_unsaved(keep: Keep, seg: Path) -> None:
    write(seg / "a", "one")
    keep.save("proj/seg")
    st = (seg / "a").stat()
    os.utime(seg / "a", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert keep.save("proj/seg").info["version"] is None
    assert keep.verify("proj/seg").counts() == {"ok": 1}
    # same size, other bytes, new mtime: unsaved work, not damage
    write(seg / "a", "two")
    report = keep.verify("proj/seg")
    assert [(r.path, r.state) for r in report.results if r.state != "ok"] == [("a", "unsaved")]


def test_session_datasets_version_their_notes_and_keep_raw_sealed(
    keep: Keep, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_files(src, 4)
    keep.ingest(src, "proj/s017")
    keep.seal("proj/s017")
    root = tree(keep, "proj/s017")
    write(root / "notes/qc.md", "focus drift in cell 3")
    report = keep.save("proj/s017", message="QC notes")
    assert report.info["added"] == 1 and report.info["removed"] == 0
    assert changes(keep, "proj/s017@2", "@3") == [("added", "notes/qc.md")]
    # raw/ is ingest's: it is neither saved nor restored
    with pytest.raises(UsageError, match="raw/"):
        keep.save("proj/s017/raw")
    with pytest.raises(UsageError, match="raw/"):
        keep.restore("proj/s017/raw@1")
    ls = keep.ls("proj/s017")
    assert {i["path"] for i in ls.items} >= {"raw", "notes"} or ls.items


def test_symlinks_are_refused_and_the_rest_is_saved(keep: Keep, seg: Path) -> None:
    write(seg / "real.txt", "real")
    os.symlink("/etc/passwd", seg / "link.txt")
    report = keep.save("proj/seg")
    problems = [r for r in report.results if r.status == "impossible"]
    assert [p.path for p in problems] == ["link.txt"] and "symbolic link" in str(
        problems[0].message
    )
    assert report.info["version"] == 1 and report.info["added"] == 1


def test_releases_take_no_saves(keep: Keep) -> None:
    keep.create_dataset("proj/rel", kind="release")
    with pytest.raises(SealedError):
        keep.save("proj/rel")


def test_verify_tells_unsaved_work_from_damage_and_repairs_only_damage(
    keep: Keep, seg: Path
) -> None:
    write(seg / "keep.txt", "saved and intact")
    write(seg / "edit.txt", "saved then edited")
    write(seg / "rot.txt", "saved then rotted")
    keep.save("proj/seg")
    time.sleep(0.01)
    write(seg / "edit.txt", "edited by a person")
    write(seg / "brand-new.txt", "not saved yet")
    # bit rot: same size and mtime, other bytes
    st = (seg / "rot.txt").stat()
    with open(seg / "rot.txt", "r+b") as handle:
        handle.write(b"X")
    os.utime(seg / "rot.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    report = keep.verify("proj/seg", repair=True)
    states: dict[str, list[str | None]] = {}
    for r in report.results:
        states.setdefault(str(r.path), []).append(r.state or r.status)
    assert states["edit.txt"] == ["unsaved"] and states["brand-new.txt"] == ["unsaved"]
    assert states["rot.txt"][0] == "modified" and states["keep.txt"] == ["ok"]
    # the damaged file came back from the versions store; the person's edit is untouched
    assert (seg / "rot.txt").read_text() == "saved then rotted"
    assert (seg / "edit.txt").read_text() == "edited by a person"
    assert (seg / "brand-new.txt").exists()


def test_concurrent_saves_take_turns(keep: Keep, seg: Path) -> None:
    """A save that finds the dataset busy waits for its turn instead of failing."""
    write(seg / "a.txt", "a")
    with keep.tree.lock("proj", "seg", what="a test"):
        import threading

        result: dict[str, object] = {}

        def other() -> None:
            result["report"] = keep.save("proj/seg", wait=10)

        thread = threading.Thread(target=other)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive()  # waiting
    thread.join(10)
    report = result["report"]
    assert getattr(report, "info")["version"] == 1  # noqa: B009


def test_cli_save_log_diff_get_restore(tmp_path: Path) -> None:
    root = tmp_path / "keep"
    run("init", str(root))
    run("project", "create", "imaging-2026", "--root", str(root))
    run("dataset", "create", "imaging-2026/seg-unet", "--kind", "analysis", "--root", str(root))
    work = root / "data" / "imaging-2026" / "seg-unet"
    write(work / "masks/cell-01.png", "m1")
    out = run("save", "imaging-2026/seg-unet", "-m", "first masks", "--root", str(root))
    assert "imaging-2026/seg-unet@1: 1 added" in out.stdout
    time.sleep(0.01)
    write(work / "masks/cell-01.png", "m1 better")
    write(work / "masks/cell-02.png", "m2")
    saved = records(run("save", "imaging-2026/seg-unet", "--json", "--root", str(root)))
    assert saved[-1]["version"] == 2 and saved[-1]["modified"] == 1
    assert {r["path"]: r["change"] for r in saved[:-1]} == {
        "masks/cell-01.png": "modified",
        "masks/cell-02.png": "added",
    }
    nothing = run("save", "imaging-2026/seg-unet", "--root", str(root))
    assert "nothing to save" in nothing.stdout
    log = run("log", "imaging-2026/seg-unet", "--root", str(root))
    assert log.stdout.index("first masks") > log.stdout.index("2 ")
    diff = run("diff", "imaging-2026/seg-unet@1", "imaging-2026/seg-unet@2", "--root", str(root))
    assert "M masks/cell-01.png" in diff.stdout and "A masks/cell-02.png" in diff.stdout
    got = run(
        "get", "imaging-2026/seg-unet@1", "--to", str(tmp_path / "old-masks"), "--root", str(root)
    )
    assert (tmp_path / "old-masks/masks/cell-01.png").read_text() == "m1", got.stdout
    assert not (tmp_path / "old-masks/masks/cell-02.png").exists()
    restored = run(
        "restore", "imaging-2026/seg-unet@1", "masks/cell-01.png", "--json", "--root", str(root)
    )
    summary = json.loads(restored.stdout.splitlines()[-1])
    assert summary["version"] == 3
    assert (work / "masks/cell-01.png").read_text() == "m1"
    assert (work / "masks/cell-02.png").read_text() == "m2"  # outside the path: untouched
    time.sleep(0.01)
    write(work / "masks/cell-02.png", "unsaved")
    refused = run("restore", "imaging-2026/seg-unet@1", "--root", str(root), check=2)
    assert "not saved" in refused.stderr and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    # verify names the unsaved file and does not fail for it
    verify = run("verify", "imaging-2026/seg-unet", "--root", str(root))
    assert "UNSAVED" in verify.stdout and "cell-02.png" in verify.stdout


def test_a_same_size_rewrite_right_after_a_save_is_seen(keep: Keep, seg: Path) -> None:
    """The quick check's blind spot ("racy git"): same size, and an mtime equal to the
    saved one because the file system's clock granule (1-2 s on some NAS) had not moved."""
    write(seg / "a.txt", "xx")
    keep.save("proj/seg")
    st = (seg / "a.txt").stat()
    write(seg / "a.txt", "yy")
    os.utime(seg / "a.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    report = keep.save("proj/seg")
    assert report.info["version"] == 2 and report.info["modified"] == 1
    assert changes(keep, "proj/seg@1", "@2") == [("modified", "a.txt")]


def test_the_manifest_patched_by_a_save_equals_the_catalogs(keep: Keep, seg: Path) -> None:
    """save rewrites MANIFEST.sha256 from the old one plus the changes; odd names (a
    backslash, a newline: escaped lines) and removals included, it must be byte for byte
    the manifest the catalog describes, and a manifest changed by hand is not trusted."""
    from labkeep.catalog import Dataset
    from labkeep.ops.manifests import manifest_text

    def catalog_manifest() -> str:
        with keep.catalog.read() as session:
            dataset_id = session.execute(
                select(Dataset.id).where(Dataset.name == "seg")
            ).scalar_one()
            return manifest_text(session, dataset_id)

    for name in ["a.txt", "back\\slash.txt", "new\nline.txt", "z/deep.txt", "m.txt"]:
        write(seg / name, f"content of {name!r}")
    keep.save("proj/seg")
    time.sleep(0.01)
    write(seg / "back\\slash.txt", "changed")
    os.unlink(seg / "new\nline.txt")
    write(seg / "b\nb.txt", "added")
    keep.save("proj/seg")
    assert (seg / "MANIFEST.sha256").read_text() == catalog_manifest()
    # a manifest edited by hand: the next save writes it from the catalog
    (seg / "MANIFEST.sha256").write_text("garbage\n")
    time.sleep(0.01)
    write(seg / "a.txt", "changed again")
    keep.save("proj/seg")
    assert (seg / "MANIFEST.sha256").read_text() == catalog_manifest()
    check = subprocess.run(["sha256sum", "-c", "--quiet", "MANIFEST.sha256"], cwd=seg,
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
