"""The engine's loop: claim a job, keep its lease fresh, run it, report progress, end it once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.errors import InvalidRequest, JobCancelled
from engine.jobs import Event, EventKind, GeneratedImage, GenerationSpec, Job
from engine.limits import Limits
from engine.queue.base import JobQueue

log = logging.getLogger(__name__)

Generate = Callable[[GenerationSpec, Callable[[int, int], None], Callable[[], bool]], list[GeneratedImage]]


@dataclass(frozen=True)
class WorkerOptions:
    worker_id: str
    model: str
    limits: Limits = field(default_factory=Limits)
    heartbeat_seconds: float = 2.0
    progress_interval_seconds: float = 0.5
    claim_timeout_seconds: float = 1.0


class _Heartbeat:
    """Keeps one job's lease fresh from a side thread and notices cancellation and lost leases."""

    def __init__(self, queue: JobQueue, job_id: str, worker: str, interval: float) -> None:
        self._queue, self._job_id, self._worker, self._interval = queue, job_id, worker, interval
        self._done = threading.Event()
        self.stop_requested = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id[:8]}", daemon=True)

    def _run(self) -> None:
        while not self._done.wait(self._interval):
            try:
                held = self._queue.heartbeat(self._job_id, self._worker)
                if not held or self._queue.cancel_requested(self._job_id):
                    self.stop_requested.set()
            except Exception:
                log.exception("heartbeat for job %s failed", self._job_id)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()


class Worker:
    def __init__(self, queue: JobQueue, generate: Generate, options: WorkerOptions) -> None:
        self.queue = queue
        self.generate = generate
        self.options = options
        self.jobs_done = 0

    def run(self, stop: threading.Event, *, burst: bool = False) -> None:
        """Work until `stop` is set; with `burst`, also stop as soon as the queue is empty."""
        recovered = self.queue.recover(self.options.worker_id)
        if recovered:
            log.info("handed back %d job(s) this engine held before it restarted", recovered)
        while not stop.is_set():
            job = self.queue.claim(self.options.worker_id, timeout=self.options.claim_timeout_seconds)
            if job is None:
                if burst:
                    return
                continue
            self.run_job(job)

    def run_job(self, job: Job) -> None:
        worker = self.options.worker_id
        log.info("job %s: %d image(s), seed %d", job.id, job.spec.count, job.spec.seed)
        started = time.monotonic()
        last_progress = 0.0

        with _Heartbeat(self.queue, job.id, worker, self.options.heartbeat_seconds) as heartbeat:

            def on_step(step: int, total: int) -> None:
                nonlocal last_progress
                now = time.monotonic()
                if step < total and now - last_progress < self.options.progress_interval_seconds:
                    return
                last_progress = now
                self.queue.publish(job.id, worker, Event(EventKind.PROGRESS, step=step, total_steps=total))

            def should_stop() -> bool:
                return heartbeat.stop_requested.is_set()

            try:
                if job.model != self.options.model:
                    raise InvalidRequest("model", f"This engine serves {self.options.model!r}, not {job.model!r}.")
                self.options.limits.check(job.spec)
                self.queue.publish(job.id, worker, Event(EventKind.STARTED, worker=worker))
                images = self.generate(job.spec, on_step, should_stop)
            except JobCancelled:
                ended = Event(EventKind.CANCELLED, reason="cancelled while running", worker=worker)
            except InvalidRequest as error:
                ended = Event(EventKind.FAILED, reason=error.message, worker=worker)
            except Exception as error:
                log.exception("job %s failed", job.id)
                ended = Event(
                    EventKind.FAILED,
                    reason=f"The engine could not make this image ({type(error).__name__}). Try again later.",
                    worker=worker,
                )
            else:
                ended = Event(
                    EventKind.DONE,
                    images=tuple(images),
                    seconds=time.monotonic() - started,
                    model=job.model,
                    worker=worker,
                )
        if not self.queue.finish(job.id, worker, ended):
            log.warning("job %s: lost the claim before finishing; another engine has it", job.id)
        self.jobs_done += 1
