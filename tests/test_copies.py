"""Copies across stores: copy, whereis, verify and repair, drop with minimum copies, get.

Results are checked by looking at the storage itself (the objects folders, the tree),
not only at what labkeep reports.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from labkeep import Keep
from labkeep.catalog import Replica
from labkeep.errors import AlreadyExists, BelowPolicy, Busy, StoreUnavailable, UsageError
from labkeep.results import Result
from tests.conftest import make_files
from tests.test_cli import records, run


def objects_in(folder: Path) -> dict[str, Path]:
    """{sha256 hex: path} of the final objects of an objects store (temp files excluded)."""
    found = {}
    for path in folder.rglob("*"):
        if path.is_file() and ".tmp" not in path.parts:
            found[path.name] = path
    return found


def good_objects(folder: Path) -> set[str]:
    """The objects whose bytes hash to their name."""
    return {
        name
        for name, path in objects_in(folder).items()
        if hashlib.sha256(path.read_bytes()).hexdigest() == name
    }


def unprotect(path: Path) -> None:
    """Clear read-only bits and chattr +i of a path (as root can)."""
    from labkeep.integrity.immutable import set_immutable

    with contextlib.suppress(OSError):
        set_immutable(path, False)
    os.chmod(path, 0o755 if path.is_dir() else 0o644)


def flip_byte(path: Path) -> None:
    """Damage a file as bit rot (or root) would: through read-only bits and chattr +i."""
    unprotect(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def shas(files: dict[str, bytes]) -> set[str]:
    return {hashlib.sha256(d).hexdigest() for d in files.values()}


@pytest.fixture
def sealed(keep: Keep, tmp_path: Path) -> dict[str, bytes]:
    """proj/s1: 30 files, ingested and sealed."""
    files = make_files(tmp_path / "src", 30, min_size=1, max_size=20_000)
    report = keep.ingest(tmp_path / "src", "proj/s1", seal=True)
    assert not report.failed
    return files


def add_objects(keep: Keep, tmp_path: Path, name: str, **kw: object) -> Path:
    folder = tmp_path / f"store-{name}"
    keep.add_store(name, kind="objects", path=str(folder), **kw)  # type: ignore[arg-type]
    return folder


def test_copy_stores_each_content_once_verified_and_is_idempotent(
    keep: Keep, tmp_path: Path, sealed: dict[str, bytes]
) -> None:
    backup = add_objects(keep, tmp_path, "backup")
    report = keep.copy("proj/s1", to="backup")
    assert not report.failed
    assert good_objects(backup) == shas(sealed) == set(objects_in(backup))
    # every object is write-once on disk (read-only) and named by its content
    assert all(not os.access(p, os.W_OK) or os.geteuid() == 0 for p in objects_in(backup).values())
    assert all(os.stat(p).st_mode & 0o222 == 0 for p in objects_in(backup).values())
    again = keep.copy("proj/s1", to="backup")
    assert again.counts() == {"notneeded": len(sealed)}
    # another dataset with the same content: stored once per store (dedup)
    keep.ingest(tmp_path / "src", "proj/s2")
    third = keep.copy("proj/s2", to="backup")
    assert third.counts() == {"notneeded": len(sealed)}
    assert len(objects_in(backup)) == len(shas(sealed))
    with keep.catalog.read() as session:
        n = session.execute(select(func.count(Replica.id))).scalar_one()
    assert n == len(shas(sealed))


def test_whereis_names_every_store_and_when_checked(
    keep: Keep, tmp_path: Path, sealed: dict[str, bytes]
) -> None:
    add_objects(keep, tmp_path, "backup")
    add_objects(keep, tmp_path, "far", offsite=True, tier="cold")
    keep.copy("proj/s1", to="backup")
    keep.copy("proj/s1/raw/d0", to="far")  # a folder only
    rel = next(r for r in sealed if r.startswith("d0/"))
    record = keep.whereis(f"proj/s1/raw/{rel}")
    stores = {c["store"]: c for c in record["copies"]}
    assert set(stores) == {"tree", "backup", "far"}
    assert stores["backup"]["status"] == "ok" and stores["backup"]["verified_at"]
    assert record["sha256"] == hashlib.sha256(sealed[rel]).hexdigest()
    outside = next(r for r in sealed if not r.startswith("d0/"))
    assert {c["store"] for c in keep.whereis(f"proj/s1/raw/{outside}")["copies"]} == {
        "tree",
        "backup",
    }
    summary = keep.whereis("proj/s1")
    by_store = {c["store"]: c for c in summary["copies"]}
    assert by_store["backup"]["complete"] and not by_store["far"]["complete"]
    assert summary["good_copies"] == 2


def test_verify_store_names_damaged_and_missing_copies_and_repair_fixes_them(
    keep: Keep, tmp_path: Path, sealed: dict[str, bytes]
) -> None:
    backup = add_objects(keep, tmp_path, "backup")
    keep.copy("proj/s1", to="backup")
    objects = objects_in(backup)
    damaged, gone = sorted(objects)[:2]
    flip_byte(objects[damaged])
    objects[gone].unlink()
    report = keep.verify("proj/s1", store="backup")
    problems = {(r.state, r.sha256) for r in report.results if r.status == "error"}
    assert ("modified", damaged) in problems and ("missing", gone) in problems
    assert all("backup" in (r.message or "") for r in report.results if r.status == "error")
    assert report.info["states"]["modified"] >= 1 and report.info["states"]["missing"] >= 1
    # whereis now says so
    rel = next(r for r, d in sealed.items() if hashlib.sha256(d).hexdigest() == damaged)
    copies = {c["store"]: c for c in keep.whereis(f"proj/s1/raw/{rel}")["copies"]}
    assert copies["backup"]["status"] == "damaged"
    # a quick check trusts size and the store's own checksum: the folder's name is the
    # SHA-256, so the missing one is found, and the record says how it was checked
    quick = keep.verify("proj/s1", store="backup", quick=True)
    assert any(r.state == "missing" for r in quick.results)
    fixed = keep.verify("proj/s1", store="backup", repair=True)
    assert not any(r.status == "error" for r in fixed.results), [
        r.to_dict() for r in fixed.results if r.status == "error"
    ]
    assert good_objects(backup) == shas(sealed)
    assert not keep.verify("proj/s1", store="backup").failed


def test_verify_repair_restores_a_damaged_sealed_tree_file_and_reseals(
    keep: Keep, keep_root: Path, tmp_path: Path, sealed: dict[str, bytes]
) -> None:
    add_objects(keep, tmp_path, "backup")
    keep.copy("proj/s1", to="backup")
    rel = sorted(sealed)[3]
    path = keep_root / "data/proj/s1/raw" / rel
    flip_byte(path)  # a bit flip on a sealed file
    missing = keep_root / "data/proj/s1/raw" / sorted(sealed)[4]
    unprotect(missing.parent)
    unprotect(missing)
    missing.unlink()
    report = keep.verify("proj/s1", repair=True)
    assert report.info["repaired"] == 2
    assert path.read_bytes() == sealed[rel]
    assert missing.read_bytes() == sealed[sorted(sealed)[4]]
    # the seal holds again: read-only bits (and no seal left half done)
    assert os.stat(path).st_mode & 0o222 == 0
    assert os.stat(path.parent).st_mode & 0o222 == 0
    assert keep.tree.seal_intent("proj", "s1") is None
    assert not keep.verify("proj/s1").failed
    assert any(e["action"] == "repair" for e in keep.events(target="proj/s1"))


def test_repair_without_a_good_copy_says_so_and_changes_nothing(
    keep: Keep, keep_root: Path, sealed: dict[str, bytes]
) -> None:
    rel = sorted(sealed)[0]
    path = keep_root / "data/proj/s1/raw" / rel
    flip_byte(path)
    damaged = path.read_bytes()
    report = keep.verify("proj/s1", repair=True)
    assert report.failed and not report.info.get("repaired")
    assert any(r.action == "repair" and "no good copy" in (r.message or "") for r in report.results)
    assert path.read_bytes() == damaged


def test_drop_needs_min_copies_checked_fresh(
    keep: Keep, tmp_path: Path, sealed: dict[str, bytes]
) -> None:
    """min 2 over three other stores: one down, one corrupted -> refused, nothing gone."""
    a = add_objects(keep, tmp_path, "a")
    b = add_objects(keep, tmp_path, "b")
    c = add_objects(keep, tmp_path, "c")
    for name in ("a", "b", "c"):
        keep.copy("proj/s1", to=name)
    keep.set_policy("proj", min_copies=2, tree_droppable=True)
    a.rename(tmp_path / "unmounted")  # store a is down
    victim = sorted(objects_in(b))[0]
    flip_byte(objects_in(b)[victim])  # and one copy in b is damaged (the log says ok)
    with pytest.raises(BelowPolicy):
        keep.drop("proj/s1", from_store="tree")
    tree = keep.tree.dataset_dir("proj", "s1") / "raw"
    assert sum(1 for p in tree.rglob("*") if p.is_file()) == len(sealed)
    # dropping c is refused for exactly the file whose other good copy is gone
    report = keep.drop("proj/s1", from_store="c")
    refused = [r for r in report.results if r.status == "impossible"]
    assert refused and all(r.sha256 == victim for r in refused)
    assert "a" in (refused[0].message or "")  # says why a did not count
    assert victim in good_objects(c)
    # the damage was recorded when found
    rel = next(r for r, d in sealed.items() if hashlib.sha256(d).hexdigest() == victim)
    statuses = {x["store"]: x["status"] for x in keep.whereis(f"proj/s1/raw/{rel}")["copies"]}
    assert statuses["b"] == "damaged"
    assert keep.verify("proj/s1", store="b", repair=True).info["states"]["modified"] == 1
    (tmp_path / "unmounted").rename(a)
    for sha in shas(sealed):
        assert sum(sha in good_objects(s) for s in (a, b, c)) + 1 >= 2


def test_drop_tree_and_get_it_back(
    keep: Keep, keep_root: Path, tmp_path: Path, sealed: dict[str, bytes]
) -> None:
    add_objects(keep, tmp_path, "backup")
    add_objects(keep, tmp_path, "archive", tier="cold", offsite=True)
    keep.copy("proj/s1", to="backup")
    keep.copy("proj/s1", to="archive")
    with pytest.raises(UsageError, match="keeps tree copies"):
        keep.drop("proj/s1", from_store="tree")
    keep.set_policy("proj", min_copies=2, tree_droppable=True)
    report = keep.drop("proj/s1", from_store="tree")
    assert report.counts() == {"ok": len(sealed)}
    raw = keep_root / "data/proj/s1/raw"
    assert not raw.exists() or not any(p.is_file() for p in raw.rglob("*"))
    assert (keep_root / "data/proj/s1/MANIFEST.sha256").exists()  # what was here stays readable
    assert keep.whereis("proj/s1")["tree"] == "dropped"
    # verify skips the dropped tree instead of calling every file missing
    assert not keep.verify("proj/s1").failed
    # a file can still be read (from the nearest store)
    assert any(e["action"] == "drop.tree" for e in keep.events(target="proj/s1"))
    with pytest.raises(UsageError, match="get"):
        keep.unseal("proj/s1", force=True)  # an unsealed dataset would need its tree
    back = keep.get("proj/s1")
    assert back.counts() == {"ok": len(sealed)}
    for rel, data in sealed.items():
        assert (raw / rel).read_bytes() == data
        assert os.stat(raw / rel).st_mode & 0o222 == 0  # sealed again
    assert keep.whereis("proj/s1")["tree"] == "present"
    assert not keep.verify("proj/s1").failed
    assert keep.get("proj/s1").counts() == {"notneeded": len(sealed)}


def test_drop_tree_refuses_an_unsealed_dataset(keep: Keep, tmp_path: Path) -> None:
    make_files(tmp_path / "src", 3)
    keep.ingest(tmp_path / "src", "proj/open")
    add_objects(keep, tmp_path, "backup")
    keep.copy("proj/open", to="backup")
    keep.set_policy("proj", min_copies=1, tree_droppable=True)
    with pytest.raises(UsageError, match="not sealed"):
        keep.drop("proj/open", from_store="tree")


def test_drop_keeps_content_another_dataset_still_uses(
    keep: Keep, tmp_path: Path, sealed: dict[str, bytes]
) -> None:
    backup = add_objects(keep, tmp_path, "backup")
    keep.ingest(tmp_path / "src", "proj/s2")
    keep.copy("proj", to="backup")
    report = keep.drop("proj/s1", from_store="backup")
    assert report.counts() == {"notneeded": len(sealed)}
    assert all("proj/s2" in (r.message or "") for r in report.results)
    assert good_objects(backup) == shas(sealed)


def test_unreachable_store_is_a_clear_error_and_records_nothing(
    keep: Keep, tmp_path: Path, sealed: dict[str, bytes]
) -> None:
    folder = add_objects(keep, tmp_path, "backup")
    shutil.rmtree(folder)  # the backup disk is not mounted
    with pytest.raises(StoreUnavailable, match="backup"):
        keep.copy("proj/s1", to="backup")
    with keep.catalog.read() as session:
        assert session.execute(select(func.count(Replica.id))).scalar_one() == 0
    with pytest.raises(StoreUnavailable):
        keep.add_store("other", kind="objects", path=str(tmp_path / "no" / "such" / "disk"))
    assert [s.name for s in keep.list_stores(check_health=False)] == ["tree", "backup"]
    listed = {s.name: s for s in keep.list_stores()}
    assert listed["backup"].reachable is False and "backup" in listed["backup"].message


def test_full_objects_disk_stops_with_a_clear_error_and_counts_only_what_fit(
    keep: Keep,
    tmp_path: Path,
    small_disk,
    sealed: dict[str, bytes],  # type: ignore[no-untyped-def]
) -> None:
    disk = small_disk(256)  # 256 KiB: about half of the dataset fits
    keep.add_store("tiny", kind="objects", path=str(disk / "store"))
    from labkeep.errors import StorageError

    with pytest.raises(StorageError, match="no space"):
        keep.copy("proj/s1", to="tiny")
    stored = good_objects(disk / "store")
    assert stored == set(objects_in(disk / "store"))  # nothing half-written under a name
    assert not any((disk / "store" / ".tmp").iterdir())
    with keep.catalog.read() as session:
        recorded = {bytes(h).hex() for (h,) in session.execute(select(Replica.sha256))}
    assert recorded <= stored


def test_copy_killed_midway_resumes_and_never_counts_a_partial_copy(
    tmp_path: Path, catalog_url: str | None
) -> None:
    root = tmp_path / "keep"
    run("init", str(root), *(["--catalog", catalog_url] if catalog_url else []))
    src = tmp_path / "src"
    files = make_files(src, 1500, min_size=4_000, max_size=40_000)
    run("project", "create", "proj", "--root", str(root))
    run("ingest", str(src), "proj/s1", "--root", str(root))
    run("store", "add", "backup", "--path", str(tmp_path / "backup"), "--root", str(root))
    proc = subprocess.Popen(
        [sys.executable, "-m", "labkeep", "copy", "proj/s1", "--to", "backup", "--json",
         "--jobs", "2", "--root", str(root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # results come once their rows are committed
        if '"ok"' in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    with Keep.open(root) as keep:
        with keep.catalog.read() as session:
            recorded = {bytes(h).hex() for (h,) in session.execute(select(Replica.sha256))}
        assert 0 < len(recorded) < len(shas(files))
        assert recorded <= good_objects(tmp_path / "backup")  # every row has good content
    # the killed process's lease does not block: on this host a dead holder is taken
    # over at once (not after its 60 s)
    out = run("copy", "proj/s1", "--to", "backup", "--json", "--root", str(root))
    statuses = {r["status"] for r in records(out) if "path" in r}
    assert statuses <= {"ok", "notneeded"}
    assert good_objects(tmp_path / "backup") == shas(files)


def test_two_racing_drops_never_leave_fewer_than_min_copies(
    tmp_path: Path, catalog_url: str | None
) -> None:
    root = tmp_path / "keep"
    run("init", str(root), *(["--catalog", catalog_url] if catalog_url else []))
    src = tmp_path / "src"
    files = make_files(src, 60, min_size=1000, max_size=50_000)
    run("project", "create", "proj", "--root", str(root))
    run("ingest", str(src), "proj/s1", "--seal", "--root", str(root))
    for name in ("a", "b"):
        run("store", "add", name, "--path", str(tmp_path / name), "--root", str(root))
        run("copy", "proj/s1", "--to", name, "--root", str(root))
    run("policy", "set", "proj", "--min-copies", "2", "--tree-droppable", "--root", str(root))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "labkeep",
                "drop",
                "proj/s1",
                "--from",
                store,
                "--json",
                "--root",
                str(root),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for store in ("a", "b", "tree")
    ]
    outcomes = [(p.returncode, p.communicate(timeout=120)) for p in procs]
    outcomes = [(p.returncode, out) for p, (_, out) in zip(procs, outcomes, strict=True)]
    assert {code for code, _ in outcomes} <= {0, 1, 4}
    raw = root / "data/proj/s1/raw"
    in_tree = {
        hashlib.sha256(p.read_bytes()).hexdigest() for p in raw.rglob("*") if p.is_file()
    } if raw.exists() else set()  # fmt: skip
    for sha in shas(files):
        copies = (
            (sha in in_tree)
            + (sha in good_objects(tmp_path / "a"))
            + (sha in good_objects(tmp_path / "b"))
        )
        assert copies >= 2, outcomes


def test_a_lease_held_elsewhere_makes_a_second_copy_job_wait(
    keep: Keep, tmp_path: Path, sealed: dict[str, bytes]
) -> None:
    add_objects(keep, tmp_path, "backup")
    from labkeep.ops.leases import lease

    with keep.catalog.read() as session:
        from labkeep.catalog import Dataset

        dataset_id = session.execute(select(Dataset.id).where(Dataset.name == "s1")).scalar_one()
    with (
        lease(keep, f"copies:{dataset_id}", what="a copy job on proj/s1"),
        pytest.raises(Busy, match="under way"),
    ):
        keep.copy("proj/s1", to="backup")
    assert not keep.copy("proj/s1", to="backup").failed


def test_policy_and_status_show_the_3_2_1_picture(
    keep: Keep, tmp_path: Path, sealed: dict[str, bytes]
) -> None:
    add_objects(keep, tmp_path, "backup")
    add_objects(keep, tmp_path, "archive", tier="cold", offsite=True, medium="tape")
    keep.set_policy("proj", min_copies=3, min_media=2, min_offsite=1, on_seal=["backup", "archive"])
    below = [r for r in keep.policy_check("proj") if r["below_policy"]]
    assert [r["dataset"] for r in below] == ["proj/s1"]
    assert "1 of 3 copies" in below[0]["below_policy"]
    attention = " ".join(keep.status()["attention"])
    assert "proj/s1" in attention and "copy policy" in attention
    applied = keep.policy_apply("proj")
    assert applied.counts() == {"ok": 2 * len(sealed)}
    assert not [r for r in keep.policy_check("proj") if r["below_policy"]]
    assert "copy policy" not in " ".join(keep.status()["attention"])
    assert keep.get_policy("proj").on_seal == ["backup", "archive"]


def cli_keep(tmp_path: Path, dataset: str, n: int) -> tuple[Path, dict[str, bytes]]:
    """A keep made through the CLI with *dataset* of *n* files, ingested and sealed."""
    root = tmp_path / "keep"
    run("init", str(root))
    files = make_files(tmp_path / "src", n, min_size=10)
    run("project", "create", dataset.split("/")[0], "--root", str(root))
    run("ingest", str(tmp_path / "src"), dataset, "--seal", "--root", str(root))
    return root, files


def test_cli_copy_whereis_drop_json(tmp_path: Path) -> None:
    root, files = cli_keep(tmp_path, "p/d", 5)
    out = run(
        "store", "add", "backup", "--path", str(tmp_path / "b"), "--root", str(root), "--json"
    )
    assert records(out)[0]["name"] == "backup"
    out = run("copy", "p/d", "--to", "backup", "--json", "--root", str(root))
    recs = records(out)
    assert [r["status"] for r in recs if "path" in r] == ["ok"] * len(files)
    assert recs[-1]["summary"] == {"ok": len(files)}
    rel = sorted(files)[0]
    out = run("whereis", f"p/d/raw/{rel}", "--json", "--root", str(root))
    assert {c["store"] for c in json.loads(out.stdout)["copies"]} == {"tree", "backup"}
    out = run("store", "list", "--json", "--root", str(root))
    listed = {r["name"]: r for r in records(out)}
    assert listed["backup"]["objects"] == len(shas(files)) and listed["backup"]["reachable"]
    run("policy", "set", "p", "--min-copies", "2", "--root", str(root))
    out = run("drop", "p/d", "--from", "backup", "--root", str(root), check=1)
    assert "only 1 good copy elsewhere" in out.stdout
    out = run("policy", "check", "--root", str(root), check=0)
    run("policy", "set", "p", "--tree-droppable", "--root", str(root))
    out = run("drop", "p/d", "--from", "tree", "--root", str(root), check=1)  # not a usage error
    assert "fewer than 2 good copies" in out.stderr
    out = run("drop", "p/d", "--from", "nowhere", "--root", str(root), check=2)
    assert "no store named 'nowhere'" in out.stderr
    out = run("store", "add", "bad", "--path", "/no/such/disk/x", "--root", str(root), check=3)
    assert "does not exist" in out.stderr


def test_web_shows_copies_and_serves_a_dropped_tree_from_the_stores(
    keep: Keep, tmp_path: Path, sealed: dict[str, bytes]
) -> None:
    """Landing pages say where the content lives; downloads (whole, ranges, zip) still
    work when the tree copy was dropped, served from a store and still matching."""
    import io
    import zipfile

    from tests.webserver import LiveServer

    add_objects(keep, tmp_path, "backup")
    add_objects(keep, tmp_path, "archive", tier="cold", offsite=True)
    keep.copy("proj/s1", to="backup")
    keep.copy("proj/s1", to="archive")
    keep.set_policy("proj", min_copies=2, tree_droppable=True)
    keep.drop("proj/s1", from_store="tree")
    secret, _ = keep.create_token("web", expires="1d")
    rel = max(sealed, key=lambda r: len(sealed[r]))
    data = sealed[rel]
    with LiveServer(keep) as server, server.client(timeout=30) as client:
        auth = {"Authorization": f"Bearer {secret}"}
        page = client.get("/p/proj/s1", headers=auth)
        assert page.status_code == 200
        assert "backup" in page.text and "archive" in page.text and "cold data" in page.text
        assert "BELOW POLICY" not in page.text
        file_page = client.get(f"/p/proj/s1/-/raw/{rel}", headers=auth)
        assert file_page.status_code == 200 and "file-copies" in file_page.text
        got = client.get(f"/api/v1/files/proj/s1/raw/{rel}", headers=auth)
        assert got.status_code == 200 and got.content == data
        assert got.headers["x-content-sha256"] == hashlib.sha256(data).hexdigest()
        part = client.get(
            f"/api/v1/files/proj/s1/raw/{rel}", headers={**auth, "Range": "bytes=10-99"}
        )
        assert part.status_code == 206 and part.content == data[10:100]
        assert part.headers["content-range"] == f"bytes 10-99/{len(data)}"
        tail = client.get(f"/api/v1/files/proj/s1/raw/{rel}", headers={**auth, "Range": "bytes=-7"})
        assert tail.status_code == 206 and tail.content == data[-7:]
        beyond = client.get(
            f"/api/v1/files/proj/s1/raw/{rel}", headers={**auth, "Range": f"bytes={len(data)}-"}
        )
        assert beyond.status_code == 416
        archive = client.get("/api/v1/datasets/proj/s1/zip", headers=auth)
        assert archive.status_code == 200
        with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
            assert {n: z.read(n) for n in z.namelist()} == {
                f"raw/{r}": d for r, d in sealed.items()
            }
        copies = client.get("/api/v1/datasets/proj/s1/copies", headers=auth).json()
        assert copies["tree"] == "dropped" and copies["good_copies"] == 2
        where = client.get(f"/api/v1/whereis/proj/s1/raw/{rel}", headers=auth).json()
        assert {c["store"] for c in where["copies"]} == {"backup", "archive"}
        policy = client.put("/api/v1/projects/proj/policy", headers=auth, json={"min_copies": 3})
        assert policy.status_code == 200 and policy.json()["min_copies"] == 3
        check = client.get("/api/v1/policy-check", headers=auth).json()
        assert check[0]["below_policy"] == ["2 of 3 copies"]
        dashboard = client.get("/", headers=auth)  # a site admin's: what needs attention
        assert "proj/s1: below its copy policy" in dashboard.text
        listed = client.get("/api/v1/stores", headers=auth).json()
        assert {s["name"] for s in listed} == {"tree", "backup", "archive"}
        bad = client.put("/api/v1/projects/proj/policy", headers=auth, json={"min_copies": 0})
        assert bad.status_code == 422


def test_move_copies_then_drops_and_a_damaged_copy_is_replaced_not_adopted(
    keep: Keep, tmp_path: Path, sealed: dict[str, bytes]
) -> None:
    warm = add_objects(keep, tmp_path, "warm")
    cold = add_objects(keep, tmp_path, "cold", tier="cold")
    keep.copy("proj/s1", to="warm")
    # a copy found damaged is replaced by the next copy, not taken as done
    victim = sorted(objects_in(warm))[0]
    flip_byte(objects_in(warm)[victim])
    keep.verify("proj/s1", store="warm")
    again = keep.copy("proj/s1", to="warm")
    assert [r.sha256 for r in again.results if r.status == "ok"] == [victim]
    assert good_objects(warm) == shas(sealed)
    keep.set_policy("proj", min_copies=1)
    report = keep.move("proj/s1", from_store="warm", to="cold")
    assert report.info["dropped"] and not report.failed
    assert good_objects(cold) == shas(sealed)
    assert objects_in(warm) == {}
    stores = {c["store"] for c in keep.whereis("proj/s1")["copies"]}
    assert stores == {"tree", "cold"}
    with pytest.raises(UsageError):
        keep.move("proj/s1", from_store="cold", to="cold")


# -- stores that must not be confused, read-only stores, rules naming a store ------------
def test_two_stores_never_share_a_place(keep: Keep, keep_root: Path, tmp_path: Path) -> None:
    """One folder under two store names would count one copy twice (and a drop from one
    would delete the other's content): refused, nested either way, and the keep's own
    folders too."""
    disks = tmp_path / "disks"
    disks.mkdir()
    add_objects(keep, disks, "a")
    place = disks / "store-a"
    for path, why in (
        (place, "where store 'a' does"),
        (place / "inner", "where store 'a' does"),
        (disks, "where store 'a' does"),
    ):
        with pytest.raises(AlreadyExists, match=why):
            keep.add_store("b", kind="objects", path=str(path))
    (tmp_path / "linked").symlink_to(place)
    with pytest.raises(AlreadyExists):
        keep.add_store("b", kind="objects", path=str(tmp_path / "linked"))
    with pytest.raises(UsageError, match="versions store"):
        keep.add_store("b", kind="objects", path=str(keep_root))
    with pytest.raises(UsageError, match="versions store"):
        keep.add_store("b", kind="objects", path=str(keep.config.versions_path))
    (tmp_path / "plain-file").write_bytes(b"x")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        keep.add_store("b", kind="objects", path=str(tmp_path / "plain-file"))
    assert [s.name for s in keep.list_stores(check_health=False)] == ["tree", "a"]
    # S3: the same endpoint, bucket and overlapping prefixes are one place
    bad_urls = ("s3.example.org", "ftp://s3.example.org", "http://")
    for url in bad_urls:
        with pytest.raises(UsageError, match="not an endpoint URL"):
            keep.add_store("c", kind="s3", endpoint=url, bucket="lab-archive")
    with pytest.raises(UsageError, match="not a valid bucket name"):
        keep.add_store("c", kind="s3", endpoint="http://127.0.0.1:9", bucket="Bad_Bucket!")


def test_a_read_only_store_is_read_but_never_written(
    keep: Keep, tmp_path: Path, sealed: dict[str, bytes]
) -> None:
    """A backup disk mounted read-only for a restore: get and audits read from it; copies,
    drops and repairs into it are refused naming it."""
    from labkeep.integrity.immutable import set_immutable

    disk = add_objects(keep, tmp_path, "disk")
    keep.copy("proj/s1", to="disk")
    keep.set_policy("proj", min_copies=1, tree_droppable=True)
    keep.drop("proj/s1", from_store="tree")
    tmp = disk / ".tmp"
    tmp.mkdir(exist_ok=True)
    try:
        set_immutable(str(tmp), True)  # its writes now fail with EPERM, even for root
    except OSError:
        pytest.skip("chattr +i is not available on this file system")
    try:
        assert not keep.verify_store("proj", store="disk").failed
        back = keep.get("proj/s1")
        assert back.counts() == {"ok": len(sealed)}
        keep.ingest(tmp_path / "src", "proj/s2")
        with pytest.raises(StoreUnavailable, match="'disk' can only be read"):
            keep.copy("proj/s2", to="disk")
        with pytest.raises(StoreUnavailable, match="'disk' can only be read"):
            keep.drop("proj/s1", from_store="disk")
        ro = tmp_path / "ro-disk"
        ro.mkdir()
        set_immutable(str(ro), True)
        with pytest.raises(StoreUnavailable, match="'disk2' cannot be used: cannot write"):
            keep.add_store("disk2", kind="objects", path=str(ro))
        set_immutable(str(ro), False)
    finally:
        set_immutable(str(tmp), False)
    assert good_objects(disk) == shas(sealed)


def test_rules_naming_a_store_keep_it_and_apply_goes_on_past_a_broken_one(
    keep: Keep, tmp_path: Path, sealed: dict[str, bytes]
) -> None:
    far = add_objects(keep, tmp_path, "far")
    local = add_objects(keep, tmp_path, "local")
    keep.set_policy("proj", min_copies=2, on_seal=["far", "local"])
    with pytest.raises(UsageError, match="copy-on-seal rules of: proj"):
        keep.remove_store("far")
    # the far disk is gone: the rule for it fails by name, the other rule still runs
    shutil.rmtree(far)
    seen: list[Result] = []
    report = keep.policy_apply(on_result=seen.append)
    problems = [r for r in report.results if r.status == "error"]
    assert [(r.dataset, r.extra["store"], r.extra["error"]) for r in problems] == [
        ("proj/s1", "far", "store-unavailable")
    ]
    assert "copy-on-seal rule 'copy:far' of proj" in (problems[0].message or "")
    assert good_objects(local) == shas(sealed)


def test_copy_records_damage_it_finds_on_the_way(
    keep: Keep, keep_root: Path, tmp_path: Path, sealed: dict[str, bytes]
) -> None:
    add_objects(keep, tmp_path, "one")
    two = add_objects(keep, tmp_path, "two")
    keep.copy("proj/s1", to="one")
    assert not keep.verify("proj/s1").failed
    rel = sorted(sealed)[0]
    flip_byte(keep_root / "data/proj/s1/raw" / rel)
    seen: list[Result] = []
    report = keep.copy("proj/s1", to="two", on_result=seen.append)
    assert not report.failed
    [noted] = [r for r in seen if r.message]
    assert noted.path == f"raw/{rel}" and "tree copy is damaged" in (noted.message or "")
    assert noted.extra["source"] == "one"
    assert good_objects(two) == shas(sealed)
    where = keep.whereis(f"proj/s1/raw/{rel}")
    assert {c["store"]: c["status"] for c in where["copies"]}["tree"] == "damaged"


def test_leftovers_of_killed_writers_are_cleaned_by_the_next_one(
    keep: Keep, tmp_path: Path, sealed: dict[str, bytes]
) -> None:
    backup = add_objects(keep, tmp_path, "backup")
    tmp = backup / ".tmp"
    (tmp / "stager-dead").mkdir(parents=True)
    old = [tmp / "put-dead.part", tmp / "stager-dead" / "x.part"]
    fresh = tmp / "put-running.part"  # another process writing right now
    for path in [*old, fresh]:
        path.write_bytes(b"partial")
    hours_ago = time.time() - 2 * 3600
    for path in [*old, tmp / "stager-dead"]:
        os.utime(path, (hours_ago, hours_ago))
    keep.copy("proj/s1", to="backup")
    assert not any(p.exists() for p in old) and not (tmp / "stager-dead").exists()
    assert fresh.read_bytes() == b"partial"


def test_a_policy_that_could_never_be_met_is_refused(keep: Keep) -> None:
    keep.set_policy("proj", min_copies=2)
    with pytest.raises(UsageError, match="3 kinds of media cannot be had with 2 copies"):
        keep.set_policy("proj", min_media=3)
    with pytest.raises(UsageError, match="off-site copies cannot be had with 1 copies"):
        keep.set_policy("proj", min_copies=1, min_offsite=2)
    assert keep.set_policy("proj", min_copies=3, min_media=3).min_media == 3


def test_cli_verify_repair_exits_0_only_when_everything_was_repaired(tmp_path: Path) -> None:
    root, files = cli_keep(tmp_path, "proj/s1", 4)
    raw = root / "data/proj/s1/raw"
    first, second = sorted(files)[:2]
    flip_byte(raw / first)
    # no other copy: found, not repaired -> 1
    out = run("verify", "proj/s1", "--repair", "--json", "--root", str(root), check=1)
    assert records(out)[-1]["states"]["modified"] == 1
    run("store", "add", "backup", "--path", str(tmp_path / "backup"), "--root", str(root))
    unprotect(raw / first)
    (raw / first).write_bytes(files[first])  # put it right by hand, then copy
    run("copy", "proj/s1", "--to", "backup", "--root", str(root))
    flip_byte(raw / second)
    out = run("verify", "proj/s1", "--repair", "--json", "--root", str(root), check=0)
    assert records(out)[-1]["repaired"] == 1
    assert (raw / second).read_bytes() == files[second]
    run("verify", "proj/s1", "--json", "--root", str(root), check=0)
