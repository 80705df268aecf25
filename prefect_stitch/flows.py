"""``stitch_sync_flow``: start a Stitch replication job, watch it to its end, tell the truth.

The whole story of a sync:

1. load the credentials (a block, or a block's name);
2. optionally pause Stitch's own schedule of the source, so only orchestrated runs happen;
3. start the job (:func:`~prefect_stitch.tasks.start_stitch_sync`); if one is already
   running, follow it or fail, as ``on_already_running`` says;
4. wait for its record (:func:`~prefect_stitch.tasks.wait_for_stitch_sync`) and judge it:
   every phase 0 returns a :class:`~prefect_stitch.models.StitchSyncResult`; anything
   else raises a typed error naming each failed phase, its exit status, Stitch's
   description and the tail of the extraction log;
5. on timeout, stop the job and raise :class:`~prefect_stitch.errors.StitchSyncTimeout`;
   on cancellation of the flow run, stop the job and say so in the log.

The flow is synchronous so that it can be called as it is from a script, from a sync
parent flow and from an async parent flow. Its body runs the async tasks on an event
loop in a helper thread, which is cancelled when Prefect cancels the run: that is how
the wait learns of the cancellation and stops the Stitch job before the process ends.
"""

import asyncio
import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from prefect import flow, get_run_logger
from prefect.context import AsyncClientContext, FlowRunContext
from pydantic import Field

from prefect_stitch.credentials import StitchCredentials
from prefect_stitch.errors import (
    StitchConfigurationError,
    StitchJobTerminated,
    StitchReplicationFailed,
    StitchSyncManyFailed,
    StitchSyncTimeout,
)
from prefect_stitch.models import (
    SourceId,
    StitchSyncManyResult,
    StitchSyncResult,
    SyncOutcome,
    check_source_id,
)
from prefect_stitch.poller import pollers_of
from prefect_stitch.tasks import (
    DEFAULT_LOG_TAIL_LINES,
    AlreadyRunningPolicy,
    pause_stitch_source,
    start_stitch_sync,
    wait_for_stitch_sync,
)

__all__ = [
    "load_credentials",
    "run_stitch_sync",
    "run_stitch_sync_many",
    "stitch_sync_flow",
    "stitch_sync_many_flow",
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
        description="Wall-clock limit of the wait, polls and retries included.",
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
) -> StitchSyncResult:
    """The body of :func:`stitch_sync_flow`, as a coroutine for async callers.

    It runs the tasks in the current flow run (or without one); use it inside an async
    flow that must not block its event loop while Stitch works.

    Args:
        source_id: The Stitch source id.
        credentials: A block or a block name.
        poll_interval_seconds: Seconds between status polls.
        max_wait_seconds: Wall-clock limit of the wait.
        on_already_running: ``"attach"``, ``"fail"`` or ``"wait_then_start"``.
        stop_on_timeout: Stop the Stitch job on timeout.
        fetch_logs_on_failure: Put the log tail into a failure.
        pause_stitch_schedule: Pause Stitch's own schedule of the source first.
        log_tail_lines: Log lines kept on failure.

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
    resolved = await load_credentials(credentials)
    resume_since = _resume_since()
    deadline = time.monotonic() + max_wait_seconds

    trigger = _trigger_task(resolved)
    if pause_stitch_schedule:
        await pause_stitch_source(resolved, source_id)
    handle = await trigger(resolved, source_id, on_already_running, resume_since)
    if on_already_running == "wait_then_start" and handle.attached:
        try:
            await wait_for_stitch_sync(
                resolved,
                source_id,
                handle,
                poll_interval_seconds=poll_interval_seconds,
                max_wait_seconds=max(deadline - time.monotonic(), 0.001),
                stop_on_timeout=stop_on_timeout,
                fetch_logs_on_failure=False,
            )
        except StitchReplicationFailed as exc:
            get_run_logger().info("The job that was already running ended badly: %s", exc)
        handle = await trigger(resolved, source_id, "attach")
    result: StitchSyncResult = await wait_for_stitch_sync(
        resolved,
        source_id,
        handle,
        poll_interval_seconds=poll_interval_seconds,
        max_wait_seconds=max(deadline - time.monotonic(), 0.001),
        stop_on_timeout=stop_on_timeout,
        fetch_logs_on_failure=fetch_logs_on_failure,
        log_tail_lines=log_tail_lines,
    )
    return result


def _trigger_task(credentials: StitchCredentials) -> Any:
    """``start_stitch_sync`` with Prefect retries following the block's retry budget."""
    return start_stitch_sync.with_options(
        retries=credentials.max_retries,
        retry_delay_seconds=[
            min(credentials.retry_backoff_seconds * 2**attempt, 60.0)
            for attempt in range(max(credentials.max_retries, 1))
        ],
    )


def _resume_since() -> datetime | None:
    """When a retried flow run started first: jobs started since then are its own."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None or context.flow_run.run_count <= 1:
        return None
    started = context.flow_run.start_time
    # Prefect gives a pendulum DateTime: keep a plain datetime.
    return datetime.fromtimestamp(started.timestamp(), UTC) if started is not None else None


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
) -> StitchSyncResult:
    """Run one Stitch replication job to its end and return its result.

    Stitch's answer is trusted only when it is final: the job is matched by name in
    Stitch's extraction list (the newest record right after a trigger is the
    *previous* job), every non-zero exit status fails (1, -9, ...), and a job whose
    statuses are all null with a completion time was terminated, not running.

    Args:
        source_id: The Stitch source id (a positive integer), as in
            app.stitchdata.com/client/<client_id>/pipeline/v2/sources/<source_id>/summary.
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

    Returns:
        The job's result (job name, times, exit statuses, Stitch link, polls).

    Raises:
        StitchReplicationFailed: A phase exited non-zero; ``failed_phases`` lists them.
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
) -> StitchSyncManyResult:
    """The body of :func:`stitch_sync_many_flow`, as a coroutine for async callers.

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
            requests (see :func:`~prefect_stitch.tasks.wait_for_stitch_sync`).

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
    resolved = await load_credentials(credentials)
    trigger = _trigger_task(resolved)
    resume_since = _resume_since()
    triggers = asyncio.Semaphore(max_concurrent)
    requests_before = sum(poller.requests for poller in pollers_of(resolved))
    logger = get_run_logger()
    logger.info(
        "Syncing %d Stitch sources (%d triggers at a time, one shared poll per tick)",
        len(ids),
        max_concurrent,
    )

    async def sync_one(source_id: int) -> StitchSyncResult:
        async with triggers:
            handle = await trigger(resolved, source_id, on_already_running, resume_since)
        result: StitchSyncResult = await wait_for_stitch_sync(
            resolved,
            source_id,
            handle,
            poll_interval_seconds=poll_interval_seconds,
            max_wait_seconds=max_wait_seconds,
            stop_on_timeout=stop_on_timeout,
            fetch_logs_on_failure=fetch_logs_on_failure,
            global_rate_limit=global_rate_limit,
            write_artifact=False,  # one summary table instead of an artifact per source
        )
        return result

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
            missing. By default `stitch-jobs-<client_id>` is used when it exists.

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
        )
    )
