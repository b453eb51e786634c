"""The settings of one training run, checked before anything is loaded."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.training.errors import TrainingUsageError

LR_SCHEDULES = ("constant", "cosine", "linear")
CROPS = ("center", "random")
MIXED_PRECISION = ("no", "fp16", "bf16")
TARGET_MODULES = ("to_k", "to_q", "to_v", "to_out.0")
# The demo model (engine/demo): what its own LoRA fine-tune found to work, and the text encoder's layers.
DEMO_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2", "time_emb_proj")
TEXT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
DEMO_RESOLUTION = 32

# Settings a checkpoint must share with the run that resumes from it; anything else may change on resume.
RESUME_MUST_MATCH = ("base", "rank", "alpha", "batch_size", "gradient_accumulation", "seed", "resolution", "buckets")

# The settings only LoRA training reads, and their options: `--full` trains the demo model by its own fixed recipe.
LORA_ONLY = {
    "rank": "--rank",
    "alpha": "--alpha",
    "lr_schedule": "--lr-schedule",
    "warmup_steps": "--warmup-steps",
    "gradient_accumulation": "--gradient-accumulation",
    "crop": "--crop",
    "buckets": "--buckets",
    "flip": "--flip",
    "caption_dropout": "--caption-dropout",
    "min_snr_gamma": "--min-snr-gamma",
    "noise_offset": "--noise-offset",
    "mixed_precision": "--mixed-precision",
    "gradient_checkpointing": "--gradient-checkpointing",
    "instance_prompt": "--instance-prompt",
    "class_prompt": "--class-prompt",
    "class_data": "--class-data",
    "num_class_images": "--num-class-images",
    "prior_loss_weight": "--prior-loss-weight",
    "validation_prompts": "--validation-prompt",
    "validation_every": "--validation-every",
    "kohya": "--kohya",
}


def default_resolution(source: str) -> int:
    """The --resolution to train at when none is given: `DEMO_RESOLUTION` for the demo model (by its name, or a
    folder holding a DemoPipeline), otherwise 512 (Stable Diffusion 1.x). Reads at most one small file."""
    import json

    from engine.demo import DEMO_MODEL, MODEL_DIR

    folder = MODEL_DIR if source == DEMO_MODEL else Path(source).expanduser()
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 512
    return DEMO_RESOLUTION if isinstance(index, dict) and index.get("_class_name") == "DemoPipeline" else 512


@dataclass
class TrainConfig:
    data: Path
    base: str
    output: Path
    steps: int
    rank: int = 16
    alpha: float | None = None  # None: same as rank (scale 1)
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    batch_size: int = 1
    gradient_accumulation: int = 1
    resolution: int = 512
    crop: str = "center"
    buckets: bool = False
    flip: bool = False
    caption_dropout: float = 0.0
    min_snr_gamma: float | None = None
    noise_offset: float = 0.0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    seed: int = 0
    instance_prompt: str | None = None
    class_prompt: str | None = None
    class_data: Path | None = None
    num_class_images: int = 100
    prior_loss_weight: float = 1.0
    validation_prompts: list[str] = field(default_factory=list)
    validation_every: int | None = None
    checkpoint_every: int | None = None
    resume: str | None = None  # a checkpoint folder, or "latest"
    kohya: bool = False
    device: str = "auto"
    max_grad_norm: float = 1.0

    @property
    def lora_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)

    @property
    def prior_preservation(self) -> bool:
        return self.class_prompt is not None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, Path):
                data[key] = str(value)
        data["alpha"] = self.lora_alpha
        return data

    def check(self) -> None:
        """Raise `TrainingUsageError` naming the first option that is out of range or contradicts another."""
        _at_least("--steps", self.steps, 1)
        _at_least("--rank", self.rank, 1)
        if self.alpha is not None and not (math.isfinite(self.alpha) and self.alpha > 0):
            raise TrainingUsageError(f"--alpha must be a number above 0 (got {self.alpha})")
        self._check_learning_rate()
        _one_of("--lr-schedule", self.lr_schedule, LR_SCHEDULES)
        _at_least("--warmup-steps", self.warmup_steps, 0)
        if self.warmup_steps >= self.steps and self.warmup_steps > 0:
            raise TrainingUsageError(f"--warmup-steps ({self.warmup_steps}) must be fewer than --steps ({self.steps})")
        _at_least("--batch-size", self.batch_size, 1)
        _at_least("--gradient-accumulation", self.gradient_accumulation, 1)
        if self.resolution < 16 or self.resolution % 8:
            raise TrainingUsageError(
                f"--resolution must be a multiple of 8, at least 16 (got {self.resolution}); 512 suits SD 1.x"
            )
        _one_of("--crop", self.crop, CROPS)
        _fraction("--caption-dropout", self.caption_dropout)
        if self.min_snr_gamma is not None and not (math.isfinite(self.min_snr_gamma) and self.min_snr_gamma > 0):
            raise TrainingUsageError(f"--min-snr-gamma must be above 0; 5 is usual (got {self.min_snr_gamma})")
        if not (math.isfinite(self.noise_offset) and 0 <= self.noise_offset <= 1):
            raise TrainingUsageError(f"--noise-offset must be from 0 to 1; 0.05 is usual (got {self.noise_offset})")
        _one_of("--mixed-precision", self.mixed_precision, MIXED_PRECISION)
        if self.instance_prompt is not None and not self.instance_prompt.strip():
            raise TrainingUsageError("--instance-prompt is empty: give the prompt every image stands for")
        self._check_prior()
        if any(not prompt.strip() for prompt in self.validation_prompts):
            raise TrainingUsageError("--validation-prompt is empty: give a prompt to render")
        if self.validation_every is not None:
            _at_least("--validation-every", self.validation_every, 1)
            if not self.validation_prompts:
                raise TrainingUsageError("--validation-every needs at least one --validation-prompt")
        if self.checkpoint_every is not None:
            _at_least("--checkpoint-every", self.checkpoint_every, 1)

    def check_full(self) -> None:
        """`check` for `--full` (the demo model trained whole): refuse LoRA-only options set to anything but their
        default, and the shared numbers out of range. The resolution is the demo recipe's to check."""
        defaults = TrainConfig(self.data, self.base, self.output, self.steps)
        given = [option for name, option in LORA_ONLY.items() if getattr(self, name) != getattr(defaults, name)]
        if given:
            verb, pronoun = ("applies", "it") if len(given) == 1 else ("apply", "them")
            raise TrainingUsageError(f"{', '.join(given)} {verb} to LoRA training; leave {pronoun} out with --full")
        _at_least("--steps", self.steps, 1)
        _at_least("--batch-size", self.batch_size, 1)
        self._check_learning_rate()
        if self.checkpoint_every is not None:
            _at_least("--checkpoint-every", self.checkpoint_every, 1)

    def _check_learning_rate(self) -> None:
        if not (math.isfinite(self.learning_rate) and 0 < self.learning_rate <= 1):
            raise TrainingUsageError(f"--learning-rate must be above 0 and at most 1 (got {self.learning_rate})")

    def _check_prior(self) -> None:
        given = [
            name
            for name, value in (("--class-prompt", self.class_prompt), ("--class-data", self.class_data))
            if value is not None
        ]
        if len(given) == 1:
            missing = "--class-data" if given == ["--class-prompt"] else "--class-prompt"
            raise TrainingUsageError(
                f"prior preservation needs both --class-prompt and --class-data ({missing} is missing)"
            )
        if not given:
            return
        if self.class_prompt is not None and not self.class_prompt.strip():
            raise TrainingUsageError("--class-prompt is empty: give the class, e.g. 'a photo of a dog'")
        if self.instance_prompt is None:
            raise TrainingUsageError("prior preservation (--class-prompt) needs --instance-prompt as well")
        _at_least("--num-class-images", self.num_class_images, 1)
        if not (math.isfinite(self.prior_loss_weight) and self.prior_loss_weight >= 0):
            raise TrainingUsageError(f"--prior-loss-weight must be 0 or more (got {self.prior_loss_weight})")


def _at_least(option: str, value: int, least: int) -> None:
    if value < least:
        raise TrainingUsageError(f"{option} must be a whole number of at least {least} (got {value})")


def _one_of(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise TrainingUsageError(f"{option} must be one of {', '.join(choices)} (got {value!r})")


def _fraction(option: str, value: float) -> None:
    if not (math.isfinite(value) and 0 <= value < 1):
        raise TrainingUsageError(f"{option} must be from 0 up to (not including) 1 (got {value})")
