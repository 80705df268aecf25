"""The one send path to Stitch: one attempt loop, one place that takes a jobs slot.

[`StitchClient`][prefect_stitch.client.StitchClient] says *what* to ask (one method per
endpoint); this module says *how* it is sent, in layers around one loop, as httpx's own
``Client.send`` does:

* `Sender.stream` owns the attempt loop for every call, buffered or streamed: it sends,
  translates a failure into a typed error, decides whether to retry (`is_transient`),
  waits (``Retry-After``, else exponential backoff with jitter) and logs one WARNING line
  per retry. `Sender.request` is the same loop for an answer read whole before parsing.
* `JobsSlot` is the one place a jobs request takes its slot of the account's
  [`SlidingWindowLimiter`][prefect_stitch._ratelimit.SlidingWindowLimiter] (and of the
  Prefect global limit, when one is named).
* `api_client` and `download_client` build the two ``httpx`` clients: the API's, with the
  token, and the pre-signed URLs', without it.

Nothing here knows an endpoint; nothing above it sees an ``httpx`` exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import math
import random
import re
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

import httpx
from pydantic import SecretStr

from prefect_stitch._ratelimit import SlidingWindowLimiter
from prefect_stitch.errors import (
    StitchAPIError,
    StitchAuthError,
    StitchInvalidSourceError,
    StitchNotFoundError,
    StitchTransportError,
)

__all__ = [
    "Call",
    "JobsSlot",
    "Sender",
    "api_client",
    "download_client",
    "error_fields",
    "is_transient",
    "reason_of",
    "stitch_time_of",
]

T = TypeVar("T")

_MAX_BACKOFF_SECONDS = 60.0
_MAX_RETRY_AFTER_SECONDS = 600.0
_MAX_ERROR_TEXT = 500

try:
    _VERSION = version("prefect-stitchdata")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    _VERSION = "0+unknown"

_module_logger = logging.getLogger("prefect_stitch.client")  # the name users know and filter

_DELAY_SECONDS = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,6})?")
_PRESIGNED_QUERY = re.compile(r"\?[^\s\"']*(?:x-amz-|signature=)[^\s\"']*", re.IGNORECASE)
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class _RedactPresignedQueries(logging.Filter):
    """Keep pre-signed log URLs' credentials out of httpx's request log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _PRESIGNED_QUERY.search(message):
            record.msg = _PRESIGNED_QUERY.sub("?<pre-signed query redacted>", message)
            record.args = ()
        return True


logging.getLogger("httpx").addFilter(_RedactPresignedQueries())

# -- the two httpx clients ---------------------------------------------------------------

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


def api_client(
    base_url: str,
    token: SecretStr,
    timeout_seconds: float,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The ``httpx`` client of Stitch's API: its host, the token, JSON, no redirects.

    Args:
        base_url: The API host.
        token: The access token, sent as a bearer token.
        timeout_seconds: The timeout of every request.
        transport: An ``httpx`` transport to use instead of the network (tests).

    Returns:
        The client (the caller closes it).

    Example:
        ```python
        from pydantic import SecretStr
        from prefect_stitch._http import api_client

        http = api_client("https://api.stitchdata.com", SecretStr("ac_x"), 30.0)
        print(http.base_url)  # https://api.stitchdata.com
        ```
    """
    return httpx.AsyncClient(
        base_url=base_url,
        headers={
            "Authorization": f"Bearer {token.get_secret_value()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"prefect-stitch/{_VERSION}",
        },
        timeout=httpx.Timeout(timeout_seconds),
        follow_redirects=False,
        transport=transport,
        verify=_shared_tls_context(),
    )


def download_client(
    timeout: httpx.Timeout, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The ``httpx`` client of pre-signed log URLs: no ``Authorization`` header at all.

    The storage service behind a pre-signed URL rejects a request that carries two
    credentials (the URL's own and the token), and the token must never leave the API
    host: so this client has no token to send.

    Args:
        timeout: The API client's timeout.
        transport: An ``httpx`` transport to use instead of the network (tests).

    Returns:
        The client (the caller closes it).

    Example:
        ```python
        import httpx
        from prefect_stitch._http import download_client

        http = download_client(httpx.Timeout(30.0))
        print("authorization" in http.headers)  # False
        ```
    """
    return httpx.AsyncClient(
        headers={"User-Agent": f"prefect-stitch/{_VERSION}"},
        timeout=timeout,
        follow_redirects=False,
        transport=transport,
        verify=_shared_tls_context(),
    )


# -- reading an answer ---------------------------------------------------------------------


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
    return _http_date(value) if value else None


def _http_date(value: str) -> datetime | None:
    """An HTTP date (``Sun, 29 Nov 2026 12:00:00 GMT``) as a UTC moment; ``None`` if bad."""
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def reason_of(response: httpx.Response) -> str:
    """The response's reason phrase, or the standard one of its status.

    Args:
        response: A response from Stitch.

    Returns:
        ``"Bad Gateway"``, or ``"HTTP 599"`` for a status without a phrase.

    Example:
        ```python
        import httpx
        from prefect_stitch._http import reason_of

        print(reason_of(httpx.Response(404)))  # Not Found
        ```
    """
    if response.reason_phrase:
        return response.reason_phrase
    try:
        return HTTPStatus(response.status_code).phrase
    except ValueError:
        return f"HTTP {response.status_code}"


def error_fields(response: httpx.Response) -> tuple[str | None, str | None]:
    """Stitch's error type and message, from any of its documented body shapes.

    A body that is not JSON is taken as the message, unless it is HTML (a proxy's error
    page is no message for a user).

    Args:
        response: A response from Stitch, read.

    Returns:
        The error type and the message (cut to 500 characters), each ``None`` if absent.

    Example:
        ```python
        import httpx
        from prefect_stitch._http import error_fields

        body = {"error": {"type": "invalid_source", "message": "Integration is deleted."}}
        print(error_fields(httpx.Response(400, json=body)))
        ```
    """
    text = response.text.strip() if response.content else ""
    if not text:
        return None, None
    try:
        body = response.json()
    except ValueError:
        content_type = response.headers.get("content-type", "")
        if "html" in content_type or text.lstrip().startswith("<"):
            return None, None
        return None, text[:_MAX_ERROR_TEXT]
    if isinstance(body, str):
        return None, body[:_MAX_ERROR_TEXT] or None
    if not isinstance(body, dict):
        return None, None
    return _fields_of_object(body)


def _fields_of_object(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """Read the error type and message of a JSON object body (three shapes Stitch uses)."""
    error = body.get("error")
    if isinstance(error, dict):  # {"error": {"type": ..., "message": ...}}
        return _text(error.get("type") or error.get("code")), _cut(error.get("message"))
    if isinstance(error, str):  # {"error": "<Code>", "data": {"message": ...}} or a message
        data = body.get("data")
        if isinstance(data, dict) and data.get("message") is not None:
            return error, _cut(data["message"])
        return None, error[:_MAX_ERROR_TEXT]
    message = body.get("message")  # {"code": ..., "message": ...}
    if message is not None:
        return _text(body.get("code") or body.get("type")), _cut(message)
    return None, None


def _text(value: object) -> str | None:
    """A body field as text, ``None`` when absent."""
    return str(value) if value is not None else None


def _cut(value: object) -> str | None:
    """A body field as text no longer than an error message may quote."""
    return str(value)[:_MAX_ERROR_TEXT] if value is not None else None


def _retry_after_seconds(response: httpx.Response) -> float | None:
    """The wait ``Retry-After`` asks for (seconds or a date), bounded; ``None`` if unusable."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):  # RFC 9110: delay-seconds = 1*DIGIT
        seconds = float(value)
    else:
        moment = _http_date(value)
        if moment is None:
            return None
        # A date is relative to Stitch's clock (its Date header), not to ours.
        seconds = (moment - (stitch_time_of(response) or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):  # "nan" and "inf" parse as floats
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_SECONDS)


def _transport_reason(exc: httpx.TransportError) -> str:
    """A short description of a transport fault, for the error's message."""
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


# -- the send path ---------------------------------------------------------------------------


@dataclass(frozen=True)
class JobsSlot:
    """Where a jobs request (extractions, logs, loads) takes its slot before it is sent.

    Attributes:
        limiter: The account's process-wide limiter.
        global_limit_name: A Prefect global concurrency limit (a rate limit with slot
            decay) shared across processes, or ``None``.

    Example:
        ```python
        from prefect_stitch._http import JobsSlot
        from prefect_stitch._ratelimit import SlidingWindowLimiter

        async def one_request() -> None:
            async with JobsSlot(SlidingWindowLimiter(30, 600)).taken():
                ...  # send the request
        ```
    """

    limiter: SlidingWindowLimiter
    global_limit_name: str | None = None

    @contextlib.asynccontextmanager
    async def taken(self) -> AsyncIterator[None]:
        """Occupy the Prefect global limit (when named), then hold a slot of the limiter.

        The global limit decays on its own (a rate limit); the limiter's slot is stamped
        when the block ends, that is when the answer has arrived.

        Yields:
            Nothing: send inside the block.

        Example:
            ```python
            from prefect_stitch._http import JobsSlot
            from prefect_stitch._ratelimit import SlidingWindowLimiter

            async def send_in_a_slot() -> None:
                async with JobsSlot(SlidingWindowLimiter(30, 600), "stitch-jobs").taken():
                    pass  # the request goes here
            ```
        """
        if self.global_limit_name:
            from prefect.concurrency.asyncio import rate_limit

            await rate_limit(self.global_limit_name, occupy=1)
        async with self.limiter.slot():
            yield


@dataclass(frozen=True)
class Call:
    """One logical call to Stitch: what to send, and what counts as an answer.

    Attributes:
        http: The ``httpx`` client to send it with (the API's, or the downloads').
        method: The HTTP method.
        url: The path (relative to the API host) or the full URL.
        label: How the call is named in errors and log lines (the URL when ``None``;
            a pre-signed URL must be named without its query).
        json: A JSON body to send.
        ok_statuses: The statuses handed to the handler; others are errors.
        retry: Whether transient faults are retried (not for a trigger).
        slot: The jobs slot to take for each attempt, if any.

    Example:
        ```python
        import httpx
        from prefect_stitch._http import Call

        call = Call(httpx.AsyncClient(), "GET", "/v4/sources")
        print(call.shown)  # /v4/sources
        ```
    """

    http: httpx.AsyncClient
    method: str
    url: str
    label: str | None = None
    json: Any = None
    ok_statuses: tuple[int, ...] = (200,)
    retry: bool = True
    slot: JobsSlot | None = None

    @property
    def shown(self) -> str:
        """The call's name in errors and log lines."""
        return self.label or self.url


@dataclass(frozen=True)
class _Failed:
    """An attempt that failed, with the error it would raise."""

    error: StitchAPIError


class Sender:
    """Sends calls to Stitch: the one attempt loop, retries, error translation, the count.

    Args:
        max_retries: Retries of a transient fault (``Call.retry`` calls only).
        backoff_seconds: The first delay of the exponential backoff.

    Example:
        ```python
        import httpx
        from prefect_stitch._http import Call, Sender

        async def sources(http: httpx.AsyncClient) -> object:
            sender = Sender(max_retries=3, backoff_seconds=1.0)
            return await sender.request(Call(http, "GET", "/v4/sources"), httpx.Response.json)
        ```
    """

    def __init__(self, *, max_retries: int, backoff_seconds: float) -> None:
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.requests_made = 0
        """Requests sent, retries included."""

    async def request(self, call: Call, parse: Callable[[httpx.Response], T]) -> T:
        """Send a call, read its answer whole, and parse it (see `stream`).

        Args:
            call: The call.
            parse: Turns a successful response into the result; it raises
                ``StitchTransportError`` for a body it cannot read (retried).

        Returns:
            What ``parse`` returned.

        Example:
            ```python
            import httpx
            from prefect_stitch._http import Call, Sender

            async def sources(sender: Sender, http: httpx.AsyncClient) -> object:
                return await sender.request(Call(http, "GET", "/v4/sources"), httpx.Response.json)
            ```
        """

        async def read_then_parse(response: httpx.Response) -> T:
            await response.aread()
            return parse(response)

        return await self.stream(call, read_then_parse)

    async def stream(self, call: Call, handle: Callable[[httpx.Response], Awaitable[T]]) -> T:
        """Send a call and hand its answer to ``handle`` as it streams in, retrying faults.

        A transient failure (`is_transient`) is retried after ``Retry-After`` or a
        backoff with jitter, up to ``max_retries`` times, with a WARNING line each time;
        any other failure is raised at once. ``handle`` raises ``StitchTransportError``
        for a body it cannot read, which is retried like any transient fault (from the
        start: a download that breaks midway is read again whole).

        Args:
            call: The call.
            handle: Consumes a response whose status is one of ``call.ok_statuses``.

        Returns:
            What ``handle`` returned.

        Raises:
            StitchAPIError: The call failed (``StitchTransportError`` without an answer).

        Example:
            ```python
            import httpx
            from prefect_stitch._http import Call, Sender

            async def size(sender: Sender, http: httpx.AsyncClient) -> int:
                async def count(response: httpx.Response) -> int:
                    return sum([len(chunk) async for chunk in response.aiter_bytes()])

                return await sender.stream(Call(http, "GET", "/v4/sources"), count)
            ```
        """
        max_attempts = 1 + (self.max_retries if call.retry else 0)
        attempt = 0
        while True:
            attempt += 1
            outcome = await self._attempt(call, handle, attempt)
            if not isinstance(outcome, _Failed):
                return outcome
            failure = outcome.error
            if attempt >= max_attempts or not is_transient(failure):
                raise failure
            wait = failure.retry_after
            if wait is None:
                wait = self._backoff(attempt)
            _logger().warning(
                "Stitch %s %s failed (%s); retry %d/%d in %.1f s",
                call.method,
                call.shown,
                failure.reason
                if failure.status_code is None
                else f"HTTP {failure.status_code} {failure.reason}",
                attempt,
                max_attempts - 1,
                wait,
            )
            await asyncio.sleep(wait)

    async def _attempt(
        self, call: Call, handle: Callable[[httpx.Response], Awaitable[T]], attempt: int
    ) -> T | _Failed:
        """Send once; the result, or the failure as an error (returned, not raised)."""
        try:
            async with self._open(call) as response:
                if response.status_code not in call.ok_statuses:
                    await response.aread()
                    return _Failed(_api_error(response, call, attempt))
                try:
                    return await handle(response)
                except StitchTransportError as exc:  # an unreadable body
                    return _Failed(
                        StitchTransportError(
                            status_code=response.status_code,
                            reason=exc.reason,
                            method=call.method,
                            path=call.shown,
                            attempts=attempt,
                        )
                    )
        except httpx.TransportError as exc:
            return _Failed(
                StitchTransportError(
                    status_code=None,
                    reason=_transport_reason(exc),
                    method=call.method,
                    path=call.shown,
                    attempts=attempt,
                    request_sent=not isinstance(exc, _NOT_SENT),
                )
            )

    @contextlib.asynccontextmanager
    async def _open(self, call: Call) -> AsyncIterator[httpx.Response]:
        """Send the request, in its jobs slot if it has one, and yield the streamed answer.

        The slot is held until the answer's headers arrive: the limiter stamps it then.
        """
        self.requests_made += 1
        request = call.http.build_request(call.method, call.url, json=call.json)
        async with call.slot.taken() if call.slot else contextlib.nullcontext():
            response = await call.http.send(request, stream=True)
        try:
            yield response
        finally:
            await response.aclose()

    def _backoff(self, attempt: int) -> float:
        """The exponential backoff before retry ``attempt``, capped, with jitter."""
        base = self.backoff_seconds * 2.0 ** (attempt - 1)
        capped = min(base, _MAX_BACKOFF_SECONDS)
        return capped / 2 + random.uniform(0, capped / 2)


def _api_error(response: httpx.Response, call: Call, attempts: int) -> StitchAPIError:
    """The typed error of an HTTP error answer (401, 404, 400 invalid_source, others)."""
    error_type, message = error_fields(response)
    fields: dict[str, Any] = {
        "status_code": response.status_code,
        "reason": reason_of(response),
        "error_type": error_type,
        "stitch_message": message,
        "method": call.method,
        "path": call.shown,
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


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The flow or task run's logger when there is one, else this module's."""
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:
        return _module_logger
