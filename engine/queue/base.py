"""The queue contract between bots (producers) and engines (consumers).

Delivery is at-least-once: a job whose engine died is handed out again, so producers must
treat results idempotently (the bot does so by job id). A job ends with exactly one terminal
event; `finish` refuses a second one.
"""

from __future__ import annotations

from typing import Protocol

from engine.jobs import Event, Job


class JobQueue(Protocol):
    # Producer side.
    def submit(self, job: Job) -> bool:
        """Queue `job`. Returns False when a job with that id is already known (nothing changes)."""
        ...

    def events(self, job_id: str, after: str | None = None) -> list[tuple[str, Event]]:
        """Events of `job_id` after cursor `after` (None: from the start), oldest first, with their cursors."""
        ...

    def position(self, job_id: str) -> int | None:
        """1 for the next job to run, 2 for the one after…; None once it runs or ended."""
        ...

    def cancel(self, job_id: str) -> bool:
        """A queued job ends at once; a running one stops at its next step. False if already ended."""
        ...

    def forget(self, job_id: str) -> None:
        """Drop a job and its events once the producer has durably handled the result."""
        ...

    # Consumer side.
    def claim(self, worker: str, timeout: float) -> Job | None:
        """Take the next job, waiting up to `timeout` seconds. The claim lasts one lease."""
        ...

    def heartbeat(self, job_id: str, worker: str) -> bool:
        """Extend the lease. False when `worker` no longer holds the job."""
        ...

    def cancel_requested(self, job_id: str) -> bool: ...

    def publish(self, job_id: str, worker: str, event: Event) -> bool:
        """Add a non-terminal event (started, progress). False when `worker` no longer holds the job."""
        ...

    def finish(self, job_id: str, worker: str, event: Event) -> bool:
        """End the job with a terminal event. False (and nothing written) if it already ended elsewhere."""
        ...

    def release(self, job_id: str, worker: str) -> None:
        """Hand an unfinished job back without counting an attempt (graceful shutdown)."""
        ...

    def recover(self, worker: str) -> int:
        """Hand back every job `worker` held before it restarted. Returns how many."""
        ...

    def close(self) -> None: ...
