"""``stitch_sync_flow``: start a Stitch replication job, watch it to its end, tell the truth.

The whole story of a sync:

1. load the credentials (a block, or a block's name);
2. optionally pause Stitch's own schedule of the source, so only orchestrated runs happen;
3. start the job ([`start_stitch_sync`][prefect_stitch.tasks.start_stitch_sync]); if
   one is already running, follow it or fail, as ``on_already_running`` says;
4. wait for its record ([`wait_for_stitch_sync`][prefect_stitch.tasks.wait_for_stitch_sync])
   and judge it: every phase 0 (and, with ``loads``, the data loaded) returns a
   [`StitchSyncResult`][prefect_stitch.models.StitchSyncResult]; anything else raises a
   typed error naming each failed phase, its exit status, Stitch's description and the
   tail of the extraction log;
5. on timeout, ask Stitch to stop the job and raise
   [`StitchSyncTimeout`][prefect_stitch.errors.StitchSyncTimeout]; on cancellation of the
   flow run, ask Stitch to stop the job and say so in the log;
6. with ``replication_retries``, start a failed or terminated job again (every job is
   listed in the result's ``attempts``). A Prefect retry of the flow run starts a new
   job after a judged failure, and follows the job it started after a crash.

``max_wait_seconds`` bounds all of it, wall clock.

The flow is synchronous so that it can be called as it is from a script, from a sync
parent flow and from an async parent flow. Its body runs the async tasks on an event
loop in a helper thread, which is cancelled when Prefect cancels the run: that is how
the wait learns of the cancellation and stops the Stitch job before the process ends.
"""

# No ``from __future__ import annotations`` here: Prefect builds the flows' parameter
# models from their annotations at run time, and string annotations of the ``Annotated``
# aliases below would leave a deployment run's parameter model undefined.

import asyncio
import contextlib
import contextvars
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.context import AsyncClientContext, FlowRunContext
from pydantic import Field

from prefect_stitch._poll.poller import pollers_of
from prefect_stitch.credentials import StitchCredentials
from prefect_stitch.errors import (
    StitchConfigurationError,
    StitchJobAlreadyRunning,
    StitchJobTerminated,
    StitchLoadFailed,
    StitchReplicationFailed,
    StitchSyncManyFailed,
    StitchSyncTimeout,
)
from prefect_stitch.models import (
    SourceId,
    StitchSyncHandle,
    StitchSyncManyResult,
    StitchSyncResult,
    SyncAttempt,
    SyncOutcome,
    check_source_id,
)
from prefect_stitch.tasks import (
    DEFAULT_LOG_TAIL_LINES,
    DEFAULT_MAX_LOAD_WAIT_SECONDS,
    AlreadyRunningPolicy,
    LoadsMode,
    pause_stitch_source,
    start_stitch_sync,
    wait_for_stitch_sync,
)

__all__ = [
    "SyncOptions",
    "load_credentials",
    "run_stitch_sync",
    "run_stitch_sync_many",
    "stitch_sync_flow",
    "stitch_sync_many_flow",
    "sync_source",
]

T = TypeVar("T")

_CANCEL_GRACE_SECONDS = 25.0

PollInterval = Annotated[
    float,
    Field(
        gt=0,
        title="Poll interval (seconds)",
        description=(
            "Seconds between status polls. Stitch allows 30 jobs requests per 10 minutes "
            "per account, so polls of one account are shared and never faster than that "
            "budget allows."
        ),
    ),
]
MaxWait = Annotated[
    float,
    Field(
        gt=0,
        title="Maximum wait (seconds)",
        description="Wall-clock limit of the whole sync: trigger, retries, wait and "
        "replication retries included.",
    ),
]
ReplicationRetries = Annotated[
    int,
    Field(
        ge=0,
        le=100,
        title="Replication retries",
        description="Start the Stitch job again this many times when it fails or is "
        "terminated (never after a timeout or an API error).",
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
MaxLoadWait = Annotated[
    float,
    Field(
        gt=0,
        title="Maximum load wait (seconds)",
        description="How long to wait for the data to load, from the extraction's success.",
    ),
]
ReplicationRetryDelay = Annotated[
    float,
    Field(
        ge=0,
        title="Replication retry delay (seconds)",
        description="Seconds between a failed Stitch job and its re-run.",
    ),
]


async def load_credentials(credentials: StitchCredentials | str) -> StitchCredentials:
    """Resolve the ``credentials`` parameter: a block, or the name of a saved block.

    Args:
        credentials: A ``StitchCredentials`` block or a block document name.

    Returns:
        The credentials.

    Raises:
        StitchConfigurationError: No block has that name, or the value is of the
            wrong type.

    Example:
        ```python
        import asyncio
        from prefect_stitch.flows import load_credentials

        credentials = asyncio.run(load_credentials("stitch"))
        ```
    """
    if isinstance(credentials, StitchCredentials):
        return credentials
    if isinstance(credentials, str) and credentials.strip():
        name = credentials.strip()
        try:
            return await StitchCredentials.aload(name)
        except ValueError as exc:
            raise StitchConfigurationError(
                f"credentials: there is no Stitch Credentials block named {name!r}. "
                "Create it in the Prefect UI (Blocks, Stitch Credentials) or with "
                f"StitchCredentials(access_token=..., client_id=...).save({name!r})",
                parameter="credentials",
            ) from exc
    raise StitchConfigurationError(
        "credentials must be a StitchCredentials block or the name of a saved one, "
        f"got {type(credentials).__name__}",
        parameter="credentials",
    )


@dataclass(frozen=True)
class SyncOptions:
    """The knobs of one source's sync, shared by the single- and many-source flows.

    Example:
        ```python
        from prefect_stitch.flows import SyncOptions

        print(SyncOptions(replication_retries=1).replication_retry_delay_seconds)  # 60.0
        ```
    """

    poll_interval_seconds: float = 30.0
    max_wait_seconds: float = 6 * 3600.0
    on_already_running: AlreadyRunningPolicy = "attach"
    stop_on_timeout: bool = True
    fetch_logs_on_failure: bool = True
    log_tail_lines: int = DEFAULT_LOG_TAIL_LINES
    replication_retries: int = 0
    replication_retry_delay_seconds: float = 60.0
    global_rate_limit: str | None = None
    write_artifact: bool = True
    loads: LoadsMode = "wait"
    max_load_wait_seconds: float = DEFAULT_MAX_LOAD_WAIT_SECONDS

    def check(self) -> "SyncOptions":
        """Refuse bad knobs before any request.

        Returns:
            The options.

        Raises:
            StitchConfigurationError: A knob is out of range.
        """
        if self.loads not in ("wait", "check", "ignore"):
            raise StitchConfigurationError(
                f"loads must be 'wait', 'check' or 'ignore', got {self.loads!r}",
                parameter="loads",
            )
        for name in ("poll_interval_seconds", "max_wait_seconds", "max_load_wait_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise StitchConfigurationError(
                    f"{name} must be a positive number of seconds, got {value!r}", parameter=name
                )
        retries = self.replication_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 100:
            raise StitchConfigurationError(
                f"replication_retries must be an integer from 0 to 100, got {retries!r}",
                parameter="replication_retries",
            )
        delay = self.replication_retry_delay_seconds
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not delay >= 0:
            raise StitchConfigurationError(
                f"replication_retry_delay_seconds must be >= 0, got {delay!r}",
                parameter="replication_retry_delay_seconds",
            )
        if self.on_already_running not in ("attach", "fail", "wait_then_start"):
            raise StitchConfigurationError(
                "on_already_running must be 'attach', 'fail' or 'wait_then_start', "
                f"got {self.on_already_running!r}",
                parameter="on_already_running",
            )
        return self


@dataclass
class _SourceMemory:
    """What a flow run remembers of one source's sync across its own (Prefect) retries."""

    pending: StitchSyncHandle | None = None  # a job followed whose verdict was not seen
    attempts: list[SyncAttempt] = field(default_factory=list)


_flow_memory: OrderedDict[tuple[UUID, int], _SourceMemory] = OrderedDict()
_flow_memory_lock = threading.Lock()
_MAX_REMEMBERED_SOURCES = 10_000


def _source_memory(source_id: int) -> _SourceMemory:
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return _SourceMemory()
    key = (context.flow_run.id, source_id)
    with _flow_memory_lock:
        memory = _flow_memory.get(key)
        if memory is None:
            memory = _flow_memory[key] = _SourceMemory()
            while len(_flow_memory) > _MAX_REMEMBERED_SOURCES:
                _flow_memory.popitem(last=False)
        return memory


def _not_ours(handle: StitchSyncHandle, exc: StitchReplicationFailed | None, result: Any) -> str:
    job = result.job_name if result is not None else None
    verdict = "succeeded" if exc is None else str(exc).splitlines()[0]
    return (
        f"The job followed for source {handle.source_id} ({job}) was not started by this run: "
        f"it started before this run first asked Stitch for a job, so a retried trigger met "
        f"it running (on_already_running='fail'). It ended: {verdict}"
    )


async def sync_source(
    credentials: StitchCredentials,
    source_id: int,
    options: SyncOptions,
    *,
    trigger_slots: asyncio.Semaphore | None = None,
    started: StitchSyncHandle | None = None,
    deadline: float | None = None,
) -> StitchSyncResult:
    """Run one source's sync to its end: trigger, wait, judge, re-run on failure.

    * ``max_wait_seconds`` bounds everything: the trigger and its retries, the wait,
      and every replication retry.
    * ``replication_retries`` re-runs a failed or terminated job (never after a
      timeout or an API error), after ``replication_retry_delay_seconds``; every job is
      listed in the result, the artifact and the final error.
    * A Prefect retry of the flow run starts a new job when the previous attempt saw
      its job's final failed record, and otherwise follows the job the previous attempt
      started (never two jobs of the source at once).
    * A job that turns out not to be ours is handled as ``on_already_running`` says.

    Args:
        credentials: The credentials.
        source_id: The Stitch source.
        options: The knobs.
        trigger_slots: Bounds how many triggers run at once (many sources).
        started: The handle of a job already triggered (``StitchSource.trigger``): it is
            waited for first.
        deadline: ``time.monotonic()`` bound of the whole sync (default: now plus
            ``max_wait_seconds``).

    Returns:
        The result of the job that succeeded.

    Raises:
        StitchReplicationFailed: The last job failed (its ``attempts`` list them all).
        StitchJobAlreadyRunning: A job not started by this run ran, and the policy is
            ``"fail"``.
        StitchSyncTimeout: ``max_wait_seconds`` ran out.

    Example:
        ```python
        from prefect import flow
        from prefect_stitch import StitchCredentials
        from prefect_stitch.flows import SyncOptions, sync_source

        @flow
        async def nightly() -> None:
            credentials = await StitchCredentials.aload("stitch")
            await sync_source(credentials, 120643, SyncOptions(replication_retries=1))
        ```
    """
    deadline = deadline if deadline is not None else time.monotonic() + options.max_wait_seconds
    memory = _source_memory(source_id)
    if started is not None and memory.pending is None:
        memory.pending = started
    trigger = _trigger_task(credentials)
    reruns_left = options.replication_retries

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise StitchSyncTimeout(
                f"The sync of source {source_id} ran out of max_wait_seconds "
                f"({options.max_wait_seconds:.0f} s)",
                source_id=source_id,
                job_name=None,
                max_wait_seconds=options.max_wait_seconds,
                stopped=False,
                attempts=memory.attempts,
            )
        return left

    while True:
        handle = memory.pending
        if handle is None:
            async with trigger_slots or contextlib.nullcontext():
                handle = await trigger(
                    credentials,
                    source_id,
                    options.on_already_running,
                    remaining(),
                    options.loads,
                    options.global_rate_limit,
                )
            memory.pending = handle
        elif handle is not started:
            get_run_logger().info(
                "A previous attempt of this flow run started Stitch job %s of source %s and "
                "did not see it end: following it instead of starting another",
                handle.job_name or "(name unknown)",
                source_id,
            )
        failure: StitchReplicationFailed | None = None
        result: StitchSyncResult | None = None
        try:
            result = await wait_for_stitch_sync(
                credentials,
                source_id,
                handle,
                poll_interval_seconds=options.poll_interval_seconds,
                max_wait_seconds=remaining(),
                stop_on_timeout=options.stop_on_timeout,
                fetch_logs_on_failure=options.fetch_logs_on_failure,
                log_tail_lines=options.log_tail_lines,
                global_rate_limit=options.global_rate_limit,
                write_artifact=options.write_artifact,
                earlier_attempts=memory.attempts,
                loads=options.loads,
                max_load_wait_seconds=options.max_load_wait_seconds,
            )
        except StitchReplicationFailed as exc:
            failure = exc
            result = exc.result
        memory.pending = None  # a verdict was seen: a retry of the run starts a new job
        if result is not None:
            memory.attempts = list(result.attempts)
        foreign = bool(result is not None and result.attached)
        if foreign and options.on_already_running == "wait_then_start":
            get_run_logger().info(
                "The job that was running for source %s has ended; starting ours", source_id
            )
            continue
        if foreign and handle.origin == "uncertain" and options.on_already_running == "fail":
            raise StitchJobAlreadyRunning(
                _not_ours(handle, failure, result),
                source_id=source_id,
                job_name=None if result is None else result.job_name,
            )
        if failure is None:
            assert result is not None
            return result
        if reruns_left <= 0 or isinstance(failure, StitchLoadFailed):
            raise failure  # a load failure is the warehouse's: extracting again won't fix it
        reruns_left -= 1
        delay = options.replication_retry_delay_seconds
        if delay >= remaining():
            raise failure
        get_run_logger().warning(
            "Stitch job %s of source %s did not succeed; starting it again in %.0f s "
            "(%d replication retries left)",
            failure.job_name,
            source_id,
            delay,
            reruns_left,
        )
        await asyncio.sleep(delay)


async def run_stitch_sync(
    source_id: int,
    credentials: StitchCredentials | str = "stitch",
    *,
    poll_interval_seconds: float = 30.0,
    max_wait_seconds: float = 6 * 3600.0,
    on_already_running: AlreadyRunningPolicy = "attach",
    stop_on_timeout: bool = True,
    fetch_logs_on_failure: bool = True,
    pause_stitch_schedule: bool = False,
    log_tail_lines: int = DEFAULT_LOG_TAIL_LINES,
    replication_retries: int = 0,
    replication_retry_delay_seconds: float = 60.0,
    loads: LoadsMode = "wait",
    max_load_wait_seconds: float = DEFAULT_MAX_LOAD_WAIT_SECONDS,
) -> StitchSyncResult:
    """The body of `stitch_sync_flow`, as a coroutine for async callers.

    It runs the tasks in the current flow run (or without one); use it inside an async
    flow that must not block its event loop while Stitch works.

    Args:
        source_id: The Stitch source id.
        credentials: A block or a block name.
        poll_interval_seconds: Seconds between status polls.
        max_wait_seconds: Wall-clock limit of the whole sync.
        on_already_running: ``"attach"``, ``"fail"`` or ``"wait_then_start"``.
        stop_on_timeout: Ask Stitch to stop the job on timeout.
        fetch_logs_on_failure: Put the log tail into a failure.
        pause_stitch_schedule: Pause Stitch's own schedule of the source first.
        log_tail_lines: Log lines kept on failure.
        replication_retries: Re-run a failed or terminated job this many times.
        replication_retry_delay_seconds: Seconds between a failed job and its re-run.
        loads: ``"wait"`` for the data to load, ``"check"`` its loads once, or ``"ignore"``.
        max_load_wait_seconds: The load wait's bound, from the extraction's success.

    Returns:
        The job's result.

    Example:
        ```python
        from prefect import flow
        from prefect_stitch.flows import run_stitch_sync

        @flow
        async def nightly() -> None:
            result = await run_stitch_sync(120643, "stitch", poll_interval_seconds=60)
            print(result.job_name)
        ```
    """
    check_source_id(source_id)
    options = SyncOptions(
        poll_interval_seconds=poll_interval_seconds,
        max_wait_seconds=max_wait_seconds,
        on_already_running=on_already_running,
        stop_on_timeout=stop_on_timeout,
        fetch_logs_on_failure=fetch_logs_on_failure,
        log_tail_lines=log_tail_lines,
        replication_retries=replication_retries,
        replication_retry_delay_seconds=replication_retry_delay_seconds,
        loads=loads,
        max_load_wait_seconds=max_load_wait_seconds,
    ).check()
    resolved = await load_credentials(credentials)
    if pause_stitch_schedule:
        await pause_stitch_source(resolved, source_id)
    return await sync_source(resolved, source_id, options)


def _trigger_task(credentials: StitchCredentials) -> Any:
    """``start_stitch_sync`` with Prefect retries following the block's retry budget."""
    return start_stitch_sync.with_options(
        retries=credentials.max_retries,
        retry_delay_seconds=[
            min(credentials.retry_backoff_seconds * 2**attempt, 60.0)
            for attempt in range(max(credentials.max_retries, 1))
        ],
    )


def run_cancellable(make_coroutine: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on a helper thread; cancel it if this thread is interrupted.

    Prefect cancels a sync flow run by raising ``TerminationSignal`` in the main thread.
    The coroutine then receives ``asyncio.CancelledError`` where it waits, so its
    clean-up (stopping the Stitch job) runs before the exception goes on. The run's
    context variables (flow run, settings) are copied to the helper thread.

    Args:
        make_coroutine: Builds the coroutine (called on the helper thread).

    Returns:
        The coroutine's result.

    Example:
        ```python
        import asyncio
        from prefect_stitch.flows import run_cancellable

        async def answer() -> int:
            await asyncio.sleep(0.1)
            return 42

        print(run_cancellable(answer))  # 42
        ```
    """
    context = contextvars.copy_context()
    outcome: dict[str, Any] = {}
    started = threading.Event()

    async def main() -> T:
        outcome["loop"] = asyncio.get_running_loop()
        outcome["task"] = asyncio.current_task()
        started.set()
        # One Prefect API client for every task run of this loop (without it, each task
        # run would build its own: a connection pool and a TLS context apiece).
        async with AsyncClientContext.get_or_create():
            return await make_coroutine()

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(main())
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            started.set()

    thread = threading.Thread(
        target=context.run, args=(target,), name="stitch-sync-body", daemon=True
    )
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.2)
    except BaseException:
        started.wait(1.0)
        loop, body = outcome.get("loop"), outcome.get("task")
        if loop is not None and body is not None:
            with contextlib.suppress(RuntimeError):  # the loop may have just finished
                loop.call_soon_threadsafe(body.cancel)
        thread.join(_CANCEL_GRACE_SECONDS)
        raise
    if "error" in outcome:
        raise outcome["error"]
    value: T = outcome["value"]
    return value


@flow(
    name="stitch-sync",
    flow_run_name="stitch-sync-{source_id}",
    description=(
        "Start a Stitch replication job for one source, wait for it to end, and fail "
        "with the phase, exit status and Stitch's description if any phase failed."
    ),
    persist_result=True,
)
def stitch_sync_flow(
    source_id: SourceId,
    credentials: StitchCredentials | str = "stitch",
    poll_interval_seconds: PollInterval = 30.0,
    max_wait_seconds: MaxWait = 6 * 3600.0,
    on_already_running: AlreadyRunningPolicy = "attach",
    stop_on_timeout: bool = True,
    fetch_logs_on_failure: bool = True,
    pause_stitch_schedule: bool = False,
    replication_retries: ReplicationRetries = 0,
    replication_retry_delay_seconds: ReplicationRetryDelay = 60.0,
    loads: Loads = "wait",
    max_load_wait_seconds: MaxLoadWait = DEFAULT_MAX_LOAD_WAIT_SECONDS,
) -> StitchSyncResult:
    """Run one Stitch replication job to its end and return its result.

    Stitch's answer is trusted only when it is final: the job is matched by name in
    Stitch's extraction list (the newest record right after a trigger is the
    *previous* job), every non-zero exit status fails (1, -9, ...), and a job whose
    statuses are all null with a completion time was terminated, not running.

    Args:
        source_id: The Stitch source id (a positive integer), as in
            the number after /sources/ in the address of the source's page in the
            Stitch app (app.stitchdata.com/client/CLIENT_ID/pipeline/v2/sources/SOURCE_ID).
        credentials: A StitchCredentials block, or the name of a saved one.
        poll_interval_seconds: Seconds between status polls.
        max_wait_seconds: Wall-clock limit of the wait, polls and retries included.
        on_already_running: When a job is already running for the source: "attach"
            follows it and reports its verdict, "fail" raises StitchJobAlreadyRunning,
            "wait_then_start" waits for it and then starts a fresh job.
        stop_on_timeout: Stop the Stitch job when max_wait_seconds is exceeded.
        fetch_logs_on_failure: Put the last lines of the extraction log into the error
            and the artifact when the job fails.
        pause_stitch_schedule: Pause Stitch's own schedule of the source first, so only
            orchestrated runs happen (manual and API runs still work when paused).
        replication_retries: Start the job again this many times when it fails or is
            terminated (not after a timeout or an API error).
        replication_retry_delay_seconds: Seconds between a failed job and its re-run.
        loads: After every phase exited 0: "wait" until each stream that received rows
            has loaded into the warehouse (or one fails), "check" once that none is in
            an error state, or "ignore" the loads.
        max_load_wait_seconds: How long to wait for the loads, from the extraction's
            success (a bound of its own).

    Returns:
        The job's result (job name, times, exit statuses, Stitch link, polls, every job
        it ran in ``attempts``, and each stream's load in ``loads``).

    Raises:
        StitchReplicationFailed: A phase exited non-zero; ``failed_phases`` lists them.
        StitchLoadFailed: Every phase exited 0 but a stream's load failed
            (``failed_streams``).
        StitchLoadTimeout: The data did not load within ``max_load_wait_seconds``.
        StitchJobTerminated: The job was terminated (statuses null, completion set).
        StitchSyncTimeout: The job did not end within ``max_wait_seconds``.
        StitchJobAlreadyRunning: A job was running and ``on_already_running="fail"``.
        StitchAPIError: Stitch refused a request (401, 404, invalid source, ...).
        StitchConfigurationError: Bad input (unknown block name, ...).

    Example:
        From a script, or as a subflow of a sync or an async flow:
        ```python
        from prefect import flow
        from prefect_stitch import StitchReplicationFailed, stitch_sync_flow

        result = stitch_sync_flow(source_id=120643, credentials="stitch")
        print(result.job_name, result.duration_seconds)

        @flow
        def pipeline() -> None:
            try:
                stitch_sync_flow(source_id=120643)
            except StitchReplicationFailed as exc:
                print(exc.failed_phases)
                raise
        ```
    """
    return run_cancellable(
        lambda: run_stitch_sync(
            source_id,
            credentials,
            poll_interval_seconds=poll_interval_seconds,
            max_wait_seconds=max_wait_seconds,
            on_already_running=on_already_running,
            stop_on_timeout=stop_on_timeout,
            fetch_logs_on_failure=fetch_logs_on_failure,
            pause_stitch_schedule=pause_stitch_schedule,
            replication_retries=replication_retries,
            replication_retry_delay_seconds=replication_retry_delay_seconds,
            loads=loads,
            max_load_wait_seconds=max_load_wait_seconds,
        )
    )


SourceIds = Annotated[
    list[SourceId],
    Field(min_length=1, max_length=5000, description="The Stitch sources to sync."),
]


def _outcome(source_id: int, value: StitchSyncResult | BaseException) -> SyncOutcome:
    if isinstance(value, StitchSyncResult):
        return SyncOutcome(source_id=source_id, status="succeeded", result=value)
    status: Any = "error"
    result = None
    if isinstance(value, StitchReplicationFailed):
        status = "terminated" if isinstance(value, StitchJobTerminated) else "failed"
        if isinstance(value, StitchLoadFailed):
            status = "load_failed"
        result = value.result
    elif isinstance(value, StitchSyncTimeout):
        status = "timed_out"
    elif isinstance(value, asyncio.CancelledError):
        status = "cancelled"
    first_line = (str(value) or type(value).__name__).splitlines()[0]
    return SyncOutcome(
        source_id=source_id,
        status=status,
        result=result,
        error_type=type(value).__name__,
        message=first_line,
    )


async def run_stitch_sync_many(
    source_ids: list[int],
    credentials: StitchCredentials | str = "stitch",
    *,
    poll_interval_seconds: float = 30.0,
    max_wait_seconds: float = 6 * 3600.0,
    max_concurrent: int = 10,
    fail_fast: bool = False,
    on_already_running: AlreadyRunningPolicy = "attach",
    stop_on_timeout: bool = True,
    fetch_logs_on_failure: bool = True,
    global_rate_limit: str | None = None,
    replication_retries: int = 0,
    replication_retry_delay_seconds: float = 60.0,
    loads: LoadsMode = "wait",
    max_load_wait_seconds: float = DEFAULT_MAX_LOAD_WAIT_SECONDS,
) -> StitchSyncManyResult:
    """The body of `stitch_sync_many_flow`, as a coroutine for async callers.

    Args:
        source_ids: The sources to sync (distinct positive integers).
        credentials: A block or a block name.
        poll_interval_seconds: Seconds between status polls of the account.
        max_wait_seconds: Wall-clock limit of each source's wait.
        max_concurrent: How many triggers run at once.
        fail_fast: Stop everything at the first failure.
        on_already_running: ``"attach"``, ``"fail"`` or ``"wait_then_start"``.
        stop_on_timeout: Stop a Stitch job whose wait times out.
        fetch_logs_on_failure: Put the log tail into each failure.
        global_rate_limit: A Prefect global concurrency limit for the account's jobs
            requests (see [`wait_for_stitch_sync`][prefect_stitch.tasks.wait_for_stitch_sync]).
        replication_retries: Re-run each source's failed or terminated job this many
            times.
        replication_retry_delay_seconds: Seconds between a failed job and its re-run.
        loads: ``"wait"``, ``"check"`` or ``"ignore"`` (see
            [`stitch_sync_flow`][prefect_stitch.flows.stitch_sync_flow]).
        max_load_wait_seconds: Each source's load wait bound.

    Returns:
        Every source's outcome, when all succeeded.

    Raises:
        StitchSyncManyFailed: Some sources did not succeed; ``.results`` has them all.

    Example:
        ```python
        from prefect import flow
        from prefect_stitch.flows import run_stitch_sync_many

        @flow
        async def nightly() -> None:
            summary = await run_stitch_sync_many([120643, 120644], "stitch")
            print(summary.succeeded)
        ```
    """
    ids = [check_source_id(source_id, "source_ids") for source_id in source_ids]
    if not ids:
        raise StitchConfigurationError("source_ids is empty", parameter="source_ids")
    if len(set(ids)) != len(ids):
        raise StitchConfigurationError(
            "source_ids has duplicates: Stitch runs one job per source at a time",
            parameter="source_ids",
        )
    if max_concurrent < 1:
        raise StitchConfigurationError("max_concurrent must be >= 1", parameter="max_concurrent")
    options = SyncOptions(
        poll_interval_seconds=poll_interval_seconds,
        max_wait_seconds=max_wait_seconds,
        on_already_running=on_already_running,
        stop_on_timeout=stop_on_timeout,
        fetch_logs_on_failure=fetch_logs_on_failure,
        replication_retries=replication_retries,
        replication_retry_delay_seconds=replication_retry_delay_seconds,
        global_rate_limit=global_rate_limit,
        write_artifact=False,  # one summary table instead of an artifact per source
        loads=loads,
        max_load_wait_seconds=max_load_wait_seconds,
    ).check()
    resolved = await load_credentials(credentials)
    triggers = asyncio.Semaphore(max_concurrent)
    requests_before = sum(poller.requests for poller in pollers_of(resolved))
    logger = get_run_logger()
    logger.info(
        "Syncing %d Stitch sources (%d triggers at a time, one shared poll per tick)",
        len(ids),
        max_concurrent,
    )

    async def sync_one(source_id: int) -> StitchSyncResult:
        return await sync_source(resolved, source_id, options, trigger_slots=triggers)

    running = {asyncio.create_task(sync_one(source_id)): source_id for source_id in ids}
    outcomes: dict[int, StitchSyncResult | BaseException] = {}
    try:
        pending = set(running)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                error = finished.exception()
                outcomes[running[finished]] = error if error is not None else finished.result()
            if fail_fast and any(isinstance(v, BaseException) for v in outcomes.values()):
                for task in pending:
                    task.cancel()
                for task, outcome in zip(
                    pending, await asyncio.gather(*pending, return_exceptions=True), strict=True
                ):
                    outcomes[running[task]] = outcome
                pending = set()
    finally:
        for task in running:  # the run itself was cancelled: every wait stops its job
            task.cancel()
    summary = [_outcome(source_id, outcomes[source_id]) for source_id in ids]
    poller_requests = sum(poller.requests for poller in pollers_of(resolved)) - requests_before
    await _write_many_artifact(summary)
    failures = {o.source_id: outcomes[o.source_id] for o in summary if not o.ok}
    if failures:
        named = ", ".join(
            f"{o.source_id} ({o.error_type}: {o.message})" for o in summary if not o.ok
        )
        raise StitchSyncManyFailed(
            f"{len(failures)} of {len(ids)} Stitch syncs did not succeed: {named}",
            failures={k: v for k, v in failures.items() if isinstance(v, BaseException)},
            results={o.source_id: o for o in summary},
        )
    logger.info("All %d Stitch syncs succeeded", len(ids))
    return StitchSyncManyResult(outcomes=summary, jobs_requests=poller_requests)


async def _write_many_artifact(summary: list[SyncOutcome]) -> None:
    from prefect.artifacts import acreate_table_artifact

    rows = [
        {
            "source": outcome.source_id,
            "status": outcome.status,
            "job": outcome.result.job_name if outcome.result else "",
            "duration (s)": (
                f"{outcome.result.duration_seconds:.0f}"
                if outcome.result and outcome.result.duration_seconds is not None
                else ""
            ),
            "error": outcome.message or "",
        }
        for outcome in summary
    ]
    try:
        await acreate_table_artifact(
            table=rows,
            key="stitch-sync-many",
            description=(f"{sum(o.ok for o in summary)} of {len(summary)} Stitch syncs succeeded"),
        )
    except Exception as exc:  # reporting never fails the run
        get_run_logger().warning("Could not write the summary artifact: %s", exc)


@flow(
    name="stitch-sync-many",
    description=(
        "Sync many Stitch sources of one account at once: bounded concurrent triggers, one "
        "shared status poll per tick for all of them, within Stitch's rate budget."
    ),
    persist_result=True,
)
def stitch_sync_many_flow(
    source_ids: SourceIds,
    credentials: StitchCredentials | str = "stitch",
    poll_interval_seconds: PollInterval = 30.0,
    max_wait_seconds: MaxWait = 6 * 3600.0,
    max_concurrent: Annotated[int, Field(ge=1, le=100)] = 10,
    fail_fast: bool = False,
    on_already_running: AlreadyRunningPolicy = "attach",
    stop_on_timeout: bool = True,
    fetch_logs_on_failure: bool = True,
    global_rate_limit: str | None = None,
    replication_retries: ReplicationRetries = 0,
    replication_retry_delay_seconds: ReplicationRetryDelay = 60.0,
    loads: Loads = "wait",
    max_load_wait_seconds: MaxLoadWait = DEFAULT_MAX_LOAD_WAIT_SECONDS,
) -> StitchSyncManyResult:
    """Sync many Stitch sources of one account at once, within Stitch's rate budget.

    Stitch's extraction list has every source's last completed job, and the account may
    make 30 jobs requests per 10 minutes. So all the waits share one poller: each tick
    reads the listing once (all its pages) and settles every waiting source, and the
    tick stretches so the budget holds even with hundreds of sources. Each source has
    its own task runs, result and typed failure.

    Args:
        source_ids: The Stitch sources to sync (distinct positive integers).
        credentials: A StitchCredentials block, or the name of a saved one.
        poll_interval_seconds: Seconds between polls of the account's extraction list.
        max_wait_seconds: Wall-clock limit of each source's wait.
        max_concurrent: How many triggers are sent at a time.
        fail_fast: At the first failure, stop the other Stitch jobs and fail at once;
            otherwise wait for every source and fail at the end if any failed.
        on_already_running: "attach", "fail" or "wait_then_start" (see stitch_sync_flow).
        stop_on_timeout: Stop a Stitch job whose wait times out.
        fetch_logs_on_failure: Put the extraction log's tail into each failure.
        global_rate_limit: Name of a Prefect global concurrency limit (a rate limit with
            slot decay) shared by every process syncing this account; created if
            missing. By default "stitch-jobs-" followed by the account id is used when
            it exists.
        replication_retries: Start a source's job again this many times when it fails
            or is terminated.
        replication_retry_delay_seconds: Seconds between a failed job and its re-run.
        loads: "wait" for each source's data to load, "check" once, or "ignore".
        max_load_wait_seconds: How long to wait for each source's loads.

    Returns:
        Every source's outcome, in input order.

    Raises:
        StitchSyncManyFailed: Some sources did not succeed; the message counts and names
            them, ``.results`` has every outcome and ``.failures`` every error.

    Example:
        ```python
        from prefect_stitch import stitch_sync_many_flow

        summary = stitch_sync_many_flow(source_ids=[120643, 120644, 120645])
        print(summary.succeeded, summary.jobs_requests)
        ```
    """
    return run_cancellable(
        lambda: run_stitch_sync_many(
            source_ids,
            credentials,
            poll_interval_seconds=poll_interval_seconds,
            max_wait_seconds=max_wait_seconds,
            max_concurrent=max_concurrent,
            fail_fast=fail_fast,
            on_already_running=on_already_running,
            stop_on_timeout=stop_on_timeout,
            fetch_logs_on_failure=fetch_logs_on_failure,
            global_rate_limit=global_rate_limit,
            replication_retries=replication_retries,
            replication_retry_delay_seconds=replication_retry_delay_seconds,
            loads=loads,
            max_load_wait_seconds=max_load_wait_seconds,
        )
    )
