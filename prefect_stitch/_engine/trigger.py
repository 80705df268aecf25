"""Start a source's job: the baseline first, then the trigger, retried safely.

Before asking, the trigger reads the account's listing (a recent one the account's poller
already has, or the next): the source's record there is the *baseline*, which the wait needs
to recognise our job without trusting anyone's clock. Stitch runs one job per source; when
one is already running (HTTP 200 with ``already_running``), ``on_already_running`` decides.

Transient faults are retried by Prefect, never past the deadline. An attempt whose answer was
lost may have started the job, so a retry first looks for a job of the source that ran since
the baseline and reports it instead of starting another; a retry that meets
``already_running`` follows the running job with ``origin="uncertain"`` (its record settles
later whether it was ours). An attempt whose connection could not even be opened started
nothing, and leaves no doubt.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from prefect_stitch._engine.context import LOOKUP_INTERVAL_SECONDS, SyncContext
from prefect_stitch._engine.memory import TriggerMemory, forget_trigger, out_of_time
from prefect_stitch._engine.outcomes import SyncReport, report
from prefect_stitch._poll import Snapshot, Watch
from prefect_stitch._verdict import Order, find_earlier_attempt, order_of
from prefect_stitch.client import is_transient
from prefect_stitch.errors import (
    StitchAPIError,
    StitchError,
    StitchJobAlreadyRunning,
    StitchSyncTimeout,
)
from prefect_stitch.models import (
    Extraction,
    JobOrigin,
    StitchSyncHandle,
    SyncStatus,
    TriggerAnswer,
)

__all__ = ["BASELINE_WAIT_SECONDS", "completed_record_of", "start_job", "trigger_timeout"]

BASELINE_WAIT_SECONDS = 1.5
"""How long a trigger waits for the shared poll's baseline before reading Stitch itself."""

_MAX_RETRY_AFTER_SLEEP = 120.0


def trigger_timeout(source_id: int, memory: TriggerMemory) -> StitchSyncTimeout:
    """The error of a trigger that ran out of time (saying whether a job may run).

    Args:
        source_id: The source.
        memory: The trigger's memory.

    Returns:
        The error.
    """
    maybe = " (an earlier attempt may have started a job, left running)"
    limit = f" ({memory.max_wait_seconds:.0f} s)" if memory.max_wait_seconds else ""
    return StitchSyncTimeout(
        f"Could not start a Stitch job for source {source_id} within max_wait_seconds{limit}"
        + (maybe if memory.may_have_started else ""),
        source_id=source_id,
        job_name=None,
        max_wait_seconds=memory.max_wait_seconds or 0.0,
        stopped=False,
    )


def completed_record_of(records: Sequence[Extraction], source_id: int) -> str | None:
    """The name of the source's *completed* listed job: the baseline.

    A listing that shows a running job (null completion time) instead of the last
    completed one must not make that running job the baseline: its final record, with
    the same name, is the one a wait looks for.

    Args:
        records: A listing's records.
        source_id: The source.

    Returns:
        The job's name, or ``None`` when the source has no completed record listed.
    """
    return next(
        (r.job_name for r in records if r.source_id == source_id and r.completion_time),
        None,
    )


async def start_job(ctx: SyncContext, memory: TriggerMemory) -> StitchSyncHandle:
    """Start the source's job (or follow the running one), as ``on_already_running`` says.

    Args:
        ctx: The sync's context.
        memory: What earlier attempts of this trigger learnt.

    Returns:
        The handle of the job to wait for.

    Raises:
        StitchJobAlreadyRunning: A job is running and the policy is ``"fail"``.
        StitchSyncTimeout: The deadline passed before a job could be started.
        StitchAPIError: Stitch refused, or could not be reached (transient: Prefect retries).
    """
    watch = ctx.poller.watch(LOOKUP_INTERVAL_SECONDS, loads=ctx.options.loads != "ignore")
    try:
        if memory.baseline is None:
            memory.baseline = await _baseline(ctx, watch, memory)
        elif memory.may_have_started:
            earlier = await _earlier_attempt(ctx, watch, memory)
            if earlier is not None:
                return earlier
    finally:
        watch.close()
    try:
        answer = await ctx.client.trigger_replication_job(ctx.source_id)
    except StitchJobAlreadyRunning as exc:
        return await _already_running(ctx, memory, exc)
    except StitchAPIError as exc:
        await _before_retry(ctx, memory, exc)
        raise
    await _remember_source_name(ctx, memory)
    forget_trigger(ctx.source_id)
    if memory.may_have_started:  # the lost answer's job may have run just before this one
        ran_before = await _ran_before(ctx, memory, answer)
        if ran_before is not None:
            return await _follow_the_earlier_job(ctx, memory, ran_before, answer.job_name)
    await _report_start(
        ctx,
        f"Started Stitch replication job {answer.job_name} for source {ctx.source_id}",
        answer.job_name,
    )
    return handle_of(ctx, memory, answer.stitch_time, "started", answer.job_name)


async def _ran_before(
    ctx: SyncContext, memory: TriggerMemory, answer: TriggerAnswer
) -> Extraction | None:
    """The job an earlier attempt started, if it ran before the job this retry started.

    An earlier attempt whose answer was lost may have started a job that ended before the
    retry's request (Stitch lists only completed jobs, so the listing read before the retry
    could not show it yet). A listing requested after Stitch's answer (its ``Date`` in a
    later second than the answer's, Stitch's clock against Stitch's clock) shows it, if it
    ran: a record of the source, other than the baseline, that did not start before the
    baseline and is not the new job.
    """
    watch = ctx.poller.watch(LOOKUP_INTERVAL_SECONDS)
    try:
        listing = await _listing_after(ctx, watch, memory, answer)
    finally:
        watch.close()
    records = [r for r in listing.records if r.job_name != answer.job_name]
    return find_earlier_attempt(handle_of(ctx, memory, None, "started"), records)


async def _listing_after(
    ctx: SyncContext, watch: Watch, memory: TriggerMemory, answer: TriggerAnswer
) -> Snapshot:
    """The first listing requested after Stitch's answer (the second one, without ``Date``)."""
    seen = 0
    while True:
        listing = await _listing(ctx, watch, memory, fresh=True)
        seen += 1
        order = order_of(listing.stitch_time, answer.stitch_time)
        if order is Order.AFTER or (order is Order.UNKNOWN and seen >= 2):
            return listing


async def _follow_the_earlier_job(
    ctx: SyncContext, memory: TriggerMemory, earlier: Extraction, duplicate: str
) -> StitchSyncHandle:
    """Stop the job this retry started, and follow the one the earlier attempt started."""
    try:
        stopped = await ctx.client.stop_replication_job(ctx.source_id)
    except StitchError as exc:
        stopped = False
        ctx.logger.error("Could not stop the second Stitch job %s: %s", duplicate, exc)
    ctx.logger.warning(
        "The answer to an earlier trigger of source %s was lost, and its job %s had already "
        "run when the retried trigger started job %s: %s, and reporting %s (both are listed "
        "in the result's attempts)",
        ctx.source_id,
        earlier.job_name,
        duplicate,
        "a stop of the second job was requested" if stopped else "the second job had ended",
        earlier.job_name,
    )
    handle = handle_of(ctx, memory, None, "started", earlier.job_name)
    return handle.model_copy(update={"stopped_duplicate": duplicate})


async def _listing(
    ctx: SyncContext, watch: Watch, memory: TriggerMemory, *, fresh: bool
) -> Snapshot:
    """A listing of the account for the trigger, within the sync's deadline."""
    left = ctx.remaining()
    try:
        snapshot = await (watch.next_snapshot(left) if fresh else watch.baseline(left))
    except TimeoutError:
        raise trigger_timeout(ctx.source_id, memory) from None
    if snapshot.error is not None:
        raise snapshot.error  # transient faults: Prefect retries the trigger task
    return snapshot


async def _baseline(ctx: SyncContext, watch: Watch, memory: TriggerMemory) -> Snapshot:
    """The source's record before we act: the shared poll's listing, or Stitch's at once.

    The account's shared poll has a recent listing, or the next one, within a second or
    so, as a rule. It has none for longer while another process's poll starts or changes
    hands (a leader resigning, a follower taking over): the job is not held up for that;
    the listing is read from Stitch directly (its pages count in the account's budget
    like any other). When this process's own poller is the one listing, its next listing
    is waited for (a direct read would only read the account twice).
    """
    left = ctx.remaining()
    wait = BASELINE_WAIT_SECONDS if left is None else min(BASELINE_WAIT_SECONDS, left)
    try:
        snapshot = await watch.baseline(wait)
    except TimeoutError:
        if ctx.poller.lists_itself():
            return await _listing(ctx, watch, memory, fresh=False)
        snapshot = await _read_what_is_missing(ctx)
    if snapshot.error is not None:
        raise snapshot.error  # transient faults: Prefect retries the trigger task
    return snapshot


async def _read_what_is_missing(ctx: SyncContext) -> Snapshot:
    """Read from Stitch what the shared poll's listings lack for a baseline.

    The loads listing only, when the latest listing is recent but was read without it;
    else both listings.
    """
    latest, tick = ctx.poller.latest, ctx.poller.tick_seconds() or 0.0
    loads = ctx.options.loads != "ignore"
    recent = latest is not None and time.monotonic() - ctx.poller.latest_at <= tick
    if latest is not None and recent and latest.extractions_read and latest.ok and loads:
        ctx.logger.info(
            "The shared poll of Stitch account %s read no loads lately: reading the loads "
            "listing from Stitch directly (source %s's baseline)",
            ctx.client_id,
            ctx.source_id,
        )
        load_listing = await ctx.client.read_loads()
        return replace(latest, loads=load_listing.records, pages=load_listing.pages)
    ctx.logger.info(
        "The shared poll of Stitch account %s has no recent listing (it is starting or "
        "changing hands): reading source %s's last job from Stitch directly",
        ctx.client_id,
        ctx.source_id,
    )
    return await read_listing_now(ctx, loads=loads)


async def read_listing_now(ctx: SyncContext, *, loads: bool) -> Snapshot:
    """One listing of the account read from Stitch now (not through the shared poll).

    Args:
        ctx: The sync's context.
        loads: Read the loads listing too.

    Returns:
        The listing (its pages went through the account's rate limiter).
    """
    extractions = await ctx.client.read_extractions()
    load_listing = await ctx.client.read_loads() if loads else None
    return Snapshot(
        tick=0,
        records=extractions.records,
        fetched_at=datetime.now(UTC),
        pages=extractions.pages + (load_listing.pages if load_listing else 0),
        stitch_time=extractions.stitch_time,
        loads=None if load_listing is None else load_listing.records,
    )


async def _earlier_attempt(
    ctx: SyncContext, watch: Watch, memory: TriggerMemory
) -> StitchSyncHandle | None:
    """The handle of a job an earlier attempt (whose answer was lost) started and that ended."""
    listing = await _listing(ctx, watch, memory, fresh=True)
    earlier = find_earlier_attempt(handle_of(ctx, memory, None, "started"), listing.records)
    if earlier is None:
        return None
    ctx.logger.info(
        "An earlier attempt's answer was lost, and job %s of source %s has run since: "
        "reporting it instead of starting another",
        earlier.job_name,
        ctx.source_id,
    )
    forget_trigger(ctx.source_id)
    return handle_of(ctx, memory, None, "started", earlier.job_name)


async def _already_running(
    ctx: SyncContext, memory: TriggerMemory, exc: StitchJobAlreadyRunning
) -> StitchSyncHandle:
    """Stitch said a job runs: follow it (``uncertain`` after a lost answer), or fail."""
    forget_trigger(ctx.source_id)
    if memory.may_have_started:
        ctx.logger.warning(
            "A retried trigger found a job running for source %s. It may be the one the "
            "earlier attempt started (its answer was lost): following it; its record will "
            "tell whether it was ours",
            ctx.source_id,
        )
        return handle_of(ctx, memory, exc.stitch_time, "uncertain")
    if ctx.options.on_already_running == "fail":
        raise exc
    ctx.logger.info(
        "A Stitch job is already running for source %s; following it to its end "
        "(on_already_running=%r)",
        ctx.source_id,
        ctx.options.on_already_running,
    )
    await _remember_source_name(ctx, memory)
    await _report_start(
        ctx, f"Following the Stitch job already running for source {ctx.source_id}", None
    )
    return handle_of(ctx, memory, exc.stitch_time, "attached")


async def _before_retry(ctx: SyncContext, memory: TriggerMemory, exc: StitchAPIError) -> None:
    """Note whether the failed attempt may have started a job; refuse a retry out of time."""
    memory.may_have_started = memory.may_have_started or exc.request_sent
    if not is_transient(exc):
        forget_trigger(ctx.source_id)
        return
    if out_of_time(memory):
        raise trigger_timeout(ctx.source_id, memory) from exc
    if exc.status_code == 429 and exc.retry_after:
        await asyncio.sleep(min(exc.retry_after, _MAX_RETRY_AFTER_SLEEP))


async def _remember_source_name(ctx: SyncContext, memory: TriggerMemory) -> None:
    """The source's ``name`` (its schema, the loads' ``source_name``), when loads matter."""
    if ctx.options.loads == "ignore":
        return
    try:
        memory.source_name = (await ctx.client.get_source(ctx.source_id)).name
    except StitchError as exc:
        ctx.logger.warning(
            "Could not read source %s (%s): loads get a later baseline", ctx.source_id, exc
        )


async def _report_start(ctx: SyncContext, headline: str, job_name: str | None) -> None:
    """A job was started (its name known) or followed (``attached``)."""
    await report(
        SyncReport(
            SyncStatus.RUNNING,
            ctx.source_id,
            ctx.client_id,
            headline,
            job_name=job_name,
            payload={"attached": job_name is None},
        ),
        ctx.logger,
    )


def handle_of(
    ctx: SyncContext,
    memory: TriggerMemory,
    answer_time: datetime | None,
    origin: JobOrigin,
    job_name: str | None = None,
) -> StitchSyncHandle:
    """The handle of a job: what the trigger learnt, for the wait.

    Args:
        ctx: The sync's context.
        memory: The trigger's memory (its baseline, the source's name).
        answer_time: Stitch's clock of its answer that started the job or said one runs.
        origin: Who started the job.
        job_name: The job's name, when Stitch said it.

    Returns:
        The handle.
    """
    baseline = memory.baseline
    loads = None
    if baseline is not None and baseline.loads is not None and memory.source_name is not None:
        loads = tuple(r for r in baseline.loads if r.source_name == memory.source_name)
    return StitchSyncHandle(
        source_id=ctx.source_id,
        job_name=job_name,
        origin=origin,
        baseline_job_name=None
        if baseline is None
        else completed_record_of(baseline.records, ctx.source_id),
        baseline_stitch_time=None if baseline is None else baseline.stitch_time,
        answer_stitch_time=answer_time,
        requested_at=memory.first_at,
        source_name=memory.source_name,
        baseline_loads=loads,
    )
