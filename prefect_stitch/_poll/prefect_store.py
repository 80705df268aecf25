"""The shared poll's store over the Prefect API: every Prefect call of the protocol is here.

Three Prefect primitives, over plain HTTP requests (no connection held open: a Prefect
server on SQLite serves at most 100 requests at a time, websockets included):

* the leader's slot: the one slot of the global concurrency limit
  ``stitch-poll-<client_id>-<host>`` (limit 1, created on first use), taken with a lease;
* the listing marker: the Variable ``stitch-listing-<client_id>-<host>``;
* the demands: a Variable per follower, ``stitch-demand-<client_id>-<host>-<id>``;
* the listing document: an artifact of type ``stitch-listing`` (no key, updated in place).

Errors are translated here: "423 Locked" when taking the slot means another process leads
(an answer, not a failure); a 404 on a write creates, a 409 on a create updates; every
other failure becomes a [`StoreError`][prefect_stitch._poll.store.StoreError] that says
whether it may pass, and the store's listener hears whether the Prefect API could be
reached at all. Each request times out after ``API_TIMEOUT_SECONDS``. The store retries a
failure that may pass itself, only while the API answered the request before (a busy
server's 503 passes in seconds): the Prefect client's own retries (after 2, 4, 8...
seconds) held a call for a minute while a server restarted, and the protocol tries again at
its own pace anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from prefect_stitch._poll.store import JSON, Listener, StoreError

__all__ = ["API_TIMEOUT_SECONDS", "PrefectStore"]

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
        self.client_id = client_id
        host = hashlib.sha256(base_url.encode()).hexdigest()[:8]
        base = f"stitch-{{}}-{client_id}-{host}"
        self.limit_name = base.format("poll")
        self.listing_name = base.format("listing")
        self.demand_prefix = base.format("demand") + "-"
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
        """Set the limit's active slots to zero, whatever lease holds the slot."""
        from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

        await self._call(
            lambda client: client.update_global_concurrency_limit(
                self.limit_name, GlobalConcurrencyLimitUpdate(active_slots=0)
            )
        )

    # -- the marker and the demands (Variables) ---------------------------------------------

    async def read_marker(self) -> Any:
        """The listing Variable's value."""
        return await self._call(lambda client: self._get_variable(client, self.listing_name))

    async def write_marker(self, marker: JSON) -> None:
        """Write the listing Variable."""
        await self._call(lambda client: self._set_variable(client, self.listing_name, marker))

    async def write_demand(self, follower: str, demand: JSON) -> None:
        """Write a follower's demand Variable."""
        name = f"{self.demand_prefix}{follower}"
        await self._call(lambda client: self._set_variable(client, name, demand))

    async def read_demands(self) -> dict[str, Any]:
        """Every demand Variable of the account (200 at most), by follower id."""
        response = await self._call(
            lambda client: client.request(
                "POST",
                "/variables/filter",
                json={"variables": {"name": {"like_": f"{self.demand_prefix}%"}}, "limit": 200},
            )
        )
        try:
            items = response.json()
            return {
                str(item["name"]).removeprefix(self.demand_prefix): item.get("value")
                for item in items
            }
        except Exception as exc:
            raise _failure(exc) from exc

    async def delete_demand(self, follower: str) -> None:
        """Remove a follower's demand Variable (gone already: nothing to do)."""
        from prefect.exceptions import ObjectNotFound

        async def delete(client: Any) -> None:
            with contextlib.suppress(ObjectNotFound):
                await client.delete_variable_by_name(f"{self.demand_prefix}{follower}")

        await self._call(delete)

    @staticmethod
    async def _get_variable(client: Any, name: str) -> Any:
        """A Variable's value, or None."""
        variable = await client.read_variable_by_name(name)
        return None if variable is None else variable.value

    @staticmethod
    async def _set_variable(client: Any, name: str, value: JSON) -> None:
        """Update a Variable; create it when missing (update it when created meanwhile)."""
        from prefect.client.schemas.actions import VariableCreate, VariableUpdate
        from prefect.exceptions import ObjectAlreadyExists

        try:
            await client.update_variable(VariableUpdate(name=name, value=value))
        except Exception as exc:
            if not _not_found(exc):
                raise
            try:
                await client.create_variable(VariableCreate(name=name, value=value))
            except Exception as again:  # created meanwhile by another process: update
                if not isinstance(again, ObjectAlreadyExists) and "409" not in str(again):
                    raise
                await client.update_variable(VariableUpdate(name=name, value=value))

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
        return await self._call(lambda client: self._write_artifact(client, document_id, document))

    async def _write_artifact(self, client: Any, document_id: str | None, document: JSON) -> str:
        """Update or create the artifact; its id."""
        from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate

        if document_id is not None:
            try:
                await client.update_artifact(uuid.UUID(document_id), ArtifactUpdate(data=document))
                return document_id
            except Exception as exc:  # deleted: make another
                if not _not_found(exc):
                    raise
        created = await client.create_artifact(
            ArtifactCreate(
                type="stitch-listing",
                description=f"The shared listing of Stitch account {self.client_id} "
                "(prefect-stitch; updated in place)",
                data=document,
            )
        )
        return str(created.id)
