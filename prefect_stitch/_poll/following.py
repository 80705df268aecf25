"""What a follower does: read the marker, rebuild the leader's listing, hear a resignation.

One role of the shared poll (`prefect_stitch._poll.sharing`). A follower rebuilds each
listing from the marker alone when it holds the listing the changes apply to, else from the
document and the changes; it counts the leader's jobs requests in its rate limiter; it
tells a silent leader (no new listing for a lease and two ticks, in readings that came
through) from a store it could not read.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from prefect_stitch._poll.listing import HeldListing, ListingState
from prefect_stitch._poll.member import Member
from prefect_stitch._poll.publication import WHOLE
from prefect_stitch._poll.schedule import LEASE_SECONDS, STALE_SLACK_SECONDS
from prefect_stitch._poll.snapshot import Snapshot
from prefect_stitch._poll.store import JSON, StoreError

__all__ = ["Following", "Resignation", "Taken"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resignation:
    """A leader's resignation, as a follower first reads it.

    Attributes:
        named: The successors it named, in order.
        lease: The lease it handed to the first of them.

    Example:
        ```python
        from prefect_stitch._poll.following import Resignation

        print(Resignation(named=["b", "c"], lease="l1").named[0])  # b
        ```
    """

    named: list[str]
    lease: str | None


@dataclass(frozen=True)
class Taken:
    """A new listing a follower took from the marker.

    Attributes:
        snapshot: The listing.
        first_sight: The first listing this follower took (it may be old news).

    Example:
        ```python
        from prefect_stitch._poll.following import Taken
        from prefect_stitch._poll.listing import ListingState

        print(Taken(ListingState().snapshot(), first_sight=True).first_sight)  # True
        ```
    """

    snapshot: Snapshot
    first_sight: bool


class Following:
    """A follower's reading of the leader's listings.

    Args:
        member: This process in the account's shared poll (the leader's requests count
            in its rate limiter).
        held: The listing this process holds (shared with its publication).

    Example:
        ```python
        from prefect_stitch._poll.following import Following
        from prefect_stitch._poll.listing import HeldListing
        from prefect_stitch._poll.member import Member
        from prefect_stitch._poll.memory import MemoryStore
        from prefect_stitch._ratelimit import SlidingWindowLimiter

        store = MemoryStore().view("a")
        member = Member("a", 116078, store, SlidingWindowLimiter(30, 600.0))
        print(Following(member, HeldListing()).silent(30.0))  # False: it never looked
        ```
    """

    def __init__(self, member: Member, held: HeldListing) -> None:
        self.member = member
        self.store = member.store
        self.id = member.id
        self.clock = member.clock
        self.held = held
        self.last_listing = self.clock()
        """When a new listing (or a resignation) was last seen, or we began."""
        self.last_received = 0.0
        """When this follower last took a new listing (it expects the next a tick later)."""
        self.looking_since: float | None = None
        """When this follower first read the marker (None: never could)."""
        self.last_look = 0.0
        """When this follower last read the marker."""
        self.received = 0
        """Listings taken (and handed on)."""
        self.applied = 0
        """Listings taken from the changes in the marker alone (no document read)."""
        self._leader_requests = 0
        self._resignation_seen: tuple[str, int] | None = None

    async def look(self) -> JSON | None:
        """Read the marker; only readings that come through count as having looked.

        Returns:
            The marker, or ``None`` when there is none or it could not be read.
        """
        try:
            marker = await self.store.read_marker()
        except StoreError as exc:
            _logger.debug("Could not read the marker of %s: %s", self.id, exc)
            return None
        self.last_look = self.clock()
        if self.looking_since is None:
            self.looking_since = self.last_look
        return marker if isinstance(marker, dict) else None

    def resignation_in(self, marker: JSON) -> Resignation | None:
        """The resignation a marker says, the first time this follower reads it."""
        resignation = (str(marker.get("by", marker.get("leader", ""))), int(marker.get("seq", 0)))
        if self._resignation_seen == resignation:
            return None
        _logger.debug("Poller %s saw %s resign", self.id, resignation[0])
        self._resignation_seen = resignation
        named = marker.get("next")
        lease = marker.get("lease")
        return Resignation(
            named=[str(n) for n in named] if isinstance(named, list) else [],
            lease=str(lease) if lease else None,
        )

    async def take(self, marker: JSON) -> Taken | None:
        """The listing a marker announces, if new and rebuilt (it is then held).

        Args:
            marker: The marker as read.

        Returns:
            The listing, or ``None`` when it is not new or cannot be had yet.
        """
        leader, seq = str(marker.get("leader", "")), int(marker.get("seq", 0))
        held = self.held
        if (leader, seq) == held.seen or (leader, seq) == (held.state.leader, held.state.seq):
            return None
        if not isinstance(marker.get("h"), dict):
            held.seen = (leader, seq)  # nothing to read (no listing yet)
            self.last_listing = self.clock()
            return None
        first_sight = held.seen is None
        state = await self._state_for(marker, leader, seq)
        if state is None:  # the document is not there yet: the next look
            _logger.debug(
                "Poller %s could not rebuild listing %s of %s (holds %s of %s)",
                self.id,
                seq,
                leader,
                held.state.seq,
                held.state.leader,
            )
            return None
        if leader != (held.seen or ("", 0))[0]:
            self._leader_requests = int(marker.get("r", 0))  # a new leader: count from now
        held.seen, held.state = (leader, seq), state
        self.last_listing = self.last_received = self.clock()
        return Taken(state.snapshot(), first_sight)

    @staticmethod
    def is_news(taken: Taken, interval: float) -> bool:
        """Whether a listing taken is news.

        One published long before this follower began to follow (a leader gone quiet) is not.
        """
        age = time.time() - taken.snapshot.fetched_at.timestamp()
        return not (taken.first_sight and age > 2 * interval + STALE_SLACK_SECONDS)

    def hand_on(self, marker: JSON, taken: Taken) -> Snapshot:
        """Count a listing taken (and the leader's jobs requests); the snapshot to hand on."""
        spent = int(marker.get("r", 0))
        self.member.limiter.record(spent - self._leader_requests)
        self._leader_requests = spent
        self.received += 1
        _logger.debug(
            "Poller %s received listing %s from %s",
            self.id,
            marker.get("seq"),
            marker.get("leader"),
        )
        return taken.snapshot

    def silent(self, interval: float) -> bool:
        """Whether this follower's last reading showed nothing new for longer than a lease.

        Only what it read counts: a process whose store calls hung or failed (a server
        busy starting 50 flow runs) has seen nothing new, but it has not watched either,
        and freeing the slot then would make a second leader.

        Args:
            interval: The poll interval this process wants (a tick).
        """
        if self.looking_since is None:
            return False
        quiet_since = max(self.last_listing, self.looking_since)
        return self.last_look - quiet_since > LEASE_SECONDS + 2 * interval

    def heard_lately(self) -> bool:
        """Whether a listing (or a resignation) came within a lease."""
        return self.clock() - self.last_listing <= LEASE_SECONDS

    def silence_broken(self) -> None:
        """A silent leader's slot was freed: the silence counts from now."""
        self.last_listing = self.clock()

    async def _state_for(self, marker: JSON, leader: str, seq: int) -> ListingState | None:
        """The listing a marker announces, or None when it cannot be had yet.

        From its changes when they apply to the listing this follower holds, else from
        the document (with the changes, if the document is behind).
        """
        base = marker.get("base")
        base_leader, base_seq = (str(base[0]), int(base[1])) if base else ("", -1)
        changes, header = marker.get("c") or {}, marker["h"]
        if (base_leader, base_seq) == WHOLE:  # the whole listing: from nothing
            state = ListingState()
            state.apply(changes, header, leader, seq)
            return state
        if base and self.held.state.can_apply(base_leader, base_seq, seq):
            state = ListingState.from_document(self.held.state.document())
            state.apply(changes, header, leader, seq)
            self.applied += 1
            return state
        read = await self._read_document(marker.get("doc"))
        if read is None:
            return None
        if (read.leader, read.seq) == (leader, seq):
            return read
        if base and read.can_apply(base_leader, base_seq, seq):
            read.apply(changes, header, leader, seq)
            return read
        return None

    async def _read_document(self, document_id: object) -> ListingState | None:
        """The listing document, or None (none named, not there, being rewritten...)."""
        if not document_id:
            return None
        try:
            return ListingState.from_document(await self.store.read_document(str(document_id)))
        except Exception as exc:  # e.g. being rewritten as we read, or malformed: next time
            _logger.debug("Could not read the shared listing of %s: %s", self.id, exc)
            return None
