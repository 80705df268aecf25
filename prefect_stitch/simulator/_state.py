"""Pure state of the Stitch simulator: sources, jobs, loads, outcomes, faults, request log.

Nothing here knows about sockets. The HTTP layer (`_server.py`) turns requests into calls on
`SimulatorState` and its answers into Stitch-shaped responses. Every read or change of state
happens under one `threading.RLock`.

Time is Stitch's clock, `now()` (the wall clock plus `clock_offset_seconds`); every timestamp
the simulator emits comes from it. Nothing runs on timers: each time the state is touched it is
first *settled* from the clock. Settling replays, in chronological order, every event that is
due (a job reaching the end of its duration, a delayed stop taking effect, Stitch's scheduler
starting a job, a stream's load landing), and loops until nothing more is due, so a chain such
as start -> complete -> start -> complete between two requests gets exact historic times.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

if TYPE_CHECKING:
    from prefect_stitch.simulator._server import StitchSimulator

Phase = Literal["discovery", "tap", "target"]
OutcomeKind = Literal["success", "failure", "terminated"]
FaultKind = Literal[
    "status", "drop", "slow", "malformed_json", "wrong_shape", "start_then_drop", "mutate"
]
Endpoint = Literal[
    "trigger",
    "stop",
    "list_sources",
    "source",
    "update_source",
    "streams",
    "destinations",
    "extractions",
    "logs",
    "log_download",
    "loads",
    "unknown",
]
TriggeredVia = Literal["api", "scheduler", "seed"]
LaterExitStatus = int | None | Literal["auto"]

PHASES: tuple[Phase, ...] = get_args(Phase)
ENDPOINTS: frozenset[str] = frozenset(get_args(Endpoint))
"""Every endpoint name accepted by `inject`, `requests_for` and `RecordedRequest.endpoint`."""
JOBS_ENDPOINTS: frozenset[str] = frozenset({"extractions", "logs", "loads"})
"""The endpoints Stitch counts against the "jobs" rate limit (30 requests per 10 minutes)."""

UNAUTHORIZED_MESSAGE = "Not authorized: invalid or missing access token"
"""Message of the 401 body: `{"error": {"type": "unauthorized", "message": ...}}`."""
EXTRACTION_NOT_FOUND_MESSAGE = "The requested extraction job doesn't exist"
"""Message of the 404 body of the logs endpoint for an unknown job name."""
DELETED_SOURCE_MESSAGE = "Integration is deleted."
"""Message of the 400 `invalid_source` body when starting a job for a deleted source."""
SERVER_ERROR_MESSAGE = "The API is experiencing problems. Try again later."
"""Message of the default 5xx fault body, as documented for 500 and 502."""
TERMINATED = "Terminated"
"""The description Stitch's documented terminated example gives all three phases.

The simulator does not use it by default (a terminated job is told by its completion time
with null exit statuses, not by this word): pass `Outcome.terminated(description=TERMINATED)`
to reproduce the documented example.
"""
LOG_BUCKET = "com-stitchdata-prod-platform-pod-logs"
"""Bucket name used in the pre-signed log URL, as in Stitch's documented example."""

_RETENTION_SECONDS = 60 * 24 * 3600.0  # extractions and loads list the past 60 days only
_SCHEDULE_MINUTES = 60
_FIRST_STREAM_ID = 2288740  # stream IDs count up from here, in the range of Stitch's examples
_FIRST_DESTINATION_ID = 155582
_TARGET_FLUSH = "com.stitchdata.target-stitch-avro.flush-pipeline - send-stream-record-count-impl"
_LOG_CHUNK_BYTES = 64 * 1024


def iso(epoch: float) -> str:
    """Format an epoch timestamp as Stitch does: ISO-8601, UTC, whole seconds, `Z`.

    Args:
        epoch: Seconds since the epoch.

    Returns:
        The timestamp, e.g. `"2020-06-19T15:09:38Z"`.

    Examples:
        >>> from prefect_stitch.simulator import iso
        >>> iso(1592579378.9)
        '2020-06-19T15:09:38Z'
    """
    return datetime.fromtimestamp(math.floor(epoch), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tap_name(source_type: str) -> str:
    return "tap-" + source_type.rsplit(".", 1)[-1].replace("_", "-")


def _check_endpoint(endpoint: str) -> None:
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {sorted(ENDPOINTS)}")


@dataclass(frozen=True)
class StreamLoad:
    """How Stitch loads one stream's rows after a successful job.

    When the job completes at `T` (Stitch's clock), a stream that received rows gets one load
    attempt at `T + delay_seconds`. Until it lands, the stream's load record still shows its
    previous attempt (or no record at all).

    Attributes:
        delay_seconds: Time from the job's completion to the load attempt.
        error: A load error message: the attempt lands as an error (`error_state` set,
            `last_batch_loaded_at` null) instead of a success.
        never: No attempt ever lands (the record keeps showing the previous attempt).

    Examples:
        >>> from prefect_stitch.simulator import Outcome, StreamLoad
        >>> outcome = Outcome.success(loads={"accounts": StreamLoad(delay_seconds=30)})
        >>> dict(outcome.loads)["accounts"].delay_seconds
        30
    """

    delay_seconds: float = 0.0
    error: str | None = None
    never: bool = False

    def __post_init__(self) -> None:
        if not self.delay_seconds >= 0:
            raise ValueError("delay_seconds must be >= 0")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StreamLoad:
        """Build a stream load from its JSON form (as posted to the control API).

        Args:
            data: E.g. `{"delay_seconds": 5, "error": "disk full"}` or `{"never": true}`.

        Returns:
            The stream load.

        Raises:
            ValueError: On unknown keys or invalid values.

        Examples:
            >>> from prefect_stitch.simulator import StreamLoad
            >>> StreamLoad.from_json({"never": True}).never
            True
        """
        unknown = set(data) - {"delay_seconds", "error", "never"}
        if unknown:
            raise ValueError(f"unknown stream load fields: {sorted(unknown)}")
        error = data.get("error")
        return cls(
            delay_seconds=float(data.get("delay_seconds", 0.0)),
            error=None if error is None else str(error),
            never=bool(data.get("never", False)),
        )


def _check_later(value: object) -> LaterExitStatus:
    if value == "auto" or value is None:
        return cast(LaterExitStatus, value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"later_exit_status must be 'auto', None or an int, not {value!r}")
    return value


@dataclass(frozen=True)
class Outcome:
    """How a simulated replication job ends, and how long it runs.

    Build one with `Outcome.success`, `Outcome.failure` or `Outcome.terminated`. A source
    consumes one outcome per started job; the last one repeats.

    Attributes:
        kind: `"success"`, `"failure"` or `"terminated"`.
        duration_seconds: Run time; `None` runs until `finish_job` or a stop request.
        phase: The failing phase of a failure (`"discovery"`, `"tap"` or `"target"`).
        exit_status: The failing phase's exit status (non-zero; negative codes such as -9 too).
        description: The failing phase's description (Stitch's exception message); for a
            terminated job, the description of all three phases (default null).
        load_error: For a success: a load error for every stream that received rows.
        later_exit_status: For a failure: the exit status of the phases after the failing one
            (`"auto"`: null after a discovery failure, 0 for the target after a tap failure).
        rows: For a success: records received per stream, as `(stream, count)` pairs; `None`
            gives every selected stream a positive count.
        loads: For a success: how each stream is loaded, as `(stream, StreamLoad)` pairs.

    Examples:
        >>> from prefect_stitch.simulator import Outcome
        >>> Outcome.failure("tap", exit_status=-9).record_fields()["tap_exit_status"]
        -9
    """

    kind: OutcomeKind
    duration_seconds: float | None = 1.0
    phase: Phase | None = None
    exit_status: int | None = None
    description: str | None = None
    load_error: str | None = None
    later_exit_status: LaterExitStatus = "auto"
    rows: tuple[tuple[str, int], ...] | None = None
    loads: tuple[tuple[str, StreamLoad], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in get_args(OutcomeKind):
            raise ValueError(f"unknown outcome kind {self.kind!r}")
        if self.duration_seconds is not None and not self.duration_seconds >= 0:
            raise ValueError("duration_seconds must be >= 0 or None")
        _check_later(self.later_exit_status)
        if self.kind == "failure":
            if self.phase not in PHASES:
                raise ValueError(f"phase must be one of {PHASES}, not {self.phase!r}")
            if not self.exit_status:
                raise ValueError("a failure needs a non-zero exit_status")
        elif self.later_exit_status != "auto":
            raise ValueError("later_exit_status only applies to a failure")
        if self.kind != "success" and (self.rows is not None or self.loads or self.load_error):
            raise ValueError("rows, loads and load_error only apply to a success")
        if isinstance(self.rows, Mapping):
            object.__setattr__(self, "rows", tuple(sorted(self.rows.items())))
        if isinstance(self.loads, Mapping):
            object.__setattr__(self, "loads", tuple(sorted(self.loads.items())))
        for stream, count in self.rows or ():
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"rows of {stream!r} must be an int >= 0, not {count!r}")
        for stream, load in self.loads:
            if not isinstance(load, StreamLoad):
                raise ValueError(f"loads of {stream!r} must be a StreamLoad, not {load!r}")

    @classmethod
    def success(
        cls,
        duration_seconds: float | None = 1.0,
        load_error: str | None = None,
        *,
        rows: Mapping[str, int] | None = None,
        loads: Mapping[str, StreamLoad] | None = None,
    ) -> Outcome:
        """A job whose three phases all exit with 0.

        When it completes at `T`, each selected stream with rows gets a load attempt at
        `T + delay` (see `StreamLoad`); the others keep their previous load record.

        Args:
            duration_seconds: Run time; `None` runs until finished or stopped.
            load_error: A load error for every stream that received rows (a stream's own
                `StreamLoad.error` wins).
            rows: Records received per stream in this job; streams left out receive none.
                Default: every selected stream receives rows.
            loads: How each stream is loaded; default `StreamLoad()` (at once, no error).

        Returns:
            The outcome.

        Examples:
            >>> from prefect_stitch.simulator import Outcome
            >>> Outcome.success(0.2, rows={"accounts": 5}).rows
            (('accounts', 5),)
        """
        return cls(
            "success",
            duration_seconds=duration_seconds,
            load_error=load_error,
            rows=None if rows is None else tuple(sorted(rows.items())),
            loads=tuple(sorted((loads or {}).items())),
        )

    @classmethod
    def failure(
        cls,
        phase: Phase,
        exit_status: int = 1,
        description: str | None = None,
        duration_seconds: float | None = 1.0,
        *,
        later_exit_status: LaterExitStatus = "auto",
    ) -> Outcome:
        """A job whose `phase` fails with `exit_status`.

        The phases before the failing one report 0 with a null description; the failing one its
        code and description. The phases after it follow `later_exit_status`: with `"auto"`, a
        discovery failure leaves the tap and the target null (they never ran), and a tap failure
        gives the target 0 (tap and target run as a pipe, as in Stitch's documented example:
        discovery 0, tap 1, target 0). An explicit `None` or int overrides that.

        Args:
            phase: `"discovery"`, `"tap"` or `"target"`.
            exit_status: Non-zero exit status; negative codes (e.g. -9) are allowed.
            description: The error text; a generic message when omitted.
            duration_seconds: Run time; `None` runs until finished or stopped.
            later_exit_status: `"auto"`, `None` or the exit status of the later phases.

        Returns:
            The outcome.

        Examples:
            >>> from prefect_stitch.simulator import Outcome
            >>> fields = Outcome.failure("discovery", exit_status=2).record_fields()
            >>> fields["discovery_exit_status"], fields["tap_exit_status"]
            (2, None)
        """
        if description is None:
            description = f"Simulated {phase} failure (exit status {exit_status})"
        return cls(
            "failure",
            duration_seconds=duration_seconds,
            phase=phase,
            exit_status=exit_status,
            description=description,
            later_exit_status=_check_later(later_exit_status),
        )

    @classmethod
    def terminated(
        cls, duration_seconds: float | None = 1.0, description: str | None = None
    ) -> Outcome:
        """A job Stitch terminated: null exit statuses with a completion time.

        Args:
            duration_seconds: Run time before the termination.
            description: The description of all three phases; default null. Stitch's
                documented example uses `"Terminated"` (`TERMINATED`).

        Returns:
            The outcome.

        Examples:
            >>> from prefect_stitch.simulator import Outcome
            >>> Outcome.terminated().record_fields()["tap_description"] is None
            True
            >>> Outcome.terminated(description="Terminated").record_fields()["tap_description"]
            'Terminated'
        """
        return cls("terminated", duration_seconds=duration_seconds, description=description)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Outcome:
        """Build an outcome from its JSON form (as posted to the control API).

        `kind` may be `"success"`, `"failure"` (with `phase`), `"terminated"`, or a phase name
        as a shorthand for a failure of that phase. A missing `duration_seconds` means 1.0; an
        explicit null means "runs until finished or stopped". A success accepts `load_error`,
        `rows` (`{"stream": count}`) and `loads` (`{"stream": {"delay_seconds": ..., "error":
        ..., "never": ...}}`); a failure `exit_status`, `description` and `later_exit_status`
        (missing means `"auto"`); a termination `description`.

        Args:
            data: E.g. `{"kind": "failure", "phase": "tap", "exit_status": -9}`.

        Returns:
            The outcome.

        Raises:
            ValueError: On an unknown kind or invalid values.

        Examples:
            >>> from prefect_stitch.simulator import Outcome
            >>> Outcome.from_json({"kind": "tap", "exit_status": -9}).exit_status
            -9
            >>> Outcome.from_json({"kind": "discovery", "later_exit_status": 0}).later_exit_status
            0
        """
        kind = str(data.get("kind", "success"))
        raw_duration = data.get("duration_seconds", 1.0)
        duration = None if raw_duration is None else float(raw_duration)
        phase = kind if kind in PHASES else data.get("phase")
        if kind in PHASES:
            kind = "failure"
        if kind == "success":
            raw_rows = data.get("rows")
            raw_loads = data.get("loads") or {}
            if raw_rows is not None and not isinstance(raw_rows, Mapping):
                raise ValueError("rows must be an object of stream -> count")
            if not isinstance(raw_loads, Mapping):
                raise ValueError("loads must be an object of stream -> load")
            return cls.success(
                duration,
                load_error=data.get("load_error"),
                rows=None if raw_rows is None else {str(k): v for k, v in raw_rows.items()},
                loads={str(k): StreamLoad.from_json(v) for k, v in raw_loads.items()},
            )
        if kind == "terminated":
            return cls.terminated(duration, description=data.get("description"))
        if kind == "failure":
            if phase not in PHASES:
                raise ValueError(f"a failure needs a phase in {PHASES}")
            return cls.failure(
                cast(Phase, phase),
                exit_status=int(data.get("exit_status", 1)),
                description=data.get("description"),
                duration_seconds=duration,
                later_exit_status=_check_later(data.get("later_exit_status", "auto")),
            )
        raise ValueError(f"unknown outcome kind {kind!r}")

    def _later_status(self) -> int | None:
        if self.later_exit_status != "auto":
            return self.later_exit_status
        return 0 if self.phase == "tap" else None  # the target runs piped to the tap

    def record_fields(self) -> dict[str, Any]:
        """The six exit-status/description fields of a completed extraction record.

        Returns:
            `{"discovery_exit_status": ..., "discovery_description": ..., "tap_exit_status": ...}`.

        Examples:
            >>> from prefect_stitch.simulator import Outcome
            >>> Outcome.success().record_fields()["target_exit_status"]
            0
            >>> Outcome.failure("tap").record_fields()["target_exit_status"]
            0
        """
        fields: dict[str, Any] = {}
        failing = PHASES.index(self.phase) if self.phase in PHASES else len(PHASES)
        status: int | None
        description: str | None
        for index, phase in enumerate(PHASES):
            if self.kind == "terminated":
                status, description = None, self.description
            elif self.kind == "success" or index < failing:
                status, description = 0, None
            elif index == failing:
                status, description = self.exit_status, self.description
            else:
                status, description = self._later_status(), None
            fields[f"{phase}_exit_status"] = status
            fields[f"{phase}_description"] = description
        return fields

    def summary_line(self) -> str:
        """The last line of the job's log, in Stitch's "Exit status is: ..." form.

        Returns:
            E.g. `Exit status is: Discovery succeeded. Tap failed with code -9. Target succeeded.`

        Examples:
            >>> from prefect_stitch.simulator import Outcome
            >>> Outcome.success().summary_line()
            'Exit status is: Discovery succeeded. Tap succeeded. Target succeeded.'
            >>> Outcome.failure("discovery", exit_status=2).summary_line()
            'Exit status is: Discovery failed with code 2. Tap did not run. Target did not run.'
        """
        parts = []
        fields = self.record_fields()
        for phase in PHASES:
            status = fields[f"{phase}_exit_status"]
            if status is None:
                verb = "was terminated" if self.kind == "terminated" else "did not run"
                parts.append(f"{phase.capitalize()} {verb}.")
            elif status == 0:
                parts.append(f"{phase.capitalize()} succeeded.")
            else:
                parts.append(f"{phase.capitalize()} failed with code {status}.")
        return "Exit status is: " + " ".join(parts)

    def _streams_named(self) -> set[str]:
        return {stream for stream, _ in self.rows or ()} | {stream for stream, _ in self.loads}


_STOPPED = Outcome.terminated()  # a job stopped through DELETE /sync: null statuses and texts


_INTERCEPTING_FAULTS = frozenset({"status", "drop", "malformed_json", "wrong_shape"})


@dataclass(frozen=True)
class Fault:
    """A misbehaviour injected into the next request(s) to one endpoint.

    Build one with the class methods; queue it with `StitchSimulator.inject`.

    Attributes:
        kind: Which misbehaviour (`"status"`, `"drop"`, `"slow"`, `"malformed_json"`,
            `"wrong_shape"`, `"start_then_drop"`, `"mutate"`).
        code: HTTP status of a `status` fault.
        body: Body of a `status` fault (dict → JSON, str → text/html, None → a JSON error
            body fitting the code) or of a `wrong_shape` fault (None → a default per endpoint).
        headers: Extra response headers of a `status` fault.
        seconds: Delay of a `slow` fault.
        fn: Callback of a `mutate` fault, called with the simulator under its lock.

    Examples:
        >>> from prefect_stitch.simulator import Fault
        >>> Fault.status(502, body="<html>Bad Gateway</html>").code
        502
    """

    kind: FaultKind
    code: int | None = None
    body: Any = field(default=None, hash=False)
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    fn: Callable[[StitchSimulator], None] | None = field(default=None, hash=False, compare=False)

    @property
    def intercepts(self) -> bool:
        """Whether the fault replaces the answer (the request never reaches the API logic).

        Examples:
            >>> from prefect_stitch.simulator import Fault
            >>> Fault.drop().intercepts, Fault.slow(0.1).intercepts
            (True, False)
        """
        return self.kind in _INTERCEPTING_FAULTS

    @classmethod
    def status(
        cls,
        code: int,
        body: dict[str, Any] | list[Any] | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """Answer with HTTP `code` instead of processing the request.

        Args:
            code: HTTP status code (200-599).
            body: A dict/list is sent as JSON, a str as `text/html`, None as a JSON error body
                `{"error": {"type": ..., "message": ...}}` fitting the code.
            headers: Extra response headers, e.g. `{"Retry-After": "2"}`.

        Returns:
            The fault.

        Raises:
            ValueError: If `code` is outside 200-599.

        Examples:
            >>> from prefect_stitch.simulator import Fault
            >>> Fault.status(429, headers={"Retry-After": "1"}).headers
            (('Retry-After', '1'),)
        """
        if not 200 <= code <= 599:
            raise ValueError("code must be an HTTP status between 200 and 599")
        return cls("status", code=code, body=body, headers=tuple((headers or {}).items()))

    @classmethod
    def drop(cls) -> Fault:
        """Read the request, then close the connection without any response.

        Returns:
            The fault.

        Examples:
            >>> from prefect_stitch.simulator import Fault
            >>> Fault.drop().kind
            'drop'
        """
        return cls("drop")

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """Wait `seconds`, then answer normally (for client timeouts).

        Args:
            seconds: The delay.

        Returns:
            The fault.

        Examples:
            >>> from prefect_stitch.simulator import Fault
            >>> Fault.slow(0.5).seconds
            0.5
        """
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return cls("slow", seconds=float(seconds))

    @classmethod
    def malformed_json(cls) -> Fault:
        """Answer 200 with a JSON content type and a truncated body (`{"data": [`).

        Returns:
            The fault.

        Examples:
            >>> from prefect_stitch.simulator import Fault
            >>> Fault.malformed_json().kind
            'malformed_json'
        """
        return cls("malformed_json")

    @classmethod
    def wrong_shape(cls, body: dict[str, Any] | list[Any] | None = None) -> Fault:
        """Answer 200 with valid JSON of the wrong shape.

        Args:
            body: The JSON to send; by default `[1, 2]` where an array is expected
                (`list_sources`) and `{"unexpected": [1, 2]}` everywhere else.

        Returns:
            The fault.

        Examples:
            >>> from prefect_stitch.simulator import Fault
            >>> Fault.wrong_shape().kind
            'wrong_shape'
        """
        return cls("wrong_shape", body=body)

    @classmethod
    def start_then_drop(cls) -> Fault:
        """Process the request for real (a trigger starts its job), then drop the connection.

        The client never learns the job name. On other endpoints the request also takes effect
        before the connection drops.

        Returns:
            The fault.

        Examples:
            >>> from prefect_stitch.simulator import Fault
            >>> Fault.start_then_drop().kind
            'start_then_drop'
        """
        return cls("start_then_drop")

    @classmethod
    def mutate(cls, fn: Callable[[StitchSimulator], None]) -> Fault:
        """Answer normally, then call `fn(sim)` under the simulator's lock.

        The answer is computed first; `fn` runs before the answer is sent, so the client's next
        request always sees the change (e.g. records moved between pages mid-pagination).

        Args:
            fn: Callback receiving the simulator.

        Returns:
            The fault.

        Examples:
            >>> from prefect_stitch.simulator import Fault
            >>> Fault.mutate(lambda sim: sim.add_source(99)).kind
            'mutate'
        """
        return cls("mutate", fn=fn)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        """Build a fault from its JSON form (as posted to the control API).

        Args:
            data: E.g. `{"kind": "status", "code": 500}` or `{"kind": "slow", "seconds": 2}`.

        Returns:
            The fault.

        Raises:
            ValueError: On an unknown kind, or `mutate` (a callback cannot travel as JSON).

        Examples:
            >>> from prefect_stitch.simulator import Fault
            >>> Fault.from_json({"kind": "status", "code": 503}).code
            503
        """
        kind = data.get("kind")
        if kind == "status":
            return cls.status(int(data["code"]), body=data.get("body"), headers=data.get("headers"))
        if kind == "slow":
            return cls.slow(float(data.get("seconds", 1.0)))
        if kind == "wrong_shape":
            return cls.wrong_shape(data.get("body"))
        if kind in ("drop", "malformed_json", "start_then_drop"):
            return cls(cast(FaultKind, kind))
        raise ValueError(f"unknown or unsupported fault kind {kind!r}")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the simulator received (faulted and rejected ones too).

    The access token never appears here: the `authorization` header reads `"Bearer ***"` and any
    other occurrence of the token is replaced by `***`.

    Attributes:
        method: HTTP method.
        path: URL path, without the query string.
        query: Query parameters (last value wins).
        endpoint: Endpoint name, e.g. `"trigger"` or `"extractions"`.
        status: HTTP status sent, or None when the connection was dropped.
        fault: Kind of the fault applied, if any.
        authorization_present: Whether an Authorization header was sent.
        authorization_valid: Whether it was exactly `Bearer <token>`.
        at: `time.monotonic()` at arrival.
        wall: `time.time()` at arrival.
        headers: Request headers with lower-case names, token masked.

    Examples:
        >>> from prefect_stitch.simulator import StitchSimulator
        >>> import urllib.request
        >>> with StitchSimulator() as sim:
        ...     _ = urllib.request.urlopen(sim.base_url + "/_simulator/jobs")
        ...     sim.requests  # the control API is not recorded
        []
    """

    method: str
    path: str
    query: dict[str, str] = field(hash=False)
    endpoint: str
    status: int | None
    fault: str | None
    authorization_present: bool
    authorization_valid: bool
    at: float
    wall: float
    headers: dict[str, str] = field(hash=False)

    def as_dict(self) -> dict[str, Any]:
        """The request as a JSON-ready dict (what `GET /_simulator/requests` returns).

        Returns:
            A dict of all fields.

        Examples:
            >>> from prefect_stitch.simulator import RecordedRequest
            >>> r = RecordedRequest("GET", "/v4/sources", {}, "list_sources", 200, None,
            ...                     True, True, 0.0, 0.0, {})
            >>> r.as_dict()["endpoint"]
            'list_sources'
        """
        return {
            "method": self.method,
            "path": self.path,
            "query": dict(self.query),
            "endpoint": self.endpoint,
            "status": self.status,
            "fault": self.fault,
            "authorization_present": self.authorization_present,
            "authorization_valid": self.authorization_valid,
            "at": self.at,
            "wall": self.wall,
            "headers": dict(self.headers),
        }


@dataclass
class _Source:
    source_id: int
    name: str
    display_name: str
    type: str
    created_at: float
    updated_at: float
    paused_at: float | None
    deleted_at: float | None
    outcomes: list[Outcome]
    streams: tuple[str, ...]
    selection: dict[str, bool | None]  # stream -> selected (None: never selected)
    stream_ids: dict[str, int]
    log_lines: int
    log_line_bytes: int | None
    check_job_name: str
    next_outcome: int = 0

    def take_outcome(self) -> Outcome:
        outcome = self.outcomes[min(self.next_outcome, len(self.outcomes) - 1)]
        self.next_outcome += 1
        return outcome

    def check_outcome(self, outcome: Outcome) -> None:
        unknown = outcome._streams_named() - set(self.streams)
        if unknown:
            raise ValueError(
                f"outcome names streams {sorted(unknown)} that source {self.source_id} does not"
                f" have (its streams: {list(self.streams)})"
            )

    def stream_rows(self, outcome: Outcome) -> list[tuple[str, int]]:
        """The selected streams that receive rows in a job with this outcome, in stream order."""
        if outcome.kind != "success":
            return []
        selected = [stream for stream in self.streams if self.selection[stream]]
        if outcome.rows is None:
            return [(stream, 100 * (index + 1)) for index, stream in enumerate(selected)]
        counts = dict(outcome.rows)
        return [(stream, counts[stream]) for stream in selected if counts.get(stream, 0) > 0]


@dataclass
class _Job:
    job_name: str
    source_id: int
    outcome: Outcome
    started_at: float
    triggered_via: TriggeredVia
    completed_at: float | None = None
    stopped: bool = False  # ended by a stop request (DELETE /sync)
    stop_requested_at: float | None = None
    stop_effective_at: float | None = None

    @property
    def final_outcome(self) -> Outcome:
        return _STOPPED if self.stopped else self.outcome

    def due(self) -> tuple[float, bool] | None:
        """When the running job ends on its own, and whether that end is a stop."""
        duration = self.outcome.duration_seconds
        natural = None if duration is None else self.started_at + duration
        stop = self.stop_effective_at
        if stop is not None and (natural is None or stop < natural):
            return stop, True
        return None if natural is None else (natural, False)

    def final_fields(self) -> dict[str, Any]:
        if self.completed_at is None:
            return {f"{p}_{s}": None for p in PHASES for s in ("exit_status", "description")}
        return self.final_outcome.record_fields()

    @property
    def succeeded(self) -> bool:
        return self.completed_at is not None and self.final_outcome.kind == "success"

    def as_dict(self) -> dict[str, Any]:
        outcome = self.final_outcome
        return {
            "job_name": self.job_name,
            "source_id": self.source_id,
            "outcome": outcome.kind,
            "phase": outcome.phase,
            "exit_status": outcome.exit_status,
            "started_at": iso(self.started_at),
            "completed_at": None if self.completed_at is None else iso(self.completed_at),
            "running": self.completed_at is None,
            "stopped": self.stopped,
            "stop_requested_at": (
                None if self.stop_requested_at is None else iso(self.stop_requested_at)
            ),
            "triggered_via": self.triggered_via,
        }


@dataclass(frozen=True)
class _Attempt:
    """A start Stitch's scheduler will try at `at` (skipped if the source is busy or paused)."""

    at: float
    source_id: int
    outcome: Outcome | None
    seq: int


@dataclass(frozen=True)
class _AfterHook:
    outcome: Outcome | None
    gap_seconds: float


@dataclass(frozen=True)
class _LoadAttempt:
    at: float
    error: str | None


@dataclass(frozen=True)
class _LogPlan:
    """Everything a job's log is made of, snapshotted so it can be generated lazily."""

    job_name: str
    started_at: float
    ended_at: float
    done: bool
    log_lines: int
    line_bytes: int | None
    stream_rows: tuple[tuple[str, int], ...]
    failure: tuple[str, str] | None  # the failing phase and its description
    summary: str

    def lines(self) -> Iterator[str]:
        """The log's lines, each ending with a line break, generated one at a time."""
        rows = self.stream_rows if self.done else ()
        ending = (1 + (self.failure is not None)) if self.done else 0  # failure, summary
        fixed = 1 + 2 * len(rows) + ending
        total = max(self.log_lines, fixed) if self.done else self.log_lines
        fillers = total - fixed
        layout: list[tuple[str, Any, int]] = [("start", None, 1)]
        layout.append(("filler", None, fillers - fillers // 2))
        layout.extend(("tap", item, 1) for item in rows)
        layout.append(("filler", None, fillers // 2))
        layout.extend(("target", item, 1) for item in rows)
        if self.done and self.failure:
            layout.append(("failure", None, 1))
        if self.done:
            layout.append(("summary", None, 1))
        stamp = _Stamper(self.started_at, self.ended_at, total)
        index = 0
        for kind, item, count in layout:
            for _ in range(count):
                index += 1
                yield stamp(index) + " " + self._message(kind, item, index, total) + "\n"

    def _message(self, kind: str, item: Any, index: int, total: int) -> str:
        if kind == "start":
            return f"main - INFO [line {index}/{total}] Starting extraction job {self.job_name}"
        if kind == "filler":
            message = f"tap - INFO [line {index}/{total}] State update: page {index} synced"
            if self.line_bytes is not None:
                padding = self.line_bytes - len(message) - 27  # stamp, space, pad space, \n
                if padding > 0:
                    message += " " + "." * padding
            return message
        if kind == "tap":
            return f'tap - INFO replicated {item[1]} records from "{item[0]}" endpoint'
        if kind == "target":
            return f"target - INFO {_TARGET_FLUSH} {item[0]}"
        if kind == "failure" and self.failure is not None:
            phase, description = self.failure
            return f"{phase} - CRITICAL [line {index}/{total}] {description}"
        return f"main - INFO {self.summary}"

    def chunks(self, size: int = _LOG_CHUNK_BYTES) -> Iterator[bytes]:
        """The log as UTF-8 byte chunks of about `size` bytes, generated lazily."""
        buffer: list[str] = []
        held = 0
        for line in self.lines():
            buffer.append(line)
            held += len(line)
            if held >= size:
                yield "".join(buffer).encode()
                buffer, held = [], 0
        if buffer:
            yield "".join(buffer).encode()


class _Stamper:
    """Log-line timestamps spread evenly over a job's run (`YYYY-MM-DD HH:MM:SS,mmmZ`)."""

    def __init__(self, start: float, end: float, total: int) -> None:
        self.start = start
        self.step = (end - start) / max(total, 1)
        self._second = -1
        self._prefix = ""

    def __call__(self, index: int) -> str:
        millis = math.floor((self.start + self.step * index) * 1000)
        second, milli = divmod(millis, 1000)
        if second != self._second:
            self._second = second
            moment = datetime.fromtimestamp(second, tz=UTC)
            self._prefix = moment.strftime("%Y-%m-%d %H:%M:%S")
        return f"{self._prefix},{milli:03d}Z"


class SimulatorState:
    """State and Stitch semantics of the simulator, without the HTTP layer.

    `StitchSimulator` inherits every method documented here; use that class.

    Configuration attributes (`page_size`, `jobs_rate_limit`, `jobs_rate_period_seconds`,
    `enforce_rate_limit`, `list_running_jobs`, `stop_when_idle_status`, `tap_field`,
    `clock_offset_seconds`, `stop_delay_seconds`) are plain attributes and may be changed at
    any time. Moving `clock_offset_seconds` forward makes simulated time pass at once: the
    next request settles every job, stop, scheduled start and load that fell due meanwhile.

    Args:
        token: The access token the API accepts (`Authorization: Bearer <token>`).
        client_id: The Stitch client (account) ID of the token.
        page_size: Records per page of the extractions and loads lists.
        jobs_rate_limit: Jobs requests allowed per sliding window.
        jobs_rate_period_seconds: Length of the sliding window.
        enforce_rate_limit: Answer 429 with `Retry-After` when the window is full.
        list_running_jobs: List a running job (null statuses and completion time) in the
            extractions list instead of the source's previous record (an undocumented variant).
        stop_when_idle_status: HTTP status of a stop request when nothing runs (200 or 404).
        tap_field: Name of the tap field of extraction records (`"source_type"` or `"tap_name"`).
        clock_offset_seconds: Added to the wall clock to give Stitch's clock (`now()`).
        stop_delay_seconds: Time between a stop request (answered 200 at once) and the job
            actually ending as terminated; until then it still runs.

    Examples:
        >>> from prefect_stitch.simulator import StitchSimulator
        >>> sim = StitchSimulator(page_size=10, stop_delay_seconds=2)
        >>> sim.page_size, sim.stop_delay_seconds
        (10, 2.0)
    """

    def __init__(
        self,
        *,
        token: str = "sim-token",  # noqa: S107 - the simulator's well-known test token
        client_id: int = 116078,
        page_size: int = 100,
        jobs_rate_limit: int = 30,
        jobs_rate_period_seconds: float = 600.0,
        enforce_rate_limit: bool = False,
        list_running_jobs: bool = False,
        stop_when_idle_status: int = 200,
        tap_field: str = "source_type",
        clock_offset_seconds: float = 0.0,
        stop_delay_seconds: float = 0.0,
    ) -> None:
        if not token:
            raise ValueError("token must not be empty")
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        if jobs_rate_limit < 1 or jobs_rate_period_seconds <= 0:
            raise ValueError("jobs_rate_limit must be >= 1 and jobs_rate_period_seconds > 0")
        if not stop_delay_seconds >= 0:
            raise ValueError("stop_delay_seconds must be >= 0")
        self._token = token
        self._client_id = int(client_id)
        self.page_size = page_size
        self.jobs_rate_limit = jobs_rate_limit
        self.jobs_rate_period_seconds = float(jobs_rate_period_seconds)
        self.enforce_rate_limit = enforce_rate_limit
        self.list_running_jobs = list_running_jobs
        self.stop_when_idle_status = stop_when_idle_status
        self.tap_field = tap_field
        self.clock_offset_seconds = float(clock_offset_seconds)
        self.stop_delay_seconds = float(stop_delay_seconds)
        self._lock = threading.RLock()
        self._clear()

    def _clear(self) -> None:
        self._sources: dict[int, _Source] = {}
        self._jobs: dict[str, _Job] = {}  # insertion order = start order
        self._running: dict[int, _Job] = {}
        self._listed: dict[int, _Job] = {}  # the source's last completed (or seeded) job
        self._attempts: list[_Attempt] = []  # the scheduler's pending starts
        self._attempt_seq = 0
        self._after_hooks: dict[int, list[_AfterHook]] = {}
        self._skips: dict[int, int] = {}
        self._loads: dict[tuple[int, str], _LoadAttempt] = {}  # latest landed attempt
        self._pending_loads: list[tuple[int, str, _LoadAttempt]] = []  # not landed yet
        self._next_stream_id = _FIRST_STREAM_ID
        self._next_destination_id = _FIRST_DESTINATION_ID
        self._destination: dict[str, Any] | None = None
        self._faults: dict[str, deque[Fault]] = {}
        self._requests: list[RecordedRequest] = []
        self._jobs_arrivals: list[float] = []
        self._jobs_accepted: deque[float] = deque()
        self._violations = 0
        self._log_tokens: dict[str, str] = {}
        self.set_destination()

    # -- read-only identity -------------------------------------------------------------------

    @property
    def token(self) -> str:
        """The access token the simulated API accepts.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> StitchSimulator(token="t0k3n").token
            't0k3n'
        """
        return self._token

    @property
    def client_id(self) -> int:
        """The Stitch client (account) ID the token belongs to.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> StitchSimulator(client_id=42).client_id
            42
        """
        return self._client_id

    def now(self) -> float:
        """Stitch's clock: `time.time() + clock_offset_seconds`.

        Every timestamp the simulator emits comes from it, including the `Date` header.

        Returns:
            Seconds since the epoch.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator(clock_offset_seconds=-3600)
            >>> sim.now() < __import__("time").time() - 3000
            True
        """
        return time.time() + self.clock_offset_seconds

    # -- sources ------------------------------------------------------------------------------

    def add_source(
        self,
        source_id: int,
        *,
        name: str | None = None,
        display_name: str | None = None,
        type: str = "platform.hubspot",  # Stitch's own field name
        outcomes: Sequence[Outcome] | None = None,
        paused: bool = False,
        deleted: bool = False,
        streams: Sequence[str] = ("accounts", "contacts"),
        selected: Sequence[str] | None = None,
        deselected: Sequence[str] = (),
        log_lines: int = 20,
        log_line_bytes: int | None = None,
    ) -> dict[str, Any]:
        """Add a source (Stitch "integration") that jobs can be started for.

        Args:
            source_id: The integer source ID.
            name: Lowercase schema name (the loads' `source_name`); default `<tap>_<id>`.
            display_name: Human name; default `"<Tap> <id>"`.
            type: Source type, e.g. `"platform.hubspot"`; gives the tap name `tap-hubspot`.
            outcomes: Outcomes consumed one per started job; the last one repeats. Default
                `[Outcome.success(duration_seconds=1.0)]`.
            paused: Whether the source is paused (manual starts still work; Stitch's scheduler
                starts nothing).
            deleted: Whether the source is deleted (starts fail with 400).
            streams: Stream names, in the order `GET /v4/sources/{id}/streams` lists them.
            selected: The streams selected for replication (`"selected": true`); default all
                but `deselected`. Only selected streams receive rows and loads.
            deselected: Streams de-selected (`"selected": false`). A stream in neither list
                was never selected: Stitch reports `"selected": null`.
            log_lines: Number of lines of each job's log (more if the stream and summary lines
                need the room).
            log_line_bytes: Pad the log's filler lines to this many bytes each (for big logs).

        Returns:
            The Source object, as `GET /v4/sources/{id}` returns it.

        Raises:
            ValueError: If the source already exists, `outcomes` is empty, a selection names an
                unknown stream, or an outcome names a stream the source does not have.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator, Outcome
            >>> sim = StitchSimulator()
            >>> sim.add_source(1001, outcomes=[Outcome.failure("tap")])["name"]
            'hubspot_1001'
        """
        outcome_list = list(outcomes) if outcomes is not None else [Outcome.success()]
        if not outcome_list:
            raise ValueError("outcomes must not be empty")
        source_id = int(source_id)
        stream_names = tuple(streams)
        if isinstance(streams, str) or len(set(stream_names)) != len(stream_names):
            raise ValueError("streams must be a sequence of distinct stream names")
        chosen = set(stream_names) - set(deselected) if selected is None else set(selected)
        dropped = set(deselected)
        unknown = (chosen | dropped) - set(stream_names)
        if unknown or chosen & dropped:
            raise ValueError(
                f"selected/deselected must be disjoint subsets of the streams {stream_names}"
            )
        if log_line_bytes is not None and log_line_bytes < 1:
            raise ValueError("log_line_bytes must be >= 1 or None")
        short = type.rsplit(".", 1)[-1]
        with self._lock:
            if source_id in self._sources:
                raise ValueError(f"source {source_id} already exists")
            self._settle()
            now = self.now()
            src = _Source(
                source_id=source_id,
                name=name if name is not None else f"{short.lower()}_{source_id}",
                display_name=display_name or f"{short.capitalize()} {source_id}",
                type=type,
                created_at=now,
                updated_at=now,
                paused_at=now if paused else None,
                deleted_at=now if deleted else None,
                outcomes=outcome_list,
                streams=stream_names,
                selection={
                    s: True if s in chosen else False if s in dropped else None
                    for s in stream_names
                },
                stream_ids={},
                log_lines=max(1, int(log_lines)),
                log_line_bytes=None if log_line_bytes is None else int(log_line_bytes),
                check_job_name=f"{self._client_id}.{source_id}.check.{uuid.uuid4()}",
            )
            for outcome in outcome_list:
                src.check_outcome(outcome)
            for stream in stream_names:
                src.stream_ids[stream] = self._next_stream_id
                self._next_stream_id += 1
            self._sources[source_id] = src
            return self._source_object(src)

    def add_sources(self, source_ids: Iterable[int], **kwargs: Any) -> list[dict[str, Any]]:
        """Add many sources at once, all with the same options.

        Args:
            source_ids: The source IDs, e.g. `range(1, 151)`.
            **kwargs: Keyword arguments of `add_source` (not `name`/`display_name`).

        Returns:
            The Source objects.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> len(StitchSimulator().add_sources(range(1, 151)))
            150
        """
        with self._lock:
            return [self.add_source(source_id, **kwargs) for source_id in source_ids]

    def set_outcomes(self, source_id: int, outcomes: Sequence[Outcome]) -> None:
        """Replace a source's outcomes; the next started job takes the first one.

        Args:
            source_id: The source.
            outcomes: The new outcome sequence (the last one repeats).

        Raises:
            KeyError: If the source is unknown.
            ValueError: If `outcomes` is empty or names a stream the source does not have.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator, Outcome
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1)
            >>> sim.set_outcomes(1, [Outcome.terminated(0.1)])
        """
        if not outcomes:
            raise ValueError("outcomes must not be empty")
        with self._lock:
            self._settle()
            src = self._get_source(source_id)
            for outcome in outcomes:
                src.check_outcome(outcome)
            src.outcomes = list(outcomes)
            src.next_outcome = 0

    def source(self, source_id: int) -> dict[str, Any]:
        """The Source object of one source, as the API returns it.

        Args:
            source_id: The source.

        Returns:
            The Source object.

        Raises:
            KeyError: If the source is unknown.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(7, paused=True)
            >>> sim.source(7)["schedule"] is None
            True
        """
        with self._lock:
            self._settle()
            return self._source_object(self._get_source(source_id))

    def streams(self, source_id: int) -> list[dict[str, Any]]:
        """The Stream objects of one source, as `GET /v4/sources/{id}/streams` returns them.

        Args:
            source_id: The source.

        Returns:
            One `{"stream_id", "selected", "stream_name", "tap_stream_id", "metadata"}` per
            stream; `selected` is true, false (de-selected) or null (never selected), and
            `metadata` is the stream-level metadata object.

        Raises:
            KeyError: If the source is unknown.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1, streams=("orders", "refunds"), selected=["orders"])
            >>> [(s["stream_name"], s["selected"]) for s in sim.streams(1)]
            [('orders', True), ('refunds', None)]
        """
        with self._lock:
            src = self._get_source(source_id)
            return [
                {
                    "stream_id": src.stream_ids[stream],
                    "selected": src.selection[stream],
                    "stream_name": stream,
                    "tap_stream_id": stream,
                    "metadata": {
                        "selected": src.selection[stream],
                        "forced-replication-method": "INCREMENTAL",
                        "table-key-properties": ["id"],
                        "valid-replication-keys": ["updated_at"],
                    },
                }
                for stream in src.streams
            ]

    # -- destination --------------------------------------------------------------------------

    def set_destination(
        self, type: str = "postgres", database: str = "analytics", **properties: Any
    ) -> dict[str, Any]:
        """Configure the account's one destination (what `GET /v4/destinations` lists).

        A destination that already exists is updated in place (same `id`); otherwise a new one
        is created. As in Stitch's v4 API, the connection settings are the `properties`
        object (v3 called it `connection`), with scalar values as strings (`"port": "5432"`).

        Args:
            type: Destination type, e.g. `"postgres"`, `"snowflake"`, `"redshift"`.
            database: The database name.
            **properties: More connection properties (`host`, `port`, `username`, `name` for
                the destination's name, ...).

        Returns:
            The Destination object.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator()
            >>> sim.set_destination("snowflake", database="raw", port=443)["properties"]["port"]
            '443'
        """
        name = str(properties.pop("name", "Default Warehouse"))
        values: dict[str, Any] = {
            "database": database,
            "encryption_type": "none",
            "host": f"{type}.warehouse.example.com",
            "port": "5432" if type == "postgres" else "443",
            "ssl": "true",
            "username": "stitch",
        }
        for key, value in properties.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, int | float):
                value = str(value)
            values[key] = value
        with self._lock:
            now = self.now()
            current = self._destination
            if current is None:
                destination_id = self._next_destination_id
                self._next_destination_id += 1
                created = iso(now)
            else:
                destination_id, created = current["id"], current["created_at"]
            self._destination = {
                "id": destination_id,
                "name": name,
                "display_name": None,
                "type": type,
                "stitch_client_id": self._client_id,
                "created_at": created,
                "updated_at": iso(now),
                "paused_at": None,
                "system_paused_at": None,
                "deleted_at": None,
                "properties": dict(sorted(values.items())),
                "report_card": {
                    "type": type,
                    "current_step": 2,
                    "current_step_type": "fully_configured",
                    "steps": [
                        {"type": "form", "properties": []},
                        {"type": "fully_configured", "properties": []},
                    ],
                },
            }
            return dict(self._destination)

    def remove_destination(self) -> None:
        """Remove the destination: `GET /v4/destinations` then returns `[]`.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator()
            >>> sim.remove_destination()
            >>> sim.destinations()
            []
        """
        with self._lock:
            self._destination = None

    def destinations(self) -> list[dict[str, Any]]:
        """The Destination objects, as `GET /v4/destinations` returns them (zero or one).

        Returns:
            The list.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> [(d["type"], d["properties"]["database"]) for d in StitchSimulator().destinations()]
            [('postgres', 'analytics')]
        """
        with self._lock:
            return [] if self._destination is None else [dict(self._destination)]

    # -- jobs ---------------------------------------------------------------------------------

    def seed_completed(
        self,
        source_id: int,
        outcome: Outcome | None = None,
        *,
        started_ago_seconds: float = 3600,
        duration_seconds: float = 60,
        job_name: str | None = None,
    ) -> str:
        """Add a past completed job; it becomes the source's listed extraction record.

        A successful seeded job also loads its streams (at its completion plus each stream's
        delay, see `Outcome.success`).

        Args:
            source_id: The source.
            outcome: How it ended; default `Outcome.success()` (its duration is ignored).
            started_ago_seconds: How long ago it started.
            duration_seconds: How long it ran (completion is clamped to "now").
            job_name: Its name; default `<client>.<source>.sync.<uuid4>`.

        Returns:
            The job name.

        Raises:
            KeyError: If the source is unknown.
            ValueError: If the job name is already taken.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator(client_id=5)
            >>> _ = sim.add_source(1)
            >>> sim.seed_completed(1).startswith("5.1.sync.")
            True
        """
        with self._lock:
            self._settle()
            src = self._get_source(source_id)
            outcome = outcome or Outcome.success()
            src.check_outcome(outcome)
            now = self.now()
            name = job_name or self._new_job_name(src.source_id)
            if name in self._jobs:
                raise ValueError(f"job name {name!r} already exists")
            started = now - started_ago_seconds
            job = _Job(
                job_name=name,
                source_id=src.source_id,
                outcome=outcome,
                started_at=started,
                triggered_via="seed",
            )
            self._jobs[name] = job
            self._complete(job, min(now, started + duration_seconds), stopped=False)
            self._settle()
            return name

    def seed_load(
        self,
        source_id: int,
        stream: str,
        *,
        loaded_ago_seconds: float = 3600,
        error: str | None = None,
    ) -> None:
        """Set a stream's previous load record (what `/loads` shows until a new attempt lands).

        Args:
            source_id: The source.
            stream: One of its streams.
            loaded_ago_seconds: How long ago the attempt happened.
            error: An error message: the record is an old error (`error_state` set,
                `last_batch_loaded_at` null) instead of an old success.

        Raises:
            KeyError: If the source is unknown.
            ValueError: If the source has no such stream.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1)
            >>> sim.seed_load(1, "accounts", error="disk full")
        """
        with self._lock:
            self._settle()
            src = self._get_source(source_id)
            if stream not in src.streams:
                raise ValueError(f"source {source_id} has no stream {stream!r}")
            attempt = _LoadAttempt(at=self.now() - loaded_ago_seconds, error=error)
            self._loads[src.source_id, stream] = attempt

    def start_job(self, source_id: int, outcome: Outcome | None = None) -> str:
        """Start a job now, as Stitch's own scheduler would (not through the API).

        Use it for "a job is already running" scenarios.

        Args:
            source_id: The source.
            outcome: How this job ends; default the source's next outcome. An explicit outcome
                does not consume the source's outcome list.

        Returns:
            The job name.

        Raises:
            KeyError: If the source is unknown.
            RuntimeError: If a job is already running or the source is deleted.
            ValueError: If the outcome names a stream the source does not have.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator, Outcome
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1, outcomes=[Outcome.success(None)])
            >>> sim.start_job(1) == sim.running_job(1)["job_name"]
            True
        """
        with self._lock:
            self._settle()
            src = self._get_source(source_id)
            if outcome is not None:
                src.check_outcome(outcome)
            if src.deleted_at is not None:
                raise RuntimeError(f"source {source_id} is deleted")
            if src.source_id in self._running:
                raise RuntimeError(f"a job is already running for source {source_id}")
            return self._start(src, "scheduler", self.now(), outcome).job_name

    def schedule_job(
        self, source_id: int, *, in_seconds: float = 0.0, outcome: Outcome | None = None
    ) -> None:
        """Have Stitch's scheduler try to start a job `in_seconds` from now (Stitch's clock).

        The attempt is made when that moment comes (lazily, with its exact time). It is
        skipped, and counted in `scheduled_skips`, if a job of the source is running at that
        moment, or the source is paused or deleted then (Stitch's scheduler does not start jobs
        of paused sources).

        Args:
            source_id: The source.
            in_seconds: Delay from now, >= 0.
            outcome: How the job ends; default the source's next outcome when it starts.

        Raises:
            KeyError: If the source is unknown.
            ValueError: If `in_seconds` is negative or the outcome names an unknown stream.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1)
            >>> sim.schedule_job(1)
            >>> sim.jobs(1)[0]["triggered_via"]
            'scheduler'
        """
        if not in_seconds >= 0:
            raise ValueError("in_seconds must be >= 0")
        with self._lock:
            self._settle()
            src = self._get_source(source_id)
            if outcome is not None:
                src.check_outcome(outcome)
            self._add_attempt(self.now() + in_seconds, src.source_id, outcome)
            self._settle()

    def run_after_current(
        self, source_id: int, *, outcome: Outcome | None = None, gap_seconds: float = 0.0
    ) -> None:
        """When the source's current or next job completes, have the scheduler start another.

        The job that completes may be the one running now, or, if none runs, the next one to
        start (by the API, e.g. the job a client is about to trigger, or by the scheduler). The
        scheduler then tries a start `gap_seconds` after that completion, skipped like any
        `schedule_job` attempt if the source is busy or paused then. With a short outcome the
        new job starts and ends between two polls and replaces the previous record in the
        extractions list (Stitch keeps one record per source). One-shot.

        Args:
            source_id: The source.
            outcome: How the new job ends; default the source's next outcome when it starts.
            gap_seconds: Time from the completion to the new start, >= 0.

        Raises:
            KeyError: If the source is unknown.
            ValueError: If `gap_seconds` is negative or the outcome names an unknown stream.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator, Outcome
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1, outcomes=[Outcome.success(None)])
            >>> _ = sim.start_job(1)
            >>> sim.run_after_current(1, outcome=Outcome.success(None))
            >>> sim.finish_job(1)
            >>> [job["running"] for job in sim.jobs(1)]
            [False, True]
        """
        if not gap_seconds >= 0:
            raise ValueError("gap_seconds must be >= 0")
        with self._lock:
            self._settle()
            src = self._get_source(source_id)
            if outcome is not None:
                src.check_outcome(outcome)
            hooks = self._after_hooks.setdefault(src.source_id, [])
            hooks.append(_AfterHook(outcome, float(gap_seconds)))

    def scheduled_skips(self, source_id: int) -> int:
        """How many of the scheduler's start attempts for the source were skipped.

        An attempt is skipped when a job of the source is running at its moment, or the source
        is paused or deleted then.

        Args:
            source_id: The source.

        Returns:
            The count.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator, Outcome
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1, outcomes=[Outcome.success(None)])
            >>> _ = sim.start_job(1)
            >>> sim.schedule_job(1)
            >>> sim.scheduled_skips(1)
            1
        """
        with self._lock:
            self._settle()
            return self._skips.get(int(source_id), 0)

    def finish_job(self, source_id: int) -> None:
        """Complete the source's running job now, with its outcome.

        Needed for outcomes with `duration_seconds=None`, which run until finished or stopped.

        Args:
            source_id: The source.

        Raises:
            KeyError: If the source is unknown.
            RuntimeError: If no job is running.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator, Outcome
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1, outcomes=[Outcome.success(None)])
            >>> _ = sim.start_job(1)
            >>> sim.finish_job(1)
            >>> sim.running_job(1) is None
            True
        """
        with self._lock:
            self._settle()
            src = self._get_source(source_id)
            job = self._running.get(src.source_id)
            if job is None:
                raise RuntimeError(f"no job is running for source {source_id}")
            self._complete(job, max(self.now(), job.started_at), stopped=False)
            self._settle()

    def running_job(self, source_id: int) -> dict[str, Any] | None:
        """The source's running job, or None.

        Args:
            source_id: The source.

        Returns:
            A job dict (see `jobs`) or None.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1)
            >>> sim.running_job(1) is None
            True
        """
        with self._lock:
            self._settle()
            job = self._running.get(int(source_id))
            return None if job is None else job.as_dict()

    def jobs(self, source_id: int | None = None) -> list[dict[str, Any]]:
        """Every job ever started or seeded, oldest first.

        Args:
            source_id: Only this source's jobs.

        Returns:
            Dicts with `job_name`, `source_id`, `outcome` (kind; `"terminated"` for a stopped
            job), `phase`, `exit_status`, `started_at`, `completed_at`, `running`, `stopped`,
            `stop_requested_at` and `triggered_via` (`"api"`, `"scheduler"` or `"seed"`).

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1)
            >>> _ = sim.seed_completed(1)
            >>> sim.jobs(1)[0]["triggered_via"]
            'seed'
        """
        with self._lock:
            self._settle()
            return [
                job.as_dict()
                for job in self._jobs.values()
                if source_id is None or job.source_id == int(source_id)
            ]

    def jobs_started(self, source_id: int | None = None) -> list[str]:
        """Names of the jobs started through `POST /v4/sources/{id}/sync`, oldest first.

        Args:
            source_id: Only this source's jobs.

        Returns:
            Job names (seeded and scheduler jobs excluded).

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1)
            >>> _ = sim.start_job(1)
            >>> sim.jobs_started()
            []
        """
        with self._lock:
            return [
                job.job_name
                for job in self._jobs.values()
                if job.triggered_via == "api"
                and (source_id is None or job.source_id == int(source_id))
            ]

    # -- faults, request log, rate window -----------------------------------------------------

    def inject(self, endpoint: str, fault: Fault, times: int = 1) -> None:
        """Give the next `times` requests to `endpoint` the `fault` (FIFO queue per endpoint).

        Args:
            endpoint: An endpoint name, e.g. `"trigger"`, `"extractions"`, `"log_download"`.
            fault: The fault.
            times: How many requests get it.

        Raises:
            ValueError: On an unknown endpoint name or `times < 1`.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator, Fault
            >>> StitchSimulator().inject("extractions", Fault.status(502), times=2)
        """
        _check_endpoint(endpoint)
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.setdefault(endpoint, deque()).extend([fault] * times)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every Stitch request received so far, in arrival order (control API excluded).

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> StitchSimulator().requests
            []
        """
        with self._lock:
            return sorted(self._requests, key=lambda r: r.at)

    def requests_for(self, endpoint: str) -> list[RecordedRequest]:
        """The recorded requests to one endpoint, in arrival order.

        Args:
            endpoint: An endpoint name, e.g. `"trigger"`.

        Returns:
            The requests.

        Raises:
            ValueError: On an unknown endpoint name.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> StitchSimulator().requests_for("loads")
            []
        """
        _check_endpoint(endpoint)
        return [r for r in self.requests if r.endpoint == endpoint]

    def jobs_requests_in_window(self, period: float | None = None) -> int:
        """The most jobs-endpoint requests seen in any sliding window of `period` seconds.

        Every request to extractions, logs and loads counts, including faulted and rejected
        ones: the number measures how hard the client leaned on the shared budget.

        Args:
            period: Window length; default `jobs_rate_period_seconds`.

        Returns:
            The maximum count.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> StitchSimulator().jobs_requests_in_window()
            0
        """
        window = self.jobs_rate_period_seconds if period is None else period
        with self._lock:
            times = sorted(self._jobs_arrivals)
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] >= window:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    @property
    def rate_limit_violations(self) -> int:
        """How many jobs requests arrived while the sliding window was already full.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> StitchSimulator().rate_limit_violations
            0
        """
        with self._lock:
            return self._violations

    def reset(self) -> None:
        """Forget sources, jobs, faults, the request log and the rate window.

        Configuration is kept, and a running server keeps running.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1)
            >>> sim.reset()
            >>> sim.jobs()
            []
        """
        with self._lock:
            self._clear()

    # -- internals used by the HTTP layer (call with the lock held or let them take it) ---------

    def _get_source(self, source_id: int) -> _Source:
        try:
            return self._sources[int(source_id)]
        except KeyError:
            raise KeyError(f"unknown source {source_id}") from None

    def _new_job_name(self, source_id: int) -> str:
        return f"{self._client_id}.{source_id}.sync.{uuid.uuid4()}"

    def _start(
        self, src: _Source, via: TriggeredVia, at: float, outcome: Outcome | None = None
    ) -> _Job:
        job = _Job(
            job_name=self._new_job_name(src.source_id),
            source_id=src.source_id,
            outcome=src.take_outcome() if outcome is None else outcome,
            started_at=at,
            triggered_via=via,
        )
        self._jobs[job.job_name] = job
        self._running[src.source_id] = job
        return job

    def _add_attempt(self, at: float, source_id: int, outcome: Outcome | None) -> _Attempt:
        self._attempt_seq += 1
        attempt = _Attempt(at, source_id, outcome, self._attempt_seq)
        self._attempts.append(attempt)
        return attempt

    def _complete(self, job: _Job, at: float, *, stopped: bool) -> list[_Attempt]:
        """End `job` at `at`: list it, queue its loads, fire the source's after-hooks.

        Returns the scheduler attempts the after-hooks added.
        """
        job.completed_at = at
        job.stopped = stopped
        if self._running.get(job.source_id) is job:
            del self._running[job.source_id]
        self._listed[job.source_id] = job
        src = self._sources[job.source_id]
        if job.succeeded:
            outcome = job.outcome
            plans = dict(outcome.loads)
            for stream, _ in src.stream_rows(outcome):
                plan = plans.get(stream, StreamLoad())
                if plan.never:
                    continue
                error = plan.error if plan.error is not None else outcome.load_error
                attempt = _LoadAttempt(at=at + plan.delay_seconds, error=error)
                self._pending_loads.append((src.source_id, stream, attempt))
        added = []
        if job.triggered_via != "seed":
            for hook in self._after_hooks.pop(job.source_id, []):
                added.append(self._add_attempt(at + hook.gap_seconds, job.source_id, hook.outcome))
        return added

    def _settle(self) -> None:
        """Replay every event due by now, in chronological order, until none is left.

        Events are a running job's end (its duration elapsed, or a delayed stop took effect)
        and the scheduler's start attempts; at the same moment, ends come first. Handling one
        can make another due (a job the scheduler started in the past may have ended since), so
        new events join the queue as they appear.
        """
        now = self.now()
        queue: list[tuple[float, int, int, _Job | _Attempt]] = []
        order = itertools.count()

        def push_job(job: _Job) -> None:
            due = job.due()
            if due is not None and due[0] <= now:
                heapq.heappush(queue, (due[0], 0, next(order), job))

        def push_attempt(attempt: _Attempt) -> None:
            if attempt.at <= now:
                heapq.heappush(queue, (attempt.at, 1, attempt.seq, attempt))

        for job in self._running.values():
            push_job(job)
        for attempt in self._attempts:
            push_attempt(attempt)
        while queue:
            at, _, _, what = heapq.heappop(queue)
            if isinstance(what, _Job):
                due = what.due()
                for attempt in self._complete(what, at, stopped=due is not None and due[1]):
                    push_attempt(attempt)
                continue
            self._attempts.remove(what)
            src = self._sources.get(what.source_id)
            if src is None:
                continue
            busy = src.source_id in self._running
            if busy or src.paused_at is not None or src.deleted_at is not None:
                self._skips[src.source_id] = self._skips.get(src.source_id, 0) + 1
                continue
            push_job(self._start(src, "scheduler", at, what.outcome))
        if self._pending_loads:
            keep = []
            for item in self._pending_loads:
                source_id, stream, landing = item
                if landing.at > now:
                    keep.append(item)
                    continue
                previous = self._loads.get((source_id, stream))
                if previous is None or landing.at >= previous.at:  # the latest attempt wins
                    self._loads[source_id, stream] = landing
            self._pending_loads = keep

    def _source_object(self, src: _Source) -> dict[str, Any]:
        schedule: dict[str, Any] | None = None
        if src.paused_at is None and src.deleted_at is None:
            period = _SCHEDULE_MINUTES * 60
            fires = math.floor((self.now() - src.created_at) / period) + 1
            next_fire = src.created_at + fires * period
            for attempt in self._attempts:
                if attempt.source_id == src.source_id:
                    next_fire = min(next_fire, attempt.at)
            schedule = {
                "type": "interval",
                "unit": "minute",
                "interval": _SCHEDULE_MINUTES,
                "next_fire_time": iso(next_fire),
            }
        return {
            "id": src.source_id,
            "name": src.name,
            "display_name": src.display_name,
            "type": src.type,
            "stitch_client_id": self._client_id,
            "created_at": iso(src.created_at),
            "updated_at": iso(src.updated_at),
            "deleted_at": None if src.deleted_at is None else iso(src.deleted_at),
            "paused_at": None if src.paused_at is None else iso(src.paused_at),
            "system_paused_at": None,
            "schedule": schedule,
            "check_job_name": src.check_job_name,
            "properties": {},
            "report_card": {
                "type": src.type,
                "current_step": 2,
                "current_step_type": "fully_configured",
                "steps": [],
            },
        }

    def _source_objects(self) -> list[dict[str, Any]]:
        with self._lock:
            self._settle()
            return [self._source_object(self._sources[i]) for i in sorted(self._sources)]

    def _set_source_fields(self, source_id: int, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a PUT body (`paused_at`, `display_name`); raises KeyError for unknown ids."""
        with self._lock:
            self._settle()
            src = self._get_source(source_id)
            now = self.now()
            if "paused_at" in changes:
                if changes["paused_at"] is None:
                    src.paused_at = None
                elif src.paused_at is None:
                    src.paused_at = now  # "any value pauses it immediately"
            if isinstance(changes.get("display_name"), str):
                src.display_name = changes["display_name"]
            src.updated_at = now
            return self._source_object(src)

    def _trigger(self, source_id: int) -> tuple[str, str]:
        """Start a job through the API: ("started", job_name) or (reason, "")."""
        with self._lock:
            self._settle()
            src = self._sources.get(source_id)
            if src is None:
                return "unknown", ""
            if src.deleted_at is not None:
                return "deleted", ""
            if source_id in self._running:
                return "already_running", ""
            return "started", self._start(src, "api", self.now()).job_name

    def _stop(self, source_id: int) -> str:
        """Ask the running job to stop: "unknown", "idle" or "stopped" (maybe not yet ended)."""
        with self._lock:
            self._settle()
            if source_id not in self._sources:
                return "unknown"
            job = self._running.get(source_id)
            if job is None:
                return "idle"
            if job.stop_requested_at is None:
                now = max(self.now(), job.started_at)
                job.stop_requested_at = now
                job.stop_effective_at = now + self.stop_delay_seconds
                self._settle()
            return "stopped"

    def _extraction_record(self, job: _Job) -> dict[str, Any]:
        src = self._sources[job.source_id]
        return {
            "job_name": job.job_name,
            "stitch_client_id": self._client_id,
            "source_id": job.source_id,
            self.tap_field: _tap_name(src.type),
            "start_time": iso(job.started_at),
            "completion_time": None if job.completed_at is None else iso(job.completed_at),
            **job.final_fields(),
        }

    def _extraction_records(self) -> list[dict[str, Any]]:
        with self._lock:
            self._settle()
            oldest = self.now() - _RETENTION_SECONDS
            records = []
            for source_id in sorted(self._sources):
                job = self._running.get(source_id) if self.list_running_jobs else None
                if job is None:
                    job = self._listed.get(source_id)
                    if job is None or (job.completed_at or 0.0) < oldest:
                        continue
                records.append(self._extraction_record(job))
            return records

    def _load_records(self) -> list[dict[str, Any]]:
        with self._lock:
            self._settle()
            oldest = self.now() - _RETENTION_SECONDS
            records = []
            for (source_id, stream), attempt in self._loads.items():
                if attempt.at < oldest:
                    continue
                records.append(
                    {
                        "stitch_client_id": self._client_id,
                        "source_name": self._sources[source_id].name,
                        "stream_name": stream,
                        "last_batch_loaded_at": None if attempt.error else iso(attempt.at),
                        "error_state": None
                        if attempt.error is None
                        else _error_state(attempt.error),
                    }
                )
            records.sort(key=lambda r: (r["stream_name"], r["source_name"]))
            return records

    def _has_job(self, job_name: str) -> bool:
        with self._lock:
            return job_name in self._jobs

    def _issue_log_token(self, job_name: str, token: str) -> None:
        with self._lock:
            self._log_tokens[token] = job_name

    def _log_token_job(self, token: str) -> str | None:
        with self._lock:
            return self._log_tokens.get(token)

    def _log_plan(self, job_name: str) -> _LogPlan:
        """Snapshot what the job's log says right now; the lines are generated later."""
        with self._lock:
            self._settle()
            job = self._jobs[job_name]
            src = self._sources[job.source_id]
            done = job.completed_at is not None
            outcome = job.final_outcome
            failure = None
            if outcome.kind == "failure" and outcome.phase is not None:
                failure = (outcome.phase, outcome.description or "")
            return _LogPlan(
                job_name=job_name,
                started_at=job.started_at,
                ended_at=job.completed_at if job.completed_at is not None else self.now(),
                done=done,
                log_lines=src.log_lines,
                line_bytes=src.log_line_bytes,
                stream_rows=tuple(src.stream_rows(outcome)),
                failure=failure,
                summary=outcome.summary_line(),
            )

    def _take_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(endpoint)
            return queue.popleft() if queue else None

    def _count_jobs_request(self, at: float, intercepted: bool) -> int | None:
        """Count a jobs request in the window; return Retry-After seconds if it must get 429."""
        with self._lock:
            self._jobs_arrivals.append(at)
            period = self.jobs_rate_period_seconds
            while self._jobs_accepted and self._jobs_accepted[0] <= at - period:
                self._jobs_accepted.popleft()
            full = len(self._jobs_accepted) >= self.jobs_rate_limit
            if full:
                self._violations += 1
            if full and self.enforce_rate_limit and not intercepted:
                return max(1, math.ceil(self._jobs_accepted[0] + period - at))
            self._jobs_accepted.append(at)
            return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)


def _error_state(message: str) -> dict[str, Any]:
    return {
        "notification_data": {
            "message": message,
            "exception_message": message,
            "warehouse_error_code": 500151,
            "error": "LOADER_WAREHOUSE_ERROR",
            "new_column": None,
            "status": "ERROR",
            "warehouse_sql_state": None,
            "action": "get-connection",
            "warehouse_message": message,
            "column": None,
        },
        "exception_chain": [
            {"class": "LoaderError", "message": message, "chain_sequence_num": 0, "action": None}
        ],
    }
