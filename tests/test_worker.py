"""The engine loop against a real queue, with a fake runner standing in for the GPU."""

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.errors import InvalidRequest, JobCancelled
from engine.jobs import Event, EventKind, GeneratedImage, GenerationSpec, Job
from engine.queue import LocalQueue
from engine.worker import StepHook, Worker, WorkerOptions


class FakeOutOfMemory(RuntimeError):
    pass


@dataclass
class FakeRunner:
    """Makes "images" whose bytes name their job and seed; can run out of memory or crash on demand."""

    steps: int = 4
    step_seconds: float = 0.0
    oom_above: int = 1000
    max_images: int = 8
    calls: list[list[str]] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)

    def served_models(self) -> list[str]:
        return ["m"]

    def loaded_models(self) -> list[str]:
        return ["m"]

    def check(self, job: Job) -> None:
        if "style of nothing" in job.spec.prompt:
            raise InvalidRequest("style", "There is no style called 'nothing'.")

    def max_batch_images(self, model: str) -> int:
        return self.max_images

    def run(
        self, jobs: Sequence[Job], on_step: StepHook, should_stop: Callable[[], bool]
    ) -> list[list[GeneratedImage]]:
        self.calls.append([job.id for job in jobs])
        if sum(job.spec.count for job in jobs) > self.oom_above:
            raise FakeOutOfMemory("CUDA out of memory (fake)")
        if any("crash" in job.spec.prompt for job in jobs):
            raise RuntimeError("a kernel failed")
        self.started.set()
        for step in range(1, self.steps + 1):
            if should_stop():
                raise JobCancelled
            time.sleep(self.step_seconds)
            on_step(step, self.steps, lambda index: f"preview {index}".encode())
        return [
            [
                GeneratedImage(index=i, seed=seed, width=8, height=8, png=f"{job.id}:{seed}".encode())
                for i, seed in enumerate(job.spec.seeds())
            ]
            for job in jobs
        ]

    def is_out_of_memory(self, error: BaseException) -> bool:
        return isinstance(error, FakeOutOfMemory)

    def free_memory(self) -> None:
        pass


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[LocalQueue]:
    q = LocalQueue(tmp_path / "queue.sqlite3", lease_seconds=5, poll_seconds=0.01)
    yield q
    q.close()


def submit(queue: LocalQueue, job_id: str, *, prompt: str = "a cat", count: int = 1, seed: int = 10) -> None:
    queue.submit(Job(id=job_id, model="m", spec=GenerationSpec(prompt=prompt, seed=seed, count=count)))


def worker(queue: LocalQueue, runner: FakeRunner) -> Worker:
    options = WorkerOptions(worker_id="w", progress_interval_seconds=0, claim_timeout_seconds=0.05, pulse_seconds=0.02)
    return Worker(queue, runner, options)


def ending(queue: LocalQueue, job_id: str) -> Event:
    events = queue.events(job_id)
    assert events, f"{job_id} has no events"
    terminal = [e for _, e in events if e.terminal]
    assert len(terminal) == 1, terminal
    return terminal[0]


def test_compatible_jobs_run_as_one_call_and_each_gets_its_own_images(queue: LocalQueue) -> None:
    runner = FakeRunner()
    submit(queue, "a", count=2, seed=1)
    submit(queue, "b", seed=5)
    submit(queue, "c", count=3, seed=9)
    worker(queue, runner).run(threading.Event(), burst=True)
    assert runner.calls == [["a", "b", "c"]]
    assert [i.png for i in ending(queue, "a").images] == [b"a:1", b"a:2"]
    assert [i.png for i in ending(queue, "b").images] == [b"b:5"]
    assert [(i.index, i.seed) for i in ending(queue, "c").images] == [(0, 9), (1, 10), (2, 11)]
    progress = [e for _, e in queue.events("c") if e.kind is EventKind.PROGRESS]
    assert [e.step for e in progress] == [1, 2, 3, 4]
    assert progress[0].preview == b"preview 3"  # c's first image is image 3 of the batch


def test_out_of_memory_splits_the_batch_then_the_job(queue: LocalQueue) -> None:
    runner = FakeRunner(oom_above=1)
    submit(queue, "a", seed=1)
    submit(queue, "b", count=3, seed=7)
    worker(queue, runner).run(threading.Event(), burst=True)
    assert ending(queue, "a").kind is EventKind.DONE
    done = ending(queue, "b")
    assert done.kind is EventKind.DONE
    assert [(i.index, i.seed, i.png) for i in done.images] == [(0, 7, b"b:7"), (1, 8, b"b:8"), (2, 9, b"b:9")]


def test_an_image_that_never_fits_fails_with_a_reason(queue: LocalQueue) -> None:
    submit(queue, "huge")
    worker(queue, FakeRunner(oom_above=0)).run(threading.Event(), burst=True)
    failed = ending(queue, "huge")
    assert failed.kind is EventKind.FAILED
    assert "Not enough GPU memory" in failed.reason


def test_a_crashing_job_is_isolated_and_the_rest_of_the_batch_succeeds(queue: LocalQueue) -> None:
    submit(queue, "good-1")
    submit(queue, "bad", prompt="crash please")
    submit(queue, "good-2")
    worker(queue, FakeRunner()).run(threading.Event(), burst=True)
    assert ending(queue, "good-1").kind is EventKind.DONE
    assert ending(queue, "good-2").kind is EventKind.DONE
    bad = ending(queue, "bad")
    assert bad.kind is EventKind.FAILED
    assert "RuntimeError" in bad.reason


def test_a_job_this_engine_cannot_run_fails_without_stopping_others(queue: LocalQueue) -> None:
    submit(queue, "fine-1")
    submit(queue, "unknown-style", prompt="in the style of nothing")
    submit(queue, "fine-2")
    runner = FakeRunner()
    worker(queue, runner).run(threading.Event(), burst=True)
    failed = ending(queue, "unknown-style")
    assert failed.kind is EventKind.FAILED
    assert "no style" in failed.reason
    assert runner.calls == [["fine-1", "fine-2"]]


def test_cancel_stops_one_job_and_the_batch_goes_on(queue: LocalQueue) -> None:
    runner = FakeRunner(steps=40, step_seconds=0.01)
    for job_id in ("a", "b", "c"):
        submit(queue, job_id)
    thread = threading.Thread(target=worker(queue, runner).run, args=(threading.Event(),), kwargs={"burst": True})
    thread.start()
    assert runner.started.wait(5)
    queue.cancel("b")
    thread.join(10)
    assert ending(queue, "b").kind is EventKind.CANCELLED
    assert ending(queue, "a").kind is EventKind.DONE
    assert ending(queue, "c").kind is EventKind.DONE
    assert runner.calls == [["a", "b", "c"]]


def test_cancelling_every_job_interrupts_the_call(queue: LocalQueue) -> None:
    runner = FakeRunner(steps=1000, step_seconds=0.01)
    submit(queue, "only")
    thread = threading.Thread(target=worker(queue, runner).run, args=(threading.Event(),), kwargs={"burst": True})
    started = time.monotonic()
    thread.start()
    assert runner.started.wait(5)
    queue.cancel("only")
    thread.join(10)
    assert time.monotonic() - started < 5  # far less than the 10 s the call would take
    assert ending(queue, "only").kind is EventKind.CANCELLED


def test_abort_hands_the_batch_back(queue: LocalQueue) -> None:
    runner = FakeRunner(steps=1000, step_seconds=0.01)
    submit(queue, "a")
    w = worker(queue, runner)
    thread = threading.Thread(target=w.run, args=(threading.Event(),), kwargs={"burst": True})
    thread.start()
    assert runner.started.wait(5)
    w.abort()
    thread.join(10)
    assert not [e for _, e in queue.events("a") if e.terminal]
    again = queue.claim("other", models=["m"], max_images=4, timeout=0)
    assert [job.id for job in again] == ["a"]


def test_the_engine_advertises_itself_with_its_throughput(queue: LocalQueue) -> None:
    for job_id in ("a", "b"):
        submit(queue, job_id)
    w = worker(queue, FakeRunner(step_seconds=0.01))
    w.run(threading.Event(), burst=True)
    (status,) = queue.engines()
    assert status.worker == "w"
    assert status.models_loaded == ("m",)
    assert status.images_per_second > 0
    assert status.state == "stopping"
