"""The typed error tree of prefect-stitch.

Everything this package raises on purpose derives from `StitchError`, so a pipeline can
catch one base class, or pick the precise case:

```
StitchError
├── StitchConfigurationError      bad input, found before any HTTP call (also a ValueError)
├── StitchAPIError                Stitch answered with an error, or could not be reached
│   ├── StitchAuthError           401: the token is wrong, revoked, or not for this account
│   ├── StitchNotFoundError       404
│   ├── StitchInvalidSourceError  400 invalid_source: unknown or deleted source
│   └── StitchTransportError      no usable answer: connection dropped, timeout, bad body
├── StitchJobAlreadyRunning       POST /sync answered 200 with error type already_running
├── StitchReplicationFailed       a phase of the replication job exited non-zero
│   ├── StitchJobTerminated       the job ended with null exit statuses (stopped/terminated)
│   └── StitchLoadFailed          every phase exited 0, but loading into the warehouse failed
├── StitchSyncTimeout             the sync ran past max_wait_seconds
│   └── StitchLoadTimeout         the data did not reach the warehouse in max_load_wait_seconds
├── StitchVerdictUnavailable      the job ended but its record and log are gone
└── StitchSyncManyFailed          some syncs of a multi-source run failed
```

No error ever carries the access token: messages are built from the HTTP status, the
reason phrase, Stitch's own error message, the method and the path (which never holds
the token).

Every error pickles and unpickles with its attributes intact, so it survives Prefect's
result persistence and reaches a parent flow as the same type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PhaseFailure",
    "StitchAPIError",
    "StitchAuthError",
    "StitchConfigurationError",
    "StitchError",
    "StitchInvalidSourceError",
    "StitchJobAlreadyRunning",
    "StitchJobTerminated",
    "StitchLoadFailed",
    "StitchLoadTimeout",
    "StitchNotFoundError",
    "StitchReplicationFailed",
    "StitchSyncManyFailed",
    "StitchSyncTimeout",
    "StitchTransportError",
    "StitchVerdictUnavailable",
]


class StitchError(Exception):
    """Base class of every error raised by prefect-stitch.

    Example:
        ```python
        from prefect_stitch import StitchError, stitch_sync_flow

        try:
            stitch_sync_flow(source_id=120643, credentials="stitch")
        except StitchError as exc:
            print(f"Stitch sync did not succeed: {exc}")
        ```
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from the attribute dict so that subclasses with keyword-only
        # constructors survive pickling (Prefect persists exceptions in states).
        return (_rebuild_error, (type(self), self.__dict__.copy()))


def _rebuild_error(cls: type[StitchError], state: dict[str, Any]) -> StitchError:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message", ""))
    error.__dict__.update(state)
    return error


class StitchConfigurationError(StitchError, ValueError):
    """Invalid input, detected before any request is sent to Stitch.

    Attributes:
        parameter: The name of the offending parameter or setting.

    Example:
        ```python
        from prefect_stitch import StitchConfigurationError, StitchCredentials

        try:
            StitchCredentials.from_env()
        except StitchConfigurationError as exc:
            print(exc.parameter)  # e.g. "STITCH_ACCESS_TOKEN"
        ```
    """

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class StitchAPIError(StitchError):
    """Stitch answered a request with an error, or gave no usable answer.

    The message follows the integration's error contract: the HTTP reason phrase, then
    Stitch's own error message where the body carries one, then the call that failed.
    The structured fields are always available for code that needs them.

    Attributes:
        status_code: The HTTP status, or ``None`` when no response arrived.
        reason: The HTTP reason phrase (``"Bad Gateway"``), or a short description of
            the transport fault (``"connection dropped"``).
        error_type: Stitch's error type (``"invalid_source"``), when the body has one.
        stitch_message: Stitch's own error message, when the body has one.
        method: The HTTP method of the failed call.
        path: The path of the failed call (never the token, never a pre-signed query).
        attempts: How many attempts were made before giving up.
        retry_after: Seconds Stitch asked us to wait (``Retry-After``), if it did.
        request_sent: False only when the request provably never reached Stitch (the
            connection could not be opened); a trigger that failed so started nothing.

    Example:
        ```python
        from prefect_stitch import StitchAPIError, StitchCredentials

        async def show_source(source_id: int) -> None:
            credentials = await StitchCredentials.aload("stitch")
            try:
                async with credentials.get_client() as client:
                    print(await client.get_source(source_id))
            except StitchAPIError as exc:
                print(exc.status_code, exc.reason, exc.stitch_message)
        ```
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        status_code: int | None,
        reason: str,
        error_type: str | None = None,
        stitch_message: str | None = None,
        method: str = "",
        path: str = "",
        attempts: int = 1,
        retry_after: float | None = None,
        request_sent: bool = True,
    ) -> None:
        self.status_code = status_code
        self.request_sent = request_sent
        self.retry_after = retry_after
        self.reason = reason
        self.error_type = error_type
        self.stitch_message = stitch_message
        self.method = method
        self.path = path
        self.attempts = attempts
        super().__init__(message if message is not None else self._default_message())

    @property
    def call(self) -> str:
        """The failed call, e.g. ``"GET /v4/116078/extractions?page=2"``."""
        return f"{self.method} {self.path}".strip()

    def _default_message(self) -> str:
        text = self.reason
        if self.stitch_message and self.stitch_message != self.reason:
            text = f"{text}: {self.stitch_message}"
        status = f"HTTP {self.status_code}" if self.status_code is not None else "no response"
        tries = f", after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{text} ({status} from {self.call}{tries})"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status_code={self.status_code!r}, reason={self.reason!r}, "
            f"error_type={self.error_type!r}, stitch_message={self.stitch_message!r}, "
            f"call={self.call!r}, attempts={self.attempts!r})"
        )


class StitchAuthError(StitchAPIError):
    """HTTP 401: the access token is missing, invalid, revoked or not for this account.

    Its message is Stitch's raw error message from the response body (the reason phrase
    when the body has none), as the integration's error contract requires.

    Example:
        ```python
        from prefect_stitch import StitchAuthError

        try:
            ...
        except StitchAuthError as exc:
            print(f"Check the token in the 'stitch' block: {exc}")
        ```
    """

    def _default_message(self) -> str:
        return self.stitch_message or self.reason


class StitchNotFoundError(StitchAPIError):
    """HTTP 404: the path, source or extraction job does not exist.

    Its message is the HTTP reason phrase (``"Not Found"``), as the integration's error
    contract requires; `path` says what was not found.

    Example:
        ```python
        from prefect_stitch import StitchNotFoundError

        try:
            ...
        except StitchNotFoundError as exc:
            print(exc, exc.path)  # Not Found /v4/sources/42
        ```
    """

    def _default_message(self) -> str:
        return self.reason


class StitchInvalidSourceError(StitchAPIError):
    """HTTP 400 with error type ``invalid_source``: the source is unknown or deleted.

    Example:
        ```python
        from prefect_stitch import StitchInvalidSourceError

        try:
            ...
        except StitchInvalidSourceError as exc:
            print(exc.stitch_message)  # "Integration is deleted."
        ```
    """


class StitchTransportError(StitchAPIError):
    """No usable answer: a dropped connection, a timeout, or an unreadable body.

    The connection failed or dropped, the request timed out, or the body could not be
    read as the documented shape.

    ``status_code`` is ``None`` for connection faults and the HTTP status for an
    unreadable body.

    Example:
        ```python
        from prefect_stitch import StitchTransportError

        try:
            ...
        except StitchTransportError as exc:
            print(exc.reason)  # "connection dropped", "read timeout", "malformed JSON body"
        ```
    """


class StitchJobAlreadyRunning(StitchError):
    """Stitch refused to start a job because one is already running for the source.

    Stitch signals this with HTTP **200** and an ``already_running`` error body.

    Attributes:
        source_id: The source that already has a job running.
        stitch_message: Stitch's own message.
        seen_running_at: When we learnt that a job was running (UTC, our clock).
        stitch_time: Stitch's clock when it said so (its ``Date`` header), if sent.
        job_name: The running job's name, when it became known (after it ended).

    Example:
        ```python
        from prefect_stitch import StitchJobAlreadyRunning, stitch_sync_flow

        try:
            stitch_sync_flow(source_id=120643, on_already_running="fail")
        except StitchJobAlreadyRunning as exc:
            print(f"source {exc.source_id} is busy: {exc}")
        ```
    """

    def __init__(
        self,
        message: str,
        *,
        source_id: int,
        stitch_message: str | None = None,
        seen_running_at: Any = None,
        stitch_time: Any = None,
        job_name: str | None = None,
    ) -> None:
        super().__init__(message)
        self.source_id = source_id
        self.stitch_message = stitch_message
        self.seen_running_at = seen_running_at
        self.stitch_time = stitch_time
        self.job_name = job_name


@dataclass(frozen=True)
class PhaseFailure:
    """One failed phase of a replication job: its name, exit status and description.

    Attributes:
        phase: ``"discovery"``, ``"tap"`` or ``"target"``.
        exit_status: The non-zero exit status Stitch reported (1, -9, ...).
        description: Stitch's ``<phase>_description`` for it, if any.

    Example:
        ```python
        from prefect_stitch.errors import PhaseFailure

        failure = PhaseFailure("tap", -9, "Killed")
        print(failure)  # tap exited with status -9: Killed
        ```
    """

    phase: str
    exit_status: int
    description: str | None = None

    def __str__(self) -> str:
        described = f": {self.description}" if self.description else " (no description)"
        return f"{self.phase} exited with status {self.exit_status}{described}"


class StitchReplicationFailed(StitchError):
    """The replication job finished and at least one phase failed.

    Attributes:
        source_id: The Stitch source.
        job_name: The replication job's name.
        failed_phases: Every failed phase, in order (discovery, tap, target).
        result: The [`StitchSyncResult`][prefect_stitch.models.StitchSyncResult] of the
            job (statuses, times, link), when available.
        log_tail: The last lines of the extraction log, when they could be fetched.
        attempts: Every job the sync ran or followed (one per replication retry), as
            [`SyncAttempt`][prefect_stitch.models.SyncAttempt] records; the last failed.

    Example:
        ```python
        from prefect import flow
        from prefect_stitch import StitchReplicationFailed, stitch_sync_flow

        @flow
        def pipeline() -> None:
            try:
                stitch_sync_flow(source_id=120643)
            except StitchReplicationFailed as exc:
                for failure in exc.failed_phases:
                    print(failure.phase, failure.exit_status, failure.description)
                raise
        ```
    """

    def __init__(
        self,
        message: str,
        *,
        source_id: int,
        job_name: str | None,
        failed_phases: Sequence[PhaseFailure] = (),
        result: Any = None,
        log_tail: str | None = None,
        attempts: Sequence[Any] = (),
    ) -> None:
        super().__init__(message)
        self.source_id = source_id
        self.job_name = job_name
        self.failed_phases = list(failed_phases)
        self.result = result
        self.log_tail = log_tail
        self.attempts = list(attempts)


class StitchJobTerminated(StitchReplicationFailed):
    """The job ended without exit statuses: Stitch (or someone) terminated it.

    Stitch lists such jobs with a completion time and no non-zero exit status but not
    every phase 0 (the descriptions may say ``"Terminated"``, or be null). It is a
    failure: no data was fully extracted.

    Example:
        ```python
        from prefect_stitch import StitchJobTerminated

        try:
            ...
        except StitchJobTerminated as exc:
            print(f"job {exc.job_name} was terminated")
        ```
    """


class StitchLoadFailed(StitchReplicationFailed):
    """Every phase of the job exited 0, but Stitch could not load its data.

    Stitch loads each stream (table) after extraction; a load can fail while the
    extraction succeeded (a permission error, a column type the warehouse rejects).

    Attributes:
        failed_streams: Each failed stream and the warehouse's message (``None`` when
            Stitch gave none).

    Example:
        ```python
        from prefect_stitch import StitchLoadFailed, stitch_sync_flow

        try:
            stitch_sync_flow(source_id=120643)
        except StitchLoadFailed as exc:
            for stream, message in exc.failed_streams.items():
                print(stream, message)
        ```
    """

    def __init__(
        self, message: str, *, failed_streams: dict[str, str | None], **fields: Any
    ) -> None:
        super().__init__(message, **fields)
        self.failed_streams = dict(failed_streams)


class StitchSyncTimeout(StitchError):
    """The wait for a replication job ran past ``max_wait_seconds`` (wall-clock).

    Attributes:
        source_id: The Stitch source.
        job_name: The job's name, when known.
        max_wait_seconds: The limit that was exceeded.
        stopped: Whether Stitch accepted a request to stop the job (the job ends
            asynchronously; Stitch still loads what was extracted).
        attempts: The jobs that ended before this one (replication retries).

    Example:
        ```python
        from prefect_stitch import StitchSyncTimeout, stitch_sync_flow

        try:
            stitch_sync_flow(source_id=120643, max_wait_seconds=3600)
        except StitchSyncTimeout as exc:
            print(exc.stopped)
        ```
    """

    def __init__(
        self,
        message: str,
        *,
        source_id: int,
        job_name: str | None,
        max_wait_seconds: float,
        stopped: bool,
        attempts: Sequence[Any] = (),
    ) -> None:
        super().__init__(message)
        self.source_id = source_id
        self.job_name = job_name
        self.max_wait_seconds = max_wait_seconds
        self.stopped = stopped
        self.attempts = list(attempts)


class StitchLoadTimeout(StitchSyncTimeout):
    """The job's data did not reach the warehouse within ``max_load_wait_seconds``.

    Attributes:
        pending_streams: The streams with no load of this job.
        result: The job's result (its extraction succeeded).

    Example:
        ```python
        from prefect_stitch import StitchLoadTimeout, stitch_sync_flow

        try:
            stitch_sync_flow(source_id=120643, max_load_wait_seconds=600)
        except StitchLoadTimeout as exc:
            print(exc.pending_streams)
        ```
    """

    def __init__(
        self, message: str, *, pending_streams: Sequence[str], result: Any = None, **fields: Any
    ) -> None:
        super().__init__(message, **fields)
        self.pending_streams = list(pending_streams)
        self.result = result


class StitchVerdictUnavailable(StitchError):
    """The job ended, but Stitch no longer says how.

    Stitch lists one record per source: a later job of the source replaced ours before
    a poll could read it, and the job's log (which ends with its exit statuses) could not
    be read either. Pausing Stitch's own schedule of the source avoids this.

    Attributes:
        source_id: The Stitch source.
        job_name: Our job's name.
        superseded_by: The later job's name.

    Example:
        ```python
        from prefect_stitch import StitchVerdictUnavailable

        try:
            ...
        except StitchVerdictUnavailable as exc:
            print(f"{exc.job_name} was replaced by {exc.superseded_by}")
        ```
    """

    def __init__(
        self, message: str, *, source_id: int, job_name: str | None, superseded_by: str
    ) -> None:
        super().__init__(message)
        self.source_id = source_id
        self.job_name = job_name
        self.superseded_by = superseded_by


class StitchSyncManyFailed(StitchError):
    """Some of the syncs started by a multi-source run did not succeed.

    Attributes:
        failures: Maps each failed source id to its error.
        results: Every source's outcome (a result or an error), by source id.

    Example:
        ```python
        from prefect_stitch import StitchSyncManyFailed, stitch_sync_many_flow

        try:
            stitch_sync_many_flow(source_ids=[1, 2, 3])
        except StitchSyncManyFailed as exc:
            print(sorted(exc.failures))
        ```
    """

    def __init__(
        self,
        message: str,
        *,
        failures: dict[int, BaseException],
        results: dict[int, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.failures = failures
        self.results = results or {}
