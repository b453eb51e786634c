"""One base error for the engine package; each carries what a user needs to read."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error raised by the engine package."""


class InvalidRequest(EngineError):
    """A generation request outside what the model allows. `field` names the offending option."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class ModelLoadError(EngineError):
    """The model could not be loaded; the message says which model and why."""


class QueueError(EngineError):
    """The job queue could not be reached or is in a state it cannot work with."""


class JobCancelled(EngineError):
    """Raised inside generation when the job was cancelled between steps."""
