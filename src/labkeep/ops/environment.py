"""Where a command runs: the environment record of a run, and the container it runs in.

A run's provenance says not only which inputs made which outputs but what ran them:
:func:`capture` describes the interpreter, its installed distributions, the operating
system, the host, CPU, memory and GPUs as one JSON-able dict that is stored with the run
record and exported into its RO-Crate. It reads only local files and, when present,
``nvidia-smi`` (with a short timeout): it never fails because a probe did not answer —
the field is then ``None`` or an empty list.

:func:`container_info` pins a container image to a digest with the engine that will run
it, so that the record names bytes, not a tag that can move; :func:`container_argv`
wraps a command to run inside that image with the run's folders bound (inputs
read-only).

Cost: ``capture()`` takes ~25 ms here (101 distributions; nearly all of it reading every
``METADATA`` file), so it is called once per run without caching: a cache would miss
packages installed between two runs.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from labkeep.errors import ContainerEngineUnavailable, ContainerImageNotFound, UsageError

__all__ = ["capture", "container_argv", "container_info"]

#: how long the GPU probe may take before it is given up (a hung driver must not hang runs)
GPU_PROBE_TIMEOUT = 5.0
#: how long ``docker image inspect`` may take (a local call; a stuck daemon fails the run)
ENGINE_TIMEOUT = 30.0
#: engines in the order they are looked for
APPTAINER_ENGINES = ("apptainer", "singularity")
OCI_ENGINES = ("docker", "podman")
#: image references that only Apptainer/Singularity run
APPTAINER_SCHEMES = ("docker://", "oras://", "library://", "shub://")


def capture(*, container: dict[str, Any] | None = None) -> dict[str, Any]:
    """Describe where a command runs now, as a JSON-able dict.

    Keys: ``python`` (version, implementation, executable), ``packages`` (distribution
    name -> version of the running interpreter, sorted by name), ``os`` (platform,
    system, kernel, distribution), ``host`` (hostname), ``cpu`` (model, count),
    ``memory`` (total_bytes), ``gpu`` (list of {name, driver_version, memory}; empty when
    ``nvidia-smi`` is absent or does not answer), ``labkeep`` (version) and
    ``container`` (*container* as given: a :func:`container_info` dict, or None).
    """
    from labkeep import __version__

    return {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "packages": _distributions(),
        "os": {
            "platform": platform.platform(),
            "system": platform.system(),
            "kernel": platform.release(),
            "distribution": _os_release().get("PRETTY_NAME"),
        },
        "host": {"hostname": socket.gethostname()},
        "cpu": {"model": _cpu_model(), "count": os.cpu_count()},
        "memory": {"total_bytes": _memory_total()},
        "gpu": _gpus(),
        "labkeep": {"version": __version__},
        "container": container,
    }


def _distributions() -> dict[str, str]:
    """name -> version of every distribution the running interpreter sees; where a name is
    installed twice, the one first on ``sys.path`` (the one imported) wins.

    Reads only the header of each ``METADATA`` file: ``Distribution.metadata`` runs the
    e-mail parser over the whole file (long READMEs included) on every access, which
    made ``capture()`` twice as slow here.
    """
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name, version = _name_version(dist)
        if name and version and name not in found:
            found[name] = version
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def _name_version(dist: metadata.Distribution) -> tuple[str | None, str | None]:
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    name = version = None
    for line in text.splitlines():
        if not line.strip():
            break  # the end of the header: the description follows
        key, sep, value = line.partition(":")
        if sep and key == "Name":
            name = value.strip()
        elif sep and key == "Version":
            version = value.strip()
        if name and version:
            break
    return name, version


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _os_release() -> dict[str, str]:
    """The fields of os-release(5) (``/etc/os-release``, else ``/usr/lib/os-release``)."""
    text = _read_text("/etc/os-release") or _read_text("/usr/lib/os-release")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            fields[key.strip()] = value.strip().strip("\"'")
    return fields


def _cpu_model() -> str | None:
    for line in _read_text("/proc/cpuinfo").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("model name", "Processor", "cpu model"):
            return value.strip() or None
    return platform.processor() or None


def _memory_total() -> int | None:
    for line in _read_text("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024  # the kernel counts kB (KiB)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _gpus() -> list[dict[str, str]]:
    """NVIDIA GPUs as ``nvidia-smi`` lists them; empty without the binary or an answer."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        done = subprocess.run(
            [binary, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=GPU_PROBE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    gpus = []
    for line in done.stdout.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) == 3 and fields[0]:
            gpus.append({"name": fields[0], "driver_version": fields[1], "memory": fields[2]})
    return gpus


# -- containers -----------------------------------------------------------------------


def _uses_apptainer(image: str) -> bool:
    return image.endswith(".sif") or image.startswith(APPTAINER_SCHEMES)


def _find_engine(names: Sequence[str], image: str) -> tuple[str, str]:
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return name, path
    raise ContainerEngineUnavailable(
        f"cannot run {image}: none of {', '.join(names)} is installed here",
        hint=f"install {' or '.join(names)} on this machine (or run where one is), "
        "or run the command without a container",
    )


def container_info(image: str) -> dict[str, Any]:
    """Pin *image* to a digest with the engine that will run it.

    Returns ``{"image": image, "engine": NAME, "digest": "sha256:..."}``:

    - a local ``.sif`` file runs under Apptainer (or Singularity); its digest is the
      SHA-256 of the file;
    - a ``docker://``, ``oras://``, ``library://`` or ``shub://`` reference runs under
      Apptainer too and must be pinned in the reference (``...@sha256:HEX``): the tag
      behind an unpinned one can change between this call and the pull;
    - anything else is a Docker/Podman image that must be present locally; its digest is
      the registry (repository) digest when it was pulled, else its image id (built
      locally).

    Raises :class:`ContainerEngineUnavailable` when no fitting engine is installed or it
    does not answer, :class:`ContainerImageNotFound` for an image it does not know, and
    :class:`UsageError` for an unpinned remote reference.
    """
    if not image or image.startswith("-"):
        raise UsageError(f"not a container image: {image!r}")
    if _uses_apptainer(image):
        engine, _ = _find_engine(APPTAINER_ENGINES, image)
        return {"image": image, "engine": engine, "digest": _apptainer_digest(image)}
    engine, binary = _find_engine(OCI_ENGINES, image)
    return {"image": image, "engine": engine, "digest": _oci_digest(engine, binary, image)}


def _apptainer_digest(image: str) -> str:
    if image.startswith(APPTAINER_SCHEMES):
        _, at, digest = image.rpartition("@")
        if at and digest.startswith("sha256:") and len(digest) == 71:
            return digest
        raise UsageError(
            f"the container image {image} is not pinned to a digest",
            hint="name it by digest (docker://REPO@sha256:...) or pull it into a .sif file "
            "(apptainer pull) and give that file",
        )
    from labkeep.integrity.hashing import hash_file

    path = os.path.realpath(image)
    if not os.path.isfile(path):
        raise ContainerImageNotFound(f"no container image file {image}")
    try:
        return "sha256:" + hash_file(path).sha256.hex()
    except OSError as exc:
        raise ContainerImageNotFound(f"cannot read the container image {image}: {exc}") from exc


def _oci_digest(engine: str, binary: str, image: str) -> str:
    argv = [binary, "image", "inspect", "--format", "{{json .RepoDigests}} {{.Id}}", image]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=ENGINE_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ContainerEngineUnavailable(
            f"{engine} did not answer within {ENGINE_TIMEOUT:.0f} s",
            hint=f"check that the {engine} service is running",
        ) from exc
    except OSError as exc:
        raise ContainerEngineUnavailable(f"cannot start {engine}: {exc}") from exc
    error = done.stderr.strip()
    if done.returncode != 0:
        if "no such image" in error.lower() or "image not known" in error.lower():
            raise ContainerImageNotFound(
                f"{engine} has no image {image}",
                hint=f"pull it first ({engine} pull {image}), or check its name",
            )
        raise ContainerEngineUnavailable(
            f"{engine} cannot inspect {image}: {error or f'exit code {done.returncode}'}",
            hint=f"check that the {engine} service is running and that you may use it",
        )
    return _parse_inspect(done.stdout, image)


def _parse_inspect(output: str, image: str) -> str:
    """The digest in ``{{json .RepoDigests}} {{.Id}}`` output: the repository digest of
    *image*'s repository if it has one, else the first one, else the image id."""
    digests_json, _, image_id = output.strip().rpartition(" ")
    try:
        digests = json.loads(digests_json) or []
    except ValueError:
        digests = []
    repository = image.split("@", 1)[0]
    if ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]
    pinned = [d for d in digests if isinstance(d, str) and "@sha256:" in d]
    for candidate in pinned:
        if candidate.split("@", 1)[0].endswith(repository):
            return candidate.split("@", 1)[1]
    if pinned:
        return str(pinned[0]).split("@", 1)[1]
    if image_id.startswith("sha256:"):
        return image_id
    raise ContainerEngineUnavailable(f"cannot read the digest of {image} from {output!r}")


def container_argv(
    info: dict[str, Any],
    argv: Sequence[str],
    binds: list[tuple[str, str, bool]],
    *,
    workdir: str | None = None,
) -> list[str]:
    """The command line that runs *argv* inside the container of *info*.

    *binds* are ``(host path, container path, read_only)``: a run binds its inputs
    read-only and its output folder read-write. *workdir* is the working folder inside
    the container (``--pwd`` / ``--workdir``), none when omitted. Docker and Podman run
    the command as the calling uid:gid, so that the outputs belong to the user, and
    remove the container afterwards. The engine is looked up again on ``PATH``; paths
    containing ``:`` or ``,`` cannot be bound (both engines split on them).
    """
    engine = info.get("engine")
    image = info.get("image")
    if not isinstance(engine, str) or not isinstance(image, str):
        raise UsageError("container info needs an engine and an image (see container_info)")
    for src, dst, _ in binds:
        for path in (src, dst):
            if ":" in path or "," in path or not path:
                raise UsageError(
                    f"cannot bind {path!r} into a container",
                    hint="paths bound into a container may not contain ':' or ','",
                )
    if engine in APPTAINER_ENGINES:
        _, binary = _find_engine((engine, *APPTAINER_ENGINES), image)
        wrapped = [binary, "exec"]
        for src, dst, read_only in binds:
            wrapped += ["--bind", f"{src}:{dst}:ro" if read_only else f"{src}:{dst}"]
        if workdir:
            wrapped += ["--pwd", workdir]
        return [*wrapped, image, *argv]
    if engine in OCI_ENGINES:
        _, binary = _find_engine((engine,), image)
        wrapped = [binary, "run", "--rm", "--user", f"{os.getuid()}:{os.getgid()}"]
        for src, dst, read_only in binds:
            wrapped += ["-v", f"{src}:{dst}:ro" if read_only else f"{src}:{dst}"]
        if workdir:
            wrapped += ["--workdir", workdir]
        return [*wrapped, image, *argv]
    raise UsageError(f"unknown container engine {engine!r}")
