"""What a simulated job does: how it ends (`Outcome`) and how its streams load (`StreamLoad`).

Both are immutable records, built in Python or from their JSON form (the control API's). An
outcome also writes the six exit-status/description fields of the job's extraction record and
the last line of its log, following Stitch's harsh readings: phases that never ran report null,
and a terminated job has null statuses, told only by its completion time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

Phase = Literal["discovery", "tap", "target"]
OutcomeKind = Literal["success", "failure", "terminated"]
LaterExitStatus = int | None | Literal["auto"]

PHASES: tuple[Phase, ...] = get_args(Phase)
TERMINATED = "Terminated"
"""The description Stitch's documented terminated example gives all three phases.

The simulator does not use it by default (a terminated job is told by its completion time
with null exit statuses, not by this word): pass `Outcome.terminated(description=TERMINATED)`
to reproduce the documented example.
"""


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
        error_state: With `error`: the `error_state` the failed record carries, any JSON value
            (an object of another shape, a string, a list...) instead of the default object
            built from `error` (Stitch says its structure "is subject to change"). `None`: the
            default object.

    Examples:
        >>> from prefect_stitch.simulator import Outcome, StreamLoad
        >>> outcome = Outcome.success(loads={"accounts": StreamLoad(delay_seconds=30)})
        >>> dict(outcome.loads)["accounts"].delay_seconds
        30
        >>> StreamLoad(error="denied", error_state=["denied"]).error_state
        ['denied']
    """

    delay_seconds: float = 0.0
    error: str | None = None
    never: bool = False
    error_state: Any = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if not self.delay_seconds >= 0:
            raise ValueError("delay_seconds must be >= 0")
        object.__setattr__(self, "error_state", checked_error_state(self.error, self.error_state))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StreamLoad:
        """Build a stream load from its JSON form (as posted to the control API).

        Args:
            data: E.g. `{"delay_seconds": 5, "error": "disk full"}`, `{"never": true}` or
                `{"error": "denied", "error_state": {"code": 42}}`.

        Returns:
            The stream load.

        Raises:
            ValueError: On unknown keys or invalid values.

        Examples:
            >>> from prefect_stitch.simulator import StreamLoad
            >>> StreamLoad.from_json({"never": True}).never
            True
            >>> StreamLoad.from_json({"error": "denied", "error_state": "denied"}).error_state
            'denied'
        """
        unknown = set(data) - {"delay_seconds", "error", "never", "error_state"}
        if unknown:
            raise ValueError(f"unknown stream load fields: {sorted(unknown)}")
        error = data.get("error")
        return cls(
            delay_seconds=float(data.get("delay_seconds", 0.0)),
            error=None if error is None else str(error),
            never=bool(data.get("never", False)),
            error_state=data.get("error_state"),
        )


def checked_error_state(error: str | None, error_state: Any) -> Any:
    """A scripted `error_state`, checked and copied (later changes by the caller stay out).

    Args:
        error: The load's error message; a scripted `error_state` needs one (the error is what
            marks the load failed).
        error_state: Any JSON value (an object, a list, a string, a number, a boolean), or
            None for the default object built from the error.

    Returns:
        A deep copy of `error_state` (None stays None).

    Raises:
        ValueError: If `error_state` comes without an error or is not JSON.

    Examples:
        >>> from prefect_stitch.simulator._outcomes import checked_error_state
        >>> checked_error_state("denied", {"code": [1, 2]})
        {'code': [1, 2]}
    """
    if error_state is None:
        return None
    if error is None:
        raise ValueError("error_state needs an error (the error marks the load failed)")
    try:
        return json.loads(json.dumps(error_state, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"error_state must be a JSON value: {exc}") from None


def _check_later(value: object) -> LaterExitStatus:
    """Return a valid `later_exit_status` ("auto", None or an int) or raise ValueError."""
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
            gives every selected stream a positive count. Here and in `loads`, a stream is
            named by its identity (its `tap_stream_id`), even where its table name repeats.
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
        `rows` (`{"stream": count}`) and `loads` (`{"stream": {...}}` in the JSON form of
        `StreamLoad.from_json`); a failure `exit_status`, `description` and `later_exit_status`
        (missing means `"auto"`); a termination `description`. Streams are named by their
        identity (`tap_stream_id`).

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
        """The exit status of the phases after a failing one."""
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


STOPPED = Outcome.terminated()
"""The outcome of a job stopped through DELETE /sync: null statuses and descriptions."""
