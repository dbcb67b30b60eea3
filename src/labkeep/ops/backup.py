"""Catalog backups: take them, rotate them, restore them (drills: :mod:`.backup_drill`).

A backup is one file in a store, written through the store interface under
``labkeep-backups/<id>.<ext>``, and a small JSON *sidecar* beside it
(``labkeep-backups/<id>.json``: keep id, engine, schema, size, SHA-256, the audit
chain's head in the copy: read from the SQLite copy, or in the very snapshot pg_dump
dumps, ``--snapshot`` of a transaction that exported it). The sidecars are what
``backup list``, ``backup drill`` and ``restore-catalog`` read: a backup is found and
restored without the catalog (the catalog may be what was lost). The store's own
description is also written to ``TREE/.labkeep/backup-store.json`` so that
``restore-catalog`` finds the store when the catalog that names it is gone (or pass
``--from``).

- SQLite: the online backup API (``sqlite3.Connection.backup``) into a temp file: a
  consistent copy while other processes keep writing.
- PostgreSQL: ``pg_dump -Fc`` with the ``pg_dump`` of the server's major version
  (``/usr/lib/postgresql/<major>/bin``, else the one on PATH if its major matches).

Write order: the dump is complete and hashed, then stored (verified against its SHA-256
by the store), then its sidecar (a sidecar never names a dump that is not there), then
the ``backup`` event. Rotation removes a sidecar before its dump.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from labkeep.clock import isoformat, utcnow
from labkeep.errors import BackupFailed, NotFound, RetentionLocked, UsageError

if TYPE_CHECKING:
    from labkeep.config import Config
    from labkeep.keep import Keep
    from labkeep.storage.base import ContentStore

PREFIX = "labkeep-backups/"
#: in the tree's private folder: how to reach the backup store without the catalog
STORE_FILE = "backup-store.json"
_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")


@dataclass
class BackupInfo:
    """What a sidecar says about one backup."""

    id: str
    keep_id: str
    engine: str  # sqlite | postgresql
    format: str  # sqlite | pg_dump-custom
    created_at: str
    schema: str | None
    size: int
    sha256: str
    key: str
    events: int = 0
    head_event_id: int | None = None
    head_hash: str | None = None
    pg_major: int | None = None
    store: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the store ---------------------------------------------------------------------------
def _store_file(config: Config) -> Path:
    from labkeep.storage import PRIVATE_DIR

    return config.data_path / PRIVATE_DIR / STORE_FILE


def open_store(keep: Keep | None, config: Config, name: str | None = None) -> ContentStore:
    """The backup store: *name* (or ``[backup] store``) from the catalog; else the objects
    folder of ``[backup] path``; else (no catalog) what the last backup wrote down in the
    tree; a *name* that is a folder path is that objects folder."""
    from labkeep.ops.stores import StoreInfo, backend
    from labkeep.storage.objects import ObjectsStore

    wanted = name or config.backup.store
    if "/" in wanted or wanted.startswith("."):
        return ObjectsStore("backup", Path(wanted).expanduser().absolute())
    if keep is not None:
        from labkeep.catalog import Store

        with keep.catalog.read() as session:
            row = session.execute(select(Store).where(Store.name == wanted)).scalar_one_or_none()
            if row is not None and row.kind != "tree":
                return backend(row)
    if config.backup.path is not None and wanted == config.backup.store:
        return ObjectsStore(wanted, config.backup.path)
    try:
        known = json.loads(_store_file(config).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if wanted in known:
        item = known[wanted]
        return backend(
            StoreInfo(
                wanted, item["kind"], "cold", item["location"], "disk", False, item["settings"]
            )
        )
    raise NotFound(
        f"no backup store {wanted!r}",
        hint="add one with 'labkeep store add backup --path /mnt/backup/labkeep' (or set "
        "[backup] path in labkeep.toml), or pass --to/--from with a folder",
    )


def _remember_store(keep: Keep, store: ContentStore) -> None:
    """Write how to reach *store* into the tree's private folder (no secrets: an S3
    store names its profile, as in the catalog)."""
    from labkeep.catalog import Store
    from labkeep.storage import write_atomic
    from labkeep.storage.objects import ObjectsStore

    if isinstance(store, ObjectsStore):  # a store of the catalog, or a folder given
        item = {"kind": "objects", "location": str(store.root), "settings": {}}
    else:
        with keep.catalog.read() as session:
            row = session.execute(select(Store).where(Store.name == store.name)).scalar_one()
            settings = json.loads(row.settings)
            item = {"kind": row.kind, "location": row.location, "settings": settings}
    path = _store_file(keep.config)
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    known[store.name] = item
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(known, indent=1, sort_keys=True).encode())


# -- reading sidecars --------------------------------------------------------------------
def _read_all(store: ContentStore, key: str) -> bytes:
    it = store.open(key)
    try:
        return b"".join(it)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def _sidecars(store: ContentStore) -> Iterator[BackupInfo]:
    for item in store.list(PREFIX):
        if not item.key.endswith(".json"):
            continue
        try:
            data = json.loads(_read_all(store, item.key))
            info = BackupInfo(**data)
        except (ValueError, TypeError, NotFound):
            continue  # a sidecar being written or not ours
        info.store = store.name
        yield info


def _keep_id(keep: Keep) -> str:
    from labkeep.catalog import KeepState

    with keep.catalog.read() as session:
        row = session.get(KeepState, "keep_id")
        return row.value if row is not None else ""


def list_backups(keep: Keep, *, store: str | None = None) -> list[BackupInfo]:
    """This keep's backups in the backup store, newest first."""
    from labkeep.access import check

    check(keep.principal, "keep.admin")
    backend_store = open_store(keep, keep.config, store)
    try:
        keep_id = _keep_id(keep)
        found = [b for b in _sidecars(backend_store) if b.keep_id == keep_id]
    finally:
        backend_store.close()
    return sorted(found, key=lambda b: b.id, reverse=True)


def find_backups(config: Config, source: str | None = None) -> list[BackupInfo]:
    """Every backup in the store, newest first, read without the catalog."""
    store = open_store(None, config, source)
    try:
        return sorted(_sidecars(store), key=lambda b: b.id, reverse=True)
    finally:
        store.close()


# -- taking a backup ---------------------------------------------------------------------
def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise UsageError(f"catalog {url} is not a file")
    return Path(database)


def _libpq(url: str) -> tuple[list[str], dict[str, str], str]:
    """Connection options for pg_dump/pg_restore, the environment (password), dbname."""
    parsed = make_url(url)
    args: list[str] = []
    if parsed.host:
        args += ["-h", parsed.host]
    if parsed.port:
        args += ["-p", str(parsed.port)]
    if parsed.username:
        args += ["-U", parsed.username]
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    return args, env, parsed.database or ""


def _server_major(keep_or_url: Any) -> int:
    from sqlalchemy import create_engine

    if isinstance(keep_or_url, str):
        engine = create_engine(keep_or_url)
        try:
            with engine.connect() as conn:
                num = conn.execute(text("SHOW server_version_num")).scalar_one()
        finally:
            engine.dispose()
    else:
        with keep_or_url.catalog.read() as session:
            num = session.execute(text("SHOW server_version_num")).scalar_one()
    return int(num) // 10000


def pg_tool(name: str, major: int) -> str:
    """``pg_dump``/``pg_restore`` of the server's major version (never an older one:
    a dump made by a different major may not restore)."""
    candidate = Path(f"/usr/lib/postgresql/{major}/bin/{name}")
    if candidate.is_file():
        return str(candidate)
    found = shutil.which(name)
    if found:
        version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
        match = re.search(r"(\d+)(?:\.\d+)?", version)
        if match and int(match.group(1)) == major:
            return found
    raise BackupFailed(
        f"no {name} of PostgreSQL {major} (the server's major version) on this machine",
        hint=f"install the PostgreSQL {major} client tools (apt-get install "
        f"postgresql-client-{major})",
    )


def _run_tool(cmd: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise BackupFailed(f"{what} failed: {' / '.join(tail) or done.returncode}")


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@contextlib.contextmanager
def _scratch(keep_root: Path) -> Iterator[Path]:
    """A private temp folder on the keep's disk (a dump can be large; /tmp may be small)."""
    folder = Path(tempfile.mkdtemp(prefix=".labkeep-backup-", dir=keep_root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


Head = tuple[int | None, str | None, int]


def _dump(keep: Keep, into: Path) -> tuple[str, str, int | None, Head]:
    """Write a consistent copy of the catalog to *into*: (engine, format, pg major, the
    newest event in the copy and how many events it holds)."""
    url = keep.config.catalog_url
    if keep.catalog.dialect == "sqlite":
        source = sqlite3.connect(str(_sqlite_path(url)), timeout=60)
        target = sqlite3.connect(str(into))
        try:
            with target:
                source.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            row = target.execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
            count = int(target.execute("SELECT count(*) FROM events").fetchone()[0])
        except sqlite3.Error as exc:
            raise BackupFailed(f"the SQLite backup of the catalog failed: {exc}") from exc
        finally:
            target.close()
            source.close()
        head: Head = (int(row[0]), str(row[1]), count) if row else (None, None, 0)
        return "sqlite", "sqlite", None, head
    if keep.catalog.dialect != "postgresql":
        raise UsageError(f"cannot back up a {keep.catalog.dialect} catalog")
    major = _server_major(keep)
    args, env, dbname = _libpq(url)
    # pg_dump reads the snapshot of this transaction: the head read here is the dump's
    with keep.catalog.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            newest = "SELECT id, hash FROM events ORDER BY id DESC LIMIT 1"
            last = conn.execute(text(newest)).first()
            count = int(conn.execute(text("SELECT count(*) FROM events")).scalar_one())
            _run_tool(
                [pg_tool("pg_dump", major), "-Fc", f"--snapshot={snapshot}", "-f", str(into),
                 *args, "-d", dbname],
                env,
                "pg_dump",
            )  # fmt: skip
    head = (int(last[0]), str(last[1]), count) if last else (None, None, 0)
    return "postgresql", "pg_dump-custom", major, head


def backup(keep: Keep, *, to: str | None = None, rotate: bool = True) -> dict[str, Any]:
    """Back up the catalog to the backup store, then rotate (see the module docstring)."""
    from labkeep.access import check
    from labkeep.ops.audit import append_event

    check(keep.principal, "keep.admin")
    store = open_store(keep, keep.config, to)
    try:
        now = utcnow()
        # sortable by when it was made, to the microsecond (two backups in one second
        # must not be ordered by their random part)
        backup_id = f"{now:%Y%m%dT%H%M%S.%fZ}-{uuid.uuid4().hex[:6]}"
        with _scratch(keep.root) as folder:
            dump = folder / "catalog.dump"
            engine, fmt, major, head = _dump(keep, dump)
            info = _describe(dump, backup_id, engine, fmt, major, now)
            info.head_event_id, info.head_hash, info.events = head
            digest = bytes.fromhex(info.sha256)
            store.put_file(info.key, str(dump), sha256=digest, size=info.size)
        info.keep_id = _keep_id(keep)
        info.store = store.name
        sidecar = json.dumps({k: v for k, v in info.to_dict().items() if k != "store"}).encode()
        store.put_stream(
            f"{PREFIX}{backup_id}.json",
            [sidecar],
            sha256=hashlib.sha256(sidecar).digest(),
            size=len(sidecar),
        )
        _remember_store(keep, store)
        with keep.catalog.write() as session:
            append_event(
                session,
                keep.actor,
                "backup",
                backup_id,
                {"store": store.name, "sha256": info.sha256, "size": info.size, "engine": engine},
            )
        removed: list[str] = []
        kept_locked: list[str] = []
        if rotate:
            removed, kept_locked = _rotate(keep, store, info.keep_id)
    finally:
        store.close()
    return {
        "action": "backup",
        "status": "ok",
        **info.to_dict(),
        "rotated_out": removed,
        "retention_locked": kept_locked,
    }


def _describe(
    dump: Path, backup_id: str, engine: str, fmt: str, major: int | None, now: datetime
) -> BackupInfo:
    from labkeep.catalog._db import SCHEMA_HEAD

    sha, size = _sha256_file(dump)
    ext = "sqlite" if engine == "sqlite" else "pgdump"
    return BackupInfo(
        id=backup_id,
        keep_id="",
        engine=engine,
        format=fmt,
        created_at=isoformat(now) or "",
        schema=SCHEMA_HEAD,
        size=size,
        sha256=sha,
        key=f"{PREFIX}{backup_id}.{ext}",
        pg_major=major,
    )


# -- rotation ----------------------------------------------------------------------------
def _when(backup_id: str) -> datetime:
    if backup_id[15:16] == ".":  # 20261129T070209.123456Z-...
        return datetime.strptime(backup_id[:23], "%Y%m%dT%H%M%S.%fZ")
    return datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ")


def to_keep(ids: list[str], daily: int, weekly: int, monthly: int) -> set[str]:
    """Grandfather-father-son: the newest backup of each of the last *daily* days that
    have one, of the last *weekly* ISO weeks, of the last *monthly* months; and always
    the newest backup."""
    ordered = sorted(ids, reverse=True)
    keep: set[str] = set(ordered[:1])
    for count, bucket in (
        (daily, lambda d: d.date()),
        (weekly, lambda d: d.isocalendar()[:2]),
        (monthly, lambda d: (d.year, d.month)),
    ):
        seen: set[Any] = set()
        for backup_id in ordered:
            period = bucket(_when(backup_id))
            if period in seen:
                continue
            if len(seen) >= count:
                break
            seen.add(period)
            keep.add(backup_id)
    return keep


def _rotate(keep: Keep, store: ContentStore, keep_id: str) -> tuple[list[str], list[str]]:
    cfg = keep.config.backup
    mine = [b for b in _sidecars(store) if b.keep_id == keep_id]
    kept = to_keep([b.id for b in mine], cfg.daily, cfg.weekly, cfg.monthly)
    removed: list[str] = []
    locked: list[str] = []
    for info in mine:
        if info.id in kept:
            continue
        try:
            store.delete(f"{PREFIX}{info.id}.json")  # unreference first
            store.delete(info.key)
        except RetentionLocked:
            locked.append(info.id)
            continue
        removed.append(info.id)
    return removed, locked


# -- restoring ---------------------------------------------------------------------------
def _fetch(store: ContentStore, info: BackupInfo, into: Path) -> None:
    """Copy the backup's dump to *into*, checked against its SHA-256."""
    digest = hashlib.sha256()
    it = store.open(info.key)
    try:
        with open(into, "wb") as handle:
            for chunk in it:
                digest.update(chunk)
                handle.write(chunk)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
    if digest.hexdigest() != info.sha256:
        raise BackupFailed(
            f"backup {info.id} is damaged: its SHA-256 is {digest.hexdigest()}, its sidecar "
            f"says {info.sha256}",
            hint="restore an older backup ('labkeep backup list')",
        )


def _load(dump: Path, info: BackupInfo, url: str) -> None:
    """Restore *dump* into the (empty) catalog at *url*."""
    backend_name = make_url(url).get_backend_name()
    if (info.engine == "sqlite") != (backend_name == "sqlite"):
        raise UsageError(
            f"backup {info.id} is of a {info.engine} catalog; it cannot be restored into "
            f"a {backend_name} one",
            hint="restore it into the same kind of database (then migrate the data if needed)",
        )
    if backend_name == "sqlite":
        target = _sqlite_path(url)
        if target.exists() and _sqlite_tables(target):
            raise UsageError(
                f"{target} exists: restore-catalog does not overwrite a catalog",
                hint="move it aside first (or restore into a new file)",
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        shutil.copyfile(dump, part)
        with open(part, "rb") as handle:
            os.fsync(handle.fileno())
        for suffix in ("-wal", "-shm", "-journal"):  # of the empty file a command made
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{target}{suffix}")
        os.replace(part, target)
        return
    _require_empty_pg(url)
    major = _server_major(url)
    if info.pg_major and info.pg_major > major:
        raise UsageError(
            f"backup {info.id} was made from PostgreSQL {info.pg_major}; the server at "
            f"{url.split('@')[-1]} runs {major}",
            hint="restore into a server of the same (or a newer) major version",
        )
    args, env, dbname = _libpq(url)
    _run_tool(
        [
            pg_tool("pg_restore", major),
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
            *args,
            "-d",
            dbname,
            str(dump),
        ],
        env,
        "pg_restore",
    )


def _sqlite_tables(path: Path) -> int:
    """Tables in the SQLite file (an empty file, as opening a lost catalog leaves, has 0)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return int(conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 1  # not a database we may overwrite


def _require_empty_pg(url: str) -> None:
    from sqlalchemy import create_engine, inspect
    from sqlalchemy import exc as sa_exc

    from labkeep.catalog import safe_url

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = inspect(conn).get_table_names()
    except sa_exc.OperationalError as exc:
        raise BackupFailed(
            f"cannot reach {safe_url(url)}: {str(exc.orig).strip().splitlines()[0]}",
            hint="create the database first (createdb), and check that the server runs",
        ) from None
    finally:
        engine.dispose()
    if tables:
        raise UsageError(
            f"{safe_url(url)} is not empty ({len(tables)} tables): restore-catalog does not "
            "overwrite a catalog",
            hint="restore into a new, empty database (createdb NAME)",
        )


def restore_catalog(
    config: Config, backup_id: str, into: str, *, source: str | None = None
) -> dict[str, Any]:
    """Restore backup *backup_id* (or "latest") into the empty catalog *into*.

    Works without the keep's catalog: the backup is found through ``--from``,
    ``[backup]`` or the store description the last backup wrote into the tree. Being
    able to read the backups (and to write *into*) is the permission.
    """
    from labkeep.catalog import Catalog, safe_url

    store = open_store(None, config, source)
    try:
        found = sorted(_sidecars(store), key=lambda b: b.id, reverse=True)
        if backup_id != "latest":
            found = [b for b in found if b.id == backup_id]
        if not found:
            raise NotFound(
                f"no backup {backup_id!r} in {store.describe()}",
                hint="'labkeep backup list' (or 'restore-catalog latest') names them",
            )
        info = found[0]
        with _scratch(config.root) as folder:
            dump = folder / "catalog.dump"
            _fetch(store, info, dump)
            _load(dump, info, into)
    finally:
        store.close()
    url = _absolute_sqlite(into)
    restored = Catalog(url)
    try:
        schema = restored.schema_revision()
        activated = url == config.catalog_url
        if activated:
            _mark_restore(config, restored, info)
    finally:
        restored.close()
    return {
        "action": "restore-catalog",
        "status": "ok",
        "backup": info.id,
        "created_at": info.created_at,
        "into": safe_url(url),
        "schema": schema,
        "activated": activated,
        "next": [
            f'point [catalog] url in labkeep.toml at "{safe_url(url)}" (if it is not already)',
            "labkeep upgrade   (only if the schema is older than this labkeep's)",
            "labkeep check     (what changed in the tree since the backup, and how to register it)",
        ],
    }


def _mark_restore(config: Config, restored: Any, info: BackupInfo) -> None:
    """Record the restore in the restored catalog's audit chain, and start a new anchor.

    The events between the backup and the loss are gone with the catalog; the anchor's
    checkpoints of them can no longer be matched. The old anchor is kept beside the new
    one (``audit-anchor.log.before-<backup id>``), the restore event names its newest
    checkpoint, and a checkpoint of the restore event starts the new anchor: 'labkeep
    events --check' then holds the restored history to it.
    """
    import pwd

    from labkeep.integrity.anchor import Checkpoint, FileAnchor
    from labkeep.ops.audit import ANCHOR_FILE, append_event
    from labkeep.storage import PRIVATE_DIR

    path = config.data_path / PRIVATE_DIR / ANCHOR_FILE
    old = FileAnchor(path).newest() if path.exists() else None
    try:
        actor = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        actor = f"uid:{os.geteuid()}"
    details: dict[str, Any] = {"backup": info.id, "backup_taken": info.created_at}
    if old is not None:
        details["anchor_before"] = {"event_id": old.event_id, "hash": old.hash, "at": old.at}
    with restored.write() as session:
        event = append_event(session, actor, "restore-catalog", info.id, details)
        point = Checkpoint(int(event.id), event.hash, isoformat(utcnow()) or "")
    if path.exists():
        os.replace(path, path.with_name(f"{ANCHOR_FILE}.before-{info.id}"))
    FileAnchor(path).append(point)


def _absolute_sqlite(url: str) -> str:
    if make_url(url).get_backend_name() == "sqlite":
        return "sqlite:///" + str(_sqlite_path(url).absolute())
    return url


# -- freshness ---------------------------------------------------------------------------
def last_drill(session: Any, *, good: bool = True) -> datetime | None:
    """When the newest (good) drill was recorded."""
    from labkeep.catalog import Event

    query = select(Event.at, Event.details).where(Event.action == "backup-drill")
    for at, details in session.execute(query.order_by(Event.id.desc()).limit(50)):
        if not good or json.loads(details).get("ok"):
            return at  # type: ignore[no-any-return]
    return None


def drill_attention(keep: Keep, session: Any) -> str | None:
    """A warning when the last good drill is older than ``[backup] drill_max_age``, on a
    keep that backs up (a backup was taken, or the backup store is configured): a laptop
    keep that never set up backups is not nagged."""
    from labkeep.catalog import Event, Store

    cfg = keep.config.backup
    uses_backups = (
        cfg.path is not None
        or session.execute(select(Store.id).where(Store.name == cfg.store)).first() is not None
        or session.execute(select(Event.id).where(Event.action == "backup").limit(1)).first()
        is not None
    )
    if not uses_backups:
        return None
    max_age = cfg.drill_max_age
    at = last_drill(session)
    if at is not None and utcnow() - at <= timedelta(seconds=max_age):
        return None
    when = f"the last good one was at {isoformat(at)}" if at else "there has been none"
    return (
        f"no good catalog backup drill in the last {max_age / 86400:g} days ({when}): run "
        "'labkeep backup' and 'labkeep backup drill'"
    )


__all__ = [
    "BackupFailed",
    "BackupInfo",
    "backup",
    "drill_attention",
    "find_backups",
    "list_backups",
    "restore_catalog",
    "to_keep",
]
