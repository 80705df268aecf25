"""The watcher's part in suspended syncs: resume each run once Stitch's verdict is in.

At each listing of the account (the watcher's, through the shared poll), for each
registration a suspended sync left (see `prefect_stitch._engine.suspension`):

* the run is suspended: it is resumed once every job it waits for has ended and, as its
  ``loads`` option says, the job's data has landed (the load rules of a waiting run, on
  the same listings), or once its ``max_wait_seconds`` ran out (the resumed run then stops
  the job as ``stop_on_timeout`` says, and fails);
* the run is being cancelled, or was cancelled while suspended (no process of its own is
  left to do it): the jobs it started that have not ended are stopped, with the
  ``stitch.sync.cancelled`` event, and the run is marked Cancelled;
* the run is gone, has completed, or its deadline passed: its registration is forgotten;
* the run failed or crashed before its verdict was in (its own process forgets the
  registration once the verdict is in): the registration stays until the deadline, so that
  a retry of the run (Prefect's, or the user's) follows the same job instead of starting
  another; meanwhile the watcher announces that job's end as any other's;
* otherwise (resumed and about to run, running) it is left alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import NAMESPACE_OID, UUID, uuid5

from prefect_stitch._engine.context import SyncContext, run_logger
from prefect_stitch._engine.loads import LoadWait
from prefect_stitch._engine.stop import stop_and_report
from prefect_stitch._engine.suspension import Registration, forget, registrations
from prefect_stitch._poll import Snapshot
from prefect_stitch._verdict import judge_extraction, locate_job
from prefect_stitch.client import StitchClient
from prefect_stitch.credentials import StitchCredentials
from prefect_stitch.models import Extraction, StitchSyncHandle, SyncStatus

__all__ = ["Resumer", "resume_in_its_place"]


@dataclass
class _Job:
    """Where one job of a suspended run stands, as the listings showed it."""

    handle: StitchSyncHandle
    ended: bool = False
    said: str = "ended"
    loads: LoadWait | None = None

    @property
    def done(self) -> bool:
        """Whether the run may be resumed for this job."""
        return self.ended and (self.loads is None or self.loads.over)


@dataclass
class _Run:
    """A suspended run's jobs, followed across listings."""

    registration: Registration
    jobs: dict[int, _Job] = field(default_factory=dict)
    ended: bool = False
    """The run ended without its verdict (failed, crashed): nobody follows its jobs now."""


class Resumer:
    """Resumes the account's suspended syncs when their jobs are over.

    Args:
        credentials: The account's credentials.
        client: An open client of the account (stops, logs, the sources' streams).
        client_id: The account.

    Example:
        ```python
        from prefect_stitch._engine.resume import Resumer

        async def resume_what_is_over(credentials, client, snapshot) -> None:
            resumer = Resumer(credentials, client, client_id=116078)
            await resumer.take(snapshot)
            print(resumer.resumed)
        ```
    """

    def __init__(self, credentials: StitchCredentials, client: StitchClient, client_id: int):
        self.credentials, self.client, self.client_id = credentials, client, client_id
        self.runs: dict[UUID, _Run] = {}
        self.resumed = 0
        """Runs this resumer resumed."""
        self.cancelled = 0
        """Suspended runs whose cancellation this resumer carried out."""

    @property
    def needs_loads(self) -> bool:
        """Whether some suspended run waits for loads (the listings must include them)."""
        return any(run.registration.options.loads != "ignore" for run in self.runs.values())

    async def refresh(self) -> None:
        """Read the account's registrations (call before each listing is announced)."""
        try:
            found = await registrations(self.client_id, self.credentials.base_url)
        except Exception as exc:  # the Prefect API may be away: keep what was known
            run_logger().warning("Could not read the suspended syncs of the account: %s", exc)
            return
        self.runs = {registration.flow_run_id: self._run_of(registration) for registration in found}

    def _run_of(self, registration: Registration) -> _Run:
        """The followed run of a registration (new, or the one followed so far)."""
        run = self.runs.get(registration.flow_run_id) or _Run(registration)
        run.registration = registration
        return run

    def follows(self, record: Extraction) -> bool:
        """Whether a suspended sync waits for this job (it reports the verdict itself).

        Args:
            record: A job's record in the listing.

        Returns:
            True for a job of a registration (or any job of a source whose registered job's
            name is unknown).
        """
        return any(
            handle.source_id == record.source_id and handle.job_name in (None, record.job_name)
            for run in self.runs.values()
            if not run.ended
            for handle in run.registration.handles
        )

    async def take(self, snapshot: Snapshot) -> None:
        """Look at every suspended run of the account in the light of one listing.

        Args:
            snapshot: The account's listing (read `refresh` before).
        """
        for run_id, run in list(self.runs.items()):
            try:
                await self._consider(run, snapshot)
            except Exception as exc:  # one run's trouble must not stop the watcher
                run_logger().warning(
                    "Could not look after suspended flow run %s: %s", run_id, exc, exc_info=True
                )

    async def _consider(self, run: _Run, snapshot: Snapshot) -> None:
        """Resume, cancel, forget, or leave one suspended run."""
        registration = run.registration
        state = await _state_of(registration.flow_run_id)
        if state is not None and (state.is_cancelling() or state.is_cancelled()):
            await self._cancel(run, snapshot, mark=state.is_cancelling())
            return
        if state is None or state.is_completed():
            await self._forget(registration)
            return
        run.ended = state.is_final()
        if run.ended:  # failed or crashed without its verdict: a retry follows the same job
            if time.time() >= registration.deadline:
                await self._forget(registration)
            return
        if not state.is_paused():
            return  # resumed (about to run, or running): the run carries on
        await self._follow(run, snapshot)
        if time.time() >= registration.deadline:
            await self._resume(run, "its max_wait_seconds ran out (the run stops the job)")
        elif all(job.done for job in run.jobs.values()):
            await self._resume(run, "; ".join(job.said for job in run.jobs.values()))

    async def _follow(self, run: _Run, snapshot: Snapshot) -> None:
        """Take one listing into each job of the run: ended? its data landed?"""
        for handle in run.registration.handles:
            job = run.jobs.setdefault(handle.source_id, _Job(handle))
            if not job.ended and snapshot.extractions_read:
                record = _ended(handle, snapshot.records)
                if record is not None:
                    await self._ended(run, job, record)
            if job.loads is not None and not job.loads.over:
                await job.loads.take(snapshot)

    async def _ended(self, run: _Run, job: _Job, record: Extraction | bool) -> None:
        """The job ended: say how; follow its loads when it succeeded and loads are awaited."""
        job.ended = True
        handle = job.handle
        name = handle.job_name or "(the running job)"
        if not isinstance(record, Extraction):  # replaced by a later job: the log will say
            job.said = f"Stitch job {name} of source {handle.source_id} ended"
            return
        verdict = judge_extraction(record)
        job.said = f"Stitch job {record.job_name} of source {handle.source_id} {verdict.state}"
        options = run.registration.options
        if verdict.state is not SyncStatus.SUCCEEDED or options.loads != "wait":
            return
        ctx = self._context(run.registration, handle.source_id)
        job.loads = LoadWait(
            ctx, record, handle.source_name or "", handle.baseline_loads or (), log=None
        )
        await job.loads.learn_selected_streams()
        job.loads.begin()
        job.said += ", and its loads were followed"

    async def _resume(self, run: _Run, why: str) -> None:
        """Resume the run (Prefect starts it again; it finds its job's verdict)."""
        run_id = run.registration.flow_run_id
        if not await resume_in_its_place(run_id):
            return  # another watcher of the account resumed it first
        self.resumed += 1
        self.runs.pop(run_id, None)
        run_logger().info("Resumed flow run %s: %s", run_id, why)

    async def _cancel(self, run: _Run, snapshot: Snapshot, *, mark: bool) -> None:
        """Stop the jobs of a run cancelled while suspended, say so, mark it Cancelled."""
        registration = run.registration
        for handle in registration.handles:
            job = run.jobs.get(handle.source_id)
            if not (job is not None and job.ended) and _ended(handle, snapshot.records) is None:
                ctx = self._context(registration, handle.source_id)
                attempts = registration.attempts.get(handle.source_id, [])
                await stop_and_report(ctx, handle, SyncStatus.CANCELLED, attempts)
        if mark:
            await _mark_cancelled(registration.flow_run_id, registration.what)
        await self._forget(registration)
        self.cancelled += 1
        run_logger().info(
            "Flow run %s was cancelled while suspended: its Stitch jobs that had not ended "
            "were stopped (%s)",
            registration.flow_run_id,
            registration.what,
        )

    async def _forget(self, registration: Registration) -> None:
        """Forget a registration whose run has ended or is gone."""
        await forget(registration.flow_run_id, self.client_id, self.credentials.base_url)
        self.runs.pop(registration.flow_run_id, None)

    def _context(self, registration: Registration, source_id: int) -> SyncContext:
        """A context for one job of a suspended run, in the watcher's run."""
        return SyncContext(
            self.credentials,
            self.client,
            self.client_id,
            source_id,
            registration.options,
            None,
            run_logger(),
            write_artifact=False,
        )


def _ended(handle: StitchSyncHandle, records: Any) -> Extraction | bool | None:
    """The job's final record; ``True`` when it ended but its record was replaced; else None."""
    located = locate_job(handle, records)
    if located.record is not None:
        final = judge_extraction(located.record).state is not SyncStatus.RUNNING
        return located.record if final else None
    return True if located.later is not None or located.check_log is not None else None


async def resume_in_its_place(flow_run_id: UUID) -> bool:
    """Resume a suspended run at its place in its work pool's line.

    Prefect's own resume (``resume_flow_run``) schedules the run for *now*, behind every
    run that waits for a worker slot, although its job is over and it only has its verdict
    to report: in a pool of 2 slots and 20 syncs started together, the resumed runs waited
    a minute behind syncs that had not started. Here the run is rescheduled for the time it
    was first expected to start, as ``resume_flow_run`` does otherwise (a ``Resuming``
    state, through Prefect's orchestration rules): the pool hands its slots in that order,
    so a resumed run goes before the runs that were queued after it first ran.

    Prefect's resume checks that the run is paused in one transaction. Here two watchers of
    the account that read the run paused at the same moment propose the same transition
    (its id is drawn from the paused state's): Prefect's ``PreventDuplicateTransitions``
    rule turns the second down, so the run is resumed once.

    Args:
        flow_run_id: The suspended run.

    Returns:
        Whether this call resumed it (``False``: it was not suspended any more, or Prefect
        refused, which is logged: its suspension had timed out).

    Example:
        ```python
        import asyncio
        from uuid import UUID

        from prefect_stitch._engine.resume import resume_in_its_place

        run_id = UUID("6778eb2a-bde7-4e4b-a17d-a0bf395990dc")
        print(asyncio.run(resume_in_its_place(run_id)))
        ```
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas import OrchestrationResult
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.states import Scheduled, to_state_create

    async with get_client() as client:
        flow_run = await client.read_flow_run(flow_run_id)
        paused = flow_run.state
        if paused is None or not paused.is_paused():
            return False
        now = datetime.now(UTC)
        place = min(flow_run.expected_start_time or now, now)
        resuming = to_state_create(Scheduled(scheduled_time=place, name="Resuming"))
        resuming.state_details.flow_run_id = flow_run_id
        resuming.state_details.transition_id = uuid5(NAMESPACE_OID, str(paused.id))
        # Not `set_flow_run_state`: it draws a transition id of its own for every call.
        response = await client.request(
            "POST",
            "/flow_runs/{id}/set_state",
            path_params={"id": flow_run_id},
            json={"state": resuming.model_dump(mode="json"), "force": False},
        )
    result: OrchestrationResult[Any] = OrchestrationResult.model_validate(response.json())
    if result.status is SetStateStatus.ACCEPT:
        return True
    if result.state is not None and result.state.is_final():
        run_logger().warning(
            "Could not resume flow run %s: %s",
            flow_run_id,
            getattr(result.details, "reason", None) or result.state.message,
        )
    return False


async def _state_of(flow_run_id: UUID) -> Any:
    """The flow run's state (``None``: the run is gone)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            flow_run = await client.read_flow_run(flow_run_id)
        except ObjectNotFound:
            return None
    return flow_run.state


async def _mark_cancelled(flow_run_id: UUID, what: str) -> None:
    """End a run cancelled while suspended (no process of its own is left to end it)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    message = f"Cancelled while suspended; the watcher stopped {what}"
    async with get_client() as client:
        await client.set_flow_run_state(flow_run_id, Cancelled(message=message), force=True)
