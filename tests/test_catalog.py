"""The catalog schema: migrations create exactly the models, on both engines."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from labkeep import Keep
from labkeep.catalog import Base, Catalog
from labkeep.catalog._db import SCHEMA_HEAD
from labkeep.errors import CatalogError, CatalogUnavailable


def test_migrations_match_models(keep: Keep) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from labkeep.catalog.models import include_in_comparison

    with keep.catalog.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"include_object": include_in_comparison}
        )
        diffs = compare_metadata(context, Base.metadata)
    assert diffs == []
    assert keep.catalog.schema_revision() == SCHEMA_HEAD == keep.catalog.head_revision()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    with Keep.init(tmp_path / "k") as keep, keep.catalog.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_refuses_a_catalog_at_another_schema(keep: Keep, keep_root: Path) -> None:
    with keep.catalog.write() as session:
        session.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    with pytest.raises(CatalogError, match="labkeep upgrade"):
        Keep.open(keep_root)


def test_refuses_an_empty_catalog(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(CatalogError, match="empty"):
            catalog.check_schema()
    finally:
        catalog.close()


def test_unreachable_postgresql_is_a_clear_error(tmp_path: Path) -> None:
    catalog = Catalog("postgresql+psycopg://nobody:secret@127.0.0.1:9/labkeep", retry_seconds=0.3)
    try:
        with pytest.raises(CatalogUnavailable, match="cannot reach the catalog") as info:
            catalog.check_schema()
        assert "secret" not in str(info.value)
    finally:
        catalog.close()


def test_entries_are_temporal_rows(keep: Keep, tmp_path: Path) -> None:
    """A version costs rows only for what changed; any version's list is one query."""
    from sqlalchemy import func, select

    from labkeep.catalog import Entry

    src = tmp_path / "buffer"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(b"%d" % i)
    keep.ingest(src, "proj/s001")
    (src / "f5").write_bytes(b"5")
    keep.ingest(src, "proj/s001")
    keep.seal("proj/s001")
    with keep.catalog.read() as session:
        rows = session.execute(select(func.count(Entry.id))).scalar_one()
    assert rows == 6  # three versions, six rows
    assert [len(keep.ls(f"proj/s001@{v}").items) for v in (1, 2, 3)] == [5, 6, 6]


def test_migration_0004_moves_fixity_off_entries_and_back(keep: Keep, tmp_path: Path) -> None:
    """A keep verified under schema 0003 keeps its verification results through the
    upgrade (entries -> tree_checks), and a downgrade puts them back."""
    from alembic import command

    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(b"x" * i)
    keep.ingest(src, "proj/d")
    keep.verify("proj/d")
    with keep.catalog._connection(begin=True) as conn:
        command.downgrade(keep.catalog._alembic_config(conn), "0003")
    with keep.catalog._connection() as conn:
        old = conn.execute(
            text("SELECT count(*) FROM entries WHERE verify_status = 'ok'")
        ).scalar_one()
    assert old == 5
    keep.catalog.upgrade()
    with keep.catalog._connection() as conn:
        rows = conn.execute(text("SELECT status FROM tree_checks")).scalars().all()
    assert rows == ["ok"] * 5
    assert [e["verify_status"] for e in keep.ls("proj/d").items] == ["ok"] * 5


def test_a_connection_still_in_use_when_the_keep_closes_is_closed_as_it_returns(
    keep_root: Path, catalog_url: str | None
) -> None:
    """A worker thread past its grace, or a response stream a client dropped, can hold a
    connection past the keep's close: it is closed when it comes back, not left open in
    a pool nobody will close (psycopg warns about those when they are collected)."""
    keep = Keep.init(keep_root, catalog_url=catalog_url)
    session = keep.catalog._read()
    session.execute(text("SELECT 1"))
    raw = session.connection().connection.dbapi_connection
    keep.close()
    assert keep.catalog.closed
    session.close()  # returns the connection to the disposed pool
    if catalog_url:
        assert raw.closed
    else:
        with pytest.raises(Exception, match="closed"):
            raw.execute("SELECT 1")


def test_a_keep_dropped_without_close_closes_its_connections(
    keep_root: Path, catalog_url: str | None
) -> None:
    import gc
    import weakref

    keep = Keep.init(keep_root, catalog_url=catalog_url)
    keep.list_projects()
    with keep.catalog.engine.connect() as connection:
        raw = connection.connection.dbapi_connection
    alive = weakref.ref(keep.catalog)
    del keep, connection
    gc.collect()
    assert alive() is None
    if catalog_url:
        assert raw.closed  # else psycopg's ResourceWarning fails this test
    else:
        with pytest.raises(Exception, match="closed"):
            raw.execute("SELECT 1")
