"""The catalog schema (SQLAlchemy 2 declarative models).

Invariants (see docs/catalog.md):
- ``entries`` is a temporal table: a row is part of every version ``v`` of its dataset
  with ``valid_from <= v`` and (``valid_to`` is NULL or ``v < valid_to``). The current
  state of a dataset is the rows with ``valid_to IS NULL``; at most one such row per path.
- A row of ``entries`` is only written after the file it describes is durable, and never
  changes afterwards but for ``valid_to``; fixity lives in ``tree_checks`` (the tree) and
  ``replicas`` (the content stores).
- ``events`` is append-only (enforced by triggers) and hash-chained.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: paths compare byte-wise on both engines (SQLite's BINARY, PostgreSQL's "C")
PathText = Text().with_variant(Text(collation="C"), "postgresql")
#: 64-bit ids on PostgreSQL, SQLite's rowid alias INTEGER PRIMARY KEY on SQLite
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class KeepState(Base):
    """Small key/value facts about the keep (keep id, head of the event chain)."""

    __tablename__ = "keep_state"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Store(Base):
    """A place that holds content: the tree, or a content store (objects folder, S3).

    Credentials are never stored here: ``settings`` (JSON) names an AWS profile or
    credentials file section, never a secret.
    """

    __tablename__ = "stores"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # tree | objects | s3
    tier: Mapped[str] = mapped_column(String(16), default="hot")  # hot | warm | cold
    location: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    #: counts as an off-site copy for the 3-2-1 rule
    offsite: Mapped[bool] = mapped_column(Boolean, default=False)
    #: the kind of medium (disk, object, tape): copies on two media count as two kinds
    medium: Mapped[str] = mapped_column(String(16), default="disk")
    #: kind-specific settings as JSON: endpoint, bucket, prefix, region, profile,
    #: credentials_file, lock_mode, retention_days, storage_class
    settings: Mapped[str] = mapped_column(Text, default="{}")


class Replica(Base):
    """A content store holds one content (by SHA-256) under *key*: the replica log.

    A row is written only after the content was durable in the store and verified
    (server-checked SHA-256, or read back), and removed before the content is deleted.
    The tree's copies are the current entries of datasets whose ``tree_state`` is
    ``present``; their fixity is recorded by ``verify``.
    """

    __tablename__ = "replicas"
    __table_args__ = (
        UniqueConstraint("store_id", "sha256"),
        Index("ix_replicas_sha256", "sha256"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id", ondelete="RESTRICT"))
    sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    size: Mapped[int] = mapped_column(BigInteger)
    key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    #: when its bytes were last checked, and what was found: ok | damaged | missing
    verified_at: Mapped[datetime] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(16), default="ok")
    #: how it was last checked: hash (read back and re-hashed) | server (the store's
    #: own SHA-256 on upload or --quick) | size
    checked_by: Mapped[str] = mapped_column(String(16), default="hash")
    #: WORM: cannot be deleted or changed before this time
    retain_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Policy(Base):
    """How many verified copies a project's data needs, and where (NULL project: the
    keep's default)."""

    __tablename__ = "policies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), unique=True, nullable=True
    )
    min_copies: Mapped[int] = mapped_column(Integer, default=1)
    #: copies on at least this many kinds of media, and at least this many off site
    min_media: Mapped[int] = mapped_column(Integer, default=1)
    min_offsite: Mapped[int] = mapped_column(Integer, default=0)
    #: comma-separated store names to copy a dataset to when it is sealed
    on_seal: Mapped[str] = mapped_column(Text, default="")
    #: a sealed dataset's tree copy may be dropped (cold data) when enough copies remain
    tree_droppable: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    updated_by: Mapped[str] = mapped_column(String(255))


class Lease(Base):
    """A named lock held in the catalog by one process (on any host) until it expires.

    Holders renew it while they work (a heartbeat); a holder that died loses it when it
    expires, so its work can be taken over without a person clearing a lock file.
    """

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))
    what: Mapped[str] = mapped_column(Text, default="")
    acquired_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class Job(Base):
    """A unit of background work (see docs/jobs.md): queued, claimed by one worker under
    a lease, finished exactly once in effect.

    A claim increments ``attempts``; the pair (``lease_owner``, ``attempts``) is the
    fencing token every later write of the worker must match, so a worker that outlived
    its lease cannot record a late result.
    """

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    #: JSON object: the handler's arguments
    args: Mapped[str] = mapped_column(Text, default="{}")
    #: queued | running | done | failed | cancelled
    state: Mapped[str] = mapped_column(String(16), default="queued")
    #: higher runs first
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    run_after: Mapped[datetime] = mapped_column(DateTime)
    #: at most one job per key: "active" keys are freed when the job ends, "forever" keys
    #: (periodic work: one job per period) are not
    unique_key: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    unique_scope: Mapped[str] = mapped_column(String(8), default="active")
    #: what the job works on ("PROJECT/DATASET", "PROJECT", a buffer), for pages and filters
    target: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    #: the user the job acts as ("" for the keep's own periodic work)
    created_by: Mapped[str] = mapped_column(String(255), default="")
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str] = mapped_column(Text, default="")
    #: JSON: the handler's result summary
    result: Mapped[str] = mapped_column(Text, default="")
    #: JSON: {"files": done, "total_files": n, "bytes": done, "total_bytes": n, "note": ""}
    progress: Mapped[str] = mapped_column(Text, default="")


#: the claim's order (priority first, then the oldest) read straight from the index
Index("ix_jobs_claim", Job.state, Job.priority.desc(), Job.run_after, Job.id)


class Worker(Base):
    """A running (or stopped) ``labkeep worker`` process, as it last reported itself."""

    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    kinds: Mapped[str] = mapped_column(Text, default="")
    concurrency: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    seen_at: Mapped[datetime] = mapped_column(DateTime)
    #: running | stopping | stopped
    state: Mapped[str] = mapped_column(String(16), default="running")
    running: Mapped[int] = mapped_column(Integer, default=0)


class Watch(Base):
    """A watched instrument buffer: acquisitions appearing below *path* are imported."""

    __tablename__ = "watches"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    project_template: Mapped[str] = mapped_column(String(255))
    dataset_template: Mapped[str] = mapped_column(String(255))
    #: folder-owner | folder-name | map | user:NAME
    owner_from: Mapped[str] = mapped_column(String(64), default="folder-owner")
    #: JSON object: OS/system account -> labkeep user
    owner_map: Mapped[str] = mapped_column(Text, default="{}")
    #: marker:NAME | quiet:SECONDS
    ready: Mapped[str] = mapped_column(String(255), default="quiet:600")
    #: inotify | poll
    mode: Mapped[str] = mapped_column(String(16), default="inotify")
    poll_seconds: Mapped[int] = mapped_column(Integer, default=60)
    #: how deep below *path* an acquisition folder is (1: its direct subfolders)
    depth: Mapped[int] = mapped_column(Integer, default=1)
    link: Mapped[bool] = mapped_column(Boolean, default=False)
    seal: Mapped[bool] = mapped_column(Boolean, default=False)
    #: buffer copies may be deleted this many days after import (when safely kept)
    retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: JSON object: further settings
    settings: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(255))


class BufferFolder(Base):
    """One acquisition folder seen in a watched buffer, and what became of it."""

    __tablename__ = "buffer_folders"
    __table_args__ = (UniqueConstraint("watch_id", "folder"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    watch_id: Mapped[int] = mapped_column(ForeignKey("watches.id", ondelete="CASCADE"))
    #: path relative to the buffer
    folder: Mapped[str] = mapped_column(PathText)
    #: waiting | queued | imported | changed | failed | vanished | cleaning | cleaned
    state: Mapped[str] = mapped_column(String(16), default="waiting")
    first_seen: Mapped[datetime] = mapped_column(DateTime)
    last_change: Mapped[datetime] = mapped_column(DateTime)
    files: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    #: SHA-256 of the sorted (path, size, mtime) listing, hex
    fingerprint: Mapped[str] = mapped_column(String(64), default="")
    project: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dataset: Mapped[str | None] = mapped_column(String(64), nullable=True)
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True
    )
    imported_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    #: the import hard-linked the files (None: not imported yet)
    linked: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    cleaned_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(255))
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("groups.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    #: private: group members get nothing by membership alone, only explicit grants count
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    #: DataCite fields (labkeep's form, JSON; see ops/metadata.py), inherited by datasets
    meta: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: JSON Schema that the key-values of the project, its datasets and files must pass
    kv_schema: Mapped[str | None] = mapped_column(Text, nullable=True)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # session | analysis | release
    title: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(255))
    #: number of the newest committed version (0: none yet)
    head_version: Mapped[int] = mapped_column(Integer, default=0)
    sealed: Mapped[bool] = mapped_column(Boolean, default=False)
    sealed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    #: readable by anyone, without an account (e.g. once published)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str] = mapped_column(Text, default="")
    #: whether the tree holds the dataset's files: present | dropped (its content lives
    #: in other stores only; ``labkeep get`` brings it back)
    tree_state: Mapped[str] = mapped_column(String(16), default="present")
    #: DataCite fields (labkeep's form, JSON; see ops/metadata.py) over the project's
    meta: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: a release: the dataset and version it was made from (its content, sealed)
    #: (no foreign key: see migration 0007; datasets are never deleted)
    release_of_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    release_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: a published release: its DOI and the repository record that holds it
    doi: Mapped[str | None] = mapped_column(String(255), nullable=True)
    record_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    published_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Version(Base):
    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("dataset_id", "number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="RESTRICT"))
    number: Mapped[int] = mapped_column(Integer)
    #: open while an ingest is filling it (also after a crash, until resumed); then committed
    state: Mapped[str] = mapped_column(String(16))
    #: ingest | seal | unseal | save | run | restore
    kind: Mapped[str] = mapped_column(String(16))
    author: Mapped[str] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    committed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    n_files: Mapped[int] = mapped_column(BigInteger, default=0)
    n_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    manifest_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: the run whose outputs this version saved
    run_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("runs.id", ondelete="SET NULL"), nullable=True, index=True
    )


class Run(Base):
    """A recorded command: what ran, on which pinned inputs, where, and what it made.

    The record is written before the command starts (state ``running`` or, for a batch
    scheduler, ``queued``) and finished exactly once; its outputs are saved as a version of
    the output dataset that points back here (``versions.run_id``).
    """

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: queued | running | saving | done | failed | cancelled
    state: Mapped[str] = mapped_column(String(16), default="running")
    message: Mapped[str] = mapped_column(Text, default="")
    #: JSON lists: the command as given (with placeholders) and as executed
    command: Mapped[str] = mapped_column(Text)
    argv: Mapped[str] = mapped_column(Text, default="[]")
    cwd: Mapped[str] = mapped_column(Text, default="")
    output_dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="RESTRICT"), index=True
    )
    #: the version of the output dataset it saved (None: none, e.g. it failed)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: local | slurm
    executor: Mapped[str] = mapped_column(String(16), default="local")
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: JSON: where it ran (Python, packages, OS, host, CPU, GPU) and the container
    environment: Mapped[str] = mapped_column(Text, default="{}")
    container: Mapped[str] = mapped_column(Text, default="")
    #: the labkeep job that runs or follows it, and the batch system's job
    job_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    slurm_job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: JSON: requested resources, nodes, array tasks
    slurm: Mapped[str] = mapped_column(Text, default="")
    #: the process that runs it (host:pid:start), to tell a live run from a dead one
    owner: Mapped[str] = mapped_column(String(255), default="")
    error: Mapped[str] = mapped_column(Text, default="")
    stderr_tail: Mapped[str] = mapped_column(Text, default="")
    rerun_of: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("runs.id", ondelete="SET NULL"), nullable=True, index=True
    )
    #: JSON: further options (save_failed, save, staging counts, rerun comparison)
    settings: Mapped[str] = mapped_column(Text, default="{}")


class RunInput(Base):
    """A dataset version a run read, pinned by number and by its manifest's SHA-256."""

    __tablename__ = "run_inputs"
    __table_args__ = (Index("ix_run_inputs_dataset", "dataset_id", "version"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("runs.id", ondelete="CASCADE"), index=True
    )
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="RESTRICT"))
    version: Mapped[int] = mapped_column(Integer)
    manifest_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: a folder or file of the version, or "" for all of it
    path: Mapped[str] = mapped_column(PathText, default="")


class RunOutput(Base):
    """A file a run wrote, with its SHA-256 (what rerun compares)."""

    __tablename__ = "run_outputs"
    __table_args__ = (UniqueConstraint("run_id", "path"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(BigId, ForeignKey("runs.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(PathText)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[bytes] = mapped_column(LargeBinary(32))


class Digest(Base):
    """Other digests of one content (by SHA-256): SHA-512 for BagIt manifests, MD5 for
    repositories that check uploads by it (InvenioRDM/Zenodo). Written when content is
    read for a release or a package, so later packages need not read it again."""

    __tablename__ = "digests"
    sha256: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    sha512: Mapped[bytes] = mapped_column(LargeBinary(64))
    md5: Mapped[bytes] = mapped_column(LargeBinary(16))


class Deposit(Base):
    """A dataset version deposited in a repository (InvenioRDM, Zenodo): one per dataset,
    target and endpoint (sandbox or not). Every step is recorded before the next begins,
    so a rerun continues with the same draft. Tokens are never stored here."""

    __tablename__ = "deposits"
    __table_args__ = (UniqueConstraint("dataset_id", "target", "sandbox"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="RESTRICT"))
    version: Mapped[int] = mapped_column(Integer)
    #: the [publish.NAME] section of labkeep.toml (zenodo, invenio, ...)
    target: Mapped[str] = mapped_column(String(64))
    sandbox: Mapped[bool] = mapped_column(Boolean, default=False)
    base_url: Mapped[str] = mapped_column(Text)
    #: the repository's record (draft) id, once the draft exists
    record_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: new | draft | uploading | publishing | published
    state: Mapped[str] = mapped_column(String(16))
    #: the step last started (create, doi, files, upload, publish, done)
    step: Mapped[str] = mapped_column(String(32))
    #: files were packed into zips (one per top folder): the repository's file limit
    packaged: Mapped[bool] = mapped_column(Boolean, default=False)
    files_total: Mapped[int] = mapped_column(Integer, default=0)
    files_done: Mapped[int] = mapped_column(Integer, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    doi: Mapped[str | None] = mapped_column(String(255), nullable=True)
    record_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    published_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class DepositFile(Base):
    """One file key of a deposit: a dataset file, or a zip of one top folder."""

    __tablename__ = "deposit_files"
    __table_args__ = (UniqueConstraint("deposit_id", "key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deposit_id: Mapped[int] = mapped_column(ForeignKey("deposits.id", ondelete="CASCADE"))
    #: the file's name in the record
    key: Mapped[str] = mapped_column(PathText)
    #: file | zip
    kind: Mapped[str] = mapped_column(String(8))
    #: the dataset path (a file) or top folder ("" for the root's files) of a zip
    source: Mapped[str] = mapped_column(PathText)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    sha256: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    #: MD5 of what was sent (the repository's checksum), once known
    md5: Mapped[bytes | None] = mapped_column(LargeBinary(16), nullable=True)
    #: pending | committed
    state: Mapped[str] = mapped_column(String(16))


class Entry(Base):
    __tablename__ = "entries"
    __table_args__ = (
        Index(
            "ix_entries_current_path",
            "dataset_id",
            "path",
            unique=True,
            sqlite_where=text("valid_to IS NULL"),
            postgresql_where=text("valid_to IS NULL"),
        ),
        # any version's file by path, and its folders in path order (the partial index
        # above holds only the current rows)
        Index("ix_entries_dataset_path", "dataset_id", "path"),
        Index("ix_entries_dataset_from", "dataset_id", "valid_from"),
        Index("ix_entries_dataset_to", "dataset_id", "valid_to"),
        Index("ix_entries_sha256", "sha256"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="RESTRICT"))
    path: Mapped[str] = mapped_column(PathText)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    valid_from: Mapped[int] = mapped_column(Integer)
    valid_to: Mapped[int | None] = mapped_column(Integer, nullable=True)


class TreeCheck(Base):
    """The tree's copy of one entry, as ``verify`` (or a hash on writing it) last found it:
    the tree's part of the replica log. Entries themselves never change but ``valid_to``;
    an entry without a row was never checked since it was written."""

    __tablename__ = "tree_checks"
    entry_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True
    )
    checked_at: Mapped[datetime] = mapped_column(DateTime)
    #: ok | modified | missing
    status: Mapped[str] = mapped_column(String(16))


class Event(Base):
    __tablename__ = "events"
    #: the newest event of one action on one target (a dataset's last verify) in one lookup
    __table_args__ = (Index("ix_events_target_action", "target", "action", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(Text, index=True)
    #: canonical JSON text (sorted keys, no spaces): exactly what was hashed
    details: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(Text, default="")
    email: Mapped[str] = mapped_column(Text, default="")
    #: Argon2id hash; NULL for LDAP accounts and accounts without a password
    password_hash: Mapped[str | None] = mapped_column(Text, nullable=True)
    source: Mapped[str] = mapped_column(String(16), default="local")  # local | ldap
    site_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    #: OS account that acts as this user for local CLI use (default: same name)
    os_user: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    #: bumped when a user is disabled or changes password: older sessions die
    auth_epoch: Mapped[int] = mapped_column(Integer, default=0)


class Group(Base):
    __tablename__ = "groups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("group_id", "user_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # admin | member


class Grant(Base):
    __tablename__ = "grants"
    __table_args__ = (
        Index("ix_grants_project", "project_id"),
        Index("ix_grants_user", "user_id"),
        Index("ix_grants_group", "group_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    dataset_id: Mapped[int | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), nullable=True
    )
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True
    )
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), nullable=True
    )
    permission: Mapped[str] = mapped_column(String(16))  # read | write | manage
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(255))


class ShareLink(Base):
    __tablename__ = "share_links"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: SHA-256 (hex) of the secret token; the token itself is never stored
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    dataset_id: Mapped[int | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), nullable=True
    )
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    path: Mapped[str | None] = mapped_column(PathText, nullable=True)
    label: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    max_downloads: Mapped[int | None] = mapped_column(Integer, nullable=True)
    downloads: Mapped[int] = mapped_column(Integer, default=0)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class ShareDownload(Base):
    """A file downloaded through a share link (counted once against its limit): the rest
    of that download, fetched in ranges, is allowed and not counted again."""

    __tablename__ = "share_downloads"
    __table_args__ = (UniqueConstraint("link_id", "path", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    link_id: Mapped[int] = mapped_column(ForeignKey("share_links.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(PathText)
    version: Mapped[int] = mapped_column(Integer)
    counted_at: Mapped[datetime] = mapped_column(DateTime)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(Text, default="")
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class WebSession(Base):
    """A signed-in browser: the cookie holds a secret whose SHA-256 is stored here."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    #: the user's auth_epoch at sign-in: disabling or a new password ends the session
    auth_epoch: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class AuthFailure(Base):
    """Failed sign-ins per account and per client, for slowing down password guessing."""

    __tablename__ = "auth_failures"
    key: Mapped[str] = mapped_column(String(320), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column(DateTime)


class Extraction(Base):
    """What a file is, as read by an extraction plugin (docs/metadata.md): one row per
    entry (a file at a version), so extracting again replaces it and never adds one.

    Written by the extraction job after ingest; ``status`` is ``ok`` or ``error`` (the
    reader raised, crashed or hung: ``error`` says which; ``fields`` still holds what the
    generic plugin found). ``preview`` tells whether a thumbnail of the content is in the
    keep's cache (``ok``), none can be made (``none``) or making it failed (``error``).
    """

    __tablename__ = "extractions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    entry_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("entries.id", ondelete="CASCADE"), unique=True
    )
    sha256: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    extractor: Mapped[str] = mapped_column(String(64))
    extractor_version: Mapped[str] = mapped_column(String(32), default="")
    status: Mapped[str] = mapped_column(String(16))
    #: JSON object: the plugin's fields
    fields: Mapped[str] = mapped_column(Text, default="{}")
    error: Mapped[str] = mapped_column(Text, default="")
    preview: Mapped[str] = mapped_column(String(16), default="none")
    extracted_at: Mapped[datetime] = mapped_column(DateTime)


class KeyValue(Base):
    """A key-value of a project (``dataset_id`` 0, ``path`` ""), a dataset (``path`` "")
    or a file of a dataset's current state (see ops/keyvalues.py)."""

    __tablename__ = "keyvalues"
    __table_args__ = (UniqueConstraint("project_id", "dataset_id", "path", "key"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    dataset_id: Mapped[int] = mapped_column(Integer, default=0)
    path: Mapped[str] = mapped_column(PathText, default="")
    key: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    updated_by: Mapped[str] = mapped_column(String(255))


class Sample(Base):
    """A sample or subject (a mouse, a tissue block, a patient pseudonym) that datasets
    were acquired from. Seen by its creator, its group and the readers of its datasets."""

    __tablename__ = "samples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(64), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    #: JSON object of attribute -> value (genotype, sex, date of birth)
    attrs: Mapped[str] = mapped_column(Text, default="{}")
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("groups.id", ondelete="SET NULL"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(255))


class SampleLink(Base):
    __tablename__ = "sample_links"
    __table_args__ = (UniqueConstraint("sample_id", "dataset_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"))
    dataset_id: Mapped[int] = mapped_column(Integer, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(255))


#: what migration 0010 creates for one engine only and the models leave out: SQLite's FTS5
#: table (and its shadow tables), PostgreSQL's tsvector column and GIN indexes
ENGINE_SEARCH_OBJECTS = frozenset(
    {
        "search_fts",
        "search_fts_data",
        "search_fts_docsize",
        "search_fts_config",
        "search_fts_idx",
        "ix_search_docs_name_trgm",
        "ix_search_docs_path_trgm",
        "ix_search_docs_tsv",
        "tsv",
    }
)


def include_in_comparison(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Alembic's ``include_object`` hook: skip :data:`ENGINE_SEARCH_OBJECTS`."""
    return name not in ENGINE_SEARCH_OBJECTS


class SearchDoc(Base):
    """One findable thing: a project, dataset, current file or sample. Rows for projects,
    datasets and files are written by triggers on their tables (migration 0010), in the
    same transaction as the change; ``meta`` and :class:`SearchField` by the use cases
    that change key-values, samples and extracted metadata (ops/search_index.py)."""

    __tablename__ = "search_docs"
    __table_args__ = (
        UniqueConstraint("kind", "project_id", "dataset_id", "sample_id", "path"),
        Index("ix_search_docs_dataset_path", "dataset_id", "path"),
        Index("ix_search_docs_day", "day"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    project_id: Mapped[int] = mapped_column(Integer)
    dataset_id: Mapped[int] = mapped_column(Integer, default=0)
    sample_id: Mapped[int] = mapped_column(Integer, default=0)
    path: Mapped[str] = mapped_column(PathText, default="")
    name: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text, default="")
    meta: Mapped[str] = mapped_column(Text, default="")
    day: Mapped[str] = mapped_column(String(10), default="")


class SearchField(Base):
    """A ``key:value`` of a search document, for filters (value lower-cased)."""

    __tablename__ = "search_fields"
    __table_args__ = (
        Index("ix_search_fields_key_value", "key", "value", "doc_id"),
        Index("ix_search_fields_doc", "doc_id", "key", "value"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    doc_id: Mapped[int] = mapped_column(BigId, ForeignKey("search_docs.id", ondelete="CASCADE"))
    #: kv | sample | extract
    source: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(Text)
