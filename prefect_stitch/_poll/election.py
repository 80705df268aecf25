"""Who leads an account's poll: the slot, its lease, the hand-over to named successors.

One role of the shared poll (`prefect_stitch._poll.sharing`): the leader's slot and lease
(taken, renewed, released, handed to the first successor a resigning leader names and
taken up by it, freed when a silent leader keeps it, taken again when a server restart
forgot it), and the step-down of one of two leaders. A leader stops leading only when the
Prefect API says so, never because it cannot be reached. It keeps no timer: the
[`Schedule`][prefect_stitch._poll.schedule.Schedule] says when to try or renew.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable

from prefect_stitch._poll.member import Member
from prefect_stitch._poll.schedule import LEASE_SECONDS
from prefect_stitch._poll.store import JSON, StoreError

__all__ = ["Election", "Lead"]

_logger = logging.getLogger(__name__)


class Lead(enum.Enum):
    """How a try for the lead ended.

    Example:
        ```python
        from prefect_stitch._poll.election import Lead

        print(Lead.HANDED.value)  # took up the lease a resigning leader handed over
        ```
    """

    NO = "another process leads (or may: the store is slow)"
    HANDED = "took up the lease a resigning leader handed over"
    SLOT = "took the free slot"
    ALONE = "the store cannot coordinate: polls alone"


class Election:
    """One process's side of the election of its account's leader.

    Args:
        member: This process in the account's shared poll.

    Example:
        ```python
        import asyncio
        from prefect_stitch._poll.election import Election, Lead
        from prefect_stitch._poll.member import Member
        from prefect_stitch._poll.memory import MemoryStore
        from prefect_stitch._ratelimit import SlidingWindowLimiter

        async def take() -> Lead:
            member = Member("a", 1, MemoryStore().view("a"), SlidingWindowLimiter(30, 600.0))
            return await Election(member).take(heard_lately=lambda: False)

        print(asyncio.run(take()))  # Lead.SLOT: the slot was free
        ```
    """

    def __init__(self, member: Member) -> None:
        self.store = member.store
        self.id = member.id
        self.client_id = member.client_id
        self.leading = False
        self.lease: str | None = None
        self.handed_lease: str | None = None
        """A lease a resigning leader handed this follower (its first successor)."""
        self.stale_lease: str | None = None
        """A lease handed to another successor, which this one frees if it never led."""
        self.resignation: JSON | None = None
        """The last resignation this follower read (it says it took the lease up)."""
        self.step_down = False
        """It saw another leader and gives the slot back before its next tick."""
        self._others: dict[str, int] = {}
        """Other leaders' last published sequence numbers, as this leader saw them."""
        self._taken: asyncio.Task[None] | None = None
        """The write saying this process took a handed lease up, while under way."""

    async def take(self, heard_lately: Callable[[], bool]) -> Lead:
        """Take the account's leader slot if it is free (or the lease handed to us).

        A resigning leader hands its lease to the first successor it names: taking it is
        a renewal (Prefect keeps leases apart from its database: a quick call, where
        taking a free slot is a write that a busy server queues for seconds). A later
        successor, finding that lease never taken up, frees it and takes the slot.

        Args:
            heard_lately: Whether a listing came within a lease: a slow store then does
                not make this process lead alone (another may well lead).

        Returns:
            How the try ended.
        """
        handed, self.handed_lease = self.handed_lease, None
        if handed is not None and await self._take_up(handed):
            return Lead.HANDED
        stale, self.stale_lease = self.stale_lease, None
        if stale is not None:  # handed to a successor that never took it up
            await self._release(stale)
        try:
            lease = await self.store.take_lead(LEASE_SECONDS)
        except StoreError as exc:
            if exc.transient and heard_lately():
                # A slow or busy API (a timeout, a 5xx): another process may well lead.
                # Leading alone now could make two leaders; follow, and try again later.
                _logger.debug("Could not reach the lead of account %s: %s", self.client_id, exc)
                return Lead.NO
            # The API cannot coordinate (no concurrency leases, no permission...), or has
            # not answered for a lease: poll alone rather than wait for listings that may
            # never come.
            _logger.warning(
                "Cannot share the poll of account %s through the Prefect API (%s): polling alone",
                self.client_id,
                exc,
            )
            self.leading, self.lease = True, None
            return Lead.ALONE
        if lease is None:
            return Lead.NO
        self.lease, self.leading = lease, True
        return Lead.SLOT

    async def _take_up(self, lease: str) -> bool:
        """Take up a lease a resigning leader handed over (renew it): True if it held."""
        try:
            await self.store.renew_lease(lease, LEASE_SECONDS)
        except StoreError as exc:  # expired, or freed by another successor: take the slot
            _logger.debug("Could not take up the lease of account %s: %s", self.client_id, exc)
            return False
        self.lease, self.leading = lease, True
        return True

    def say_taken(self) -> None:
        """Say at once that this successor took the lease up (in the background).

        The next successors named must not free the lease (their turn comes a tick
        later), and need not wait for the first listing to know.
        """
        if self.resignation is not None:
            marker = {**self.resignation, "taken": self.id}
            self._taken = asyncio.create_task(self.store.write_marker(marker))

    async def said_taken(self) -> None:
        """Wait for the "taken" write, if one is under way.

        It must not land after a listing the new leader publishes.
        """
        taken, self._taken = self._taken, None
        if taken is not None:
            with contextlib.suppress(Exception):
                await taken

    async def renew(self) -> None:
        """Renew the leader's lease (it expires if this process dies).

        An API that cannot be reached leaves the lead as it is: the leader keeps reading
        Stitch (see `prefect_stitch._poll.isolation`) and renews later. A lease the API
        does not know is taken again (see `_take_again`) unless another leader is heard of.
        """
        if self.lease is None:
            return
        try:
            await self.store.renew_lease(self.lease, LEASE_SECONDS)
        except StoreError as exc:
            if exc.transient:
                _logger.debug("Could not renew the lease of account %s: %s", self.client_id, exc)
            elif not await self._take_again(exc):
                _logger.warning(
                    "Lost the lead of account %s (%s): following again", self.client_id, exc
                )
                self.leading = False
                self.lease = None

    async def _take_again(self, gone: StoreError) -> bool:
        """Take the slot again when the lease is gone but no other leader is heard of.

        Prefect keeps leases in memory: a restarted server knows none of them, while its
        database still counts the slot taken, so nobody could take it until a follower
        called this leader silent (a lease and two ticks). Unless another leader publishes
        (this one's lease expired and was taken over), it frees the slot and takes it.

        Returns:
            True when this process still leads (or may: the API could not be reached).
        """
        try:
            lease = await self.store.take_lead(LEASE_SECONDS)
            if lease is None and not await self._another_publishes():
                await self.store.free_the_slot()
                lease = await self.store.take_lead(LEASE_SECONDS)
        except StoreError as exc:
            return exc.transient  # the old lease is renewed again next time (and fails)
        if lease is None:
            return False
        self.lease = lease
        _logger.info(
            "The lease of the poll of account %s was gone (%s: a Prefect server restart?): "
            "this process took the slot again",
            self.client_id,
            gone,
        )
        return True

    async def _another_publishes(self) -> bool:
        """Whether another leader published since this one last looked at the marker."""
        marker = await self.store.read_marker()
        if not isinstance(marker, dict) or marker.get("resigned"):
            return False
        other, seq = str(marker.get("leader", "")), int(marker.get("seq", 0))
        if not other or other == self.id:
            return False
        active = self._others.get(other) not in (None, seq)
        self._others[other] = seq
        return active

    async def release(self) -> None:
        """Give the leader slot back (after resigning or stepping down)."""
        lease, self.lease = self.lease, None
        if lease is not None:
            await self._release(lease)

    async def _release(self, lease: str) -> None:
        """Release a lease; a failure is only logged."""
        try:
            await self.store.release_lease(lease)
        except StoreError as exc:
            _logger.debug("Could not release the lead of account %s: %s", self.client_id, exc)

    async def step_down_if_told(self) -> None:
        """Give the slot back if this leader saw another one (see `saw_another_leader`)."""
        if self.step_down:
            self.step_down = False
            await self.release()

    def saw_another_leader(self, other: str, seq: int) -> None:
        """Another leader's listing: should two lead at once, the greater id steps down.

        Args:
            other: The other leader's id.
            seq: The sequence number of its listing.
        """
        active = self._others.get(other) not in (None, seq)  # it published since we looked
        self._others[other] = seq
        if active and other < self.id:
            _logger.warning("Two pollers lead account %s: this one steps down", self.client_id)
            self.leading, self.step_down = False, True

    async def free_the_slot(self, silent_for: str = "for more than a lease") -> None:
        """Free a silent (dead) leader's slot, so that this process can take it.

        Args:
            silent_for: How long no new listing came (for the log).
        """
        _logger.warning(
            "No new listing of account %s %s: taking over from a silent leader",
            self.client_id,
            silent_for,
        )
        try:
            await self.store.free_the_slot()
        except StoreError as exc:
            _logger.debug("Could not free the lead of account %s: %s", self.client_id, exc)

    # -- a resignation, as a follower reads it or the leader writes it --------------------------

    def heard_resignation(self, marker: JSON, named: list[str], lease: str | None) -> None:
        """A leader resigned: its first successor named is handed its lease.

        The others named free that lease, should the first never take it up.
        """
        self.resignation = marker
        if named and named[0] == self.id:
            self.handed_lease = lease
        elif named:
            self.stale_lease = lease

    def successor_took_over(self) -> None:
        """Another successor took the lease up: nothing to take, nothing to free."""
        self.handed_lease = self.stale_lease = None

    async def hand_over(self, marker: JSON, successors: list[str]) -> None:
        """Resign: pass the lease to the first successor (or free the slot), then say so.

        With followers known, the lease goes to the first named (it takes it up without a
        write to the Prefect database); with none, the slot is freed for whoever comes
        next. If the marker cannot be written, no successor will hear of the lease: it is
        freed.

        Args:
            marker: The resignation marker (the last listing's, marked resigned).
            successors: The followers that should take over, in order.
        """
        if successors:
            marker["next"] = successors
        handed = self.lease if successors else None
        if handed is not None:
            marker["lease"] = handed
        else:
            marker.pop("lease", None)
            await self.release()  # free first: a follower that reads the marker takes it
        try:
            await self.store.write_marker(marker)
        except StoreError as exc:
            _logger.debug("Could not say that %s resigned: %s", self.id, exc)
            if handed is not None:  # no successor will hear of the lease: free it
                await self.release()
        self.lease = None  # handed over, or released
