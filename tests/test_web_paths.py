"""Hostile paths in URLs and uploads never reach anything outside the dataset.

A real server on loopback; requests are sent with http.client so that the request target
goes out exactly as written (httpx would normalise ``..`` away before sending). Canary
files lie next to the keep, inside the tree outside any dataset, and in a sibling
dataset; the test checks that no answer carries their bytes, that they are never
written, and (relatime: a read moves an atime that is days old) never even read.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import re
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

from labkeep import Keep
from tests.conftest import unseal_tree
from tests.pgserver import PostgresServer
from tests.webserver import LiveServer

NFC = unicodedata.normalize("NFC", "café.txt")
NFD = unicodedata.normalize("NFD", "café.txt")
ONLY_NFC = unicodedata.normalize("NFC", "naïve.txt")
CANARY = b"CANARY-7f3c9e: must never leave its folder\n"
SECRET = b"SIBLING-SECRET-41d2: belongs to p/other\n"
DAY_NS = 86400 * 10**9


@dataclass
class Site:
    tmp: Path
    keep: Keep
    server: LiveServer
    reader: str  # token of a user who may read p/d only
    writer: str  # token of a user who may write p/d only
    canaries: list[Path] = field(default_factory=list)
    atime_works: bool = False

    @property
    def raw(self) -> Path:
        return self.keep.tree.dataset_dir("p", "d") / "raw"

    def request(
        self,
        method: str,
        target: str,
        *,
        token: str | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> tuple[int, bytes]:
        """Send *target* byte for byte (no normalisation, no re-encoding)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=60)
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            conn.putheader("Authorization", f"Bearer {token or self.reader}")
            if body is not None:
                conn.putheader("Content-Type", content_type or "application/octet-stream")
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def _make_source(folder: Path) -> None:
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"alpha\n")
    (folder / "sub" / "b.txt").write_bytes(b"beta\n")
    (folder / NFC).write_bytes(b"composed e-acute (NFC)\n")
    (folder / NFD).write_bytes(b"e + combining acute (NFD)\n")
    (folder / ONLY_NFC).write_bytes(b"only the composed form exists\n")


def _age_atime(path: Path) -> None:
    """atime two days before mtime: under relatime the next read moves it."""
    st = path.stat()
    os.utime(path, ns=(st.st_mtime_ns - 2 * DAY_NS, st.st_mtime_ns))


def _atime_detects_reads(tmp: Path) -> bool:
    probe = tmp / "atime-probe"
    probe.write_bytes(b"probe")
    _age_atime(probe)
    before = probe.stat().st_atime_ns
    probe.read_bytes()
    return probe.stat().st_atime_ns != before


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("web-paths")
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("LABKEEP_")]:
            mp.delenv(name)
        keep = Keep.init(tmp / "keep")
    try:
        src = tmp / "src"
        _make_source(src)
        keep.create_project("p")
        keep.ingest(src, "p/d")
        other = tmp / "other-src"
        (other / "raw").mkdir(parents=True)
        (other / "secret.txt").write_bytes(SECRET)
        (other / "raw" / "secret.txt").write_bytes(SECRET)
        keep.ingest(other, "p/other")
        for name in ("reader", "writer"):
            keep.add_user(name)
        keep.grant("reader", "read", "p/d")
        keep.grant("writer", "write", "p/d")
        reader, _ = keep.acting_as(keep.principal_for("reader")).create_token("t")
        writer, _ = keep.acting_as(keep.principal_for("writer")).create_token("t")
        canaries = [
            tmp / "canary.txt",  # next to the keep
            keep.root / "canary.txt",  # in the keep's folder
            keep.tree.base / "canary.txt",  # in the tree, in no project
            keep.tree.base / "p" / "canary.txt",  # in the project, in no dataset
        ]
        for canary in canaries:
            canary.write_bytes(CANARY)
            _age_atime(canary)
        with LiveServer(keep) as server:
            yield Site(tmp, keep, server, reader, writer, canaries, _atime_detects_reads(tmp))
    finally:
        keep.close()
        unseal_tree(tmp)


def _snapshot(site: Site) -> dict[str, tuple[int, str]]:
    """Every file outside p/d's folder (and the catalog and the audit anchor, which
    change with every version): size and digest (size and mtime for the canaries, whose
    reads are watched)."""
    dataset = site.keep.tree.dataset_dir("p", "d")
    found = {}
    for folder, dirs, files in os.walk(site.tmp):
        here = Path(folder)
        if here == dataset:
            dirs[:] = []
            continue
        for name in files:
            path = here / name
            if path.parent == site.keep.root and name.startswith("catalog.db"):
                continue
            if path == site.keep.tree.base / ".labkeep" / "audit-anchor.log":
                continue
            if name == "atime-probe":
                continue
            st = path.stat()
            if path in site.canaries:
                found[str(path.relative_to(site.tmp))] = (st.st_size, str(st.st_mtime_ns))
                continue
            found[str(path.relative_to(site.tmp))] = (
                st.st_size,
                hashlib.sha256(path.read_bytes()).hexdigest(),
            )
    return found


def _assert_canaries_untouched(site: Site) -> None:
    for canary in site.canaries:
        if site.atime_works:  # first: reading it below moves its atime
            st = canary.stat()
            assert st.st_atime_ns < st.st_mtime_ns, f"{canary} was read"
        assert canary.read_bytes() == CANARY
        _age_atime(canary)


def _leaks(body: bytes) -> list[bytes]:
    return [b for b in (CANARY, SECRET, b"SQLite format 3", b"[catalog]") if b in body]


# -- downloads --------------------------------------------------------------------------
HOSTILE_FILE_PATHS = [
    "raw/../../other/raw/secret.txt",
    "raw/%2e%2e/%2e%2e/other/raw/secret.txt",
    "raw%2f..%2f..%2fother%2fraw%2fsecret.txt",
    "%2e%2e%2fother%2fraw%2fsecret.txt",
    "../other/secret.txt",
    "..%2F..%2F..%2Fcanary.txt",
    "..%2F..%2F..%2F..%2Fcanary.txt",
    "..%2F..%2F..%2F..%2F..%2Fcanary.txt",
    "%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/canary.txt",
    "..%5C..%5C..%5Ccanary.txt",
    "raw\\..\\..\\..\\canary.txt".replace("\\", "%5C"),
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "{canary}",  # the canary's absolute path, percent-encoded
    "raw/a.txt%00",
    "raw/a.txt%00.png",
    "raw/%00/../../../canary.txt",
    "raw/" + "x" * 300,
    "raw/" + "a/" * 1100 + "a.txt",
    "raw/%252e%252e/%252e%252e/canary.txt",
    ".labkeep/lock",
    "MANIFEST.sha256",
    "raw/./a.txt",
    "raw//a.txt",
    "raw/sub/..",
    "raw/%ED%A0%80",  # a lone surrogate, UTF-8 encoded (invalid UTF-8)
    "raw/%FF%FE",
]
HOSTILE_PREFIXES = [
    "/api/v1/files/p/../p/d/raw/a.txt",
    "/api/v1/files/p/..%2Fp/other/raw/secret.txt",
    "/api/v1/files/..%2F..%2F..%2F/canary.txt/x",
    "/api/v1/files/p/d%2F..%2Fother/raw/secret.txt",
    "/api/v1/files/p/other%00/raw/secret.txt",
    "/api/v1/files/%2e%2e/%2e%2e/canary.txt",
]


def _file_targets(site: Site) -> list[str]:
    targets = []
    for path in HOSTILE_FILE_PATHS:
        if path == "{canary}":
            path = quote(str(site.canaries[0]), safe="")
        targets.append(f"/api/v1/files/p/d/{path}")
    return targets + HOSTILE_PREFIXES


def test_hostile_download_paths_are_refused(site: Site) -> None:
    before = _snapshot(site)
    problems = []
    for target in _file_targets(site):
        status, body = site.request("GET", target)
        if not 400 <= status < 500 or _leaks(body):
            problems.append(f"{target}: {status} {body[:120]!r}")
    assert not problems, "\n".join(problems)
    assert _snapshot(site) == before
    _assert_canaries_untouched(site)


def test_the_same_paths_as_a_site_admin(site: Site) -> None:
    """Even the caller who may read every dataset gets nothing outside the one named."""
    admin, _ = site.keep.create_token("paths")
    problems = []
    for target in _file_targets(site):
        status, body = site.request("GET", target, token=admin)
        if not 400 <= status < 500 or _leaks(body):
            problems.append(f"{target}: {status} {body[:120]!r}")
    assert not problems, "\n".join(problems)
    _assert_canaries_untouched(site)


def test_unicode_normalisation_twins_are_different_files(site: Site) -> None:
    for name, content in (
        (NFC, b"composed e-acute (NFC)\n"),
        (NFD, b"e + combining acute (NFD)\n"),
    ):
        status, body = site.request("GET", "/api/v1/files/p/d/raw/" + quote(name))
        assert (status, body) == (200, content), name
    # only the NFC form exists: asking for the NFD form finds nothing
    assert site.request("GET", "/api/v1/files/p/d/raw/" + quote(ONLY_NFC))[0] == 200
    nfd = unicodedata.normalize("NFD", ONLY_NFC)
    assert nfd != ONLY_NFC
    assert site.request("GET", "/api/v1/files/p/d/raw/" + quote(nfd))[0] == 404
    # and the listing shows both twins, byte for byte as stored
    status, body = site.request("GET", "/api/v1/datasets/p/d/entries?path=raw")
    import json

    paths = {item["path"] for item in json.loads(body)["items"]}
    assert {f"raw/{NFC}", f"raw/{NFD}", f"raw/{ONLY_NFC}"} <= paths


def test_ordinary_paths_still_work(site: Site) -> None:
    assert site.request("GET", "/api/v1/files/p/d/raw/a.txt") == (200, b"alpha\n")
    assert site.request("GET", "/api/v1/files/p/d/raw%2Fsub%2Fb.txt") == (200, b"beta\n")
    # the reader may not read the sibling dataset at all
    assert site.request("GET", "/api/v1/files/p/other/raw/secret.txt")[0] == 404


# -- listings ---------------------------------------------------------------------------
HOSTILE_LISTING_PATHS = [
    "..",
    "../other",
    "raw/../..",
    "raw/../../other",
    "raw%2F..%2F..%2Fother",
    "%2e%2e%2fother",
    "/etc",
    "%2Fraw",
    "raw/%00",
    "raw%00",
    ".",
    "./raw",
    "raw//sub",
    ".labkeep",
    "x" * 3000,
    "raw/" + "y" * 300,
    "raw/%ED%A0%80",
]


def test_hostile_listing_paths_are_refused(site: Site) -> None:
    before = _snapshot(site)
    problems = []
    for path in HOSTILE_LISTING_PATHS:
        for what in ("entries", "zip"):
            target = f"/api/v1/datasets/p/d/{what}?path={path}"
            status, body = site.request("GET", target)
            if not 400 <= status < 500 or _leaks(body):
                problems.append(f"{target}: {status} {body[:120]!r}")
    # "after" is a position in p/d's listing, never a way out of it (NUL: 400)
    for after in ("../other", "..", "/", "%00", "raw/../../other/raw/secret.txt"):
        status, body = site.request("GET", f"/api/v1/datasets/p/d/entries?after={after}")
        if status not in (200, 400) or _leaks(body) or b"secret" in body:
            problems.append(f"after={after}: {status} {body[:120]!r}")
    assert not problems, "\n".join(problems)
    assert _snapshot(site) == before
    _assert_canaries_untouched(site)


# -- uploads ----------------------------------------------------------------------------
def _multipart(
    files: list[tuple[bytes, bytes]], paths: list[str] | None = None
) -> tuple[str, bytes]:
    """A multipart body written by hand: file names go out byte for byte."""
    boundary = uuid.uuid4().hex
    out = b""
    for filename, content in files:
        out += (
            f"--{boundary}\r\n".encode()
            + b'Content-Disposition: form-data; name="files"; filename="'
            + filename
            + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
            + content
            + b"\r\n"
        )
    for path in paths or []:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="paths"\r\n\r\n'.encode()
            + path.encode("utf-8")
            + b"\r\n"
        )
    out += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", out


def _upload(site: Site, files: list[tuple[bytes, bytes]], paths: list[str] | None = None) -> int:
    content_type, body = _multipart(files, paths)
    status, answer = site.request(
        "POST",
        "/api/v1/datasets/p/d/files",
        token=site.writer,
        body=body,
        content_type=content_type,
    )
    # the answer does not tell the caller where the server keeps things
    assert str(site.tmp).encode() not in answer, answer
    return status


REFUSED_UPLOAD_NAMES = [
    b"../../etc/passwd",  # would land at KEEP/etc/passwd
    b"../../../canary.txt",  # would overwrite the canary next to the keep
    b"../../canary.txt",
    b"../../data/p/canary.txt",
    b"a/../../b",
    b"a/../../../../canary.txt",
    b"..",
    b".",
    b"a/./b",
    b"a//b",
    b"a\x00b",
    b"x" * 300,
    b"a/" * 1100 + b"a",
]


@pytest.mark.parametrize("name", REFUSED_UPLOAD_NAMES, ids=lambda n: repr(n[:40]))
def test_hostile_upload_names_are_refused(site: Site, name: bytes) -> None:
    before = _snapshot(site)
    raw_before = sorted(p.relative_to(site.raw) for p in site.raw.rglob("*"))
    status = _upload(site, [(name, CANARY + b"overwritten?")])
    assert 400 <= status < 500, status
    assert _snapshot(site) == before
    assert sorted(p.relative_to(site.raw) for p in site.raw.rglob("*")) == raw_before
    _assert_canaries_untouched(site)
    assert not (site.keep.root / "uploads").exists() or not any(
        (site.keep.root / "uploads").iterdir()
    ), "a staging folder was left behind"


@pytest.mark.parametrize("path", ["../../../canary.txt", "a/../../b", "/../x", "a/./b", ""])
def test_hostile_paths_field_is_refused(site: Site, path: str) -> None:
    before = _snapshot(site)
    assert 400 <= _upload(site, [(b"innocent.txt", b"x")], [path]) < 500
    assert _snapshot(site) == before
    _assert_canaries_untouched(site)


def test_absolute_and_odd_names_land_inside_raw(site: Site) -> None:
    """A leading '/' is dropped; a backslash is part of the name, as ingest keeps it from
    an instrument's disk: the file lands in raw/ under the validated name, nowhere else."""
    probe = f"labkeep-probe-{uuid.uuid4().hex}"
    assert not Path("/" + probe).exists()
    before = _snapshot(site)
    assert _upload(site, [(f"/{probe}".encode(), b"abs")]) == 201
    assert _upload(site, [(f"dir\\{probe}".encode(), b"bs")]) == 201
    assert _upload(site, [(b"..\\..\\..\\canary.txt", b"dots")]) == 201
    assert _upload(site, [(b".labkeep/lock", b"not the lock")]) == 201
    assert not Path("/" + probe).exists()
    assert (site.raw / probe).read_bytes() == b"abs"
    assert (site.raw / f"dir\\{probe}").read_bytes() == b"bs"
    assert (site.raw / "..\\..\\..\\canary.txt").read_bytes() == b"dots"
    # raw/.labkeep is a plain folder in raw/, not the dataset's private .labkeep/
    assert (site.raw / ".labkeep" / "lock").read_bytes() == b"not the lock"
    assert site.request("GET", f"/api/v1/files/p/d/raw/{probe}") == (200, b"abs")
    assert _snapshot(site) == before
    _assert_canaries_untouched(site)


def test_uploaded_normalisation_twins_stay_apart(site: Site) -> None:
    name = "résumé.txt"
    nfc, nfd = unicodedata.normalize("NFC", name), unicodedata.normalize("NFD", name)
    assert _upload(site, [(nfc.encode(), b"nfc bytes")]) == 201
    assert _upload(site, [(nfd.encode(), b"nfd bytes")]) == 201
    assert (site.raw / nfc).read_bytes() == b"nfc bytes"
    assert (site.raw / nfd).read_bytes() == b"nfd bytes"
    assert site.request("GET", "/api/v1/files/p/d/raw/" + quote(nfc)) == (200, b"nfc bytes")
    assert site.request("GET", "/api/v1/files/p/d/raw/" + quote(nfd)) == (200, b"nfd bytes")


def test_reads_of_the_canaries_would_be_noticed(site: Site) -> None:
    """The atime checks above mean something: reading a file moves its atime here."""
    if not site.atime_works:
        pytest.skip("this filesystem does not record reads (noatime)")
    canary = site.canaries[0]
    canary.read_bytes()
    st = canary.stat()
    assert st.st_atime_ns >= st.st_mtime_ns
    _age_atime(canary)


# -- NUL on PostgreSQL ------------------------------------------------------------------
@pytest.mark.postgresql
def test_nul_anywhere_in_a_url_is_a_400_on_postgresql(
    tmp_path: Path, pg_server: PostgresServer
) -> None:
    """PostgreSQL refuses text holding NUL even in a comparison: every route, API and
    pages, answers 4xx (not 500) when a path parameter or a query value holds one."""
    from tests.test_api_matrix import _walk_routes

    with Keep.init(tmp_path / "keep", catalog_url=pg_server.create_database()) as keep:
        keep.create_project("p")
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "a.txt").write_bytes(b"a")
        keep.ingest(tmp_path / "src", "p/d")
        token, _ = keep.create_token("nul")
        with LiveServer(keep) as server, server.client() as client:
            assert server.app is not None
            headers = {"Authorization": f"Bearer {token}"}
            problems = []
            for template, route in _walk_routes(server.app.routes):
                methods = getattr(route, "methods", None)
                if not methods or template == server.app.openapi_url:
                    continue  # (the schema takes no input)
                path = re.sub(r"\{[^}]+\}", "x%00", template)
                query = "after=%00&action=%00&reason=%00&principal=%00&target=p"
                for method in sorted(methods - {"HEAD"}):
                    body = {} if method in ("POST", "PUT", "PATCH") else None
                    response = client.request(method, f"{path}?{query}", json=body, headers=headers)
                    if not 400 <= response.status_code < 500:
                        problems.append(f"{method} {path}: {response.status_code}")
                # NUL only in the query, the path itself valid
                path = re.sub(r"\{[^}]+\}", "p", template).replace("/p/p/p", "/p/d/raw/a.txt")
                for name in ("after", "action", "reason", "principal", "target", "path"):
                    response = client.get(f"{path}?{name}=%00", headers=headers)
                    if response.status_code >= 500:
                        problems.append(f"GET {path}?{name}=%00: {response.status_code}")
            assert not problems, "\n".join(problems)
    unseal_tree(tmp_path)


# -- paths in routes are paths --------------------------------------------------------
ODD_NAMES = ["scan@2", "a@b", "x@", "cell@01", "new\nline.tif", "tab\there.tif",
             "100%.tif", "#1.tif", "why?.tif", "semi;colon", "with space.tif", "a+b.tif",
             "日本語.tif", "back\\slash.tif"]  # fmt: skip


@pytest.fixture(scope="module")
def odd_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Keep, LiveServer, str]]:
    """A dataset whose files have names a browser and a route parser must not misread."""
    tmp = tmp_path_factory.mktemp("odd-names")
    src = tmp / "buffer"
    (src / "sub@3").mkdir(parents=True)
    for i, name in enumerate(ODD_NAMES):
        (src / name).write_bytes(b"content of %d" % i)
        (src / "sub@3" / name).write_bytes(b"nested %d" % i)
    keep = Keep.init(tmp / "keep")
    keep.create_project("p")
    keep.ingest(src, "p/d")
    token, _ = keep.create_token("reader", read_only=True)
    with LiveServer(keep) as server:
        yield keep, server, token
    keep.close()


def test_every_file_opens_from_the_links_the_pages_render(
    odd_site: tuple[Keep, LiveServer, str],
) -> None:
    import html

    _keep, server, token = odd_site
    expected = {f"raw/{n}": b"content of %d" % i for i, n in enumerate(ODD_NAMES)}
    expected |= {f"raw/sub@3/{n}": b"nested %d" % i for i, n in enumerate(ODD_NAMES)}
    auth = {"Authorization": f"Bearer {token}"}
    with server.client(headers=auth) as client:
        for base in ("/p/p/d", "/p/p/d/@1"):
            page = client.get(base)
            assert page.status_code == 200
            rows = re.findall(
                r'<td class="path"><a href="([^"]+)">.*?class="download-link" href="([^"]+)"',
                page.text,
                re.S,
            )
            assert len(rows) == len(expected)
            for file_href, download_href in rows:
                file_page = client.get(html.unescape(file_href))
                assert file_page.status_code == 200, file_href
                body = client.get(html.unescape(download_href))
                assert body.status_code == 200, download_href
                assert body.content in expected.values()
        for path, data in expected.items():
            quoted = quote(path, safe="/")
            assert client.get(f"/api/v1/files/p/d/{quoted}").content == data, path
            assert client.get(f"/api/v1/files/p/d/{quoted}?version=1").content == data, path
            entries = client.get("/api/v1/datasets/p/d/entries", params={"path": path}).json()
            assert [e["path"] for e in entries["items"]] == [path]
        folder = client.get("/api/v1/datasets/p/d/entries", params={"path": "raw/sub@3"}).json()
        assert len(folder["items"]) == len(ODD_NAMES)
        zipped = client.get("/api/v1/datasets/p/d/zip", params={"path": "raw/sub@3"})
        assert zipped.status_code == 200


def test_odd_names_through_a_share_link(odd_site: tuple[Keep, LiveServer, str]) -> None:
    keep, server, _ = odd_site
    token, _ = keep.create_share("p/d/raw/sub@3@", expires="1h")
    with server.client() as client:
        for i, name in enumerate(ODD_NAMES):
            url = f"/s/{token}/file/p/d/" + quote(f"raw/sub@3/{name}", safe="/")
            assert client.get(url).content == b"nested %d" % i, name


def test_zip_names_are_safe_for_windows_and_unique() -> None:
    from labkeep.web.zipstream import ZipNames

    existing = {"raw/a_b", "raw/x/y"}
    names = ZipNames(lambda path: path in existing)
    given = [names(p) for p in ("raw/a:b", "raw/a?b", "raw/CON", "raw/com1.txt", "raw/x/y",
                                "raw/..\\..\\evil.bat", "raw/C:\\x", "raw/end. ")]  # fmt: skip
    assert given == ["raw/a_b~2", "raw/a_b~3", "raw/_CON", "raw/_com1.txt", "raw/x/y",
                     "raw/.._.._evil.bat", "raw/C__x", "raw/end"]  # fmt: skip


def test_a_crashed_uploads_staging_is_removed_by_the_next_upload(
    odd_site: tuple[Keep, LiveServer, str],
) -> None:
    import time as clock

    keep, _server, _token = odd_site
    stale = keep.root / "uploads" / ("0" * 32)
    (stale / "parts").mkdir(parents=True)
    (stale / "parts" / "1").write_bytes(b"half an upload")
    old = clock.time() - 2 * 86400
    for path in (stale / "parts" / "1", stale / "parts", stale):
        os.utime(path, (old, old))
    fresh = keep.root / "uploads" / ("1" * 32)
    fresh.mkdir()
    keep.create_dataset("p/up")
    keep.upload("p/up", [("new.txt", io.BytesIO(b"new"))])
    assert not stale.exists() and fresh.exists()
