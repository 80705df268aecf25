"""What followers need: a follower's heartbeat, and the leader's reading of every demand.

One role of the shared poll (`prefect_stitch._poll.sharing`). A follower announces its
demand (the poll interval it wants, whether it needs the loads listing, a heartbeat
counter, the jobs requests it made itself, in all and within the budget's window, how long
it has waited); the leader reads the demands every tick, forgets a follower whose counter
stops moving for three heartbeats (while the demands could be read), counts the followers'
requests in its rate limiter (a follower it had not heard of, those within the window),
and names as successors the followers whose wait began last.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from prefect_stitch._poll.member import Member
from prefect_stitch._poll.schedule import HEARTBEAT_SECONDS
from prefect_stitch._poll.store import JSON, StoreError

__all__ = ["Demands", "Heartbeat"]

_logger = logging.getLogger(__name__)

Wanted = tuple[float, bool, bool]
"""A demand: the poll interval wanted, extractions wanted, loads wanted."""


class Heartbeat:
    """A follower's announcements of its demand (its own jobs requests included).

    Args:
        member: This process in the account's shared poll.
        spent_apart: Its requests made while it could not reach the Prefect API: how long
            ago each within the budget's window was (the newest first), and how many older.

    Example:
        ```python
        from prefect_stitch._poll.memory import MemoryStore
        from prefect_stitch._poll.sharing import Sharing
        from prefect_stitch._ratelimit import SlidingWindowLimiter

        sharing = Sharing(MemoryStore().view("a"), SlidingWindowLimiter(30, 600.0), 116078)
        print(sharing.heartbeat.beat((30.0, True, False))["n"])  # 1: its first heartbeat
        ```
    """

    def __init__(
        self, member: Member, spent_apart: Callable[[], tuple[list[float], int]] = lambda: ([], 0)
    ) -> None:
        self.member = member
        self.spent_apart = spent_apart
        self.began = member.clock()
        """When this process began to follow (or lead) the account."""
        self.announced: Wanted | None = None
        """The demand this follower last announced."""
        self.count = 0
        self._made: deque[tuple[float, int]] = deque([(self.began, 0)])
        """Its limiter's count of its own requests at each heartbeat (from when it began)."""
        self._made_before = member.limiter.local_requests

    def beat(self, demand: Wanted) -> JSON:
        """The next announcement of a demand (counted).

        Args:
            demand: What this follower wants now.

        Returns:
            The demand's value, as the leader reads it.
        """
        interval, extractions, loads = demand
        self.announced = demand
        self.count += 1
        value: JSON = {
            "i": interval,
            "e": extractions,
            "l": loads,
            "n": self.count,
            "r": self.member.limiter.local_requests,
            "w": self._within_window(),
            "a": round(self.member.clock() - self.began, 1),
        }
        apart, older = self.spent_apart()
        if apart or older:  # the Prefect API could not be reached lately
            value.update(o=apart, p=older)
        return value

    def _within_window(self) -> int:
        """Its own jobs requests within the budget's window (about: counted at heartbeats).

        A leader that had not heard of this follower counts these (one that takes over
        as the Prefect API comes back, say): those made since, in ``r``.
        """
        now, limiter = self.member.clock(), self.member.limiter
        made = limiter.local_requests - self._made_before
        self._made.append((now, made))
        while len(self._made) > 1 and self._made[1][0] <= now - limiter.period:
            self._made.popleft()
        return made - self._made[0][1]

    async def announce(self, value: JSON) -> None:
        """Write the demand (a failure is only logged: the next heartbeat tries again)."""
        try:
            await self.member.store.write_demand(self.member.id, value)
        except StoreError as exc:
            _logger.debug("Could not announce the demand of %s: %s", self.member.id, exc)

    async def withdraw(self) -> None:
        """Remove this process's demand (it leads, or leaves)."""
        with contextlib.suppress(StoreError):
            await self.member.store.delete_demand(self.member.id)


@dataclass
class _Demand:
    """A follower's demand as the leader last read it."""

    interval: float
    extractions: bool
    loads: bool
    counter: int
    requests: int
    seen_at: float  # when the counter last moved, outages of the store not counted
    heard_at: float  # when the counter last moved
    began: float  # when its wait began, as this process's clock reckons it


class Demands:
    """The leader's reading of its followers' demands (their jobs requests counted).

    Args:
        member: This process in the account's shared poll (its own demand is not a
            follower's).
        count_apart: Counts a follower's requests made while the Prefect API could not be
            reached, by how long ago each was (else they count as made when heard of).

    Example:
        ```python
        from prefect_stitch._poll.demand import Demands
        from prefect_stitch._poll.member import Member
        from prefect_stitch._poll.memory import MemoryStore
        from prefect_stitch._ratelimit import SlidingWindowLimiter

        store = MemoryStore().view("a")
        demands = Demands(Member("a", 116078, store, SlidingWindowLimiter(30, 600.0)))
        print(demands.wanted())  # (None, False, False): no follower
        ```
    """

    def __init__(
        self, member: Member, count_apart: Callable[[list[float]], None] | None = None
    ) -> None:
        self.member = member
        self.count_apart = count_apart
        self.known: dict[str, _Demand] = {}
        """The followers heard from, by id."""
        self.fresh = False
        """They were just read (as this process took the lead): its first tick need not."""
        self._unread_since: float | None = None
        """When the demands could no longer be read (``None`` while they can)."""

    async def read(self) -> None:
        """Read the followers' demands; forget the silent ones (and remove their demand).

        A follower is silent when its counter stopped moving for three heartbeats while
        the demands could be read: while they cannot (the Prefect API down), nobody is
        forgotten, and the time it lasted is not held against anyone afterwards.
        """
        member = self.member
        try:
            values = await member.store.read_demands()
        except StoreError as exc:
            _logger.debug("Could not read the demands of %s: %s", member.id, exc)
            if self._unread_since is None:
                self._unread_since = member.clock()
            return
        now = member.clock()
        if self._unread_since is not None:
            for demand in self.known.values():
                demand.seen_at += now - self._unread_since
            self._unread_since = None
        for follower, value in values.items():
            if follower != member.id and isinstance(value, dict):
                self._take(follower, value, now)
        for follower, demand in list(self.known.items()):
            gone = follower not in values
            if gone or now - demand.seen_at > 3 * HEARTBEAT_SECONDS:
                del self.known[follower]
                if not gone:
                    with contextlib.suppress(StoreError):
                        await member.store.delete_demand(follower)

    def _take(self, follower: str, value: JSON, now: float) -> None:
        """A follower's demand as read: count the requests it made since it was last read."""
        counter, spent = int(value.get("n", 0)), int(value.get("r", 0))
        known = self.known.get(follower)
        if known is not None and known.counter == counter:
            return
        # One not heard of before: the requests it made within the window (it may have
        # polled alone while the Prefect API was down).
        new = spent - known.requests if known else int(value.get("w", 0))
        if self.count_apart is not None:  # made apart: counted as they were made
            apart = [float(age) for age in value.get("o") or []][: max(new, 0)]  # the newest
            self.count_apart(apart)
            new -= len(apart)
            if known:  # and those that left the window since are no longer counted
                new -= min(int(value.get("p", 0)), max(new, 0))
        self.member.limiter.record(new)
        self.known[follower] = _Demand(
            interval=float(value.get("i", 30.0)),
            extractions=bool(value.get("e", True)),
            loads=bool(value.get("l", False)),
            counter=counter,
            requests=spent,
            seen_at=now,
            heard_at=now,
            # From the follower's own count of seconds (no clocks compared).
            began=known.began if known else now - float(value.get("a", 0.0)),
        )

    def heard_all_since(self, moment: float, alive_since: float) -> bool:
        """Whether every follower known to be alive announced its demand since then.

        Args:
            moment: This process's clock.
            alive_since: A follower whose demand had not moved since then is not waited for
                (it has left, most likely: its demand is forgotten later).
        """
        demands = list(self.known.values())
        return all(d.heard_at >= moment for d in demands if d.heard_at >= alive_since)

    def wanted(self) -> tuple[float | None, bool, bool]:
        """The followers' fresh demand: shortest interval, extractions wanted, loads wanted.

        Waiters' threads call it too (through the poller's tick) while the poller's thread
        updates the demands: it reads one copy of them (``list()`` of a dict copies it
        whole under the GIL), never the live dict twice.
        """
        demands = list(self.known.values())
        if not demands:
            return None, False, False
        return (
            min(d.interval for d in demands),
            any(d.extractions for d in demands),
            any(d.loads for d in demands),
        )

    def began_last(self, count: int) -> list[str]:
        """The followers whose wait began last, latest first (the likeliest to wait longest).

        Args:
            count: How many.

        Returns:
            Their ids.
        """
        latest = sorted(self.known.items(), key=lambda item: item[1].began, reverse=True)
        return [follower for follower, _ in latest[:count]]
