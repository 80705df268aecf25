"""Judge a job's final record, settle its loads, and report the sync's outcome.

Every outcome becomes a [`SyncReport`][prefect_stitch._engine.outcomes.SyncReport], which
[`report`][prefect_stitch._engine.outcomes.report] logs, emits and writes as the artifact;
then its typed error is raised: this module only says what happened.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from prefect_stitch._engine.context import SyncContext
from prefect_stitch._engine.loads import LoadOutcome, settle_loads
from prefect_stitch._engine.outcomes import SyncReport, report
from prefect_stitch._engine.watch import MAX_LOG_LINE_CHARS, Final, scan_log
from prefect_stitch._lineage import emit_table_materializations
from prefect_stitch._verdict import Verdict, judge_extraction
from prefect_stitch.models import StitchSyncHandle, StitchSyncResult, SyncAttempt, SyncStatus

__all__ = ["conclude"]


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
    loads = LoadOutcome()
    if verdict.state is SyncStatus.SUCCEEDED:
        loads = await _loads_of(ctx, handle, result, final)
        result = result.model_copy(update={"loads": loads.streams})
        outcome = _loaded_outcome(ctx, result, loads, final.polls)
    else:
        outcome = await _failed_outcome(ctx, result, verdict, final)
    if outcome.status is SyncStatus.SUCCEEDED and loads.asset_keys:
        emit_table_materializations(
            loads.asset_keys, source_id=result.source_id, job_name=result.job_name
        )
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
            f"Load failed: {summary} (Stitch job {job} of source {source_id} extracted its "
            f"data: every phase exited 0). See {result.stitch_url}"
        )
        outcome = _report(ctx, SyncStatus.LOAD_FAILED, headline, summary, result, stage, payload)
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
            f"Not loaded within {ctx.options.max_load_wait_seconds:.0f} s: no load yet for "
            f"{', '.join(loads.pending)}{why} (Stitch job {job} of source {source_id} "
            f"extracted its data). See {result.stitch_url}"
        )
        said = f"no load yet for {', '.join(loads.pending)}"
        outcome = _report(ctx, SyncStatus.TIMED_OUT, headline, said, result, stage, payload)
        limit = ctx.options.max_load_wait_seconds
        return replace(outcome, pending_streams=loads.pending, max_wait_seconds=limit)
    duration = result.duration_seconds
    landed = [e.stream_name for e in loads.streams if e.state == "loaded"]
    headline = (
        f"Succeeded: every phase of Stitch job {job} of source {source_id} exited 0"
        + ("" if duration is None else f" ({duration:.0f} s)")
        + f" after {polls} poll{'' if polls == 1 else 's'}"
        + (f"; loaded {', '.join(landed)}" if landed else "")
        + "."
    )
    said = "every phase exited 0" + (f"; loaded {', '.join(landed)}" if landed else "")
    return _report(ctx, SyncStatus.SUCCEEDED, headline, said, result, stage, payload)


def _report(
    ctx: SyncContext,
    status: SyncStatus,
    headline: str,
    summary: str,
    result: StitchSyncResult,
    stage: str | None,
    payload: Mapping[str, Any],
) -> SyncReport:
    """The outcome of a job whose phases all exited 0."""
    return SyncReport(
        status,
        result.source_id,
        ctx.client_id,
        headline,
        result=result,
        stage=stage,
        attempts=result.attempts,
        payload=payload,
        summary=summary,
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
    return SyncReport(
        verdict.state,
        result.source_id,
        result.client_id,
        _failure_headline(result, verdict),
        result=result,
        failed_phases=verdict.failed_phases,
        log_tail=tail,
        attempts=result.attempts,
        summary=verdict.summary,
    )


def _failure_headline(result: StitchSyncResult, verdict: Verdict) -> str:
    """The failure in one line, the verdict first: what failed, the job, earlier jobs, the link.

    A flow run's state message shows its first 70 characters or so: they say what failed.
    """
    job = f"Stitch replication job {result.job_name} of source {result.source_id}"
    if result.attached:
        job += ", not started by this run"
    if verdict.state is SyncStatus.TERMINATED:
        descriptions = {
            getattr(result, f"{phase}_description") for phase in ("discovery", "tap", "target")
        } - {None}
        said = f" (Stitch says: {'; '.join(sorted(descriptions))})" if descriptions else ""
        text = f"Terminated before every phase reported an exit status{said}: {job}."
    else:
        text = f"Failed: {verdict.summary} ({job})."
    earlier = result.attempts[:-1]
    if earlier:
        text += (
            " Earlier attempts: "
            + "; ".join(f"{a.job_name} {a.status.value} ({a.summary})" for a in earlier)
            + "."
        )
    return text + f" See {result.stitch_url}"


def _attempt_of(result: StitchSyncResult, verdict: Verdict) -> SyncAttempt:
    """The job as one of the sync's attempts."""
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
    """The log's last lines, each cut to a readable length."""
    kept = text.splitlines()[-lines:] if lines > 0 else []
    return "\n".join(
        line if len(line) <= MAX_LOG_LINE_CHARS else line[:MAX_LOG_LINE_CHARS] + " …"
        for line in kept
    )
