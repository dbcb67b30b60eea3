"""Seal and unseal: make a session's ``raw/`` write-once, or (loudly) undo that.

Both walk the whole of ``raw/`` and converge from any state a crash can leave:

1. under the dataset's lock, the intent (``seal`` or ``unseal``) is recorded durably in
   the dataset's ``.labkeep/seal-intent`` before ``raw/`` is touched;
2. every file and folder below ``raw/`` is protected (read-only bits, then the
   immutable flag where the process may set it; files before their folder) or cleared
   (the flag, then the bits; a folder before what is in it);
3. the catalog commits the new version (sealed or not) with its event;
4. the intent is removed.

A killed seal leaves a half-protected tree, a catalog that says unsealed and the intent:
``seal`` run again finishes it; ``unseal --force`` clears it (there is no version to
add: it reports that it repaired an interrupted seal, with an audit event); ``ingest``
refuses with an error naming both. A killed unseal leaves a catalog that says sealed:
``unseal --force`` again finishes it, ``seal`` re-protects what was cleared. Both also
repair a tree that was changed by hand (or by a version of labkeep without the intent):
``seal`` of a sealed dataset re-protects anything writable, ``unseal --force`` of an
unsealed one clears any protection left.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from labkeep.catalog import Dataset, Entry, Version
from labkeep.clock import utcnow
from labkeep.errors import StorageError, UsageError
from labkeep.integrity.immutable import get_immutable, set_immutable
from labkeep.names import MAX_MESSAGE, MAX_REASON, check_text, parse_address
from labkeep.ops._access import find_dataset
from labkeep.ops.audit import append_event, checkpoint
from labkeep.ops.manifests import store_manifest

if TYPE_CHECKING:
    from pathlib import Path

    from labkeep.keep import Keep

_WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


@dataclass
class SealResult:
    dataset: str
    action: str
    status: str
    version: int | None = None
    manifest_sha256: str | None = None
    immutable: bool = False
    warnings: list[str] = field(default_factory=list)
    #: what was repaired, when an interrupted seal/unseal (or a hand-made change) was found
    message: str | None = None
    #: replicate jobs queued by the project's copy-on-seal rule
    jobs: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "action": self.action,
            "status": self.status,
            "dataset": self.dataset,
            "version": self.version,
            "manifest_sha256": self.manifest_sha256,
            "immutable": self.immutable,
            "warnings": self.warnings,
        }
        if self.message:
            record["message"] = self.message
        if self.jobs:
            record["jobs"] = self.jobs
        return record


class _Protection:
    """One walk over raw/ that protects (seal) or clears (unseal) every file and folder."""

    def __init__(self, on: bool) -> None:
        self.on = on
        #: files and folders whose bits or flag this walk changed
        self.changed = 0
        #: whether the immutable flag could be set (sealing)
        self.immutable = True
        self.warnings: list[str] = []

    def walk(self, raw: Path) -> None:
        """Sealing marks files before their folder (an immutable folder accepts no new
        names), deepest folders first; unsealing clears a folder before what is in it.
        Memory does not grow with the number of files."""
        if self.on:
            for folder, _dirs, names in os.walk(raw, topdown=False):
                for name in names:
                    self.one(os.path.join(folder, name))
                self.one(folder)
        else:
            for folder, _dirs, names in os.walk(raw):
                self.one(folder)
                for name in names:
                    self.one(os.path.join(folder, name))

    def one(self, path: str) -> None:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return
        if not self.on:
            self._clear_flag(path)
        mode = stat.S_IMODE(st.st_mode)
        new_mode = mode & ~_WRITE_BITS if self.on else mode | stat.S_IWUSR
        if new_mode != mode:
            os.chmod(path, new_mode)
            self.changed += 1
        if self.on and self.immutable:
            try:
                self.changed += set_immutable(path, True)
            except OSError as exc:
                self.immutable = False
                self.warnings.append(
                    f"could not set the immutable flag (chattr +i): {exc.strerror}; raw/ is "
                    "read-only by permissions only (run labkeep as root or with "
                    "CAP_LINUX_IMMUTABLE on ext4/xfs/btrfs for write-once at inode level)"
                )

    def _clear_flag(self, path: str) -> None:
        try:
            self.changed += set_immutable(path, False)
        except OSError as exc:
            if get_immutable(path):
                raise StorageError(
                    f"cannot clear the immutable flag of {path}: {exc.strerror}",
                    hint="run 'labkeep unseal --force' as root (it needs CAP_LINUX_IMMUTABLE)",
                ) from exc


def _protect(raw: Path, on: bool) -> _Protection:
    protection = _Protection(on)
    if on and not raw.is_dir():
        raw.mkdir(parents=True)
    if raw.is_dir():
        protection.walk(raw)
    return protection


def seal(keep: Keep, address: str, *, message: str = "") -> SealResult:
    """Seal a dataset: raw/ read-only and immutable, a version and an event.

    On a dataset the catalog already lists as sealed, it makes sure raw/ is protected
    (finishing an interrupted unseal's undoing, or a hand-made change) and says so.
    """
    check_text(message, "the message", MAX_MESSAGE)
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    project, name, target = addr.project, addr.dataset, addr.dataset_address
    with keep.tree.lock(project, name, what="seal"):
        with keep.catalog.read() as session:
            _, dataset = find_dataset(keep, session, project, name, "dataset.seal")
            sealed, head = dataset.sealed, dataset.head_version
            if (
                not sealed
                and session.execute(
                    select(Version.id).where(
                        Version.dataset_id == dataset.id, Version.state == "open"
                    )
                ).first()
            ):
                raise UsageError(
                    f"{target} has an unfinished ingest",
                    hint="run the same 'labkeep ingest' again to finish it, then seal",
                )
        raw = keep.tree.dataset_dir(project, name) / "raw"
        if sealed:
            return _reprotect(keep, project, name, raw, head)
        keep.tree.set_seal_intent(project, name, "seal")
        done = _protect(raw, True)
        with keep.catalog.write() as session:
            proj, dataset = find_dataset(
                keep, session, project, name, "dataset.seal", for_update=True
            )
            manifest_sha = store_manifest(keep, session, project, name, dataset.id)
            number = _new_version(
                session, dataset, "seal", keep.actor, message or "sealed", manifest_sha
            )
            dataset.sealed = True
            dataset.sealed_at = utcnow()
            event = append_event(
                session,
                keep.actor,
                "seal",
                target,
                {"version": number, "manifest_sha256": manifest_sha, "immutable": done.immutable},
            )
            # the copy-on-seal rule: replicate jobs that exist exactly when the seal does
            from labkeep.ops.job_kinds import queue_replication
            from labkeep.ops.stores import policy_for

            stores = policy_for(session, proj.id, proj.name).on_seal
            jobs = queue_replication(keep, session, project, name, stores) if stores else []
        checkpoint(keep, event)
        keep.tree.set_seal_intent(project, name, None)
    return SealResult(
        target, "seal", "ok", number, manifest_sha, done.immutable, done.warnings, jobs=jobs
    )


def _reprotect(keep: Keep, project: str, name: str, raw: Path, head: int) -> SealResult:
    """Seal of a sealed dataset: protect whatever is writable; an event if anything was."""
    target = f"{project}/{name}"
    interrupted = keep.tree.seal_intent(project, name)
    done = _protect(raw, True)
    if not done.changed and interrupted != "unseal":
        keep.tree.set_seal_intent(project, name, None)
        return SealResult(target, "seal", "notneeded", head, immutable=done.immutable)
    if interrupted == "unseal":
        text = (
            f"an unseal of {target} was interrupted; it stays sealed: {done.changed} files "
            "and folders under raw/ were protected again"
        )
    else:
        text = (
            f"{target} was sealed, but {done.changed} files and folders under raw/ were "
            "writable (changed by hand?): protected again"
        )
    with keep.catalog.write() as session:
        find_dataset(keep, session, project, name, "dataset.seal", for_update=True)
        event = append_event(
            session,
            keep.actor,
            "seal-repair",
            target,
            {"version": head, "protected": done.changed, "interrupted": interrupted},
        )
    checkpoint(keep, event)
    keep.tree.set_seal_intent(project, name, None)
    return SealResult(target, "seal", "ok", head, None, done.immutable, done.warnings, message=text)


def unseal(keep: Keep, address: str, *, force: bool = False, reason: str = "") -> SealResult:
    """Make raw/ writable again. Needs ``force``; recorded as a version and an event.

    On a dataset the catalog lists as unsealed, it clears any protection left in raw/
    (an interrupted seal, or a hand-made change) and says so; else "notneeded".
    """
    check_text(reason, "the reason", MAX_REASON)
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    project, name, target = addr.project, addr.dataset, addr.dataset_address
    if not force:
        raise UsageError(
            f"unsealing {target} makes its raw data writable again",
            hint="if this is truly needed, repeat with --force (it is recorded in the audit log)",
        )
    with keep.tree.lock(project, name, what="unseal"):
        with keep.catalog.read() as session:
            _, dataset = find_dataset(keep, session, project, name, "dataset.unseal")
            sealed, head = dataset.sealed, dataset.head_version
            dropped = dataset.tree_state != "present"
        if dropped:
            raise UsageError(
                f"the tree holds no copy of {target} (it was dropped: cold data)",
                hint=f"bring it back first ('labkeep get {target}'), then unseal it",
            )
        raw = keep.tree.dataset_dir(project, name) / "raw"
        if not sealed:
            return _unprotect_unsealed(keep, project, name, raw, head, reason)
        keep.tree.set_seal_intent(project, name, "unseal")
        _protect(raw, False)
        with keep.catalog.write() as session:
            _, dataset = find_dataset(
                keep, session, project, name, "dataset.unseal", for_update=True
            )
            manifest_sha = store_manifest(keep, session, project, name, dataset.id)
            number = _new_version(
                session, dataset, "unseal", keep.actor, reason or "unsealed (forced)", manifest_sha
            )
            dataset.sealed = False
            dataset.sealed_at = None
            event = append_event(
                session,
                keep.actor,
                "unseal",
                target,
                {"version": number, "reason": reason, "manifest_sha256": manifest_sha},
            )
        checkpoint(keep, event)
        keep.tree.set_seal_intent(project, name, None)
    return SealResult(target, "unseal", "ok", number, manifest_sha)


def _unprotect_unsealed(
    keep: Keep, project: str, name: str, raw: Path, head: int, reason: str
) -> SealResult:
    """Unseal of an unsealed dataset: clear whatever protection is left in raw/."""
    target = f"{project}/{name}"
    interrupted = keep.tree.seal_intent(project, name)
    done = _protect(raw, False)
    if not done.changed and interrupted != "seal":
        keep.tree.set_seal_intent(project, name, None)
        return SealResult(target, "unseal", "notneeded", head)
    if interrupted == "seal":
        text = (
            f"undid an interrupted seal of {target} (it was never recorded as sealed): "
            f"{done.changed} files and folders under raw/ made writable again"
        )
    else:
        text = (
            f"{target} was not sealed, but {done.changed} files and folders under raw/ were "
            "write-protected (an interrupted seal of an older labkeep, or a change by hand): "
            "made writable again"
        )
    with keep.catalog.write() as session:
        find_dataset(keep, session, project, name, "dataset.unseal", for_update=True)
        event = append_event(
            session,
            keep.actor,
            "unseal-repair",
            target,
            {
                "version": head,
                "cleared": done.changed,
                "interrupted": interrupted,
                "reason": reason,
            },
        )
    checkpoint(keep, event)
    keep.tree.set_seal_intent(project, name, None)
    return SealResult(target, "unseal", "ok", head, message=text)


def _new_version(
    session: Any, dataset: Dataset, kind: str, author: str, message: str, manifest_sha: str
) -> int:
    files, size = session.execute(
        select(func.count(Entry.id), func.coalesce(func.sum(Entry.size), 0)).where(
            Entry.dataset_id == dataset.id, Entry.valid_to.is_(None)
        )
    ).one()
    highest = session.execute(
        select(func.max(Version.number)).where(Version.dataset_id == dataset.id)
    ).scalar_one()
    number = int(highest or 0) + 1
    now = utcnow()
    session.add(
        Version(
            dataset_id=dataset.id,
            number=number,
            state="committed",
            kind=kind,
            author=author,
            message=message,
            created_at=now,
            committed_at=now,
            n_files=int(files),
            n_bytes=int(size),
            manifest_sha256=manifest_sha,
        )
    )
    dataset.head_version = number
    return number
