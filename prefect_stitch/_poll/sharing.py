"""One poll per account across every process, through the Prefect API they already use.

Every process that watches a Stitch account has an
[`AccountPoller`][prefect_stitch._poll.poller.AccountPoller]. With no other server and no setup,
they elect one of them to read Stitch and share what it reads, through three Prefect
primitives, over plain HTTP requests (no connection held open: a Prefect server on
SQLite serves at most 100 requests at a time, websockets included):

* **Leadership** is the one slot of a Prefect global concurrency limit
  (``stitch-poll-<client_id>-<host>``, limit 1, created on first use), taken with a
  *lease* the leader renews. Only the leader reads Stitch's listings. A process that
  cannot take the slot follows.
* **Followers announce their demand** in a Prefect Variable each
  (``stitch-demand-<client_id>-<host>-<id>``, a few dozen characters): the poll interval
  they want, whether they need the loads listing, a heartbeat counter, and the jobs
  requests they made themselves (their log reads). The leader reads them every tick;
  one whose counter stops moving for three heartbeats is gone (its variable is removed).
* **The leader publishes each listing** it reads (the account's extraction records, and
  its load records while someone needs them), but only while some follower has a fresh
  demand: a lone process publishes nothing. The Variable
  ``stitch-listing-<client_id>-<host>`` carries the listing's header and the rows changed
  since the whole listing was last written to the account's artifact (type
  ``stitch-listing``, no key, updated in place and passed from leader to leader: the
  database does not grow); see `prefect_stitch._poll.listing`. A follower rebuilds the
  listing from the Variable alone, or from the artifact and the changes when it begins.
  The leader's tick is the shortest interval anyone wants, floored by the budget.
* **The budget is shared**: the listing Variable carries the jobs requests the leader has
  made, each demand those of its follower; every process counts the others' requests in
  its own rate limiter as it learns of them, so the leader paces every process's
  requests, and a process that takes over inherits the budget already spent.
* **Take-over**: a leader whose last waiter leaves (its process exiting included) marks
  the listing Variable "resigned", its last listing still readable, names three
  successors and hands its lease to the first, which takes it up by renewing it (no
  database write); should it never lead, the next named frees that lease and takes the
  slot a tick later. With no follower known, the leader frees its slot. A leader that
  dies keeps its slot until its lease expires (Prefect's shortest lease is 60 s; a
  server's repossessor frees it then); a follower that has seen no new listing for a
  lease's length plus two ticks frees the slot itself and takes it.
* If the Prefect API cannot coordinate (no concurrency leases, no permission), a process
  polls alone rather than wait for listings that will never come.

Prefect Cloud and a self-hosted server work alike. Without a Prefect API URL (the
ephemeral API of a single process), every process polls for itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prefect_stitch._poll.listing import MARKER_BUDGET, ListingState

if TYPE_CHECKING:
    from prefect_stitch._poll.poller import AccountPoller, Snapshot

__all__ = ["Sharing", "sharing_enabled"]

LEASE_SECONDS = 60.0
"""Prefect's shortest concurrency lease."""
RENEW_SECONDS = 15.0
HEARTBEAT_SECONDS = 10.0
"""How often a follower renews its demand (the leader forgets it after three misses).

A follower also announces at once when its demand changes (a wait for loads begins)."""
FOLLOWER_ATTEMPT_SECONDS = 5.0
"""How often a follower tries to take the lead while no leader publishes (at once when
the leader resigns). While listings keep coming, a follower does not try: the leader is
alive, and each attempt is a write to the Prefect API."""
API_TIMEOUT_SECONDS = 15.0
"""Timeout of each Prefect API request of the sharing (a slow answer is then transient)."""
_ENV_SWITCH = "PREFECT_STITCH_SHARED_POLLING"
_STALE_SLACK_SECONDS = 5.0
_SUCCESSORS = 3
"""Followers a resigning leader names to take over, in order."""
_WHOLE = ("", 0)
"""The base of a whole listing: the empty one, which every follower can start from."""
_DOCUMENT_EVERY = 10
"""The leader rewrites the artifact at least every this many listings."""
_SUCCESSOR_SLACK = 2.0
"""Beyond a tick, how long the next successor named gives the one before it to say it
took the lease up (it writes so at once)."""

_logger = logging.getLogger("prefect_stitch._poll.sharing")


def sharing_enabled() -> bool:
    """Whether pollers share one poll per account through the Prefect API.

    On when a Prefect API URL is set (a server or Prefect Cloud), unless
    ``PREFECT_STITCH_SHARED_POLLING`` is ``0``/``false``/``off``.

    Returns:
        True when listings are shared across processes.

    Example:
        ```python
        from prefect_stitch._poll.sharing import sharing_enabled

        print(sharing_enabled())
        ```
    """
    if os.environ.get(_ENV_SWITCH, "").strip().lower() in ("0", "false", "off", "no"):
        return False
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def _transient(exc: BaseException) -> bool:
    """Whether a Prefect API failure may pass: a timeout, a dropped connection, a 5xx, a 429."""
    import httpx

    if isinstance(exc, TimeoutError | httpx.TransportError):
        return True
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return isinstance(status, int) and (status >= 500 or status == 429)


@dataclass
class _Demand:
    interval: float
    extractions: bool
    loads: bool
    counter: int
    requests: int
    seen_at: float  # time.monotonic() when the counter last moved
    began: float  # when its wait began, as this process's time.monotonic() reckons it


class Sharing:
    """The cross-process side of one account's poller (runs on the poller's event loop).

    Args:
        poller: The account's poller in this process.

    Example:
        ```python
        from prefect_stitch._poll.sharing import Sharing

        def describe(poller) -> str:
            return "leader" if Sharing(poller).leading else "follower"
        ```
    """

    def __init__(self, poller: AccountPoller) -> None:
        self.poller = poller
        self.id = uuid.uuid4().hex[:12]
        self.created = time.monotonic()
        """When this process began to follow (or lead) the account."""
        self.leading = False
        self.lease_id: Any = None
        host = hashlib.sha256(poller.credentials.base_url.encode()).hexdigest()[:8]
        base = f"stitch-{{}}-{poller.client_id}-{host}"
        self.limit_name = base.format("poll")
        self.listing_name = base.format("listing")  # the Variable that points to the listing
        self.demand_prefix = base.format("demand") + "-"
        self.demand_name = f"{self.demand_prefix}{self.id}"
        self.demands: dict[str, _Demand] = {}
        self.next_attempt = 0.0
        self.next_heartbeat = 0.0
        self.announced: tuple[float, bool, bool] | None = None
        """The demand this follower last announced."""
        self.limit_ready = False
        """Whether the account's leader limit is known to exist."""
        self.next_renew = 0.0
        self.next_follow = 0.0
        self.heartbeats = 0
        self.state = ListingState()
        """The last listing published (a leader) or received (a follower)."""
        self.base: tuple[str, int] | None = None
        """The state the artifact holds, which ``touched`` is relative to (a leader);
        ``None`` while each listing is published whole in the Variable."""
        self.touched: set[tuple[str, str]] = set()
        """The rows changed since ``base`` (a leader)."""
        self.since_document = 0
        """Listings published since the artifact was last written (a leader)."""
        self.last_marker: dict[str, Any] | None = None
        """The listing Variable as this process last wrote or read it."""
        self.published: Snapshot | None = None
        """The last listing this leader published."""
        self.resignation: dict[str, Any] | None = None
        """The last resignation this follower read (it says it took the lease up)."""
        self.marker_seen: tuple[str, int] | None = None
        """The (leader, seq) of the newest listing this follower has taken."""
        self.resignation_seen: tuple[str, int] | None = None
        self.handed_lease: str | None = None
        """A lease a resigning leader handed this follower (its first successor)."""
        self._taken: asyncio.Task[None] | None = None
        """The write saying this process took a handed lease up, while under way."""
        self.stale_lease: str | None = None
        """A lease handed to another successor, which this one frees if it never led."""
        self.leader_requests = 0
        self.last_listing = time.monotonic()
        """When a new listing (or a resignation) was last seen, or we began."""
        self.last_received = 0.0
        """When this follower last took a new listing (it expects the next a tick later)."""
        self.looking_since: float | None = None
        """When this follower first read the listing Variable (None: never could)."""
        self.last_look = 0.0
        """When this follower last read the listing Variable."""
        self.listings_received = 0
        self.listings_applied = 0
        """Listings taken from the changes in the Variable alone (no artifact read)."""
        self.document_id: Any = None
        """The artifact that holds the whole listing (one per account, passed on)."""
        self.demands_fresh = False
        """The demands were just read (`prepare`): the first tick need not read them."""
        self._client: Any = None
        self._cleanup: asyncio.Task[None] | None = None
        self.step_down = False
        self.others: dict[str, int] = {}
        """Other leaders' last published sequence numbers, as this leader saw them."""

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Open the one Prefect client that this poller's requests share.

        Its requests time out after ``API_TIMEOUT_SECONDS`` (Prefect's default is 60 s):
        a follower stuck on one request hears no listing meanwhile.
        """
        from prefect.client.orchestration import get_client

        client = get_client(httpx_settings={"timeout": API_TIMEOUT_SECONDS})
        try:
            await client.__aenter__()
        except Exception as exc:  # each request then opens its own client, and may fail alone
            _logger.debug("Could not open a Prefect client for %s: %s", self.limit_name, exc)
            return
        self._client = client

    @contextlib.asynccontextmanager
    async def _api(self) -> AsyncIterator[Any]:
        """The shared client once started (one client, not one per request), else a new one."""
        if self._client is not None:
            yield self._client
            return
        from prefect.client.orchestration import get_client

        async with get_client(httpx_settings={"timeout": API_TIMEOUT_SECONDS}) as client:
            yield client

    async def stop(self) -> None:
        """Resign (if leading) and withdraw this process's demand."""
        try:
            if self.leading:
                await self._resign()
            if self._cleanup is not None:
                with contextlib.suppress(Exception):
                    await self._cleanup
            await self._forget_demand()
        finally:
            client, self._client = self._client, None
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.__aexit__(None, None, None)

    # -- leadership ------------------------------------------------------------------

    async def try_lead(self) -> bool:
        """Take the account's leader slot if it is free (or the lease handed to us).

        A resigning leader hands its lease to the first successor it names: taking it is
        a renewal (Prefect keeps leases apart from its database: a quick call, where
        taking a free slot is a write that a busy server queues for seconds). A later
        successor, finding that lease never taken up, frees it and takes the slot.

        Returns:
            True when this process now leads (or must poll alone).
        """
        self.next_attempt = time.monotonic() + FOLLOWER_ATTEMPT_SECONDS
        handed, self.handed_lease = self.handed_lease, None
        if handed is not None and await self._take_lease(handed):
            return True
        stale, self.stale_lease = self.stale_lease, None
        if stale is not None:  # handed to a successor that never took it up
            await self._release_lease(stale)
        try:
            async with self._api() as client:
                if not self.limit_ready:
                    await self._ensure_limit(client)
                    self.limit_ready = True
                response = await client.increment_concurrency_slots_with_lease(
                    names=[self.limit_name],
                    slots=1,
                    mode="concurrency",
                    lease_duration=LEASE_SECONDS,
                )
                self.lease_id = response.json().get("lease_id")
        except Exception as exc:
            if "423" in str(exc) or "Locked" in str(exc):
                return False  # another process leads
            self.limit_ready = False  # deleted meanwhile? make sure of it next time
            if _transient(exc) and time.monotonic() - self.last_listing <= LEASE_SECONDS:
                # A slow or busy API (a timeout, a 5xx): another process may well lead.
                # Leading alone now could make two leaders; follow, and try again later.
                _logger.debug("Could not reach the lead of %s: %r", self.limit_name, exc)
                return False
            # The API cannot coordinate (no concurrency leases, no permission...), or has
            # not answered for a lease: poll alone rather than wait for listings that may
            # never come.
            _logger.warning(
                "Cannot share the poll of account %s through the Prefect API (%s: %s): "
                "polling alone",
                self.poller.client_id,
                type(exc).__name__,
                exc,
            )
            self.leading, self.lease_id = True, None
            return True
        self.leading = self.lease_id is not None
        if self.leading:
            await self._now_leading()
        return self.leading

    async def _take_lease(self, lease_id: str) -> bool:
        """Take up a lease a resigning leader handed over (renew it): True if it held."""
        try:
            async with self._api() as client:
                await client.renew_concurrency_lease(uuid.UUID(lease_id), LEASE_SECONDS)
        except Exception as exc:  # expired, or freed by another successor: take the slot
            _logger.debug("Could not take up the lease of %s: %s", self.limit_name, exc)
            return False
        self.lease_id, self.leading = lease_id, True
        await self._now_leading()
        if self.resignation is not None:
            # Say so at once (in the background; the first listing waits for it): the
            # next successors named must not free the lease (their turn comes a tick
            # later), and need not wait for the first listing to know.
            self._taken = asyncio.create_task(
                self._set_variable(self.listing_name, {**self.resignation, "taken": self.id})
            )
        return True

    async def _said_taken(self) -> None:
        """Wait for the "taken" write, if one is under way.

        It must not land after a listing the new leader publishes.
        """
        taken, self._taken = self._taken, None
        if taken is not None:
            with contextlib.suppress(Exception):
                await taken

    async def _now_leading(self) -> None:
        self.next_renew = time.monotonic() + RENEW_SECONDS
        # The next listing's changes start from the listing this follower holds (most
        # followers hold it too: the resigning leader's last); the artifact is written
        # whole right after that first listing, for the others.
        small = len(json.dumps(self.state.rows)) < MARKER_BUDGET // 2
        self.base = None if small or not self.state.leader else (self.state.leader, self.state.seq)
        self.touched = set()
        self.since_document = _DOCUMENT_EVERY
        _logger.debug("Poller %s leads account %s", self.id, self.poller.client_id)
        # No longer a follower. In the background: on a busy server a delete took 5 s,
        # and the new leader's first listing is due a tick after the last one.
        self._cleanup = asyncio.create_task(self._forget_demand())

    async def _forget_demand(self) -> None:
        with contextlib.suppress(Exception):
            await self._delete_variable(self.demand_name)

    def leader_silent(self, interval: float) -> bool:
        """Whether this follower's last reading showed nothing new for longer than a lease.

        Only what it read counts: a process whose Prefect API calls hung or failed (a
        server busy starting 50 flow runs) has seen nothing new, but it has not watched
        either, and freeing the slot then would make a second leader.
        """
        if self.looking_since is None:
            return False
        quiet_since = max(self.last_listing, self.looking_since)
        return self.last_look - quiet_since > LEASE_SECONDS + 2 * interval

    async def free_the_slot(self) -> None:
        """Free a silent (dead) leader's slot, so that this process can take it."""
        from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

        _logger.warning(
            "No new listing of account %s for more than a lease: taking over from a silent leader",
            self.poller.client_id,
        )
        self.last_listing = time.monotonic()
        try:
            async with self._api() as client:
                await client.update_global_concurrency_limit(
                    self.limit_name, GlobalConcurrencyLimitUpdate(active_slots=0)
                )
        except Exception as exc:
            _logger.debug("Could not free the lead of %s: %s", self.limit_name, exc)
        self.next_attempt = 0.0

    async def _ensure_limit(self, client: Any) -> None:
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
        from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

        try:
            await client.read_global_concurrency_limit_by_name(self.limit_name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=self.limit_name, limit=1)
                )

    async def renew_if_due(self) -> None:
        """Renew the leader's lease (it expires if this process dies)."""
        if not self.leading or self.lease_id is None or time.monotonic() < self.next_renew:
            return
        self.next_renew = time.monotonic() + RENEW_SECONDS
        try:
            async with self._api() as client:
                await client.renew_concurrency_lease(self.lease_id, LEASE_SECONDS)
        except Exception as exc:
            _logger.warning(
                "Lost the lead of account %s (%s): following again", self.poller.client_id, exc
            )
            self.leading = False
            self.lease_id = None

    async def _resign(self) -> None:
        """Hand the lead over: pass the lease to a successor (or free the slot), then say so.

        The marker keeps the last listing (its changes, its artifact): a follower may
        not have read it yet, and it may be the one that ends its wait. With followers
        known, the lease goes to the first named (it takes it up without a write to the
        Prefect database); with none, the slot is freed for whoever comes next.
        """
        self.leading = False
        await self._said_taken()
        if self.demands:  # who is still there (a follower ending now removed its demand)
            with contextlib.suppress(Exception):
                await self._read_demands()
        successors = self.successors()
        latest = self.poller.latest
        if latest is not None and latest is not self.published:
            # Its newest listing goes with its resignation, published or not (a lone
            # leader publishes nothing; an exiting process drops a tick before it could
            # publish), so that the next leader (a process starting now, often) need not
            # list the account again at once.
            with contextlib.suppress(Exception):
                self.last_marker = await self._marker_for(latest)
        marker = dict(self.last_marker or {})
        marker.setdefault("leader", self.id)
        marker.setdefault("seq", self.state.seq)
        marker.update(resigned=True, by=self.id, r=self.poller.limiter().local_requests)
        if self.document_id is not None:
            marker["doc"] = str(self.document_id)
        if successors:
            marker["next"] = successors
        handed = self.lease_id if successors else None
        if handed is not None:
            marker["lease"] = str(handed)
        else:
            marker.pop("lease", None)
            await self.release()  # free first: a follower that reads the marker takes it
        try:
            await self._set_variable(self.listing_name, marker)
        except Exception as exc:
            _logger.debug("Could not say that %s resigned: %s", self.id, exc)
            if handed is not None:  # no successor will hear of the lease: free it
                await self.release()
        self.lease_id = None  # handed over, or released

    def successors(self) -> list[str]:
        """The followers that should take over when this leader resigns, in order.

        Naming a few spares the Prefect API a rush of every follower trying for the slot
        at once (at 50 processes, tries then took 2-30 s, during which those followers
        read no listing). The followers whose wait began last are the likeliest to wait
        longest (the demands are read again as the leader resigns: those that left are
        gone); the first named takes up the lease at once; should it not lead (it may be ending
        too), the next one frees that lease and takes the slot a tick later, and so on;
        the others try only after them.

        Returns:
            Their ids (none when no follower is known: then whoever tries first).
        """
        latest = sorted(self.demands.items(), key=lambda item: item[1].began, reverse=True)
        return [follower for follower, _ in latest[:_SUCCESSORS]]

    async def release(self) -> None:
        """Give the leader slot back (after resigning or stepping down)."""
        lease, self.lease_id = self.lease_id, None
        if lease is not None:
            await self._release_lease(lease)

    async def _release_lease(self, lease_id: Any) -> None:
        try:
            async with self._api() as client:
                await client.release_concurrency_slots_with_lease(uuid.UUID(str(lease_id)))
        except Exception as exc:
            _logger.debug("Could not release the lead of %s: %s", self.limit_name, exc)

    # -- what the leader serves -------------------------------------------------------

    async def refresh_demands(self) -> None:
        """Read the followers' demands (the leader, once a tick); forget the silent ones.

        Also checks that no other process publishes listings: should two lead at once
        (a lease lost to a slow network), the one with the greater id steps down.
        """
        await asyncio.gather(self._check_for_another_leader(), self._read_demands())

    async def _read_demands(self) -> None:
        variables = await self._demand_variables()
        now = time.monotonic()
        for name, value in variables.items():
            if name == self.demand_name or not isinstance(value, dict):
                continue
            follower = name.removeprefix(self.demand_prefix)
            counter, spent = int(value.get("n", 0)), int(value.get("r", 0))
            known = self.demands.get(follower)
            if known is None or known.counter != counter:
                self.poller.limiter().record(spent - (known.requests if known else spent))
                self.demands[follower] = _Demand(
                    interval=float(value.get("i", 30.0)),
                    extractions=bool(value.get("e", True)),
                    loads=bool(value.get("l", False)),
                    counter=counter,
                    requests=spent,
                    seen_at=now,
                    # From the follower's own count of seconds (no clocks compared).
                    began=known.began if known else now - float(value.get("a", 0.0)),
                )
        for follower, demand in list(self.demands.items()):
            gone = f"{self.demand_prefix}{follower}" not in variables
            if gone or now - demand.seen_at > 3 * HEARTBEAT_SECONDS:
                del self.demands[follower]
                if not gone:
                    with contextlib.suppress(Exception):
                        await self._delete_variable(f"{self.demand_prefix}{follower}")

    async def _check_for_another_leader(self) -> None:
        try:
            marker = await self._get_variable(self.listing_name)
        except Exception:
            return
        if not isinstance(marker, dict):
            return
        if marker.get("doc") and self.document_id is None:
            self.document_id = marker["doc"]  # the account's artifact: updated in place
        if marker.get("resigned"):
            return
        other, seq = str(marker.get("leader", "")), int(marker.get("seq", 0))
        if not other or other == self.id:
            return
        # Another leader publishes (two at once, after a lease lost to a slow API): it
        # may have overwritten the artifact too. The next listing goes there whole.
        self.base = None
        active = self.others.get(other) not in (None, seq)  # it published since we looked
        self.others[other] = seq
        if active and other < self.id:
            _logger.warning(
                "Two pollers lead account %s: this one steps down", self.poller.client_id
            )
            self.leading, self.step_down = False, True

    def remote_demand(self) -> tuple[float | None, bool, bool]:
        """The followers' fresh demand: shortest interval, extractions wanted, loads wanted.

        Waiters' threads call it too (through the poller's tick) while the poller's thread
        updates the demands: it reads one copy of them (``list()`` of a dict copies it
        whole under the GIL), never the live dict twice.
        """
        demands = list(self.demands.values())
        if not demands:
            return None, False, False
        return (
            min(d.interval for d in demands),
            any(d.extractions for d in demands),
            any(d.loads for d in demands),
        )

    async def publish(self, snapshot: Snapshot) -> None:
        """Publish a listing the leader read, if some follower wants it.

        The listing Variable gets the whole listing while it fits in half of it (a small
        account), else the rows changed since the state the artifact holds: either way a
        follower needs no other read. The artifact is brought up to date afterwards, off
        the followers' path. Changes too big for the Variable go to the artifact first.
        """
        if not self.leading or not self.demands:
            return
        await self._said_taken()
        try:
            marker = await self._marker_for(snapshot)
            await self._set_variable(self.listing_name, marker)
            self.last_marker, self.published = marker, snapshot
            _logger.debug(
                "Poller %s published listing %s of account %s for %s follower(s)",
                self.id,
                marker["seq"],
                self.poller.client_id,
                len(self.demands),
            )
        except Exception as exc:  # followers will see the leader silent, then take over
            _logger.warning(
                "Could not publish a listing of account %s: %s", self.poller.client_id, exc
            )
            return
        self.since_document += 1
        if len(json.dumps(marker)) > MARKER_BUDGET // 2 or (
            self.base is not None and self.since_document >= _DOCUMENT_EVERY
        ):
            # The changes grow with every job that ends: write the whole listing now, off
            # the followers' path, rather than when they no longer fit. (Not every tick:
            # changes since an older base also serve a follower that missed a listing.)
            # And every few listings regardless: a follower that lost track (the
            # artifact overwritten while two processes led) is never stuck for long.
            with contextlib.suppress(Exception):
                await self._write_document()

    async def _marker_for(self, snapshot: Snapshot) -> dict[str, Any]:
        """The listing Variable's value for a new listing (writes the artifact if need be)."""
        seq = max(self.state.seq, self.marker_seen[1] if self.marker_seen else 0) + 1
        self.touched |= self.state.advance(snapshot, self.id, seq)
        marker: dict[str, Any] = {
            "leader": self.id,
            "seq": seq,
            "r": self.poller.limiter().local_requests,
            "h": self.state.header,
        }
        if self.base is None:  # the whole listing, built from nothing
            every = {(section, key) for section, rows in self.state.rows.items() for key in rows}
            marker.update(base=list(_WHOLE), c=self.state.changes(every))
        else:
            marker.update(base=list(self.base), c=self.state.changes(self.touched))
        if len(json.dumps(marker)) > MARKER_BUDGET:
            await self._write_document()  # the whole listing first
            marker.update(base=list(self.base or ()), c={})
        if self.document_id is not None:
            marker["doc"] = str(self.document_id)
        return marker

    async def prepare(self) -> None:
        """Get ready to publish, as soon as this process leads (before its first tick).

        Reads the followers' demands now, while the first tick is not yet due, so that
        the new leader's first tick goes straight to Stitch and its listing is published
        as soon as it is read: a hand-over then costs the followers little more than the
        tick itself.
        """
        if not self.leading:
            return
        await self.refresh_demands()
        self.demands_fresh = True

    async def refresh_demands_if_stale(self) -> None:
        """`refresh_demands`, unless `prepare` just read them (a leader's first tick)."""
        if self.demands_fresh:
            self.demands_fresh = False
            return
        await self.refresh_demands()

    async def _write_document(self) -> None:
        """Write the whole listing to the account's artifact; it is then the changes' base.

        One artifact per account, passed from leader to leader and updated in place.
        """
        from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate

        document = self.state.document()
        async with self._api() as client:
            created = None
            if self.document_id is not None:
                try:
                    await client.update_artifact(
                        uuid.UUID(str(self.document_id)), ArtifactUpdate(data=document)
                    )
                except Exception as exc:  # deleted: make another
                    if "404" not in str(exc) and type(exc).__name__ != "ObjectNotFound":
                        raise
                    self.document_id = None
            if self.document_id is None:
                created = await client.create_artifact(
                    ArtifactCreate(
                        type="stitch-listing",
                        description=f"The shared listing of Stitch account "
                        f"{self.poller.client_id} (prefect-stitch; updated in place)",
                        data=document,
                    )
                )
        if created is not None:
            self.document_id = created.id
        self.base = (self.state.leader, self.state.seq)
        self.touched = set()
        self.since_document = 0

    # -- what a follower does ---------------------------------------------------------

    async def heartbeat_if_due(self, interval: float, extractions: bool, loads: bool) -> None:
        """Tell the leader what this process needs (and the jobs requests it made).

        Every ``HEARTBEAT_SECONDS``, and at once when the demand changed.
        """
        value = self._heartbeat(interval, extractions, loads)
        if value is not None:
            await self._announce(value)

    def start_heartbeat_if_due(
        self, interval: float, extractions: bool, loads: bool
    ) -> asyncio.Task[None] | None:
        """`heartbeat_if_due`, in the background: a slow write must not hold up following.

        Returns:
            The task writing the demand, or ``None`` when none was due.
        """
        value = self._heartbeat(interval, extractions, loads)
        return None if value is None else asyncio.create_task(self._announce(value))

    def _heartbeat(self, interval: float, extractions: bool, loads: bool) -> dict[str, Any] | None:
        demand = (interval, extractions, loads)
        if self.leading or (time.monotonic() < self.next_heartbeat and demand == self.announced):
            return None
        self.next_heartbeat = time.monotonic() + HEARTBEAT_SECONDS
        self.announced = demand
        self.heartbeats += 1
        return {
            "i": interval,
            "e": extractions,
            "l": loads,
            "n": self.heartbeats,
            "r": self.poller.limiter().local_requests,
            "a": round(time.monotonic() - self.created, 1),
        }

    async def _announce(self, value: dict[str, Any]) -> None:
        try:
            await self._set_variable(self.demand_name, value)
        except Exception as exc:
            _logger.debug("Could not announce the demand of %s: %s", self.demand_name, exc)

    async def follow(self, interval: float, *, deliver: bool = True) -> None:
        """Pick up the leader's newest listing, if there is one (a follower, often).

        The next listing is due about a tick after the last one: a follower looks then,
        and a few times a tick until it comes.

        Args:
            interval: The poll interval this process wants.
            deliver: Hand the listing to the waiters. A poller that starts reads what was
                published before (``False``): it may predate the waits it serves, which
                must not take it for a listing read after they acted; it only becomes
                the poller's latest (a baseline) and paces its first tick.
        """
        now = time.monotonic()
        often = min(max(interval / 6, 0.2), 2.0)
        self.next_follow = max(now + often, self.last_received + 0.75 * interval)
        try:
            marker = await self._get_variable(self.listing_name)
        except Exception as exc:
            _logger.debug("Could not read %s: %s", self.listing_name, exc)
            return
        self.last_look = time.monotonic()
        if self.looking_since is None:
            self.looking_since = self.last_look
        if not isinstance(marker, dict):
            return
        leader, seq = str(marker.get("leader", "")), int(marker.get("seq", 0))
        resigned = bool(marker.get("resigned"))
        if resigned:
            self._saw_resignation(marker, interval)
            taken = marker.get("taken")
            if taken and taken != self.id:  # the first successor leads: no try, no freeing
                self.next_attempt = time.monotonic() + 2 * interval + _STALE_SLACK_SECONDS
                self.handed_lease = self.stale_lease = None
        elif leader != self.id:
            self.stale_lease = None  # a leader publishes: no lease to free
        if (leader, seq) == self.marker_seen or (leader, seq) == (
            self.state.leader,
            self.state.seq,
        ):
            return
        if not isinstance(marker.get("h"), dict):
            self.marker_seen = (leader, seq)  # nothing to read (no listing yet)
            self.last_listing = time.monotonic()
            return
        first_sight = self.marker_seen is None
        state = await self._state_for(marker, leader, seq)
        if state is None:  # the artifact is not there yet: the next look
            _logger.debug(
                "Poller %s could not rebuild listing %s of %s (holds %s of %s)",
                self.id,
                seq,
                leader,
                self.state.seq,
                self.state.leader,
            )
            return
        if leader != (self.marker_seen or ("", 0))[0]:
            self.leader_requests = int(marker.get("r", 0))  # a new leader: count from now
        self.marker_seen = (leader, seq)
        self.state = state
        self.last_listing = self.last_received = time.monotonic()
        self.next_follow = self.last_received + 0.75 * interval
        snapshot = state.snapshot()
        age = time.time() - snapshot.fetched_at.timestamp()
        if first_sight and age > 2 * interval + _STALE_SLACK_SECONDS:
            return  # published long before we followed (a leader gone quiet): not news
        if not resigned:  # a leader at work: no try for the lead while it publishes
            # (one planned after a resignation included: that one has a successor)
            self.next_attempt = time.monotonic() + 2 * interval + _STALE_SLACK_SECONDS
            self.handed_lease = None
        spent = int(marker.get("r", 0))
        self.poller.limiter().record(spent - self.leader_requests)
        self.leader_requests = spent
        self.listings_received += 1
        _logger.debug("Poller %s received listing %s from %s", self.id, seq, leader)
        if deliver:
            self.poller.receive(snapshot)
        else:
            self.poller.prime(snapshot)

    def _saw_resignation(self, marker: dict[str, Any], interval: float) -> None:
        """Plan this follower's try for the lead after a leader resigned."""
        resignation = (str(marker.get("by", marker.get("leader", ""))), int(marker.get("seq", 0)))
        if self.resignation_seen == resignation:
            return
        _logger.debug("Poller %s saw %s resign", self.id, resignation[0])
        self.resignation_seen, self.resignation = resignation, marker
        named = marker.get("next")
        named = [str(n) for n in named] if isinstance(named, list) else []
        lease = marker.get("lease")
        lease = str(lease) if lease else None
        now = time.monotonic()
        wait = interval + _SUCCESSOR_SLACK  # for the one named before to lead
        if not named:  # the slot is free: whoever comes first (not all in one instant)
            self.next_attempt = now + random.uniform(0, interval)
        elif named[0] == self.id:
            self.handed_lease, self.next_attempt = lease, 0.0
        elif self.id in named:
            self.stale_lease = lease
            self.next_attempt = now + named.index(self.id) * wait
        else:  # the others, only should none of them lead
            self.stale_lease = lease
            self.next_attempt = now + len(named) * wait + random.uniform(0, interval)

    async def _state_for(
        self, marker: dict[str, Any], leader: str, seq: int
    ) -> ListingState | None:
        """The listing a marker announces, or None when it cannot be had yet.

        From its changes when they apply to the listing this follower holds, else from
        the artifact (with the changes, if the artifact is behind).
        """
        base = marker.get("base")
        base_leader, base_seq = (str(base[0]), int(base[1])) if base else ("", -1)
        changes, header = marker.get("c") or {}, marker["h"]
        if (base_leader, base_seq) == _WHOLE:  # the whole listing: from nothing
            state = ListingState()
            state.apply(changes, header, leader, seq)
            return state
        if base and self.state.can_apply(base_leader, base_seq, seq):
            state = ListingState.from_document(self.state.document())
            state.apply(changes, header, leader, seq)
            self.listings_applied += 1
            return state
        read = await self._read_document(marker.get("doc"))
        if read is None:
            return None
        state = read
        if (state.leader, state.seq) == (leader, seq):
            return state
        if base and state.can_apply(base_leader, base_seq, seq):
            state.apply(changes, header, leader, seq)
            return state
        return None

    async def _read_document(self, document_id: Any) -> ListingState | None:
        if not document_id:
            return None
        try:
            async with self._api() as client:
                response = await client.request(
                    "GET", "/artifacts/{id}", path_params={"id": str(uuid.UUID(str(document_id)))}
                )
            return ListingState.from_document(response.json().get("data") or {})
        except Exception as exc:  # e.g. being rewritten as we read: next time
            _logger.debug("Could not read the shared listing %s: %s", self.listing_name, exc)
            return None

    async def _delete_artifact(self, artifact_id: Any) -> None:
        async with self._api() as client:
            await client.delete_artifact(uuid.UUID(str(artifact_id)))

    # -- variables ---------------------------------------------------------------------

    async def _get_variable(self, name: str) -> Any:
        async with self._api() as client:
            variable = await client.read_variable_by_name(name)
        return None if variable is None else variable.value

    async def _set_variable(self, name: str, value: dict[str, Any]) -> None:
        from prefect.client.schemas.actions import VariableCreate, VariableUpdate
        from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

        async with self._api() as client:
            try:
                await client.update_variable(VariableUpdate(name=name, value=value))
            except Exception as exc:
                if not isinstance(exc, ObjectNotFound) and "404" not in str(exc):
                    raise
                try:
                    await client.create_variable(VariableCreate(name=name, value=value))
                except Exception as again:  # created meanwhile by another process: update
                    if not isinstance(again, ObjectAlreadyExists) and "409" not in str(again):
                        raise
                    await client.update_variable(VariableUpdate(name=name, value=value))

    async def _delete_variable(self, name: str) -> None:
        from prefect.exceptions import ObjectNotFound

        async with self._api() as client:
            with contextlib.suppress(ObjectNotFound):
                await client.delete_variable_by_name(name)

    async def _demand_variables(self) -> dict[str, Any]:
        try:
            async with self._api() as client:
                response = await client.request(
                    "POST",
                    "/variables/filter",
                    json={
                        "variables": {"name": {"like_": f"{self.demand_prefix}%"}},
                        "limit": 200,
                    },
                )
        except Exception as exc:
            _logger.debug("Could not read the demands of %s: %s", self.listing_name, exc)
            return {f"{self.demand_prefix}{k}": None for k in self.demands}  # keep them
        return {str(item["name"]): item.get("value") for item in response.json()}
