"""Runs `imagine` commands as real subprocesses for end-to-end tests, with their logs kept for failures."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

IMAGINE = str(Path(sys.executable).with_name("imagine"))


def imagine_env(base: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGINE_")}
    env.update({"HF_HUB_OFFLINE": "1", "IMAGINE_ENGINE_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"})
    env.update(base)
    return env


class ImagineProcess:
    """One `imagine <command>` child; its output goes to `log_path`."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path) -> None:
        self.command = command
        self.env = env
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.stopping = False

    async def start(self) -> ImagineProcess:
        log = self.log_path.open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                IMAGINE, self.command, env=self.env, stdout=log, stderr=log, start_new_session=True
            )
        finally:
            log.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def exited_unexpectedly(self) -> bool:
        return self.process is not None and self.process.returncode is not None and not self.stopping

    async def kill(self) -> None:
        """SIGKILL the whole process group: no chance to clean up, as in a crash or power loss."""
        self.stopping = True
        if self.process is not None and self.process.returncode is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()

    async def stop(self, timeout: float = 30) -> int | None:  # noqa: ASYNC109
        self.stopping = True
        if self.process is None:
            return None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                await self.kill()
        return self.process.returncode
