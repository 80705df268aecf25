"""Pollers that share one poll: the process's threads and loops, against the Stitch simulator.

Each poller stands for a process (one `AccountPoller` each, its own thread and loop); they
meet in one in-memory store, so the tests run in seconds and can make the store slow on
demand. What they check is what the processes observe: when the simulator is listed and
by whom, and which listings each poller's waiters receive.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator

from prefect_stitch._poll import AccountPoller, Watch
from prefect_stitch._poll.memory import MemoryStore
from prefect_stitch._poll.poller import LEADER_LINGER_SECONDS
from prefect_stitch.simulator import Outcome, StitchSimulator
from tests.conftest import make_credentials
from tests.helpers import until


def poller(sim: StitchSimulator, store: MemoryStore, name: str) -> AccountPoller:
    """A process's poller of the simulator's account, sharing through the store."""
    return AccountPoller(make_credentials(sim), sim.client_id, store=lambda: store.view(name))


def listed_at(sim: StitchSimulator) -> list[float]:
    return [request.at for request in sim.requests_for("extractions")]


@contextlib.asynccontextmanager
async def leader_and_follower(
    sim: StitchSimulator, interval: float, store: MemoryStore
) -> AsyncIterator[tuple[AccountPoller, AccountPoller, Watch, Watch]]:
    """Two pollers of one account: the first leads, the second follows; each has received
    a listing. Yields (leader, follower, their watches); every watch is closed on the way out.
    """
    sim.add_source(1, outcomes=[Outcome.success(duration_seconds=None)])
    leader, follower = poller(sim, store, "leader"), poller(sim, store, "follower")
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
    store = MemoryStore()
    async with leader_and_follower(sim, 1.0, store) as (_, follower, lead, _):
        assert follower.received >= 1 and follower.ticks == 0  # the second follows
        lead.close()  # the leader's last waiter leaves: it hands over

        async def took_over() -> bool:
            return follower.ticks >= 1

        await until(took_over, 30, "the follower's first listing")
        times = listed_at(sim)
        assert times[-1] - times[-2] >= 0.8, "the new leader listed at once"


async def test_a_new_leader_slow_to_get_ready_lists_when_due_and_publishes_its_first_listing(
    sim: StitchSimulator,
) -> None:
    """On a busy Prefect API, getting ready to lead (reading the demands) takes seconds.

    A successor holds the lease before it is ready: it must neither list Stitch at once
    (a tick had not passed since the last listing) nor list before it knows whom to
    publish for (its first listing would reach no one)."""
    store = MemoryStore()
    for name in ("follower", "other"):  # as either takes over
        store.slow("read_demands", 2.5, process=name)
        store.slow("delete_demand", 2.5, process=name)
    async with leader_and_follower(sim, 1.0, store) as (_, successor, lead, _):
        other = poller(sim, store, "other")
        watch = other.watch(poll_interval_seconds=1.0)
        try:
            await watch.next_snapshot(30)
            await asyncio.sleep(1.5)  # the leader hears of both followers
            listed = len(listed_at(sim))
            lead.close()  # the leader's last waiter leaves: it hands over

            async def took_over() -> bool:
                return successor.ticks + other.ticks >= 1

            await until(took_over, 30, "the successor's first listing")
            times = listed_at(sim)[listed - 1 :]
            assert min(b - a for a, b in itertools.pairwise(times)) >= 0.8, (
                "the successor listed before a tick had passed"
            )
            new = "follower" if successor.ticks else "other"
            getting_ready = min(  # the first of the new leader's: as it took the lead
                call.at
                for call in store.calls
                if (call.process, call.operation) == (new, "read_demands")
            )
            assert not [t for t in times if getting_ready <= t < getting_ready + 2.5], (
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


async def test_a_process_that_starts_as_a_lone_leader_leaves_takes_its_listing(
    sim: StitchSimulator,
) -> None:
    """Fifty syncs starting together: each may lead alone for a moment (its trigger's
    baseline) and leave. A lone leader publishes nothing, but its last listing goes with
    its resignation: the next process takes it as its baseline (not as a listing read
    after its waits began: it may predate them) and lists a tick later, not at once
    (each one listing at once was 7 listings in 2.3 s at the start of a 50-process run)."""
    sim.add_source(1, outcomes=[Outcome.success(duration_seconds=None)])
    store = MemoryStore()
    first = poller(sim, store, "first")
    watch = first.watch(poll_interval_seconds=1.0)
    await watch.next_snapshot(30)  # it leads alone, and lists
    watch.close()

    async def resigned() -> bool:
        return bool(store.marker and store.marker.get("resigned"))

    await until(resigned, 15, "the lone leader's hand-over")
    listed = listed_at(sim)
    second = poller(sim, store, "second")
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
            return len(listed_at(sim)) > len(listed)

        await until(listed_again, 15, "the second process's first listing")
        assert listed_at(sim)[len(listed)] - listed[-1] >= 0.8
    finally:
        watch.close()


async def test_a_leader_between_two_waits_of_one_run_keeps_the_lead(sim: StitchSimulator) -> None:
    """A sync's trigger, then its wait: two waits a moment apart in one process.

    The leader keeps serving its followers in between (for a few seconds at most), so the
    account is not handed over and back at every sync's start.
    """
    store = MemoryStore()
    async with leader_and_follower(sim, 0.5, store) as (leader, follower, first, _):
        received = follower.received
        first.close()  # the trigger is done...

        async def served() -> bool:  # ...and until the wait task starts (a loaded machine
            return follower.received > received  # may take a few ticks), listings go on

        await until(served, LEADER_LINGER_SECONDS - 1, "the followers served in between")
        second = leader.watch(poll_interval_seconds=0.5)
        try:
            await second.next_snapshot(30)
            assert not (store.marker or {}).get("resigned"), "the lead was handed over"
            # It tried once as it began, or not at all: the leader's listing came first.
            assert store.count("take_lead", "follower") <= 1, "the follower tried again"
            assert follower.ticks == 0, "the follower listed Stitch itself"
        finally:
            second.close()

        async def handed_over() -> bool:
            return follower.ticks >= 1

        started = time.monotonic()
        await until(handed_over, 30, "the hand-over once the leader's waits ended")
        assert time.monotonic() - started >= LEADER_LINGER_SECONDS - 1


async def test_a_process_that_exits_mid_tick_hands_over_at_once(sim: StitchSimulator) -> None:
    """A leader lingering for its followers may be in a tick when its process exits; on a
    busy Prefect API that tick outlasted the few seconds an exiting process waits, and
    the process died holding the lead: the account went unpolled for a lease (60 s)."""
    store = MemoryStore()
    async with leader_and_follower(sim, 0.5, store) as (leader, follower, lead, _):
        store.slow("read_marker", 60, process="leader")  # its next tick hangs
        lead.close()  # its waiters left: it lingers for the follower, its tick hangs
        await asyncio.sleep(1.0)
        started = time.monotonic()
        await asyncio.to_thread(leader.finish, 5.0)  # what the process does at exit
        assert time.monotonic() - started < 4.0, "the exit waited out the hung tick"
        store.slow("read_marker", 0, process="leader")

        async def took_over() -> bool:
            return follower.ticks >= 1

        await until(took_over, 15, "the follower's first listing")


async def test_processes_whose_store_cannot_coordinate_never_wait_for_a_leader(
    sim: StitchSimulator,
) -> None:
    """No process can take the lead (the store refuses leases): none waits for an election
    that cannot happen. Each waiter gets a listing at once, read by its own process or
    published by the other (a process that lists alone publishes what it read)."""
    sim.add_source(1, outcomes=[Outcome.success(duration_seconds=None)])
    store = MemoryStore(coordinates=False)
    pollers = [poller(sim, store, name) for name in ("a", "b")]
    watches = [p.watch(poll_interval_seconds=0.5) for p in pollers]
    try:
        for watch in watches:
            # a listing may fail on a loaded machine (the simulator's connection): the next
            # one is what counts
            async with asyncio.timeout(30):
                while not (await watch.next_snapshot()).ok:
                    pass
        assert sum(p.ticks for p in pollers) >= 1
    finally:
        for watch in watches:
            watch.close()


async def test_a_process_that_just_began_takes_the_published_listing_as_its_baseline(
    sim: StitchSimulator,
) -> None:
    """A sync's trigger in a process that just joined needs a baseline at once: it takes
    the listing the leader published lately as it joins, not the next one a tick away, and
    reads nothing from Stitch itself (18 of 20 triggers read Stitch directly in a batch of
    short runs, over the account's budget)."""
    store = MemoryStore()
    async with leader_and_follower(sim, 3.0, store) as _:
        listings = len(listed_at(sim))
        store.slow("open", 0.5, process="newcomer")  # joining takes a busy API a moment
        newcomer = poller(sim, store, "newcomer")
        watch = newcomer.watch(poll_interval_seconds=3.0)
        try:
            began = time.monotonic()
            baseline = await watch.baseline(1.5)
            took = time.monotonic() - began
        finally:
            watch.close()
        assert 0.4 < took < 1.5, took
        assert baseline.stitch_time is not None and newcomer.ticks == 0
        assert len(listed_at(sim)) - listings <= 1  # at most the leader's own next tick


async def test_a_lone_leader_publishes_so_that_a_newcomer_has_a_baseline_at_once(
    sim: StitchSimulator,
) -> None:
    """A watcher leading alone, suspended syncs' first parts joining one after the other:
    each takes the lone leader's listing as its baseline as it joins (a lone leader that
    published nothing made each of them read Stitch itself)."""
    sim.add_source(1, outcomes=[Outcome.success(duration_seconds=None)])
    store = MemoryStore()
    leader = poller(sim, store, "leader")
    lead = leader.watch(poll_interval_seconds=3.0)
    try:
        await lead.next_snapshot(30)
        await asyncio.sleep(0.5)  # its listing published
        listings = len(listed_at(sim))
        store.slow("open", 0.5, process="newcomer")
        newcomer = poller(sim, store, "newcomer")
        watch = newcomer.watch(poll_interval_seconds=3.0)
        try:
            began = time.monotonic()
            await watch.baseline(1.5)
            took = time.monotonic() - began
        finally:
            watch.close()
    finally:
        lead.close()
    assert took < 1.5, took
    assert newcomer.ticks == 0 and len(listed_at(sim)) - listings <= 1
