"""Shared fixtures: a scrubbed environment, a throwaway PostgreSQL, keeps on both catalogs,
a real S3 server and a real single-node SLURM cluster."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from labkeep import Keep
from labkeep.ops.slurm import Slurm
from tests.pgserver import PostgresServer
from tests.s3server import S3Server, S3ServerUnavailable
from tests.slurmcluster import SlurmCluster, SlurmClusterUnavailable, clean_environ

CATALOGS = ["sqlite", "postgresql"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test starts with no LABKEEP_* variables and a private working folder."""
    for name in list(os.environ):
        if name.startswith("LABKEEP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session", autouse=True)
def unsealed_at_the_end(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests seal data in their temp folders (immutable flags, read-only modes); at the
    end of the session those are cleared, so that pytest can delete old temp folders
    instead of leaving them behind as garbage-* (35 GB of them filled a disk here)."""
    yield
    unseal_tree(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=CATALOGS)
def catalog_url(request: pytest.FixtureRequest) -> str | None:
    """None for the default SQLite catalog, else a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create_database()


@pytest.fixture
def keep_root(tmp_path: Path) -> Path:
    return tmp_path / "keep"


@pytest.fixture
def keep(keep_root: Path, catalog_url: str | None) -> Iterator[Keep]:
    """A new keep with small settings, so small data exercises the multi-batch paths."""
    k = Keep.init(keep_root, catalog_url=catalog_url)
    k.config.batch_files = 7
    k.create_project("proj")
    yield k
    k.close()
    unseal_tree(keep_root)


def unseal_tree(root: Path) -> None:
    """Clear immutable flags and read-only bits so pytest can delete its temp folders."""
    from labkeep.integrity.immutable import set_immutable

    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            with contextlib.suppress(OSError):
                set_immutable(path, False)
            with contextlib.suppress(OSError):
                os.chmod(path, 0o755 if name in dirs else 0o644)


def make_files(folder: Path, count: int, *, seed: int = 1, min_size: int = 0,
               max_size: int = 5000) -> dict[str, bytes]:  # fmt: skip
    """Random files in nested folders; returns {relpath: content}."""
    rng = random.Random(seed)
    made: dict[str, bytes] = {}
    for i in range(count):
        rel = f"d{i % 3}/sub{i % 2}/f{i:04d}.bin" if i % 4 else f"top{i:04d}.dat"
        data = rng.randbytes(rng.randint(min_size, max_size))
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        made[rel] = data
    return made


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Mount small tmpfs file systems (unmounted at the end): ``small_disk(size_kib)``."""
    mounted: list[Path] = []

    def mount(size_kib: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0755", "tmpfs", str(point)],
            capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            pytest.skip(
                "cannot fill a disk here: mounting a small tmpfs is not permitted "
                f"(needs root or CAP_SYS_ADMIN): {result.stderr.strip()}"
            )
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        unseal_tree(point)
        if subprocess.run(["umount", str(point)]).returncode != 0:
            subprocess.run(["umount", "--lazy", str(point)], check=True)


def fill_disk(folder: Path, leave: int = 0) -> Path:
    """Fill the file system holding *folder* up to *leave* free bytes; returns the filler."""
    filler = folder / "filler"
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    with open(filler, "wb", buffering=0) as handle:
        remaining = max(0, free - leave)
        block = b"\0" * (1 << 20)
        while remaining > 0:
            try:
                remaining -= handle.write(block[: min(remaining, len(block))])
            except OSError:
                break
    return filler


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3 server (SeaweedFS ``weed mini``) on loopback, one per test process (so one
    per xdist worker): ``endpoint``, ``access_key``, ``secret_key``, ``profile`` and
    ``credentials_file`` (an AWS credentials file holding that profile); ``client()`` is a
    plain boto3 client on it. Skips when SeaweedFS is not installed."""
    server = S3Server()
    try:
        server.start()
    except S3ServerUnavailable as exc:
        server.stop()
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A real single-node SLURM cluster (munged, slurmctld, slurmd on free ports, state in
    a temp folder), one per test process (so one per xdist worker; it starts in ~1 s):
    ``env`` (SLURM_CONF) for subprocesses, ``conf``, ``bin_dir``. Finished jobs stay in
    ``scontrol show job`` for the whole session. Skips when SLURM is not installed."""
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmClusterUnavailable as exc:
        pytest.skip(str(exc))
    yield cluster
    cluster.stop()


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> Slurm:
    """labkeep's SLURM client on the test cluster, in an environment without SLURM's own
    variables (SBATCH_*, SLURM_*: set when the tests run inside a SLURM job)."""
    for name in set(os.environ) - set(clean_environ()):
        monkeypatch.delenv(name)
    return Slurm(env=slurm_cluster.env)


@pytest.fixture(scope="session")
def validator_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private HTTP cache of rocrate-validator holding the RO-Crate 1.1 context, so the
    validator runs offline (see tests/test_provenance_export.py)."""
    import io

    import requests
    import urllib3
    from rocrate_validator.utils.http import HttpRequester

    context_url = "https://w3id.org/ro/crate/1.1/context"
    context_file = Path(__file__).parent / "data" / "ro-crate-1.1-context.jsonld"
    cache = tmp_path_factory.mktemp("roc-validator") / "http-cache"
    HttpRequester.initialize_cache(cache_path=str(cache), offline=True)
    body = context_file.read_bytes()
    response = requests.Response()
    response.status_code, response.reason, response.url = 200, "OK", context_url
    response._content = body
    response.encoding = "utf-8"
    response.headers["Content-Type"] = "application/ld+json"
    response.request = requests.Request("GET", context_url).prepare()
    response.raw = urllib3.HTTPResponse(
        body=io.BytesIO(body), headers=dict(response.headers), status=200,
        preload_content=False, request_url=context_url,
    )  # fmt: skip
    HttpRequester().session.cache.save_response(response)
    return cache
