"""Checkpoints that a run really resumes from: adapter weights, optimiser, LR schedule, step and RNG states.

A checkpoint is a folder `OUT/checkpoints/checkpoint-<step>/` holding `adapter.safetensors` (the LoRA weights),
`state.pt` (optimiser, scheduler, gradient scaler, random states; plain tensors, loadable with
`weights_only=True`) and `checkpoint.json` (step and the settings a resume must share). It is written to a
temporary folder and renamed, so a crash while saving never leaves a half checkpoint that looks whole.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from engine.training.config import RESUME_MUST_MATCH, TrainConfig
from engine.training.errors import TrainingUsageError

CHECKPOINTS = "checkpoints"
PREFIX = "checkpoint-"
ADAPTER_FILE = "adapter.safetensors"
STATE_FILE = "state.pt"
INFO_FILE = "checkpoint.json"


@dataclass
class Checkpoint:
    step: int
    adapter: dict[str, torch.Tensor]
    state: dict[str, Any]
    path: Path


def _random_states() -> dict[str, Any]:
    version, mt, gauss = random.getstate()
    name, keys, position, has_gauss, cached = cast(tuple[str, Any, int, int, float], np.random.get_state(legacy=True))
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
    }


def restore_random_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    python = states["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"].tolist()), python["gauss"]))
    state = states["numpy"]
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["name"], keys, state["position"], state["has_gauss"], state["cached"]))


def save_checkpoint(
    output: Path,
    step: int,
    config: TrainConfig,
    adapter: dict[str, torch.Tensor],
    training_state: dict[str, Any],
) -> Path:
    folder = output / CHECKPOINTS / f"{PREFIX}{step:06d}"
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file({key: value.detach().cpu().contiguous() for key, value in adapter.items()}, str(partial / ADAPTER_FILE))
    torch.save({**training_state, "random": _random_states()}, partial / STATE_FILE)
    settings = config.to_json()
    info = {"step": step, "settings": {key: settings[key] for key in RESUME_MUST_MATCH}}
    (partial / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def find_checkpoint(output: Path, resume: str) -> Path:
    """The folder `resume` names: a checkpoint folder, or "latest" (the newest under OUT/checkpoints)."""
    if resume == "latest":
        found = sorted(path for path in (output / CHECKPOINTS).glob(PREFIX + "*") if (path / INFO_FILE).is_file())
        if not found:
            raise TrainingUsageError(
                f"--resume latest: there is no checkpoint in {output / CHECKPOINTS} yet; start without --resume"
            )
        return found[-1]
    path = Path(resume).expanduser()
    if not (path / INFO_FILE).is_file():
        raise TrainingUsageError(
            f"--resume {resume}: not a checkpoint folder (no {INFO_FILE}); give OUT/{CHECKPOINTS}/{PREFIX}N or latest"
        )
    return path


def load_checkpoint(path: Path, config: TrainConfig) -> Checkpoint:
    info = json.loads((path / INFO_FILE).read_text(encoding="utf-8"))
    settings = config.to_json()
    for key, saved in info["settings"].items():
        if settings.get(key) != saved:
            option = "--" + key.replace("_", "-")
            raise TrainingUsageError(
                f"--resume {path}: the checkpoint was trained with {option} {saved}, this run has {settings.get(key)}; "
                "resume with the same value"
            )
    step = int(info["step"])
    if step > config.steps:
        raise TrainingUsageError(f"--resume {path}: the checkpoint is at step {step}, past --steps {config.steps}")
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    return Checkpoint(step=step, adapter=load_file(str(path / ADAPTER_FILE)), state=state, path=path)
