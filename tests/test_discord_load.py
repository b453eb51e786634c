"""Under load: 200 `/imagine` from 50 members within a few seconds, through the fake Discord, to the real
`imagine run` with the tiny model. Every interaction is acknowledged inside Discord's three seconds (the fake
refuses a later answer, as Discord does), every job is posted exactly once, and the bot's event-loop lag is
measured (printed here; `bench/discord_load.py` reports it with the acknowledgement latencies)."""

import statistics

import pytest
from deployment import Deployment, all_jobs
from load import imagine_burst, loop_lag, percentile, posted_messages

from bot.db.models import JobStatus

pytestmark = pytest.mark.slow

REQUESTS, USERS = 200, 50


async def test_a_burst_of_imagine_is_acknowledged_in_time_and_posted_once(deployment: Deployment) -> None:
    fake = deployment.fake
    run = await deployment.start(
        "run",
        IMAGINE_BOT_MAX_JOBS_PER_USER=str(REQUESTS // USERS),
        IMAGINE_BOT_PROGRESS_INTERVAL_SECONDS="1.0",
        IMAGINE_ENGINE_MAX_BATCH_IMAGES="16",
    )
    await deployment.wait_for(fake.identified.is_set)
    await fake.wait_commands()
    # Let the engine load its model first, so the burst measures the bot, not a cold start.
    warm = await fake.send_slash_command("imagine", {"prompt": "warm-up", "seed": 1}, user_id=1)
    await deployment.wait_for(lambda: posted_messages(warm) == 1, timeout=120)

    burst = await imagine_burst(fake, requests=REQUESTS, users=USERS, spread_seconds=3.0)
    await deployment.wait_for(lambda: not burst.unacknowledged(), timeout=30)
    acks = burst.ack_latencies()
    assert max(acks) < 3.0  # Discord's deadline; the fake would have refused a later answer anyway
    await deployment.wait_for(lambda: all(posted_messages(i) >= 1 for i in burst.interactions), timeout=600)
    store = deployment.store()
    await deployment.wait_for(lambda: all(r.status is JobStatus.POSTED for r in all_jobs(store)), timeout=60)
    assert [posted_messages(i) for i in burst.interactions] == [1] * REQUESTS
    assert len(all_jobs(store)) == REQUESTS + 1

    await run.stop()
    lag = loop_lag(run.log())
    assert lag is not None, run.log()[-2000:]
    print(
        f"acks p50 {statistics.median(acks) * 1000:.0f} ms, p99 {percentile(acks, 0.99) * 1000:.0f} ms; "
        f"loop lag max {lag[0]:.0f} ms, p99 {lag[1]:.0f} ms over {lag[2]} samples"
    )
