"""Train a LoRA for a Stable Diffusion 1.x/2.x model's UNet, or for the demo model, on a folder of captioned images.

The recipe is diffusers' own: the VAE, text encoder and UNet stay frozen, a LoRA goes on the UNet's attention
projections, each step noises the latents with the scheduler's `add_noise` and learns the noise (or the
velocity, for v-prediction models), optionally weighted by min-SNR. On a GPU the frozen weights may run in
fp16/bf16 while the LoRA weights, and so their gradients and the optimiser, stay fp32; the VAE always stays fp32
(an fp16 VAE is where NaN/black images come from).

What differs between model kinds sits behind `_Kind`: how images reach model space (SD: the VAE; demo: pixels
rearranged, at 32 px only), what the UNet is conditioned on (SD: CLIP states; demo: states and the pooled
embedding as `class_labels`), and where the LoRA goes. The demo model's LoRA also covers its text encoder, so that
a word it never learnt (its embedding still random) can come to mean something; the file is diffusers' SD format
with `unet.` and `text_encoder.` layers, and loads with `load_lora_weights` like any SD LoRA.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from engine.device import pick_device
from engine.options import EngineOptions
from engine.pipeline import LoadedModel, load_model_spec
from engine.registry import ModelSpec
from engine.training import checkpoints, dataset, export
from engine.training.config import (
    DEMO_RESOLUTION,
    DEMO_TARGET_MODULES,
    TARGET_MODULES,
    TEXT_TARGET_MODULES,
    TrainConfig,
)
from engine.training.errors import TrainingUsageError

log = logging.getLogger(__name__)

PROBE_EXAMPLES = 8
PROBE_SEED = 1234
CLASS_IMAGE_BATCH = 4
SUMMARY_FILE = "training.json"
VALIDATION_DIR = "validation"

StepReport = Callable[[int, float], None]


@dataclass
class TrainResult:
    output: Path
    lora: Path
    kohya: Path | None
    step: int
    losses: list[float]  # one per optimiser step this run made
    probe_before: float  # the loss on a fixed set of examples, noise and timesteps: before this run ...
    probe_after: float  # ... and after it
    seconds: float
    model: LoadedModel  # the trained model, its LoRA switched on
    validation_images: list[Path] = field(default_factory=list)


class _Kind:
    """The model-specific parts of training: Stable Diffusion 1.x/2.x (VAE latents, CLIP states)."""

    unet_targets: tuple[str, ...] = TARGET_MODULES
    text_encoder_targets: tuple[str, ...] = ()  # none: the text encoder stays as it is

    def check(self, config: TrainConfig, pipe: Any) -> None:
        if not all(hasattr(pipe, part) for part in ("unet", "vae", "text_encoder", "tokenizer")) or hasattr(
            pipe, "text_encoder_2"
        ):
            raise TrainingUsageError(
                f"--base {config.base} is a {type(pipe).__name__}; training supports Stable Diffusion 1.x/2.x models "
                "(one UNet, one text encoder) and the demo model"
            )

    def freeze(self, pipe: Any) -> None:
        for part in (pipe.unet, pipe.vae, pipe.text_encoder):
            part.requires_grad_(False)
        if pipe.vae.dtype != torch.float32:
            pipe.vae.to(dtype=torch.float32)

    def step_multiple(self, pipe: Any) -> int:
        """Image sides must be multiples of this (buckets)."""
        return int(pipe.vae_scale_factor * 2 ** (len(pipe.unet.config.block_out_channels) - 1))

    def encode_images(self, run: _Run, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        vae = run.pipe.vae
        with torch.no_grad():
            posterior = vae.encode(pixels.to(run.device, torch.float32)).latent_dist
            noise = torch.randn(posterior.mean.shape, generator=generator).to(run.device)
            latents = posterior.mean + posterior.std * noise
        scaled: torch.Tensor = latents * float(vae.config.scaling_factor)
        return scaled.to(run.weight_dtype)

    def conditioning(self, run: _Run, captions: list[str]) -> dict[str, torch.Tensor]:
        """The UNet's keyword arguments for these captions."""
        tokenizer = run.pipe.tokenizer
        ids = tokenizer(
            captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        with torch.no_grad():
            hidden: torch.Tensor = run.pipe.text_encoder(ids.to(run.device))[0]
        return {"encoder_hidden_states": hidden}

    def loss_weights(self, pixels: torch.Tensor, like: torch.Tensor) -> torch.Tensor | None:
        """Per-element weights of the squared error (None: all equal)."""
        return None

    def check_captions(self, pipe: Any, examples: list[dataset.Example]) -> None:
        return None


class _DemoKind(_Kind):
    """The demo model: 32 px RGB pixel-unshuffled (no VAE), the pooled text embedding as `class_labels`, the LoRA
    on the UNet's attention, residual convolutions and time projections and on the text encoder's layers; errors
    on the object count `1 + OBJECT_WEIGHT` times, as in the model's own training."""

    unet_targets = DEMO_TARGET_MODULES
    text_encoder_targets = TEXT_TARGET_MODULES

    def check(self, config: TrainConfig, pipe: Any) -> None:
        if config.resolution != DEMO_RESOLUTION:
            raise TrainingUsageError(
                f"--base {config.base} is the demo model, which draws at {DEMO_RESOLUTION} px: use --resolution "
                f"{DEMO_RESOLUTION} (got {config.resolution})"
            )
        if config.kohya:
            raise TrainingUsageError("--kohya writes Stable Diffusion's kohya format: leave it out for the demo model")

    def freeze(self, pipe: Any) -> None:
        for part in (pipe.unet, pipe.text_encoder):
            part.requires_grad_(False)

    def step_multiple(self, pipe: Any) -> int:
        from engine.demo.pipeline import UNSHUFFLE

        return int(UNSHUFFLE * 2 ** (len(pipe.unet.config.block_out_channels) - 1))

    def encode_images(self, run: _Run, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        from engine.demo.pipeline import to_model_space

        return to_model_space(pixels.to(run.device, torch.float32)).to(run.weight_dtype)

    def conditioning(self, run: _Run, captions: list[str]) -> dict[str, torch.Tensor]:
        from engine.demo.text import encode, tokenize

        states, pooled = encode(run.pipe.text_encoder, tokenize(run.pipe.tokenizer, captions))  # with gradients
        return {"encoder_hidden_states": states.to(run.weight_dtype), "class_labels": pooled.to(run.weight_dtype)}

    def loss_weights(self, pixels: torch.Tensor, like: torch.Tensor) -> torch.Tensor | None:
        from engine.demo.pipeline import to_model_space

        # The object: pixels that differ from the median colour of the image's border (as engine.demo.train_full).
        border = torch.cat([pixels[..., 0, :], pixels[..., -1, :], pixels[..., :, 0], pixels[..., :, -1]], dim=-1)
        background = border.median(dim=-1).values[..., None, None]
        mask = ((pixels - background).abs().sum(dim=1, keepdim=True) > OBJECT_THRESHOLD).float()
        weights = to_model_space((1 + OBJECT_WEIGHT * mask).expand(-1, 3, -1, -1))
        return weights.to(like.device)

    def check_captions(self, pipe: Any, examples: list[dataset.Example]) -> None:
        tokenizer = pipe.tokenizer
        unknown = sorted(
            {
                word
                for example in examples
                for word in tokenizer.tokenize(example.caption)
                if tokenizer.convert_tokens_to_ids(word) == tokenizer.unk_token_id
            }
        )
        if unknown or any(tokenizer.unk_token in tokenizer.tokenize(e.caption) for e in examples):
            log.warning(
                "the demo model's tokenizer knows one word per token and not these caption words, which all read as "
                "one unknown word: %s",
                ", ".join(unknown) or tokenizer.unk_token,
            )


OBJECT_WEIGHT = 3.0
OBJECT_THRESHOLD = 30 / 127.5  # 30 levels of 255, summed over the channels, in [-1, 1] units


@dataclass
class _Run:
    config: TrainConfig
    model: LoadedModel
    noise_scheduler: Any
    device: torch.device
    weight_dtype: torch.dtype
    kind: _Kind

    @property
    def pipe(self) -> Any:
        return self.model.pipe

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.config.mixed_precision == "no":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.weight_dtype)


def _check_device(config: TrainConfig) -> torch.device:
    device, _ = pick_device(config.device)
    if config.mixed_precision != "no" and device.type != "cuda":
        raise TrainingUsageError(
            f"--mixed-precision {config.mixed_precision} needs a CUDA GPU and this run is on {device.type}: "
            "use --mixed-precision no"
        )
    if config.mixed_precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise TrainingUsageError("--mixed-precision bf16 needs an Ampere or newer GPU: use --mixed-precision fp16")
    return device


def _load(config: TrainConfig, spec: ModelSpec | None, device: torch.device) -> _Run:
    from diffusers import DDPMScheduler

    dtype_name = {"no": "fp32", "fp16": "fp16", "bf16": "bf16"}[config.mixed_precision]
    options = EngineOptions(device=str(device), dtype=dtype_name, channels_last=False, warmup=False)
    from engine.demo.pipeline import DemoPipeline

    model = load_model_spec(spec or ModelSpec(name=config.base, source=config.base), options)
    pipe = model.pipe
    kind = _DemoKind() if isinstance(pipe, DemoPipeline) else _Kind()
    kind.check(config, pipe)
    kind.freeze(pipe)
    noise_scheduler: Any = cast(Any, DDPMScheduler).from_config(pipe.scheduler.config)
    return _Run(config, model, noise_scheduler, device, model.dtype, kind)


def _add_lora(run: _Run) -> tuple[dict[str, Any], list[torch.nn.Parameter]]:
    """LoRA adapters on the UNet (and the text encoder, for kinds that train it): their configs by part name, and
    the parameters to train."""
    from peft import LoraConfig, inject_adapter_in_model

    config = run.config

    def lora_config(targets: tuple[str, ...]) -> Any:
        return LoraConfig(
            r=config.rank,
            lora_alpha=cast(Any, _plain(config.lora_alpha)),
            init_lora_weights="gaussian",
            target_modules=list(targets),
        )

    configs = {"unet": lora_config(run.kind.unet_targets)}
    if run.kind.text_encoder_targets:
        configs["text_encoder"] = lora_config(run.kind.text_encoder_targets)
    unet = run.pipe.unet
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        unet.add_adapter(configs["unet"])
        if "text_encoder" in configs:
            # peft's own injection: transformers' `add_adapter` wants a newer peft than the engine needs.
            inject_adapter_in_model(configs["text_encoder"], run.pipe.text_encoder)
    parameters = [parameter for parameter in unet.parameters() if parameter.requires_grad]
    if "text_encoder" in configs:
        parameters += [parameter for parameter in run.pipe.text_encoder.parameters() if parameter.requires_grad]
    for parameter in parameters:
        parameter.data = parameter.data.to(torch.float32)  # fp16 gradients cannot be unscaled: keep these fp32
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    return configs, parameters


def _adapter_state(run: _Run) -> dict[str, torch.Tensor]:
    """Every trained LoRA weight, as a checkpoint holds them: the UNet's by peft's names, the text encoder's with
    the prefix `TEXT_ENCODER_PREFIX`."""
    state = export.peft_state(run.pipe.unet)
    if run.kind.text_encoder_targets:
        state.update({TEXT_ENCODER_PREFIX + k: v for k, v in export.peft_state(run.pipe.text_encoder).items()})
    return state


def _load_adapter_state(run: _Run, state: dict[str, torch.Tensor]) -> None:
    state = {key: value.to(run.device) for key, value in state.items()}
    text = {k[len(TEXT_ENCODER_PREFIX) :]: v for k, v in state.items() if k.startswith(TEXT_ENCODER_PREFIX)}
    export.load_peft_state(run.pipe.unet, {k: v for k, v in state.items() if not k.startswith(TEXT_ENCODER_PREFIX)})
    if run.kind.text_encoder_targets:
        export.load_peft_state(run.pipe.text_encoder, text)
    elif text:
        raise TrainingUsageError("the checkpoint's LoRA does not fit this model (it has text encoder layers)")


TEXT_ENCODER_PREFIX = "text_encoder."


def _plain(number: float) -> int | float:
    return int(number) if float(number).is_integer() else number


def _loss(
    run: _Run,
    pixels: torch.Tensor,
    captions: list[str],
    generator: torch.Generator,
    *,
    prior_count: int = 0,
    timesteps: torch.Tensor | None = None,
) -> torch.Tensor:
    """The training loss of one batch; the last `prior_count` rows are class images (prior preservation)."""
    config, scheduler = run.config, run.noise_scheduler
    latents = run.kind.encode_images(run, pixels, generator)
    conditioning = run.kind.conditioning(run, captions)
    count = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator)
    if config.noise_offset:
        noise = noise + config.noise_offset * torch.randn((count, latents.shape[1], 1, 1), generator=generator)
    if timesteps is None:
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (count,), generator=generator)
    noise, timesteps = noise.to(run.device, latents.dtype), timesteps.to(run.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    prediction_type = scheduler.config.prediction_type
    target = noise if prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, timesteps)
    with run.autocast():
        prediction = run.pipe.unet(noisy, timesteps, **conditioning).sample
    squared = (prediction.float() - target.float()).pow(2)
    weights = run.kind.loss_weights(pixels, squared)
    errors: torch.Tensor = (
        squared.mean(dim=(1, 2, 3)) if weights is None else (weights * squared).sum((1, 2, 3)) / weights.sum((1, 2, 3))
    )
    instance, prior = errors[: count - prior_count], errors[count - prior_count :]
    if config.min_snr_gamma is not None:
        alphas = scheduler.alphas_cumprod.to(run.device)[timesteps[: count - prior_count]].float()
        snr = alphas / (1 - alphas)
        clipped = snr.clamp(max=config.min_snr_gamma)
        instance = instance * (clipped / snr if prediction_type == "epsilon" else clipped / (snr + 1))
    loss = instance.mean()
    if prior_count:
        loss = loss + config.prior_loss_weight * prior.mean()
    return loss


def _batch_inputs(
    run: _Run, plan: dataset.BatchPlan, number: int, class_examples: list[dataset.Example]
) -> tuple[torch.Tensor, list[str], torch.Generator, int]:
    config = run.config
    batch = plan.batch(number)
    rng = random.Random(batch.seed)
    generator = torch.Generator().manual_seed(batch.seed)
    examples = list(batch.examples)
    prior = (
        dataset.cycle_examples(class_examples, number * config.batch_size, len(examples), config.seed)
        if class_examples
        else []
    )
    pixels = [dataset.load_pixels(e, batch.size, crop=config.crop, flip=config.flip, rng=rng) for e in examples]
    pixels += [dataset.load_pixels(e, batch.size, crop=config.crop, flip=config.flip, rng=rng) for e in prior]
    captions = ["" if rng.random() < config.caption_dropout else e.caption for e in examples]
    return torch.stack(pixels), captions + dataset.captions_of(prior), generator, len(prior)


def _probe(run: _Run, examples: list[dataset.Example]) -> float:
    """The loss on fixed examples, noise and timesteps: comparable between any two points of training."""
    chosen = examples[:PROBE_EXAMPLES]
    size = (run.config.resolution, run.config.resolution)
    rng = random.Random(PROBE_SEED)
    total = run.noise_scheduler.config.num_train_timesteps
    losses: list[float] = []
    was_training = run.pipe.unet.training
    run.pipe.unet.eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        for index, example in enumerate(chosen):
            pixels = dataset.load_pixels(example, size, crop="center", flip=False, rng=rng).unsqueeze(0)
            timesteps = torch.tensor([int((index + 0.5) * total / len(chosen))])
            generator = torch.Generator().manual_seed(PROBE_SEED + index)
            losses.append(float(_loss(run, pixels, [example.caption], generator, timesteps=timesteps)))
    run.pipe.unet.train(was_training)
    return sum(losses) / len(losses)


def _render(run: _Run, prompts: list[str], size: int, seed: int) -> list[Any]:
    pipe, model = run.pipe, run.model
    generators = [torch.Generator().manual_seed(seed + index) for index in range(len(prompts))]
    was_training = pipe.unet.training
    pipe.unet.eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[]), run.autocast():
        images: list[Any] = pipe(
            prompt=prompts,
            num_inference_steps=model.default_steps,
            guidance_scale=model.default_guidance,
            width=size,
            height=size,
            generator=generators,
        ).images
    pipe.unet.train(was_training)
    return images


def _class_examples(run: _Run) -> list[dataset.Example]:
    """The prior-preservation images, generating (with the base model) however many are missing."""
    config = run.config
    if config.class_prompt is None or config.class_data is None:
        return []
    folder = config.class_data
    examples = dataset.load_class_examples(folder, resolution=config.resolution, class_prompt=config.class_prompt)
    missing = config.num_class_images - len(examples)
    if missing > 0:
        log.info("generating %d class image(s) for prior preservation into %s", missing, folder)
        folder.mkdir(parents=True, exist_ok=True)
        first = len(examples)
        for start in range(first, first + missing, CLASS_IMAGE_BATCH):
            count = min(CLASS_IMAGE_BATCH, first + missing - start)
            images = _render(run, [config.class_prompt] * count, config.resolution, config.seed + start)
            for offset, image in enumerate(images):
                image.save(folder / f"class-{start + offset:05d}.png")
        examples = dataset.load_class_examples(folder, resolution=config.resolution, class_prompt=config.class_prompt)
    return examples[: config.num_class_images]


def _validate(run: _Run, step: int) -> list[Path]:
    config = run.config
    folder = config.output / VALIDATION_DIR
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for index, image in enumerate(_render(run, config.validation_prompts, config.resolution, config.seed)):
        path = folder / f"step-{step:06d}-{index}.png"
        image.save(path)
        paths.append(path)
    (folder / "prompts.txt").write_text("\n".join(config.validation_prompts) + "\n", encoding="utf-8")
    return paths


def _progress(total: int, initial: int, enabled: bool) -> Any:
    tqdm: Any = importlib.import_module("tqdm").tqdm
    return tqdm(total=total, initial=initial, file=sys.stderr, disable=not enabled, unit="step", desc="training")


@contextlib.contextmanager
def _closing(bar: Any) -> Iterator[Any]:
    try:
        yield bar
    finally:
        bar.close()


@dataclass(frozen=True)
class Prepared:
    """What `prepare` found: the run can start."""

    config: TrainConfig
    device: torch.device
    examples: list[dataset.Example]
    checkpoint: checkpoints.Checkpoint | None


def prepare(config: TrainConfig, examples: list[dataset.Example] | None = None) -> Prepared:
    """Every check that needs no model: options, the whole dataset (unless `examples` from
    `dataset.load_examples` are given), the device, the checkpoint to resume from."""
    config.check()
    if examples is None:
        examples = dataset.load_examples(
            config.data,
            resolution=config.resolution,
            instance_prompt=config.instance_prompt,
            batch_size=config.batch_size,
        )
    device = _check_device(config)
    checkpoint = None
    if config.resume is not None:
        checkpoint = checkpoints.load_checkpoint(checkpoints.find_checkpoint(config.output, config.resume), config)
    return Prepared(config, device, examples, checkpoint)


def train(
    config: TrainConfig,
    *,
    spec: ModelSpec | None = None,
    progress: bool = True,
    on_step: StepReport | None = None,
    prepared: Prepared | None = None,
) -> TrainResult:
    """Train `config` to the end (or on from `config.resume`); write the LoRA into `config.output`.

    Raises `TrainingUsageError` for bad options and `DatasetError` (every problem at once) for bad data before
    any model is loaded (pass `prepared` from `prepare(config)` to skip repeating them). `on_step(step, loss)`
    runs after each optimiser step, once its checkpoint is written.
    """
    started = time.perf_counter()
    checked = prepared if prepared is not None and prepared.config is config else prepare(config)
    device, examples, checkpoint = checked.device, checked.examples, checked.checkpoint
    config.output.mkdir(parents=True, exist_ok=True)

    run = _load(config, spec, device)
    run.kind.check_captions(run.pipe, examples)
    class_examples = _class_examples(run)
    lora_configs, parameters = _add_lora(run)
    unet = run.pipe.unet
    step_multiple = run.kind.step_multiple(run.pipe)
    buckets = dataset.make_buckets(config.resolution, step_multiple) if config.buckets else None
    plan = dataset.BatchPlan(
        examples, batch_size=config.batch_size, resolution=config.resolution, seed=config.seed, buckets=buckets
    )
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate)
    scheduler = _lr_scheduler(config, optimizer)
    scaler = torch.amp.GradScaler("cuda") if config.mixed_precision == "fp16" else None

    start = 0
    if checkpoint is not None:
        _load_adapter_state(run, checkpoint.adapter)
        optimizer.load_state_dict(checkpoint.state["optimizer"])
        scheduler.load_state_dict(checkpoint.state["scheduler"])
        if scaler is not None and checkpoint.state.get("scaler"):
            scaler.load_state_dict(checkpoint.state["scaler"])
        checkpoints.restore_random_states(checkpoint.state["random"])
        start = checkpoint.step
        log.info("resuming from %s at step %d", checkpoint.path, start)

    probe_before = _probe(run, examples)
    losses: list[float] = []
    validation_images: list[Path] = []
    accumulate = config.gradient_accumulation
    with _closing(_progress(config.steps, start, progress)) as bar:
        for step in range(start + 1, config.steps + 1):
            total = 0.0
            for micro in range(accumulate):
                pixels, captions, generator, prior_count = _batch_inputs(
                    run, plan, (step - 1) * accumulate + micro, class_examples
                )
                loss = _loss(run, pixels, captions, generator, prior_count=prior_count) / accumulate
                cast(Any, scaler.scale(loss) if scaler is not None else loss).backward()
                total += float(loss.detach())
            if scaler is not None:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(total)
            bar.set_postfix(loss=f"{total:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            bar.update(1)
            if config.validation_every and step % config.validation_every == 0 and step < config.steps:
                validation_images += _validate(run, step)
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                state = {
                    "step": step,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else {},
                }
                checkpoints.save_checkpoint(config.output, step, config, _adapter_state(run), state)
            if on_step is not None:
                on_step(step, total)

    unet.eval()
    probe_after = _probe(run, examples)
    if config.validation_prompts:
        validation_images += _validate(run, config.steps)
    text_encoder = run.pipe.text_encoder if "text_encoder" in lora_configs else None
    lora = export.save_diffusers(
        config.output, unet, lora_configs["unet"], text_encoder, lora_configs.get("text_encoder")
    )
    kohya = export.save_kohya(config.output, unet, config.lora_alpha) if config.kohya else None
    seconds = time.perf_counter() - started
    summary = {
        "settings": config.to_json(),
        "images": len(examples),
        "buckets": {f"{w}x{h}": n for (w, h), n in plan.bucket_counts().items()},
        "resumed_from": str(checkpoint.path) if checkpoint is not None else None,
        "probe_loss": {"before": probe_before, "after": probe_after},
        "losses": losses,
        "seconds": seconds,
    }
    (config.output / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return TrainResult(
        output=config.output,
        lora=lora,
        kohya=kohya,
        step=config.steps,
        losses=losses,
        probe_before=probe_before,
        probe_after=probe_after,
        seconds=seconds,
        model=run.model,
        validation_images=validation_images,
    )


def _lr_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> Any:
    from diffusers.optimization import get_scheduler

    name = config.lr_schedule
    if name == "constant" and config.warmup_steps:
        name = "constant_with_warmup"
    return get_scheduler(name, optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=config.steps)
