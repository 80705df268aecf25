"""One poll per account across every process: a leader's lease, listings as Prefect events.

Every process that watches a Stitch account has an
[`AccountPoller`][prefect_stitch.poller.AccountPoller]. Through the Prefect API they
already talk to, with no other server and no setup, they elect one of them to read
Stitch and share what it reads:

* **Leadership** is one slot of a Prefect global concurrency limit
  (``stitch-poll-<client_id>-<host>``, limit 1, created on first use), held with a
  *lease* that the leader renews. Only the leader reads Stitch's listings. A process that
  cannot take the slot follows.
* **Followers announce their demand** (the poll interval they want, whether they need the
  loads listing, and the jobs requests they made themselves) in ``stitch.account.demand``
  events, every few seconds while they wait.
* **The leader publishes each listing** it reads (the account's extraction records, and
  its load records while someone needs them) in a ``stitch.account.listing`` event, but
  only while some follower has a fresh demand: a lone process publishes nothing. Its tick
  is the shortest interval any process wants, floored by the budget.
* **The budget is shared**: each listing event carries the jobs requests the leader made
  since its previous one, and each demand event those the follower made (its log reads);
  every process records the others' requests in its own rate limiter, at the moment it
  learns of them. So the leader paces every process's requests, and a process that takes
  over inherits the budget already spent.
* **Take-over**: a leader whose last waiter leaves releases its slot and says so in a
  last listing event; a follower then takes over at once. A leader that dies without
  releasing keeps its slot until its lease expires (Prefect's shortest lease is 60 s):
  a follower that has heard no listing for a lease's length plus two ticks frees the
  slot (a server's repossessor may have done it already) and takes it. Should two
  processes ever lead at once (a split event stream), the one with the greater id steps
  down when it hears the other.

Prefect Cloud and a self-hosted server work alike. Without a Prefect API URL (the
ephemeral API of a single process), every process polls for itself.

Listings travel as compact JSON; an account whose listing would exceed ~900 KB is split
over several events. The events subscriber replays recent events when it connects:
listings read before the follower subscribed are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prefect_stitch.errors import StitchAPIError, StitchError
from prefect_stitch.models import Extraction, Load

if TYPE_CHECKING:
    from prefect_stitch.poller import AccountPoller, Snapshot

__all__ = [
    "DEMAND_EVENT",
    "LISTING_EVENT",
    "Sharing",
    "decode_listing",
    "encode_listing",
    "sharing_enabled",
]

LISTING_EVENT = "stitch.account.listing"
DEMAND_EVENT = "stitch.account.demand"
LEASE_SECONDS = 60.0
"""Prefect's shortest concurrency lease."""
RENEW_SECONDS = 15.0
HEARTBEAT_SECONDS = 5.0
"""How often a follower repeats its demand (the leader forgets it after three misses)."""
FOLLOWER_ATTEMPT_SECONDS = 5.0
"""How often a follower tries to take the lead (at once when the leader resigns)."""
_MAX_PART_BYTES = 900_000
_REPLAY_SLACK_SECONDS = 2.0
_ENV_SWITCH = "PREFECT_STITCH_SHARED_POLLING"

_logger = logging.getLogger("prefect_stitch.sharing")


def sharing_enabled() -> bool:
    """Whether pollers share one poll per account through the Prefect API.

    On when a Prefect API URL is set (a server or Prefect Cloud), unless
    ``PREFECT_STITCH_SHARED_POLLING`` is ``0``/``false``/``off``.

    Returns:
        True when listings are shared across processes.

    Example:
        ```python
        from prefect_stitch.sharing import sharing_enabled

        print(sharing_enabled())
        ```
    """
    if os.environ.get(_ENV_SWITCH, "").strip().lower() in ("0", "false", "off", "no"):
        return False
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(value)
    return None


def encode_listing(snapshot: Snapshot, *, leader: str, requests: int) -> list[dict[str, Any]]:
    """Turn a listing into the payloads of one or more ``stitch.account.listing`` events.

    Args:
        snapshot: The listing.
        leader: The publishing poller's id.
        requests: Jobs requests the leader made since its previous listing event.

    Returns:
        The payloads (one per part).

    Example:
        ```python
        from datetime import UTC, datetime
        from prefect_stitch.poller import Snapshot
        from prefect_stitch.sharing import decode_listing, encode_listing

        snapshot = Snapshot(tick=1, records=(), fetched_at=datetime.now(UTC), pages=1)
        [payload] = encode_listing(snapshot, leader="a", requests=1)
        print(decode_listing([payload]).pages)  # 1
        ```
    """
    extractions = [
        [
            r.job_name,
            r.source_id,
            _iso(r.start_time),
            _iso(r.completion_time),
            r.discovery_exit_status,
            r.discovery_description,
            r.tap_exit_status,
            r.tap_description,
            r.target_exit_status,
            r.target_description,
        ]
        for r in snapshot.records
    ]
    loads = (
        None
        if snapshot.loads is None
        else [
            [r.source_name, r.stream_name, _iso(r.last_batch_loaded_at), r.error_state]
            for r in snapshot.loads
        ]
    )
    error = None
    if snapshot.error is not None:
        error = {
            "message": str(snapshot.error)[:2000],
            "status": getattr(snapshot.error, "status_code", None),
            "reason": getattr(snapshot.error, "reason", None),
            "retry_after": getattr(snapshot.error, "retry_after", None),
        }
    head = {
        "v": 1,
        "leader": leader,
        "tick": snapshot.tick,
        "fetched_at": _iso(snapshot.fetched_at),
        "stitch_time": _iso(snapshot.stitch_time),
        "pages": snapshot.pages,
        "requests": requests,
        "extractions_read": snapshot.extractions_read,
        "error": error,
    }
    rows: list[tuple[str, Any]] = [("e", row) for row in extractions]
    rows += [("l", row) for row in loads or []]
    parts: list[dict[str, Any]] = []
    current: dict[str, Any] = {"e": [], "l": [] if loads is not None else None}
    size = 0
    for kind, row in rows:
        cost = len(json.dumps(row, default=str)) + 2
        if size + cost > _MAX_PART_BYTES and size:
            parts.append(current)
            current = {"e": [], "l": [] if loads is not None else None}
            size = 0
        current[kind].append(row)
        size += cost
    parts.append(current)
    return [
        {**head, "part": index, "parts": len(parts), "extractions": p["e"], "loads": p["l"]}
        for index, p in enumerate(parts)
    ]


def decode_listing(payloads: list[dict[str, Any]]) -> Snapshot:
    """Rebuild a listing from the payloads of its events (every part, any order).

    Args:
        payloads: The payloads of one listing's events.

    Returns:
        The listing, as a snapshot of the follower's poller.

    Raises:
        ValueError: A part is missing or malformed.

    Example:
        ```python
        from prefect_stitch.sharing import decode_listing

        payload = {"v": 1, "tick": 3, "pages": 1, "part": 0, "parts": 1,
                   "extractions": [], "loads": None}
        print(decode_listing([payload]).tick)  # 3
        ```
    """
    from prefect_stitch.poller import Snapshot

    ordered = sorted(payloads, key=lambda p: int(p.get("part", 0)))
    if not ordered or len(ordered) != int(ordered[0].get("parts", 1)):
        raise ValueError("incomplete listing")
    head = ordered[0]
    records = tuple(
        Extraction(
            job_name=row[0],
            source_id=row[1],
            start_time=row[2],
            completion_time=row[3],
            discovery_exit_status=row[4],
            discovery_description=row[5],
            tap_exit_status=row[6],
            tap_description=row[7],
            target_exit_status=row[8],
            target_description=row[9],
        )
        for part in ordered
        for row in part.get("extractions") or []
    )
    loads: tuple[Load, ...] | None = None
    if head.get("loads") is not None:
        loads = tuple(
            Load(
                source_name=row[0],
                stream_name=row[1],
                last_batch_loaded_at=row[2],
                error_state=row[3],
            )
            for part in ordered
            for row in part.get("loads") or []
        )
    error: StitchError | None = None
    if head.get("error"):
        raw = head["error"]
        error = StitchAPIError(
            str(raw.get("message") or "the leader's listing failed"),
            status_code=raw.get("status"),
            reason=str(raw.get("reason") or "listing failed"),
            retry_after=raw.get("retry_after"),
        )
    return Snapshot(
        tick=int(head.get("tick", 0)),
        records=records,
        fetched_at=_parse(head.get("fetched_at")) or datetime.now(UTC),
        pages=int(head.get("pages", 0)),
        error=error,
        stitch_time=_parse(head.get("stitch_time")),
        loads=loads,
        extractions_read=bool(head.get("extractions_read", True)),
    )


@dataclass
class _Demand:
    interval: float
    extractions: bool
    loads: bool
    expires: float  # time.monotonic()


class Sharing:
    """The cross-process side of one account's poller (runs on the poller's event loop).

    Args:
        poller: The account's poller in this process.

    Example:
        ```python
        from prefect_stitch.sharing import Sharing

        def describe(poller) -> str:
            return "leader" if Sharing(poller).leading else "follower"
        ```
    """

    def __init__(self, poller: AccountPoller) -> None:
        self.poller = poller
        self.id = uuid.uuid4().hex[:12]
        self.leading = False
        self.lease_id: Any = None
        self.resource = f"stitch.account.{poller.client_id}"
        host = hashlib.sha256(poller.credentials.base_url.encode()).hexdigest()[:8]
        self.limit_name = f"stitch-poll-{poller.client_id}-{host}"
        self.demands: dict[str, _Demand] = {}
        self.subscribed_at = time.time()
        self.next_attempt = 0.0
        self.next_heartbeat = 0.0
        self.next_renew = 0.0
        self.reported_requests = 0
        self.listings_received = 0
        self.last_listing = time.monotonic()
        """When a listing (or a resignation) was last heard from a leader, or we began."""
        self._parts: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.step_down = False
        self._listener: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to the account's events (listings and demands)."""
        self._listener = asyncio.create_task(self._listen())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self._ready.wait()

    async def stop(self) -> None:
        """Resign (if leading) and unsubscribe."""
        if self.leading:
            await self._resign()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener

    # -- leadership ------------------------------------------------------------------

    async def try_lead(self) -> bool:
        """Take the account's leader slot if it is free.

        Returns:
            True when this process now leads.
        """
        from prefect.client.orchestration import get_client

        self.next_attempt = time.monotonic() + FOLLOWER_ATTEMPT_SECONDS
        try:
            async with get_client() as client:
                await self._ensure_limit(client)
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
            # The API cannot coordinate (no concurrency leases, no permission...): poll
            # alone rather than wait for listings that will never come.
            _logger.warning(
                "Cannot share the poll of %s through the Prefect API (%s): polling alone",
                self.resource,
                exc,
            )
            self.leading, self.lease_id = True, None
            return True
        self.leading = self.lease_id is not None
        self.next_renew = time.monotonic() + RENEW_SECONDS
        if self.leading:
            _logger.debug("Poller %s leads %s", self.id, self.resource)
        return self.leading

    def leader_silent(self, interval: float) -> bool:
        """Whether the leader has said nothing for longer than its lease could last."""
        return time.monotonic() - self.last_listing > LEASE_SECONDS + 2 * interval

    async def free_the_slot(self) -> None:
        """Free a silent (dead) leader's slot, so that this process can take it."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

        _logger.warning(
            "No listing of %s heard for more than a lease: taking over from a silent leader",
            self.resource,
        )
        self.last_listing = time.monotonic()
        try:
            async with get_client() as client:
                await client.update_global_concurrency_limit(
                    self.limit_name, GlobalConcurrencyLimitUpdate(active_slots=0)
                )
        except Exception as exc:
            _logger.debug("Could not free the lead of %s: %s", self.resource, exc)
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
        from prefect.client.orchestration import get_client

        self.next_renew = time.monotonic() + RENEW_SECONDS
        try:
            async with get_client() as client:
                await client.renew_concurrency_lease(self.lease_id, LEASE_SECONDS)
        except Exception as exc:
            _logger.warning("Lost the lead of %s (%s): following again", self.resource, exc)
            self.leading = False
            self.lease_id = None

    async def _resign(self) -> None:
        self.leading = False
        with contextlib.suppress(Exception):
            self._emit(LISTING_EVENT, {"v": 1, "leader": self.id, "resign": True})
        await self.release()

    async def release(self) -> None:
        """Give the leader slot back (after resigning or stepping down)."""
        from prefect.client.orchestration import get_client

        if self.lease_id is None:
            return
        try:
            async with get_client() as client:
                await client.release_concurrency_slots_with_lease(self.lease_id)
        except Exception as exc:
            _logger.debug("Could not release the lead of %s: %s", self.resource, exc)
        self.lease_id = None

    # -- what the leader serves -------------------------------------------------------

    def remote_demand(self) -> tuple[float | None, bool, bool]:
        """The followers' fresh demand: shortest interval, extractions wanted, loads wanted."""
        now = time.monotonic()
        for key in [k for k, d in self.demands.items() if d.expires < now]:
            del self.demands[key]
        if not self.demands:
            return None, False, False
        return (
            min(d.interval for d in self.demands.values()),
            any(d.extractions for d in self.demands.values()),
            any(d.loads for d in self.demands.values()),
        )

    def publish(self, snapshot: Snapshot) -> None:
        """Publish a listing the leader read, if some follower wants it."""
        if not self.leading or not self.demands:
            return
        spent = self._local_requests()
        for payload in encode_listing(snapshot, leader=self.id, requests=spent):
            self._emit(LISTING_EVENT, payload)

    # -- what a follower says ---------------------------------------------------------

    def heartbeat_if_due(self, interval: float, extractions: bool, loads: bool) -> None:
        """Tell the leader what this process needs (and the jobs requests it made)."""
        if self.leading or time.monotonic() < self.next_heartbeat:
            return
        self.next_heartbeat = time.monotonic() + HEARTBEAT_SECONDS
        self._emit(
            DEMAND_EVENT,
            {
                "v": 1,
                "follower": self.id,
                "interval": interval,
                "extractions": extractions,
                "loads": loads,
                "requests": self._local_requests(),
            },
        )

    def _local_requests(self) -> int:
        limiter = self.poller.limiter()
        spent = limiter.local_requests - self.reported_requests
        self.reported_requests = limiter.local_requests
        return max(spent, 0)

    def _emit(self, event: str, payload: dict[str, Any]) -> None:
        from prefect.events import emit_event

        emit_event(
            event=event,
            resource={"prefect.resource.id": self.resource, "stitch.poller": self.id},
            payload=payload,
        )

    # -- the subscription -------------------------------------------------------------

    async def _listen(self) -> None:
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

        event_filter = EventFilter(
            event=EventNameFilter(name=[LISTING_EVENT, DEMAND_EVENT]),
            resource=EventResourceFilter(id=[self.resource]),
        )
        while True:
            try:
                async with get_events_subscriber(
                    filter=event_filter, reconnect_on_clean_close=True
                ) as subscriber:
                    self._ready.set()
                    async for event in subscriber:
                        self._receive(event.event, dict(event.payload))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect; never let the poller die
                self._ready.set()
                _logger.debug("Events subscription of %s failed: %s", self.resource, exc)
                await asyncio.sleep(1.0)

    def _receive(self, name: str, payload: dict[str, Any]) -> None:
        if name == DEMAND_EVENT:
            follower = str(payload.get("follower", ""))
            if not follower or follower == self.id:
                return
            self.poller.limiter().record(int(payload.get("requests") or 0))
            interval = payload.get("interval")
            if interval is None:
                self.demands.pop(follower, None)
                return
            new = follower not in self.demands
            self.demands[follower] = _Demand(
                interval=float(interval),
                extractions=bool(payload.get("extractions", True)),
                loads=bool(payload.get("loads", False)),
                expires=time.monotonic() + 3 * HEARTBEAT_SECONDS,
            )
            latest = self.poller.latest
            if new and self.leading and latest is not None:
                self.publish(latest)  # serve the newcomer a baseline at once
            return
        leader = str(payload.get("leader", ""))
        if not leader or leader == self.id:
            return
        self.last_listing = time.monotonic()
        if payload.get("resign"):
            self.next_attempt = 0.0  # take over at once
            self.poller.poke()
            return
        if self.leading and leader < self.id:
            _logger.warning("Two pollers lead %s: this one steps down", self.resource)
            self.leading = False
            self.step_down = True
            self.poller.poke()
        fetched = _parse(payload.get("fetched_at"))
        if fetched is not None and fetched.timestamp() < self.subscribed_at - _REPLAY_SLACK_SECONDS:
            return  # replayed from before we subscribed
        key = (leader, int(payload.get("tick", 0)))
        parts = self._parts.setdefault(key, [])
        parts.append(payload)
        if len(parts) < int(payload.get("parts", 1)):
            return
        del self._parts[key]
        for stale in [k for k in self._parts if k[0] == leader and k[1] < key[1]]:
            del self._parts[stale]
        try:
            snapshot = decode_listing(parts)
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            _logger.warning("Ignored a malformed listing of %s: %s", self.resource, exc)
            return
        self.poller.limiter().record(int(payload.get("requests") or 0))
        self.listings_received += 1
        if not self.leading:
            self.poller.receive(snapshot)
