"""A flaky network for the tests: a threaded TCP proxy on loopback in front of a server.

Each accepted connection is forwarded to the upstream address; some are reset (TCP RST,
as a dropped link or a crashing middlebox does) once they have carried a number of bytes
from the client, in the middle of a request body, and every forwarded block waits a
little (latency). Decisions come from a seeded RNG, so a run is repeatable up to thread
timing.

    with FlakyProxy(("127.0.0.1", port), reset_rate=0.3) as proxy:
        ... talk to proxy.address ...
    proxy.resets  # how many connections it cut
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import struct
import threading
import time
from types import TracebackType


class FlakyProxy:
    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        reset_rate: float = 0.0,
        reset_after: tuple[int, int] = (64 << 10, 4 << 20),
        latency: float = 0.0,
        seed: int = 1,
    ) -> None:
        """*reset_rate*: the share of connections that are reset once the client sent a
        random number of bytes in *reset_after* (1.0: every connection that carries
        that much); *latency*: seconds added to each forwarded block."""
        self.upstream = upstream
        self.reset_rate = reset_rate
        self.reset_after = reset_after
        self.latency = latency
        self.connections = 0
        self.resets = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        return "http://{}:{}".format(*self.address)

    def start(self) -> FlakyProxy:
        thread = threading.Thread(target=self._accept, name="flaky-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __enter__(self) -> FlakyProxy:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=10)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                cut = self._rng.random() < self.reset_rate
                budget = self._rng.randint(*self.reset_after) if cut else None
                self._sockets.add(client)
            thread = threading.Thread(
                target=self._serve, args=(client, budget), name="flaky-conn", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _serve(self, client: socket.socket, budget: int | None) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            self._reset(client)
            return
        with self._lock:
            self._sockets.add(upstream)
        sent = 0
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        try:
            while not self._closing.is_set():
                for event, _ in selector.select(timeout=0.5):
                    source = event.fileobj
                    assert isinstance(source, socket.socket)
                    target: socket.socket = event.data
                    block = source.recv(64 << 10)
                    if not block:
                        return
                    if source is client and budget is not None:
                        if sent + len(block) >= budget:
                            # pass on part of it, then drop the link mid-request
                            target.sendall(block[: max(0, budget - sent)])
                            self._reset(client)
                            self._reset(upstream)
                            with self._lock:
                                self.resets += 1
                            return
                        sent += len(block)
                    if self.latency:
                        time.sleep(self.latency)
                    target.sendall(block)
        except OSError:
            return
        finally:
            selector.close()
            for sock in (client, upstream):
                with self._lock:
                    self._sockets.discard(sock)
                sock.close()

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        """Close with SO_LINGER 0: the peer gets a RST, not an orderly end."""
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
