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
from datetime import UTC
from typing import Annotated, Any, TypeVar

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from pydantic import Field

from prefect_stitch.credentials import StitchCredentials
from prefect_stitch.errors import StitchConfigurationError, StitchReplicationFailed
from prefect_stitch.models import SourceId, StitchSyncResult, check_source_id
from prefect_stitch.tasks import (
    DEFAULT_LOG_TAIL_LINES,
    AlreadyRunningPolicy,
    pause_stitch_source,
    start_stitch_sync,
    wait_for_stitch_sync,
)

__all__ = ["load_credentials", "run_stitch_sync", "stitch_sync_flow"]

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
    context = FlowRunContext.get()
    resume_since = None
    if context is not None and context.flow_run is not None and context.flow_run.run_count > 1:
        started = context.flow_run.start_time
        resume_since = started.astimezone(UTC) if started is not None else None
    deadline = time.monotonic() + max_wait_seconds

    # The block's retry budget governs the trigger's Prefect retries too.
    trigger = start_stitch_sync.with_options(
        retries=resolved.max_retries,
        retry_delay_seconds=[
            min(resolved.retry_backoff_seconds * 2**attempt, 60.0)
            for attempt in range(max(resolved.max_retries, 1))
        ],
    )
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
