"""Pydantic models of what Stitch returns and of what this package returns.

Stitch's records are parsed leniently (unknown fields are kept, ``tap_name`` and
``source_type`` are both accepted, naive timestamps are read as UTC) but their
documented fields are type-checked, so a body of the wrong shape becomes a typed
[`StitchTransportError`][prefect_stitch.errors.StitchTransportError] at the client
boundary instead of a ``KeyError`` deep inside a poll loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    computed_field,
    field_validator,
)

from prefect_stitch.errors import StitchConfigurationError

__all__ = [
    "MAX_STITCH_ID",
    "STITCH_APP_URL",
    "Destination",
    "Extraction",
    "JobOrigin",
    "Listing",
    "Load",
    "LoadErrorDetails",
    "LoadExceptionLink",
    "LoadListing",
    "LoadState",
    "Page",
    "Source",
    "SourceId",
    "StitchSyncHandle",
    "StitchSyncManyResult",
    "StitchSyncResult",
    "Stream",
    "StreamLoadResult",
    "SyncAttempt",
    "SyncOutcome",
    "SyncStatus",
    "TriggerAnswer",
    "check_source_id",
    "stitch_source_url",
]

STITCH_APP_URL = "https://app.stitchdata.com"


class SyncStatus(StrEnum):
    """Where a Stitch job or a sync stands: the one vocabulary of every outcome.

    An extraction record's verdict is one of ``running``, ``succeeded``, ``failed`` and
    ``terminated``; a sync adds what can happen around the job: its load failed, it ran out
    of time, it was cancelled, or it ended in an error before any verdict (an API error, a
    job that was not ours...). Results, attempts, events, artifacts and the many-sources
    summary all use these values.

    Example:
        ```python
        from prefect_stitch.models import SyncStatus

        print(SyncStatus.TERMINATED.is_final, SyncStatus("load_failed").succeeded)  # True False
        ```
    """

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TERMINATED = "terminated"
    LOAD_FAILED = "load_failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    ERROR = "error"

    @property
    def is_final(self) -> bool:
        """Whether the job (or the sync) has ended."""
        return self is not SyncStatus.RUNNING

    @property
    def succeeded(self) -> bool:
        """Whether it is a success."""
        return self is SyncStatus.SUCCEEDED


MAX_STITCH_ID = 2**31 - 1
"""Largest id accepted for a Stitch source (ids are positive 32-bit integers)."""

SourceId = Annotated[
    int,
    Strict(),
    Field(
        gt=0,
        le=MAX_STITCH_ID,
        title="Stitch source id",
        description=(
            "The Stitch source (integration) to sync, as in "
            "app.stitchdata.com/client/CLIENT_ID/pipeline/v2/sources/SOURCE_ID/summary."
        ),
    ),
]
"""A Stitch source id: a positive integer (not a bool, not a string)."""


def check_source_id(value: object, parameter: str = "source_id") -> int:
    """Validate a source id before any request is made.

    Args:
        value: The candidate id.
        parameter: The parameter name to report.

    Returns:
        The id.

    Raises:
        StitchConfigurationError: It is not a positive integer within range.

    Example:
        ```python
        from prefect_stitch.models import check_source_id

        print(check_source_id(120643))  # 120643
        ```
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise StitchConfigurationError(
            f"{parameter} must be a positive integer, got {type(value).__name__} {value!r}",
            parameter=parameter,
        )
    if not 0 < value <= MAX_STITCH_ID:
        raise StitchConfigurationError(
            f"{parameter} must be between 1 and {MAX_STITCH_ID}, got {value}",
            parameter=parameter,
        )
    return value


def _as_utc(value: datetime | None) -> datetime | None:
    """A naive timestamp read as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def stitch_source_url(client_id: int | None, source_id: int) -> str:
    """Build the link to a source's summary page in the Stitch app.

    Args:
        client_id: The Stitch client (account) id; without it the link opens the
            account's source list, which Stitch redirects to the right account.
        source_id: The Stitch source id.

    Returns:
        The URL of the source's summary page.

    Example:
        ```python
        from prefect_stitch.models import stitch_source_url

        print(stitch_source_url(116078, 120643))
        # https://app.stitchdata.com/client/116078/pipeline/v2/sources/120643/summary
        ```
    """
    if client_id is None:
        return f"{STITCH_APP_URL}/pipeline/v2/sources/{source_id}/summary"
    return f"{STITCH_APP_URL}/client/{client_id}/pipeline/v2/sources/{source_id}/summary"


class _StitchRecord(BaseModel):
    """A record of Stitch's: unknown fields kept, immutable."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)


class Extraction(_StitchRecord):
    """One record of ``GET /v4/{client_id}/extractions``: a source's last completed job.

    Whether the record means running, succeeded, failed or terminated is decided in one
    place, `judge_extraction` (`prefect_stitch/_verdict.py`).

    Example:
        ```python
        from prefect_stitch.models import Extraction

        record = Extraction.model_validate({
            "job_name": "116078.120643.sync.c12fb0a7", "source_id": 120643,
            "source_type": "tap-recurly", "start_time": "2020-06-19T15:09:38Z",
            "completion_time": "2020-06-19T15:10:08Z", "discovery_exit_status": 0,
            "tap_exit_status": 1, "tap_description": "HTTP-error-code: 401",
            "target_exit_status": 0,
        })
        print(record.tap_name, record.tap_exit_status)  # tap-recurly 1
        ```
    """

    job_name: str
    source_id: int
    stitch_client_id: int | None = None
    tap_name: str | None = Field(
        default=None, validation_alias=AliasChoices("tap_name", "source_type")
    )
    start_time: datetime | None = None
    completion_time: datetime | None = None
    discovery_exit_status: int | None = None
    discovery_description: str | None = None
    tap_exit_status: int | None = None
    tap_description: str | None = None
    target_exit_status: int | None = None
    target_description: str | None = None

    _utc = field_validator("start_time", "completion_time")(_as_utc)


class Source(_StitchRecord):
    """A Stitch source (integration), as ``GET /v4/sources/{id}`` returns it.

    Example:
        ```python
        from prefect_stitch.models import Source

        source = Source.model_validate({"id": 120643, "name": "recurly",
                                        "stitch_client_id": 116078, "paused_at": None})
        print(source.is_paused)  # False
        ```
    """

    id: int
    name: str | None = None
    display_name: str | None = None
    type: str | None = None
    stitch_client_id: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None
    paused_at: datetime | None = None
    system_paused_at: datetime | None = None
    schedule: dict[str, Any] | None = None

    _utc = field_validator(
        "created_at", "updated_at", "deleted_at", "paused_at", "system_paused_at"
    )(_as_utc)

    @property
    def is_paused(self) -> bool:
        """Whether a user or Stitch paused the source (manual syncs still work)."""
        return self.paused_at is not None or self.system_paused_at is not None

    @property
    def is_deleted(self) -> bool:
        """Whether the source was deleted."""
        return self.deleted_at is not None


_MAX_TEXT = 1000
_MESSAGE_KEYS = ("warehouse_message", "message", "exception_message", "error")
"""Where ``notification_data`` says what went wrong, the warehouse's own words first."""


def _text(value: Any) -> str | None:
    """A string Stitch gave (a number becomes its text), cut to a sane length."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        text = str(value).strip()
        return text[:_MAX_TEXT] or None
    return None


class LoadExceptionLink(BaseModel):
    """One link of the exception chain Stitch gives for a failed load.

    Example:
        ```python
        from prefect_stitch.models import LoadExceptionLink

        link = LoadExceptionLink(exception_class="PSQLException", message="permission denied")
        print(link)  # PSQLException: permission denied
        ```
    """

    exception_class: str | None = Field(default=None, description="The exception's class.")
    message: str | None = Field(default=None, description="The exception's message.")
    action: str | None = Field(default=None, description="What the loader was doing.")

    def __str__(self) -> str:
        return ": ".join(part for part in (self.exception_class, self.message) if part)


class LoadErrorDetails(BaseModel):
    """What Stitch says about a failed load, read from ``error_state`` whatever its shape.

    Stitch documents ``error_state`` as an object "subject to change": ``notification_data``
    (``warehouse_message``, ``message``, ``exception_message``, ``error``,
    ``warehouse_error_code``, ``warehouse_sql_state``, ``action``, ...) and an
    ``exception_chain`` of ``{class, message, chain_sequence_num, action}``. Every field here
    is optional; a field of an unexpected type is left out, never an error.

    Example:
        ```python
        from prefect_stitch.models import LoadErrorDetails

        details = LoadErrorDetails.from_error_state({"notification_data": {
            "warehouse_message": "permission denied", "warehouse_error_code": 500151,
            "warehouse_sql_state": "42501"}})
        print(details.summary)  # permission denied (warehouse error code 500151, SQL state 42501)
        ```
    """

    message: str | None = Field(default=None, description="The warehouse's (or Stitch's) message.")
    error: str | None = Field(
        default=None, description="Stitch's error type, e.g. LOADER_WAREHOUSE_ERROR."
    )
    warehouse_error_code: str | None = Field(
        default=None, description="The warehouse's error code."
    )
    warehouse_sql_state: str | None = Field(default=None, description="The SQL state.")
    action: str | None = Field(default=None, description="What the loader was doing.")
    exception_chain: list[LoadExceptionLink] = Field(
        default_factory=list, description="The exceptions Stitch chained, in order."
    )

    @classmethod
    def from_error_state(cls, state: Any) -> LoadErrorDetails:
        """Read an ``error_state`` of any shape (an object, a string, something else).

        Args:
            state: The load record's ``error_state``.

        Returns:
            What could be read of it.
        """
        if isinstance(state, str):
            return cls(message=_text(state))
        if not isinstance(state, dict):
            return cls()
        data = state.get("notification_data")
        data = data if isinstance(data, dict) else {}
        chain = _chain(state.get("exception_chain"))

        def first(*keys: str) -> str | None:
            """The first text under one of ``keys``: in ``notification_data``, then at the top."""
            for where in (data, state):
                for key in keys:
                    text = _text(where.get(key))
                    if text:
                        return text
            return None

        message = next(
            filter(None, (_text(data.get(key)) for key in _MESSAGE_KEYS)),
            next((link.message for link in chain if link.message), None)
            or next(filter(None, (_text(state.get(key)) for key in ("message", "error"))), None),
        )
        return cls(
            message=message,
            error=first("error"),
            warehouse_error_code=first("warehouse_error_code"),
            warehouse_sql_state=first("warehouse_sql_state"),
            action=first("action"),
            exception_chain=chain,
        )

    @property
    def summary(self) -> str:
        """The message, with the warehouse's error code and SQL state next to it."""
        codes = [
            f"{label} {value}"
            for label, value in (
                ("warehouse error code", self.warehouse_error_code),
                ("SQL state", self.warehouse_sql_state),
            )
            if value
        ]
        text = self.message or "no message from Stitch"
        return f"{text} ({', '.join(codes)})" if codes else text


def _chain(value: Any) -> list[LoadExceptionLink]:
    """The links of an ``exception_chain`` that read as links, in Stitch's order."""
    if not isinstance(value, list):
        return []
    links = [item for item in value if isinstance(item, dict)]
    links.sort(
        key=lambda item: (
            item["chain_sequence_num"] if isinstance(item.get("chain_sequence_num"), int) else 0
        )
    )
    return [
        LoadExceptionLink(
            exception_class=_text(item.get("class")),
            message=_text(item.get("message")),
            action=_text(item.get("action")),
        )
        for item in links[:20]
    ]


class Load(_StitchRecord):
    """The last load attempt of one stream (table), from ``GET /v4/{client_id}/loads``.

    ``error_state``'s shape "is subject to change" (Stitch's docs), so it is kept as
    whatever JSON Stitch sent and read defensively by `details`. ``stream_id`` is kept
    when Stitch sends one (the listing is ordered by it): a stream's name need not be unique
    within a source (one table name in two schemas), its id is.

    Example:
        ```python
        from prefect_stitch.models import Load

        load = Load.model_validate({
            "source_name": "recurly", "stream_name": "accounts", "last_batch_loaded_at": None,
            "error_state": {"notification_data": {"warehouse_message": "permission denied"}},
        })
        print(load.failed, load.warehouse_message)  # True permission denied
        ```
    """

    stitch_client_id: int | None = None
    source_name: str
    stream_name: str
    stream_id: int | str | None = None
    last_batch_loaded_at: datetime | None = None
    error_state: Any = None

    _utc = field_validator("last_batch_loaded_at")(_as_utc)

    @property
    def failed(self) -> bool:
        """Whether the stream's last load is in an error state."""
        return self.error_state is not None

    @property
    def details(self) -> LoadErrorDetails | None:
        """What Stitch says about the failed load (``None`` when it did not fail)."""
        return (
            None
            if self.error_state is None
            else LoadErrorDetails.from_error_state(self.error_state)
        )

    @property
    def warehouse_message(self) -> str | None:
        """What went wrong, as Stitch says it: the warehouse's message when there is one.

        Looks for ``notification_data.warehouse_message``, then ``message`` and
        ``exception_message`` there, then the first ``exception_chain`` message, then
        Stitch's error type; never fails on an unexpected shape.
        """
        details = self.details
        return None if details is None else details.message


class Stream(_StitchRecord):
    """One stream (table) of a source, from ``GET /v4/sources/{id}/streams``.

    Example:
        ```python
        from prefect_stitch.models import Stream

        stream = Stream.model_validate({"stream_id": 1, "stream_name": "accounts",
                                        "tap_stream_id": "accounts", "selected": True})
        print(stream.selected)  # True
        ```
    """

    stream_id: int | str | None = None
    stream_name: str
    tap_stream_id: str | None = None
    selected: bool | None = None
    metadata: Any = None

    @property
    def is_selected(self) -> bool:
        """Whether the stream is selected for replication (``selected``, or its metadata).

        Stitch reports ``selected: null`` for a stream never selected, and may carry the
        flag in ``metadata`` (an object, or Singer's list of breadcrumb entries).
        """
        if self.selected is not None:
            return self.selected
        metadata = self.metadata
        if isinstance(metadata, dict) and isinstance(metadata.get("selected"), bool):
            return bool(metadata["selected"])
        if isinstance(metadata, list):
            for entry in metadata:
                if isinstance(entry, dict) and entry.get("breadcrumb") in ([], None):
                    inner = entry.get("metadata")
                    if isinstance(inner, dict) and isinstance(inner.get("selected"), bool):
                        return bool(inner["selected"])
        return False


class Destination(_StitchRecord):
    """The account's destination (warehouse), from ``GET /v4/destinations``.

    Stitch's v4 object keeps the connection settings in ``properties`` (older shapes:
    ``connection``), values as strings.

    Example:
        ```python
        from prefect_stitch.models import Destination

        destination = Destination.model_validate(
            {"id": 1, "type": "postgres", "properties": {"database": "analytics"}})
        print(destination.database)  # analytics
        ```
    """

    id: int | None = None
    type: str | None = None
    name: str | None = None
    properties: dict[str, Any] | None = None
    connection: dict[str, Any] | None = None

    @property
    def database(self) -> str | None:
        """The warehouse database (BigQuery: the project) the source schemas live in."""
        for settings in (self.properties or {}, self.connection or {}):
            for key in ("database", "project_id", "dbname", "catalog"):
                value = settings.get(key)
                if isinstance(value, str) and value:
                    return value
        return None


class Page(BaseModel):
    """One page of a paginated jobs endpoint (extractions or loads).

    Example:
        ```python
        from prefect_stitch.models import Page

        page = Page.model_validate({"data": [], "page": 1, "total": 0, "links": {}})
        print(page.next_path)  # None
        ```
    """

    model_config = ConfigDict(extra="allow")

    data: list[dict[str, Any]]
    page: int | None = None
    total: int | None = None
    links: dict[str, Any] | None = None

    @property
    def next_path(self) -> str | None:
        """The relative path of the next page, or ``None`` on the last page."""
        nxt = (self.links or {}).get("next")
        return nxt if isinstance(nxt, str) and nxt else None


Record = TypeVar("Record", "Extraction", "Load")


@dataclass(frozen=True)
class Listing(Generic[Record]):
    """Every record of one reading of a paginated jobs listing, and Stitch's clock then.

    Attributes:
        records: The records of every page, without duplicates.
        pages: Pages read (the jobs requests the listing cost).
        stitch_time: Stitch's clock (the ``Date`` header of the first page), if sent.

    Example:
        ```python
        from prefect_stitch.models import Listing

        print(Listing(records=(), pages=1).stitch_time)  # None
        ```
    """

    records: tuple[Record, ...]
    pages: int = 0
    stitch_time: datetime | None = None


LoadListing = Listing
"""The loads listing is read like the extractions listing (``Listing[Load]``)."""


@dataclass(frozen=True)
class TriggerAnswer:
    """Stitch's answer to ``POST /v4/sources/{id}/sync`` that started a job.

    Attributes:
        job_name: The new job's name.
        stitch_time: Stitch's clock when it answered (its ``Date`` header), if sent.

    Example:
        ```python
        from prefect_stitch.models import TriggerAnswer

        print(TriggerAnswer(job_name="116078.120643.sync.c12f").job_name)
        ```
    """

    job_name: str
    stitch_time: datetime | None = None


JobOrigin = Literal["started", "attached", "uncertain"]
"""Who started the job a sync follows: ``"started"`` (this run), ``"attached"`` (someone
else: Stitch's schedule, a colleague), ``"uncertain"`` (a retried trigger met a running job
that the lost answer of an earlier attempt may have started; settled when its record is
listed)."""


class StitchSyncHandle(BaseModel):
    """What `start_stitch_sync` learnt: the job to wait for, and what Stitch showed before.

    Identity is decided from Stitch's records and Stitch's clock only (see
    `locate_job` (`prefect_stitch/_verdict.py`)): the job's name when Stitch told
    it, the source's listed record before we acted (the *baseline*), and the ``Date`` of
    Stitch's answers. ``requested_at`` is this machine's clock, kept for people only.

    Attributes:
        source_id: The Stitch source.
        job_name: The name Stitch gave the job, if known.
        origin: ``"started"``, ``"attached"`` or ``"uncertain"`` (see `JobOrigin`).
        baseline_job_name: The source's listed record before we acted (``None`` when the
            source had none).
        baseline_stitch_time: Stitch's clock (``Date``) when the baseline was listed.
        answer_stitch_time: Stitch's clock (``Date``) of its answer that started the job
            or said one was running.
        requested_at: When we first asked Stitch (UTC, this machine's clock; shown only).
        source_name: The source's ``name`` (its schema), when loads are followed.
        stopped_duplicate: A second job a retried trigger started after the job of an
            earlier attempt (whose answer was lost) had already run: it was stopped at
            once, and the handle follows the earlier job.
        baseline_loads: The source's load records before we acted, when loads are
            followed (an error they show is an earlier load's).

    Example:
        ```python
        from datetime import UTC, datetime
        from prefect_stitch.models import StitchSyncHandle

        handle = StitchSyncHandle(source_id=120643, job_name="116078.120643.sync.c12f",
                                  requested_at=datetime.now(UTC))
        print(handle.attached)  # False
        ```
    """

    model_config = ConfigDict(frozen=True)

    source_id: int
    job_name: str | None = None
    origin: JobOrigin = "started"
    baseline_job_name: str | None = None
    baseline_stitch_time: datetime | None = None
    answer_stitch_time: datetime | None = None
    requested_at: datetime
    source_name: str | None = None
    baseline_loads: tuple[Load, ...] | None = None
    stopped_duplicate: str | None = None

    @property
    def attached(self) -> bool:
        """Whether the job is known not to be one this run started."""
        return self.origin == "attached"


LoadState = Literal["loaded", "failed", "not_loaded", "no_rows", "unchecked"]
"""Where a stream's data of this job stands: ``loaded`` (a load at or after the job's
completion), ``failed`` (the stream's load is in an error state), ``not_loaded`` (no load
of this job yet), ``no_rows`` (the job brought no rows for it: nothing to load),
``unchecked`` (``loads="check"`` found no load yet and did not wait)."""


class StreamLoadResult(BaseModel):
    """One stream's load, as a sync reports it.

    Example:
        ```python
        from prefect_stitch.models import StreamLoadResult

        print(StreamLoadResult(stream_name="accounts", state="loaded").state)  # loaded
        ```
    """

    stream_name: str = Field(description="The stream (table) name.")
    stream_id: int | str | None = Field(
        default=None, description="The stream's id in Stitch, when known (names may repeat)."
    )
    state: LoadState = Field(description="Where the stream's data of this job stands.")
    last_batch_loaded_at: datetime | None = Field(
        default=None, description="Stitch's time of the stream's last loaded batch."
    )
    warehouse_message: str | None = Field(
        default=None, description="The warehouse's error message, for a failed load."
    )
    error: LoadErrorDetails | None = Field(
        default=None,
        description="Everything Stitch said about a failed load: its error type, the "
        "warehouse's error code and SQL state, the action, the exception chain.",
    )
    asset_key: str | None = Field(
        default=None, description="The Prefect asset key of the table, when known."
    )


class SyncAttempt(BaseModel):
    """One replication job a sync ran or followed (one per replication retry).

    Example:
        ```python
        from prefect_stitch.models import SyncAttempt

        attempt = SyncAttempt(job_name="116078.1.sync.a", status="failed",
                              summary="tap exited with status -9: Killed")
        print(attempt.status)  # failed
        ```
    """

    job_name: str | None = Field(description="The replication job's name.")
    status: SyncStatus = Field(description="How the job ended.")
    summary: str = Field(default="", description="What Stitch said, in one line.")
    attached: bool = Field(default=False, description="The job was not started by this run.")
    start_time: datetime | None = None
    completion_time: datetime | None = None


class StitchSyncResult(BaseModel):
    """The outcome of one Stitch replication job, as the sync flow returns it.

    Example:
        ```python
        from prefect_stitch import stitch_sync_flow

        result = stitch_sync_flow(source_id=120643, credentials="stitch")
        print(result.job_name, result.duration_seconds, result.stitch_url)
        ```
    """

    source_id: Annotated[int, Field(description="The Stitch source id.")]
    job_name: Annotated[
        str | None, Field(description="The replication job's name (None only if unknown).")
    ]
    status: Annotated[
        SyncStatus,
        Field(description="How the job ended: succeeded, failed, terminated or load_failed."),
    ]
    attached: Annotated[
        bool,
        Field(
            default=False,
            description="True when the job was not started by this run (it was already "
            "running and we followed it).",
        ),
    ]
    client_id: Annotated[int | None, Field(default=None, description="The Stitch account.")]
    start_time: datetime | None = None
    completion_time: datetime | None = None
    discovery_exit_status: int | None = None
    discovery_description: str | None = None
    tap_exit_status: int | None = None
    tap_description: str | None = None
    target_exit_status: int | None = None
    target_description: str | None = None
    polls: Annotated[int, Field(default=0, description="Status polls made while waiting.")]
    stitch_url: Annotated[str, Field(description="The source's page in the Stitch app.")]
    loads: list[StreamLoadResult] = Field(
        default_factory=list,
        description="One entry per selected stream: whether this job's data reached the "
        "warehouse (empty with loads='ignore').",
    )
    attempts: list[SyncAttempt] = Field(
        default_factory=list,
        description="Every job this sync ran or followed, in order (more than one with "
        "replication retries); the last one is this result's job.",
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration_seconds(self) -> float | None:
        """Seconds from the job's start to its completion, by Stitch's clock."""
        if self.start_time is None or self.completion_time is None:
            return None
        return (self.completion_time - self.start_time).total_seconds()

    @property
    def succeeded(self) -> bool:
        """Whether every phase exited 0 (and, when loads were waited for, every load landed)."""
        return self.status is SyncStatus.SUCCEEDED

    @classmethod
    def from_extraction(
        cls,
        record: Extraction,
        *,
        status: SyncStatus,
        attached: bool,
        client_id: int | None,
        polls: int,
    ) -> StitchSyncResult:
        """Build a result from the extraction record of the job.

        Args:
            record: The job's extraction record.
            status: The verdict.
            attached: Whether we followed an already-running job.
            client_id: The Stitch account id.
            polls: How many status polls the wait made.

        Returns:
            The result.

        Example:
            ```python
            from prefect_stitch.models import Extraction, StitchSyncResult

            record = Extraction(job_name="j", source_id=1, discovery_exit_status=0,
                                tap_exit_status=0, target_exit_status=0)
            result = StitchSyncResult.from_extraction(
                record, status="succeeded", attached=False, client_id=116078, polls=3)
            print(result.stitch_url)
            ```
        """
        client = client_id if client_id is not None else record.stitch_client_id
        return cls(
            source_id=record.source_id,
            job_name=record.job_name,
            status=status,
            attached=attached,
            client_id=client,
            start_time=record.start_time,
            completion_time=record.completion_time,
            discovery_exit_status=record.discovery_exit_status,
            discovery_description=record.discovery_description,
            tap_exit_status=record.tap_exit_status,
            tap_description=record.tap_description,
            target_exit_status=record.target_exit_status,
            target_description=record.target_description,
            polls=polls,
            stitch_url=stitch_source_url(client, record.source_id),
        )


class SyncOutcome(BaseModel):
    """One source's outcome in a multi-source run: its result, or its error.

    Example:
        ```python
        from prefect_stitch.models import SyncOutcome

        outcome = SyncOutcome(source_id=1, status="failed", error_type="StitchReplicationFailed",
                              message="tap exited with status -9: Killed")
        print(outcome.ok)  # False
        ```
    """

    source_id: int
    status: SyncStatus
    result: StitchSyncResult | None = None
    error_type: str | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the source's job succeeded."""
        return self.status is SyncStatus.SUCCEEDED


class StitchSyncManyResult(BaseModel):
    """The outcome of every source of a `stitch_sync_many_flow` run, in input order.

    Example:
        ```python
        from prefect_stitch import stitch_sync_many_flow

        summary = stitch_sync_many_flow(source_ids=[120643, 120644], credentials="stitch")
        print(summary.succeeded, [o.result.job_name for o in summary.outcomes if o.result])
        ```
    """

    outcomes: list[SyncOutcome]
    jobs_requests: int = Field(
        default=0,
        description=(
            "Listing requests (extractions and loads pages, retries included) this "
            "process's pollers made during the run; runs in the same process share them."
        ),
    )

    @property
    def succeeded(self) -> int:
        """How many sources succeeded."""
        return sum(1 for outcome in self.outcomes if outcome.ok)

    @property
    def failed(self) -> list[SyncOutcome]:
        """The outcomes that did not succeed."""
        return [outcome for outcome in self.outcomes if not outcome.ok]

    def result_for(self, source_id: int) -> StitchSyncResult | None:
        """The result of one source, if it succeeded or failed with a verdict.

        Args:
            source_id: The Stitch source id.

        Returns:
            Its result, or ``None``.
        """
        for outcome in self.outcomes:
            if outcome.source_id == source_id:
                return outcome.result
        return None
