"""Cancelling a real flow run (served by ``flow.serve()``) stops the Stitch job.

Prefect delivers cancellation only to runs started by a worker or ``serve()``; an ad-hoc
run is not interrupted. So this test serves ``stitch_sync_flow`` in a child process,
starts a run through the API as the UI does, cancels it through the API, and watches
the simulator receive the ``DELETE /v4/sources/{id}/sync``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelling, StateType

from prefect_stitch.simulator import Outcome, StitchSimulator
from tests.conftest import make_credentials
from tests.helpers import until

SERVE = """
from prefect_stitch import stitch_sync_flow

if __name__ == "__main__":
    stitch_sync_flow.serve(name="cancel-test", limit=2, print_starting_message=False)
"""


async def test_cancelling_a_served_run_stops_the_stitch_job(
    sim: StitchSimulator, tmp_path: Path
) -> None:
    sim.add_source(90, outcomes=[Outcome.success(duration_seconds=None)])  # runs until stopped
    await make_credentials(sim).asave("cancel-test", overwrite=True)
    script = tmp_path / "serve_stitch_sync.py"
    script.write_text(SERVE)
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }
    output = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    try:
        async with get_client() as client:

            async def deployment():  # type: ignore[no-untyped-def]
                try:
                    return await client.read_deployment_by_name("stitch-sync/cancel-test")
                except Exception:
                    return None

            found = await until(deployment, 60, "the served deployment")
            run = await client.create_flow_run_from_deployment(
                found.id,
                parameters={
                    "source_id": 90,
                    "credentials": "cancel-test",
                    "poll_interval_seconds": 0.2,
                },
            )

            async def job_running():  # type: ignore[no-untyped-def]
                return sim.running_job(90) is not None

            await until(job_running, 90, "the Stitch job to start")
            await asyncio.sleep(1.0)  # let the wait task start polling
            await client.set_flow_run_state(run.id, Cancelling(), force=True)

            async def cancelled():  # type: ignore[no-untyped-def]
                current = await client.read_flow_run(run.id)
                return current.state is not None and current.state.type == StateType.CANCELLED

            await until(cancelled, 90, "the flow run to end Cancelled")
            assert len(sim.requests_for("stop")) >= 1
            assert sim.running_job(90) is None
            [job] = sim.jobs(90)
            assert job["stopped"] is True

            async def stop_logged():  # type: ignore[no-untyped-def]
                logs = await client.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]))
                )
                return [
                    log.message
                    for log in logs
                    if "a stop of the Stitch job was requested" in log.message
                ]

            [message] = await until(stop_logged, 30, "the log line about the stop")
            assert "cancelled" in message
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            )
            assert runs[0].state_type == StateType.CANCELLED
    except BaseException:
        print((tmp_path / "serve.log").read_text()[-5000:])
        raise
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
