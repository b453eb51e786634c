"""Alembic environment: runs on the connection `bot.db.migrate.upgrade` hands over."""

from __future__ import annotations

from alembic import context

from bot.db.models import Base
from moderation.audit import metadata as audit_metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `imagine db upgrade`, which supplies the connection")

context.configure(connection=connection, target_metadata=[Base.metadata, audit_metadata], render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
