"""One listing of an account, as the poller hands it to every waiter (a leaf: models only)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from prefect_stitch.errors import StitchError
from prefect_stitch.models import Extraction, Load

__all__ = ["Snapshot"]


@dataclass(frozen=True)
class Snapshot:
    """One listing of the account's extractions, or the error that prevented it.

    Attributes:
        tick: The poller's tick number (1 for the first listing).
        records: Every record of the listing (empty when ``error`` is set).
        error: Why the listing failed, after the client's own retries.
        fetched_at: When the listing completed (UTC, this machine's clock: for people).
        pages: Pages read (the jobs requests this tick cost).
        stitch_time: Stitch's clock at the listing (its ``Date`` header), if sent.
        loads: The loads listing read in the same tick, when a waiter needs loads.
        extractions_read: Whether the extraction listing was read this tick (only
            load waiters watching: it is not).

    Example:
        ```python
        from datetime import UTC, datetime
        from prefect_stitch._poll import Snapshot

        snapshot = Snapshot(tick=1, records=(), fetched_at=datetime.now(UTC), pages=1)
        print(snapshot.ok)  # True
        ```
    """

    tick: int
    records: tuple[Extraction, ...]
    fetched_at: datetime
    pages: int = 0
    error: StitchError | None = None
    stitch_time: datetime | None = None
    loads: tuple[Load, ...] | None = None
    extractions_read: bool = True

    @property
    def ok(self) -> bool:
        """Whether the listing was read."""
        return self.error is None
