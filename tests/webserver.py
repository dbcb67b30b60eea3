"""A real uvicorn server for a keep, on a free loopback port, in a background thread.

    with LiveServer(keep) as server:
        httpx.get(server.url + "/api/v1/whoami")

The listening socket is bound here (port 0: the kernel picks a free port, no race with
other tests) and handed to uvicorn, which closes it at shutdown. ``stop`` asks the server
to exit, waits for its thread and fails loudly if it does not end, so that no thread,
socket or connection outlives a test (pytest runs with ResourceWarning as an error).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import httpx
import uvicorn

from labkeep.keep import Keep

if TYPE_CHECKING:
    from fastapi import FastAPI

START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0


class LiveServer:
    """``create_app(keep)`` served by uvicorn on 127.0.0.1 until :meth:`stop`."""

    def __init__(self, keep: Keep, *, host: str = "127.0.0.1") -> None:
        self.keep = keep
        self.host = host
        self.port = 0
        self.app: FastAPI | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """The server's base URL, e.g. ``http://127.0.0.1:40123`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    def client(self, **kwargs: object) -> httpx.Client:
        """An httpx client for this server (the caller closes it, e.g. with ``with``)."""
        return httpx.Client(base_url=self.url, **kwargs)  # type: ignore[arg-type]

    def start(self) -> LiveServer:
        from labkeep.web import create_app

        if self._thread is not None:
            raise RuntimeError("the server is already running")
        # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only
        # when the listening socket says TCP; without it Nagle + delayed ACKs add 40 ms
        # to every response
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, 0))
            self.port = sock.getsockname()[1]
            self.app = create_app(self.keep)
            config = uvicorn.Config(
                app=self.app,
                host=self.host,
                port=self.port,
                log_level="warning",
                lifespan="off",
                timeout_graceful_shutdown=5,
            )
            self._server = uvicorn.Server(config)
        except BaseException:
            sock.close()
            raise
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name=f"uvicorn-{self.port}", daemon=True
        )
        self._thread.start()
        try:
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _run(self, sock: socket.socket) -> None:
        assert self._server is not None
        try:
            self._server.run(sockets=[sock])
        except BaseException as exc:  # reported by start() or stop()
            self._error = exc
        finally:
            sock.close()  # uvicorn closes it at shutdown; this covers a failed startup

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(base_url=self.url, timeout=2.0) as probe:
            while True:
                assert self._thread is not None
                if not self._thread.is_alive():
                    raise RuntimeError(f"the server stopped while starting: {self._error!r}")
                try:
                    if probe.get("/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.url}/healthz did not answer in {START_TIMEOUT} s")
                time.sleep(0.02)

    def stop(self) -> None:
        """Stop serving, close the socket and wait for the server's thread to end."""
        if self._thread is None or self._server is None:
            return
        self._server.should_exit = True
        self._thread.join(STOP_TIMEOUT)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(STOP_TIMEOUT)
        alive = self._thread.is_alive()
        self._thread = None
        self._server = None
        if alive:
            raise RuntimeError(f"the server on port {self.port} did not stop")
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError("the server failed") from error

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ServeProcess:
    """``labkeep serve`` in its own process (what an admin runs), on a free port, its
    output in *log*; ``with ServeProcess(root, log) as server: server.url``."""

    def __init__(self, root: Path, log: Path) -> None:
        self.root, self.log = root, log
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> ServeProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABKEEP_")}
        command = [sys.executable, "-m", "labkeep", "serve", "--root", str(self.root)]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [*command, "--port", str(self.port)], env=env, stdout=out, stderr=out
            )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                assert self.proc.poll() is None, self.log.read_text()
                assert time.monotonic() < deadline, "server did not start: " + self.log.read_text()
                time.sleep(0.1)
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
