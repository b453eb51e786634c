"""bench/moderation.py's verdict: every goal it measured, the image gate's latency included when it ran."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

GOOD = {"recall": 0.97, "false_positive_rate": 0.01}


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "bench" / "moderation.py"
    spec = importlib.util.spec_from_file_location("bench_moderation", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_image_gate_p99_counts_when_it_was_timed(bench: ModuleType) -> None:
    prompt_times = [1.0] * 100
    assert bench.goals_met(GOOD, prompt_times, [40.0] * 99 + [149.0])
    assert not bench.goals_met(GOOD, prompt_times, [40.0] * 98 + [400.0, 400.0])


def test_without_image_timings_only_the_prompt_goals_count(bench: ModuleType) -> None:
    assert bench.goals_met(GOOD, [1.0] * 100, None)
    assert bench.goals_met(GOOD, [1.0] * 100, [])
    assert not bench.goals_met(GOOD, [9.0] * 100, None)
    assert not bench.goals_met({**GOOD, "recall": 0.9}, [1.0] * 100, None)
