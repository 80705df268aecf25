"""When a process of the shared poll does what: every timing rule, and the one owner of its timers.

Each rule was tuned against 10- and 50-process runs (benchmarks/RESULTS.md): the comments
say what went wrong without it. Nothing else writes these timers; the roles report what they
saw and the [`Schedule`][prefect_stitch._poll.schedule.Schedule] says what is due.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

__all__ = [
    "FOLLOWER_ATTEMPT_SECONDS",
    "HEARTBEAT_SECONDS",
    "ISOLATED_SECONDS",
    "LEASE_SECONDS",
    "RENEW_SECONDS",
    "Schedule",
    "isolated_after",
]

LEASE_SECONDS = 60.0
"""Prefect's shortest concurrency lease."""
RENEW_SECONDS = 15.0
"""How often the leader renews its lease."""
HEARTBEAT_SECONDS = 10.0
"""How often a follower renews its demand (the leader forgets it after three misses).

A follower also announces at once when its demand changes (a wait for loads begins)."""
FOLLOWER_ATTEMPT_SECONDS = 5.0
"""How often a follower tries to take the lead while no leader publishes (at once when
the leader resigns). While listings keep coming, a follower does not try: the leader is
alive, and each attempt is a write to the Prefect API."""
STALE_SLACK_SECONDS = 5.0
"""Beyond two ticks, how long a listing may be late before a follower stops waiting for it."""
SUCCESSOR_SLACK_SECONDS = 2.0
"""Beyond a tick, how long the next successor named gives the one before it to say it
took the lease up (it writes so at once)."""
ISOLATED_SECONDS = 20.0
"""How long none of a process's calls to the Prefect API may answer before it polls Stitch
alone, at its share of the budget (at least two ticks; see `isolated_after`)."""
BACK_SLACK_SECONDS = 2.0
"""Beyond a tick (and a spread of up to a tick, so that not every follower frees the slot
at once), how long a follower back from polling alone waits for the leader's listing before
it takes the leader for gone (a leader publishes as soon as it is back)."""


def isolated_after(interval: float) -> float:
    """How long a process's calls may all fail before it polls alone (see `ISOLATED_SECONDS`).

    Longer than one Prefect API request may take (it times out after 15 s): one slow call
    on a busy server is not an outage. And at least two ticks: the leader restrains itself
    to its share at its first failed call, which comes within a tick of the outage; a
    follower, which has read the marker within a tick of it too, starts polling later.

    Args:
        interval: The poll interval this process wants (a tick).

    Returns:
        Seconds without an answer.

    Example:
        ```python
        from prefect_stitch._poll.schedule import isolated_after

        print(isolated_after(30.0))  # 60.0: two ticks of 30 s
        ```
    """
    return max(ISOLATED_SECONDS, 2 * interval)


def _often(interval: float) -> float:
    """A few times a tick, within bounds: how often a process looks while it waits for news."""
    return min(max(interval / 6, 0.2), 2.0)


class Schedule:
    """The timers of one process's part in the shared poll.

    When to try for the lead, to announce its demand, to look for a listing, to renew
    the lease.

    Args:
        clock: Seconds, monotonic (``time.monotonic``; a test's own clock).
        rng: Spreads the tries of followers that no resigning leader named.

    Example:
        ```python
        from prefect_stitch._poll.schedule import Schedule

        schedule = Schedule()
        schedule.lead_tried()
        print(schedule.attempt_due())  # False: the next try is 5 s away
        ```
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None
    ) -> None:
        self.clock = clock
        self._rng = rng or random.Random()
        self._attempt_at = 0.0
        self._heartbeat_at = 0.0
        self._follow_at = 0.0
        self._renew_at = 0.0
        self._probe_at = 0.0
        self._unheard_at = math.inf

    # -- the lead -----------------------------------------------------------------------

    def attempt_due(self) -> bool:
        """Whether this follower tries for the lead now."""
        return self.clock() >= self._attempt_at

    def try_now(self) -> None:
        """Try at once: no leader is known (nothing published lately, or a silent leader)."""
        self._attempt_at = 0.0

    def lead_tried(self) -> None:
        """A try began: the next one, should it fail, a few seconds later."""
        self._attempt_at = self.clock() + FOLLOWER_ATTEMPT_SECONDS

    def leader_at_work(self, interval: float) -> None:
        """A leader publishes (or a successor took the lease up): no try while it does."""
        self._attempt_at = self.clock() + 2 * interval + STALE_SLACK_SECONDS

    def after_resignation(self, place: int | None, named: int, interval: float) -> None:
        """Plan the try for the lead after a leader resigned.

        Args:
            place: This follower's place among the successors named (0: the first, which
                was handed the lease), ``None`` when not named.
            named: How many successors the leader named.
            interval: The poll interval this process wants (a tick).
        """
        now = self.clock()
        wait = interval + SUCCESSOR_SLACK_SECONDS  # for the one named before to lead
        if not named:  # the slot is free: whoever comes first (not all in one instant)
            self._attempt_at = now + self._rng.uniform(0, interval)
        elif place == 0:
            self._attempt_at = 0.0
        elif place is not None:
            self._attempt_at = now + place * wait
        else:  # the others, only should none of them lead
            self._attempt_at = now + named * wait + self._rng.uniform(0, interval)

    def leading(self) -> None:
        """This process leads from now: its lease is due for renewal a while later."""
        self._renew_at = self.clock() + RENEW_SECONDS

    def renewal_due(self) -> bool:
        """Whether the lease is due for renewal (if so, the next is a while later)."""
        if self.clock() < self._renew_at:
            return False
        self._renew_at = self.clock() + RENEW_SECONDS
        return True

    def probe_due(self, interval: float) -> bool:
        """Whether a leader that cannot reach the API (or waits for its followers) calls again.

        A few times a tick (if so, the next is that much later): its ticks may be held
        back by its share of the budget, and its return must be noticed soon.
        """
        if self.clock() < self._probe_at:
            return False
        self._probe_at = self.clock() + _often(interval)
        return True

    def probe_at(self) -> float:
        """When a leader's next call to the API is due (see `probe_due`)."""
        return self._probe_at

    def back(self, interval: float) -> None:
        """A follower is back from polling alone: the leader should be heard within a tick.

        Not every follower gives up on it at the same moment: the first to free the slot
        and lead publishes at once, and the others hear it.
        """
        spread = self._rng.uniform(0, interval)
        self._unheard_at = self.clock() + interval + BACK_SLACK_SECONDS + spread
        self.leader_at_work(interval)  # no try for the lead meanwhile

    def heard_again(self) -> None:
        """A leader was heard (or this process leads): nobody to give up on."""
        self._unheard_at = math.inf

    def unheard_due(self) -> bool:
        """Whether a follower back from polling alone has waited in vain (then no more)."""
        if self.clock() < self._unheard_at:
            return False
        self._unheard_at = math.inf
        return True

    # -- following ------------------------------------------------------------------------

    def heartbeat_now(self, changed: bool) -> bool:
        """Whether a follower announces its demand now (if so, the next is a heartbeat later).

        Every heartbeat, and at once when its demand changed.
        """
        if self.clock() < self._heartbeat_at and not changed:
            return False
        self._heartbeat_at = self.clock() + HEARTBEAT_SECONDS
        return True

    def follow_due(self) -> bool:
        """Whether a follower looks for the leader's next listing now."""
        return self.clock() >= self._follow_at

    def looking(self, interval: float, last_received: float) -> None:
        """A follower looks: the next look is a few times a tick later.

        But not before about a tick after the last listing it took (the next is due then).
        """
        self._follow_at = max(self.clock() + _often(interval), last_received + 0.75 * interval)

    def received(self, interval: float, at: float) -> None:
        """A follower took a listing: it looks for the next one about a tick later."""
        self._follow_at = at + 0.75 * interval

    def wake_at(self, *, trying: bool, announcing: bool) -> float:
        """When a follower has something to do next: try for the lead, heartbeat, or look.

        Args:
            trying: A try for the lead is under way, or none may be made now (no other
                is planned meanwhile).
            announcing: No heartbeat is planned: it leads already (its try is getting it
                ready), or its last demand is still being written (the loop is woken when
                the write ends; a heartbeat due meanwhile waits for it: counting its time,
                a write slower than a heartbeat made the loop spin without sleeping).
        """
        return min(
            math.inf if trying else self._attempt_at,
            math.inf if announcing else self._heartbeat_at,
            self._follow_at,
            self._unheard_at,
        )
