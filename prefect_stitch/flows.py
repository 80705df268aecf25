"""``stitch_sync_flow``: start a Stitch replication job, watch it to its end, tell the truth.

The whole story of a sync:

1. load the credentials (a block, or a block's name) and build the
   [`SyncOptions`][prefect_stitch.options.SyncOptions] from the parameters, once;
2. optionally pause Stitch's own schedule of the source, so only orchestrated runs happen;
3. start the job (the task *Start Stitch sync*); if one is already running, follow it or
   fail, as ``on_already_running`` says;
4. wait for its record (the task *Wait for Stitch sync*) and judge it: every phase 0 (and,
   with ``loads``, the data loaded) returns a
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

The flows are synchronous so that they can be called as they are from a script, from a
sync parent flow and from an async parent flow. Their body runs on an event loop in a
helper thread, which is cancelled when Prefect cancels the run: that is how the wait learns
of the cancellation and stops the Stitch job before the process ends.
"""

# No ``from __future__ import annotations`` here: Prefect builds the flows' parameter
# models from their annotations at run time, and string annotations of the ``Annotated``
# aliases below would leave a deployment run's parameter model undefined.

from typing import Annotated, Any

from prefect import flow
from pydantic import AfterValidator, Field

from prefect_stitch._engine.run import SourceSync, suspender_for, sync_many
from prefect_stitch._engine.runner import load_credentials, run_flow_body
from prefect_stitch._moved import module_getattr
from prefect_stitch.credentials import StitchCredentials
from prefect_stitch.errors import StitchConfigurationError
from prefect_stitch.models import SourceId, StitchSyncManyResult, StitchSyncResult, check_source_id
from prefect_stitch.options import (
    DEFAULTS,
    FetchLogsOnFailure,
    GlobalRateLimit,
    Loads,
    LogTailLines,
    MaxLoadWaitSeconds,
    MaxWaitSeconds,
    OnAlreadyRunning,
    PauseStitchSchedule,
    PollIntervalSeconds,
    ReplicationRetries,
    ReplicationRetryDelaySeconds,
    StopOnTimeout,
    SuspendWhileWaiting,
    SyncOptions,
)

__all__ = [
    "SyncOptions",
    "run_stitch_sync",
    "run_stitch_sync_many",
    "stitch_sync_flow",
    "stitch_sync_many_flow",
]


def _distinct(source_ids: list[int]) -> list[int]:
    """Refuse a source listed twice: Stitch runs one job per source at a time."""
    if len(set(source_ids)) != len(source_ids):
        raise ValueError("source_ids has duplicates: Stitch runs one job per source at a time")
    return source_ids


SourceIds = Annotated[
    list[SourceId],
    Field(min_length=1, max_length=5000, description="The Stitch sources to sync (distinct)."),
    AfterValidator(_distinct),
]
MaxConcurrent = Annotated[
    int, Field(ge=1, le=100, description="How many triggers are sent at a time.")
]


async def run_stitch_sync(
    source_id: int, credentials: StitchCredentials | str = "stitch", **options: Any
) -> StitchSyncResult:
    """The body of `stitch_sync_flow`, as a coroutine for async callers.

    It runs the tasks in the current flow run (or without one); use it inside an async
    flow that must not block its event loop while Stitch works.

    Args:
        source_id: The Stitch source id.
        credentials: A block or a block name.
        **options: Any [`SyncOptions`][prefect_stitch.options.SyncOptions] field
            (``poll_interval_seconds=60``, ``loads="ignore"``, ...); unset ones take
            their default.

    Returns:
        The job's result.

    Raises:
        StitchConfigurationError: Bad input (an unknown option, a value out of range, an
            unknown block name), before any request.
        StitchReplicationFailed: The job failed (``StitchLoadFailed``: its load;
            ``StitchJobTerminated``: it was terminated).
        StitchSyncTimeout: It ran past ``max_wait_seconds`` (``StitchLoadTimeout``: its
            data did not load in time).
        StitchJobAlreadyRunning: A job was running and ``on_already_running="fail"``.
        StitchAPIError: Stitch refused a request, or could not be reached.

    Example:
        ```python
        from prefect import flow
        from prefect_stitch import run_stitch_sync

        @flow
        async def nightly() -> None:
            result = await run_stitch_sync(120643, "stitch", poll_interval_seconds=60)
            print(result.job_name)
        ```
    """
    check_source_id(source_id)
    checked = SyncOptions.of(**options)
    resolved = await load_credentials(credentials)
    return await SourceSync(
        resolved, source_id, checked, suspender=suspender_for(resolved, checked, source_id)
    ).run()


async def run_stitch_sync_many(
    source_ids: list[int],
    credentials: StitchCredentials | str = "stitch",
    *,
    max_concurrent: int = 10,
    fail_fast: bool = False,
    **options: Any,
) -> StitchSyncManyResult:
    """The body of `stitch_sync_many_flow`, as a coroutine for async callers.

    Args:
        source_ids: The sources to sync (distinct positive integers).
        credentials: A block or a block name.
        max_concurrent: How many triggers run at once.
        fail_fast: Stop everything at the first failure.
        **options: Any [`SyncOptions`][prefect_stitch.options.SyncOptions] field, for
            every source.

    Returns:
        Every source's outcome, when all succeeded.

    Raises:
        StitchSyncManyFailed: Some sources did not succeed; ``.results`` has them all.
        StitchConfigurationError: Bad input, before any request.

    Example:
        ```python
        from prefect import flow
        from prefect_stitch import run_stitch_sync_many

        @flow
        async def nightly() -> None:
            summary = await run_stitch_sync_many([120643, 120644], "stitch")
            print(summary.succeeded)
        ```
    """
    ids = [check_source_id(source_id, "source_ids") for source_id in source_ids]
    if not ids:
        raise StitchConfigurationError("source_ids is empty", parameter="source_ids")
    try:
        _distinct(ids)
    except ValueError as exc:
        raise StitchConfigurationError(str(exc), parameter="source_ids") from None
    if (
        isinstance(max_concurrent, bool)
        or not isinstance(max_concurrent, int)
        or max_concurrent < 1
    ):
        raise StitchConfigurationError("max_concurrent must be >= 1", parameter="max_concurrent")
    checked = SyncOptions.of(**options)
    resolved = await load_credentials(credentials)
    return await sync_many(
        resolved, ids, checked, max_concurrent=max_concurrent, fail_fast=fail_fast
    )


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
    poll_interval_seconds: PollIntervalSeconds = DEFAULTS.poll_interval_seconds,
    max_wait_seconds: MaxWaitSeconds = DEFAULTS.max_wait_seconds,
    on_already_running: OnAlreadyRunning = DEFAULTS.on_already_running,
    stop_on_timeout: StopOnTimeout = DEFAULTS.stop_on_timeout,
    fetch_logs_on_failure: FetchLogsOnFailure = DEFAULTS.fetch_logs_on_failure,
    pause_stitch_schedule: PauseStitchSchedule = DEFAULTS.pause_stitch_schedule,
    replication_retries: ReplicationRetries = DEFAULTS.replication_retries,
    replication_retry_delay_seconds: ReplicationRetryDelaySeconds = (
        DEFAULTS.replication_retry_delay_seconds
    ),
    loads: Loads = DEFAULTS.loads,
    max_load_wait_seconds: MaxLoadWaitSeconds = DEFAULTS.max_load_wait_seconds,
    log_tail_lines: LogTailLines = DEFAULTS.log_tail_lines,
    global_rate_limit: GlobalRateLimit = DEFAULTS.global_rate_limit,
    suspend_while_waiting: SuspendWhileWaiting = DEFAULTS.suspend_while_waiting,
) -> StitchSyncResult:
    """Run one Stitch replication job to its end and return its result.

    Stitch's answer is trusted only when it is final: the job is matched by name in
    Stitch's extraction list (the newest record right after a trigger is the
    *previous* job), every non-zero exit status fails (1, -9, ...), and a job whose
    statuses are all null with a completion time was terminated, not running.

    Every parameter but the first two is a sync option (declared, with its default and
    its range, in [`SyncOptions`][prefect_stitch.options.SyncOptions]); the descriptions
    below are what a deployment's form shows.

    Args:
        source_id: The Stitch source id (a positive integer): the number after /sources/
            in the address of the source's page in the Stitch app
            (app.stitchdata.com/client/CLIENT_ID/pipeline/v2/sources/SOURCE_ID).
        credentials: A StitchCredentials block, or the name of a saved one.
        poll_interval_seconds: Seconds between status polls. Stitch allows 30 jobs requests per 10
            minutes per account, so the polls of an account are shared and never faster than that
            budget allows.
        max_wait_seconds: Wall-clock limit of the whole sync: the trigger and its retries, the wait,
            and every replication retry. By default 24 hours, as long as Stitch lets a job run (a
            first historical sync may take that long); set a tighter bound where a long job means
            trouble.
        on_already_running: When a job is already running for the source: attach follows it and
            reports its verdict, fail raises StitchJobAlreadyRunning, wait_then_start waits for it
            to end and then starts a fresh job.
        stop_on_timeout: Ask Stitch to stop the job when the sync runs past its maximum wait (only a
            job this run started).
        fetch_logs_on_failure: Put the last lines of the extraction log into the failure and the
            artifact when the job fails.
        pause_stitch_schedule: Pause Stitch's own schedule of the source first, so only orchestrated
            runs happen (jobs started through the API still run on a paused source).
        replication_retries: Start the Stitch job again this many times when it fails or is
            terminated (never after a timeout, an API error or a failed load).
        replication_retry_delay_seconds: Seconds between a failed Stitch job and its re-run.
        loads: After every phase exited 0: wait for the data to load into the warehouse, check the
            loads once, or ignore them.
        max_load_wait_seconds: How long to wait for the data to load, from the extraction's success
            (a bound of its own, outside the maximum wait).
        log_tail_lines: How many lines of the extraction log a failure shows (0: none).
        global_rate_limit: Name of a Prefect global concurrency limit (a rate limit with slot decay)
            that paces the account's jobs requests across processes; created if missing. By default
            stitch-jobs- followed by the account id is used when it exists.
        suspend_while_waiting: Suspend the flow run while the Stitch job runs, so that no process,
            pod or worker slot is held: the account's watcher (stitch_watch_flow) resumes it when
            the job has a verdict. Only a deployment's run (not a subflow) with a watcher of the
            account running can suspend; otherwise the run waits in its process and says why.

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
    options = _options_of(locals())
    return run_flow_body(lambda: run_stitch_sync(source_id, credentials, **options))


def _many_run_name() -> str:
    """``stitch-sync-120643-and-2-more``: the run's first source, and how many more."""
    from prefect.runtime import flow_run

    ids = list(flow_run.parameters.get("source_ids") or [])
    if not ids:
        return "stitch-sync-many"
    more = f"-and-{len(ids) - 1}-more" if len(ids) > 1 else ""
    return f"stitch-sync-{ids[0]}{more}"


@flow(
    name="stitch-sync-many",
    flow_run_name=_many_run_name,
    description=(
        "Sync many Stitch sources of one account at once: bounded concurrent triggers, one "
        "shared status poll per tick for all of them, within Stitch's rate budget."
    ),
    persist_result=True,
)
def stitch_sync_many_flow(
    source_ids: SourceIds,
    credentials: StitchCredentials | str = "stitch",
    poll_interval_seconds: PollIntervalSeconds = DEFAULTS.poll_interval_seconds,
    max_wait_seconds: MaxWaitSeconds = DEFAULTS.max_wait_seconds,
    max_concurrent: MaxConcurrent = 10,
    fail_fast: bool = False,
    on_already_running: OnAlreadyRunning = DEFAULTS.on_already_running,
    stop_on_timeout: StopOnTimeout = DEFAULTS.stop_on_timeout,
    fetch_logs_on_failure: FetchLogsOnFailure = DEFAULTS.fetch_logs_on_failure,
    global_rate_limit: GlobalRateLimit = DEFAULTS.global_rate_limit,
    replication_retries: ReplicationRetries = DEFAULTS.replication_retries,
    replication_retry_delay_seconds: ReplicationRetryDelaySeconds = (
        DEFAULTS.replication_retry_delay_seconds
    ),
    loads: Loads = DEFAULTS.loads,
    max_load_wait_seconds: MaxLoadWaitSeconds = DEFAULTS.max_load_wait_seconds,
    pause_stitch_schedule: PauseStitchSchedule = DEFAULTS.pause_stitch_schedule,
    log_tail_lines: LogTailLines = DEFAULTS.log_tail_lines,
    suspend_while_waiting: SuspendWhileWaiting = DEFAULTS.suspend_while_waiting,
) -> StitchSyncManyResult:
    """Sync many Stitch sources of one account at once, within Stitch's rate budget.

    Stitch's extraction list has every source's last completed job, and the account may
    make 30 jobs requests per 10 minutes. So all the waits share one poller: each tick
    reads the listing once (all its pages) and settles every waiting source, and the
    tick stretches so the budget holds even with hundreds of sources. Each source has
    its own task runs, result and typed failure. The sync options apply to every source
    (see [`SyncOptions`][prefect_stitch.options.SyncOptions]).

    Args:
        source_ids: The Stitch sources to sync (distinct positive integers).
        credentials: A StitchCredentials block, or the name of a saved one.
        poll_interval_seconds: Seconds between status polls. Stitch allows 30 jobs requests per 10
            minutes per account, so the polls of an account are shared and never faster than that
            budget allows.
        max_wait_seconds: Wall-clock limit of the whole sync: the trigger and its retries, the wait,
            and every replication retry. By default 24 hours, as long as Stitch lets a job run (a
            first historical sync may take that long); set a tighter bound where a long job means
            trouble.
        max_concurrent: How many triggers are sent at a time.
        fail_fast: At the first failure, stop the other Stitch jobs and fail at once;
            otherwise wait for every source and fail at the end if any failed.
        on_already_running: When a job is already running for the source: attach follows it and
            reports its verdict, fail raises StitchJobAlreadyRunning, wait_then_start waits for it
            to end and then starts a fresh job.
        stop_on_timeout: Ask Stitch to stop the job when the sync runs past its maximum wait (only a
            job this run started).
        fetch_logs_on_failure: Put the last lines of the extraction log into the failure and the
            artifact when the job fails.
        global_rate_limit: Name of a Prefect global concurrency limit (a rate limit with slot decay)
            that paces the account's jobs requests across processes; created if missing. By default
            stitch-jobs- followed by the account id is used when it exists.
        replication_retries: Start the Stitch job again this many times when it fails or is
            terminated (never after a timeout, an API error or a failed load).
        replication_retry_delay_seconds: Seconds between a failed Stitch job and its re-run.
        loads: After every phase exited 0: wait for the data to load into the warehouse, check the
            loads once, or ignore them.
        max_load_wait_seconds: How long to wait for the data to load, from the extraction's success
            (a bound of its own, outside the maximum wait).
        pause_stitch_schedule: Pause Stitch's own schedule of the source first, so only orchestrated
            runs happen (jobs started through the API still run on a paused source).
        log_tail_lines: How many lines of the extraction log a failure shows (0: none).
        suspend_while_waiting: Suspend the flow run while the Stitch job runs, so that no process,
            pod or worker slot is held: the account's watcher (stitch_watch_flow) resumes it when
            the job has a verdict. Only a deployment's run (not a subflow) with a watcher of the
            account running can suspend; otherwise the run waits in its process and says why.

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
    options = _options_of(locals())
    return run_flow_body(
        lambda: run_stitch_sync_many(
            source_ids,
            credentials,
            max_concurrent=max_concurrent,
            fail_fast=fail_fast,
            **options,
        )
    )


def _options_of(parameters: dict[str, Any]) -> dict[str, Any]:
    """A flow's sync options, from its parameters (every flow takes every option)."""
    return {name: parameters[name] for name in SyncOptions.names()}


# Names that moved are still found here, with a DeprecationWarning.
__getattr__ = module_getattr("prefect_stitch.flows")
