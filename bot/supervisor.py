"""Runs the engine as a child process and starts it again whenever it dies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class EngineSupervisor:
    def __init__(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        first_delay: float = 1.0,
        max_delay: float = 30.0,
        stop_timeout: float = 30.0,
        healthy_after: float = 60.0,
    ) -> None:
        self.argv = argv
        self.env = dict(env) if env is not None else None
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

    async def run(self) -> None:
        delay = self.first_delay
        while not self._stopping.is_set():
            started = time.monotonic()
            self._process = await asyncio.create_subprocess_exec(*self.argv, env=self.env)
            log.info("engine started (pid %d)", self._process.pid)
            code = await self._process.wait()
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
        """Ask the engine to finish its current job and exit; kill it if it takes too long."""
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
