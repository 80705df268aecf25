"""The two steps of a sync, as the Prefect tasks run them: start the job, wait for its verdict.

The public tasks (`prefect_stitch.tasks`) take flat parameters and build the options; the
flows pass the options they built once, through the internal tasks defined here. Both run the
same step bodies.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from prefect_stitch._engine.conclude import conclude
from prefect_stitch._engine.context import open_context, run_logger
from prefect_stitch._engine.loads import with_load_baseline
from prefect_stitch._engine.memory import retry_on_transient, trigger_memory
from prefect_stitch._engine.prefect_api import until_prefect_answers
from prefect_stitch._engine.stop import stop_and_report
from prefect_stitch._engine.trigger import start_job, trigger_timeout
from prefect_stitch._engine.watch import watch_until_final
from prefect_stitch._poll.poller import listing_floor_seconds
from prefect_stitch.credentials import StitchCredentials
from prefect_stitch.errors import StitchConfigurationError
from prefect_stitch.models import StitchSyncHandle, StitchSyncResult, SyncAttempt, SyncStatus
from prefect_stitch.options import SyncOptions

__all__ = [
    "START_TASK_SETTINGS",
    "TRIGGER_RETRIES",
    "WAIT_TASK_SETTINGS",
    "as_handle",
    "start",
    "start_task",
    "start_task_for",
    "wait",
    "wait_task",
]

TRIGGER_RETRIES = 4

START_TASK_SETTINGS: dict[str, Any] = {
    "name": "Start Stitch sync",
    "task_run_name": "start-stitch-sync-{source_id}",
    "retries": TRIGGER_RETRIES,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_on_transient,
    "cache_policy": NO_CACHE,
    "persist_result": False,
}
"""The trigger task's settings: the public task and the flows' are the same step."""

ONE_CALL_TASK_SETTINGS: dict[str, Any] = {
    "retries": 2,
    "retry_condition_fn": retry_on_transient,
    "cache_policy": NO_CACHE,
    "persist_result": False,
}
"""The settings of a task that makes one idempotent call: retried on transient faults only."""

PAUSE_TASK_SETTINGS: dict[str, Any] = {
    "name": "Pause Stitch schedule",
    "task_run_name": "pause-stitch-source-{source_id}",
    "retry_delay_seconds": 2,
    **ONE_CALL_TASK_SETTINGS,
}
"""The pause task's settings: the public task and the flows' are the same step."""

WAIT_TASK_SETTINGS: dict[str, Any] = {
    "name": "Wait for Stitch sync",
    "task_run_name": "wait-for-stitch-sync-{source_id}",
    "cache_policy": NO_CACHE,
    "persist_result": False,
}
"""The wait task's settings: the public task and the flows' are the same step."""


async def start(
    credentials: StitchCredentials,
    source_id: int,
    options: SyncOptions,
    max_wait_seconds: float | None,
) -> StitchSyncHandle:
    """Start the source's job (the trigger step's body).

    Args:
        credentials: The account's credentials.
        source_id: The source.
        options: The sync's options (``on_already_running``, ``loads``, the global limit).
        max_wait_seconds: The trigger's bound, its retries included (``None``: none).

    Returns:
        The handle of the job to wait for.
    """
    memory = trigger_memory(source_id, max_wait_seconds)
    if memory.deadline is not None and time.monotonic() >= memory.deadline:
        raise trigger_timeout(source_id, memory)
    async with open_context(credentials, source_id, options, deadline=memory.deadline) as ctx:
        return await start_job(ctx, memory)


async def wait(
    credentials: StitchCredentials,
    handle: StitchSyncHandle,
    options: SyncOptions,
    *,
    max_wait_seconds: float,
    earlier: list[SyncAttempt],
    follow_next: bool = False,
    write_artifact: bool = True,
    max_poll_failures: int = 5,
    ended_lately: bool = False,
) -> StitchSyncResult:
    """Wait for the job's verdict (the wait step's body).

    Args:
        credentials: The account's credentials.
        handle: The job to wait for.
        options: The sync's options.
        max_wait_seconds: How long the wait may take.
        earlier: The jobs this sync ran before (replication retries).
        follow_next: Follow the next job of the source to complete.
        write_artifact: Leave the sync's artifact.
        max_poll_failures: Consecutive failed polls tolerated.
        ended_lately: The job ended lately (a resumed run): its first listing may be the
            account's latest.

    Returns:
        The result of the job (its data loaded, per ``loads``).
    """
    async with open_context(
        credentials,
        handle.source_id,
        options,
        deadline=time.monotonic() + max_wait_seconds,
        write_artifact=write_artifact,
        max_poll_failures=max_poll_failures,
    ) as ctx:
        ctx.ended_lately = ended_lately
        if options.loads != "ignore" and handle.baseline_loads is None:
            handle = await with_load_baseline(ctx, handle)
        ctx.logger.info(
            "Waiting for Stitch job %s of source %s (the account listed every %s, at most %s): %s",
            handle.job_name or "(the running job)",
            handle.source_id,
            _listing_pace(credentials, options),
            _duration(max_wait_seconds),
            ctx.url,
        )
        try:
            final, handle = await watch_until_final(ctx, handle, follow_next=follow_next)
        except TimeoutError:
            timed_out = await stop_and_report(ctx, handle, SyncStatus.TIMED_OUT, earlier)
            error = timed_out.error()
            assert error is not None  # a timeout's error is a StitchSyncTimeout
            raise error from None
        except asyncio.CancelledError:
            await stop_and_report(ctx, handle, SyncStatus.CANCELLED, earlier)
            raise
        await until_prefect_answers(ctx.logger)  # the verdict, its artifact, its events
        return await conclude(ctx, handle, final, earlier)


def _listing_pace(credentials: StitchCredentials, options: SyncOptions) -> str:
    """How often the account is listed while this sync waits, and why when not as asked."""
    pages = 1 if options.loads == "ignore" else 2  # the extractions, and the loads
    floor = listing_floor_seconds(credentials, pages)
    if floor <= options.poll_interval_seconds:
        return f"{options.poll_interval_seconds:g} s"
    return (
        f"{floor:.3g} s: Stitch's budget of {credentials.jobs_rate_limit} requests per "
        f"{_duration(credentials.jobs_rate_period_seconds)} allows no more for {pages} "
        f"page(s) a listing, whatever poll_interval_seconds ({options.poll_interval_seconds:g} s)"
    )


def _duration(seconds: float) -> str:
    """A wait's length for people: "24 h", "10 min", "45 s" (rounded)."""
    if seconds >= 3600 - 30:
        return f"{seconds / 3600:.1f}".removesuffix(".0") + " h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


async def pause(credentials: StitchCredentials, source_id: int, paused: bool) -> bool:
    """Pause (or resume) the source's own Stitch schedule (the pause step's body).

    Args:
        credentials: The account's credentials.
        source_id: The source.
        paused: True to pause, False to resume Stitch's schedule.

    Returns:
        True when the source's pause state was changed, False when it already was so.
    """
    async with credentials.get_client() as client:
        source = await client.get_source(source_id)
        if (source.paused_at is not None) == paused:
            return False
        if paused:
            await client.pause_source(source_id)
            run_logger().info(
                "Paused Stitch's own schedule of source %s: only orchestrated runs will happen",
                source_id,
            )
        else:
            await client.unpause_source(source_id)
            run_logger().info("Resumed Stitch's own schedule of source %s", source_id)
        return True


@task(**PAUSE_TASK_SETTINGS)
async def pause_task(credentials: StitchCredentials, source_id: int) -> bool:
    """The pause step, as the flows and the block run it."""
    return await pause(credentials, source_id, True)


async def trigger(
    credentials: StitchCredentials, source_id: int, options: SyncOptions, max_wait_seconds: float
) -> StitchSyncHandle:
    """Pause Stitch's schedule first if the options say so, then start the job (as tasks).

    Args:
        credentials: The account's credentials.
        source_id: The source.
        options: The sync's options.
        max_wait_seconds: The trigger's bound, its retries included.

    Returns:
        The handle of the job to wait for.
    """
    if options.pause_stitch_schedule:
        await pause_task(credentials, source_id)
    handle: StitchSyncHandle = await start_task_for(credentials)(
        credentials, source_id, options, max_wait_seconds
    )
    return handle


def as_handle(source_id: int, job: str | StitchSyncHandle | None) -> StitchSyncHandle:
    """The handle to wait for: a handle, a job's name, or ``None`` (the next job to end).

    Args:
        source_id: The source.
        job: What the caller gave.

    Returns:
        The handle.

    Raises:
        StitchConfigurationError: The handle is another source's, or the name is empty.
    """
    now = datetime.now(UTC)
    if isinstance(job, StitchSyncHandle):
        if job.source_id != source_id:
            raise StitchConfigurationError(
                f"the handle is for source {job.source_id}, not {source_id}", parameter="job"
            )
        return job
    if isinstance(job, str):
        if not job.strip():
            raise StitchConfigurationError("job_name is empty", parameter="job_name")
        return StitchSyncHandle(source_id=source_id, job_name=job.strip(), requested_at=now)
    if job is None:  # follow whatever runs now: its baseline is read when the wait starts
        return StitchSyncHandle(source_id=source_id, origin="attached", requested_at=now)
    raise StitchConfigurationError(
        f"job must be a job name or a StitchSyncHandle, got {type(job).__name__}",
        parameter="job_name",
    )


@task(**START_TASK_SETTINGS)
async def start_task(
    credentials: StitchCredentials,
    source_id: int,
    options: SyncOptions,
    max_wait_seconds: float | None,
) -> StitchSyncHandle:
    """The trigger step, as the flows run it (the options built once)."""
    return await start(credentials, source_id, options, max_wait_seconds)


def start_task_for(credentials: StitchCredentials) -> Any:
    """`start_task` with Prefect retries following the block's retry budget.

    Args:
        credentials: The account's credentials.

    Returns:
        The task.
    """
    return start_task.with_options(
        retries=credentials.max_retries,
        retry_delay_seconds=[
            min(credentials.retry_backoff_seconds * 2**attempt, 60.0)
            for attempt in range(max(credentials.max_retries, 1))
        ],
    )


@task(**WAIT_TASK_SETTINGS)
async def wait_task(
    credentials: StitchCredentials,
    source_id: int,
    handle: StitchSyncHandle,
    options: SyncOptions,
    max_wait_seconds: float,
    earlier: list[SyncAttempt],
    write_artifact: bool = True,
    ended_lately: bool = False,  # a resumed run (see `wait`)
) -> StitchSyncResult:
    """The wait step, as the flows run it (the options built once)."""
    return await wait(
        credentials,
        as_handle(source_id, handle),
        options,
        max_wait_seconds=max_wait_seconds,
        earlier=earlier,
        write_artifact=write_artifact,
        ended_lately=ended_lately,
    )
