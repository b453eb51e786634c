"""Members' quota state, servers' daily counts, strikes, bans and appeals.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "member_quota",
        sa.Column("frontend", sa.String(16), primary_key=True),
        sa.Column("user_id", sa.String(32), primary_key=True),
        sa.Column("tokens", sa.Float),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.Column("gpu_day", sa.String(10), nullable=False, server_default=""),
        sa.Column("gpu_seconds", sa.Float, nullable=False, server_default="0"),
    )
    op.create_table(
        "guild_quota",
        sa.Column("guild_id", sa.String(32), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("images", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "strikes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("frontend", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("guild_id", sa.String(32)),
        sa.Column("job_id", sa.String(32)),
        sa.Column("actor_id", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_strikes_user", "strikes", ["frontend", "user_id", "at"])
    op.create_table(
        "bans",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("frontend", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("guild_id", sa.String(32)),
        sa.Column("actor_id", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True)),
        sa.Column("lifted_at", sa.DateTime(timezone=True)),
        sa.Column("lifted_by", sa.String(32)),
    )
    op.create_index("ix_bans_user", "bans", ["frontend", "user_id"])
    op.create_table(
        "appeals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("frontend", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("guild_id", sa.String(32)),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(32)),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_appeals_user", "appeals", ["frontend", "user_id", "at"])
    op.create_index("uq_appeals_job", "appeals", ["job_id"], unique=True)


def downgrade() -> None:
    for table in ("appeals", "bans", "strikes", "guild_quota", "member_quota"):
        op.drop_table(table)
