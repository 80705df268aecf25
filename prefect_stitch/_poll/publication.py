"""What the leader publishes: the listing marker, its changes, and the whole listing's document.

One role of the shared poll (`prefect_stitch._poll.sharing`). The marker carries the
listing's header and the rows changed since the document was last written (the whole
listing while it fits in half the marker: a small account needs no document at all); the
document is brought up to date afterwards, off the followers' path, once the changes grow,
every few listings, and after another leader may have overwritten it. The codec is
`prefect_stitch._poll.listing`.
"""

from __future__ import annotations

import contextlib
import json
import logging

from prefect_stitch._poll.listing import MARKER_BUDGET, HeldListing
from prefect_stitch._poll.member import Member
from prefect_stitch._poll.snapshot import Snapshot
from prefect_stitch._poll.store import JSON, StoreError

__all__ = ["DOCUMENT_EVERY", "WHOLE", "Publication"]

_logger = logging.getLogger(__name__)

WHOLE = ("", 0)
"""The base of a whole listing: the empty one, which every follower can start from."""
DOCUMENT_EVERY = 10
"""The leader rewrites the document at least every this many listings."""


class Publication:
    """A leader's publication of the listings it reads.

    Args:
        member: This process in the account's shared poll (the leader, as it publishes).
        held: The listing this process holds (shared with its following).

    Example:
        ```python
        from prefect_stitch._poll.listing import HeldListing
        from prefect_stitch._poll.member import Member
        from prefect_stitch._poll.memory import MemoryStore
        from prefect_stitch._poll.publication import Publication
        from prefect_stitch._ratelimit import SlidingWindowLimiter

        store = MemoryStore().view("a")
        member = Member("a", 116078, store, SlidingWindowLimiter(30, 600.0))
        print(Publication(member, HeldListing()).document_id)  # None: nothing written yet
        ```
    """

    def __init__(self, member: Member, held: HeldListing) -> None:
        self.member = member
        self.id = member.id
        self.held = held
        self.base: tuple[str, int] | None = None
        """The state the document holds, which ``touched`` is relative to; ``None`` while
        each listing is published whole in the marker."""
        self.touched: set[tuple[str, str]] = set()
        """The rows changed since ``base``."""
        self.since_document = 0
        """Listings published since the document was last written."""
        self.last_marker: JSON | None = None
        """The marker as this process last wrote it."""
        self.published: Snapshot | None = None
        """The last listing this leader published."""
        self.document_id: str | None = None
        """The document that holds the whole listing (one per account, passed on)."""

    def begin(self) -> None:
        """This process leads from now: its first changes start from the listing it holds.

        Most followers hold it too (the resigning leader's last); the document is written
        whole right after that first listing, for the others.
        """
        small = len(json.dumps(self.held.state.rows)) < MARKER_BUDGET // 2
        state = self.held.state
        self.base = None if small or not state.leader else (state.leader, state.seq)
        self.touched = set()
        self.since_document = DOCUMENT_EVERY

    async def publish(self, snapshot: Snapshot, followers: int) -> None:
        """Publish a listing the leader read.

        The marker gets the whole listing while it fits in half of it (a small account),
        else the rows changed since the state the document holds: either way a follower
        needs no other read. The document is brought up to date afterwards, off the
        followers' path. Changes too big for the marker go to the document first.

        Args:
            snapshot: The listing.
            followers: How many followers want it (the marker says how many processes
                share the account: a follower that cannot reach the API polls at its share).
        """
        try:
            marker = await self._marker_for(snapshot)
            marker["n"] = followers + 1  # the processes that share the account (its share)
            await self.member.store.write_marker(marker)
            self.last_marker, self.published = marker, snapshot
            _logger.debug(
                "Poller %s published listing %s of account %s for %s follower(s)",
                self.id,
                marker["seq"],
                self.member.client_id,
                followers,
            )
        except StoreError as exc:  # followers will see the leader silent, then take over
            # (an API that cannot be reached is said once, by `prefect_stitch._poll.isolation`)
            _logger.log(
                logging.DEBUG if exc.transient else logging.WARNING,
                "Could not publish a listing of account %s: %s",
                self.member.client_id,
                exc,
            )
            return
        self.since_document += 1
        if len(json.dumps(marker)) > MARKER_BUDGET // 2 or (
            self.base is not None and self.since_document >= DOCUMENT_EVERY
        ):
            # The changes grow with every job that ends: write the whole listing now, off
            # the followers' path, rather than when they no longer fit. (Not every tick:
            # changes since an older base also serve a follower that missed a listing.)
            # And every few listings regardless: a follower that lost track (the
            # document overwritten while two processes led) is never stuck for long.
            with contextlib.suppress(StoreError):
                await self._write_document()

    async def _marker_for(self, snapshot: Snapshot) -> JSON:
        """The marker for a new listing (writes the document if need be)."""
        state, seq = self.held.state, self.held.next_seq()
        self.touched |= state.advance(snapshot, self.id, seq)
        marker: JSON = {
            "leader": self.id,
            "seq": seq,
            "r": self.member.limiter.local_requests,
            "h": state.header,
        }
        if self.base is None:  # the whole listing, built from nothing
            every = {(section, key) for section, rows in state.rows.items() for key in rows}
            marker.update(base=list(WHOLE), c=state.changes(every))
        else:
            marker.update(base=list(self.base), c=state.changes(self.touched))
        if len(json.dumps(marker)) > MARKER_BUDGET:
            await self._write_document()  # the whole listing first
            marker.update(base=list(self.base or ()), c={})
        if self.document_id is not None:
            marker["doc"] = self.document_id
        return marker

    async def _write_document(self) -> None:
        """Write the whole listing to the account's document; it is then the changes' base."""
        state = self.held.state
        document = state.document()
        self.document_id = await self.member.store.write_document(self.document_id, document)
        self.base = (state.leader, state.seq)
        self.touched = set()
        self.since_document = 0

    def saw_marker(self, marker: JSON) -> tuple[str, int] | None:
        """What the leader's look at the marker says: the document to update, another leader.

        Another leader that publishes (two at once, after a lease lost to a slow API) may
        have overwritten the document too: the next listing goes there whole.

        Args:
            marker: The marker as read.

        Returns:
            The other leader's (id, seq) when another leader published it, else ``None``.
        """
        if marker.get("doc") and self.document_id is None:
            self.document_id = str(marker["doc"])  # the account's document: updated in place
        if marker.get("resigned"):
            return None
        other, seq = str(marker.get("leader", "")), int(marker.get("seq", 0))
        if not other or other == self.id:
            return None
        self.base = None
        return other, seq

    async def resignation(self, latest: Snapshot | None) -> JSON:
        """The marker a resigning leader leaves: its last listing, marked resigned.

        Its newest listing goes with it, published or not (a lone leader publishes
        nothing; an exiting process drops a tick before it could publish), so that the
        next leader (a process starting now, often) need not list the account again at
        once.

        Args:
            latest: The newest listing this process read.

        Returns:
            The marker (without its successors and lease).
        """
        if latest is not None and latest is not self.published:
            with contextlib.suppress(StoreError):
                self.last_marker = await self._marker_for(latest)
        marker = dict(self.last_marker or {})
        marker.setdefault("leader", self.id)
        marker.setdefault("seq", self.held.state.seq)
        marker.update(resigned=True, by=self.id, r=self.member.limiter.local_requests)
        if self.document_id is not None:
            marker["doc"] = self.document_id
        return marker
