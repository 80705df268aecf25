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

Which job is ours is decided from Stitch's records and Stitch's clock only (see
[`prefect_stitch._verdict`][prefect_stitch._verdict]): before acting, the trigger reads
the source's listed record (the *baseline*), and every answer's ``Date`` header gives
Stitch's time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn
from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.loggers import LoggingAdapter
from prefect.tasks import Task, exponential_backoff

from prefect_stitch._lineage import emit_table_materializations
from prefect_stitch._loads import LoadOutcome, LoadsMode, settle_loads
from prefect_stitch._logscan import LogScan
from prefect_stitch._poll.poller import Snapshot, Watch, poller_for
from prefect_stitch._ratelimit import resolve_global_limit
from prefect_stitch._reporting import SyncReport, report_outcome
from prefect_stitch._verdict import (
    ExtractionState,
    Verdict,
    find_earlier_attempt,
    judge_extraction,
    locate_job,
    started_before_baseline,
)
from prefect_stitch.client import StitchClient, is_transient
from prefect_stitch.credentials import StitchCredentials
from prefect_stitch.errors import (
    StitchAPIError,
    StitchConfigurationError,
    StitchError,
    StitchJobAlreadyRunning,
    StitchJobTerminated,
    StitchLoadFailed,
    StitchLoadTimeout,
    StitchReplicationFailed,
    StitchSyncTimeout,
    StitchVerdictUnavailable,
)
from prefect_stitch.models import (
    Extraction,
    JobOrigin,
    StitchSyncHandle,
    StitchSyncResult,
    SyncAttempt,
    check_source_id,
    stitch_source_url,
)

__all__ = [
    "DEFAULT_LOG_TAIL_LINES",
    "DEFAULT_MAX_LOAD_WAIT_SECONDS",
    "AlreadyRunningPolicy",
    "LoadsMode",
    "fetch_stitch_extraction_logs",
    "pause_stitch_source",
    "start_stitch_sync",
    "stop_stitch_sync",
    "wait_for_stitch_sync",
]

AlreadyRunningPolicy = Literal["attach", "fail", "wait_then_start"]

DEFAULT_LOG_TAIL_LINES = 20
"""Lines of the extraction log put into a failure's message and artifact."""

DEFAULT_MAX_LOAD_WAIT_SECONDS = 3600.0
"""How long a sync waits for its data to load, from the extraction's success."""

_MAX_LOG_LINE_CHARS = 400
_STOP_TIMEOUT_SECONDS = 20.0
_LOG_FETCH_TIMEOUT_SECONDS = 120.0
_TRIGGER_RETRIES = 4
_MAX_RETRY_AFTER_SLEEP = 120.0
_LOOKUP_INTERVAL_SECONDS = 1.0


def _logger() -> LoggingAdapter | Any:
    return get_run_logger()


# -- what a trigger task run remembers between its Prefect retries --------------------------


@dataclass
class _TriggerMemory:
    """What every attempt to start one source's job in one run shares.

    Prefect retries the trigger task in this process, and retries a failed flow run in
    this process too; both find this memory (keyed by the flow run, or the task run
    outside a flow, and the source) until an attempt returns a handle.
    """

    first_at: datetime
    deadline: float | None  # time.monotonic() after which nothing more is tried
    max_wait_seconds: float | None = None
    baseline: Snapshot | None = None
    may_have_started: bool = False  # an attempt's request may have reached Stitch
    source_name: str | None = None


_trigger_memory: OrderedDict[tuple[UUID, int], _TriggerMemory] = OrderedDict()
_memory_of_task_run: OrderedDict[UUID, _TriggerMemory] = OrderedDict()
_trigger_memory_lock = threading.Lock()
_MAX_REMEMBERED_TRIGGERS = 10_000


def _memory_key(source_id: int) -> tuple[UUID, int] | None:
    flow_context = FlowRunContext.get()
    if flow_context is not None and flow_context.flow_run is not None:
        return flow_context.flow_run.id, source_id
    task_context = TaskRunContext.get()
    return None if task_context is None else (task_context.task_run.id, source_id)


def _memory_for(source_id: int, max_wait_seconds: float | None) -> _TriggerMemory:
    now = datetime.now(UTC)
    deadline = None if max_wait_seconds is None else time.monotonic() + max_wait_seconds
    key = _memory_key(source_id)
    task_context = TaskRunContext.get()
    if key is None:
        return _TriggerMemory(now, deadline, max_wait_seconds)
    with _trigger_memory_lock:
        memory = _trigger_memory.get(key)
        if memory is None:
            memory = _trigger_memory[key] = _TriggerMemory(now, deadline, max_wait_seconds)
        if task_context is not None and task_context.task_run.id not in _memory_of_task_run:
            # A new task run (the first, or one of a retried flow run): a fresh deadline.
            memory.deadline, memory.max_wait_seconds = deadline, max_wait_seconds
            _memory_of_task_run[task_context.task_run.id] = memory
        for kept in (_trigger_memory, _memory_of_task_run):
            while len(kept) > _MAX_REMEMBERED_TRIGGERS:
                kept.popitem(last=False)
        return memory


def _forget_trigger(source_id: int) -> None:
    """The trigger returned a handle: the next trigger of this source starts afresh."""
    key = _memory_key(source_id)
    if key is not None:
        with _trigger_memory_lock:
            _trigger_memory.pop(key, None)


async def retry_on_transient(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect ``retry_condition_fn``: retry only transient Stitch faults, within the deadline.

    It is async, as Prefect requires for async tasks (a sync predicate would receive
    an un-awaited coroutine and silently refuse every retry). A trigger whose
    ``max_wait_seconds`` has run out is not retried.

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
    with _trigger_memory_lock:
        memory = _memory_of_task_run.get(task_run.id)
    if (
        memory is not None
        and memory.deadline is not None
        and time.monotonic() + _next_retry_delay(task, task_run) >= memory.deadline
    ):
        return False  # the retry would start after max_wait_seconds
    try:
        await state.aresult()
    except BaseException as exc:
        return is_transient(exc)
    return False


def _next_retry_delay(task: Task[Any, Any], task_run: TaskRun) -> float:
    """The delay Prefect will wait before the task's next attempt (jitter aside)."""
    delays = task.retry_delay_seconds
    if isinstance(delays, int | float):
        return float(delays)
    if isinstance(delays, list) and delays:
        return float(delays[min(max(task_run.run_count - 1, 0), len(delays) - 1)])
    return 0.0


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


def _check_loads(loads: object) -> None:
    if loads not in ("wait", "check", "ignore"):
        raise StitchConfigurationError(
            f"loads must be 'wait', 'check' or 'ignore', got {loads!r}", parameter="loads"
        )


def _check_policy(on_already_running: object) -> None:
    if on_already_running not in ("attach", "fail", "wait_then_start"):
        raise StitchConfigurationError(
            "on_already_running must be 'attach', 'fail' or 'wait_then_start', "
            f"got {on_already_running!r}",
            parameter="on_already_running",
        )


def _remaining(memory: _TriggerMemory) -> float | None:
    return None if memory.deadline is None else max(memory.deadline - time.monotonic(), 0.0)


async def _listing(
    watch: Watch, memory: _TriggerMemory, source_id: int, *, fresh: bool
) -> Snapshot:
    """A listing of the account for the trigger, within the sync's deadline."""
    try:
        snapshot = await (
            watch.next_snapshot(_remaining(memory)) if fresh else watch.baseline(_remaining(memory))
        )
    except TimeoutError:
        raise _trigger_timeout(source_id, memory) from None
    if snapshot.error is not None:
        raise snapshot.error  # transient faults: Prefect retries the trigger task
    return snapshot


def _out_of_time(memory: _TriggerMemory) -> bool:
    """Whether Prefect's next retry of the running trigger would start past the deadline."""
    context = TaskRunContext.get()
    if memory.deadline is None or context is None:
        return False
    run = context.task_run
    retries_left = context.task.retries - (run.run_count - 1)
    return retries_left > 0 and (
        time.monotonic() + _next_retry_delay(context.task, run) >= memory.deadline
    )


def _trigger_timeout(source_id: int, memory: _TriggerMemory) -> StitchSyncTimeout:
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
    max_wait_seconds: float | None = None,
    loads: LoadsMode = "wait",
    global_rate_limit: str | None = None,
) -> StitchSyncHandle:
    """Start a Stitch replication job for a source (``POST /v4/sources/{id}/sync``).

    Before asking, it reads the account's listing (a recent one the account's poller
    already has, or the next): the source's record there is the *baseline*, which the
    waiter needs to recognise our job without trusting anyone's clock.

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
    credentials = _check_credentials(credentials)
    _check_policy(on_already_running)
    _check_loads(loads)
    if max_wait_seconds is not None:
        max_wait_seconds = _check_seconds(max_wait_seconds, "max_wait_seconds")
    memory = _memory_for(source_id, max_wait_seconds)
    if memory.deadline is not None and time.monotonic() >= memory.deadline:
        raise _trigger_timeout(source_id, memory)
    logger = _logger()

    async with credentials.get_client() as client:
        # Learn the account and the baseline first: if Stitch cannot be read, nothing is
        # started that nobody would watch.
        client_id = await client.resolve_client_id(source_id)
        limit = await resolve_global_limit(
            client_id,
            global_rate_limit,
            limit=credentials.jobs_rate_limit,
            period=credentials.jobs_rate_period_seconds,
        )
        watch = poller_for(credentials, client_id, global_limit_name=limit).watch(
            _LOOKUP_INTERVAL_SECONDS, loads=loads != "ignore"
        )
        try:
            if memory.baseline is None:
                memory.baseline = await _listing(watch, memory, source_id, fresh=False)
            elif memory.may_have_started:
                earlier = find_earlier_attempt(
                    _handle(source_id, memory, None, "started"),
                    (await _listing(watch, memory, source_id, fresh=True)).records,
                )
                if earlier is not None:
                    logger.info(
                        "An earlier attempt's answer was lost, and job %s of source %s has "
                        "run since: reporting it instead of starting another",
                        earlier.job_name,
                        source_id,
                    )
                    _forget_trigger(source_id)
                    return _handle(source_id, memory, None, "started", earlier.job_name)
        finally:
            watch.close()
        try:
            answer = await client.trigger_replication_job(source_id)
        except StitchJobAlreadyRunning as exc:
            if memory.may_have_started:
                logger.warning(
                    "A retried trigger found a job running for source %s. It may be the one "
                    "the earlier attempt started (its answer was lost): following it; its "
                    "record will tell whether it was ours",
                    source_id,
                )
                _forget_trigger(source_id)
                return _handle(source_id, memory, exc.stitch_time, "uncertain")
            _forget_trigger(source_id)
            if on_already_running == "fail":
                raise
            logger.info(
                "A Stitch job is already running for source %s; following it to its end "
                "(on_already_running=%r)",
                source_id,
                on_already_running,
            )
            if loads != "ignore":
                memory.source_name = await _source_name(client, source_id)
            handle = _handle(source_id, memory, exc.stitch_time, "attached")
            await report_outcome(
                SyncReport(
                    "started",
                    source_id=source_id,
                    client_id=client_id,
                    headline=f"Following the Stitch job already running for source {source_id}",
                    payload={"attached": True},
                ),
                logger,
            )
            return handle
        except StitchAPIError as exc:
            memory.may_have_started = memory.may_have_started or exc.request_sent
            if not is_transient(exc):
                _forget_trigger(source_id)
                raise
            if _out_of_time(memory):
                raise _trigger_timeout(source_id, memory) from exc
            if exc.status_code == 429 and exc.retry_after:
                await asyncio.sleep(min(exc.retry_after, _MAX_RETRY_AFTER_SLEEP))
            raise
        if loads != "ignore":
            memory.source_name = await _source_name(client, source_id)
    _forget_trigger(source_id)
    await report_outcome(
        SyncReport(
            "started",
            source_id=source_id,
            client_id=client_id,
            job_name=answer.job_name,
            headline=f"Started Stitch replication job {answer.job_name} for source {source_id}",
            payload={"attached": False},
        ),
        logger,
    )
    return _handle(source_id, memory, answer.stitch_time, "started", answer.job_name)


async def _source_name(client: StitchClient, source_id: int) -> str | None:
    """The source's ``name`` (its schema, the loads' ``source_name``); ``None`` if unread."""
    try:
        return (await client.get_source(source_id)).name
    except StitchError as exc:
        _logger().warning(
            "Could not read source %s (%s): loads get a later baseline", source_id, exc
        )
        return None


def _handle(
    source_id: int,
    memory: _TriggerMemory,
    answer_time: datetime | None,
    origin: JobOrigin,
    job_name: str | None = None,
) -> StitchSyncHandle:
    baseline = memory.baseline
    listed = None
    if baseline is not None:
        listed = _completed_record_of(baseline.records, source_id)
    loads = None
    if baseline is not None and baseline.loads is not None and memory.source_name is not None:
        loads = tuple(r for r in baseline.loads if r.source_name == memory.source_name)
    return StitchSyncHandle(
        source_id=source_id,
        job_name=job_name,
        origin=origin,
        baseline_job_name=listed,
        baseline_stitch_time=None if baseline is None else baseline.stitch_time,
        answer_stitch_time=answer_time,
        requested_at=memory.first_at,
        source_name=memory.source_name,
        baseline_loads=loads,
    )


def _completed_record_of(records: Sequence[Extraction], source_id: int) -> str | None:
    """The name of the source's *completed* listed job: the baseline.

    A listing that shows a running job (null completion time) instead of the last
    completed one must not make that running job the baseline: its final record, with
    the same name, is the one a wait looks for.
    """
    return next(
        (r.job_name for r in records if r.source_id == source_id and r.completion_time),
        None,
    )


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
        return StitchSyncHandle(source_id=source_id, job_name=job.strip(), requested_at=now)
    if job is None:  # follow whatever runs now: its baseline is read when the wait starts
        return StitchSyncHandle(source_id=source_id, origin="attached", requested_at=now)
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
        _logger().error("Could not ask Stitch to stop the job of source %s: %s", source_id, exc)
        return False


async def _scan_log(client: StitchClient, job_name: str, lines: int) -> LogScan | None:
    """Stream a job's log into a bounded scan; ``None`` (logged) when it cannot be read."""
    try:
        return await asyncio.wait_for(
            client.scan_extraction_log(
                job_name, tail_lines=lines, max_line_chars=_MAX_LOG_LINE_CHARS
            ),
            timeout=_LOG_FETCH_TIMEOUT_SECONDS,
        )
    except (StitchError, TimeoutError) as exc:
        _logger().warning("Could not read the extraction log of %s: %s", job_name, exc)
        return None


@dataclass(frozen=True)
class _Final:
    """The job's final record, how many polls it took, and the log read on the way."""

    record: Extraction
    polls: int
    log: LogScan | None = None
    foreign: bool = False


def _record_from_log(handle: StitchSyncHandle, scan: LogScan, client_id: int) -> Extraction:
    """The record of a job that ended, rebuilt from its log's ``Exit status is:`` line."""
    statuses = scan.exit_statuses or {}
    return Extraction(
        job_name=handle.job_name or "",
        source_id=handle.source_id,
        stitch_client_id=client_id,
        completion_time=scan.exit_time or handle.answer_stitch_time or handle.requested_at,
        discovery_exit_status=statuses.get("discovery"),
        tap_exit_status=statuses.get("tap"),
        target_exit_status=statuses.get("target"),
    )


async def _watch_until_final(
    client: StitchClient,
    credentials: StitchCredentials,
    client_id: int,
    handle: StitchSyncHandle,
    *,
    poll_interval_seconds: float,
    deadline: float,
    max_poll_failures: int,
    log_lines: int,
    follow_next: bool = False,
) -> tuple[_Final, StitchSyncHandle]:
    """Receive the account's listings until the job's record (or its log) is final.

    Raises TimeoutError at the deadline; the listing's error when polls keep failing
    (or fail for a non-transient reason); StitchVerdictUnavailable when a later job
    replaced the record and the log cannot say how ours ended.
    """
    logger = _logger()
    poller = poller_for(credentials, client_id, global_limit_name=client.global_limit_name)
    watch = poller.watch(poll_interval_seconds)
    polls = failures = 0
    log_checked: set[str] = set()
    try:
        if follow_next:  # what is listed now ended before the job we follow
            base = await watch.baseline(max(deadline - time.monotonic(), 0))
            if base.error is not None:
                raise base.error
            listed = _completed_record_of(base.records, handle.source_id)
            handle = handle.model_copy(
                update={"baseline_job_name": listed, "baseline_stitch_time": base.stitch_time}
            )
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
            located = locate_job(handle, snapshot.records)
            logger.debug(
                "Poll %d of source %s (tick %d, %d pages): %s",
                polls,
                handle.source_id,
                snapshot.tick,
                snapshot.pages,
                located,
            )
            if located.record is not None and judge_extraction(located.record).state.is_final:
                foreign = handle.origin == "attached" or (
                    handle.origin == "uncertain" and started_before_baseline(handle, located.record)
                )
                return _Final(located.record, polls, foreign=foreign), handle
            if located.later is not None:
                return await _final_from_log(
                    client, handle, located.later, client_id, polls, log_lines
                ), handle
            if located.check_log is not None and handle.job_name is not None:
                other = located.check_log.job_name
                if other not in log_checked:
                    log_checked.add(other)
                    scan = await _scan_log(client, handle.job_name, max(log_lines, 1))
                    if scan is not None and scan.ended:
                        record = _record_from_log(handle, scan, client_id)
                        return _Final(record, polls, log=scan), handle
    finally:
        watch.close()


async def _final_from_log(
    client: StitchClient,
    handle: StitchSyncHandle,
    later: Extraction,
    client_id: int,
    polls: int,
    log_lines: int,
) -> _Final:
    """Judge a job whose listing record a later job replaced, from its log."""
    shown = handle.job_name or "(the job that was running)"
    _logger().warning(
        "Stitch job %s of source %s ended, but the later job %s replaced its record before a "
        "poll read it; reading its exit statuses from its log",
        shown,
        handle.source_id,
        later.job_name,
    )
    scan = await _scan_log(client, handle.job_name, max(log_lines, 1)) if handle.job_name else None
    if scan is not None and scan.ended:
        record = _record_from_log(handle, scan, client_id)
        if judge_extraction(record).state.is_final:
            return _Final(record, polls, log=scan)
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


def _failure_message(result: StitchSyncResult, verdict: Verdict, log_tail: str | None) -> str:
    job = f"Stitch replication job {result.job_name} for source {result.source_id}"
    if result.attached:
        job += " (not started by this run)"
    if verdict.state is ExtractionState.TERMINATED:
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
            + "; ".join(f"{a.job_name} {a.status} ({a.summary})" for a in earlier)
            + "."
        )
    text += f" See {result.stitch_url}"
    if log_tail:
        count = len(log_tail.splitlines())
        text += f"\nLast {count} lines of the extraction log:\n{log_tail}"
    return text


def _attempt_of(result: StitchSyncResult, verdict: Verdict) -> SyncAttempt:
    return SyncAttempt(
        job_name=result.job_name,
        status=result.status,
        summary=verdict.summary,
        attached=result.attached,
        start_time=result.start_time,
        completion_time=result.completion_time,
    )


async def _with_load_baseline(
    client: StitchClient, credentials: StitchCredentials, client_id: int, handle: StitchSyncHandle
) -> StitchSyncHandle:
    """Give a handle without one the source's load records as they are now."""
    name = handle.source_name or (await client.get_source(handle.source_id)).name or ""
    watch = poller_for(credentials, client_id).watch(_LOOKUP_INTERVAL_SECONDS, loads=True)
    try:
        snapshot = await watch.baseline()
    finally:
        watch.close()
    if snapshot.error is not None:
        raise snapshot.error
    loads = tuple(r for r in snapshot.loads or () if r.source_name == name)
    return handle.model_copy(update={"source_name": name, "baseline_loads": loads})


async def _after_extraction(
    client: StitchClient,
    credentials: StitchCredentials,
    client_id: int,
    handle: StitchSyncHandle,
    result: StitchSyncResult,
    final: _Final,
    *,
    loads: LoadsMode,
    max_load_wait_seconds: float,
    poll_interval_seconds: float,
    max_poll_failures: int,
    write_artifact: bool,
) -> StitchSyncResult:
    """Every phase exited 0: follow the loads as ``loads`` says, then report the outcome."""
    logger = _logger()
    source_id, job = result.source_id, result.job_name or ""
    outcome = LoadOutcome()
    if loads != "ignore" and result.job_name:
        logger.info(
            "Every phase of Stitch job %s exited 0; %s its data into the warehouse",
            job,
            "following" if loads == "wait" else "checking",
        )
        outcome = await settle_loads(
            client,
            credentials,
            client_id,
            source_id=source_id,
            job_name=job,
            completed_at=result.completion_time,
            mode=loads,
            baseline=handle.baseline_loads,
            log=final.log,
            poll_interval_seconds=poll_interval_seconds,
            max_load_wait_seconds=max_load_wait_seconds,
            max_poll_failures=max_poll_failures,
            logger=logger,
        )
    result = result.model_copy(update={"loads": outcome.streams})
    payload = {"stage": "load", "loads": [e.model_dump(mode="json") for e in outcome.streams]}
    if outcome.failed:
        result = result.model_copy(update={"status": "load_failed"})
        attempt = result.attempts[-1].model_copy(
            update={"status": "load_failed", "summary": _load_summary(outcome)}
        )
        result = result.model_copy(update={"attempts": [*result.attempts[:-1], attempt]})
        message = (
            f"Stitch job {job} of source {source_id} extracted its data (every phase exited "
            f"0), but loading it into the warehouse failed: {_load_summary(outcome)}. "
            f"See {result.stitch_url}"
        )
        await report_outcome(
            SyncReport("failed", source_id, client_id, message, result=result, payload=payload),
            logger,
            write_artifact=write_artifact,
        )
        raise StitchLoadFailed(
            message,
            failed_streams=outcome.failed,
            source_id=source_id,
            job_name=result.job_name,
            result=result,
            attempts=result.attempts,
        )
    if outcome.pending:
        why = (
            ""
            if outcome.log_names_streams
            else " (its log did not say which streams received rows, so every selected "
            "stream was waited for)"
        )
        message = (
            f"Stitch job {job} of source {source_id} extracted its data, but it did not reach "
            f"the warehouse within {max_load_wait_seconds:.0f} s: no load yet for "
            f"{', '.join(outcome.pending)}{why}. See {result.stitch_url}"
        )
        await report_outcome(
            SyncReport("timed_out", source_id, client_id, message, result=result, payload=payload),
            logger,
            write_artifact=write_artifact,
        )
        raise StitchLoadTimeout(
            message,
            pending_streams=outcome.pending,
            result=result,
            source_id=source_id,
            job_name=result.job_name,
            max_wait_seconds=max_load_wait_seconds,
            stopped=False,
            attempts=result.attempts,
        )
    if outcome.asset_keys:
        emit_table_materializations(outcome.asset_keys, source_id=source_id, job_name=job)
    duration = result.duration_seconds
    landed = [e.stream_name for e in outcome.streams if e.state == "loaded"]
    loaded = f"; loaded {', '.join(landed)}" if landed else ""
    await report_outcome(
        SyncReport(
            "succeeded",
            source_id,
            client_id,
            f"Succeeded: every phase of Stitch job {job} of source {source_id} exited 0"
            + ("" if duration is None else f" ({duration:.0f} s)")
            + f" after {final.polls} polls{loaded}.",
            result=result,
            payload=payload if loads != "ignore" else {},
        ),
        logger,
        write_artifact=write_artifact,
    )
    return result


def _load_summary(outcome: LoadOutcome) -> str:
    return "; ".join(
        f"stream {stream}: {message or 'no message from Stitch'}"
        for stream, message in outcome.failed.items()
    )


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
    earlier_attempts: list[SyncAttempt] | None = None,
    loads: LoadsMode = "wait",
    max_load_wait_seconds: float = DEFAULT_MAX_LOAD_WAIT_SECONDS,
) -> StitchSyncResult:
    """Wait until a Stitch replication job ends; return its result or raise its failure.

    Stitch has no job-status endpoint: its extraction list shows the *last completed*
    job of each source. So the job is recognised by its name (the record listed right
    after a trigger is the previous job, never ours) or, for a job we attached to, as
    the first record of the source other than the one listed before we acted, checked
    against Stitch's own clock (see [`locate_job`][prefect_stitch._verdict.locate_job]).
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
    credentials = _check_credentials(credentials)
    poll_interval_seconds = _check_seconds(poll_interval_seconds, "poll_interval_seconds")
    max_wait_seconds = _check_seconds(max_wait_seconds, "max_wait_seconds")
    max_load_wait_seconds = _check_seconds(max_load_wait_seconds, "max_load_wait_seconds")
    _check_loads(loads)
    handle = _as_handle(source_id, job_name)
    earlier = list(earlier_attempts or [])
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
        if loads != "ignore" and handle.baseline_loads is None:
            handle = await _with_load_baseline(client, credentials, client_id, handle)
        logger.info(
            "Waiting for Stitch job %s of source %s (poll every %.0f s, at most %.0f s): %s",
            handle.job_name or "(the running job)",
            source_id,
            poll_interval_seconds,
            max_wait_seconds,
            stitch_source_url(client_id, source_id),
        )

        try:
            final, handle = await _watch_until_final(
                client,
                credentials,
                client_id,
                handle,
                poll_interval_seconds=poll_interval_seconds,
                deadline=deadline,
                max_poll_failures=max_poll_failures,
                log_lines=max(log_tail_lines, 1),
                follow_next=job_name is None,
            )
        except TimeoutError:
            report = await _stop_report(
                client, client_id, handle, "timed_out", stop_on_timeout, max_wait_seconds
            )
            await report_outcome(report, logger, write_artifact=write_artifact)
            raise StitchSyncTimeout(
                report.headline.removeprefix("Timed out: "),
                source_id=source_id,
                job_name=handle.job_name,
                max_wait_seconds=max_wait_seconds,
                stopped=bool(report.payload["stopped"]),
                attempts=earlier,
            ) from None
        except asyncio.CancelledError:
            report = await _stop_report(client, client_id, handle, "cancelled", True, 0)
            await report_outcome(report, logger, write_artifact=False)
            raise

        verdict = judge_extraction(final.record)
        result = StitchSyncResult.from_extraction(
            final.record,
            status=verdict.state.value,  # type: ignore[arg-type]
            attached=final.foreign,
            client_id=client_id,
            polls=final.polls,
        )
        result = result.model_copy(update={"attempts": [*earlier, _attempt_of(result, verdict)]})
        if verdict.state is ExtractionState.SUCCEEDED:
            return await _after_extraction(
                client,
                credentials,
                client_id,
                handle,
                result,
                final,
                loads=loads,
                max_load_wait_seconds=max_load_wait_seconds,
                poll_interval_seconds=poll_interval_seconds,
                max_poll_failures=max_poll_failures,
                write_artifact=write_artifact,
            )

        log_tail = None if final.log is None else final.log.tail
        if log_tail is None and fetch_logs_on_failure and result.job_name:
            scan = await _scan_log(client, result.job_name, max(log_tail_lines, 1))
            log_tail = None if scan is None else scan.tail
    await _report_failure(result, verdict, log_tail, log_tail_lines, write_artifact)


async def _stop_report(
    client: StitchClient,
    client_id: int,
    handle: StitchSyncHandle,
    kind: Literal["timed_out", "cancelled"],
    stop: bool,
    max_wait_seconds: float,
) -> SyncReport:
    """Ask Stitch to stop the job (when ``stop``, and only a job this run started)."""
    ours = handle.origin == "started"  # never stop a job this run did not start
    requested = await _stop_quietly(client, handle.source_id) if stop and ours else False
    said = (
        "a stop of the Stitch job was requested" if requested else "the Stitch job was left running"
    )
    if stop and not ours:
        said += " (this run did not start it)"
    shown = handle.job_name or "(the running job)"
    url = stitch_source_url(client_id, handle.source_id)
    if kind == "timed_out":
        headline = (
            f"Timed out: Stitch job {shown} of source {handle.source_id} did not finish within "
            f"{max_wait_seconds:.0f} s; {said}. See {url}"
        )
    else:
        headline = (
            f"The run was cancelled while waiting for Stitch job {shown} of source "
            f"{handle.source_id}: {said}"
        )
    payload = {"stopped": requested, "max_wait_seconds": max_wait_seconds}
    return SyncReport(
        kind, handle.source_id, client_id, headline, job_name=handle.job_name, payload=payload
    )


async def _report_failure(
    result: StitchSyncResult,
    verdict: Verdict,
    log_tail: str | None,
    log_tail_lines: int,
    write_artifact: bool,
) -> NoReturn:
    """Report a failed or terminated job, then raise its typed failure."""
    if log_tail is not None:
        log_tail = _bounded_tail(log_tail, log_tail_lines) or None
    message = _failure_message(result, verdict, log_tail)
    kind: Literal["failed", "terminated"] = (
        "terminated" if verdict.state is ExtractionState.TERMINATED else "failed"
    )
    failed_phases = [
        {"phase": f.phase, "exit_status": f.exit_status, "description": f.description}
        for f in verdict.failed_phases
    ]
    await report_outcome(
        SyncReport(
            kind,
            result.source_id,
            result.client_id,
            message.splitlines()[0],
            result=result,
            log_tail=log_tail,
            payload={"failed_phases": failed_phases},
        ),
        _logger(),
        write_artifact=write_artifact,
    )
    error_type = StitchJobTerminated if kind == "terminated" else StitchReplicationFailed
    raise error_type(
        message,
        source_id=result.source_id,
        job_name=result.job_name,
        failed_phases=verdict.failed_phases,
        result=result,
        log_tail=log_tail,
        attempts=result.attempts,
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
    credentials = _check_credentials(credentials)
    async with credentials.get_client() as client:
        stopped = await client.stop_replication_job(source_id)
    _logger().info(
        "Stop of the Stitch job of source %s: %s",
        source_id,
        "requested (Stitch accepted it)" if stopped else "no job was running",
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
