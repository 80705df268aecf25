"""stitch_sync_many_flow: many sources, one shared poll per tick, within the rate budget."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.exceptions import ParameterTypeError
from prefect.settings import PREFECT_API_URL

from prefect_stitch import (
    StitchSyncManyFailed,
    StitchSyncManyResult,
    stitch_sync_many_flow,
)
from prefect_stitch._ratelimit import account_limit_name, global_limit_settings
from prefect_stitch.simulator import Outcome, StitchSimulator
from tests.conftest import make_credentials
from tests.helpers import until

FAST = {"poll_interval_seconds": 0.1, "max_wait_seconds": 60.0}


def test_all_succeed_with_one_listing_per_tick(sim: StitchSimulator) -> None:
    ids = list(range(1, 151))  # two pages of extractions
    for i in ids:
        sim.add_source(i, outcomes=[Outcome.success(duration_seconds=0.2 + (i % 7) * 0.1)])
    started = time.monotonic()
    state = stitch_sync_many_flow(
        source_ids=ids,
        credentials=make_credentials(sim),
        max_concurrent=25,
        return_state=True,
        **FAST,
    )
    elapsed = time.monotonic() - started
    assert state.is_completed(), state.message
    summary = state.result()
    assert isinstance(summary, StitchSyncManyResult)
    assert [o.source_id for o in summary.outcomes] == ids
    assert summary.succeeded == 150
    for outcome in summary.outcomes:
        assert outcome.result is not None
        assert outcome.result.job_name == sim.jobs_started(outcome.source_id)[0]
    # The cost of a tick is the number of pages, whatever the number of sources.
    # (page 2 exists only once more than 100 sources have a completed job)
    pages = Counter(r.query.get("page", "1") for r in sim.requests_for("extractions"))
    assert set(pages) == {"1", "2"}
    assert pages["2"] <= pages["1"]
    ticks = pages["1"]
    assert ticks <= elapsed / FAST["poll_interval_seconds"] + 2, (
        f"{ticks} listings in {elapsed:.1f} s for 150 sources: polls are not shared"
    )
    listings = len(sim.requests_for("extractions")) + len(sim.requests_for("loads"))
    assert 0 < summary.jobs_requests <= listings


async def test_each_source_has_its_own_task_runs(sim: StitchSimulator) -> None:
    import asyncio

    ids = [11, 12, 13]
    for i in ids:
        sim.add_source(i, outcomes=[Outcome.success(duration_seconds=0.2)])
    state = await asyncio.to_thread(
        stitch_sync_many_flow,
        source_ids=ids,
        credentials=make_credentials(sim),
        return_state=True,
        **FAST,
    )
    async with get_client() as client:
        [run] = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )

        async def all_recorded():  # type: ignore[no-untyped-def]
            # Task runs reach the API through events: give the server a moment.
            task_runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            )
            return task_runs if len(task_runs) >= 2 * len(ids) else None

        task_runs = await until(all_recorded, 30, "the task runs to be recorded")
    names = sorted(t.name for t in task_runs)
    for i in ids:
        assert f"start-stitch-sync-{i}" in names
        assert f"wait-for-stitch-sync-{i}" in names


def test_failures_are_reported_after_all_finish(sim: StitchSimulator) -> None:
    sim.add_source(21, outcomes=[Outcome.success(duration_seconds=0.8)])
    sim.add_source(22, outcomes=[Outcome.failure("tap", -9, "Killed", duration_seconds=0.2)])
    sim.add_source(23, outcomes=[Outcome.terminated(duration_seconds=0.3)])
    sim.add_source(24, outcomes=[Outcome.success(duration_seconds=0.2)])
    with pytest.raises(StitchSyncManyFailed) as caught:
        stitch_sync_many_flow(
            source_ids=[21, 22, 23, 24], credentials=make_credentials(sim), **FAST
        )
    error = caught.value
    assert str(error).startswith("2 of 4 Stitch syncs did not succeed")
    assert "22 (StitchReplicationFailed: " in str(error)
    assert "23 (StitchJobTerminated: " in str(error)
    assert sorted(error.failures) == [22, 23]
    statuses = {sid: outcome.status for sid, outcome in error.results.items()}
    assert statuses == {21: "succeeded", 22: "failed", 23: "terminated", 24: "succeeded"}
    # the slow healthy source still finished: the run waited for everyone
    assert error.results[21].result is not None


def test_fail_fast_stops_the_others(sim: StitchSimulator) -> None:
    sim.add_source(31, outcomes=[Outcome.failure("discovery", 1, "bad", duration_seconds=0.2)])
    sim.add_source(32, outcomes=[Outcome.success(duration_seconds=None)])  # would run forever
    sim.add_source(33, outcomes=[Outcome.success(duration_seconds=None)])
    with pytest.raises(StitchSyncManyFailed) as caught:
        stitch_sync_many_flow(
            source_ids=[31, 32, 33], credentials=make_credentials(sim), fail_fast=True, **FAST
        )
    statuses = {sid: outcome.status for sid, outcome in caught.value.results.items()}
    assert statuses == {31: "failed", 32: "cancelled", 33: "cancelled"}
    assert sim.running_job(32) is None and sim.running_job(33) is None
    assert len(sim.requests_for("stop")) == 2


def test_the_account_budget_holds_with_many_sources(stitch_simulator_factory) -> None:  # type: ignore[no-untyped-def]
    # The simulator counts Stitch's sliding window with the same (shrunk) budget,
    # and answers 429 if it is ever exceeded.
    sim = stitch_simulator_factory(
        jobs_rate_limit=4, jobs_rate_period_seconds=1.0, enforce_rate_limit=True
    )
    ids = list(range(100, 160))
    for i in ids:
        sim.add_source(i, outcomes=[Outcome.success(duration_seconds=0.5 + (i % 5) * 0.3)])
    credentials = make_credentials(sim, jobs_rate_limit=4, jobs_rate_period_seconds=1.0)
    summary = stitch_sync_many_flow(
        source_ids=ids, credentials=credentials, poll_interval_seconds=0.05, max_wait_seconds=60
    )
    assert summary.succeeded == len(ids)
    assert sim.jobs_requests_in_window(1.0) <= 4
    assert sim.rate_limit_violations == 0


@pytest.mark.parametrize("bad", [[], [0], [1, 1], ["a"], [True]])
def test_bad_source_ids_rejected_before_any_request(
    sim: StitchSimulator, bad: list[object]
) -> None:
    with pytest.raises(ParameterTypeError) as caught:  # one layer refuses: Prefect's, for a flow
        stitch_sync_many_flow(source_ids=bad, credentials=make_credentials(sim), **FAST)  # type: ignore[arg-type]
    assert "source_ids" in str(caught.value)
    assert sim.requests == []


RUNNER = textwrap.dedent(
    """
    import sys
    from prefect_stitch import StitchCredentials, stitch_sync_many_flow

    base_url, token, client_id, limit_name, *ids = sys.argv[1:]
    credentials = StitchCredentials(
        access_token=token, client_id=int(client_id), base_url=base_url,
        jobs_rate_limit=10_000, jobs_rate_period_seconds=1.0,  # no in-process pacing
        retry_backoff_seconds=0.01,
    )
    summary = stitch_sync_many_flow(
        source_ids=[int(i) for i in ids], credentials=credentials,
        poll_interval_seconds=0.02, max_wait_seconds=120,
        global_rate_limit=limit_name or None,
    )
    print("OK", summary.succeeded)
    """
)


def _two_runs(sim: StitchSimulator, tmp_path: Path, limit_name: str) -> None:
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                sim.base_url,
                sim.token,
                str(sim.client_id),
                limit_name,
                *[str(i) for i in ids],
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for ids in (range(401, 404), range(404, 407))
    ]
    for run in runs:
        out, _ = run.communicate(timeout=180)
        assert run.returncode == 0 and "OK 3" in out, out[-3000:]


async def test_a_global_limit_holds_the_budget_across_two_flow_runs(
    sim: StitchSimulator, tmp_path: Path
) -> None:
    """Two processes syncing the same account share one server-side rate limit."""
    import asyncio

    for i in range(401, 407):
        sim.add_source(i, outcomes=[Outcome.success(duration_seconds=4.0)])
    name = account_limit_name(sim.client_id)
    capacity, decay = 2, 2.0  # a leaky bucket: at most 2 + 2 * 1 = 4 requests in any second
    async with get_client() as client:
        await client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=name, limit=capacity, slot_decay_per_second=decay)
        )
    try:
        await asyncio.to_thread(_two_runs, sim, tmp_path, "")  # found by its conventional name
    finally:
        async with get_client() as client:
            await client.delete_global_concurrency_limit_by_name(name)
    assert sim.jobs_requests_in_window(1.0) <= capacity + decay * 1.0
    assert len(sim.requests_for("extractions")) >= 4  # both runs did poll


def test_global_limit_settings_keep_a_sliding_window_within_the_budget() -> None:
    capacity, decay = global_limit_settings(30, 600)
    assert (capacity, decay) == (15, 0.025)
    assert capacity + decay * 600 <= 30


def test_many_sources_pause_each_schedule_before_its_trigger(sim: StitchSimulator) -> None:
    for source_id in (71, 72):
        sim.add_source(source_id, outcomes=[Outcome.success(duration_seconds=0.3)])
    summary = stitch_sync_many_flow(
        source_ids=[71, 72],
        credentials=make_credentials(sim),
        pause_stitch_schedule=True,
        loads="ignore",
        **FAST,
    )
    assert summary.succeeded == 2
    for source_id in (71, 72):
        assert sim.source(source_id)["paused_at"] is not None
        mine = [
            r.endpoint
            for r in sim.requests
            if r.endpoint in ("update_source", "trigger") and f"/sources/{source_id}" in r.path
        ]
        assert mine == ["update_source", "trigger"]


def test_a_many_sources_run_is_named_after_its_sources(sim: StitchSimulator) -> None:
    for source_id in (81, 82, 83):
        sim.add_source(source_id, outcomes=[Outcome.success(duration_seconds=0.2)])
    state = stitch_sync_many_flow(
        source_ids=[81, 82, 83],
        credentials=make_credentials(sim),
        loads="ignore",
        return_state=True,
        **FAST,
    )
    assert state.is_completed()

    async def name() -> str:
        async with get_client() as client:
            run = await client.read_flow_run(state.state_details.flow_run_id)  # type: ignore[arg-type]
        return run.name

    import asyncio

    assert asyncio.run(name()) == "stitch-sync-81-and-2-more"
