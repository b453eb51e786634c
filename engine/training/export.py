"""Write the trained LoRA where other tools and the engine read it, with its alpha kept.

- `OUT/pytorch_lora_weights.safetensors`: diffusers format, with the adapter config (rank, alpha, target
  modules) in the file's metadata, so it reloads at the strength it was trained at;
- optionally `OUT/pytorch_lora_weights_kohya.safetensors`: kohya format (A1111, ComfyUI, ...) whose `.alpha`
  entries hold the real alpha;
- optionally a copy in the styles folder as `<name>.safetensors` + `<name>.json`, which a running engine picks
  up on the next request (the styles folder is read on every lookup).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from engine.errors import InvalidRequest
from engine.styles import takes_lora
from engine.training.errors import TrainingUsageError

if TYPE_CHECKING:
    from engine.pipeline import LoadedModel

LORA_FILE = "pytorch_lora_weights.safetensors"
KOHYA_FILE = "pytorch_lora_weights_kohya.safetensors"
ADAPTER_NAME = "lora"


def peft_state(unet: Any) -> dict[str, torch.Tensor]:
    """The LoRA weights of `unet` with peft's names (what checkpoints hold)."""
    from peft.utils import get_peft_model_state_dict

    state: dict[str, torch.Tensor] = get_peft_model_state_dict(unet)
    return {key: value.detach().to("cpu", torch.float32).contiguous() for key, value in state.items()}


def load_peft_state(unet: Any, state: dict[str, torch.Tensor]) -> None:
    from peft.utils import set_peft_model_state_dict

    result: Any = set_peft_model_state_dict(unet, state)
    unexpected = [key for key in getattr(result, "unexpected_keys", None) or [] if "lora_" in key]
    missing = [key for key in getattr(result, "missing_keys", None) or [] if "lora_" in key]
    if unexpected or missing:
        key = (unexpected or missing)[0]
        raise TrainingUsageError(f"the checkpoint's LoRA does not fit this model ({key} does not match)")


def save_diffusers(
    output: Path, unet: Any, lora_config: Any, text_encoder: Any = None, text_encoder_config: Any = None
) -> Path:
    """The UNet's LoRA (and the text encoder's, when given) in diffusers' SD format, each with its adapter config."""
    diffusers: Any = importlib.import_module("diffusers")
    utils: Any = importlib.import_module("diffusers.utils")
    layers = _diffusers_names(utils, peft_state(unet))
    text: dict[str, Any] = {}
    if text_encoder is not None:
        text = {
            "text_encoder_lora_layers": _diffusers_names(utils, peft_state(text_encoder)),
            "text_encoder_lora_adapter_metadata": text_encoder_config.to_dict(),
        }
    pipeline_class = cast(Any, diffusers.StableDiffusionPipeline)
    pipeline_class.save_lora_weights(
        output,
        unet_lora_layers=layers,
        unet_lora_adapter_metadata=lora_config.to_dict(),
        weight_name=LORA_FILE,
        **text,
    )
    return output / LORA_FILE


def _diffusers_names(utils: Any, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' names for the layers, where it has them: it has none for convolutions (the demo model's LoRA), and
    its loader reads all-diffusers or all-peft names but not a mix, so then peft's names are kept throughout."""
    converted: dict[str, torch.Tensor] = utils.convert_state_dict_to_diffusers(state)
    return state if any(".lora_A." in key or ".lora_B." in key for key in converted) else converted


def save_kohya(output: Path, unet: Any, alpha: float) -> Path:
    """Kohya format. diffusers' converter writes alpha = rank; kohya tools scale by alpha/rank, so fix it."""
    from safetensors.torch import save_file

    utils: Any = importlib.import_module("diffusers.utils")
    state: dict[str, torch.Tensor] = utils.convert_state_dict_to_kohya(
        {f"unet.{key}": value for key, value in peft_state(unet).items()}
    )
    state = {key: (torch.tensor(float(alpha)) if key.endswith(".alpha") else value) for key, value in state.items()}
    path = output / KOHYA_FILE
    save_file(
        {key: value.contiguous() for key, value in state.items()}, str(path), metadata={"ss_network_alpha": str(alpha)}
    )
    return path


def register_style(lora: Path, styles_dir: Path, name: str, *, description: str, strength: float = 1.0) -> Path:
    """Copy `lora` into `styles_dir` as `<name>.safetensors` (+ sidecar). Atomic: a reader sees old or new."""
    if not name or name.startswith(".") or any(char in name for char in "/\\") or name != name.strip():
        raise TrainingUsageError(f"--style {name!r} is not a usable style name: use letters, digits, - or _")
    styles_dir.mkdir(parents=True, exist_ok=True)
    target = styles_dir / f"{name}.safetensors"
    sidecar = styles_dir / f"{name}.json"
    temporary = styles_dir / f".{name}.json.partial"
    temporary.write_text(json.dumps({"strength": strength, "description": description}, indent=2) + "\n", "utf-8")
    os.replace(temporary, sidecar)
    temporary = styles_dir / f".{name}.safetensors.partial"
    shutil.copyfile(lora, temporary)
    os.replace(temporary, target)
    return target


def lora_file(path: Path) -> Path:
    """The LoRA file `path` names: a .safetensors file, or a training output folder holding one."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / LORA_FILE
    if not path.is_file():
        raise TrainingUsageError(f"--lora {path}: no such LoRA file; give a .safetensors file or a training folder")
    return path


def apply_lora(model: LoadedModel, path: Path, scale: float) -> None:
    """Load the LoRA at `path` (file or training folder) into `model` and switch it on at `scale`.

    `InvalidRequest` (field "lora") when the model takes no LoRA or this one does not fit it."""
    file = lora_file(path)
    pipe = model.pipe
    if not takes_lora(pipe):
        raise InvalidRequest(
            "lora",
            f"The LoRA {file} cannot be applied to the model {model.name!r} ({type(pipe).__name__}): LoRAs from "
            "imagine train fit Stable Diffusion 1.x/2.x models and the demo model. Pick one with --model, or leave "
            "out --lora.",
        )
    try:
        pipe.load_lora_weights(str(file), adapter_name=ADAPTER_NAME)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidRequest(
            "lora",
            f"The LoRA {file} does not fit the model {model.name!r} ({first}): use a LoRA trained on this model.",
        ) from exc
    pipe.set_adapters([ADAPTER_NAME], adapter_weights=[scale])
