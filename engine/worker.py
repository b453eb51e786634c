"""The engine's loop: claim a batch of compatible jobs, keep their leases fresh, run them as one
pipeline call, report progress, and end each job exactly once.

The GPU side is behind `BatchRunner`, so the loop's fault handling (out-of-memory splitting,
cancellation inside a batch, isolation of a failing job) is tested with a fake runner.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from engine.errors import EngineError, InvalidRequest, JobCancelled, ModelLoadError
from engine.jobs import Event, EventKind, GeneratedImage, Job
from engine.queue.base import EngineStatus, JobQueue

log = logging.getLogger(__name__)

# step, total steps, and a function that makes a preview of image i of the batch (None: no previews).
StepHook = Callable[[int, int, Callable[[int], bytes | None] | None], None]


class BatchRunner(Protocol):
    """The GPU side: models, limits and the pipeline call."""

    def served_models(self) -> list[str]: ...

    def loaded_models(self) -> list[str]: ...

    def check(self, job: Job) -> None:
        """Raise `InvalidRequest` if this job cannot run here (model, style, limits)."""
        ...

    def max_batch_images(self, model: str) -> int: ...

    def run(
        self, jobs: Sequence[Job], on_step: StepHook, should_stop: Callable[[], bool]
    ) -> list[list[GeneratedImage]]:
        """One pipeline call for all images of `jobs` (which share a batch key); images per job, in order."""
        ...

    def is_out_of_memory(self, error: BaseException) -> bool: ...

    def free_memory(self) -> None: ...


class OutOfMemory(EngineError):
    """Even a single image did not fit in the device's memory."""


@dataclass(frozen=True)
class WorkerOptions:
    worker_id: str
    heartbeat_seconds: float = 2.0
    progress_interval_seconds: float = 0.5
    claim_timeout_seconds: float = 1.0
    pulse_seconds: float = 0.25  # how often cancellation is checked while a batch runs


class _Batch:
    """The jobs of one pipeline call and what has happened to each."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.jobs = list(jobs)
        self.ended: set[str] = set()
        self.lost: set[str] = set()
        self.lock = threading.Lock()

    def live(self) -> list[Job]:
        with self.lock:
            return [job for job in self.jobs if job.id not in self.ended]


class Worker:
    def __init__(self, queue: JobQueue, runner: BatchRunner, options: WorkerOptions) -> None:
        self.queue = queue
        self.runner = runner
        self.options = options
        self.jobs_done = 0
        self.images_per_second = 0.0
        self.state = "loading"
        self.progress_at = time.time()
        self._batch: _Batch | None = None
        self._abort = threading.Event()
        self._last_lease_beat = 0.0

    # Liveness: a side thread advertises the engine and keeps the running batch's leases fresh.
    def status(self) -> EngineStatus:
        return EngineStatus(
            worker=self.options.worker_id,
            state=self.state,
            models_loaded=tuple(self.runner.loaded_models()),
            models_served=tuple(self.runner.served_models()),
            images_per_second=round(self.images_per_second, 3),
            beat_at=time.time(),
            progress_at=self.progress_at,
            host=socket.gethostname(),
            pid=os.getpid(),
        )

    def _pulse(self, done: threading.Event) -> None:
        last_advert = 0.0
        while not done.wait(self.options.pulse_seconds):
            try:
                now = time.monotonic()
                self._check_batch(lease_due=now - self._last_lease_beat >= self.options.heartbeat_seconds)
                if now - last_advert >= self.options.heartbeat_seconds:
                    last_advert = now
                    self.queue.advertise(self.status())
            except Exception:
                log.exception("engine heartbeat failed")

    def _check_batch(self, *, lease_due: bool) -> None:
        batch = self._batch
        if batch is None:
            return
        if lease_due:
            self._last_lease_beat = time.monotonic()
        for job in batch.live():
            if lease_due and not self.queue.heartbeat(job.id, self.options.worker_id):
                log.warning("job %s: the claim was lost; another engine has it", job.id)
                with batch.lock:
                    batch.ended.add(job.id)
                    batch.lost.add(job.id)
            elif self.queue.cancel_requested(job.id):
                # The user sees the job stop now; its slot in the running call is thrown away at the end.
                self._end(batch, job, Event(EventKind.CANCELLED, reason="cancelled while running"))

    def _end(self, batch: _Batch | None, job: Job, event: Event) -> None:
        if batch is not None:
            with batch.lock:
                if job.id in batch.ended:
                    return
                batch.ended.add(job.id)
        if self.queue.finish(job.id, self.options.worker_id, replace(event, worker=self.options.worker_id)):
            self.jobs_done += 1
        else:
            log.warning("job %s: already ended elsewhere; this result is dropped", job.id)

    def run(self, stop: threading.Event, *, burst: bool = False) -> None:
        """Work until `stop` is set; with `burst`, also stop as soon as the queue is empty."""
        done = threading.Event()
        pulse = threading.Thread(target=self._pulse, args=(done,), name="engine-pulse", daemon=True)
        pulse.start()
        try:
            recovered = self.queue.recover(self.options.worker_id)
            if recovered:
                log.info("handed back %d job(s) this engine held before it restarted", recovered)
            self.state = "idle"
            self.queue.advertise(self.status())
            while not stop.is_set() and not self._abort.is_set():
                self.progress_at = time.time()
                loaded = self.runner.loaded_models()
                served = self.runner.served_models()
                models = loaded + [m for m in served if m not in loaded]
                jobs = self.queue.claim(
                    self.options.worker_id,
                    models=models,
                    max_images=self.runner.max_batch_images(models[0]),
                    timeout=self.options.claim_timeout_seconds,
                )
                if not jobs:
                    if burst:
                        return
                    continue
                self.run_batch(jobs)
        finally:
            self.state = "stopping"
            done.set()
            pulse.join()
            self.queue.advertise(self.status())

    def abort(self) -> None:
        """Stop the running batch at its next step and hand its jobs back (a second SIGTERM)."""
        self._abort.set()

    def run_batch(self, jobs: Sequence[Job]) -> None:
        batch = _Batch(jobs)
        runnable = []
        for job in jobs:
            try:
                self.runner.check(job)
            except InvalidRequest as error:
                self._end(batch, job, Event(EventKind.FAILED, reason=error.message))
            else:
                runnable.append(job)
        if not runnable:
            return
        self.state = "working"
        self._last_lease_beat = time.monotonic()
        self._batch = batch
        started = time.monotonic()
        log.info(
            "batch of %d job(s), %d image(s): %s",
            len(runnable),
            sum(j.spec.count for j in runnable),
            ", ".join(j.id[:8] for j in runnable),
        )
        try:
            for job in runnable:
                self.queue.publish(job.id, self.options.worker_id, Event(EventKind.STARTED))
            results = self._run_splitting(batch, runnable)
        except JobCancelled:
            if self._abort.is_set():
                for job in batch.live():
                    self.queue.release(job.id, self.options.worker_id)
            return
        finally:
            self._batch = None
            self.state = "idle"
            self.progress_at = time.time()
        seconds = time.monotonic() - started
        made = 0
        for job in runnable:
            outcome = results.get(job.id)
            if isinstance(outcome, str):
                self._end(batch, job, Event(EventKind.FAILED, reason=outcome))
            elif outcome is not None:
                made += len(outcome)
                self._end(batch, job, Event(EventKind.DONE, images=tuple(outcome), seconds=seconds, model=job.model))
        if made:
            rate = made / max(seconds, 1e-6)
            self.images_per_second = rate if not self.images_per_second else 0.7 * self.images_per_second + 0.3 * rate

    def _run_splitting(self, batch: _Batch, jobs: list[Job]) -> dict[str, list[GeneratedImage] | str]:
        """Run `jobs` together; on out-of-memory run halves, and a lone job image by image (each image has
        its own seed, so the pixels are the same). Returns images, or a reason, per job id."""
        try:
            images = self._run(batch, jobs)
            return dict(zip((j.id for j in jobs), images, strict=True))
        except JobCancelled:
            if self._abort.is_set():
                raise
            return {}  # every job of this call was cancelled, and each has been ended already
        except Exception as error:
            if self.runner.is_out_of_memory(error):
                self.runner.free_memory()
                return self._after_oom(batch, jobs)
            if len(jobs) > 1:
                log.warning("batch failed (%s); running its jobs one by one to find the cause", error)
                return {k: v for job in jobs for k, v in self._run_splitting(batch, [job]).items()}
            if isinstance(error, InvalidRequest):  # found only once the model was loaded (e.g. no image-to-image)
                return {jobs[0].id: error.message}
            if isinstance(error, ModelLoadError):  # says which model and why, and what to do
                log.error("job %s: %s", jobs[0].id, error)
                return {jobs[0].id: str(error)}
            log.exception("job %s failed", jobs[0].id)
            return {jobs[0].id: f"The engine could not make this image ({type(error).__name__}). Try again later."}

    def _after_oom(self, batch: _Batch, jobs: list[Job]) -> dict[str, list[GeneratedImage] | str]:
        if len(jobs) > 1:
            half = len(jobs) // 2
            log.warning("out of memory with %d jobs; splitting the batch", len(jobs))
            return {**self._run_splitting(batch, jobs[:half]), **self._run_splitting(batch, jobs[half:])}
        (job,) = jobs
        spec = job.spec
        if spec.count == 1:
            size = f"{spec.width}x{spec.height}" if spec.width and spec.height else "this size"
            return {
                job.id: f"Not enough GPU memory to make an image at {size}. Try a smaller size or fewer steps.",
            }
        log.warning("out of memory with %d images of job %s; one image at a time", spec.count, job.id)
        images: list[GeneratedImage] = []
        for index, seed in enumerate(spec.seeds()):
            part = replace(job, spec=replace(spec, seed=seed, count=1))
            outcome = self._run_splitting(batch, [part]).get(job.id)
            if outcome is None or isinstance(outcome, str):
                return {job.id: outcome} if outcome else {}
            images.extend(replace(image, index=index) for image in outcome)
        return {job.id: images}

    def _run(self, batch: _Batch, jobs: list[Job]) -> list[list[GeneratedImage]]:
        first_image: dict[str, int] = {}
        offset = 0
        for job in jobs:
            first_image[job.id] = offset
            offset += job.spec.count
        last_report = 0.0

        def on_step(step: int, total: int, preview: Callable[[int], bytes | None] | None) -> None:
            nonlocal last_report
            self.progress_at = time.time()
            now = time.monotonic()
            if step < total and now - last_report < self.options.progress_interval_seconds:
                return
            last_report = now
            live = {job.id for job in batch.live()}
            for job in jobs:
                if job.id in live:
                    image = preview(first_image[job.id]) if preview is not None and step < total else None
                    event = Event(EventKind.PROGRESS, step=step, total_steps=total, preview=image)
                    self.queue.publish(job.id, self.options.worker_id, event)

        def should_stop() -> bool:
            live = {job.id for job in batch.live()}
            return self._abort.is_set() or not any(job.id in live for job in jobs)

        return self.runner.run(jobs, on_step, should_stop)
