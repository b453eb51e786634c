"""Logging set-up. The formatter masks secrets anywhere in a line, tracebacks included."""

from __future__ import annotations

import logging
import sys

from bot.config import Settings


class RedactingFormatter(logging.Formatter):
    def __init__(self, fmt: str, secrets: list[str]) -> None:
        super().__init__(fmt)
        self._secrets = [s for s in secrets if len(s) >= 6]

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for secret in self._secrets:
            line = line.replace(secret, "**********")
        return line


def configure(settings: Settings, process: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    token = settings.discord.token
    handler.setFormatter(
        RedactingFormatter(
            f"%(asctime)s %(levelname)-7s {process} %(name)s: %(message)s", [token.reveal()] if token else []
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # Library chatter at INFO drowns out our own lines.
    for noisy in ("discord", "httpx", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
