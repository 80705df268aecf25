"""Stitch's own scheduler: the starts it will try, those armed after a completion, those skipped.

Stitch starts jobs by itself too, so a job can start (and end) between two of our polls and
replace the record we were reading. Not thread-safe: `SimulatorState` calls it under its lock.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect_stitch.simulator._outcomes import Outcome


@dataclass(frozen=True)
class Attempt:
    """A start Stitch's scheduler will try at `at` (skipped if the source is busy or paused)."""

    at: float
    source_id: int
    outcome: Outcome | None
    seq: int


@dataclass(frozen=True)
class _AfterHook:
    """A start to try `gap_seconds` after the source's next completion (`run_after_current`)."""

    outcome: Outcome | None
    gap_seconds: float


class Scheduler:
    """The scheduler's pending start attempts, its armed after-completion starts, its skips.

    Example:
        >>> from prefect_stitch.simulator._scheduler import Scheduler
        >>> scheduler = Scheduler()
        >>> _ = scheduler.plan(at=30.0, source_id=1, outcome=None)
        >>> scheduler.next_start(1), scheduler.next_start(2)
        (30.0, None)
    """

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []  # pending, in the order they were planned
        self._seq = 0
        self._after: dict[int, list[_AfterHook]] = {}
        self._skips: dict[int, int] = {}

    def plan(self, at: float, source_id: int, outcome: Outcome | None) -> Attempt:
        """Plan a start attempt at `at` (Stitch's clock); it runs when settling reaches it."""
        self._seq += 1
        attempt = Attempt(at, source_id, outcome, self._seq)
        self.attempts.append(attempt)
        return attempt

    def arm_after(self, source_id: int, outcome: Outcome | None, gap_seconds: float) -> None:
        """Plan a start `gap_seconds` after the source's next completion (one-shot)."""
        self._after.setdefault(source_id, []).append(_AfterHook(outcome, gap_seconds))

    def after_completion(self, source_id: int, at: float) -> list[Attempt]:
        """Plan the starts armed for the source's completion at `at`; return them."""
        hooks = self._after.pop(source_id, [])
        return [self.plan(at + hook.gap_seconds, source_id, hook.outcome) for hook in hooks]

    def take(self, attempt: Attempt) -> None:
        """Remove an attempt that is being made."""
        self.attempts.remove(attempt)

    def skip(self, source_id: int) -> None:
        """Count an attempt skipped because the source was busy, paused or deleted."""
        self._skips[source_id] = self._skips.get(source_id, 0) + 1

    def skips(self, source_id: int) -> int:
        """How many of the source's attempts were skipped."""
        return self._skips.get(source_id, 0)

    def next_start(self, source_id: int) -> float | None:
        """When the earliest pending attempt for the source is due, if any."""
        times = [attempt.at for attempt in self.attempts if attempt.source_id == source_id]
        return min(times, default=None)
