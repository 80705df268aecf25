"""The options of a Stitch sync: declared, documented and checked in one place.

Every entry point of a sync (`stitch_sync_flow`, `stitch_sync_many_flow`, `run_stitch_sync`,
`run_stitch_sync_many` and the `StitchSource` block) takes the same options. Each is declared
once, here, as an annotated type that carries its constraints, title and description; the
[`SyncOptions`][prefect_stitch.options.SyncOptions] model (and the `StitchSource` block's
form) is made of them, and the flows' signatures use the same types and take their defaults
from [`DEFAULTS`][prefect_stitch.options.DEFAULTS], so Prefect's parameter validation and the
model check an option alike. (A deployment's form takes each parameter's description from
the flow's docstring, which Prefect reads from the source: the flows' docstrings say it
again, in the words of the form.)

Which layer refuses bad input is defined: a flow's parameters are checked by Prefect before
the flow runs (`prefect.exceptions.ParameterTypeError`, naming the parameter); the
`StitchSource` block, like any block, when it is built (pydantic's ``ValidationError``);
everywhere else (`run_stitch_sync`, `run_stitch_sync_many`, the tasks) the model checks them
and raises
[`StitchConfigurationError`][prefect_stitch.errors.StitchConfigurationError] naming the
option. Either way, before any request is sent to Stitch.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from prefect_stitch.errors import StitchConfigurationError

__all__ = [
    "AlreadyRunningPolicy",
    "LoadsMode",
    "SyncOptions",
]

AlreadyRunningPolicy = Literal["attach", "fail", "wait_then_start"]
"""What to do when Stitch says a job of the source is already running."""

LoadsMode = Literal["wait", "check", "ignore"]
"""What a sync does with the loads once every phase exited 0."""

DEFAULT_LOG_TAIL_LINES = 20
"""Lines of the extraction log a failure shows, by default."""

DEFAULT_MAX_LOAD_WAIT_SECONDS = 3600.0
"""How long a sync waits for its data to load, from the extraction's success, by default."""

STITCH_JOB_LIMIT_SECONDS = 24 * 3600.0
"""How long Stitch lets one extraction job run (its error reference: 24 hours; its changelog
of 2020-09-22 raised source extractions' timeout from 6 to 23.5 hours). By default a sync waits
that long: a first historical sync or a backfill is not stopped by us. Pass a tighter
``max_wait_seconds`` (e.g. ``2 * 3600``) where a job that runs longer means trouble."""


def _not_a_bool(value: object) -> object:
    """Refuse a boolean where a number is meant (pydantic would read ``True`` as 1)."""
    if isinstance(value, bool):
        raise ValueError("a number is expected, not a boolean")
    return value


_Number = BeforeValidator(_not_a_bool)
"""A number option: an int, a float or a numeric string (a deployment's form may send one)."""

_Seconds = Annotated[float, _Number, Field(gt=0, allow_inf_nan=False)]

PollIntervalSeconds = Annotated[
    _Seconds,
    Field(
        title="Poll interval (seconds)",
        description="Seconds between status polls. Stitch allows 30 jobs requests per 10 "
        "minutes per account, so the polls of an account are shared and never faster than "
        "that budget allows.",
    ),
]
MaxWaitSeconds = Annotated[
    _Seconds,
    Field(
        title="Maximum wait (seconds)",
        description="Wall-clock limit of the whole sync: the trigger and its retries, the "
        "wait, and every replication retry. By default 24 hours, as long as Stitch lets a job "
        "run (a first historical sync may take that long); set a tighter bound where a long "
        "job means trouble.",
    ),
]
OnAlreadyRunning = Annotated[
    AlreadyRunningPolicy,
    Field(
        title="When a job is already running",
        description="When a job is already running for the source: attach follows it and "
        "reports its verdict, fail raises StitchJobAlreadyRunning, wait_then_start waits for it "
        "to end and then starts a fresh job.",
    ),
]
StopOnTimeout = Annotated[
    bool,
    Field(
        title="Stop the job on timeout",
        description="Ask Stitch to stop the job when the sync runs past its maximum wait "
        "(only a job this run started).",
    ),
]
FetchLogsOnFailure = Annotated[
    bool,
    Field(
        title="Fetch the log on failure",
        description="Put the last lines of the extraction log into the failure and the "
        "artifact when the job fails.",
    ),
]
LogTailLines = Annotated[
    int,
    _Number,
    Field(
        ge=0,
        le=1000,
        title="Log lines on failure",
        description="How many lines of the extraction log a failure shows (0: none).",
    ),
]
PauseStitchSchedule = Annotated[
    bool,
    Field(
        title="Pause Stitch's own schedule",
        description="Pause Stitch's own schedule of the source first, so only orchestrated "
        "runs happen (jobs started through the API still run on a paused source).",
    ),
]
ReplicationRetries = Annotated[
    int,
    _Number,
    Field(
        ge=0,
        le=100,
        title="Replication retries",
        description="Start the Stitch job again this many times when it fails or is "
        "terminated (never after a timeout, an API error or a failed load).",
    ),
]
ReplicationRetryDelaySeconds = Annotated[
    float,
    _Number,
    Field(
        ge=0,
        allow_inf_nan=False,
        title="Replication retry delay (seconds)",
        description="Seconds between a failed Stitch job and its re-run.",
    ),
]
Loads = Annotated[
    LoadsMode,
    Field(
        title="Loads",
        description="After every phase exited 0: wait for the data to load into the "
        "warehouse, check the loads once, or ignore them.",
    ),
]
MaxLoadWaitSeconds = Annotated[
    _Seconds,
    Field(
        title="Maximum load wait (seconds)",
        description="How long to wait for the data to load, from the extraction's success "
        "(a bound of its own, outside the maximum wait).",
    ),
]
GlobalRateLimit = Annotated[
    str | None,
    Field(
        min_length=1,
        title="Global rate limit",
        description="Name of a Prefect global concurrency limit (a rate limit with slot "
        "decay) that paces the account's jobs requests across processes; created if missing. "
        "By default stitch-jobs- followed by the account id is used when it exists.",
    ),
]
SuspendWhileWaiting = Annotated[
    bool,
    Field(
        title="Suspend while Stitch works",
        description="Suspend the flow run while the Stitch job runs, so that no process, pod "
        "or worker slot is held: the account's watcher (stitch_watch_flow) resumes it when the "
        "job has a verdict. Only a deployment's run (not a subflow) with a watcher of the "
        "account running can suspend; otherwise the run waits in its process and says why.",
    ),
]


class _SyncOptionFields(BaseModel):
    """The sync options, as fields (shared by `SyncOptions` and the `StitchSource` block)."""

    poll_interval_seconds: PollIntervalSeconds = 30.0
    max_wait_seconds: MaxWaitSeconds = STITCH_JOB_LIMIT_SECONDS
    on_already_running: OnAlreadyRunning = "attach"
    stop_on_timeout: StopOnTimeout = True
    fetch_logs_on_failure: FetchLogsOnFailure = True
    log_tail_lines: LogTailLines = DEFAULT_LOG_TAIL_LINES
    pause_stitch_schedule: PauseStitchSchedule = False
    replication_retries: ReplicationRetries = 0
    replication_retry_delay_seconds: ReplicationRetryDelaySeconds = 60.0
    loads: Loads = "wait"
    max_load_wait_seconds: MaxLoadWaitSeconds = DEFAULT_MAX_LOAD_WAIT_SECONDS
    global_rate_limit: GlobalRateLimit = None
    suspend_while_waiting: SuspendWhileWaiting = False


class SyncOptions(_SyncOptionFields):
    """How one source's sync runs: every option of a sync, with its default.

    Build it with `SyncOptions.of(...)`, which names the bad option in a
    `StitchConfigurationError`; the flows build it from their parameters in one place.

    Example:
        ```python
        from prefect_stitch import SyncOptions

        options = SyncOptions.of(poll_interval_seconds=60, replication_retries=1)
        print(options.replication_retry_delay_seconds)  # 60.0
        ```
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def of(cls, **values: Any) -> SyncOptions:
        """Check option values and build the options; unset options take their default.

        Args:
            **values: Option values by name (a value of ``None`` is kept only where the
                option allows it).

        Returns:
            The options.

        Raises:
            StitchConfigurationError: An option is unknown or its value is out of range;
                ``.parameter`` names it.

        Example:
            ```python
            from prefect_stitch import StitchConfigurationError, SyncOptions

            try:
                SyncOptions.of(poll_interval_seconds=0)
            except StitchConfigurationError as exc:
                print(exc.parameter)  # poll_interval_seconds
            ```
        """
        try:
            return cls(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = str(first["loc"][0]) if first.get("loc") else "options"
            given = values.get(name, "<missing>")
            if first.get("type") == "extra_forbidden":
                message = f"{name} is not a sync option (the options: {', '.join(cls.names())})"
            else:
                message = f"{name}: {first.get('msg', 'invalid value')}, got {given!r}"
            raise StitchConfigurationError(message, parameter=name) from None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The options' names, in declaration order.

        Returns:
            The names.

        Example:
            ```python
            from prefect_stitch import SyncOptions

            print(SyncOptions.names()[0])  # poll_interval_seconds
            ```
        """
        return tuple(cls.model_fields)

    def replace(self, **values: Any) -> SyncOptions:
        """A copy with some options changed, checked like `of`.

        Args:
            **values: The options to change.

        Returns:
            The new options.

        Example:
            ```python
            from prefect_stitch import SyncOptions

            print(SyncOptions().replace(loads="ignore").loads)  # ignore
            ```
        """
        return SyncOptions.of(**{**self.model_dump(), **values})


DEFAULTS = SyncOptions()
"""Every option at its default (the flows' signatures take their defaults from here)."""
