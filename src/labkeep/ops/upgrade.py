"""``labkeep upgrade``: migrate the catalog to this labkeep's schema, backing it up first.

Runs on a :class:`~labkeep.config.Config`, not a Keep (a Keep does not open a catalog
at another schema). Before any migration runs, the catalog is copied: SQLite with its
online backup API, PostgreSQL with ``pg_dump -Fc`` (of the server's major version or
newer), to ``ROOT/backups/catalog-before-upgrade-REV-TIME.{db,dump}`` with its SHA-256.
Nothing is written when the catalog is already at the head. A failed migration leaves
the catalog as it was (each runs in one transaction) and the backup to go back to:
``labkeep restore-catalog`` or, by hand, ``cp`` / ``pg_restore --clean``.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkeep.clock import utcnow
from labkeep.errors import StorageError

if TYPE_CHECKING:
    from labkeep.config import Config

BACKUPS_DIR = "backups"


def upgrade_catalog(config: Config, *, backup: bool = True) -> dict[str, Any]:
    """Back up the catalog, then upgrade it to the head; a record of what was done."""
    from labkeep.catalog import Catalog

    catalog = Catalog(config.catalog_url, retry_seconds=config.catalog_retry_seconds)
    try:
        before = catalog.schema_revision()
        head = catalog.head_revision()
        record: dict[str, Any] = {"action": "upgrade", "from": before, "to": before}
        if before == head:
            record["status"] = "notneeded"
            return record
        if backup and before is not None:
            path = backup_catalog(config, before)
            record["backup"] = str(path)
            record["backup_sha256"] = _sha256(path)
        catalog.upgrade()
        record["to"] = catalog.schema_revision()
        record["status"] = "ok"
        return record
    finally:
        catalog.close()


def backup_catalog(config: Config, revision: str) -> Path:
    """A copy of the catalog as it is now, in ``ROOT/backups/``."""
    from sqlalchemy.engine import make_url

    url = make_url(config.catalog_url)
    folder = config.root / BACKUPS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    if url.get_backend_name() == "sqlite":
        target = folder / f"catalog-before-upgrade-{revision}-{stamp}.db"
        partial = target.with_suffix(".db.part")
        source = sqlite3.connect(f"file:{url.database}?mode=ro", uri=True)
        try:
            dest = sqlite3.connect(partial)
            try:
                source.backup(dest)
                # one self-contained file (the catalog itself runs in WAL mode)
                dest.execute("PRAGMA journal_mode=DELETE")
            finally:
                dest.close()
        finally:
            source.close()
        partial.rename(target)
        return target
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise StorageError(
            "pg_dump is not installed: the catalog cannot be backed up before the upgrade",
            hint="install the PostgreSQL client of the server's version, or back up "
            "yourself and run 'labkeep upgrade --no-backup'",
        )
    target = folder / f"catalog-before-upgrade-{revision}-{stamp}.dump"
    partial = target.with_suffix(".dump.part")
    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    done = subprocess.run(
        [pg_dump, "-Fc", "-f", str(partial), "--dbname", libpq],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise StorageError(
            f"pg_dump failed, nothing was upgraded: {done.stderr.strip()[:300]}",
            hint="pg_dump must be of the server's major version or newer",
        )
    partial.rename(target)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
