"""The shared poll's protocol, through its behaviour: simulated processes over one store.

Each simulated process is the cross-process side of a poller (`Sharing`) over a view of one
in-memory store, on the test's own clock; a small loop steps them as a poller's thread
does (between ticks a follower follows; a leader lists Stitch when its tick is due). The
tests state what the processes observe: who lists Stitch and when, what and when followers
receive, and which store operations each one makes. Fast and deterministic: no Prefect,
no HTTP, no sleeping.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from prefect_stitch._poll import Snapshot
from prefect_stitch._poll.memory import MemoryStore
from prefect_stitch._poll.publication import DOCUMENT_EVERY
from prefect_stitch._poll.schedule import HEARTBEAT_SECONDS, LEASE_SECONDS, RENEW_SECONDS
from prefect_stitch._poll.sharing import Sharing
from prefect_stitch._ratelimit import SlidingWindowLimiter
from prefect_stitch.models import Extraction

CLIENT_ID = 116078
TICK = 3.0
"""Every simulated process wants a listing every this many seconds."""
BUDGET = 1000
"""The simulated processes' rate limit (per 600 s): never in the way, but counted."""
T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
EPSILON = 1e-6


def listing(tick: int, at: float | None = None) -> Snapshot:
    """A one-record listing, as a leader reads it (at this moment of Stitch's clock, if told)."""
    record = Extraction(job_name=f"job-{tick}", source_id=1, completion_time=T0)
    stitch_time = None if at is None else T0 + timedelta(seconds=at)
    return Snapshot(
        tick=tick, records=(record,), fetched_at=datetime.now(UTC), pages=1, stitch_time=stitch_time
    )


def big_listing(tick: int) -> Snapshot:
    """A listing too big for the marker (50 sources); each tick one job ends."""
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


def job_names(snapshot: Snapshot | None) -> set[str]:
    assert snapshot is not None
    return {record.job_name for record in snapshot.records}


class Clock:
    """The test's monotonic clock: it moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def settle() -> None:
    """Let the background steps (tries for the lead, heartbeats) run to their end."""
    for _ in range(20):
        await asyncio.sleep(0)


@dataclass(eq=False)
class Process:
    """One simulated process: its part in the shared poll, and what its waiters saw."""

    name: str
    world: World
    interval: float
    limiter: SlidingWindowLimiter
    sharing: Sharing = field(init=False)
    received: list[tuple[float, Snapshot]] = field(default_factory=list)
    """The listings handed to its waiters, and when."""
    latest: Snapshot | None = None
    last_start: float = -math.inf
    wake_at: float = 0.0
    alive: bool = True
    listing: bool = False
    """A tick began: its request waits for a slot of its rate limiter."""

    def __post_init__(self) -> None:
        self.sharing = Sharing(
            self.world.store.view(self.name),
            self.limiter,
            CLIENT_ID,
            wake=self.wake,
            clock=self.world.clock,
            rng=random.Random(self.name),
        )

    @property
    def id(self) -> str:
        return self.sharing.id

    @property
    def leads(self) -> bool:
        return self.sharing.leading

    def wake(self) -> None:
        self.wake_at = min(self.wake_at, self.world.clock())

    def took(self, snapshot: Snapshot, *, news: bool) -> None:
        """A listing from the leader: the poller's latest (and news for its waiters)."""
        now = self.world.clock()
        self.latest, self.last_start = snapshot, max(self.last_start, now)
        if news:
            self.received.append((now, snapshot))

    def ticks_received(self) -> list[int]:
        return [snapshot.tick for _, snapshot in self.received]

    def calls(self, operation: str, after: float = -math.inf) -> list[float]:
        """When this process called a store operation."""
        return [
            call.at
            for call in self.world.store.calls
            if (call.process, call.operation) == (self.name, operation) and call.at > after
        ]


class World:
    """Simulated processes of one account, one store, one clock, and Stitch's listings."""

    def __init__(
        self,
        make_listing: Callable[[int], Snapshot] = listing,
        budget: tuple[int, float] = (BUDGET, 600.0),
        **store_options: Any,
    ) -> None:
        self.clock = Clock()
        self.store = MemoryStore(clock=self.clock, **store_options)
        self.processes: list[Process] = []
        self.listings: list[tuple[float, str]] = []
        """Every listing read from Stitch: when, and by whom."""
        self.make_listing = make_listing
        self.budget = budget
        """Each process's rate limit: requests per window of so many seconds."""
        self.leaders: list[tuple[float, set[str]]] = []
        """Who led, each time it changed."""

    def listed(self, name: str | None = None, after: float = -math.inf) -> list[float]:
        """When Stitch was listed (by one process)."""
        return [at for at, who in self.listings if name in (None, who) and at > after]

    async def start(self, name: str, interval: float = TICK) -> Process:
        """A process begins to watch the account (as its poller's thread starts)."""
        process = Process(
            name, self, interval, SlidingWindowLimiter(*self.budget, clock=self.clock)
        )
        published = await process.sharing.start(interval)
        if published is not None:
            process.took(published, news=False)
        await process.sharing.lead_at_start()
        await settle()
        process.wake_at = self.clock()
        self.processes.append(process)
        return process

    async def step(self, process: Process) -> None:
        """One pass of the poller's loop."""
        now = self.clock()
        process.wake_at = math.inf
        if not process.listing:
            step = await process.sharing.between_ticks(process.interval, lambda: (True, False))
            if step is not None:
                if step.listing is not None:
                    process.took(step.listing, news=True)
                process.wake_at = min(process.wake_at, step.wake_at)
                return
            remaining = process.last_start + process.interval - now
            if remaining > 0:
                process.wake_at = now + remaining
                return
            process.last_start, process.listing = now, True
            await process.sharing.before_tick()
        full = process.limiter.delay_for(1)  # its request waits for a slot of its limiter
        if full > 0:
            process.wake_at = now + full
            return
        process.listing = False
        async with process.limiter.slot():  # the listing's one request
            self.listings.append((now, process.name))
        process.latest = self.make_listing(len(self.listings))
        process.received.append((now, process.latest))
        await process.sharing.after_tick(process.latest)
        process.wake_at = now

    async def run(self, seconds: float) -> None:
        """Let the processes run for a while (of the test's clock)."""
        end = self.clock() + seconds
        for _ in range(20_000):  # a spin fails the test, not hangs it
            alive = [p for p in self.processes if p.alive]
            due = min(alive, key=lambda p: p.wake_at, default=None)
            if due is None or due.wake_at > end:
                break
            self.clock.now = max(self.clock.now, due.wake_at)
            await self.step(due)
            await settle()
            leading = {p.name for p in alive if p.alive and p.leads}
            if not self.leaders or self.leaders[-1][1] != leading:
                self.leaders.append((self.clock(), leading))
        else:
            raise AssertionError("the simulated processes do not move on")
        self.clock.now = end

    async def leave(self, process: Process) -> None:
        """Its waiters are done: it hands over (as its poller's thread ends)."""
        process.alive = False
        await process.sharing.settle()
        await process.sharing.stop(process.latest)
        await settle()

    @staticmethod
    def kill(process: Process) -> None:
        """It dies: no goodbye."""
        process.alive = False


# -- one leader, followers served -------------------------------------------------------------


async def test_one_process_lists_the_account_and_every_other_receives_each_listing() -> None:
    world = World()
    await world.start("a")
    b, c = await world.start("b"), await world.start("c")
    await world.run(60)

    assert {who for _, who in world.listings} == {"a"}, "a follower listed Stitch"
    times = world.listed()
    assert len(times) >= 60 / TICK and min(y - x for x, y in itertools.pairwise(times)) >= TICK
    for follower in (b, c):
        got = follower.ticks_received()
        # The leader publishes every listing, a lone leader's first one included (the
        # followers take it as they join); the last listing may be on its way.
        assert got == list(range(got[0], got[0] + len(got))) and got[0] <= 2, got
        assert len(got) >= len(times) - 2, got
        for at, snapshot in follower.received:  # a few times a tick, once one is due
            assert at - times[snapshot.tick - 1] <= TICK / 6 + EPSILON


async def test_a_follower_spares_the_store_while_the_leader_publishes() -> None:
    """Each try for the lead and each heartbeat is a write; 50 followers make a load of them.

    While listings keep coming the leader is alive: a follower does not try for its slot
    (it tried once, as it began). It announces its demand every heartbeat."""
    world = World()
    await world.start("a")
    b = await world.start("b")
    await world.run(60)
    assert len(b.received) >= 15
    assert len(b.calls("take_lead")) == 1, "a follower tried for a live leader's slot"
    beats = b.calls("write_demand")
    assert len(beats) == 60 / HEARTBEAT_SECONDS + 1
    assert min(y - x for x, y in itertools.pairwise(beats)) >= HEARTBEAT_SECONDS


async def test_a_follower_looks_for_the_next_listing_a_tick_after_the_last_one() -> None:
    world = World()
    await world.start("a")
    b = await world.start("b")
    await world.run(40)
    looks = b.calls("read_marker")
    for at, _ in b.received:  # the look that took it, and none until the next is due
        soon = [t for t in looks if at <= t < at + 0.75 * TICK - EPSILON]
        assert soon == [at], "it looked again before the next listing was due"
    assert max(y - x for x, y in itertools.pairwise(looks)) <= 0.75 * TICK + EPSILON


async def test_a_follower_keeps_reading_while_its_demand_is_being_written() -> None:
    """A demand is written in the background: a slow write must not hold up reading.

    A write slower than a heartbeat does not make the follower spin either (the next
    heartbeat, due meanwhile, waits for it): without that, its loop never slept again.
    """
    world = World()
    await world.start("leader")
    follower = await world.start("follower")
    await world.run(5)
    writing = world.store.hold("write_demand", process="follower")  # its next one hangs
    async with asyncio.timeout(10):  # the test's clock: no time at all, unless it blocks
        await world.run(2 * HEARTBEAT_SECONDS + 4)  # past the heartbeat due meanwhile
    assert len(follower.calls("write_demand")) == 2 and not writing.is_set()
    hanging_since = follower.calls("write_demand")[-1]
    assert len([at for at, _ in follower.received if at > hanging_since]) >= 4
    writing.set()
    await settle()
    async with asyncio.timeout(10):
        await world.run(HEARTBEAT_SECONDS + 1)
    assert len(follower.calls("write_demand")) >= 3  # once it ended, the heartbeats go on


async def test_a_changed_demand_is_announced_at_once_and_otherwise_every_heartbeat() -> None:
    world = World()
    await world.start("leader")
    follower = await world.start("follower")
    announce = follower.sharing.announce_if_due
    await announce(3.0, True, False)
    await announce(3.0, True, False)  # not due, nothing changed
    assert len(follower.calls("write_demand")) == 1
    await announce(3.0, True, True)  # a wait for loads began
    assert len(follower.calls("write_demand")) == 2, "a changed demand waited"
    world.clock.now += HEARTBEAT_SECONDS - 0.1
    await announce(3.0, True, True)
    assert len(follower.calls("write_demand")) == 2
    world.clock.now += 0.1
    await announce(3.0, True, True)
    assert len(follower.calls("write_demand")) == 3


# -- the budget -----------------------------------------------------------------------------


async def test_requests_made_elsewhere_count_against_the_window() -> None:
    limiter = SlidingWindowLimiter(limit=3, period=60.0)
    assert limiter.delay_for(3) == 0.0
    limiter.record(2)
    assert limiter.delay_for(1) == 0.0 and limiter.delay_for(2) > 0
    assert limiter.local_requests == 0


async def test_every_process_counts_the_others_requests_in_its_budget() -> None:
    world = World()
    leader = await world.start("leader")
    follower = await world.start("follower")
    await world.run(5)
    for _ in range(2):  # the follower reads a job's logs: two jobs requests of its own
        async with follower.limiter.slot():
            pass
    first_seen = len(world.listed())  # the leader's requests before the follower saw it
    await world.run(HEARTBEAT_SECONDS + 1)

    def used(process: Process) -> int:
        """Requests in the process's window: how many more it may make now."""
        return next(n for n in range(BUDGET + 1) if process.limiter.delay_for(BUDGET - n) == 0)

    assert used(leader) == leader.limiter.local_requests + 2, "the follower's requests"
    del first_seen  # the follower hears of every listing, the lone leader's first ones too
    listed = len(world.listed())  # the last one may be on its way
    assert 2 + listed - 1 <= used(follower) <= 2 + listed, "the leader's requests"


async def test_a_leader_forgets_a_follower_silent_for_three_heartbeats() -> None:
    world = World()
    leader = await world.start("leader")
    follower = await world.start("follower")
    await world.run(10)
    world.kill(follower)
    last_beat = max(follower.calls("write_demand"))
    await world.run(60)
    forgotten = min(t for t in leader.calls("delete_demand") if t > last_beat)
    assert (
        last_beat + 3 * HEARTBEAT_SECONDS
        <= forgotten
        <= (last_beat + 3 * HEARTBEAT_SECONDS + 2 * TICK)  # read a tick, removed the next
    ), "it forgot a follower alive (or one gone too late)"
    assert not world.store.demands


# -- hand-over --------------------------------------------------------------------------------


async def followers_of(world: World, names: list[str]) -> list[Process]:
    """Followers whose waits begin one after the other (the last named began last).

    A tick apart: the leader reckons when a wait began when it first reads its demand.
    """
    followers = []
    for name in names:
        followers.append(await world.start(name))
        await world.run(TICK + 1)
    await world.run(HEARTBEAT_SECONDS)  # the leader heard from every one
    return followers


async def test_a_resigning_leader_hands_its_lease_to_the_follower_whose_wait_began_last() -> None:
    """A hand-over without a rush for the slot, and without a listing of its own.

    The resigning leader names three successors (the followers whose wait began last:
    the likeliest to wait longest) and hands its lease to the first, which takes it up
    by renewing it (no write to the Prefect database) and says so at once; the others
    named then stand down, and a follower not named never tries while it leads."""
    world = World()
    leader = await world.start("leader")
    oldest, old, middle, young = await followers_of(world, ["oldest", "old", "middle", "young"])
    await world.leave(leader)
    resigned_at = world.clock()
    marker = world.store.marker
    assert marker is not None and marker["resigned"]
    assert marker["next"] == [young.id, middle.id, old.id]
    await world.run(30)

    assert young.leads and not young.calls("take_lead", after=resigned_at)
    assert young.calls("renew_lease", after=resigned_at), "the lease was not taken up"
    for other in (oldest, old, middle):
        assert not other.calls("take_lead", after=resigned_at), f"{other.name} tried"
        assert not other.calls("release_lease", after=resigned_at), f"{other.name} freed it"
        assert other.ticks_received()[-1] == len(world.listings)
    first = world.listed("young")[0]
    assert first - world.listed("leader")[-1] >= TICK, "the hand-over listed before a tick"


async def test_the_next_successors_stand_down_while_the_first_gets_ready_to_lead() -> None:
    """On a busy Prefect API the first successor's first listing can take a while (it reads
    the demands first): it says at once that it took the lease up, so the next named do
    not free that lease and take the slot beside it a tick later."""
    world = World()
    leader = await world.start("leader")
    old, middle, young = await followers_of(world, ["old", "middle", "young"])
    getting_ready = world.store.hold("read_demands", process="young")
    await world.leave(leader)
    resigned_at = world.clock()
    await world.run(4 * (TICK + 2.0))
    assert young.leads and not world.listed("young"), "it listed before it was ready"
    for other in (old, middle):
        assert not other.calls("release_lease", after=resigned_at), f"{other.name} freed it"
        assert not other.calls("take_lead", after=resigned_at), f"{other.name} tried"
    getting_ready.set()
    await world.run(2 * TICK)
    assert world.listed("young") and middle.ticks_received()[-1] == len(world.listings)


async def test_the_next_successor_takes_over_a_tick_later_when_the_first_never_does() -> None:
    world = World()
    leader = await world.start("leader")
    old, middle, young = await followers_of(world, ["old", "middle", "young"])
    world.kill(young)  # ending too, as the leader resigns
    await world.leave(leader)
    resigned_at = world.clock()
    await world.run(30)

    [took] = middle.calls("take_lead", after=resigned_at)
    assert middle.calls("release_lease", after=resigned_at), "the lease handed to young"
    read = min(middle.calls("read_marker", after=resigned_at))  # it heard of the resignation
    wait = TICK + 2.0  # a tick, and the time the first named has to say it took the lease
    assert took - read == pytest.approx(wait)
    assert middle.leads and not old.calls("take_lead", after=resigned_at)
    assert old.ticks_received()[-1] == len(world.listings)


async def test_with_no_follower_known_the_slot_is_freed_and_the_next_lists_a_tick_later() -> None:
    """Fifty syncs starting together: each may lead alone for a moment and leave. Its last
    listing goes with its resignation: the next process takes it (a baseline, not news)
    and lists a tick later, not at once."""
    world = World()
    lone = await world.start("lone")
    await world.run(1)
    await world.leave(lone)
    assert not world.store.slot_taken(), "the slot was left taken"
    following = await world.start("next")
    assert following.latest is not None and following.latest.tick == 1
    assert following.received == []
    await world.run(10)
    assert following.leads and world.listed("next")[0] - world.listed("lone")[-1] >= TICK


async def test_a_resignation_nobody_hears_of_frees_the_lease() -> None:
    world = World(leases_expire=False)
    leader = await world.start("leader")
    follower = await world.start("follower")
    await world.run(10)
    world.store.fail("write_marker", process="leader")
    await world.leave(leader)
    assert not world.store.slot_taken(), "the lease was left handed to nobody"
    await world.run(2 * TICK + 10)
    assert follower.leads


async def test_a_listing_read_but_not_yet_published_goes_with_the_resignation() -> None:
    """An exiting process drops the tick under way: a listing read from Stitch but not yet
    published. It goes with the resignation, so the successor's first listing is due a
    tick after it (a K=50 run listed twice 1.2 s apart)."""
    world = World()
    leader = await world.start("leader")
    follower = await world.start("follower")
    await follower.sharing.announce_if_due(TICK, True, False)
    await leader.sharing.refresh_demands()
    await leader.sharing.publish(listing(1))
    assert (await follower.sharing.follow(TICK) or listing(0)).tick == 1
    await leader.sharing.stop(listing(2))  # read from Stitch; the tick was then dropped
    assert (await follower.sharing.follow(TICK) or listing(0)).tick == 2


async def test_a_successor_is_one_still_there() -> None:
    """In a burst of jobs ending together, a follower heard from just before was often
    ending too: the resigning leader reads the demands again and names those still there,
    by when their wait began, not by when it last heard from them."""
    world = World()
    leader = await world.start("leader")
    older = await world.start("older")
    world.clock.now += 0.5
    younger = await world.start("younger")
    world.clock.now += 0.5
    leaving = await world.start("leaving")
    for follower in (younger, leaving, older):  # heard from the older last
        await follower.sharing.announce_if_due(TICK, True, False)
    await leader.sharing.refresh_demands()
    await leader.sharing.publish(listing(1))
    await world.leave(leaving)  # its job ended: it leaves just before the leader does
    await world.leave(leader)
    assert world.store.marker is not None
    assert world.store.marker["next"] == [younger.id, older.id]


# -- a silent leader ---------------------------------------------------------------------------


async def test_a_silent_leader_is_replaced_after_a_lease_and_two_ticks_of_readings() -> None:
    """A leader that dies keeps its slot (here: forever); a follower whose readings show
    nothing new for a lease's length plus two ticks frees the slot and takes it."""
    world = World(leases_expire=False)
    leader = await world.start("leader")
    follower = await world.start("follower")
    await world.run(10)
    world.kill(leader)
    await world.run(120)
    [freed] = follower.calls("free_the_slot")
    last = max(at for at, _ in follower.received if at < freed)
    threshold = LEASE_SECONDS + 2 * TICK
    assert last + threshold < freed <= last + threshold + 2 * TICK / 6 + EPSILON
    assert follower.leads and world.listed("follower")


async def test_a_follower_that_could_not_look_never_calls_the_leader_silent() -> None:
    """Seeing nothing new is not hearing silence: only readings that came through count.

    In a benchmark of 50 processes, one whose first Prefect API calls hung for a minute
    freed a live leader's slot ("silent" for a lease) and two processes led at once."""
    world = World(leases_expire=False)
    await world.start("leader")
    world.store.fail("read_marker", times=None, process="follower")
    follower = await world.start("follower")
    await world.run(2 * LEASE_SECONDS)
    assert not follower.calls("free_the_slot") and follower.received == []
    world.store.fail("read_marker", times=0, process="follower")
    await world.run(2 * LEASE_SECONDS)
    assert not follower.calls("free_the_slot") and not follower.leads
    assert len(follower.received) >= LEASE_SECONDS / TICK
    assert world.listed("follower") == []


async def test_a_follower_keeps_reading_while_its_try_for_the_lead_hangs() -> None:
    """On a busy Prefect API a try for the lead took up to 30 s at 50 processes: the
    follower must not stop reading the leader's listings meanwhile."""
    world = World()
    await world.start("leader")
    follower = await world.start("follower")
    await world.run(10)
    world.store.fail("write_marker", times=4, process="leader")  # no listing for a while...
    held = world.store.hold("take_lead", process="follower")
    await world.run(15)
    [trying_since] = follower.calls("take_lead", after=world.clock() - 15)
    await world.run(15)  # ...then listings again, while the try hangs
    assert not held.is_set() and not follower.leads
    assert len([at for at, _ in follower.received if at > trying_since]) >= 3
    held.set()
    await settle()


# -- a store that is slow or cannot coordinate -------------------------------------------------


async def test_a_slow_store_never_makes_a_second_leader() -> None:
    """A timeout is not "cannot coordinate": leading alone then could make two leaders.

    The process follows and tries again; only after a lease's length with no listing does
    it poll alone (its waits must not hang on a store that never answers)."""
    world = World()
    world.store.fail("take_lead", times=None, transient=True)
    process = await world.start("p")
    await world.run(LEASE_SECONDS - 5)
    assert not process.leads and world.listings == []
    assert len(process.calls("take_lead")) >= (LEASE_SECONDS - 5) / 5
    await world.run(10)
    assert process.leads and world.listed("p")


async def test_a_store_that_cannot_coordinate_means_polling_alone() -> None:
    world = World(coordinates=False)
    a, b = await world.start("a"), await world.start("b")
    assert a.leads and b.leads
    await world.run(10)
    assert world.listed("a") and world.listed("b")


async def test_of_two_leaders_the_greater_id_steps_down() -> None:
    """A lease lost to a slow network: two processes lead for a moment. The one with the
    greater id steps down once it sees the other publish, and gives its lease back."""
    world = World(leases_expire=False)
    a = await world.start("a")
    b = await world.start("b")
    await world.start("c")  # a follower: the leaders publish for it
    await world.run(10)
    await world.store.view("server").free_the_slot()  # a's slot, repossessed
    world.store.fail("write_marker", times=4, process="a")  # b hears nothing: it tries
    await world.run(20)
    assert a.leads and b.leads and world.listed("b"), "b did not lead beside a"
    both_since = world.clock()
    await world.run(3 * TICK)
    stays, steps_down = sorted((a, b), key=lambda p: p.id)
    assert steps_down.calls("release_lease", after=both_since), "nobody stepped down"
    assert not stays.calls("release_lease"), "the smaller id stepped down"


# -- what is published -------------------------------------------------------------------------


async def test_a_small_account_is_published_whole_in_the_marker() -> None:
    """A listing that fits in half the marker goes there whole: no document at all, and a
    follower that begins takes it from the same one read."""
    world = World()
    leader = await world.start("leader")
    follower = await world.start("follower")
    await world.run(20)
    assert len(follower.received) >= 5
    for _, snapshot in follower.received:
        assert [r.job_name for r in snapshot.records] == [f"job-{snapshot.tick}"]
    late = await world.start("late")
    assert late.latest is not None and late.latest.tick == len(world.listings)
    assert world.store.count("write_document") == world.store.count("read_document") == 0
    assert world.store.documents == {} and leader.leads


async def test_followers_rebuild_big_listings_from_changes_and_the_document_is_passed_on() -> None:
    """Between Stitch's answer and a follower: one write (the leader's) and one read.

    For an account whose listing is too big for the marker, the marker carries the rows
    changed since the document was written; a follower holding the listing they apply to
    reads nothing else. A new leader goes on from the listing it holds, in the same
    document (updated in place, never one per leader), and its first tick goes straight
    to Stitch (it read the demands as it took the lead)."""
    world = World()
    old = await world.start("old")
    late = await world.start("late")
    world.clock.now += 0.3
    new = await world.start("new")  # its wait began last: the first successor
    for follower in (late, new):
        await follower.sharing.announce_if_due(0.5, True, False)
    await old.sharing.refresh_demands()
    await old.sharing.publish(big_listing(1))  # the first: whole, in the document
    for follower in (late, new):
        assert job_names(await follower.sharing.follow(0.5)) == job_names(big_listing(1))
        assert len(follower.calls("read_document")) == 1
    await old.sharing.publish(big_listing(2))
    await old.sharing.publish(big_listing(3))
    for follower in (late, new):  # late missed listing 2: the changes hold it too
        assert job_names(await follower.sharing.follow(0.5)) == job_names(big_listing(3))
        assert len(follower.calls("read_document")) == 1, "it read the document for changes"
    [document] = world.store.documents

    await world.leave(old)  # resigns: the lease goes to the follower whose wait began last
    resigned_at = world.clock()
    assert await new.sharing.follow(0.5) is None  # it holds the last listing already
    assert await new.sharing.try_lead() is True
    assert not new.calls("take_lead", after=resigned_at), "it took the slot, not the lease"
    await new.sharing.prepare()
    reads = len(new.calls("read_demands"))
    await new.sharing.before_tick()  # its first tick: straight to Stitch
    assert len(new.calls("read_demands")) == reads, "the first tick read the demands again"
    await new.sharing.before_tick()  # the next ticks read them
    assert len(new.calls("read_demands")) == reads + 1
    await new.sharing.publish(big_listing(4))
    assert job_names(await late.sharing.follow(0.5)) == job_names(big_listing(4))
    assert len(late.calls("read_document")) == 1, "the new leader's first listing needed it"
    assert list(world.store.documents) == [document], "a new document for a new leader"
    fresh = await world.start("fresh")  # a follower that begins now: the document
    assert job_names(fresh.latest) == job_names(big_listing(4))
    assert len(fresh.calls("read_document")) == 1


async def test_a_leader_rewrites_the_document_after_another_led_and_every_few_listings() -> None:
    """Two processes may lead at once for a moment (a lease lost to a slow API); both write
    the one document. The one that stays must write it whole again, or followers that need
    it could never rebuild its listings; and it rewrites it every few listings regardless,
    so that no follower stays lost."""
    world = World()
    leader = await world.start("leader")
    follower = await world.start("follower")
    await follower.sharing.announce_if_due(TICK, True, False)
    await leader.sharing.refresh_demands()
    written = []
    for tick in range(1, DOCUMENT_EVERY + 2):
        before = world.store.count("write_document")
        await leader.sharing.publish(big_listing(tick))
        if world.store.count("write_document") > before:
            written.append(tick)
    assert written == [1, DOCUMENT_EVERY], "the document was not rewritten"

    intruder = await world.start("intruder")
    await world.store.view("server").free_the_slot()  # the leader's slot, repossessed
    assert await intruder.sharing.try_lead() is True
    await intruder.sharing.refresh_demands()
    await intruder.sharing.publish(big_listing(50))  # a second leader, for a moment
    await leader.sharing.refresh_demands()  # the leader sees it
    before = len(leader.calls("write_document"))
    await leader.sharing.publish(big_listing(51))
    assert len(leader.calls("write_document")) == before + 1, "the document was left as is"
    marker = world.store.marker
    assert marker is not None and world.store.documents[marker["doc"]]["seq"] == marker["seq"]
    assert job_names(await follower.sharing.follow(TICK)) == job_names(big_listing(51))


# -- an outage of the Prefect API ----------------------------------------------------------------

LIMIT, WINDOW = 30, 60.0
"""Stitch's jobs budget, ten times faster: 30 requests in any 60 s."""


def most_in_a_window(times: list[float]) -> int:
    """The most of these requests in any window of the budget (as Stitch counts them)."""
    times = sorted(times)
    return max(
        (bisect.bisect_right(times, t) - bisect.bisect_left(times, t - WINDOW + EPSILON))
        for t in times
    )


async def an_account(size: int, interval: float = TICK) -> tuple[World, list[Process]]:
    """Processes of one account at Stitch's budget; the first leads, everyone knows everyone.

    Each listing carries Stitch's clock (the test's).
    """
    world = World(budget=(LIMIT, WINDOW))
    world.make_listing = lambda tick: listing(tick, at=world.clock())
    processes = [await world.start(f"p{i}", interval) for i in range(size)]
    await world.run(HEARTBEAT_SECONDS + 4 * interval)  # the leader heard from everyone
    assert processes[0].leads and {who for _, who in world.listings} == {"p0"}
    return world, processes


async def outage(world: World, seconds: float, *, restart: bool = False) -> tuple[float, float]:
    """The Prefect API cannot be reached for a while (and restarts, if told); when, until when."""
    world.store.reachable = False
    down = world.clock()
    await world.run(seconds)
    if restart:
        world.store.restart()
    world.store.reachable = True
    return down, world.clock()


@pytest.mark.parametrize(
    ("interval", "seconds"),
    [(TICK, 40.0), (TICK, 90.0), (2.0, 90.0)],
    ids=["40s", "90s", "90s-at-the-budget-floor"],
)
async def test_through_an_outage_of_the_api_everyone_lists_at_its_share_within_the_budget(
    interval: float, seconds: float
) -> None:
    """The leader keeps reading Stitch; a process none of whose calls answered for a while
    reads it itself. Each at its share (the budget less a margin, shared by the processes it
    knew and one more), counting what everyone spent before: no window holds more than the
    budget, across the outage's start and its end (at the budget's floor, the leader's
    ticks filled the window before it began). Back, the leader takes its lease up again
    (the server restarted) and leads alone; the others follow again."""
    world, processes = await an_account(8, interval)
    down, up = await outage(world, seconds, restart=True)
    await world.run(WINDOW)

    assert most_in_a_window(world.listed()) <= LIMIT
    share = (LIMIT - 3) // (len(processes) + 1)  # the margin: 2 listings and a request
    for process in processes:
        alone = [at for at in world.listed(process.name, after=down) if at <= up]
        received = [at for at, _ in process.received if down < at <= up]
        assert alone and received, f"{process.name} received nothing during the outage"
        assert most_in_a_window(alone) <= share, f"{process.name} listed beyond its share"
        assert [at for at, _ in process.received if up < at <= up + 3 * interval]
    assert world.listed("p0", after=up + 3 * interval), "the leader stopped listing"
    assert {who for at, who in world.listings if at > up + interval} == {"p0"}
    assert [leaders for at, leaders in world.leaders if at > up] in ([], [{"p0"}])
    assert world.leaders[-1][1] == {"p0"}


async def test_back_from_an_outage_the_leader_counts_what_everyone_spent() -> None:
    """Each follower that read Stitch alone says so as soon as it reaches the API again: how
    many requests, and how long ago each was. The leader counts them as they were made: it
    lists again a tick after the return (not a window after), and only within the room
    they left."""
    world, processes = await an_account(8, 2.0)  # at the budget's floor: no room to spare
    _, up = await outage(world, 90.0, restart=True)
    assert len({who for at, who in world.listings if at > up - WINDOW}) == len(processes)
    await world.run(WINDOW)
    assert most_in_a_window(world.listed()) <= LIMIT
    assert world.listed("p0", after=up)[0] - up <= 2.0 + EPSILON, "the leader waited"


async def test_back_from_an_outage_the_leader_waits_for_no_follower_gone_before_it() -> None:
    """A follower that left before the outage (its demand not yet forgotten) says nothing when
    the API is back: the leader waits only for the followers heard from within a heartbeat
    before the outage began to say what they spent apart, and lists again at once."""
    world, processes = await an_account(4)
    world.kill(processes[3])
    await world.run(2 * HEARTBEAT_SECONDS)  # gone for a while, not forgotten yet
    assert processes[3].sharing.id in processes[0].sharing.demands.known
    _, up = await outage(world, 40.0, restart=True)
    await world.run(30.0)
    listed = world.listed("p0", after=up)
    assert listed and listed[0] - up <= 2 * TICK, "the leader waited for a follower gone"
    assert len(listed) >= 30.0 / TICK - 2
    assert most_in_a_window(world.listed()) <= LIMIT
    assert processes[0].sharing.election.lease in world.store.leases, "it leads with no lease"


async def test_a_process_that_never_heard_how_many_share_the_account_does_not_poll_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Processes starting together, the API down before the leader published how many they
    are: the others' share is unknown (a guess could overrun the budget), so they wait for
    the API, and say so. The leader, which counts its followers (none heard from yet, and
    one more that may have joined unheard), reads Stitch at its share."""
    caplog.set_level(logging.WARNING, logger="prefect_stitch._poll")
    world = World(budget=(LIMIT, WINDOW))
    world.make_listing = lambda tick: listing(tick, at=world.clock())
    processes = [await world.start(f"p{i}") for i in range(6)]
    down, up = await outage(world, 90.0, restart=True)
    assert {who for at, who in world.listings if down < at <= up} == {"p0"}
    assert most_in_a_window(world.listed()) <= LIMIT
    unknown = [r for r in caplog.records if "never heard how many" in r.getMessage()]
    assert len(unknown) == len(processes) - 1


async def test_a_leader_whose_lease_a_restarted_server_forgot_takes_the_slot_again_at_once() -> (
    None
):
    """Prefect keeps leases in memory: a restarted server knows none, while its database
    still counts the slot taken, so that nobody could take it until a follower called the
    leader silent (a lease and two ticks). The leader, whose renewal says the lease is not
    found and which hears of no other leader, frees the slot and takes it again: at once
    when the API comes back, at its next renewal when the restart went unnoticed."""
    world, processes = await an_account(4)
    leader, followers = processes[0], processes[1:]
    _, up = await outage(world, 10.0, restart=True)
    await world.run(TICK)
    assert leader.leads and leader.sharing.election.lease in world.store.leases
    assert max(leader.calls("take_lead")) - up <= TICK / 6 + EPSILON

    world.store.restart()  # without an outage: the next renewal finds out
    restarted = world.clock()
    await world.run(RENEW_SECONDS + TICK)
    assert leader.leads and leader.sharing.election.lease in world.store.leases
    assert max(leader.calls("take_lead")) - restarted <= RENEW_SECONDS + TICK
    for follower in followers:
        assert not follower.calls("free_the_slot") and not follower.leads
        assert [at for at, _ in follower.received if at > world.clock() - 2 * TICK]
    assert {who for _, who in world.listings} == {"p0"}


async def test_a_leader_that_cannot_renew_its_lease_for_a_while_keeps_leading() -> None:
    """A renewal that times out says nothing of the lead: the leader keeps reading Stitch
    and publishing, and renews later. Only the API's answer that the lease is gone (and
    another leader heard of) ends its lead."""
    world, processes = await an_account(3)
    leader = processes[0]
    world.store.fail("renew_lease", times=2, transient=True, process="p0")
    began = world.clock()
    await world.run(3 * RENEW_SECONDS)
    assert len(leader.calls("renew_lease", after=began)) >= 3, "it did not renew again"
    assert leader.leads and {who for _, who in world.listings} == {"p0"}
    for follower in processes[1:]:
        assert [at for at, _ in follower.received if at > world.clock() - 2 * TICK]


async def test_a_leader_gone_during_an_outage_is_replaced_a_tick_after_the_return() -> None:
    """Its lease died with the server; the slot still counts taken. A follower back from
    polling alone that hears no leader within a tick (and a little) frees it and leads."""
    world, processes = await an_account(4)
    world.store.reachable = False
    await world.run(5.0)
    world.kill(processes[0])
    _, up = await outage(world, 35.0, restart=True)
    await world.run(TICK + 2.0 + 2 * TICK)
    leaders = [p for p in processes[1:] if p.leads]
    assert len(leaders) == 1, [p.name for p in leaders]
    [new] = leaders
    assert [at for at in world.listed(new.name, after=up) if at <= up + 2 * TICK + 2.0]
    for follower in processes[1:]:
        assert [at for at, _ in follower.received if at > up + TICK]
    assert most_in_a_window(world.listed()) <= LIMIT


async def test_a_listing_older_than_one_the_process_read_alone_is_not_handed_on() -> None:
    """Nothing judged twice, nothing judged backwards: back from an outage, the leader's first
    listing (read before the follower's own, by Stitch's clock) is not news for its waiters."""
    world = World()
    leader = await world.start("leader")
    follower = await world.start("follower")
    await follower.sharing.announce_if_due(TICK, True, False)
    await leader.sharing.refresh_demands()
    await follower.sharing.after_tick(listing(7, at=100.0))  # read alone
    await leader.sharing.publish(listing(5, at=90.0))
    assert await follower.sharing.follow(TICK) is None
    await leader.sharing.publish(listing(8, at=110.0))
    assert (await follower.sharing.follow(TICK) or listing(0)).tick == 8


async def test_a_process_says_once_that_it_polls_alone_and_once_that_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="prefect_stitch._poll")
    world, processes = await an_account(3)
    await outage(world, 40.0)
    await world.run(2 * TICK)
    said = [r for r in caplog.records if r.name.startswith("prefect_stitch._poll")]
    alone = [r for r in said if r.levelno >= logging.WARNING]
    back = [r for r in said if r.levelno == logging.INFO and "answers again" in r.getMessage()]
    assert len(alone) == len(back) == len(processes), [r.getMessage() for r in said]
    for record in alone:
        message = record.getMessage()
        assert "Cannot reach the Prefect API" in message
        assert "about 6.8 of 30 jobs requests per 60 s" in message, message
