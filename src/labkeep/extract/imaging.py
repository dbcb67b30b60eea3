"""Zeiss CZI, Nikon ND2 and Leica LIF (``labkeep[imaging]``).

Readers chosen (docs/metadata.md): ``pylibCZIrw`` (Zeiss's own libCZI in a wheel; it
also writes CZI, so the tests make real files), ``nd2`` (pure Python on numpy, with an
OME-XML export that :func:`parse_ome_xml` reads) and ``liffile`` (pure Python, by
tifffile's author). The ``bioio`` plugins wrap the same three readers behind dask and
xarray; metadata needs none of that. pylibCZIrw is native code: it runs, like every
plugin, in the extraction child process, so a file that crashes it costs one record.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from labkeep.extract.model import (
    Channel,
    ImageMetadata,
    Objective,
    Quantity,
    parse_ome_xml,
)

_CZI_TYPES = {"Gray8": "uint8", "Gray16": "uint16", "Gray32Float": "float", "Bgr24": "uint8"}


def _text(root: ET.Element, path: str) -> str:
    node = root.find(path)
    return (node.text or "").strip() if node is not None else ""


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


class CziExtractor:
    name = "czi"
    version = "1"

    def accepts(self, name: str, head: bytes) -> int:
        return 20 if head.startswith(b"ZISRAWFILE") else 0

    def extract(self, path: str, name: str) -> dict[str, Any]:
        from pylibCZIrw import czi as pyczi

        with pyczi.open_czi(path) as reader:
            box = reader.total_bounding_box
            raw = reader.raw_metadata
            types = reader.pixel_types
        return czi_metadata(raw, box, types).to_dict()

    def plane(self, path: str, name: str, max_side: int) -> Any:
        import numpy as np
        from pylibCZIrw import czi as pyczi

        with pyczi.open_czi(path) as reader:
            box = reader.total_bounding_box
            width = box["X"][1] - box["X"][0]
            zoom = min(1.0, max_side / max(1, width))
            layers = []
            for c in range(box.get("C", (0, 1))[0], min(box.get("C", (0, 1))[1], 3)):
                data = reader.read(plane={"C": c, "Z": 0, "T": 0}, zoom=zoom)
                layers.append(data[..., 0] if data.shape[-1] == 1 else data)
        if len(layers) == 1:
            return layers[0]
        return np.stack(layers + [np.zeros_like(layers[0])] * (3 - len(layers)), axis=-1)


def czi_metadata(raw: str, box: dict[str, tuple[int, int]], types: dict[int, str]) -> ImageMetadata:
    """Typed fields from a CZI's XML metadata and its bounding box."""
    root = ET.fromstring(raw)  # noqa: S314 (expat: no external entities)
    info = "Metadata/Information"
    meta = ImageMetadata(format="CZI")
    for axis in "XYZCT":
        lo, hi = box.get(axis, (0, 1))
        setattr(meta, f"size_{axis.lower()}", int(hi - lo))
    first = types.get(0) or _text(root, f"{info}/Image/PixelType")
    meta.pixel_type = _CZI_TYPES.get(first, first)
    for axis in "XYZ":
        metres = _float(_text(root, f"Metadata/Scaling/Items/Distance[@Id='{axis}']/Value"))
        if metres:
            setattr(meta, f"physical_size_{axis.lower()}", Quantity(round(metres * 1e6, 9), "µm"))
    for ch in root.iterfind(f"{info}/Image/Dimensions/Channels/Channel"):
        ex = _float(_text(ch, "ExcitationWavelength"))
        em = _float(_text(ch, "EmissionWavelength"))
        meta.channels.append(
            Channel(
                name=ch.get("Name", "") or _text(ch, "Fluor"),
                excitation_wavelength=Quantity(ex, "nm") if ex else None,
                emission_wavelength=Quantity(em, "nm") if em else None,
                fluor=_text(ch, "Fluor"),
            )
        )
    objective = root.find(f"{info}/Instrument/Objectives/Objective")
    if objective is not None:
        meta.objective = Objective(
            model=objective.get("Name", "") or _text(objective, "Manufacturer/Model"),
            magnification=_float(_text(objective, "NominalMagnification")),
            na=_float(_text(objective, "LensNA")),
            immersion=_text(objective, "Immersion"),
        )
    scope = root.find(f"{info}/Instrument/Microscopes/Microscope")
    if scope is not None:
        meta.instrument = scope.get("Name", "") or _text(scope, "System")
    meta.acquisition_date = _text(root, f"{info}/Image/AcquisitionDateAndTime")
    meta.image_name = _text(root, f"{info}/Document/Title")
    return meta


class Nd2Extractor:
    name = "nd2"
    version = "1"

    def accepts(self, name: str, head: bytes) -> int:
        return 20 if head.startswith(b"\xda\xce\xbe\x0a") else 0

    def extract(self, path: str, name: str) -> dict[str, Any]:
        import nd2

        with nd2.ND2File(path) as f:
            xml = f.ome_metadata().to_xml()
            meta = parse_ome_xml(xml, "ND2")
            meta.pixel_type = meta.pixel_type or str(f.dtype)
        return meta.to_dict()

    def plane(self, path: str, name: str, max_side: int) -> Any:
        import nd2

        with nd2.ND2File(path) as f:
            frame = f.read_frame(0)
        while frame.ndim > 2 and not (frame.ndim == 3 and frame.shape[-1] in (3, 4)):
            frame = frame[0]
        return frame


class LifExtractor:
    name = "lif"
    version = "1"

    def accepts(self, name: str, head: bytes) -> int:
        return 20 if head[:4] == b"\x70\x00\x00\x00" and name.lower().endswith(".lif") else 0

    def extract(self, path: str, name: str) -> dict[str, Any]:
        import liffile

        with liffile.LifFile(path) as lif:
            images = list(lif.images)
            if not images:
                raise ValueError("LIF without images")
            image = images[0]
            sizes = dict(image.sizes)
            meta = ImageMetadata(
                format="LIF",
                image_name=str(image.name),
                pixel_type=str(image.dtype),
                images=len(images),
                size_x=int(sizes.get("X", 0)),
                size_y=int(sizes.get("Y", 0)),
                size_z=int(sizes.get("Z", 1)),
                size_c=int(sizes.get("C", 1)),
                size_t=int(sizes.get("T", 1)),
            )
            coords = image.coords
            for axis in "XYZ":
                values = coords.get(axis)
                if values is not None and len(values) > 1:
                    step = float(values[1] - values[0])  # metres
                    setattr(
                        meta, f"physical_size_{axis.lower()}", Quantity(round(step * 1e6, 9), "µm")
                    )
            stamp = getattr(lif, "datetime", None)
            if stamp is not None:
                meta.acquisition_date = stamp.isoformat()
        return meta.to_dict()

    def plane(self, path: str, name: str, max_side: int) -> Any:
        import liffile

        with liffile.LifFile(path) as lif:
            data = lif.images[0].asarray()
        while data.ndim > 2 and not (data.ndim == 3 and data.shape[-1] in (3, 4)):
            data = data[0]
        return data
