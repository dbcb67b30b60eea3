"""Serving files: single files with HTTP Range, folders and datasets as streamed zips."""

from __future__ import annotations

import base64
import queue
import threading
import zipfile
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import quote

from fastapi.responses import FileResponse, Response, StreamingResponse

if TYPE_CHECKING:
    from labkeep.keep import Keep

ZIP_CHUNK = 1 << 20


class _FileResponse(FileResponse):
    """Starlette's FileResponse reads and sends 64 KiB at a time, each read a hop to a
    worker thread and each chunk a trip through the middleware: 1 MiB chunks move big
    files about seven times faster, for 1 MiB of buffer per download."""

    chunk_size = 1 << 20


def content_disposition(filename: str, inline: bool = False) -> str:
    """RFC 6266: an ASCII fallback plus the exact UTF-8 name."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def file_response(keep: Keep, address: str) -> Response:
    """One file, streamed from the tree, with Range support and its SHA-256 as ETag."""
    info, handle = keep.open_file(address)
    handle.close()
    digest_b64 = base64.b64encode(bytes.fromhex(info.sha256)).decode()
    return _FileResponse(
        info.local_path,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": content_disposition(info.name),
            "ETag": f'"{info.sha256}"',
            "Repr-Digest": f"sha-256=:{digest_b64}:",
            "X-Content-SHA256": info.sha256,
        },
    )


def manifest_response(keep: Keep, address: str) -> Response:
    text = keep.read_manifest(address)
    return Response(
        text.encode("utf-8"),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": content_disposition("MANIFEST.sha256", inline=True)},
    )


class _Pipe:
    """A write-only file object that hands zipfile's output to the response in chunks."""

    def __init__(self, out: queue.Queue[bytes | BaseException | None]) -> None:
        self.out = out
        self.buffer = bytearray()
        self.written = 0

    def write(self, data: bytes) -> int:
        self.buffer += data
        self.written += len(data)
        if len(self.buffer) >= ZIP_CHUNK:
            self.flush()
        return len(data)

    def tell(self) -> int:
        return self.written

    def flush(self) -> None:
        if self.buffer:
            self.out.put(bytes(self.buffer))
            self.buffer = bytearray()


def zip_response(keep: Keep, address: str, filename: str) -> Response:
    """A dataset or folder as a zip streamed while it is written (no temp file).

    Files are stored uncompressed (instrument data rarely compresses) with ZIP64, and the
    listing is checked (and download-counted for share links) before the first byte.
    """
    files = keep.files_for_download(address)

    def produce(out: queue.Queue[bytes | BaseException | None]) -> None:
        try:
            pipe = _Pipe(out)
            zf = zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED, allowZip64=True)  # type: ignore[call-overload]
            with zf:
                for file in files:
                    info = zipfile.ZipInfo.from_file(file.local_path, arcname=file.path)
                    info.file_size = file.size
                    with (
                        open(file.local_path, "rb") as src,
                        zf.open(info, "w", force_zip64=True) as dst,
                    ):
                        while chunk := src.read(ZIP_CHUNK):
                            dst.write(chunk)
                            pipe.flush()
            pipe.flush()
            out.put(None)
        except BaseException as exc:  # noqa: BLE001 (handed to the response, which ends the stream)
            out.put(exc)

    def body() -> Iterator[bytes]:
        out: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=8)
        worker = threading.Thread(target=produce, args=(out,), daemon=True)
        worker.start()
        while True:
            item = out.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
        worker.join()

    return StreamingResponse(
        body(),
        media_type="application/zip",
        headers={"Content-Disposition": content_disposition(filename)},
    )
