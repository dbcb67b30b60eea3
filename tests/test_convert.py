"""OME-Zarr conversion (issue 13 part 3): a generated OME-TIFF converted as a recorded run
into a derived analysis dataset; the result opened with ngff-zarr's reader has the same
pixels and physical sizes; the version points to the run, which pins the input."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from labkeep import Keep
from labkeep.errors import NotFound, UsageError
from labkeep.ops.worker import JobWorker
from tests import imaging_samples as samples


@pytest.fixture(autouse=True)
def converter_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's command (python -m labkeep.convert) imports this labkeep, wherever the
    test runs from (PYTHONPATH may be relative to the repository)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(os.path.abspath(p) for p in sys.path if p))


def _source(tmp_path: Path) -> tuple[Path, np.ndarray]:
    folder = tmp_path / "src"
    (folder / "sub").mkdir(parents=True)
    data = samples.ome_tiff(folder / "cell-01.ome.tif", y=300, x=520, z=2)
    (folder / "notes.txt").write_text("not an image\n")
    samples.czi(folder / "sub" / "cell-02.czi")
    return folder, data


def test_convert_as_a_job_makes_a_derived_dataset_with_provenance(
    keep: Keep, tmp_path: Path
) -> None:
    import ngff_zarr as nz

    folder, data = _source(tmp_path)
    keep.ingest(folder, "proj/s017")
    keep.seal("proj/s017")
    job = keep.enqueue("convert", {"dataset": "proj/s017", "to": "ome-zarr"})
    assert job.target == "proj/s017.ome-zarr"
    stats = JobWorker(keep, drain=True, log=io.StringIO(), schedule=False,
                      kinds=("convert",)).run()  # fmt: skip
    assert stats.done == 1, keep.get_job(job.id)
    derived = keep.get_dataset("proj/s017.ome-zarr")
    assert derived.kind == "analysis" and derived.head_version == 1
    made_by = keep.run_of_version("proj/s017.ome-zarr@1")
    assert made_by is not None
    run = keep.get_run(made_by["id"])
    assert run["state"] == "done" and run["version"] == 1
    assert run["command"][1:4] == ["-m", "labkeep.convert", "--to"]
    (pinned,) = run["inputs"]
    assert (pinned["dataset"], pinned["version"]) == ("proj/s017", 2)  # sealed: version 2
    paths = {o["path"] for o in run["outputs"]}
    assert "ome-zarr/cell-01.ome.zarr/zarr.json" in paths
    assert "ome-zarr/sub/cell-02.ome.zarr/zarr.json" in paths
    assert not any(p.startswith("ome-zarr/notes") for p in paths)
    # open the result with the library's reader, from the derived dataset's tree
    store = keep.tree.dataset_dir("proj", "s017.ome-zarr") / "ome-zarr" / "cell-01.ome.zarr"
    multiscales = nz.from_ngff_zarr(str(store))
    image = multiscales.images[0]
    assert list(image.dims) == ["c", "z", "y", "x"]
    assert np.array_equal(np.asarray(image.data), data)
    assert image.scale["x"] == pytest.approx(0.065) and image.scale["z"] == pytest.approx(0.3)
    # 520 px wide: levels of 260 and 130 px (the smallest at most 256 wide)
    assert [i.data.shape[-1] for i in multiscales.images] == [520, 260, 130]
    assert [c.label for c in multiscales.metadata.omero.channels] == ["DAPI", "GFP"]
    czi = nz.from_ngff_zarr(
        str(store.parent / "sub" / "cell-02.ome.zarr")
    ).images[0]  # fmt: skip
    assert np.array_equal(np.asarray(czi.data)[:, 0], samples.czi(tmp_path / "again.czi"))


def test_convert_refuses_what_it_cannot_do(keep: Keep, tmp_path: Path) -> None:
    folder, _ = _source(tmp_path)
    keep.ingest(folder, "proj/s017")
    with pytest.raises(UsageError):
        keep.convert("proj/s017", to="png")
    with pytest.raises(UsageError):
        keep.convert("proj/s017", output="proj/s017")
    keep.create_dataset("proj/s018")
    with pytest.raises(UsageError, match="analysis"):
        keep.convert("proj/s017", output="proj/s018")  # a session is never an output
    keep.add_user("bob")
    bob = keep.acting_as(keep.principal_for("bob"))
    with pytest.raises(NotFound):
        bob.convert("proj/s017")
    with pytest.raises(NotFound):
        bob.enqueue("convert", {"dataset": "proj/s017"})


def test_a_damaged_image_fails_the_run_and_saves_nothing(keep: Keep, tmp_path: Path) -> None:
    from labkeep.ops.runs import RunFailed

    folder = tmp_path / "src"
    folder.mkdir()
    good = tmp_path / "good.ome.tif"
    samples.ome_tiff(good)
    samples.truncated(good, folder / "broken.ome.tif")
    keep.ingest(folder, "proj/s1")
    with pytest.raises(RunFailed):
        keep.convert("proj/s1")
    assert keep.get_dataset("proj/s1.ome-zarr").head_version == 0
