"""One process's membership in an account's shared poll: what every role of it works with."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prefect_stitch._poll.store import PollStore
from prefect_stitch._ratelimit import SlidingWindowLimiter

__all__ = ["Member"]


@dataclass(frozen=True)
class Member:
    """This process in the shared poll of one account.

    Attributes:
        id: This process's id in the shared poll (it names its demand, its listings).
        client_id: The account (for the log).
        store: The account's store.
        limiter: This process's rate limiter of the account's jobs requests (its own are
            published; the others' are counted in it).
        clock: Seconds, monotonic (``time.monotonic``; a test's own clock).

    Example:
        ```python
        from prefect_stitch._poll.member import Member
        from prefect_stitch._poll.memory import MemoryStore
        from prefect_stitch._ratelimit import SlidingWindowLimiter

        member = Member("a", 116078, MemoryStore().view("a"), SlidingWindowLimiter(30, 600.0))
        print(member.id)  # a
        ```
    """

    id: str
    client_id: int
    store: PollStore
    limiter: SlidingWindowLimiter
    clock: Callable[[], float] = field(default=time.monotonic)
