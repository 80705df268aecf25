"""Stop the job when a sync runs out of time or its run is cancelled, and say so.

Only a job this run started is stopped (one it attached to is left running). Stitch ends a
stopped job on its own time; only extraction stops: data already extracted is still loaded.
"""

from __future__ import annotations

import asyncio

from prefect_stitch._engine.context import SyncContext
from prefect_stitch._engine.outcomes import SyncReport, report
from prefect_stitch.errors import StitchError
from prefect_stitch.models import StitchSyncHandle, SyncAttempt, SyncStatus

__all__ = ["stop_and_report", "stop_outcome"]

_STOP_TIMEOUT_SECONDS = 20.0


async def stop_outcome(
    ctx: SyncContext,
    handle: StitchSyncHandle,
    status: SyncStatus,
    stop: bool,
    attempts: list[SyncAttempt],
) -> SyncReport:
    """Ask Stitch to stop the job (when ``stop``, and only a job this run started).

    Args:
        ctx: The sync's context.
        handle: The job's handle.
        status: ``timed_out`` or ``cancelled``.
        stop: Whether to ask Stitch to stop the job.
        attempts: The jobs this sync ran before.

    Returns:
        The outcome.
    """
    ours = handle.origin == "started"  # never stop a job this run did not start
    requested = await _stop_quietly(ctx) if stop and ours else False
    said = (
        "a stop of the Stitch job was requested" if requested else "the Stitch job was left running"
    )
    if stop and not ours:
        said += " (this run did not start it)"
    shown = handle.job_name or "(the running job)"
    limit = ctx.options.max_wait_seconds if status is SyncStatus.TIMED_OUT else 0.0
    if status is SyncStatus.TIMED_OUT:
        headline = (
            f"Timed out: Stitch job {shown} of source {handle.source_id} did not finish within "
            f"{limit:.0f} s; {said}. See {ctx.url}"
        )
    else:
        headline = (
            f"The run was cancelled while waiting for Stitch job {shown} of source "
            f"{handle.source_id}: {said}"
        )
    return SyncReport(
        status,
        handle.source_id,
        ctx.client_id,
        headline,
        job_name=handle.job_name,
        attempts=attempts,
        stopped=requested,
        max_wait_seconds=limit,
    )


async def _stop_quietly(ctx: SyncContext) -> bool:
    """Ask Stitch to stop the source's job; False (logged) when it could not."""
    try:
        return await asyncio.wait_for(
            ctx.client.stop_replication_job(ctx.source_id), timeout=_STOP_TIMEOUT_SECONDS
        )
    except (StitchError, TimeoutError) as exc:
        ctx.logger.error(
            "Could not ask Stitch to stop the job of source %s: %s", ctx.source_id, exc
        )
        return False


async def stop_and_report(
    ctx: SyncContext, handle: StitchSyncHandle, status: SyncStatus, attempts: list[SyncAttempt]
) -> SyncReport:
    """The wait ran out (``timed_out``) or the run was cancelled: stop the job, say so.

    A timeout stops the job as ``stop_on_timeout`` says and leaves the artifact; a
    cancellation always asks Stitch to stop the job, and leaves no artifact.

    Args:
        ctx: The sync's context.
        handle: The job's handle.
        status: ``timed_out`` or ``cancelled``.
        attempts: The jobs this sync ran before.

    Returns:
        The outcome, reported (a timeout's ``error()`` is the `StitchSyncTimeout` to raise).
    """
    timed_out = status is SyncStatus.TIMED_OUT
    stop = ctx.options.stop_on_timeout if timed_out else True
    outcome = await stop_outcome(ctx, handle, status, stop, attempts)
    await report(outcome, ctx.logger, write_artifact=ctx.write_artifact and timed_out)
    return outcome
