"""Measures how late the event loop wakes up: a blocked loop means late acknowledgements and lost interactions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

log = logging.getLogger(__name__)


class LoopMonitor:
    """Sleeps `interval` seconds at a time and records how much later than asked it woke up. A lag over
    `warn_ms` is logged at once; `summary()` gives the worst and the 99th percentile."""

    def __init__(self, interval: float = 0.05, warn_ms: float = 100.0) -> None:
        self.interval = interval
        self.warn_ms = warn_ms
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.interval)
            lag_ms = max(0.0, (time.perf_counter() - started - self.interval) * 1000)
            if len(self.samples) < 1_000_000:
                self.samples.append(lag_ms)
            if lag_ms > self.warn_ms:
                log.warning("the event loop was blocked for %.0f ms", lag_ms)

    def summary(self) -> str:
        if not self.samples:
            return "event loop lag: no samples"
        ordered = sorted(self.samples)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        return f"event loop lag: max {ordered[-1]:.1f} ms, p99 {p99:.1f} ms over {len(ordered)} samples"
