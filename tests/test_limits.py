"""A server anyone can reach must bound what each request costs: bodies, memory, threads
and open files, measured on a real ``labkeep serve`` process through /proc."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from labkeep import Keep

PASSWORD = "a long enough password"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    url: str
    root: Path
    pid: int
    token: str
    log: Path

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def fd_targets(self) -> list[str]:
        folder = f"/proc/{self.pid}/fd"
        return sorted(os.readlink(f"{folder}/{fd}") for fd in os.listdir(folder))

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")


def set_web(root: Path, **values: str) -> None:
    """Change ``key = value`` lines of the keep's labkeep.toml."""
    config = root / "labkeep.toml"
    lines = config.read_text().splitlines()
    for key, value in values.items():
        lines = [f"{key} = {value}" if line.split(" = ")[0] == key else line for line in lines]
    config.write_text("\n".join(lines) + "\n")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """``labkeep serve`` in its own process on a keep with a 40 MB dataset."""
    root = tmp_path / "keep"
    src = tmp_path / "buffer"
    src.mkdir()
    for i in range(20):
        (src / f"stack{i:02d}.tif").write_bytes(os.urandom(2 << 20))
    with Keep.init(root) as keep:
        keep.add_user("alice", password=PASSWORD)
        keep.create_project("proj")
        keep.ingest(src, "proj/s001")
        keep.grant("alice", "write", "proj")
        token, _ = keep.create_token("bench", read_only=True)
    log = tmp_path / "serve.log"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABKEEP_")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "labkeep", "serve", "--root", str(root), "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        yield Served(url, root, proc.pid, token, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def abort_download(url: str, path: str, headers: dict[str, str], read: int = 256 << 10) -> None:
    """Start a download, read a little of it, and hang up."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        got = 0
        while got < read:
            data = sock.recv(65536)
            assert data, "the server closed the download first"
            got += len(data)


def settles(measure: object, limit: float, seconds: float = 30) -> float:
    """Poll *measure* until it is at most *limit* (the server cleans up asynchronously)."""
    assert callable(measure)
    deadline = time.monotonic() + seconds
    while True:
        value = float(measure())
        if value <= limit or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_aborted_zip_downloads_release_threads_files_and_memory(served: Served) -> None:
    auth = {"Authorization": f"Bearer {served.token}"}
    with Keep.open(served.root) as keep:
        alice = keep.acting_as(keep.principal_for("alice"))
        link, _ = alice.create_share("proj/s001", expires="1d")
    zips = [
        ("/api/v1/datasets/proj/s001/zip", auth),
        (f"/s/{link}/zip/proj/s001", {}),
    ]
    # warm up: one whole zip each way, then some aborted ones (the thread pool and the
    # catalog's connection pool grow to their working size)
    for path, headers in zips:
        whole = httpx.get(served.url + path, headers=headers, timeout=60)
        assert whole.status_code == 200 and len(whole.content) > 40 << 20
    for i in range(20):
        abort_download(served.url, *zips[i % 2])
    settles(served.threads, 0, seconds=12)  # idle pool threads end after 10 s
    threads, fds, rss = served.threads(), served.fds(), served.rss_mib()
    before = served.fd_targets()
    for i in range(100):
        abort_download(served.url, *zips[i % 2])
    # everything the aborted downloads held is given back (a leak would keep a thread,
    # a file and its buffers per download: +100 here; a loaded machine may leave an idle
    # worker thread or a pooled catalog connection, 3 files, of its own)
    assert settles(served.threads, threads, seconds=40) <= threads + 2
    assert settles(served.fds, fds, seconds=40) <= fds + 3, (before, served.fd_targets())
    assert not any(t.endswith(".tif") for t in served.fd_targets())  # no data file open
    assert served.rss_mib() < rss + 64, (rss, served.rss_mib())
    # and the server still answers
    assert httpx.get(served.url + "/healthz", timeout=10).status_code == 200


# -- request bodies -------------------------------------------------------------------------
def raw_request(url: str, head: list[str], body: bytes = b"", *, wait: float = 10) -> bytes:
    """Send a request head (and the start of a body), then read what comes back without
    sending anything more: a server that decides from the head answers at once."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(("\r\n".join([*head, f"Host: {host}"]) + "\r\n\r\n").encode() + body)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or len(answer) < 200:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except TimeoutError:
            pass
        return answer


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


GIB3 = 3 << 30


@pytest.mark.parametrize("path", ["/api/v1/datasets/proj/s001/files", "/p/proj/s001/upload"])
def test_anonymous_upload_is_refused_before_its_body_is_read(served: Served, path: str) -> None:
    rss = served.rss_mib()
    head = [
        f"POST {path} HTTP/1.1",
        "Content-Type: multipart/form-data; boundary=b0undary",
        f"Content-Length: {GIB3}",
    ]
    start = b'--b0undary\r\nContent-Disposition: form-data; name="files"; filename="x"\r\n\r\n'
    answer = raw_request(served.url, head, start + b"\0" * (64 << 10))
    assert status_of(answer) == 404  # private things and missing ones answer the same
    assert b"connection: close" in answer.lower()
    assert not any((served.root / "uploads").glob("*/parts/*"))
    assert served.rss_mib() < rss + 16


def test_foreign_callers_are_refused_before_the_body(served: Served) -> None:
    """A signed-in user without write access: 404 at once too (no read: not even the
    dataset's existence), and a writer's upload with a wrong session token: 403."""
    with Keep.open(served.root) as keep:
        keep.add_user("mallory", password=PASSWORD)
        mallory, _ = keep.acting_as(keep.principal_for("mallory")).create_token("m")
    head = [
        "POST /api/v1/datasets/proj/s001/files HTTP/1.1",
        f"Authorization: Bearer {mallory}",
        "Content-Type: multipart/form-data; boundary=b0undary",
        f"Content-Length: {GIB3}",
    ]
    assert status_of(raw_request(served.url, head, b"--b0undary\r\n")) == 404


def test_oversized_json_is_refused_at_once_and_never_echoed(served: Served) -> None:
    huge = b'{"name": "alice", "password": "' + b"A" * (400 << 20)
    head = [
        "POST /api/v1/auth/token HTTP/1.1",
        "Content-Type: application/json",
        f"Content-Length: {len(huge) + 2}",
    ]
    rss = served.rss_mib()
    answer = raw_request(served.url, head, huge[: 1 << 20])
    assert status_of(answer) == 413
    assert b'"error":"too-large"' in answer.replace(b" ", b"")
    assert b"AAAA" not in answer
    assert served.rss_mib() < rss + 16
    # the same without a Content-Length (chunked): counted as it comes, stopped at the limit
    with httpx.Client(base_url=served.url, timeout=30) as client:

        def chunks() -> Iterator[bytes]:
            yield b'{"name": "alice", "password": "'
            for _ in range(100):
                yield b"B" * (1 << 20)

        chunked = client.post(
            "/api/v1/auth/token", content=chunks(), headers={"content-type": "application/json"}
        )
    assert chunked.status_code == 413 and b"BBBB" not in chunked.content
    assert served.rss_mib() < rss + 16


def test_validation_errors_name_fields_but_never_echo_values(served: Served) -> None:
    secret = "S3cr3t-" * 2000
    answer = httpx.post(
        served.url + "/api/v1/auth/token",
        json={"name": secret, "password": secret},
        timeout=10,
    )
    assert answer.status_code == 422
    record = answer.json()
    assert record["status"] == "error" and record["error"] == "usage"
    assert "detail" not in record
    assert {f["field"] for f in record["fields"]} >= {"body.name"}
    assert "S3cr3t" not in answer.text and len(answer.content) < 4096


def test_an_upload_over_the_limit_is_refused_and_leaves_nothing(
    served: Served, tmp_path: Path
) -> None:
    """The keep allows uploads of at most 1 MiB here: a bigger declared body is refused
    before it is read, a bigger chunked one as soon as it passes the limit; nothing is
    staged, nothing ingested, and a small upload still works."""
    # a second server on the same keep, with a small upload limit
    with Keep.open(served.root) as keep:
        writer, _ = keep.acting_as(keep.principal_for("alice")).create_token("w")
        keep.create_dataset("proj/up")
    set_web(served.root, max_upload_bytes="1048576")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABKEEP_")}
    with open(tmp_path / "small.log", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "labkeep", "serve", "--root", str(served.root),
             "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            with_retry = None
            try:
                with_retry = httpx.get(url + "/healthz", timeout=1)
            except httpx.TransportError:
                time.sleep(0.2)
            if with_retry is not None and with_retry.status_code == 200:
                break
        auth = {"Authorization": f"Bearer {writer}"}
        declared = httpx.post(url + "/api/v1/datasets/proj/up/files", headers=auth,
                              files=[("files", ("big.bin", os.urandom(2 << 20)))],
                              timeout=30)  # fmt: skip
        assert declared.status_code == 413, declared.text
        assert declared.json()["error"] == "too-large"

        def body() -> Iterator[bytes]:
            yield b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="c.bin"\r\n\r\n'
            for _ in range(4):
                yield os.urandom(1 << 20)
            yield b"\r\n--xyz--\r\n"

        chunked = httpx.post(url + "/api/v1/datasets/proj/up/files", content=body(),
                             headers={**auth, "content-type": "multipart/form-data; boundary=xyz"},
                             timeout=30)  # fmt: skip
        assert chunked.status_code == 413, chunked.text
        small = httpx.post(url + "/api/v1/datasets/proj/up/files", headers=auth,
                           files=[("files", ("ok.bin", b"fits"))], timeout=30)  # fmt: skip
        assert small.status_code == 201, small.text
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    with Keep.open(served.root) as keep:
        assert [e["path"] for e in keep.ls("proj/up").items] == ["raw/ok.bin"]
    assert not any((served.root / "uploads").iterdir())


def test_range_requests_of_one_download_count_once(served: Served) -> None:
    with Keep.open(served.root) as keep:
        alice = keep.acting_as(keep.principal_for("alice"))
        link, _ = alice.create_share("proj/s001/raw/stack00.tif", expires="1d", max_downloads=1)
    url = f"{served.url}/s/{link}/file/proj/s001/raw/stack00.tif"
    parts = [
        httpx.get(url, headers={"Range": f"bytes={start}-{start + (1 << 20) - 1}"}, timeout=30)
        for start in (0, 1 << 20)
    ]
    assert [p.status_code for p in parts] == [206, 206]
    assert len(parts[0].content + parts[1].content) == 2 << 20
    # that was one download: the link's single download is used up now
    assert httpx.get(url, timeout=30).status_code in (401, 404, 410)


def test_share_tokens_never_reach_the_access_log(served: Served) -> None:
    with Keep.open(served.root) as keep:
        alice = keep.acting_as(keep.principal_for("alice"))
        link, _ = alice.create_share("proj/s001", expires="1d")
    for path in (f"/s/{link}", f"/s/{link}/browse/proj/s001/raw", f"/s/{link}/zip/proj/s001",
                 f"/s/{link}/file/proj/s001/raw/stack01.tif?token={link}"):  # fmt: skip
        assert httpx.get(served.url + path, timeout=30).status_code == 200
    time.sleep(0.5)
    log = served.log.read_text()
    assert link not in log and link[4:] not in log
    assert "/s/lks_…/browse/proj/s001/raw" in log  # the rest of the line is kept
