"""Serving files: single files with HTTP Range, folders and datasets as streamed zips."""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote

import anyio
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from labkeep.names import address_text, parse_address
from labkeep.web.zipstream import Member, ZipNames, stream_zip

if TYPE_CHECKING:
    from labkeep.keep import Keep
    from labkeep.ops.files import FileInfo


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


def resuming(range_header: str | None) -> bool:
    """One Range from a byte after the first (``bytes=N-`` or ``bytes=N-M``, N > 0)
    continues a download; a whole file, a range from byte 0, one counted from the end
    (``bytes=-N``) or several ranges (which may add up to the whole file) are a new one."""
    match = re.fullmatch(r"\s*bytes\s*=\s*([0-9]{1,19})\s*-\s*[0-9]{0,19}\s*", range_header or "")
    return match is not None and int(match.group(1)) > 0


def file_response(keep: Keep, address: str, range_header: str | None = None) -> Response:
    """One file, streamed from the tree, with Range support and its SHA-256 as ETag.

    A download counts once against a share link's limit: a request for the whole file
    or for a range from its first byte counts, the later ranges of that file do not.
    """
    info, handle = keep.open_file(address, resuming=resuming(range_header))
    digest_b64 = base64.b64encode(bytes.fromhex(info.sha256)).decode()
    headers = {
        "Content-Disposition": content_disposition(info.name),
        "ETag": f'"{info.sha256}"',
        "Repr-Digest": f"sha-256=:{digest_b64}:",
        "X-Content-SHA256": info.sha256,
    }
    if not _from_tree(handle):  # the tree has no copy: stream it from a store
        return _store_response(handle, info.size, range_header, headers)
    handle.close()
    return _FileResponse(
        info.local_path,
        media_type="application/octet-stream",
        headers=headers,
    )


def manifest_response(keep: Keep, address: str) -> Response:
    """MANIFEST.sha256 streamed from the catalog (access checked before the first byte)."""
    return ClosingStreamingResponse(
        keep.iter_manifest(address),
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": content_disposition("MANIFEST.sha256", inline=True)},
    )


def zip_response(keep: Keep, address: str, filename: str) -> Response:
    """A dataset or folder as a zip streamed while it is written (no temp file, no thread).

    The listing is checked (and download-counted for share links) before the first byte;
    files are read a chunk at a time, and a client that goes away stops the generator,
    which closes the file it was reading.
    """
    files = keep.files_for_download(address)
    addr = parse_address(address, need_dataset=True)
    names = ZipNames(
        lambda path: keep.has_file(address_text(addr.project, addr.dataset, path, addr.version))
    )
    members = (
        Member(names(f.path), f.size, f.mtime_ns, functools.partial(_open_checked, keep, f))
        for f in files
    )
    return ClosingStreamingResponse(
        stream_zip(members),
        media_type="application/zip",
        headers={"Content-Disposition": content_disposition(filename)},
    )


class ClosingStreamingResponse(StreamingResponse):
    """A streamed body that is closed however the response ends.

    Starlette leaves the body's iterator suspended when the client goes away (and Python
    closes it only when the garbage collector gets to it): here it is closed at once, so
    the generator's ``finally`` blocks run and the file it was reading is closed.
    """

    def __init__(self, content: Iterator[bytes], **kwargs: Any) -> None:
        self._source = content
        super().__init__(content, **kwargs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(self.body_iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
                close = getattr(self._source, "close", None)
                if close is not None:
                    await anyio.to_thread.run_sync(close)


def _open_checked(keep: Keep, info: FileInfo) -> BinaryIO:
    """A file for a zip: the tree's copy (of the catalog's size), else a good replica;
    an error (ending the zip) when there is neither."""
    from labkeep.errors import NotFound
    from labkeep.ops.content import open_content

    try:
        return open_content(
            keep, info.local_path, info.size, bytes.fromhex(info.sha256), info.mtime_ns
        )
    except NotFound as exc:
        raise OSError(f"{info.dataset}/{info.path}: {exc.message}") from None


def _from_tree(handle: BinaryIO) -> bool:
    from labkeep.ops.content import StoreReader

    raw = getattr(handle, "raw", None)
    return not isinstance(raw, StoreReader)


def _store_response(
    handle: BinaryIO, size: int, range_header: str | None, headers: dict[str, str]
) -> Response:
    """A file served from a store: the whole file, or one byte range (206)."""
    from labkeep.ops.content import StoreReader

    reader = handle.raw  # type: ignore[attr-defined]
    assert isinstance(reader, StoreReader)
    headers = {**headers, "Accept-Ranges": "bytes"}
    span = _one_range(range_header, size)
    if span is None:
        headers["Content-Length"] = str(size)
        return ClosingStreamingResponse(
            _chunks(handle), media_type="application/octet-stream", headers=headers
        )
    if isinstance(span, str):  # unsatisfiable
        handle.close()
        return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
    start, end = span
    handle.close()
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    return ClosingStreamingResponse(
        reader.ranges(start, end),
        status_code=206,
        media_type="application/octet-stream",
        headers=headers,
    )


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while block := handle.read(1 << 20):
            yield block


def _one_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """``bytes=A-B``, ``bytes=A-`` or ``bytes=-N`` as [start, end); None: the whole file."""
    # (ASCII digits, at most 19: no file is longer; anything else is served whole)
    match = re.fullmatch(r"\s*bytes\s*=\s*([0-9]{0,19})\s*-\s*([0-9]{0,19})\s*", header or "")
    if match is None or not (match.group(1) or match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:
        start, end = max(0, size - int(last)), size
    else:
        start = int(first)
        end = min(size, int(last) + 1) if last else size
    if start >= size or start >= end:
        return "unsatisfiable"
    return start, end
