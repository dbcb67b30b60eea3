"""Ingest: move instrument output into ``data/PROJECT/DATASET/raw/`` with SHA-256s.

Write order (tested in tests/test_crash.py):
1. each file is copied to a unique partial name under the dataset's
   ``.labkeep/partial/`` while it is hashed, in one pass, on a thread pool; with
   ``--link`` it is hard-linked straight to its final name instead (the source's own
   inode: no name ever points at bytes other than the source's; a name already taken
   goes through a partial name and a rename, like a copy);
2. per batch, the partial files are made durable (one ``syncfs`` or an fsync each),
   renamed to their final names, and the renames (and links) made durable (an fsync of
   each folder; with durability "batch", the ``syncfs`` that the next batch starts in
   the background, or a last one);
3. only then are the batch's catalog rows committed;
4. only after that are source files deleted (when asked), each after its copy was
   re-read and matched;
5. at the end the manifest is rewritten and the version committed with an event.

A crash anywhere leaves partial files (removed on the next run), or final files with
no catalog row (adopted by the next run after re-hashing them, without copying), or
committed rows; never a final name on incomplete content, never a row without content.

Re-ingest compares with the tree, not only with the catalog: a file already registered
is skipped (``notneeded``) only when the source and the tree copy both still have the
catalog's size and mtime (one lstat) and no verify marked the entry ``modified`` or
``missing``. Otherwise the tree copy is re-hashed, and a copy that is missing or damaged
is restored from the source when the source's bytes hash to the catalog's SHA-256:
copied to a partial file, its hash checked, renamed over the damaged file along the
same write order (``ok`` with ``repaired: true``; no new version: the dataset's content
is what the catalog says). A source that differs from the catalog stays a conflict and
the tree is not touched. Damage that keeps size and mtime (bit rot) is invisible to the
quick check: ``verify`` finds it, and the next ingest then re-hashes that entry.

The pipeline streams, so memory does not grow with the number of files (one module each):
``_scan`` walks the source in the catalog's byte-wise path order; ``_plan`` reads the
dataset's current entries in keyset pages and merges the two sorted streams, classifying
each file; ``_transfer`` copies, links and hashes on worker threads and takes batches
through the durability barrier; ``_run`` commits the batches' rows, hands each record to
the report sink (and ``on_result``) as it comes, and finalizes the version. With a
progress bar the scan is spooled to an unnamed temporary file first, so that the bar
starts with its totals (``Progress.start``) before any file is copied.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from labkeep.catalog import Dataset
from labkeep.errors import SealedError, SealInterrupted, SourceError, UsageError
from labkeep.names import MAX_MESSAGE, check_text, parse_address
from labkeep.ops.ingest._run import _IngestRun
from labkeep.ops.projects import ensure_dataset
from labkeep.results import Report, Result

if TYPE_CHECKING:
    from labkeep.keep import Keep

__all__ = ["Progress", "ingest"]


class Progress(Protocol):
    """What a front end gives ingest (and verify) to show progress."""

    def start(self, total_files: int, total_bytes: int) -> None: ...

    def advance(self, files: int, nbytes: int) -> None: ...


def _check_source(source: Path, keep: Keep) -> Path:
    if not source.exists() and not source.is_symlink():
        raise SourceError(f"source {source} does not exist", hint="check the path and try again")
    if source.is_symlink():
        raise SourceError(f"source {source} is a symbolic link", hint="give the real folder")
    real = source.resolve()
    tree = keep.tree.base.resolve()
    if real == tree or tree in real.parents or real in tree.parents:
        raise SourceError(
            f"source {source} overlaps the keep's tree {tree}",
            hint="ingest from a buffer folder outside the keep",
        )
    if not os.access(real, os.R_OK):
        raise SourceError(f"source {source} is not readable", hint="check its permissions")
    if not (real.is_dir() or real.is_file()):
        raise SourceError(
            f"source {source} is neither a folder nor a regular file",
            hint="give the folder (or the one file) the instrument wrote",
        )
    return real


def ingest(
    keep: Keep,
    source: str | os.PathLike[str],
    address: str,
    *,
    jobs: int | None = None,
    link: bool = False,
    seal: bool = False,
    delete_source: bool = False,
    kind: str = "session",
    message: str = "",
    progress: Progress | None = None,
    on_result: Callable[[Result], None] | None = None,
    keep_results: bool = True,
    exclude: Collection[str] = (),
    verify_sources: bool = False,
) -> Report:
    """Ingest the files below *source* into ``PROJECT/DATASET/raw/``.

    Idempotent and resumable: files already registered with the same size and mtime are
    skipped (``notneeded``); after a crash, running it again finishes the job. Files that
    cannot be ingested (symlinks, special files, unreadable, changing, non-UTF-8 names)
    each get an error record and the rest goes on. Files whose path below *source* is in
    *exclude* are left out (a watched buffer's marker file). With *verify_sources* (a
    watched buffer's import, whose files are deleted later) every source file is hashed,
    also one that looks registered already, so that other bytes under a registered name
    are a conflict, not "already there".
    """
    if jobs is not None and jobs < 0:
        raise UsageError(f"--jobs {jobs}: give 1 or more (0: as many as suit the files)")
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    if addr.path or addr.version is not None:
        raise UsageError(f"ingest into a dataset, not {address!r}", hint="use PROJECT/DATASET")
    check_text(message, "the message", MAX_MESSAGE)
    project, name = addr.project, addr.dataset
    target = f"{project}/{name}"
    src_root = _check_source(Path(source).expanduser().absolute(), keep)
    # (without keep_results, on_result takes every record and the report keeps problems)
    report = Report(
        "ingest",
        info={"dataset": target, "source": str(src_root), "bytes": 0},
        keep_all=keep_results,
    )

    with keep.catalog.write() as session:
        _, dataset, _created = ensure_dataset(
            keep, session, project, name, kind, action="dataset.ingest"
        )
        _refuse_sealed(dataset, target)
        dataset_id = dataset.id

    with keep.tree.lock(project, name, what="ingest"):
        _refuse_protected(keep, project, name, dataset_id)
        run = _IngestRun(
            keep, project, name, dataset_id, report, jobs, link, delete_source, verify_sources
        )
        run.progress, run.on_result = progress, on_result
        run.exclude = frozenset(exclude)
        run.execute(src_root, message)
    if seal and not report.failed:
        from labkeep.ops.seal import seal as do_seal

        report.info["seal"] = do_seal(keep, target).to_dict()
    elif seal:
        report.info["seal"] = {"status": "impossible", "message": "not sealed: ingest had errors"}
    return report


def _refuse_sealed(dataset: Dataset, target: str) -> None:
    if dataset.sealed:
        raise SealedError(
            f"{target} is sealed: its raw data is write-once",
            hint="ingest into a new dataset (e.g. the next session); "
            "a site admin can 'labkeep unseal --force' if this is truly needed",
        )


def _refuse_protected(keep: Keep, project: str, name: str, dataset_id: int) -> None:
    """Under the lock: refuse a dataset sealed meanwhile, or one whose seal was cut short
    (its raw/ may be partly write-protected while the catalog says unsealed)."""
    target = f"{project}/{name}"
    with keep.catalog.read() as session:
        _refuse_sealed(session.get_one(Dataset, dataset_id), target)
    if keep.tree.seal_intent(project, name) == "seal":
        raise SealInterrupted(
            f"a seal of {target} was interrupted: its raw/ may be partly write-protected",
            hint=f"finish it with 'labkeep seal {target}', or undo it with "
            f"'labkeep unseal --force {target}'; then run the ingest again",
        )
