"""The engine supervisor with real child processes."""

import asyncio
import sys
import time

from bot.supervisor import EngineSupervisor, is_hung
from engine.queue import EngineStatus


def status(pid: int, *, beat: float, progress: float, state: str = "working") -> EngineStatus:
    return EngineStatus(worker="w", state=state, beat_at=beat, progress_at=progress, pid=pid)


def test_hang_rules() -> None:
    now = 1000.0
    assert is_hung(None, 1, 60, now) is None
    assert is_hung(status(2, beat=0, progress=0), 1, 60, now) is None  # an earlier process
    assert is_hung(status(1, beat=0, progress=0, state="loading"), 1, 60, now) is None
    assert is_hung(status(1, beat=now - 5, progress=now - 5), 1, 60, now) is None
    assert "heartbeat" in (is_hung(status(1, beat=now - 61, progress=now - 5), 1, 60, now) or "")
    assert "progress" in (is_hung(status(1, beat=now - 1, progress=now - 61), 1, 60, now) or "")


async def test_a_dead_child_is_started_again() -> None:
    supervisor = EngineSupervisor([sys.executable, "-c", "import sys; sys.exit(3)"], first_delay=0.05)
    task = asyncio.create_task(supervisor.run())
    for _ in range(200):
        if supervisor.restarts >= 2:
            break
        await asyncio.sleep(0.02)
    await supervisor.stop()
    await task
    assert supervisor.restarts >= 2


async def test_a_hung_child_is_killed_and_started_again() -> None:
    pids: list[int] = []

    async def health() -> EngineStatus | None:
        pid = supervisor.pid
        if pid is None:
            return None
        if pid not in pids:
            pids.append(pid)
        # The first child reports once, then never again: it froze.
        if len(pids) == 1:
            return status(pid, beat=time.time() - 10, progress=time.time() - 10)
        return status(pid, beat=time.time(), progress=time.time())

    supervisor = EngineSupervisor(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        health=health,
        hang_seconds=5,
        check_seconds=0.05,
        first_delay=0.05,
        stop_timeout=5,
    )
    task = asyncio.create_task(supervisor.run())
    for _ in range(200):
        if len(pids) >= 2:
            break
        await asyncio.sleep(0.02)
    await supervisor.stop()
    await task
    assert len(pids) == 2
    assert supervisor.restarts == 1
