"""One reading of an account's listing from Stitch: what a poller's tick reads.

The extractions, the loads, or both (as the waiters need), every page; a failure becomes
a snapshot that carries it, with the requests it cost.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prefect_stitch._poll.snapshot import Snapshot
from prefect_stitch.errors import StitchError, StitchTransportError
from prefect_stitch.models import Extraction, Load

if TYPE_CHECKING:
    from prefect_stitch.client import StitchClient

__all__ = ["read_listing"]

_logger = logging.getLogger(__name__)


async def read_listing(
    client: StitchClient, client_id: int, tick: int, *, extractions: bool, loads: bool
) -> Snapshot:
    """Read the account's listing: its extractions, its loads, or both.

    Args:
        client: The account's client.
        client_id: The account.
        tick: The poller's tick number.
        extractions: Read the extraction listing.
        loads: Read the loads listing too.

    Returns:
        The listing, or a snapshot carrying why it failed (never raises).

    Example:
        ```python
        from prefect_stitch._poll.reading import read_listing

        async def records(credentials) -> int:
            async with credentials.get_client() as client:
                snapshot = await read_listing(client, 116078, 1, extractions=True, loads=False)
            return len(snapshot.records)
        ```
    """
    pages = 0
    sent_before = client.requests_made
    records: tuple[Extraction, ...] = ()
    load_records: tuple[Load, ...] | None = None
    stitch_time: datetime | None = None
    try:
        if extractions:
            listing = await client.read_extractions()
            records, pages, stitch_time = listing.records, listing.pages, listing.stitch_time
        if loads:
            load_listing = await client.read_loads()
            load_records, pages = load_listing.records, pages + load_listing.pages
            stitch_time = stitch_time or load_listing.stitch_time
    except StitchError as exc:
        # The pages this failed listing cost: every request it sent (retries included).
        spent = max(client.requests_made - sent_before, pages)
        return Snapshot(tick, (), datetime.now(UTC), spent, exc)
    except Exception as exc:  # never let the poller die silently
        _logger.warning(
            "Unexpected error while listing the jobs of account %s",
            client_id,
            exc_info=True,
        )
        error = StitchTransportError(
            status_code=None,
            reason=f"unexpected error while listing jobs ({type(exc).__name__}: {exc})",
            method="GET",
            path=f"/v4/{client_id}/extractions",
        )
        return Snapshot(tick, (), datetime.now(UTC), 0, error)
    return Snapshot(
        tick, records, datetime.now(UTC), pages, None, stitch_time, load_records, extractions
    )
