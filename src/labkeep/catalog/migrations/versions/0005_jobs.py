"""Background work: the job queue, workers, watched buffers and their acquisitions.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PathText = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("args", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("run_after", sa.DateTime(), nullable=False),
        sa.Column("unique_key", sa.String(255), nullable=True, unique=True),
        sa.Column("unique_scope", sa.String(8), nullable=False),
        sa.Column("target", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("progress", sa.Text(), nullable=False),
    )
    op.create_index(
        "ix_jobs_claim",
        "jobs",
        [sa.column("state"), sa.column("priority").desc(), sa.column("run_after"), sa.column("id")],
    )
    op.create_index("ix_jobs_target", "jobs", ["target"])
    op.create_table(
        "workers",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("kinds", sa.Text(), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("running", sa.Integer(), nullable=False),
    )
    op.create_table(
        "watches",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("path", sa.Text(), nullable=False, unique=True),
        sa.Column("project_template", sa.String(255), nullable=False),
        sa.Column("dataset_template", sa.String(255), nullable=False),
        sa.Column("owner_from", sa.String(64), nullable=False),
        sa.Column("owner_map", sa.Text(), nullable=False),
        sa.Column("ready", sa.String(255), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("poll_seconds", sa.Integer(), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("link", sa.Boolean(), nullable=False),
        sa.Column("seal", sa.Boolean(), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
    )
    op.create_table(
        "buffer_folders",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "watch_id",
            sa.Integer(),
            sa.ForeignKey("watches.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("folder", PathText, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.Column("last_change", sa.DateTime(), nullable=False),
        sa.Column("files", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("project", sa.String(64), nullable=True),
        sa.Column("dataset", sa.String(64), nullable=True),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("job_id", BigId, sa.ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True),
        sa.Column("imported_at", sa.DateTime(), nullable=True),
        sa.Column("linked", sa.Boolean(), nullable=True),
        sa.Column("cleaned_at", sa.DateTime(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.UniqueConstraint("watch_id", "folder"),
    )


def downgrade() -> None:
    op.drop_table("buffer_folders")
    op.drop_table("watches")
    op.drop_table("workers")
    op.drop_index("ix_jobs_target", table_name="jobs")
    op.drop_index("ix_jobs_claim", table_name="jobs")
    op.drop_table("jobs")
