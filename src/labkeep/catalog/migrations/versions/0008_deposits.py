"""Deposits: publishing a dataset version to a repository (InvenioRDM, Zenodo), step by
step, so that a rerun continues where a failure stopped.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_path = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "deposits",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "dataset_id",
            sa.Integer(),
            sa.ForeignKey("datasets.id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("sandbox", sa.Boolean(), nullable=False),
        sa.Column("base_url", sa.Text(), nullable=False),
        sa.Column("record_id", sa.String(255), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("packaged", sa.Boolean(), nullable=False),
        sa.Column("files_total", sa.Integer(), nullable=False),
        sa.Column("files_done", sa.Integer(), nullable=False),
        sa.Column("bytes_total", sa.BigInteger(), nullable=False),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("doi", sa.String(255), nullable=True),
        sa.Column("record_url", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("published_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("dataset_id", "target", "sandbox"),
    )
    op.create_table(
        "deposit_files",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "deposit_id",
            sa.Integer(),
            sa.ForeignKey("deposits.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("key", _path, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("source", _path, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.LargeBinary(32), nullable=True),
        sa.Column("md5", sa.LargeBinary(16), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.UniqueConstraint("deposit_id", "key"),
    )


def downgrade() -> None:
    op.drop_table("deposit_files")
    op.drop_table("deposits")
