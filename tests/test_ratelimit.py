"""The jobs rate budget: the sliding-window limiter alone, then over real HTTP.

Stitch allows 30 requests per 10 minutes per account across extractions, logs and
loads. The limiter must keep every window of ``period`` seconds at or under ``limit``
requests, shared by every client of the account in the process.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from prefect_stitch import _ratelimit as ratelimit
from prefect_stitch._ratelimit import SlidingWindowLimiter, limiter_for
from prefect_stitch.simulator import Outcome, StitchSimulator
from tests.conftest import make_credentials


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test gets its own process-wide registry.

    A limiter is keyed by (host, client id) and only ever tightens: a port reused by a
    later simulator must not inherit this module's small budgets.
    """
    monkeypatch.setattr(ratelimit, "_registry", {})
    yield


def max_in_window(times: list[float], period: float) -> int:
    """The most timestamps inside any half-open window [t, t + period)."""
    ordered = sorted(times)
    best, lo = 0, 0
    for hi, moment in enumerate(ordered):
        while moment - ordered[lo] >= period:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


class FakeClock:
    """A monotonic clock that only moves when told to (or when the limiter sleeps)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A fake clock; the limiter's sleeps advance it instead of waiting."""
    fake = FakeClock()

    async def fake_sleep(seconds: float) -> None:
        fake.now += seconds
        await asyncio.sleep(0)

    monkeypatch.setattr(ratelimit, "asyncio", SimpleNamespace(sleep=fake_sleep))
    return fake


# -- SlidingWindowLimiter, unit ------------------------------------------------------------


@pytest.mark.parametrize(("limit", "period"), [(0, 1.0), (-1, 1.0), (1, 0.0), (1, -5.0)])
def test_limiter_rejects_a_meaningless_budget(limit: int, period: float) -> None:
    with pytest.raises(ValueError):
        SlidingWindowLimiter(limit, period)


async def test_sequential_requests_are_spaced_by_whole_windows(clock: FakeClock) -> None:
    limiter = SlidingWindowLimiter(3, 10.0, clock=clock)
    entered: list[float] = []
    for _ in range(7):
        async with limiter.slot():
            entered.append(clock.now)

    assert entered == [0.0, 0.0, 0.0, 10.0, 10.0, 10.0, 20.0]
    assert max_in_window(entered, 10.0) == 3
    assert limiter.requests == 7
    assert limiter.waited_seconds == pytest.approx(20.0)


async def test_a_slot_is_stamped_when_its_response_arrives(clock: FakeClock) -> None:
    limiter = SlidingWindowLimiter(1, 10.0, clock=clock)
    entered: list[float] = []
    async with limiter.slot():
        entered.append(clock.now)
        clock.now += 4.0  # the request takes 4 s; Stitch saw it no later than that
    async with limiter.slot():
        entered.append(clock.now)

    assert entered == [0.0, 14.0]


async def test_an_in_flight_request_holds_its_slot(clock: FakeClock) -> None:
    limiter = SlidingWindowLimiter(1, 10.0, clock=clock)
    release = asyncio.Event()
    entered: dict[str, float] = {}

    async def first() -> None:
        async with limiter.slot():
            entered["first"] = clock.now
            await release.wait()

    async def second() -> None:
        async with limiter.slot():
            entered["second"] = clock.now

    first_task = asyncio.create_task(first())
    await asyncio.sleep(0)
    second_task = asyncio.create_task(second())
    for _ in range(50):  # the second request polls (advancing the fake clock) meanwhile
        await asyncio.sleep(0)
    assert entered == {"first": 0.0}

    released_at = clock.now
    release.set()
    await asyncio.gather(first_task, second_task)
    assert entered["second"] - released_at == pytest.approx(10.0, abs=0.051)


def test_delay_for(clock: FakeClock) -> None:
    limiter = SlidingWindowLimiter(2, 10.0, clock=clock)
    assert limiter.delay_for(1) == 0.0
    assert limiter.delay_for(2) == 0.0

    async def one_request() -> None:
        async with limiter.slot():
            pass

    asyncio.run(one_request())  # stamped at t=0
    clock.now = 3.0
    assert limiter.delay_for(1) == 0.0
    assert limiter.delay_for(2) == pytest.approx(7.0)
    clock.now = 10.0
    assert limiter.delay_for(2) == 0.0


def test_tighten_only_ever_makes_the_budget_stricter() -> None:
    limiter = SlidingWindowLimiter(30, 600.0)
    limiter.tighten(10, 600.0)
    assert (limiter.limit, limiter.period) == (10, 600.0)
    limiter.tighten(50, 60.0)  # looser on both counts: ignored
    assert (limiter.limit, limiter.period) == (10, 600.0)
    limiter.tighten(20, 1200.0)
    assert (limiter.limit, limiter.period) == (10, 1200.0)


def test_one_limiter_across_threads_and_event_loops() -> None:
    limiter = SlidingWindowLimiter(3, 0.3)
    entered: list[float] = []
    lock = threading.Lock()

    async def worker() -> None:
        for _ in range(4):
            async with limiter.slot():
                with lock:
                    entered.append(time.monotonic())

    threads = [threading.Thread(target=asyncio.run, args=(worker(),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert len(entered) == 8
    assert limiter.requests == 8
    assert max_in_window(entered, 0.3) <= 3


def test_limiter_for_is_one_object_per_account() -> None:
    first = limiter_for("https://api.stitchdata.com", 116078, 30, 600.0)
    assert limiter_for("https://api.stitchdata.com", 116078, 30, 600.0) is first
    assert limiter_for("https://api.stitchdata.com", 42, 30, 600.0) is not first
    assert limiter_for("https://api.eu-central-1.stitchdata.com", 116078, 30, 600.0) is not first
    stricter = limiter_for("https://api.stitchdata.com", 116078, 10, 600.0)
    assert stricter is first
    assert first.limit == 10


# -- the budget over HTTP ------------------------------------------------------------------


async def test_two_clients_of_one_account_share_one_limiter(sim: StitchSimulator) -> None:
    sim.add_source(1)
    one = make_credentials(sim)
    other = make_credentials(sim)  # a separate block object for the same account
    discovered = make_credentials(sim, client_id=None)
    async with (
        one.get_client() as a,
        one.get_client() as b,
        other.get_client() as c,
        discovered.get_client() as d,
    ):
        limiters = [await client.jobs_limiter() for client in (a, b, c, d)]

    assert all(limiter is limiters[0] for limiter in limiters)
    assert limiters[0] is limiter_for(sim.base_url, sim.client_id, 1000, 1.0)


async def test_a_burst_from_several_clients_stays_within_the_budget(
    sim: StitchSimulator,
) -> None:
    limit, period = 5, 1.0
    sim.jobs_rate_limit = limit
    sim.jobs_rate_period_seconds = period
    sim.enforce_rate_limit = True  # a request over the budget would get a 429
    sim.add_sources(range(1, 4))
    for source_id in range(1, 4):
        sim.seed_completed(source_id)
    credentials = [
        make_credentials(sim, jobs_rate_limit=limit, jobs_rate_period_seconds=period)
        for _ in range(3)
    ]
    clients = [c.get_client() for c in credentials]
    for client in clients:
        await client.__aenter__()
    try:
        calls = [clients[i % 3].list_extractions() for i in range(15)]
        started = time.monotonic()
        results = await asyncio.gather(*calls)
        spread = time.monotonic() - started

        # (a) every call succeeded, with the full (one-page) listing
        assert [len(records) for records in results] == [3] * 15
        # (b) Stitch's own sliding-window count never exceeded the budget
        assert sim.jobs_requests_in_window(period) <= limit
        assert sim.rate_limit_violations == 0
        assert all(r.status == 200 for r in sim.requests_for("extractions"))
        assert len(sim.requests_for("extractions")) == 15
        # (c) 15 requests at 5 per second need at least two more windows
        assert spread >= 2 * period - 0.05

        # (d) non-jobs requests do not wait for, nor spend, the jobs budget
        limiter = await clients[0].jobs_limiter()
        assert limiter.requests == 15
        budget_free_in = limiter.delay_for(1)
        assert budget_free_in > 0.3
        sources_started = time.monotonic()
        for client in clients:
            assert (await client.get_source(1)).id == 1
        assert time.monotonic() - sources_started < budget_free_in
        assert limiter.requests == 15
        assert len(sim.requests_for("source")) == 3
    finally:
        for client in clients:
            await client.aclose()


async def test_logs_and_loads_requests_spend_the_same_budget(sim: StitchSimulator) -> None:
    credentials = make_credentials(sim, jobs_rate_limit=3, jobs_rate_period_seconds=60.0)
    sim.add_source(1, outcomes=[Outcome.success()])
    job_name = sim.seed_completed(1)
    async with credentials.get_client() as client:
        limiter = await client.jobs_limiter()
        assert limiter.requests == 0
        await client.list_extractions()
        assert limiter.requests == 1
        log = await client.get_extraction_logs(job_name)
        assert limiter.requests == 2  # the logs request, not the pre-signed download
        await client.list_loads()
        assert limiter.requests == 3

        assert "Exit status is:" in log
        assert limiter.delay_for(1) > 50  # the budget is spent for about a minute
        assert (await client.get_source(1)).id == 1  # non-jobs calls still go through
    assert len(sim.requests_for("log_download")) == 1
    assert sim.jobs_requests_in_window(60.0) == 3


async def test_a_logs_request_waits_for_the_shared_window(sim: StitchSimulator) -> None:
    credentials = make_credentials(sim, jobs_rate_limit=2, jobs_rate_period_seconds=0.5)
    sim.add_source(1)
    job_name = sim.seed_completed(1)
    async with credentials.get_client() as client:
        await client.list_extractions()
        await client.list_loads()
        limiter = await client.jobs_limiter()
        assert limiter.waited_seconds < 0.1  # both fitted in the window
        await client.get_extraction_logs(job_name)
        assert limiter.waited_seconds > 0.3  # the logs request waited for a slot
    assert sim.jobs_requests_in_window(0.5) <= 2
