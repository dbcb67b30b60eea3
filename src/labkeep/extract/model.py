"""The typed metadata of an image, OME-XML parsing, and flat fields for search.

Pure logic, no I/O: plugins fill an :class:`ImageMetadata` and return ``to_dict()``;
:func:`parse_ome_xml` reads the OME data model's XML (as written into OME-TIFF files,
and by CZI/ND2/LIF readers' OME exports) whatever its schema year.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Quantity:
    value: float
    unit: str

    def text(self) -> str:
        return f"{self.value:g} {self.unit}".strip()


@dataclass
class Channel:
    name: str = ""
    excitation_wavelength: Quantity | None = None
    emission_wavelength: Quantity | None = None
    fluor: str = ""


@dataclass
class Objective:
    model: str = ""
    manufacturer: str = ""
    magnification: float | None = None
    na: float | None = None
    immersion: str = ""


@dataclass
class ImageMetadata:
    """What a person asks of a microscopy image. Sizes count pixels/planes."""

    format: str
    size_x: int = 0
    size_y: int = 0
    size_z: int = 1
    size_c: int = 1
    size_t: int = 1
    pixel_type: str = ""
    physical_size_x: Quantity | None = None
    physical_size_y: Quantity | None = None
    physical_size_z: Quantity | None = None
    channels: list[Channel] = field(default_factory=list)
    objective: Objective | None = None
    instrument: str = ""
    acquisition_date: str = ""
    image_name: str = ""
    #: more images (series/scenes) in the same file
    images: int = 1

    def to_dict(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = _drop_empty(asdict(self))
        return cleaned


def _drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_empty(v) for k, v in value.items() if v not in (None, "", [])}
    if isinstance(value, list):
        return [_drop_empty(v) for v in value]
    return value


def _num(value: str | None) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _qty(element: ET.Element, attr: str, default_unit: str) -> Quantity | None:
    value = _num(element.get(attr))
    if value is None:
        return None
    return Quantity(value, element.get(attr + "Unit") or default_unit)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in element if _local(c.tag) == name]


def _first(element: ET.Element | None, name: str) -> ET.Element | None:
    if element is None:
        return None
    for c in element.iter():
        if _local(c.tag) == name:
            return c
    return None


def parse_ome_xml(text: str | bytes, fmt: str = "OME-TIFF") -> ImageMetadata:
    """The first image of an OME-XML document, with its objective and instrument.

    Namespaces are ignored (every OME schema year reads the same). Raises ValueError on
    text that is not OME-XML.
    """
    try:
        root = ET.fromstring(text)  # noqa: S314 (expat: no external entities)
    except ET.ParseError as exc:
        raise ValueError(f"OME-XML does not parse: {exc}") from None
    if _local(root.tag) != "OME":
        raise ValueError("not an OME-XML document")
    images = _children(root, "Image")
    if not images:
        raise ValueError("OME-XML without an Image")
    image = images[0]
    pixels = _first(image, "Pixels")
    meta = ImageMetadata(format=fmt, images=len(images), image_name=image.get("Name", ""))
    if pixels is not None:
        for axis in "XYZCT":
            value = _num(pixels.get(f"Size{axis}"))
            if value is not None:
                setattr(meta, f"size_{axis.lower()}", int(value))
        meta.pixel_type = pixels.get("Type", "")
        meta.physical_size_x = _qty(pixels, "PhysicalSizeX", "µm")
        meta.physical_size_y = _qty(pixels, "PhysicalSizeY", "µm")
        meta.physical_size_z = _qty(pixels, "PhysicalSizeZ", "µm")
        for ch in _children(pixels, "Channel"):
            meta.channels.append(
                Channel(
                    name=ch.get("Name", ""),
                    excitation_wavelength=_qty(ch, "ExcitationWavelength", "nm"),
                    emission_wavelength=_qty(ch, "EmissionWavelength", "nm"),
                    fluor=ch.get("Fluor", ""),
                )
            )
    date = _first(image, "AcquisitionDate")
    if date is not None and date.text:
        meta.acquisition_date = date.text.strip()
    # the instrument the image points to (InstrumentRef), else the first one
    instruments = {i.get("ID", ""): i for i in _children(root, "Instrument")}
    ref = _first(image, "InstrumentRef")
    instrument = instruments.get(ref.get("ID", "") if ref is not None else "") or next(
        iter(instruments.values()), None
    )
    if instrument is not None:
        scope = _first(instrument, "Microscope")
        if scope is not None:
            parts = [scope.get("Manufacturer", ""), scope.get("Model", "")]
            meta.instrument = " ".join(p for p in parts if p)
        if not meta.instrument:
            meta.instrument = instrument.get("ID", "")
        objectives = {o.get("ID", ""): o for o in _children(instrument, "Objective")}
        settings = _first(image, "ObjectiveSettings")
        objective = objectives.get(settings.get("ID", "") if settings is not None else "")
        objective = objective or next(iter(objectives.values()), None)
        if objective is not None:
            meta.objective = Objective(
                model=objective.get("Model", ""),
                manufacturer=objective.get("Manufacturer", ""),
                magnification=_num(objective.get("NominalMagnification")),
                na=_num(objective.get("LensNA")),
                immersion=objective.get("Immersion", ""),
            )
    return meta


# -- display (the CLI's `meta show` and the file page) ----------------------------------------
def quantity_text(value: Any) -> str:
    """``{"value": 0.065, "unit": "µm"}`` as ``0.065 µm``; anything else as text."""
    if isinstance(value, dict) and "value" in value:
        return f"{value['value']:g} {value.get('unit', '')}".strip()
    return str(value)


def objective_text(objective: dict[str, Any]) -> str:
    """An objective as people write it: ``63x NA 1.4 Oil (Plan-Apo)``."""
    parts = []
    if objective.get("magnification") is not None:
        parts.append(f"{objective['magnification']:g}x")
    if objective.get("na") is not None:
        parts.append(f"NA {objective['na']:g}")
    if objective.get("immersion"):
        parts.append(str(objective["immersion"]))
    if objective.get("model"):
        parts.append(f"({objective['model']})")
    return " ".join(parts)


# -- flat fields for search -------------------------------------------------------------------
def _g(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def search_fields(fields: dict[str, Any]) -> dict[str, str]:
    """Flat ``name -> text`` pairs of one extraction record's fields, for a search index
    (``objective="63x"``, ``instrument=...``, ``date="2026-03-14"``,
    ``channels="DAPI,GFP"``, ``format``, ``pixel_type``, ``size="1024x1024x30x2x1"``).

    Works on any plugin's fields: unknown keys with scalar values are passed through.
    """
    out: dict[str, str] = {}
    for key in ("format", "pixel_type", "instrument", "image_name", "mime", "encoding"):
        if fields.get(key) not in (None, ""):
            out[key] = _g(fields[key])
    date = str(fields.get("acquisition_date") or "")
    if date:
        out["date"] = date[:10]
        out["datetime"] = date
    objective = fields.get("objective")
    if isinstance(objective, dict):
        if objective.get("magnification") is not None:
            out["objective"] = f"{_g(float(objective['magnification']))}x"
        if objective.get("na") is not None:
            out["na"] = _g(float(objective["na"]))
        if objective.get("immersion"):
            out["immersion"] = str(objective["immersion"])
        if objective.get("model"):
            out["objective_model"] = str(objective["model"])
    channels = fields.get("channels")
    if isinstance(channels, list):
        names = [str(c.get("name", "")) for c in channels if isinstance(c, dict)]
        if any(names):
            out["channels"] = ",".join(n for n in names if n)
    if fields.get("size_x"):
        out["size"] = "x".join(str(fields.get(f"size_{a}", 1)) for a in ("x", "y", "z", "c", "t"))
    for key, value in fields.items():
        if key not in out and isinstance(value, str | int | float) and not key.startswith("size_"):
            if isinstance(value, bool):
                continue
            out.setdefault(key, _g(value))
    return out
