"""Copying a dataset version's files into a package folder: the pipeline that BagIt bags
and BioImage Archive packages share.

Entries come from the catalog a page at a time (path order); they are handed to worker
threads in a bounded window and their records come back in the same order, so a caller
writes manifest lines as it goes and memory does not grow with the file count.

For each file, the cheapest way that keeps the package's manifests true:

- already in the package (a run that was cut short): a file at its final name with the
  entry's size and mtime is complete (only complete, checked content is ever renamed to
  a final name); it is not copied again. Its SHA-512 and MD5 come from ``digests``, or
  when unknown from reading that file (which checks its SHA-256 too);
- digests known and the tree's copy passes the quick check (regular file, size and mtime
  as in the catalog): a kernel copy (``copy_file_range``), no byte read into Python. The
  catalog's SHA-256 and the stored SHA-512 go into the manifests. ``verify=True`` turns
  this off: every byte is then read and its SHA-256 checked;
- otherwise the content is read once (from the tree, or from a store when the tree has no
  good copy, as for old versions), SHA-256 checked against the catalog and SHA-512 and MD5
  computed in the same pass, then kept in ``digests`` so later packages need not read it.

Every copy is written under a temporary name beside its target and renamed only when
complete (and, when read, when its SHA-256 matched). Content that does not match its
SHA-256 is never renamed: the file's record is an error, and the caller does not finish
the package. Digests found are written to the catalog in batches.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from labkeep import names
from labkeep.catalog import Digest
from labkeep.errors import IntegrityError, LabkeepError, NotFound, UsageError
from labkeep.names import check_relpath
from labkeep.ops.content import open_content
from labkeep.results import Result
from labkeep.storage._tree import PRIVATE_DIR

if TYPE_CHECKING:
    from labkeep.keep import Keep
    from labkeep.ops.ingest import Progress

CHUNK = 1 << 20
BATCH = 256


@dataclass
class Payload:
    """One file of a package: where it comes from and where it goes."""

    path: str  # in the dataset
    rel: str  # in the package's payload folder
    size: int
    sha256: str
    mtime_ns: int
    sha512: str | None = None
    md5: str | None = None
    how: str = ""  # copied | read | kept


def part_name(target: Path) -> Path:
    return target.with_name(names.part_name(target.name))


def known_digests(keep: Keep, sha256s: Iterable[bytes]) -> dict[bytes, tuple[bytes, bytes]]:
    wanted = list(set(sha256s))
    if not wanted:
        return {}
    with keep.catalog.read() as session:
        rows = session.execute(
            select(Digest.sha256, Digest.sha512, Digest.md5).where(Digest.sha256.in_(wanted))
        ).all()
    return {bytes(a): (bytes(b), bytes(c)) for a, b, c in rows}


def store_digests(keep: Keep, found: dict[bytes, tuple[bytes, bytes]]) -> None:
    """Record SHA-512 and MD5 of contents (by SHA-256); rows already there are kept."""
    if not found:
        return
    with keep.catalog.write() as session:
        bind = session.get_bind()
        if bind.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            insert: Any = pg_insert(Digest)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            insert = sqlite_insert(Digest)
        session.execute(
            insert.on_conflict_do_nothing(index_elements=["sha256"]),
            [{"sha256": k, "sha512": v[0], "md5": v[1]} for k, v in found.items()],
        )


class PayloadCopier:
    """Copies payload files into *root* on worker threads (see the module docstring)."""

    def __init__(
        self,
        keep: Keep,
        project: str,
        dataset: str,
        root: Path,
        *,
        verify: bool = False,
        jobs: int | None = None,
        progress: Progress | None = None,
        resuming: bool = True,
    ) -> None:
        self.resuming = resuming  # False for a new folder: nothing there to keep
        self.keep, self.project, self.dataset, self.root = keep, project, dataset, root
        self.verify = verify
        self.jobs = max(1, jobs or min(4, os.cpu_count() or 1))
        self.progress = progress
        self._found: dict[bytes, tuple[bytes, bytes]] = {}
        self._lock = threading.Lock()
        self.bytes_read = 0  # bytes read into Python to hash them (0 when all known)
        self._folders: set[str] = set()  # made already: one mkdir per folder, not per file
        self._tree = str(keep.tree.dataset_dir(project, dataset))

    # -- the ordered stream ---------------------------------------------------------
    def run(self, items: Iterator[Payload]) -> Iterator[tuple[Payload, Result]]:
        """Copy every item, yielding (item, record) in the order of *items*."""
        window: deque[tuple[Payload, Future[Result]]] = deque()
        limit = self.jobs * 8
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="labkeep-package") as pool:
            try:
                for batch in _batches(items, BATCH):
                    digests = known_digests(self.keep, (bytes.fromhex(p.sha256) for p in batch))
                    for item in batch:
                        known = digests.get(bytes.fromhex(item.sha256))
                        if known is not None:
                            item.sha512, item.md5 = known[0].hex(), known[1].hex()
                        window.append((item, pool.submit(self._one, item)))
                        while len(window) > limit:
                            done, future = window.popleft()
                            yield done, future.result()
                    self._flush()
                while window:
                    done, future = window.popleft()
                    yield done, future.result()
            finally:
                for _, future in window:
                    future.cancel()
                self._flush()

    def _flush(self) -> None:
        with self._lock:
            found, self._found = self._found, {}
        store_digests(self.keep, found)

    # -- one file -------------------------------------------------------------------
    def _one(self, item: Payload) -> Result:
        result = Result("package", "ok", path=item.path, size=item.size, sha256=item.sha256)
        # string paths: for small files the per-file cost is what an export costs
        target = os.path.join(self.root, item.rel)
        try:
            if self.resuming and self._finished(item, Path(target)):
                result.status = "notneeded"
            else:
                folder = os.path.dirname(target)
                if folder not in self._folders:
                    os.makedirs(folder, exist_ok=True)
                    self._folders.add(folder)
                source = self._source(item.path)
                fast = item.sha512 is not None and not self.verify
                if fast and _quick_check(source, item.size, item.mtime_ns):
                    self._kernel_copy(source, target, item)
                else:
                    self._read_copy(Path(source), Path(target), item)
        except IntegrityError as exc:
            result.status, result.message = "error", exc.message
        except NotFound as exc:
            result.status, result.message = "error", exc.message
        except LabkeepError:
            raise
        except OSError as exc:
            result.status = "error"
            result.message = f"cannot write {target}: {exc.strerror or exc}"
        if self.progress is not None:
            self.progress.advance(1, item.size)
        return result

    def _source(self, path: str) -> str:
        """The tree's file of a catalog path (as ``Tree.file_path``, as a string)."""
        check_relpath(path)
        if path.split("/", 1)[0] == PRIVATE_DIR:
            raise UsageError(f"{path!r} is inside labkeep's private folder")
        return os.path.join(self._tree, path)

    def _finished(self, item: Payload, target: Path) -> bool:
        """Whether *target* is this item's complete copy from an earlier run."""
        try:
            st = os.stat(target, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if st.st_size != item.size or st.st_mtime_ns != item.mtime_ns:
            target.unlink()
            return False
        if item.sha512 is None or self.verify:
            with open(target, "rb") as handle:
                sums = self._hash(handle, None)
            if sums[0] != item.sha256:
                target.unlink()
                return False
            self._remember(item, sums)
        item.how = "kept"
        return True

    def _kernel_copy(self, source: str, target: str, item: Payload) -> None:
        """Copy by the kernel (``copy_file_range``: no byte through Python), with raw file
        descriptors and string paths: for small files the per-file cost is the point."""
        folder, name = os.path.split(target)
        part = os.path.join(folder, names.part_name(name))
        src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            dst = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                left = item.size
                while left > 0:
                    try:
                        n = os.copy_file_range(src, dst, left)
                    except OSError:  # a kernel or filesystem that will not: in user space
                        os.lseek(src, item.size - left, os.SEEK_SET)
                        while chunk := os.read(src, CHUNK):
                            os.write(dst, chunk)
                            left -= len(chunk)
                        break
                    if n == 0:
                        break
                    left -= n
                os.utime(dst, ns=(item.mtime_ns, item.mtime_ns))
            finally:
                os.close(dst)
        finally:
            os.close(src)
        if left:
            os.unlink(part)
            raise IntegrityError(
                f"{self.dataset}/{item.path} changed size while it was copied",
                hint="run 'labkeep verify' on the dataset",
            )
        os.replace(part, target)
        item.how = "copied"

    def _read_copy(self, source: Path, target: Path, item: Payload) -> None:
        part = part_name(target)
        handle = open_content(
            self.keep, source, item.size, bytes.fromhex(item.sha256), item.mtime_ns
        )
        try:
            with handle, open(part, "wb") as out:
                sums = self._hash(handle, out)
            if sums[0] != item.sha256:
                raise IntegrityError(
                    f"{self.dataset}/{item.path} does not match its SHA-256 in the catalog",
                    hint="run 'labkeep verify' on the dataset and repair it from another "
                    "copy; the package was not finished",
                )
            os.utime(part, ns=(item.mtime_ns, item.mtime_ns))
            os.replace(part, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
        self._remember(item, sums)
        item.how = "read"

    def _hash(self, handle: Any, out: Any) -> tuple[str, str, str]:
        s256, s512, md5 = hashlib.sha256(), hashlib.sha512(), hashlib.md5()  # noqa: S324
        n = 0
        while chunk := handle.read(CHUNK):
            s256.update(chunk)
            s512.update(chunk)
            md5.update(chunk)
            if out is not None:
                out.write(chunk)
            n += len(chunk)
        with self._lock:
            self.bytes_read += n
        return s256.hexdigest(), s512.hexdigest(), md5.hexdigest()

    def _remember(self, item: Payload, sums: tuple[str, str, str]) -> None:
        item.sha512, item.md5 = sums[1], sums[2]
        with self._lock:
            self._found[bytes.fromhex(sums[0])] = (bytes.fromhex(sums[1]), bytes.fromhex(sums[2]))


def _quick_check(path: str, size: int, mtime_ns: int) -> bool:
    """A regular file with the catalog's size and mtime (``content.tree_copy``)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == size and st.st_mtime_ns == mtime_ns


def _batches(items: Iterator[Payload], size: int) -> Iterator[list[Payload]]:
    batch: list[Payload] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def hash_file(path: Path) -> tuple[str, str, int]:
    """SHA-256 and SHA-512 of a small file the package writes itself (tag files, crate)."""
    s256, s512 = hashlib.sha256(), hashlib.sha512()
    n = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            s256.update(chunk)
            s512.update(chunk)
            n += len(chunk)
    return s256.hexdigest(), s512.hexdigest(), n


OnResult = Callable[[Result], None]
