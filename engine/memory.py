"""Accelerator memory: recognising out-of-memory errors, handing cached memory back, sizing batches."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from engine.pipeline import LoadedModel

CPU_MAX_BATCH = 8  # CPU and Apple MPS: memory is rarely the limit there, time is
MAX_BATCH = 32

# The batch-size heuristic for CUDA, in bytes per output pixel at 2-byte precision (fp16/bf16), doubled for fp32.
# It assumes classifier-free guidance (the denoiser runs on twice the batch) and SDPA attention. Anchors:
# SD 1.5 at 512x512 runs batch 8 in about 10 GB with 2 GB of weights (~1 GB per image), and SDXL at 1024x1024
# needs about 4x that per image. 4 KiB per pixel gives exactly those numbers (512 * 512 * 4096 = 1 GiB).
ACTIVATION_BYTES_PER_PIXEL = 4096
HEADROOM_FRACTION = 0.15  # the allocator fragments; cuDNN and SDPA want workspaces
HEADROOM_BYTES = 1 << 30


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` (or an error it wraps through `raise ... from`) means an accelerator ran out of memory.

    Covers torch.cuda.OutOfMemoryError, torch.OutOfMemoryError (newer torch, any device), and the
    RuntimeErrors whose message says "out of memory" (older CUDA paths, "MPS backend out of memory").
    """
    types: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError,)
    generic = getattr(torch, "OutOfMemoryError", None)
    if isinstance(generic, type) and issubclass(generic, BaseException):
        types = (*types, generic)
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, types):
            return True
        if isinstance(current, RuntimeError) and "out of memory" in str(current).lower():
            return True
        current = current.__cause__
    return False


def free_memory() -> None:
    """Collect garbage and hand the allocator's cached blocks back to the device (after an OOM or an unload)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    mps_backend = getattr(torch.backends, "mps", None)
    if mps is not None and mps_backend is not None and mps_backend.is_available():
        mps.empty_cache()


def estimate_max_batch(available_bytes: int, width: int, height: int, *, element_size: int = 2) -> int:
    """How many images of width x height fit in `available_bytes` of free accelerator memory (1..MAX_BATCH).

    Per image: `ACTIVATION_BYTES_PER_PIXEL` per output pixel, scaled by precision. Set aside first: a headroom
    of 15% plus 1 GiB, and one image's worth for the VAE decode (with VAE slicing the decoder handles one image
    at a time, so this does not grow with the batch).
    """
    per_image = width * height * ACTIVATION_BYTES_PER_PIXEL * max(element_size, 1) // 2
    usable = available_bytes * (1 - HEADROOM_FRACTION) - HEADROOM_BYTES - per_image
    if per_image <= 0:
        return MAX_BATCH
    return max(1, min(MAX_BATCH, int(usable // per_image)))


def _offloaded_weight_bytes(model: LoadedModel) -> int:
    """With model offload, the denoiser's weights are on the CPU between calls but need room during one."""
    denoiser = model.denoiser if model.pipe is not None else None
    if model.offload != "model" or denoiser is None:
        return 0
    return sum(p.numel() * p.element_size() for p in denoiser.parameters())


def derive_max_batch(model: LoadedModel, width: int, height: int, configured: int | None = None) -> int:
    """The most images one pipeline call should draw at width x height on this model's device.

    `configured` (EngineOptions.max_batch_images) wins when set. On CUDA: `estimate_max_batch` of the memory
    free right now (the driver's free memory plus what PyTorch has cached but not in use), less the weights that
    model offload will bring in. On the CPU and MPS: 8.
    """
    if configured is not None:
        if configured < 1:
            raise ValueError(f"max_batch_images must be at least 1 (got {configured})")
        return configured
    if model.device.type != "cuda":
        return CPU_MAX_BATCH
    free, _total = torch.cuda.mem_get_info(model.device)
    cached_unused = torch.cuda.memory_reserved(model.device) - torch.cuda.memory_allocated(model.device)
    available = free + cached_unused - _offloaded_weight_bytes(model)
    element_size = torch.empty((), dtype=model.dtype).element_size()
    return estimate_max_batch(available, width, height, element_size=element_size)
