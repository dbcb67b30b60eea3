"""Where content lives: ``whereis`` for a file or a dataset, the 3-2-1 picture of a
dataset against its copy policy, the keep-wide list of datasets below their policy, and
the copy-on-seal rules run in the foreground (``policy apply``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, select

from labkeep.access import allowed
from labkeep.catalog import Dataset, Entry, Project, Replica, Store, TreeCheck, Version
from labkeep.clock import isoformat
from labkeep.errors import (
    Busy,
    LabkeepError,
    NotFound,
    StorageError,
    StoreUnavailable,
    UsageError,
)
from labkeep.names import parse_address
from labkeep.ops._access import find_dataset, find_project, project_resource
from labkeep.ops.stores import policy_for
from labkeep.results import Report, Result

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep
    from labkeep.ops.ingest import Progress

from labkeep.ops.copies import copy


def whereis(keep: Keep, address: str) -> dict[str, Any]:
    """Every store holding ``PROJECT/DATASET/PATH[@VERSION]`` (a file), when each copy was
    last checked and what was found; for a dataset, the same per store (files held of
    how many, the oldest check, WORM retention)."""
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    if addr.path is None:
        return copies_of(keep, address)
    with keep.catalog.read() as session:
        proj, dataset = find_dataset(
            keep,
            session,
            addr.project,
            addr.dataset,
            "dataset.read",
            version=addr.version,
            path=addr.path,
        )
        from labkeep.ops.listing import entries_at

        row = session.execute(
            select(Entry.size, Entry.sha256, Entry.valid_to, TreeCheck.checked_at, TreeCheck.status)
            .outerjoin(TreeCheck, TreeCheck.entry_id == Entry.id)
            .where(entries_at(dataset.id, addr.version), Entry.path == addr.path)
        ).first()
        if row is None:
            raise NotFound(f"no file {addr.path!r} in {addr.dataset_address}")
        size, digest, valid_to, t_at, t_status = row
        copies: list[dict[str, Any]] = []
        if valid_to is None and dataset.tree_state == "present":
            copies.append(
                {
                    "store": "tree",
                    "kind": "tree",
                    "tier": "hot",
                    "status": {"modified": "damaged"}.get(t_status or "", t_status or "unverified"),
                    "verified_at": isoformat(t_at),
                    "key": f"{proj.name}/{dataset.name}/{addr.path}",
                }
            )
        stores = {s.id: s for s in session.execute(select(Store)).scalars()}
        for r in session.execute(
            select(Replica).where(Replica.sha256 == digest).order_by(Replica.store_id)
        ).scalars():
            s = stores[r.store_id]
            copies.append(
                {
                    "store": s.name,
                    "kind": s.kind,
                    "tier": s.tier,
                    "status": r.status,
                    "verified_at": isoformat(r.verified_at),
                    "checked_by": r.checked_by,
                    "retain_until": isoformat(r.retain_until),
                    "offsite": bool(s.offsite),
                    "key": r.key,
                }
            )
        policy = policy_for(session, proj.id, proj.name)
    good = [c for c in copies if c["status"] in ("ok", "unverified")]
    return {
        "file": f"{addr.dataset_address}/{addr.path}",
        "size": int(size),
        "sha256": bytes(digest).hex(),
        "copies": copies,
        "good_copies": len(good),
        "min_copies": policy.min_copies,
    }


def copies_of(keep: Keep, address: str) -> dict[str, Any]:
    """A dataset's copies, store by store (see :func:`whereis`)."""
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.read() as session:
        proj, dataset = find_dataset(keep, session, addr.project, addr.dataset, "dataset.read")
        return dataset_copies(session, proj, dataset)


def dataset_copies(session: Session, proj: Project, dataset: Dataset) -> dict[str, Any]:
    """The 3-2-1 picture of one dataset's current files (the caller may read it)."""
    from labkeep.ops.verify import verification_of

    address = f"{proj.name}/{dataset.name}"
    current = and_(Entry.dataset_id == dataset.id, Entry.valid_to.is_(None))
    # the head version's counts (one row), not a count over the entries: that scanned
    # every entry of the dataset on each landing page (0.5 s at 10^6 files, bench/scale.py)
    head = session.execute(
        select(Version.n_files, Version.n_bytes).where(
            Version.dataset_id == dataset.id,
            Version.number == dataset.head_version,
            Version.state == "committed",
        )
    ).first()
    n_files, n_bytes = (head[0], head[1]) if head is not None else (0, 0)
    stores = {s.id: s for s in session.execute(select(Store)).scalars()}
    copies: list[dict[str, Any]] = []
    if dataset.tree_state == "present":
        fixity: dict[str, Any] = verification_of(session, dataset, address)
        copies.append(
            {
                "store": "tree",
                "kind": "tree",
                "tier": "hot",
                "medium": stores_tree_medium(stores),
                "offsite": False,
                "files": int(n_files),
                "complete": True,
                "verified_at": fixity["last_verify"],
                "ok": bool(fixity["ok"]) or not fixity["last_verify"],
                "damaged": int(fixity["files"].get("modified", 0))
                + int(fixity["files"].get("missing", 0)),
            }
        )
    holding = stores_holding_replicas(session, stores)
    rows = (
        session.execute(
            select(
                Replica.store_id,
                func.count(Entry.id),
                func.min(Replica.verified_at),
                func.min(Replica.retain_until),
                func.count(Entry.id).filter(Replica.status != "ok"),
            )
            .join(Replica, Replica.sha256 == Entry.sha256)
            .where(current, Replica.store_id.in_(holding))
            .group_by(Replica.store_id)
        ).all()
        if holding
        else []
    )
    for store_id, held, oldest, until, bad in rows:
        s = stores[store_id]
        copies.append(
            {
                "store": s.name,
                "kind": s.kind,
                "tier": s.tier,
                "medium": s.medium,
                "offsite": bool(s.offsite),
                "files": int(held),
                "complete": int(held) == int(n_files),
                "verified_at": isoformat(oldest),
                "ok": not bad,
                "damaged": int(bad or 0),
                "retain_until": isoformat(until),
            }
        )
    policy = policy_for(session, proj.id, proj.name)
    full = [c for c in copies if c["complete"] and c["ok"]]
    media = {c["medium"] for c in full}
    offsite = sum(1 for c in full if c["offsite"])
    below = []
    if n_files:
        if len(full) < policy.min_copies:
            below.append(f"{len(full)} of {policy.min_copies} copies")
        if len(media) < policy.min_media:
            below.append(f"{len(media)} of {policy.min_media} kinds of media")
        if offsite < policy.min_offsite:
            below.append(f"{offsite} of {policy.min_offsite} off-site copies")
    fix = None
    if below:
        candidates = [
            s.name
            for s in stores.values()
            if s.kind != "tree" and s.name not in {c["store"] for c in full}
        ]
        broken = [c["store"] for c in copies if not c["ok"]]
        if broken:  # the tree is repaired by verify alone, a store's copies with --store
            fix = f"labkeep verify {address}" + (
                " --repair" if broken[0] == "tree" else f" --store {broken[0]} --repair"
            )
        elif candidates:
            fix = f"labkeep copy {address} --to {candidates[0]}"
        else:
            fix = "add a store ('labkeep store add ...'), then copy the dataset to it"
    return {
        "dataset": address,
        "files": int(n_files),
        "bytes": int(n_bytes),
        "tree": dataset.tree_state,
        "copies": copies,
        "good_copies": len(full),
        "policy": policy.to_dict(),
        "below_policy": below,
        "fix": fix,
    }


def stores_holding_replicas(session: Session, stores: dict[int, Store]) -> list[int]:
    """The stores that hold any replica at all (one index probe each): the replica
    counts, which join every current entry of a dataset to the replica log, are only
    run for those (a keep with no copies yet, or a store just added, costs nothing)."""
    return [
        sid
        for sid, s in stores.items()
        if s.kind != "tree"
        and session.execute(select(Replica.id).where(Replica.store_id == sid).limit(1)).first()
    ]


def stores_tree_medium(stores: dict[int, Store]) -> str:
    for s in stores.values():
        if s.kind == "tree":
            return s.medium
    return "disk"


def policy_check(keep: Keep, project: str | None = None) -> list[dict[str, Any]]:
    """Every dataset (the principal may read) and its copies against its policy."""
    out = []
    with keep.catalog.read() as session:
        if project is not None:
            projects = [find_project(keep, session, project)]
        else:
            projects = list(session.execute(select(Project).order_by(Project.name)).scalars())
        for proj in projects:
            for dataset in session.execute(
                select(Dataset).where(Dataset.project_id == proj.id).order_by(Dataset.name)
            ).scalars():
                if not allowed(
                    keep.principal, "dataset.read", project_resource(session, proj, dataset)
                ):
                    continue
                out.append(dataset_copies(session, proj, dataset))
    return out


def policy_apply(
    keep: Keep,
    project: str | None = None,
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
    on_result: Callable[[Result], None] | None = None,
    keep_results: bool = True,
) -> Report:
    """Run the copy-on-seal rules now: copy every sealed dataset to the stores its
    project's policy names (what a background worker will do after each seal)."""
    report = Report("policy.apply", info={"project": project}, keep_all=keep_results)
    with keep.catalog.read() as session:
        if project is not None:
            projects = [find_project(keep, session, project)]
        else:
            projects = list(session.execute(select(Project).order_by(Project.name)).scalars())
        work: list[tuple[str, str]] = []
        for proj in projects:
            policy = policy_for(session, proj.id, proj.name)
            if not policy.on_seal:
                continue
            for dataset in session.execute(
                select(Dataset).where(Dataset.project_id == proj.id, Dataset.sealed.is_(True))
            ).scalars():
                if allowed(
                    keep.principal, "dataset.copy", project_resource(session, proj, dataset)
                ):
                    work.extend((f"{proj.name}/{dataset.name}", s) for s in policy.on_seal)
    #: stores that failed as a whole (missing, unreachable): later rules say so at once
    failed: dict[str, LabkeepError] = {}
    for address, store in work:
        try:
            if store in failed:
                raise failed[store]
            part = copy(
                keep,
                address,
                to=store,
                jobs=jobs,
                progress=progress,
                on_result=on_result,
                keep_results=keep_results,
            )
        except (NotFound, StoreUnavailable, StorageError, Busy, UsageError) as exc:
            # one rule failed (its store, or its dataset): the others still run
            if isinstance(exc, (NotFound, StoreUnavailable)):
                failed[store] = exc
            problem = Result(
                "copy",
                "error",
                dataset=address,
                message=f"copy-on-seal rule 'copy:{store}' of {address.split('/')[0]}: "
                f"{exc.message}",
                extra={"store": store, "error": exc.code},
            )
            if exc.hint:
                problem.extra["hint"] = exc.hint
            report.add(problem)
            if on_result is not None:
                on_result(problem)
            continue
        for status, n in part.counts().items():
            report.tally(status, n)
        report.results.extend(part.results)
    report.info["copies"] = [{"dataset": a, "store": s} for a, s in work]
    return report


def below_policy(session: Session, limit: int = 100) -> tuple[list[dict[str, Any]], int]:
    """Datasets with fewer good copies than their policy asks (the first *limit*, and how
    many): the 3-2-1 picture of the whole keep, from grouped catalog queries."""
    from labkeep.catalog import Policy

    stores = {s.id: s for s in session.execute(select(Store)).scalars()}
    tree_medium = stores_tree_medium(stores)
    policies = {p.project_id: p for p in session.execute(select(Policy)).scalars()}
    default = policies.get(None)
    current = Entry.valid_to.is_(None)
    # the head versions' file counts (a row per dataset), not a count over the entries
    n_files = dict(
        session.execute(
            select(Dataset.id, Version.n_files)
            .join(
                Version,
                (Version.dataset_id == Dataset.id) & (Version.number == Dataset.head_version),
            )
            .where(Version.state == "committed")
        ).all()
    )
    held: dict[int, list[tuple[int, int, int]]] = {}
    holding = stores_holding_replicas(session, stores)
    for dataset_id, store_id, n, bad in (
        session.execute(
            select(
                Entry.dataset_id,
                Replica.store_id,
                func.count(Entry.id),
                func.count(Entry.id).filter(Replica.status != "ok"),
            )
            .join(Replica, Replica.sha256 == Entry.sha256)
            .where(current, Replica.store_id.in_(holding))
            .group_by(Entry.dataset_id, Replica.store_id)
        )
        if holding
        else ()
    ):
        held.setdefault(dataset_id, []).append((store_id, int(n), int(bad)))
    listed: list[dict[str, Any]] = []
    count = 0
    for dataset_id, project_id, project, name, tree_state in session.execute(
        select(Dataset.id, Project.id, Project.name, Dataset.name, Dataset.tree_state)
        .join(Project, Project.id == Dataset.project_id)
        .order_by(Project.name, Dataset.name)
    ):
        files = int(n_files.get(dataset_id, 0))
        if not files:
            continue
        row = policies.get(project_id) or default
        need = (row.min_copies, row.min_media, row.min_offsite) if row else (1, 1, 0)
        full: list[tuple[str, str, bool]] = []
        if tree_state == "present":
            full.append(("tree", tree_medium, False))
        for store_id, n, bad in held.get(dataset_id, []):
            s = stores[store_id]
            if n == files and not bad:
                full.append((s.name, s.medium, bool(s.offsite)))
        media = {m for _, m, _ in full}
        offsite = sum(1 for *_, o in full if o)
        short = []
        if len(full) < need[0]:
            short.append(f"{len(full)} of {need[0]} copies")
        if len(media) < need[1]:
            short.append(f"{len(media)} of {need[1]} kinds of media")
        if offsite < need[2]:
            short.append(f"{offsite} of {need[2]} off-site copies")
        if not short:
            continue
        count += 1
        if len(listed) < limit:
            have = {n for n, _, _ in full}
            spare = [s.name for s in stores.values() if s.kind != "tree" and s.name not in have]
            listed.append(
                {
                    "dataset": f"{project}/{name}",
                    "copies": [n for n, _, _ in full],
                    "below": short,
                    "fix": f"labkeep copy {project}/{name} --to {spare[0]}"
                    if spare
                    else "add a store ('labkeep store add ...') and copy the dataset to it",
                }
            )
    return listed, count
