"""Fair turns between owners, shared by the transports (the Redis one runs the same rule in Lua).

The rule is start-time fair queueing, one clock per model:
- Each owner has a virtual time per model, and each model a clock. An owner's start is
  max(its virtual time, the clock); an owner with no record starts at the clock, so nobody banks credit by
  waiting or by being new.
- The first job of a batch belongs to the owner with the least start among owners with claimable work for
  that model; ties go to the owner whose oldest claimable job is oldest. That owner's oldest job is taken.
- The clock then moves up to the chosen owner's start (it never goes back).
- The rest of the batch (same batch key, up to the image limit) is filled the same way: again and again the
  owner with the least start is chosen, its oldest compatible job that still fits is taken, and its start
  moves up by that job's images / weight.
- Each owner whose jobs were taken ends at start + images taken / weight.
- Owners at or below the clock are forgotten: they would start at the clock anyway.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

DIGITS = 9  # virtual times are compared rounded, so that 1/3 + 1/3 + 1/3 ties with 1


def weight_of(weight: object) -> int:
    """A job's tier weight as the scheduler uses it: an integer of at least 1."""
    try:
        return max(1, int(float(str(weight))))
    except (ValueError, OverflowError):
        return 1


@dataclass(frozen=True)
class Candidate(Generic[T]):
    """A claimable job: `order` sorts an owner's jobs (and breaks ties between owners), oldest first."""

    owner: str
    weight: int
    images: int
    order: tuple[float, ...]
    item: T


class Turns:
    """The fairness state of one model while a batch is chosen."""

    def __init__(self, clock: float, vtimes: Mapping[str, float]) -> None:
        self.clock = clock
        self.vtimes = dict(vtimes)
        self.charged: set[str] = set()

    def start(self, owner: str) -> float:
        return max(self.vtimes.get(owner, self.clock), self.clock)

    def rank(self, candidate: Candidate[T]) -> tuple[float, tuple[float, ...]]:
        return round(self.start(candidate.owner), DIGITS), candidate.order

    def pick(self, candidates: Iterable[Candidate[T]]) -> Candidate[T] | None:
        """The head of the owner whose turn it is (give one candidate per owner: its oldest)."""
        return min(candidates, key=self.rank, default=None)

    def advance_clock(self, owner: str) -> None:
        self.clock = max(self.clock, self.start(owner))

    def charge(self, candidate: Candidate[T]) -> None:
        self.vtimes[candidate.owner] = self.start(candidate.owner) + candidate.images / candidate.weight
        self.charged.add(candidate.owner)

    def fill(
        self,
        compatible: Iterable[Candidate[T]],
        images: int,
        max_images: int,
        take: Callable[[Candidate[T]], bool],
    ) -> int:
        """Take compatible jobs owner by owner, fairly, while they fit; `take` says whether a job was taken.
        Returns the images in the batch."""
        queues: dict[str, deque[Candidate[T]]] = {}
        for candidate in sorted(compatible, key=lambda c: c.order):
            queues.setdefault(candidate.owner, deque()).append(candidate)
        while images < max_images:
            heads = []
            for queue in queues.values():
                while queue and images + queue[0].images > max_images:
                    queue.popleft()  # too large now, and the batch only grows
                if queue:
                    heads.append(queue[0])
            chosen = self.pick(heads)
            if chosen is None:
                break
            queues[chosen.owner].popleft()
            if take(chosen):
                self.charge(chosen)
                images += chosen.images
        return images


def jobs_ahead(own_ahead: int, own_weight: int, others: Iterable[tuple[int, bool, list[int]]]) -> tuple[int, int]:
    """Estimated (jobs, images) that run before a waiting job whose owner has `own_ahead` jobs before it.

    `others` holds, per other owner with waiting jobs: its weight, whether its oldest waiting job is older than
    this one, and the images of its waiting jobs, oldest first. While this owner runs its `own_ahead` jobs,
    another of weight w runs about own_ahead * w / own_weight (rounded up), plus one when its oldest job is
    older (it wins the tie), never more than it has waiting. Virtual times already earned are left out.
    """
    jobs = images = 0
    for weight, older, waiting in others:
        turns = math.ceil(own_ahead * weight / own_weight) + (1 if older else 0)
        taken = waiting[: max(0, turns)]
        jobs += len(taken)
        images += sum(taken)
    return jobs, images
