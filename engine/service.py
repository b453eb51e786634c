"""The engine process: load the model once, then work the queue until told to stop."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from types import FrameType

from engine.limits import Limits
from engine.options import EngineOptions
from engine.queue.base import JobQueue
from engine.registry import ModelRegistry
from engine.runner import PipelineRunner
from engine.worker import Worker, WorkerOptions

log = logging.getLogger(__name__)


def run_engine(
    queue: JobQueue,
    *,
    registry: ModelRegistry,
    options: EngineOptions,
    limits: Limits,
    worker_id: str,
    heartbeat_seconds: float,
    served: Sequence[str] | None = None,
    burst: bool = False,
) -> int:
    """Serve jobs until SIGTERM/SIGINT (or, with `burst`, until the queue is empty). Returns jobs ended.

    The first signal stops claiming and lets the running batch finish; a second one stops the batch at
    its next step and hands its jobs back to the queue."""
    stop = threading.Event()
    runner = PipelineRunner(registry, options, limits, served=served)
    worker = Worker(queue, runner, WorkerOptions(worker_id=worker_id, heartbeat_seconds=heartbeat_seconds))

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            log.info("%s again: handing the running batch back", signal.Signals(signum).name)
            worker.abort()
        else:
            log.info("%s: finishing the running batch, then stopping", signal.Signals(signum).name)
            stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    log.info("loading %s", runner.served_models()[0])
    runner.start()
    log.info("ready; serving %s as %s", ", ".join(runner.served_models()), worker_id)
    worker.run(stop, burst=burst)
    return worker.jobs_done
