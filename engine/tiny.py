"""A tiny, randomly initialised Stable Diffusion pipeline built entirely offline.

For tests, CI and smoke runs: it loads through the same `engine.pipeline.load_model` as a real model, draws
64 px noise in a fraction of a second on a CPU, and needs no download (the tokenizer is built by hand).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, cast

import torch

from engine.pipeline import OVERRIDES_FILE

TINY_NATIVE_SIZE = 64
TINY_DEFAULT_STEPS = 4
TINY_DEFAULT_GUIDANCE = 0.0

_BOS = "<|startoftext|>"
_EOS = "<|endoftext|>"
_MAX_TOKENS = 77


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map, as `transformers.convert_slow_tokenizer.bytes_to_unicode`."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes), strict=True))


def _write_tokenizer(directory: Path) -> None:
    """Write a byte-level CLIP tokenizer with no merges (every byte is a token) as plain files.

    Loading these files with `CLIPTokenizer.from_pretrained` works with both the slow (transformers 4) and the
    tokenizers-backed (transformers 5) class, so nothing here depends on either constructor's signature.
    """
    chars = list(_bytes_to_unicode().values())
    vocab = {token: index for index, token in enumerate([*chars, *(c + "</w>" for c in chars), _BOS, _EOS])}
    config = {
        "model_max_length": _MAX_TOKENS,
        "bos_token": _BOS,
        "eos_token": _EOS,
        "unk_token": _EOS,
        "pad_token": _EOS,
        "tokenizer_class": "CLIPTokenizer",
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def create_tiny_pipeline(directory: Path, *, seed: int = 0) -> Path:
    """Write a tiny random StableDiffusionPipeline to `directory` (created if missing) and return it.

    The same seed gives the same weights. Native size 64 px; an `imagine.json` sets 4 steps, guidance 0.
    """
    from transformers import CLIPTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write_tokenizer(directory / "tokenizer")
    tokenizer: Any = CLIPTokenizer.from_pretrained(directory / "tokenizer")

    with torch.random.fork_rng(devices=[]):  # seed the weights without touching the caller's random state
        pipe = _build(tokenizer, seed)
    pipe.save_pretrained(directory)
    (directory / OVERRIDES_FILE).write_text(
        json.dumps({"default_steps": TINY_DEFAULT_STEPS, "default_guidance": TINY_DEFAULT_GUIDANCE}, indent=2) + "\n",
        encoding="utf-8",
    )
    return directory


def _build(tokenizer: Any, seed: int) -> Any:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet: Any = cast(Any, UNet2DConditionModel)(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=TINY_NATIVE_SIZE // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    torch.manual_seed(seed + 1)
    vae: Any = cast(Any, AutoencoderKL)(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=TINY_NATIVE_SIZE,
    )
    torch.manual_seed(seed + 2)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=_MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=32,
    )
    text_encoder: Any = CLIPTextModel(text_config)
    scheduler: Any = cast(Any, EulerDiscreteScheduler)(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="trailing",
    )
    return cast(Any, StableDiffusionPipeline)(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


# --- A single-file checkpoint in the original Stable Diffusion (LDM) layout -------------------------------------
#
# diffusers ships only the other direction (`from_single_file` converts LDM keys to diffusers keys), so this is
# that conversion run backwards, for the SD 1.x block layout the tiny model uses. `from_single_file` with
# `config=<the tiny folder>` reads it back into exactly the same weights.

_RESNET_TO_LDM = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)
_UNET_TOP_TO_LDM = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_ATTENTION_TO_LDM = (
    ("group_norm", "norm"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("to_out.0", "proj_out"),
)


def _rename(key: str, old: str, new: str) -> str | None:
    """`key` with the prefix `old.` replaced by `new.`, or None when it does not start with `old.`."""
    return new + key[len(old) :] if key.startswith(old + ".") else None


def _resnet_suffix(suffix: str) -> str:
    for diffusers_name, ldm_name in _RESNET_TO_LDM:
        if suffix.startswith("." + diffusers_name + "."):
            return "." + ldm_name + suffix[len(diffusers_name) + 1 :]
    return suffix


def _unet_to_ldm(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    per_block = int(config["layers_per_block"])
    blocks = len(config["down_block_types"])
    up_attention = ["CrossAttn" in kind for kind in config["up_block_types"]]
    prefixes: list[tuple[str, str, bool]] = []  # (diffusers prefix, ldm prefix, is a resnet)
    for block in range(blocks):
        for layer in range(per_block):
            index = 1 + block * (per_block + 1) + layer
            prefixes.append((f"down_blocks.{block}.resnets.{layer}", f"input_blocks.{index}.0", True))
            prefixes.append((f"down_blocks.{block}.attentions.{layer}", f"input_blocks.{index}.1", False))
        downsample = 1 + block * (per_block + 1) + per_block
        prefixes.append((f"down_blocks.{block}.downsamplers.0.conv", f"input_blocks.{downsample}.0.op", False))
        for layer in range(per_block + 1):
            index = block * (per_block + 1) + layer
            prefixes.append((f"up_blocks.{block}.resnets.{layer}", f"output_blocks.{index}.0", True))
            prefixes.append((f"up_blocks.{block}.attentions.{layer}", f"output_blocks.{index}.1", False))
        upsample = f"output_blocks.{block * (per_block + 1) + per_block}.{2 if up_attention[block] else 1}.conv"
        prefixes.append((f"up_blocks.{block}.upsamplers.0.conv", upsample, False))
    prefixes += [
        ("mid_block.resnets.0", "middle_block.0", True),
        ("mid_block.attentions.0", "middle_block.1", False),
        ("mid_block.resnets.1", "middle_block.2", True),
    ]
    prefixes += [(old, new, False) for old, new in _UNET_TOP_TO_LDM.items()]

    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for old, new, resnet in prefixes:
            renamed = _rename(key, old, new)
            if renamed is not None:
                suffix = renamed[len(new) :]
                converted[new + (_resnet_suffix(suffix) if resnet else suffix)] = value
                break
        else:
            raise ValueError(f"no LDM name for UNet weight {key!r}")
    return converted


def _vae_to_ldm(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    blocks = len(config["down_block_types"])
    prefixes: list[tuple[str, str]] = []
    for block in range(blocks):
        prefixes.append((f"encoder.down_blocks.{block}.resnets", f"encoder.down.{block}.block"))
        prefixes.append((f"encoder.down_blocks.{block}.downsamplers.0", f"encoder.down.{block}.downsample"))
        ldm_block = blocks - 1 - block  # the decoder counts its up blocks the other way round
        prefixes.append((f"decoder.up_blocks.{block}.resnets", f"decoder.up.{ldm_block}.block"))
        prefixes.append((f"decoder.up_blocks.{block}.upsamplers.0", f"decoder.up.{ldm_block}.upsample"))
    for part in ("encoder", "decoder"):
        prefixes += [
            (f"{part}.mid_block.resnets.0", f"{part}.mid.block_1"),
            (f"{part}.mid_block.resnets.1", f"{part}.mid.block_2"),
            (f"{part}.conv_norm_out", f"{part}.norm_out"),
        ]
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for part in ("encoder", "decoder"):
            attention = _rename(key, f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1")
            if attention is None:
                continue
            for diffusers_name, ldm_name in _VAE_ATTENTION_TO_LDM:
                attention = attention.replace(f".{diffusers_name}.", f".{ldm_name}.")
            # The original VAE attention uses 1x1 convolutions where diffusers uses linear layers.
            converted[attention] = value[:, :, None, None] if value.ndim == 2 else value
            break
        else:
            for old, new in prefixes:
                renamed = _rename(key, old, new)
                if renamed is not None:
                    converted[renamed.replace(".conv_shortcut.", ".nin_shortcut.")] = value
                    break
            else:
                converted[key] = value  # conv_in, conv_out, quant_conv, post_quant_conv keep their names
    return converted


def create_tiny_single_file(model_dir: Path, path: Path) -> Path:
    """Write the tiny pipeline at `model_dir` as one `.safetensors` or `.ckpt` file in the original SD layout.

    Load it back with `from_single_file(path, config=model_dir)`: `model_dir` supplies the configs and tokenizer.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    model_dir, path = Path(model_dir), Path(path)
    unet: Any = cast(Any, UNet2DConditionModel).from_pretrained(model_dir, subfolder="unet")
    vae: Any = cast(Any, AutoencoderKL).from_pretrained(model_dir, subfolder="vae")
    text_encoder: Any = CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder")
    checkpoint: dict[str, torch.Tensor] = {}
    for key, value in _unet_to_ldm(unet.state_dict(), dict(unet.config)).items():
        checkpoint["model.diffusion_model." + key] = value
    for key, value in _vae_to_ldm(vae.state_dict(), dict(vae.config)).items():
        checkpoint["first_stage_model." + key] = value
    for key, value in text_encoder.state_dict().items():
        # transformers 5 flattened CLIPTextModel (no `text_model.` level); checkpoints keep the original names.
        name = key if key.startswith("text_model.") else "text_model." + key
        checkpoint["cond_stage_model.transformer." + name] = value
    checkpoint = {key: value.detach().contiguous().clone() for key, value in checkpoint.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(checkpoint, str(path))
    elif path.suffix == ".ckpt":
        torch.save({"state_dict": checkpoint}, path)
    else:
        raise ValueError(f"a single-file checkpoint ends in .safetensors or .ckpt, not {path.suffix!r}")
    return path


def create_tiny_lora(
    model_dir: Path, path: Path, *, rank: int = 4, alpha: int = 16, seed: int = 0, scale: float = 0.1
) -> Path:
    """Write a random LoRA for the tiny model's UNet attention (to_q/to_k/to_v/to_out.0) to `path` (.safetensors).

    Both LoRA matrices are random and non-zero (a freshly initialised LoRA is a no-op), with standard deviation
    `scale`: 0.1 moves the tiny model's pixels by ~15 levels; much more and the network turns chaotic, so float
    rounding (batched vs alone) grows into visible differences. The adapter config goes into the file's
    metadata, so alpha != rank reloads at the right strength. Needs peft.
    """
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"a LoRA file ends in .safetensors, not {path.suffix!r}")
    unet: Any = cast(Any, UNet2DConditionModel).from_pretrained(Path(model_dir), subfolder="unet")
    config = LoraConfig(
        r=rank, lora_alpha=alpha, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "to_out.0"]
    )
    unet.add_adapter(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    diffusers_utils: Any = importlib.import_module("diffusers.utils")
    layers = diffusers_utils.convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    cast(Any, StableDiffusionPipeline).save_lora_weights(
        path.parent,
        unet_lora_layers=layers,
        unet_lora_adapter_metadata=cast(Any, config).to_dict(),
        weight_name=path.name,
    )
    return path
