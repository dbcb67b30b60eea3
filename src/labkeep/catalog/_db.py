"""Opening the catalog: engines, sessions, migrations.

SQLite (the laptop default) runs in WAL mode with ``synchronous=FULL``; write
transactions start with ``BEGIN IMMEDIATE`` so that two processes never both read and
then fail to upgrade to a write lock. PostgreSQL is used as it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from labkeep.errors import CatalogError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: the newest migration; a test checks it against Alembic's head, so that opening a keep
#: does not need to import Alembic and read every migration script
SCHEMA_HEAD = "0002"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # let SQLAlchemy's "begin" event below decide how transactions start
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get("labkeep_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages and ``status``."""
    return make_url(url).render_as_string(hide_password=True)


class Catalog:
    """The keep's catalog database: one engine, read and write sessions, migrations."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {}
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"timeout": 60, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self.engine = create_engine(url, **kwargs)
        except (SQLAlchemyError, ImportError) as exc:
            raise CatalogError(f"cannot use catalog {safe_url(url)}: {exc}") from exc
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(
            self.engine.execution_options(labkeep_write=True), expire_on_commit=False
        )

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A session for queries; rolled back at the end."""
        with self._read() as session:
            try:
                yield session
            finally:
                session.rollback()

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A session owning one write transaction: committed on success, else rolled back."""
        with self._write() as session, session.begin():
            yield session

    # -- schema -----------------------------------------------------------------------
    def _alembic_config(self, connection: Connection) -> Any:
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        return config

    def upgrade(self) -> None:
        """Create or upgrade the schema to the newest migration."""
        from alembic import command

        try:
            with self.engine.begin() as connection:
                command.upgrade(self._alembic_config(connection), "head")
        except OperationalError as exc:
            raise CatalogError(f"cannot reach catalog {safe_url(self.url)}: {exc.orig}") from exc

    def schema_revision(self) -> str | None:
        """The migration the catalog is at (None: no schema yet)."""
        with self.engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
            return str(rows[0][0]) if rows else None

    def head_revision(self) -> str | None:
        from alembic.script import ScriptDirectory

        with self.engine.connect() as connection:
            return ScriptDirectory.from_config(self._alembic_config(connection)).get_current_head()

    def check_schema(self) -> None:
        """Refuse to work on a catalog that is missing or older/newer than this code."""
        try:
            current = self.schema_revision()
        except OperationalError as exc:
            raise CatalogError(f"cannot reach catalog {safe_url(self.url)}: {exc.orig}") from exc
        head = SCHEMA_HEAD
        if current != head:
            if current is None:
                raise CatalogError(
                    f"catalog {safe_url(self.url)} is empty",
                    hint="run 'labkeep init' to create a keep, or 'labkeep upgrade'",
                )
            raise CatalogError(
                f"catalog schema is at {current}, this labkeep expects {head}",
                hint="run 'labkeep upgrade' (back up the catalog first)",
            )
