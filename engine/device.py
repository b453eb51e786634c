"""Which accelerator to run on, and in which precision."""

from __future__ import annotations

import torch

from engine.errors import ModelLoadError

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")
DTYPE_CHOICES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


class DeviceUnavailable(ModelLoadError):
    """The configured device does not exist on this machine (a `ModelLoadError`: nothing can load there)."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _cuda_dtype() -> torch.dtype:
    # bf16 has fp32's range, so no overflowing VAEs (black images); fp16 where the GPU lacks it (pre-Ampere).
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def pick_device(preference: str = "auto") -> tuple[torch.device, torch.dtype]:
    """Return the device and dtype to load models with.

    "auto" picks CUDA (bf16 where supported, else fp16), then Apple MPS (fp16), then the CPU (fp32: half
    precision on a CPU is slow or unsupported). "cuda", "mps" and "cpu" force that device and raise
    `DeviceUnavailable` when it is missing. "cuda:1" picks a particular GPU.
    """
    choice = preference.strip().lower()
    kind, _, index = choice.partition(":")
    if kind not in DEVICE_CHOICES or (index and (kind != "cuda" or not index.isdigit())):
        raise DeviceUnavailable(
            f"Unknown device {preference!r}: use one of {', '.join(DEVICE_CHOICES)} (or cuda:N for one GPU)."
        )
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda"), _cuda_dtype()
        if _mps_available():
            return torch.device("mps"), torch.float16
        return torch.device("cpu"), torch.float32
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailable(
                "The device is set to 'cuda' but PyTorch sees no CUDA GPU here: check the NVIDIA driver and that "
                "the installed torch is a CUDA build, or set the device to 'auto' or 'cpu'."
            )
        if index and int(index) >= torch.cuda.device_count():
            raise DeviceUnavailable(
                f"The device is set to {choice!r} but only {torch.cuda.device_count()} CUDA GPU(s) are visible."
            )
        return torch.device(choice), _cuda_dtype()
    if kind == "mps":
        if not _mps_available():
            raise DeviceUnavailable(
                "The device is set to 'mps' but Apple's Metal backend is not available here (it needs macOS on "
                "Apple silicon): set the device to 'auto' or 'cpu'."
            )
        return torch.device("mps"), torch.float16
    return torch.device("cpu"), torch.float32


def pick_dtype(device: torch.device, preference: str = "auto") -> torch.dtype:
    """The precision to load weights in on `device`: "auto" (see `pick_device`), or fp16 / bf16 / fp32 as asked.

    An explicit choice is honoured even where it is a poor one (fp16 on a CPU runs, slowly); an unknown name is
    a `ModelLoadError` that lists the choices.
    """
    choice = preference.strip().lower()
    if choice == "auto":
        if device.type == "cuda":
            return _cuda_dtype()
        return torch.float16 if device.type == "mps" else torch.float32
    if choice not in DTYPE_CHOICES:
        raise ModelLoadError(f"Unknown dtype {preference!r}: use one of auto, {', '.join(DTYPE_CHOICES)}.")
    return DTYPE_CHOICES[choice]
