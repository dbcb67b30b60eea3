"""Copies: copy, get and drop (whereis: labkeep.ops.whereis; verify and repair: labkeep.ops.repair).

Where content lives:
- the **tree** holds the current files of every dataset whose ``tree_state`` is
  ``present`` (its fixity is what ``verify`` last found for each entry);
- a **content store** (objects folder, S3) holds a content once, by SHA-256, for every
  dataset that has it: a row of the replica log (``replicas``) says so, with when its
  bytes were last checked and what was found.

Write order (docs/formats.md):
1. content is durable in the target store and verified (hashed while written, or by the
   server against the SHA-256 sent with it) before its replica row is committed; a copy
   cut short never has a row and never counts;
2. a replica row is removed (committed) before its content is deleted; a dataset's
   ``tree_state`` says ``dropped`` before its tree files are deleted;
3. nothing is deleted while fewer than the policy's ``min_copies`` copies would remain
   elsewhere, counted fresh (each copy re-read and re-hashed now, or with ``quick`` its
   size and the store's own SHA-256 confirmed) under the dataset's lease, so two drops
   cannot both pass on the same copies; an unreachable store counts as zero.

Every operation is per file, in parallel, resumable (what was recorded stays recorded;
a content already in a store is not sent again) and reports a result record per file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from labkeep.catalog import Dataset, Entry, Project, Replica, Store
from labkeep.clock import isoformat, utcnow
from labkeep.errors import (
    BelowPolicy,
    LabkeepError,
    NotFound,
    RetentionLocked,
    StorageError,
    StoreUnavailable,
    TransferCorrupted,
    UsageError,
)
from labkeep.ops.audit import append_event
from labkeep.ops.leases import Held
from labkeep.ops.stores import PolicyInfo, policy_for, retain_until
from labkeep.results import Report, Result

if TYPE_CHECKING:
    from labkeep.keep import Keep
    from labkeep.ops.ingest import Progress
    from labkeep.storage.base import ContentStore

from labkeep.ops._copying import (
    _check_tree,
    _event,
    _fetch_to_tree,
    _File,
    _files,
    _flush,
    _fresh_copies,
    _lease,
    _message,
    _NoSource,
    _outcome,
    _pages,
    _quick_present,
    _Recorder,
    _reps,
    _row_of,
    _Run,
    _Scope,
    _scopes,
    _short_message,
    _sources,
    _tree_damaged,
    _tree_file,
    _tree_verified,
    _writable_tree,
    record,
)


def copy(
    keep: Keep,
    address: str,
    *,
    to: str,
    jobs: int | None = None,
    progress: Progress | None = None,
    on_result: Callable[[Result], None] | None = None,
    keep_results: bool = True,
) -> Report:
    """Copy the files of ``PROJECT[/DATASET[/PATH]][@VERSION]`` to the store *to*.

    Content the store already holds (verified) is ``notneeded``; the rest is read from
    the tree (or, when the tree has no good copy, from another store), sent with its
    SHA-256, verified by the store, and only then recorded.
    """
    scopes = _scopes(keep, address, "dataset.copy")
    run = _Run(
        keep, "copy", {"target": address, "store": to}, progress, on_result, keep_results, jobs
    )
    try:
        target = run.stores.by_name(to)
        if target.kind == "tree":
            raise UsageError(
                "copies into the tree are made by 'labkeep get'", hint=f"labkeep get {address}"
            )
        store = run.stores.get(target.id, require=True, write=True)
        assert store is not None
        run.start(scopes, address)
        for scope in scopes:
            with _lease(keep, scope) as held, _marker(keep, target.id, scope) as clean:
                _copy_scope(run, scope, target, store, held, absent=clean)
        _event(keep, "copy", address, run.report, store=to)
    finally:
        run.close()
    return run.report


@contextlib.contextmanager
def _marker(keep: Keep, store_id: int, scope: _Scope) -> Iterator[bool]:
    """A mark in the catalog while a copy of the dataset to the store runs; yields
    whether the last one finished (no mark left): then content the replica log does not
    know is not in the store, and the store need not look before each put. A copy that
    was killed leaves its mark: the next one looks first (and adopts what it finds)."""
    from labkeep.catalog import KeepState

    key = f"copying:{store_id}:{scope.dataset.id}"
    with keep.catalog.write() as session:
        clean = session.get(KeepState, key) is None
        if clean:
            session.add(KeepState(key=key, value=utcnow().isoformat()))
    yield clean
    with keep.catalog.write() as session:
        session.execute(delete(KeepState).where(KeepState.key == key))


def _copy_scope(
    run: _Run, scope: _Scope, target: Store, store: ContentStore, held: Held, *, absent: bool
) -> None:
    keep = run.keep
    recorder = _Recorder(keep, target, held)
    until = retain_until(target)
    #: content being sent now: a second file with it waits for the first
    inflight: dict[bytes, Future[Any]] = {}
    tree_present = scope.dataset.tree_state == "present"
    checked_by = "server" if store.capabilities.server_checksum else "hash"

    #: content the store holds damaged or lost (as last checked): replaced, not adopted
    bad: set[bytes] = set()

    def todo() -> Iterator[_File]:
        for page in _pages(_files(keep, scope)):
            with keep.catalog.read() as session:
                known = dict(
                    (bytes(sha), status)
                    for sha, status in session.execute(
                        select(Replica.sha256, Replica.status).where(
                            Replica.store_id == target.id,
                            Replica.sha256.in_({f.sha256 for f in page}),
                        )
                    )
                )
            held_ok = {sha for sha, status in known.items() if status == "ok"}
            bad.update(sha for sha, status in known.items() if status != "ok")
            for f in page:
                first = inflight.get(f.sha256)
                if first is not None and not isinstance(_outcome(first), BaseException):
                    recorder.waiting.append(
                        (run.result(f, "notneeded", store=target.name, same_as_file=True), f.size)
                    )
                elif f.sha256 in held_ok or f.sha256 in recorder.rows:
                    run.emit(run.result(f, "notneeded", store=target.name), f.size)
                else:
                    yield f

    def work(f: _File) -> str:
        """Put one file's content; returns where it was read from."""
        errors = []
        key = store.key_for(f.sha256)
        fresh = absent
        if f.sha256 in bad:  # a damaged copy under this key must not be taken as done
            with contextlib.suppress(RetentionLocked):  # (WORM: a new version goes on top)
                store.delete(key)
            fresh = True
        if tree_present and (path := _tree_file(keep, f)) is not None:
            try:
                store.put_file(
                    key,
                    path,
                    sha256=f.sha256,
                    size=f.size,
                    on_bytes=run.on_bytes(),
                    retain_until=until,
                    absent=fresh,
                )
                return "tree"
            except TransferCorrupted:
                # re-read here: a transfer that broke on the way is not the tree's damage
                state, how = _check_tree(keep, f, quick=False)
                if state != "ok":
                    _tree_damaged(keep, f, state)
                    errors.append(f"tree: {how}")
                    run.noted(f, f"the tree copy is damaged ({how}): recorded")
        with keep.catalog.read() as session:
            sources = _sources(session, run.stores, f.sha256, {target.id})
        for replica, row in sources:
            source = run.stores.get(row.id)
            if source is None:
                errors.append(f"store {row.name!r} is unreachable")
                continue
            try:
                store.put_stream(
                    key,
                    source.open(replica.key),
                    sha256=f.sha256,
                    size=f.size,
                    on_bytes=run.on_bytes(),
                    retain_until=until,
                    absent=fresh,
                )
                return row.name
            except TransferCorrupted:
                errors.append(f"the copy in {row.name!r} is damaged")
                run.mark(replica.id, "damaged", "hash")
                run.noted(f, f"the copy in store {row.name!r} is damaged: recorded")
            except NotFound:
                errors.append(f"the copy in {row.name!r} is missing")
                run.mark(replica.id, "missing", "hash")
                run.noted(f, f"the copy in store {row.name!r} is missing: recorded")
        raise _NoSource(
            "no good copy to copy from"
            + (f" ({'; '.join(errors)})" if errors else " (the tree does not hold it)")
            + f"; 'labkeep whereis {f.dataset}/{f.path}' shows every copy and what to do"
        )

    def submitted(f: _File, fut: Future[Any]) -> None:
        inflight[f.sha256] = fut

    def done(f: _File, outcome: Any) -> None:
        if inflight.get(f.sha256) is not None and inflight[f.sha256].done():
            del inflight[f.sha256]
        notes = run.notes_of(f)
        if isinstance(outcome, BaseException):
            run.emit(run.result(f, "error", _message(outcome), store=target.name))
            if isinstance(outcome, StoreUnavailable) or (
                isinstance(outcome, StorageError) and not isinstance(outcome, TransferCorrupted)
            ):
                _flush(run, recorder)
                raise outcome  # the target is gone or full: stop, keep what was recorded
            return
        recorder.add(f.sha256, f.size, store.key_for(f.sha256), until, checked_by)
        recorder.waiting.append((run.result(f, "ok", notes, store=target.name, source=outcome), 0))
        if recorder.due():
            _flush(run, recorder)

    try:
        run.parallel(todo(), work, done, submitted)
    finally:
        _flush(run, recorder)


def drop(
    keep: Keep,
    address: str,
    *,
    from_store: str,
    quick: bool = False,
    jobs: int | None = None,
    progress: Progress | None = None,
    on_result: Callable[[Result], None] | None = None,
    keep_results: bool = True,
) -> Report:
    """Remove the copies of ``PROJECT[/DATASET[/PATH]]`` from one store, file by file,
    only where the policy's ``min_copies`` good copies remain elsewhere (checked now).

    From the tree: whole sealed datasets only, when their project's policy allows
    dropping tree copies (cold data); ``get`` brings them back. Every drop is an event.
    """
    scopes = _scopes(keep, address, "dataset.drop")
    run = _Run(
        keep,
        "drop",
        {"target": address, "store": from_store},
        progress,
        on_result,
        keep_results,
        jobs,
    )
    try:
        source = run.stores.by_name(from_store)
        run.start(scopes, address)
        for scope in scopes:
            with keep.catalog.read() as session:
                policy = policy_for(session, scope.project.id, scope.project.name)
            with _lease(keep, scope) as held:
                if source.kind == "tree":
                    _drop_tree(run, scope, policy, held, quick=quick)
                else:
                    _drop_store(run, scope, source, policy, held, quick=quick)
        _event(keep, "drop", address, run.report, store=from_store, quick=quick)
    finally:
        run.close()
    return run.report


def _drop_tree(run: _Run, scope: _Scope, policy: PolicyInfo, held: Held, *, quick: bool) -> None:
    keep = run.keep
    if scope.prefix or scope.version is not None:
        raise UsageError(
            "the tree copy is dropped for whole datasets",
            hint=f"labkeep drop {scope.address} --from tree",
        )
    with keep.catalog.read() as session:
        dataset = session.get_one(Dataset, scope.dataset.id)
        sealed, state = dataset.sealed, dataset.tree_state
    if state != "present":
        for f in _files(keep, scope):
            run.emit(run.result(f, "notneeded", "the tree holds no copy", store="tree"), f.size)
        return
    if not sealed:
        raise UsageError(
            f"{scope.address} is not sealed: only a sealed dataset's tree copy can be dropped",
            hint=f"seal it first ('labkeep seal {scope.address}')",
        )
    if not policy.tree_droppable:
        raise UsageError(
            f"the policy of {scope.project.name} keeps tree copies",
            hint=f"allow it for cold data: 'labkeep policy set {scope.project.name} "
            "--tree-droppable'",
        )
    needed = policy.min_copies
    short = 0

    def work(f: _File) -> tuple[list[str], list[str]]:
        return _fresh_copies(run, f, exclude_store=None, tree=False, needed=needed, quick=quick)

    def done(f: _File, outcome: Any) -> None:
        nonlocal short
        if isinstance(outcome, BaseException):
            short += 1
            run.emit(run.result(f, "error", _message(outcome), store="tree"))
            return
        good, why = outcome
        if len(good) < needed:
            short += 1
            run.emit(
                run.result(
                    f,
                    "impossible",
                    _short_message(good, why, needed),
                    store="tree",
                    copies=good,
                ),
                f.size,
            )

    with keep.tree.lock(scope.project.name, scope.dataset.name, what="drop"):
        run.parallel(_files(keep, scope), work, done)
        if short:
            raise BelowPolicy(
                f"{short:,} files of {scope.address} have fewer than {needed} good copies "
                "outside the tree: nothing was dropped",
                hint=f"copy them first ('labkeep copy {scope.address} --to STORE'), or repair "
                f"damaged copies ('labkeep verify {scope.address} --store STORE --repair'); "
                f"'labkeep whereis {scope.address}' shows where they are",
            )
        held.check()
        with keep.catalog.write() as session:
            dataset = session.get_one(Dataset, scope.dataset.id)
            dataset.tree_state = "dropped"
            append_event(session, keep.actor, "drop.tree", scope.address, {"min_copies": needed})
        from labkeep.ops.seal import _protect

        raw = keep.tree.dataset_dir(scope.project.name, scope.dataset.name) / "raw"
        _protect(raw, False)
        for f in _files(keep, scope):
            path = keep.tree.file_path(f.project, f.name, f.path)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                run.emit(run.result(f, "error", f"cannot delete: {exc.strerror}", store="tree"))
                continue
            run.emit(run.result(f, "ok", store="tree"), f.size)
        for folder, _dirs, _names in os.walk(raw, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def _drop_store(
    run: _Run, scope: _Scope, source: Store, policy: PolicyInfo, held: Held, *, quick: bool
) -> None:
    keep = run.keep
    store = run.stores.get(source.id, require=True, write=True)
    assert store is not None
    needed = policy.min_copies
    tree_present = scope.dataset.tree_state == "present" and scope.version is None
    now = utcnow()

    def work(f: _File) -> Any:
        with keep.catalog.read() as session:
            found = _reps(session, Replica.store_id == source.id, Replica.sha256 == f.sha256)
            if not found:
                return "absent"
            replica = found[0]
            other = session.execute(
                select(Project.name, Dataset.name)
                .join(Dataset, Dataset.project_id == Project.id)
                .join(Entry, Entry.dataset_id == Dataset.id)
                .where(Entry.sha256 == f.sha256, Entry.dataset_id != f.dataset_id)
                .limit(1)
            ).first()
        if other is not None:
            return ("shared", f"{other[0]}/{other[1]}")
        if replica.retain_until is not None and replica.retain_until > now:
            return ("locked", replica.retain_until)
        return replica, _fresh_copies(
            run, f, exclude_store=source.id, tree=tree_present, needed=needed, quick=quick
        )

    def done(f: _File, outcome: Any) -> None:
        if isinstance(outcome, BaseException):
            run.emit(run.result(f, "error", _message(outcome), store=source.name))
            return
        if outcome == "absent":
            run.emit(
                run.result(f, "notneeded", f"not in {source.name!r}", store=source.name), f.size
            )
            return
        if outcome[0] == "shared":
            run.emit(
                run.result(
                    f,
                    "notneeded",
                    f"kept: the same content is part of {outcome[1]}",
                    store=source.name,
                ),
                f.size,
            )
            return
        if outcome[0] == "locked":
            run.emit(
                run.result(
                    f,
                    "impossible",
                    f"under WORM retention in {source.name!r} until {isoformat(outcome[1])}",
                    store=source.name,
                ),
                f.size,
            )
            return
        replica, (good, why) = outcome
        if len(good) < needed:
            run.emit(
                run.result(
                    f,
                    "impossible",
                    _short_message(good, why, needed),
                    store=source.name,
                    copies=good,
                ),
                f.size,
            )
            return
        held.check()
        with keep.catalog.write() as session:  # the row goes first, then the content
            session.execute(delete(Replica).where(Replica.id == replica.id))
        try:
            store.delete(replica.key)
        except RetentionLocked as exc:
            record(keep, source.id, [_row_of(replica)])  # still there: still a copy
            run.emit(run.result(f, "impossible", exc.message, store=source.name), f.size)
            return
        except (LabkeepError, OSError) as exc:
            run.emit(
                run.result(
                    f,
                    "error",
                    f"recorded as dropped, but deleting it failed: {_message(exc)} "
                    "(the content may remain in the store, unrecorded)",
                    store=source.name,
                ),
                f.size,
            )
            return
        run.emit(run.result(f, "ok", store=source.name, copies=good), f.size)

    run.parallel(_files(keep, scope), work, done)


def get(
    keep: Keep,
    address: str,
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
    on_result: Callable[[Result], None] | None = None,
    keep_results: bool = True,
) -> Report:
    """Bring the files of ``PROJECT[/DATASET]`` back into the tree from other stores.

    Files the tree holds with the catalog's size are ``notneeded``; the others are read
    from the nearest good replica, verified against the catalog's SHA-256 and put in
    place (through the seal, which is restored after). A dataset dropped from the tree is
    ``present`` again once every file is back.
    """
    scopes = _scopes(keep, address, "dataset.copy")
    for scope in scopes:
        if scope.prefix or scope.version is not None:
            raise UsageError(
                "get brings whole datasets back into the tree",
                hint="to copy a file or an old version out of the keep: "
                "'labkeep get P/D@N --to DIR'",
            )
    run = _Run(keep, "get", {"target": address}, progress, on_result, keep_results, jobs)
    try:
        run.start(scopes, address)
        for scope in scopes:
            with _lease(keep, scope) as held:
                _get_scope(run, scope, held)
        _event(keep, "get", address, run.report)
    finally:
        run.close()
    return run.report


def _get_scope(run: _Run, scope: _Scope, held: Held) -> None:
    keep = run.keep
    project, name = scope.project.name, scope.dataset.name
    with keep.catalog.read() as session:
        dataset = session.get_one(Dataset, scope.dataset.id)
        sealed = dataset.sealed
    failed = 0
    restored: list[str] = []
    with keep.tree.lock(project, name, what="get"):
        partial = str(keep.tree.prepare_dataset(project, name))
        missing = (f for f in _files(keep, scope) if not _quick_present(keep, run, f))

        def done(f: _File, outcome: Any) -> None:
            nonlocal failed
            if isinstance(outcome, BaseException):
                failed += 1
                run.emit(run.result(f, "error", _message(outcome), store="tree"))
            else:
                restored.append(f.path)
                run.emit(run.result(f, "ok", store="tree", source=outcome))

        with _writable_tree(keep, scope, sealed):
            run.parallel(missing, lambda f: _fetch_to_tree(run, f, partial), done)
        held.check()
        _tree_verified(keep, scope.dataset.id, restored)
        if not failed:
            with keep.catalog.write() as session:
                dataset = session.get_one(Dataset, scope.dataset.id)
                if dataset.tree_state != "present":
                    dataset.tree_state = "present"
                    append_event(session, keep.actor, "get.tree", scope.address, {})


def move(
    keep: Keep,
    address: str,
    *,
    from_store: str,
    to: str,
    quick: bool = False,
    jobs: int | None = None,
    progress: Progress | None = None,
    on_result: Callable[[Result], None] | None = None,
    keep_results: bool = True,
) -> Report:
    """Move copies from one store to another: :func:`copy` to *to*, then (only if every
    file got there) :func:`drop` from *from_store*, with all of drop's checks."""
    if from_store == to:
        raise UsageError("--from and --to name the same store")
    report = Report("move", info={"target": address, "from": from_store, "to": to},
                    keep_all=keep_results)  # fmt: skip
    copied = copy(keep, address, to=to, jobs=jobs, progress=progress, on_result=on_result,
                  keep_results=keep_results)  # fmt: skip
    _merge_into(report, copied)
    if copied.failed:
        report.info["dropped"] = False
        report.info["message"] = f"not dropped from {from_store}: some files were not copied"
        return report
    dropped = drop(keep, address, from_store=from_store, quick=quick, jobs=jobs,
                   progress=progress, on_result=on_result, keep_results=keep_results)  # fmt: skip
    _merge_into(report, dropped)
    report.info["dropped"] = True
    return report


def _merge_into(report: Report, part: Report) -> None:
    for status, n in part.counts().items():
        report.tally(status, n)
    report.results.extend(part.results)
