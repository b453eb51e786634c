"""Engine throughput: single-image requests submitted at once through the real queue to a real engine
process, against two references measured in the same run with the same model and settings:

- baseline: the same requests served one at a time by a plain pipeline call each (what servers
  without batching do);
- limit: bare batched pipeline calls at the engine's batch size (what the hardware can do).

Each of the three is measured `--rounds` times and the median is reported, because a 2-core machine
is noisy. The tiny model runs at 32 px by default: at that size a call's fixed costs dominate as they do
for real models on a GPU; at 64 px this CPU is compute-bound and batching gains less (`--size 64`).

    python bench/engine.py --json [--requests 32] [--batch 16] [--size 32] [--rounds 3]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as `python bench/engine.py`, this file's folder comes first on sys.path and its name would hide
# the `engine` package: look in the repository root instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

from engine.jobs import GenerationSpec, Job, new_job_id  # noqa: E402 - after the sys.path fix
from engine.queue import LocalQueue  # noqa: E402


def spec(i: int, size: int) -> GenerationSpec:
    return GenerationSpec(prompt=f"a red cube on a blue table, picture {i}", seed=1000 + i, width=size, height=size)


def references(model_dir: Path, requests: int, batch: int, size: int, rounds: int) -> tuple[float, float]:
    """(one-at-a-time images/s, bare batched images/s), medians of `rounds`, after a warm-up."""
    from diffusers.utils import logging as diffusers_logging

    from engine.pipeline import generate, generate_batch, load_model

    diffusers_logging.disable_progress_bar()
    model = load_model(str(model_dir), device="cpu")
    generate(model, spec(-1, size))
    generate_batch(model, [spec(-2 - i, size) for i in range(batch)])
    single, batched = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(requests):
            generate(model, spec(i, size))
        single.append(requests / (time.perf_counter() - started))
        calls = max(1, requests // batch)
        started = time.perf_counter()
        for call in range(calls):
            generate_batch(model, [spec(call * batch + i, size) for i in range(batch)])
        batched.append(calls * batch / (time.perf_counter() - started))
    return statistics.median(single), statistics.median(batched)


def _done_at(queue_file: Path) -> dict[str, float]:
    """When each job's terminal "done" event was written (wall clock), read straight from the queue file
    so that watching costs the engine next to no CPU."""
    with sqlite3.connect(queue_file) as db:
        rows = db.execute('SELECT job_id, at FROM events WHERE body LIKE \'{"kind": "done"%\'').fetchall()
    return {str(job_id): float(at) for job_id, at in rows}


def through_engine(
    model_dir: Path, data_dir: Path, requests: int, batch: int, size: int, rounds: int
) -> tuple[float, list[float]]:
    """Submit all requests at once to a real `imagine engine` process, `rounds` times;
    (median images/s, every request's latency)."""
    env = {
        **os.environ,
        "IMAGINE_DATA_DIR": str(data_dir),
        "IMAGINE_MODEL": str(model_dir),
        "IMAGINE_ENGINE_DEVICE": "cpu",
        "IMAGINE_ENGINE_MAX_BATCH_IMAGES": str(batch),
        "IMAGINE_ENGINE_PREVIEWS": "false",
        "IMAGINE_LIMITS_MIN_SIZE": str(min(size, 64)),
        "IMAGINE_LOG_LEVEL": os.environ.get("IMAGINE_LOG_LEVEL", "WARNING"),
    }
    queue_file = data_dir / "queue.sqlite3"
    queue = LocalQueue(queue_file)
    engine = subprocess.Popen(
        [str(Path(sys.executable).with_name("imagine")), "engine", "--worker-id", "bench"], env=env
    )
    rates: list[float] = []
    latencies: list[float] = []
    try:
        deadline = time.monotonic() + 180
        while not any(e.state == "idle" for e in queue.engines()):
            if engine.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the engine did not start")
            time.sleep(0.1)
        for round_ in range(rounds):
            jobs = [
                Job(id=new_job_id(), model=str(model_dir), spec=spec(round_ * requests + i, size))
                for i in range(requests)
            ]
            submitted: dict[str, float] = {}
            for job in jobs:
                queue.submit(job)
                submitted[job.id] = time.time()
            while True:
                done = {k: v for k, v in _done_at(queue_file).items() if k in submitted}
                if len(done) == requests:
                    break
                if engine.poll() is not None:
                    raise SystemExit("the engine died")
                time.sleep(0.2)
            rates.append(requests / (max(done.values()) - min(submitted.values())))
            latencies += [done[job_id] - at for job_id, at in submitted.items()]
    finally:
        engine.terminate()
        engine.wait(30)
        queue.close()
    return statistics.median(rates), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16, help="the engine's max batch size in images")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (a multiple of 8)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from engine.tiny import create_tiny_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = create_tiny_pipeline(Path(tmp) / "tiny")
        baseline, limit = references(model_dir, args.requests, args.batch, args.size, args.rounds)
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        engine_rate, latencies = through_engine(model_dir, data_dir, args.requests, args.batch, args.size, args.rounds)
    latencies.sort()
    result = {
        "benchmark": "engine",
        "model": f"tiny ({args.size} px, 4 steps, guidance 0), CPU",
        "requests": args.requests,
        "batch_images": args.batch,
        "rounds": args.rounds,
        "baseline_images_per_s": round(baseline, 3),
        "engine_images_per_s": round(engine_rate, 3),
        "limit_images_per_s": round(limit, 3),
        "ratio_vs_baseline": round(engine_rate / baseline, 3),
        "ratio_vs_limit": round(engine_rate / limit, 3),
        "p50_latency_s": round(statistics.median(latencies), 3),
        "p95_latency_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 3),
    }
    if not args.json:
        print("one at a time, through the engine, and bare batched calls, on the tiny model:", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
