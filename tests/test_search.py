"""Key-values, project schemas, samples and search (issue 13 parts 4 and 5), on both
catalogs: what a scientist sets, what they find, and what others never see."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from labkeep import Keep
from labkeep.errors import Forbidden, MetadataInvalid, NotFound, UsageError
from tests.test_cli import records, run


def _session(keep: Keep, tmp_path: Path, address: str, files: dict[str, bytes]) -> None:
    src = tmp_path / address.replace("/", "_")
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    keep.ingest(src, address)


def _addresses(keep: Keep, query: str, **kwargs: object) -> list[str]:
    return [h["address"] for h in keep.search(query, **kwargs).items]  # type: ignore[arg-type]


def _dataset_id(keep: Keep, address: str) -> int:
    from sqlalchemy import select

    from labkeep.catalog import Dataset, Project

    project, name = address.split("/")
    with keep.catalog.read() as session:
        return int(
            session.execute(
                select(Dataset.id)
                .join(Project, Project.id == Dataset.project_id)
                .where(Project.name == project, Dataset.name == name)
            ).scalar_one()
        )


def test_key_values_schema_and_events(keep: Keep, tmp_path: Path) -> None:
    _session(keep, tmp_path, "proj/s017", {"cell-01.czi": b"czi", "notes.txt": b"n"})
    record = keep.set_values("proj/s017", {"sample": "mouse-42", "stain": "DAPI"})
    assert record.values == {"sample": "mouse-42", "stain": "DAPI"}
    keep.set_values("proj/s017/raw/cell-01.czi", {"plane": "z12"})
    keep.set_values("proj", {"funding": "ERC-123"})
    assert keep.get_values("proj/s017/raw/cell-01.czi").values == {"plane": "z12"}
    assert keep.get_values("proj").values == {"funding": "ERC-123"}
    with pytest.raises(NotFound, match="no file"):
        keep.set_values("proj/s017/raw/missing.tif", {"a": "b"})
    with pytest.raises(UsageError, match="search filter"):
        keep.set_values("proj/s017", {"project": "x"})
    with pytest.raises(UsageError, match="cannot be a key"):
        keep.set_values("proj/s017", {"1abc": "x"})
    # the project's schema: required keys, types, choices, in plain sentences
    schema = {
        "type": "object",
        "required": ["sample", "instrument", "operator"],
        "properties": {
            "instrument": {"enum": ["LSM 980", "SP8"]},
            "age_days": {"type": "integer", "minimum": 0},
        },
    }
    result = keep.set_kv_schema("proj", schema)
    assert result["failing"] == [
        {"dataset": "proj/s017", "problems": ["instrument is required", "operator is required"]}
    ]
    with pytest.raises(MetadataInvalid) as caught:
        keep.set_values("proj/s017", {"instrument": "Zeiss", "age_days": "old"})
    assert caught.value.problems == [
        "age_days must be a whole number, not 'old'",
        "instrument must be one of: LSM 980, SP8",
        "operator is required",
    ]
    assert "labkeep meta set proj/s017" in (caught.value.hint or "")
    assert keep.get_values("proj/s017").values == {"sample": "mouse-42", "stain": "DAPI"}
    keep.set_values("proj/s017", {"instrument": "LSM 980", "operator": "ana", "age_days": "60"})
    with pytest.raises(MetadataInvalid, match="operator is required"):
        keep.unset_values("proj/s017", ["operator"])
    keep.unset_values("proj/s017", ["stain"])
    assert "stain" not in keep.get_values("proj/s017").values
    with pytest.raises(UsageError, match="not a valid JSON Schema"):
        keep.set_kv_schema("proj", {"type": "no-such-type"})
    assert keep.get_kv_schema("proj") == schema
    actions = [e["action"] for e in keep.events(target="proj", limit=None)]
    assert actions.count("kv-set") == 5 and "kv-schema-set" in actions


def test_search_finds_filters_and_follows_changes(keep: Keep, tmp_path: Path) -> None:
    _session(keep, tmp_path, "proj/s017", {"sub/cell-01.czi": b"a", "sub/cell-02.czi": b"b"})
    _session(keep, tmp_path, "proj/s018", {"cell-01.czi": b"c"})
    keep.update_dataset("proj/s018", title="Widefield session", description="GFP screen")
    keep.add_sample("mouse-42", type="mouse", attrs={"genotype": "WT"})
    keep.link_sample("proj/s017", "mouse-42")
    keep.set_values("proj/s017", {"instrument": "LSM 980"})
    from sqlalchemy import select

    from labkeep.catalog import Entry
    from labkeep.ops.extract import _row, _write
    from labkeep.ops.search_index import index_file_fields

    # what an extraction job records for the file (and puts into the index with it)
    with keep.catalog.read() as session:
        entry_id, digest = session.execute(
            select(Entry.id, Entry.sha256).where(
                Entry.path == "raw/sub/cell-01.czi", Entry.valid_to.is_(None)
            )
        ).one()
    fields = {"objective": {"magnification": 63.0}, "acquisition_date": "2026-03-04T10:00:00"}
    _write(keep, [_row(entry_id, digest, {"status": "ok", "extractor": "czi", "fields": fields})])
    with keep.catalog.write() as session:
        assert not index_file_fields(
            session, dataset_id=_dataset_id(keep, "proj/s017"), path="raw/nope", fields={"a": "b"}
        )
    assert _addresses(keep, "mouse-42") == ["sample:mouse-42", "proj/s017"]
    assert _addresses(keep, "mouse-42 objective:63x") == ["proj/s017/raw/sub/cell-01.czi"]
    assert _addresses(keep, "objective:63X date:2026-03") == ["proj/s017/raw/sub/cell-01.czi"]
    assert _addresses(keep, "objective:63x date:2026-04") == []
    assert _addresses(keep, "widefield") == ["proj/s018"]
    assert _addresses(keep, "gfp", kind="session") == ["proj/s018"]
    assert sorted(_addresses(keep, "cell-01", kind="file")) == [
        "proj/s017/raw/sub/cell-01.czi",
        "proj/s018/raw/cell-01.czi",
    ]
    assert _addresses(keep, "genotype:wt") == ["sample:mouse-42"]
    assert _addresses(keep, "", instrument="lsm 980", kind="dataset") == ["proj/s017"]
    assert _addresses(keep, "cell", sealed=True) == []
    keep.seal("proj/s018")
    assert _addresses(keep, "cell", sealed=True) == ["proj/s018/raw/cell-01.czi"]
    # the index follows the write paths: a file removed by a save is no longer found,
    # a new one is, both in the save's own transaction
    keep.create_dataset("proj/seg", kind="analysis")
    tree = keep.tree.dataset_dir("proj", "seg")
    (tree / "masks").mkdir()
    (tree / "masks" / "mask-02.png").write_bytes(b"m2")
    keep.save("proj/seg", message="first")
    assert _addresses(keep, "mask-02") == ["proj/seg/masks/mask-02.png"]
    (tree / "masks" / "mask-02.png").unlink()
    (tree / "masks" / "mask-03.png").write_bytes(b"m3")
    keep.save("proj/seg", message="swap")
    assert _addresses(keep, "mask-02") == []
    assert _addresses(keep, "mask-03") == ["proj/seg/masks/mask-03.png"]
    (tree / "masks" / "mask-03.png").write_bytes(b"changed")
    keep.save("proj/seg", message="rewrite")
    assert _addresses(keep, "mask-03") == ["proj/seg/masks/mask-03.png"]
    # the unlinked sample no longer finds the dataset
    keep.unlink_sample("proj/s017", "mouse-42")
    assert _addresses(keep, "mouse-42") == ["sample:mouse-42"]
    # pages, counts, bad queries
    page = keep.search("cell", limit=1)
    assert page.total == 3 and len(page.items) == 1 and page.next_offset == 1
    assert keep.search("cell", limit=1, offset=2).next_offset is None
    for bad in ("date:March", "date:9999-99-99", "date:2026-13", "date:٢٠٢٦", "kind:folder",
                "sealed:maybe", ""):  # fmt: skip
        with pytest.raises(UsageError):
            keep.search(bad)
    with pytest.raises(UsageError):
        keep.search("cell", offset=5000)
    # --reindex rebuilds the same index (the extracted fields from their records)
    before = keep.search("cell objective:63x").to_dict()
    counts = keep.reindex_search()
    assert counts["files"] == 4 and counts["samples"] == 1
    assert keep.search("cell objective:63x").to_dict() == before


def test_samples_are_seen_only_by_those_who_may(keep: Keep, tmp_path: Path) -> None:
    keep.create_group("lab-a")
    keep.create_group("lab-b")
    for name in ("alice", "bob", "carol"):
        keep.add_user(name, password="correct horse battery")
    keep.set_member("lab-a", "alice", "member")
    keep.set_member("lab-b", "bob", "member")
    keep.create_project("a-proj", group="lab-a")
    keep.create_project("b-proj", group="lab-b", private=True)
    _session(keep, tmp_path, "a-proj/s1", {"img-a.tif": b"a"})
    _session(keep, tmp_path, "b-proj/s1", {"img-b.tif": b"b"})
    keep.grant("bob", "write", "b-proj")  # private: members get nothing by membership
    alice = keep.acting_as(keep.principal_for("alice"))
    bob = keep.acting_as(keep.principal_for("bob"))
    carol = keep.acting_as(keep.principal_for("carol"))
    alice.add_sample("mouse-7", type="mouse", attrs={"genotype": "KO"})
    assert alice.get_sample("mouse-7").group == "lab-a"
    alice.link_sample("a-proj/s1", "mouse-7")
    with pytest.raises(NotFound):
        alice.link_sample("b-proj/s1", "mouse-7")  # a private project of another lab
    with pytest.raises(NotFound):
        bob.get_sample("mouse-7")  # bob sees no dataset of it and is not in its group
    with pytest.raises(NotFound):
        bob.link_sample("b-proj/s1", "mouse-7")
    assert [s.name for s in bob.list_samples()] == []
    assert bob.search("mouse-7").total == 0 and bob.search("genotype:ko").total == 0
    assert bob.search("img").total == 1  # his own file only
    # a dataset grant shows the sample, and only the datasets of it one may see
    keep.grant("carol", "read", "a-proj/s1")
    assert carol.get_sample("mouse-7").datasets == ["a-proj/s1"]
    with pytest.raises(Forbidden):
        carol.update_sample("mouse-7", attrs={"genotype": "WT"})
    assert _addresses(carol, "mouse-7") == ["sample:mouse-7", "a-proj/s1"]
    assert _addresses(alice, "img") == ["a-proj/s1/raw/img-a.tif"]
    assert keep.search("img").total == 2  # the site admin sees both
    alice.update_sample("mouse-7", attrs={"sex": "f"}, unset=["genotype"])
    assert alice.get_sample("mouse-7").attrs == {"sex": "f"}
    assert alice.search("genotype:ko").total == 0 and alice.search("sex:f").total == 1
    # a dataset grant shows that dataset, its files and its project, not the others
    _session(keep, tmp_path, "b-proj/s2", {"img-c.tif": b"c"})
    keep.grant("carol", "read", "b-proj/s2")
    assert _addresses(carol, "img") == ["a-proj/s1/raw/img-a.tif", "b-proj/s2/raw/img-c.tif"]
    assert _addresses(carol, "b-proj", kind="project") == ["b-proj"]
    assert _addresses(carol, "s1", project="b-proj") == []
    assert _addresses(bob, "img") == ["b-proj/s1/raw/img-b.tif", "b-proj/s2/raw/img-c.tif"]
    keep.set_member("lab-a", "alice", None)
    assert _addresses(keep.acting_as(keep.principal_for("alice")), "img") == []


def test_cli_meta_sample_search(tmp_path: Path, catalog_url: str | None) -> None:
    root = tmp_path / "keep"
    args = ["--root", str(root)]
    run("init", str(root), *(["--catalog", catalog_url] if catalog_url else []))
    run("project", "create", "imaging-2026", *args)
    src = tmp_path / "src"
    src.mkdir()
    (src / "cell-01.czi").write_bytes(b"x")
    run("ingest", str(src), "imaging-2026/s017", *args)
    got = records(run("meta", "set", "imaging-2026/s017", "sample=mouse-42", "stain=DAPI",
                      *args, "--json"))  # fmt: skip
    assert got[0]["values"] == {"sample": "mouse-42", "stain": "DAPI"}
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"required": ["operator"]}))
    run("meta", "schema", "set", "imaging-2026", str(schema), *args)
    refused = run("meta", "set", "imaging-2026/s017", "stain=Hoechst", *args, check=None)
    assert refused.returncode != 0 and "operator is required" in refused.stderr
    assert "Traceback" not in refused.stderr
    run("sample", "add", "mouse-42", "--type", "mouse", "--attr", "genotype=WT", *args)
    run("sample", "link", "imaging-2026/s017", "mouse-42", *args)
    shown = records(run("sample", "show", "mouse-42", *args, "--json"))[0]
    assert shown["datasets"] == ["imaging-2026/s017"] and shown["attrs"] == {"genotype": "WT"}
    found = records(run("search", "mouse-42", *args, "--json"))[0]
    assert [h["address"] for h in found["items"]] == ["sample:mouse-42", "imaging-2026/s017"]
    text = run("search", "genotype:wt", *args).stdout
    assert "sample:mouse-42" in text and "1 of 1 result" in text
    assert records(run("search", "--reindex", *args, "--json"))[0]["files"] == 1
    shutil.rmtree(root, ignore_errors=True)


def test_ending_an_entry_does_not_scan_the_index(tmp_path: Path) -> None:
    """Ending a file's current entry drops its search document with one index probe,
    whatever the number of other files' documents: counted in SQLite VM steps (the
    progress handler), not in time. Migration 0010's trigger searched the documents'
    unique index by ``kind`` alone, so each modified or removed file scanned every file
    document of the keep."""
    import sqlite3

    def steps_to_end_one_entry(n_files: int) -> int:
        root = tmp_path / f"keep-{n_files}"
        with Keep.init(root) as keep:
            keep.create_project("proj")
            keep.create_dataset("proj/seg", kind="analysis")
            tree = keep.tree.dataset_dir("proj", "seg")
            for i in range(n_files):
                (tree / f"f{i:05d}.txt").write_bytes(b"%d" % i)
            keep.save("proj/seg", message="first")
        con = sqlite3.connect(root / "catalog.db")
        try:
            entry = con.execute(
                "SELECT id FROM entries WHERE path = 'f00000.txt' AND valid_to IS NULL"
            ).fetchone()[0]
            docs = con.execute("SELECT count(*) FROM search_docs WHERE kind = 'file'").fetchone()
            assert docs[0] == n_files
            steps = [0]

            def count() -> int:
                steps[0] += 1
                return 0

            con.set_progress_handler(count, 10)
            con.execute("UPDATE entries SET valid_to = 2 WHERE id = ?", (entry,))
            con.set_progress_handler(None, 0)
            left = con.execute(
                "SELECT count(*) FROM search_docs WHERE kind = 'file' AND path = 'f00000.txt'"
            ).fetchone()[0]
            assert left == 0  # the document went with the entry's last current row
            con.rollback()
            return steps[0]
        finally:
            con.close()

    few, many = steps_to_end_one_entry(20), steps_to_end_one_entry(2000)
    assert many < few * 2, (few, many)
