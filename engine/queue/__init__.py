"""Queue transports behind one contract (`JobQueue`): `local` (a SQLite file) and `redis` (Redis Streams)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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

        # `?prefix=NAME` keeps several installations (or test runs) apart on one Redis.
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        prefix = next((value for key, value in query if key == "prefix"), "imagine")
        rest = urlencode([(key, value) for key, value in query if key != "prefix"])
        return RedisQueue(
            urlunsplit(parts._replace(query=rest)),
            prefix=prefix,
            lease_seconds=lease_seconds,
            max_attempts=max_attempts,
        )
    raise QueueError("IMAGINE_QUEUE_URL must be `local` or a redis:// URL.")
