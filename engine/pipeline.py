"""Load a diffusers text-to-image pipeline once; turn a `GenerationSpec` into PNGs with one pipeline call.

diffusers is mostly untyped, so the pipeline object is `Any` at this boundary; what we hand out is typed.
A `LoadedModel` runs one `generate` at a time (a diffusers pipeline keeps per-call state on itself).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from engine.device import DeviceUnavailable, pick_device
from engine.errors import InvalidRequest, JobCancelled, ModelLoadError
from engine.jobs import GeneratedImage, GenerationSpec
from engine.limits import Limits
from engine.metadata import encode_png

OVERRIDES_FILE = "imagine.json"
TURBO_STEPS = 1
TURBO_GUIDANCE = 0.0
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.0
FALLBACK_SIZE = 512

StepCallback = Callable[[int, int], None]
StopCheck = Callable[[], bool]


@dataclass
class LoadedModel:
    """A pipeline on its device, with the settings a request gets when it leaves them out."""

    name: str
    pipe: Any
    device: torch.device
    dtype: torch.dtype
    default_steps: int
    default_guidance: float
    default_width: int
    default_height: int
    load_seconds: float = 0.0


def _dtype_keyword() -> str:
    # diffusers renamed from_pretrained's `torch_dtype` to `dtype` (huggingface/diffusers#14205; the old name
    # now warns). Older releases silently ignore an unknown `dtype` and load fp32, so ask which one this is.
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", "\\")) or "\\" in name or name.count("/") > 1 or ":" in name


def _resolve_source(name: str) -> tuple[str, Path | None]:
    """What to hand to from_pretrained, and the local folder if it is one. Raises on a missing folder."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise ModelLoadError(
                f"Model folder {name!r} is not a diffusers pipeline (it has no model_index.json): point the "
                "model setting at a folder written by save_pretrained, or at a Hugging Face model id."
            )
        return str(folder), folder
    if folder.exists() or _looks_like_path(name):
        raise ModelLoadError(
            f"Model folder {name!r} does not exist: check the model path in the config, or use a Hugging "
            "Face model id such as 'stabilityai/sd-turbo'."
        )
    return name, None


def _first_line(exc: BaseException) -> str:
    """An exception as one line: library errors often run to a paragraph; the cause keeps the rest."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _hub_error(name: str, exc: BaseException) -> ModelLoadError:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return ModelLoadError(
            f"Model {name!r} is not in the local Hugging Face cache and downloads are off "
            f"(HF_HUB_OFFLINE=1): download it once with `hf download {name}`, or unset HF_HUB_OFFLINE. "
            f"(There is no local folder named {name!r} either.)"
        )
    return ModelLoadError(
        f"Could not load model {name!r} from Hugging Face ({_first_line(exc)}): check the model id, your network, and "
        "for gated models that you accepted the licence and set HF_TOKEN."
    )


def _read_overrides(folder: Path | None, name: str) -> dict[str, Any]:
    if folder is None or not (folder / OVERRIDES_FILE).is_file():
        return {}
    path = folder / OVERRIDES_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Model {name!r}: {path} is unreadable ({_first_line(exc)}). Fix or delete it.") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f'Model {name!r}: {path} must hold a JSON object such as {{"default_steps": 4}}.')
    steps = data.get("default_steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ModelLoadError(f"Model {name!r}: default_steps in {path} must be a whole number >= 1 (got {steps!r}).")
    guidance = data.get("default_guidance")
    if guidance is not None and (isinstance(guidance, bool) or not isinstance(guidance, int | float) or guidance < 0):
        raise ModelLoadError(f"Model {name!r}: default_guidance in {path} must be a number >= 0 (got {guidance!r}).")
    return data


def _native_size(pipe: Any) -> tuple[int, int]:
    """(width, height) the model was trained at: the denoiser's sample size times the VAE's scale factor."""
    scale = int(getattr(pipe, "vae_scale_factor", 8))
    unet = getattr(pipe, "unet", None)
    sample = getattr(unet.config, "sample_size", None) if unet is not None else None
    if sample is None:
        sample = getattr(pipe, "default_sample_size", None)  # SD3, Flux and other transformer pipelines
    if sample is None:
        return FALLBACK_SIZE, FALLBACK_SIZE
    if isinstance(sample, list | tuple):
        return int(sample[1]) * scale, int(sample[0]) * scale
    return int(sample) * scale, int(sample) * scale


def load_model(name: str, *, device: str = "auto", cache_dir: str | Path | None = None) -> LoadedModel:
    """Load `name` (a Hugging Face model id or a local pipeline folder) onto `device`. Call once per model.

    Defaults: turbo-class models (the name contains "turbo") get 1 step and guidance 0, others 25 steps and
    guidance 7; a local folder's optional imagine.json ({"default_steps": .., "default_guidance": ..}) wins.
    Every failure is a `ModelLoadError` whose message names the model and what to do.
    """
    from diffusers import AutoPipelineForText2Image

    started = time.perf_counter()
    try:
        torch_device, dtype = pick_device(device)
    except DeviceUnavailable as exc:
        raise DeviceUnavailable(f"Model {name!r} cannot be loaded: {exc}") from exc
    source, folder = _resolve_source(name)
    overrides = _read_overrides(folder, name)
    kwargs: dict[str, Any] = {_dtype_keyword(): dtype}
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    try:
        with warnings.catch_warnings():
            # diffusers' load_config still passes huggingface_hub's removed `local_dir_use_symlinks` argument,
            # and huggingface_hub warns about it on every hub-id load. Harmless; nothing we can change.
            warnings.filterwarnings(
                "ignore", message="The `local_dir_use_symlinks` argument is deprecated", category=UserWarning
            )
            pipe: Any = cast(Any, AutoPipelineForText2Image).from_pretrained(source, **kwargs)
    except OSError as exc:
        if folder is not None:
            raise ModelLoadError(f"Model folder {name!r} could not be read: {_first_line(exc)}") from exc
        raise _hub_error(name, exc) from exc
    except Exception as exc:  # anything else (unsupported pipeline class, bad config): same one-line report
        raise ModelLoadError(f"Could not load model {name!r}: {_first_line(exc)}") from exc
    try:
        pipe = pipe.to(torch_device)
    except RuntimeError as exc:  # CUDA out of memory is a RuntimeError
        raise ModelLoadError(f"Model {name!r} could not be moved to {torch_device}: {_first_line(exc)}") from exc
    pipe.set_progress_bar_config(disable=True)

    turbo = "turbo" in name.lower()
    width, height = _native_size(pipe)
    steps = overrides.get("default_steps", TURBO_STEPS if turbo else DEFAULT_STEPS)
    guidance = overrides.get("default_guidance", TURBO_GUIDANCE if turbo else DEFAULT_GUIDANCE)
    return LoadedModel(
        name=name,
        pipe=pipe,
        device=torch_device,
        dtype=dtype,
        default_steps=int(steps),
        default_guidance=float(guidance),
        default_width=width,
        default_height=height,
        load_seconds=time.perf_counter() - started,
    )


def _generator_device(device: torch.device) -> torch.device:
    # MPS generators are not reproducible across runs (and some torch releases lack them): seed on the CPU.
    return torch.device("cpu") if device.type == "mps" else device


def generate(
    model: LoadedModel,
    spec: GenerationSpec,
    *,
    on_step: StepCallback | None = None,
    should_stop: StopCheck | None = None,
    limits: Limits | None = None,
) -> list[GeneratedImage]:
    """Draw all `spec.count` images in one pipeline call; image i depends only on seed `spec.seeds()[i]`.

    `on_step(step, total)` is called after every denoising step (step counts from 1). When `should_stop()`
    turns true the pipeline skips its remaining steps and `JobCancelled` is raised. The caller validates the
    spec; `limits`, when given, is checked again here, and sizes must be multiples of 8 in any case.
    """
    if limits is not None:
        limits.check(spec)
    width = spec.width or model.default_width
    height = spec.height or model.default_height
    for label, value in (("width", width), ("height", height)):
        if value % 8 or value <= 0:
            raise InvalidRequest("size", f"{label} must be a positive multiple of 8 (got {value}).")
    steps = spec.steps or model.default_steps
    guidance = model.default_guidance if spec.guidance_scale is None else spec.guidance_scale
    seeds = spec.seeds()
    if should_stop is not None and should_stop():
        raise JobCancelled("cancelled before generation started")

    pipe = model.pipe
    generator_device = _generator_device(model.device)
    generators = [torch.Generator(device=generator_device).manual_seed(seed) for seed in seeds]
    stopped = False

    def step_end(pipeline: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        nonlocal stopped
        if on_step is not None:
            on_step(step + 1, int(getattr(pipeline, "num_timesteps", steps) or steps))
        if should_stop is not None and not stopped and should_stop():
            stopped = True
            pipeline._interrupt = True  # the documented way: the loop skips every remaining step
        return callback_kwargs

    call: dict[str, Any] = {
        "prompt": [spec.prompt] * spec.count,
        "num_inference_steps": steps,
        "guidance_scale": guidance,
        "width": width,
        "height": height,
        "generator": generators,
        "callback_on_step_end": step_end,
        "output_type": "pil",
    }
    # Without classifier-free guidance (guidance <= 1: turbo models) SD pipelines ignore a negative prompt,
    # and an empty one equals passing none, so only send it when there is something to send.
    if spec.negative_prompt:
        call["negative_prompt"] = [spec.negative_prompt] * spec.count
    with torch.inference_mode():
        output: Any = pipe(**call)
    if stopped:
        raise JobCancelled("cancelled during generation")

    images: list[GeneratedImage] = []
    for index, (image, seed) in enumerate(zip(output.images, seeds, strict=True)):
        png = encode_png(
            image,
            prompt=spec.prompt,
            negative_prompt=spec.negative_prompt,
            seed=seed,
            model=model.name,
            steps=steps,
            guidance=guidance,
            width=image.width,
            height=image.height,
        )
        images.append(GeneratedImage(index=index, seed=seed, width=image.width, height=image.height, png=png))
    return images
