"""Bounds on what a request may send, enforced before anything reads it.

:class:`BodyLimit` is a pure ASGI middleware (it never buffers): a declared
``Content-Length`` above the route's limit is answered 413 at once; a body without one
(chunked) is counted as it arrives and stopped at the limit. Upload routes get
``[web] max_upload_bytes``, forms ``max_form_bytes`` and everything else
``max_json_bytes`` (256 KiB each: JSON and forms are small). When an answer goes out
before the client finished sending its body (a refusal), the connection is closed rather
than read to the end.

:func:`receive_upload` streams a multipart upload straight into the upload's staging
folder, after the Keep has said that the caller may add files to the dataset: an
anonymous or foreign caller gets 404 before a byte of the body is read.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labkeep.errors import Forbidden, TooLarge, UsageError

if TYPE_CHECKING:
    from labkeep.ops.upload import Upload
    from labkeep.results import Report

#: POST routes whose bodies are uploads (path without the root path)
UPLOAD_ROUTES = re.compile(r"^(/api/v1/datasets/[^/]+/[^/]+/files|/p/[^/]+/[^/]+/upload)$")
#: form fields of an upload other than files, in all (names and paths of the files)
MAX_FIELDS_BYTES = 1 << 20
#: what a WebDAV PUT may overrun max_upload_bytes by before the body is cut off here (the
#: writer, which answers in WebDAV's terms, stops it at the limit)
DAV_SLACK = 4 << 20


class BodyTooLarge(HTTPException):
    """Raised into whatever reads a body past its limit (FastAPI lets HTTPException pass
    through its body parsing); answered 413 in the API's error shape."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit:,} bytes")
        self.limit = limit


def is_upload(scope: Scope) -> bool:
    path = scope["path"][len(scope.get("root_path") or "") :]
    return scope.get("method") == "POST" and bool(UPLOAD_ROUTES.match(path))


def is_dav_write(scope: Scope) -> bool:
    """A WebDAV PUT (a file's bytes): bounded by ``max_upload_bytes``, counted by the
    drive's writer too, which refuses a declared size above it before reading."""
    path = scope["path"][len(scope.get("root_path") or "") :]
    return scope.get("method") == "PUT" and path.startswith("/dav/")


class BodyLimit:
    def __init__(
        self, app: ASGIApp, *, json_bytes: int, form_bytes: int, upload_bytes: int
    ) -> None:
        self.app = app
        self.json_bytes = json_bytes
        self.form_bytes = form_bytes
        self.upload_bytes = upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        dav = is_dav_write(scope)
        upload = is_upload(scope) or dav
        headers = dict(scope["headers"])
        form = headers.get(b"content-type", b"").startswith(
            (b"application/x-www-form-urlencoded", b"multipart/form-data")
        )
        limit = self.upload_bytes if upload else self.form_bytes if form else self.json_bytes
        if dav:  # a backstop: the drive's writer refuses past the limit first, as a 413
            limit += DAV_SLACK
        declared = headers.get(b"content-length")
        expects_body = declared not in (None, b"0") or b"transfer-encoding" in headers
        if declared is not None and not (declared.isascii() and declared.isdigit()):
            await _refuse(scope, receive, send, limit)
            return
        if declared is not None and int(declared) > limit and not upload:
            # (an upload's route first settles who is asking, then refuses its size)
            await _refuse(scope, receive, send, limit)
            return
        received = 0
        complete = not expects_body

        async def counting_receive() -> Message:
            nonlocal received, complete
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if not message.get("more_body", False):
                    complete = True
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not complete:
                # answered before the body was read (a refusal): do not read the rest
                message = dict(message)
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        try:
            await self.app(scope, counting_receive, closing_send)
        except BodyTooLarge as exc:  # escaped every handler: answer it here
            await _refuse(scope, receive, send, exc.limit)


async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    from labkeep.web.app import error_response

    error = TooLarge(
        f"the request body is larger than this server accepts ({limit} bytes)",
        hint="large data goes in with 'labkeep ingest' on the keep's machine"
        if is_upload(scope)
        else "the limits are [web] max_json_bytes and max_form_bytes in labkeep.toml",
    )
    response = error_response(Request(scope, receive), error)
    response.headers["connection"] = "close"
    await response(scope, receive, send)


# -- uploads ------------------------------------------------------------------------------
async def receive_upload(request: Request, address: str) -> Report:
    """Stream a ``multipart/form-data`` upload (``files`` parts, optional ``paths``
    fields) into ``address``'s raw/ through the Keep's upload use case.

    Who is asking, and whether they may add files to the dataset, is settled from the
    headers before the body is read. A browser session's CSRF token comes in the
    ``X-CSRF-Token`` header or as the form's first field (the upload form sends it first).
    """
    from labkeep.web.deps import CSRF_FIELD, resolve

    keep = await anyio.to_thread.run_sync(resolve, request)
    content_type = request.headers.get("content-type", "")
    boundary = _boundary(content_type)
    csrf_pending = getattr(request.state, "csrf_pending", False)
    upload: Upload = await anyio.to_thread.run_sync(keep.begin_upload, address)
    try:
        declared = request.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > upload.limit:
            raise TooLarge(
                f"the upload is larger than this server accepts ({upload.limit:,} bytes)",
                hint="large data goes in with 'labkeep ingest' on the keep's machine",
            )
        reader = _MultipartReader(
            upload, boundary, request.state.csrf if csrf_pending else None, CSRF_FIELD
        )
        async for chunk in request.stream():
            if chunk:
                await anyio.to_thread.run_sync(reader.feed, chunk)
        reader.done()
        paths = reader.paths if reader.paths else None
        return await anyio.to_thread.run_sync(upload.finish, paths)
    finally:
        await anyio.to_thread.run_sync(upload.close)


def _boundary(content_type: str) -> bytes:
    from python_multipart.multipart import parse_options_header

    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UsageError(
            "send the files as multipart/form-data",
            hint="e.g. curl -F files=@FILE URL (one 'files' part per file)",
        )
    return boundary


class _MultipartReader:
    """python-multipart's streaming parser, writing file parts into an :class:`Upload`."""

    def __init__(self, upload: Upload, boundary: bytes, csrf: str | None, csrf_field: str) -> None:
        from python_multipart.multipart import MultipartParser

        self.upload = upload
        self.csrf = csrf  # the token still to be checked (a session's first field), or None
        self.csrf_field = csrf_field
        self.paths: list[str] = []
        self.fields_bytes = 0
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._part: str | None = None  # "file", "paths", "csrf", "other"
        self._field = bytearray()
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._data,
                "on_part_end": self._part_end,
            },
        )

    def feed(self, chunk: bytes) -> None:
        """Parse the next chunk; the callbacks below write files as their bytes come."""
        with _malformed_is_usage():
            self.parser.write(chunk)

    def done(self) -> None:
        with _malformed_is_usage():
            self.parser.finalize()
        if self.csrf is not None:
            raise _csrf_refused()

    # -- callbacks (what they raise comes out of feed) --------------------------------------
    def _part_begin(self) -> None:
        self._headers = {}
        self._part = None
        self._field = bytearray()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is not None:
            if self.csrf is not None:
                raise _csrf_refused()
            if not filename:  # an empty file input of a form: no file chosen
                self._part = "other"
                return
            self._part = "file"
            self.upload.open_part(_text(filename))
        elif name == self.csrf_field:
            self._part = "csrf"
        elif name == "paths":
            self._part = "paths"
        else:
            self._part = "other"

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "file":
            self.upload.write(data[start:end])
        elif self._part in ("paths", "csrf"):
            self.fields_bytes += end - start
            if self.fields_bytes > MAX_FIELDS_BYTES:
                raise TooLarge("the upload's form fields are too large")
            self._field += data[start:end]

    def _part_end(self) -> None:
        if self._part == "file":
            self.upload.end_part()
        elif self._part == "paths":
            self.paths.append(_text(bytes(self._field)))
        elif self._part == "csrf" and self.csrf is not None:
            sent = bytes(self._field).decode("utf-8", "replace")
            if not hmac.compare_digest(sent, self.csrf):
                raise _csrf_refused()
            self.csrf = None
        self._part = None


@contextmanager
def _malformed_is_usage() -> Iterator[None]:
    from python_multipart.exceptions import FormParserError

    try:
        yield
    except FormParserError as exc:
        raise UsageError(
            f"the upload is not valid multipart/form-data ({exc})",
            hint="send it as a browser or curl -F does",
        ) from None


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("a file name in the upload is not valid UTF-8") from None


def _csrf_refused() -> Forbidden:
    return Forbidden(
        "missing or wrong CSRF token", hint="reload the page and submit the form again"
    )


def upload_request_body() -> dict[str, Any]:
    """The OpenAPI description of an upload's body (the route reads it as a stream)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["files"],
                        "properties": {
                            "files": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "string",
                                    "contentMediaType": "application/octet-stream",
                                },
                                "description": "the files",
                            },
                            "paths": {
                                "type": "array",
                                "items": {"type": "string"},
                                "description": "relative path of each file (else its name)",
                            },
                        },
                    }
                }
            },
        }
    }
