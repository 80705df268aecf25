"""The jobs-endpoint rate budget: at most N requests in any window of P seconds, per account.

Stitch allows **30 requests per 10 minutes per account** across the extractions, logs
and loads endpoints, counted together, and documents no 429 to warn a client that
exceeds it (it may simply block the client). A token bucket would allow a burst plus a
refill inside one window (up to twice the budget), so this is an exact sliding-window
log instead.

A slot's timestamp is the moment its response *arrived*, not the moment the request
left: the request reached Stitch no later than that, so spacing slots by completion
times keeps Stitch's own count within the budget whatever the network latency.

One limiter exists per (API host, client id) in a process, shared by every client,
task, thread and event loop of that process (Prefect runs submitted async tasks in
threads with their own loops), so however many syncs a process watches, it stays
within the budget. Across processes, see the Prefect global concurrency limit in
[`StitchClient`][prefect_stitch.client.StitchClient].
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

__all__ = ["SlidingWindowLimiter", "limiter_for"]

_IN_FLIGHT = float("inf")
_RECHECK_SECONDS = 0.05


@dataclass
class _Slot:
    stamp: float = _IN_FLIGHT


class SlidingWindowLimiter:
    """Allow at most ``limit`` requests in any ``period`` seconds.

    Thread-safe and usable from any event loop: the state is guarded by a
    ``threading.Lock`` and waiting is a plain ``asyncio.sleep``.

    Args:
        limit: Requests allowed per period.
        period: The window, in seconds.
        clock: A monotonic clock (for tests).

    Example:
        ```python
        import asyncio
        from prefect_stitch._ratelimit import SlidingWindowLimiter

        async def main() -> None:
            limiter = SlidingWindowLimiter(limit=2, period=1.0)
            for _ in range(3):  # the third request waits about one second
                async with limiter.slot():
                    pass

        asyncio.run(main())
        ```
    """

    def __init__(
        self, limit: int, period: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1 or period <= 0:
            raise ValueError("limit must be >= 1 and period > 0")
        self.limit = limit
        self.period = period
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: list[_Slot] = []
        self.requests = 0
        self.local_requests = 0
        """Requests made through `slot` in this process (not those `record`-ed)."""
        self.waited_seconds = 0.0

    def tighten(self, limit: int, period: float) -> None:
        """Adopt a stricter budget if ``limit``/``period`` is stricter than the current one.

        Args:
            limit: Requests allowed per period.
            period: The window, in seconds.

        Example:
            ```python
            from prefect_stitch._ratelimit import SlidingWindowLimiter

            limiter = SlidingWindowLimiter(30, 600)
            limiter.tighten(10, 600)
            print(limiter.limit)  # 10
            ```
        """
        with self._lock:
            self.limit = min(self.limit, limit)
            self.period = max(self.period, period)

    def _prune(self, now: float) -> None:
        horizon = now - self.period
        self._slots = [slot for slot in self._slots if slot.stamp > horizon]

    def _try_take(self) -> _Slot | float:
        with self._lock:
            now = self._clock()
            self._prune(now)
            if len(self._slots) < self.limit:
                slot = _Slot()
                self._slots.append(slot)
                self.requests += 1
                self.local_requests += 1
                return slot
            finished = [slot.stamp for slot in self._slots if slot.stamp != _IN_FLIGHT]
            if not finished:
                return _RECHECK_SECONDS
            return max(min(finished) + self.period - now, 0.001)

    def _release(self, slot: _Slot) -> None:
        with self._lock:
            slot.stamp = self._clock()

    def record(self, count: int) -> None:
        """Count requests made elsewhere (another process) against this window, as of now.

        Args:
            count: How many requests another process made since it last said so.

        Example:
            ```python
            from prefect_stitch._ratelimit import SlidingWindowLimiter

            limiter = SlidingWindowLimiter(2, 60)
            limiter.record(2)
            print(limiter.delay_for(1) > 0)  # True
            ```
        """
        if count <= 0:
            return
        with self._lock:
            now = self._clock()
            self._prune(now)
            self._slots.extend(_Slot(now) for _ in range(min(count, 10 * self.limit)))

    def delay_for(self, requests: int) -> float:
        """Seconds until ``requests`` more requests would fit in the window right now.

        Args:
            requests: How many requests are planned.

        Returns:
            0 when they fit now, else a lower bound of the wait.

        Example:
            ```python
            from prefect_stitch._ratelimit import SlidingWindowLimiter

            print(SlidingWindowLimiter(30, 600).delay_for(1))  # 0.0
            ```
        """
        with self._lock:
            now = self._clock()
            self._prune(now)
            free = self.limit - len(self._slots)
            if requests <= free:
                return 0.0
            stamps = sorted(slot.stamp for slot in self._slots)
            needed = requests - free
            stamp = stamps[min(needed, len(stamps)) - 1]
            if stamp == _IN_FLIGHT:
                return _RECHECK_SECONDS
            return max(stamp + self.period - now, 0.0)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for a free slot, hold it while the request runs, and stamp it on exit.

        Yields:
            Nothing; the request is made inside the ``async with`` block.

        Example:
            ```python
            from prefect_stitch._ratelimit import SlidingWindowLimiter

            async def fetch(limiter: SlidingWindowLimiter) -> None:
                async with limiter.slot():
                    ...  # one request to a jobs endpoint
            ```
        """
        started = self._clock()
        while True:
            taken = self._try_take()
            if isinstance(taken, _Slot):
                break
            await asyncio.sleep(taken)
        self.waited_seconds += self._clock() - started
        try:
            yield
        finally:
            self._release(taken)


_registry: dict[tuple[str, int], SlidingWindowLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(base_url: str, client_id: int, limit: int, period: float) -> SlidingWindowLimiter:
    """The process-wide limiter of one Stitch account.

    The first caller's budget is used; a later caller with a stricter budget tightens it.

    Args:
        base_url: The API host.
        client_id: The Stitch client (account) id.
        limit: Requests allowed per period.
        period: The window, in seconds.

    Returns:
        The shared limiter.

    Example:
        ```python
        from prefect_stitch._ratelimit import limiter_for

        a = limiter_for("https://api.stitchdata.com", 116078, 30, 600)
        assert a is limiter_for("https://api.stitchdata.com", 116078, 30, 600)
        ```
    """
    key = (base_url, client_id)
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None:
            limiter = _registry[key] = SlidingWindowLimiter(limit, period)
        else:
            limiter.tighten(limit, period)
        return limiter


def account_limit_name(client_id: int) -> str:
    """The conventional name of an account's Prefect global concurrency limit.

    Args:
        client_id: The Stitch client (account) id.

    Returns:
        ``stitch-jobs-<client_id>``.

    Example:
        ```python
        from prefect_stitch._ratelimit import account_limit_name

        print(account_limit_name(116078))  # stitch-jobs-116078
        ```
    """
    return f"stitch-jobs-{client_id}"


def global_limit_settings(limit: int, period: float) -> tuple[int, float]:
    """Slot-decay settings of a global limit that keeps any ``period`` window within ``limit``.

    A Prefect rate limit is a leaky bucket: ``capacity`` slots, refilled at
    ``decay`` slots per second. In any window of ``period`` seconds it admits at most
    ``capacity + decay * period`` requests, so half the budget is the burst and half
    the refill.

    Args:
        limit: Requests allowed per period (Stitch: 30).
        period: The window in seconds (Stitch: 600).

    Returns:
        ``(capacity, slot_decay_per_second)``; for Stitch's budget ``(15, 0.025)``.

    Example:
        ```python
        from prefect_stitch._ratelimit import global_limit_settings

        print(global_limit_settings(30, 600))  # (15, 0.025)
        ```
    """
    capacity = max(limit // 2, 1)
    return capacity, max(limit - capacity, 1) / period


_known_limits: dict[str, tuple[bool, float]] = {}
_pending_lookups: dict[str, concurrent.futures.Future[bool]] = {}
_known_limits_lock = threading.Lock()
_KNOWN_LIMITS_TTL_SECONDS = 60.0


async def resolve_global_limit(
    client_id: int, requested: str | None, *, limit: int, period: float
) -> str | None:
    """Decide which Prefect global concurrency limit paces this account's jobs requests.

    * ``requested`` given: use it, creating it (as a rate limit sized by
      [`global_limit_settings`][prefect_stitch._ratelimit.global_limit_settings]) if it
      does not exist yet;
    * otherwise use ``stitch-jobs-<client_id>`` when it exists, or none.

    Answers are cached for a minute per process.

    Args:
        client_id: The Stitch account.
        requested: The limit name the user asked for, if any.
        limit: The account's jobs budget (requests per period).
        period: The period in seconds.

    Returns:
        The limit's name, or ``None`` when no global limit applies.

    Example:
        ```python
        from prefect_stitch._ratelimit import resolve_global_limit

        async def which() -> None:
            print(await resolve_global_limit(116078, None, limit=30, period=600))
        ```
    """
    name = requested or account_limit_name(client_id)
    with _known_limits_lock:
        cached = _known_limits.get(name)
        if cached is not None and time.monotonic() - cached[1] < _KNOWN_LIMITS_TTL_SECONDS:
            return name if cached[0] else None
        pending = _pending_lookups.get(name)
        owner = pending is None
        if pending is None:  # one lookup at a time per name, shared by every waiter
            pending = _pending_lookups[name] = concurrent.futures.Future()
    if not owner:
        return name if await asyncio.wrap_future(pending) else None
    try:
        exists = await _look_up_global_limit(name, requested, limit=limit, period=period)
    except BaseException as exc:
        pending.set_exception(exc)
        with _known_limits_lock:
            _pending_lookups.pop(name, None)
        raise
    with _known_limits_lock:
        _known_limits[name] = (exists, time.monotonic())
        _pending_lookups.pop(name, None)
    pending.set_result(exists)
    return name if exists else None


async def _look_up_global_limit(
    name: str, requested: str | None, *, limit: int, period: float
) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    try:
        async with get_client() as client:
            try:
                await client.read_global_concurrency_limit_by_name(name)
                exists = True
            except ObjectNotFound:
                exists = False
                if requested:
                    capacity, decay = global_limit_settings(limit, period)
                    with contextlib.suppress(ObjectAlreadyExists):  # created concurrently
                        await client.create_global_concurrency_limit(
                            GlobalConcurrencyLimitCreate(
                                name=name, limit=capacity, slot_decay_per_second=decay
                            )
                        )
                    exists = True
    except Exception:
        if requested:
            raise
        return False  # no Prefect API to ask: the in-process budget still holds
    return exists
