"""Suspending syncs end to end: a real ``prefect server``, ONE process worker limited to one
run, prefect.yaml's ``sync-source-suspending`` deployment, and the account's watcher running
in its own process (as the README deploys it), against the simulator over HTTP.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings
from prefect.states import AwaitingRetry, Cancelling, StateType

from prefect_stitch._engine.suspension import watcher_alive
from prefect_stitch.simulator import Fault, Outcome, StitchSimulator, StreamLoad
from tests.conftest import make_credentials
from tests.helpers import stitch_events, until
from tests.stack import ROOT, Stack

pytestmark = pytest.mark.deployment

SUSPENDING = "stitch-sync/sync-source-suspending"
DOWNSTREAM = "stitch-downstream/after-sync"
FAST = {"poll_interval_seconds": 0.3}


@pytest.fixture(scope="session")
def one_slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack with a worker that runs one flow run at a time."""
    stack = Stack(tmp_path_factory.mktemp("prefect-home-one-slot"))
    try:
        stack.start("--limit", "1")
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def on_one_slot(one_slot: Stack) -> Iterator[Stack]:
    """Point this process's Prefect client at the one-slot stack for the test."""
    with temporary_settings(
        updates={PREFECT_API_URL: one_slot.api_url, PREFECT_HOME: one_slot.home}
    ):
        yield one_slot


@pytest.fixture
def watcher(on_one_slot: Stack, sim: StitchSimulator) -> Iterator[subprocess.Popen[bytes]]:
    """The account's watcher, a flow run in its own process, until the test ends."""
    make_credentials(sim).save("stitch", overwrite=True)
    log = (on_one_slot.home / "watcher.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from prefect_stitch import stitch_watch_flow; "
            "stitch_watch_flow(credentials='stitch', poll_interval_seconds=0.3)",
        ],
        env=on_one_slot.env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


async def _start(source_id: int, **parameters: Any) -> UUID:
    async with get_client() as client:
        deployment = await client.read_deployment_by_name(SUSPENDING)
        run = await client.create_flow_run_from_deployment(
            deployment.id, parameters={"source_id": source_id, **FAST, **parameters}
        )
    return run.id


async def _start_many(source_ids: list[int]) -> UUID:
    async with get_client() as client:
        deployment = await client.read_deployment_by_name("stitch-sync-many/sync-sources")
        run = await client.create_flow_run_from_deployment(
            deployment.id,
            parameters={"source_ids": source_ids, "suspend_while_waiting": True, **FAST},
        )
    return run.id


async def _final(run_id: UUID, timeout: float = 180) -> Any:
    async with get_client() as client:

        async def final():  # type: ignore[no-untyped-def]
            current = await client.read_flow_run(run_id)
            return current if current.state is not None and current.state.is_final() else None

        return await until(final, timeout, f"run {run_id} to end", every=0.5)


async def _states(run_id: UUID) -> list[Any]:
    async with get_client() as client:
        return list(await client.read_flow_run_states(run_id))


async def _suspended(run_id: UUID) -> Any:
    """Wait until the run is suspended; its state."""
    async with get_client() as client:

        async def paused():  # type: ignore[no-untyped-def]
            current = await client.read_flow_run(run_id)
            return (
                current.state if current.state is not None and current.state.is_paused() else None
            )

        return await until(paused, 120, f"run {run_id} to be suspended", every=0.3)


async def _downstream_after_success_of(source_id: int) -> None:
    """The README's recipe: an automation on the source's stitch.sync.succeeded runs the
    downstream deployment with the event's source and job."""
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    async with get_client() as client:
        downstream = await client.read_deployment_by_name(DOWNSTREAM)
        await client.create_automation(
            AutomationCore(
                name=f"downstream after source {source_id}",
                trigger=EventTrigger(
                    expect={"stitch.sync.succeeded"},
                    match_related={"prefect.resource.id": f"stitch.source.{source_id}"},
                    posture=Posture.Reactive,
                    threshold=1,
                    within=timedelta(0),
                ),
                actions=[
                    RunDeployment(
                        source="selected",
                        deployment_id=downstream.id,
                        parameters={
                            "source_id": "{{ event.payload.source_id }}",
                            "job_name": "{{ event.payload.job_name }}",
                        },
                    )
                ],
            )
        )


async def _downstream_runs() -> list[Any]:
    async with get_client() as client:
        downstream = await client.read_deployment_by_name(DOWNSTREAM)
        return list(
            await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[downstream.id]))
            )
        )


def _at(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _process_of(run_id: UUID) -> int | None:
    """The process running a flow run (the worker gives it PREFECT__FLOW_RUN_ID)."""
    marker = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as environ:
                    if marker in environ.read().split(b"\0"):
                        return int(entry)
            except OSError:
                continue
    return None


async def _running_again(run_id: UUID) -> int:
    """Wait until the resumed run runs again in a process; that process's id."""
    async with get_client() as client:

        async def running():  # type: ignore[no-untyped-def]
            current = await client.read_flow_run(run_id)
            if current.state is None or not current.state.is_running():
                return None
            return _process_of(run_id)

        return await until(running, 120, f"run {run_id} to run again", every=0.1)


async def test_suspended_syncs_free_the_worker_and_end_as_waiting_ones_do(
    on_one_slot: Stack, sim: StitchSimulator, watcher: subprocess.Popen[bytes]
) -> None:
    """With one worker slot, two suspending syncs' jobs run at once (the first run frees the
    slot while Stitch works); each run ends as a waiting run would, with one job per source;
    a failing job's run fails with the phase's verdict; cancelling a suspended run stops its
    job; max_wait_seconds stops the job and fails the run."""
    slow_load = StreamLoad(delay_seconds=10)  # the data lands 10 s after the extraction
    sim.add_source(
        301,
        outcomes=[
            Outcome.success(
                duration_seconds=12, loads={"accounts": slow_load, "contacts": slow_load}
            )
        ],
    )
    sim.add_source(302, outcomes=[Outcome.success(duration_seconds=12)])
    sim.add_source(303, outcomes=[Outcome.failure("tap", -9, "Killed", duration_seconds=3)])
    sim.add_source(304, outcomes=[Outcome.success(duration_seconds=None)])  # never ends
    sim.add_source(305, outcomes=[Outcome.success(duration_seconds=None)])  # never ends
    await until(lambda: watcher_alive(sim.client_id, sim.base_url), 90, "the watcher to run")
    await _downstream_after_success_of(301)

    def one_slot_logs() -> str:
        return on_one_slot.logs("worker")

    sim.add_source(306, outcomes=[Outcome.success(duration_seconds=3)])
    sim.add_source(307, outcomes=[Outcome.success(duration_seconds=9)])
    first, second = await _start(301), await _start(302)
    many = await _start_many([306, 307])
    failing = await _start(303)
    cancelled = await _start(304)
    timing_out = await _start(305, max_wait_seconds=15)

    state = await _suspended(cancelled)
    assert "of source 304" in (state.message or ""), state.message
    async with get_client() as client:
        await client.set_flow_run_state(cancelled, Cancelling())

    ok1, ok2 = await _final(first), await _final(second)
    for run, source_id in ((ok1, 301), (ok2, 302)):
        assert run.state.type == StateType.COMPLETED, (
            run.state.message,
            on_one_slot.logs("worker"),
        )
        [job] = sim.jobs_started(source_id)  # never a second job after the resume
        result = await run.state.aresult()
        assert result.job_name == job and result.status == "succeeded"
        paused = [s for s in await _states(run.id) if s.type == StateType.PAUSED]
        assert paused and f"Stitch job {job} of source {source_id}" in paused[0].message
    # The pipeline recipe: the downstream deployment ran once, for the job, after the load.
    [downstream] = await until(_downstream_runs, 90, "the downstream run")
    assert downstream.parameters == {"source_id": 301, "job_name": sim.jobs_started(301)[0]}
    downstream = await _final(downstream.id)
    assert downstream.state.type == StateType.COMPLETED
    [job1] = sim.jobs(301)
    loaded_at = _at(job1["completed_at"]) + slow_load.delay_seconds
    assert downstream.created.timestamp() > loaded_at  # not at the extraction's end
    async with get_client() as client:
        [succeeded] = [e for e in await stitch_events(client, 301) if e.event.endswith("succeeded")]
    assert "watched" not in succeeded.payload  # the sync's own event, after the load
    # ... and the run was resumed once its data had landed (no worker held for the load).
    states = await _states(first)
    paused = next(s for s in states if s.type == StateType.PAUSED)
    resumed = next(s for s in states if s.timestamp > paused.timestamp)
    assert resumed.timestamp.timestamp() > loaded_at
    # One slot: the second job started while the first ran (its run had freed the slot).
    [job2] = sim.jobs(302)
    assert _at(job2["started_at"]) < _at(job1["completed_at"]), (job1, job2)

    # Many sources: suspended once for both, resumed once the last verdict was in.
    both = await _final(many)
    assert both.state.type == StateType.COMPLETED, both.state.message
    assert [o.status for o in (await both.state.aresult()).outcomes] == ["succeeded"] * 2
    states = await _states(many)
    [paused] = [s for s in states if s.type == StateType.PAUSED]
    assert "of source 306" in paused.message and "of source 307" in paused.message
    resumed = next(s for s in states if s.timestamp > paused.timestamp)
    assert resumed.timestamp.timestamp() > _at(sim.jobs(307)[0]["completed_at"])
    assert len(sim.jobs_started(306)) == len(sim.jobs_started(307)) == 1

    failed = await _final(failing)
    assert failed.state.type == StateType.FAILED
    assert failed.state.message.startswith("Failed: tap exited with status -9: Killed")
    assert failed.state.message.endswith("[StitchReplicationFailed]")
    assert len(sim.jobs_started(303)) == 1

    gone = await _final(cancelled)
    assert gone.state.type == StateType.CANCELLED
    assert sim.running_job(304) is None and sim.jobs(304)[0]["stopped"]
    async with get_client() as client:

        async def cancelled_event():  # type: ignore[no-untyped-def]
            return [
                e for e in await stitch_events(client, 304) if e.event == "stitch.sync.cancelled"
            ]

        [event] = await until(cancelled_event, 30, "the stitch.sync.cancelled event")
    assert event.payload["stopped"] is True

    late = await _final(timing_out)
    assert late.state.type == StateType.FAILED, late.state.message
    assert late.state.message.startswith("Timed out: Stitch job"), late.state.message
    assert late.state.message.endswith("[StitchSyncTimeout]")
    assert sim.running_job(305) is None and sim.jobs(305)[0]["stopped"]
    assert len(sim.jobs_started(305)) == 1


async def test_a_resumed_run_that_crashed_follows_the_same_job_when_retried(
    on_one_slot: Stack, sim: StitchSimulator, watcher: subprocess.Popen[bytes]
) -> None:
    """The resumed run's process is killed (a worker crash) before its verdict: the run is
    Crashed and its registration stays; retried as the UI's Retry does, the run starts from
    the top and follows the job its first part started: one job, that job's verdict (a
    second trigger would have started a job that succeeds)."""
    sim.add_source(
        321,
        outcomes=[
            Outcome.failure("tap", -9, "Killed", duration_seconds=2),
            Outcome.success(duration_seconds=1),
        ],
    )
    await until(lambda: watcher_alive(sim.client_id, sim.base_url), 90, "the watcher to run")
    run_id = await _start(321)
    await _suspended(run_id)
    sim.inject("logs", Fault.slow(30), times=4)  # the resumed run's log read hangs a while
    os.kill(await _running_again(run_id), signal.SIGKILL)
    crashed = await _final(run_id)
    assert crashed.state.type == StateType.CRASHED, crashed.state.message
    # The worker reports the crash too, about a second after the run's own report: a
    # retry before it would be crashed again by it.
    await asyncio.sleep(5)
    [job] = sim.jobs_started(321)
    async with get_client() as client:
        answer = await client.set_flow_run_state(run_id, AwaitingRetry(), force=True)
        assert answer.status.value == "ACCEPT", answer
        assert (await client.read_flow_run(run_id)).state.type == StateType.SCHEDULED
    retried = await _final(run_id)
    assert sim.jobs_started(321) == [job], "a second job after the crash"
    assert retried.state.type == StateType.FAILED, [x.name for x in await _states(run_id)]
    assert retried.state.message.startswith("Failed: tap exited with status -9: Killed")


async def test_without_a_watcher_a_suspending_sync_waits_in_its_process_and_says_why(
    on_one_slot: Stack, sim: StitchSimulator
) -> None:
    """Nobody would resume the run: it is not suspended; it waits in its process, says why
    in one WARNING line with the fix, and ends as a waiting run does."""
    sim.add_source(311, outcomes=[Outcome.success(duration_seconds=1)])
    await make_credentials(sim).asave("stitch", overwrite=True)
    run = await _final(await _start(311))
    assert run.state.type == StateType.COMPLETED, (run.state.message, on_one_slot.logs("worker"))
    assert not [s for s in await _states(run.id) if s.type == StateType.PAUSED]
    async with get_client() as client:

        async def warned():  # type: ignore[no-untyped-def]
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]))
            )
            return [log for log in logs if "Not suspending" in log.message]

        [warning] = await until(warned, 30, "the run's WARNING")
    assert warning.level == 30
    assert f"no watcher of Stitch account {sim.client_id} is running" in warning.message
    assert "watch-account" in warning.message
