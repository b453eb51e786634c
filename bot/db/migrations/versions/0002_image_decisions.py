"""What the image gate decided about each image, and where a blurred preview of a held one is.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("gate_action", sa.String(16), nullable=False, server_default="allow"))
        batch.add_column(sa.Column("gate_category", sa.String(32)))
        batch.add_column(sa.Column("gate_layer", sa.String(64)))
        batch.add_column(sa.Column("gate_score", sa.Float))
        batch.add_column(sa.Column("preview_path", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        for column in ("preview_path", "gate_score", "gate_layer", "gate_category", "gate_action"):
            batch.drop_column(column)
