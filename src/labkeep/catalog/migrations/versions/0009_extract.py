"""Metadata read from files: one extraction record per entry.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "extractions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "entry_id",
            BigId,
            sa.ForeignKey("entries.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("sha256", sa.LargeBinary(32), nullable=False),
        sa.Column("extractor", sa.String(64), nullable=False),
        sa.Column("extractor_version", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("preview", sa.String(16), nullable=False),
        sa.Column("extracted_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_extractions_sha256", "extractions", ["sha256"])


def downgrade() -> None:
    op.drop_index("ix_extractions_sha256", table_name="extractions")
    op.drop_table("extractions")
