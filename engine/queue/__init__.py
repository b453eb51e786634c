"""Queue transports behind one contract (`JobQueue`)."""

from __future__ import annotations

from pathlib import Path

from engine.errors import QueueError
from engine.queue.base import JobQueue
from engine.queue.local import LocalQueue

__all__ = ["JobQueue", "LocalQueue", "open_queue"]


def open_queue(url: str, *, local_path: Path, lease_seconds: float = 30.0, max_attempts: int = 3) -> JobQueue:
    """The transport named by `url`: `local` (a SQLite file at `local_path`)."""
    if url == "local":
        return LocalQueue(local_path, lease_seconds=lease_seconds, max_attempts=max_attempts)
    raise QueueError(f"IMAGINE_QUEUE_URL={url.split('://')[0]}://… is not supported yet; use `local`.")
