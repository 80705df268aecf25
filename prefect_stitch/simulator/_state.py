"""Pure state of the Stitch simulator: sources, jobs, outcomes, faults, request log, rate window.

Nothing here knows about sockets. The HTTP layer (`_server.py`) turns requests into calls on
`SimulatorState` and its answers into Stitch-shaped responses. Every read or change of state
happens under one `threading.RLock`, and a job's completion is worked out lazily from the clock
each time the state is touched, so no timer threads are needed.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    "extractions",
    "logs",
    "log_download",
    "loads",
    "unknown",
]
TriggeredVia = Literal["api", "scheduler", "seed"]

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
"""The description Stitch gives all three phases of a terminated extraction."""
LOG_BUCKET = "com-stitchdata-prod-platform-pod-logs"
"""Bucket name used in the pre-signed log URL, as in Stitch's documented example."""

_RETENTION_SECONDS = 60 * 24 * 3600.0  # extractions and loads list the past 60 days only
_SCHEDULE_MINUTES = 60


def iso(epoch: float) -> str:
    """Format an epoch timestamp as Stitch does: ISO-8601, UTC, whole seconds, `Z`.

    Args:
        epoch: Seconds since the epoch.

    Returns:
        The timestamp, e.g. `"2020-06-19T15:09:38Z"`.

    Example:
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
class Outcome:
    """How a simulated replication job ends, and how long it runs.

    Build one with `Outcome.success`, `Outcome.failure` or `Outcome.terminated`. A source
    consumes one outcome per started job; the last one repeats.

    Attributes:
        kind: `"success"`, `"failure"` or `"terminated"`.
        duration_seconds: Run time; `None` runs until `finish_job` or a stop request.
        phase: The failing phase of a failure (`"discovery"`, `"tap"` or `"target"`).
        exit_status: The failing phase's exit status (non-zero; negative codes such as -9 too).
        description: The failing phase's description (Stitch's exception message).
        load_error: For a success: a load error message; the source's load records then carry
            an `error_state` and a null `last_batch_loaded_at`.

    Example:
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

    def __post_init__(self) -> None:
        if self.kind not in get_args(OutcomeKind):
            raise ValueError(f"unknown outcome kind {self.kind!r}")
        if self.duration_seconds is not None and self.duration_seconds < 0:
            raise ValueError("duration_seconds must be >= 0 or None")
        if self.kind == "failure":
            if self.phase not in PHASES:
                raise ValueError(f"phase must be one of {PHASES}, not {self.phase!r}")
            if not self.exit_status:
                raise ValueError("a failure needs a non-zero exit_status")

    @classmethod
    def success(
        cls, duration_seconds: float | None = 1.0, load_error: str | None = None
    ) -> Outcome:
        """A job whose three phases all exit with 0.

        Args:
            duration_seconds: Run time; `None` runs until finished or stopped.
            load_error: Optional load error message for the source's load records.

        Returns:
            The outcome.

        Example:
            >>> from prefect_stitch.simulator import Outcome
            >>> Outcome.success(0.2).kind
            'success'
        """
        return cls("success", duration_seconds=duration_seconds, load_error=load_error)

    @classmethod
    def failure(
        cls,
        phase: Phase,
        exit_status: int = 1,
        description: str | None = None,
        duration_seconds: float | None = 1.0,
    ) -> Outcome:
        """A job whose `phase` fails with `exit_status`; every other phase reports 0.

        This follows the documented tap-failure example (discovery 0, tap 1, target 0): the
        failing phase has the non-zero code and its description, all other phases report 0 with a
        null description.

        Args:
            phase: `"discovery"`, `"tap"` or `"target"`.
            exit_status: Non-zero exit status; negative codes (e.g. -9) are allowed.
            description: The error text; a generic message when omitted.
            duration_seconds: Run time; `None` runs until finished or stopped.

        Returns:
            The outcome.

        Example:
            >>> from prefect_stitch.simulator import Outcome
            >>> Outcome.failure("discovery", exit_status=2).phase
            'discovery'
        """
        if description is None:
            description = f"Simulated {phase} failure (exit status {exit_status})"
        return cls(
            "failure",
            duration_seconds=duration_seconds,
            phase=phase,
            exit_status=exit_status,
            description=description,
        )

    @classmethod
    def terminated(cls, duration_seconds: float | None = 1.0) -> Outcome:
        """A job Stitch terminated: null exit statuses, descriptions `"Terminated"`.

        Args:
            duration_seconds: Run time before the termination.

        Returns:
            The outcome.

        Example:
            >>> from prefect_stitch.simulator import Outcome
            >>> Outcome.terminated().record_fields()["tap_description"]
            'Terminated'
        """
        return cls("terminated", duration_seconds=duration_seconds)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Outcome:
        """Build an outcome from its JSON form (as posted to the control API).

        `kind` may be `"success"`, `"failure"` (with `phase`), `"terminated"`, or a phase name
        as a shorthand for a failure of that phase. A missing `duration_seconds` means 1.0; an
        explicit null means "runs until finished or stopped".

        Args:
            data: E.g. `{"kind": "failure", "phase": "tap", "exit_status": -9}`.

        Returns:
            The outcome.

        Raises:
            ValueError: On an unknown kind or invalid values.

        Example:
            >>> from prefect_stitch.simulator import Outcome
            >>> Outcome.from_json({"kind": "tap", "exit_status": -9}).exit_status
            -9
        """
        kind = str(data.get("kind", "success"))
        raw_duration = data.get("duration_seconds", 1.0)
        duration = None if raw_duration is None else float(raw_duration)
        phase = kind if kind in PHASES else data.get("phase")
        if kind in PHASES:
            kind = "failure"
        if kind == "success":
            return cls.success(duration, load_error=data.get("load_error"))
        if kind == "terminated":
            return cls.terminated(duration)
        if kind == "failure":
            if phase not in PHASES:
                raise ValueError(f"a failure needs a phase in {PHASES}")
            return cls.failure(
                cast(Phase, phase),
                exit_status=int(data.get("exit_status", 1)),
                description=data.get("description"),
                duration_seconds=duration,
            )
        raise ValueError(f"unknown outcome kind {kind!r}")

    def record_fields(self) -> dict[str, Any]:
        """The six exit-status/description fields of a completed extraction record.

        Returns:
            `{"discovery_exit_status": ..., "discovery_description": ..., "tap_exit_status": ...}`.

        Example:
            >>> from prefect_stitch.simulator import Outcome
            >>> Outcome.success().record_fields()["target_exit_status"]
            0
        """
        fields: dict[str, Any] = {}
        status: int | None
        description: str | None
        for phase in PHASES:
            if self.kind == "terminated":
                status, description = None, TERMINATED
            elif self.kind == "failure" and phase == self.phase:
                status, description = self.exit_status, self.description
            else:
                status, description = 0, None
            fields[f"{phase}_exit_status"] = status
            fields[f"{phase}_description"] = description
        return fields

    def summary_line(self) -> str:
        """The last line of the job's log, in Stitch's "Exit status is: ..." form.

        Returns:
            E.g. `Exit status is: Discovery succeeded. Tap failed with code -9. Target succeeded.`

        Example:
            >>> from prefect_stitch.simulator import Outcome
            >>> Outcome.success().summary_line()
            'Exit status is: Discovery succeeded. Tap succeeded. Target succeeded.'
        """
        parts = []
        fields = self.record_fields()
        for phase in PHASES:
            status = fields[f"{phase}_exit_status"]
            if status is None:
                parts.append(f"{phase.capitalize()} was terminated.")
            elif status == 0:
                parts.append(f"{phase.capitalize()} succeeded.")
            else:
                parts.append(f"{phase.capitalize()} failed with code {status}.")
        return "Exit status is: " + " ".join(parts)


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

    Example:
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

        Example:
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

        Example:
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

        Example:
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

        Example:
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

        Example:
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

        Example:
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

        Example:
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

        Example:
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

        Example:
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

    Example:
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

        Example:
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
    log_lines: int
    check_job_name: str
    next_outcome: int = 0

    def take_outcome(self) -> Outcome:
        outcome = self.outcomes[min(self.next_outcome, len(self.outcomes) - 1)]
        self.next_outcome += 1
        return outcome


@dataclass
class _Job:
    job_name: str
    source_id: int
    outcome: Outcome
    started_at: float
    triggered_via: TriggeredVia
    completed_at: float | None = None
    stopped: bool = False

    def final_fields(self) -> dict[str, Any]:
        if self.completed_at is None:
            return {f"{p}_{s}": None for p in PHASES for s in ("exit_status", "description")}
        if self.stopped:
            return Outcome.terminated().record_fields()
        return self.outcome.record_fields()

    @property
    def succeeded(self) -> bool:
        return self.completed_at is not None and not self.stopped and self.outcome.kind == "success"

    def as_dict(self) -> dict[str, Any]:
        outcome = "terminated" if self.stopped else self.outcome.kind
        return {
            "job_name": self.job_name,
            "source_id": self.source_id,
            "outcome": outcome,
            "phase": None if self.stopped else self.outcome.phase,
            "exit_status": None if self.stopped else self.outcome.exit_status,
            "started_at": iso(self.started_at),
            "completed_at": None if self.completed_at is None else iso(self.completed_at),
            "running": self.completed_at is None,
            "stopped": self.stopped,
            "triggered_via": self.triggered_via,
        }


class SimulatorState:
    """State and Stitch semantics of the simulator, without the HTTP layer.

    `StitchSimulator` inherits every method documented here; use that class.

    Configuration attributes (`page_size`, `jobs_rate_limit`, `jobs_rate_period_seconds`,
    `enforce_rate_limit`, `list_running_jobs`, `stop_when_idle_status`, `tap_field`,
    `clock_offset_seconds`) are plain attributes and may be changed at any time.

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
        clock_offset_seconds: Added to the wall clock, to simulate a skewed Stitch clock.

    Example:
        >>> from prefect_stitch.simulator import StitchSimulator
        >>> sim = StitchSimulator(page_size=10)
        >>> sim.page_size
        10
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
    ) -> None:
        if not token:
            raise ValueError("token must not be empty")
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        if jobs_rate_limit < 1 or jobs_rate_period_seconds <= 0:
            raise ValueError("jobs_rate_limit must be >= 1 and jobs_rate_period_seconds > 0")
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
        self._lock = threading.RLock()
        self._clear()

    def _clear(self) -> None:
        self._sources: dict[int, _Source] = {}
        self._jobs: dict[str, _Job] = {}  # insertion order = start order
        self._running: dict[int, _Job] = {}
        self._listed: dict[int, _Job] = {}  # the source's last completed (or seeded) job
        self._last_success: dict[int, _Job] = {}
        self._faults: dict[str, deque[Fault]] = {}
        self._requests: list[RecordedRequest] = []
        self._jobs_arrivals: list[float] = []
        self._jobs_accepted: deque[float] = deque()
        self._violations = 0
        self._log_tokens: dict[str, str] = {}

    # -- read-only identity -------------------------------------------------------------------

    @property
    def token(self) -> str:
        """The access token the simulated API accepts.

        Example:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> StitchSimulator(token="t0k3n").token
            't0k3n'
        """
        return self._token

    @property
    def client_id(self) -> int:
        """The Stitch client (account) ID the token belongs to.

        Example:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> StitchSimulator(client_id=42).client_id
            42
        """
        return self._client_id

    def now(self) -> float:
        """The simulated Stitch clock: `time.time() + clock_offset_seconds`.

        Returns:
            Seconds since the epoch.

        Example:
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
        log_lines: int = 20,
    ) -> dict[str, Any]:
        """Add a source (Stitch "integration") that jobs can be started for.

        Args:
            source_id: The integer source ID.
            name: Lowercase schema name (the loads' `source_name`); default `<tap>_<id>`.
            display_name: Human name; default `"<Tap> <id>"`.
            type: Source type, e.g. `"platform.hubspot"`; gives the tap name `tap-hubspot`.
            outcomes: Outcomes consumed one per started job; the last one repeats. Default
                `[Outcome.success(duration_seconds=1.0)]`.
            paused: Whether the source is paused (manual starts still work).
            deleted: Whether the source is deleted (starts fail with 400).
            streams: Stream names, one load record each after a successful job.
            log_lines: Number of lines of each job's log.

        Returns:
            The Source object, as `GET /v4/sources/{id}` returns it.

        Raises:
            ValueError: If the source already exists or `outcomes` is empty.

        Example:
            >>> from prefect_stitch.simulator import StitchSimulator, Outcome
            >>> sim = StitchSimulator()
            >>> sim.add_source(1001, outcomes=[Outcome.failure("tap")])["name"]
            'hubspot_1001'
        """
        outcome_list = list(outcomes) if outcomes is not None else [Outcome.success()]
        if not outcome_list:
            raise ValueError("outcomes must not be empty")
        source_id = int(source_id)
        short = type.rsplit(".", 1)[-1]
        with self._lock:
            if source_id in self._sources:
                raise ValueError(f"source {source_id} already exists")
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
                streams=tuple(streams),
                log_lines=max(1, int(log_lines)),
                check_job_name=f"{self._client_id}.{source_id}.check.{uuid.uuid4()}",
            )
            self._sources[source_id] = src
            return self._source_object(src)

    def add_sources(self, source_ids: Iterable[int], **kwargs: Any) -> list[dict[str, Any]]:
        """Add many sources at once, all with the same options.

        Args:
            source_ids: The source IDs, e.g. `range(1, 151)`.
            **kwargs: Keyword arguments of `add_source` (not `name`/`display_name`).

        Returns:
            The Source objects.

        Example:
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
            ValueError: If `outcomes` is empty.

        Example:
            >>> from prefect_stitch.simulator import StitchSimulator, Outcome
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1)
            >>> sim.set_outcomes(1, [Outcome.terminated(0.1)])
        """
        if not outcomes:
            raise ValueError("outcomes must not be empty")
        with self._lock:
            src = self._get_source(source_id)
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

        Example:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(7, paused=True)
            >>> sim.source(7)["schedule"] is None
            True
        """
        with self._lock:
            return self._source_object(self._get_source(source_id))

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

        Example:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator(client_id=5)
            >>> _ = sim.add_source(1)
            >>> sim.seed_completed(1).startswith("5.1.sync.")
            True
        """
        with self._lock:
            self._settle()
            src = self._get_source(source_id)
            now = self.now()
            name = job_name or self._new_job_name(src.source_id)
            if name in self._jobs:
                raise ValueError(f"job name {name!r} already exists")
            started = now - started_ago_seconds
            job = _Job(
                job_name=name,
                source_id=src.source_id,
                outcome=outcome or Outcome.success(),
                started_at=started,
                triggered_via="seed",
                completed_at=min(now, started + duration_seconds),
            )
            self._jobs[name] = job
            self._complete(job)
            return name

    def start_job(self, source_id: int) -> str:
        """Start a job as Stitch's own scheduler would (not through the API).

        Use it for "a job is already running" scenarios. The job takes the source's next outcome.

        Args:
            source_id: The source.

        Returns:
            The job name.

        Raises:
            KeyError: If the source is unknown.
            RuntimeError: If a job is already running or the source is deleted.

        Example:
            >>> from prefect_stitch.simulator import StitchSimulator, Outcome
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1, outcomes=[Outcome.success(None)])
            >>> sim.start_job(1) == sim.running_job(1)["job_name"]
            True
        """
        with self._lock:
            self._settle()
            src = self._get_source(source_id)
            if src.deleted_at is not None:
                raise RuntimeError(f"source {source_id} is deleted")
            if src.source_id in self._running:
                raise RuntimeError(f"a job is already running for source {source_id}")
            return self._start(src, "scheduler").job_name

    def finish_job(self, source_id: int) -> None:
        """Complete the source's running job now, with its outcome.

        Needed for outcomes with `duration_seconds=None`, which run until finished or stopped.

        Args:
            source_id: The source.

        Raises:
            KeyError: If the source is unknown.
            RuntimeError: If no job is running.

        Example:
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
            job.completed_at = max(self.now(), job.started_at)
            self._complete(job)

    def running_job(self, source_id: int) -> dict[str, Any] | None:
        """The source's running job, or None.

        Args:
            source_id: The source.

        Returns:
            A job dict (see `jobs`) or None.

        Example:
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
            Dicts with `job_name`, `source_id`, `outcome` (kind), `phase`, `exit_status`,
            `started_at`, `completed_at`, `running`, `stopped` and `triggered_via`
            (`"api"`, `"scheduler"` or `"seed"`).

        Example:
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

        Example:
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

        Example:
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

        Example:
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

        Example:
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

        Example:
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

        Example:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> StitchSimulator().rate_limit_violations
            0
        """
        with self._lock:
            return self._violations

    def reset(self) -> None:
        """Forget sources, jobs, faults, the request log and the rate window.

        Configuration is kept, and a running server keeps running.

        Example:
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

    def _start(self, src: _Source, via: TriggeredVia) -> _Job:
        job = _Job(
            job_name=self._new_job_name(src.source_id),
            source_id=src.source_id,
            outcome=src.take_outcome(),
            started_at=self.now(),
            triggered_via=via,
        )
        self._jobs[job.job_name] = job
        self._running[src.source_id] = job
        return job

    def _complete(self, job: _Job) -> None:
        if self._running.get(job.source_id) is job:
            del self._running[job.source_id]
        self._listed[job.source_id] = job
        if job.succeeded:
            self._last_success[job.source_id] = job

    def _settle(self) -> None:
        """Complete every running job whose duration has elapsed (lazy completion)."""
        now = self.now()
        for job in list(self._running.values()):
            duration = job.outcome.duration_seconds
            if duration is not None and now >= job.started_at + duration:
                job.completed_at = job.started_at + duration
                self._complete(job)

    def _source_object(self, src: _Source) -> dict[str, Any]:
        schedule: dict[str, Any] | None = None
        if src.paused_at is None and src.deleted_at is None:
            period = _SCHEDULE_MINUTES * 60
            fires = math.floor((self.now() - src.created_at) / period) + 1
            schedule = {
                "type": "interval",
                "unit": "minute",
                "interval": _SCHEDULE_MINUTES,
                "next_fire_time": iso(src.created_at + fires * period),
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
            return [self._source_object(self._sources[i]) for i in sorted(self._sources)]

    def _set_source_fields(self, source_id: int, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a PUT body (`paused_at`, `display_name`); raises KeyError for unknown ids."""
        with self._lock:
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
            return "started", self._start(src, "api").job_name

    def _stop(self, source_id: int) -> str:
        """Stop the running job: "unknown", "idle" or "stopped"."""
        with self._lock:
            self._settle()
            if source_id not in self._sources:
                return "unknown"
            job = self._running.get(source_id)
            if job is None:
                return "idle"
            job.completed_at = max(self.now(), job.started_at)
            job.stopped = True
            self._complete(job)
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
            for source_id, job in self._last_success.items():
                if job.completed_at is None or job.completed_at < oldest:
                    continue
                src = self._sources[source_id]
                error = job.outcome.load_error
                for stream in src.streams:
                    records.append(
                        {
                            "stitch_client_id": self._client_id,
                            "source_name": src.name,
                            "stream_name": stream,
                            "last_batch_loaded_at": None if error else iso(job.completed_at),
                            "error_state": None if error is None else _error_state(error),
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

    def _log_text(self, job_name: str) -> str:
        with self._lock:
            self._settle()
            job = self._jobs[job_name]
            src = self._sources[job.source_id]
            total = src.log_lines
            end = job.completed_at if job.completed_at is not None else self.now()
            done = job.completed_at is not None
            outcome = Outcome.terminated() if job.stopped else job.outcome
            streams = src.streams or ("records",)
            lines = []
            body_lines = total - 1 if done else total
            for i in range(1, body_lines + 1):
                if i == 1:
                    message = f"main - INFO [line {i}/{total}] Starting extraction job {job_name}"
                elif done and outcome.kind == "failure" and i == body_lines:
                    message = f"{outcome.phase} - CRITICAL [line {i}/{total}] {outcome.description}"
                else:
                    stream = streams[i % len(streams)]
                    message = (
                        f'tap - INFO [line {i}/{total}] replicated {i * 7} records from "{stream}"'
                        " endpoint"
                    )
                lines.append(f"{_log_time(job.started_at, end, i, total)} {message}")
            if done:
                stamp = _log_time(job.started_at, end, total, total)
                lines.append(f"{stamp} main - INFO {outcome.summary_line()}")
            return "\n".join(lines) + "\n"

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


def _log_time(start: float, end: float, index: int, total: int) -> str:
    moment = start + (end - start) * index / max(total, 1)
    stamp = datetime.fromtimestamp(moment, tz=UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S,") + f"{stamp.microsecond // 1000:03d}Z"


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
