"""A process that cannot reach the Prefect API: it polls Stitch alone, at its share of the budget.

One role of the shared poll (`prefect_stitch._poll.sharing`). The store tells it whether
each call reached the Prefect API (an answer, a refusal included) or not (a timeout, a
refused connection, a 5xx). A process none of whose calls answered for a while
(`prefect_stitch._poll.schedule.isolated_after`) is *isolated*: nobody can hear it and it
hears nobody, so it polls Stitch itself, whatever its role, at its share of the account's
budget (a leader keeps polling, held to its share from its first failed call on). It says
so once (a WARNING, with its share), and once more when the API answers again (INFO).

**The share.** Before the outage every process counted in its rate limiter the jobs
requests it knew of: its own, the leader's (published with each listing) and, for the
leader, the followers' (in their demands). From its first failed call on, a process counts
its own requests apart, ``n`` times over (``n``: the processes it last knew share the
account, plus one that may have joined unheard), and lists only while, in the limiter's
window::

    known before + n x (its own since + pages) + margin <= limit

Summed over the ``n`` processes, no window then holds more than the limit, across the
outage's start (what was spent before is counted once, by everyone) and beyond; and its
listings are spread over the window (a burst would leave its waits unserved for the rest
of it). The margin
covers what a follower had not heard of yet: the leader's last listing or two (one it had
not read, one that could not be published) and a request more (another follower's log
read). A share under one listing per window lets no process list: it waits for the API; so
does a process that never heard how many share the account (a follower learns it from the
leader's listings; before the first one, its share is unknown).

**The return.** Back, a follower stops polling and says at once what it spent apart: how
many requests, and how long ago each was made (its demand). The leader stays at its share
until every follower it knows has said so; then it counts their requests as they were
made (not as it hears of them: each leaves the window when it should, and the leader
lists a tick after the API's return, not a window after), and lists only while they leave
room. A follower that hears no leader a tick after its return takes the lead.
"""

from __future__ import annotations

import logging
import math
from collections import deque

from prefect_stitch._poll.member import Member
from prefect_stitch._poll.schedule import isolated_after

__all__ = ["Isolation"]

_logger = logging.getLogger(__name__)


class Isolation:
    """Whether this process can reach the Prefect API, and its share of the budget when not.

    Args:
        member: This process in the account's shared poll (its limiter counts its share).

    Example:
        ```python
        from prefect_stitch._poll.isolation import Isolation
        from prefect_stitch._poll.member import Member
        from prefect_stitch._poll.memory import MemoryStore
        from prefect_stitch._ratelimit import SlidingWindowLimiter

        store = MemoryStore().view("a")
        isolation = Isolation(Member("a", 116078, store, SlidingWindowLimiter(30, 600.0)))
        isolation.reached(False)  # a call timed out
        print(isolation.failing, isolation.isolated)  # True False: not for long yet
        ```
    """

    def __init__(self, member: Member) -> None:
        self.member = member
        self.clock = member.clock
        self.last_answer = self.clock()
        """When a call to the API last answered (or this process began)."""
        self.failing_since: float | None = None
        """When the calls began to fail (``None`` while the last one answered)."""
        self.isolated = False
        """No call answered for a while: it polls alone, at its share."""
        self.back_at: float | None = None
        """When the API answered again after it polled alone; ``None`` once a follower
        heard a leader, or once the leader's followers said what they spent."""
        self.returned = False
        """The API answered after failed calls: a follower says what it spent at once."""
        self.sharers: int | None = None
        """How many processes it last knew share the account (itself included): a leader
        counts its followers, a follower reads the leader's count in its listings; ``None``
        while it never knew (it does not poll alone then: its share is unknown)."""
        self._own: deque[float] = deque()
        """Its own jobs requests since its calls began to fail (when it noticed each), within
        the window."""
        self._own_before = 0
        """Its own requests since its calls began to fail that left the window since."""
        self.apart_since: float | None = None
        """When its calls began to fail, until it heard (or, leading, was heard) again: its
        own requests count apart meanwhile."""
        self._counted = member.limiter.local_requests
        """Its limiter's count of its own requests when it last looked."""
        self._theirs: deque[float] = deque()
        """The followers' requests made apart, as a leader heard of them (when each was made)."""

    @property
    def failing(self) -> bool:
        """Whether its last call to the API failed (it may not be isolated yet)."""
        return self.failing_since is not None

    def reached(self, answered: bool) -> None:
        """What the store says of each call: the API answered, or could not be reached.

        Args:
            answered: True for an answer (a refusal too), False for a transient failure.
        """
        now = self.clock()
        if not answered:
            if self.failing_since is None:
                self.failing_since = now
            if self.apart_since is None:  # its own requests count apart from now on
                self.apart_since = now
                self._own.clear()
                self._own_before = 0
                self._counted = self.member.limiter.local_requests
            return
        self.last_answer = now
        if self.failing_since is None:
            return
        self.failing_since, self.returned = None, True
        if self.isolated:
            self.isolated, self.back_at = False, now
            _logger.info(
                "The Prefect API answers again: the poll of account %s is shared again",
                self.member.client_id,
            )

    def check(self, interval: float) -> None:
        """Poll alone once no call answered for a while (said once, with the share).

        Args:
            interval: The poll interval this process wants (a tick).
        """
        if self.isolated or self.failing_since is None:
            return
        silent = self.clock() - self.last_answer
        if silent < isolated_after(interval):
            return
        self.isolated = True
        limiter = self.member.limiter
        if self.sharers is None:
            _logger.warning(
                "Cannot reach the Prefect API for %.0f s, and this process never heard how "
                "many processes share account %s: it waits for the API rather than poll alone "
                "(its share of the budget is unknown)",
                silent,
                self.member.client_id,
            )
            return
        share = max((limiter.limit - 3) / (self.sharers + 1), 0.0)
        _logger.warning(
            "Cannot reach the Prefect API for %.0f s: polling account %s alone, at its share "
            "of the budget (about %.1f of %d jobs requests per %g s; it last knew of %d "
            "process(es) sharing it)",
            silent,
            self.member.client_id,
            share,
            limiter.limit,
            limiter.period,
            self.sharers,
        )

    def restrained(self, leading: bool) -> bool:
        """Whether this process's listings wait for room in the budget (a follower's: alone).

        A leader's while it cannot reach the API or waits for its followers' word, and
        while what they spent apart fills the window.

        Args:
            leading: Whether it leads.
        """
        if not leading:
            return self.isolated
        return self.failing or self.back_at is not None or bool(self._in_window(self._theirs))

    def delay(self, pages: int) -> float:
        """Seconds until a listing of ``pages`` pages fits (see `restrained`).

        Args:
            pages: The pages the listing costs.

        Returns:
            0 when it fits now; ``math.inf`` when it never will (a share under one
            listing per window).
        """
        limiter = self.member.limiter
        if not (self.failing or self.isolated or self.back_at is not None):
            theirs = self._in_window(self._theirs)  # after the return: room left by them
            return limiter.delay_for(pages + theirs) if theirs else 0.0
        own = self._own_requests()
        if self.sharers is None:  # its share is unknown
            return math.inf
        margin = 2 * pages + 1
        need = pages + self.sharers * (own + pages) + margin  # n x its own, and the margin
        if need > limiter.limit:
            if not own:
                return math.inf
            return max(self._own[0] + limiter.period - self.clock(), 0.001)
        wait = limiter.delay_for(need)
        if own:  # its share spread over the window, not spent at once
            spacing = pages * limiter.period * (self.sharers + 1) / (limiter.limit - margin)
            wait = max(wait, self._own[-1] + spacing - self.clock())
        return wait

    def _own_requests(self) -> int:
        """Its own jobs requests in the limiter's window since its calls began to fail."""
        now, limiter = self.clock(), self.member.limiter
        if self.apart_since is not None:
            made = limiter.local_requests - self._counted
            self._counted += made
            self._own.extend([now] * made)  # stamped when noticed: later, so counted longer
        self._own_before += self._drop_old(self._own)
        return len(self._own)

    def _in_window(self, stamps: deque[float]) -> int:
        """How many of these stamps (in order) are within the limiter's window."""
        self._drop_old(stamps)
        return len(stamps)

    def _drop_old(self, stamps: deque[float]) -> int:
        """Drop the stamps (in order) no longer within the limiter's window; how many."""
        horizon, dropped = self.clock() - self.member.limiter.period, 0
        while stamps and stamps[0] <= horizon:
            stamps.popleft()
            dropped += 1
        return dropped

    def spent_apart(self) -> tuple[list[float], int]:
        """Its requests made apart, as its demand says them.

        Returns:
            How long ago each within the window was (the newest first), and how many
            left the window since.
        """
        self._own_requests()
        now = self.clock()
        return [round(now - stamp, 1) for stamp in reversed(self._own)], self._own_before

    def count_theirs(self, ages: list[float]) -> None:
        """A leader hears of a follower's requests made apart, by how long ago each was.

        Args:
            ages: Seconds since each (the follower's count of seconds: no clocks compared).
        """
        now = self.clock()
        self._theirs = deque(sorted([*self._theirs, *(now - age for age in ages)]))

    def came_back(self) -> bool:
        """Whether the API answered again after failed calls (once, then no more)."""
        returned, self.returned = self.returned, False
        return returned

    def heard(self) -> None:
        """A follower heard a leader again (or the leader its followers): no longer back."""
        self.back_at = self.apart_since = None
