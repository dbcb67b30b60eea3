"""The environment record of a run (captured for real) and the container command lines
(only the engine lookup is faked: no engine runs here)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from importlib import metadata
from pathlib import Path

import pytest

import labkeep
from labkeep.errors import ContainerEngineUnavailable, ContainerImageNotFound, UsageError
from labkeep.ops import environment
from labkeep.ops.environment import capture, container_argv, container_info


def test_capture_describes_this_machine() -> None:
    env = capture()
    assert json.loads(json.dumps(env)) == env
    assert env["python"]["version"] and env["python"]["executable"]
    assert env["packages"]["pytest"] == metadata.version("pytest")
    names = list(env["packages"])
    assert names == sorted(names, key=str.lower)
    assert env["os"]["kernel"] == os.uname().release
    assert env["host"]["hostname"]
    assert env["cpu"]["count"] == os.cpu_count()
    assert env["memory"]["total_bytes"] > 0
    assert env["labkeep"]["version"] == labkeep.__version__
    assert env["container"] is None
    if shutil.which("nvidia-smi") is None:
        assert env["gpu"] == []


def fake_binary(folder: Path, name: str, script: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_gpus_come_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_binary(tmp_path, "nvidia-smi", 'echo "NVIDIA A100-SXM4-40GB, 550.54.15, 40960 MiB"\n')
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert capture()["gpu"] == [
        {"name": "NVIDIA A100-SXM4-40GB", "driver_version": "550.54.15", "memory": "40960 MiB"}
    ]
    fake_binary(tmp_path, "nvidia-smi", "echo 'NVIDIA-SMI has failed' >&2; exit 9\n")
    assert capture()["gpu"] == []


def only(*names: str) -> object:
    """A shutil.which that finds just these engines."""
    return lambda name: f"/usr/bin/{name}" if name in names else None


def test_apptainer_binds_inputs_read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(environment.shutil, "which", only("apptainer"))
    info = {"image": "/images/unet.sif", "engine": "apptainer", "digest": "sha256:" + "0" * 64}
    argv = container_argv(
        info, ["python", "seg.py", "/in", "/out"],
        [("/keep/s017", "/in", True), ("/scratch/out", "/out", False)], workdir="/out",
    )  # fmt: skip
    assert argv == [
        "/usr/bin/apptainer", "exec", "--bind", "/keep/s017:/in:ro",
        "--bind", "/scratch/out:/out", "--pwd", "/out",
        "/images/unet.sif", "python", "seg.py", "/in", "/out",
    ]  # fmt: skip


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_docker_and_podman_run_as_the_caller(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(environment.shutil, "which", only(engine))
    info = {"image": "ghcr.io/lab/unet:2.1", "engine": engine, "digest": "sha256:" + "0" * 64}
    argv = container_argv(
        info, ["python", "seg.py"], [("/keep/s017", "/in", True), ("/out", "/out", False)],
        workdir="/out",
    )  # fmt: skip
    assert argv == [
        f"/usr/bin/{engine}", "run", "--rm", "--user", f"{os.getuid()}:{os.getgid()}",
        "-v", "/keep/s017:/in:ro", "-v", "/out:/out", "--workdir", "/out",
        "ghcr.io/lab/unet:2.1", "python", "seg.py",
    ]  # fmt: skip


def test_paths_that_cannot_be_bound_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(environment.shutil, "which", only("docker"))
    info = {"image": "x", "engine": "docker", "digest": None}
    with pytest.raises(UsageError):
        container_argv(info, ["true"], [("/data/a:b", "/in", True)])


def test_no_engine_is_a_typed_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(environment.shutil, "which", only())
    with pytest.raises(ContainerEngineUnavailable) as caught:
        container_info("ghcr.io/lab/unet:2.1")
    assert caught.value.hint and caught.value.exit_code == 3
    with pytest.raises(ContainerEngineUnavailable):
        container_info(str(tmp_path / "unet.sif"))


def test_a_sif_file_is_pinned_by_its_sha256(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:  # fmt: skip
    monkeypatch.setattr(environment.shutil, "which", only("singularity"))
    image = tmp_path / "unet.sif"
    image.write_bytes(b"SIF" * 1000)
    assert container_info(str(image)) == {
        "image": str(image), "engine": "singularity",
        "digest": "sha256:" + hashlib.sha256(b"SIF" * 1000).hexdigest(),
    }  # fmt: skip
    with pytest.raises(ContainerImageNotFound):
        container_info(str(tmp_path / "missing.sif"))
    pinned = "docker://ghcr.io/lab/unet@sha256:" + "a" * 64
    assert container_info(pinned)["digest"] == "sha256:" + "a" * 64
    with pytest.raises(UsageError):
        container_info("docker://ghcr.io/lab/unet:2.1")  # a tag can move: refused


def test_docker_images_are_inspected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in ``docker`` that answers like the real one (no daemon runs here)."""
    fake_binary(tmp_path, "docker", f"""
case "$5" in
  ghcr.io/lab/unet:2.1) echo '["ghcr.io/lab/unet@sha256:{"b" * 64}"] sha256:{"c" * 64}' ;;
  local:dev) echo '[] sha256:{"d" * 64}' ;;
  *) echo "Error response from daemon: No such image: $5" >&2; exit 1 ;;
esac
""")  # fmt: skip
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert container_info("ghcr.io/lab/unet:2.1") == {
        "image": "ghcr.io/lab/unet:2.1", "engine": "docker", "digest": "sha256:" + "b" * 64
    }  # fmt: skip
    assert container_info("local:dev")["digest"] == "sha256:" + "d" * 64
    with pytest.raises(ContainerImageNotFound):
        container_info("nope:1")
    fake_binary(tmp_path, "docker", "echo 'Cannot connect to the Docker daemon' >&2; exit 1\n")
    with pytest.raises(ContainerEngineUnavailable):
        container_info("ghcr.io/lab/unet:2.1")
