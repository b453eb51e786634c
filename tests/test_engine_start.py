"""An engine whose default model cannot be loaded still serves the others (the bundled demo model offline)."""

import threading
from pathlib import Path

import pytest

from engine.demo import DEMO_MODEL, MODEL_DIR
from engine.errors import ModelLoadError
from engine.jobs import EventKind, GenerationSpec, Job
from engine.limits import Limits
from engine.options import EngineOptions
from engine.queue import LocalQueue
from engine.registry import ModelRegistry, ModelSpec
from engine.runner import PipelineRunner
from engine.worker import Worker, WorkerOptions

CPU = EngineOptions(device="cpu", warmup=False)

pytestmark = pytest.mark.skipif(
    not (MODEL_DIR / "model_index.json").is_file(), reason="the trained demo model is not bundled"
)


def test_a_model_that_cannot_load_leaves_the_others_served(tmp_path: Path) -> None:
    registry = ModelRegistry((ModelSpec(name="gone", source=str(tmp_path / "no-such-model")),), default="gone")
    runner = PipelineRunner(registry, CPU, Limits())
    runner.start()
    assert runner.loaded_models() == [DEMO_MODEL]

    queue = LocalQueue(tmp_path / "queue.sqlite3", lease_seconds=30, poll_seconds=0.01)
    try:
        queue.submit(Job(id="demo", model=DEMO_MODEL, spec=GenerationSpec(prompt="a red circle", seed=1, steps=2)))
        queue.submit(Job(id="gone", model="gone", spec=GenerationSpec(prompt="a red circle", seed=1, steps=2)))
        options = WorkerOptions(worker_id="w", progress_interval_seconds=0, claim_timeout_seconds=0.05)
        Worker(queue, runner, options).run(threading.Event(), burst=True)
        demo = [event for _, event in queue.events("demo")][-1]
        gone = [event for _, event in queue.events("gone")][-1]
    finally:
        queue.close()
    assert demo.kind is EventKind.DONE
    assert gone.kind is EventKind.FAILED
    assert "no-such-model" in (gone.reason or "")
    assert "--model demo" in (gone.reason or "")


def test_an_engine_with_no_loadable_model_says_why(tmp_path: Path) -> None:
    registry = ModelRegistry((ModelSpec(name="gone", source=str(tmp_path / "no-such-model")),), default="gone")
    runner = PipelineRunner(registry, CPU, Limits(), served=["gone"])
    with pytest.raises(ModelLoadError, match="no-such-model"):
        runner.start()
