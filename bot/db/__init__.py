"""Persistence: every request, its status transitions and its images, in SQLite or PostgreSQL."""
