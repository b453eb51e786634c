"""The bot under a burst: 200 `/imagine` from 50 members within a few seconds, through the fake Discord from
the tests, against the real `imagine run` with the tiny model. Prints JSON.

Reports the acknowledgement latency (interaction created -> first callback; Discord's deadline is 3 s) and
the bot's event-loop lag (from its own monitor), and, as the baseline in the same run, the acknowledgement
latency of single commands sent one at a time to the same idle bot.

    .venv/bin/python bench/discord_load.py [--requests 200] [--users 50] [--spread 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as `python bench/discord_load.py`, this folder comes first on sys.path, and bench/engine.py would hide the
# `engine` package: look in the repository root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bot_process import ImagineProcess, imagine_env  # noqa: E402
from fake_discord import FakeDiscord  # noqa: E402
from load import imagine_burst, loop_lag, percentile, posted_messages  # noqa: E402


async def measure(model_dir: Path, data_dir: Path, requests: int, users: int, spread: float) -> dict[str, object]:
    async with FakeDiscord() as fake:
        env = imagine_env(
            {
                "IMAGINE_DISCORD_TOKEN": fake.token,
                "IMAGINE_DISCORD_API_URL": fake.api_url,
                "IMAGINE_DISCORD_GATEWAY_URL": fake.gateway_url,
                "IMAGINE_MODEL": str(model_dir),
                "IMAGINE_DATA_DIR": str(data_dir),
                "IMAGINE_BOT_MAX_JOBS_PER_USER": str(max(1, requests // users + 1)),
                "IMAGINE_ENGINE_MAX_BATCH_IMAGES": "16",
            }
        )
        process = await ImagineProcess("run", env, data_dir / "run.log").start()
        try:
            await fake.wait_ready(60)
            baseline = []
            for i in range(5):  # one at a time, each posted before the next: the idle bot's acknowledgement
                single = await fake.send_slash_command("imagine", {"prompt": f"a kite {i}", "seed": i}, user_id=1)
                await fake.wait_for(lambda single=single: posted_messages(single) == 1, 120)  # type: ignore[misc]
                assert single.acked is not None
                baseline.append(single.acked - single.created)
            started = time.monotonic()
            burst = await imagine_burst(fake, requests=requests, users=users, spread_seconds=spread)
            await fake.wait_for(lambda: all(posted_messages(i) >= 1 for i in burst.interactions), 900)
            all_posted = time.monotonic() - started
        finally:
            await process.stop()
        acks = burst.ack_latencies()
        lag = loop_lag(process.log())
        return {
            "benchmark": "discord_load",
            "requests": requests,
            "users": users,
            "sent_within_s": round(burst.sent_seconds, 2),
            "acknowledged": len(acks),
            "posted_once": sum(1 for i in burst.interactions if posted_messages(i) == 1),
            "ack_p50_ms": round(statistics.median(acks) * 1000, 1),
            "ack_p99_ms": round(percentile(acks, 0.99) * 1000, 1),
            "ack_max_ms": round(max(acks) * 1000, 1),
            "baseline_idle_ack_p50_ms": round(statistics.median(baseline) * 1000, 1),
            "ack_p99_ratio_to_idle": round(percentile(acks, 0.99) / statistics.median(baseline), 2),
            "loop_lag_max_ms": lag[0] if lag else None,
            "loop_lag_p99_ms": lag[1] if lag else None,
            "all_posted_after_s": round(all_posted, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--spread", type=float, default=3.0, help="seconds over which the burst is sent")
    args = parser.parse_args()
    from engine.tiny import create_tiny_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = create_tiny_pipeline(Path(tmp) / "tiny")
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        result = asyncio.run(measure(model_dir, data_dir, args.requests, args.users, args.spread))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
