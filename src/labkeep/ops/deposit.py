"""Deposit: publish a sealed dataset version to an InvenioRDM repository (Zenodo) for a DOI.

``publish P/D[@N] --to zenodo`` goes through InvenioRDM's records API, one recorded step
after the other (table ``deposits``, one row per dataset, target and endpoint; table
``deposit_files``, one row per file key):

1. **draft**: ``POST /api/records`` with the metadata mapped from the dataset's DataCite
   JSON (:func:`invenio_metadata`); the record id is recorded at once. A rerun finds the
   draft again (``GET .../draft``) and sends the metadata again (edits in between count).
2. **DOI**: ``POST .../draft/pids/doi`` reserves it; recorded.
3. **files**: what the repository's draft already holds is compared with the plan (``GET
   .../draft/files``): a file committed with our MD5 is kept (and skipped), anything else
   (a half-sent file, a key not in the plan) is deleted. The rest is initialised (``POST
   .../draft/files``), sent (``PUT .../content``, streamed from the keep, never whole in
   memory, re-sent whole when the connection breaks) and committed (``POST .../commit``);
   the MD5 the repository returns must equal the one computed while sending, which is
   kept in ``digests`` (with SHA-512) and on the file's row.
4. **publish**: ``POST .../draft/actions/publish``. When the answer is lost (a timeout, a
   dropped connection) the record is looked up (``GET /api/records/{id}``) before the
   publish is tried again, so it is never published twice.
5. the DOI, the record URL and the time are recorded on the dataset (``datasets.doi``,
   ``record_url``, ``published_at``) and in an audit event ``publish``.

When a version has more files than the repository takes in one record (Zenodo: 100;
``max_files`` in ``[publish.NAME]``), each top folder is sent as one zip (stored, not
compressed; ZIP64; members in path order with their own times, so that the same version
always makes the same bytes), built in the keep's staging folder, and the result says so.

Tokens come from ``LABKEEP_<NAME>_TOKEN`` (``LABKEEP_<NAME>_SANDBOX_TOKEN`` with
``--sandbox``) or an INI credentials file (``credentials_file``, section ``profile``, keys
``token`` and ``sandbox_token``); they are never stored in the catalog, printed or logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from sqlalchemy import select

from labkeep.catalog import Dataset, Deposit, DepositFile, Digest, Version, add_unique
from labkeep.clock import utcnow
from labkeep.errors import (
    AlreadyPublished,
    IntegrityError,
    LabkeepError,
    UsageError,
)
from labkeep.names import address_text, parse_address
from labkeep.ops._access import find_dataset
from labkeep.ops._deposit_plan import (
    CHUNK,
    Plan,
    Source,
    Target,
    invenio_metadata,
    make_plan,
    metadata_problems,
    remove_staging,
    target_of,
    token_for,
    zip_folder,
)
from labkeep.ops.audit import append_event, checkpoint
from labkeep.results import Result

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from labkeep.keep import Keep
    from labkeep.ops._invenio import InvenioClient


class Progress(Protocol):
    def start(self, total_files: int, total_bytes: int) -> None: ...
    def advance(self, files: int, nbytes: int) -> None: ...


# -- results ----------------------------------------------------------------------------


@dataclass
class DepositResult:
    """What ``publish`` did (or, with ``dry_run``, would do)."""

    dataset: str
    version: int
    target: str
    sandbox: bool
    status: str  # ok | dry-run
    state: str
    record_id: str | None = None
    doi: str | None = None
    record_url: str | None = None
    files_total: int = 0
    files_sent: int = 0
    files_skipped: int = 0
    bytes_total: int = 0
    packaged: bool = False
    source_files: int = 0
    retries: int = 0
    message: str = ""
    metadata: dict[str, Any] | None = None
    files: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "action": "publish",
            "status": self.status,
            "dataset": self.dataset,
            "version": self.version,
            "target": self.target,
            "sandbox": self.sandbox,
            "state": self.state,
            "record_id": self.record_id,
            "doi": self.doi,
            "record_url": self.record_url,
            "files_total": self.files_total,
            "files_sent": self.files_sent,
            "files_skipped": self.files_skipped,
            "bytes": self.bytes_total,
            "packaged": self.packaged,
            "source_files": self.source_files,
            "retries": self.retries,
            "message": self.message,
        }
        if self.metadata is not None:
            record["metadata"] = self.metadata
            record["files"] = self.files
        return record


@dataclass
class DepositStatus:
    """One deposit of a dataset, as ``publish --status`` shows it."""

    dataset: str
    version: int
    target: str
    sandbox: bool
    state: str
    step: str
    record_id: str | None
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    packaged: bool
    doi: str | None
    record_url: str | None
    last_error: str
    updated_at: datetime
    published_at: datetime | None

    @property
    def summary(self) -> str:
        if self.state == "published":
            return f"published, DOI {self.doi}" if self.doi else "published"
        if self.state == "uploading":
            return f"uploading {self.files_done:,}/{self.files_total:,}"
        if self.state == "new":
            return "not started"
        if self.state == "review":
            return "submitted to a community for review"
        return self.state

    def to_dict(self) -> dict[str, Any]:
        from labkeep.clock import isoformat

        return {
            "dataset": self.dataset,
            "version": self.version,
            "target": self.target,
            "sandbox": self.sandbox,
            "state": self.state,
            "summary": self.summary,
            "step": self.step,
            "record_id": self.record_id,
            "files_done": self.files_done,
            "files_total": self.files_total,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "packaged": self.packaged,
            "doi": self.doi,
            "record_url": self.record_url,
            "last_error": self.last_error,
            "updated_at": isoformat(self.updated_at),
            "published_at": isoformat(self.published_at),
        }


# -- use cases --------------------------------------------------------------------------


def _source(keep: Keep, session: Session, address: str, action: str) -> Source:
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    if addr.path:
        raise UsageError(
            f"a whole dataset version is published, not {address!r}",
            hint="use PROJECT/DATASET[@N]",
        )
    _, dataset = find_dataset(keep, session, addr.project, addr.dataset, action)
    number = addr.version if addr.version is not None else dataset.head_version
    committed = session.execute(
        select(Version.id).where(
            Version.dataset_id == dataset.id,
            Version.number == number,
            Version.state == "committed",
        )
    ).first()
    if committed is None or number < 1:
        raise UsageError(
            f"{addr.dataset_address} has no committed version {number}"
            if number >= 1
            else f"{addr.dataset_address} has no saved version yet",
            hint=f"see its versions with 'labkeep log {addr.dataset_address}'",
        )
    if not dataset.sealed:
        raise UsageError(
            f"{addr.dataset_address} is not sealed: only a sealed dataset (a release) is "
            "published, so that the record holds exactly what its DOI names",
            hint=f"make a release first: labkeep release {addr.dataset_address}@{number} "
            "--name NAME",
        )
    return Source(addr.project, addr.dataset, dataset.id, number, dataset.kind == "release")


def publish(
    keep: Keep,
    address: str,
    *,
    to: str,
    sandbox: bool = False,
    dry_run: bool = False,
    credentials: str | None = None,
    progress: Progress | None = None,
    on_result: Callable[[Result], None] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> DepositResult:
    """Deposit ``PROJECT/DATASET[@N]`` (sealed; the head version by default) in the
    repository *to* (a ``[publish.NAME]`` target) and publish it, or, with *dry_run*,
    say what would be sent (nothing is sent or recorded). Running it again after any
    failure continues where it stopped."""
    target = target_of(keep, to, sandbox=sandbox)
    with keep.catalog.read() as session:
        source = _source(keep, session, address, "dataset.publish")
        existing = _deposit_row(session, source.dataset_id, target)
        if existing is not None and existing.state == "published":
            raise AlreadyPublished(
                f"{source.project}/{source.dataset} is already published in {target.label}"
                + (f" (DOI {existing.doi})" if existing.doi else "")
                + (f": {existing.record_url}" if existing.record_url else ""),
                hint="a new version of a published record is not supported yet: make a new "
                "release of the new version and publish that",
            )
        if existing is not None and existing.version != source.version:
            raise UsageError(
                f"a deposit of {source.project}/{source.dataset}@{existing.version} in "
                f"{target.label} is not finished",
                hint=f"finish it: labkeep publish {source.project}/{source.dataset}"
                f"@{existing.version} --to {target.name}" + (" --sandbox" if sandbox else ""),
            )
    doc = keep.datacite(source.address)
    problems = metadata_problems(doc)
    if problems:
        raise UsageError(
            f"{source.project}/{source.dataset} cannot be published yet: " + "; ".join(problems),
            hint=f"set them with 'labkeep meta edit {source.project}/{source.dataset}'",
        )
    body = _draft_body(doc)
    plan = make_plan(keep, source.address, release=source.release, max_files=target.max_files)
    note = _packaged_note(plan, target)
    if dry_run:
        return DepositResult(
            f"{source.project}/{source.dataset}",
            source.version,
            target.name,
            sandbox,
            "dry-run",
            "not sent",
            files_total=len(plan.files),
            bytes_total=plan.bytes,
            packaged=plan.packaged,
            source_files=plan.source_files,
            message=(note + " " if note else "") + f"nothing was sent to {target.url}",
            metadata=body,
            files=[p.to_dict() for p in plan.files],
        )
    token = token_for(target, credentials)
    from labkeep.ops._invenio import InvenioClient, RetryPolicy
    from labkeep.ops.leases import lease

    client = InvenioClient(
        target.url,
        token,
        timeout=target.timeout,
        retry=RetryPolicy(target.attempts, target.retry_base, target.retry_cap),
        sleep=sleep or _sleep,
        name=target.label,
    )
    del token
    name = f"publish:{source.dataset_id}:{target.name}" + (":sandbox" if sandbox else "")
    what = f"a publish of {source.project}/{source.dataset} to {target.label}"
    # one process per deposit: two at once would each make a draft
    with client, lease(keep, name, what=what):
        deposit_id = _start(keep, source, target, plan)
        try:
            return _run(
                keep, client, source, target, deposit_id, body, plan, note, progress, on_result
            )
        except LabkeepError as exc:
            _record(keep, deposit_id, last_error=exc.message)
            raise


def _sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)


def _packaged_note(plan: Plan, target: Target) -> str:
    if not plan.packaged:
        return ""
    zips = sum(1 for p in plan.files if p.kind == "zip")
    return (
        f"{plan.source_files:,} files are more than the {target.max_files} files a record of "
        f"{target.label} takes: they are sent as {zips} zip file(s), one per top folder"
    )


def _draft_body(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "access": {"record": "public", "files": "public"},
        "files": {"enabled": True},
        "metadata": invenio_metadata(doc),
    }


def _deposit_row(session: Session, dataset_id: int, target: Target) -> Deposit | None:
    return session.execute(
        select(Deposit).where(
            Deposit.dataset_id == dataset_id,
            Deposit.target == target.name,
            Deposit.sandbox.is_(target.sandbox),
        )
    ).scalar_one_or_none()


def _start(keep: Keep, source: Source, target: Target, plan: Plan) -> int:
    """The deposit's row (made with its file plan on the first run)."""
    with keep.catalog.write() as session:
        row = _deposit_row(session, source.dataset_id, target)
        if row is None:
            now = utcnow()
            row = Deposit(
                dataset_id=source.dataset_id,
                version=source.version,
                target=target.name,
                sandbox=target.sandbox,
                base_url=target.url,
                state="new",
                step="create",
                packaged=plan.packaged,
                files_total=len(plan.files),
                files_done=0,
                bytes_total=plan.bytes,
                bytes_done=0,
                last_error="",
                created_by=keep.actor,
                created_at=now,
                updated_at=now,
            )
            if not add_unique(session, row):  # another process started it: use theirs
                found = _deposit_row(session, source.dataset_id, target)
                assert found is not None
                return found.id
            session.flush()
            for planned in plan.files:
                session.add(
                    DepositFile(
                        deposit_id=row.id,
                        key=planned.key,
                        kind=planned.kind,
                        source=planned.source,
                        size=planned.size,
                        sha256=bytes.fromhex(planned.sha256) if planned.sha256 else None,
                        state="pending",
                    )
                )
        return row.id


def _record(keep: Keep, deposit_id: int, **values: Any) -> None:
    with keep.catalog.write() as session:
        row = session.get_one(Deposit, deposit_id)
        for name, value in values.items():
            setattr(row, name, value)
        row.updated_at = utcnow()


def _run(
    keep: Keep,
    client: InvenioClient,
    source: Source,
    target: Target,
    deposit_id: int,
    body: dict[str, Any],
    plan: Plan,
    note: str,
    progress: Progress | None,
    on_result: Callable[[Result], None] | None,
) -> DepositResult:
    with keep.catalog.read() as session:
        row = session.get_one(Deposit, deposit_id)
        record_id, doi, state = row.record_id, row.doi, row.state
    if state == "published":  # by another process, since this one looked
        raise AlreadyPublished(
            f"{source.project}/{source.dataset} is already published in {target.label}",
            hint="a new version of a published record is not supported yet",
        )
    published: dict[str, Any] | None = None
    draft: dict[str, Any] | None = None
    if record_id is not None:
        draft = client.get_draft(record_id)
        if draft is not None and state == "review":
            return _in_review(source, target, plan, record_id, doi, client, waiting=True)
        if draft is None:
            published = client.get_record(record_id)
            if published is None:  # the draft was discarded at the repository
                record_id, doi = None, None
                _reset_files(keep, deposit_id)
    if published is None:
        if record_id is None:
            _record(keep, deposit_id, step="create", state="new", last_error="")
            draft = client.create_draft({**body, "pids": {}})
            record_id = str(draft["id"])
            _started(keep, deposit_id, source, target, record_id, draft)
        else:
            assert draft is not None
            _record(keep, deposit_id, step="update", state="draft", last_error="")
            draft = client.update_draft(record_id, {**body, "pids": draft.get("pids") or {}})
        if doi is None and target.reserve_doi:
            doi = _doi(draft)
            if doi is None:
                _record(keep, deposit_id, step="doi")
                doi = _doi(client.reserve_doi(record_id))
            _record(keep, deposit_id, doi=doi)
        sent, skipped = _files(keep, client, source, deposit_id, record_id, progress, on_result)
        if target.community:
            _submit(keep, client, source, target, deposit_id, record_id)
            return _in_review(source, target, plan, record_id, doi, client, sent=sent)
        _record(keep, deposit_id, step="publish", state="publishing")
        published = _publish(client, record_id)
    else:
        sent, skipped = 0, len(plan.files)
    assert record_id is not None
    return _finish(
        keep, client, source, target, deposit_id, record_id, published, plan, note, sent, skipped
    )


def _submit(
    keep: Keep,
    client: InvenioClient,
    source: Source,
    target: Target,
    deposit_id: int,
    record_id: str,
) -> None:
    """Ask the target's community to publish the draft (its curators decide)."""
    assert target.community is not None
    _record(keep, deposit_id, step="review", state="submitting")
    client.request_review(record_id, target.community)
    client.submit_review(record_id, html.escape(f"{source.address}, deposited by labkeep"))
    with keep.catalog.write() as session:
        row = session.get_one(Deposit, deposit_id)
        row.state, row.updated_at = "review", utcnow()
        append_event(
            session,
            keep.actor,
            "publish-review",
            f"{source.project}/{source.dataset}",
            {"target": target.label, "record": record_id, "community": target.community},
        )


def _in_review(
    source: Source,
    target: Target,
    plan: Plan,
    record_id: str,
    doi: str | None,
    client: InvenioClient,
    *,
    sent: int = 0,
    waiting: bool = False,
) -> DepositResult:
    return DepositResult(
        f"{source.project}/{source.dataset}",
        source.version,
        target.name,
        target.sandbox,
        "notneeded" if waiting else "ok",
        "review",
        record_id=record_id,
        doi=doi,
        files_total=len(plan.files),
        files_sent=sent,
        files_skipped=len(plan.files) - sent,
        bytes_total=plan.bytes,
        packaged=plan.packaged,
        source_files=plan.source_files,
        retries=client.retries,
        message=f"submitted to the community {target.community} of {target.label} for review"
        + (" (still waiting)" if waiting else "")
        + ": once its curators accept it, run the same command again to record the DOI",
    )


def _doi(record: dict[str, Any] | None) -> str | None:
    pid = ((record or {}).get("pids") or {}).get("doi") or {}
    value = pid.get("identifier") if isinstance(pid, dict) else None
    return str(value) if value else None


def _started(
    keep: Keep,
    deposit_id: int,
    source: Source,
    target: Target,
    record_id: str,
    draft: dict[str, Any],
) -> None:
    """The draft's id, recorded as soon as it exists (with the event ``publish-start``)."""
    with keep.catalog.write() as session:
        row = session.get_one(Deposit, deposit_id)
        row.record_id = record_id
        row.state, row.step, row.updated_at = "draft", "doi", utcnow()
        links = draft.get("links") or {}
        row.record_url = str(links.get("self_html") or "") or None
        append_event(
            session,
            keep.actor,
            "publish-start",
            f"{source.project}/{source.dataset}",
            {
                "target": target.label,
                "record": record_id,
                "version": source.version,
                "url": target.url,
            },
        )


def _reset_files(keep: Keep, deposit_id: int) -> None:
    with keep.catalog.write() as session:
        for f in session.execute(
            select(DepositFile).where(DepositFile.deposit_id == deposit_id)
        ).scalars():
            f.state = "pending"
        row = session.get_one(Deposit, deposit_id)
        row.record_id, row.doi, row.record_url = None, None, None
        row.files_done, row.bytes_done = 0, 0


def _checksum(entry: dict[str, Any]) -> bytes | None:
    value = str(entry.get("checksum") or "")
    if value.startswith("md5:"):
        with contextlib.suppress(ValueError):
            return bytes.fromhex(value[4:])
    return None


def _files(
    keep: Keep,
    client: InvenioClient,
    source: Source,
    deposit_id: int,
    record_id: str,
    progress: Progress | None,
    on_result: Callable[[Result], None] | None,
) -> tuple[int, int]:
    """Bring the draft's files to the plan: keep what is committed with our MD5, delete
    anything else the draft holds, send the rest. Returns (sent, skipped)."""
    _record(keep, deposit_id, step="files", state="uploading")
    remote = {str(e.get("key")): e for e in client.list_files(record_id)}
    with keep.catalog.write() as session:
        rows = list(
            session.execute(
                select(DepositFile)
                .where(DepositFile.deposit_id == deposit_id)
                .order_by(DepositFile.key)
            ).scalars()
        )
        known = _known_md5(session, rows)
        stale: list[str] = []
        for f in rows:
            entry = remote.pop(f.key, None)
            ours = f.md5 or known.get(f.id)
            good = (
                entry is not None
                and entry.get("status") == "completed"
                and ours is not None
                and _checksum(entry) == ours
                and (f.size is None or entry.get("size") in (None, f.size))
            )
            if good:
                f.state, f.md5 = "committed", ours
            else:
                f.state = "pending"
                if entry is not None:
                    stale.append(f.key)
        stale.extend(remote)  # keys that are not in the plan
        todo = [
            (f.id, f.key, f.kind, f.source, f.size, f.sha256) for f in rows if f.state == "pending"
        ]
        done = len(rows) - len(todo)
        done_bytes = sum(f.size or 0 for f in rows if f.state == "committed")
        row = session.get_one(Deposit, deposit_id)
        row.files_done, row.bytes_done = done, done_bytes
        total_bytes = row.bytes_total
    for key in stale:
        client.delete_file(record_id, key)
    if progress is not None:
        progress.start(len(rows), total_bytes)
        progress.advance(done, done_bytes)
    if on_result is not None:
        for f in rows:
            if f.state == "committed":
                on_result(
                    Result("publish", "notneeded", path=f.key, size=f.size, dataset=source.address)
                )
    for start in range(0, len(todo), 100):
        client.init_files(record_id, [t[1] for t in todo[start : start + 100]])
    sent = 0
    for file_id, key, kind, src, size, sha256 in todo:
        staged: Path | None = None
        if kind == "zip":
            staged = zip_folder(keep, source, deposit_id, key, src)
            size = staged.stat().st_size
        hashes = _send_file(keep, client, source, record_id, key, src, size or 0, sha256, staged)
        md5, nbytes = hashes.md5.digest(), hashes.size
        committed = client.commit(record_id, key)
        if _checksum(committed) != md5:
            client.delete_file(record_id, key)
            raise IntegrityError(
                f"{client.name} stored {key} with checksum {committed.get('checksum')!r}, "
                f"not md5:{md5.hex()} as sent: the file was removed from the draft",
                hint="run the same command again to send it again",
            )
        with keep.catalog.write() as session:
            f = session.get_one(DepositFile, file_id)
            f.state, f.md5, f.size = "committed", md5, nbytes
            if staged is None and sha256 is not None and session.get(Digest, sha256) is None:
                # kept for later packages and deposits (one transaction with the commit)
                add_unique(session, Digest(sha256=sha256, sha512=hashes.sha512.digest(), md5=md5))
            row = session.get_one(Deposit, deposit_id)
            row.files_done += 1
            row.bytes_done = min(row.bytes_total, row.bytes_done + nbytes)
            row.updated_at = utcnow()
        if staged is not None:
            with contextlib.suppress(OSError):
                staged.unlink()
        sent += 1
        if progress is not None:
            progress.advance(1, nbytes)
        if on_result is not None:
            result = Result("publish", "ok", path=key, size=nbytes, dataset=source.address)
            result.extra["md5"] = md5.hex()
            on_result(result)
    remove_staging(keep, deposit_id)
    return sent, done


def _known_md5(session: Session, rows: list[DepositFile]) -> dict[int, bytes]:
    """MD5s of planned files the keep already knows (``digests``), by file row id."""
    wanted = {f.sha256: f.id for f in rows if f.md5 is None and f.sha256 is not None}
    found: dict[int, bytes] = {}
    items = list(wanted)
    for start in range(0, len(items), 500):
        for sha, md5 in session.execute(
            select(Digest.sha256, Digest.md5).where(Digest.sha256.in_(items[start : start + 500]))
        ).all():
            found[wanted[bytes(sha)]] = bytes(md5)
    return found


class _Hashes:
    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.sha512 = hashlib.sha512()
        self.md5 = hashlib.md5()  # noqa: S324 (the repository's checksum, not security)
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        self.sha512.update(chunk)
        self.md5.update(chunk)
        self.size += len(chunk)


def _send_file(
    keep: Keep,
    client: InvenioClient,
    source: Source,
    record_id: str,
    key: str,
    path: str,
    size: int,
    sha256: bytes | None,
    staged: Path | None,
) -> _Hashes:
    """Stream one file (or a staged zip) to the draft; returns the digests and size of
    what was sent, after checking a dataset file against its SHA-256."""
    attempts: list[_Hashes] = []

    def body() -> Iterator[bytes]:
        hashes = _Hashes()
        attempts.append(hashes)
        handle: BinaryIO
        if staged is not None:
            handle = open(staged, "rb")  # noqa: SIM115 (closed below)
        else:
            _, handle = keep.open_file(
                address_text(source.project, source.dataset, path, source.version)
            )
        with handle:
            while chunk := handle.read(CHUNK):
                hashes.update(chunk)
                yield chunk

    client.upload(record_id, key, body, size)
    hashes = attempts[-1]
    if hashes.size != size or (sha256 is not None and hashes.sha256.digest() != sha256):
        client.delete_file(record_id, key)
        raise IntegrityError(
            f"{source.address}/{path} does not match its SHA-256 in the catalog: it was "
            "not published (removed from the draft)",
            hint=f"run 'labkeep verify {source.project}/{source.dataset} --repair', then the "
            "same publish command again",
        )
    return hashes


def _publish(client: InvenioClient, record_id: str) -> dict[str, Any]:
    """Publish the draft; when the answer is lost, look before trying again."""
    from labkeep.ops._invenio import Dropped

    last: Dropped | None = None
    for attempt in range(1, client.retry.attempts + 1):
        try:
            return client.publish(record_id)
        except Dropped as exc:
            last = exc
        record = client.get_record(record_id)
        if record is not None and record.get("is_published", True):
            return record
        if attempt < client.retry.attempts:
            client._wait(attempt, None)
    assert last is not None
    raise last


def _finish(
    keep: Keep,
    client: InvenioClient,
    source: Source,
    target: Target,
    deposit_id: int,
    record_id: str,
    record: dict[str, Any],
    plan: Plan,
    note: str,
    sent: int,
    skipped: int,
) -> DepositResult:
    links = record.get("links") or {}
    doi = _doi(record)
    url = str(links.get("self_html") or f"{target.url}/records/{record_id}")
    now = utcnow()
    with keep.catalog.write() as session:
        row = session.get_one(Deposit, deposit_id)
        doi = doi or row.doi
        row.state, row.step, row.last_error = "published", "done", ""
        row.doi, row.record_url, row.published_at, row.updated_at = doi, url, now, now
        row.files_done = row.files_total
        dataset = session.get_one(Dataset, source.dataset_id)
        dataset.doi, dataset.record_url, dataset.published_at = doi, url, now
        event = append_event(
            session,
            keep.actor,
            "publish",
            f"{source.project}/{source.dataset}",
            {
                "target": target.label,
                "version": source.version,
                "record": record_id,
                "doi": doi,
                "url": url,
                "files": len(plan.files),
                "packaged": plan.packaged,
            },
        )
    checkpoint(keep, event)
    message = f"published {source.address} in {target.label}" + (f": DOI {doi}" if doi else "")
    return DepositResult(
        f"{source.project}/{source.dataset}",
        source.version,
        target.name,
        target.sandbox,
        "ok",
        "published",
        record_id=record_id,
        doi=doi,
        record_url=url,
        files_total=len(plan.files),
        files_sent=sent,
        files_skipped=skipped,
        bytes_total=plan.bytes,
        packaged=plan.packaged,
        source_files=plan.source_files,
        retries=client.retries,
        message=(note + "; " if note else "") + message,
    )


def publish_status(keep: Keep, address: str) -> list[DepositStatus]:
    """The deposits of ``PROJECT/DATASET`` (one per target and endpoint)."""
    addr = parse_address(address, need_dataset=True)
    assert addr.dataset is not None
    with keep.catalog.read() as session:
        _, dataset = find_dataset(keep, session, addr.project, addr.dataset, "dataset.read")
        rows = session.execute(
            select(Deposit).where(Deposit.dataset_id == dataset.id).order_by(Deposit.id)
        ).scalars()
        return [
            DepositStatus(
                f"{addr.project}/{addr.dataset}",
                r.version,
                r.target,
                r.sandbox,
                r.state,
                r.step,
                r.record_id,
                r.files_done,
                r.files_total,
                r.bytes_done,
                r.bytes_total,
                r.packaged,
                r.doi,
                r.record_url,
                r.last_error,
                r.updated_at,
                r.published_at,
            )
            for r in rows
        ]
