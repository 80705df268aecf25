"""What followers need: a follower's heartbeat, and the leader's reading of every demand.

One role of the shared poll (`prefect_stitch._poll.sharing`). A follower announces its
demand (the poll interval it wants, whether it needs the loads listing, a heartbeat
counter, the jobs requests it made itself, how long it has waited); the leader reads the
demands every tick, forgets a follower whose counter stops moving for three heartbeats,
counts the followers' requests in its rate limiter, and names as successors the followers
whose wait began last.
"""

from __future__ import annotations

import contextlib
import logging
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

    Example:
        ```python
        from prefect_stitch._poll.memory import MemoryStore
        from prefect_stitch._poll.sharing import Sharing
        from prefect_stitch._ratelimit import SlidingWindowLimiter

        sharing = Sharing(MemoryStore().view("a"), SlidingWindowLimiter(30, 600.0), 116078)
        print(sharing.heartbeat.beat((30.0, True, False))["n"])  # 1: its first heartbeat
        ```
    """

    def __init__(self, member: Member) -> None:
        self.member = member
        self.began = member.clock()
        """When this process began to follow (or lead) the account."""
        self.announced: Wanted | None = None
        """The demand this follower last announced."""
        self.count = 0

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
        return {
            "i": interval,
            "e": extractions,
            "l": loads,
            "n": self.count,
            "r": self.member.limiter.local_requests,
            "a": round(self.member.clock() - self.began, 1),
        }

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
    seen_at: float  # when the counter last moved
    began: float  # when its wait began, as this process's clock reckons it


class Demands:
    """The leader's reading of its followers' demands (their jobs requests counted).

    Args:
        member: This process in the account's shared poll (its own demand is not a
            follower's).

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

    def __init__(self, member: Member) -> None:
        self.member = member
        self.known: dict[str, _Demand] = {}
        """The followers heard from, by id."""
        self.fresh = False
        """They were just read (as this process took the lead): its first tick need not."""

    async def read(self) -> None:
        """Read the followers' demands; forget the silent ones (and remove their demand)."""
        member = self.member
        try:
            values = await member.store.read_demands()
        except StoreError as exc:
            _logger.debug("Could not read the demands of %s: %s", member.id, exc)
            values = dict.fromkeys(self.known)  # keep them
        now = member.clock()
        for follower, value in values.items():
            if follower == member.id or not isinstance(value, dict):
                continue
            counter, spent = int(value.get("n", 0)), int(value.get("r", 0))
            known = self.known.get(follower)
            if known is None or known.counter != counter:
                member.limiter.record(spent - (known.requests if known else spent))
                self.known[follower] = _Demand(
                    interval=float(value.get("i", 30.0)),
                    extractions=bool(value.get("e", True)),
                    loads=bool(value.get("l", False)),
                    counter=counter,
                    requests=spent,
                    seen_at=now,
                    # From the follower's own count of seconds (no clocks compared).
                    began=known.began if known else now - float(value.get("a", 0.0)),
                )
        for follower, demand in list(self.known.items()):
            gone = follower not in values
            if gone or now - demand.seen_at > 3 * HEARTBEAT_SECONDS:
                del self.known[follower]
                if not gone:
                    with contextlib.suppress(StoreError):
                        await member.store.delete_demand(follower)

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
