"""Publishing: DataCite metadata of projects and datasets, releases, content digests.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD/DROP COLUMN: a batch copy of datasets would fail on SQLite, which checks
    # the foreign keys of every table that points to it while the old copy is dropped
    op.add_column("projects", sa.Column("meta", sa.Text(), nullable=True))
    op.add_column("datasets", sa.Column("meta", sa.Text(), nullable=True))
    # a plain column, no foreign key: SQLite cannot drop a column a foreign key uses
    # without rebuilding every table that points to datasets (and datasets are never
    # deleted, so the reference cannot dangle)
    op.add_column("datasets", sa.Column("release_of_id", sa.Integer(), nullable=True))
    op.add_column("datasets", sa.Column("release_version", sa.Integer(), nullable=True))
    op.add_column("datasets", sa.Column("doi", sa.String(255), nullable=True))
    op.add_column("datasets", sa.Column("record_url", sa.Text(), nullable=True))
    op.add_column("datasets", sa.Column("published_at", sa.DateTime(), nullable=True))
    op.create_index("ix_datasets_release_of_id", "datasets", ["release_of_id"])
    op.create_table(
        "digests",
        sa.Column("sha256", sa.LargeBinary(32), primary_key=True),
        sa.Column("sha512", sa.LargeBinary(64), nullable=False),
        sa.Column("md5", sa.LargeBinary(16), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("digests")
    op.drop_index("ix_datasets_release_of_id", "datasets")
    for column in ("published_at", "record_url", "doi", "release_version"):
        op.drop_column("datasets", column)
    op.drop_column("datasets", "release_of_id")
    op.drop_column("datasets", "meta")
    op.drop_column("projects", "meta")
