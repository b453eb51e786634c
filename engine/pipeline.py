"""Load diffusers text-to-image pipelines and turn `GenerationSpec`s into PNGs, many specs in one pipeline call.

A spec with an `init_image` is image-to-image (variations, upscales): it runs the model's image-to-image
pipeline, built from the loaded one with `AutoPipelineForImage2Image.from_pipe` (same weights, no reload).

diffusers is mostly untyped, so the pipeline object is `Any` at this boundary; what we hand out is typed.
A `LoadedModel` runs one generation at a time (a diffusers pipeline keeps per-call state on itself); `ModelPool`
keeps the few models an engine serves loaded, least recently used out first.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from PIL import Image

from engine.demo import DEMO_MODEL
from engine.demo import MODEL_DIR as DEMO_MODEL_DIR
from engine.device import DeviceUnavailable, pick_device, pick_dtype
from engine.errors import InvalidRequest, JobCancelled, ModelLoadError
from engine.jobs import GeneratedImage, GenerationSpec
from engine.limits import Limits, decode_init_image
from engine.memory import free_memory
from engine.metadata import encode_png
from engine.options import EngineOptions
from engine.registry import SCHEDULERS, ModelRegistry, ModelSpec
from engine.styles import StyleLibrary, clear_style

log = logging.getLogger(__name__)

OVERRIDES_FILE = "imagine.json"
TURBO_STEPS = 1
TURBO_GUIDANCE = 0.0
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.0
FALLBACK_SIZE = 512
WARMUP_STEPS = 2
VAE_TILING_ABOVE = 1024 * 1024  # "auto" tiles the VAE decode for images with more pixels than this
OFFLOAD_CHOICES = ("none", "model", "sequential")
VAE_TILING_CHOICES = ("auto", "on", "off")
DEMO_HINT = (
    f" To try imagine offline with the bundled demo model, use `--model {DEMO_MODEL}` (`model:{DEMO_MODEL}` in "
    f"Discord; `IMAGINE_MODEL={DEMO_MODEL}` makes it the default)."
)

# spec.scheduler -> (diffusers class, config overrides). "default" keeps the model's own scheduler.
SCHEDULER_CLASSES: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),  # A1111's "DPM++ 2M"
    "dpm++_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),  # "DPM++ 2M SDE"
    "unipc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
    # PLMS as SD 1.x ships it; the Runge-Kutta warm-up steps fail below ~8 steps (operands could not be broadcast).
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
}

StepCallback = Callable[[int, int], None]
LatentsCallback = Callable[[int, int, Any], None]
StopCheck = Callable[[], bool]


@dataclass
class LoadedModel:
    """A pipeline on its device, with the settings a request gets when it leaves them out.

    The fields after `load_seconds` are the engine's bookkeeping: how the model was placed, and which LoRA
    styles are loaded into it (managed by `engine.styles.StyleLibrary`).
    """

    name: str
    pipe: Any
    device: torch.device
    dtype: torch.dtype
    default_steps: int
    default_guidance: float
    default_width: int
    default_height: int
    load_seconds: float = 0.0
    spec: ModelSpec | None = None
    offload: str = "none"  # what was applied: "none" on a CPU even if the options asked for more
    vae_tiling: str = "auto"
    compiled: bool = False
    warmup_seconds: float | None = None
    # style name -> (adapter name, file fingerprint); least recently used first.
    adapters: OrderedDict[str, tuple[str, tuple[int, int]]] = field(default_factory=OrderedDict)
    active_style: tuple[str, float] | None = None
    unloaded: bool = False
    # Safe Latent Diffusion: the same components in diffusers' SLD pipeline, and its level.
    safe_pipe: Any = None
    sld_level: str = "off"
    # The image-to-image pipeline over the same components, built on first use.
    img2img_pipe: Any = None

    @property
    def denoiser(self) -> Any:
        """The UNet, or the transformer of SD3/Flux-style pipelines."""
        return _denoiser(self.pipe)


# --- loading ---------------------------------------------------------------------------------------------------


def _dtype_keyword() -> str:
    # diffusers renamed from_pretrained's `torch_dtype` to `dtype` (huggingface/diffusers#14205; the old name
    # now warns). Older releases silently ignore an unknown `dtype` and load fp32, so ask which one this is.
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", "\\")) or "\\" in name or name.count("/") > 1 or ":" in name


def _looks_like_local_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", "\\")) or "\\" in name or name[1:2] == ":"


def _label(spec: ModelSpec) -> str:
    return repr(spec.name) if spec.name == spec.source else f"{spec.name!r} ({spec.source})"


def _resolve_source(name: str) -> tuple[str, Path | None]:
    """What to hand to from_pretrained, and the local folder if it is one. Raises on a missing folder."""
    if name == DEMO_MODEL:  # the bundled demo model (engine/demo)
        name = str(DEMO_MODEL_DIR)
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
            f"Face model id such as 'stabilityai/sd-turbo'.{DEMO_HINT}"
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
            f"(There is no local folder named {name!r} either.){DEMO_HINT}"
        )
    return ModelLoadError(
        f"Could not load model {name!r} from Hugging Face ({_first_line(exc)}): check the model id, your network, and "
        f"for gated models that you accepted the licence and set HF_TOKEN.{DEMO_HINT}"
    )


def _hub_file_error(spec: ModelSpec, url: str, exc: BaseException) -> ModelLoadError:
    from huggingface_hub import constants

    parts = url.split("huggingface.co/", 1)[-1].replace("/blob/main/", "/", 1).split("/", 2)
    command = f"hf download {'/'.join(parts[:2])} {parts[2]}" if len(parts) == 3 else "hf download"
    if constants.HF_HUB_OFFLINE:
        return ModelLoadError(
            f"Model {_label(spec)}: the checkpoint is not in the local Hugging Face cache and downloads are off "
            f"(HF_HUB_OFFLINE=1): download it once with `{command}`, or unset HF_HUB_OFFLINE."
        )
    return ModelLoadError(
        f"Model {_label(spec)}: could not download the checkpoint ({_first_line(exc)}): check the path, your "
        "network, and for gated models that you accepted the licence and set HF_TOKEN."
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


def _denoiser(pipe: Any) -> Any:
    unet = getattr(pipe, "unet", None)
    return unet if unet is not None else getattr(pipe, "transformer", None)


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


def _check_options(spec: ModelSpec, options: EngineOptions) -> None:
    """Refuse settings with a typo before spending a minute on loading weights."""
    label = _label(spec)
    if spec.scheduler not in SCHEDULERS:
        raise ModelLoadError(
            f"Model {label}: unknown scheduler {spec.scheduler!r}. Choose one of: {', '.join(SCHEDULERS)}."
        )
    if options.offload not in OFFLOAD_CHOICES:
        raise ModelLoadError(f"Unknown offload {options.offload!r}: use one of {', '.join(OFFLOAD_CHOICES)}.")
    if options.vae_tiling not in VAE_TILING_CHOICES:
        raise ModelLoadError(f"Unknown vae_tiling {options.vae_tiling!r}: use one of {', '.join(VAE_TILING_CHOICES)}.")
    for label_, value in (("width", spec.width), ("height", spec.height)):
        if value is not None and (value <= 0 or value % 8):
            raise ModelLoadError(f"Model {label}: {label_} must be a positive multiple of 8 (got {value}).")
    if spec.default_steps is not None and spec.default_steps < 1:
        raise ModelLoadError(f"Model {label}: default_steps must be at least 1 (got {spec.default_steps}).")
    if spec.default_guidance is not None and spec.default_guidance < 0:
        raise ModelLoadError(f"Model {label}: default_guidance must be >= 0 (got {spec.default_guidance}).")


@contextlib.contextmanager
def _hub_warnings_silenced() -> Iterator[None]:
    with warnings.catch_warnings():
        # diffusers' load_config still passes huggingface_hub's removed `local_dir_use_symlinks` argument, and
        # huggingface_hub warns about it on every hub-id load. Harmless; nothing we can change.
        warnings.filterwarnings(
            "ignore", message="The `local_dir_use_symlinks` argument is deprecated", category=UserWarning
        )
        yield


def _own_pipeline_class(folder: Path | None) -> Any:
    """The pipeline class for a folder AutoPipelineForText2Image does not know (the demo model), else None."""
    if folder is None:
        return None
    try:
        class_name = json.loads((folder / "model_index.json").read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None
    if class_name == "DemoPipeline":
        from engine.demo.pipeline import DemoPipeline

        return DemoPipeline
    return None


def _load_pretrained(spec: ModelSpec, kwargs: dict[str, Any]) -> tuple[Any, Path | None]:
    from diffusers import AutoPipelineForText2Image

    source, folder = _resolve_source(spec.source)
    loader = _own_pipeline_class(folder) or AutoPipelineForText2Image
    try:
        with _hub_warnings_silenced():
            pipe: Any = cast(Any, loader).from_pretrained(source, **kwargs)
    except OSError as exc:
        if folder is not None:
            raise ModelLoadError(f"Model folder {spec.source!r} could not be read: {_first_line(exc)}") from exc
        raise _hub_error(spec.source, exc) from exc
    except Exception as exc:  # anything else (unsupported pipeline class, bad config): same one-line report
        raise ModelLoadError(f"Could not load model {_label(spec)}: {_first_line(exc)}") from exc
    return pipe, folder


def _pipeline_class(class_name: str, spec: ModelSpec) -> Any:
    diffusers = importlib.import_module("diffusers")
    cls = getattr(diffusers, class_name, None)
    if cls is None or not hasattr(cls, "from_single_file"):
        raise ModelLoadError(
            f"Model {_label(spec)}: diffusers cannot load a {class_name} from a single file; convert the checkpoint "
            "to a diffusers folder (save_pretrained) and point the model at that folder."
        )
    return cls


def _single_file_config(spec: ModelSpec, path: str, cache_dir: str | None) -> tuple[str, str]:
    """(config folder or hub id, pipeline class name) for a single-file checkpoint.

    With `spec.config` that is the answer (a local folder needs nothing from the network). Without it, diffusers
    guesses the architecture from the checkpoint's keys (e.g. SD 1.5, SDXL) and the configs of the matching
    reference repository must be in the Hugging Face cache or downloadable.
    """
    from diffusers import DiffusionPipeline

    config = spec.config
    if config is None:
        utils: Any = importlib.import_module("diffusers.loaders.single_file_utils")
        try:
            checkpoint = utils.load_single_file_checkpoint(path, cache_dir=cache_dir)
        except OSError as exc:
            if not Path(path).is_file():
                raise _hub_file_error(spec, path, exc) from exc
            raise ModelLoadError(f"Model {_label(spec)}: the checkpoint could not be read: {_first_line(exc)}") from exc
        try:
            config = str(utils.fetch_diffusers_config(checkpoint)["pretrained_model_name_or_path"])
        except Exception as exc:
            raise ModelLoadError(
                f"Model {_label(spec)}: could not tell which architecture the checkpoint is ({_first_line(exc)}). "
                "Set the model's `config` to a diffusers folder or hub id of the same architecture."
            ) from exc
        del checkpoint
    folder = Path(config).expanduser()
    if folder.is_dir():
        index = folder / "model_index.json"
        try:
            class_name = json.loads(index.read_text(encoding="utf-8"))["_class_name"]
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(
                f"Model {_label(spec)}: the config folder {config!r} is not a diffusers pipeline folder "
                f"({_first_line(exc)}); it needs a model_index.json and the component configs."
            ) from exc
        return str(folder), str(class_name)
    if _looks_like_path(config):
        raise ModelLoadError(f"Model {_label(spec)}: the config folder {config!r} does not exist.")
    try:
        with _hub_warnings_silenced():
            index_config = cast(Any, DiffusionPipeline).load_config(config, cache_dir=cache_dir)
    except Exception as exc:
        from huggingface_hub import constants

        hint = (
            f"its configs are not in the local Hugging Face cache and downloads are off (HF_HUB_OFFLINE=1): "
            f"run `hf download {config} --include '*.json' '*.txt'` once"
            if constants.HF_HUB_OFFLINE
            else f"could not fetch its configs ({_first_line(exc)})"
        )
        raise ModelLoadError(
            f"Model {_label(spec)}: a single-file checkpoint needs the configs of a diffusers model of the same "
            f"architecture ({config}); {hint}, or set the model's `config` to a local diffusers folder."
        ) from exc
    return config, str(index_config["_class_name"])


def _load_single_file(spec: ModelSpec, kwargs: dict[str, Any]) -> tuple[Any, Path | None]:
    path = Path(spec.source).expanduser()
    local = path.is_file()
    if local:
        source = str(path)
    elif spec.source.startswith(("https://", "http://")):
        source = spec.source  # e.g. https://huggingface.co/org/repo/blob/main/model.safetensors
    elif spec.source.count("/") >= 2 and not _looks_like_local_path(spec.source):
        source = "https://huggingface.co/" + spec.source  # "org/repo/model.safetensors": diffusers wants a URL
    else:
        raise ModelLoadError(
            f"Model {_label(spec)}: the checkpoint file {spec.source!r} does not exist (a file on Hugging Face is "
            "written org/repo/file.safetensors)."
        )
    cache_dir = kwargs.get("cache_dir")
    config, class_name = _single_file_config(spec, source, cache_dir)
    cls = _pipeline_class(class_name, spec)
    try:
        with _hub_warnings_silenced():
            pipe: Any = cls.from_single_file(source, config=config, **kwargs)
    except OSError as exc:
        if not local:
            raise _hub_file_error(spec, source, exc) from exc
        raise ModelLoadError(f"Model {_label(spec)}: the checkpoint could not be read: {_first_line(exc)}") from exc
    except Exception as exc:
        raise ModelLoadError(
            f"Could not load model {_label(spec)} from a single file with the configs of {config!r}: "
            f"{_first_line(exc)} (is the checkpoint the same architecture as the config?)"
        ) from exc
    folder = Path(config) if Path(config).is_dir() else None
    return pipe, folder


def _swap_scheduler(pipe: Any, spec: ModelSpec) -> None:
    if spec.scheduler == "default":
        return
    current = type(pipe.scheduler).__name__
    if "FlowMatch" in current:
        raise ModelLoadError(
            f"Model {_label(spec)} samples with {current} (a flow-matching model such as SD3 or Flux); the "
            f"scheduler {spec.scheduler!r} is for noise-prediction models. Use scheduler 'default'."
        )
    class_name, overrides = SCHEDULER_CLASSES[spec.scheduler]
    cls: Any = getattr(importlib.import_module("diffusers"), class_name)
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **overrides)


def _place(pipe: Any, spec: ModelSpec, options: EngineOptions, device: torch.device) -> str:
    """Move the pipeline to `device`, or set up CPU offload there. Returns the offload actually in effect."""
    offload = options.offload
    if offload != "none" and device.type != "cuda":
        log.info("model %s: offload=%s only applies to CUDA GPUs; ignored on %s", spec.name, offload, device)
        offload = "none"
    try:
        if offload == "model":
            pipe.enable_model_cpu_offload(device=device)  # whole components move to the GPU in turn
        elif offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)  # layer by layer: smallest GPUs, slowest
        else:
            pipe.to(device)
    except RuntimeError as exc:  # CUDA out of memory is a RuntimeError
        raise ModelLoadError(
            f"Model {_label(spec)} could not be moved to {device}: {_first_line(exc)} "
            "(on a small GPU set offload to 'model' or 'sequential')"
        ) from exc
    return offload


def _tune(pipe: Any, spec: ModelSpec, options: EngineOptions, device: torch.device, offload: str) -> bool:
    """Memory format, VAE settings and torch.compile. Returns whether the denoiser was compiled."""
    denoiser = _denoiser(pipe)
    streamed = offload == "sequential"  # weights stream in layer by layer through hooks: leave the modules alone
    if options.channels_last and device.type == "cuda" and denoiser is not None and not streamed:
        # Convolutions in NHWC run faster on tensor cores; on a CPU it gained nothing (DESIGN.md).
        denoiser.to(memory_format=torch.channels_last)
    vae = getattr(pipe, "vae", None)
    if vae is not None:
        if options.vae_tiling == "on" and hasattr(vae, "enable_tiling"):
            vae.enable_tiling()
        elif hasattr(vae, "disable_tiling"):
            vae.disable_tiling()
        # Slicing decodes a batch one image at a time: the decoder's peak memory no longer grows with the batch.
        if device.type != "cpu" and hasattr(vae, "enable_slicing"):
            vae.enable_slicing()
    if options.compile and streamed:
        log.info("model %s: not compiling the denoiser under sequential offload (every layer is a hook)", spec.name)
    elif options.compile and denoiser is not None:
        # In place (nn.Module.compile): the module object stays the same, so LoRA loading still finds it.
        # Compilation happens on the first call per input shape (warm_up does the first).
        denoiser.compile()
        log.info("model %s: the denoiser compiles on its first call (this takes a while)", spec.name)
        return True
    return False


def load_model_spec(spec: ModelSpec, options: EngineOptions) -> LoadedModel:
    """Load the model `spec` describes onto the device `options` choose. Call once per model; see `ModelPool`.

    `spec.source` is a hub id or a diffusers folder (`AutoPipelineForText2Image.from_pretrained`) or a
    `.safetensors`/`.ckpt` checkpoint (`from_single_file`, with the architecture's configs from `spec.config`).
    Defaults, first match wins: the spec's own; the folder's (or config folder's) imagine.json; turbo-class models
    ("turbo" in the name or source) 1 step, guidance 0; otherwise 25 steps, guidance 7; size: the model's native.
    Every failure is a `ModelLoadError` whose message names the model and what to do.
    """
    started = time.perf_counter()
    _check_options(spec, options)
    try:
        device, _ = pick_device(options.device)
    except DeviceUnavailable as exc:
        raise DeviceUnavailable(f"Model {_label(spec)} cannot be loaded: {exc}") from exc
    dtype = pick_dtype(device, options.dtype)
    kwargs: dict[str, Any] = {_dtype_keyword(): dtype}
    if options.cache_dir is not None:
        kwargs["cache_dir"] = str(options.cache_dir)
    pipe, folder = _load_single_file(spec, kwargs) if spec.single_file else _load_pretrained(spec, kwargs)
    overrides = _read_overrides(folder, spec.name)
    try:
        _swap_scheduler(pipe, spec)
        offload = _place(pipe, spec, options, device)
        compiled = _tune(pipe, spec, options, device, offload)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"Model {_label(spec)} could not be set up: {_first_line(exc)}") from exc
    pipe.set_progress_bar_config(disable=True)

    safe_pipe = _safe_pipeline(pipe, spec)
    turbo = any("turbo" in text.lower() for text in (spec.name, spec.source))
    native_width, native_height = _native_size(pipe)
    steps = spec.default_steps or overrides.get("default_steps", TURBO_STEPS if turbo else DEFAULT_STEPS)
    guidance = spec.default_guidance
    if guidance is None:
        guidance = overrides.get("default_guidance", TURBO_GUIDANCE if turbo else DEFAULT_GUIDANCE)
    return LoadedModel(
        name=spec.name,
        pipe=pipe,
        device=device,
        dtype=dtype,
        default_steps=int(steps),
        default_guidance=float(guidance),
        default_width=spec.width or native_width,
        default_height=spec.height or native_height,
        load_seconds=time.perf_counter() - started,
        spec=spec,
        offload=offload,
        vae_tiling=options.vae_tiling,
        compiled=compiled,
        safe_pipe=safe_pipe,
        sld_level=spec.safe_latent_diffusion if safe_pipe is not None else "off",
    )


def _safe_pipeline(pipe: Any, spec: ModelSpec) -> Any:
    """Diffusers' Safe Latent Diffusion pipeline over the same components (so LoRA styles apply to both)."""
    if spec.safe_latent_diffusion == "off":
        return None
    if type(pipe).__name__ != "StableDiffusionPipeline":
        raise ModelLoadError(
            f"Model {_label(spec)}: safe_latent_diffusion works with SD 1.x/2.x models only "
            f"(this one is {type(pipe).__name__}); set it to off."
        )
    from diffusers.pipelines.deprecated import stable_diffusion_safe

    safe_class: Any = stable_diffusion_safe.StableDiffusionPipelineSafe
    safe: Any = safe_class(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        scheduler=pipe.scheduler,
        safety_checker=pipe.safety_checker,
        feature_extractor=pipe.feature_extractor,
        requires_safety_checker=False,
    )
    safe.set_progress_bar_config(disable=True)
    return safe


def _sld_settings(level: str) -> dict[str, Any]:
    from diffusers.pipelines.deprecated.stable_diffusion_safe import SafetyConfig

    return dict(getattr(SafetyConfig, level.upper()))


def load_model(name: str, *, device: str = "auto", cache_dir: str | Path | None = None) -> LoadedModel:
    """Load `name` (a hub id, a local pipeline folder or a single-file checkpoint) with default engine options."""
    options = EngineOptions(device=device, cache_dir=Path(cache_dir) if cache_dir is not None else None)
    return load_model_spec(ModelSpec(name=name, source=name), options)


def unload_model(model: LoadedModel) -> None:
    """Let go of the model's weights now (GPU memory included). The `LoadedModel` is unusable afterwards."""
    if model.unloaded:
        return
    pipe = model.pipe
    if model.offload != "none" and hasattr(pipe, "remove_all_hooks"):
        pipe.remove_all_hooks()
    model.pipe = None
    model.img2img_pipe = None
    model.safe_pipe = None
    model.unloaded = True
    model.adapters.clear()
    model.active_style = None
    del pipe
    free_memory()


def warm_up(model: LoadedModel) -> float:
    """One small generation, so that the first user does not pay for lazy initialisation (and compilation).

    It runs at the model's default size, since a compiled denoiser compiles once per input shape. Returns
    the seconds it took (also kept as `model.warmup_seconds`).
    """
    started = time.perf_counter()
    spec = GenerationSpec(prompt="warm-up", seed=0, steps=min(WARMUP_STEPS, model.default_steps))
    generate_batch(model, [spec])
    model.warmup_seconds = time.perf_counter() - started
    log.info("model %s warmed up in %.1f s", model.name, model.warmup_seconds)
    return model.warmup_seconds


# --- the pool --------------------------------------------------------------------------------------------------


class ModelPool:
    """The models an engine has loaded: at most `options.max_loaded_models`, the least recently used goes first.

    `loader` is for tests; it defaults to `load_model_spec`. A model handed out by `get` stays valid until a
    later `get` of another model evicts it: the engine uses one model at a time, from one thread. The pool does
    not warm models up: a lazy load happens because a job is waiting, and that job is the warm-up; call
    `warm_up` for the model(s) an engine loads at start.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        options: EngineOptions,
        *,
        loader: Callable[[ModelSpec, EngineOptions], LoadedModel] = load_model_spec,
    ) -> None:
        if options.max_loaded_models < 1:
            raise ValueError(f"max_loaded_models must be at least 1 (got {options.max_loaded_models})")
        self.registry = registry
        self.options = options
        self._loader = loader
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()  # guards _models; held only briefly
        self._load_lock = threading.Lock()  # serialises loads and evictions

    def get(self, name: str | None = None) -> LoadedModel:
        """The model called `name` (None: the registry's default), loading it if needed.

        Unknown names raise `InvalidRequest`; load failures `ModelLoadError`. To make room, the least recently
        used models are unloaded *before* the new one loads, so both never need to fit at once.
        """
        spec = self.registry.get(name)
        with self._lock:  # the fast path never waits for another thread's load
            model = self._touch(spec.name)
        if model is not None:
            return model
        with self._load_lock:  # one load at a time; `loaded()` and `peek()` keep answering meanwhile
            with self._lock:
                model = self._touch(spec.name)
                if model is not None:
                    return model
                evicted = []
                while len(self._models) >= self.options.max_loaded_models:
                    evicted.append(self._models.popitem(last=False))
            for evicted_name, evicted_model in evicted:
                log.info("unloading model %s to make room for %s", evicted_name, spec.name)
                unload_model(evicted_model)
            log.info("loading model %s from %s", spec.name, spec.source)
            model = self._loader(spec, self.options)
            with self._lock:
                self._models[spec.name] = model
            return model

    def _touch(self, name: str) -> LoadedModel | None:
        model = self._models.get(name)
        if model is not None:
            self._models.move_to_end(name)
        return model

    def peek(self, name: str) -> LoadedModel | None:
        """The model called `name` if it is loaded, without loading it or counting as a use."""
        with self._lock:
            return self._models.get(name)

    def loaded(self) -> list[str]:
        """Names of the loaded models, most recently used first."""
        with self._lock:
            return list(reversed(self._models))

    def unload(self, name: str) -> bool:
        """Unload one model now. False if it was not loaded."""
        with self._lock:
            model = self._models.pop(name, None)
        if model is None:
            return False
        unload_model(model)
        return True

    def close(self) -> None:
        """Unload every model."""
        with self._lock:
            models = list(self._models.values())
            self._models.clear()
        for model in models:
            unload_model(model)


# --- generation ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    width: int
    height: int
    steps: int
    guidance: float
    style: str | None
    style_strength: float | None
    strength: float | None  # image-to-image strength; None for text-to-image


def _settings(model: LoadedModel, spec: GenerationSpec, source: Image.Image | None) -> _Settings:
    if source is not None:  # image-to-image: a size left out is the source's, rounded down to a multiple of 8
        width = source.width // 8 * 8 if spec.width is None else spec.width
        height = source.height // 8 * 8 if spec.height is None else spec.height
    else:
        width = spec.width or model.default_width
        height = spec.height or model.default_height
    return _Settings(
        width=width,
        height=height,
        steps=spec.steps or model.default_steps,
        guidance=model.default_guidance if spec.guidance_scale is None else float(spec.guidance_scale),
        style=spec.style,
        style_strength=spec.style_strength,
        strength=spec.effective_strength(),
    )


def _shared_settings(
    model: LoadedModel, specs: Sequence[GenerationSpec], sources: Sequence[Image.Image | None]
) -> _Settings:
    for spec in specs:
        if spec.count < 1:
            raise InvalidRequest("count", f"count must be at least 1 (got {spec.count}).")
    first = _settings(model, specs[0], sources[0])
    for index, spec in enumerate(specs[1:], start=1):
        other = _settings(model, spec, sources[index])
        if other != first:
            differing = [name for name in first.__dataclass_fields__ if getattr(first, name) != getattr(other, name)]
            raise ValueError(
                f"generate_batch: spec {index} differs from spec 0 in {', '.join(differing)}; one pipeline call "
                "needs the same size, steps, guidance, style and image-to-image strength for every spec (group "
                "them by Job.batch_key)."
            )
    for label, value in (("width", first.width), ("height", first.height)):
        if value % 8 or value <= 0:
            raise InvalidRequest("size", f"{label} must be a positive multiple of 8 (got {value}).")
    return first


def _generator_device(device: torch.device) -> torch.device:
    # MPS generators are not reproducible across runs (and some torch releases lack them): seed on the CPU.
    return torch.device("cpu") if device.type == "mps" else device


def want_vae_tiling(mode: str, width: int, height: int) -> bool:
    """Whether the VAE decode should be tiled for one call: "on", "off", or "auto" (above 1024x1024 pixels)."""
    if mode == "auto":
        return width * height > VAE_TILING_ABOVE
    return mode == "on"


def _set_vae_tiling(model: LoadedModel, width: int, height: int) -> None:
    vae = getattr(model.pipe, "vae", None)
    if model.vae_tiling != "auto" or vae is None or not hasattr(vae, "enable_tiling"):
        return
    wanted = want_vae_tiling("auto", width, height)
    if bool(getattr(vae, "use_tiling", False)) != wanted:
        vae.enable_tiling() if wanted else vae.disable_tiling()


def _accepts(pipe: Any, parameter: str) -> bool:
    import inspect

    return parameter in inspect.signature(pipe.__call__).parameters


def image_to_image_steps(steps: int, strength: float) -> tuple[int, int]:
    """(steps to ask the pipeline for, denoising steps that then run) for image-to-image at `strength`.

    diffusers' img2img pipelines skip the first (1 - strength) of the schedule and run int(steps * strength)
    steps; when that is 0 (SD-Turbo's single step at 0.6) they fail, so ask for just enough steps for one.
    """
    asked = max(steps, math.ceil(1 / strength))
    while int(asked * strength) < 1:  # float rounding, e.g. ceil(1 / s) * s = 0.999...
        asked += 1
    return asked, min(int(asked * strength), asked)


def _image_to_image_pipeline(model: LoadedModel) -> Any:
    """The model's image-to-image pipeline over the same components (weights, LoRA adapters, compiled denoiser).

    Built once per model with `AutoPipelineForImage2Image.from_pipe`, unless the model's pipeline takes a source
    image and a strength itself. A Safe Latent Diffusion model gets the plain img2img pipeline: diffusers has no SLD
    image-to-image pipeline.
    """
    if model.img2img_pipe is None and _accepts(model.pipe, "image") and _accepts(model.pipe, "strength"):
        model.img2img_pipe = model.pipe  # draws from a source itself (the demo pipeline)
    if model.img2img_pipe is None:
        from diffusers import AutoPipelineForImage2Image

        try:
            pipe: Any = cast(Any, AutoPipelineForImage2Image).from_pipe(model.pipe)
        except ValueError as exc:  # diffusers knows no image-to-image pipeline for this model's class
            raise InvalidRequest(
                "init_image",
                f"The model {model.name!r} ({type(model.pipe).__name__}) cannot draw from a source image: "
                "variations and upscales need another model.",
            ) from exc
        pipe.set_progress_bar_config(disable=True)
        model.img2img_pipe = pipe
    return model.img2img_pipe


def _fit_source(source: Image.Image, width: int, height: int) -> Image.Image:
    """The source as RGB at exactly width x height (Lanczos), as the image-to-image pipeline gets it."""
    image = source.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return image


def generate_batch(
    model: LoadedModel,
    specs: Sequence[GenerationSpec],
    *,
    on_step: LatentsCallback | None = None,
    should_stop: StopCheck | None = None,
    styles: StyleLibrary | None = None,
    limits: Limits | None = None,
) -> list[list[GeneratedImage]]:
    """Draw every image of every spec in ONE pipeline call; returns one list of images per spec, in order.

    All specs must resolve to the same width, height, steps, guidance, style and style strength (else
    `ValueError`); prompts, negative prompts, seeds and counts may differ. Image i of a spec depends only on
    its own seed `spec.seeds()[i]` (one seeded generator per image), so it comes out the same batched or alone
    (up to float rounding, see the tests). `on_step(step, total, latents)` runs after every denoising step
    (step counts from 1; `latents` is the live batch-first tensor, one row per image in output order: read it,
    don't keep or modify it). When `should_stop()` turns true the remaining steps are skipped and `JobCancelled`
    is raised. `styles` applies `GenerationSpec.style` (a LoRA); without a library a style is an
    `InvalidRequest`. `limits`, when given, is checked for every spec.

    Specs with an `init_image` (all of them or none, at one strength) run image-to-image: each source is resized
    to the batch's size (Lanczos) and denoised from `strength` of the way; that runs int(steps * strength)
    steps, which is the total `on_step` sees (see `image_to_image_steps`).
    """
    if model.unloaded:
        raise ModelLoadError(f"Model {model.name!r} was unloaded; get it from the pool again.")
    if not specs:
        return []
    if limits is not None:
        for spec in specs:
            limits.check(spec)
    sources = [decode_init_image(spec.init_image) if spec.init_image is not None else None for spec in specs]
    settings = _shared_settings(model, specs, sources)
    if should_stop is not None and should_stop():
        raise JobCancelled("cancelled before generation started")
    steps = settings.steps
    denoising_steps = steps
    if settings.strength is not None:
        if not (math.isfinite(settings.strength) and 0 < settings.strength <= 1):
            raise InvalidRequest("strength", f"strength must be above 0 and at most 1 (got {settings.strength}).")
        steps, denoising_steps = image_to_image_steps(settings.steps, settings.strength)
        scheduler_steps = int(getattr(model.pipe.scheduler.config, "num_train_timesteps", 1000))
        if steps > scheduler_steps:
            raise InvalidRequest(
                "strength",
                f"strength {settings.strength} is too low for this model: use at least {1 / scheduler_steps:g}.",
            )
        pipe = _image_to_image_pipeline(model)
    else:
        pipe = model.pipe

    if styles is not None:
        styles.apply(model, settings.style, settings.style_strength)
    elif settings.style is not None:
        raise InvalidRequest("style", "Styles are not set up on this engine: leave the style out.")
    else:
        clear_style(model)
    _set_vae_tiling(model, settings.width, settings.height)

    prompts = [spec.prompt for spec in specs for _ in range(spec.count)]
    negatives = [spec.negative_prompt for spec in specs for _ in range(spec.count)]
    seeds = [seed for spec in specs for seed in spec.seeds()]
    generator_device = _generator_device(model.device)
    generators = [torch.Generator(device=generator_device).manual_seed(seed) for seed in seeds]
    stopped = False

    def step_end(pipeline: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        nonlocal stopped
        if on_step is not None:
            total = int(getattr(pipeline, "num_timesteps", denoising_steps) or denoising_steps)
            on_step(step + 1, total, callback_kwargs.get("latents"))
        if should_stop is not None and not stopped and should_stop():
            stopped = True
            pipeline._interrupt = True  # the documented way: the loop skips every remaining step
        return callback_kwargs

    call: dict[str, Any] = {
        "prompt": prompts,
        "num_inference_steps": steps,
        "guidance_scale": settings.guidance,
        "width": settings.width,
        "height": settings.height,
        "generator": generators,
        "callback_on_step_end": step_end,
        "output_type": "pil",
    }
    # Without classifier-free guidance (guidance <= 1: turbo models) SD pipelines ignore a negative prompt, and
    # an empty one equals passing none, so only send them when there is something to send. "" fills the gaps.
    if any(negatives) and _accepts(pipe, "negative_prompt"):
        call["negative_prompt"] = negatives
    if settings.strength is not None:
        # One source per image, in output order; each image's own generator also draws its VAE-encode sample.
        fitted = [
            (spec.count, _fit_source(source, settings.width, settings.height))
            for spec, source in zip(specs, sources, strict=True)
            if source is not None
        ]
        call["image"] = [image for count, image in fitted for _ in range(count)]
        call["strength"] = settings.strength
        for name in ("width", "height"):  # SD/SDXL img2img take the size from the image; Flux's takes both
            if not _accepts(pipe, name):
                del call[name]
    with torch.inference_mode():
        if model.safe_pipe is not None and settings.strength is None:
            output: Any = _call_safe(model, call, on_step, should_stop, steps)
        else:
            output = pipe(**call)
    if settings.strength is not None and model.offload == "model":
        # The shared components' offload hooks belong to the text-to-image pipeline: let it move them off the GPU,
        # as its own calls do at their end.
        model.pipe.maybe_free_model_hooks()
    if stopped:
        raise JobCancelled("cancelled during generation")

    # A model that ships its own safety checker (SD 1.x) keeps it: it blacks out what it flags and says so.
    flags = list(getattr(output, "nsfw_content_detected", None) or [])
    results: list[list[GeneratedImage]] = []
    position = 0
    for spec in specs:
        images: list[GeneratedImage] = []
        for index, seed in enumerate(spec.seeds()):
            image = output.images[position]
            flagged = "the model's safety checker" if position < len(flags) and flags[position] else None
            position += 1
            png = encode_png(
                image,
                prompt=spec.prompt,
                negative_prompt=spec.negative_prompt,
                seed=seed,
                model=model.name,
                steps=steps,
                guidance=settings.guidance,
                width=image.width,
                height=image.height,
                style=spec.style,
                style_strength=spec.style_strength,
                strength=settings.strength,
                source_image=spec.init_image,
            )
            images.append(
                GeneratedImage(index=index, seed=seed, width=image.width, height=image.height, png=png, flagged=flagged)
            )
        results.append(images)
    return results


def _call_safe(
    model: LoadedModel,
    call: dict[str, Any],
    on_step: Callable[[int, int, Any], None] | None,
    should_stop: StopCheck | None,
    steps: int,
) -> Any:
    """The same call through the SLD pipeline, which only knows diffusers' older per-step callback."""

    def callback(step: int, timestep: Any, latents: Any) -> None:
        if on_step is not None:
            on_step(step + 1, steps, latents)
        if should_stop is not None and should_stop():
            raise JobCancelled("cancelled during generation")

    safe_call = {k: v for k, v in call.items() if k != "callback_on_step_end"}
    safe_call.update(callback=callback, callback_steps=1, **_sld_settings(model.sld_level))
    return model.safe_pipe(**safe_call)


def generate(
    model: LoadedModel,
    spec: GenerationSpec,
    *,
    on_step: StepCallback | None = None,
    should_stop: StopCheck | None = None,
    limits: Limits | None = None,
    styles: StyleLibrary | None = None,
) -> list[GeneratedImage]:
    """Draw all `spec.count` images in one pipeline call: `generate_batch` for one spec.

    `on_step(step, total)` is called after every denoising step (step counts from 1).
    """
    step_callback: LatentsCallback | None = None
    if on_step is not None:
        report = on_step

        def step_callback(step: int, total: int, _latents: Any) -> None:
            report(step, total)

    [images] = generate_batch(
        model, [spec], on_step=step_callback, should_stop=should_stop, styles=styles, limits=limits
    )
    return images
