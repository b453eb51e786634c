"""What can go wrong before and during training, in words a user can act on."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import EngineError


class TrainingError(EngineError):
    """Base of the training errors."""


class TrainingUsageError(TrainingError):
    """An option is out of range or options contradict each other; nothing was loaded or trained."""


@dataclass(frozen=True)
class DatasetProblem:
    """One thing wrong with the data: the file (or folder) and what to do about it."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class DatasetError(TrainingError):
    """Every problem found in the dataset, reported together before training starts."""

    def __init__(self, problems: list[DatasetProblem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"the dataset has {len(problems)} problem(s); nothing was trained:\n{lines}")
