"""Shared fixtures. Tests never reach the network: the Hugging Face libraries are put in offline mode here."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from deployment import Deployment, deployment_fixture

os.environ["HF_HUB_OFFLINE"] = "1"  # set before anything imports huggingface_hub, which reads it once


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Stable Diffusion pipeline on disk (64 px native, 4 steps, guidance 0), built once."""
    # Imported here, not at the top, so that test runs which never ask for a model don't import torch.
    from engine.tiny import create_tiny_pipeline

    return create_tiny_pipeline(tmp_path_factory.mktemp("tiny-model") / "tiny-sd")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: SQLite always, PostgreSQL when IMAGINE_TEST_DATABASE_URL is set."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'imagine.sqlite3'}"
        return
    admin_url = os.environ.get("IMAGINE_TEST_DATABASE_URL")
    if not admin_url:
        pytest.skip("IMAGINE_TEST_DATABASE_URL is not set, so the PostgreSQL variant does not run")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from bot.db.migrate import normalise_url

    name = f"imagine_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalise_url(admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(normalise_url(admin_url)).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
async def deployment(tmp_path: Path, tiny_model_dir: Path) -> AsyncIterator[Deployment]:
    """A fake Discord, and settings for `imagine` processes that talk to it (stopped at the end)."""
    async for running in deployment_fixture(tmp_path, tiny_model_dir):
        yield running
