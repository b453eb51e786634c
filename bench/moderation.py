"""Moderation benchmark: the prompt gate's recall and false positives on the labelled set, and its latency.

    python bench/moderation.py [--json] [--rounds 5] [--image-runs 30]

Quality is measured on the held-out ("test") part of `moderation/data/prompts.jsonl`, which the classifier
never trained on; the training part is reported separately (the gate has seen it, so it flatters). Both use
the strict default policy. recall = harmful prompts refused / harmful prompts (any category counts as a
refusal); false_positive_rate = benign prompts refused / benign prompts. `held_out_fresh` is the part of the
held-out set written after the gate was built (`FRESH_BLOCKS` in moderation/training/prompt_set.py): the other
held-out phrases were looked at while the term lists and rules were written, so they flatter the gate.
`held_out_fresh_by_block` gives each fresh block on its own; the newest block is also `held_out_fresh_latest`.
A block's misses are looked at once it has been scored, so its score today flatters too; the score each block
got the first time it was run, before any tuning on it, is kept as `held_out_fresh_first_scores`.

Latency is one `PromptGate.check` per prompt over the held-out prompts, `--rounds` times after a warm-up.
If `moderation.image_gate` provides `benchmark_image_gate(runs) -> list[float]` (milliseconds per 512x512
image), its p50/p99 are reported too, else null.

Goals: recall >= 0.95, false_positive_rate <= 0.03, prompt_gate_p99_ms <= 5, and image_gate_p99_ms <= 150
when the image gate was timed. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Run as `python bench/moderation.py`, this file's folder comes first on sys.path and this file's name would
# hide the `moderation` package: look in the repository root instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from moderation.policy import CATEGORIES  # noqa: E402 - after the sys.path fix
from moderation.prompt_gate import PromptGate  # noqa: E402
from moderation.training.prompt_set import FRESH_FIRST_SCORES, fresh_block, read  # noqa: E402

_FRESH_KEYS = ("harmful", "benign", "recall", "false_positive_rate", "recall_by_category")


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def quality(gate: PromptGate, rows: Sequence[dict[str, str]]) -> dict[str, Any]:
    harmful = refused = benign = false_positives = 0
    per_category: dict[str, list[int]] = {c: [0, 0] for c in CATEGORIES}
    layers: Counter[str] = Counter()
    misses: list[str] = []
    mistakes: list[str] = []
    for row in rows:
        decision = gate.check(row["text"])
        if row["label"] == "benign":
            benign += 1
            if not decision.allowed:
                false_positives += 1
                mistakes.append(f"{row['text']!r} ({decision.category}, {decision.layer})")
            continue
        harmful += 1
        per_category[row["label"]][1] += 1
        if decision.allowed:
            misses.append(f"{row['text']!r} ({row['label']})")
        else:
            refused += 1
            per_category[row["label"]][0] += 1
            layers[decision.layer] += 1
    return {
        "harmful": harmful,
        "benign": benign,
        "recall": round(refused / max(1, harmful), 4),
        "false_positive_rate": round(false_positives / max(1, benign), 4),
        "recall_by_category": {c: round(hit / n, 4) for c, (hit, n) in per_category.items() if n},
        "refused_by_layer": dict(layers),
        "missed": misses,
        "false_positives": mistakes,
    }


def latency(gate: PromptGate, prompts: Sequence[str], rounds: int) -> list[float]:
    for prompt in prompts:
        gate.check(prompt)
    samples = []
    for _ in range(rounds):
        for prompt in prompts:
            started = time.perf_counter()
            gate.check(prompt)
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def goals_met(held_out: dict[str, Any], times: Sequence[float], image_times: Sequence[float] | None) -> bool:
    """Every goal the run measured: quality, prompt gate latency, and image gate latency when it was timed."""
    met = held_out["recall"] >= 0.95 and held_out["false_positive_rate"] <= 0.03 and percentile(times, 0.99) <= 5.0
    if image_times:
        met = met and percentile(image_times, 0.99) <= 150.0
    return bool(met)


def image_benchmark() -> Callable[[int], list[float]] | None:
    try:
        from moderation.image_gate import benchmark_image_gate  # type: ignore[attr-defined, unused-ignore]
    except ImportError:
        return None
    return benchmark_image_gate  # type: ignore[no-any-return, unused-ignore]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the prompt gate (and the image gate if present).")
    parser.add_argument("--json", action="store_true", help="print only the JSON result line")
    parser.add_argument("--rounds", type=int, default=5, help="timed passes over the held-out prompts")
    parser.add_argument("--image-runs", type=int, default=30, help="images for the image gate's latency")
    args = parser.parse_args(argv)

    gate = PromptGate.from_package()
    rows = read()
    test = [r for r in rows if r["split"] == "test"]
    train = [r for r in rows if r["split"] == "train"]
    held_out = quality(gate, test)
    fresh = quality(gate, [r for r in test if fresh_block(r["group"]) is not None])
    blocks = sorted({b for b in (fresh_block(r["group"]) for r in test) if b is not None})
    by_block = {b: quality(gate, [r for r in test if fresh_block(r["group"]) == b]) for b in blocks}
    training = quality(gate, train)
    times = latency(gate, [r["text"] for r in test], args.rounds)
    image_times = None
    benchmark_image_gate = image_benchmark()
    if benchmark_image_gate is not None:
        image_times = benchmark_image_gate(args.image_runs)

    result = {
        "recall": held_out["recall"],
        "false_positive_rate": held_out["false_positive_rate"],
        "prompt_gate_p50_ms": round(statistics.median(times), 3),
        "prompt_gate_p99_ms": round(percentile(times, 0.99), 3),
        "image_gate_p50_ms": round(statistics.median(image_times), 2) if image_times else None,
        "image_gate_p99_ms": round(percentile(image_times, 0.99), 2) if image_times else None,
        "held_out": {k: v for k, v in held_out.items() if k not in ("missed", "false_positives")},
        "held_out_fresh": {k: fresh[k] for k in _FRESH_KEYS},
        "held_out_fresh_by_block": {str(b): {k: part[k] for k in _FRESH_KEYS} for b, part in by_block.items()},
        "held_out_fresh_latest": {"block": blocks[-1], **{k: by_block[blocks[-1]][k] for k in _FRESH_KEYS}}
        if blocks
        else None,
        "held_out_fresh_first_scores": {str(b): score for b, score in FRESH_FIRST_SCORES.items()},
        "train": {k: v for k, v in training.items() if k not in ("missed", "false_positives")},
        "goals_met": goals_met(held_out, times, image_times),
    }
    if not args.json:
        latest = [(f"fresh block {blocks[-1]}", by_block[blocks[-1]])] if blocks else []
        for name, part in (("held-out", held_out), *latest, ("train", training)):
            print(f"{name}: recall {part['recall']:.3f} of {part['harmful']} harmful, "
                  f"false positives {part['false_positive_rate']:.3f} of {part['benign']} benign")  # fmt: skip
            for line in part["missed"]:
                print(f"  missed {line}")
            for line in part["false_positives"]:
                print(f"  refused {line}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
