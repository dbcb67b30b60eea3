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
    config = root / "labkeep.toml"
    text = config.read_text()
    extra = "".join(f"{key} = {value}\n" for key, value in values.items())
    config.write_text(text.replace("[web]\n", "[web]\n" + extra, 1))


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
    # everything the aborted downloads held is given back
    assert settles(served.threads, threads) <= threads
    assert settles(served.fds, fds) <= fds, (before, served.fd_targets())
    assert served.rss_mib() < rss + 64, (rss, served.rss_mib())
    # and the server still answers
    assert httpx.get(served.url + "/healthz", timeout=10).status_code == 200
