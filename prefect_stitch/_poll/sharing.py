"""One poll per account across every process, through the Prefect API they already use.

Every process that watches a Stitch account has an
[`AccountPoller`][prefect_stitch._poll.poller.AccountPoller]. With no other server and no setup,
they elect one of them to read Stitch and share what it reads, through three Prefect
primitives, over plain HTTP requests (no connection held open: a Prefect server on
SQLite serves at most 100 requests at a time, websockets included):

* **Leadership** is the one slot of a Prefect global concurrency limit
  (``stitch-poll-<client_id>-<host>``, limit 1, created on first use), taken with a
  *lease* the leader renews. Only the leader reads Stitch's listings. A process that
  cannot take the slot follows.
* **Followers announce their demand** in an unkeyed Prefect artifact each (type
  ``stitch-poll-demand-<client_id>-<host>``, a few dozen characters): the poll interval
  they want, whether they need the loads listing, a heartbeat counter, and the jobs
  requests they made themselves (their log reads). The leader reads them every tick;
  one whose counter stops moving for three heartbeats is gone (its demand is removed).
* **The leader publishes each listing** it reads (the account's extraction records, and
  its load records while someone needs them), a lone leader too: a process that joins
  takes it as its baseline at once. The marker (an unkeyed artifact, type
  ``stitch-poll-marker-<client_id>-<host>``) carries the listing's header and the rows
  changed since the whole listing was last written to the account's listing artifact
  (type ``stitch-poll-listing-<client_id>-<host>``, updated in place and passed from
  leader to leader: the database does not grow); see `prefect_stitch._poll.listing`. A
  follower rebuilds the listing from the marker alone, or from the listing artifact and
  the changes when it begins. The leader's tick is the shortest interval anyone wants,
  floored so that listings take two thirds of the budget at most.
* **The budget is shared**: the marker carries the jobs requests the leader has
  made, each demand those of its follower; every process counts the others' requests in
  its own rate limiter as it learns of them, so the leader paces every process's
  requests, and a process that takes over inherits the budget already spent.
* **Take-over**: a leader whose last waiter leaves (its process exiting included) marks
  the marker "resigned", its last listing still readable, names three
  successors and hands its lease to the first, which takes it up by renewing it (no
  database write); should it never lead, the next named frees that lease and takes the
  slot a tick later. With no follower known, the leader frees its slot. A leader that
  dies keeps its slot until its lease expires (Prefect's shortest lease is 60 s; a
  server's repossessor frees it then); a follower that has seen no new listing for a
  lease's length plus two ticks frees the slot itself and takes it.
* If the Prefect API cannot coordinate (no concurrency leases, no permission), a process
  polls alone rather than wait for listings that will never come.
* If the Prefect API cannot be reached (a server down or restarting), the leader keeps
  reading Stitch and leading, and a process none of whose calls answered for a while polls
  alone; both at their share of the budget (`prefect_stitch._poll.isolation`). Back, each
  says what it spent; a leader whose lease a restarted server forgot takes the slot again.

Prefect Cloud and a self-hosted server work alike. Without a Prefect API URL (the
ephemeral API of a single process), every process polls for itself.

The protocol is split by role: the election (`prefect_stitch._poll.election`), the demand
(`prefect_stitch._poll.demand`), the publication (`prefect_stitch._poll.publication`),
the following (`prefect_stitch._poll.following`) and the isolation of a process that
cannot reach the API (`prefect_stitch._poll.isolation`); every timing rule and timer is in
`prefect_stitch._poll.schedule`; every Prefect API call is behind a store
(`prefect_stitch._poll.store`, `prefect_stitch._poll.prefect_store`). This module's
[`Sharing`][prefect_stitch._poll.sharing.Sharing] puts them together for the poller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from prefect_stitch._poll.demand import Demands, Heartbeat
from prefect_stitch._poll.election import Election, Lead
from prefect_stitch._poll.following import Following
from prefect_stitch._poll.isolation import Isolation
from prefect_stitch._poll.listing import HeldListing
from prefect_stitch._poll.member import Member
from prefect_stitch._poll.publication import Publication
from prefect_stitch._poll.schedule import HEARTBEAT_SECONDS, Schedule
from prefect_stitch._poll.snapshot import Snapshot
from prefect_stitch._poll.store import JSON, PollStore, StoreError
from prefect_stitch._ratelimit import SlidingWindowLimiter

__all__ = ["Sharing", "Step", "sharing_enabled"]

_ENV_SWITCH = "PREFECT_STITCH_SHARED_POLLING"
SUCCESSORS = 3
"""Followers a resigning leader names to take over, in order."""

_logger = logging.getLogger(__name__)


def sharing_enabled() -> bool:
    """Whether pollers share one poll per account through the Prefect API.

    On when a Prefect API URL is set (a server or Prefect Cloud), unless
    ``PREFECT_STITCH_SHARED_POLLING`` is ``0``/``false``/``off``.

    Returns:
        True when listings are shared across processes.

    Example:
        ```python
        from prefect_stitch._poll import sharing_enabled

        print(sharing_enabled())
        ```
    """
    if os.environ.get(_ENV_SWITCH, "").strip().lower() in ("0", "false", "off", "no"):
        return False
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


@dataclass(frozen=True)
class Step:
    """What a follower's step between ticks brought, and when the next is due.

    Attributes:
        listing: A new listing from the leader, for the waiters.
        wake_at: When the follower has something to do next (``time.monotonic()``).

    Example:
        ```python
        from prefect_stitch._poll.sharing import Step

        print(Step(listing=None, wake_at=12.5).wake_at)  # 12.5
        ```
    """

    listing: Snapshot | None
    wake_at: float


class Sharing:
    """The cross-process side of one account's poller (runs on the poller's event loop).

    It answers the poller's questions (between ticks: follow, or lead?), and does what is
    due through its roles.

    Args:
        store: The account's store (the Prefect API's, or a test's).
        limiter: This process's rate limiter of the account's jobs requests.
        client_id: The account (for the log).
        wake: Wakes the poller's loop (a try for the lead in the background ended).
        clock: Seconds, monotonic (a test's own clock).
        rng: Spreads the tries of followers that no resigning leader named.

    Example:
        ```python
        import asyncio
        from prefect_stitch._poll.memory import MemoryStore
        from prefect_stitch._poll.sharing import Sharing
        from prefect_stitch._ratelimit import SlidingWindowLimiter

        async def main() -> None:
            sharing = Sharing(MemoryStore().view("a"), SlidingWindowLimiter(30, 600.0), 1)
            await sharing.start(30.0)
            print(await sharing.lead_at_start())  # True: nobody else leads
            await sharing.stop(None)

        asyncio.run(main())
        ```
    """

    def __init__(
        self,
        store: PollStore,
        limiter: SlidingWindowLimiter,
        client_id: int,
        *,
        wake: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.store = store
        self.client_id = client_id
        self._wake = wake
        self.schedule = Schedule(clock, rng)
        member, held = Member(self.id, client_id, store, limiter, clock), HeldListing()
        self.isolation = Isolation(member)
        store.listen(self.isolation.reached)
        self.election = Election(member)
        self.heartbeat = Heartbeat(member, self.isolation.spent_apart)
        self.demands = Demands(member, self.isolation.count_theirs)
        self.publication = Publication(member, held)
        self.following = Following(member, held)
        self._own_latest: tuple[float, Snapshot] | None = None
        """The newest listing this process read itself, and when."""
        self._lead_try: asyncio.Task[bool] | None = None
        """A try for the lead, in the background: following goes on meanwhile."""
        self._announcing: asyncio.Task[None] | None = None
        """A heartbeat's write, in the background: a slow write must not hold up following."""
        self._cleanup: asyncio.Task[None] | None = None
        """The removal of this process's demand as it took the lead, in the background."""

    @property
    def leading(self) -> bool:
        """Whether this process leads the account's poll (or polls alone)."""
        return self.election.leading

    def remote_demand(self) -> tuple[float | None, bool, bool]:
        """The followers' fresh demand: shortest interval, extractions wanted, loads wanted."""
        return self.demands.wanted()

    # -- the poller's questions -----------------------------------------------------------------

    async def start(self, interval: float) -> Snapshot | None:
        """Open the store and read what another process published lately.

        With a leader at work this process follows; with none, the listing it holds
        still makes its first tick due a tick from then, not now (at 50 processes starting
        together, each one leading in turn listed the account at once).

        Args:
            interval: The poll interval this process wants.

        Returns:
            The listing published lately, if any. It may predate the waits it serves,
            which must not take it for a listing read after they acted: it only becomes
            the poller's latest (a baseline) and paces its first tick.
        """
        await self.store.open()
        return await self.follow(interval)

    async def lead_at_start(self) -> bool:
        """Take the lead now unless a leader was heard from lately (see `start`).

        Returns:
            True when this process now leads.
        """
        if not self.following.received:  # nothing lately: no leader to wait for
            self.schedule.try_now()
        return self.schedule.attempt_due() and await self._take_the_lead()

    async def between_ticks(
        self, interval: float, wanted: Callable[[], tuple[bool, bool]], pages: int = 1
    ) -> Step | None:
        """Do what is due before the poller's next tick.

        Args:
            interval: The poll interval this process wants.
            wanted: What this process's waiters need: extractions, loads.
            pages: The pages its next listing would cost (its last listing's).

        Returns:
            ``None`` when this process may list (its tick is due a tick after the last
            listing): it leads, or it cannot reach the Prefect API and polls alone, within
            its share of the budget; else what following brought and when to come back.
        """
        await self.election.step_down_if_told()
        if self._lead_try is not None and self._lead_try.done():
            if not self._lead_try.cancelled():
                self._lead_try.exception()  # an unexpected failure: the next try, later
            self._lead_try = None
        self.isolation.check(interval)
        if self.leading and self._lead_try is None:
            return await self._lead_step(interval, pages)
        return await self._follow_step(interval, wanted, pages)

    async def _lead_step(self, interval: float, pages: int) -> Step | None:
        """A leader lists when due, unless it waits for room (`prefect_stitch._poll.isolation`)."""
        if self.isolation.restrained(leading=True) and self.schedule.probe_due(interval):
            await self._probe(interval)
        if self.isolation.came_back():  # publish what it read meanwhile (its followers
            await self._publish_own()  # hear it is back), and renew: a restart forgets leases
            await self.election.renew()
        now = self.schedule.clock()
        if not self.leading:  # the API said another leads
            return Step(None, now)
        delay = self.isolation.delay(pages) if self.isolation.restrained(leading=True) else 0.0
        return None if delay <= 0 else Step(None, min(now + delay, self.schedule.probe_at()))

    async def _probe(self, interval: float) -> None:
        """A leader held to its share: can the API be reached, have its followers said?

        Back, it waits for the followers heard from a heartbeat before the outage began
        (the others had left) to say what they spent apart, a heartbeat at most.
        """
        back, apart = self.isolation.back_at, self.isolation.apart_since
        if self.isolation.failing:
            with contextlib.suppress(StoreError):
                await self.store.read_marker()
        elif back is not None:  # back: its followers say what they spent while apart
            await self.refresh_demands()
            alive_since = (apart or back) - HEARTBEAT_SECONDS - interval
            heard = self.demands.heard_all_since(back, alive_since)
            if heard or self.schedule.clock() - back > HEARTBEAT_SECONDS:
                self.isolation.heard()

    async def _follow_step(
        self, interval: float, wanted: Callable[[], tuple[bool, bool]], pages: int
    ) -> Step | None:
        """A follower (or one whose try for the lead is under way) follows, or polls alone."""
        if not self.leading and self.following.silent(interval):
            self.following.silence_broken()
            await self.election.free_the_slot()
            self.schedule.try_now()
        if not self.leading and self.schedule.unheard_due():  # the leader did not come back
            await self.election.free_the_slot("since the Prefect API answers again")
            self.schedule.try_now()
        back = self.isolation.came_back()  # it says at once what it spent meanwhile
        if back and self.isolation.back_at is not None:  # the leader is getting back too
            self.schedule.back(interval)
        if self._lead_try is None and not self.isolation.failing and self.schedule.attempt_due():
            # On a busy Prefect API a try can take many seconds: the follower keeps
            # reading the leader's listings meanwhile. (None while the API cannot be
            # reached: it would fail, and it must not take the slot as the API comes back.)
            self._lead_try = asyncio.create_task(self._take_the_lead())
            self._lead_try.add_done_callback(lambda _: self._wake())
        if self._announcing is None or self._announcing.done():
            announcing = self._announce_if_due(interval, *wanted(), now=back)
            if announcing is not None:
                announcing.add_done_callback(lambda _: self._wake())
                self._announcing = announcing
        listing = await self.follow(interval) if self.schedule.follow_due() else None
        writing = self._announcing is not None and not self._announcing.done()
        wake_at = self.schedule.wake_at(
            trying=self._lead_try is not None or self.isolation.failing,
            announcing=self.leading or writing,
        )
        if self.isolation.restrained(leading=False):  # alone: its own tick, at its share
            delay = self.isolation.delay(pages)
            if delay <= 0:
                return None
            wake_at = min(wake_at, self.schedule.clock() + delay)
        if self.isolation.returned:  # the API answered as it looked: say so without delay
            wake_at = self.schedule.clock()
        return Step(listing, wake_at)

    async def before_tick(self) -> None:
        """What followers need now: read the demands (unless the lead was just taken).

        Nothing while the API cannot be reached (a call then answers the probes alone).
        """
        if not self.leading or self.isolation.failing:  # alone, or apart
            return
        if self.demands.fresh:
            self.demands.fresh = False
            return
        await self.refresh_demands()

    async def after_tick(self, snapshot: Snapshot) -> None:
        """Publish the listing the leader read, and renew its lease if due.

        Args:
            snapshot: The listing (this process's own: a leader's, or one it read alone).
        """
        if snapshot.ok:
            self._own_latest = (self.schedule.clock(), snapshot)
        if self.isolation.failing:  # it publishes and renews as soon as the API answers
            return
        await self.publish(snapshot)
        if self.leading and self.election.lease is not None and self.schedule.renewal_due():
            await self.election.renew()

    async def settle(self) -> None:
        """Let the background steps end (a lease taken is given back by `stop`)."""
        lead, self._lead_try = self._lead_try, None
        if lead is not None:
            with contextlib.suppress(BaseException):
                await lead
        if self._announcing is not None:  # done before the demand is removed, not after
            with contextlib.suppress(Exception):
                await self._announcing

    async def stop(self, latest: Snapshot | None) -> None:
        """Resign (if leading) and withdraw this process's demand.

        Args:
            latest: The newest listing this process read (it goes with a resignation).
        """
        try:
            if self.leading:
                await self._resign(latest)
            if self._cleanup is not None:
                with contextlib.suppress(Exception):
                    await self._cleanup
            await self.heartbeat.withdraw()
        finally:
            with contextlib.suppress(Exception):
                await self.store.close()

    # -- the steps --------------------------------------------------------------------------

    async def follow(self, interval: float) -> Snapshot | None:
        """Pick up the leader's newest listing, if there is one (a follower, often).

        The next listing is due about a tick after the last one: a follower looks then,
        and a few times a tick until it comes.

        Args:
            interval: The poll interval this process wants.

        Returns:
            The new listing, for the waiters; ``None`` when there is none (or it is old).
        """
        self.schedule.looking(interval, self.following.last_received)
        marker = await self.following.look()
        if marker is None:
            return None
        resigned = bool(marker.get("resigned"))
        if resigned:
            self._heard_resignation(marker, interval)
        elif str(marker.get("leader", "")) != self.id:
            self.election.stale_lease = None  # a leader publishes: no lease to free
        taken = await self.following.take(marker)
        if taken is None:
            return None
        self.schedule.received(interval, self.following.last_received)
        if not self.following.is_news(taken, interval):
            return None
        if not resigned:  # a leader at work: no try for the lead while it publishes
            # (one planned after a resignation included: that one has a successor)
            self.schedule.leader_at_work(interval)
            self.schedule.heard_again()
            self.election.handed_lease = None
            self.isolation.heard()
            if marker.get("n"):  # how many share the account, as its leader counts them
                self.isolation.sharers = int(marker["n"])
        snapshot = self.following.hand_on(marker, taken)
        own = self._own_latest[1] if self._own_latest else None  # read alone: newer?
        if own is not None and own.stitch_time and snapshot.stitch_time:
            return None if snapshot.stitch_time < own.stitch_time else snapshot
        return snapshot

    def _heard_resignation(self, marker: JSON, interval: float) -> None:
        """Plan this follower's try for the lead after a leader resigned."""
        resignation = self.following.resignation_in(marker)
        if resignation is not None:
            named = resignation.named
            self.election.heard_resignation(marker, named, resignation.lease)
            place = named.index(self.id) if self.id in named else None
            self.schedule.after_resignation(place, len(named), interval)
        taken = marker.get("taken")
        if taken and taken != self.id:  # the first successor leads: no try, no freeing
            self.schedule.leader_at_work(interval)
            self.election.successor_took_over()

    async def _take_the_lead(self) -> bool:
        """Try for the lead; on success, get ready to publish (read the demands).

        A listing it read alone since the last it received (the API could not be reached)
        is published at once: the followers hear a leader without waiting for its tick.
        """
        if not await self.try_lead():
            return False
        await self.prepare()
        await self._publish_own()
        return True

    async def _publish_own(self) -> None:
        """Publish the listing this leader read itself last, unless published or older."""
        if self._own_latest is None or not self.leading:
            return
        read_at, latest = self._own_latest
        if latest is not self.publication.published and read_at > self.following.last_received:
            await self.publish(latest)

    async def try_lead(self) -> bool:
        """Take the account's leader slot if it is free (or the lease handed to us).

        Returns:
            True when this process now leads (or must poll alone).
        """
        self.schedule.lead_tried()
        # A store that cannot be reached (or not lately) says nothing of another leader.
        how = await self.election.take(
            lambda: self.following.heard_lately() or self.isolation.isolated
        )
        if how in (Lead.HANDED, Lead.SLOT):
            self._now_leading()
        if how is Lead.HANDED:
            # Say so at once (in the background; the first listing waits for it).
            self.election.say_taken()
        return self.leading

    def _now_leading(self) -> None:
        """Lead: renew the lease in a while, publish from the listing held, stop following."""
        self.schedule.leading()
        self.schedule.heard_again()
        self.publication.begin()
        _logger.debug("Poller %s leads account %s", self.id, self.client_id)
        # No longer a follower. In the background: on a busy server a delete took 5 s,
        # and the new leader's first listing is due a tick after the last one.
        self._cleanup = asyncio.create_task(self.heartbeat.withdraw())

    async def prepare(self) -> None:
        """Get ready to publish, as soon as this process leads (before its first tick).

        Reads the followers' demands now, while the first tick is not yet due, so that
        the new leader's first tick goes straight to Stitch and its listing is published
        as soon as it is read: a hand-over then costs the followers little more than the
        tick itself.
        """
        if not self.leading:
            return
        await self.refresh_demands()
        self.demands.fresh = True

    async def refresh_demands(self) -> None:
        """Read the followers' demands (the leader, once a tick); forget the silent ones.

        Also checks that no other process publishes listings: should two lead at once
        (a lease lost to a slow network), the one with the greater id steps down.
        """
        await asyncio.gather(self._look_for_another_leader(), self.demands.read())
        self.isolation.sharers = 1 + len(self.demands.known)

    async def _look_for_another_leader(self) -> None:
        """Read the marker as a leader: the document to update, another leader publishing."""
        try:
            marker = await self.store.read_marker()
        except StoreError:
            return
        if not isinstance(marker, dict):
            return
        other = self.publication.saw_marker(marker)
        if other is not None:
            self.election.saw_another_leader(*other)

    def _announce_if_due(
        self, interval: float, extractions: bool, loads: bool, *, now: bool = False
    ) -> asyncio.Task[None] | None:
        """Tell the leader what this process needs, in the background, if due.

        Every ``HEARTBEAT_SECONDS``, and at once when the demand changed (or ``now``: the
        API answers again, and the leader counts what this process spent meanwhile).
        """
        demand = (interval, extractions, loads)
        changed = now or demand != self.heartbeat.announced
        if self.leading or not self.schedule.heartbeat_now(changed):
            return None
        return asyncio.create_task(self.heartbeat.announce(self.heartbeat.beat(demand)))

    async def announce_if_due(self, interval: float, extractions: bool, loads: bool) -> None:
        """`_announce_if_due`, awaited (a step at a time, as a test drives it)."""
        task = self._announce_if_due(interval, extractions, loads)
        if task is not None:
            await task

    async def publish(self, snapshot: Snapshot) -> None:
        """Publish a listing the leader read (a lone leader too, for whoever joins next).

        A process that joins takes the listing published lately as its baseline at once
        (a sync's trigger in a run that just began): a lone leader that published nothing
        made each newcomer read Stitch itself, over the account's budget in a batch of
        short runs. It costs one write per tick, and no event.

        Args:
            snapshot: The listing.
        """
        if not self.leading:
            return
        await self.election.said_taken()
        await self.publication.publish(snapshot, len(self.demands.known))

    async def _resign(self, latest: Snapshot | None) -> None:
        """Hand the lead over: pass the lease to a successor (or free the slot), then say so.

        The marker keeps the last listing (its changes, its document): a follower may
        not have read it yet, and it may be the one that ends its wait.
        """
        self.election.leading = False
        await self.election.said_taken()
        if self.demands.known:  # who is still there (a follower ending now removed its demand)
            with contextlib.suppress(Exception):
                await self.demands.read()
        # The followers whose wait began last are the likeliest to wait longest (at 50
        # processes, every follower trying for the slot at once made each try take 2-30 s).
        successors = self.demands.began_last(SUCCESSORS)
        marker = await self.publication.resignation(latest)
        await self.election.hand_over(marker, successors)
