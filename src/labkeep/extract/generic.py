"""The generic plugin (every file: type by content, size, text encoding) and common
raster images through Pillow (PNG, JPEG, GIF, BMP, WebP)."""

from __future__ import annotations

import codecs
import os
from typing import Any

#: (magic at offset 0, MIME type); longest first where prefixes overlap
MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"II+\x00", "image/tiff"),  # BigTIFF
    (b"MM\x00+", "image/tiff"),
    (b"ZISRAWFILE", "application/x-czi"),
    (b"\xda\xce\xbe\x0a", "application/x-nd2"),
    (b"\x70\x00\x00\x00", "application/x-lif"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"BZh", "application/x-bzip2"),
    (b"\xfd7zXZ\x00", "application/x-xz"),
    (b"\x28\xb5\x2f\xfd", "application/zstd"),
    (b"\x89HDF\r\n\x1a\n", "application/x-hdf5"),
    (b"\x8bPOD\r\n\x1a\n", "application/x-pod5"),
    (b"BAM\x01", "application/x-bam"),
    (b"\x93NUMPY", "application/x-npy"),
    (b"SQLite format 3\x00", "application/vnd.sqlite3"),
    (b"BM", "image/bmp"),
)


def sniff(head: bytes) -> str:
    """The MIME type that a file's first bytes show (``""``: none known)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    for magic, mime in MAGIC:
        if head.startswith(magic):
            if mime == "image/bmp" and len(head) < 14:
                continue
            return mime
    return ""


def text_encoding(sample: bytes) -> str | None:
    """``ascii``, ``utf-8``, ``utf-16``/``utf-8-sig`` (by BOM) or None for binary."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if b"\x00" in sample:
        return None
    controls = sum(1 for b in sample if b < 9 or 13 < b < 32)
    if sample and controls / len(sample) > 0.01:
        return None
    try:
        sample.decode("ascii")
        return "ascii"
    except UnicodeDecodeError:
        pass
    for cut in range(4):  # the sample may end inside a multi-byte character
        try:
            sample[: len(sample) - cut].decode("utf-8")
            return "utf-8"
        except UnicodeDecodeError:
            continue
    return None


class GenericExtractor:
    """Every file: its size, the type its content shows, and for text its encoding and
    line count (of the first MiB)."""

    name = "generic"
    version = "1"

    def accepts(self, name: str, head: bytes) -> int:
        return 1

    def extract(self, path: str, name: str) -> dict[str, Any]:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            sample = handle.read(1 << 20)
        fields: dict[str, Any] = {"bytes": size}
        mime = sniff(sample[:64])
        encoding = None if mime else text_encoding(sample)
        if encoding is not None:
            fields["mime"] = "text/plain"
            fields["encoding"] = encoding
            if encoding.startswith("utf-16"):
                text = sample.decode("utf-16", errors="replace")
            else:
                text = sample.decode("utf-8", errors="replace")
            fields["lines"] = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
            if size > len(sample):
                fields["lines_counted_in_first_bytes"] = len(sample)
        else:
            fields["mime"] = mime or "application/octet-stream"
        return fields


class PillowExtractor:
    """PNG, JPEG, GIF, BMP and WebP through Pillow (``labkeep[imaging]``)."""

    name = "image"
    version = "1"
    MIMES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp")

    def accepts(self, name: str, head: bytes) -> int:
        return 10 if sniff(head) in self.MIMES else 0

    def extract(self, path: str, name: str) -> dict[str, Any]:
        from PIL import Image

        from labkeep.extract.model import ImageMetadata

        with Image.open(path) as img:
            img.verify()  # reads the whole stream: truncated or corrupt files raise
        with Image.open(path) as img:
            meta = ImageMetadata(
                format=img.format or "image",
                size_x=img.width,
                size_y=img.height,
                size_c=len(img.getbands()),
                pixel_type=img.mode,
                images=getattr(img, "n_frames", 1),
            )
            exif = img.getexif()
            model = " ".join(str(exif.get(t, "")).strip() for t in (0x010F, 0x0110)).strip()
            if model:
                meta.instrument = model
            stamp = str(exif.get(0x0132, "")).strip()
            if len(stamp) >= 10:
                meta.acquisition_date = stamp[:10].replace(":", "-") + stamp[10:].replace(" ", "T")
        return meta.to_dict()

    def plane(self, path: str, name: str, max_side: int) -> Any:
        from PIL import Image

        with Image.open(path) as img:
            img.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale
            img.thumbnail((max_side, max_side))
            return img.convert("RGB") if img.mode not in ("L", "RGB") else img.copy()
