"""What the orchestrator writes to the audit log over a job's life, failures included."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from orchestration import RecordingReporter, Setup, accept, finish_as_engine, orchestration, request, wait_status

from bot.db.models import JobStatus
from bot.orchestrator import DeliveryError, Refusal
from moderation.audit import AuditLog
from moderation.policy import Policy
from moderation.prompt_gate import Decision, PromptGate


@pytest.fixture
async def setup(tmp_path: Path, database_url: str) -> AsyncIterator[Setup]:
    from bot.db.migrate import connect

    async for running in orchestration(tmp_path, database_url, audit=AuditLog(connect(database_url))):
        yield running


def audit(setup: Setup) -> AuditLog:
    assert isinstance(setup.orchestrator.audit, AuditLog)
    return setup.orchestrator.audit


class FailingGate(PromptGate):
    """A gate whose check fails: closed, as the real one does (an "error" decision), or by raising."""

    def __init__(self, *, raises: bool) -> None:
        super().__init__({})
        self.raises = raises

    def check(self, prompt: str, negative: str = "", *, policy: Policy | None = None) -> Decision:
        if self.raises:
            raise RuntimeError("term lists are missing")
        return Decision(False, None, "error", 1.0, "OSError: classifier file is unreadable")


async def test_a_job_is_recorded_from_request_to_post(setup: Setup) -> None:
    job_id = await accept(setup, RecordingReporter())
    finish_as_engine(setup.queue, job_id)
    await wait_status(setup.store, job_id, JobStatus.POSTED)
    await setup.orchestrator.wait_idle()  # the post is recorded just after the status is written
    events = [entry.event for entry in audit(setup).query(job_id=job_id)]
    assert events[:3] == ["request.received", "gate.prompt", "job.queued"]
    assert events.index("job.queued") < events.index("job.started") < events.index("job.finished")
    assert events[-1] == "message.posted"
    (started,) = audit(setup).query(event="job.started")
    assert (started.user_id, started.data) == ("u1", {"worker": "engine"})


async def test_a_job_that_cannot_be_delivered_is_recorded_as_failed(setup: Setup) -> None:
    reporter = RecordingReporter(failures=[DeliveryError("Discord refused the message (403)", permanent=True)])
    job_id = await accept(setup, reporter)
    finish_as_engine(setup.queue, job_id)
    await wait_status(setup.store, job_id, JobStatus.FAILED)
    await setup.orchestrator.wait_idle()
    (failed,) = audit(setup).query(event="job.failed")
    assert failed.job_id == job_id
    assert failed.data == {
        "reason": "delivery failed: Discord refused the message (403)",
        "stage": "delivery",
        "attempts": 1,
    }
    assert audit(setup).verify().ok


@pytest.mark.parametrize("raises", [False, True], ids=["error decision", "exception"])
async def test_a_prompt_check_that_fails_is_recorded_and_not_appealable(setup: Setup, raises: bool) -> None:
    setup.orchestrator.gate = FailingGate(raises=raises)
    reporter = RecordingReporter()
    refusal = await setup.orchestrator.submit(request("a fox"), reporter)
    assert isinstance(refusal, Refusal)
    assert refusal.kind == "error"
    assert refusal.appealable_job is None  # no Appeal button: there is nothing a moderator could decide
    assert "try again later" in refusal.reason
    assert reporter.said == ["refused:error"]
    error = "RuntimeError: term lists are missing" if raises else "OSError: classifier file is unreadable"
    (entry,) = audit(setup).query(event="gate.prompt")
    assert entry.category is None
    assert entry.data["layer"] == "error"
    assert entry.data["decision"] == "refused"
    assert entry.data["error"] == error
    (job,) = setup.store.all_jobs()
    assert job.status is JobStatus.REJECTED
    assert job.outcome == f"error: {error}"
    assert setup.queue.claim("engine", models=["tiny"], max_images=1, timeout=0) == []
