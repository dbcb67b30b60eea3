"""Structured metadata and search: key-values, a JSON Schema per project, samples, and the
search index (SQLite FTS5 / PostgreSQL tsvector + GIN + pg_trgm), kept current by
triggers on entries, datasets and projects (see docs/search.md).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PathText = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")

# -- SQLite: an external-content FTS5 table over search_docs, and the triggers ----------
_SQLITE = [
    """CREATE VIRTUAL TABLE search_fts USING fts5(
        name, text, meta, content='search_docs', content_rowid='id',
        tokenize="unicode61 remove_diacritics 2")""",
    """CREATE TRIGGER search_docs_ai AFTER INSERT ON search_docs BEGIN
        INSERT INTO search_fts(rowid, name, text, meta)
        VALUES (new.id, new.name, new.text, new.meta); END""",
    """CREATE TRIGGER search_docs_ad AFTER DELETE ON search_docs BEGIN
        INSERT INTO search_fts(search_fts, rowid, name, text, meta)
        VALUES ('delete', old.id, old.name, old.text, old.meta); END""",
    """CREATE TRIGGER search_docs_au AFTER UPDATE ON search_docs BEGIN
        INSERT INTO search_fts(search_fts, rowid, name, text, meta)
        VALUES ('delete', old.id, old.name, old.text, old.meta);
        INSERT INTO search_fts(rowid, name, text, meta)
        VALUES (new.id, new.name, new.text, new.meta); END""",
    # a file becomes findable when its row becomes current, and stops being findable when
    # the last current row of its path is closed (a rewrite inserts before or after it
    # closes the old row: either order leaves one document)
    """CREATE TRIGGER entries_search_ai AFTER INSERT ON entries
        WHEN new.valid_to IS NULL BEGIN
        INSERT OR IGNORE INTO search_docs
            (kind, project_id, dataset_id, sample_id, path, name, text, meta, day)
        SELECT 'file', d.project_id, new.dataset_id, 0, new.path,
            replace(new.path, rtrim(new.path, replace(new.path, '/', '')), ''),
            new.path, '', date(new.mtime_ns / 1000000000, 'unixepoch')
        FROM datasets d WHERE d.id = new.dataset_id; END""",
    """CREATE TRIGGER entries_search_au AFTER UPDATE OF valid_to ON entries
        WHEN old.valid_to IS NULL AND new.valid_to IS NOT NULL BEGIN
        DELETE FROM search_docs WHERE kind = 'file' AND dataset_id = old.dataset_id
            AND path = old.path AND NOT EXISTS (
                SELECT 1 FROM entries e WHERE e.dataset_id = old.dataset_id
                AND e.path = old.path AND e.valid_to IS NULL); END""",
    """CREATE TRIGGER datasets_search_ai AFTER INSERT ON datasets BEGIN
        INSERT OR IGNORE INTO search_docs
            (kind, project_id, dataset_id, sample_id, path, name, text, meta, day)
        VALUES ('dataset', new.project_id, new.id, 0, '', new.name,
            trim(new.title || ' ' || new.description), '', date(new.created_at)); END""",
    """CREATE TRIGGER datasets_search_au AFTER UPDATE OF title, description ON datasets
        BEGIN
        UPDATE search_docs SET text = trim(new.title || ' ' || new.description)
        WHERE kind = 'dataset' AND dataset_id = new.id; END""",
    """CREATE TRIGGER projects_search_ai AFTER INSERT ON projects BEGIN
        INSERT OR IGNORE INTO search_docs
            (kind, project_id, dataset_id, sample_id, path, name, text, meta, day)
        VALUES ('project', new.id, 0, 0, '', new.name,
            trim(new.title || ' ' || new.description), '', date(new.created_at)); END""",
    """CREATE TRIGGER projects_search_au AFTER UPDATE OF title, description ON projects
        BEGIN
        UPDATE search_docs SET text = trim(new.title || ' ' || new.description)
        WHERE kind = 'project' AND project_id = new.id; END""",
]

# -- PostgreSQL: a generated tsvector with a GIN index, trigram indexes, the triggers ---
_PG_WORDS = "translate(coalesce({0}, ''), '/._', '   ')"
_PG = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    f"""ALTER TABLE search_docs ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple', {_PG_WORDS.format("name")}), 'A') ||
        setweight(to_tsvector('simple', {_PG_WORDS.format("text")}), 'B') ||
        setweight(to_tsvector('simple', {_PG_WORDS.format("meta")}), 'C')) STORED""",
    "CREATE INDEX ix_search_docs_tsv ON search_docs USING gin (tsv)",
    "CREATE INDEX ix_search_docs_path_trgm ON search_docs USING gin (path gin_trgm_ops)",
    "CREATE INDEX ix_search_docs_name_trgm ON search_docs USING gin (name gin_trgm_ops)",
    """CREATE FUNCTION labkeep_entries_search() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            IF NEW.valid_to IS NULL THEN
                INSERT INTO search_docs
                    (kind, project_id, dataset_id, sample_id, path, name, text, meta, day)
                SELECT 'file', d.project_id, NEW.dataset_id, 0, NEW.path,
                    regexp_replace(NEW.path, '^.*/', ''), NEW.path, '',
                    to_char(to_timestamp(NEW.mtime_ns / 1000000000) AT TIME ZONE 'UTC',
                            'YYYY-MM-DD')
                FROM datasets d WHERE d.id = NEW.dataset_id
                ON CONFLICT DO NOTHING;
            END IF;
        ELSIF OLD.valid_to IS NULL AND NEW.valid_to IS NOT NULL THEN
            DELETE FROM search_docs WHERE kind = 'file' AND dataset_id = OLD.dataset_id
                AND path = OLD.path AND NOT EXISTS (
                    SELECT 1 FROM entries e WHERE e.dataset_id = OLD.dataset_id
                    AND e.path = OLD.path AND e.valid_to IS NULL);
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER entries_search AFTER INSERT OR UPDATE OF valid_to ON entries
        FOR EACH ROW EXECUTE FUNCTION labkeep_entries_search()""",
    """CREATE FUNCTION labkeep_datasets_search() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO search_docs
                (kind, project_id, dataset_id, sample_id, path, name, text, meta, day)
            VALUES ('dataset', NEW.project_id, NEW.id, 0, '', NEW.name,
                trim(NEW.title || ' ' || NEW.description), '',
                to_char(NEW.created_at, 'YYYY-MM-DD'))
            ON CONFLICT DO NOTHING;
        ELSE
            UPDATE search_docs SET text = trim(NEW.title || ' ' || NEW.description)
            WHERE kind = 'dataset' AND dataset_id = NEW.id;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER datasets_search AFTER INSERT OR UPDATE OF title, description
        ON datasets FOR EACH ROW EXECUTE FUNCTION labkeep_datasets_search()""",
    """CREATE FUNCTION labkeep_projects_search() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO search_docs
                (kind, project_id, dataset_id, sample_id, path, name, text, meta, day)
            VALUES ('project', NEW.id, 0, 0, '', NEW.name,
                trim(NEW.title || ' ' || NEW.description), '',
                to_char(NEW.created_at, 'YYYY-MM-DD'))
            ON CONFLICT DO NOTHING;
        ELSE
            UPDATE search_docs SET text = trim(NEW.title || ' ' || NEW.description)
            WHERE kind = 'project' AND project_id = NEW.id;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER projects_search AFTER INSERT OR UPDATE OF title, description
        ON projects FOR EACH ROW EXECUTE FUNCTION labkeep_projects_search()""",
]


def upgrade() -> None:
    op.add_column("projects", sa.Column("kv_schema", sa.Text(), nullable=True))
    op.create_table(
        "keyvalues",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "project_id",
            sa.Integer(),
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            nullable=False,
        ),
        # 0: on the project itself (datasets are never deleted: no foreign key)
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        # "": on the project or dataset itself
        sa.Column("path", PathText, nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False),
        sa.UniqueConstraint("project_id", "dataset_id", "path", "key"),
    )
    op.create_table(
        "samples",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("attrs", sa.Text(), nullable=False),
        sa.Column(
            "group_id",
            sa.Integer(),
            sa.ForeignKey("groups.id", ondelete="SET NULL"),
            nullable=True,
            index=True,
        ),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
    )
    op.create_table(
        "sample_links",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "sample_id",
            sa.Integer(),
            sa.ForeignKey("samples.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("dataset_id", sa.Integer(), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.UniqueConstraint("sample_id", "dataset_id"),
    )
    op.create_table(
        "search_docs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        # project | dataset | file | sample
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("path", PathText, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("meta", sa.Text(), nullable=False),
        # YYYY-MM-DD: creation (projects, datasets) or modification (files)
        sa.Column("day", sa.String(10), nullable=False),
        sa.UniqueConstraint("kind", "project_id", "dataset_id", "sample_id", "path"),
    )
    op.create_index("ix_search_docs_dataset_path", "search_docs", ["dataset_id", "path"])
    op.create_index("ix_search_docs_day", "search_docs", ["day"])
    op.create_table(
        "search_fields",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "doc_id", BigId, sa.ForeignKey("search_docs.id", ondelete="CASCADE"), nullable=False
        ),
        # kv | sample | extract
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        # lower-cased, for filters
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_index("ix_search_fields_key_value", "search_fields", ["key", "value", "doc_id"])
    op.create_index("ix_search_fields_doc", "search_fields", ["doc_id", "key", "value"])
    statements = _PG if op.get_bind().dialect.name == "postgresql" else _SQLITE
    for statement in statements:
        op.execute(statement)
    # what already exists becomes findable (projects, datasets, current files)
    pg = op.get_bind().dialect.name == "postgresql"
    day = "to_char({0}, 'YYYY-MM-DD')" if pg else "date({0})"
    columns = "(kind, project_id, dataset_id, sample_id, path, name, text, meta, day)"
    op.execute(
        f"INSERT INTO search_docs {columns} SELECT 'project', id, 0, 0, '', name,"
        f" trim(title || ' ' || description), '', {day.format('created_at')} FROM projects"
    )
    op.execute(
        f"INSERT INTO search_docs {columns} SELECT 'dataset', project_id, id, 0, '', name,"
        f" trim(title || ' ' || description), '', {day.format('created_at')} FROM datasets"
    )
    if pg:
        base = "regexp_replace(e.path, '^.*/', '')"
        mday = "to_char(to_timestamp(e.mtime_ns / 1000000000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    else:
        base = "replace(e.path, rtrim(e.path, replace(e.path, '/', '')), '')"
        mday = "date(e.mtime_ns / 1000000000, 'unixepoch')"
    op.execute(
        f"INSERT INTO search_docs {columns} SELECT 'file', d.project_id, e.dataset_id, 0,"
        f" e.path, {base}, e.path, '', {mday} FROM entries e"
        " JOIN datasets d ON d.id = e.dataset_id WHERE e.valid_to IS NULL"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS entries_search ON entries")
        op.execute("DROP TRIGGER IF EXISTS datasets_search ON datasets")
        op.execute("DROP TRIGGER IF EXISTS projects_search ON projects")
        for name in ("entries", "datasets", "projects"):
            op.execute(f"DROP FUNCTION IF EXISTS labkeep_{name}_search()")
    else:
        for name in (
            "entries_search_ai",
            "entries_search_au",
            "datasets_search_ai",
            "datasets_search_au",
            "projects_search_ai",
            "projects_search_au",
        ):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS search_fts")
    op.drop_table("search_fields")
    op.drop_table("search_docs")
    op.drop_table("sample_links")
    op.drop_table("samples")
    op.drop_table("keyvalues")
    op.drop_column("projects", "kv_schema")
