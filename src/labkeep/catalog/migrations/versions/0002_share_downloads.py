"""Share downloads: the files fetched through a share link, each counted once; and an
index on entries by (dataset, path) for files and folders of old versions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PathText = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "share_downloads",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "link_id",
            sa.Integer(),
            sa.ForeignKey("share_links.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("path", PathText, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("counted_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("link_id", "path", "version"),
    )
    op.create_index("ix_entries_dataset_path", "entries", ["dataset_id", "path"])


def downgrade() -> None:
    op.drop_index("ix_entries_dataset_path", table_name="entries")
    op.drop_table("share_downloads")
