"""Full training from scratch of the demo pipeline (UNet and text encoder together), resumable from checkpoints.

Reads an image folder with `.txt` caption sidecars (what `engine.demo.dataset.write_dataset` writes). The loss is
v-prediction MSE weighted toward the shape: pixels that differ from the image's border colour count
`1 + object_weight` times, so the object's outline is learnt sooner (the background is learnt first anyway).
Captions are dropped 10% of the time so classifier-free guidance works. An exponential moving average of the
weights is what gets saved as the pipeline.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.demo.pipeline import PIXELS, DemoPipeline, build_pipeline, to_model_space
from engine.demo.text import encode, tokenize

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
MODEL = "model"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int = 32
    resolution: int = PIXELS
    seed: int = 0
    learning_rate: float = 5e-4
    warmup_steps: int = 200
    caption_dropout: float = 0.1
    object_weight: float = 3.0
    ema_decay: float = 0.998
    checkpoint_every: int = 250
    channels: tuple[int, ...] = (64, 96, 128)
    layers_per_block: int = 1
    text_width: int = 128


@dataclass(frozen=True)
class TrainResult:
    steps: int
    seconds: float
    final_loss: float
    model: Path


def load_images(folder: Path, resolution: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(images uint8 (N, 3, r, r), object masks float (N, 1, r, r), captions) from images with `.txt` sidecars."""
    files = sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    pairs = [(path, path.with_suffix(".txt")) for path in files]
    pairs = [(image, text) for image, text in pairs if text.is_file()]
    if not pairs:
        raise ValueError(
            f"{folder} has no images with caption sidecars (image.png + image.txt); write one with "
            "`imagine demo dataset`."
        )
    images, masks, captions = [], [], []
    for image_path, text_path in pairs:
        with Image.open(image_path) as opened:
            image = opened.convert("RGB").resize((resolution, resolution), Image.Resampling.BOX)
        array = np.asarray(image, dtype=np.int16)
        border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
        background = np.median(border, axis=0)
        masks.append(np.abs(array - background).sum(axis=2) > 30)
        images.append(array.astype(np.uint8))
        captions.append(text_path.read_text(encoding="utf-8").strip())
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    mask = torch.from_numpy(np.stack(masks)).unsqueeze(1).float()
    return pixels, mask, captions


def diffusion_loss(
    pipe: DemoPipeline,
    images: torch.Tensor,
    masks: torch.Tensor,
    states: torch.Tensor,
    pooled: torch.Tensor,
    object_weight: float,
) -> torch.Tensor:
    """v-prediction MSE at random timesteps, pixels of the object weighted `1 + object_weight`."""
    scheduler = pipe.scheduler
    clean = to_model_space(images.float() / 127.5 - 1)
    weight = to_model_space((1 + object_weight * masks).expand(-1, 3, -1, -1))
    noise = torch.randn_like(clean)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (clean.shape[0],))
    noisy = scheduler.add_noise(clean, noise, timesteps)
    target = scheduler.get_velocity(clean, noise, timesteps)
    prediction = pipe.unet(noisy, timesteps, encoder_hidden_states=states, class_labels=pooled).sample
    return (weight * F.mse_loss(prediction, target, reduction="none")).sum() / weight.sum()


class _Ema:
    def __init__(self, modules: list[torch.nn.Module], decay: float) -> None:
        self.decay = decay
        self.shadow: list[Any] = [copy.deepcopy(module).requires_grad_(False) for module in modules]

    @torch.no_grad()
    def update(self, modules: list[torch.nn.Module], step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for shadow, module in zip(self.shadow, modules, strict=True):
            for kept, live in zip(shadow.parameters(), module.parameters(), strict=True):
                kept.lerp_(live, 1 - decay)


def _save_pipeline(pipe: DemoPipeline, ema: _Ema, folder: Path) -> None:
    export = DemoPipeline(
        unet=ema.shadow[0], text_encoder=ema.shadow[1], tokenizer=pipe.tokenizer, scheduler=pipe.scheduler
    )
    export.save_pretrained(str(folder))
    _portable(folder)
    (folder / "imagine.json").write_text(json.dumps({"default_steps": 20, "default_guidance": 2.0}) + "\n")


def _portable(folder: Path) -> None:
    """Name the tokenizer by the class every transformers release has, and drop the local path diffusers records."""
    index_file, tokenizer_file = folder / "model_index.json", folder / "tokenizer" / "tokenizer_config.json"
    index = json.loads(index_file.read_text(encoding="utf-8"))
    index.pop("_name_or_path", None)
    index["tokenizer"] = ["transformers", "PreTrainedTokenizerFast"]
    index_file.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    tokenizer = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    tokenizer["tokenizer_class"] = "PreTrainedTokenizerFast"
    tokenizer_file.write_text(json.dumps(tokenizer, indent=2) + "\n", encoding="utf-8")


def export_model(model: Path, target: Path) -> None:
    """Copy a trained pipeline folder to `target` with fp16 weights (what ships in engine/demo/model)."""
    pipe = DemoPipeline.from_pretrained(str(model))
    pipe.to(torch.float16)
    pipe.save_pretrained(str(target))
    _portable(target)
    (target / "imagine.json").write_text(json.dumps({"default_steps": 20, "default_guidance": 2.0}) + "\n")


def _checkpoint_path(resume: Path) -> Path:
    return resume / CHECKPOINT if resume.is_dir() else resume


def train_full(
    data: Path,
    output: Path,
    *,
    steps: int,
    batch_size: int = 32,
    resolution: int = PIXELS,
    seed: int = 0,
    resume: Path | None = None,
    learning_rate: float = 5e-4,
    checkpoint_every: int = 250,
    threads: int | None = None,
    channels: tuple[int, ...] = (64, 96, 128),
    layers_per_block: int = 1,
    text_width: int = 128,
    on_log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train the demo pipeline from scratch (or from `resume`, a checkpoint file or an output folder) for `steps`
    optimiser steps in all. Writes `output/checkpoint.pt` every `checkpoint_every` steps and at the end, and the
    pipeline (EMA weights) to `output/model`, loadable with `DemoPipeline.from_pretrained`."""
    if resolution != PIXELS:
        raise ValueError(f"the demo pipeline draws at {PIXELS}x{PIXELS}; resolution must be {PIXELS}, not {resolution}")
    for name, count in (("steps", steps), ("batch_size", batch_size), ("checkpoint_every", checkpoint_every)):
        if count < 1:
            raise ValueError(f"{name} must be at least 1, not {count}")
    if not (math.isfinite(learning_rate) and 0 < learning_rate <= 1):
        raise ValueError(f"learning_rate must be above 0 and at most 1, not {learning_rate}")
    if threads is not None:
        torch.set_num_threads(threads)
    say = on_log or log.info
    config = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        resolution=resolution,
        seed=seed,
        learning_rate=learning_rate,
        checkpoint_every=checkpoint_every,
        channels=channels,
        layers_per_block=layers_per_block,
        text_width=text_width,
    )
    output.mkdir(parents=True, exist_ok=True)
    images, masks, captions = load_images(data, resolution)
    say(f"loaded {len(captions)} images from {data}")

    torch.manual_seed(seed)
    pipe = build_pipeline(text_width, channels, layers_per_block)
    unet, text_encoder = pipe.unet, pipe.text_encoder
    modules: list[torch.nn.Module] = [unet, text_encoder]
    parameters = [p for module in modules for p in module.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    ema = _Ema(modules, config.ema_decay)
    step = 0
    rng = random.Random(seed)
    if resume is not None:
        state: dict[str, Any] = torch.load(_checkpoint_path(resume), weights_only=False)
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        for shadow, saved in zip(ema.shadow, state["ema"], strict=True):
            shadow.load_state_dict(saved)
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        say(f"resumed from {resume} at step {step}")

    ids = tokenize(pipe.tokenizer, captions)
    empty = tokenize(pipe.tokenizer, [""])[0]
    for module in modules:
        module.train()

    def save_checkpoint() -> None:
        state = {
            "unet": unet.state_dict(),
            "text_encoder": text_encoder.state_dict(),
            "ema": [shadow.state_dict() for shadow in ema.shadow],
            "optimizer": optimizer.state_dict(),
            "step": step,
            "rng": rng.getstate(),
            "torch_rng": torch.get_rng_state(),
            "config": asdict(config),
        }
        partial = output / (CHECKPOINT + ".partial")
        torch.save(state, partial)
        partial.replace(output / CHECKPOINT)
        _save_pipeline(pipe, ema, output / MODEL)

    started = time.perf_counter()
    first_step = step
    running = math.nan
    while step < steps:
        batch = torch.tensor([rng.randrange(len(captions)) for _ in range(batch_size)])
        tokens = ids[batch].clone()
        dropped = torch.tensor([rng.random() < config.caption_dropout for _ in range(batch_size)])
        tokens[dropped] = empty
        states, pooled = encode(text_encoder, tokens)
        loss = diffusion_loss(pipe, images[batch], masks[batch], states, pooled, config.object_weight)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * min(1.0, (step + 1) / config.warmup_steps)
        optimizer.zero_grad(set_to_none=True)
        cast(Any, loss).backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        ema.update(modules, step)
        step += 1
        value = loss.item()
        running = value if math.isnan(running) else 0.98 * running + 0.02 * value
        if step % 25 == 0 or step == steps:
            elapsed = time.perf_counter() - started
            rate = (step - first_step) * batch_size / max(elapsed, 1e-9)
            say(f"step {step}/{steps} loss {running:.4f} {rate:.1f} img/s elapsed {elapsed:.0f}s")
        if step % checkpoint_every == 0 or step == steps:
            save_checkpoint()
            say(f"checkpoint at step {step}")
    return TrainResult(steps=step, seconds=time.perf_counter() - started, final_loss=running, model=output / MODEL)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the demo model from scratch.")
    parser.add_argument("data", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--resume", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = train_full(
        args.data,
        args.output,
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        resume=args.resume,
        learning_rate=args.learning_rate,
        checkpoint_every=args.checkpoint_every,
        threads=args.threads,
    )
    log.info(
        "done: %s steps in %.0fs, loss %.4f, model in %s", result.steps, result.seconds, result.final_loss, result.model
    )


if __name__ == "__main__":
    main()
