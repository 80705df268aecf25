"""The real thing: prefect.yaml deployed to a real `prefect server`, runs picked up by a real
`process` worker, triggered through the API as the UI does.

Everything this test starts (server, worker) it stops by process id. It uses a temporary
PREFECT_HOME, so it never touches the developer's Prefect profile or database.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings
from prefect.states import Cancelling, StateType

from prefect_stitch.simulator import Outcome, StitchSimulator
from tests.conftest import make_credentials
from tests.helpers import stitch_events, until
from tests.stack import Stack

pytestmark = pytest.mark.deployment


@pytest.fixture(scope="session")  # not "module": pytest-xdist may set a module's up twice
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("prefect-home"))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def on_stack(stack: Stack) -> Iterator[Stack]:
    """Point this process's Prefect client at the stack's server for the test."""
    with temporary_settings(updates={PREFECT_API_URL: stack.api_url, PREFECT_HOME: stack.home}):
        yield stack


async def _run(deployment: str, parameters: dict[str, Any], timeout: float = 120) -> Any:
    async with get_client() as client:
        found = await client.read_deployment_by_name(deployment)
        run = await client.create_flow_run_from_deployment(found.id, parameters=parameters)

        async def final():  # type: ignore[no-untyped-def]
            current = await client.read_flow_run(run.id)
            return current if current.state is not None and current.state.is_final() else None

        return await until(final, timeout, f"{deployment} run to finish", every=0.5)


async def test_deployments_run_from_the_api_and_report_truthfully(
    on_stack: Stack, sim: StitchSimulator
) -> None:
    sim.add_source(101, outcomes=[Outcome.success(duration_seconds=0.5)])
    sim.add_source(102, outcomes=[Outcome.failure("tap", -9, "Killed", duration_seconds=0.5)])
    await make_credentials(sim).asave("stitch", overwrite=True)
    fast = {"poll_interval_seconds": 0.2}

    async with get_client() as client:
        deployment = await client.read_deployment_by_name("stitch-sync/sync-source")
        schema = deployment.parameter_openapi_schema
        assert "source_id" in schema["required"]
        properties = schema["properties"]
        assert properties["source_id"]["type"] == "integer"
        assert properties["poll_interval_seconds"]["type"] == "number"
        assert properties["poll_interval_seconds"]["default"] == 30.0
        assert properties["on_already_running"]["enum"] == ["attach", "fail", "wait_then_start"]
        assert (
            properties["max_wait_seconds"]["default"] == 86400.0
        )  # as long as Stitch lets a job run
        assert deployment.parameters["credentials"] == "stitch"
        assert "source_id" not in deployment.parameters
        pipeline = await client.read_deployment_by_name("stitch-sync-pipeline/sync-then-transform")
        assert "source_id" in pipeline.parameter_openapi_schema["required"]
        many = await client.read_deployment_by_name("stitch-sync-many/sync-sources")
        many_schema = many.parameter_openapi_schema
        assert "source_ids" in many_schema["required"]
        assert many_schema["properties"]["source_ids"]["type"] == "array"
        assert many_schema["properties"]["source_ids"]["items"]["type"] == "integer"

    # 1. a healthy source: Completed, with the right result
    ok = await _run("stitch-sync/sync-source", {"source_id": 101, **fast})
    assert ok.state.type == StateType.COMPLETED, on_stack.logs("worker")
    result = await ok.state.aresult()
    assert result.job_name == sim.jobs_started(101)[0]
    assert result.status == "succeeded" and result.source_id == 101

    # 2. a failing source: Failed, with the typed error's message
    bad = await _run("stitch-sync/sync-source", {"source_id": 102, **fast})
    assert bad.state.type == StateType.FAILED
    assert "StitchReplicationFailed" in bad.state.message
    assert "tap exited with status -9: Killed" in bad.state.message

    # 3. the events, through the server's events API
    async with get_client() as client:

        async def events_for(source_id: int, names: set[str]):  # type: ignore[no-untyped-def]
            async def found():  # type: ignore[no-untyped-def]
                events = {e.event: e for e in await stitch_events(client, source_id)}
                return events if names <= set(events) else None

            return await until(found, 30, f"{names} for {source_id}")

        good_events = await events_for(101, {"stitch.sync.started", "stitch.sync.succeeded"})
        assert good_events["stitch.sync.succeeded"].payload["job_name"] == result.job_name
        bad_events = await events_for(102, {"stitch.sync.started", "stitch.sync.failed"})
        assert bad_events["stitch.sync.failed"].payload["tap_exit_status"] == -9


async def test_pipeline_runs_downstream_only_after_a_successful_sync(
    on_stack: Stack, sim: StitchSimulator
) -> None:
    sim.add_source(111, outcomes=[Outcome.success(duration_seconds=0.3)])
    sim.add_source(112, outcomes=[Outcome.failure("target", 1, "quota", duration_seconds=0.3)])
    await make_credentials(sim).asave("stitch", overwrite=True)
    fast = {"poll_interval_seconds": 0.2}

    ok = await _run("stitch-sync-pipeline/sync-then-transform", {"source_id": 111, **fast})
    assert ok.state.type == StateType.COMPLETED, on_stack.logs("worker")
    summary = await ok.state.aresult()
    assert sim.jobs_started(111)[0] in summary

    bad = await _run("stitch-sync-pipeline/sync-then-transform", {"source_id": 112, **fast})
    assert bad.state.type == StateType.FAILED
    assert "target exited with status 1: quota" in bad.state.message
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["stitch-downstream"]))
        )
    runs_with_downstream = {a.flow_run_id for a in artifacts}
    assert ok.id in runs_with_downstream  # the downstream step ran after the good sync
    assert bad.id not in runs_with_downstream  # and never after the failed one


async def test_cancelling_a_deployment_run_stops_the_stitch_job(
    on_stack: Stack, sim: StitchSimulator
) -> None:
    sim.add_source(121, outcomes=[Outcome.success(duration_seconds=None)])  # never ends
    await make_credentials(sim).asave("stitch", overwrite=True)
    async with get_client() as client:
        deployment = await client.read_deployment_by_name("stitch-sync/sync-source")
        run = await client.create_flow_run_from_deployment(
            deployment.id, parameters={"source_id": 121, "poll_interval_seconds": 0.2}
        )

        async def polling():  # type: ignore[no-untyped-def]
            return sim.running_job(121) is not None and len(sim.requests_for("extractions")) > 0

        await until(polling, 120, "the job to start and be polled", every=0.5)
        await client.set_flow_run_state(run.id, Cancelling(), force=True)

        async def cancelled():  # type: ignore[no-untyped-def]
            current = await client.read_flow_run(run.id)
            return current.state is not None and current.state.type == StateType.CANCELLED

        await until(cancelled, 90, "the run to end Cancelled", every=0.5)
        assert len(sim.requests_for("stop")) >= 1
        assert sim.running_job(121) is None

        async def cancelled_event():  # type: ignore[no-untyped-def]
            return [
                e for e in await stitch_events(client, 121) if e.event == "stitch.sync.cancelled"
            ]

        [event] = await until(cancelled_event, 30, "the stitch.sync.cancelled event")
        assert event.payload["stopped"] is True
