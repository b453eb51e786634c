"""Measures how late the event loop wakes up: a blocked loop means late acknowledgements and lost interactions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
import traceback
from types import FrameType

log = logging.getLogger(__name__)


class LoopMonitor:
    """Sleeps `interval` seconds at a time and records how much later than asked it woke up. A lag over
    `warn_ms` is logged at once, naming the code the loop was running when a watchdog thread looked at it;
    `summary()` gives the worst and the 99th percentile."""

    def __init__(self, interval: float = 0.05, warn_ms: float = 100.0) -> None:
        self.interval = interval
        self.warn_ms = warn_ms
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._beat = time.perf_counter()
        self._culprit: str | None = None
        self._stopped = threading.Event()
        self._watchdog: threading.Thread | None = None

    def start(self) -> None:
        if self._task is None:
            self._beat = time.perf_counter()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-monitor")
            self._stopped.clear()
            loop_thread = threading.get_ident()
            self._watchdog = threading.Thread(
                target=self._watch, args=(loop_thread,), name="loop-watchdog", daemon=True
            )
            self._watchdog.start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._stopped.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=1)
            self._watchdog = None

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            self._beat = started
            await asyncio.sleep(self.interval)
            self._beat = time.perf_counter()
            lag_ms = max(0.0, (self._beat - started - self.interval) * 1000)
            if len(self.samples) < 1_000_000:
                self.samples.append(lag_ms)
            if lag_ms > self.warn_ms:
                culprit, self._culprit = self._culprit, None
                where = f" in {culprit}" if culprit else " waiting for a CPU"
                log.warning("the event loop was blocked for %.0f ms%s", lag_ms, where)

    def _watch(self, loop_thread: int) -> None:
        """Looks at the loop's thread once it is overdue by half the warning threshold, and keeps where it was."""
        overdue = self.interval + self.warn_ms / 2000
        while not self._stopped.wait(self.warn_ms / 4000):
            if self._culprit is None and time.perf_counter() - self._beat > overdue:
                frames = sys._current_frames()
                frame = frames.get(loop_thread)
                if frame is not None:
                    self._culprit = _where(frame) or _busy_threads(frames, loop_thread)

    def summary(self) -> str:
        if not self.samples:
            return "event loop lag: no samples"
        ordered = sorted(self.samples)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        return f"event loop lag: max {ordered[-1]:.1f} ms, p99 {p99:.1f} ms over {len(ordered)} samples"


def _where(frame: FrameType) -> str | None:
    """The innermost frame of the loop's stack and the innermost one of this project's, as `file:line function`.
    None when the loop sits in its selector: then the process was waiting for a CPU, not blocked by code."""
    stack = traceback.extract_stack(frame)
    if not stack or (stack[-1].name == "select" and stack[-1].filename.endswith("selectors.py")):
        return None
    ours = next((s for s in reversed(stack) if _is_ours(s.filename)), None)
    shown = [stack[-1]] if ours is None or ours is stack[-1] else [stack[-1], ours]
    return " called from ".join(f"{_short(s.filename)}:{s.lineno} {s.name}" for s in shown)


_PACKAGES = ("bot", "engine", "moderation")


def _is_ours(filename: str) -> bool:
    return "site-packages" not in filename and any(f"/{p}/" in filename for p in _PACKAGES)


def _short(filename: str) -> str:
    if "site-packages/" in filename:
        return filename.rsplit("site-packages/", 1)[1]
    for package in _PACKAGES:
        if f"/{package}/" in filename:
            return package + "/" + filename.rsplit(f"/{package}/", 1)[1]
    return filename.rsplit("/", 1)[-1]


def _busy_threads(frames: dict[int, FrameType], loop_thread: int) -> str | None:
    """While the loop waits in its selector, other threads of the process that are running Python code, not idle
    in a queue or a lock: they hold the interpreter lock the loop needs to wake up."""
    busy = []
    for ident, frame in frames.items():
        if ident in (loop_thread, threading.get_ident()):
            continue
        stack = traceback.extract_stack(frame)
        if stack and stack[-1].name not in ("wait", "get", "_worker", "select", "poll", "accept", "recv", "read"):
            busy.append(_where(frame))
    return "the interpreter lock, held by " + "; ".join(b for b in busy if b) if any(busy) else None
