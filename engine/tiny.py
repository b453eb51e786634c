"""A tiny, randomly initialised Stable Diffusion pipeline built entirely offline.

For tests, CI and smoke runs: it loads through the same `engine.pipeline.load_model` as a real model, draws
64 px noise in a fraction of a second on a CPU, and needs no download (the tokenizer is built by hand).
"""

from __future__ import annotations

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
