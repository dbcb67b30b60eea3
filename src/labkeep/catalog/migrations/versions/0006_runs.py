"""Versions and provenance: run records, their pinned inputs and hashed outputs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PathText = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("argv", sa.Text(), nullable=False),
        sa.Column("cwd", sa.Text(), nullable=False),
        sa.Column(
            "output_dataset_id",
            sa.Integer(),
            sa.ForeignKey("datasets.id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("executor", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("environment", sa.Text(), nullable=False),
        sa.Column("container", sa.Text(), nullable=False),
        sa.Column("job_id", BigId, nullable=True),
        sa.Column("slurm_job_id", sa.String(64), nullable=True),
        sa.Column("slurm", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("stderr_tail", sa.Text(), nullable=False),
        sa.Column("rerun_of", BigId, sa.ForeignKey("runs.id", ondelete="SET NULL"), nullable=True),
        sa.Column("settings", sa.Text(), nullable=False),
    )
    op.create_index("ix_runs_output_dataset_id", "runs", ["output_dataset_id"])
    op.create_index("ix_runs_rerun_of", "runs", ["rerun_of"])
    op.create_table(
        "run_inputs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("run_id", BigId, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column(
            "dataset_id",
            sa.Integer(),
            sa.ForeignKey("datasets.id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=True),
        sa.Column("path", PathText, nullable=False),
    )
    op.create_index("ix_run_inputs_run_id", "run_inputs", ["run_id"])
    op.create_index("ix_run_inputs_dataset", "run_inputs", ["dataset_id", "version"])
    op.create_table(
        "run_outputs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("run_id", BigId, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("path", PathText, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.LargeBinary(32), nullable=False),
        sa.UniqueConstraint("run_id", "path"),
    )
    with op.batch_alter_table("versions") as batch:
        batch.add_column(sa.Column("run_id", BigId, nullable=True))
        batch.create_foreign_key(
            "fk_versions_run_id", "runs", ["run_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_index("ix_versions_run_id", ["run_id"])


def downgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.drop_index("ix_versions_run_id")
        batch.drop_constraint("fk_versions_run_id", type_="foreignkey")
        batch.drop_column("run_id")
    op.drop_table("run_outputs")
    op.drop_table("run_inputs")
    op.drop_table("runs")
