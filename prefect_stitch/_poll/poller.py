"""One shared extraction poller per Stitch account: one listing serves every waiting sync.

``GET /v4/{client_id}/extractions`` returns the last completed job of **every** source
of the account, and the account may make only 30 such requests per 10 minutes. So a
process never polls per source: each account has one poller that, once per *tick*,
reads the whole listing (all its pages) and hands it to every sync waiting on that
account. A tick costs as many requests as there are pages, whatever the number of
waiting syncs.

The tick adapts to the budget: it is the shortest poll interval any waiter asked for,
but never shorter than ``pages * period / limit`` (with the default budget and one page,
one listing every 20 s), so the account's budget holds even with hundreds of sources.
The requests themselves also go through the account's
[`SlidingWindowLimiter`][prefect_stitch._ratelimit.SlidingWindowLimiter], which other
jobs requests (logs, loads) share.

The poller runs in its own daemon thread with its own event loop, because Prefect runs
async tasks on several threads and loops; waiters on any loop receive each listing
through a thread-safe hand-off. The thread starts with the first waiter and ends when
the last one leaves.

Across processes the poll is shared (`prefect_stitch._poll.sharing`): between its ticks the
loop asks its [`Sharing`][prefect_stitch._poll.sharing.Sharing] what is due (follow the
leader, or lead and list when a tick is due); it reads Stitch only while it leads, or while
it cannot reach the Prefect API (then at its share of the budget).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefect_stitch._poll.prefect_store import PrefectStore
from prefect_stitch._poll.reading import read_listing
from prefect_stitch._poll.sharing import Sharing, sharing_enabled
from prefect_stitch._poll.snapshot import Snapshot
from prefect_stitch._poll.store import PollStore
from prefect_stitch._ratelimit import SlidingWindowLimiter, limiter_for
from prefect_stitch.credentials import StitchCredentials

if TYPE_CHECKING:
    from prefect_stitch.client import StitchClient

__all__ = ["AccountPoller", "Snapshot", "Watch", "poller_for", "pollers_of"]


@dataclass(eq=False)
class Watch:
    """A waiter's subscription to its account's poller.

    Example:
        ```python
        from prefect_stitch._poll import poller_for

        async def next_listing(credentials, client_id: int) -> None:
            watch = poller_for(credentials, client_id).watch(poll_interval_seconds=30)
            try:
                snapshot = await watch.next_snapshot(wait_seconds=120)
                print(len(snapshot.records))
            finally:
                watch.close()
        ```
    """

    poller: AccountPoller
    poll_interval_seconds: float
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Snapshot] = field(default_factory=asyncio.Queue)
    extractions: bool = True
    loads: bool = False
    primed: asyncio.Future[Snapshot] | None = None
    """While `baseline` waits: the listing another process published lately, once this
    process takes it up as it joins the account's shared poll."""

    async def next_snapshot(self, wait_seconds: float | None = None) -> Snapshot:
        """Wait for the poller's next listing.

        Args:
            wait_seconds: Seconds to wait at most.

        Returns:
            The listing.

        Raises:
            TimeoutError: No listing arrived in time.
        """
        async with asyncio.timeout(wait_seconds):
            return await self.queue.get()

    async def baseline(self, wait_seconds: float | None = None) -> Snapshot:
        """The account's latest listing if it is at most one tick old, else the next one.

        A listing read before we act is a valid baseline: what it shows for a source is
        a job that ended before we acted. A recent one costs nothing; an old one would
        make every job that ended since look new, so it is not used.

        Args:
            wait_seconds: Seconds to wait at most for a listing.

        Returns:
            The listing (or, when it failed, a snapshot carrying the error).

        Raises:
            TimeoutError: No listing arrived in time.
        """
        latest, tick = self.poller.latest, self.poller.tick_seconds() or 0.0
        if (
            latest is not None
            and time.monotonic() - self.poller.latest_at <= tick
            and self.serves_as_baseline(latest)
        ):
            return latest
        return await self._next_or_primed(wait_seconds)

    def serves_as_baseline(self, snapshot: Snapshot) -> bool:
        """Whether a listing has what this waiter needs (the extractions, the loads).

        Args:
            snapshot: A listing.

        Returns:
            True when it does.
        """
        return (snapshot.loads is not None or not self.loads) and (
            snapshot.extractions_read or not self.extractions
        )

    def take_primed(self, snapshot: Snapshot) -> None:
        """A listing published lately, taken up as this process joined (on the waiter's loop).

        Args:
            snapshot: The listing.
        """
        if self.primed is not None and not self.primed.done():
            self.primed.set_result(snapshot)

    async def _next_or_primed(self, wait_seconds: float | None) -> Snapshot:
        """The next listing, or the one published lately that this process takes up.

        A process that just began has no listing yet: it reads the published one as it
        joins, within a second or so, where the next listing may be a tick away.
        """
        primed: asyncio.Future[Snapshot] = self.loop.create_future()
        self.primed = primed
        getter: asyncio.Future[Snapshot] = asyncio.ensure_future(self.queue.get())
        try:
            await asyncio.wait(
                {getter, primed}, timeout=wait_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self.primed = None
            getter.cancel()  # no listing is lost: a cancelled get takes none from the queue
        if getter.done() and not getter.cancelled():
            return getter.result()
        if primed.done():
            return primed.result()
        raise TimeoutError

    def close(self) -> None:
        """Leave the poller (it stops when nobody watches)."""
        self.poller.unwatch(self)


class AccountPoller:
    """The shared extraction poller of one Stitch account in this process.

    Get it with [`poller_for`][prefect_stitch._poll.poller.poller_for].

    Args:
        credentials: Credentials of the account.
        client_id: The account id.
        global_limit_name: A Prefect global concurrency limit (rate limit) to take a
            slot of before each jobs request, shared across processes.
        store: Makes the store through which this poller shares its poll with other
            processes, each time its thread starts (tests: a
            [`MemoryStore`][prefect_stitch._poll.memory.MemoryStore]'s view). By default
            the Prefect API's, when
            [`sharing_enabled`][prefect_stitch._poll.sharing.sharing_enabled].

    Example:
        ```python
        from prefect_stitch._poll import poller_for

        def cost(credentials, client_id: int) -> None:
            poller = poller_for(credentials, client_id)
            print(poller.ticks, poller.requests)
        ```
    """

    def __init__(
        self,
        credentials: StitchCredentials,
        client_id: int,
        *,
        global_limit_name: str | None = None,
        store: Callable[[], PollStore] | None = None,
    ) -> None:
        self.credentials = credentials
        self.client_id = client_id
        self.global_limit_name = global_limit_name
        self._store = store
        self._lock = threading.Lock()
        self._watches: list[Watch] = []
        self._idle_since: float | None = None
        """When the last waiter left (``time.monotonic()``); None while someone waits."""
        self._finishing = False
        """The process exits: no lingering."""
        self._main_task: asyncio.Task[None] | None = None
        """The poller loop's task while it runs (``finish`` cancels it at exit)."""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self.ticks = 0
        """Listings read since the process started."""
        self.requests = 0
        """Jobs requests (pages, retries included) made by this poller."""
        self.last_pages = 1
        self.latest: Snapshot | None = None
        """The latest listing read without error (any waiter may use it as a baseline)."""
        self.latest_at = 0.0
        """When ``latest`` was read (``time.monotonic()``)."""
        self.received = 0
        """Listings received from another process's poller (see `sharing`)."""
        self._sharing: Sharing | None = None
        """The cross-process side of the poll, once it has joined the others."""
        self._settings: Any = None
        self._last_start = -math.inf
        """When the account was last read: a listing of this process started, or one received
        from the leader (``time.monotonic()``)."""

    # -- subscriptions ------------------------------------------------------------

    def watch(
        self, poll_interval_seconds: float, *, extractions: bool = True, loads: bool = False
    ) -> Watch:
        """Subscribe the calling event loop to the next listings.

        Args:
            poll_interval_seconds: How often this waiter would like a listing.
            extractions: The waiter needs the extraction listing.
            loads: The waiter needs the loads listing too (read in the same tick, only
                while some waiter needs it).

        Returns:
            The subscription; close it when done.
        """
        watch = Watch(
            self,
            poll_interval_seconds,
            asyncio.get_running_loop(),
            extractions=extractions,
            loads=loads,
        )
        with self._lock:
            self._watches.append(watch)
            self._idle_since, self._finishing = None, False
            if self._thread is None or not self._thread.is_alive():
                self._start_thread()
            else:
                self._poke()
        return watch

    def unwatch(self, watch: Watch) -> None:
        """Remove a subscription.

        Args:
            watch: The subscription.
        """
        with self._lock:
            if watch in self._watches:
                self._watches.remove(watch)
                if not self._watches:
                    self._idle_since = time.monotonic()
            self._poke()

    def watching(self) -> bool:
        """Whether some waiter of this process watches the account.

        Returns:
            True while a subscription is open.
        """
        with self._lock:
            return bool(self._watches)

    def lists_itself(self) -> bool:
        """Whether this process reads the account's listings itself (leads, or polls alone).

        Returns:
            False while another process's poller is (or is about to be) the one listing,
            or while this one is still joining the others.
        """
        sharing = self._sharing
        if sharing is None:
            return self._store is None and not sharing_enabled()
        return sharing.leading

    def poke(self) -> None:
        """Wake the poller's loop (a waiter or a follower changed what it needs)."""
        self._poke()

    def limiter(self) -> SlidingWindowLimiter:
        """This process's rate limiter of the account's jobs requests.

        Returns:
            The limiter every client of the account in this process shares.
        """
        return limiter_for(
            self.credentials.base_url,
            self.client_id,
            self.credentials.jobs_rate_limit,
            self.credentials.jobs_rate_period_seconds,
        )

    def receive(self, snapshot: Snapshot) -> None:
        """Hand the waiters a listing another process's poller read (see `sharing`).

        Args:
            snapshot: The listing.
        """
        self.prime(snapshot)
        self.received += 1
        self._deliver(snapshot)

    def prime(self, snapshot: Snapshot) -> None:
        """Take a listing another process read as the latest (a baseline), undelivered.

        Args:
            snapshot: The listing.
        """
        self.latest = snapshot
        self.latest_at = time.monotonic()
        self.last_pages = max(snapshot.pages, 1)
        # The account was just read: should this process take the lead, its first listing
        # is due a tick from now, not at once (a hand-over must not list twice).
        self._last_start = max(self._last_start, self.latest_at)

    def _poke(self) -> None:
        """Wake the poller's loop from any thread."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the poller loop just closed
                loop.call_soon_threadsafe(wake.set)

    def tick_seconds(self) -> float | None:
        """The current tick: the shortest wanted interval, floored by the budget.

        A leader whose waiters all left keeps serving its followers for up to
        ``LEADER_LINGER_SECONDS`` (unless the process exits): the same flow run's next
        wait (a sync's trigger, then its wait) then finds it leading still, instead of
        handing the account over and back.

        Returns:
            Seconds between listings, or ``None`` when nobody watches.
        """
        with self._lock:
            local = [watch.poll_interval_seconds for watch in self._watches]
            idle_since, finishing = self._idle_since, self._finishing
        sharing = self._sharing
        leading = sharing is not None and sharing.leading
        remote = sharing.remote_demand()[0] if sharing is not None and leading else None
        if not local:
            lingering = (
                leading
                and not finishing
                and idle_since is not None
                and time.monotonic() - idle_since < LEADER_LINGER_SECONDS
            )
            if remote is None or not lingering:
                return None
        wanted = min([*local, *([remote] if remote is not None else [])])
        return max(wanted, listing_floor_seconds(self.credentials, self.last_pages))

    # -- the poller thread -----------------------------------------------------------

    def _start_thread(self) -> None:
        """Start the poller's thread (call with the lock held)."""
        from prefect.context import SettingsContext

        # The thread outlives the run that started it: it takes the run's Prefect
        # settings (API URL, ...), not its flow-run context.
        self._settings = SettingsContext.get()
        self._thread = threading.Thread(
            target=self._run, name=f"stitch-poller-{self.client_id}", daemon=True
        )
        self._thread.start()
        _finish_at_exit()

    def finish(self, timeout: float) -> None:
        """Wake the poller's thread and give it ``timeout`` seconds to end.

        A thread whose waiters have all left ends within a request or two: a leader hands
        the account over (frees its slot, leaves its last listing) instead of letting the
        followers wait out its lease.

        Args:
            timeout: Seconds to wait at most.
        """
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        with self._lock:
            self._finishing = True
            idle = not self._watches
        loop = self._loop
        if idle and loop is not None:
            # A tick under way (a leader lingering for its followers) is dropped: on a
            # busy Prefect API it can take longer than the process waits, and the
            # hand-over is what the followers need.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._drop_the_tick)
        else:
            self._poke()
        thread.join(timeout)

    def _drop_the_tick(self) -> None:
        """Cancel the poller's loop unless it is already closing (on the loop's thread)."""
        if self._main_task is not None:
            self._main_task.cancel()

    def _run(self) -> None:
        """The thread: the poller's loop, with the Prefect settings of the run that started it."""
        from prefect.context import SettingsContext

        settings = self._settings
        with contextlib.suppress(asyncio.CancelledError):  # `finish` at exit
            if settings is None:
                asyncio.run(self._main())
                return
            with SettingsContext(profile=settings.profile, settings=settings.settings):
                asyncio.run(self._main())

    async def _main(self) -> None:
        self._main_task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        # The pacing (``_last_start``) survives the thread: a thread restarted because its
        # waiters came and went (a trigger's, then a wait's) reads no listing before its
        # tick is due.
        sharing = self._new_sharing()
        try:
            if sharing is not None:
                await self._join(sharing)
            async with self.credentials.get_client(
                global_limit_name=self.global_limit_name
            ) as client:
                while (interval := self.tick_seconds()) is not None:
                    if sharing is not None:
                        step = await sharing.between_ticks(interval, self._wanted, self.last_pages)
                        if step is not None:  # a follower, or a leader held to its share
                            if step.listing is not None:
                                self.receive(step.listing)
                            await self._sleep(step.wake_at - time.monotonic())
                            continue
                    # A leader (or alone): a tick after the last listing, its own or received.
                    # Alone includes a process that cannot reach the Prefect API: its share.
                    remaining = self._last_start + interval - time.monotonic()
                    if remaining > 0:
                        await self._sleep(remaining)
                        continue  # re-evaluate: a waiter may have joined or left
                    await self._tick(client, sharing, interval)
        finally:
            await self._close(sharing)

    def _new_sharing(self) -> Sharing | None:
        """The cross-process side of this thread's poll (None: it polls alone)."""
        if self._store is None and not sharing_enabled():
            return None
        store = (
            self._store()
            if self._store is not None
            else PrefectStore(self.client_id, self.credentials.base_url)
        )
        return Sharing(store, self.limiter(), self.client_id, wake=self._wake_up)

    async def _join(self, sharing: Sharing) -> None:
        """Join the other processes: take what was published lately, then lead if due."""
        # Whatever another process published lately first: with a leader at work this one
        # follows; with none, the listing it holds still makes its first tick due a tick
        # from then, not now. It is no news for the waits (it may predate them): it primes.
        published = await sharing.start(self.tick_seconds() or 30.0)
        if published is not None:
            self.prime(published)
            self._offer_as_baseline(published)
        await sharing.lead_at_start()
        self._sharing = sharing

    async def _tick(self, client: StitchClient, sharing: Sharing | None, interval: float) -> None:
        """Read the account's listing, hand it to the waiters, and publish it."""
        # The tick starts now, whatever the Prefect API's answers cost below.
        self._last_start = time.monotonic()
        if sharing is not None:
            await sharing.before_tick()  # what followers need now
            interval = self.tick_seconds() or interval
        client.global_limit_name = self.global_limit_name
        before = client.requests_made
        snapshot = await self._list(client)
        self.requests += client.requests_made - before
        retry_after = getattr(snapshot.error, "retry_after", None)
        if retry_after:  # Stitch asked us to come back later: the next tick waits
            self._last_start = max(self._last_start, time.monotonic() + retry_after - interval)
        self._deliver(snapshot)
        if sharing is not None:
            await sharing.after_tick(snapshot)

    async def _close(self, sharing: Sharing | None) -> None:
        """Hand the account over (if leading), then end the thread (or start it again)."""
        self._main_task = None  # closing: `finish` must not cut the hand-over below
        if sharing is not None:
            await sharing.settle()  # a lease it took is given back by stop() below
            self._sharing = None
            with contextlib.suppress(Exception):
                await sharing.stop(self.latest)
        with self._lock:
            self._loop = None
            self._wake = None
            if self._thread is threading.current_thread():
                self._thread = None
            orphans = list(self._watches)
        if orphans:  # joined while we were closing: start again for them
            with self._lock:
                if self._thread is None:
                    self._start_thread()

    def _wake_up(self) -> None:
        """Wake the poller's loop (a background step of it ended; on the loop's thread)."""
        if self._wake is not None:
            self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds``, or until poked."""
        assert self._wake is not None
        if seconds <= 0:
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    def _wanted(self) -> tuple[bool, bool]:
        """What the waiters (and, while leading, the followers) need: extractions, loads."""
        with self._lock:
            extractions = any(watch.extractions for watch in self._watches)
            loads = any(watch.loads for watch in self._watches)
        if self._sharing is not None and self._sharing.leading:
            _, remote_extractions, remote_loads = self._sharing.remote_demand()
            extractions, loads = extractions or remote_extractions, loads or remote_loads
        return extractions or not loads, loads

    async def _list(self, client: StitchClient) -> Snapshot:
        """Read the listing (the extractions, the loads, or both, as the waiters need)."""
        self.ticks += 1
        extractions, loads = self._wanted()
        snapshot = await read_listing(
            client, self.client_id, self.ticks, extractions=extractions, loads=loads
        )
        if snapshot.ok:
            self.last_pages = max(snapshot.pages, 1)
            self.latest = snapshot
            self.latest_at = time.monotonic()
        return snapshot

    def _offer_as_baseline(self, snapshot: Snapshot) -> None:
        """Hand a listing published lately to the waiters waiting for a baseline."""
        with self._lock:
            watches = [watch for watch in self._watches if watch.serves_as_baseline(snapshot)]
        for watch in watches:
            with contextlib.suppress(RuntimeError):  # the waiter's loop is gone
                watch.loop.call_soon_threadsafe(watch.take_primed, snapshot)

    def _deliver(self, snapshot: Snapshot) -> None:
        """Hand a listing to every waiter, on the waiter's own loop."""
        with self._lock:
            watches = list(self._watches)
        for watch in watches:
            try:
                watch.loop.call_soon_threadsafe(watch.queue.put_nowait, snapshot)
            except RuntimeError:  # the waiter's loop is gone
                self.unwatch(watch)


_logger = logging.getLogger("prefect_stitch._poll.poller")
_pollers: dict[tuple[str, int, str], AccountPoller] = {}
_pollers_lock = threading.Lock()
POLL_SHARE_OF_BUDGET = 2 / 3
"""The part of the account's jobs budget the listings may take at most: the rest is for
what the leader has not heard of yet (triggers' baselines in processes that just began,
log reads, requests of processes that ended before they said so). With all of it, a batch
of short runs went over Stitch's budget (bench_suspend: 42 in a window of 30)."""


def listing_floor_seconds(credentials: StitchCredentials, pages: int) -> float:
    """The shortest tick the account's budget allows for listings of ``pages`` pages.

    Args:
        credentials: The account's credentials (its jobs budget).
        pages: Pages a listing costs (the extractions, and the loads when awaited).

    Returns:
        Seconds between two listings at least (`POLL_SHARE_OF_BUDGET` of the budget).

    Example:
        ```python
        from prefect_stitch import StitchCredentials
        from prefect_stitch._poll.poller import listing_floor_seconds

        credentials = StitchCredentials(access_token="t", client_id=1)
        print(listing_floor_seconds(credentials, pages=2))  # 60.0 at 30 per 10 minutes
        ```
    """
    allowed = credentials.jobs_rate_limit * POLL_SHARE_OF_BUDGET
    return pages * credentials.jobs_rate_period_seconds / allowed


LEADER_LINGER_SECONDS = 5.0
"""How long a leader whose waiters left keeps serving its followers (see `tick_seconds`)."""
_EXIT_GRACE_SECONDS = 5.0
"""How long a process that exits waits for its idle pollers to hand their accounts over."""


@functools.cache
def _finish_at_exit() -> None:
    """Once per process: at exit, let idle poller threads end (they are daemon threads)."""
    atexit.register(_finish_idle_pollers)


def _finish_idle_pollers() -> None:
    """Give every idle poller's thread the rest of the grace to hand its account over."""
    deadline = time.monotonic() + _EXIT_GRACE_SECONDS
    with _pollers_lock:
        pollers = list(_pollers.values())
    for poller in pollers:
        if not poller.watching():  # nobody waits: it is closing, let it finish
            poller.finish(max(deadline - time.monotonic(), 0.0))


def poller_for(
    credentials: StitchCredentials, client_id: int, *, global_limit_name: str | None = None
) -> AccountPoller:
    """The process-wide poller of one account (created on first use).

    Args:
        credentials: Credentials of the account.
        client_id: The account id.
        global_limit_name: A Prefect global concurrency limit shared across processes.

    Returns:
        The poller.

    Example:
        ```python
        from prefect_stitch._poll import poller_for

        def same(credentials) -> None:
            assert poller_for(credentials, 116078) is poller_for(credentials, 116078)
        ```
    """
    digest = hashlib.sha256(credentials.access_token.get_secret_value().encode()).hexdigest()
    key = (credentials.base_url, client_id, digest)
    with _pollers_lock:
        poller = _pollers.get(key)
        if poller is None:
            poller = _pollers[key] = AccountPoller(
                credentials, client_id, global_limit_name=global_limit_name
            )
        elif global_limit_name and not poller.global_limit_name:
            poller.global_limit_name = global_limit_name
        return poller


def pollers_of(credentials: StitchCredentials) -> list[AccountPoller]:
    """Every poller of this process that uses these credentials' host and token.

    Args:
        credentials: The credentials.

    Returns:
        The pollers (one per account).

    Example:
        ```python
        from prefect_stitch._poll import pollers_of

        def cost(credentials) -> int:
            return sum(poller.requests for poller in pollers_of(credentials))
        ```
    """
    digest = hashlib.sha256(credentials.access_token.get_secret_value().encode()).hexdigest()
    with _pollers_lock:
        return [
            poller
            for (base_url, _, token), poller in _pollers.items()
            if base_url == credentials.base_url and token == digest
        ]
