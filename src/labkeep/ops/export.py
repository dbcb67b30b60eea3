"""Copying content out of the keep: a file, a folder or a whole dataset (at any version),
every file checked against its SHA-256 on the way, resumable."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkeep.errors import IntegrityError, LabkeepError, UsageError
from labkeep.names import address_text, check_relpath, parse_address
from labkeep.results import Report, Result

if TYPE_CHECKING:
    from labkeep.keep import Keep

#: how one file is copied: (dataset address, path, version, target file) -> info
CopyOne = Callable[[str, str, int | None, Path], Any]


def export(
    keep: Keep,
    address: str,
    dest: str | os.PathLike[str] = ".",
    *,
    on_result: Callable[[Result], None] | None = None,
) -> Report:
    """Copy ``PROJECT/DATASET[/PATH][@VERSION]`` out of the keep into *dest*.

    Like ``cp -r``: into ``DEST/NAME`` when *dest* is an existing folder (NAME is the
    dataset's or folder's name), else into *dest* itself. Each file is written under a
    temporary name and renamed only when its bytes match the catalog's SHA-256; files
    already there with the right content are skipped, so running it again resumes.
    """
    stream = keep.stream_entries(address)

    def copy_one(dataset: str, path: str, version: int | None, target: Path) -> Any:
        project, name = dataset.split("/", 1)
        return keep.export_file(address_text(project, name, path, version), target)

    return export_entries(address, stream.version, stream.entries, dest, copy_one, on_result)


def export_entries(
    address: str,
    version: int | None,
    entries: Iterable[dict[str, Any]],
    dest: str | os.PathLike[str],
    copy_one: CopyOne,
    on_result: Callable[[Result], None] | None = None,
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
    for entry in entries:
        path = str(entry["path"])
        if path == addr.path:  # the address names one file: cp FILE DEST
            rel = path.rsplit("/", 1)[-1]
            root = dest_path.parent if not dest_path.is_dir() else dest_path
            target = dest_path / rel if dest_path.is_dir() else dest_path
        else:
            if root is None:
                name = addr.path.rsplit("/", 1)[-1] if addr.path else str(addr.dataset)
                root = dest_path / name if dest_path.is_dir() else dest_path
            rel = path[len(addr.path) + 1 :] if addr.path else path
            target = root / check_relpath(rel)
        emit(_copy(dataset, path, version, target, entry, copy_one))
    if root is None:
        raise UsageError(f"nothing to download at {address}")
    report.info.update(saved_to=str(root), bytes=saved)
    return report


def _copy(
    dataset: str,
    path: str,
    version: int | None,
    target: Path,
    entry: dict[str, Any],
    copy_one: CopyOne,
) -> Result:
    result = Result("export", "ok", path=path, dataset=dataset, size=entry["size"])
    result.sha256 = entry["sha256"]
    result.extra["saved_to"] = str(target)
    try:
        if _already_there(target, entry):
            result.status = "notneeded"
            return result
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_one(dataset, path, version, target)
    except IntegrityError as exc:
        result.status, result.message = "error", exc.message
    except LabkeepError as exc:
        if exc.exit_code == 3:  # the environment broke: stop, do not grind through the rest
            raise
        result.status, result.message = "error", exc.message
    except OSError as exc:
        result.status, result.message = "error", f"cannot write {target}: {exc.strerror}"
    return result


def _already_there(target: Path, entry: dict[str, Any]) -> bool:
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
