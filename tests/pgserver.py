"""A throwaway PostgreSQL server for the tests: initdb + pg_ctl in a temp folder.

The machine runs tests as root, and PostgreSQL refuses to run as root, so the server
runs as the unprivileged ``nobody`` account when we are root.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if candidates:
        return candidates[-1]
    raise RuntimeError(
        f"PostgreSQL's {name} was not found: install PostgreSQL 15 (apt-get install postgresql); "
        ".ci/run and ./dev test do this on a fresh machine"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """*durable*: fsync and synchronous commit on, as deployed (benchmarks); the tests run
    without them."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.dir = Path(tempfile.mkdtemp(prefix="labkeep-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.user = "labkeep"
        self._as_root = os.geteuid() == 0

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._exec(self._as_nobody(*args))

    def _exec(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=self.dir)

    def start(self) -> None:
        if self._as_root:
            shutil.chown(self.dir, "nobody", "nogroup")
        self._run(
            _pg_bin("initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust",
            "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
        )  # fmt: skip
        self._exec(self.start_command())

    def start_command(self) -> list[str]:
        """Start the (initialised) server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
        if not self.durable:
            options += "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        options += "-c max_connections=200"
        return self._as_nobody(
            _pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"),
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop_command(self) -> list[str]:
        """Stop the server (fast: sessions are disconnected), keeping its data."""
        return self._as_nobody(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def _as_nobody(self, *args: str) -> list[str]:
        return ["runuser", "-u", "nobody", "--", *args] if self._as_root else list(args)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        for attempt in range(50):
            try:
                with psycopg.connect(
                    f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres",
                    autocommit=True,
                ) as conn:
                    conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
                break
            except psycopg.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.1)
        return self.url(name)
