"""A fake Discord plus `imagine` processes talking to it: the harness of the end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

from bot_process import ImagineProcess, imagine_env
from fake_discord import FakeDiscord, FakeInteraction, FakeMessage

from bot.db.migrate import connect
from bot.db.store import JobRecord, JobStore


class Deployment:
    """A fake Discord and the settings for `imagine` processes that talk to it."""

    def __init__(self, fake: FakeDiscord, tmp_path: Path, model: Path) -> None:
        self.fake = fake
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "data"
        self.database_url = f"sqlite:///{self.data_dir / 'imagine.sqlite3'}"
        self.settings = {
            "IMAGINE_DISCORD_TOKEN": fake.token,
            "IMAGINE_DISCORD_API_URL": fake.api_url,
            "IMAGINE_DISCORD_GATEWAY_URL": fake.gateway_url,
            "IMAGINE_MODEL": str(model),
            "IMAGINE_DATA_DIR": str(self.data_dir),
            "IMAGINE_DATABASE_URL": self.database_url,
            "IMAGINE_BOT_PROGRESS_INTERVAL_SECONDS": "0.2",
            "IMAGINE_ENGINE_HEARTBEAT_SECONDS": "0.5",
        }
        self.processes: list[ImagineProcess] = []

    async def start(self, command: str, **overrides: str) -> ImagineProcess:
        env = imagine_env({**self.settings, **overrides})
        process = ImagineProcess(command, env, self.tmp_path / f"{command}.log")
        self.processes.append(process)
        return await process.start()

    def logs(self) -> str:
        return "\n".join(f"--- imagine {p.command} ---\n{p.log()}" for p in self.processes)

    def store(self) -> JobStore:
        return JobStore(connect(self.database_url))

    def only_job(self) -> JobRecord:
        store = self.store()
        (record,) = [r for r in all_jobs(store)]
        return record

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 120) -> None:  # noqa: ASYNC109
        def done() -> bool:
            crashed = [p for p in self.processes if p.exited_unexpectedly]
            if crashed:
                raise AssertionError(f"imagine {crashed[0].command} exited\n{self.logs()}")
            return predicate()

        try:
            await self.fake.wait_for(done, timeout)
        except TimeoutError as error:
            raise AssertionError(f"{error}\n{self.logs()}") from None


def all_jobs(store: JobStore) -> list[JobRecord]:
    return store.all_jobs()


async def deployment_fixture(tmp_path: Path, tiny_model_dir: Path) -> AsyncIterator[Deployment]:
    async with FakeDiscord() as fake:
        deployment = Deployment(fake, tmp_path, tiny_model_dir)
        try:
            yield deployment
        finally:
            for process in deployment.processes:
                await process.stop()
        assert not fake.errors, fake.errors


def image_messages(interaction: FakeInteraction) -> list[FakeMessage]:
    return [m for m in interaction.followups if m.attachments and not m.deleted]


def content_of(interaction: FakeInteraction) -> str:
    original = interaction.original
    return (original.content or "") if original is not None else ""
