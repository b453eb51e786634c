"""How an engine uses its device. Defaults suit a single consumer GPU; everything is configurable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EngineOptions:
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    dtype: str = "auto"  # auto (bf16/fp16 on GPU, fp32 on CPU), fp16, bf16, fp32
    channels_last: bool = True
    compile: bool = False  # torch.compile the UNet/transformer (slow first batch, faster after)
    offload: str = "none"  # none, model (enable_model_cpu_offload), sequential (smallest GPUs)
    vae_tiling: str = "auto"  # auto (images above 1024x1024), on, off
    max_batch_images: int | None = None  # None: derived from free memory on GPU, 8 on CPU
    batch_window_seconds: float = 0.02  # wait this long for companions before running a lone job
    max_loaded_models: int = 1
    warmup: bool = True
    previews: bool = True
    styles_dir: Path | None = None
    cache_dir: Path | None = None
