"""Quotas: the arithmetic, the configuration, and admission that holds under concurrency on both databases."""

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from bot.db.migrate import connect, upgrade
from bot.db.store import JobStore, NewJob, OverQuota
from moderation.quota import QuotaError, QuotaPolicy, Tier, Usage, admit, tokens_now

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def usage(tokens: float | None = None, *, minutes_ago: float = 0, active: int = 0, gpu: float = 0) -> Usage:
    return Usage(tokens, NOW - timedelta(minutes=minutes_ago) if tokens is not None else None, active, gpu)


def test_a_new_member_has_a_full_bucket_that_refills_over_time() -> None:
    tier = Tier(burst=4, refill_per_hour=60)
    assert tokens_now(tier, usage(), NOW) == 4
    assert tokens_now(tier, usage(0, minutes_ago=2), NOW) == pytest.approx(2)
    assert tokens_now(tier, usage(0, minutes_ago=600), NOW) == 4  # never above the burst


def test_admission_checks_each_limit_and_says_when_to_come_back() -> None:
    tier = Tier(burst=4, refill_per_hour=60, max_concurrent=2, daily_gpu_seconds=100)
    allowed = admit(tier, usage(), 3, NOW)
    assert allowed.allowed
    assert allowed.tokens == 1
    rate = admit(tier, usage(1), 3, NOW)
    assert (rate.allowed, rate.reason) == (False, "rate")
    assert rate.retry_after_seconds == pytest.approx(120)  # two more images at one a minute
    assert admit(tier, usage(active=2), 1, NOW).reason == "concurrent"
    budget = admit(tier, usage(gpu=100), 1, NOW)
    assert budget.reason == "gpu_budget"
    assert budget.retry_after_seconds == pytest.approx(12 * 3600)  # at midnight UTC
    assert admit(Tier(), Usage(None, None, 0, 0, guild_images_today=9), 2, NOW, guild_daily_images=10).reason == (
        "guild_cap"
    )
    # A count larger than the whole bucket still goes through when the bucket is full.
    assert admit(Tier(burst=2), usage(), 4, NOW).allowed


def test_tiers_from_roles_and_configuration_errors() -> None:
    policy = QuotaPolicy.from_dict(
        {
            "burst": 5,
            "refill_per_hour": 10,
            "daily_gpu_seconds": 600,
            "guild_daily_images": 500,
            "tiers": {
                "patron": {"role_ids": ["11"], "burst": 20, "weight": 2},
                "staff": {"role_ids": ["22", "33"], "weight": 3, "daily_gpu_seconds": 3600},
            },
        },
        max_concurrent=2,
    )
    assert policy.default == Tier("default", 5, 10, 2, 600, 1, ())
    assert policy.tier_for(["99"]) is policy.default
    assert policy.tier_for(["11"]).burst == 20
    assert policy.tier_for(["11"]).refill_per_hour == 10  # unset keys come from [quota]
    assert policy.tier_for(["11", "33"]).name == "staff"  # the most generous tier held
    assert policy.guild_daily_images == 500
    cases: list[tuple[dict[str, Any], str]] = [
        ({"bursts": 3}, "unknown setting"),
        ({"burst": 0}, "burst must be a number of at least 1"),
        ({"tiers": {"x": {"burst": 3}}}, "role_ids must be a non-empty list"),
        ({"tiers": {"x": {"role_ids": ["1"], "weight": 1.5}}}, "weight must be a whole number"),
        ({"guild_daily_images": -1}, "guild_daily_images"),
    ]
    for bad, says in cases:
        with pytest.raises(QuotaError, match=says):
            QuotaPolicy.from_dict(bad, max_concurrent=2)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = connect(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def new_job(job_id: str, user: str = "u1", guild: str = "g1") -> NewJob:
    return NewJob(job_id, "discord", user, guild, "c1", "a kite", "", {"count": 1}, 1, "tiny", {})


def race(store: JobStore, requests: int, tier: Tier, quota: QuotaPolicy, user: str = "u1") -> tuple[int, int]:
    """`requests` accepts at once (released together by a barrier); returns (accepted, refused)."""
    barrier = threading.Barrier(requests)

    def one(i: int) -> bool:
        barrier.wait()
        try:
            store.accept(new_job(f"{user}-{i:03d}", user), tier=tier, quota=quota, images=1)
        except OverQuota:
            return False
        return True

    with ThreadPoolExecutor(max_workers=requests) as pool:
        results = list(pool.map(one, range(requests)))
    return results.count(True), results.count(False)


def test_simultaneous_requests_accept_exactly_the_bucket(engine: Engine) -> None:
    store = JobStore(engine)
    tier = Tier(burst=7, refill_per_hour=0, max_concurrent=1000)
    assert race(store, 100, tier, QuotaPolicy(default=tier)) == (7, 93)
    jobs = store.all_jobs()
    assert len(jobs) == 100  # the refused ones are recorded too
    assert sum(1 for j in jobs if j.status.value == "queued") == 7


def test_simultaneous_requests_accept_exactly_the_jobs_at_a_time(engine: Engine) -> None:
    store = JobStore(engine)
    tier = Tier(burst=1000, max_concurrent=5)
    assert race(store, 100, tier, QuotaPolicy(default=tier)) == (5, 95)


def test_a_server_cap_holds_across_members(engine: Engine) -> None:
    store = JobStore(engine)
    tier = Tier(burst=10, max_concurrent=10)
    quota = QuotaPolicy(default=tier, guild_daily_images=4)
    outcomes = []
    for user in ("a", "b", "c"):
        for i in range(2):
            try:
                store.accept(new_job(f"{user}{i}", user), tier=tier, quota=quota, images=1)
                outcomes.append("accepted")
            except OverQuota as over:
                outcomes.append(over.admission.reason or "")
    assert outcomes == ["accepted"] * 4 + ["guild_cap"] * 2


def test_moderators_bypass_and_gpu_seconds_count_for_the_day(engine: Engine) -> None:
    store = JobStore(engine)
    tier = Tier(burst=1, refill_per_hour=0, max_concurrent=1, daily_gpu_seconds=10)
    quota = QuotaPolicy(default=tier)
    store.accept(new_job("m1"), tier=tier, quota=quota, images=1)
    store.accept(new_job("m2"), tier=tier, quota=quota, images=1, bypass=True)  # over every limit, but a moderator
    store.add_gpu_seconds("discord", "u2", 12.5)
    with pytest.raises(OverQuota) as over:
        store.accept(new_job("x1", "u2"), tier=tier, quota=quota, images=1)
    assert over.value.admission.reason == "gpu_budget"
    state = store.quota_state("discord", "u2", tier)
    assert state.gpu_seconds_today == 12.5
    assert state.tokens == 1
