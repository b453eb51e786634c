"""The engine process: load the model once, then work the queue until told to stop."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from engine.jobs import GeneratedImage, GenerationSpec
from engine.limits import Limits
from engine.pipeline import generate, load_model
from engine.queue.base import JobQueue
from engine.worker import Worker, WorkerOptions

log = logging.getLogger(__name__)


def run_engine(
    queue: JobQueue,
    *,
    model: str,
    device: str,
    worker_id: str,
    limits: Limits,
    heartbeat_seconds: float,
    burst: bool = False,
) -> int:
    """Serve jobs until SIGTERM/SIGINT (or, with `burst`, until the queue is empty). Returns jobs done."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("%s: finishing the current job, then stopping", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    log.info("loading %s", model)
    loaded = load_model(model, device=device)
    log.info("model ready on %s (%s); waiting for jobs as %s", loaded.device, loaded.dtype, worker_id)

    def run(
        spec: GenerationSpec, on_step: Callable[[int, int], None], should_stop: Callable[[], bool]
    ) -> list[GeneratedImage]:
        return generate(loaded, spec, on_step=on_step, should_stop=should_stop, limits=limits)

    worker = Worker(
        queue,
        run,
        WorkerOptions(worker_id=worker_id, model=model, limits=limits, heartbeat_seconds=heartbeat_seconds),
    )
    worker.run(stop, burst=burst)
    return worker.jobs_done
