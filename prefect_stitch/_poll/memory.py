"""An in-memory store for the shared poll: several simulated processes meet in one object.

For tests of the protocol without a Prefect server: each simulated process gets a
[`view`][prefect_stitch._poll.memory.MemoryStore.view] of one
[`MemoryStore`][prefect_stitch._poll.memory.MemoryStore], which keeps the leader's slot and
lease, the marker, the demands and the documents, counts every operation by process, and
can be slow, fail on demand, be down for a while, restart, or not coordinate at all.

The leader's slot behaves as a Prefect global concurrency limit of one slot: a lease
holds it until released or expired (``leases_expire``: the server's repossessor frees it
then); freeing the slot by force leaves the leases as they were. A restart forgets the
leases (Prefect keeps them in memory) but not the slot taken (in its database).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect_stitch._poll.store import JSON, Listener, StoreError

__all__ = ["Call", "MemoryStore", "MemoryView"]

VALUE_LIMIT = 5_000
"""Characters of JSON a marker or a demand may hold (a Prefect Variable's limit)."""


@dataclass(frozen=True)
class Call:
    """One operation a simulated process called.

    Attributes:
        process: Who called it.
        operation: Its name (``take_lead``, ``write_marker``...).
        at: When it was called (the store's clock).

    Example:
        ```python
        from prefect_stitch._poll.memory import Call

        print(Call("a", "read_marker", 12.0).operation)  # read_marker
        ```
    """

    process: str
    operation: str
    at: float


@dataclass
class _Failure:
    """Failures planned for one operation."""

    times: int | None  # None: every time
    transient: bool


class MemoryStore:
    """What the processes of one account share, in memory.

    Args:
        clock: Seconds, monotonic: when leases expire.
        latency_seconds: How long every operation takes (a slow store).
        coordinates: False for a store that cannot coordinate: taking the lead fails,
            not transiently (no concurrency leases, no permission).
        leases_expire: False for a server that never frees an expired lease's slot
            (only a follower freeing a silent leader's slot then does).

    Attributes:
        calls: Every operation called, in order.
        marker: The listing marker.
        demands: The demands, by follower.
        documents: The listing documents, by id.
        reachable: False while the store is down: every operation fails, transiently.

    Example:
        ```python
        import asyncio
        from prefect_stitch._poll.memory import MemoryStore

        async def main() -> None:
            store = MemoryStore()
            a, b = store.view("a"), store.view("b")
            print(await a.take_lead(60.0) is not None, await b.take_lead(60.0))  # True None
            print(store.count("take_lead"))  # 2

        asyncio.run(main())
        ```
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        latency_seconds: float = 0.0,
        coordinates: bool = True,
        leases_expire: bool = True,
    ) -> None:
        self.clock, self.latency_seconds = clock, latency_seconds
        self.coordinates, self.leases_expire = coordinates, leases_expire
        self.calls: list[Call] = []
        self.marker: JSON | None = None
        self.demands: dict[str, JSON] = {}
        self.documents: dict[str, JSON] = {}
        self.leases: dict[str, float] = {}
        """The leases, and when each expires."""
        self.active_slots = 0
        """The leader's slot is taken (1) or free (0)."""
        self.reachable = True
        self._failures: dict[tuple[str, str | None], _Failure] = {}
        self._delays: dict[tuple[str, str | None], float] = {}
        self._holds: dict[tuple[str, str | None], asyncio.Event] = {}

    def view(self, process: str) -> MemoryView:
        """The store as one simulated process uses it (its calls are counted as its own).

        Args:
            process: A name for the process.

        Returns:
            A [`PollStore`][prefect_stitch._poll.store.PollStore].
        """
        return MemoryView(self, process)

    def fail(
        self,
        operation: str,
        *,
        times: int | None = 1,
        transient: bool = False,
        process: str | None = None,
    ) -> None:
        """Make an operation fail.

        Args:
            operation: Its name (``write_marker``, ``take_lead``...).
            times: How many times (``None``: until told otherwise with ``times=0``).
            transient: Whether the failure says it may pass (a timeout, a 5xx).
            process: Only this process's calls fail (``None``: anyone's).
        """
        self._failures[(operation, process)] = _Failure(times, transient)

    def slow(self, operation: str, seconds: float, *, process: str | None = None) -> None:
        """Make an operation take longer (``0``: as fast as the others again).

        Args:
            operation: Its name.
            seconds: How much longer it takes (on top of ``latency_seconds``).
            process: Only this process's calls are slow (``None``: anyone's).
        """
        self._delays[(operation, process)] = seconds

    def hold(self, operation: str, *, process: str | None = None) -> asyncio.Event:
        """Make an operation wait until the event returned is set (on the caller's loop).

        Args:
            operation: Its name.
            process: Only this process's calls wait (``None``: anyone's).

        Returns:
            The event that lets the held calls go on.
        """
        gate = self._holds[(operation, process)] = asyncio.Event()
        return gate

    def count(self, operation: str | None = None, process: str | None = None) -> int:
        """How many operations were called.

        Args:
            operation: Of this name only (``None``: every one).
            process: By this process only (``None``: anyone).

        Returns:
            The count.
        """
        return sum(
            1
            for call in self.calls
            if operation in (None, call.operation) and process in (None, call.process)
        )

    def restart(self) -> None:
        """Restart as a Prefect server does: every lease is forgotten, the slot stays taken."""
        self.leases.clear()

    def slot_taken(self) -> bool:
        """Whether the leader's slot is taken now."""
        self.expire()
        return self.active_slots > 0

    def expire(self) -> None:
        """Free the slot of every expired lease (as a Prefect server's repossessor does)."""
        if not self.leases_expire:
            return
        for lease, expires in list(self.leases.items()):
            if self.clock() >= expires:
                del self.leases[lease]
                self.active_slots = max(self.active_slots - 1, 0)

    async def operation(self, process: str, name: str) -> None:
        """Count an operation, take its time (or wait), and fail it if planned."""
        self.calls.append(Call(process, name, self.clock()))
        keys = ((name, process), (name, None))
        delay = self.latency_seconds + sum(self._delays.get(key, 0.0) for key in keys)
        if delay > 0:
            await asyncio.sleep(delay)
        for key in keys:
            gate = self._holds.get(key)
            if gate is not None:
                await gate.wait()
        if not self.reachable:
            raise StoreError(f"{name}: connection refused (the store is down)", transient=True)
        failure = next((f for key in keys if (f := self._failures.get(key)) is not None), None)
        if failure is None or failure.times == 0:
            return
        if failure.times is not None:
            failure.times -= 1
        raise StoreError(f"{name} failed (planned)", transient=failure.transient)


def _stored(value: JSON) -> JSON:
    """The value as the store returns it (a JSON round trip), within a Variable's limit."""
    text = json.dumps(value)
    if len(text) > VALUE_LIMIT:
        raise StoreError(f"{len(text)} characters: over {VALUE_LIMIT}", transient=False)
    loaded: JSON = json.loads(text)
    return loaded


class MemoryView:
    """One simulated process's use of a [`MemoryStore`][prefect_stitch._poll.memory.MemoryStore].

    Args:
        store: The shared store.
        process: The process's name, as the store counts its calls.

    Example:
        ```python
        from prefect_stitch._poll.memory import MemoryStore

        view = MemoryStore().view("a")
        print(view.process)  # a
        ```
    """

    def __init__(self, store: MemoryStore, process: str) -> None:
        self.store = store
        self.process = process
        self._listener: Listener = lambda reached: None

    def listen(self, listener: Listener) -> None:
        """Tell ``listener`` whether each operation reached the store."""
        self._listener = listener

    async def _op(self, name: str) -> MemoryStore:
        """Count the operation (and delay or fail it); the shared store."""
        try:
            await self.store.operation(self.process, name)
        except StoreError as exc:
            self._listener(not exc.transient)
            raise
        self._listener(True)
        self.store.expire()
        return self.store

    async def open(self) -> None:
        """Nothing to open."""
        await self._op("open")

    async def close(self) -> None:
        """Nothing to close."""
        await self._op("close")

    async def take_lead(self, lease_seconds: float) -> str | None:
        """The slot with a new lease, if the slot is free."""
        store = await self._op("take_lead")
        if not store.coordinates:
            raise StoreError("403 Forbidden: no concurrency leases", transient=False)
        if store.active_slots > 0:
            return None
        lease = uuid.uuid4().hex
        store.leases[lease], store.active_slots = store.clock() + lease_seconds, 1
        return lease

    async def renew_lease(self, lease: str, lease_seconds: float) -> None:
        """Renew a lease, if it is still there."""
        store = await self._op("renew_lease")
        if lease not in store.leases:
            raise StoreError("404 Not Found: no such lease", transient=False)
        store.leases[lease] = store.clock() + lease_seconds

    async def release_lease(self, lease: str) -> None:
        """Release a lease and the slot it holds."""
        store = await self._op("release_lease")
        if store.leases.pop(lease, None) is None:
            raise StoreError("404 Not Found: no such lease", transient=False)
        store.active_slots = max(store.active_slots - 1, 0)

    async def free_the_slot(self) -> None:
        """Free the slot, whatever lease holds it (the leases stay)."""
        (await self._op("free_the_slot")).active_slots = 0

    async def read_marker(self) -> Any:
        """The marker, or None."""
        store = await self._op("read_marker")
        return None if store.marker is None else _stored(store.marker)

    async def write_marker(self, marker: JSON) -> None:
        """Write the marker."""
        store = await self._op("write_marker")
        store.marker = _stored(marker)

    async def write_demand(self, follower: str, demand: JSON) -> None:
        """Write a follower's demand."""
        store = await self._op("write_demand")
        store.demands[follower] = _stored(demand)

    async def read_demands(self) -> dict[str, Any]:
        """Every demand."""
        store = await self._op("read_demands")
        return {follower: _stored(demand) for follower, demand in store.demands.items()}

    async def delete_demand(self, follower: str) -> None:
        """Remove a demand."""
        (await self._op("delete_demand")).demands.pop(follower, None)

    async def read_document(self, document_id: str) -> Any:
        """A document."""
        store = await self._op("read_document")
        if document_id not in store.documents:
            raise StoreError("404 Not Found: no such document", transient=False)
        loaded: JSON = json.loads(json.dumps(store.documents[document_id]))
        return loaded

    async def write_document(self, document_id: str | None, document: JSON) -> str:
        """Write a document in place (a new one if it is gone)."""
        store = await self._op("write_document")
        if document_id is None or document_id not in store.documents:
            document_id = uuid.uuid4().hex
        store.documents[document_id] = json.loads(json.dumps(document))
        return document_id
