"""Follow the account's listings until the job's record (or, failing that, its log) is final.

Stitch has no job-status endpoint: its extraction list shows the *last completed* job of
each source. So the job is recognised by its name (the record listed right after a trigger
is the previous job, never ours) or, for a job we attached to, as the first record of the
source other than the one listed before we acted, checked against Stitch's own clock (see
`prefect_stitch._verdict.locate_job`). When a later job replaced our record before a
poll read it, the verdict is read from the job's log.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from prefect_stitch._engine.context import SyncContext
from prefect_stitch._engine.trigger import completed_record_of
from prefect_stitch._logscan import LogScan
from prefect_stitch._poll import Snapshot, Watch
from prefect_stitch._verdict import Located, judge_extraction, locate_job, started_before_baseline
from prefect_stitch.client import is_transient
from prefect_stitch.errors import StitchError, StitchVerdictUnavailable
from prefect_stitch.models import Extraction, StitchSyncHandle

__all__ = [
    "MAX_LOG_LINE_CHARS",
    "QUIET_WAIT_SECONDS",
    "Final",
    "scan_log",
    "watch_until_final",
]

QUIET_WAIT_SECONDS = 30.0
"""A wait for the account's next listing longer than this (and 3 ticks) is logged."""

MAX_LOG_LINE_CHARS = 400
_LOG_FETCH_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class Final:
    """The job's final record, how many polls it took, and the log read on the way.

    Attributes:
        record: The job's final record (rebuilt from its log when the listing lost it).
        polls: Listings received while waiting.
        log: The job's log, when it was read on the way.
        foreign: The job was not started by this run.
    """

    record: Extraction
    polls: int
    log: LogScan | None = None
    foreign: bool = False


async def scan_log(ctx: SyncContext, job_name: str, lines: int) -> LogScan | None:
    """Stream a job's log into a bounded scan; ``None`` (logged) when it cannot be read.

    Args:
        ctx: The sync's context.
        job_name: The job.
        lines: Lines of the tail to keep.

    Returns:
        The scan, or ``None``.
    """
    try:
        return await asyncio.wait_for(
            ctx.client.scan_extraction_log(
                job_name, tail_lines=lines, max_line_chars=MAX_LOG_LINE_CHARS
            ),
            timeout=_LOG_FETCH_TIMEOUT_SECONDS,
        )
    except (StitchError, TimeoutError) as exc:
        ctx.logger.warning("Could not read the extraction log of %s: %s", job_name, exc)
        return None


async def watch_until_final(
    ctx: SyncContext, handle: StitchSyncHandle, *, follow_next: bool
) -> tuple[Final, StitchSyncHandle]:
    """Receive the account's listings until the job's record (or its log) is final.

    Args:
        ctx: The sync's context (its deadline bounds the wait).
        handle: The job to wait for.
        follow_next: Follow the next job of the source to complete (no name, no baseline
            yet: the listing now is the baseline).

    Returns:
        The final record, and the handle (with its baseline, when it was read here).

    Raises:
        TimeoutError: The deadline passed.
        StitchAPIError: The listing keeps failing, or fails for a non-transient reason.
        StitchVerdictUnavailable: A later job replaced the record and the log cannot say
            how ours ended.
    """
    watch = ctx.poller.watch(ctx.options.poll_interval_seconds)
    try:
        if follow_next:
            handle = await _with_baseline(ctx, watch, handle)
        return await _until_final(ctx, watch, handle), handle
    finally:
        watch.close()


async def _with_baseline(
    ctx: SyncContext, watch: Watch, handle: StitchSyncHandle
) -> StitchSyncHandle:
    """What is listed now ended before the job we follow: it is the baseline."""
    base = await watch.baseline(ctx.remaining())
    if base.error is not None:
        raise base.error
    listed = completed_record_of(base.records, handle.source_id)
    return handle.model_copy(
        update={"baseline_job_name": listed, "baseline_stitch_time": base.stitch_time}
    )


async def _until_final(ctx: SyncContext, watch: Watch, handle: StitchSyncHandle) -> Final:
    """Listings until one says the job's record (or its log) is final."""
    polls = failures = 0
    log_checked: set[str] = set()
    while True:
        snapshot = await _next_listing(ctx, watch, handle)
        polls += 1
        if snapshot.error is not None:
            failures += 1
            if not is_transient(snapshot.error) or failures > ctx.max_poll_failures:
                raise snapshot.error
            ctx.logger.warning(
                "Poll %d of source %s failed (%s); %d more failed polls tolerated",
                polls,
                handle.source_id,
                snapshot.error,
                ctx.max_poll_failures - failures,
            )
            continue
        failures = 0
        located = locate_job(handle, snapshot.records)
        ctx.logger.debug(
            "Poll %d of source %s (tick %d, %d pages): %s",
            polls,
            handle.source_id,
            snapshot.tick,
            snapshot.pages,
            located,
        )
        final = await _final_of(ctx, handle, located, polls, log_checked)
        if final is not None:
            return final


async def _final_of(
    ctx: SyncContext, handle: StitchSyncHandle, located: Located, polls: int, log_checked: set[str]
) -> Final | None:
    """What one listing says of the job: its final record, or nothing yet."""
    if located.record is not None and judge_extraction(located.record).state.is_final:
        foreign = handle.origin == "attached" or (
            handle.origin == "uncertain" and started_before_baseline(handle, located.record)
        )
        return Final(located.record, polls, foreign=foreign)
    if located.later is not None:
        return await _final_from_log(ctx, handle, located.later, polls)
    if located.check_log is not None and handle.job_name is not None:
        other = located.check_log.job_name
        if other not in log_checked:
            log_checked.add(other)
            scan = await scan_log(ctx, handle.job_name, max(ctx.options.log_tail_lines, 1))
            if scan is not None and scan.ended:
                return Final(_record_from_log(ctx, handle, scan), polls, log=scan)
    return None


async def _next_listing(ctx: SyncContext, watch: Watch, handle: StitchSyncHandle) -> Snapshot:
    """The account's next listing; a wait unusually long is said once, then waited out."""
    patience = max(3 * ctx.options.poll_interval_seconds, QUIET_WAIT_SECONDS)
    left = ctx.remaining()
    if ctx.ended_lately:  # resumed: the listing that showed the end is likely at hand
        ctx.ended_lately = False
        tick = max(ctx.options.poll_interval_seconds, ctx.poller.tick_seconds() or 0.0)
        with contextlib.suppress(TimeoutError):
            return await watch.baseline(left if left is None else min(left, tick))
    try:
        return await watch.next_snapshot(left if left is None else min(left, patience))
    except TimeoutError:
        if left is not None and left <= patience:
            raise
    ctx.logger.info(
        "No listing of Stitch account %s for %.0f s (its shared poll is changing hands, the "
        "Prefect API is slow, or Stitch's budget stretches the tick): still waiting for job "
        "%s of source %s",
        ctx.client_id,
        patience,
        handle.job_name or "(the running job)",
        handle.source_id,
    )
    return await watch.next_snapshot(ctx.remaining())


def _record_from_log(ctx: SyncContext, handle: StitchSyncHandle, scan: LogScan) -> Extraction:
    """The record of a job that ended, rebuilt from its log's ``Exit status is:`` line."""
    statuses = scan.exit_statuses or {}
    return Extraction(
        job_name=handle.job_name or "",
        source_id=handle.source_id,
        stitch_client_id=ctx.client_id,
        completion_time=scan.exit_time or handle.answer_stitch_time or handle.requested_at,
        discovery_exit_status=statuses.get("discovery"),
        tap_exit_status=statuses.get("tap"),
        target_exit_status=statuses.get("target"),
    )


async def _final_from_log(
    ctx: SyncContext, handle: StitchSyncHandle, later: Extraction, polls: int
) -> Final:
    """Judge a job whose listing record a later job replaced, from its log."""
    shown = handle.job_name or "(the job that was running)"
    ctx.logger.warning(
        "Stitch job %s of source %s ended, but the later job %s replaced its record before a "
        "poll read it; reading its exit statuses from its log",
        shown,
        handle.source_id,
        later.job_name,
    )
    lines = max(ctx.options.log_tail_lines, 1)
    scan = await scan_log(ctx, handle.job_name, lines) if handle.job_name else None
    if scan is not None and scan.ended:
        record = _record_from_log(ctx, handle, scan)
        if judge_extraction(record).state.is_final:
            return Final(record, polls, log=scan)
    raise StitchVerdictUnavailable(
        f"Stitch job {shown} of source {handle.source_id} ended, but the later job "
        f"{later.job_name} replaced its record before it could be read"
        + (" and its log does not say how it ended" if handle.job_name else "")
        + ". Pause Stitch's own schedule of the source (pause_stitch_schedule=True) so "
        "only orchestrated jobs run.",
        source_id=handle.source_id,
        job_name=handle.job_name,
        superseded_by=later.job_name,
    )
