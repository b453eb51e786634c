"""Time from a slash command to the posted images, against the bare generation time, with the tiny model.

Runs the real `imagine run` (bot + supervised engine) against the fake Discord from the tests, and, as the
baseline in the same run, `engine.pipeline.generate` called directly in this process. Prints JSON.

    .venv/bin/python bench/slash_to_image.py [--runs N]
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
# Run as `python bench/slash_to_image.py`, this folder comes first on sys.path, and bench/engine.py would hide
# the `engine` package: look in the repository root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bot_process import ImagineProcess, imagine_env  # noqa: E402
from fake_discord import FakeDiscord, FakeInteraction  # noqa: E402


def baseline(model_dir: Path, runs: int) -> list[float]:
    from engine.jobs import GenerationSpec
    from engine.pipeline import generate, load_model

    model = load_model(str(model_dir), device="cpu")
    generate(model, GenerationSpec(prompt="warm-up", seed=0))
    times = []
    for i in range(runs):
        started = time.perf_counter()
        generate(model, GenerationSpec(prompt=f"a red cube {i}", seed=i))
        times.append(time.perf_counter() - started)
    return times


def posted(interaction: FakeInteraction) -> bool:
    return any(m.attachments for m in interaction.followups)


async def end_to_end(model_dir: Path, data_dir: Path, runs: int) -> tuple[float, list[float]]:
    async with FakeDiscord() as fake:
        env = imagine_env(
            {
                "IMAGINE_DISCORD_TOKEN": fake.token,
                "IMAGINE_DISCORD_API_URL": fake.api_url,
                "IMAGINE_DISCORD_GATEWAY_URL": fake.gateway_url,
                "IMAGINE_MODEL": str(model_dir),
                "IMAGINE_DATA_DIR": str(data_dir),
                "IMAGINE_LOG_LEVEL": "WARNING",
            }
        )
        process = await ImagineProcess("run", env, data_dir / "run.log").start()
        try:
            await fake.wait_ready(60)
            started = time.perf_counter()
            first = await fake.send_slash_command("imagine", {"prompt": "warm-up", "seed": 0})
            await fake.wait_for(lambda: posted(first), 120)
            cold = time.perf_counter() - started
            times = []
            for i in range(runs):
                started = time.perf_counter()
                interaction = await fake.send_slash_command("imagine", {"prompt": f"a red cube {i}", "seed": i})
                await fake.wait_for(lambda interaction=interaction: posted(interaction), 60)  # type: ignore[misc]
                times.append(time.perf_counter() - started)
            return cold, times
        finally:
            await process.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from engine.tiny import create_tiny_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = create_tiny_pipeline(Path(tmp) / "tiny")
        direct = baseline(model_dir, args.runs)
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        cold, e2e = asyncio.run(end_to_end(model_dir, data_dir, args.runs))
    result = {
        "benchmark": "slash_to_image",
        "model": "tiny (64 px, 4 steps)",
        "runs": args.runs,
        "baseline_generate_median_s": round(statistics.median(direct), 4),
        "slash_to_image_median_s": round(statistics.median(e2e), 4),
        "slash_to_image_min_s": round(min(e2e), 4),
        "slash_to_image_max_s": round(max(e2e), 4),
        "first_image_after_start_s": round(cold, 3),
        "overhead_s": round(statistics.median(e2e) - statistics.median(direct), 4),
        "ratio_to_baseline": round(statistics.median(e2e) / statistics.median(direct), 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
