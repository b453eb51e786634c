"""Runs the engine as a child process and starts it again whenever it dies or hangs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Mapping

from engine.queue.base import EngineStatus

log = logging.getLogger(__name__)

# Returns the engine's latest advertised status (see `JobQueue.engines`), or None if it has not reported.
HealthCheck = Callable[[], Awaitable[EngineStatus | None]]


def is_hung(status: EngineStatus | None, pid: int, hang_seconds: float, now: float) -> str | None:
    """Why the engine with `pid` counts as hung, or None. An engine that has not reported yet (still
    loading its model) or that reported from an earlier process is never judged."""
    if status is None or status.pid != pid or status.state in ("loading", "stopping"):
        return None
    if now - status.beat_at > hang_seconds:
        return f"no heartbeat for {now - status.beat_at:.0f} s"
    if now - status.progress_at > hang_seconds:
        return f"no progress for {now - status.progress_at:.0f} s while {status.state}"
    return None


class EngineSupervisor:
    def __init__(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        health: HealthCheck | None = None,
        hang_seconds: float = 180.0,
        check_seconds: float = 1.0,
        first_delay: float = 1.0,
        max_delay: float = 30.0,
        stop_timeout: float = 30.0,
        healthy_after: float = 60.0,
    ) -> None:
        self.argv = argv
        self.env = dict(env) if env is not None else None
        self.health = health
        self.hang_seconds = hang_seconds
        self.check_seconds = check_seconds
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.stop_timeout = stop_timeout
        self.healthy_after = healthy_after
        self.restarts = 0
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def _watch(self, process: asyncio.subprocess.Process) -> int:
        """Wait for the engine to exit; kill it if its heartbeats say it hung."""
        last: EngineStatus | None = None  # kept: a frozen engine soon drops out of the list of live ones
        while True:
            try:
                return await asyncio.wait_for(process.wait(), self.check_seconds)
            except TimeoutError:
                pass
            if self.health is None or self._stopping.is_set():
                continue
            try:
                status = await self.health()
                if status is not None and status.pid == process.pid:
                    last = status
                reason = is_hung(last, process.pid, self.hang_seconds, time.time())
            except Exception:
                log.exception("could not read the engine's heartbeat")
                continue
            if reason is not None:
                log.error("engine (pid %d) is hung (%s); killing it so its jobs run again", process.pid, reason)
                process.kill()

    async def run(self) -> None:
        delay = self.first_delay
        while not self._stopping.is_set():
            started = time.monotonic()
            self._process = await asyncio.create_subprocess_exec(*self.argv, env=self.env)
            log.info("engine started (pid %d)", self._process.pid)
            code = await self._watch(self._process)
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= self.healthy_after:
                delay = self.first_delay
            log.warning("engine exited with status %s; starting it again in %.0f s", code, delay)
            self.restarts += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, self.max_delay)

    async def stop(self) -> None:
        """Ask the engine to finish its current batch and exit; kill it if it takes too long."""
        self._stopping.set()
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.stop_timeout)
        except TimeoutError:
            log.warning("engine did not stop within %.0f s; killing it", self.stop_timeout)
            process.kill()
            await process.wait()
