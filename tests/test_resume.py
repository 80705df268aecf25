"""A suspended sync's registration outlives a run that ended without its verdict.

The rule that "never a second job" rests on after a crash or a retry of the run: a run's
registration (the jobs it started) is forgotten only once the run's verdict is in (by the
run itself), the run completed or is gone, or its deadline passed. A run that crashed or
failed before its verdict keeps it, so that a retry of the run, which starts again from
the top, follows the same job instead of triggering another. Against the Prefect test
harness (real API, SQLite); the watcher's part through `Resumer`, the run's through
`SourceSync` with its Stitch steps replaced (one function each, no HTTP).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.states import Completed, Crashed, Failed, Paused, State

from prefect_stitch import StitchCredentials
from prefect_stitch._engine import run as engine_run
from prefect_stitch._engine.resume import Resumer
from prefect_stitch._engine.suspension import Registration, register, registration_of
from prefect_stitch._poll import Snapshot
from prefect_stitch.errors import StitchReplicationFailed, StitchTransportError
from prefect_stitch.models import Extraction, StitchSyncHandle, StitchSyncResult
from prefect_stitch.options import SyncOptions
from prefect_stitch.simulator import StitchSimulator
from tests.conftest import make_credentials
from tests.helpers import until

SOURCE = 4242
JOB = "116078.4242.sync.1"


@flow
def _a_sync() -> None:
    """Only its runs are used: their states are set by hand."""


async def _run_in(state: State[Any]) -> UUID:
    async with get_client() as client:
        run = await client.create_flow_run(_a_sync)
        await client.set_flow_run_state(run.id, state, force=True)
    return run.id


def _registration(run_id: UUID, credentials: StitchCredentials, deadline: float) -> Registration:
    return Registration(
        flow_run_id=run_id,
        client_id=credentials.client_id or 0,
        base_url=credentials.base_url,
        deadline=deadline,
        handles=[StitchSyncHandle(source_id=SOURCE, job_name=JOB, requested_at=datetime.now(UTC))],
        options=SyncOptions(loads="ignore"),
        key=f"stitch-{SOURCE}.{JOB}",
    )


def _listing() -> Snapshot:
    """A listing in which the job is still running (not listed: Stitch lists ended jobs)."""
    return Snapshot(tick=1, records=(), fetched_at=datetime.now(UTC), pages=1)


@pytest.mark.parametrize(
    ("state", "deadline_in", "kept"),
    [
        (Crashed(message="worker lost"), 600.0, True),
        (Failed(message="Stitch could not be read"), 600.0, True),
        (Crashed(message="worker lost"), -1.0, False),  # past max_wait_seconds
        (Completed(), 600.0, False),
    ],
    ids=["crashed", "failed", "crashed-past-deadline", "completed"],
)
async def test_the_watcher_forgets_a_registration_only_when_no_retry_can_need_it(
    sim: StitchSimulator, state: State[Any], deadline_in: float, kept: bool
) -> None:
    credentials = make_credentials(sim)
    run_id = await _run_in(state)
    await register(_registration(run_id, credentials, time.time() + deadline_in))
    async with credentials.get_client() as client:
        resumer = Resumer(credentials, client, sim.client_id)
        await resumer.refresh()
        await resumer.take(_listing())
        found = await registration_of(run_id, sim.client_id, credentials.base_url)
        assert (found is not None) is kept
        assert resumer.resumed == resumer.cancelled == 0
        # A run that ended without its verdict no longer follows its job: the watcher
        # announces the job's end as any other's.
        record = Extraction(source_id=SOURCE, job_name=JOB)
        assert not resumer.follows(record)


async def test_the_watcher_follows_the_job_of_a_suspended_run(sim: StitchSimulator) -> None:
    credentials = make_credentials(sim)
    run_id = await _run_in(Paused(pause_key="stitch-4242"))
    await register(_registration(run_id, credentials, time.time() + 600))
    async with credentials.get_client() as client:
        resumer = Resumer(credentials, client, sim.client_id)
        await resumer.refresh()
        await resumer.take(_listing())
        assert await registration_of(run_id, sim.client_id, credentials.base_url) is not None
        assert resumer.follows(Extraction(source_id=SOURCE, job_name=JOB))
        assert resumer.resumed == 0  # the job has not ended


class _Suspender:
    """Stands in for a suspended run's `Suspender`: counts the registration's forgetting."""

    def __init__(self) -> None:
        self.forgotten = 0

    async def registration(self) -> None:
        return None

    async def while_stitch_works(self, *args: Any) -> None:
        return None

    async def done(self) -> None:
        self.forgotten += 1


@pytest.mark.parametrize(
    ("outcome", "forgotten"),
    [
        ("succeeded", 1),
        ("failed", 1),
        ("stitch unreadable", 0),
    ],
)
async def test_a_run_forgets_its_registration_once_its_verdict_is_in(
    sim: StitchSimulator, monkeypatch: pytest.MonkeyPatch, outcome: str, forgotten: int
) -> None:
    """Stitch unreadable (the transport's retries spent): the run fails, its registration
    stays, and a retry of the run follows the same job."""
    handle = StitchSyncHandle(source_id=SOURCE, job_name=JOB, requested_at=datetime.now(UTC))
    result = StitchSyncResult(
        source_id=SOURCE, job_name=JOB, status="succeeded", stitch_url="https://app.stitchdata.com"
    )

    async def trigger(*args: Any) -> StitchSyncHandle:
        return handle

    async def wait_task(*args: Any) -> StitchSyncResult:
        if outcome == "failed":
            raise StitchReplicationFailed(
                "tap exited with status -9", source_id=SOURCE, job_name=JOB, result=result
            )
        if outcome == "stitch unreadable":
            raise StitchTransportError(status_code=None, reason="connection refused")
        return result

    monkeypatch.setattr(engine_run, "trigger", trigger)
    monkeypatch.setattr(engine_run, "wait_task", wait_task)
    suspender = _Suspender()
    options = SyncOptions(replication_retries=0)
    credentials = make_credentials(sim)
    sync = engine_run.SourceSync(credentials, SOURCE, options, suspender=suspender)  # type: ignore[arg-type]
    expected = {"failed": StitchReplicationFailed, "stitch unreadable": StitchTransportError}
    if outcome in expected:
        with pytest.raises(expected[outcome]):
            await sync.run()
    else:
        assert (await sync.run()).job_name == JOB
    assert suspender.forgotten == forgotten


async def test_the_watchers_heartbeat_and_a_registration_put_nothing_in_the_event_feed(
    sim: StitchSimulator,
) -> None:
    """The watcher says it runs every 30 s, each suspension files a registration: none of
    it is an event (two a minute filled the feed). An artifact the Prefect client writes
    is, and its event's arrival says the feed has caught up."""
    from prefect.client.schemas.actions import ArtifactCreate
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    from prefect_stitch._engine.suspension import Presence

    credentials = make_credentials(sim)
    started = datetime.now(UTC)
    presence = Presence(sim.client_id, credentials.base_url)
    for _ in range(3):
        await presence.beat()
    await register(_registration(await _run_in(Paused()), credentials, time.time() + 600))
    async with get_client() as client:
        control = await client.create_artifact(ArtifactCreate(type="control", data={"n": 1}))

        async def artifact_events() -> list[str]:
            page = await client.read_events(
                filter=EventFilter(
                    occurred=EventOccurredFilter(since=started),
                    event=EventNameFilter(prefix=["prefect.artifact."]),
                ),
                limit=50,
            )
            return [str(e.resource.get("prefect.resource.id")) for e in page.events]

        async def control_stored() -> list[str]:
            found = await artifact_events()
            return found if f"prefect.artifact.{control.id}" in found else []

        found = await until(control_stored, 30, "the control artifact's event")
    await presence.leave()
    assert found == [f"prefect.artifact.{control.id}"], found


async def _a_pool_deployment(client: Any) -> tuple[str, UUID]:
    """A process work pool of its own and a deployment of `_a_sync` on it."""
    from uuid import uuid4

    from prefect.client.schemas.actions import WorkPoolCreate

    pool = f"stitch-line-{uuid4().hex[:8]}"
    await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    flow_id = await client.create_flow(_a_sync)
    return pool, await client.create_deployment(flow_id, "line", work_pool_name=pool)


async def _suspended_run(client: Any, deployment_id: UUID, **paused: Any) -> UUID:
    """A run of the deployment, suspended as a sync suspends (a reschedule-style pause)."""
    run = await client.create_flow_run_from_deployment(deployment_id)
    state = Paused(reschedule=True, pause_key="stitch-4242", **paused)
    await client.set_flow_run_state(run.id, state, force=True)
    return UUID(str(run.id))


async def test_a_resumed_run_goes_before_the_runs_queued_after_it_first_ran() -> None:
    """Prefect's own resume schedules the run for now, behind every run waiting for a
    slot (a minute in a pool of 2 slots and 20 syncs): the watcher puts it back at the
    place it had in the pool's line, once, and the pool hands it the next slot."""
    from prefect_stitch._engine.resume import resume_in_its_place

    async with get_client() as client:
        pool, deployment_id = await _a_pool_deployment(client)
        suspended = await _suspended_run(client, deployment_id)
        queued_after = [
            await client.create_flow_run_from_deployment(deployment_id) for _ in range(3)
        ]

        assert await resume_in_its_place(suspended)
        assert not await resume_in_its_place(suspended)  # resumed once, not twice

        state = (await client.read_flow_run(suspended)).state
        assert state is not None and state.is_scheduled() and state.name == "Resuming"
        line = await client.get_scheduled_flow_runs_for_work_pool(
            pool, scheduled_before=datetime.now(UTC)
        )
        order = [response.flow_run.id for response in line]
        assert order == [suspended, *(run.id for run in queued_after)]


async def test_two_watchers_resuming_one_run_at_once_resume_it_once() -> None:
    """Two watchers of an account take the same listing and resume the same run at the same
    moment: one resume is accepted, the other turned down (Prefect's own resume checks the
    run is paused in one transaction; here its PreventDuplicateTransitions rule does)."""
    from prefect_stitch._engine.resume import resume_in_its_place

    async with get_client() as client:
        _, deployment_id = await _a_pool_deployment(client)
        for _ in range(3):
            run_id = await _suspended_run(client, deployment_id)
            both = await asyncio.gather(resume_in_its_place(run_id), resume_in_its_place(run_id))
            assert sorted(both) == [False, True], both
            states = await client.read_flow_run_states(run_id)
            assert [s.name for s in states].count("Resuming") == 1


async def test_a_suspension_that_timed_out_is_not_resumed_and_the_watcher_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Prefect fails a suspended run whose suspension timed out when anyone tries to resume
    it: the watcher says so in a WARNING, not as if another watcher had resumed it."""
    import logging

    from prefect_stitch._engine.resume import resume_in_its_place

    async with get_client() as client:
        _, deployment_id = await _a_pool_deployment(client)
        run_id = await _suspended_run(client, deployment_id, timeout_seconds=1)
        await asyncio.sleep(1.5)
        with caplog.at_level(logging.WARNING, logger="prefect_stitch"):
            assert not await resume_in_its_place(run_id)
        state = (await client.read_flow_run(run_id)).state
    assert state is not None and state.is_failed()
    [warning] = [r for r in caplog.records if "Could not resume flow run" in r.getMessage()]
    assert str(run_id) in warning.getMessage() and "timed out" in warning.getMessage()


async def _a_job_that_ended(sim: StitchSimulator, credentials: StitchCredentials) -> Any:
    """Start a job of source 72 and wait for its end; (its name, the account's listing)."""
    from prefect_stitch._poll.reading import read_listing
    from prefect_stitch.simulator import Outcome
    from tests.helpers import until

    sim.add_source(72, outcomes=[Outcome.success(0.2)])
    async with credentials.get_client() as client:
        job_name = await client.start_replication_job(72)

        async def ended() -> bool:
            return sim.running_job(72) is None

        await until(ended, 10, "the job's end")
        return job_name, await read_listing(client, sim.client_id, 1, extractions=True, loads=True)


async def test_a_resumed_run_takes_the_listing_that_showed_its_jobs_end_at_hand(
    sim: StitchSimulator,
) -> None:
    """Resumed for its job's end, the run's first listing is the one the watcher published
    (taken up as its process joined the shared poll), not the next one a tick later: the
    verdict within a second or so, where the next listing was a tick (12 s here) away."""
    import logging

    from prefect_stitch._engine.context import SyncContext
    from prefect_stitch._engine.watch import watch_until_final

    credentials = make_credentials(sim, jobs_rate_period_seconds=120.0)  # a tick: 12 s
    job_name, listing = await _a_job_that_ended(sim, credentials)
    async with credentials.get_client() as client:
        options = SyncOptions(poll_interval_seconds=0.1, loads="ignore")
        ctx = SyncContext(
            credentials, client, sim.client_id, 72, options, None, logging.getLogger("t")
        )
        ctx.ended_lately = True  # what the resumed run's wait is told
        ctx.poller.prime(listing)  # as its process joins the shared poll
        handle = StitchSyncHandle(source_id=72, job_name=job_name, requested_at=datetime.now(UTC))
        started = time.monotonic()
        final, _ = await watch_until_final(ctx, handle, follow_next=False)
        elapsed = time.monotonic() - started
    assert final.record.job_name == job_name and final.polls == 1
    assert elapsed < 3, f"{elapsed:.1f} s: the resumed run waited for another listing"
