"""Opening the catalog: engines, sessions, migrations.

SQLite (the laptop default) runs in WAL mode with ``synchronous=FULL``; write
transactions start with ``BEGIN IMMEDIATE`` so that two processes never both read and
then fail to upgrade to a write lock. PostgreSQL is used as it is.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ClauseElement

from labkeep.errors import (
    CatalogBusy,
    CatalogError,
    CatalogFull,
    CatalogUnavailable,
    Conflict,
    LabkeepError,
)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: the newest migration; a test checks it against Alembic's head, so that opening a keep
#: does not need to import Alembic and read every migration script
SCHEMA_HEAD = "0011"
#: how long to keep trying to reach an unreachable catalog before giving up (seconds)
RETRY_SECONDS = 30.0
_AGAIN = "run the same command again: nothing that was done is lost"
log = logging.getLogger("labkeep.catalog")


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


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _quiet_close(session: Session) -> None:
    """Roll back and close, ignoring a connection that is already gone."""
    with contextlib.suppress(sa_exc.SQLAlchemyError):
        session.rollback()
    with contextlib.suppress(sa_exc.SQLAlchemyError):
        session.close()


def is_unique_violation(exc: sa_exc.DBAPIError) -> bool:
    """Whether *exc* is a unique constraint refusing a duplicate (on either engine)."""
    state = str(getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", "") or "")
    return state == "23505" or "unique constraint" in _first_line(exc).lower()


def add_unique(session: Session, row: Any) -> bool:
    """Insert *row*; False (and nothing inserted) if a unique constraint says another
    writer inserted the same thing first, however close in time: "check, then insert"
    alone loses that race on PostgreSQL. The caller's transaction goes on either way."""
    try:
        with session.begin_nested():
            session.add(row)
    except sa_exc.IntegrityError as exc:
        if not is_unique_violation(exc):
            raise
        return False
    return True


def _dispose(engine: Engine, closed: threading.Event) -> None:
    closed.set()
    engine.dispose()


class Catalog:
    """The keep's catalog database: one engine, read and write sessions, migrations.

    Database errors never leave this class raw: :meth:`translate` turns the ones that
    mean "the environment broke" (server down, disk full, locked, a concurrent change)
    into typed errors, and opening a session retries an unreachable server with
    backoff for up to *retry_seconds* (a restart or network blip does not fail a long
    ingest). Errors inside a transaction are not retried here: the use case's own
    write order makes running it again safe, and the message says so.
    """

    def __init__(self, url: str, *, retry_seconds: float = RETRY_SECONDS) -> None:
        self.url = url
        self.retry_seconds = retry_seconds
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {}
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"timeout": 60, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self.engine = create_engine(url, **kwargs)
        except (sa_exc.SQLAlchemyError, ImportError) as exc:
            raise CatalogError(f"cannot use catalog {safe_url(url)}: {exc}") from exc
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
        # Connections never outlive the catalog: one still in use when it is closed (a
        # worker thread past its grace, a response stream a client dropped) is closed as
        # it comes back instead of waiting in a pool nobody will close; and a catalog that
        # is dropped without close() (a forgotten Keep) closes its pool when collected.
        closed = self._closed = threading.Event()

        @event.listens_for(self.engine, "checkin")
        def _close_when_closed(dbapi_connection: Any, _record: Any) -> None:
            if closed.is_set() and dbapi_connection is not None:
                with contextlib.suppress(Exception):
                    dbapi_connection.close()

        self._finalizer = weakref.finalize(self, _dispose, self.engine, closed)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(
            self.engine.execution_options(labkeep_write=True), expire_on_commit=False
        )

    def close(self) -> None:
        self._finalizer()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # -- errors ---------------------------------------------------------------------------
    def translate(self, exc: sa_exc.SQLAlchemyError) -> LabkeepError | None:
        """The typed error for a database error, or None for one that is a bug."""
        where = safe_url(self.url)
        if isinstance(exc, sa_exc.TimeoutError):
            return CatalogBusy(
                "every connection to the catalog is in use", hint="try again in a moment"
            )
        if not isinstance(exc, sa_exc.DBAPIError):
            return None
        reason = _first_line(exc)
        low = reason.lower()
        state = str(getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", "") or "")
        if isinstance(exc, sa_exc.IntegrityError) and is_unique_violation(exc):
            # two writers created the same thing at once (other constraint failures,
            # such as the append-only audit log refusing a change, are no collision)
            return Conflict(
                "the catalog refused a change that collides with another one made at the "
                "same moment",
                hint=_AGAIN,
            )
        if self.dialect == "sqlite":
            if "locked" in low:
                return CatalogBusy(
                    f"the catalog {where} stayed locked by another labkeep process",
                    hint="wait for the other command to finish, then " + _AGAIN,
                )
            if "disk is full" in low:
                return CatalogFull(
                    f"the catalog's disk is full ({where})",
                    hint="free space on the disk that holds the catalog, then " + _AGAIN,
                )
            if isinstance(exc, sa_exc.OperationalError) and any(
                key in low for key in ("unable to open", "disk i/o", "readonly", "read-only")
            ):
                return CatalogUnavailable(
                    f"cannot use the catalog {where}: {reason}",
                    hint="check the permissions and the disk of the catalog file, then " + _AGAIN,
                )
            return None
        if state in ("40001", "40P01"):
            return Conflict(
                "the catalog stopped this change because it collided with another one",
                hint=_AGAIN,
            )
        if state == "53100":
            return CatalogFull(
                f"the catalog database's disk is full ({where})",
                hint="free space on the database server, then " + _AGAIN,
            )
        if (
            exc.connection_invalidated
            or state.startswith(("08", "57P", "53"))
            or (not state and isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)))
        ):
            return CatalogUnavailable(
                f"cannot reach the catalog {where}: {reason}",
                hint="check that the database server is running and reachable from this "
                "machine, then " + _AGAIN,
            )
        return None

    def _raise_typed(self, exc: sa_exc.SQLAlchemyError) -> None:
        error = self.translate(exc)
        if error is not None:
            raise error from exc

    def _retrying(self, attempt: Callable[[], Any]) -> Any:
        """Run *attempt* (which opens a connection), retrying an unreachable catalog."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.1
        warned = False
        while True:
            try:
                return attempt()
            except sa_exc.SQLAlchemyError as exc:
                error = self.translate(exc)
                if error is None:
                    raise
                if not isinstance(error, CatalogUnavailable) or time.monotonic() >= deadline:
                    raise error from exc
                if not warned:
                    log.warning("%s; retrying for up to %.0f s", error.message, self.retry_seconds)
                    warned = True
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 2.0)

    def _begun(self, factory: sessionmaker[Session]) -> Session:
        def attempt() -> Session:
            session = factory()
            try:
                session.connection()  # check out (and ping) a connection; BEGIN
            except BaseException:
                _quiet_close(session)
                raise
            return session

        session: Session = self._retrying(attempt)
        return session

    # -- sessions ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A session for queries; rolled back at the end."""
        session = self._begun(self._read)
        try:
            yield session
        except sa_exc.SQLAlchemyError as exc:
            self._raise_typed(exc)
            raise
        finally:
            _quiet_close(session)

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A session owning one write transaction: committed on success, else rolled back."""
        session = self._begun(self._write)
        try:
            yield session
            session.commit()
        except sa_exc.SQLAlchemyError as exc:
            self._raise_typed(exc)
            raise
        finally:
            _quiet_close(session)

    @contextlib.contextmanager
    def _connection(self, *, begin: bool = False) -> Iterator[Connection]:
        connection: Connection = self._retrying(self.engine.connect)
        try:
            if begin:
                with connection.begin():
                    yield connection
            else:
                yield connection
        except sa_exc.SQLAlchemyError as exc:
            self._raise_typed(exc)
            raise
        finally:
            with contextlib.suppress(sa_exc.SQLAlchemyError):
                connection.close()

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

        with self._connection(begin=True) as connection:
            command.upgrade(self._alembic_config(connection), "head")

    def schema_revision(self) -> str | None:
        """The migration the catalog is at (None: no schema yet)."""
        with self._connection() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
            return str(rows[0][0]) if rows else None

    def head_revision(self) -> str | None:
        from alembic.script import ScriptDirectory

        with self._connection() as connection:
            return ScriptDirectory.from_config(self._alembic_config(connection)).get_current_head()

    def check_schema(self) -> None:
        """Refuse to work on a catalog that is missing or older/newer than this code."""
        current = self.schema_revision()
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


def plain_rows(session: Session, statement: ClauseElement) -> list[tuple[Any, ...]]:
    """The rows of a SELECT as the driver's own tuples, skipping SQLAlchemy's result
    processing (about 2 us a row): for the bulk merges that read the catalog in pages of
    thousands of rows (a save's quick check against the head). Only for statements whose
    parameters and columns need no type conversion (integers, text, bytes). Runs in the
    session's transaction; a driver error is raised as SQLAlchemy's, so the catalog's
    typed errors apply."""
    conn = session.connection()
    compiled: Any = statement.compile(
        dialect=conn.dialect, compile_kwargs={"render_postcompile": True}
    )
    params = compiled.construct_params()
    args: Any = (
        tuple(params[name] for name in compiled.positiontup or ())
        if compiled.positional
        else params
    )
    dbapi = conn.dialect.loaded_dbapi
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(compiled.string, args)
        return list(cursor.fetchall())
    except dbapi.Error as exc:
        raise sa_exc.DBAPIError.instance(compiled.string, args, exc, dbapi.Error) from exc
    finally:
        cursor.close()
