"""One source's sync in a flow run, and many at once: trigger, wait, judge, re-run.

* ``max_wait_seconds`` bounds everything: the trigger and its retries, the wait, and every
  replication retry.
* ``replication_retries`` re-runs a failed or terminated job (never after a timeout, an API
  error or a failed load), after ``replication_retry_delay_seconds``; every job is listed in
  the result, the artifact and the final error.
* A Prefect retry of the flow run starts a new job when the previous attempt saw its job's
  final failed record, and otherwise follows the job the previous attempt started (never two
  jobs of the source at once).
* A job that turns out not to be ours is handled as ``on_already_running`` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from prefect_stitch._engine.context import run_logger
from prefect_stitch._engine.memory import RunMemory, run_memory
from prefect_stitch._engine.outcomes import outcome_of, write_many_summary
from prefect_stitch._engine.steps import trigger, wait_task
from prefect_stitch._engine.suspension import Registration, Suspender
from prefect_stitch._poll import pollers_of
from prefect_stitch.credentials import StitchCredentials
from prefect_stitch.errors import (
    StitchJobAlreadyRunning,
    StitchLoadFailed,
    StitchReplicationFailed,
    StitchSyncManyFailed,
    StitchSyncTimeout,
    StitchVerdictUnavailable,
)
from prefect_stitch.models import (
    StitchSyncHandle,
    StitchSyncManyResult,
    StitchSyncResult,
    SyncOutcome,
)
from prefect_stitch.options import SyncOptions

__all__ = ["SourceSync", "suspender_for", "sync_many"]

VERDICTS = (
    StitchReplicationFailed,
    StitchSyncTimeout,
    StitchVerdictUnavailable,
    StitchJobAlreadyRunning,
)
"""The errors that are a verdict on the job. Any other error (Stitch could not be read, the
process was stopped) leaves a suspended run's registration in place, so that a retry of the
run follows the same job instead of starting another."""


class SourceSync:
    """One source's sync in a flow run, from its trigger to its last verdict.

    Args:
        credentials: The account's credentials.
        source_id: The source.
        options: The sync's options.
        started: The handle of a job already triggered (``StitchSource.trigger``): it is
            waited for first.
        deadline: ``time.monotonic()`` bound of the whole sync (default: now plus
            ``max_wait_seconds``).
        write_artifact: Leave the sync's artifact (a many-sources run writes one table).
        suspender: Suspends the run while Stitch works (``suspend_while_waiting``); a
            many-sources run suspends once for every source, and passes none.
    """

    def __init__(
        self,
        credentials: StitchCredentials,
        source_id: int,
        options: SyncOptions,
        *,
        started: StitchSyncHandle | None = None,
        deadline: float | None = None,
        write_artifact: bool = True,
        suspender: Suspender | None = None,
    ) -> None:
        self.credentials, self.source_id, self.options = credentials, source_id, options
        self.suspender = suspender
        self.deadline = deadline or time.monotonic() + options.max_wait_seconds
        self.write_artifact = write_artifact
        self.started = started
        self.memory: RunMemory = run_memory(source_id)
        if started is not None and self.memory.pending is None:
            self.memory.pending = started
        self.reruns_left = options.replication_retries
        self.paused = started is not None
        """Stitch's schedule was paused, if asked (the block pauses before its trigger)."""
        self.resumed = False
        """The watcher resumed this run for its job: the job's end is in a recent listing."""

    def time_left(self) -> float:
        """Seconds left of ``max_wait_seconds``.

        Raises:
            StitchSyncTimeout: None are left.
        """
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise StitchSyncTimeout(
                f"The sync of source {self.source_id} ran out of max_wait_seconds "
                f"({self.options.max_wait_seconds:.0f} s)",
                source_id=self.source_id,
                job_name=None,
                max_wait_seconds=self.options.max_wait_seconds,
                stopped=False,
                attempts=self.memory.attempts,
            )
        return left

    async def run(
        self,
        trigger_slots: asyncio.Semaphore | None = None,
        *,
        first: StitchSyncHandle | None = None,
    ) -> StitchSyncResult:
        """Trigger (or follow), wait, and re-run as the options say, until a verdict stands.

        Args:
            trigger_slots: Bounds how many triggers run at once (many sources).
            first: The job to wait for first, already started (many sources).

        Returns:
            The result of the job that succeeded.

        Raises:
            StitchReplicationFailed: The last job failed (its ``attempts`` list them all).
            StitchJobAlreadyRunning: A job not started by this run ran, and the policy is
                ``"fail"``.
            StitchSyncTimeout: ``max_wait_seconds`` ran out.
        """
        while True:
            handle, first = first or await self.start(trigger_slots), None
            if self.suspender is not None:
                await self.suspender.while_stitch_works(
                    [handle],
                    {self.source_id: self.memory.attempts},
                    {self.source_id: self.reruns_left},
                    self.seconds_left(),
                )
            try:
                result, failure = await self._verdict(handle)
            except VERDICTS:
                await self._verdict_is_in()
                raise
            await self._verdict_is_in()
            if result is not None and result.attached:
                if self.options.on_already_running == "wait_then_start":
                    run_logger().info(
                        "The job that was running for source %s has ended; starting ours",
                        self.source_id,
                    )
                    continue
                self._refuse_if_not_ours(handle, result, failure)
            if failure is None:
                assert result is not None
                return result
            await self._before_rerun(failure)

    async def _verdict_is_in(self) -> None:
        """The job's verdict is in: a suspended run's registration has served."""
        if self.suspender is not None:
            await self.suspender.done()

    def seconds_left(self) -> float:
        """Seconds left of ``max_wait_seconds`` (never negative)."""
        return max(self.deadline - time.monotonic(), 0.0)

    async def resume(self, registration: Registration | None) -> None:
        """Follow the job a suspended part of this run started (the watcher resumed it).

        Args:
            registration: What the run left before it was suspended.
        """
        handle = None if registration is None else registration.handle_of(self.source_id)
        if registration is None or handle is None or self.memory.pending is not None:
            return
        self.memory.pending, self.paused = handle, True
        self.resumed = True
        self.memory.attempts = list(registration.attempts.get(self.source_id, []))
        self.reruns_left = registration.reruns_left.get(self.source_id, self.reruns_left)
        self.deadline = time.monotonic() + registration.deadline - time.time()
        run_logger().info(
            "Resumed: following Stitch job %s of source %s, which this run started before it "
            "was suspended",
            handle.job_name or "(name unknown)",
            self.source_id,
        )

    async def start(self, trigger_slots: asyncio.Semaphore | None = None) -> StitchSyncHandle:
        """The job to wait for: one this run started before (suspended, retried), or a new one.

        Args:
            trigger_slots: Bounds how many triggers run at once (many sources).

        Returns:
            The job's handle.
        """
        if self.suspender is not None:
            await self.resume(await self.suspender.registration())
        handle = self.memory.pending
        if handle is None:
            async with trigger_slots or contextlib.nullcontext():
                options = self.options
                if self.paused:  # once per sync, not for each replication retry
                    options = options.replace(pause_stitch_schedule=False)
                handle = await trigger(self.credentials, self.source_id, options, self.time_left())
            self.paused = True
            self.memory.pending = handle
        elif handle is not self.started:
            run_logger().info(
                "A previous attempt of this flow run started Stitch job %s of source %s and "
                "did not see it end: following it instead of starting another",
                handle.job_name or "(name unknown)",
                self.source_id,
            )
        return handle

    async def _verdict(
        self, handle: StitchSyncHandle
    ) -> tuple[StitchSyncResult | None, StitchReplicationFailed | None]:
        """Wait for the job's verdict: its result, or its failure (with the result in it)."""
        failure: StitchReplicationFailed | None = None
        try:
            # However little time is left, the wait runs: past the deadline it stops the job
            # (per stop_on_timeout) and says so.
            result: StitchSyncResult | None = await wait_task(
                self.credentials,
                self.source_id,
                handle,
                self.options,
                max(self.seconds_left(), 0.01),
                self.memory.attempts,
                self.write_artifact,
                self.resumed,
            )
            self.resumed = False
        except StitchReplicationFailed as exc:
            failure, result = exc, exc.result
        self.memory.pending = None  # a verdict was seen: a retry of the run starts a new job
        if result is not None:
            self.memory.attempts = list(result.attempts)
        return result, failure

    def _refuse_if_not_ours(
        self,
        handle: StitchSyncHandle,
        result: StitchSyncResult,
        failure: StitchReplicationFailed | None,
    ) -> None:
        """A retried trigger followed a job that was not ours, and the policy is ``fail``."""
        if handle.origin != "uncertain" or self.options.on_already_running != "fail":
            return
        verdict = "succeeded" if failure is None else str(failure).splitlines()[0]
        raise StitchJobAlreadyRunning(
            f"The job followed for source {handle.source_id} ({result.job_name}) was not "
            "started by this run: it started before this run first asked Stitch for a job, "
            "so a retried trigger met it running (on_already_running='fail'). It ended: "
            f"{verdict}",
            source_id=self.source_id,
            job_name=result.job_name,
        )

    async def _before_rerun(self, failure: StitchReplicationFailed) -> None:
        """Wait before re-running a failed job, or raise the failure when none is left."""
        if self.reruns_left <= 0 or isinstance(failure, StitchLoadFailed):
            raise failure  # a load failure is the warehouse's: extracting again won't fix it
        delay, left = self.options.replication_retry_delay_seconds, self.time_left()
        if delay >= left:
            raise _out_of_time_for_reruns(failure, self.reruns_left, delay, left)
        self.reruns_left -= 1
        run_logger().warning(
            "Stitch job %s of source %s did not succeed; starting it again in %.0f s "
            "(%d replication retries left)",
            failure.job_name,
            self.source_id,
            delay,
            self.reruns_left,
        )
        await asyncio.sleep(delay)


def _out_of_time_for_reruns(
    failure: StitchReplicationFailed, reruns_left: int, delay: float, left: float
) -> StitchReplicationFailed:
    """The failure, saying why the replication retries left were not run."""
    said = (
        f"{reruns_left} replication {'retry was' if reruns_left == 1 else 'retries were'} "
        f"not run: the next would start after max_wait_seconds ({delay:.0f} s of delay, "
        f"{left:.0f} s left)"
    )
    run_logger().warning(
        "Stitch job %s of source %s did not succeed; %s", failure.job_name, failure.source_id, said
    )
    first, _, rest = failure.message.partition("\n")
    failure.message = f"{first} {said[0].upper()}{said[1:]}." + (f"\n{rest}" if rest else "")
    failure.args = (failure.message,)
    return failure


def suspender_for(
    credentials: StitchCredentials, options: SyncOptions, source_id: int
) -> Suspender | None:
    """The suspender of a sync that asks to suspend while Stitch works (else none).

    Args:
        credentials: The account's credentials.
        options: The sync's options.
        source_id: A source of the account.

    Returns:
        The suspender, or ``None``.
    """
    return Suspender(credentials, options, source_id) if options.suspend_while_waiting else None


async def sync_many(
    credentials: StitchCredentials,
    source_ids: Sequence[int],
    options: SyncOptions,
    *,
    max_concurrent: int,
    fail_fast: bool,
) -> StitchSyncManyResult:
    """Sync many sources of one account at once, sharing the account's poll.

    Args:
        credentials: The account's credentials.
        source_ids: The sources (distinct).
        options: Every source's options.
        max_concurrent: How many triggers run at once.
        fail_fast: At the first failure, stop the other jobs and fail at once.

    Returns:
        Every source's outcome, when all succeeded.

    Raises:
        StitchSyncManyFailed: Some sources did not succeed; ``.results`` has them all.
    """
    logger = run_logger()
    logger.info(
        "Syncing %d Stitch sources (%d triggers at a time, one shared poll per tick)",
        len(source_ids),
        max_concurrent,
    )
    requests_before = sum(poller.requests for poller in pollers_of(credentials))
    triggers = asyncio.Semaphore(max_concurrent)
    syncs = {
        source_id: SourceSync(credentials, source_id, options, write_artifact=False)
        for source_id in source_ids
    }
    suspender = suspender_for(credentials, options, source_ids[0])
    started, values = await _start_while_stitch_works(syncs, triggers, suspender)
    running = {
        asyncio.create_task(sync.run(triggers, first=started.get(source_id))): source_id
        for source_id, sync in syncs.items()
        if source_id not in values
    }
    values.update(await _gather(running, fail_fast))
    if suspender is not None and all(_is_verdict(value) for value in values.values()):
        await suspender.done()  # else a retry of the run follows the same jobs
    summary = [outcome_of(source_id, values[source_id]) for source_id in source_ids]
    await write_many_summary(summary, logger)
    _raise_if_any_failed(summary, values)
    logger.info("All %d Stitch syncs succeeded", len(source_ids))
    spent = sum(poller.requests for poller in pollers_of(credentials)) - requests_before
    return StitchSyncManyResult(outcomes=summary, jobs_requests=spent)


def _is_verdict(value: StitchSyncResult | BaseException) -> bool:
    """Whether a source's outcome is its job's verdict (a wait fail_fast cancelled is one)."""
    return not isinstance(value, BaseException) or isinstance(
        value, (*VERDICTS, asyncio.CancelledError)
    )


async def _start_while_stitch_works(
    syncs: dict[int, SourceSync], triggers: asyncio.Semaphore, suspender: Suspender | None
) -> tuple[dict[int, StitchSyncHandle], dict[int, StitchSyncResult | BaseException]]:
    """With a suspender: start every source's job, then suspend the run once for them all.

    Returns:
        The jobs started, and the errors of the triggers that failed, by source (none
        without a suspender: each sync starts its own).
    """
    if suspender is None:
        return {}, {}
    registration = await suspender.registration()
    for sync in syncs.values():
        await sync.resume(registration)
    outcomes = await asyncio.gather(
        *(sync.start(triggers) for sync in syncs.values()), return_exceptions=True
    )
    started: dict[int, StitchSyncHandle] = {}
    failed: dict[int, StitchSyncResult | BaseException] = {}
    for source_id, outcome in zip(syncs, outcomes, strict=True):
        if isinstance(outcome, StitchSyncHandle):
            started[source_id] = outcome
        else:
            failed[source_id] = outcome
    if failed and started:
        run_logger().warning(
            "Not suspending the run while Stitch works: the trigger of source %s failed (its "
            "error is reported with the other sources' verdicts). Waiting in this process",
            ", ".join(map(str, failed)),
        )
    elif started:
        await suspender.while_stitch_works(
            list(started.values()),
            {source_id: syncs[source_id].memory.attempts for source_id in started},
            {source_id: syncs[source_id].reruns_left for source_id in started},
            min(syncs[source_id].seconds_left() for source_id in started),
        )
    return started, failed


async def _gather(
    running: dict[asyncio.Task[StitchSyncResult], int], fail_fast: bool
) -> dict[int, StitchSyncResult | BaseException]:
    """Every source's result or error; with ``fail_fast``, the first failure cancels the rest."""
    values: dict[int, StitchSyncResult | BaseException] = {}
    try:
        pending = set(running)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                error = finished.exception()
                values[running[finished]] = error if error is not None else finished.result()
            if fail_fast and any(isinstance(v, BaseException) for v in values.values()):
                for task in pending:
                    task.cancel()
                outcomes = await asyncio.gather(*pending, return_exceptions=True)
                for task, outcome in zip(pending, outcomes, strict=True):
                    values[running[task]] = outcome
                pending = set()
    finally:
        for task in running:  # the run itself was cancelled: every wait stops its job
            task.cancel()
    return values


def _raise_if_any_failed(
    summary: list[SyncOutcome], values: dict[int, StitchSyncResult | BaseException]
) -> None:
    """Raise the many-sources failure naming every source that did not succeed."""
    failed = [outcome for outcome in summary if not outcome.ok]
    if not failed:
        return
    named = ", ".join(f"{o.source_id} ({o.error_type}: {o.message})" for o in failed)
    raise StitchSyncManyFailed(
        f"{len(failed)} of {len(summary)} Stitch syncs did not succeed: {named}",
        failures={
            o.source_id: error
            for o in failed
            if isinstance(error := values[o.source_id], BaseException)
        },
        results={o.source_id: o for o in summary},
    )
