"""Prefect tasks: start a Stitch sync, wait for it, stop it, read its log, pause a source.

Each task is one step a user sees in the Prefect UI. They are async; from a sync flow
call them with ``.submit(...).result()`` or use
[`stitch_sync_flow`][prefect_stitch.flows.stitch_sync_flow], which composes them.

Retries: only transient faults are retried (no answer, timeouts, 5xx, 429); never a 4xx
and never a failed replication. The trigger is not idempotent, so a retried trigger
first looks for a job its earlier attempt may have started, and one that meets
``already_running`` follows the running job (settling later, from Stitch's records,
whether it was ours) instead of failing or starting another. No task is cached: each
call talks to Stitch.

Which job is ours is decided from Stitch's records and Stitch's clock only: before acting,
the trigger reads the source's listed record (the *baseline*), and every answer's ``Date``
header gives Stitch's time. The options are checked by
[`SyncOptions`][prefect_stitch.options.SyncOptions], before any request.
"""

from __future__ import annotations

from prefect import task

from prefect_stitch._engine import steps
from prefect_stitch._engine.context import check_credentials, run_logger
from prefect_stitch._moved import module_getattr
from prefect_stitch.credentials import StitchCredentials
from prefect_stitch.models import StitchSyncHandle, StitchSyncResult, SyncAttempt, check_source_id
from prefect_stitch.options import DEFAULTS, AlreadyRunningPolicy, LoadsMode, SyncOptions

_ONE_CALL = steps.ONE_CALL_TASK_SETTINGS

__all__ = [
    "fetch_stitch_extraction_logs",
    "pause_stitch_source",
    "start_stitch_sync",
    "stop_stitch_sync",
    "wait_for_stitch_sync",
]


@task(**steps.START_TASK_SETTINGS)
async def start_stitch_sync(
    credentials: StitchCredentials,
    source_id: int,
    on_already_running: AlreadyRunningPolicy = DEFAULTS.on_already_running,
    max_wait_seconds: float | None = None,
    loads: LoadsMode = DEFAULTS.loads,
    global_rate_limit: str | None = None,
) -> StitchSyncHandle:
    """Start a Stitch replication job for a source (``POST /v4/sources/{id}/sync``).

    Before asking, it reads the account's listing (a recent one the account's poller
    already has, or the next): the source's record there is the *baseline*, which the
    waiter needs to recognise our job without trusting anyone's clock (see
    `prefect_stitch._engine.trigger`).

    Stitch runs one job per source at a time. When one is already running (Stitch
    answers **200** with ``already_running``), ``on_already_running`` decides:
    ``"attach"`` follows that job (the handle's ``origin`` is ``"attached"`` and it has
    no job name), ``"fail"`` raises `StitchJobAlreadyRunning`;
    ``"wait_then_start"`` is handled by the flow (here it behaves as ``"attach"``).

    Transient faults are retried by Prefect, never past ``max_wait_seconds``. Because an
    attempt whose answer was lost may have started the job, a retry first looks for a
    job of the source that ran since the baseline and reports it instead of starting
    another; a retry that meets ``already_running`` follows the running job with
    ``origin="uncertain"``: once its record is listed, a job that started before the
    baseline was provably not ours and is reported as attached (the flow then applies
    ``on_already_running``). An attempt whose connection could not even be opened
    started nothing, so it leaves no doubt.

    Args:
        credentials: The Stitch credentials block.
        source_id: The Stitch source id.
        on_already_running: ``"attach"``, ``"fail"`` or ``"wait_then_start"``.
        max_wait_seconds: Wall-clock bound of the trigger, its retries included.
        loads: Unless ``"ignore"``, the baseline also holds the source's load records,
            so that a later wait can tell this job's load errors from earlier ones.
        global_rate_limit: The Prefect global concurrency limit that paces the
            account's jobs requests across processes (see `wait_for_stitch_sync`).

    Returns:
        The handle of the job to wait for (``handle.job_name`` is the job name when we
        started it).

    Raises:
        StitchJobAlreadyRunning: A job is running and the policy is ``"fail"``.
        StitchInvalidSourceError: The source is unknown or deleted.
        StitchAuthError: The token is not valid for the account.
        StitchSyncTimeout: ``max_wait_seconds`` ran out before a job could be started.
        StitchConfigurationError: ``source_id`` is not a positive integer.

    Example:
        ```python
        from prefect import flow
        from prefect_stitch import StitchCredentials, start_stitch_sync

        @flow
        async def trigger_only() -> str | None:
            credentials = await StitchCredentials.aload("stitch")
            handle = await start_stitch_sync(credentials, 120643)
            return handle.job_name
        ```
    """
    check_source_id(source_id)
    credentials = check_credentials(credentials)
    bound = {} if max_wait_seconds is None else {"max_wait_seconds": max_wait_seconds}
    options = SyncOptions.of(
        on_already_running=on_already_running,
        loads=loads,
        global_rate_limit=global_rate_limit,
        **bound,
    )
    limit = None if max_wait_seconds is None else options.max_wait_seconds
    return await steps.start(credentials, source_id, options, limit)


@task(**steps.WAIT_TASK_SETTINGS)
async def wait_for_stitch_sync(
    credentials: StitchCredentials,
    source_id: int,
    job_name: str | StitchSyncHandle | None = None,
    poll_interval_seconds: float = DEFAULTS.poll_interval_seconds,
    max_wait_seconds: float = DEFAULTS.max_wait_seconds,
    stop_on_timeout: bool = DEFAULTS.stop_on_timeout,
    fetch_logs_on_failure: bool = DEFAULTS.fetch_logs_on_failure,
    log_tail_lines: int = DEFAULTS.log_tail_lines,
    max_poll_failures: int = 5,
    global_rate_limit: str | None = None,
    write_artifact: bool = True,
    earlier_attempts: list[SyncAttempt] | None = None,
    loads: LoadsMode = DEFAULTS.loads,
    max_load_wait_seconds: float = DEFAULTS.max_load_wait_seconds,
) -> StitchSyncResult:
    """Wait until a Stitch replication job ends; return its result or raise its failure.

    Stitch has no job-status endpoint: its extraction list shows the *last completed*
    job of each source. So the job is recognised by its name (the record listed right
    after a trigger is the previous job, never ours) or, for a job we attached to, as
    the first record of the source other than the one listed before we acted, checked
    against Stitch's own clock (see `locate_job` (`prefect_stitch/_verdict.py`)).
    When a later job replaced our record before a poll read it, the verdict is read
    from the job's log. Polling goes through the account's shared poller, which keeps
    within the jobs rate budget.

    Transient faults while polling never fail a healthy sync: the client retries each
    request, and up to ``max_poll_failures`` consecutive failed polls are tolerated.

    Args:
        credentials: The Stitch credentials block.
        source_id: The Stitch source id.
        job_name: The handle from
            [`start_stitch_sync`][prefect_stitch.tasks.start_stitch_sync], a job's name,
            or ``None`` to follow the next job of the source to complete.
        poll_interval_seconds: Seconds between polls (the account's budget may make
            the tick longer).
        max_wait_seconds: Wall-clock limit of the whole wait, polls and retries
            included.
        stop_on_timeout: Ask Stitch to stop the job when the wait times out (never a job
            this run did not start: one it attached to is left running).
        fetch_logs_on_failure: Put the tail of the extraction log into the error.
        log_tail_lines: How many log lines to keep.
        max_poll_failures: Consecutive failed polls tolerated before giving up.
        global_rate_limit: A Prefect global concurrency limit (a rate limit with slot
            decay) that paces the account's jobs requests across processes; created if
            missing. By default ``stitch-jobs-<client_id>`` is used when it exists.
        write_artifact: Leave a markdown artifact (``stitch-sync-<source_id>``) on the
            run. A run that syncs many sources writes one summary table instead.
        earlier_attempts: Jobs this sync ran before (replication retries), listed in
            the result, the artifact and the error.
        loads: After every phase exited 0: ``"wait"`` until each stream that received
            rows in this job has loaded into the warehouse (or one fails), ``"check"``
            once that none of them is in an error state, ``"ignore"`` the loads.
        max_load_wait_seconds: The load wait's own bound, from the extraction's success.

    Returns:
        The job's result, when every phase exited 0 and (``loads="wait"``) its data
        reached the warehouse; ``result.loads`` has one entry per stream.

    Raises:
        StitchReplicationFailed: A phase exited non-zero (``failed_phases`` says which).
        StitchLoadFailed: Every phase exited 0, but a stream's load failed.
        StitchLoadTimeout: The data did not load within ``max_load_wait_seconds``.
        StitchJobTerminated: The job was terminated.
        StitchSyncTimeout: The job did not end within ``max_wait_seconds``.
        StitchVerdictUnavailable: The job ended but Stitch no longer says how.
        StitchAPIError: Stitch could not be polled (401, or faults beyond the budget).

    Example:
        ```python
        from prefect import flow
        from prefect_stitch import StitchCredentials, start_stitch_sync, wait_for_stitch_sync

        @flow
        async def sync_source(source_id: int) -> None:
            credentials = await StitchCredentials.aload("stitch")
            handle = await start_stitch_sync(credentials, source_id)
            result = await wait_for_stitch_sync(credentials, source_id, handle,
                                                poll_interval_seconds=60)
            print(result.duration_seconds)
        ```
    """
    check_source_id(source_id)
    credentials = check_credentials(credentials)
    options = SyncOptions.of(
        poll_interval_seconds=poll_interval_seconds,
        max_wait_seconds=max_wait_seconds,
        stop_on_timeout=stop_on_timeout,
        fetch_logs_on_failure=fetch_logs_on_failure,
        log_tail_lines=log_tail_lines,
        global_rate_limit=global_rate_limit,
        loads=loads,
        max_load_wait_seconds=max_load_wait_seconds,
    )
    return await steps.wait(
        credentials,
        steps.as_handle(source_id, job_name),
        options,
        max_wait_seconds=options.max_wait_seconds,
        earlier=list(earlier_attempts or []),
        follow_next=job_name is None,
        write_artifact=write_artifact,
        max_poll_failures=max_poll_failures,
    )


@task(
    name="Stop Stitch sync",
    task_run_name="stop-stitch-sync-{source_id}",
    retry_delay_seconds=2,
    **_ONE_CALL,
)
async def stop_stitch_sync(credentials: StitchCredentials, source_id: int) -> bool:
    """Ask Stitch to stop the running job of a source (``DELETE /v4/sources/{id}/sync``).

    Stitch accepts the request and ends the job on its own time: the job is stopped
    only when the extraction listing shows it terminated. Only extraction stops: data
    already extracted is still loaded by Stitch.

    Args:
        credentials: The Stitch credentials block.
        source_id: The Stitch source id.

    Returns:
        True when Stitch accepted the stop request, False when it said no job was
        running (404).

    Example:
        ```python
        from prefect import flow
        from prefect_stitch import StitchCredentials, stop_stitch_sync

        @flow
        async def stop(source_id: int) -> bool:
            return await stop_stitch_sync(await StitchCredentials.aload("stitch"), source_id)
        ```
    """
    check_source_id(source_id)
    credentials = check_credentials(credentials)
    async with credentials.get_client() as client:
        stopped = await client.stop_replication_job(source_id)
    run_logger().info(
        "Stop of the Stitch job of source %s: %s",
        source_id,
        "requested (Stitch accepted it)" if stopped else "no job was running",
    )
    return stopped


@task(
    name="Fetch Stitch extraction logs",
    task_run_name="fetch-stitch-logs",
    retry_delay_seconds=5,
    **_ONE_CALL,
)
async def fetch_stitch_extraction_logs(
    credentials: StitchCredentials, job_name: str, tail_lines: int | None = 1000
) -> str:
    """Download a job's extraction log (by default its last 1,000 lines).

    The log is streamed: only the kept lines are ever in memory, however large the log
    (Stitch logs can be hundreds of MB).

    Args:
        credentials: The Stitch credentials block.
        job_name: The replication job's name.
        tail_lines: Lines to keep from the end; ``None`` returns the whole log (held in
            memory whole).

    Returns:
        The log text.

    Example:
        ```python
        from prefect import flow
        from prefect_stitch import StitchCredentials, fetch_stitch_extraction_logs

        @flow
        async def show_log(job_name: str) -> None:
            credentials = await StitchCredentials.aload("stitch")
            print(await fetch_stitch_extraction_logs(credentials, job_name, tail_lines=50))
        ```
    """
    credentials = check_credentials(credentials)
    async with credentials.get_client() as client:
        return await client.get_extraction_logs(job_name, tail_lines=tail_lines)


@task(**steps.PAUSE_TASK_SETTINGS)
async def pause_stitch_source(
    credentials: StitchCredentials, source_id: int, paused: bool = True
) -> bool:
    """Pause (or resume) a source's own Stitch schedule, so only orchestrated runs happen.

    Stitch's scheduler cannot be coordinated with Prefect; Stitch advises pausing a
    source that an orchestrator triggers. Jobs started through the API still run on a
    paused source. Idempotent: an already paused source is left as it is.

    Args:
        credentials: The Stitch credentials block.
        source_id: The Stitch source id.
        paused: True to pause, False to resume Stitch's schedule.

    Returns:
        True when the source's pause state was changed, False when it already was so.

    Example:
        ```python
        from prefect import flow
        from prefect_stitch import StitchCredentials, pause_stitch_source

        @flow
        async def own_the_schedule(source_id: int) -> None:
            await pause_stitch_source(await StitchCredentials.aload("stitch"), source_id)
        ```
    """
    check_source_id(source_id)
    return await steps.pause(check_credentials(credentials), source_id, paused)


# Names that moved are still found here, with a DeprecationWarning.
__getattr__ = module_getattr("prefect_stitch.tasks")
