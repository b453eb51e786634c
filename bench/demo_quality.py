"""Prompt-following of the demo model, measured by the deterministic checker (engine/demo/checker.py).

1. Held-out combinations: for every (shape colour, background colour, shape) in `HELD_OUT` (never drawn for
   training), `--seeds` images of "a {colour} {shape} on a {background} background"; the share whose
   background colour, shape colour and shape class the checker reads as asked.
2. A concept the base model never saw: "striped". The share of striped samples for "a {colour} striped {shape}
   on a {background} background" (held-out combinations without white, the stripes' colour) before and after a
   LoRA fine-tune on 20 generated striped images and their plain twins, trained inside this run by `imagine
   train`'s own code (engine.training: rank 16, UNet and text encoder) and loaded back from its file the way
   `imagine generate --lora` does.

    python bench/demo_quality.py --json [--model demo] [--seeds 6] [--lora-steps 600]

The model loads through the engine's loader (`--model` is a registry name or a pipeline folder). The last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import torch  # noqa: E402 - after the sys.path fix

from engine.demo.checker import check, is_striped  # noqa: E402
from engine.demo.dataset import HELD_OUT, SHAPES, STRIPE, Sample, render, write_dataset  # noqa: E402
from engine.pipeline import load_model  # noqa: E402
from engine.training import TrainConfig  # noqa: E402
from engine.training.export import apply_lora  # noqa: E402
from engine.training.lora import train  # noqa: E402

STEPS = 20
GUIDANCE = 2.0
LORA_RANK = 16
LORA_BATCH = 8
LORA_LEARNING_RATE = 3e-3


def _generate(pipe: Any, prompts: list[str], seeds: list[int], batch: int = 48) -> list[Any]:
    images: list[Any] = []
    for start in range(0, len(prompts), batch):
        generators = [torch.Generator().manual_seed(seed) for seed in seeds[start : start + batch]]
        output = pipe(
            prompts[start : start + batch],
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            generator=generators,
        )
        images.extend(output.images)
    return images


def _percent(hits: int, total: int) -> float:
    return round(100.0 * hits / max(1, total), 1)


def held_out_scores(pipe: Any, seeds: int) -> dict[str, float]:
    cases = [(colour, background, shape, seed) for colour, background, shape in HELD_OUT for seed in range(seeds)]
    prompts = [f"a {colour} {shape} on a {background} background" for colour, background, shape, _ in cases]
    images = _generate(pipe, prompts, [seed for *_, seed in cases])
    pairs = list(zip((check(image) for image in images), cases, strict=True))
    scores = {
        "background_colour_pct": _percent(sum(r[1] == c[1] for r, c in pairs), len(pairs)),
        "shape_colour_pct": _percent(sum(r[0] == c[0] for r, c in pairs), len(pairs)),
        "shape_class_pct": _percent(sum(r[2] == c[2] for r, c in pairs), len(pairs)),
    }
    for shape in SHAPES:
        asked = [(r, c) for r, c in pairs if c[2] == shape]
        scores[f"shape_class_{shape}_pct"] = _percent(sum(r[2] == shape for r, _ in asked), len(asked))
    return scores


def striped_share(pipe: Any, seeds: int) -> float:
    combos = [(c, b, s) for c, b, s in HELD_OUT if STRIPE not in (c, b)]
    cases = [(combo, seed) for combo in combos for seed in range(seeds)]
    prompts = [f"a {c} striped {s} on a {b} background" for (c, b, s), _ in cases]
    images = _generate(pipe, prompts, [1000 + seed for _, seed in cases])
    return _percent(sum(is_striped(image) for image in images), len(images))


def write_plain_twins(folder: Path, striped: list[Sample]) -> None:
    """Each striped image's plain twin, captioned without "striped": the concept is tied to the word. Captioned
    in `.txt` sidecars and in `metadata.jsonl`, as `write_dataset` does."""
    with (folder / "metadata.jsonl").open("a", encoding="utf-8") as metadata:
        for number, item in enumerate(striped):
            twin = replace(item, texture="plain", caption=item.caption.replace(" striped", ""))
            name = f"plain-{number:05d}"
            render(twin).save(folder / f"{name}.png")
            (folder / f"{name}.txt").write_text(twin.caption + "\n", encoding="utf-8")
            metadata.write(json.dumps({"file_name": f"{name}.png", "text": twin.caption}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--model", default="demo", help="registry name or pipeline folder (default: demo)")
    parser.add_argument("--seeds", type=int, default=6, help="images per held-out combination")
    parser.add_argument("--lora-images", type=int, default=20)
    parser.add_argument("--lora-steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    started = time.perf_counter()
    model = load_model(args.model, device="cpu")
    pipe = model.pipe
    report: dict[str, Any] = {"model": args.model, "steps": STEPS, "guidance": GUIDANCE}
    report.update(held_out_scores(pipe, args.seeds))
    say(f"held-out combinations: {report}")
    report["striped_before_pct"] = striped_share(pipe, max(1, args.seeds // 2))
    say(f"striped before fine-tuning: {report['striped_before_pct']}%")
    with tempfile.TemporaryDirectory() as folder:
        data, output = Path(folder) / "data", Path(folder) / "lora"
        write_plain_twins(data, write_dataset(data, args.lora_images, seed=7, texture="striped"))
        lora_started = time.perf_counter()
        config = TrainConfig(
            data=data,
            base=args.model,
            output=output,
            steps=args.lora_steps,
            rank=LORA_RANK,
            learning_rate=LORA_LEARNING_RATE,
            batch_size=LORA_BATCH,
            resolution=32,
            device="cpu",
        )
        result = train(config, progress=not args.json)
        report["lora_final_loss"] = round(result.losses[-1], 4)
        report["lora_probe_loss"] = {"before": round(result.probe_before, 4), "after": round(result.probe_after, 4)}
        report["lora_seconds"] = round(time.perf_counter() - lora_started, 1)
        apply_lora(model, result.lora, 1.0)  # from the file, into the model measured before: what --lora does
    report["striped_after_pct"] = striped_share(pipe, max(1, args.seeds // 2))
    say(f"striped after fine-tuning: {report['striped_after_pct']}%")
    report["lora_images"] = args.lora_images
    report["lora_steps"] = args.lora_steps
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
