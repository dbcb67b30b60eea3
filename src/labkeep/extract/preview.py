"""Thumbnails: a plane scaled to 8 bits and at most ``MAX_SIDE`` pixels, as PNG.

Scientific images are rarely 8-bit and rarely use their whole range: each channel is
stretched between its 0.5th and 99.5th percentile (what a viewer's auto-contrast does),
so a 12-bit image in a 16-bit container is not shown black.
"""

from __future__ import annotations

import io
import os
from typing import Any

MAX_SIDE = 256


def _to_uint8(data: Any) -> Any:
    import numpy as np

    array = np.asarray(data)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.iscomplexobj(array):
        array = np.abs(array)
    if array.dtype == np.uint8:
        return array
    out = np.empty(array.shape, dtype=np.uint8)
    stack = array[..., None] if array.ndim == 2 else array
    target = out[..., None] if array.ndim == 2 else out
    for c in range(stack.shape[-1]):
        layer = stack[..., c].astype(np.float64)
        finite = layer[np.isfinite(layer)]
        if finite.size == 0:
            target[..., c] = 0
            continue
        low, high = np.percentile(finite, [0.5, 99.5])
        if high <= low:
            high = low + 1
        scaled = np.clip((np.nan_to_num(layer, nan=low) - low) / (high - low), 0, 1)
        target[..., c] = (scaled * 255).round().astype(np.uint8)
    return out


def thumbnail_png(plane: Any, max_side: int = MAX_SIDE) -> bytes:
    """PNG bytes of *plane* (a Pillow image, or a 2-D or (Y, X, 3 or 4) array)."""
    from PIL import Image

    if isinstance(plane, Image.Image):
        image = plane
    else:
        data = _to_uint8(plane)
        if data.ndim == 3 and data.shape[-1] == 4:
            data = data[..., :3]
        image = Image.fromarray(data)
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_atomically(path: str, data: bytes) -> None:
    """Write *data* to *path* through a temporary name beside it (never a partial file
    under the final name). Not fsynced: a thumbnail is a cache, made again when lost
    (a missing one is "no preview", never a broken image)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.part"
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
