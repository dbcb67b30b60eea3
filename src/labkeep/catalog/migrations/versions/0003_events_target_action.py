"""An index on events (target, action, id): the newest event of one kind on one dataset
(its last verify, read by ``status`` for every dataset) in one index lookup.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_target_action", "events", ["target", "action", "id"])


def downgrade() -> None:
    op.drop_index("ix_events_target_action", table_name="events")
