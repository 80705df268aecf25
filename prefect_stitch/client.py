"""The async client of Stitch's Connect API: one method per endpoint.

This is the boundary where HTTP becomes types: every response is parsed into a model
from [`prefect_stitch.models`][prefect_stitch.models] and every failure becomes an
error from [`prefect_stitch.errors`][prefect_stitch.errors]; nothing above this module
sees an ``httpx`` exception or a raw body.

What it takes care of:

* **Timeouts** on every request (``request_timeout_seconds``).
* **Transient faults** (connection errors, timeouts, 5xx, 429, a truncated or
  malformed body) are retried up to ``max_retries`` times with exponential backoff and
  jitter, honouring ``Retry-After``. 4xx errors are never retried. The trigger
  (``POST /sync``) is never retried here: it is not idempotent, and
  [`start_stitch_sync`][prefect_stitch.tasks.start_stitch_sync] retries it safely.
* **The jobs rate budget**: extractions, logs and loads requests go through the
  account's process-wide [`SlidingWindowLimiter`][prefect_stitch._ratelimit.SlidingWindowLimiter],
  and optionally through a Prefect global concurrency limit shared across processes.
* **Pagination**: ``links.next`` is followed relative to ``base_url`` (never to another
  host: the token would go with it).
* **The logs redirect**: the pre-signed URL is fetched by a separate client that has
  no ``Authorization`` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import logging
import math
import random
import re
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from http import HTTPStatus
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from prefect_stitch._logscan import DEFAULT_MAX_LINE_CHARS, LogScan
from prefect_stitch._ratelimit import SlidingWindowLimiter, limiter_for
from prefect_stitch.errors import (
    StitchAPIError,
    StitchAuthError,
    StitchConfigurationError,
    StitchInvalidSourceError,
    StitchJobAlreadyRunning,
    StitchNotFoundError,
    StitchTransportError,
)
from prefect_stitch.models import (
    Destination,
    Extraction,
    Listing,
    Load,
    LoadListing,
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


_MAX_BACKOFF_SECONDS = 60.0
_MAX_RETRY_AFTER_SECONDS = 600.0
_MAX_PAGES = 10_000
_MAX_ERROR_TEXT = 500

try:
    _VERSION = version("prefect-stitchdata")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    _VERSION = "0+unknown"

_module_logger = logging.getLogger("prefect_stitch.client")

_DELAY_SECONDS = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,6})?")
_PRESIGNED_QUERY = re.compile(r"\?[^\s\"']*(?:x-amz-|signature=)[^\s\"']*", re.IGNORECASE)


class _RedactPresignedQueries(logging.Filter):
    """Keep pre-signed log URLs' credentials out of httpx's request log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _PRESIGNED_QUERY.search(message):
            record.msg = _PRESIGNED_QUERY.sub("?<pre-signed query redacted>", message)
            record.args = ()
        return True


logging.getLogger("httpx").addFilter(_RedactPresignedQueries())

_client_id_cache: dict[tuple[str, str], int] = {}
_client_id_lock = threading.Lock()

_tls_context: ssl.SSLContext | None = None
_tls_lock = threading.Lock()


def _shared_tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every client of the process.

    Building one costs ~20 ms and ~1 MB; a run that watches hundreds of sources opens a
    client per task, so they share it (an ``SSLContext`` is safe to share between threads).
    """
    global _tls_context
    with _tls_lock:
        if _tls_context is None:
            _tls_context = httpx.create_ssl_context()
        return _tls_context


def is_transient(error: BaseException) -> bool:
    """Whether an error is worth retrying: no answer, a 5xx, a 429 or a garbled body.

    Args:
        error: An exception raised by the client.

    Returns:
        True for transport faults, 5xx and 429; False for everything else (4xx, a
        failed replication, bad input).

    Example:
        ```python
        from prefect_stitch.client import is_transient
        from prefect_stitch.errors import StitchAPIError

        print(is_transient(StitchAPIError(status_code=502, reason="Bad Gateway")))  # True
        ```
    """
    if isinstance(error, StitchTransportError):
        return True
    if isinstance(error, StitchAPIError):
        return error.status_code is not None and (
            error.status_code == 429 or error.status_code >= 500
        )
    return isinstance(error, httpx.TransportError | TimeoutError)


def _reason(response: httpx.Response) -> str:
    if response.reason_phrase:
        return response.reason_phrase
    try:
        return HTTPStatus(response.status_code).phrase
    except ValueError:
        return f"HTTP {response.status_code}"


def _error_fields(response: httpx.Response) -> tuple[str | None, str | None]:
    """Extract Stitch's error type and message from any of its documented body shapes."""
    text = response.text.strip() if response.content else ""
    if not text:
        return None, None
    try:
        body = response.json()
    except ValueError:
        body = None
        content_type = response.headers.get("content-type", "")
        if "html" in content_type or text.lstrip().startswith("<"):
            return None, None
        return None, text[:_MAX_ERROR_TEXT]
    if isinstance(body, str):
        return None, body[:_MAX_ERROR_TEXT] or None
    if not isinstance(body, dict):
        return None, None
    error = body.get("error")
    if isinstance(error, dict):
        kind = error.get("type") or error.get("code")
        message = error.get("message")
        return (
            str(kind) if kind is not None else None,
            str(message)[:_MAX_ERROR_TEXT] if message is not None else None,
        )
    data = body.get("data")
    if isinstance(error, str):
        if isinstance(data, dict) and data.get("message") is not None:
            return error, str(data["message"])[:_MAX_ERROR_TEXT]
        return None, error[:_MAX_ERROR_TEXT]
    message = body.get("message")
    kind = body.get("code") or body.get("type")
    if message is not None:
        return (str(kind) if kind is not None else None, str(message)[:_MAX_ERROR_TEXT])
    return None, None


def _retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):  # RFC 9110: delay-seconds = 1*DIGIT
        seconds = float(value)
    else:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        # A date is relative to Stitch's clock (its Date header), not to ours.
        seconds = (moment - (stitch_time_of(response) or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):  # "nan" and "inf" parse as floats
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_SECONDS)


def stitch_time_of(response: httpx.Response) -> datetime | None:
    """Stitch's clock when it answered: the response's ``Date`` header, parsed.

    Stitch's record times come from Stitch's clock, which need not agree with this
    machine's; its ``Date`` header is the one reading of that clock we can compare them
    with.

    Args:
        response: A response from Stitch.

    Returns:
        The moment (UTC, whole seconds), or ``None`` when the header is missing or bad.

    Example:
        ```python
        import httpx
        from prefect_stitch.client import stitch_time_of

        response = httpx.Response(200, headers={"Date": "Sun, 29 Nov 2026 12:00:00 GMT"})
        print(stitch_time_of(response))  # 2026-11-29 12:00:00+00:00
        ```
    """
    value = response.headers.get("date")
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _transport_reason(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, httpx.ReadTimeout):
        return "read timeout"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connection failed"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return "connection dropped"
    return f"transport error ({type(exc).__name__})"


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
        self.last_page_count = 0
        """Pages read by the latest paginated listing (the jobs-API cost of one poll)."""
        self.last_listing_time: datetime | None = None
        """Stitch's clock (``Date``) at the first page of the latest listing."""
        self.requests_made = 0
        """Requests sent by this client, retries included."""

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._closed:
            raise RuntimeError("a StitchClient cannot be reused once closed; make a new one")
        timeout = httpx.Timeout(self.credentials.request_timeout_seconds)
        token = self.credentials.access_token.get_secret_value()
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": f"prefect-stitch/{_VERSION}",
            },
            timeout=timeout,
            follow_redirects=False,
            transport=self._transport,
            verify=_shared_tls_context(),
        )
        return self

    def _download_client(self) -> httpx.AsyncClient:
        """The client for pre-signed URLs: no Authorization header, made when first needed."""
        if self._http is None or self._closed:
            raise RuntimeError("use the client as `async with credentials.get_client() as client:`")
        if self._downloads is None:
            self._downloads = httpx.AsyncClient(
                headers={"User-Agent": f"prefect-stitch/{_VERSION}"},
                timeout=self._http.timeout,
                follow_redirects=False,
                transport=self._transport,
                verify=_shared_tls_context(),
            )
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
        if self._http is None or self._closed:
            raise RuntimeError("use the client as `async with credentials.get_client() as client:`")
        return self._http

    # -- the request core -------------------------------------------------------------

    def _logger(self) -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
        try:
            from prefect import get_run_logger

            return get_run_logger()
        except Exception:
            return _module_logger

    def _backoff(self, attempt: int) -> float:
        base = self.credentials.retry_backoff_seconds * 2.0 ** (attempt - 1)
        capped = min(base, _MAX_BACKOFF_SECONDS)
        return capped / 2 + random.uniform(0, capped / 2)

    def _api_error(
        self, response: httpx.Response, method: str, path: str, attempts: int
    ) -> StitchAPIError:
        error_type, message = _error_fields(response)
        fields: dict[str, Any] = {
            "status_code": response.status_code,
            "reason": _reason(response),
            "error_type": error_type,
            "stitch_message": message,
            "method": method,
            "path": path,
            "attempts": attempts,
            "retry_after": _retry_after_seconds(response),
        }
        if response.status_code == 401:
            return StitchAuthError(**fields)
        if response.status_code == 404:
            return StitchNotFoundError(**fields)
        if response.status_code == 400 and error_type == "invalid_source":
            return StitchInvalidSourceError(**fields)
        return StitchAPIError(**fields)

    async def _send(
        self,
        http: httpx.AsyncClient,
        method: str,
        url: str,
        *,
        limiter: SlidingWindowLimiter | None,
        **kwargs: Any,
    ) -> httpx.Response:
        self.requests_made += 1
        if limiter is None:
            return await http.request(method, url, **kwargs)
        if self.global_limit_name:
            from prefect.concurrency.asyncio import rate_limit

            await rate_limit(self.global_limit_name, occupy=1)
        async with limiter.slot():
            return await http.request(method, url, **kwargs)

    async def _call(
        self,
        method: str,
        path: str,
        parse: Callable[[httpx.Response], T],
        *,
        retry: bool = True,
        limiter: SlidingWindowLimiter | None = None,
        http: httpx.AsyncClient | None = None,
        label: str | None = None,
        ok_statuses: tuple[int, ...] = (200,),
        **kwargs: Any,
    ) -> T:
        """Send one logical call: retries, error translation, parsing.

        ``parse`` turns a successful response into the result; it raises
        ``StitchTransportError`` for a body it cannot read, which is retried like any
        transient fault.
        """
        client = http or self._api
        shown = label or path
        max_attempts = 1 + (self.credentials.max_retries if retry else 0)
        attempt = 0
        while True:
            attempt += 1
            failure: StitchAPIError
            delay: float | None = None
            try:
                response = await self._send(client, method, path, limiter=limiter, **kwargs)
            except httpx.TransportError as exc:
                failure = StitchTransportError(
                    status_code=None,
                    reason=_transport_reason(exc),
                    method=method,
                    path=shown,
                    attempts=attempt,
                    request_sent=not isinstance(exc, _NOT_SENT),
                )
            else:
                if response.status_code in ok_statuses:
                    try:
                        return parse(response)
                    except StitchTransportError as exc:
                        failure = StitchTransportError(
                            status_code=response.status_code,
                            reason=exc.reason,
                            method=method,
                            path=shown,
                            attempts=attempt,
                        )
                else:
                    failure = self._api_error(response, method, shown, attempt)
                    delay = failure.retry_after
            if attempt >= max_attempts or not is_transient(failure):
                raise failure
            wait = delay if delay is not None else self._backoff(attempt)
            self._logger().warning(
                "Stitch %s %s failed (%s); retry %d/%d in %.1f s",
                method,
                shown,
                failure.reason
                if failure.status_code is None
                else f"HTTP {failure.status_code} {failure.reason}",
                attempt,
                max_attempts - 1,
                wait,
            )
            await asyncio.sleep(wait)

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise StitchTransportError(
                status_code=response.status_code, reason="malformed JSON body"
            ) from None

    @classmethod
    def _model(cls, model: type[M], payload: Any) -> M:
        try:
            return model.model_validate(payload)
        except ValidationError as exc:
            where = ".".join(str(part) for part in exc.errors()[0]["loc"]) or "body"
            raise StitchTransportError(
                status_code=200,
                reason=f"unexpected response shape ({model.__name__}: {where})",
            ) from None

    # -- account ------------------------------------------------------------------------

    def _cache_key(self) -> tuple[str, str]:
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
            StitchJobAlreadyRunning: Stitch answered 200 with ``already_running``.
            StitchInvalidSourceError: The source is unknown or deleted (400).
            StitchAPIError: Any other error.

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
        (``stitch_time``).

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
                print(answer.job_name, answer.stitch_time)
            ```
        """
        seen_at = datetime.now(UTC)
        path = f"/v4/sources/{check_source_id(source_id)}/sync"

        def parse(response: httpx.Response) -> TriggerAnswer:
            body = self._json(response)
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                error_type, message = _error_fields(response)
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
                    reason=_reason(response),
                    error_type=error_type,
                    stitch_message=message,
                    method="POST",
                    path=path,
                )
            if (
                isinstance(body, dict)
                and isinstance(body.get("job_name"), str)
                and body["job_name"]
            ):
                return TriggerAnswer(str(body["job_name"]), stitch_time_of(response))
            raise StitchTransportError(
                status_code=response.status_code, reason="unexpected response shape (no job_name)"
            )

        return await self._call("POST", path, parse, retry=False)

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
            return await self._call("DELETE", path, lambda response: True)
        except StitchNotFoundError:
            return False

    # -- sources ----------------------------------------------------------------------

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
        return await self._call("GET", path, lambda r: self._model(Source, self._json(r)))

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

        def parse(response: httpx.Response) -> list[Source]:
            body = self._json(response)
            if not isinstance(body, list):
                raise StitchTransportError(
                    status_code=200, reason="unexpected response shape (expected a list)"
                )
            return [self._model(Source, item) for item in body]

        return await self._call("GET", "/v4/sources", parse)

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
        path = f"/v4/sources/{check_source_id(source_id)}"
        return await self._call(
            "PUT", path, lambda r: self._model(Source, self._json(r)), json=body
        )

    # -- jobs endpoints (rate-limited) ------------------------------------------------

    async def _list_pages(self, path: str, model: type[M]) -> list[M]:
        limiter = await self.jobs_limiter()
        items: list[M] = []
        seen_paths: set[str] = set()
        next_path: str | None = path
        pages = 0
        self.last_listing_time = None
        while next_path is not None:
            if next_path in seen_paths or pages >= _MAX_PAGES:
                break
            seen_paths.add(next_path)

            def parse(response: httpx.Response) -> tuple[Page, list[M], datetime | None]:
                page = self._model(Page, self._json(response))
                records = [self._model(model, item) for item in page.data]
                return page, records, stitch_time_of(response)

            page, records, stitch_time = await self._call("GET", next_path, parse, limiter=limiter)
            if pages == 0:
                self.last_listing_time = stitch_time
            pages += 1
            items.extend(records)
            next_path = self._relative(page.next_path) if page.data else None
        self.last_page_count = pages
        return items

    def _relative(self, link: str | None) -> str | None:
        """Resolve a pagination link against base_url; refuse links to another host."""
        if link is None:
            return None
        parts = urlsplit(link)
        if parts.scheme or parts.netloc:
            base = urlsplit(self.base_url)
            if (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
                raise StitchTransportError(
                    status_code=200,
                    reason="pagination link points to another host; not following it",
                    method="GET",
                    path=parts.path,
                )
            link = parts.path + (f"?{parts.query}" if parts.query else "")
        base_path = urlsplit(self.base_url).path.rstrip("/")
        if base_path and link.startswith(base_path + "/"):
            link = link[len(base_path) :]
        return link if link.startswith("/") else f"/{link}"

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
        client_id = await self.resolve_client_id()
        records = await self._list_pages(f"/v4/{client_id}/extractions", Extraction)
        unique: dict[str, Extraction] = {}
        for record in records:
            unique.setdefault(record.job_name, record)
        return list(unique.values())

    async def read_extractions(self) -> Listing:
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
        records = await self.list_extractions()
        return Listing(tuple(records), self.last_page_count, self.last_listing_time)

    async def read_loads(self) -> LoadListing:
        """Like `list_loads`, with the pages read and Stitch's clock at the first page.

        Returns:
            The listing.

        Example:
            ```python
            async def show(client) -> None:
                listing = await client.read_loads()
                print(len(listing.records), listing.pages, listing.stitch_time)
            ```
        """
        records = await self.list_loads()
        return LoadListing(tuple(records), self.last_page_count, self.last_listing_time)

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

        def parse(response: httpx.Response) -> list[Stream]:
            body = self._json(response)
            if not isinstance(body, list):
                raise StitchTransportError(
                    status_code=200, reason="unexpected response shape (expected a list)"
                )
            return [self._model(Stream, item) for item in body]

        return await self._call("GET", path, parse)

    async def list_destinations(self) -> list[Destination]:
        """List the account's destinations: ``GET /v4/destinations``.

        Returns:
            The destinations (one on most plans).

        Example:
            ```python
            async def show(client) -> None:
                for destination in await client.list_destinations():
                    print(destination.type, destination.database)
            ```
        """

        def parse(response: httpx.Response) -> list[Destination]:
            body = self._json(response)
            if isinstance(body, dict):  # tolerate a single object
                body = [body]
            if not isinstance(body, list):
                raise StitchTransportError(
                    status_code=200, reason="unexpected response shape (expected a list)"
                )
            return [self._model(Destination, item) for item in body]

        return await self._call("GET", "/v4/destinations", parse)

    async def list_loads(self) -> list[Load]:
        """List the last load of every stream: every page of ``GET /v4/{client_id}/loads``.

        Returns:
            The load records.

        Example:
            ```python
            async def show(client) -> None:
                for load in await client.list_loads():
                    print(load.source_name, load.stream_name, load.failed)
            ```
        """
        client_id = await self.resolve_client_id()
        return await self._list_pages(f"/v4/{client_id}/loads", Load)

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
        if tail_lines is not None and tail_lines < 0:
            raise StitchConfigurationError(
                f"tail_lines must be >= 0, got {tail_lines}", parameter="tail_lines"
            )
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
        """Stream a job's extraction log through a [`LogScan`][prefect_stitch._logscan.LogScan].

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
        if tail_lines is not None and tail_lines < 0:
            raise StitchConfigurationError(
                f"tail_lines must be >= 0, got {tail_lines}", parameter="tail_lines"
            )
        client_id = await self.resolve_client_id()
        limiter = await self.jobs_limiter(client_id)
        path = f"/v4/{client_id}/extractions/{quote(job_name, safe='')}"

        def new_scan() -> LogScan:
            return LogScan(tail_lines=tail_lines, max_line_chars=max_line_chars)

        async def redirect_or_log(response: httpx.Response) -> tuple[str, LogScan | str]:
            """Tell the documented 302 ("url") from a log a proxy already followed ("log").

            A JSON body is not a log: it is retried as a garbled answer.
            """
            if response.status_code == 200:
                if "json" in response.headers.get("content-type", ""):
                    raise StitchTransportError(
                        status_code=200, reason="unexpected response shape (expected a redirect)"
                    )
                return "log", await _scan_lines(response, new_scan(), json_guard=True)
            target = response.headers.get("location")
            if not target:
                raise StitchTransportError(
                    status_code=response.status_code, reason="redirect without a Location"
                )
            return "url", str(response.url.join(target))

        _kind, value = await self._stream_call(
            "GET", path, redirect_or_log, limiter=limiter, ok_statuses=(200, 301, 302, 303, 307)
        )
        if isinstance(value, LogScan):
            return value
        parts = urlsplit(value)
        # The pre-signed query carries a credential of its own: never show it.
        shown = f"{parts.scheme}://{parts.netloc}{parts.path} (pre-signed log URL)"

        async def download(response: httpx.Response) -> LogScan:
            return await _scan_lines(response, new_scan())

        return await self._stream_call(
            "GET", value, download, http=self._download_client(), label=shown
        )

    async def _stream_call(
        self,
        method: str,
        url: str,
        handle: Callable[[httpx.Response], Awaitable[T]],
        *,
        limiter: SlidingWindowLimiter | None = None,
        http: httpx.AsyncClient | None = None,
        label: str | None = None,
        ok_statuses: tuple[int, ...] = (200,),
    ) -> T:
        """Like `_call`, for a response whose body is consumed as it streams in."""
        client = http or self._api
        shown = label or url
        max_attempts = 1 + self.credentials.max_retries
        attempt = 0
        while True:
            attempt += 1
            failure: StitchAPIError
            delay: float | None = None
            try:
                async with self._open_stream(client, method, url, limiter=limiter) as response:
                    if response.status_code in ok_statuses:
                        try:
                            return await handle(response)
                        except StitchTransportError as exc:
                            failure = StitchTransportError(
                                status_code=response.status_code,
                                reason=exc.reason,
                                method=method,
                                path=shown,
                                attempts=attempt,
                            )
                    else:
                        await response.aread()
                        failure = self._api_error(response, method, shown, attempt)
                        delay = failure.retry_after
            except httpx.TransportError as exc:
                failure = StitchTransportError(
                    status_code=None,
                    reason=_transport_reason(exc),
                    method=method,
                    path=shown,
                    attempts=attempt,
                    request_sent=not isinstance(exc, _NOT_SENT),
                )
            if attempt >= max_attempts or not is_transient(failure):
                raise failure
            wait = delay if delay is not None else self._backoff(attempt)
            self._logger().warning(
                "Stitch %s %s failed (%s); retry %d/%d in %.1f s",
                method,
                shown,
                failure.reason
                if failure.status_code is None
                else f"HTTP {failure.status_code} {failure.reason}",
                attempt,
                max_attempts - 1,
                wait,
            )
            await asyncio.sleep(wait)

    @contextlib.asynccontextmanager
    async def _open_stream(
        self,
        http: httpx.AsyncClient,
        method: str,
        url: str,
        *,
        limiter: SlidingWindowLimiter | None,
    ) -> AsyncIterator[httpx.Response]:
        self.requests_made += 1
        request = http.build_request(method, url)
        if limiter is None:
            response = await http.send(request, stream=True)
        else:
            if self.global_limit_name:
                from prefect.concurrency.asyncio import rate_limit

                await rate_limit(self.global_limit_name, occupy=1)
            async with limiter.slot():
                response = await http.send(request, stream=True)
        try:
            yield response
        finally:
            await response.aclose()


_UNBOUNDED_LINE = 10_000_000
"""``get_extraction_logs`` returns lines whole (up to this many characters each)."""


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
