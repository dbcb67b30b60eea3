"""labkeep's converter, the command that conversion runs record:

    python -m labkeep.convert --to ome-zarr INPUT_FOLDER OUTPUT_FOLDER

Every image below INPUT_FOLDER that a reader of ``labkeep[imaging]`` opens (TIFF and
OME-TIFF, CZI, ND2, LIF) becomes ``OUTPUT_FOLDER/ome-zarr/<its path without raw/>``
with the ending ``.ome.zarr``: OME-Zarr (NGFF 0.5, zarr v3) written by ``ngff-zarr``,
with its physical pixel sizes and channel names, and a 2x pyramid down to ~256 px.
Other files are left out. Prints one line per image. Exits 1 when an image could not
be converted (the run then fails and saves nothing: a derived dataset is never a
partial conversion), 2 on bad arguments.

It runs as a recorded run (:func:`labkeep.ops.convert.convert`), so it only reads its
input folder and writes its output folder, like any command given to ``labkeep run``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

#: file name endings replaced by ``.ome.zarr``
SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".czi", ".nd2", ".lif")
#: the smallest level of the pyramid is at most this wide
SMALLEST = 256


def _read(path: Path) -> tuple[Any, str, dict[str, float], list[str]]:
    """(array, axes in ``tczyx`` letters, physical sizes in µm, channel names)."""
    import numpy as np

    from labkeep.extract import HEAD_BYTES, choose, load_extractors

    name = path.name
    with open(path, "rb") as handle:
        head = handle.read(HEAD_BYTES)
    plugins = load_extractors()
    plugin = choose(plugins, name, head)
    if plugin is None or plugin.name not in ("tiff", "czi", "nd2", "lif"):
        raise LookupError("not an image labkeep converts")
    fields = plugin.extract(str(path), name)
    if plugin.name == "tiff":
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data, axes = series.asarray(), series.axes
    elif plugin.name == "czi":
        from pylibCZIrw import czi as pyczi

        with pyczi.open_czi(str(path)) as reader:
            box = reader.total_bounding_box
            planes = [
                [reader.read(plane={"C": c, "Z": z, "T": 0})[..., 0] for z in range(*box["Z"])]
                for c in range(*box["C"])
            ]
        data, axes = np.asarray(planes), "CZYX"
    elif plugin.name == "nd2":
        import nd2

        with nd2.ND2File(path) as f:
            data, axes = np.asarray(f.asarray()), "".join(f.sizes)
    else:
        import liffile

        with liffile.LifFile(path) as lif:
            image = lif.images[0]
            data, axes = image.asarray(), "".join(image.dims)
    # keep t, c, z, y, x (samples are channels); any other axis: its first index
    keep_axes = ""
    index: list[Any] = []
    for axis in axes.upper():
        letter = {"S": "C"}.get(axis, axis)
        if letter in "TCZYX" and letter.lower() not in keep_axes:
            keep_axes += letter.lower()
            index.append(slice(None))
        else:
            index.append(0)
    data = np.asarray(data)[tuple(index)]
    scale = {}
    for axis in "xyz":
        quantity = fields.get(f"physical_size_{axis}")
        if isinstance(quantity, dict) and quantity.get("unit") in ("µm", "um"):
            scale[axis] = float(quantity["value"])
    channels = [str(c.get("name") or "") for c in fields.get("channels") or []]
    return data, keep_axes, scale, channels


def convert_file(source: Path, target: Path) -> tuple[int, ...]:
    """Write *source* as OME-Zarr at *target*; the converted array's shape."""
    import ngff_zarr as nz

    data, axes, scale, channels = _read(source)
    order = [a for a in "tczyx" if a in axes]
    data = data.transpose([axes.index(a) for a in order])
    image = nz.to_ngff_image(
        data,
        dims=order,  # type: ignore[arg-type]
        scale={a: scale.get(a, 1.0) for a in order if a in "xyz"},
        axes_units={a: "micrometer" for a in order if a in scale},
        name="image",
    )
    factors: list[int] = []
    width = max(data.shape[-1], data.shape[-2])
    while width > SMALLEST:
        factors.append(2 ** (len(factors) + 1))
        width //= 2
    multiscales = nz.to_multiscales(
        image, scale_factors=factors, method=nz.Methods.ITKWASM_BIN_SHRINK
    )
    n_channels = data.shape[order.index("c")] if "c" in order else 1
    if "c" in order and len(channels) == n_channels and any(channels):
        # channel names (and display windows) go in the "omero" metadata viewers read
        multiscales.metadata.omero = nz.compute_omero_from_multiscales(
            multiscales, labels=[c or f"channel {i}" for i, c in enumerate(channels)]
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    nz.to_ngff_zarr(str(target), multiscales, version="0.5")
    return tuple(int(n) for n in data.shape)


def target_for(rel: str) -> str:
    """Where the conversion of the input's *rel* goes in the output: below ``ome-zarr/``
    (a derived dataset has no ``raw/``), the format's ending replaced by ``.ome.zarr``."""
    rel = "ome-zarr/" + rel.removeprefix("raw/")
    lower = rel.lower()
    for suffix in SUFFIXES:
        if lower.endswith(suffix):
            return rel[: -len(suffix)] + ".ome.zarr"
    return rel + ".ome.zarr"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkeep.convert", description=__doc__)
    parser.add_argument("--to", required=True, choices=["ome-zarr"])
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    converted = failed = 0
    for folder, dirs, files in os.walk(args.input):
        dirs.sort()
        for name in sorted(files):
            source = Path(folder) / name
            rel = source.relative_to(args.input).as_posix()
            if not name.lower().endswith(SUFFIXES):
                continue
            target = args.output / target_for(rel)
            try:
                shape = convert_file(source, target)
            except LookupError:
                continue
            except Exception as exc:  # noqa: BLE001 (reported per file; the run fails)
                failed += 1
                print(f"FAILED {rel}: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            converted += 1
            print(f"converted {rel} -> {target_for(rel)} {'x'.join(map(str, shape))}")
    print(f"{converted} converted, {failed} failed")
    if failed:
        return 1
    if not converted:
        print("no image to convert", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
