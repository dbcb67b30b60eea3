"""TIFF and OME-TIFF through ``tifffile`` (``labkeep[imaging]``).

OME-TIFF: the OME-XML in the first page's description is parsed into typed fields
(:func:`labkeep.extract.model.parse_ome_xml`). Other TIFFs: sizes and axes from the
first series, physical sizes from ImageJ metadata or the resolution tags, instrument
from Make/Model, date from DateTime. A file whose strips or tiles run past its end
(truncated) is an error, although tifffile would open it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from labkeep.extract.model import ImageMetadata, Quantity, parse_ome_xml

#: how many pages are checked for data past the end of the file (the rest is trusted)
CHECK_PAGES = 4096


class TiffExtractor:
    name = "tiff"
    version = "1"

    def accepts(self, name: str, head: bytes) -> int:
        return 20 if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+") else 0

    def extract(self, path: str, name: str) -> dict[str, Any]:
        import tifffile

        with _Complaints() as complaints, tifffile.TiffFile(path) as tif:
            _check_complete(tif, os.fstat(tif.filehandle.fileno()).st_size)
            if tif.is_ome and tif.ome_metadata:
                meta = parse_ome_xml(tif.ome_metadata, "OME-TIFF")
            else:
                meta = _plain(tif)
            series = tif.series[0] if tif.series else None
            out = meta.to_dict()
            if series is not None:
                out["axes"] = series.axes
                out["levels"] = len(series.levels)
            complaints.raise_first()
            return out

    def plane(self, path: str, name: str, max_side: int) -> Any:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return tiff_plane(tif, max_side)


class _Complaints(logging.Handler):
    """What tifffile logs while reading (it logs damage, e.g. an IFD offset past the end
    of a truncated file, and carries on): a warning or worse makes the file an error."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> _Complaints:
        logger = logging.getLogger("tifffile")
        logger.addHandler(self)
        self._propagate, logger.propagate = logger.propagate, False
        return self

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger("tifffile")
        logger.removeHandler(self)
        logger.propagate = self._propagate

    def raise_first(self) -> None:
        if self.messages:
            text = self.messages[0].split("> ", 1)[-1]
            raise ValueError(f"damaged TIFF: {text}")


def _check_complete(tif: Any, size: int) -> None:
    pages = tif.pages
    frames, pages.useframes = pages.useframes, True  # light page objects: half the time
    try:
        _check_pages(pages, size)
    finally:
        pages.useframes = frames


def _check_pages(pages: Any, size: int) -> None:
    for i, page in enumerate(pages):
        if i >= CHECK_PAGES:
            break
        offsets = getattr(page, "dataoffsets", ()) or ()
        counts = getattr(page, "databytecounts", ()) or ()
        for offset, count in zip(offsets, counts, strict=False):
            if offset + count > size:
                raise ValueError(
                    f"truncated: page {i} has image data up to byte {offset + count} "
                    f"of a {size}-byte file"
                )


def _plain(tif: Any) -> ImageMetadata:
    if not tif.series:
        raise ValueError("TIFF without images")
    series = tif.series[0]
    page = tif.pages[0]
    axes, shape = series.axes, series.shape
    meta = ImageMetadata(format="TIFF", pixel_type=str(series.dtype), images=len(tif.series))
    for axis, n in zip(axes, shape, strict=True):
        key = {"X": "size_x", "Y": "size_y", "Z": "size_z", "C": "size_c", "S": "size_c"}.get(
            axis, "size_t" if axis in "TQI" else None
        )
        if key is not None:
            setattr(meta, key, int(n) * (getattr(meta, key) if axis == "S" else 1))
    ij = tif.imagej_metadata or {}
    unit = _unit(str(ij.get("unit", "") or ""))
    x_res, y_res = page.tags.get("XResolution"), page.tags.get("YResolution")
    res_unit = page.tags.get("ResolutionUnit")
    per = {2: ("µm", 25400.0), 3: ("µm", 10000.0)}.get(int(res_unit.value) if res_unit else 2)
    if ij and unit and x_res is not None:
        per = (unit, 1.0)
    if x_res is not None and per is not None and (ij or (res_unit and int(res_unit.value) > 1)):
        for tag, attr in ((x_res, "physical_size_x"), (y_res, "physical_size_y")):
            if tag is None:
                continue
            num, den = tag.value
            if num:
                setattr(meta, attr, Quantity(round(den / num * per[1], 9), per[0]))
    if ij.get("spacing"):
        meta.physical_size_z = Quantity(float(ij["spacing"]), unit or "µm")
    make = page.tags.get("Make")
    model = page.tags.get("Model")
    meta.instrument = " ".join(str(t.value).strip() for t in (make, model) if t is not None)
    stamp = page.tags.get("DateTime")
    if stamp is not None:
        text = str(stamp.value).strip()
        if len(text) >= 10:
            meta.acquisition_date = text[:10].replace(":", "-") + text[10:].replace(" ", "T")
    return meta


def _unit(text: str) -> str:
    """ImageJ's unit spellings as OME's (``um``, ``micron``, ``\\u00B5m`` -> ``µm``)."""
    text = text.strip().replace("\\u00B5", "µ").replace("\u03bc", "µ")
    return {"um": "µm", "micron": "µm", "microns": "µm", "nm": "nm", "mm": "mm"}.get(
        text.lower(), text
    )


def tiff_plane(tif: Any, max_side: int) -> Any:
    """One plane (or up to three channels of it) of the first series, read page by page
    from the smallest pyramid level that is still at least *max_side* wide: a
    multi-gigabyte file costs a few pages, not a full read."""
    import numpy as np

    series = tif.series[0]
    level = series
    for candidate in series.levels[1:]:
        if (
            min(
                candidate.shape[candidate.axes.index("Y")],
                candidate.shape[candidate.axes.index("X")],
            )
            >= max_side
        ):
            level = candidate
    axes = level.axes
    planes_axes = [(a, n) for a, n in zip(axes, level.shape, strict=True) if a not in "YXS"]
    dims = tuple(n for _, n in planes_axes) or (1,)
    channels = dict(planes_axes).get("C", 1)
    layers = []
    for c in range(min(3, channels)):
        index = tuple(c if a == "C" else (n // 2 if a == "Z" else 0) for a, n in planes_axes) or (
            0,
        )
        page = level.pages[int(np.ravel_multi_index(index, dims))]
        data = page.asarray()
        while data.ndim > 2 and not (data.ndim == 3 and data.shape[-1] in (3, 4)):
            data = data[0]
        layers.append(data)
    if len(layers) == 1:
        return layers[0]
    return np.stack(layers + [np.zeros_like(layers[0])] * (3 - len(layers)), axis=-1)
