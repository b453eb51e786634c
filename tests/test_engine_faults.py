"""Real engine processes killed with SIGKILL in the middle of a batch: every job still completes and
is delivered exactly once, with the local queue (the engine restarts) and with Redis (a second
engine takes over)."""

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from bot_process import IMAGINE, imagine_env

from bot.config import load_settings
from bot.db.migrate import connect, upgrade
from bot.db.models import JobStatus
from bot.db.store import JobRecord, JobStore
from bot.finishing import Finisher
from bot.images import ImageStore
from bot.orchestrator import Delivery, Orchestrator, Refusal
from bot.requests import ImagineRequest
from engine.jobs import EventKind
from engine.queue import JobQueue, QueuePosition, open_queue
from moderation.prompt_gate import PromptGate

pytestmark = pytest.mark.slow
JOBS = 6


@dataclass
class CountingReporter:
    delivered: dict[str, int] = field(default_factory=dict)

    async def refused(self, refusal: Refusal) -> None:
        raise AssertionError(refusal)

    async def queued(self, job: JobRecord, position: QueuePosition | None, eta_seconds: float | None) -> None:
        pass

    async def progress(self, job: JobRecord, step: int, total: int, preview: bytes | None) -> None:
        pass

    async def still_waiting(self, job: JobRecord) -> None:
        pass

    async def deliver(self, delivery: Delivery) -> str | None:
        self.delivered[delivery.job.id] = self.delivered.get(delivery.job.id, 0) + 1
        return None

    async def find_delivered(self, job: JobRecord) -> str | None:
        return None

    async def withheld(self, job: JobRecord, *, held: int, blocked: int, category: str | None) -> None:
        raise AssertionError(f"withheld {category}")

    async def failed(self, job: JobRecord, reason: str) -> None:
        raise AssertionError(reason)

    async def reviewed(self, job: JobRecord, *, approved: bool) -> None:
        raise AssertionError("reviewed")

    async def cancelled(self, job: JobRecord) -> None:
        raise AssertionError("cancelled")


class Engines:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, worker_id: str) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{worker_id}-{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [IMAGINE, "engine", "--worker-id", worker_id], env=self.env, stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        self.processes.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text()}" for p in sorted(self.log_dir.glob("*.log")))

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(params=["local", "redis"])
def queue_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "local":
        yield "local"
        return
    url = os.environ.get("IMAGINE_TEST_REDIS_URL", "")
    if not url:
        pytest.skip("IMAGINE_TEST_REDIS_URL is not set, so the Redis variant does not run")
    prefix = f"imagine-faults-{uuid.uuid4().hex[:8]}"
    yield f"{url}{'&' if '?' in url else '?'}prefix={prefix}"
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


async def wait_until(check: object, what: str, engines: Engines, timeout: float = 120) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{engines.logs()}")
        await asyncio.sleep(0.05)


async def test_kill_an_engine_mid_batch(tmp_path: Path, tiny_model_dir: Path, queue_url: str) -> None:
    settings_env = {
        "IMAGINE_DATA_DIR": str(tmp_path / "data"),
        "IMAGINE_MODEL": str(tiny_model_dir),
        "IMAGINE_QUEUE_URL": queue_url,
        "IMAGINE_ENGINE_LEASE_SECONDS": "3",
        "IMAGINE_ENGINE_HEARTBEAT_SECONDS": "0.5",
        "IMAGINE_ENGINE_MAX_BATCH_IMAGES": "4",
        "IMAGINE_ENGINE_WARMUP": "false",
        "IMAGINE_BOT_PROGRESS_INTERVAL_SECONDS": "0.1",
    }
    settings = load_settings(None, settings_env)
    database = connect(settings.database_url)
    upgrade(database)
    store = JobStore(database)
    queue: JobQueue = open_queue(queue_url, local_path=settings.queue_path, lease_seconds=3)
    orchestrator = Orchestrator(
        settings=settings,
        store=store,
        queue=queue,
        finisher=Finisher(ImageStore(settings.images_dir)),
        gate=PromptGate.from_package(),
        poll_seconds=0.05,
    )
    reporter = CountingReporter()
    engines = Engines(imagine_env(settings_env), tmp_path)
    try:
        job_ids = []
        for i in range(JOBS):
            request = ImagineRequest(
                frontend="test",
                user_id=f"user-{i}",
                prompt=f"a slow picture {i}",
                seed=i,
                steps=20,
                width=96,
                height=96,
            )
            job_id = await orchestrator.submit(request, reporter)
            assert isinstance(job_id, str)
            job_ids.append(job_id)

        first = engines.start("engine-a")
        if queue_url != "local":
            engines.start("engine-b")

        def a_batch_is_running() -> bool:
            for job_id in job_ids:
                record = store.get(job_id)
                if record is not None and record.status is JobStatus.RUNNING:
                    events = queue.events(job_id)
                    return any(e.kind is EventKind.PROGRESS for _, e in events)
            return False

        await wait_until(a_batch_is_running, "a batch to be under way", engines)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        if queue_url == "local":
            engines.start("engine-a")  # the supervisor's restart: it hands back what it held at once

        def all_posted() -> bool:
            return all((r := store.get(j)) is not None and r.status is JobStatus.POSTED for j in job_ids)

        await wait_until(all_posted, "every job to be posted", engines, timeout=180)
        await asyncio.sleep(1)  # room for a duplicate to show up
        assert reporter.delivered == dict.fromkeys(job_ids, 1)
        for job_id in job_ids:
            record = store.get(job_id)
            assert record is not None
            assert len(record.images) == 1
    finally:
        engines.stop_all()
        await orchestrator.aclose()
        queue.close()
        database.dispose()
