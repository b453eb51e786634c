"""Queue transports behind one contract (`JobQueue`): `local` (a SQLite file) and `redis` (Redis Streams)."""

from __future__ import annotations

from pathlib import Path

from engine.errors import QueueError
from engine.queue.base import EngineStatus, JobQueue, QueuePosition
from engine.queue.local import LocalQueue

__all__ = ["EngineStatus", "JobQueue", "LocalQueue", "QueuePosition", "open_queue"]


def open_queue(url: str, *, local_path: Path, lease_seconds: float = 30.0, max_attempts: int = 3) -> JobQueue:
    """The transport named by `url`: `local` (a SQLite file at `local_path`) or `redis://…`."""
    if url == "local":
        return LocalQueue(local_path, lease_seconds=lease_seconds, max_attempts=max_attempts)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from engine.queue.redis import RedisQueue

        return RedisQueue(url, lease_seconds=lease_seconds, max_attempts=max_attempts)
    raise QueueError("IMAGINE_QUEUE_URL must be `local` or a redis:// URL.")
