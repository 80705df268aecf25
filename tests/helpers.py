"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from prefect.client.orchestration import PrefectClient
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

if TYPE_CHECKING:
    from prefect_stitch.simulator import StitchSimulator

T = TypeVar("T")


async def until(
    predicate: Callable[[], Awaitable[T]], timeout: float, what: str, every: float = 0.25
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


async def stitch_events(client: PrefectClient, source_id: int) -> list[Any]:
    """Every ``stitch.sync.*`` event whose related resources include the source."""
    page = await client.read_events(
        filter=EventFilter(
            event=EventNameFilter(prefix=["stitch.sync."]),
            related=EventRelatedFilter(id=[f"stitch.source.{source_id}"]),
        ),
        limit=50,
    )
    return list(page.events)


def when(condition: Callable[[], bool], then: Callable[[], None], timeout: float = 30.0) -> None:
    """In a thread: once ``condition()`` holds, call ``then()`` (e.g. end a Stitch job)."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                then()
                return
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()


def triggered(sim: StitchSimulator, times: int = 1) -> Callable[[], bool]:
    return lambda: len(sim.requests_for("trigger")) >= times


def later(seconds: float, action: Callable[[], None]) -> Callable[[], None]:
    def act() -> None:
        time.sleep(seconds)
        action()

    return act
