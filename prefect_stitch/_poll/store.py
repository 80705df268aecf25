"""What the shared poll needs of the place where processes meet, in the protocol's words.

The protocol (`prefect_stitch._poll.sharing`) never calls the Prefect API itself: it asks a
store to take, renew and release the leader's lease, to free a silent leader's slot, to
read and write the listing marker, the followers' demands and the listing document. One
implementation talks to the Prefect API
([`PrefectStore`][prefect_stitch._poll.prefect_store.PrefectStore]: a concurrency lease
and unkeyed artifacts, which put nothing in the Event Feed as they are written, where
Variables would put an event there at every heartbeat and listing); another keeps it all
in memory for tests ([`MemoryStore`][prefect_stitch._poll.memory.MemoryStore]). Another
place to meet is one more implementation.

Every failure reaches the protocol as a [`StoreError`][prefect_stitch._poll.store.StoreError]
that says whether it may pass (a timeout, a busy server) or not (no permission, no such
feature); "another process leads" is not a failure but an answer. A store also tells a
listener how each operation went, so that the protocol knows whether the Prefect API can
be reached at all (see `prefect_stitch._poll.isolation`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Listener", "PollStore", "StoreError"]

JSON = dict[str, Any]
"""A JSON object, as the store keeps it (markers, demands, documents)."""


class StoreError(Exception):
    """A store operation failed.

    Args:
        message: What failed, and why.
        transient: Whether the failure may pass (a timeout, a dropped connection, a 5xx,
            a 429): the store may well coordinate a moment later.

    Example:
        ```python
        from prefect_stitch._poll.store import StoreError

        error = StoreError("read the marker: timed out", transient=True)
        print(error.transient)  # True
        ```
    """

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


Listener = Callable[[bool], None]
"""Told after each store operation whether the store could be reached: ``True`` for an
answer (a refusal is an answer too), ``False`` for a failure that may pass (a timeout, a
dropped connection, a 5xx)."""


class PollStore(Protocol):
    """The operations of the shared poll on the place where its processes meet.

    One store serves one account. Each operation raises
    [`StoreError`][prefect_stitch._poll.store.StoreError] when it fails.

    Example:
        ```python
        from prefect_stitch._poll.memory import MemoryStore
        from prefect_stitch._poll.store import PollStore

        store: PollStore = MemoryStore().view("a process")
        ```
    """

    async def open(self) -> None:
        """Get ready for the operations below (a failure here is not fatal: each may retry)."""

    async def close(self) -> None:
        """Give back what `open` took."""

    def listen(self, listener: Listener) -> None:
        """Tell ``listener`` whether each operation reached the store (one listener at a time)."""

    async def take_lead(self, lease_seconds: float) -> str | None:
        """Take the leader's slot with a lease.

        Returns:
            The lease, or ``None`` when another process leads.
        """

    async def renew_lease(self, lease: str, lease_seconds: float) -> None:
        """Renew the leader's lease (or take up a lease a resigning leader handed over)."""

    async def release_lease(self, lease: str) -> None:
        """Give the leader's slot back."""

    async def free_the_slot(self) -> None:
        """Free a silent leader's slot, whatever lease holds it."""

    async def read_marker(self) -> Any:
        """The listing marker (the newest listing's header and changes), or ``None``."""

    async def write_marker(self, marker: JSON) -> None:
        """Write the listing marker."""

    async def write_demand(self, follower: str, demand: JSON) -> None:
        """Write a follower's demand."""

    async def read_demands(self) -> dict[str, Any]:
        """Every follower's demand, by follower id."""

    async def delete_demand(self, follower: str) -> None:
        """Remove a follower's demand (no error when it is already gone)."""

    async def read_document(self, document_id: str) -> Any:
        """The listing document with this id (what `write_document` wrote)."""

    async def write_document(self, document_id: str | None, document: JSON) -> str:
        """Write the whole listing in place, or in a new document if there is none yet.

        Returns:
            The id of the document written (a new one when ``document_id`` was gone).
        """
