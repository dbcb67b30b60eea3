"""A small InvenioRDM records API on loopback, written from the public REST API docs
(https://inveniordm.docs.cern.ch/reference/rest_api_drafts_records/), for deposit tests.

    with InvenioServer(token="t0k") as server:
        server.url                       # http://127.0.0.1:PORT (the base URL, no /api)
        server.fail("PUT", r"/content$", status=503, retry_after=1, times=2)
        server.fail("PUT", r"/content$", drop=True)        # close the socket mid-upload
        server.fail("POST", r"/actions/publish$", drop_after=True)  # publish, then no answer

Implemented: ``POST /api/records`` (a draft; metadata checked as InvenioRDM requires:
title, publication_date, resource_type, creators with person_or_org), ``GET``/``PUT
/api/records/{id}/draft``, ``POST .../draft/pids/doi`` (a reserved DOI, the same one
when asked again), ``GET``/``POST .../draft/files`` (init by key), ``PUT
.../files/{key}/content``, ``POST .../files/{key}/commit`` (``checksum: md5:...``),
``GET``/``DELETE .../files/{key}``, ``POST .../draft/actions/publish`` (202) and ``GET
/api/records/{id}`` (404 until published). Updating a draft without its ``pids`` drops
its reserved DOI, as InvenioRDM does. Bearer tokens only. Limits: ``max_files`` per
record and ``max_file_size`` (413 before the body is read).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote


@dataclass
class Fault:
    method: str
    pattern: str
    status: int | None = None
    retry_after: str | None = None
    drop: bool = False
    drop_after: bool = False
    times: int = 1
    #: with drop on an upload: bytes of the body read before the socket is closed
    after_bytes: int = 100


@dataclass
class FileEntry:
    key: str
    status: str = "pending"
    data: bytes | None = None
    checksum: str | None = None
    #: size and MD5 of the content received (kept also when the content itself is not)
    size: int | None = None
    md5: str | None = None

    def to_dict(self, base: str, rid: str) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "key": self.key,
            "status": self.status,
            "links": {
                "self": f"{base}/api/records/{rid}/draft/files/{self.key}",
                "content": f"{base}/api/records/{rid}/draft/files/{self.key}/content",
                "commit": f"{base}/api/records/{rid}/draft/files/{self.key}/commit",
            },
        }
        if self.status == "completed":
            entry.update(checksum=self.checksum, size=self.size)
        return entry


@dataclass
class Record:
    id: str
    metadata: dict[str, Any]
    access: dict[str, Any]
    pids: dict[str, Any] = field(default_factory=dict)
    files: dict[str, FileEntry] = field(default_factory=dict)
    published: dict[str, Any] | None = None
    draft: bool = True
    #: the community review request: {"community": ..., "status": "created"|"submitted"}
    review: dict[str, Any] | None = None


class InvenioServer:
    def __init__(
        self,
        token: str = "secret-token",
        *,
        max_files: int = 100,
        max_file_size: int = 1 << 40,
        keep_content: bool = True,
    ) -> None:
        self.token = token
        #: False: only the size and MD5 of uploads are kept (large files, memory tests)
        self.keep_content = keep_content
        self.max_files = max_files
        self.max_file_size = max_file_size
        self.records: dict[str, Record] = {}
        self.faults: list[Fault] = []
        #: (method, path, status or "dropped") of every request, in order
        self.log: list[tuple[str, str, int | str]] = []
        #: every Authorization header received
        self.auth_headers: list[str] = []
        self.lock = threading.Lock()
        self._next = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control -------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> InvenioServer:
        handler = type("Handler", (_Handler,), {"api": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            assert self._thread is not None
            self._thread.join(10)
            self._httpd = None

    def __enter__(self) -> InvenioServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def fail(self, method: str, pattern: str, **kwargs: Any) -> Fault:
        fault = Fault(method, pattern, **kwargs)
        with self.lock:
            self.faults.append(fault)
        return fault

    def published(self) -> list[Record]:
        return [r for r in self.records.values() if r.published is not None]

    def accept(self, record_id: str) -> None:
        """A curator of the community accepts the submitted draft: it is published."""
        record = self.records[record_id]
        assert record.review is not None and record.review["status"] == "submitted"
        record.review["status"] = "accepted"
        _Handler._publish_record(self, record)

    def requests(self, method: str, pattern: str) -> list[tuple[str, str, int | str]]:
        return [e for e in self.log if e[0] == method and re.search(pattern, e[1])]

    def _fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and re.search(fault.pattern, path):
                    fault.times -= 1
                    return fault
        return None

    def _new_id(self) -> str:
        with self.lock:
            self._next += 1
            return f"lk{self._next:03d}-test"


class _Handler(BaseHTTPRequestHandler):
    api: InvenioServer
    protocol_version = "HTTP/1.1"
    timeout = 10
    # headers and body go in separate writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK hold every answer ~40 ms
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # every method goes through one dispatcher
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        api = self.api
        raw_path = self.path.split("?", 1)[0]
        self.api.auth_headers.append(self.headers.get("Authorization", ""))
        fault = api._fault(method, raw_path)
        if fault is not None and fault.drop:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(min(length, fault.after_bytes))
            api.log.append((method, raw_path, "dropped"))
            self._drop()
            return
        if fault is not None and fault.status is not None:
            self._discard_body()
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            api.log.append((method, raw_path, fault.status))
            self._send(fault.status, {"status": fault.status, "message": "injected"}, headers)
            return
        if self.headers.get("Authorization") != f"Bearer {api.token}":
            self._discard_body()
            api.log.append((method, raw_path, 403))
            self._send(403, {"status": 403, "message": "Permission denied."})
            return
        try:
            status, body = self._route(method, [unquote(p) for p in raw_path.split("/")[1:]])
        except _Error as exc:
            status = exc.status
            body = {"status": exc.status, "message": exc.message, "errors": exc.errors}
        api.log.append((method, raw_path, status))
        if fault is not None and fault.drop_after:
            api.log[-1] = (method, raw_path, "dropped")
            self._drop()
            return
        self._send(status, body)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _discard_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                break
            length -= len(chunk)

    def _json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        try:
            return json.loads(data or b"null")
        except ValueError:
            raise _Error(400, "invalid JSON") from None

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = b"" if status == 204 else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if data:
            self.wfile.write(data)

    # -- the API ---------------------------------------------------------------------
    def _route(self, method: str, parts: list[str]) -> tuple[int, Any]:
        api = self.api
        if parts[:2] != ["api", "records"]:
            raise _Error(404, "not found")
        rest = parts[2:]
        if not rest or rest == [""]:
            if method != "POST":
                raise _Error(405, "method not allowed")
            return 201, self._create(self._json())
        record = api.records.get(rest[0])
        if record is None:
            self._discard_body()
            raise _Error(404, "The persistent identifier does not exist.")
        rid = rest[0]
        if rest[1:] == []:
            if method == "GET":
                if record.published is None:
                    raise _Error(404, "The record is not published.")
                return 200, record.published
            raise _Error(405, "method not allowed")
        if rest[1] != "draft" or not record.draft:
            self._discard_body()
            raise _Error(404, "No draft of this record.")
        tail = rest[2:]
        if tail == []:
            if method == "GET":
                return 200, self._draft(record)
            if method == "PUT":
                data = self._json()
                record.metadata = data.get("metadata") or {}
                record.pids = data.get("pids") or {}
                return 200, self._draft(record)
        if tail == ["pids", "doi"] and method == "POST":
            self._discard_body()
            if "doi" not in record.pids:
                record.pids["doi"] = {
                    "identifier": f"10.5072/lkt.{rid}",
                    "provider": "datacite",
                    "client": "datacite",
                }
            return 201, self._draft(record)
        if tail == ["actions", "publish"] and method == "POST":
            self._discard_body()
            if record.review is not None and record.review["status"] == "submitted":
                raise _Error(400, "The draft is under review by a community.")
            return 202, self._publish(record)
        if tail == ["review"] and method == "PUT":
            data = self._json()
            community = ((data or {}).get("receiver") or {}).get("community")
            if not community or data.get("type") != "community-submission":
                raise _Error(400, "A community-submission to a community is required.")
            record.review = {"community": community, "status": "created"}
            return 200, {
                "type": "community-submission",
                "status": "created",
                "receiver": {"community": community},
            }
        if tail == ["actions", "submit-review"] and method == "POST":
            self._discard_body()
            if record.review is None or record.review["status"] != "created":
                raise _Error(400, "No review request to submit.")
            self._check(record.metadata)
            record.review["status"] = "submitted"
            return 202, {"type": "community-submission", "status": "submitted"}
        if tail[:1] == ["files"]:
            return self._files(method, record, rid, tail[1:])
        raise _Error(404, "not found")

    def _create(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise _Error(400, "A JSON object is required.")
        metadata = data.get("metadata") or {}
        self._check(metadata)
        record = Record(self.api._new_id(), metadata, data.get("access") or {})
        record.pids = data.get("pids") or {}
        self.api.records[record.id] = record
        return self._draft(record)

    def _check(self, metadata: dict[str, Any]) -> None:
        errors = []
        for name in ("title", "publication_date", "resource_type", "creators"):
            if not metadata.get(name):
                errors.append(
                    {"field": f"metadata.{name}", "messages": ["Missing data for required field."]}
                )
        for i, creator in enumerate(metadata.get("creators") or []):
            person = creator.get("person_or_org") or {}
            if person.get("type") not in ("personal", "organizational"):
                errors.append(
                    {
                        "field": f"metadata.creators.{i}.person_or_org.type",
                        "messages": ["Invalid value."],
                    }
                )
            if person.get("type") == "personal" and not person.get("family_name"):
                errors.append(
                    {
                        "field": f"metadata.creators.{i}.person_or_org.family_name",
                        "messages": ["Family name must be filled."],
                    }
                )
            if person.get("type") == "organizational" and not person.get("name"):
                errors.append(
                    {
                        "field": f"metadata.creators.{i}.person_or_org.name",
                        "messages": ["Name cannot be blank."],
                    }
                )
        if not re.fullmatch(r"\d{4}(-\d{2}(-\d{2})?)?", str(metadata.get("publication_date", ""))):
            errors.append({"field": "metadata.publication_date", "messages": ["Invalid date."]})
        if errors:
            raise _Error(400, "A validation error occurred.", errors)

    def _draft(self, record: Record) -> dict[str, Any]:
        base = self.api.url
        return {
            "id": record.id,
            "is_published": False,
            "is_draft": True,
            "status": "draft",
            "metadata": record.metadata,
            "access": record.access,
            "pids": record.pids,
            "files": {"enabled": True},
            "links": {
                "self": f"{base}/api/records/{record.id}/draft",
                "self_html": f"{base}/uploads/{record.id}",
                "files": f"{base}/api/records/{record.id}/draft/files",
                "publish": f"{base}/api/records/{record.id}/draft/actions/publish",
                "reserve_doi": f"{base}/api/records/{record.id}/draft/pids/doi",
            },
        }

    def _publish(self, record: Record) -> dict[str, Any]:
        self._check(record.metadata)
        return self._publish_record(self.api, record)

    @staticmethod
    def _publish_record(api: InvenioServer, record: Record) -> dict[str, Any]:
        if not record.files:
            raise _Error(
                400,
                "Missing uploaded files. To disable files for this record please mark it as "
                "metadata-only.",
            )
        if any(f.status != "completed" for f in record.files.values()):
            raise _Error(400, "Files are still pending.")
        doi = record.pids.get("doi") or {
            "identifier": f"10.5072/lkt.{record.id}",
            "provider": "datacite",
            "client": "datacite",
        }
        base = api.url
        record.published = {
            "id": record.id,
            "is_published": True,
            "is_draft": False,
            "status": "published",
            "metadata": record.metadata,
            "pids": {"doi": doi},
            "files": {
                "enabled": True,
                "entries": {k: f.to_dict(base, record.id) for k, f in record.files.items()},
            },
            "links": {
                "self": f"{base}/api/records/{record.id}",
                "self_html": f"{base}/records/{record.id}",
                "doi": f"https://doi.org/{doi['identifier']}",
            },
        }
        record.draft = False
        return record.published

    def _files(self, method: str, record: Record, rid: str, tail: list[str]) -> tuple[int, Any]:
        base = self.api.url
        if tail == []:
            if method == "GET":
                return 200, {
                    "enabled": True,
                    "entries": [f.to_dict(base, rid) for f in record.files.values()],
                }
            if method == "POST":
                data = self._json()
                if not isinstance(data, list):
                    raise _Error(400, "A list of files is required.")
                keys = [str(item.get("key", "")) for item in data]
                for key in keys:
                    if not key or key in record.files:
                        raise _Error(400, f"File with key {key} already exists.")
                if len(record.files) + len(keys) > self.api.max_files:
                    raise _Error(400, f"Too many files: at most {self.api.max_files} per record.")
                for key in keys:
                    record.files[key] = FileEntry(key)
                return 201, {"entries": [record.files[k].to_dict(base, rid) for k in keys]}
        key = tail[0]
        entry = record.files.get(key)
        if entry is None:
            self._discard_body()
            raise _Error(404, f"File with key {key} not found.")
        if tail[1:] == [] and method == "GET":
            return 200, entry.to_dict(base, rid)
        if tail[1:] == [] and method == "DELETE":
            del record.files[key]
            return 204, None
        if tail[1:] == ["content"] and method == "PUT":
            length = self.headers.get("Content-Length")
            if length is None:
                raise _Error(411, "Length required.")
            if int(length) > self.api.max_file_size:
                self._discard_body()  # a real proxy may cut the connection instead
                raise _Error(413, "File size limit exceeded.")
            remaining, parts, digest = int(length), [], hashlib.md5()
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    raise _Error(400, "Incomplete body.")
                digest.update(chunk)
                if self.api.keep_content:
                    parts.append(chunk)
                remaining -= len(chunk)
            entry.data = b"".join(parts) if self.api.keep_content else None
            entry.status, entry.checksum = "pending", None
            entry.size, entry.md5 = int(length), digest.hexdigest()
            return 200, entry.to_dict(base, rid)
        if tail[1:] == ["commit"] and method == "POST":
            self._discard_body()
            if entry.md5 is None:
                raise _Error(400, "File has no content.")
            entry.status = "completed"
            entry.checksum = "md5:" + entry.md5
            return 200, entry.to_dict(base, rid)
        raise _Error(405, "method not allowed")


class _Error(Exception):
    def __init__(self, status: int, message: str, errors: list[Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors or []
