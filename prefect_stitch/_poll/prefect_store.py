"""The shared poll's store over the Prefect API: every Prefect call of the protocol is here.

Two Prefect primitives, over plain HTTP requests (no connection held open: a Prefect
server on SQLite serves at most 100 requests at a time, websockets included), chosen
because writing them puts nothing in the Event Feed:

* the leader's slot: the one slot of the global concurrency limit
  ``stitch-poll-<client_id>-<host>`` (limit 1, created on first use), taken with a lease
  (taking, renewing and releasing a lease emit no event, nor does freeing the slot: a
  decrement; only the limit's creation does, once per account:
  ``prefect.concurrency-limit.created``, which names the limit and cannot carry a tag);
* the listing marker, the followers' demands and the whole listing: unkeyed artifacts of
  no flow run, updated in place, each by a plain request (the server emits no event for
  an unkeyed artifact's creation, update or deletion, where it does for a Variable's or a
  keyed artifact's; the Prefect client's ``create_artifact`` and ``update_artifact`` emit
  one of their own, so they are not used). Such an artifact shows neither on the UI's
  Artifacts page, which lists keyed artifacts, nor under any flow run. The store finds
  them by type, one type per account and role:

  * ``stitch-poll-marker-<client_id>-<host>``: the marker, one artifact. Two processes
    may create it at once: the first created is the account's, and whoever reads the
    others deletes them (a writer that kept one finds it gone, and writes the first);
  * ``stitch-poll-demand-<client_id>-<host>``: one artifact per follower, its data
    ``{"follower": <id>, "demand": <demand>}``, read page after page (any number of
    followers); of two of one follower (a create whose answer was lost), the last
    updated counts and the reader deletes the other;
  * ``stitch-poll-listing-<client_id>-<host>``: the listing document, found by its id.

What an older version left (the Variables ``stitch-listing-*`` and ``stitch-demand-*``,
an artifact of type ``stitch-listing``) is left as it was: deleting it would emit events,
and would cut off the processes of that version still running; it can be deleted by hand.

Errors are translated here: "423 Locked" when taking the slot means another process leads
(an answer, not a failure); a 404 on an update creates; every other failure becomes a
[`StoreError`][prefect_stitch._poll.store.StoreError] that says whether it may pass, and
the store's listener hears whether the Prefect API could be reached at all. Each request
times out after ``API_TIMEOUT_SECONDS``. The store retries a failure that may pass itself,
only while the API answered the request before (a busy server's 503 passes in seconds): the
Prefect client's own retries (after 2, 4, 8... seconds) held a call for a minute while a
server restarted, and the protocol tries again at its own pace anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from prefect_stitch._poll.store import JSON, Listener, StoreError

__all__ = [
    "API_TIMEOUT_SECONDS",
    "PrefectStore",
    "create_artifact_quietly",
    "update_artifact_quietly",
]

RETRY_SECONDS = (1.0, 2.0)
"""The waits before each retry of a request that failed transiently, while the API answers."""
API_TIMEOUT_SECONDS = 15.0
"""Timeout of each Prefect API request of the sharing (a slow answer is then transient)."""

_logger = logging.getLogger(__name__)
T = TypeVar("T")


def _transient(exc: BaseException) -> bool:
    """Whether a Prefect API failure may pass: a timeout, a dropped connection, a 5xx, a 429."""
    import httpx

    if isinstance(exc, TimeoutError | httpx.TransportError):
        return True
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return isinstance(status, int) and (status >= 500 or status == 429)


def _failure(exc: Exception) -> StoreError:
    """The store's error for a failed Prefect API call."""
    return StoreError(f"{type(exc).__name__}: {exc}", transient=_transient(exc))


def _not_found(exc: Exception) -> bool:
    """Whether the Prefect API said that the object is not there."""
    from prefect.exceptions import ObjectNotFound

    return isinstance(exc, ObjectNotFound) or "404" in str(exc)


class PrefectStore:
    """The shared poll's store of one account, over the Prefect API.

    Args:
        client_id: The Stitch account.
        base_url: The Stitch API's base URL (accounts of two hosts are kept apart).

    Example:
        ```python
        from prefect_stitch._poll.prefect_store import PrefectStore

        store = PrefectStore(116078, "https://api.stitchdata.com")
        print(store.limit_name.startswith("stitch-poll-116078-"))  # True
        ```
    """

    def __init__(self, client_id: int, base_url: str) -> None:
        self.client_id, self.base_url = client_id, base_url
        host = hashlib.sha256(base_url.encode()).hexdigest()[:8]
        self.limit_name = f"stitch-poll-{client_id}-{host}"
        self.marker_type = f"stitch-poll-marker-{client_id}-{host}"
        self.demand_type = f"stitch-poll-demand-{client_id}-{host}"
        self.listing_type = f"stitch-poll-listing-{client_id}-{host}"
        self._marker_id: str | None = None
        """The marker artifact, once written or read."""
        self._demand_ids: dict[str, str] = {}
        """The demand artifact of each follower, as this process wrote or last read it."""
        self._client: Any = None
        self._settings: Any = None
        """The Prefect settings of its requests: those of `open`'s caller, without retries."""
        self._limit_ready = False
        """Whether the account's leader limit is known to exist."""
        self._listener: Listener = lambda reached: None
        self._answering = True
        """Whether the API answered the last request (a failure is then retried)."""

    # -- the client -----------------------------------------------------------------------

    async def open(self) -> None:
        """Open the one Prefect client that this poller's requests share.

        Its requests time out after ``API_TIMEOUT_SECONDS`` (Prefect's default is 60 s):
        a follower stuck on one request hears no listing meanwhile.
        """
        from prefect.client.orchestration import get_client
        from prefect.context import SettingsContext
        from prefect.settings import PREFECT_CLIENT_MAX_RETRIES

        current = SettingsContext.get()
        if current is not None:
            settings = current.settings.copy_with_update(updates={PREFECT_CLIENT_MAX_RETRIES: 0})
            self._settings = (current.profile, settings)
        client = get_client(httpx_settings={"timeout": API_TIMEOUT_SECONDS})
        try:
            await client.__aenter__()
        except Exception as exc:  # each request then opens its own client, and may fail alone
            _logger.debug("Could not open a Prefect client for %s: %s", self.limit_name, exc)
            return
        self._client = client

    async def close(self) -> None:
        """Close the shared client."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    def listen(self, listener: Listener) -> None:
        """Tell ``listener`` whether each request reached the Prefect API."""
        self._listener = listener

    def _heard(self, answered: bool) -> None:
        """Whether a request reached the API (its listener hears it too)."""
        self._answering = answered
        self._listener(answered)

    @contextlib.asynccontextmanager
    async def _api(self) -> AsyncIterator[Any]:
        """The shared client once open (one client, not one per request), else a new one.

        Its requests are not retried by the client (see the module's docstring).
        """
        with self._without_retries():
            if self._client is not None:
                yield self._client
                return
            from prefect.client.orchestration import get_client

            async with get_client(httpx_settings={"timeout": API_TIMEOUT_SECONDS}) as client:
                yield client

    def _without_retries(self) -> contextlib.AbstractContextManager[Any]:
        """The settings of this store's requests (a context entered once per request)."""
        if self._settings is None:
            return contextlib.nullcontext()
        from prefect.context import SettingsContext

        profile, settings = self._settings
        return SettingsContext(profile=profile, settings=settings)

    async def _call(self, request: Callable[[Any], Awaitable[T]]) -> T:
        """Send one request (or a few) with the client; translate its failure.

        A failure that may pass is retried after ``RETRY_SECONDS`` if the API answered the
        request before; while it does not answer, a request is sent once.
        """
        waits = iter(RETRY_SECONDS if self._answering else ())
        while True:
            try:
                async with self._api() as client:
                    answer = await request(client)
            except Exception as exc:
                error = _failure(exc)
                wait = next(waits, None) if error.transient else None
                if wait is None:
                    self._heard(not error.transient)
                    raise error from exc
                await asyncio.sleep(wait)
                continue
            self._heard(True)
            return answer

    # -- the leader's slot ------------------------------------------------------------------

    async def take_lead(self, lease_seconds: float) -> str | None:
        """Take the limit's one slot with a lease (creating the limit on first use)."""

        async def take(client: Any) -> str | None:
            try:
                if not self._limit_ready:
                    await self._ensure_limit(client)
                    self._limit_ready = True
                response = await client.increment_concurrency_slots_with_lease(
                    names=[self.limit_name],
                    slots=1,
                    mode="concurrency",
                    lease_duration=lease_seconds,
                )
            except Exception as exc:
                if "423" in str(exc) or "Locked" in str(exc):
                    return None  # another process leads
                self._limit_ready = False  # deleted meanwhile? make sure of it next time
                raise
            lease = response.json().get("lease_id")
            return None if lease is None else str(lease)

        return await self._call(take)

    async def _ensure_limit(self, client: Any) -> None:
        """Create the account's leader limit unless it exists."""
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
        from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

        try:
            await client.read_global_concurrency_limit_by_name(self.limit_name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):
                await client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=self.limit_name, limit=1)
                )

    async def renew_lease(self, lease: str, lease_seconds: float) -> None:
        """Renew a lease (Prefect keeps leases apart from its database: a quick call)."""
        await self._call(
            lambda client: client.renew_concurrency_lease(uuid.UUID(lease), lease_seconds)
        )

    async def release_lease(self, lease: str) -> None:
        """Release the slot a lease holds."""
        await self._call(
            lambda client: client.release_concurrency_slots_with_lease(uuid.UUID(lease))
        )

    async def free_the_slot(self) -> None:
        """Take the limit's one slot back, whatever lease holds it.

        A decrement, not an update of the limit: an update emits an event, a decrement none.
        """
        await self._call(
            lambda client: client.request(
                "POST",
                "/v2/concurrency_limits/decrement",
                json={"names": [self.limit_name], "slots": 1},
            )
        )

    # -- the marker and the demands (unkeyed artifacts: no event) ---------------------------

    async def read_marker(self) -> Any:
        """The marker artifact's data: by its id once known, else found by its type.

        Followers read it a few times a tick: by id it is one lookup, where a search by
        type reads the whole artifact table (Prefect keeps no index of artifact types).
        """

        async def read(client: Any) -> Any:
            known = self._marker_id
            marker = None if known is None else await _artifact(client, known)
            if marker is None:  # not known yet, or deleted (a duplicate): find it
                marker = await self._find_marker(client)
            return None if marker is None else marker.get("data")

        return await self._call(read)

    async def write_marker(self, marker: JSON) -> None:
        """Update the marker artifact in place; create it when there is none."""
        await self._call(lambda client: self._write_marker(client, marker))

    async def _write_marker(self, client: Any, marker: JSON) -> None:
        """Update the marker known (or found); else create one, and keep the first created.

        Two processes may create the account's marker at once: both read the markers
        back and keep the first created (the others are deleted, see `_find_marker`).
        """
        if self._marker_id is not None and await update_artifact_quietly(
            client, self._marker_id, marker
        ):
            return
        found = await self._find_marker(client)
        if found is not None and await update_artifact_quietly(client, str(found["id"]), marker):
            return
        created = await create_artifact_quietly(
            client, self.marker_type, marker, self._describe("marker")
        )
        first = await self._find_marker(client)
        if first is not None and str(first["id"]) != created:
            await update_artifact_quietly(client, str(first["id"]), marker)

    async def _find_marker(self, client: Any) -> JSON | None:
        """The account's marker artifact: the first created; any other is deleted."""
        found = await _artifacts_of(client, self.marker_type)
        if not found:
            self._marker_id = None
            return None
        first = min(found, key=lambda item: (_when(item, "created"), str(item["id"])))
        for other in found:  # created at once by two processes: one is enough
            if other is not first:
                await _delete_quietly(client, str(other["id"]))
        self._marker_id = str(first["id"])
        return first

    async def write_demand(self, follower: str, demand: JSON) -> None:
        """Update a follower's demand artifact in place; create it when there is none."""

        async def write(client: Any) -> None:
            record = {"follower": follower, "demand": demand}
            known = self._demand_ids.get(follower)
            if known is None or not await update_artifact_quietly(client, known, record):
                description = self._describe(f"demand of poller {follower}")
                self._demand_ids[follower] = await create_artifact_quietly(
                    client, self.demand_type, record, description
                )

        await self._call(write)

    async def read_demands(self) -> dict[str, Any]:
        """Every demand of the account (every page), by follower id."""
        return await self._call(self._read_demands)

    async def _read_demands(self, client: Any) -> dict[str, Any]:
        """Every follower's last updated demand artifact (any other of it is deleted)."""
        found = await _artifacts_of(client, self.demand_type)
        latest: dict[str, JSON] = {}
        for item in sorted(found, key=lambda item: _when(item, "updated")):
            data = item.get("data")
            if isinstance(data, dict) and "follower" in data:
                latest[str(data["follower"])] = item  # the last updated wins
        kept = {str(item["id"]) for item in latest.values()}
        for item in found:
            if str(item["id"]) not in kept:
                await _delete_quietly(client, str(item["id"]))
        self._demand_ids.update({f: str(item["id"]) for f, item in latest.items()})
        return {f: item["data"].get("demand") for f, item in latest.items()}

    async def delete_demand(self, follower: str) -> None:
        """Delete a follower's demand artifact (gone already: nothing to do)."""

        async def delete(client: Any) -> None:
            known = self._demand_ids.pop(follower, None)
            if known is not None:
                await _delete(client, known)
                return
            for item in await _artifacts_of(client, self.demand_type):
                data = item.get("data")
                if isinstance(data, dict) and data.get("follower") == follower:
                    await _delete(client, str(item["id"]))

        await self._call(delete)

    def _describe(self, what: str) -> str:
        """An artifact's description: whose it is, and that it is the shared poll's."""
        return (
            f"The shared poll's {what}, Stitch account {self.client_id} "
            "(prefect-stitch; updated in place)"
        )

    # -- the listing document (an artifact) ------------------------------------------------------

    async def read_document(self, document_id: str) -> Any:
        """The artifact's data."""
        response = await self._call(
            lambda client: client.request(
                "GET", "/artifacts/{id}", path_params={"id": str(uuid.UUID(document_id))}
            )
        )
        try:
            return response.json().get("data") or {}
        except Exception as exc:
            raise _failure(exc) from exc

    async def write_document(self, document_id: str | None, document: JSON) -> str:
        """Update the account's artifact in place; create one when there is none (or it is gone)."""

        async def write(client: Any) -> str:
            if document_id is not None and await update_artifact_quietly(
                client, document_id, document
            ):
                return document_id
            return await create_artifact_quietly(
                client, self.listing_type, document, self._describe("listing")
            )

        return await self._call(write)


# -- unkeyed artifacts: created, updated and deleted without an event ------------------------

PAGE_SIZE = 200
"""Artifacts per page of a filter (the Prefect server's default limit)."""
PAGE_OVERLAP = 20
"""Artifacts each page re-reads of the one before: one deleted meanwhile shifts the rest."""


async def _artifacts_of(client: Any, artifact_type: str) -> list[JSON]:
    """Every artifact of a type, page after page (newest first; each page overlaps the last).

    Deleted meanwhile, an artifact of an earlier page moves the others up: the overlap
    keeps them from being skipped. Created meanwhile, one moves them down: read twice, once
    kept.
    """
    found: dict[str, JSON] = {}
    offset = 0
    while True:
        response = await client.request(
            "POST",
            "/artifacts/filter",
            json={
                "artifacts": {"type": {"any_": [artifact_type]}},
                "sort": "CREATED_DESC",
                "limit": PAGE_SIZE,
                "offset": offset,
            },
        )
        page = response.json()
        found.update((str(item["id"]), item) for item in page)
        if len(page) < PAGE_SIZE:
            return list(found.values())
        offset += PAGE_SIZE - PAGE_OVERLAP


async def create_artifact_quietly(
    client: Any,
    artifact_type: str,
    data: JSON,
    description: str,
    flow_run_id: uuid.UUID | None = None,
) -> str:
    """Create an unkeyed artifact; its id (of no flow run, it shows in no Artifacts page).

    A request of its own: the Prefect client's ``create_artifact`` puts an event in the
    Event Feed at each call.

    Args:
        client: An open Prefect client.
        artifact_type: The artifact's type.
        data: Its data.
        description: Its description.
        flow_run_id: The flow run it belongs to, if any.

    Returns:
        The artifact's id.

    Example:
        ```python
        from prefect.client.orchestration import get_client

        from prefect_stitch._poll.prefect_store import create_artifact_quietly

        async def note() -> str:
            async with get_client() as client:
                return await create_artifact_quietly(client, "note", {"n": 1}, "a note")
        ```
    """
    body: dict[str, Any] = {"type": artifact_type, "description": description, "data": data}
    if flow_run_id is not None:
        body["flow_run_id"] = str(flow_run_id)
    response = await client.request("POST", "/artifacts/", json=body)
    return str(response.json()["id"])


async def update_artifact_quietly(client: Any, artifact_id: str, data: JSON) -> bool:
    """Update an artifact's data in place: False when it is gone.

    A request of its own: the Prefect client's ``update_artifact`` puts an event in the
    Event Feed at each call.

    Args:
        client: An open Prefect client.
        artifact_id: The artifact.
        data: Its new data.

    Returns:
        Whether it was there.

    Example:
        ```python
        from prefect.client.orchestration import get_client

        from prefect_stitch._poll.prefect_store import update_artifact_quietly

        async def renote(artifact_id: str) -> bool:
            async with get_client() as client:
                return await update_artifact_quietly(client, artifact_id, {"n": 2})
        ```
    """
    try:
        await client.request(
            "PATCH", "/artifacts/{id}", path_params={"id": artifact_id}, json={"data": data}
        )
    except Exception as exc:
        if not _not_found(exc):
            raise
        return False
    return True


async def _artifact(client: Any, artifact_id: str) -> JSON | None:
    """An artifact, or ``None`` when it is gone."""
    try:
        response = await client.request("GET", "/artifacts/{id}", path_params={"id": artifact_id})
    except Exception as exc:
        if not _not_found(exc):
            raise
        return None
    found: JSON = response.json()
    return found


async def _delete(client: Any, artifact_id: str) -> None:
    """Delete an artifact (gone already: nothing to do)."""
    try:
        await client.request("DELETE", "/artifacts/{id}", path_params={"id": artifact_id})
    except Exception as exc:
        if not _not_found(exc):
            raise


async def _delete_quietly(client: Any, artifact_id: str) -> None:
    """Delete a duplicate as it is read; should that fail, the next reader deletes it.

    Two readers may delete it at once: on SQLite one of them then fails ("database is
    locked", a 503), and the read it tidies up after must not fail with it.
    """
    with contextlib.suppress(Exception):
        await _delete(client, artifact_id)


def _when(artifact: JSON, column: str) -> datetime:
    """When an artifact was created or updated (``column``), as the Prefect API says."""
    return datetime.fromisoformat(str(artifact[column]).replace("Z", "+00:00"))
