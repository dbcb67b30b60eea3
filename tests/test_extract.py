"""Metadata extraction (issue 13 part 1): plugins on real files made by the formats' own
writers, corrupt and truncated files per format, readers that raise, crash or hang
(isolated in a child process), the job queued by ingest, records per entry, access."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from labkeep import Keep
from labkeep.catalog import Extraction, Job
from labkeep.errors import NotFound
from labkeep.extract import load_extractors, search_fields
from labkeep.extract.runner import Isolated
from labkeep.ops.worker import JobWorker
from tests import imaging_samples as samples
from tests.extract_plugins import ALL as MISBEHAVING


def drain(keep: Keep) -> Any:
    return JobWorker(keep, drain=True, log=io.StringIO(), schedule=False).run()


def _samples(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    samples.ome_tiff(folder / "cell-01.ome.tif")
    samples.ome_tiff_by_metadata(folder / "tifffile-meta.ome.tif")
    samples.imagej_tiff(folder / "stack.tif")
    samples.czi(folder / "cell-02.czi")
    samples.fastq(folder / "reads_R1.fastq.gz")
    samples.bam(folder / "aligned.bam")
    samples.png(folder / "overview.png")
    (folder / "notes.txt").write_text("mouse 42, confocal, 63x\nsecond line\n")
    (folder / "notes-utf8.md").write_text("Probe für Maus 42, µm\n", encoding="utf-8")
    (folder / "blob.bin").write_bytes(bytes(range(256)) * 4)
    return folder


def test_ome_tiff_xml_becomes_typed_fields(tmp_path: Path) -> None:
    path = tmp_path / "cell-01.ome.tif"
    samples.ome_tiff(path)
    with Isolated() as child:
        answer = child.extract(str(path), path.name)
    assert answer["status"] == "ok" and answer["extractor"] == "tiff"
    f = answer["fields"]
    assert (f["format"], f["size_x"], f["size_y"], f["size_z"], f["size_c"], f["size_t"]) == (
        "OME-TIFF", 80, 64, 3, 2, 1,
    )  # fmt: skip
    assert f["pixel_type"] == "uint16"
    assert f["physical_size_x"] == {"value": 0.065, "unit": "µm"}
    assert f["physical_size_z"] == {"value": 0.3, "unit": "µm"}
    assert [c["name"] for c in f["channels"]] == ["DAPI", "GFP"]
    assert f["channels"][0]["excitation_wavelength"] == {"value": 405.0, "unit": "nm"}
    assert f["channels"][1]["emission_wavelength"] == {"value": 509.0, "unit": "nm"}
    assert f["objective"] == {
        "model": "Plan-Apochromat 63x/1.40 Oil", "magnification": 63.0, "na": 1.4,
        "immersion": "Oil",
    }  # fmt: skip
    assert f["instrument"] == "Zeiss LSM 980"
    assert f["acquisition_date"] == "2026-03-14T10:21:07"
    flat = search_fields(f)
    assert flat["objective"] == "63x" and flat["channels"] == "DAPI,GFP"
    assert flat["date"] == "2026-03-14" and flat["instrument"] == "Zeiss LSM 980"
    assert all(isinstance(v, str) for v in flat.values())


def test_other_formats(tmp_path: Path) -> None:
    folder = _samples(tmp_path / "src")
    with Isolated() as child:
        got = {p.name: child.extract(str(p), p.name) for p in sorted(folder.iterdir())}
    assert {n: a["status"] for n, a in got.items()} == dict.fromkeys(got, "ok"), got
    assert {n: a["extractor"] for n, a in got.items()} == {
        "aligned.bam": "bam", "blob.bin": "generic", "cell-01.ome.tif": "tiff",
        "cell-02.czi": "czi", "notes-utf8.md": "generic", "notes.txt": "generic",
        "overview.png": "image", "reads_R1.fastq.gz": "fastq", "stack.tif": "tiff",
        "tifffile-meta.ome.tif": "tiff",
    }  # fmt: skip
    meta = got["tifffile-meta.ome.tif"]["fields"]
    assert [c["name"] for c in meta["channels"]] == ["Hoechst", "mCherry"]
    assert meta["physical_size_y"] == {"value": 0.2, "unit": "µm"}
    stack = got["stack.tif"]["fields"]
    assert (stack["format"], stack["size_z"], stack["size_x"]) == ("TIFF", 4, 32)
    assert stack["physical_size_x"] == {"value": 0.5, "unit": "µm"}
    assert stack["physical_size_z"] == {"value": 2.0, "unit": "µm"}
    czi = got["cell-02.czi"]["fields"]
    assert (czi["format"], czi["size_x"], czi["size_y"], czi["size_c"]) == ("CZI", 64, 48, 2)
    assert [c["name"] for c in czi["channels"]] == ["DAPI", "GFP"]
    assert czi["physical_size_x"] == {"value": 0.1, "unit": "µm"}
    assert czi["pixel_type"] == "uint16"
    fq = got["reads_R1.fastq.gz"]["fields"]
    assert (fq["format"], fq["instrument"], fq["flowcell"], fq["lane"]) == (
        "FASTQ", "A00123", "HXYZ", "2",
    )  # fmt: skip
    assert fq["reads_sampled"] == 20 and fq["read_length_max"] == 40
    bam = got["aligned.bam"]["fields"]
    assert (bam["references"], bam["reference_length"], bam["samples"]) == (2, 1500, "mouse-42")
    assert bam["sort_order"] == "coordinate"
    png = got["overview.png"]["fields"]
    assert (png["format"], png["size_x"], png["size_y"]) == ("PNG", 60, 40)
    text = got["notes.txt"]["fields"]
    assert (text["mime"], text["encoding"], text["lines"], text["bytes"]) == (
        "text/plain", "ascii", 2, 36,
    )  # fmt: skip
    assert got["notes-utf8.md"]["fields"]["encoding"] == "utf-8"
    assert got["blob.bin"]["fields"]["mime"] == "application/octet-stream"


BROKEN = {
    # name: (how to make a good file, the plugin that must report the damage)
    "a.ome.tif": (samples.ome_tiff, "tiff"),
    "b.czi": (samples.czi, "czi"),
    "c.fastq.gz": (samples.fastq, "fastq"),
    "d.bam": (samples.bam, "bam"),
    "e.png": (samples.png, "image"),
}


def test_corrupt_and_truncated_files_are_error_records(tmp_path: Path) -> None:
    made: dict[str, str] = {}
    for name, (make, plugin) in BROKEN.items():
        good = tmp_path / f"good-{name}"
        make(good)
        made[samples.truncated(good, tmp_path / f"truncated-{name}").name] = plugin
        made[samples.corrupt(good, tmp_path / f"corrupt-{name}").name] = plugin
    # ND2 and LIF: no package ships sample files under a usable licence and neither
    # library writes the format, so only damaged files with the real signatures
    (tmp_path / "truncated-f.nd2").write_bytes(b"\xda\xce\xbe\x0a" + b"\0" * 60)
    (tmp_path / "corrupt-g.lif").write_bytes(b"\x70\x00\x00\x00" + bytes(range(200)))
    made.update({"truncated-f.nd2": "nd2", "corrupt-g.lif": "lif"})
    with Isolated() as child:
        for name, plugin in made.items():
            answer = child.extract(str(tmp_path / name), name)
            assert answer["status"] == "error", (name, answer)
            assert answer["extractor"] == plugin, (name, answer)
            assert answer["error"] and answer["fields"]["bytes"] > 0  # generic facts kept
        assert child.restarts == 0  # all of these raised; none took the process down


def test_readers_that_raise_crash_hang_or_print_cost_one_record(tmp_path: Path) -> None:
    for name in ("x.raise", "x.crash", "x.hang", "x.chatty", "ok.txt"):
        (tmp_path / name).write_text("data\n")
    with Isolated(MISBEHAVING, timeout=3) as child:
        answers = {n: child.extract(str(tmp_path / n), n) for n in
                   ("x.raise", "x.crash", "ok.txt", "x.hang", "x.chatty", "ok.txt")}  # fmt: skip
        assert child.restarts == 2  # after the crash and after the hang
    assert answers["x.raise"]["status"] == "error"
    assert "cannot read this file" in answers["x.raise"]["error"]
    assert answers["x.crash"]["status"] == "error"
    assert "crashed (SIGSEGV)" in answers["x.crash"]["error"]
    assert answers["x.hang"]["status"] == "error"
    assert "did not finish within 3 s" in answers["x.hang"]["error"]
    assert answers["x.chatty"]["status"] == "ok"
    assert answers["x.chatty"]["fields"]["instrument"] == "Talker 3000"
    assert answers["ok.txt"]["status"] == "ok"


def test_plugins_come_from_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A facility's package registers an extractor in the ``labkeep.extractors`` group;
    it is used in the child process too."""
    site = tmp_path / "site"
    (site / "facility_ext").mkdir(parents=True)
    (site / "facility_ext" / "__init__.py").write_text(
        "class Seq:\n    name = 'facility-seq'\n    version = '7'\n"
        "    def accepts(self, name, head):\n        return 50 if name.endswith('.seq') else 0\n"
        "    def extract(self, path, name):\n        return {'format': 'SEQ', 'instrument': 'X1'}\n"
    )
    dist = site / "facility_ext-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: facility-ext\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[labkeep.extractors]\nseq = facility_ext:Seq\n")
    monkeypatch.syspath_prepend(str(site))
    assert "facility-seq" in load_extractors()
    (tmp_path / "run.seq").write_text("ACGT")
    with Isolated() as child:
        answer = child.extract(str(tmp_path / "run.seq"), "run.seq")
    assert (answer["extractor"], answer["version"], answer["fields"]["format"]) == (
        "facility-seq", "7", "SEQ",
    )  # fmt: skip


def test_a_broken_plugin_does_not_stop_the_others() -> None:
    found = load_extractors(("no_such_module:Nothing",))
    assert "tiff" in found and "generic" in found


# -- through the keep: the job after ingest, records, access ---------------------------------
def test_ingest_queues_extraction_and_the_job_records_every_file(
    keep: Keep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labkeep.ops import extract as ops_extract

    monkeypatch.setattr(ops_extract, "PAGE", 5)  # several pages, several batches
    monkeypatch.setattr(ops_extract, "BATCH", 3)
    folder = _samples(tmp_path / "src")
    (folder / "x.crash").write_text("boom")
    (folder / "x.raise").write_text("boom")
    keep.config.extract = dataclasses.replace(keep.config.extract, plugins=MISBEHAVING)
    keep.ingest(folder, "proj/s017")
    with keep.catalog.read() as session:
        jobs = session.execute(select(Job.kind, Job.state, Job.target)).all()
        assert session.execute(select(func.count(Extraction.id))).scalar_one() == 0
    assert jobs == [("extract", "queued", "proj/s017")]  # ingest did not wait for it
    pending = keep.file_metadata("proj/s017/raw/cell-01.ome.tif")
    assert pending.status == "pending" and pending.fields == {}
    stats = drain(keep)
    assert stats.done == 1 and stats.failed == 0  # the worker outlived the crashing reader
    record = keep.file_metadata("proj/s017/raw/cell-01.ome.tif")
    assert record.status == "ok" and record.extractor == "tiff"
    assert record.fields["objective"]["magnification"] == 63.0
    assert keep.search_fields("proj/s017/raw/cell-01.ome.tif")["objective"] == "63x"
    crashed = keep.file_metadata("proj/s017/raw/x.crash")
    assert crashed.status == "error" and "SIGSEGV" in crashed.error
    assert keep.file_metadata("proj/s017/raw/x.raise").status == "error"
    with keep.catalog.read() as session:
        assert session.execute(select(func.count(Extraction.id))).scalar_one() == 12
        (result,) = session.execute(select(Job.result).where(Job.kind == "extract")).scalars()
    summary = json.loads(result)
    assert summary["summary"] == {"ok": 10, "error": 2}
    # again: nothing left to read; forced: every record replaced, none added
    assert keep.extract("proj/s017").counts() == {}
    forced = keep.extract("proj/s017", force=True)
    assert forced.counts() == {"ok": 10, "error": 2}
    with keep.catalog.read() as session:
        assert session.execute(select(func.count(Extraction.id))).scalar_one() == 12
    # a new version: only its new file is read
    (folder / "later.txt").write_text("added later\n")
    keep.ingest(folder, "proj/s017")
    drain(keep)
    assert keep.file_metadata("proj/s017/raw/later.txt").status == "ok"
    with keep.catalog.read() as session:
        assert session.execute(select(func.count(Extraction.id))).scalar_one() == 13


def test_metadata_is_private_like_the_file(keep: Keep, tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    samples.ome_tiff(folder / "cell.ome.tif")
    keep.ingest(folder, "proj/ds")
    keep.extract("proj/ds")
    keep.add_user("bob")
    bob = keep.acting_as(keep.principal_for("bob"))
    with pytest.raises(NotFound):
        bob.file_metadata("proj/ds/raw/cell.ome.tif")
    with pytest.raises(NotFound):
        bob.search_fields("proj/ds/raw/cell.ome.tif")
    with pytest.raises(NotFound):
        bob.extract("proj/ds")
    keep.grant("bob", "read", "proj")
    assert bob.file_metadata("proj/ds/raw/cell.ome.tif").fields["size_c"] == 2


def test_turned_off_nothing_is_queued(keep: Keep, tmp_path: Path) -> None:
    keep.config.extract = dataclasses.replace(keep.config.extract, after_ingest=False)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    keep.ingest(tmp_path / "src", "proj/ds")
    with keep.catalog.read() as session:
        assert session.execute(select(func.count(Job.id))).scalar_one() == 0


def test_cli_meta_show(keep: Keep, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from labkeep.cli import app

    folder = tmp_path / "src"
    folder.mkdir()
    samples.ome_tiff(folder / "cell-01.ome.tif")
    keep.ingest(folder, "proj/s017")
    runner = CliRunner()
    root = ["--root", str(keep.root)]
    shown = runner.invoke(app, ["meta", "show", "proj/s017/raw/cell-01.ome.tif", *root])
    assert shown.exit_code == 0 and "not read yet" in shown.stdout
    done = runner.invoke(app, ["meta", "extract", "proj/s017", *root])
    assert done.exit_code == 0, done.output
    shown = runner.invoke(app, ["meta", "show", "proj/s017/raw/cell-01.ome.tif", *root])
    assert shown.exit_code == 0, shown.output
    for text in ("X=80 Y=64 Z=3 C=2 T=1", "uint16", "X=0.065 µm", "DAPI ex 405 nm em 461 nm",
                 "63x NA 1.4 Oil", "Zeiss LSM 980", "2026-03-14T10:21:07"):  # fmt: skip
        assert text in shown.stdout, (text, shown.stdout)
    as_json = runner.invoke(app, ["meta", "show", "proj/s017/raw/cell-01.ome.tif", "--json", *root])
    record = json.loads(as_json.stdout)
    assert record["search"]["channels"] == "DAPI,GFP" and record["status"] == "ok"
    missing = runner.invoke(app, ["meta", "show", "proj/s017/raw/nothing.tif", *root])
    assert missing.exit_code != 0 and "Traceback" not in missing.output


def test_help_imports_no_image_library() -> None:
    import subprocess

    code = (
        "import sys, labkeep.cli, labkeep.cli.extract_cmd\n"
        "heavy = {'numpy', 'tifffile', 'PIL', 'pylibCZIrw', 'nd2', 'liffile', 'zarr'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    env = {"PYTHONPATH": os.pathsep.join(sys.path), "PATH": os.environ.get("PATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)  # fmt: skip
    assert out.stdout.strip() == "[]"


def test_cold_data_is_read_from_a_store(keep: Keep, tmp_path: Path) -> None:
    """The tree copy was dropped (cold data): the job reads the content from a good
    replica in a content store, through the store interface."""
    folder = tmp_path / "src"
    folder.mkdir()
    samples.ome_tiff(folder / "cell.ome.tif")
    (folder / "notes.txt").write_text("cold\n")
    keep.ingest(folder, "proj/s1")
    keep.seal("proj/s1")
    for name in ("backup", "archive"):
        keep.add_store(name, kind="objects", path=str(tmp_path / name))
        keep.copy("proj/s1", to=name)
    keep.set_policy("proj", min_copies=2, tree_droppable=True)
    keep.drop("proj/s1", from_store="tree")
    assert not (keep.tree.dataset_dir("proj", "s1") / "raw" / "cell.ome.tif").exists()
    report = keep.extract("proj/s1")
    assert report.counts() == {"ok": 2}
    record = keep.file_metadata("proj/s1/raw/cell.ome.tif")
    assert record.status == "ok" and record.fields["instrument"] == "Zeiss LSM 980"
    assert record.preview == "ok"
    assert keep.preview("proj/s1/raw/cell.ome.tif").path.stat().st_size > 0


def test_preview_plane_comes_from_a_small_pyramid_level(tmp_path: Path) -> None:
    """A pyramidal OME-TIFF: the plane is read from the smallest level still at least
    256 px (a few pages), not from the full-resolution image."""
    import numpy as np
    import tifffile

    from labkeep.extract.tiff import tiff_plane

    path = tmp_path / "pyramid.ome.tif"
    full = np.zeros((2048, 2048), dtype=np.uint16)
    full[:1024] = 1000
    with tifffile.TiffWriter(path) as tif:
        tif.write(full, subifds=3, tile=(256, 256), metadata={"axes": "YX"})
        for level in (1, 2, 3):
            step = 2**level
            tif.write(full[::step, ::step], subfiletype=1, tile=(256, 256))
    with tifffile.TiffFile(path) as tif:
        assert [lv.shape for lv in tif.series[0].levels] == [
            (2048, 2048), (1024, 1024), (512, 512), (256, 256),
        ]  # fmt: skip
        plane = tiff_plane(tif, 256)
    assert plane.shape == (256, 256) and plane[0, 0] == 1000 and plane[-1, -1] == 0


def test_what_extraction_reads_is_searchable_by_those_who_may_see_it(
    keep: Keep, tmp_path: Path
) -> None:
    """The issue's query: fields read from a file's content find it (objective:63x), the
    index is rebuilt from the extraction records, and others see no hit and no count."""
    folder = tmp_path / "src"
    folder.mkdir()
    samples.ome_tiff(folder / "cell-01.ome.tif")
    (folder / "notes.txt").write_text("plain notes\n")
    keep.ingest(folder, "proj/s017")
    assert keep.search("objective:63x").total == 0  # not read yet
    drain(keep)
    paths = [hit.get("path") for hit in keep.search("objective:63x").items]
    assert paths == ["raw/cell-01.ome.tif"]
    assert keep.search("objective:20x").total == 0
    keep.reindex_search()
    assert [h.get("path") for h in keep.search("objective:63x").items] == ["raw/cell-01.ome.tif"]
    keep.add_user("bob", password="a long enough password")
    bob = keep.acting_as(keep.principal_for("bob"))
    found = bob.search("objective:63x")
    assert (found.total, found.items) == (0, [])
