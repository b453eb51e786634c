"""The queue contract between bots (producers) and engines (consumers).

Delivery is at-least-once: a job whose engine died is handed out again, so producers must
treat results idempotently (the bot does so by job id). A job ends with exactly one terminal
event; `finish` refuses a second one. Engines also advertise themselves here (`advertise`), so
bots can estimate waits and supervisors can tell a hung engine from a busy one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from engine.jobs import Event, Job


@dataclass(frozen=True)
class QueuePosition:
    """Where a waiting job stands: `jobs_ahead` jobs holding `images_ahead` images will run before it."""

    jobs_ahead: int
    images_ahead: int

    @property
    def place(self) -> int:
        """1 for the next job to run."""
        return self.jobs_ahead + 1


@dataclass(frozen=True)
class EngineStatus:
    """What an engine tells the others about itself, refreshed every heartbeat."""

    worker: str
    state: str  # loading, idle, working, stopping
    models_loaded: tuple[str, ...] = ()
    models_served: tuple[str, ...] = ()
    images_per_second: float = 0.0  # measured, smoothed; 0 until the first batch
    beat_at: float = 0.0  # time.time() of this report
    progress_at: float = 0.0  # time.time() of the last sign of work (a step, a claim, a finished batch)
    host: str = ""
    pid: int = 0
    extra: dict[str, str] = field(default_factory=dict)


class JobQueue(Protocol):
    # Producer side.
    def submit(self, job: Job) -> bool:
        """Queue `job`. Returns False when a job with that id is already known (nothing changes)."""
        ...

    def events(self, job_id: str, after: str | None = None) -> list[tuple[str, Event]]:
        """Events of `job_id` after cursor `after` (None: from the start), oldest first, with their cursors."""
        ...

    def position(self, job_id: str) -> QueuePosition | None:
        """Where a waiting job stands among the jobs for its model; None once it runs or ended. An estimate
        under fair turns: its owner's waiting jobs before it, plus, per other owner, about as many turns as
        those scaled by the weights (one more when that owner's oldest job is older), never more than that
        owner has waiting; turns already earned (virtual times) and image counts of turns are left out."""
        ...

    def cancel(self, job_id: str) -> bool:
        """A queued job ends at once; a running one stops at its next step. False if already ended."""
        ...

    def forget(self, job_id: str) -> None:
        """Drop a job and its events once the producer has durably handled the result."""
        ...

    # Consumer side.
    def claim(self, worker: str, *, models: Sequence[str], max_images: int, timeout: float) -> list[Job]:
        """Take the next batch. The model: that of the oldest claimable job if it waited long, whatever its
        model; else the earliest of `models` with claimable work. Within that model owners take turns
        (`engine.queue.fair`): the first job is the oldest of the owner with the least weighted service so far,
        and the batch is filled with jobs with the same `Job.batch_key`, again owner by owner, up to
        `max_images` images in all (the first job always counts, even if larger).
        Waits up to `timeout` seconds for work; returns [] if none came. Each claim lasts one lease."""
        ...

    def heartbeat(self, job_id: str, worker: str) -> bool:
        """Extend the lease. False when `worker` no longer holds the job."""
        ...

    def cancel_requested(self, job_id: str) -> bool: ...

    def publish(self, job_id: str, worker: str, event: Event) -> bool:
        """Add a non-terminal event (started, progress). False when `worker` no longer holds the job."""
        ...

    def finish(self, job_id: str, worker: str, event: Event) -> bool:
        """End the job with a terminal event. False (and nothing written) if it already ended or `worker`
        no longer holds it."""
        ...

    def release(self, job_id: str, worker: str) -> None:
        """Hand an unstarted or interrupted job back without counting an attempt (graceful shutdown)."""
        ...

    def recover(self, worker: str) -> int:
        """Hand back every job `worker` held before it restarted (this counts as an attempt). Returns how many."""
        ...

    def dead_letters(self, limit: int = 100) -> list[tuple[str, str]]:
        """Jobs set aside after too many attempts, newest first: (job id, reason)."""
        ...

    def advertise(self, status: EngineStatus) -> None:
        """Publish an engine's status; it counts as gone after a few missed heartbeats."""
        ...

    def engines(self) -> list[EngineStatus]:
        """Engines that reported recently."""
        ...

    def close(self) -> None: ...
