"""One poll per account across processes, over the Prefect API: end to end.

Flows run in separate processes against the session's Prefect API (the test harness) and
one simulator, which counts the jobs requests; the watcher's events are read back from
the Prefect API; and the store over the Prefect API is checked operation by operation
(the protocol itself is tested through an in-memory store in test_poll_protocol.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventRelatedFilter,
)
from prefect.settings import PREFECT_API_URL

from prefect_stitch._poll import AccountPoller, Snapshot
from prefect_stitch._poll.prefect_store import PrefectStore
from prefect_stitch._poll.sharing import Sharing
from prefect_stitch._poll.store import StoreError
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


def budgeted(factory: Callable[..., StitchSimulator]) -> StitchSimulator:
    """A simulator that answers 429 beyond the realistic budget."""
    return factory(enforce_rate_limit=True, **REALISTIC_BUDGET)


def test_processes_share_one_poll_of_the_account(
    stitch_simulator_factory: Callable[..., StitchSimulator],
    child: Callable[..., subprocess.Popen[str]],
) -> None:
    shared_sim = budgeted(stitch_simulator_factory)
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
    sim = budgeted(stitch_simulator_factory)
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


# -- a process that ends ---------------------------------------------------------------------


QUICK_EXIT = """
import asyncio, sys
from prefect_stitch import StitchCredentials
from prefect_stitch._poll import poller_for

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
    store = PrefectStore(sim.client_id, sim.base_url)

    async def slots_and_marker() -> tuple[int, Any]:
        async with get_client() as client:
            limit = await client.read_global_concurrency_limit_by_name(store.limit_name)
        return limit.active_slots, await store.read_marker()

    active, marker = asyncio.run(slots_and_marker())
    assert active == 0, "the process ended holding the account's lead"
    assert isinstance(marker, dict) and marker.get("resigned") is True


# -- the watcher's cursor ----------------------------------------------------------------------

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


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


# -- the store over the Prefect API --------------------------------------------------------------


def test_a_prefect_api_that_cannot_coordinate_means_polling_alone(
    sim: StitchSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No concurrency leases (a permission, an old server): poll alone, never wait forever."""
    from prefect_stitch import stitch_sync_flow

    async def refuse(self: PrefectClient, name: str) -> Any:
        raise RuntimeError("403 Forbidden: concurrency limits")

    monkeypatch.setattr(PrefectClient, "read_global_concurrency_limit_by_name", refuse)
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


@pytest.fixture
async def store() -> AsyncIterator[PrefectStore]:
    """A store over the session's Prefect API, for an account of its own."""
    store = PrefectStore(116078, f"https://{uuid.uuid4().hex}.example")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_the_prefect_store_keeps_one_leader_slot_with_a_lease(store: PrefectStore) -> None:
    lease = await store.take_lead(60.0)
    assert lease is not None
    assert await store.take_lead(60.0) is None, "423 Locked: another process leads"
    await store.renew_lease(lease, 60.0)  # how a successor takes up a handed lease
    await store.release_lease(lease)
    again = await store.take_lead(60.0)
    assert again is not None
    await store.free_the_slot()  # a silent leader's, whatever lease holds it
    assert await store.take_lead(60.0) is not None
    with pytest.raises(StoreError) as raised:
        await store.renew_lease(str(uuid.uuid4()), 60.0)
    assert not raised.value.transient


async def test_the_prefect_store_keeps_the_marker_the_demands_and_the_document(
    store: PrefectStore,
) -> None:
    assert await store.read_marker() is None
    await store.write_marker({"leader": "a", "seq": 1})  # created on first write
    await store.write_marker({"leader": "a", "seq": 2})
    assert await store.read_marker() == {"leader": "a", "seq": 2}

    await store.write_demand("b", {"i": 3.0, "n": 1})
    await store.write_demand("c", {"i": 1.0, "n": 1})
    await store.write_demand("b", {"i": 3.0, "n": 2})
    assert await store.read_demands() == {"b": {"i": 3.0, "n": 2}, "c": {"i": 1.0, "n": 1}}
    await store.delete_demand("b")
    await store.delete_demand("b")  # gone already: nothing to do
    assert await store.read_demands() == {"c": {"i": 1.0, "n": 1}}

    document = await store.write_document(None, {"v": 1})
    assert await store.write_document(document, {"v": 2}) == document, "not updated in place"
    assert await store.read_document(document) == {"v": 2}
    async with get_client() as client:
        await client.delete_artifact(uuid.UUID(document))
    replaced = await store.write_document(document, {"v": 3})  # deleted: another one
    assert replaced != document and await store.read_document(replaced) == {"v": 3}


async def test_two_processes_creating_the_marker_at_once_leave_one(store: PrefectStore) -> None:
    other = PrefectStore(116078, store.base_url)
    await asyncio.gather(
        store.write_marker({"leader": "a", "seq": 1}), other.write_marker({"leader": "b", "seq": 1})
    )
    first = await store.read_marker()
    assert first in ({"leader": "a", "seq": 1}, {"leader": "b", "seq": 1})
    assert await other.read_marker() == first
    assert len(await _artifacts(store.marker_type)) == 1
    await other.write_marker({"leader": "b", "seq": 2})  # each writes the one left
    assert await store.read_marker() == {"leader": "b", "seq": 2}
    await store.write_marker({"leader": "a", "seq": 3})
    assert await other.read_marker() == {"leader": "a", "seq": 3}


async def test_the_leader_reads_every_demand_and_deletes_those_it_only_read(
    store: PrefectStore,
) -> None:
    followers = [f"f{i:03}" for i in range(230)]  # more than a page (200)
    writers = [PrefectStore(116078, store.base_url) for _ in range(10)]
    for batch in range(0, len(followers), 10):
        await asyncio.gather(
            *(
                writer.write_demand(follower, {"i": 3.0, "n": 1})
                for writer, follower in zip(writers, followers[batch:], strict=False)
            )
        )
    demands = await store.read_demands()
    assert sorted(demands) == followers and demands["f007"] == {"i": 3.0, "n": 1}
    await store.delete_demand("f007")  # a silent follower: known from the read
    await PrefectStore(116078, store.base_url).delete_demand("f008")  # never read: found
    assert sorted(await store.read_demands()) == [f for f in followers if f not in ("f007", "f008")]


async def test_of_two_demands_of_one_follower_the_last_written_counts(store: PrefectStore) -> None:
    """A create whose answer was lost: the follower creates another, and writes that one."""
    async with get_client() as client:
        await client.create_artifact(
            ArtifactCreate(type=store.demand_type, data={"follower": "b", "demand": {"n": 1}})
        )
    await store.write_demand("b", {"n": 2})
    await store.write_demand("b", {"n": 3})
    assert await store.read_demands() == {"b": {"n": 3}}
    assert len(await _artifacts(store.demand_type)) == 1, "the lost one is still there"
    await store.delete_demand("b")
    assert await store.read_demands() == {}


async def test_the_store_s_artifacts_show_on_no_artifacts_page(store: PrefectStore) -> None:
    """No key (the Artifacts page lists keyed ones), no flow run (nor under a flow run)."""
    await store.write_marker({"leader": "a", "seq": 1})
    await store.write_demand("b", {"n": 1})
    await store.write_document(None, {"v": 1})
    kinds = (store.marker_type, store.demand_type, store.listing_type)
    artifacts = [artifact for kind in kinds for artifact in await _artifacts(kind)]
    assert len(artifacts) == 3
    assert all(a["key"] is None and a["flow_run_id"] is None for a in artifacts)


async def _artifacts(artifact_type: str) -> list[dict[str, Any]]:
    """Every artifact of a type, as the Prefect API lists them."""
    async with get_client() as client:
        response = await client.request(
            "POST", "/artifacts/filter", json={"artifacts": {"type": {"any_": [artifact_type]}}}
        )
        found: list[dict[str, Any]] = response.json()
        return found


@pytest.mark.parametrize(
    ("failure", "transient"),
    [
        (httpx.ReadTimeout("timed out"), True),
        (
            httpx.HTTPStatusError(
                "503", request=httpx.Request("POST", "http://x"), response=httpx.Response(503)
            ),
            True,
        ),
        (RuntimeError("403 Forbidden: concurrency limits"), False),
    ],
    ids=["timeout", "5xx", "forbidden"],
)
async def test_the_prefect_store_says_whether_a_failure_may_pass(
    store: PrefectStore, monkeypatch: pytest.MonkeyPatch, failure: Exception, transient: bool
) -> None:
    async def fail(self: PrefectClient, *args: Any, **kwargs: Any) -> Any:
        raise failure

    monkeypatch.setattr(PrefectClient, "increment_concurrency_slots_with_lease", fail)
    with pytest.raises(StoreError) as raised:
        await store.take_lead(60.0)
    assert raised.value.transient is transient


# -- the Event Feed ----------------------------------------------------------------------------


class CountingStore(PrefectStore):
    """A store over the Prefect API that counts its writes, by operation."""

    def __init__(self, client_id: int, base_url: str, writes: Counter[str]) -> None:
        super().__init__(client_id, base_url)
        self.writes = writes

    async def write_marker(self, marker: dict[str, Any]) -> None:
        self.writes["write_marker"] += 1
        await super().write_marker(marker)

    async def write_demand(self, follower: str, demand: dict[str, Any]) -> None:
        self.writes["write_demand"] += 1
        await super().write_demand(follower, demand)

    async def delete_demand(self, follower: str) -> None:
        self.writes["delete_demand"] += 1
        await super().delete_demand(follower)


def test_the_shared_poll_leaves_the_event_feed_alone(sim: StitchSimulator) -> None:
    """Where the user looks: the events the Prefect server stored while three processes
    shared the poll (heartbeats, a listing a second, a hand-over, the followers leaving).

    Only the leader slot's creation is there, once per account: no Variable's event, no
    artifact's."""
    sim.add_source(61, outcomes=[Outcome.success(duration_seconds=None)])
    sim.seed_completed(61)
    writes: Counter[str] = Counter()
    store = CountingStore(sim.client_id, sim.base_url, writes)  # its names, for the events
    started = datetime.now(UTC)
    pollers = [
        AccountPoller(
            make_credentials(sim),
            sim.client_id,
            store=lambda: CountingStore(sim.client_id, sim.base_url, writes),
        )
        for _ in range(3)
    ]
    asyncio.run(_share_the_poll(pollers))
    assert writes["write_demand"] >= 6, writes  # two followers' heartbeats, 10 s apart
    assert writes["write_marker"] >= 20, writes  # a listing a second, and the hand-over
    assert writes["delete_demand"] >= 1, writes  # the successor is no longer a follower

    events = asyncio.run(_events_since(started, store.limit_name))
    account = store.limit_name.removeprefix("stitch-poll-")
    ours = [
        (event.event, event.resource.get("prefect.resource.name"))
        for event in events
        if event.event.startswith(("prefect.variable.", "prefect.artifact"))
        or account in str(event.resource.get("prefect.resource.name", ""))
    ]
    assert ours == [("prefect.concurrency-limit.created", store.limit_name)], Counter(ours)


async def _share_the_poll(pollers: list[AccountPoller]) -> None:
    """The first poller leads, the others follow for a while; then the leader leaves."""
    first, *others = pollers
    lead = first.watch(poll_interval_seconds=1.0)
    watches = []
    try:
        await lead.next_snapshot(30)  # it leads: it read the account
        watches = [poller.watch(poll_interval_seconds=1.0) for poller in others]
        for watch in watches:
            await watch.next_snapshot(30)
        await asyncio.sleep(25)  # heartbeats (every 10 s), a listing a second
        lead.close()  # its last waiter leaves: it hands the account over

        async def took_over() -> bool:
            return any(poller.ticks for poller in others)

        await until(took_over, 30, "the successor's first listing")
        await asyncio.sleep(12)  # the successor publishes for the other; a heartbeat more
    finally:
        lead.close()
        for watch in watches:
            watch.close()
        for poller in pollers:  # each hands over or withdraws its demand, and ends
            await asyncio.to_thread(poller.finish, 15)


async def _events_since(started: datetime, limit_name: str) -> list[Any]:
    """Every event the server stored since then (every page), once the slot's creation is in."""
    async with get_client() as client:

        async def stored() -> list[Any]:
            page = await client.read_events(
                filter=EventFilter(occurred=EventOccurredFilter(since=started)), limit=50
            )
            events = list(page.events)
            while page.next_page is not None:
                page = await client.read_events_page(str(page.next_page))
                events.extend(page.events)
            return events

        async def slot_created() -> bool:
            return any(
                event.resource.get("prefect.resource.name") == limit_name
                for event in await stored()
            )

        await until(slot_created, 30, "the leader slot's creation in the Event Feed")
        await asyncio.sleep(3)  # the events stored with it (in batches)
        return await stored()


def listing(tick: int) -> Snapshot:
    """A one-record listing, as a leader reads it."""
    record = Extraction(job_name=f"job-{tick}", source_id=1, completion_time=T0)
    return Snapshot(tick=tick, records=(record,), fetched_at=datetime.now(UTC), pages=1)


async def test_a_leader_that_leaves_hands_over_its_last_listing_and_its_slot() -> None:
    """The listing that ends the followers' waits may be the leader's last one.

    A leader whose waiters are done resigns at once (its process may be exiting). A
    follower that had not yet read its last listing must still get it, and must find the
    lead its own: neither may wait out the leader's 60 s lease."""
    base_url = f"https://{uuid.uuid4().hex}.example"
    leader, follower = (
        Sharing(PrefectStore(116078, base_url), SlidingWindowLimiter(30, 600.0), 116078)
        for _ in range(2)
    )
    try:
        assert await leader.start(0.5) is None and await leader.lead_at_start() is True
        assert await follower.start(0.5) is None and await follower.lead_at_start() is False
        await follower.announce_if_due(0.5, True, False)
        await leader.refresh_demands()
        await leader.publish(listing(1))
        assert (await follower.follow(0.5) or listing(0)).tick == 1
        await leader.publish(listing(2))  # the follower has not read this one yet...
        await leader.stop(listing(2))  # ...when the leader's last waiter leaves
        assert (await follower.follow(0.5) or listing(0)).tick == 2, "the last listing was lost"
        assert await follower.try_lead() is True  # the lease handed over, at once
    finally:
        await follower.stop(None)
