"""Run a flow's body where the run's cancellation reaches it; resolve the credentials parameter."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

from prefect.context import AsyncClientContext
from prefect.states import Failed

from prefect_stitch.credentials import StitchCredentials
from prefect_stitch.errors import StitchConfigurationError, StitchError

__all__ = ["failed_state", "load_credentials", "run_cancellable", "run_flow_body"]

T = TypeVar("T")

_CANCEL_GRACE_SECONDS = 25.0


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
        from prefect_stitch._engine.runner import load_credentials

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
        from prefect_stitch._engine.runner import run_cancellable

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
        """The body, with one Prefect API client for every task run of this loop."""
        outcome["loop"] = asyncio.get_running_loop()
        outcome["task"] = asyncio.current_task()
        started.set()
        # One Prefect API client for every task run of this loop (without it, each task
        # run would build its own: a connection pool and a TLS context apiece).
        async with AsyncClientContext.get_or_create():
            return await make_coroutine()

    def target() -> None:
        """Run the body's loop on the helper thread; keep its value or its error."""
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


def run_flow_body(make_coroutine: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """A flow's body, cancellable (`run_cancellable`), its typed failure as the run's state.

    A flow that raises gets the state message "Flow run encountered an exception:
    <class>: <message>", of which the UI shows some 70 characters: the class's name and the
    start of the message. A typed failure is returned as a ``Failed`` state instead, whose
    message is the failure's first line, verdict first ("Failed: tap exited with status
    -9: ..."); a caller of the flow (a script, a parent flow) still receives the typed error
    itself, raised.

    Args:
        make_coroutine: Builds the body (called on the helper thread).

    Returns:
        The body's result (or, to Prefect, the failed state).

    Example:
        ```python
        from prefect import flow
        from prefect_stitch._engine.runner import run_flow_body

        async def body() -> int:
            return 42

        @flow
        def answer() -> int:
            return run_flow_body(body)
        ```
    """
    try:
        return run_cancellable(make_coroutine)
    except StitchError as exc:
        return cast(T, failed_state(exc))


def failed_state(error: StitchError) -> Any:
    """A ``Failed`` state whose message is the typed failure's first line, then its class.

    The verdict comes first (what the run's first screen shows), the error's class last:
    "Failed: tap exited with status -9: Killed (...). See ... [StitchReplicationFailed]".

    Returned by a flow or a task, it ends the run Failed with that message and no traceback in
    its log; whoever called the flow or the task still receives ``error`` raised.

    Args:
        error: The typed failure.

    Returns:
        The state.
    """
    first_line = (str(error) or "failed").splitlines()[0]
    return Failed(message=f"{first_line} [{type(error).__name__}]", data=error)
