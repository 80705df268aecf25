"""``StitchSource``: a saved Stitch source, with ``trigger()`` and a run to wait for.

The shape Prefect's job integrations share (prefect-dbt's dbt Cloud job, for one): a
block that holds what a user configures once, whose ``trigger()`` starts a job and
returns a run object with ``wait_for_completion()`` and ``fetch_result()``. Every method
works from a plain script, a sync flow and an async flow: called where an event loop
runs (an async flow, a coroutine) it returns a coroutine to await (or call the ``a``-
prefixed twin explicitly); elsewhere it runs to its end. The verdicts, the shared
polling and the typed failures are those of
[`stitch_sync_flow`][prefect_stitch.flows.stitch_sync_flow].
"""

import time
from contextlib import AbstractContextManager, nullcontext
from typing import Annotated, Any, cast

from prefect import flow
from prefect._internal.compatibility.async_dispatch import async_dispatch
from prefect.blocks.abstract import JobBlock, JobRun
from prefect.context import FlowRunContext
from prefect.settings import PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW, temporary_settings
from prefect.utilities.asyncutils import run_coro_as_sync
from pydantic import BaseModel, Field

from prefect_stitch._engine.run import SourceSync, suspender_for
from prefect_stitch._engine.runner import run_flow_body
from prefect_stitch._engine.steps import trigger
from prefect_stitch.credentials import STITCH_API_DOCS_URL, StitchCredentials
from prefect_stitch.models import MAX_STITCH_ID, StitchSyncHandle, StitchSyncResult
from prefect_stitch.options import SyncOptions, _SyncOptionFields

__all__ = ["StitchSource", "StitchSyncRun", "stitch_source_sync_flow"]


def _quiet_outside_a_flow_run() -> AbstractContextManager[Any]:
    """Outside a flow run, let the task engine's log lines skip the API without a warning.

    The block's calls run Prefect tasks; from a plain script they have no flow run, so
    Prefect cannot send their log lines to the API and warns about each (a UserWarning).
    The lines still reach the console; in a flow run nothing changes.
    """
    if FlowRunContext.get() is not None:
        return nullcontext()
    return temporary_settings(updates={PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"})


class StitchSyncRun(JobRun[StitchSyncResult]):
    """One replication job started by [`trigger`][prefect_stitch.source.StitchSource.trigger].

    Args:
        source: The block that started it.
        handle: What the trigger learnt (the job's name, the baseline).
        deadline: ``time.monotonic()`` bound of the whole sync.

    Example:
        ```python
        from prefect_stitch import StitchSource

        run = StitchSource.load("recurly").trigger()
        run.wait_for_completion()
        print(run.fetch_result().job_name)
        ```
    """

    def __init__(self, source: "StitchSource", handle: StitchSyncHandle, deadline: float) -> None:
        self.source = source
        self.handle = handle
        self.deadline = deadline
        self._result: StitchSyncResult | None = None
        self._error: BaseException | None = None
        self._done = False

    @property
    def job_name(self) -> str | None:
        """The job's name, when Stitch said it (not for a job that was already running)."""
        return self.handle.job_name

    async def await_completion(self) -> None:
        """Wait until the job (and, per the block's ``loads``, its loads) has ended.

        A failure is kept for `fetch_result`, not raised here.
        """
        if self._done:
            return
        try:
            with _quiet_outside_a_flow_run():
                self._result = await SourceSync(
                    self.source.credentials,
                    self.source.source_id,
                    self.source.options(),
                    started=self.handle,
                    deadline=self.deadline,
                ).run()
        except Exception as exc:
            self._error = exc
        self._done = True

    @async_dispatch(await_completion)
    def wait_for_completion(self) -> None:  # type: ignore[override]
        """Wait until the job has ended (from sync code; ``await`` it in async code).

        Example:
            ```python
            from prefect_stitch import StitchSource

            run = StitchSource.load("recurly").trigger()
            run.wait_for_completion()
            ```
        """
        run_coro_as_sync(self.await_completion())

    async def afetch_result(self) -> StitchSyncResult:
        """The job's result, or its typed failure raised (waits if it has not ended).

        Returns:
            The result.

        Raises:
            StitchReplicationFailed: The job failed (its phases, its loads).
            StitchSyncTimeout: It did not end in time.
        """
        await self.await_completion()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    @async_dispatch(afetch_result)
    def fetch_result(self) -> StitchSyncResult:  # type: ignore[override]
        """The job's result, or its typed failure raised (waits if it has not ended).

        Returns:
            The result.

        Example:
            ```python
            from prefect_stitch import StitchSource

            run = StitchSource.load("recurly").trigger()
            print(run.fetch_result().duration_seconds)
            ```
        """
        return cast(StitchSyncResult, run_coro_as_sync(self.afetch_result()))


class _SourceFields(BaseModel):
    """Which source a `StitchSource` syncs, with which credentials (first in its form)."""

    credentials: StitchCredentials = Field(
        title="Stitch credentials",
        description="The Stitch Credentials block of the account the source belongs to.",
    )
    source_id: Annotated[int, Field(gt=0, le=MAX_STITCH_ID)] = Field(
        title="Source id",
        description="The Stitch source (integration) id: the number after /sources/ in "
        "the address of the source's page in the Stitch app.",
    )


# The plain JobBlock: JobBlock[StitchSyncResult] would be a Block subclass of its own, which
# Prefect registers as a block type. trigger() and StitchSyncRun carry the result's type.
class StitchSource(_SyncOptionFields, _SourceFields, JobBlock):  # type: ignore[type-arg]
    """A saved Stitch source: which source to sync, with which credentials, how.

    Its sync options are those of `stitch_sync_flow` (see
    [`SyncOptions`][prefect_stitch.options.SyncOptions]). Save it once, in code as below
    or in the Prefect UI (*Blocks*, then *Stitch Source*, after
    ``prefect block register -m prefect_stitch``), then sync it from code or from the
    ``stitch-source-sync`` deployment, whose form offers a block picker.

    ```python
    from prefect_stitch import StitchCredentials, StitchSource

    StitchSource(
        credentials=StitchCredentials.load("stitch"), source_id=120643, replication_retries=1
    ).save("recurly")
    ```

    The example below is the snippet the Prefect UI shows on a saved block's page, where
    the block's name replaces ``BLOCK_NAME``: it syncs the source once.

    Example:
        ```python
        from prefect_stitch import StitchSource

        stitch_source = StitchSource.load("BLOCK_NAME")
        run = stitch_source.trigger()
        run.wait_for_completion()
        result = run.fetch_result()  # or the typed failure, raised
        print(result.status, result.job_name, result.stitch_url)
        ```
    """

    _block_type_name = "Stitch Source"
    _block_type_slug = "stitch-source"
    # One line: the Prefect UI shows each line of a block type's description as its own.
    _description = (
        "A Stitch source (integration) and how to sync it: its Stitch Credentials, its "
        "source id and the sync options (waits, loads, replication retries). Trigger it "
        "from code, or run it from the stitch-source-sync deployment, whose form offers a "
        "picker of these blocks."
    )
    _documentation_url = STITCH_API_DOCS_URL

    def options(self) -> SyncOptions:
        """The sync's options, as the flows take them.

        Returns:
            The options, checked.
        """
        return SyncOptions.of(**{name: getattr(self, name) for name in SyncOptions.names()})

    async def atrigger(self) -> StitchSyncRun:
        """Start a replication job of the source (see `trigger`).

        Returns:
            The run to wait for.
        """
        options = self.options()
        deadline = time.monotonic() + options.max_wait_seconds
        with _quiet_outside_a_flow_run():
            handle = await trigger(
                self.credentials, self.source_id, options, options.max_wait_seconds
            )
        return StitchSyncRun(self, handle, deadline)

    @async_dispatch(atrigger)
    def trigger(self) -> StitchSyncRun:  # type: ignore[override]
        """Start a replication job of the source (or follow the one already running).

        Returns:
            The run: ``wait_for_completion()``, then ``fetch_result()``.

        Raises:
            StitchJobAlreadyRunning: A job is running and ``on_already_running="fail"``.
            StitchAPIError: Stitch refused (unknown source, bad token, ...).

        Example:
            ```python
            from prefect_stitch import StitchSource

            run = StitchSource.load("recurly").trigger()
            ```
        """
        return cast(StitchSyncRun, run_coro_as_sync(self.atrigger()))

    async def arun(self) -> StitchSyncResult:
        """Trigger, wait, and return the result (or raise the typed failure).

        In a deployment's run, a block with ``suspend_while_waiting`` suspends the run
        while Stitch works (see `stitch_source_sync_flow`).

        Returns:
            The result.
        """
        options = self.options()
        sync = SourceSync(
            self.credentials,
            self.source_id,
            options,
            suspender=suspender_for(self.credentials, options, self.source_id),
        )
        with _quiet_outside_a_flow_run():
            return await sync.run()


@flow(
    name="stitch-source-sync",
    flow_run_name="stitch-source-sync-{source.source_id}",
    description="Sync a saved Stitch Source block: start its job, wait for it (and its "
    "loads), and fail with the typed failure if it did not succeed.",
    persist_result=True,
)
def stitch_source_sync_flow(source: StitchSource) -> StitchSyncResult:
    """Sync a saved Stitch Source block (the deployment's form offers a block picker).

    Args:
        source: The saved Stitch Source block to sync.

    Returns:
        The job's result.

    Example:
        ```python
        from prefect_stitch import StitchSource, stitch_source_sync_flow

        stitch_source_sync_flow(source=StitchSource.load("recurly"))
        ```
    """
    return run_flow_body(source.arun)
