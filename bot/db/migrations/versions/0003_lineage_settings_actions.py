"""A job's parent (variations, upscales, re-rolls), members' own defaults, and recorded member actions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="imagine"))
        batch.add_column(sa.Column("parent_id", sa.String(32)))
        batch.add_column(sa.Column("parent_index", sa.Integer))
        batch.create_index("ix_jobs_parent", ["parent_id"])
    op.create_table(
        "user_settings",
        sa.Column("frontend", sa.String(16), primary_key=True),
        sa.Column("user_id", sa.String(32), primary_key=True),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "member_actions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_id", sa.String(32), nullable=False),
        sa.Column("guild_id", sa.String(32)),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(32)),
        sa.Column("allowed", sa.Boolean, nullable=False),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_member_actions_job", "member_actions", ["job_id"])
    op.create_index("ix_member_actions_actor", "member_actions", ["actor_id"])


def downgrade() -> None:
    op.drop_table("member_actions")
    op.drop_table("user_settings")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_parent")
        for column in ("parent_index", "parent_id", "kind"):
            batch.drop_column(column)
