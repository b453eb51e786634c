"""A burst of `/imagine` from many members through the fake Discord, and what it did to the bot."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from fake_discord import DEFAULT_USER_ID, FakeDiscord, FakeInteraction

_LAG = re.compile(r"event loop lag: max ([\d.]+) ms, p99 ([\d.]+) ms over (\d+) samples")


@dataclass(frozen=True)
class BurstResult:
    interactions: list[FakeInteraction]
    sent_seconds: float  # from the first interaction sent to the last

    def ack_latencies(self) -> list[float]:
        """Seconds from each interaction's creation to its first callback (None-free once all are acked)."""
        return [i.acked - i.created for i in self.interactions if i.acked is not None]

    def unacknowledged(self) -> list[FakeInteraction]:
        return [i for i in self.interactions if i.acked is None]


async def imagine_burst(fake: FakeDiscord, *, requests: int, users: int, spread_seconds: float) -> BurstResult:
    """`requests` `/imagine` commands from `users` members, sent evenly over `spread_seconds`."""
    started = time.monotonic()

    async def one(i: int) -> FakeInteraction:
        await asyncio.sleep(spread_seconds * i / requests)
        user = DEFAULT_USER_ID + 10 + i % users
        return await fake.send_slash_command("imagine", {"prompt": f"a lantern number {i}", "seed": i}, user_id=user)

    interactions = await asyncio.gather(*(one(i) for i in range(requests)))
    return BurstResult(list(interactions), time.monotonic() - started)


def posted_messages(interaction: FakeInteraction) -> int:
    return sum(1 for message in interaction.followups if message.attachments)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def loop_lag(log_text: str) -> tuple[float, float, int] | None:
    """(max ms, p99 ms, samples) from the bot's last event-loop lag summary in its log."""
    found = _LAG.findall(log_text)
    if not found:
        return None
    worst, p99, samples = found[-1]
    return float(worst), float(p99), int(samples)
