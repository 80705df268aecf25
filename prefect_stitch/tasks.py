"""Prefect tasks: start a Stitch sync, wait for it, stop it, read its log, pause a source.

Each task is one step a user sees in the Prefect UI. They are async; from a sync flow
call them with ``.submit(...).result()`` or use
[`stitch_sync_flow`][prefect_stitch.flows.stitch_sync_flow], which composes them.

Retries: only transient faults are retried (no answer, timeouts, 5xx, 429); never a 4xx
and never a failed replication. The trigger is not idempotent, so a retried trigger
that meets ``already_running`` follows the job its first attempt started instead of
failing or starting another. No task is cached: each call talks to Stitch.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import TaskRunContext
from prefect.logging.loggers import LoggingAdapter
from prefect.tasks import Task, exponential_backoff

from prefect_stitch.client import StitchClient, is_transient
from prefect_stitch.credentials import StitchCredentials
from prefect_stitch.errors import (
    StitchAPIError,
    StitchConfigurationError,
    StitchError,
    StitchJobAlreadyRunning,
    StitchJobTerminated,
    StitchReplicationFailed,
    StitchSyncTimeout,
    StitchVerdictUnavailable,
)
from prefect_stitch.models import (
    Extraction,
    StitchSyncHandle,
    StitchSyncResult,
    check_source_id,
    stitch_source_url,
)
from prefect_stitch.poller import poller_for
from prefect_stitch.ratelimit import resolve_global_limit
from prefect_stitch.reporting import emit_sync_event, write_sync_artifact
from prefect_stitch.verdict import (
    DEFAULT_CLOCK_SKEW,
    ExtractionState,
    Verdict,
    exit_statuses_from_log,
    find_job_record,
    find_superseding_record,
    judge_extraction,
)

__all__ = [
    "DEFAULT_LOG_TAIL_LINES",
    "AlreadyRunningPolicy",
    "fetch_stitch_extraction_logs",
    "pause_stitch_source",
    "start_stitch_sync",
    "stop_stitch_sync",
    "wait_for_stitch_sync",
]

AlreadyRunningPolicy = Literal["attach", "fail", "wait_then_start"]

DEFAULT_LOG_TAIL_LINES = 20
"""Lines of the extraction log put into a failure's message and artifact."""

_MAX_LOG_LINE_CHARS = 400
_STOP_TIMEOUT_SECONDS = 20.0
_LOG_FETCH_TIMEOUT_SECONDS = 60.0
_TRIGGER_RETRIES = 4
_MAX_RETRY_AFTER_SLEEP = 120.0

# When each trigger task run first tried (its retries run in the same process). Bounded:
# only the latest entries can still be retried.
_first_attempts: OrderedDict[UUID, datetime] = OrderedDict()
_first_attempts_lock = threading.Lock()
_MAX_REMEMBERED_TRIGGERS = 10_000


def _logger() -> LoggingAdapter | Any:
    return get_run_logger()


async def retry_on_transient(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect ``retry_condition_fn``: retry only transient Stitch faults.

    It is async, as Prefect requires for async tasks (a sync predicate would receive
    an un-awaited coroutine and silently refuse every retry).

    Args:
        task: The task.
        task_run: The task run.
        state: The failed state.

    Returns:
        True for no answer, timeouts, 5xx and 429; False otherwise.

    Example:
        ```python
        from prefect import task
        from prefect_stitch.tasks import retry_on_transient

        @task(retries=3, retry_condition_fn=retry_on_transient)
        async def my_stitch_call() -> None: ...
        ```
    """
    try:
        await state.aresult()
    except BaseException as exc:
        return is_transient(exc)
    return False


def _check_seconds(value: object, parameter: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise StitchConfigurationError(
            f"{parameter} must be a positive number of seconds, got {value!r}",
            parameter=parameter,
        )
    return float(value)


def _check_credentials(credentials: object) -> StitchCredentials:
    if not isinstance(credentials, StitchCredentials):
        raise StitchConfigurationError(
            "credentials must be a StitchCredentials block "
            f"(e.g. StitchCredentials.load('stitch')), got {type(credentials).__name__}",
            parameter="credentials",
        )
    return credentials


_RETRY_CHECK_INTERVAL_SECONDS = 1.0


async def _completed_since(
    credentials: StitchCredentials, client_id: int, source_id: int, since: datetime
) -> Extraction | None:
    """A completed record of the source that started at or after ``since``.

    Read from the account's shared poller, not with a listing of its own: when many
    triggers are retried at once (a Stitch outage during a burst of triggers), they all
    share the next tick instead of each spending a whole listing of the rate budget.
    """
    watch = poller_for(credentials, client_id).watch(_RETRY_CHECK_INTERVAL_SECONDS)
    try:
        snapshot = await watch.next_snapshot()
    finally:
        watch.close()
    if snapshot.error is not None:
        raise snapshot.error  # transient faults: Prefect retries the trigger task
    handle = StitchSyncHandle(source_id=source_id, requested_at=since)
    return find_job_record(handle, list(snapshot.records))


@task(
    name="Start Stitch sync",
    task_run_name="start-stitch-sync-{source_id}",
    retries=_TRIGGER_RETRIES,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_on_transient,
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def start_stitch_sync(
    credentials: StitchCredentials,
    source_id: int,
    on_already_running: AlreadyRunningPolicy = "attach",
    resume_since: datetime | None = None,
) -> StitchSyncHandle:
    """Start a Stitch replication job for a source (``POST /v4/sources/{id}/sync``).

    Stitch runs one job per source at a time. When one is already running (Stitch
    answers **200** with ``already_running``), ``on_already_running`` decides:
    ``"attach"`` follows that job (the returned handle has ``attached=True`` and no job
    name), ``"fail"`` raises `StitchJobAlreadyRunning`;
    ``"wait_then_start"`` is handled by the flow (here it behaves as ``"attach"``).

    Transient faults are retried by Prefect. Because the first attempt may have
    started the job before its answer was lost, a retry first looks for a job of this
    source that completed since the first attempt, and a retry that meets
    ``already_running`` follows the running job as ours, whatever the policy: the
    trigger never starts a second job.

    Args:
        credentials: The Stitch credentials block.
        source_id: The Stitch source id.
        on_already_running: ``"attach"``, ``"fail"`` or ``"wait_then_start"``.
        resume_since: Set when a retried *flow run* triggers again: jobs started since
            then are ours (the flow's first attempt started them).

    Returns:
        The handle of the job to wait for (``handle.job_name`` is the job name when we
        started it).

    Raises:
        StitchJobAlreadyRunning: A job is running and the policy is ``"fail"``.
        StitchInvalidSourceError: The source is unknown or deleted.
        StitchAuthError: The token is not valid for the account.
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
    credentials = _check_credentials(credentials)
    if on_already_running not in ("attach", "fail", "wait_then_start"):
        raise StitchConfigurationError(
            "on_already_running must be 'attach', 'fail' or 'wait_then_start', "
            f"got {on_already_running!r}",
            parameter="on_already_running",
        )
    logger = _logger()
    context = TaskRunContext.get()
    now = datetime.now(UTC)
    retried = bool(context and context.task_run.run_count > 1) or resume_since is not None
    requested_at = resume_since or now
    if context is not None:
        with _first_attempts_lock:
            requested_at = resume_since or _first_attempts.setdefault(context.task_run.id, now)
            while len(_first_attempts) > _MAX_REMEMBERED_TRIGGERS:
                _first_attempts.popitem(last=False)

    async with credentials.get_client() as client:
        # Learn the account first (cached after the first call): if Stitch cannot be read,
        # nothing is started that nobody would watch.
        client_id = await client.resolve_client_id(source_id)
        if retried:
            earlier = await _completed_since(credentials, client_id, source_id, requested_at)
            if earlier is not None:
                logger.info(
                    "An earlier attempt already started job %s for source %s and it has "
                    "completed; reporting it instead of starting another",
                    earlier.job_name,
                    source_id,
                )
                return StitchSyncHandle(
                    source_id=source_id, job_name=earlier.job_name, requested_at=requested_at
                )
        try:
            job_name = await client.start_replication_job(source_id)
        except StitchJobAlreadyRunning as exc:
            if retried:
                logger.info(
                    "A retried trigger found a job running for source %s: it is the one "
                    "the first attempt started; following it",
                    source_id,
                )
                return StitchSyncHandle(
                    source_id=source_id, requested_at=requested_at, seen_running_at=now
                )
            if on_already_running == "fail":
                raise
            logger.info(
                "A Stitch job is already running for source %s; following it to its end "
                "(on_already_running=%r)",
                source_id,
                on_already_running,
            )
            handle = StitchSyncHandle(
                source_id=source_id,
                attached=True,
                requested_at=requested_at,
                seen_running_at=exc.seen_running_at or now,
            )
            emit_sync_event(
                "started", source_id=source_id, client_id=client_id, job_name=None, attached=True
            )
            return handle
        except StitchAPIError as exc:
            if exc.status_code == 429 and exc.retry_after:
                await asyncio.sleep(min(exc.retry_after, _MAX_RETRY_AFTER_SLEEP))
            raise
    logger.info("Started Stitch replication job %s for source %s", job_name, source_id)
    emit_sync_event(
        "started", source_id=source_id, client_id=client_id, job_name=job_name, attached=False
    )
    return StitchSyncHandle(source_id=source_id, job_name=job_name, requested_at=requested_at)


def _as_handle(source_id: int, job: str | StitchSyncHandle | None) -> StitchSyncHandle:
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
        return StitchSyncHandle(source_id=source_id, job_name=job, requested_at=now)
    if job is None:  # follow whatever runs now: the next record completed from now on
        return StitchSyncHandle(
            source_id=source_id, attached=True, requested_at=now, seen_running_at=now
        )
    raise StitchConfigurationError(
        f"job must be a job name or a StitchSyncHandle, got {type(job).__name__}",
        parameter="job_name",
    )


def _bounded_tail(text: str, lines: int) -> str:
    kept = text.splitlines()[-lines:] if lines > 0 else []
    return "\n".join(
        line if len(line) <= _MAX_LOG_LINE_CHARS else line[:_MAX_LOG_LINE_CHARS] + " …"
        for line in kept
    )


async def _stop_quietly(client: StitchClient, source_id: int) -> bool:
    try:
        return await asyncio.wait_for(
            client.stop_replication_job(source_id), timeout=_STOP_TIMEOUT_SECONDS
        )
    except (StitchError, TimeoutError) as exc:
        _logger().error("Could not stop the Stitch job of source %s: %s", source_id, exc)
        return False


async def _fetch_tail(client: StitchClient, job_name: str, lines: int) -> str | None:
    try:
        text = await asyncio.wait_for(
            client.get_extraction_logs(job_name, tail_lines=lines),
            timeout=_LOG_FETCH_TIMEOUT_SECONDS,
        )
    except (StitchError, TimeoutError) as exc:
        _logger().warning("Could not fetch the extraction log of %s: %s", job_name, exc)
        return None
    return _bounded_tail(text, lines)


async def _watch_until_final(
    credentials: StitchCredentials,
    client_id: int,
    handle: StitchSyncHandle,
    *,
    poll_interval_seconds: float,
    deadline: float,
    max_poll_failures: int,
    global_limit_name: str | None,
) -> tuple[Extraction, int, bool]:
    """Receive the account's listings until the job's record is final.

    Returns the record, the number of polls, and whether the record is a *later* job
    that replaced ours in the listing (ours had ended by then). Raises TimeoutError at
    the deadline, the listing's error when polls keep failing (or fail for a
    non-transient reason).
    """
    logger = _logger()
    poller = poller_for(credentials, client_id, global_limit_name=global_limit_name)
    watch = poller.watch(poll_interval_seconds)
    polls = 0
    failures = 0
    try:
        while True:
            snapshot = await watch.next_snapshot(max(deadline - time.monotonic(), 0))
            polls += 1
            if snapshot.error is not None:
                failures += 1
                if not is_transient(snapshot.error) or failures > max_poll_failures:
                    raise snapshot.error
                logger.warning(
                    "Poll %d of source %s failed (%s); %d more failed polls tolerated",
                    polls,
                    handle.source_id,
                    snapshot.error,
                    max_poll_failures - failures,
                )
                continue
            failures = 0
            record = find_job_record(handle, list(snapshot.records), clock_skew=DEFAULT_CLOCK_SKEW)
            verdict = judge_extraction(record)
            logger.debug(
                "Poll %d of source %s (tick %d, %d pages): %s",
                polls,
                handle.source_id,
                snapshot.tick,
                snapshot.pages,
                "job not listed yet" if record is None else f"{record.job_name}: {verdict.state}",
            )
            if record is not None and verdict.state.is_final:
                return record, polls, False
            if record is None:
                later = find_superseding_record(handle, list(snapshot.records))
                if later is not None:
                    return later, polls, True
    finally:
        watch.close()


async def _record_from_log(
    client: StitchClient, handle: StitchSyncHandle, later: Extraction, client_id: int, lines: int
) -> tuple[Extraction, str | None]:
    """Rebuild the record of a job whose listing entry a later job replaced, from its log."""
    job_name = handle.job_name or ""
    _logger().warning(
        "Stitch job %s of source %s ended, but the later job %s replaced its record before a "
        "poll read it; reading its exit statuses from its log",
        job_name,
        handle.source_id,
        later.job_name,
    )
    tail = await _fetch_tail(client, job_name, max(lines, 50))
    statuses = exit_statuses_from_log(tail) if tail else None
    record = Extraction(
        job_name=job_name,
        source_id=handle.source_id,
        stitch_client_id=client_id,
        discovery_exit_status=(statuses or {}).get("discovery"),
        tap_exit_status=(statuses or {}).get("tap"),
        target_exit_status=(statuses or {}).get("target"),
    )
    if statuses is None or not judge_extraction(record).state.is_final:
        raise StitchVerdictUnavailable(
            f"Stitch job {job_name} of source {handle.source_id} ended, but the later job "
            f"{later.job_name} replaced its record before it could be read and its log does "
            "not say how it ended. Pause Stitch's own schedule of the source "
            "(pause_stitch_schedule=True) so only orchestrated jobs run.",
            source_id=handle.source_id,
            job_name=job_name,
            superseded_by=later.job_name,
        )
    return record, _bounded_tail(tail or "", lines)


async def _report_artifact(enabled: bool, **kwargs: Any) -> None:
    if enabled:
        await write_sync_artifact(**kwargs)


def _failure_message(result: StitchSyncResult, verdict: Verdict, log_tail: str | None) -> str:
    job = f"Stitch replication job {result.job_name} for source {result.source_id}"
    if verdict.state is ExtractionState.TERMINATED:
        descriptions = {
            getattr(result, f"{phase}_description") for phase in ("discovery", "tap", "target")
        } - {None}
        said = f" (Stitch says: {'; '.join(sorted(descriptions))})" if descriptions else ""
        text = f"{job} was terminated before its phases reported an exit status{said}."
    else:
        text = f"{job} failed: {verdict.summary}."
    text += f" See {result.stitch_url}"
    if log_tail:
        count = len(log_tail.splitlines())
        text += f"\nLast {count} lines of the extraction log:\n{log_tail}"
    return text


@task(
    name="Wait for Stitch sync",
    task_run_name="wait-for-stitch-sync-{source_id}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def wait_for_stitch_sync(
    credentials: StitchCredentials,
    source_id: int,
    job_name: str | StitchSyncHandle | None = None,
    poll_interval_seconds: float = 30.0,
    max_wait_seconds: float = 6 * 3600.0,
    stop_on_timeout: bool = True,
    fetch_logs_on_failure: bool = True,
    log_tail_lines: int = DEFAULT_LOG_TAIL_LINES,
    max_poll_failures: int = 5,
    global_rate_limit: str | None = None,
    write_artifact: bool = True,
) -> StitchSyncResult:
    """Wait until a Stitch replication job ends; return its result or raise its failure.

    Stitch has no job-status endpoint: its extraction list shows the *last completed*
    job of each source. So the job is recognised by its name (the record listed right
    after a trigger is the previous job, never ours), or, for a job we attached to,
    as the source's first record completed after we saw it running. Polling goes
    through the account's shared poller, which keeps within the jobs rate budget.

    Transient faults while polling never fail a healthy sync: the client retries each
    request, and up to ``max_poll_failures`` consecutive failed polls are tolerated.

    Args:
        credentials: The Stitch credentials block.
        source_id: The Stitch source id.
        job_name: The job's name, the handle from
            [`start_stitch_sync`][prefect_stitch.tasks.start_stitch_sync], or ``None``
            to follow whatever job of the source completes next.
        poll_interval_seconds: Seconds between polls (the account's budget may make
            the tick longer).
        max_wait_seconds: Wall-clock limit of the whole wait, polls and retries
            included.
        stop_on_timeout: Stop the Stitch job when the wait times out.
        fetch_logs_on_failure: Put the tail of the extraction log into the error.
        log_tail_lines: How many log lines to keep.
        max_poll_failures: Consecutive failed polls tolerated before giving up.
        global_rate_limit: A Prefect global concurrency limit (a rate limit with slot
            decay) that paces the account's jobs requests across processes; created if
            missing. By default ``stitch-jobs-<client_id>`` is used when it exists.
        write_artifact: Leave a markdown artifact (``stitch-sync-<source_id>``) on the
            run. A run that syncs many sources writes one summary table instead.

    Returns:
        The job's result, when every phase exited 0.

    Raises:
        StitchReplicationFailed: A phase exited non-zero (``failed_phases`` says which).
        StitchJobTerminated: The job was terminated.
        StitchSyncTimeout: The job did not end within ``max_wait_seconds``.
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
    credentials = _check_credentials(credentials)
    poll_interval_seconds = _check_seconds(poll_interval_seconds, "poll_interval_seconds")
    max_wait_seconds = _check_seconds(max_wait_seconds, "max_wait_seconds")
    handle = _as_handle(source_id, job_name)
    logger = _logger()
    deadline = time.monotonic() + max_wait_seconds

    async with credentials.get_client() as client:
        client_id = await client.resolve_client_id(source_id)
        client.global_limit_name = await resolve_global_limit(
            client_id,
            global_rate_limit,
            limit=credentials.jobs_rate_limit,
            period=credentials.jobs_rate_period_seconds,
        )
        url = stitch_source_url(client_id, source_id)
        shown = handle.job_name or "(the running job)"
        logger.info(
            "Waiting for Stitch job %s of source %s (poll every %.0f s, at most %.0f s): %s",
            shown,
            source_id,
            poll_interval_seconds,
            max_wait_seconds,
            url,
        )
        try:
            record, polls, superseded = await _watch_until_final(
                credentials,
                client_id,
                handle,
                poll_interval_seconds=poll_interval_seconds,
                deadline=deadline,
                max_poll_failures=max_poll_failures,
                global_limit_name=client.global_limit_name,
            )
        except TimeoutError:
            stopped = await _stop_quietly(client, source_id) if stop_on_timeout else False
            message = (
                f"Stitch job {shown} of source {source_id} did not finish within "
                f"{max_wait_seconds:.0f} s"
                + ("; the job was stopped" if stopped else "; the job was left running")
                + f". See {url}"
            )
            logger.error(message)
            emit_sync_event(
                "timed_out",
                source_id=source_id,
                client_id=client_id,
                job_name=handle.job_name,
                stopped=stopped,
                max_wait_seconds=max_wait_seconds,
            )
            await _report_artifact(
                write_artifact,
                source_id=source_id,
                client_id=client_id,
                headline=f"Timed out: {message}",
                job_name=handle.job_name,
            )
            raise StitchSyncTimeout(
                message,
                source_id=source_id,
                job_name=handle.job_name,
                max_wait_seconds=max_wait_seconds,
                stopped=stopped,
            ) from None
        except asyncio.CancelledError:
            stopped = await _stop_quietly(client, source_id)
            logger.warning(
                "The run was cancelled while waiting for Stitch job %s of source %s: %s",
                shown,
                source_id,
                "stopped the Stitch job" if stopped else "could not confirm the Stitch job stopped",
            )
            emit_sync_event(
                "cancelled",
                source_id=source_id,
                client_id=client_id,
                job_name=handle.job_name,
                stopped=stopped,
            )
            raise

        log_tail: str | None = None
        if superseded:
            record, log_tail = await _record_from_log(
                client, handle, record, client_id, log_tail_lines
            )
        verdict = judge_extraction(record)
        result = StitchSyncResult.from_extraction(
            record,
            status=verdict.state.value,  # type: ignore[arg-type]
            attached=handle.attached,
            client_id=client_id,
            polls=polls,
        )
        if verdict.state is ExtractionState.SUCCEEDED:
            logger.info(
                "Stitch job %s of source %s succeeded in %s s after %d polls",
                result.job_name,
                source_id,
                "?" if result.duration_seconds is None else f"{result.duration_seconds:.0f}",
                polls,
            )
            emit_sync_event(
                "succeeded",
                source_id=source_id,
                client_id=client_id,
                job_name=result.job_name,
                result=result,
            )
            await _report_artifact(
                write_artifact,
                source_id=source_id,
                client_id=client_id,
                headline=f"Succeeded: every phase of {result.job_name} exited 0.",
                result=result,
            )
            return result

        if log_tail is None and fetch_logs_on_failure and result.job_name:
            log_tail = await _fetch_tail(client, result.job_name, log_tail_lines)
    message = _failure_message(result, verdict, log_tail)
    logger.error(message.splitlines()[0])
    kind = "terminated" if verdict.state is ExtractionState.TERMINATED else "failed"
    emit_sync_event(
        kind,
        source_id=source_id,
        client_id=client_id,
        job_name=result.job_name,
        result=result,
        failed_phases=[
            {"phase": f.phase, "exit_status": f.exit_status, "description": f.description}
            for f in verdict.failed_phases
        ],
    )
    await _report_artifact(
        write_artifact,
        source_id=source_id,
        client_id=client_id,
        headline=message.splitlines()[0],
        result=result,
        log_tail=log_tail,
    )
    error_type = (
        StitchJobTerminated
        if verdict.state is ExtractionState.TERMINATED
        else StitchReplicationFailed
    )
    raise error_type(
        message,
        source_id=source_id,
        job_name=result.job_name,
        failed_phases=verdict.failed_phases,
        result=result,
        log_tail=log_tail,
    )


@task(
    name="Stop Stitch sync",
    task_run_name="stop-stitch-sync-{source_id}",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_on_transient,
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def stop_stitch_sync(credentials: StitchCredentials, source_id: int) -> bool:
    """Stop the running replication job of a source (``DELETE /v4/sources/{id}/sync``).

    Only extraction stops: data already extracted is still loaded by Stitch.

    Args:
        credentials: The Stitch credentials block.
        source_id: The Stitch source id.

    Returns:
        True when Stitch confirmed the stop, False when no job was running (404).

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
    credentials = _check_credentials(credentials)
    async with credentials.get_client() as client:
        stopped = await client.stop_replication_job(source_id)
    _logger().info(
        "Stop of the Stitch job of source %s: %s",
        source_id,
        "confirmed" if stopped else "no job was running",
    )
    return stopped


@task(
    name="Fetch Stitch extraction logs",
    task_run_name="fetch-stitch-logs",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_on_transient,
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def fetch_stitch_extraction_logs(
    credentials: StitchCredentials, job_name: str, tail_lines: int | None = None
) -> str:
    """Download a job's extraction log (or its last lines).

    Args:
        credentials: The Stitch credentials block.
        job_name: The replication job's name.
        tail_lines: Keep only the last lines.

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
    credentials = _check_credentials(credentials)
    async with credentials.get_client() as client:
        return await client.get_extraction_logs(job_name, tail_lines=tail_lines)


@task(
    name="Pause Stitch schedule",
    task_run_name="pause-stitch-source-{source_id}",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=retry_on_transient,
    cache_policy=NO_CACHE,
    persist_result=False,
)
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
    credentials = _check_credentials(credentials)
    async with credentials.get_client() as client:
        source = await client.get_source(source_id)
        if source.paused_at is not None and paused:
            return False
        if source.paused_at is None and not paused:
            return False
        if paused:
            await client.pause_source(source_id)
            _logger().info(
                "Paused Stitch's own schedule of source %s: only orchestrated runs will happen",
                source_id,
            )
        else:
            await client.unpause_source(source_id)
            _logger().info("Resumed Stitch's own schedule of source %s", source_id)
        return True
