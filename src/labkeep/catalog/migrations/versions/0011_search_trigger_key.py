"""SQLite: the trigger that drops a file's search document when its last current entry
ends looks the document up by its whole unique key.

Migration 0010's trigger gave ``kind``, ``dataset_id`` and ``path`` but not
``project_id`` and ``sample_id``. Without planner statistics SQLite then searched the
unique index ``(kind, project_id, dataset_id, sample_id, path)`` by ``kind`` alone: every
modified or removed file scanned every file document of the keep (100 files changed in
a 10,000-file dataset: 100 ms; in a 10^6-file keep, seconds per file). With the whole key
it is one index probe. PostgreSQL's trigger is unchanged (its planner uses the
``(dataset_id, path)`` index).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_BY_KEY = """CREATE TRIGGER entries_search_au AFTER UPDATE OF valid_to ON entries
    WHEN old.valid_to IS NULL AND new.valid_to IS NOT NULL BEGIN
    DELETE FROM search_docs WHERE kind = 'file'
        AND project_id = (SELECT d.project_id FROM datasets d WHERE d.id = old.dataset_id)
        AND dataset_id = old.dataset_id AND sample_id = 0 AND path = old.path
        AND NOT EXISTS (
            SELECT 1 FROM entries e WHERE e.dataset_id = old.dataset_id
            AND e.path = old.path AND e.valid_to IS NULL); END"""

_BY_PART = """CREATE TRIGGER entries_search_au AFTER UPDATE OF valid_to ON entries
    WHEN old.valid_to IS NULL AND new.valid_to IS NOT NULL BEGIN
    DELETE FROM search_docs WHERE kind = 'file' AND dataset_id = old.dataset_id
        AND path = old.path AND NOT EXISTS (
            SELECT 1 FROM entries e WHERE e.dataset_id = old.dataset_id
            AND e.path = old.path AND e.valid_to IS NULL); END"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS entries_search_au")
        op.execute(_BY_KEY)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS entries_search_au")
        op.execute(_BY_PART)
