"""One poll per account across every process, and the watcher's exactly-once events.

End to end: flows run in separate processes against the session's Prefect API (the test
harness) and one simulator; the simulator counts the jobs requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
from prefect.settings import PREFECT_API_URL

from prefect_stitch._poll.poller import Snapshot
from prefect_stitch._ratelimit import SlidingWindowLimiter
from prefect_stitch.models import Extraction
from prefect_stitch.simulator import Outcome, StitchSimulator
from prefect_stitch.watcher import WatchCursor, event_id, stitch_watch_flow
from tests.conftest import REALISTIC_BUDGET, make_credentials
from tests.helpers import until

CHILD = """
import json, sys, time
from prefect_stitch import StitchCredentials, stitch_sync_flow
source_id, base_url = int(sys.argv[1]), sys.argv[2]
credentials = StitchCredentials(access_token="sim-token", client_id=116078, base_url=base_url,
                                jobs_rate_limit={limit}, jobs_rate_period_seconds={period})
print("STARTED", flush=True)
result = stitch_sync_flow(source_id=source_id, credentials=credentials,
                          poll_interval_seconds={poll}, loads="ignore", max_wait_seconds=300)
print("RESULT " + json.dumps([result.status, result.job_name]), flush=True)
"""
POLL = 0.5


@pytest.fixture
def child(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``stitch_sync_flow`` for one source in a process of its own."""
    script = tmp_path / "sync_child.py"
    script.write_text(
        CHILD.format(
            poll=POLL,
            **{
                "limit": REALISTIC_BUDGET["jobs_rate_limit"],
                "period": REALISTIC_BUDGET["jobs_rate_period_seconds"],
            },
        )
    )
    started: list[subprocess.Popen[str]] = []

    def start(source_id: int, sim: StitchSimulator, shared: bool = True) -> subprocess.Popen[str]:
        env = {
            **os.environ,
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "PREFECT_STITCH_SHARED_POLLING": "1" if shared else "0",
        }
        process = subprocess.Popen(
            [sys.executable, str(script), str(source_id), sim.base_url],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def result_of(process: subprocess.Popen[str], timeout: float = 240) -> list[str]:
    output, _ = process.communicate(timeout=timeout)
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert lines, output[-3000:]
    return list(json.loads(lines[-1].removeprefix("RESULT ")))


OVERLAP_SECONDS = 6.0
"""How long the three processes wait together: the window where their requests are counted."""


def listings_while_all_wait(
    sims: dict[bool, StitchSimulator], child: Callable[..., subprocess.Popen[str]]
) -> dict[bool, tuple[list[list[str]], float]]:
    """On each simulator, run three processes whose jobs end only once all three wait.

    Both groups (sharing on, sharing off) run at the same time, each against its own
    simulator, so that neither waits for the other's processes to start.

    Returns, for each group, its processes' results and the listing requests per second
    its simulator received while all its processes waited.
    """
    processes = {
        shared: [child(source_id, sim, shared) for source_id in (1, 2, 3)]
        for shared, sim in sims.items()
    }

    async def all_started() -> bool:
        return all(sim.jobs_started(i) for sim in sims.values() for i in (1, 2, 3))

    asyncio.run(until(all_started, 180, "the six processes' jobs"))
    time.sleep(2.0)  # every process is past its trigger and polls (or follows)
    window_start = time.monotonic()
    time.sleep(OVERLAP_SECONDS)
    window_end = time.monotonic()
    for sim in sims.values():
        for source_id in (1, 2, 3):
            sim.finish_job(source_id)
    finished = time.monotonic()
    outcome = {}
    for shared, sim in sims.items():
        results = [result_of(process) for process in processes[shared]]
        # Whoever leads may be first to leave: the others must not wait out its lease.
        took = time.monotonic() - finished
        assert took < 30, f"the processes took {took:.0f} s to see their jobs end"
        during = [r for r in sim.requests_for("extractions") if window_start <= r.at < window_end]
        outcome[shared] = (results, len(during) / OVERLAP_SECONDS)
    return outcome


def test_processes_share_one_poll_of_the_account(
    stitch_simulator_factory: Callable[..., StitchSimulator],
    child: Callable[..., subprocess.Popen[str]],
) -> None:
    shared_sim = stitch_simulator_factory(
        enforce_rate_limit=True, jobs_rate_limit=30, jobs_rate_period_seconds=3.0
    )
    alone_sim = stitch_simulator_factory()  # another base URL: another poll key
    for sim in (shared_sim, alone_sim):
        sim.add_sources((1, 2, 3), outcomes=[Outcome.success(duration_seconds=None)])

    outcome = listings_while_all_wait({True: shared_sim, False: alone_sim}, child)
    (shared, shared_rate), (alone, alone_rate) = outcome[True], outcome[False]

    for sim, results in ((shared_sim, shared), (alone_sim, alone)):
        for source_id, (status, job_name) in zip((1, 2, 3), results, strict=True):
            assert (status, job_name) == ("succeeded", sim.jobs_started(source_id)[0])
    # One listing per tick for the three processes, against one per tick each when alone.
    assert shared_rate <= 1.3 / POLL, f"{shared_rate:.1f} listings a second, shared"
    assert alone_rate >= 2.5 / POLL, f"{alone_rate:.1f} listings a second, alone"
    # One poller at a time: never two listings of the account within half a tick.
    assert shared_sim.jobs_requests_in_window(POLL / 2) <= 2
    assert shared_sim.rate_limit_violations == 0


def test_a_follower_takes_over_when_the_leader_dies(
    stitch_simulator_factory: Callable[..., StitchSimulator],
    child: Callable[..., subprocess.Popen[str]],
) -> None:
    sim = stitch_simulator_factory(
        enforce_rate_limit=True, jobs_rate_limit=30, jobs_rate_period_seconds=3.0
    )
    sim.add_source(1, outcomes=[Outcome.success(duration_seconds=None)])  # the leader's
    sim.add_source(2, outcomes=[Outcome.success(duration_seconds=None)])
    leader = child(1, sim)
    asyncio.run(until(_started(sim, 1), 90, "the first process's job"))
    time.sleep(3)  # it leads: it polls
    follower = child(2, sim)
    asyncio.run(until(_started(sim, 2), 90, "the second process's job"))
    time.sleep(3)
    before = len(sim.requests_for("extractions"))
    leader.send_signal(signal.SIGKILL)  # no goodbye: its lease must expire
    leader.wait(10)
    killed_at = time.monotonic()
    sim.finish_job(2)
    status, job_name = result_of(follower, timeout=200)
    took = time.monotonic() - killed_at
    assert (status, job_name) == ("succeeded", sim.jobs_started(2)[0])
    assert len(sim.requests_for("extractions")) > before  # someone polls again: the follower
    # Prefect's shortest lease is 60 s; its server reclaims expired leases every 15 s.
    assert took < 60 + 15 + 30, f"took over after {took:.0f} s"
    assert sim.rate_limit_violations == 0


def _started(sim: StitchSimulator, source_id: int) -> Callable[[], Any]:
    async def started() -> bool:
        return bool(sim.jobs_started(source_id))

    return started


# -- the watcher --------------------------------------------------------------------------------


def test_the_watcher_announces_every_job_exactly_once_across_runs(sim: StitchSimulator) -> None:
    sim.add_source(31, outcomes=[Outcome.success(duration_seconds=0.3)])
    sim.add_source(32, outcomes=[Outcome.failure("tap", -9, "Killed", duration_seconds=0.3)])
    credentials = make_credentials(sim)
    sim.seed_completed(31)  # listed before any watcher ran: not news
    sim.schedule_job(31, in_seconds=2.0)  # Stitch's own schedule, while the first run watches
    first = stitch_watch_flow(
        credentials=credentials, poll_interval_seconds=0.2, duration_seconds=4.0
    )
    [scheduled] = [j["job_name"] for j in sim.jobs(31) if j["triggered_via"] == "scheduler"]
    assert first.jobs == [scheduled] and first.succeeded == 1

    sim.schedule_job(32, in_seconds=1.0)
    second = stitch_watch_flow(
        credentials=credentials, poll_interval_seconds=0.2, duration_seconds=3.0
    )
    [failed] = [j["job_name"] for j in sim.jobs(32) if j["triggered_via"] == "scheduler"]
    assert second.jobs == [failed] and second.failed == 1  # the first run's job: not again

    events = asyncio.run(_watched_events(sim.client_id, {scheduled, failed}))
    assert sorted((e.event, e.payload["job_name"]) for e in events) == sorted(
        [("stitch.sync.succeeded", scheduled), ("stitch.sync.failed", failed)]
    )
    assert {e.id for e in events} == {
        event_id(sim.client_id, scheduled, "succeeded"),
        event_id(sim.client_id, failed, "failed"),
    }


async def _watched_events(client_id: int, jobs: set[str]) -> list[Any]:
    async with get_client() as client:

        async def found() -> list[Any] | None:
            page = await client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(prefix=["stitch.sync."]),
                    related=EventRelatedFilter(id=[f"stitch.account.{client_id}"]),
                ),
                limit=50,
            )
            events = [e for e in page.events if e.payload.get("job_name") in jobs]
            return events if {e.payload["job_name"] for e in events} >= jobs else None

        events = await until(found, 30, "the watcher's events")
        await asyncio.sleep(2)  # anything emitted twice would have landed by now
        return await found() or events


# -- the pieces ---------------------------------------------------------------------------------

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_requests_made_elsewhere_count_against_the_window() -> None:
    limiter = SlidingWindowLimiter(limit=3, period=60.0)
    assert limiter.delay_for(3) == 0.0
    limiter.record(2)
    assert limiter.delay_for(1) == 0.0 and limiter.delay_for(2) > 0
    assert limiter.local_requests == 0


def test_the_watch_cursor_stays_small_and_never_repeats_a_job() -> None:
    cursor = WatchCursor()
    for i in range(5000):  # a very busy hour
        record = Extraction(
            job_name=f"j{i}", source_id=1, completion_time=T0 + timedelta(seconds=i)
        )
        assert cursor.is_new(record)
        cursor.add(record)
    assert len(cursor.dumps()) <= 5000  # a Prefect Variable's limit
    again = WatchCursor.loads(cursor.dumps())
    latest = Extraction(job_name="j4999", source_id=1, completion_time=T0 + timedelta(seconds=4999))
    old = Extraction(job_name="j0", source_id=1, completion_time=T0)
    assert not again.is_new(latest) and not again.is_new(old)
    assert again.is_new(
        Extraction(job_name="new", source_id=1, completion_time=T0 + timedelta(seconds=5000))
    )


def test_a_prefect_api_that_cannot_coordinate_means_polling_alone(
    sim: StitchSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No concurrency leases (a permission, an old server): poll alone, never wait forever."""
    from prefect_stitch import stitch_sync_flow
    from prefect_stitch._poll.sharing import Sharing

    async def refuse(self: Sharing, client: Any) -> None:
        raise RuntimeError("403 Forbidden: concurrency limits")

    monkeypatch.setattr(Sharing, "_ensure_limit", refuse)
    sim.add_source(41, outcomes=[Outcome.success(duration_seconds=0.5)])
    result = stitch_sync_flow(
        source_id=41,
        credentials=make_credentials(sim),
        poll_interval_seconds=0.2,
        max_wait_seconds=20,
        loads="ignore",
    )
    assert (result.status, result.job_name) == ("succeeded", sim.jobs_started(41)[0])
    assert sim.requests_for("extractions")  # this process polled Stitch itself


def listing(tick: int) -> Snapshot:
    """A one-record listing, as a leader would publish it."""
    record = Extraction(job_name=f"job-{tick}", source_id=1, completion_time=T0)
    return Snapshot(tick=tick, records=(record,), fetched_at=datetime.now(UTC), pages=1)


def big_listing(tick: int) -> Snapshot:
    """A listing too big for the listing Variable (50 sources); each tick one job ends."""
    records = tuple(
        Extraction(
            job_name=f"116078.{300000 + i}.sync.{'x' * 36}-{tick if i == tick % 50 else 0}",
            source_id=300000 + i,
            completion_time=T0,
            discovery_exit_status=0,
            tap_exit_status=0,
            target_exit_status=0,
        )
        for i in range(50)
    )
    return Snapshot(tick=tick, records=records, fetched_at=datetime.now(UTC), pages=1)


async def test_a_leader_that_leaves_hands_over_its_last_listing_and_its_slot(
    sim: StitchSimulator,
) -> None:
    """The listing that ends the followers' waits may be the leader's last one.

    A leader whose waiters are done resigns at once (its process may be exiting). A
    follower that had not yet read its last listing must still get it, and must find the
    slot free: neither may wait out the leader's 60 s lease.
    """
    from prefect_stitch._poll.poller import AccountPoller
    from prefect_stitch._poll.sharing import Sharing

    credentials = make_credentials(sim)
    leader = Sharing(AccountPoller(credentials, sim.client_id))
    follower_poller = AccountPoller(credentials, sim.client_id)
    follower = Sharing(follower_poller)
    try:
        assert await leader.try_lead() is True
        assert await follower.try_lead() is False
        await follower.heartbeat_if_due(0.5, True, False)
        await leader.refresh_demands()

        await leader.publish(listing(1))
        await follower.follow(0.5)
        assert follower_poller.latest is not None and follower_poller.latest.tick == 1
        await leader.publish(listing(2))  # the follower has not read this one yet...
        await leader.stop()  # ...when the leader's last waiter leaves
        await follower.follow(0.5)
        assert follower_poller.latest.tick == 2, "the leader's last listing was lost"
        assert follower.next_attempt == 0.0  # it takes over at once...
        assert await follower.try_lead() is True  # ...and the slot is free
    finally:
        await follower.stop()
        await leader.stop()


QUICK_EXIT = """
import asyncio, sys
from prefect_stitch import StitchCredentials
from prefect_stitch._poll.poller import poller_for

credentials = StitchCredentials(access_token="sim-token", client_id=116078, base_url=sys.argv[1])


async def main() -> None:
    watch = poller_for(credentials, 116078).watch(poll_interval_seconds=0.5)
    await watch.next_snapshot(60)  # it leads: it read the account
    watch.close()


asyncio.run(main())
print("DONE", flush=True)  # and the process ends at once
"""


def test_a_process_that_ends_frees_its_lead(sim: StitchSimulator, tmp_path: Path) -> None:
    """The poller's thread is a daemon: at exit the process lets it hand the account over."""
    import hashlib

    from prefect.client.orchestration import get_client

    script = tmp_path / "quick_exit.py"
    script.write_text(QUICK_EXIT)
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    env["PREFECT_STITCH_SHARED_POLLING"] = "1"
    done = subprocess.run(
        [sys.executable, str(script), sim.base_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0 and "DONE" in done.stdout, done.stdout + done.stderr
    assert sim.requests_for("extractions")
    host = hashlib.sha256(sim.base_url.encode()).hexdigest()[:8]

    async def slots_and_marker() -> tuple[int, Any]:
        async with get_client() as client:
            limit = await client.read_global_concurrency_limit_by_name(
                f"stitch-poll-{sim.client_id}-{host}"
            )
            marker = await client.read_variable_by_name(f"stitch-listing-{sim.client_id}-{host}")
        return limit.active_slots, None if marker is None else marker.value

    active, marker = asyncio.run(slots_and_marker())
    assert active == 0, "the process ended holding the account's lead"
    assert isinstance(marker, dict) and marker.get("resigned") is True


async def test_a_slow_prefect_api_never_makes_a_second_leader(
    sim: StitchSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timeout is not "cannot coordinate": leading alone then would make two leaders.

    The process follows and tries again; only after a lease's length with no listing does
    it poll alone (its waits must not hang on an API that never answers).
    """
    import httpx

    from prefect_stitch._poll.poller import AccountPoller
    from prefect_stitch._poll.sharing import LEASE_SECONDS, Sharing

    async def slow(self: Sharing, client: Any) -> None:
        raise httpx.ReadTimeout("timed out")

    monkeypatch.setattr(Sharing, "_ensure_limit", slow)
    sharing = Sharing(AccountPoller(make_credentials(sim), sim.client_id))
    assert await sharing.try_lead() is False and sharing.leading is False
    sharing.last_listing -= LEASE_SECONDS + 1  # no listing for a lease: poll alone
    assert await sharing.try_lead() is True and sharing.leading is True


@contextlib.asynccontextmanager
async def leader_and_follower(
    sim: StitchSimulator, interval: float
) -> AsyncIterator[tuple[Any, Any, Any, Any]]:
    """Two pollers of one account (as two processes would have): the first leads, the
    second follows; each has received a listing. Yields (leader, follower, their watches);
    every watch is closed on the way out."""
    from prefect_stitch._poll.poller import AccountPoller

    sim.add_source(1, outcomes=[Outcome.success(duration_seconds=None)])
    credentials = make_credentials(sim)
    leader, follower = (AccountPoller(credentials, sim.client_id) for _ in range(2))
    lead = leader.watch(poll_interval_seconds=interval)
    follow = None
    try:
        await lead.next_snapshot(30)  # the first poller leads
        follow = follower.watch(poll_interval_seconds=interval)
        await follow.next_snapshot(30)
        yield leader, follower, lead, follow
    finally:
        lead.close()
        if follow is not None:
            follow.close()


async def test_a_new_leader_lists_a_tick_after_the_last_listing_it_received(
    sim: StitchSimulator,
) -> None:
    """A hand-over costs no extra listing: the new leader reads when a tick is due."""
    async with leader_and_follower(sim, 1.0) as (_, follower, lead, _):
        assert follower.received >= 1 and follower.ticks == 0  # the second follows
        lead.close()  # the leader's last waiter leaves: it hands over

        async def took_over() -> bool:
            return follower.ticks >= 1

        await until(took_over, 30, "the follower's first listing")
        times = [r.at for r in sim.requests_for("extractions")]
        assert times[-1] - times[-2] >= 0.8, "the new leader listed at once"


async def test_a_new_leader_slow_to_get_ready_lists_when_due_and_publishes_its_first_listing(
    sim: StitchSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a busy Prefect API, getting ready to lead (reading the demands) takes seconds.

    A successor holds the lease before it is ready: it must neither list Stitch at once
    (a tick had not passed since the last listing) nor list before it knows whom to
    publish for (its first listing would reach no one)."""
    from prefect_stitch._poll.poller import AccountPoller
    from prefect_stitch._poll.sharing import Sharing

    prepare, delete = Sharing.prepare, Sharing._delete_variable

    ready: list[float] = []

    async def slow(self: Sharing) -> None:
        if self.listings_received:  # a follower taking over, not the first leader
            ready.append(time.monotonic())  # it holds the lease...
            await asyncio.sleep(2.5)
            await prepare(self)
            ready.append(time.monotonic())  # ...and is ready to publish
            return
        await prepare(self)

    async def slow_delete(self: Sharing, name: str) -> None:
        if self.listings_received and self.leading:  # its demand, as it takes over
            await asyncio.sleep(2.5)
        await delete(self, name)

    monkeypatch.setattr(Sharing, "prepare", slow)
    monkeypatch.setattr(Sharing, "_delete_variable", slow_delete)
    async with leader_and_follower(sim, 1.0) as (_, successor, lead, _):
        other = AccountPoller(make_credentials(sim), sim.client_id)
        watch = other.watch(poll_interval_seconds=1.0)
        try:
            await watch.next_snapshot(30)
            await asyncio.sleep(1.5)  # the leader hears of both followers
            listed = len(sim.requests_for("extractions"))
            lead.close()  # the leader's last waiter leaves: it hands over

            async def took_over() -> bool:
                return successor.ticks + other.ticks >= 1

            await until(took_over, 30, "the successor's first listing")
            times = [r.at for r in sim.requests_for("extractions")][listed - 1 :]
            assert min(b - a for a, b in itertools.pairwise(times)) >= 0.8, (
                "the successor listed before a tick had passed"
            )
            assert len(ready) == 2
            assert not [t for t in times if ready[0] <= t < ready[1]], (
                "it listed before it was ready to publish"
            )
            rest = other if successor.ticks else successor
            received = rest.received

            async def published() -> bool:
                return rest.received > received

            await until(published, 5, "the new leader's listing at the other follower")
            assert rest.ticks == 0
        finally:
            watch.close()


async def test_a_follower_spares_the_prefect_api_while_the_leader_publishes(
    sim: StitchSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each try for the lead and each heartbeat is a write; 50 followers make a load of them.

    While listings keep coming the leader is alive: a follower does not try for its slot.
    It announces its demand when it changes (at once) and otherwise every heartbeat.
    """
    from prefect_stitch._poll.poller import AccountPoller
    from prefect_stitch._poll.sharing import HEARTBEAT_SECONDS, Sharing

    tries: dict[str, int] = {}
    try_lead = Sharing.try_lead

    async def counted(self: Sharing) -> bool:
        tries[self.id] = tries.get(self.id, 0) + 1
        return await try_lead(self)

    monkeypatch.setattr(Sharing, "try_lead", counted)
    async with leader_and_follower(sim, 0.5) as (_, follower, _, _):
        sharing = follower._sharing
        assert sharing is not None and not sharing.leading
        received = follower.received
        await asyncio.sleep(7.0)  # more than FOLLOWER_ATTEMPT_SECONDS (5 s)
        assert follower.received >= received + 5, "the leader stopped publishing"
        assert tries[sharing.id] == 1, "a follower tried for a live leader's slot"
        assert sharing.heartbeats == 1  # 7 s < HEARTBEAT_SECONDS
        assert HEARTBEAT_SECONDS > 7.0

    alone = Sharing(AccountPoller(make_credentials(sim), sim.client_id))
    try:
        await alone.heartbeat_if_due(3.0, True, False)
        await alone.heartbeat_if_due(3.0, True, False)
        assert alone.heartbeats == 1  # not due, nothing changed
        await alone.heartbeat_if_due(3.0, True, True)  # a wait for loads began
        assert alone.heartbeats == 2, "a changed demand waited for the next heartbeat"
    finally:
        await alone.stop()


def counted_artifact_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the pollers that read the shared listing's artifact, as they do."""
    from prefect_stitch._poll.sharing import Sharing

    reads: list[str] = []
    read_document = Sharing._read_document

    async def counted(self: Sharing, document_id: Any) -> Any:
        reads.append(self.id)
        return await read_document(self, document_id)

    monkeypatch.setattr(Sharing, "_read_document", counted)
    return reads


async def test_followers_take_listings_from_the_variable_and_the_artifact_is_passed_on(
    sim: StitchSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between Stitch's answer and a follower: one write (the leader's) and one read.

    For an account whose listing is too big for the Variable, the Variable carries the
    rows changed since the artifact was written; a follower holding the listing they
    apply to reads nothing else. A new leader goes on
    from the listing it holds, in the same artifact (updated in place, never one per
    leader), and its first tick goes straight to Stitch (it read the demands as it took
    the lead)."""
    from prefect_stitch._poll.poller import AccountPoller
    from prefect_stitch._poll.sharing import Sharing

    artifact_reads = counted_artifact_reads(monkeypatch)
    credentials = make_credentials(sim)
    old = Sharing(AccountPoller(credentials, sim.client_id))
    late_poller, new_poller = (AccountPoller(credentials, sim.client_id) for _ in range(2))
    late = Sharing(late_poller)
    await asyncio.sleep(0.3)
    new = Sharing(new_poller)  # its wait began last: the first successor
    try:
        assert await old.try_lead() is True
        await late.heartbeat_if_due(0.5, True, False)
        await new.heartbeat_if_due(0.5, True, False)
        await old.refresh_demands()
        await old.publish(big_listing(1))  # the first: whole, in the artifact
        for follower in (late, new):
            await follower.follow(0.5)
        assert sorted(artifact_reads) == sorted([late.id, new.id])
        await old.publish(big_listing(2))
        await old.publish(big_listing(3))
        await late.follow(0.5)  # it missed listing 2: the changes hold it too
        await new.follow(0.5)
        assert late_poller.latest is not None and late_poller.latest.tick == 3
        assert {r.job_name for r in late_poller.latest.records} == {
            r.job_name for r in big_listing(3).records
        }
        assert len(artifact_reads) == 2, "a follower read the artifact for a few changes"
        assert (late.listings_applied, new.listings_applied) == (1, 1)
        document = old.document_id

        await old.stop()  # resigns: the lease goes to the follower whose wait began last
        await new.follow(0.5)
        assert await new.try_lead() is True
        await new.prepare()
        assert set(new.demands) == {late.id}, "the new leader does not know its followers yet"
        calls: list[str] = []
        refresh = new.refresh_demands

        async def counted_refresh() -> None:
            calls.append("refresh")
            await refresh()

        new.refresh_demands = counted_refresh  # type: ignore[method-assign]
        await new.refresh_demands_if_stale()  # its first tick: straight to Stitch
        assert calls == [], "the first tick read the demands again"
        await new.refresh_demands_if_stale()  # the next ticks read them
        assert calls == ["refresh"]
        await new.publish(big_listing(4))
        await late.follow(0.5)
        assert late_poller.latest.tick == 4 and late.listings_applied == 2
        assert len(artifact_reads) == 2, "the new leader's first listing needed the artifact"
        assert str(new.document_id) == str(document), "a new artifact for a new leader"
        fresh_poller = AccountPoller(credentials, sim.client_id)
        fresh = Sharing(fresh_poller)  # a follower that begins now: the artifact
        try:
            await fresh.follow(0.5)
            assert fresh_poller.latest is not None and fresh_poller.latest.tick == 4
            assert {r.job_name for r in fresh_poller.latest.records} == {
                r.job_name for r in big_listing(4).records
            }
        finally:
            await fresh.stop()
    finally:
        await late.stop()
        await new.stop()
        await old.stop()


async def test_a_small_account_is_published_whole_in_the_variable(
    sim: StitchSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing that fits in half the Variable goes there whole: no artifact at all, and
    a follower that begins takes it from the same one read."""
    from prefect_stitch._poll.poller import AccountPoller
    from prefect_stitch._poll.sharing import Sharing

    artifact_reads = counted_artifact_reads(monkeypatch)
    credentials = make_credentials(sim)
    leader = Sharing(AccountPoller(credentials, sim.client_id))
    follower_poller = AccountPoller(credentials, sim.client_id)
    follower = Sharing(follower_poller)
    try:
        assert await leader.try_lead() is True
        await follower.heartbeat_if_due(3.0, True, False)
        await leader.refresh_demands()
        for tick in (1, 2, 3):
            await leader.publish(listing(tick))
            await follower.follow(3.0)
            assert follower_poller.latest is not None and follower_poller.latest.tick == tick
            assert [r.job_name for r in follower_poller.latest.records] == [f"job-{tick}"]
        assert artifact_reads == [] and leader.document_id is None
        # It looks for the next listing about a tick after the last one, not at once.
        assert follower.next_follow == pytest.approx(follower.last_received + 0.75 * 3.0)
    finally:
        await follower.stop()
        await leader.stop()


async def test_a_process_that_starts_as_a_lone_leader_leaves_takes_its_listing(
    sim: StitchSimulator,
) -> None:
    """Fifty syncs starting together: each may lead alone for a moment (its trigger's
    baseline) and leave. A lone leader publishes nothing, but its last listing goes with
    its resignation: the next process takes it as its baseline (not as a listing read
    after its waits began: it may predate them) and lists a tick later, not at once
    (each one listing at once was 7 listings in 2.3 s at the start of a 50-process run)."""
    from prefect_stitch._poll.poller import AccountPoller

    sim.add_source(1, outcomes=[Outcome.success(duration_seconds=None)])
    credentials = make_credentials(sim)
    first = AccountPoller(credentials, sim.client_id)
    watch = first.watch(poll_interval_seconds=1.0)
    await watch.next_snapshot(30)  # it leads alone, and lists
    watch.close()

    async def resigned() -> bool:
        return first._thread is None

    await until(resigned, 15, "the lone leader's hand-over")
    listed = [r.at for r in sim.requests_for("extractions")]
    second = AccountPoller(credentials, sim.client_id)
    watch = second.watch(poll_interval_seconds=1.0)
    try:

        async def primed() -> bool:
            return second.latest is not None

        await until(primed, 15, "the lone leader's last listing")
        assert second.ticks == 0 and second.received == 0
        baseline = await watch.baseline(0.1)  # a trigger's baseline: no listing needed
        assert baseline is second.latest
        assert watch.queue.empty(), "a listing from before the wait was handed to it"

        async def listed_again() -> bool:
            return len(sim.requests_for("extractions")) > len(listed)

        await until(listed_again, 15, "the second process's first listing")
        assert sim.requests_for("extractions")[len(listed)].at - listed[-1] >= 0.8
    finally:
        watch.close()


async def test_a_follower_that_could_not_look_never_calls_the_leader_silent(
    sim: StitchSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seeing nothing new is not hearing silence: only successful readings count.

    In a benchmark of 50 processes, one whose first Prefect API calls hung for a minute
    freed a live leader's slot ("silent" for a lease) and two processes led at once.
    """
    import httpx

    from prefect_stitch._poll.poller import AccountPoller
    from prefect_stitch._poll.sharing import LEASE_SECONDS, Sharing

    credentials = make_credentials(sim)
    leader = Sharing(AccountPoller(credentials, sim.client_id))
    follower = Sharing(AccountPoller(credentials, sim.client_id))
    try:
        assert await leader.try_lead() is True
        await follower.heartbeat_if_due(3.0, True, False)
        await leader.refresh_demands()
        await leader.publish(listing(1))

        read = Sharing._get_variable

        async def hung(self: Sharing, name: str) -> Any:
            raise httpx.ReadTimeout("timed out")

        monkeypatch.setattr(Sharing, "_get_variable", hung)
        follower.last_listing -= LEASE_SECONDS + 10  # a lease and more without a listing...
        await follower.follow(3.0)  # ...because no reading came through
        assert follower.leader_silent(3.0) is False, "a follower that could not look"

        monkeypatch.setattr(Sharing, "_get_variable", read)
        await follower.follow(3.0)  # it reads the leader's listing: the leader is alive
        assert follower.leader_silent(3.0) is False
        follower.last_listing -= LEASE_SECONDS + 10
        assert follower.looking_since is not None
        follower.looking_since -= LEASE_SECONDS + 10
        await follower.follow(3.0)  # it read, and nothing new came for a lease and more
        assert follower.leader_silent(3.0) is True
    finally:
        await follower.stop()
        await leader.stop()


async def test_a_leader_between_two_waits_of_one_run_keeps_the_lead(
    sim: StitchSimulator,
) -> None:
    """A sync's trigger, then its wait: two waits a moment apart in one process.

    The leader keeps serving its followers in between (for a few seconds at most), so the
    account is not handed over and back at every sync's start.
    """
    from prefect_stitch._poll.poller import LEADER_LINGER_SECONDS

    async with leader_and_follower(sim, 0.5) as (leader, follower, first, _):
        sharing = leader._sharing
        assert sharing is not None and sharing.leading
        received = follower.received
        first.close()  # the trigger is done...
        await asyncio.sleep(1.5)  # ...the wait task starts
        assert follower.received > received, "the followers went unserved in between"
        second = leader.watch(poll_interval_seconds=0.5)
        try:
            await second.next_snapshot(30)
            assert leader._sharing is sharing and sharing.leading, "the lead was handed over"
            assert follower.ticks == 0, "the follower listed Stitch itself"
        finally:
            second.close()

        async def handed_over() -> bool:
            return follower.ticks >= 1

        started = time.monotonic()
        await until(handed_over, 30, "the hand-over once the leader's waits ended")
        assert time.monotonic() - started >= LEADER_LINGER_SECONDS - 1


async def test_a_leader_that_resigns_hands_its_lease_to_its_first_successor(
    sim: StitchSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hand-over without a rush for the slot, and without a database write.

    At 50 processes every follower trying for the free slot at once made each try take
    2-30 s (a write each, on a busy server), during which they read no listing. The
    resigning leader names three successors and hands its lease to the first, which
    takes it up by renewing it; the next named frees it and takes the slot a tick later,
    should the first never lead; the others wait longer still."""
    from prefect_stitch._poll.poller import AccountPoller
    from prefect_stitch._poll.sharing import Sharing

    writes: list[str] = []
    original = Sharing.try_lead

    async def counted(self: Sharing) -> bool:
        if self.handed_lease is None:
            writes.append(self.id)  # a try for the slot itself
        return await original(self)

    monkeypatch.setattr(Sharing, "try_lead", counted)
    credentials = make_credentials(sim)

    async def resigned_before(followers: list[Sharing]) -> Sharing:
        leader = Sharing(AccountPoller(credentials, sim.client_id))
        assert await leader.try_lead() is True
        for follower in followers:
            await follower.heartbeat_if_due(3.0, True, False)
            await leader.refresh_demands()
        await leader.publish(listing(1))
        await leader.stop()
        for follower in followers:
            await follower.follow(3.0)
        return leader

    followers = []
    for _ in range(4):  # their waits begin one after the other: the last is named first
        followers.append(Sharing(AccountPoller(credentials, sim.client_id)))
        await asyncio.sleep(0.3)
    try:
        leader = await resigned_before(followers)
        oldest, third, second, first = followers
        now = time.monotonic()
        assert first.next_attempt == 0.0 and first.handed_lease is not None
        assert now + 3.0 < second.next_attempt < third.next_attempt, "successors rush"
        assert oldest.next_attempt > third.next_attempt, "a follower not named rushes"
        writes.clear()
        assert await first.try_lead() is True  # the lease it was handed
        assert writes == [], "the first successor took the slot instead of the lease"
        assert first.lease_id is not None and second.stale_lease is not None
        await first._said_taken()  # it says at once that it took the lease up...
        await second.follow(3.0)
        assert second.stale_lease is None, "the next successor would free a lease taken up"
        assert second.next_attempt > time.monotonic() + 6.0
        await first.prepare()
        await first.publish(listing(2))  # ...and it leads: it publishes
        assert await second.try_lead() is False
        first.demands.clear()  # no follower left: it frees the slot as it resigns
        await first.stop()
        await leader.stop()

        again = []
        for _ in range(2):
            again.append(Sharing(AccountPoller(credentials, sim.client_id)))
            await asyncio.sleep(0.3)
        try:
            leader = await resigned_before(again)
            second, first = again  # the first named never takes up the lease (it died)
            first.handed_lease = None
            assert await second.try_lead() is True, "the lease handed to a dead successor"
            await second.stop()
        finally:
            for follower in again:
                await follower.stop()
            await leader.stop()
    finally:
        for follower in followers:
            await follower.stop()


async def test_a_follower_keeps_reading_while_its_try_for_the_lead_hangs(
    sim: StitchSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a busy Prefect API a try for the lead took up to 30 s at 50 processes: the
    follower must not stop reading the leader's listings meanwhile."""
    from prefect_stitch._poll.sharing import Sharing

    try_lead = Sharing.try_lead
    hanging: list[float] = []

    async def slow_for_the_follower(self: Sharing) -> bool:
        if not self.leading and self.listings_received:  # a follower's later try
            hanging.append(time.monotonic())
            await asyncio.sleep(4.0)
        return await try_lead(self)

    monkeypatch.setattr(Sharing, "try_lead", slow_for_the_follower)
    async with leader_and_follower(sim, 0.5) as (_, follower, _, _):
        sharing = follower._sharing
        assert sharing is not None and not sharing.leading
        sharing.next_attempt = 0.0  # it tries for the lead now

        async def trying() -> bool:
            return bool(hanging)

        await until(trying, 10, "the follower's try for the lead")
        received = follower.received
        await asyncio.sleep(3.0)
        assert follower.received >= received + 3, "the follower stopped reading while it tried"
        assert not sharing.leading


async def test_a_process_that_exits_mid_tick_hands_over_at_once(
    sim: StitchSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leader lingering for its followers may be in a tick when its process exits; on a
    busy Prefect API that tick outlasted the few seconds an exiting process waits, and
    the process died holding the lead: the account went unpolled for a lease (60 s)."""
    from prefect_stitch._poll.sharing import Sharing

    refresh = Sharing.refresh_demands
    stuck = asyncio.Event()

    async def hung(self: Sharing) -> None:
        if stuck.is_set():
            await asyncio.sleep(60)
        await refresh(self)

    monkeypatch.setattr(Sharing, "refresh_demands", hung)
    async with leader_and_follower(sim, 0.5) as (leader, follower, lead, _):
        stuck.set()
        lead.close()  # its waiters left: it lingers for the follower, its tick hangs
        await asyncio.sleep(1.0)
        started = time.monotonic()
        await asyncio.to_thread(leader.finish, 5.0)  # what the process does at exit
        assert time.monotonic() - started < 4.0, "the exit waited out the hung tick"
        stuck.clear()

        async def took_over() -> bool:
            return follower.ticks >= 1

        await until(took_over, 15, "the follower's first listing")


async def test_a_resignation_nobody_hears_of_frees_the_lease(
    sim: StitchSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease goes to a successor only through the marker: if the marker cannot be
    written, the leader frees its slot instead of leaving it held for a lease."""
    from prefect_stitch._poll.poller import AccountPoller
    from prefect_stitch._poll.sharing import Sharing

    credentials = make_credentials(sim)
    leader = Sharing(AccountPoller(credentials, sim.client_id))
    follower = Sharing(AccountPoller(credentials, sim.client_id))
    try:
        assert await leader.try_lead() is True
        await follower.heartbeat_if_due(3.0, True, False)
        await leader.refresh_demands()
        await leader.publish(listing(1))
        set_variable = Sharing._set_variable

        async def failing(self: Sharing, name: str, value: dict[str, Any]) -> None:
            raise RuntimeError("the Prefect API is gone")

        monkeypatch.setattr(Sharing, "_set_variable", failing)
        await leader.stop()
        monkeypatch.setattr(Sharing, "_set_variable", set_variable)
        assert await follower.try_lead() is True, "the lease was left held"
    finally:
        await follower.stop()
        await leader.stop()


async def test_a_leader_rewrites_the_artifact_after_another_led_and_every_few_listings(
    sim: StitchSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An account too big for the Variable. Two processes may lead at once for a moment
    (a lease lost to a slow API); both write the one artifact. The one that stays must
    write it whole again, or followers that need it could never rebuild its listings;
    and it rewrites it every few listings regardless, so that no follower stays lost."""
    from prefect_stitch._poll.poller import AccountPoller
    from prefect_stitch._poll.sharing import _DOCUMENT_EVERY, Sharing

    writes: list[int] = []
    write = Sharing._write_document

    async def counted(self: Sharing) -> None:
        writes.append(self.state.seq)
        await write(self)

    monkeypatch.setattr(Sharing, "_write_document", counted)
    credentials = make_credentials(sim)
    leader = Sharing(AccountPoller(credentials, sim.client_id))
    follower = Sharing(AccountPoller(credentials, sim.client_id))
    intruder = Sharing(AccountPoller(credentials, sim.client_id))
    try:
        assert await leader.try_lead() is True
        await follower.heartbeat_if_due(3.0, True, False)
        await leader.refresh_demands()
        for tick in range(1, _DOCUMENT_EVERY + 2):
            await leader.publish(big_listing(tick))
        assert writes == [1, _DOCUMENT_EVERY], "the artifact was not rewritten"
        writes.clear()
        intruder.leading, intruder.demands = True, dict(leader.demands)
        await intruder.publish(big_listing(50))  # a second leader, for a moment
        await leader.refresh_demands()  # the leader sees it
        await leader.publish(big_listing(51))
        assert writes[-1] == leader.state.seq, "the artifact was left as the other wrote it"
        await follower.follow(3.0)
        assert follower.state.seq == leader.state.seq
        assert follower.poller.latest is not None and follower.poller.latest.tick == 51
    finally:
        intruder.leading = False
        await intruder.stop()
        await follower.stop()
        await leader.stop()


async def test_the_successor_is_the_follower_whose_wait_began_last_and_is_still_there(
    sim: StitchSimulator,
) -> None:
    """In a burst of jobs ending together, the followers heard from last were often
    ending too: the lease went to a process on its way out, and the next named took over
    a tick later. The wait that began last is the likeliest to last; a follower that
    left just before the resignation is not named."""
    from prefect_stitch._poll.poller import AccountPoller
    from prefect_stitch._poll.sharing import HEARTBEAT_SECONDS, Sharing

    credentials = make_credentials(sim)
    leader = Sharing(AccountPoller(credentials, sim.client_id))
    older = Sharing(AccountPoller(credentials, sim.client_id))
    await asyncio.sleep(0.5)
    younger = Sharing(AccountPoller(credentials, sim.client_id))
    await asyncio.sleep(0.5)
    leaving = Sharing(AccountPoller(credentials, sim.client_id))
    try:
        assert await leader.try_lead() is True
        for follower in (younger, leaving):
            await follower.heartbeat_if_due(3.0, True, False)
        await older.heartbeat_if_due(3.0, True, False)  # heard from last...
        await leader.refresh_demands()
        older.next_heartbeat -= HEARTBEAT_SECONDS
        await older.heartbeat_if_due(3.0, True, False)  # ...and again
        await leader.refresh_demands()
        await leader.publish(listing(1))
        await leaving.stop()  # its job ended: it leaves just before the leader does
        await leader.stop()
        for follower in (older, younger):
            await follower.follow(3.0)
        assert younger.handed_lease is not None, "the lease went to another follower"
        assert older.handed_lease is None
        marker = await younger._get_variable(younger.listing_name)
        assert marker["next"] == [younger.id, older.id], "a gone follower named"
    finally:
        for follower in (older, younger, leaving):
            await follower.stop()
        await leader.stop()


async def test_a_listing_read_but_not_yet_published_goes_with_the_resignation(
    sim: StitchSimulator,
) -> None:
    """An exiting process drops the tick under way: a listing read from Stitch but not
    yet published. It goes with the resignation, so the successor's first listing is
    due a tick after it (not at once: a K=50 run listed twice 1.2 s apart)."""
    from prefect_stitch._poll.poller import AccountPoller
    from prefect_stitch._poll.sharing import Sharing

    credentials = make_credentials(sim)
    leader_poller = AccountPoller(credentials, sim.client_id)
    leader = Sharing(leader_poller)
    follower_poller = AccountPoller(credentials, sim.client_id)
    follower = Sharing(follower_poller)
    try:
        assert await leader.try_lead() is True
        await follower.heartbeat_if_due(3.0, True, False)
        await leader.refresh_demands()
        await leader.publish(listing(1))
        await follower.follow(3.0)
        leader_poller.latest = listing(2)  # read from Stitch; the tick was then dropped
        await leader.stop()
        await follower.follow(3.0)
        assert follower_poller.latest is not None and follower_poller.latest.tick == 2
    finally:
        await follower.stop()
        await leader.stop()
