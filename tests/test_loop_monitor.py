"""The event-loop monitor measures lag and names the code that blocked the loop."""

import asyncio
import time

import pytest

from bot.loop_monitor import LoopMonitor


def block_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # what a synchronous database call or image encode does to a coroutine


async def test_a_blocked_loop_is_measured_and_the_blocking_code_named(caplog: pytest.LogCaptureFixture) -> None:
    monitor = LoopMonitor(interval=0.02, warn_ms=100)
    monitor.start()
    try:
        await asyncio.sleep(0.1)
        block_the_loop(0.4)
        await asyncio.sleep(0.1)
    finally:
        await monitor.stop()
    (warning,) = [r.getMessage() for r in caplog.records if "blocked" in r.getMessage()]
    print(warning)
    assert "test_loop_monitor.py" in warning
    assert "block_the_loop" in warning
    assert 350 <= max(monitor.samples) < 2000
    assert "max" in monitor.summary()


async def test_an_idle_loop_is_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    monitor = LoopMonitor(interval=0.02, warn_ms=1000)
    monitor.start()
    await asyncio.sleep(0.2)
    await monitor.stop()
    assert monitor.samples
    assert not [r for r in caplog.records if "blocked" in r.getMessage()]
