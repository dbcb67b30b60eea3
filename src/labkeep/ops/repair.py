"""Verify and repair copies: the replicas in one store (re-read and re-hashed, or with
``quick`` their size and the store's own SHA-256), and damaged or missing tree files
replaced from good replicas (through the seal, which is restored)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from labkeep.catalog import Dataset, Replica, Store
from labkeep.errors import (
    LabkeepError,
    NotFound,
    RetentionLocked,
    StoreUnavailable,
    TransferCorrupted,
    UsageError,
)
from labkeep.ops.audit import append_event, checkpoint
from labkeep.ops.stores import retain_until
from labkeep.results import Report, Result

if TYPE_CHECKING:
    from labkeep.keep import Keep
    from labkeep.ops.ingest import Progress
    from labkeep.storage.base import ContentStore

from labkeep.ops._copying import (
    _RETRY,
    _check_replica,
    _event,
    _fetch_to_tree,
    _File,
    _files,
    _lease,
    _message,
    _Rep,
    _reps,
    _Run,
    _Scope,
    _scopes,
    _sources,
    _tree_file,
    _tree_verified,
    _writable_tree,
    record,
)


def repair_tree(
    keep: Keep,
    address: str,
    paths: list[str],
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> Report:
    """Replace damaged or missing tree files of one dataset from good replicas (the
    seal is written through under a recorded event and restored)."""
    scopes = _scopes(keep, address, "dataset.repair")
    (scope,) = scopes
    run = _Run(
        keep, "repair", {"target": address, "store": "tree"}, progress, on_result, True, jobs
    )
    try:
        with _lease(keep, scope):
            with keep.catalog.read() as session:
                sealed = session.get_one(Dataset, scope.dataset.id).sealed
            wanted = set(paths)
            files = [f for f in _files(keep, scope) if f.path in wanted]
            repaired: list[str] = []

            def done(f: _File, outcome: Any) -> None:
                if isinstance(outcome, BaseException):
                    run.emit(run.result(f, "error", _message(outcome), store="tree"))
                else:
                    repaired.append(f.path)
                    run.emit(run.result(f, "ok", "repaired", store="tree", source=outcome))

            project, name = scope.project.name, scope.dataset.name
            with keep.tree.lock(project, name, what="repair"):
                partial = str(keep.tree.prepare_dataset(project, name))
                with _writable_tree(keep, scope, sealed):
                    run.parallel(files, lambda f: _fetch_to_tree(run, f, partial), done)
                _tree_verified(keep, scope.dataset.id, repaired)
        if repaired:
            with keep.catalog.write() as session:
                event = append_event(
                    session,
                    keep.actor,
                    "repair",
                    scope.address,
                    {
                        "store": "tree",
                        "files": len(repaired),
                        "sealed": sealed,
                        "paths": repaired[:100],
                    },
                )
            checkpoint(keep, event)
    finally:
        run.close()
    return run.report


def verify_store(
    keep: Keep,
    address: str,
    *,
    store: str,
    quick: bool = False,
    repair: bool = False,
    jobs: int | None = None,
    progress: Progress | None = None,
    on_result: Callable[[Result], None] | None = None,
    keep_results: bool = True,
) -> Report:
    """Re-read and re-hash the replicas that *store* holds of ``PROJECT[/DATASET]``.

    With *quick*, trust the store: its object's size and its own SHA-256 (said so in
    every record). With *repair*, a damaged or missing replica is replaced from a good
    copy (a WORM copy under retention cannot be replaced, and says until when).
    """
    action = "dataset.repair" if repair else "dataset.verify"
    scopes = _scopes(keep, address, action)
    run = _Run(
        keep,
        "verify",
        {"target": address, "store": store, "quick": quick},
        progress,
        on_result,
        keep_results,
        jobs,
    )
    try:
        target = run.stores.by_name(store)
        if target.kind == "tree":
            raise UsageError("the tree is verified by 'labkeep verify' without --store")
        backend_ = run.stores.get(target.id, require=True, write=repair)
        assert backend_ is not None
        run.start(scopes, address)
        for scope in scopes:
            with _lease(keep, scope):
                _verify_scope(run, scope, target, backend_, quick=quick, repair=repair)
        states = run.report.states()
        run.report.info["states"] = {s: states.get(s, 0) for s in ("ok", "modified", "missing")}
        _event(
            keep,
            "verify.store",
            address,
            run.report,
            store=store,
            quick=quick,
            **run.report.info["states"],
        )
    finally:
        run.close()
    return run.report


def _verify_scope(
    run: _Run, scope: _Scope, target: Store, store: ContentStore, *, quick: bool, repair: bool
) -> None:
    keep = run.keep
    seen: set[bytes] = set()
    tree_present = scope.dataset.tree_state == "present" and scope.version is None
    until = retain_until(target)

    def work(f: _File) -> Any:
        with keep.catalog.read() as session:
            found = _reps(session, Replica.store_id == target.id, Replica.sha256 == f.sha256)
        if not found:
            return None
        replica = found[0]
        state, how = _check_replica(run, replica, target, f, quick=quick)
        if state == "unreachable":
            raise StoreUnavailable(how, hint=_RETRY)
        fixed = None
        if state != "ok" and repair:
            fixed = _repair_replica(run, f, replica, target, store, until, tree_present)
        if not (fixed and fixed[0]):  # a repaired replica was recorded as good already
            run.mark(replica.id, state, how if state == "ok" else ("size" if quick else "hash"))
        return state, how, fixed

    def done(f: _File, outcome: Any) -> None:
        if isinstance(outcome, StoreUnavailable):
            raise outcome
        if isinstance(outcome, BaseException):
            run.emit(run.result(f, "error", _message(outcome), store=target.name))
            return
        if outcome is None:
            run.emit(
                run.result(f, "notneeded", f"no copy in {target.name!r}", store=target.name),
                f.size,
            )
            return
        state, how, fixed = outcome
        if state == "ok":
            result = run.result(f, "ok", store=target.name, checked_by=how)
            result.state = "ok"
        else:
            shown = "modified" if state == "damaged" else "missing"
            message = f"{how} (store {target.name!r})"
            if fixed is not None:
                ok, note = fixed
                message += f"; {note}"
                result = run.result(f, "ok" if ok else "error", message, store=target.name)
                if ok:
                    result.extra["repaired"] = True
                    run.report.info["repaired"] = run.report.info.get("repaired", 0) + 1
            else:
                result = run.result(f, "error", message, store=target.name)
            result.state = shown
        if f.sha256 in seen:
            result.extra["same_content_as_earlier_file"] = True
        seen.add(f.sha256)
        if len(seen) > 100_000:
            seen.clear()
        run.emit(result, f.size)

    run.parallel(_files(keep, scope), work, done)


def _repair_replica(
    run: _Run,
    f: _File,
    replica: _Rep,
    target: Store,
    store: ContentStore,
    until: datetime | None,
    tree_present: bool,
) -> tuple[bool, str]:
    """Replace a damaged or missing replica from a good copy; (done, what happened)."""
    keep = run.keep
    note = ""
    try:
        store.delete(replica.key)
    except NotFound:
        pass  # nothing there to remove
    except RetentionLocked:
        # WORM: the damaged version cannot be removed before its retention ends; a good
        # version goes on top of it (a versioned bucket), and reads get that one
        note = " (the damaged version stays under its retention, below the good one)"
    except (LabkeepError, OSError) as exc:
        return False, f"cannot remove the damaged copy: {_message(exc)}"
    key = store.key_for(f.sha256)
    if tree_present and (path := _tree_file(keep, f)) is not None:
        try:
            store.put_file(key, path, sha256=f.sha256, size=f.size, retain_until=until, absent=True)
            record(keep, target.id, [_fresh_row(f, key, until, store)])
            return True, "repaired from the tree" + note
        except TransferCorrupted:
            pass
    with keep.catalog.read() as session:
        sources = _sources(session, run.stores, f.sha256, {target.id})
    for other, row in sources:
        source = run.stores.get(row.id)
        if source is None:
            continue
        try:
            store.put_stream(
                key,
                source.open(other.key),
                sha256=f.sha256,
                size=f.size,
                retain_until=until,
                absent=True,
            )
        except (TransferCorrupted, NotFound):
            continue
        record(keep, target.id, [_fresh_row(f, key, until, store)])
        return True, f"repaired from {row.name!r}{note}"
    tried = (["the tree"] if tree_present else []) + [repr(r.name) for _, r in sources]
    return False, "no good copy to repair it from" + (
        f" (tried: {', '.join(tried)})" if tried else " (no other copy is recorded)"
    )


def _fresh_row(f: _File, key: str, until: datetime | None, store: ContentStore) -> dict[str, Any]:
    return {
        "sha256": f.sha256,
        "size": f.size,
        "key": key,
        "retain_until": until,
        "checked_by": "server" if store.capabilities.server_checksum else "hash",
    }
