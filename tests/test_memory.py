"""Out-of-memory detection, freeing memory, and the batch-size heuristic."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.errors import ModelLoadError
from engine.memory import (
    CPU_MAX_BATCH,
    MAX_BATCH,
    derive_max_batch,
    estimate_max_batch,
    free_memory,
    is_out_of_memory,
)
from engine.options import EngineOptions
from engine.pipeline import LoadedModel, load_model_spec
from engine.registry import ModelSpec

GIB = 1 << 30


def cpu_model() -> LoadedModel:
    return LoadedModel("fake", object(), torch.device("cpu"), torch.float32, 1, 0.0, 64, 64)


def wrapped(error: BaseException) -> BaseException:
    try:
        try:
            raise error
        except BaseException as cause:
            raise ModelLoadError("could not load") from cause
    except ModelLoadError as outer:
        return outer


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB, other allocations: 1.2 GB)"),
        RuntimeError("CUDA error: out of memory"),
        wrapped(torch.cuda.OutOfMemoryError("CUDA out of memory.")),
    ],
)
def test_out_of_memory_errors_are_recognised(error: BaseException) -> None:
    assert is_out_of_memory(error)


def test_torch_generic_out_of_memory_error_is_recognised() -> None:
    generic = getattr(torch, "OutOfMemoryError", None)
    if generic is None:
        pytest.skip("this torch has no torch.OutOfMemoryError")
    assert is_out_of_memory(generic("out of memory on xpu"))


@pytest.mark.parametrize(
    "error",
    [RuntimeError("mat1 and mat2 shapes cannot be multiplied"), ValueError("out of memory"), ModelLoadError("gone")],
)
def test_other_errors_are_not_out_of_memory(error: BaseException) -> None:
    assert not is_out_of_memory(error)


def test_free_memory_runs_anywhere() -> None:
    free_memory()


def test_configured_batch_size_wins() -> None:
    assert derive_max_batch(cpu_model(), 512, 512, 3) == 3
    with pytest.raises(ValueError, match="at least 1"):
        derive_max_batch(cpu_model(), 512, 512, 0)


def test_cpu_batches_are_eight() -> None:
    assert derive_max_batch(cpu_model(), 1024, 1024, None) == CPU_MAX_BATCH == 8


@pytest.mark.parametrize(
    ("free_gib", "size", "element_size", "expected"),
    [
        (24, 512, 2, 18),  # 24 GiB * 0.85 - 1 GiB headroom - 1 GiB decode = 18.4 images of 1 GiB
        (24, 512, 4, 8),  # fp32: 2 GiB per image
        (24, 1024, 2, 3),  # 4x the pixels: 4 GiB per image
        (8, 1024, 2, 1),  # not even one fits by the estimate: still 1 (the caller's OOM handling has the last word)
        (139, 512, 2, MAX_BATCH),  # an H200 at 512 px: clamped to 32
    ],
)
def test_batch_estimate_from_free_memory(free_gib: int, size: int, element_size: int, expected: int) -> None:
    assert estimate_max_batch(free_gib * GIB, size, size, element_size=element_size) == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_batch_size_comes_from_free_memory(tiny_model_dir: Path) -> None:
    model = load_model_spec(ModelSpec(name="tiny", source=str(tiny_model_dir)), EngineOptions(device="cuda"))

    assert 1 <= derive_max_batch(model, 512, 512) <= MAX_BATCH
    assert derive_max_batch(model, 2048, 2048) <= derive_max_batch(model, 256, 256)
