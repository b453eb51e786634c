"""The orchestrator with a real database and queue, and a recording reporter in place of a front end:
the harness of the orchestration tests."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.config import load_settings
from bot.db.migrate import connect, upgrade
from bot.db.models import JobStatus
from bot.db.store import JobRecord, JobStore
from bot.finishing import Finisher
from bot.images import ImageStore
from bot.orchestrator import Delivery, DeliveryError, Orchestrator, Refusal
from bot.requests import ImagineRequest
from engine.jobs import Event, EventKind, GeneratedImage
from engine.queue import LocalQueue, QueuePosition
from moderation.prompt_gate import PromptGate


@dataclass
class RecordingReporter:
    said: list[str] = field(default_factory=list)
    delivered: list[Delivery] = field(default_factory=list)
    already_posted: str | None = None
    failures: list[DeliveryError] = field(default_factory=list)

    async def refused(self, refusal: Refusal) -> None:
        self.said.append(f"refused:{refusal.kind}")

    async def queued(self, job: JobRecord, position: QueuePosition | None, eta_seconds: float | None) -> None:
        self.said.append(f"queued:{position.place if position else None}:{eta_seconds}")

    async def progress(self, job: JobRecord, step: int, total: int, preview: bytes | None) -> None:
        self.said.append(f"progress:{step}/{total}")

    async def still_waiting(self, job: JobRecord) -> None:
        self.said.append("waiting")

    async def deliver(self, delivery: Delivery) -> str | None:
        if self.failures:
            raise self.failures.pop(0)
        self.delivered.append(delivery)
        return f"message-{len(self.delivered)}"

    async def find_delivered(self, job: JobRecord) -> str | None:
        return self.already_posted

    async def withheld(self, job: JobRecord, *, held: int, blocked: int, category: str | None) -> None:
        self.said.append(f"withheld:{held}:{blocked}:{category}")

    async def failed(self, job: JobRecord, reason: str) -> None:
        self.said.append(f"failed:{reason}")

    async def reviewed(self, job: JobRecord, *, approved: bool) -> None:
        self.said.append(f"reviewed {approved}")

    async def cancelled(self, job: JobRecord) -> None:
        self.said.append("cancelled")


@dataclass
class Setup:
    orchestrator: Orchestrator
    store: JobStore
    queue: LocalQueue


async def orchestration(
    tmp_path: Path, database_url: str, environ: dict[str, str] | None = None, **options: Any
) -> AsyncIterator[Setup]:
    settings = load_settings(
        None,
        {
            "IMAGINE_DATA_DIR": str(tmp_path),
            "IMAGINE_DATABASE_URL": database_url,
            "IMAGINE_MODEL": "tiny",
            "IMAGINE_BOT_WATCHDOG_SECONDS": "0.3",
            "IMAGINE_BOT_PROGRESS_INTERVAL_SECONDS": "0.01",
            **(environ or {}),
        },
    )
    database = connect(settings.database_url)
    upgrade(database)
    queue = LocalQueue(settings.queue_path, poll_seconds=0.01)
    store = JobStore(database)
    orchestrator = Orchestrator(
        settings=settings,
        store=store,
        queue=queue,
        finisher=Finisher(ImageStore(settings.images_dir)),
        gate=PromptGate.from_package(),
        poll_seconds=0.01,
        delivery_retries=2,
        **options,
    )
    yield Setup(orchestrator, store, queue)
    await orchestrator.aclose()
    queue.close()
    database.dispose()


def request(prompt: str = "a fox", user: str = "u1") -> ImagineRequest:
    return ImagineRequest(frontend="test", user_id=user, prompt=prompt, count=1, seed=3)


async def accept(setup: Setup, reporter: RecordingReporter, prompt: str = "a fox") -> str:
    job_id = await setup.orchestrator.submit(request(prompt), reporter)
    assert isinstance(job_id, str), job_id
    return job_id


def finish_as_engine(queue: LocalQueue, job_id: str) -> None:
    (job,) = queue.claim("engine", models=["tiny"], max_images=1, timeout=1)
    assert job.id == job_id
    queue.publish(job_id, "engine", Event(EventKind.STARTED, worker="engine"))
    queue.publish(job_id, "engine", Event(EventKind.PROGRESS, step=1, total_steps=1))
    image = GeneratedImage(index=0, seed=3, width=8, height=8, png=b"png-bytes")
    queue.finish(job_id, "engine", Event(EventKind.DONE, images=(image,), seconds=0.1, worker="engine"))


async def wait_status(store: JobStore, job_id: str, status: JobStatus) -> JobRecord:
    for _ in range(3000):
        record = store.get(job_id)
        if record is not None and record.status is status:
            return record
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} never reached {status}: {store.get(job_id)}")
