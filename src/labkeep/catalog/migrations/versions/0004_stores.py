"""Stores and copies: store settings, the replica log (``replicas`` for content stores,
``tree_checks`` for the tree: fixity moves off ``entries``), copy policies, catalog
leases, and whether a dataset's tree copy is present.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("stores") as batch:
        batch.add_column(
            sa.Column("offsite", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("medium", sa.String(16), nullable=False, server_default="disk"))
        batch.add_column(sa.Column("settings", sa.Text(), nullable=False, server_default="{}"))
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(
            sa.Column("tree_state", sa.String(16), nullable=False, server_default="present")
        )
    op.create_table(
        "replicas",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "store_id",
            sa.Integer(),
            sa.ForeignKey("stores.id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column("sha256", sa.LargeBinary(32), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("verified_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("checked_by", sa.String(16), nullable=False),
        sa.Column("retain_until", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("store_id", "sha256"),
    )
    op.create_index("ix_replicas_sha256", "replicas", ["sha256"])
    op.create_table(
        "policies",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "project_id",
            sa.Integer(),
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            nullable=True,
            unique=True,
        ),
        sa.Column("min_copies", sa.Integer(), nullable=False),
        sa.Column("min_media", sa.Integer(), nullable=False),
        sa.Column("min_offsite", sa.Integer(), nullable=False),
        sa.Column("on_seal", sa.Text(), nullable=False),
        sa.Column("tree_droppable", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False),
    )
    op.create_table(
        "tree_checks",
        sa.Column(
            "entry_id",
            BigId,
            sa.ForeignKey("entries.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("checked_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
    )
    op.execute(
        "INSERT INTO tree_checks (entry_id, checked_at, status) "
        "SELECT id, verified_at, verify_status FROM entries "
        "WHERE verified_at IS NOT NULL AND verify_status IS NOT NULL"
    )
    # plain DROP COLUMN (SQLite >= 3.35, PostgreSQL): no table rebuild, the partial
    # unique index on entries stays as it is
    op.drop_column("entries", "verify_status")
    op.drop_column("entries", "verified_at")
    op.create_table(
        "leases",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("what", sa.Text(), nullable=False),
        sa.Column("acquired_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.add_column("entries", sa.Column("verified_at", sa.DateTime(), nullable=True))
    op.add_column("entries", sa.Column("verify_status", sa.String(16), nullable=True))
    op.execute(
        "UPDATE entries SET verified_at = (SELECT checked_at FROM tree_checks "
        "WHERE entry_id = entries.id), verify_status = (SELECT status FROM tree_checks "
        "WHERE entry_id = entries.id)"
    )
    op.drop_table("tree_checks")
    op.drop_table("policies")
    op.drop_index("ix_replicas_sha256", table_name="replicas")
    op.drop_table("replicas")
    # plain DROP COLUMN: a batch rebuild of datasets trips its foreign keys on SQLite
    op.drop_column("datasets", "tree_state")
    for column in ("settings", "medium", "offsite"):
        op.drop_column("stores", column)
