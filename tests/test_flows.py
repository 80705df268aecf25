"""End to end: stitch_sync_flow against the simulator over real HTTP, with a real Prefect API."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.exceptions import ParameterTypeError

from prefect_stitch import (
    PhaseFailure,
    StitchAuthError,
    StitchJobAlreadyRunning,
    StitchJobTerminated,
    StitchNotFoundError,
    StitchReplicationFailed,
    StitchSyncResult,
    StitchSyncTimeout,
    run_stitch_sync,
    stitch_sync_flow,
)
from prefect_stitch.simulator import UNAUTHORIZED_MESSAGE, Fault, Outcome, StitchSimulator
from tests.conftest import make_credentials
from tests.helpers import later, triggered, when

FAST = {"poll_interval_seconds": 0.1, "max_wait_seconds": 30.0}


def run(sim: StitchSimulator, source_id: int, **kwargs: object) -> StitchSyncResult:
    kwargs.setdefault("credentials", make_credentials(sim))
    return stitch_sync_flow(source_id=source_id, **{**FAST, **kwargs})  # type: ignore[arg-type]


def test_success_on_a_source_listed_on_page_two(sim: StitchSimulator) -> None:
    sim.add_sources(range(1, 151), outcomes=[Outcome.success(duration_seconds=0.3)])
    for source_id in range(1, 151):
        sim.seed_completed(source_id)
    result = run(sim, 140)
    [job] = sim.jobs_started(140)
    assert result.status == "succeeded"
    assert result.job_name == job
    assert result.source_id == 140
    assert result.attached is False
    assert (result.discovery_exit_status, result.tap_exit_status, result.target_exit_status) == (
        0,
        0,
        0,
    )
    assert result.stitch_url == (
        f"https://app.stitchdata.com/client/{sim.client_id}/pipeline/v2/sources/140/summary"
    )
    assert result.polls >= 1
    assert result.start_time is not None and result.completion_time is not None
    assert result.duration_seconds is not None and result.duration_seconds >= 0
    pages = {r.query.get("page", "1") for r in sim.requests_for("extractions")}
    assert pages == {"1", "2"}


@pytest.mark.parametrize("phase", ["discovery", "tap", "target"])
def test_each_failing_phase_fails_the_flow_with_phase_status_and_description(
    sim: StitchSimulator, phase: str
) -> None:
    description = f"{phase} blew up: HTTP-error-code: 401"
    sim.add_source(7, outcomes=[Outcome.failure(phase, 1, description, duration_seconds=0.2)])
    with pytest.raises(StitchReplicationFailed) as caught:
        run(sim, 7)
    error = caught.value
    assert type(error) is StitchReplicationFailed
    assert error.failed_phases == [PhaseFailure(phase, 1, description)]
    assert error.job_name == sim.jobs_started(7)[0]
    assert f"{phase} exited with status 1: {description}" in str(error)
    assert error.result is not None and error.result.status == "failed"
    assert error.log_tail is not None and "Exit status is" in error.log_tail


def test_negative_exit_code_fails(sim: StitchSimulator) -> None:
    sim.add_source(8, outcomes=[Outcome.failure("tap", -9, "Killed", duration_seconds=0.2)])
    with pytest.raises(StitchReplicationFailed) as caught:
        run(sim, 8)
    assert caught.value.failed_phases == [PhaseFailure("tap", -9, "Killed")]
    assert "tap exited with status -9: Killed" in str(caught.value)


def test_terminated_job_is_a_typed_failure_not_running(sim: StitchSimulator) -> None:
    sim.add_source(9, outcomes=[Outcome.terminated(duration_seconds=0.2)])
    with pytest.raises(StitchJobTerminated) as caught:
        run(sim, 9)
    assert isinstance(caught.value, StitchReplicationFailed)
    assert str(caught.value).startswith("Terminated before every phase reported an exit status")
    assert caught.value.result is not None and caught.value.result.status == "terminated"


def test_previous_job_still_listed_while_ours_runs_does_not_end_the_wait(
    sim: StitchSimulator,
) -> None:
    sim.add_source(10, outcomes=[Outcome.failure("target", 1, "quota", duration_seconds=1.2)])
    previous = sim.seed_completed(10, Outcome.success())  # a successful previous job
    with pytest.raises(StitchReplicationFailed) as caught:
        run(sim, 10)
    assert caught.value.job_name != previous
    assert caught.value.job_name == sim.jobs_started(10)[0]
    assert caught.value.result is not None and caught.value.result.polls >= 3


def test_failure_leaves_the_log_tail_bounded(sim: StitchSimulator) -> None:
    sim.add_source(
        11, outcomes=[Outcome.failure("tap", 1, "boom", duration_seconds=0.2)], log_lines=500
    )
    with pytest.raises(StitchReplicationFailed) as caught:
        run(sim, 11)
    tail = caught.value.log_tail or ""
    assert 0 < len(tail.splitlines()) <= 20
    assert "Exit status is" in tail.splitlines()[-1]
    assert "[line 1/500]" not in str(caught.value)


def test_no_logs_fetched_when_disabled(sim: StitchSimulator) -> None:
    sim.add_source(12, outcomes=[Outcome.failure("tap", 1, "boom", duration_seconds=0.2)])
    with pytest.raises(StitchReplicationFailed) as caught:
        run(sim, 12, fetch_logs_on_failure=False)
    assert caught.value.log_tail is None
    assert sim.requests_for("logs") == []


def test_already_running_attach_follows_that_job(sim: StitchSimulator) -> None:
    sim.add_source(
        20, outcomes=[Outcome.failure("tap", 2, "scheduled run failed", duration_seconds=None)]
    )
    sim.seed_completed(20, Outcome.success())
    running = sim.start_job(20)  # Stitch's own scheduler started it
    when(triggered(sim), later(0.3, lambda: sim.finish_job(20)), timeout=120)
    with pytest.raises(StitchReplicationFailed) as caught:
        run(sim, 20, on_already_running="attach")
    assert caught.value.job_name == running
    assert caught.value.result is not None and caught.value.result.attached is True
    assert sim.jobs_started(20) == []  # we started nothing


def test_already_running_attach_success_reports_attached(sim: StitchSimulator) -> None:
    sim.add_source(21, outcomes=[Outcome.success(duration_seconds=None)])
    running = sim.start_job(21)

    # It ends once our trigger met it, however slowly the flow starts.
    when(triggered(sim), later(0.3, lambda: sim.finish_job(21)), timeout=120)
    result = run(sim, 21)
    assert (result.job_name, result.attached, result.status) == (running, True, "succeeded")


def test_already_running_fail_raises_and_starts_nothing(sim: StitchSimulator) -> None:
    sim.add_source(22, outcomes=[Outcome.success(duration_seconds=None)])
    sim.start_job(22)
    with pytest.raises(StitchJobAlreadyRunning) as caught:
        run(sim, 22, on_already_running="fail")
    assert caught.value.source_id == 22
    assert sim.jobs_started(22) == []
    assert len(sim.requests_for("trigger")) == 1
    assert sim.requests_for("stop") == []


def test_wait_then_start_waits_for_the_running_job_then_starts_ours(sim: StitchSimulator) -> None:
    sim.add_source(
        23,
        outcomes=[
            Outcome.failure("tap", 1, "the scheduler's job", duration_seconds=0.6),
            Outcome.success(duration_seconds=0.3),
        ],
    )
    foreign = sim.start_job(23)
    result = run(sim, 23, on_already_running="wait_then_start")
    [ours] = sim.jobs_started(23)
    assert result.job_name == ours != foreign
    assert result.status == "succeeded" and result.attached is False


def test_retried_trigger_meeting_already_running_starts_exactly_one_job(
    sim: StitchSimulator,
) -> None:
    # long enough to still run when the retry looks at the shared listing (~1 s later)
    sim.add_source(30, outcomes=[Outcome.success(duration_seconds=3.0)])
    sim.inject("trigger", Fault.start_then_drop())  # Stitch starts it; we never hear back
    result = run(sim, 30, on_already_running="fail")
    jobs = [job for job in sim.jobs(30) if job["triggered_via"] == "api"]
    assert len(jobs) == 1
    assert len(sim.requests_for("trigger")) == 2
    assert result.job_name == jobs[0]["job_name"]
    assert result.status == "succeeded"


def test_timeout_stops_the_job(sim: StitchSimulator) -> None:
    sim.add_source(40, outcomes=[Outcome.success(duration_seconds=None)])  # runs until stopped
    with pytest.raises(StitchSyncTimeout) as caught:
        run(sim, 40, max_wait_seconds=4.0)
    assert caught.value.stopped is True
    assert caught.value.max_wait_seconds == 4.0  # the limit the user set, not what was left
    assert str(caught.value).startswith("Timed out: Stitch job ")
    assert "did not finish within 4 s; a stop of the Stitch job was requested" in str(caught.value)
    assert len(sim.requests_for("stop")) == 1
    assert sim.running_job(40) is None


def test_timeout_can_leave_the_job_running(sim: StitchSimulator) -> None:
    sim.add_source(41, outcomes=[Outcome.success(duration_seconds=None)])
    with pytest.raises(StitchSyncTimeout) as caught:
        run(sim, 41, max_wait_seconds=4.0, stop_on_timeout=False)
    assert caught.value.stopped is False
    assert sim.requests_for("stop") == []
    assert sim.running_job(41) is not None


def test_401_surfaces_stitchs_raw_message(sim: StitchSimulator) -> None:
    sim.add_source(50)
    with pytest.raises(StitchAuthError) as caught:
        run(sim, 50, credentials=make_credentials(sim, access_token="ac_wrong"))
    assert str(caught.value) == UNAUTHORIZED_MESSAGE
    assert "ac_wrong" not in repr(caught.value)


def test_404_surfaces_the_http_reason(sim: StitchSimulator) -> None:
    sim.add_source(51)
    sim.inject("trigger", Fault.status(404))
    with pytest.raises(StitchNotFoundError) as caught:
        run(sim, 51)
    assert str(caught.value) == "Not Found"
    assert caught.value.status_code == 404


@pytest.mark.parametrize("bad", ["abc", 0, -5, True, 2**31, 1.5, None])
def test_bad_source_id_is_rejected_before_any_request(sim: StitchSimulator, bad: object) -> None:
    with pytest.raises(ParameterTypeError) as caught:
        run(sim, bad)  # type: ignore[arg-type]
    assert "source_id" in str(caught.value)
    assert sim.requests == []


@pytest.mark.parametrize(
    ("parameter", "value"),
    [("poll_interval_seconds", 0), ("max_wait_seconds", -1), ("on_already_running", "maybe")],
)
def test_bad_knobs_are_rejected_before_any_request(
    sim: StitchSimulator, parameter: str, value: object
) -> None:
    sim.add_source(52)
    with pytest.raises(ParameterTypeError) as caught:
        run(sim, 52, **{parameter: value})
    assert parameter in str(caught.value)
    assert sim.requests == []


def test_failed_verdict_ends_the_flow_run_failed_saying_why_first(sim: StitchSimulator) -> None:
    """The run's first screen shows the state message's first 70 characters or so: the
    verdict comes first, not the exception's class and the job's 60-character name."""
    sim.add_source(60, outcomes=[Outcome.failure("tap", -9, "Killed", duration_seconds=0.2)])
    state = stitch_sync_flow(
        source_id=60, credentials=make_credentials(sim), return_state=True, **FAST
    )
    assert state.is_failed()
    with pytest.raises(StitchReplicationFailed):
        state.result()

    async def stored_message() -> str:
        async with get_client() as client:
            run = await client.read_flow_run(state.state_details.flow_run_id)  # type: ignore[arg-type]
        assert run.state is not None and run.state.is_failed()
        return run.state.message or ""

    message = asyncio.run(stored_message())
    assert message[:70].startswith("Failed: tap exited with status -9: Killed"), message
    assert "\n" not in message and sim.jobs_started(60)[0] in message


def test_successful_run_is_completed_with_a_persisted_result(sim: StitchSimulator) -> None:
    sim.add_source(61, outcomes=[Outcome.success(duration_seconds=0.2)])
    state = stitch_sync_flow(
        source_id=61, credentials=make_credentials(sim), return_state=True, **FAST
    )
    assert state.is_completed()
    result = state.result()
    assert isinstance(result, StitchSyncResult)
    assert result.job_name == sim.jobs_started(61)[0]


async def test_each_run_leaves_an_artifact(sim: StitchSimulator) -> None:
    sim.add_source(62, outcomes=[Outcome.failure("target", 3, "bad column", duration_seconds=0.2)])
    state = await asyncio.to_thread(
        stitch_sync_flow,
        source_id=62,
        credentials=make_credentials(sim),
        return_state=True,
        **FAST,
    )
    async with get_client() as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["stitch-sync-62"]))
        )
    assert state.is_failed()
    assert artifacts, "no artifact with key stitch-sync-62"
    [artifact] = artifacts
    # Filed under the flow run, so its Artifacts tab shows it (not only the task run's page).
    assert artifact.flow_run_id == state.state_details.flow_run_id
    assert artifact.task_run_id is None
    markdown = str(artifact.data)
    assert "| target | 3 | bad column |" in markdown
    assert "| | |" not in markdown, "a table starts with an empty header row"
    assert "Exit status is" in markdown  # the log tail
    assert "pipeline/v2/sources/62/summary" in markdown


def test_subflow_of_a_sync_parent_can_catch_the_typed_failure(sim: StitchSimulator) -> None:
    sim.add_source(70, outcomes=[Outcome.failure("discovery", 1, "schema", duration_seconds=0.2)])
    sim.add_source(71, outcomes=[Outcome.success(duration_seconds=0.2)])
    credentials = make_credentials(sim)

    @flow
    def parent() -> tuple[list[PhaseFailure], str | None]:
        try:
            stitch_sync_flow(source_id=70, credentials=credentials, **FAST)
        except StitchReplicationFailed as exc:
            failed = exc.failed_phases
        ok = stitch_sync_flow(source_id=71, credentials=credentials, **FAST)
        return failed, ok.job_name

    failed, job_name = parent()
    assert failed == [PhaseFailure("discovery", 1, "schema")]
    assert job_name == sim.jobs_started(71)[0]


def test_subflow_of_a_sync_parent_with_return_state(sim: StitchSimulator) -> None:
    sim.add_source(72, outcomes=[Outcome.failure("tap", 1, "x", duration_seconds=0.2)])
    credentials = make_credentials(sim)

    @flow
    def parent() -> bool:
        state = stitch_sync_flow(source_id=72, credentials=credentials, return_state=True, **FAST)
        return state.is_failed()

    assert parent() is True


def test_subflow_of_an_async_parent(sim: StitchSimulator) -> None:
    sim.add_source(73, outcomes=[Outcome.success(duration_seconds=0.2)])
    sim.add_source(74, outcomes=[Outcome.success(duration_seconds=0.2)])
    sim.add_source(75, outcomes=[Outcome.failure("tap", 1, "x", duration_seconds=0.2)])
    credentials = make_credentials(sim)

    @flow
    async def parent() -> tuple[str | None, str | None, str]:
        plain = stitch_sync_flow(source_id=73, credentials=credentials, **FAST)
        threaded = await asyncio.to_thread(
            stitch_sync_flow, source_id=74, credentials=credentials, **FAST
        )
        try:
            await run_stitch_sync(75, credentials, poll_interval_seconds=0.1)
        except StitchReplicationFailed as exc:
            caught = type(exc).__name__
        return plain.job_name, threaded.job_name, caught

    plain, threaded, caught = asyncio.run(parent())
    assert plain == sim.jobs_started(73)[0]
    assert threaded == sim.jobs_started(74)[0]
    assert caught == "StitchReplicationFailed"


def test_credentials_by_block_name(sim: StitchSimulator) -> None:
    sim.add_source(80, outcomes=[Outcome.success(duration_seconds=0.2)])
    make_credentials(sim).save("sim-test-block", overwrite=True)
    result = run(sim, 80, credentials="sim-test-block")
    assert result.status == "succeeded"


def test_pause_stitch_schedule_pauses_the_source_first(sim: StitchSimulator) -> None:
    sim.add_source(81, outcomes=[Outcome.success(duration_seconds=0.2)])
    result = run(sim, 81, pause_stitch_schedule=True)
    assert result.status == "succeeded"
    [update] = sim.requests_for("update_source")
    [trigger] = sim.requests_for("trigger")
    assert update.method == "PUT"
    assert update.at < trigger.at, "the trigger was sent before the schedule was paused"
    assert sim.source(81)["paused_at"] is not None


def _start_a_later_job_when_ours_ends(sim: StitchSimulator, source_id: int) -> threading.Thread:
    """Play Stitch's scheduler: right after our job ends, run another one to completion."""

    def scheduler() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            jobs = sim.jobs(source_id)
            if jobs and all(job["completed_at"] for job in jobs):
                sim.start_job(source_id)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=scheduler, daemon=True)
    thread.start()
    return thread


def test_our_record_replaced_by_a_later_job_is_judged_from_its_log(sim: StitchSimulator) -> None:
    sim.add_source(
        90,
        outcomes=[
            Outcome.failure("tap", -9, "Killed", duration_seconds=1.2),  # ours
            Outcome.success(duration_seconds=0.2),  # the scheduler's, right after
        ],
    )
    scheduler = _start_a_later_job_when_ours_ends(sim, 90)
    with pytest.raises(StitchReplicationFailed) as caught:
        run(sim, 90, poll_interval_seconds=2.5)
    scheduler.join(5)
    [ours] = sim.jobs_started(90)
    assert caught.value.job_name == ours
    assert caught.value.failed_phases == [PhaseFailure("tap", -9, None)]
    listed = [j["job_name"] for j in sim.jobs(90) if j["triggered_via"] == "scheduler"]
    assert listed and listed[0] != ours


def test_replaced_record_of_a_successful_job_is_a_success(sim: StitchSimulator) -> None:
    sim.add_source(
        91,
        outcomes=[
            Outcome.success(duration_seconds=1.2),
            Outcome.failure("target", 1, "the later job failed", duration_seconds=0.2),
        ],
    )
    scheduler = _start_a_later_job_when_ours_ends(sim, 91)
    result = run(sim, 91, poll_interval_seconds=2.5)
    scheduler.join(5)
    assert result.status == "succeeded"
    assert result.job_name == sim.jobs_started(91)[0]


def test_retried_trigger_finds_the_job_its_first_attempt_started_and_finished(
    sim: StitchSimulator,
) -> None:
    """The lost attempt's job ended before the retry: report it, start nothing."""
    sim.add_source(31, outcomes=[Outcome.failure("tap", 1, "first", duration_seconds=0.1)])
    sim.inject("trigger", Fault.start_then_drop())
    credentials = make_credentials(sim, retry_backoff_seconds=1.0)  # the retry comes after 1 s
    with pytest.raises(StitchReplicationFailed) as caught:
        run(sim, 31, credentials=credentials)
    [job] = [job for job in sim.jobs(31) if job["triggered_via"] == "api"]
    assert caught.value.job_name == job["job_name"]
    assert len(sim.requests_for("trigger")) == 1  # no second trigger was needed


def test_by_default_a_sync_waits_as_long_as_stitch_lets_a_job_run(
    sim: StitchSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A first historical sync may run 23.5 h (Stitch's limit is 24 h): no default stops it."""
    sim.add_source(61, outcomes=[Outcome.success(duration_seconds=0.2)])
    with caplog.at_level(logging.INFO):
        result = stitch_sync_flow(
            source_id=61, credentials=make_credentials(sim), poll_interval_seconds=0.1
        )
    assert result.succeeded
    waiting = [r.getMessage() for r in caplog.records if "Waiting for Stitch job" in r.getMessage()]
    bounds = [float(re.search(r"at most ([\d.]+) h", line).group(1)) for line in waiting]  # type: ignore[union-attr]
    assert bounds and min(bounds) >= 23.5, waiting
    schema = stitch_sync_flow.parameters.model_dump()["properties"]["max_wait_seconds"]
    assert schema["default"] >= 23.5 * 3600


def test_a_failed_run_logs_its_failure_briefly_and_never_breaks_the_link(
    sim: StitchSimulator,
) -> None:
    """The log tail is in the error's `log_tail` and the artifact, not in its message: a
    failed run's logs do not repeat it (it appeared 7 times, 23.6 KB for one 5 s job), and
    no line break turns the Stitch link into `.../summary\\nLast`."""
    sim.add_source(63, outcomes=[Outcome.failure("tap", -9, "Killed", duration_seconds=0.2)])
    state = stitch_sync_flow(
        source_id=63, credentials=make_credentials(sim), return_state=True, **FAST
    )
    with pytest.raises(StitchReplicationFailed) as caught:
        state.result()
    tail = caught.value.log_tail
    assert tail is not None and len(tail.splitlines()) == 20  # kept, for whoever needs it
    assert tail.splitlines()[0] not in str(caught.value)

    async def stored_logs() -> list[str]:
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        flow_run_id = state.state_details.flow_run_id
        async with get_client() as client:
            for _ in range(40):  # logs reach the API in batches
                logs = await client.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
                )
                if any("Finished in state Failed" in log.message for log in logs):
                    return [log.message for log in logs if log.flow_run_id == flow_run_id]
                await asyncio.sleep(0.25)
        raise AssertionError("the run's logs never arrived")

    logs = asyncio.run(stored_logs())
    text = "\n".join(logs)
    assert sum(line in text for line in tail.splitlines()) == 0, "the log tail is in the logs"
    assert "summary\\nLast" not in text and "summary/nLast" not in text
    assert len(text) < 6000, f"{len(text)} characters of logs for one failed job"


def test_the_job_starts_at_once_while_the_accounts_shared_poll_changes_hands(
    sim: StitchSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process holds the account's leader slot and publishes nothing (a leader that
    is ending, a hand-over under way): the trigger does not wait for the shared poll's first
    listing (20-40 s, up to a lease): it reads its baseline from Stitch and starts the job
    within 2 s of the trigger task's start, and says so."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from prefect_stitch._poll.prefect_store import PrefectStore

    sim.add_source(64, outcomes=[Outcome.success(duration_seconds=0.5)])
    credentials = make_credentials(sim)

    async def hold_the_lead() -> str | None:
        return await PrefectStore(sim.client_id, credentials.base_url).take_lead(60.0)

    lease = asyncio.run(hold_the_lead())
    assert lease is not None, "the test could not take the account's leader slot"

    def let_go() -> None:  # once the job started, the account's poll may go on
        async def release() -> None:
            await PrefectStore(sim.client_id, credentials.base_url).release_lease(lease)

        asyncio.run(release())

    when(triggered(sim), let_go)
    with caplog.at_level(logging.INFO):
        state = stitch_sync_flow(
            source_id=64,
            credentials=credentials,
            loads="ignore",
            return_state=True,
            poll_interval_seconds=0.1,
            max_wait_seconds=120.0,
        )
    assert state.is_completed(), state.message

    async def trigger_task_start() -> float:
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
                )
            )
        [started] = [r for r in runs if r.name.startswith("start-stitch-sync-")]
        assert started.start_time is not None
        return started.start_time.timestamp()

    [trigger] = sim.requests_for("trigger")
    assert trigger.wall - asyncio.run(trigger_task_start()) < 2.0
    assert any(
        "reading source 64's last job from Stitch directly" in r.getMessage()
        for r in caplog.records
    )


async def test_a_baseline_missing_only_the_loads_reads_only_the_loads_listing(
    sim: StitchSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shared poll's latest listing is recent but was read without the loads (nobody
    waited for loads): a sync that follows its loads needs them in its baseline, and reads
    from Stitch only what is missing, one loads request, not the extractions again (each
    page counts against the account's 30 requests per 10 minutes)."""
    from prefect_stitch._engine.context import SyncContext
    from prefect_stitch._engine.trigger import _read_what_is_missing
    from prefect_stitch._poll.reading import read_listing
    from prefect_stitch.options import SyncOptions

    sim.add_source(65, outcomes=[Outcome.success(duration_seconds=0.2)])
    credentials = make_credentials(sim)
    async with credentials.get_client() as client:
        listing = await read_listing(client, sim.client_id, 1, extractions=True, loads=False)
        ctx = SyncContext(
            credentials,
            client,
            sim.client_id,
            65,
            SyncOptions(loads="wait"),
            None,
            logging.getLogger("t"),
        )
        ctx.poller.prime(listing)
        monkeypatch.setattr(ctx.poller, "tick_seconds", lambda: 30.0)  # someone waits
        before = len(sim.requests)
        baseline = await _read_what_is_missing(ctx)
    assert [request.endpoint for request in sim.requests[before:]] == ["loads"]
    assert baseline.records == listing.records and baseline.loads is not None


def test_a_long_wait_for_the_accounts_next_listing_is_logged(
    sim: StitchSimulator, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stitch's budget stretches the account's tick beyond the run's patience: the run says
    what it waits for (the job and the account), then waits on and gets its verdict."""
    from prefect_stitch._engine import watch

    monkeypatch.setattr(watch, "QUIET_WAIT_SECONDS", 0.5)
    sim.add_source(65, outcomes=[Outcome.success(duration_seconds=1.0)])
    credentials = make_credentials(sim, jobs_rate_limit=1, jobs_rate_period_seconds=2.0)
    with caplog.at_level(logging.INFO):
        state = stitch_sync_flow(
            source_id=65,
            credentials=credentials,
            loads="ignore",
            return_state=True,
            poll_interval_seconds=0.1,
            max_wait_seconds=120.0,
        )
    assert state.is_completed(), state.message
    waiting = [r.getMessage() for r in caplog.records if "still waiting for job" in r.getMessage()]
    assert len(waiting) == 1, waiting
    assert f"Stitch account {sim.client_id}" in waiting[0] and "source 65" in waiting[0]


def test_a_sync_prefect_cannot_suspend_waits_in_its_process_and_says_why(
    sim: StitchSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """suspend_while_waiting outside a deployment's run, and in a subflow: Prefect could not
    resume it, so it is not suspended; one WARNING says why and how to fix it."""

    sim.add_source(66, outcomes=[Outcome.success(duration_seconds=0.2)] * 2)
    credentials = make_credentials(sim)

    @flow
    def pipeline() -> StitchSyncResult:
        return stitch_sync_flow(
            source_id=66, credentials=credentials, suspend_while_waiting=True, **FAST
        )

    def warnings() -> list[str]:
        said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        return [line for line in said if "Not suspending the run" in line]

    with caplog.at_level(logging.WARNING):
        alone = stitch_sync_flow(
            source_id=66, credentials=credentials, suspend_while_waiting=True, **FAST
        )
    assert alone.succeeded
    [line] = warnings()
    assert "not a deployment's run" in line and "sync-source-suspending" in line
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert pipeline().succeeded
    [line] = warnings()
    assert "it is a subflow" in line and "run_deployment" in line
    assert len(sim.jobs_started(66)) == 2


def test_the_wait_says_how_often_the_account_is_listed_and_why(
    sim: StitchSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """poll_interval_seconds is a wish: the budget floors it (two pages a listing while
    loads are waited for, two thirds of the budget for listings). The log says the pace
    the account gets, not the wish (a user read "poll every 2 s" and waited a minute)."""
    sim.add_source(65, outcomes=[Outcome.success(duration_seconds=0.2)])
    with caplog.at_level(logging.INFO):
        stitch_sync_flow(source_id=65, credentials=make_credentials(sim), **FAST)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Waiting for")]
    assert said and "listed every 0.3 s: Stitch's budget of 30 requests per 3 s" in said[0], said
