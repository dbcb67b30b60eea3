"""Who may see a watched buffer, browse its folders and import one ("import this folder").

Workers read buffers with the service account's rights, not the user's, so the keep
decides who may have a folder read: site admins, and the members of the groups a site
admin showed the buffer to (``labkeep watch show-to NAME GROUP``, kept in the watch's
``settings["groups"]``). Paths are resolved (symbolic links followed) before they are
compared, so ``..`` or a link inside a buffer cannot lead a job out of it.
"""

from __future__ import annotations

import heapq
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from labkeep.catalog import BufferFolder, Group, Watch
from labkeep.errors import Forbidden, NotFound, UsageError

if TYPE_CHECKING:
    from labkeep.keep import Keep
    from labkeep.ops.jobs import JobInfo

#: folders listed per page of a buffer
PAGE = 200
#: entries of one folder looked at, at most, to list a page (a buffer folder with more
#: than this is listed in part, and says so)
SCAN_LIMIT = 20_000


@dataclass(frozen=True)
class BufferInfo:
    name: str
    path: str
    link: bool
    seal: bool
    groups: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "link": self.link,
            "seal": self.seal,
            "groups": list(self.groups),
        }


def _settings(watch: Watch) -> dict[str, Any]:
    try:
        value = json.loads(watch.settings or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _info(watch: Watch) -> BufferInfo:
    groups = tuple(str(g) for g in _settings(watch).get("groups", []))
    return BufferInfo(watch.name, watch.path, watch.link, watch.seal, groups)


def _my_groups(keep: Keep, session: Any) -> set[str]:
    ids = list(keep.principal.groups)
    if not ids:
        return set()
    return set(session.execute(select(Group.name).where(Group.id.in_(ids))).scalars())


def visible_buffers(keep: Keep) -> list[BufferInfo]:
    """The watched buffers the caller may browse and import from."""
    principal = keep.principal
    if not principal.authenticated:
        return []
    with keep.catalog.read() as session:
        infos = [_info(w) for w in session.execute(select(Watch).order_by(Watch.name)).scalars()]
        mine = _my_groups(keep, session)
    if principal.site_admin:
        return infos
    return [b for b in infos if mine & set(b.groups)]


def _buffer(keep: Keep, name: str) -> BufferInfo:
    for buffer in visible_buffers(keep):
        if buffer.name == name:
            return buffer
    raise NotFound(f"no buffer {name!r}", hint="the buffers shown to you are listed on /buffers")


def _inside(base: str, sub: str) -> Path:
    """*sub* (relative) below *base*, resolved; refuses anything that leaves the buffer."""
    if "\0" in sub or os.path.isabs(sub):
        raise UsageError(f"{sub!r} is not a folder of this buffer")
    root = Path(base).resolve()
    path = (root / sub).resolve()
    if path != root and root not in path.parents:
        raise UsageError(f"{sub!r} is not a folder of this buffer")
    return path


def buffer_visible_to(keep: Keep, source: str) -> bool:
    """Whether *source* lies in a buffer shown to the caller (after resolving links)."""
    try:
        real = Path(source).resolve()
    except (OSError, RuntimeError):
        return False
    for buffer in visible_buffers(keep):
        root = Path(buffer.path).resolve()
        if real == root or root in real.parents:
            return True
    return False


def browse_buffer(
    keep: Keep, name: str, folder: str = "", *, after: str | None = None, limit: int = PAGE
) -> dict[str, Any]:
    """The subfolders of *folder* in buffer *name*, by name, a page at a time, each with
    what the watcher knows of it (imported, waiting, ...)."""
    buffer = _buffer(keep, name)
    path = _inside(buffer.path, folder)
    if not path.is_dir():
        raise NotFound(f"no folder {folder!r} in buffer {name}")
    limit = max(1, min(limit, 1000))
    seen = 0
    candidates: list[tuple[str, os.DirEntry[str]]] = []
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                seen += 1
                if seen > SCAN_LIMIT:
                    break
                if after is not None and entry.name <= after:
                    continue
                if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                    candidates.append((entry.name, entry))
    except OSError as exc:
        raise UsageError(f"buffer {name}: {folder or '/'} cannot be read: {exc.strerror}") from None
    page = heapq.nsmallest(limit + 1, candidates, key=lambda c: c[0])  # code point order
    more = len(page) > limit
    page = page[:limit]
    rel = [os.path.join(folder, n) if folder else n for n, _ in page]
    with keep.catalog.read() as session:
        watch_id = session.execute(select(Watch.id).where(Watch.name == name)).scalar_one()
        states = {
            f.folder: f
            for f in session.execute(
                select(BufferFolder).where(
                    BufferFolder.watch_id == watch_id, BufferFolder.folder.in_(rel)
                )
            ).scalars()
        }
    folders = []
    for (entry_name, entry), relpath in zip(page, rel, strict=True):
        known = states.get(relpath)
        try:
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            mtime = None
        folders.append(
            {
                "name": entry_name,
                "path": relpath,
                "mtime": mtime,
                "state": known.state if known is not None else None,
                "dataset": f"{known.project}/{known.dataset}"
                if known is not None and known.project and known.dataset
                else None,
                "job": known.job_id if known is not None else None,
            }
        )
    return {
        "buffer": buffer.to_dict(),
        "folder": folder,
        "folders": folders,
        "next": page[-1][0] if more and page else None,
        "partial": seen > SCAN_LIMIT,
    }


def import_folder(
    keep: Keep, name: str, folder: str, dataset: str, *, seal: bool | None = None
) -> JobInfo:
    """Queue the import of *folder* of buffer *name* into *dataset* (``P/D``; or just
    ``P``: a dataset named after the folder, sanitised as the watcher names them), acting
    as the caller: in place by hard link when the buffer is configured so, then sealed if
    asked."""
    from labkeep.ops._buffer_scan import sanitise
    from labkeep.ops.jobs import enqueue

    buffer = _buffer(keep, name)
    folder = folder.rstrip("/")
    if not folder:
        raise UsageError("pick a folder of the buffer, not the buffer itself")
    if "/" not in dataset:
        dataset = f"{dataset}/{sanitise(folder.rsplit('/', 1)[-1])}"
    path = _inside(buffer.path, folder)
    if not path.is_dir():
        raise NotFound(f"no folder {folder!r} in buffer {name}")
    args = {
        "source": str(path),
        "dataset": dataset,
        "link": buffer.link,
        "seal": buffer.seal if seal is None else seal,
        "message": f"imported from buffer {name}: {folder}",
    }
    return enqueue(keep, "ingest", args, unique_key=f"import:{path}:{dataset}")


def show_buffer_to(keep: Keep, name: str, groups: list[str], *, show: bool = True) -> BufferInfo:
    """Show buffer *name* to (or, with *show* False, hide it from) the members of *groups*:
    they may then browse its folders and import them (site admins)."""
    from labkeep.ops.audit import append_event

    if not keep.principal.site_admin:
        raise Forbidden("only site admins decide who sees a buffer")
    with keep.catalog.write() as session:
        watch = session.execute(select(Watch).where(Watch.name == name)).scalar_one_or_none()
        if watch is None:
            raise NotFound(f"no buffer {name!r}", hint="'labkeep watch list' lists them")
        known = set(session.execute(select(Group.name).where(Group.name.in_(groups))).scalars())
        missing = [g for g in groups if g not in known]
        if missing:
            raise NotFound(f"no group {missing[0]!r}", hint="'labkeep group list' lists them")
        settings = _settings(watch)
        current = {str(g) for g in settings.get("groups", [])}
        current = current | set(groups) if show else current - set(groups)
        settings["groups"] = sorted(current)
        watch.settings = json.dumps(settings)
        append_event(
            session,
            keep.actor,
            "buffer.show" if show else "buffer.hide",
            f"buffer:{name}",
            {"groups": sorted(groups)},
        )
        return _info(watch)
