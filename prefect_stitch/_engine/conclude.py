"""Judge a job's final record, settle its loads, and report the sync's outcome.

Every outcome becomes a [`SyncReport`][prefect_stitch._engine.outcomes.SyncReport] and goes
through [`finish`][prefect_stitch._engine.outcomes.finish], which logs, emits, writes the
artifact and raises the typed error: this module only says what happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from prefect_stitch._engine.context import SyncContext
from prefect_stitch._engine.loads import LoadOutcome, settle_loads
from prefect_stitch._engine.outcomes import SyncReport, report
from prefect_stitch._engine.watch import MAX_LOG_LINE_CHARS, Final, scan_log
from prefect_stitch._lineage import emit_table_materializations
from prefect_stitch._verdict import Verdict, judge_extraction
from prefect_stitch.errors import StitchError
from prefect_stitch.models import StitchSyncHandle, StitchSyncResult, SyncAttempt, SyncStatus

__all__ = ["conclude", "stop_and_report", "stop_outcome", "with_load_baseline"]

_STOP_TIMEOUT_SECONDS = 20.0
_LOOKUP_INTERVAL_SECONDS = 1.0


async def conclude(
    ctx: SyncContext, handle: StitchSyncHandle, final: Final, earlier: list[SyncAttempt]
) -> StitchSyncResult:
    """The verdict of a job whose record is final: its result, or its typed failure raised.

    Args:
        ctx: The sync's context.
        handle: The job's handle.
        final: The job's final record.
        earlier: The jobs this sync ran before (replication retries).

    Returns:
        The result, when every phase exited 0 (and, per ``loads``, the data loaded).

    Raises:
        StitchReplicationFailed: A phase failed, the job was terminated, or a load failed.
        StitchLoadTimeout: The data did not load in time.
    """
    verdict = judge_extraction(final.record)
    result = StitchSyncResult.from_extraction(
        final.record,
        status=verdict.state,
        attached=final.foreign,
        client_id=ctx.client_id,
        polls=final.polls,
    )
    attempts = [*earlier, *_duplicate_of(handle), _attempt_of(result, verdict)]
    result = result.model_copy(update={"attempts": attempts})
    if verdict.state is SyncStatus.SUCCEEDED:
        loads = await _loads_of(ctx, handle, result, final)
        result = result.model_copy(update={"loads": loads.streams})
        outcome = _loaded_outcome(ctx, result, loads, final.polls)
    else:
        outcome = await _failed_outcome(ctx, result, verdict, final)
    await report(outcome, ctx.logger, write_artifact=ctx.write_artifact)
    error = outcome.error()
    if error is not None:
        raise error
    return outcome.result or result


async def _loads_of(
    ctx: SyncContext, handle: StitchSyncHandle, result: StitchSyncResult, final: Final
) -> LoadOutcome:
    """Follow the loads, as ``loads`` says (nothing with ``"ignore"``)."""
    if ctx.options.loads == "ignore" or not result.job_name:
        return LoadOutcome()
    ctx.logger.info(
        "Every phase of Stitch job %s exited 0; %s its data into the warehouse",
        result.job_name,
        "following" if ctx.options.loads == "wait" else "checking",
    )
    return await settle_loads(ctx, handle, final.record, final.log)


def _loaded_outcome(
    ctx: SyncContext, result: StitchSyncResult, loads: LoadOutcome, polls: int
) -> SyncReport:
    """Every phase exited 0: a success, a load failure, or a load timeout."""
    job, source_id = result.job_name or "", result.source_id
    payload = (
        {"loads": [entry.model_dump(mode="json") for entry in loads.streams]}
        if ctx.options.loads != "ignore"
        else {}
    )
    stage = "load" if ctx.options.loads != "ignore" else None
    if loads.failed:
        summary = _load_summary(loads)
        attempt = result.attempts[-1].model_copy(
            update={"status": SyncStatus.LOAD_FAILED, "summary": summary}
        )
        result = result.model_copy(
            update={"status": SyncStatus.LOAD_FAILED, "attempts": [*result.attempts[:-1], attempt]}
        )
        headline = (
            f"Stitch job {job} of source {source_id} extracted its data (every phase exited "
            f"0), but loading it into the warehouse failed: {summary}. See {result.stitch_url}"
        )
        outcome = _report(ctx, SyncStatus.LOAD_FAILED, headline, result, stage, payload)
        messages = {stream: load.warehouse_message for stream, load in loads.failed.items()}
        return replace(outcome, failed_streams=messages)
    if loads.pending:
        why = (
            ""
            if loads.log_names_streams
            else " (its log did not say which streams received rows, so every selected "
            "stream was waited for)"
        )
        headline = (
            f"Stitch job {job} of source {source_id} extracted its data, but it did not reach "
            f"the warehouse within {ctx.options.max_load_wait_seconds:.0f} s: no load yet for "
            f"{', '.join(loads.pending)}{why}. See {result.stitch_url}"
        )
        outcome = _report(ctx, SyncStatus.TIMED_OUT, headline, result, stage, payload)
        limit = ctx.options.max_load_wait_seconds
        return replace(outcome, pending_streams=loads.pending, max_wait_seconds=limit)
    if loads.asset_keys:
        emit_table_materializations(loads.asset_keys, source_id=source_id, job_name=job)
    duration = result.duration_seconds
    landed = [e.stream_name for e in loads.streams if e.state == "loaded"]
    headline = (
        f"Succeeded: every phase of Stitch job {job} of source {source_id} exited 0"
        + ("" if duration is None else f" ({duration:.0f} s)")
        + f" after {polls} polls"
        + (f"; loaded {', '.join(landed)}" if landed else "")
        + "."
    )
    return _report(ctx, SyncStatus.SUCCEEDED, headline, result, stage, payload)


def _report(
    ctx: SyncContext,
    status: SyncStatus,
    headline: str,
    result: StitchSyncResult,
    stage: str | None,
    payload: Mapping[str, Any],
) -> SyncReport:
    return SyncReport(
        status,
        result.source_id,
        ctx.client_id,
        headline,
        result=result,
        stage=stage,
        attempts=result.attempts,
        payload=payload,
    )


async def _failed_outcome(
    ctx: SyncContext, result: StitchSyncResult, verdict: Verdict, final: Final
) -> SyncReport:
    """A failed or terminated job: its phases, Stitch's words, the log's last lines."""
    lines = ctx.options.log_tail_lines
    tail = None if final.log is None else final.log.tail
    if tail is None and ctx.options.fetch_logs_on_failure and result.job_name:
        scan = await scan_log(ctx, result.job_name, max(lines, 1))
        tail = None if scan is None else scan.tail
    tail = (_bounded_tail(tail, lines) or None) if tail is not None else None
    details = ""
    if tail:
        details = f"Last {len(tail.splitlines())} lines of the extraction log:\n{tail}"
    return SyncReport(
        verdict.state,
        result.source_id,
        result.client_id,
        _failure_headline(result, verdict),
        details=details,
        result=result,
        failed_phases=verdict.failed_phases,
        log_tail=tail,
        attempts=result.attempts,
    )


def _failure_headline(result: StitchSyncResult, verdict: Verdict) -> str:
    job = f"Stitch replication job {result.job_name} for source {result.source_id}"
    if result.attached:
        job += " (not started by this run)"
    if verdict.state is SyncStatus.TERMINATED:
        descriptions = {
            getattr(result, f"{phase}_description") for phase in ("discovery", "tap", "target")
        } - {None}
        said = f" (Stitch says: {'; '.join(sorted(descriptions))})" if descriptions else ""
        text = f"{job} was terminated before every phase reported an exit status{said}."
    else:
        text = f"{job} failed: {verdict.summary}."
    earlier = result.attempts[:-1]
    if earlier:
        text += (
            " Earlier attempts: "
            + "; ".join(f"{a.job_name} {a.status.value} ({a.summary})" for a in earlier)
            + "."
        )
    return text + f" See {result.stitch_url}"


def _attempt_of(result: StitchSyncResult, verdict: Verdict) -> SyncAttempt:
    shared = result.model_dump(include=set(SyncAttempt.model_fields) - {"summary"})
    return SyncAttempt(**shared, summary=verdict.summary)


def _duplicate_of(handle: StitchSyncHandle) -> list[SyncAttempt]:
    """The second job a retried trigger started and stopped at once, if there was one."""
    if handle.stopped_duplicate is None:
        return []
    return [
        SyncAttempt(
            job_name=handle.stopped_duplicate,
            status=SyncStatus.CANCELLED,
            summary=f"started by a retried trigger after {handle.job_name} (whose trigger "
            "answer was lost) had run; stopped at once",
        )
    ]


def _load_summary(loads: LoadOutcome) -> str:
    """Each failed stream, with Stitch's message and the warehouse's codes next to it."""
    return "; ".join(
        f"stream {stream}: {load.details.summary if load.details else 'no message from Stitch'}"
        for stream, load in loads.failed.items()
    )


def _bounded_tail(text: str, lines: int) -> str:
    kept = text.splitlines()[-lines:] if lines > 0 else []
    return "\n".join(
        line if len(line) <= MAX_LOG_LINE_CHARS else line[:MAX_LOG_LINE_CHARS] + " …"
        for line in kept
    )


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
    try:
        return await asyncio.wait_for(
            ctx.client.stop_replication_job(ctx.source_id), timeout=_STOP_TIMEOUT_SECONDS
        )
    except (StitchError, TimeoutError) as exc:
        ctx.logger.error(
            "Could not ask Stitch to stop the job of source %s: %s", ctx.source_id, exc
        )
        return False


async def with_load_baseline(ctx: SyncContext, handle: StitchSyncHandle) -> StitchSyncHandle:
    """Give a handle without one the source's load records as they are now.

    Args:
        ctx: The sync's context.
        handle: The handle (from a job name, or a trigger that did not read them).

    Returns:
        The handle, with the source's name and load records.
    """
    name = handle.source_name or (await ctx.client.get_source(handle.source_id)).name or ""
    watch = ctx.poller.watch(_LOOKUP_INTERVAL_SECONDS, loads=True)
    try:
        snapshot = await watch.baseline()
    finally:
        watch.close()
    if snapshot.error is not None:
        raise snapshot.error
    loads = tuple(r for r in snapshot.loads or () if r.source_name == name)
    return handle.model_copy(update={"source_name": name, "baseline_loads": loads})


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
