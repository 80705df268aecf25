"""Which job is ours, and its verdict, whatever the clocks, retried triggers and retried runs do.

End to end: the real flows, over real HTTP, against the simulator, with the Prefect
harness, and with a realistic (compressed) jobs budget that the simulator enforces with
429s: 30 requests per 3 s, Stitch's 30 per 10 minutes at 200x.

Each test here reproduces a defect of the previous release (issue 9) and checks the
verdict the sync must give:

1. clock drift: Stitch's clock ahead or behind ours by seconds or minutes;
2. a transient fault on the trigger while Stitch's own schedule runs a job;
3. Prefect flow-run retries and ``replication_retries`` re-running a failed job;
4. ``max_wait_seconds`` bounding the whole sync, trigger retries included;
5. logs streamed in bounded memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.client.schemas.objects import State

from prefect_stitch import (
    StitchCredentials,
    StitchInvalidSourceError,
    StitchJobAlreadyRunning,
    StitchJobTerminated,
    StitchReplicationFailed,
    StitchSyncManyFailed,
    StitchSyncResult,
    StitchSyncTimeout,
    stitch_sync_flow,
    stitch_sync_many_flow,
)
from prefect_stitch.simulator import Fault, Outcome, StitchSimulator
from tests.conftest import REALISTIC_BUDGET, make_credentials
from tests.helpers import later, triggered, when

BUDGET = REALISTIC_BUDGET
OFFSETS = [-300.0, -5.0, 5.0, 300.0]
"""Stitch's clock minus ours, in seconds: behind and ahead, by seconds and by minutes."""
GUARD = 40.0
"""max_wait_seconds of runs that must end long before it (a hang shows as a timeout)."""


@pytest.fixture
def strict(stitch_simulator_factory: Callable[..., StitchSimulator]) -> Callable[..., Any]:
    """A simulator that answers 429 beyond the compressed budget, and credentials within it."""

    def make(clock_offset_seconds: float = 0.0, **kwargs: Any) -> tuple[StitchSimulator, Any]:
        sim = stitch_simulator_factory(
            enforce_rate_limit=True,
            jobs_rate_limit=BUDGET["jobs_rate_limit"],
            jobs_rate_period_seconds=BUDGET["jobs_rate_period_seconds"],
            clock_offset_seconds=clock_offset_seconds,
            **kwargs,
        )
        return sim, make_credentials(sim, **BUDGET)

    return make


def run(credentials: StitchCredentials, source_id: int, **options: Any) -> Any:
    """Run stitch_sync_flow; return its result or the exception it ended with."""
    options.setdefault("poll_interval_seconds", 0.1)
    options.setdefault("max_wait_seconds", GUARD)
    flow = options.pop("flow", stitch_sync_flow)
    state: State[Any] = flow(
        source_id=source_id, credentials=credentials, return_state=True, **options
    )
    try:
        return state.result()
    except BaseException as exc:
        return exc


def api_jobs(sim: StitchSimulator, source_id: int) -> list[str]:
    return sim.jobs_started(source_id)


def within_budget(sim: StitchSimulator) -> None:
    assert sim.rate_limit_violations == 0
    assert all(r.status != 429 for r in sim.requests)


# -- 1. clock drift ---------------------------------------------------------------------------


@pytest.mark.parametrize("offset", OFFSETS)
def test_attaching_right_after_the_schedule_finished_a_job_reports_the_job_followed(
    strict: Callable[..., Any], offset: float
) -> None:
    """Stitch's schedule ran S1 (success) and at once S2 (fails): we attach to S2."""
    sim, credentials = strict(offset)
    sim.add_source(1, outcomes=[Outcome.success(duration_seconds=0.1)])
    sim.seed_completed(1)
    first = sim.start_job(1)
    time.sleep(0.3)  # S1 has ended: it is the source's listed record
    second = sim.start_job(1, outcome=Outcome.failure("tap", -9, "Killed", duration_seconds=None))
    when(triggered(sim), later(0.5, lambda: sim.finish_job(1)))

    outcome = run(credentials, 1, on_already_running="attach")

    assert isinstance(outcome, StitchReplicationFailed), repr(outcome)
    assert outcome.job_name == second != first
    assert outcome.result is not None and outcome.result.attached is True
    assert [f.exit_status for f in outcome.failed_phases] == [-9]
    assert api_jobs(sim, 1) == []
    within_budget(sim)


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("failing", [False, True], ids=["succeeds", "fails"])
def test_a_lost_trigger_answer_is_settled_whatever_stitchs_clock(
    strict: Callable[..., Any], offset: float, failing: bool
) -> None:
    """Stitch starts the job, the answer is lost, the retry meets it running."""
    sim, credentials = strict(offset)
    outcome_of_job = (
        Outcome.failure("target", 3, "quota", duration_seconds=None)
        if failing
        else Outcome.success(duration_seconds=None)
    )
    sim.add_source(2, outcomes=[outcome_of_job])
    sim.seed_completed(2)
    sim.inject("trigger", Fault.start_then_drop())
    # The job runs until the retry has met it running, then a little longer.
    when(triggered(sim, 2), later(1.0, lambda: sim.finish_job(2)))

    started = time.monotonic()
    outcome = run(credentials, 2, on_already_running="fail")
    elapsed = time.monotonic() - started

    [job] = api_jobs(sim, 2)
    assert len(sim.requests_for("trigger")) == 2  # the retry met the job running
    if failing:
        assert type(outcome) is StitchReplicationFailed, repr(outcome)
        assert outcome.job_name == job
    else:
        assert isinstance(outcome, StitchSyncResult), repr(outcome)
        assert (outcome.job_name, outcome.status, outcome.attached) == (job, "succeeded", False)
    assert elapsed < GUARD / 2, "the sync waited for its timeout instead of the job's end"
    assert sim.requests_for("stop") == []
    within_budget(sim)


@pytest.mark.parametrize("offset", [*OFFSETS, 0.0])
@pytest.mark.parametrize(
    "outcome_of_job",
    [
        Outcome.success(duration_seconds=0.3),
        Outcome.failure("discovery", 2, "bad config", duration_seconds=0.3),
        Outcome.terminated(duration_seconds=0.3),
    ],
    ids=["success", "discovery-fails", "terminated"],
)
def test_plain_verdicts_hold_whatever_stitchs_clock(
    strict: Callable[..., Any], offset: float, outcome_of_job: Outcome
) -> None:
    sim, credentials = strict(offset)
    sim.add_source(3, outcomes=[outcome_of_job])
    previous = sim.seed_completed(3)  # a successful previous job is listed
    outcome = run(credentials, 3)
    [job] = api_jobs(sim, 3)
    if outcome_of_job.kind == "success":
        assert isinstance(outcome, StitchSyncResult), repr(outcome)
        assert outcome.job_name == job != previous
    elif outcome_of_job.kind == "terminated":
        assert type(outcome) is StitchJobTerminated, repr(outcome)
        assert outcome.job_name == job
    else:
        assert type(outcome) is StitchReplicationFailed, repr(outcome)
        assert [(f.phase, f.exit_status) for f in outcome.failed_phases] == [("discovery", 2)]
        assert outcome.result is not None
        assert (outcome.result.tap_exit_status, outcome.result.target_exit_status) == (None, None)
    within_budget(sim)


@pytest.mark.parametrize("offset", [*OFFSETS, 0.0])
@pytest.mark.parametrize("failing", [False, True], ids=["ours-succeeds", "ours-fails"])
def test_our_record_replaced_by_a_scheduled_job_is_judged_from_our_log(
    strict: Callable[..., Any], offset: float, failing: bool
) -> None:
    """Our job ends, Stitch's schedule runs another that ends before our next poll."""
    sim, credentials = strict(offset)
    ours = (
        Outcome.failure("tap", -9, "Killed", duration_seconds=0.3)
        if failing
        else Outcome.success(duration_seconds=0.3)
    )
    sim.add_source(4, outcomes=[ours])
    sim.seed_completed(4)
    other = Outcome.failure("tap", 1, "the scheduler's job", duration_seconds=0.2)
    sim.run_after_current(4, outcome=(Outcome.success(0.2) if failing else other))

    outcome = run(credentials, 4, poll_interval_seconds=2.0)

    [job] = api_jobs(sim, 4)
    scheduled = [j["job_name"] for j in sim.jobs(4) if j["triggered_via"] == "scheduler"]
    assert len(scheduled) == 1
    if failing:
        assert type(outcome) is StitchReplicationFailed, repr(outcome)
        assert outcome.job_name == job
        assert [f.exit_status for f in outcome.failed_phases] == [-9]
    else:
        assert isinstance(outcome, StitchSyncResult), repr(outcome)
        assert (outcome.job_name, outcome.status) == (job, "succeeded")
    assert len(sim.requests_for("logs")) >= 1  # the verdict came from our job's log
    within_budget(sim)


# -- 2. a transient fault on the trigger while Stitch's schedule runs a job --------------------


@pytest.fixture
def scheduled_job_running(strict: Callable[..., Any]) -> Iterator[tuple[StitchSimulator, Any, str]]:
    """Stitch's schedule started a job (it fails) well before we ask; our first trigger: 502."""
    sim, credentials = strict(0.0)
    sim.add_source(5, outcomes=[Outcome.success(duration_seconds=0.3)])
    sim.seed_completed(5)
    scheduled = sim.start_job(
        5, outcome=Outcome.failure("tap", 1, "the scheduler's job failed", duration_seconds=None)
    )
    time.sleep(1.1)  # it started in an earlier second than anything we will read
    sim.inject("trigger", Fault.status(502))
    when(triggered(sim, 2), later(0.5, lambda: sim.finish_job(5)))
    yield sim, credentials, scheduled


def test_retried_trigger_meeting_a_scheduled_job_reports_it_as_attached_when_it_ends(
    scheduled_job_running: tuple[StitchSimulator, Any, str],
) -> None:
    sim, credentials, scheduled = scheduled_job_running
    started = time.monotonic()
    outcome = run(credentials, 5, on_already_running="attach")
    elapsed = time.monotonic() - started
    assert isinstance(outcome, StitchReplicationFailed), repr(outcome)
    assert outcome.job_name == scheduled
    assert outcome.result is not None and outcome.result.attached is True
    assert "not started by this run" in str(outcome)
    assert elapsed < GUARD / 2, "the sync waited for its timeout instead of the job's end"
    assert sim.requests_for("stop") == []
    assert api_jobs(sim, 5) == []


def test_retried_trigger_meeting_a_scheduled_job_applies_fail(
    scheduled_job_running: tuple[StitchSimulator, Any, str],
) -> None:
    sim, credentials, scheduled = scheduled_job_running
    outcome = run(credentials, 5, on_already_running="fail")
    assert type(outcome) is StitchJobAlreadyRunning, repr(outcome)
    assert outcome.job_name == scheduled
    assert "not started by this run" in str(outcome)
    assert sim.requests_for("stop") == []
    assert api_jobs(sim, 5) == []


def test_retried_trigger_meeting_a_scheduled_job_applies_wait_then_start(
    scheduled_job_running: tuple[StitchSimulator, Any, str],
) -> None:
    sim, credentials, scheduled = scheduled_job_running
    outcome = run(credentials, 5, on_already_running="wait_then_start")
    [ours] = api_jobs(sim, 5)
    assert isinstance(outcome, StitchSyncResult), repr(outcome)
    assert (outcome.job_name, outcome.attached) == (ours, False)
    assert [a.job_name for a in outcome.attempts] == [scheduled, ours]
    assert sim.requests_for("stop") == []


# -- 3. retries that re-run a failed replication -----------------------------------------------


def test_flow_run_retries_start_a_new_job_after_a_judged_failure(
    strict: Callable[..., Any],
) -> None:
    sim, credentials = strict()
    sim.add_source(
        6,
        outcomes=[
            Outcome.failure("tap", -9, "Killed", duration_seconds=0.3),
            Outcome.success(duration_seconds=0.3),
        ],
    )
    sim.seed_completed(6)
    retried = stitch_sync_flow.with_options(retries=2, retry_delay_seconds=0)
    outcome = run(credentials, 6, flow=retried)
    first, second = api_jobs(sim, 6)
    assert isinstance(outcome, StitchSyncResult), repr(outcome)
    assert outcome.job_name == second
    assert [(a.job_name, a.status) for a in outcome.attempts] == [
        (first, "failed"),
        (second, "succeeded"),
    ]


def test_replication_retries_rerun_failed_and_terminated_jobs(
    strict: Callable[..., Any],
) -> None:
    sim, credentials = strict()
    sim.add_source(
        7,
        outcomes=[
            Outcome.terminated(duration_seconds=0.2),
            Outcome.failure("target", 2, "quota", duration_seconds=0.2),
            Outcome.success(duration_seconds=0.2),
        ],
    )
    state = stitch_sync_flow(
        source_id=7,
        credentials=credentials,
        poll_interval_seconds=0.1,
        max_wait_seconds=GUARD,
        replication_retries=2,
        replication_retry_delay_seconds=0.2,
        return_state=True,
    )
    result = state.result()
    jobs = api_jobs(sim, 7)
    assert len(jobs) == 3
    assert [(a.job_name, a.status) for a in result.attempts] == list(
        zip(jobs, ["terminated", "failed", "succeeded"], strict=True)
    )
    markdown = asyncio.run(artifact_markdown(state, 7))
    assert all(job in markdown for job in jobs)
    within_budget(sim)


def test_replication_retries_exhausted_list_every_job_in_the_error(
    strict: Callable[..., Any],
) -> None:
    sim, credentials = strict()
    sim.add_source(8, outcomes=[Outcome.failure("tap", 1, "boom", duration_seconds=0.2)])
    outcome = run(credentials, 8, replication_retries=1, replication_retry_delay_seconds=0)
    jobs = api_jobs(sim, 8)
    assert type(outcome) is StitchReplicationFailed, repr(outcome)
    assert len(jobs) == 2 and outcome.job_name == jobs[-1]
    assert [a.job_name for a in outcome.attempts] == jobs
    assert jobs[0] in str(outcome)


def test_replication_retries_that_cannot_run_in_time_say_so(
    strict: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A re-run whose delay would pass max_wait_seconds is not run: the log and the error
    say so (they gave up without a word)."""
    sim, credentials = strict()
    sim.add_source(12, outcomes=[Outcome.failure("tap", 1, "boom", duration_seconds=0.2)])
    with caplog.at_level(logging.WARNING):
        outcome = run(
            credentials,
            12,
            max_wait_seconds=8.0,
            replication_retries=2,
            replication_retry_delay_seconds=30,
        )
    assert type(outcome) is StitchReplicationFailed, repr(outcome)
    assert len(api_jobs(sim, 12)) == 1
    said = "2 replication retries were not run: the next would start after max_wait_seconds"
    assert said in str(outcome).splitlines()[0]
    assert any(said in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_replication_retries_never_follow_a_timeout(strict: Callable[..., Any]) -> None:
    sim, credentials = strict()
    sim.add_source(9, outcomes=[Outcome.success(duration_seconds=None)])
    outcome = run(credentials, 9, max_wait_seconds=4.0, replication_retries=3)
    assert type(outcome) is StitchSyncTimeout, repr(outcome)
    assert len(api_jobs(sim, 9)) == 1


def test_replication_retries_never_follow_a_client_error(strict: Callable[..., Any]) -> None:
    sim, credentials = strict()
    sim.add_source(10, deleted=True)
    outcome = run(credentials, 10, replication_retries=3)
    assert type(outcome) is StitchInvalidSourceError, repr(outcome)
    assert len(sim.requests_for("trigger")) == 1


def test_many_sources_rerun_each_failed_job(strict: Callable[..., Any]) -> None:
    sim, credentials = strict()
    sim.add_source(
        11,
        outcomes=[
            Outcome.failure("tap", -9, "Killed", duration_seconds=0.2),
            Outcome.success(duration_seconds=0.2),
        ],
    )
    sim.add_source(12, outcomes=[Outcome.success(duration_seconds=0.2)])
    sim.add_source(13, outcomes=[Outcome.failure("tap", 1, "always", duration_seconds=0.2)])
    with pytest.raises(StitchSyncManyFailed) as caught:
        stitch_sync_many_flow(
            source_ids=[11, 12, 13],
            credentials=credentials,
            poll_interval_seconds=0.1,
            max_wait_seconds=GUARD,
            replication_retries=1,
            replication_retry_delay_seconds=0,
        )
    results = caught.value.results
    assert results[11].ok and results[12].ok and not results[13].ok
    assert [a.status for a in results[11].result.attempts] == ["failed", "succeeded"]
    assert len(api_jobs(sim, 13)) == 2
    assert len(api_jobs(sim, 12)) == 1
    failure = caught.value.failures[13]
    assert isinstance(failure, StitchReplicationFailed)
    assert [a.job_name for a in failure.attempts] == api_jobs(sim, 13)


async def artifact_markdown(state: State[Any], source_id: int) -> str:
    """The run's latest ``stitch-sync-<id>`` artifact (each job's wait writes one)."""
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"stitch-sync-{source_id}"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            )
        )
    latest = max(artifacts, key=lambda artifact: artifact.created)
    return str(latest.data)


# -- 4. max_wait_seconds bounds the whole sync --------------------------------------------------


def test_max_wait_bounds_the_trigger_and_its_retries(strict: Callable[..., Any]) -> None:
    sim, _ = strict()
    sim.add_source(14)
    sim.inject("trigger", Fault.status(502), times=20)
    # Retries after 1, 2, 4, 8, 16 ... s: without the bound they would take over a minute.
    credentials = make_credentials(sim, **BUDGET, max_retries=10, retry_backoff_seconds=1.0)
    started = time.monotonic()
    outcome = run(credentials, 14, max_wait_seconds=4.0)
    elapsed = time.monotonic() - started
    assert type(outcome) is StitchSyncTimeout, repr(outcome)
    assert elapsed < 4.0 + 3.0
    assert 2 <= len(sim.requests_for("trigger")) <= 4


# -- 5. logs are streamed ----------------------------------------------------------------------


async def test_a_huge_log_is_scanned_in_bounded_memory(strict: Callable[..., Any]) -> None:
    sim, credentials = strict()
    sim.add_source(
        15,
        outcomes=[Outcome.failure("tap", -9, "Killed", duration_seconds=0.0)],
        log_lines=400_000,  # ~30 MB of log
    )
    async with credentials.get_client() as client:
        job = await client.start_replication_job(15)
        await asyncio.sleep(0.1)
        tracemalloc.start()
        try:
            scan = await client.scan_extraction_log(job, tail_lines=20)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert scan.lines >= 400_000
    assert len(scan.tail.splitlines()) == 20
    assert scan.exit_statuses == {"discovery": 0, "tap": -9, "target": 0}
    assert peak < 5_000_000, f"peak {peak / 1e6:.1f} MB while scanning a ~30 MB log"


# -- a Stitch that lists running jobs too ------------------------------------------------------


@pytest.mark.parametrize("policy", ["attach", "fail"])
def test_a_listing_that_shows_the_running_job_never_makes_it_the_baseline(
    strict: Callable[..., Any], policy: str
) -> None:
    """Some readings of the docs list a running job (null completion) instead of the last one."""
    sim, credentials = strict(0.0, list_running_jobs=True)
    sim.add_source(20, outcomes=[Outcome.success(duration_seconds=0.3)])
    sim.seed_completed(20)
    running = sim.start_job(20, outcome=Outcome.failure("tap", -9, "Killed", duration_seconds=None))
    when(triggered(sim), later(0.8, lambda: sim.finish_job(20)))
    outcome = run(credentials, 20, on_already_running=policy)
    if policy == "fail":
        assert type(outcome) is StitchJobAlreadyRunning, repr(outcome)
        return
    assert type(outcome) is StitchReplicationFailed, repr(outcome)
    assert outcome.job_name == running
    assert outcome.result is not None and outcome.result.attached is True


def test_our_own_job_listed_while_it_runs_is_followed_to_its_end(
    strict: Callable[..., Any],
) -> None:
    sim, credentials = strict(0.0, list_running_jobs=True)
    sim.add_source(21, outcomes=[Outcome.failure("target", 2, "quota", duration_seconds=1.0)])
    sim.seed_completed(21)
    outcome = run(credentials, 21)
    [job] = api_jobs(sim, 21)
    assert type(outcome) is StitchReplicationFailed, repr(outcome)
    assert outcome.job_name == job
    within_budget(sim)


def test_a_timeout_never_stops_a_job_this_run_did_not_start(strict: Callable[..., Any]) -> None:
    sim, credentials = strict()
    sim.add_source(22, outcomes=[Outcome.success(duration_seconds=None)])
    sim.start_job(22)  # Stitch's own schedule: we attach to it
    outcome = run(credentials, 22, max_wait_seconds=4.0)
    assert type(outcome) is StitchSyncTimeout, repr(outcome)
    assert outcome.stopped is False and "did not start" in str(outcome)
    assert sim.requests_for("stop") == []
    assert sim.running_job(22) is not None
