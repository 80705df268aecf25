"""The async client of Stitch's Connect API: one method per endpoint.

This is the boundary where HTTP becomes types: every response is parsed into a model
from [`prefect_stitch.models`][prefect_stitch.models] and every failure becomes an
error from [`prefect_stitch.errors`][prefect_stitch.errors]; nothing above this module
sees an ``httpx`` exception or a raw body.

What it takes care of (the sending itself is one path, in ``prefect_stitch._http``):

* **Timeouts** on every request (``request_timeout_seconds``).
* **Transient faults** (connection errors, timeouts, 5xx, 429, a truncated or
  malformed body) are retried up to ``max_retries`` times with exponential backoff and
  jitter, honouring ``Retry-After``. 4xx errors are never retried. The trigger
  (``POST /sync``) is never retried here: it is not idempotent, and
  [`start_stitch_sync`][prefect_stitch.tasks.start_stitch_sync] retries it safely.
* **The jobs rate budget**: extractions, logs and loads requests go through the
  account's process-wide `SlidingWindowLimiter` (`prefect_stitch/_ratelimit.py`),
  and optionally through a Prefect global concurrency limit shared across processes.
* **Pagination**: ``links.next`` is followed relative to ``base_url`` (never to another
  host: the token would go with it).
* **The logs redirect**: the pre-signed URL is fetched by a separate client that has
  no ``Authorization`` header.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from prefect_stitch._http import (
    Call,
    JobsSlot,
    Sender,
    api_client,
    download_client,
    error_fields,
    is_transient,
    reason_of,
    stitch_time_of,
)
from prefect_stitch._logscan import DEFAULT_MAX_LINE_CHARS, LogScan
from prefect_stitch._ratelimit import SlidingWindowLimiter, limiter_for
from prefect_stitch.errors import (
    StitchAPIError,
    StitchConfigurationError,
    StitchJobAlreadyRunning,
    StitchNotFoundError,
    StitchTransportError,
)
from prefect_stitch.models import (
    Destination,
    Extraction,
    Listing,
    Load,
    Page,
    Source,
    Stream,
    TriggerAnswer,
    check_source_id,
)

__all__ = ["StitchClient", "StitchConnection", "is_transient", "stitch_time_of"]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class StitchConnection(Protocol):
    """What the client needs to know of an account (a `StitchCredentials` block has it).

    The client depends on this shape, not on the block, so that the block may build
    clients without the two modules importing each other.

    Example:
        ```python
        from prefect_stitch import StitchCredentials
        from prefect_stitch.client import StitchClient

        client = StitchClient(StitchCredentials(access_token="ac_x", client_id=1))
        ```
    """

    @property
    def access_token(self) -> SecretStr: ...  # noqa: D102

    @property
    def base_url(self) -> str: ...  # noqa: D102

    @property
    def client_id(self) -> int | None: ...  # noqa: D102

    @property
    def request_timeout_seconds(self) -> float: ...  # noqa: D102

    @property
    def max_retries(self) -> int: ...  # noqa: D102

    @property
    def retry_backoff_seconds(self) -> float: ...  # noqa: D102

    @property
    def jobs_rate_limit(self) -> int: ...  # noqa: D102

    @property
    def jobs_rate_period_seconds(self) -> float: ...  # noqa: D102


_MAX_PAGES = 10_000
_LOG_ANSWERS = (200, 301, 302, 303, 307)
"""The logs endpoint's answers: the documented redirect, or the log a proxy followed it to."""
_UNBOUNDED_LINE = 10_000_000
"""``get_extraction_logs`` returns lines whole (up to this many characters each)."""

_client_id_cache: dict[tuple[str, str], int] = {}
_client_id_lock = threading.Lock()


@dataclass(frozen=True)
class _Pages(Generic[M]):
    """What one reading of a paginated listing read: records, pages, Stitch's first Date."""

    records: list[M]
    pages: int
    stitch_time: datetime | None


class StitchClient:
    """Async client of Stitch's Connect API, bound to one set of credentials.

    Use it as an async context manager; it owns one ``httpx.AsyncClient`` for the
    API and one, without credentials, for pre-signed log URLs.

    Args:
        credentials: The Stitch credentials block.
        transport: An ``httpx`` transport to use instead of the network (tests).
        global_limit_name: Also take a slot of this Prefect global concurrency limit
            (configured as a rate limit with slot decay) before each jobs request, to
            share the account's budget across processes and workers.

    Example:
        ```python
        import asyncio
        from prefect_stitch import StitchCredentials

        async def main() -> None:
            credentials = await StitchCredentials.aload("stitch")
            async with credentials.get_client() as client:
                job_name = await client.start_replication_job(120643)
                print(job_name)
                for record in await client.list_extractions():
                    print(record.source_id, record.completion_time)

        asyncio.run(main())
        ```
    """

    def __init__(
        self,
        credentials: StitchConnection,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        global_limit_name: str | None = None,
    ) -> None:
        self.credentials = credentials
        self.base_url = credentials.base_url
        self.global_limit_name = global_limit_name
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._downloads: httpx.AsyncClient | None = None
        self._closed = False
        self._sender = Sender(
            max_retries=credentials.max_retries,
            backoff_seconds=credentials.retry_backoff_seconds,
        )

    @property
    def requests_made(self) -> int:
        """Requests sent by this client, retries included."""
        return self._sender.requests_made

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._closed:
            raise RuntimeError("a StitchClient cannot be reused once closed; make a new one")
        self._http = api_client(
            self.base_url,
            self.credentials.access_token,
            self.credentials.request_timeout_seconds,
            self._transport,
        )
        return self

    def _download_client(self) -> httpx.AsyncClient:
        """The client for pre-signed URLs: no Authorization header, made when first needed."""
        if self._downloads is None:
            self._downloads = download_client(self._api.timeout, self._transport)
        return self._downloads

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the underlying HTTP connections.

        Example:
            ```python
            from prefect_stitch import StitchCredentials

            async def main(credentials: StitchCredentials) -> None:
                client = await credentials.get_client().__aenter__()
                await client.aclose()
            ```
        """
        self._closed = True
        for http in (self._http, self._downloads):
            if http is not None:
                await http.aclose()

    def __repr__(self) -> str:
        return f"StitchClient(base_url={self.base_url!r}, client_id={self.credentials.client_id!r})"

    @property
    def _api(self) -> httpx.AsyncClient:
        """The API's ``httpx`` client, once the client is entered and until it is closed."""
        if self._http is None or self._closed:
            raise RuntimeError("use the client as `async with credentials.get_client() as client:`")
        return self._http

    async def _request(
        self,
        method: str,
        path: str,
        parse: Callable[[httpx.Response], T],
        *,
        json: Any = None,
        retry: bool = True,
        slot: JobsSlot | None = None,
    ) -> T:
        """Send one call to the API host through the send path, and parse its answer."""
        call = Call(self._api, method, path, json=json, retry=retry, slot=slot)
        return await self._sender.request(call, parse)

    # -- account ------------------------------------------------------------------------

    def _cache_key(self) -> tuple[str, str]:
        """The client-id cache's key: the host and a digest of the token (never the token)."""
        digest = hashlib.sha256(
            self.credentials.access_token.get_secret_value().encode()
        ).hexdigest()
        return (self.base_url, digest)

    async def resolve_client_id(self, source_id: int | None = None) -> int:
        """The Stitch client (account) id: from the credentials, the cache, or Stitch.

        When the credentials have no ``client_id``, it is read from
        ``GET /v4/sources/{source_id}`` (or the first source of ``GET /v4/sources``)
        and cached for the process.

        Args:
            source_id: A source of the account, used to discover the id.

        Returns:
            The client id.

        Raises:
            StitchConfigurationError: The id cannot be discovered (no source).

        Example:
            ```python
            from prefect_stitch import StitchCredentials

            async def main(credentials: StitchCredentials) -> None:
                async with credentials.get_client() as client:
                    print(await client.resolve_client_id(source_id=120643))
            ```
        """
        if self.credentials.client_id is not None:
            return self.credentials.client_id
        key = self._cache_key()
        with _client_id_lock:
            cached = _client_id_cache.get(key)
        if cached is not None:
            return cached
        client_id: int | None = None
        if source_id is not None:
            client_id = (await self.get_source(source_id)).stitch_client_id
        else:
            for source in await self.list_sources():
                if source.stitch_client_id is not None:
                    client_id = source.stitch_client_id
                    break
        if client_id is None:
            raise StitchConfigurationError(
                "client_id is not set and Stitch did not say it: set client_id on the "
                "StitchCredentials block (it is in app.stitchdata.com/client/<id>/...)",
                parameter="client_id",
            )
        with _client_id_lock:
            _client_id_cache[key] = client_id
        return client_id

    async def jobs_limiter(self, client_id: int | None = None) -> SlidingWindowLimiter:
        """The process-wide rate limiter of this account's jobs endpoints.

        Args:
            client_id: The account id (resolved when not given).

        Returns:
            The shared limiter.

        Example:
            ```python
            async def budget(client) -> None:
                limiter = await client.jobs_limiter()
                print(limiter.limit, limiter.period)
            ```
        """
        account = client_id if client_id is not None else await self.resolve_client_id()
        return limiter_for(
            self.base_url,
            account,
            self.credentials.jobs_rate_limit,
            self.credentials.jobs_rate_period_seconds,
        )

    async def _jobs_slot(self, client_id: int | None = None) -> JobsSlot:
        """Where this account's jobs requests take their slot (limiter, global limit)."""
        return JobsSlot(await self.jobs_limiter(client_id), self.global_limit_name)

    # -- replication jobs -----------------------------------------------------------

    async def start_replication_job(self, source_id: int) -> str:
        """Start a replication job for a source: ``POST /v4/sources/{source_id}/sync``.

        Not retried here (a retried trigger could start a second job); see
        [`start_stitch_sync`][prefect_stitch.tasks.start_stitch_sync] for safe retries.

        Args:
            source_id: The Stitch source id.

        Returns:
            The new job's name.

        Raises:
            StitchJobAlreadyRunning: A job of the source is running already (Stitch
                answers 200 with the error type ``already_running``).
            StitchAPIError: Any other error (``StitchInvalidSourceError``: the source is
                unknown or deleted).

        Example:
            ```python
            async def trigger(client) -> str:
                return await client.start_replication_job(120643)
            ```
        """
        return (await self.trigger_replication_job(source_id)).job_name

    async def trigger_replication_job(self, source_id: int) -> TriggerAnswer:
        """Like `start_replication_job`, with Stitch's clock at the time of its answer.

        Stitch's ``Date`` header on the answer lets a waiter order other jobs' records
        against ours with Stitch's own clock. ``StitchJobAlreadyRunning`` carries it too
        (``stitch_time``). Not retried here: a trigger is not idempotent (a retry whose
        first answer was lost could start a second job).

        Args:
            source_id: The Stitch source id.

        Returns:
            The job's name and Stitch's time of the answer.

        Raises:
            StitchJobAlreadyRunning: Stitch answered 200 with ``already_running``.
            StitchInvalidSourceError: The source is unknown or deleted (400).
            StitchAPIError: Any other error.

        Example:
            ```python
            async def trigger(client) -> None:
                answer = await client.trigger_replication_job(120643)
                print(f"{answer.job_name} started; Stitch's clock said {answer.stitch_time}")
            ```
        """
        seen_at = datetime.now(UTC)
        path = f"/v4/sources/{check_source_id(source_id)}/sync"
        return await self._request(
            "POST",
            path,
            lambda response: _trigger_answer(response, source_id, path, seen_at),
            retry=False,
        )

    async def stop_replication_job(self, source_id: int) -> bool:
        """Stop the running replication job of a source: ``DELETE /v4/sources/{id}/sync``.

        Only extraction stops; data already extracted is still loaded by Stitch.

        Args:
            source_id: The Stitch source id.

        Returns:
            True when Stitch confirmed the stop; False when it answered 404 (no job).

        Example:
            ```python
            async def stop(client) -> None:
                print(await client.stop_replication_job(120643))
            ```
        """
        path = f"/v4/sources/{check_source_id(source_id)}/sync"
        try:
            return await self._request("DELETE", path, lambda response: True)
        except StitchNotFoundError:
            return False

    # -- sources ----------------------------------------------------------------------

    async def list_sources(self) -> list[Source]:
        """List every source of the account: ``GET /v4/sources`` (not paginated).

        Returns:
            The sources, including paused and deleted ones.

        Example:
            ```python
            async def show(client) -> None:
                for source in await client.list_sources():
                    print(source.id, source.name)
            ```
        """
        return await self._request("GET", "/v4/sources", _many(Source))

    async def get_source(self, source_id: int) -> Source:
        """Read one source: ``GET /v4/sources/{source_id}``.

        Args:
            source_id: The Stitch source id.

        Returns:
            The source (also when paused or deleted).

        Example:
            ```python
            async def show(client) -> None:
                source = await client.get_source(120643)
                print(source.display_name, source.is_paused)
            ```
        """
        path = f"/v4/sources/{check_source_id(source_id)}"
        return await self._request("GET", path, _one(Source))

    async def list_streams(self, source_id: int) -> list[Stream]:
        """List a source's streams: ``GET /v4/sources/{source_id}/streams`` (not paginated).

        Args:
            source_id: The Stitch source id.

        Returns:
            The streams, selected or not (see ``Stream.is_selected``).

        Example:
            ```python
            async def show(client) -> None:
                for stream in await client.list_streams(120643):
                    print(stream.stream_name, stream.is_selected)
            ```
        """
        path = f"/v4/sources/{check_source_id(source_id)}/streams"
        return await self._request("GET", path, _many(Stream))

    async def pause_source(self, source_id: int, paused_at: datetime | None = None) -> Source:
        """Pause a source's Stitch schedule: ``PUT /v4/sources/{id}`` with ``paused_at``.

        A paused source runs no scheduled jobs; jobs started through the API still run,
        which is how an orchestrator should own the schedule.

        Args:
            source_id: The Stitch source id.
            paused_at: The pause time to record (now by default).

        Returns:
            The updated source.

        Example:
            ```python
            async def pause(client) -> None:
                print((await client.pause_source(120643)).paused_at)
            ```
        """
        moment = (paused_at or datetime.now(UTC)).astimezone(UTC)
        return await self._update_source(
            source_id, {"paused_at": moment.strftime("%Y-%m-%dT%H:%M:%SZ")}
        )

    async def unpause_source(self, source_id: int) -> Source:
        """Resume a source's Stitch schedule: ``PUT /v4/sources/{id}`` with ``paused_at: null``.

        Args:
            source_id: The Stitch source id.

        Returns:
            The updated source.

        Example:
            ```python
            async def resume(client) -> None:
                await client.unpause_source(120643)
            ```
        """
        return await self._update_source(source_id, {"paused_at": None})

    async def _update_source(self, source_id: int, body: dict[str, Any]) -> Source:
        """``PUT /v4/sources/{id}`` with ``body``; the updated source."""
        path = f"/v4/sources/{check_source_id(source_id)}"
        return await self._request("PUT", path, _one(Source), json=body)

    async def list_destinations(self) -> list[Destination]:
        """List the account's destinations: ``GET /v4/destinations``.

        Returns:
            The destinations (one on most plans).

        Example:
            ```python
            async def warehouse(client) -> str | None:
                destinations = await client.list_destinations()
                return destinations[0].database if destinations else None
            ```
        """
        parse = _many(Destination, lone_object=True)
        return await self._request("GET", "/v4/destinations", parse)

    # -- jobs endpoints (rate-limited) ------------------------------------------------

    async def _list_pages(self, endpoint: str, model: type[M]) -> _Pages[M]:
        """Read every page of ``GET /v4/{client_id}/{endpoint}``, each in a jobs slot.

        ``links.next`` is followed on the API host only (`_next_path`); a page seen
        before, or the 10,000th, ends the reading.
        """
        client_id = await self.resolve_client_id()
        slot = await self._jobs_slot(client_id)
        records: list[M] = []
        stitch_time: datetime | None = None
        seen_paths: set[str] = set()
        next_path: str | None = f"/v4/{client_id}/{endpoint}"
        while next_path is not None and next_path not in seen_paths:
            if len(seen_paths) >= _MAX_PAGES:
                break
            seen_paths.add(next_path)
            page, page_records, answered_at = await self._request(
                "GET", next_path, functools.partial(_page_of, model), slot=slot
            )
            if len(seen_paths) == 1:
                stitch_time = answered_at
            records.extend(page_records)
            next_path = _next_path(page.next_path, self.base_url) if page.data else None
        return _Pages(records, len(seen_paths), stitch_time)

    async def list_extractions(self) -> list[Extraction]:
        """List every source's last completed extraction (all pages of the listing).

        Reads every page of ``GET /v4/{client_id}/extractions``.

        Stitch keeps **one record per source** (its last completed job in the past 60
        days), 100 per page. A job that is still running is not listed: right after a
        trigger, the source's record is the *previous* job. A record listed twice
        (the list shifted between pages) is returned once.

        Returns:
            The records of every page, without duplicates.

        Example:
            ```python
            async def show(client) -> None:
                for record in await client.list_extractions():
                    print(record.source_id, record.job_name, record.tap_exit_status)
            ```
        """
        return list((await self.read_extractions()).records)

    async def read_extractions(self) -> Listing[Extraction]:
        """Like `list_extractions`, with the pages read and Stitch's clock at the first page.

        Returns:
            The listing.

        Example:
            ```python
            async def show(client) -> None:
                listing = await client.read_extractions()
                print(len(listing.records), listing.pages, listing.stitch_time)
            ```
        """
        read = await self._list_pages("extractions", Extraction)
        unique: dict[str, Extraction] = {}
        for record in read.records:
            unique.setdefault(record.job_name, record)
        return Listing(tuple(unique.values()), read.pages, read.stitch_time)

    async def list_loads(self) -> list[Load]:
        """List the last load of every stream: every page of ``GET /v4/{client_id}/loads``.

        Returns:
            The load records.

        Example:
            ```python
            async def show(client) -> None:
                failed = [load for load in await client.list_loads() if load.failed]
                print(len(failed), "streams failed to load")
            ```
        """
        return list((await self.read_loads()).records)

    async def read_loads(self) -> Listing[Load]:
        """Like `list_loads`, with the pages read and Stitch's clock at the first page.

        Returns:
            The load records, the pages read (the jobs requests it cost), Stitch's time.

        Example:
            ```python
            async def cost(client) -> None:
                listing = await client.read_loads()
                print(f"{listing.pages} pages, as of {listing.stitch_time}")
            ```
        """
        read = await self._list_pages("loads", Load)
        return Listing(tuple(read.records), read.pages, read.stitch_time)

    async def get_extraction_logs(self, job_name: str, *, tail_lines: int | None = None) -> str:
        """Download a job's extraction log (or its last lines).

        ``GET /v4/{client_id}/extractions/{job_name}`` answers 302 to a pre-signed URL,
        which is fetched **without** the ``Authorization`` header (the storage service
        rejects a request that carries two credentials). The download is streamed line
        by line (see `scan_extraction_log`): with ``tail_lines`` set, only that many
        lines are ever held in memory, however large the log.

        Args:
            job_name: The replication job's name.
            tail_lines: Keep only the last lines; ``None`` returns the whole log (which
                is then held in memory: Stitch logs can be hundreds of MB).

        Returns:
            The log text.

        Example:
            ```python
            async def show(client) -> None:
                print(await client.get_extraction_logs("116078.120643.sync.c12f", tail_lines=20))
            ```
        """
        _check_tail_lines(tail_lines)
        scan = await self.scan_extraction_log(
            job_name, tail_lines=tail_lines, max_line_chars=_UNBOUNDED_LINE
        )
        return scan.tail

    async def scan_extraction_log(
        self,
        job_name: str,
        *,
        tail_lines: int | None = 50,
        max_line_chars: int = DEFAULT_MAX_LINE_CHARS,
    ) -> LogScan:
        """Stream a job's extraction log through a `LogScan` (`_logscan.py`).

        The log is read in chunks and split into lines as it arrives; the scan keeps the
        last ``tail_lines`` lines (each cut to ``max_line_chars``), the job's exit
        statuses and the streams that received rows. A download that breaks midway is
        retried from the start like any transient fault.

        Args:
            job_name: The replication job's name.
            tail_lines: Lines to keep (``None``: all).
            max_line_chars: Characters kept of each line.

        Returns:
            The scan of the whole log.

        Raises:
            StitchNotFoundError: Stitch has no such job (404).
            StitchAPIError: The log could not be read.

        Example:
            ```python
            async def show(client) -> None:
                scan = await client.scan_extraction_log("116078.120643.sync.c12f")
                print(scan.exit_statuses, scan.streams_with_rows, scan.tail)
            ```
        """
        if not job_name or "/" in job_name:
            raise StitchConfigurationError(f"invalid job name {job_name!r}", parameter="job_name")
        _check_tail_lines(tail_lines)
        client_id = await self.resolve_client_id()
        slot = await self._jobs_slot(client_id)
        path = f"/v4/{client_id}/extractions/{quote(job_name, safe='')}"
        new_scan = functools.partial(LogScan, tail_lines=tail_lines, max_line_chars=max_line_chars)
        found = await self._sender.stream(
            Call(self._api, "GET", path, ok_statuses=_LOG_ANSWERS, slot=slot),
            functools.partial(_log_or_location, new_scan=new_scan),
        )
        if isinstance(found, LogScan):
            return found
        return await self._download_log(found, new_scan)

    async def _download_log(self, url: str, new_scan: Callable[[], LogScan]) -> LogScan:
        """Scan the log at its pre-signed URL, with the client that has no Authorization."""
        parts = urlsplit(url)
        # The pre-signed query carries a credential of its own: never show it.
        shown = f"{parts.scheme}://{parts.netloc}{parts.path} (pre-signed log URL)"
        call = Call(self._download_client(), "GET", url, label=shown)
        return await self._sender.stream(call, lambda response: _scan_lines(response, new_scan()))


# -- reading answers -----------------------------------------------------------------------


def _json_of(response: httpx.Response) -> Any:
    """The body as JSON; a body that is not is an unreadable answer (retried)."""
    try:
        return response.json()
    except ValueError:
        raise StitchTransportError(
            status_code=response.status_code, reason="malformed JSON body"
        ) from None


def _model_of(model: type[M], payload: Any) -> M:
    """``payload`` as a ``model``; another shape is an unreadable answer (retried)."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        where = ".".join(str(part) for part in exc.errors()[0]["loc"]) or "body"
        raise StitchTransportError(
            status_code=200,
            reason=f"unexpected response shape ({model.__name__}: {where})",
        ) from None


def _one(model: type[M]) -> Callable[[httpx.Response], M]:
    """The parser of a body that is one ``model``."""
    return lambda response: _model_of(model, _json_of(response))


def _many(model: type[M], *, lone_object: bool = False) -> Callable[[httpx.Response], list[M]]:
    """The parser of a body that is a list of ``model`` (or one, with ``lone_object``)."""

    def parse(response: httpx.Response) -> list[M]:
        body = _json_of(response)
        if lone_object and isinstance(body, dict):  # tolerate a single object
            body = [body]
        if not isinstance(body, list):
            raise StitchTransportError(
                status_code=200, reason="unexpected response shape (expected a list)"
            )
        return [_model_of(model, item) for item in body]

    return parse


def _page_of(model: type[M], response: httpx.Response) -> tuple[Page, list[M], datetime | None]:
    """One page of a jobs listing: the page, its records, and Stitch's clock then."""
    page = _model_of(Page, _json_of(response))
    return page, [_model_of(model, item) for item in page.data], stitch_time_of(response)


def _next_path(link: str | None, base_url: str) -> str | None:
    """Resolve a pagination link against ``base_url``; refuse links to another host."""
    if link is None:
        return None
    parts = urlsplit(link)
    if parts.scheme or parts.netloc:
        base = urlsplit(base_url)
        if (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
            raise StitchTransportError(
                status_code=200,
                reason="pagination link points to another host; not following it",
                method="GET",
                path=parts.path,
            )
        link = parts.path + (f"?{parts.query}" if parts.query else "")
    base_path = urlsplit(base_url).path.rstrip("/")
    if base_path and link.startswith(base_path + "/"):
        link = link[len(base_path) :]
    return link if link.startswith("/") else f"/{link}"


def _trigger_answer(
    response: httpx.Response, source_id: int, path: str, seen_at: datetime
) -> TriggerAnswer:
    """Read the trigger's 200: the new job's name, or an error body (``already_running``...)."""
    body = _json_of(response)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error_type, message = error_fields(response)
        if error_type == "already_running":
            raise StitchJobAlreadyRunning(
                f"A replication job is already running for source {source_id}"
                + (f": {message}" if message else ""),
                source_id=source_id,
                stitch_message=message,
                seen_running_at=seen_at,
                stitch_time=stitch_time_of(response),
            )
        raise StitchAPIError(
            status_code=response.status_code,
            reason=reason_of(response),
            error_type=error_type,
            stitch_message=message,
            method="POST",
            path=path,
        )
    job_name = body.get("job_name") if isinstance(body, dict) else None
    if isinstance(job_name, str) and job_name:
        return TriggerAnswer(job_name, stitch_time_of(response))
    raise StitchTransportError(
        status_code=response.status_code, reason="unexpected response shape (no job_name)"
    )


def _check_tail_lines(tail_lines: int | None) -> None:
    """Refuse a negative ``tail_lines`` before any request."""
    if tail_lines is not None and tail_lines < 0:
        raise StitchConfigurationError(
            f"tail_lines must be >= 0, got {tail_lines}", parameter="tail_lines"
        )


async def _log_or_location(
    response: httpx.Response, *, new_scan: Callable[[], LogScan]
) -> LogScan | str:
    """Tell the documented redirect (its target URL) from a log a proxy already followed.

    A JSON body is not a log: it is retried as a garbled answer.
    """
    if response.status_code == 200:
        if "json" in response.headers.get("content-type", ""):
            raise StitchTransportError(
                status_code=200, reason="unexpected response shape (expected a redirect)"
            )
        return await _scan_lines(response, new_scan(), json_guard=True)
    target = response.headers.get("location")
    if not target:
        raise StitchTransportError(
            status_code=response.status_code, reason="redirect without a Location"
        )
    return str(response.url.join(target))


async def _scan_lines(
    response: httpx.Response, scan: LogScan, *, json_guard: bool = False
) -> LogScan:
    """Feed a streamed body to ``scan`` line by line, never holding more than one line.

    A line longer than the scan keeps is cut while it streams in, so even a body without
    line breaks uses bounded memory.
    """
    cap = scan.max_line_chars * 4 + 4  # bytes: a UTF-8 character is at most 4
    pending = bytearray()
    first = True
    async for chunk in response.aiter_bytes():
        if first and json_guard and chunk.lstrip()[:1] in (b"{", b"["):
            raise StitchTransportError(
                status_code=200, reason="unexpected response shape (expected a redirect)"
            )
        first = False
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            room = cap - len(pending)
            if room > 0:
                pending += piece[:room]
            if end < 0:
                break
            scan.feed(pending.decode("utf-8", "replace"))
            pending.clear()
            start = end + 1
    if pending:
        scan.feed(pending.decode("utf-8", "replace"))
    return scan
