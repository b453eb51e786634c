"""Engine throughput: 32 single-image requests through the real queue to a real engine process,
against two references measured in the same run with the same model and settings:

- baseline: the same requests served one at a time by a plain pipeline call each (what servers
  without batching do);
- limit: one bare batched pipeline call at the engine's batch size (what the hardware can do).

    .venv/bin/python bench/engine.py --json [--requests 32] [--batch 16]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

from engine.jobs import EventKind, GenerationSpec, Job, new_job_id
from engine.queue import LocalQueue


def spec(i: int) -> GenerationSpec:
    return GenerationSpec(prompt=f"a red cube on a blue table, picture {i}", seed=1000 + i)


def references(model_dir: Path, requests: int, batch: int) -> tuple[float, float]:
    """(one-at-a-time images/s, bare batched images/s) with the model loaded once, after a warm-up."""
    from engine.pipeline import generate, generate_batch, load_model

    model = load_model(str(model_dir), device="cpu")
    generate(model, spec(-1))
    generate_batch(model, [spec(-2 - i) for i in range(batch)])
    started = time.perf_counter()
    for i in range(requests):
        generate(model, spec(i))
    one_at_a_time = requests / (time.perf_counter() - started)
    rounds = max(1, requests // batch)
    started = time.perf_counter()
    for r in range(rounds):
        generate_batch(model, [spec(r * batch + i) for i in range(batch)])
    batched = rounds * batch / (time.perf_counter() - started)
    return one_at_a_time, batched


def through_engine(model_dir: Path, data_dir: Path, requests: int, batch: int) -> tuple[float, list[float]]:
    """Submit all requests at once to a real `imagine engine` process; (images/s, latencies)."""
    env = {
        **os.environ,
        "IMAGINE_DATA_DIR": str(data_dir),
        "IMAGINE_MODEL": str(model_dir),
        "IMAGINE_ENGINE_DEVICE": "cpu",
        "IMAGINE_ENGINE_MAX_BATCH_IMAGES": str(batch),
        "IMAGINE_ENGINE_PREVIEWS": "false",
        "IMAGINE_LOG_LEVEL": "WARNING",
    }
    queue = LocalQueue(data_dir / "queue.sqlite3", poll_seconds=0.01)
    engine = subprocess.Popen(
        [str(Path(sys.executable).with_name("imagine")), "engine", "--worker-id", "bench"], env=env
    )
    try:
        deadline = time.monotonic() + 180
        while not any(e.state == "idle" for e in queue.engines()):
            if engine.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the engine did not start")
            time.sleep(0.1)
        jobs = [Job(id=new_job_id(), model=str(model_dir), spec=spec(i)) for i in range(requests)]
        submitted: dict[str, float] = {}
        started = time.perf_counter()
        for job in jobs:
            queue.submit(job)
            submitted[job.id] = time.perf_counter()
        finished: dict[str, float] = {}
        while len(finished) < requests:
            for job in jobs:
                if job.id not in finished and any(e.kind is EventKind.DONE for _, e in queue.events(job.id)):
                    finished[job.id] = time.perf_counter()
            if engine.poll() is not None:
                raise SystemExit("the engine died")
            time.sleep(0.01)
        elapsed = max(finished.values()) - started
        return requests / elapsed, [finished[j] - submitted[j] for j in submitted]
    finally:
        engine.terminate()
        engine.wait(30)
        queue.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16, help="the engine's max batch size in images")
    args = parser.parse_args()
    from engine.tiny import create_tiny_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = create_tiny_pipeline(Path(tmp) / "tiny")
        baseline, limit = references(model_dir, args.requests, args.batch)
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        engine_rate, latencies = through_engine(model_dir, data_dir, args.requests, args.batch)
    latencies.sort()
    result = {
        "benchmark": "engine",
        "model": "tiny (64 px, 4 steps, guidance 0), CPU",
        "requests": args.requests,
        "batch_images": args.batch,
        "baseline_images_per_s": round(baseline, 3),
        "engine_images_per_s": round(engine_rate, 3),
        "limit_images_per_s": round(limit, 3),
        "ratio_vs_baseline": round(engine_rate / baseline, 3),
        "ratio_vs_limit": round(engine_rate / limit, 3),
        "p50_latency_s": round(statistics.median(latencies), 3),
        "p95_latency_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 3),
    }
    if not args.json:
        print("one-at-a-time, engine and bare-batch throughput on the tiny model:", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
