"""Copying content out of the keep: a file, a folder or a whole dataset (at any version),
every file checked against its SHA-256 on the way, resumable."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkeep.errors import IntegrityError, LabkeepError, UsageError
from labkeep.names import check_relpath, parse_address
from labkeep.ops._parallel import ordered_map
from labkeep.results import Report, Result

if TYPE_CHECKING:
    from labkeep.keep import Keep

#: how one file is copied: (dataset address, its listed entry, version, target file)
CopyOne = Callable[[str, dict[str, Any], int | None, Path], Any]


def export(
    keep: Keep,
    address: str,
    dest: str | os.PathLike[str] = ".",
    *,
    jobs: int | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> Report:
    """Copy ``PROJECT/DATASET[/PATH][@VERSION]`` out of the keep into *dest*.

    Like ``cp -r``: into ``DEST/NAME`` when *dest* is an existing folder (NAME is the
    dataset's or folder's name), else into *dest* itself. Each file is written under a
    temporary name and renamed only when its bytes match the catalog's SHA-256; files
    already there with the right content are skipped, so running it again resumes.
    Access is checked once for the whole address; *jobs* files are copied at a time
    (default: the keep's ``ingest.jobs``), results come in path order.
    """
    from labkeep.ops.files import download_stream, entry_info, export_entry

    stream, sealed = download_stream(keep, address)
    version = stream.version or 0

    def copy_one(dataset: str, entry: dict[str, Any], _v: int | None, target: Path) -> Any:
        return export_entry(keep, entry_info(keep, dataset, version, sealed, entry), target)

    workers = jobs or keep.config.ingest_jobs or min(8, (os.cpu_count() or 1) * 2)
    return export_entries(
        address, stream.version, stream.entries, dest, copy_one, on_result, jobs=workers
    )


def export_entries(
    address: str,
    version: int | None,
    entries: Iterable[dict[str, Any]],
    dest: str | os.PathLike[str],
    copy_one: CopyOne,
    on_result: Callable[[Result], None] | None = None,
    *,
    jobs: int = 1,
) -> Report:
    """The shared loop of a local and a remote export (see :func:`export`)."""
    addr = parse_address(address, need_dataset=True)
    dataset = addr.dataset_address
    report = Report("export", info={"source": address, "version": version}, keep_all=False)
    dest_path = Path(dest).expanduser()
    saved = 0

    def emit(result: Result) -> None:
        nonlocal saved
        report.add(result)
        if result.status in ("ok", "notneeded"):
            saved += result.size or 0
        if on_result is not None:
            on_result(result)

    root: Path | None = None

    def targets() -> Iterator[tuple[dict[str, Any], Path]]:
        nonlocal root
        for entry in entries:
            path = str(entry["path"])
            if path == addr.path:  # the address names one file: cp FILE DEST
                rel = path.rsplit("/", 1)[-1]
                root = dest_path.parent if not dest_path.is_dir() else dest_path
                yield entry, dest_path / rel if dest_path.is_dir() else dest_path
            else:
                if root is None:
                    name = addr.path.rsplit("/", 1)[-1] if addr.path else str(addr.dataset)
                    root = dest_path / name if dest_path.is_dir() else dest_path
                    if os.path.lexists(root) and not root.is_dir():
                        raise UsageError(
                            f"{root} is a file: {address} is a folder of files",
                            hint="give a folder (new or existing) to copy it into",
                        )
                rel = path[len(addr.path) + 1 :] if addr.path else path
                yield entry, root / check_relpath(rel)

    def one(job: tuple[dict[str, Any], Path]) -> Result:
        return _copy(dataset, version, job[1], job[0], copy_one)

    for result in ordered_map(one, targets(), jobs, name="labkeep-export"):
        emit(result)
    if root is None:
        raise UsageError(f"nothing to download at {address}")
    report.info.update(saved_to=str(root), bytes=saved)
    return report


def _copy(
    dataset: str, version: int | None, target: Path, entry: dict[str, Any], copy_one: CopyOne
) -> Result:
    path = str(entry["path"])
    result = Result("export", "ok", path=path, dataset=dataset, size=entry["size"])
    result.sha256 = entry["sha256"]
    result.extra["saved_to"] = str(target)
    try:
        if already_there(target, entry):
            result.status = "notneeded"
            return result
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_one(dataset, entry, version, target)
    except IntegrityError as exc:
        result.status, result.message = "error", exc.message
    except LabkeepError as exc:
        if exc.exit_code == 3:  # the environment broke: stop, do not grind through the rest
            raise
        result.status, result.message = "error", exc.message
    except OSError as exc:
        result.status, result.message = "error", f"cannot write {target}: {exc.strerror}"
    return result


def already_there(target: Path, entry: dict[str, Any]) -> bool:
    """A file with the expected size and SHA-256 is already at *target*."""
    try:
        if target.stat().st_size != entry["size"]:
            return False
    except FileNotFoundError:
        return False
    digest = hashlib.sha256()
    with open(target, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return bool(digest.hexdigest() == entry["sha256"])
