"""Fine-tuning: train a LoRA on a community's own images and serve it as a style.

`train(TrainConfig(...))` is the whole job; `engine.training.dataset` reads the data shapes users already have,
`checkpoints` saves and resumes, `export` writes diffusers/kohya files and registers styles. Importing this
package is cheap: torch and diffusers load when `train` runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.training.config import TrainConfig
from engine.training.errors import DatasetError, DatasetProblem, TrainingError, TrainingUsageError

if TYPE_CHECKING:
    from engine.registry import ModelSpec
    from engine.training.lora import StepReport, TrainResult


def train(
    config: TrainConfig, *, spec: ModelSpec | None = None, progress: bool = True, on_step: StepReport | None = None
) -> TrainResult:
    """See `engine.training.lora.train`."""
    from engine.training.lora import train as run

    return run(config, spec=spec, progress=progress, on_step=on_step)


__all__ = [
    "DatasetError",
    "DatasetProblem",
    "TrainConfig",
    "TrainingError",
    "TrainingUsageError",
    "train",
]
