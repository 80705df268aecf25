"""The vendor rules, table-tested: what a record means, and which record is ours."""

from datetime import UTC, datetime, timedelta

import pytest

from prefect_stitch.errors import PhaseFailure
from prefect_stitch.models import Extraction, StitchSyncHandle
from prefect_stitch.verdict import (
    ExtractionState,
    find_job_record,
    judge_extraction,
    record_matches,
)

T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def record(
    d: int | None = None,
    t: int | None = None,
    g: int | None = None,
    *,
    completed: bool = True,
    descriptions: tuple[str | None, str | None, str | None] = (None, None, None),
    job_name: str = "116078.1.sync.a",
    source_id: int = 1,
    start: datetime = T0,
) -> Extraction:
    return Extraction(
        job_name=job_name,
        source_id=source_id,
        start_time=start,
        completion_time=start + timedelta(minutes=5) if completed else None,
        discovery_exit_status=d,
        discovery_description=descriptions[0],
        tap_exit_status=t,
        tap_description=descriptions[1],
        target_exit_status=g,
        target_description=descriptions[2],
    )


S, F, R, X = (
    ExtractionState.SUCCEEDED,
    ExtractionState.FAILED,
    ExtractionState.RUNNING,
    ExtractionState.TERMINATED,
)


@pytest.mark.parametrize(
    ("name", "rec", "state", "failed"),
    [
        ("success", record(0, 0, 0), S, []),
        ("not listed yet", None, R, []),
        (
            "discovery fails",
            record(1, 0, 0, descriptions=("bad creds", None, None)),
            F,
            [PhaseFailure("discovery", 1, "bad creds")],
        ),
        (
            "tap fails (docs example)",
            record(0, 1, 0, descriptions=(None, "HTTP-error-code: 401", None)),
            F,
            [PhaseFailure("tap", 1, "HTTP-error-code: 401")],
        ),
        (
            "target fails",
            record(0, 0, 1, descriptions=(None, None, "quota")),
            F,
            [PhaseFailure("target", 1, "quota")],
        ),
        ("negative code -9", record(0, -9, 0), F, [PhaseFailure("tap", -9, None)]),
        ("code 2", record(0, 0, 2), F, [PhaseFailure("target", 2, None)]),
        (
            "several phases fail: all named",
            record(0, 1, -9, descriptions=(None, "a", "b")),
            F,
            [PhaseFailure("tap", 1, "a"), PhaseFailure("target", -9, "b")],
        ),
        (
            "failure while later phases still null",
            record(0, 1, None, completed=False),
            F,
            [PhaseFailure("tap", 1, None)],
        ),
        (
            "terminated (docs example): all null, descriptions Terminated, completion set",
            record(descriptions=("Terminated", "Terminated", "Terminated")),
            X,
            [],
        ),
        ("all null with completion time, no description", record(), X, []),
        ("terminated during tap: discovery 0, rest null, completed", record(0, None, None), X, []),
        (
            "Terminated description without completion time",
            record(completed=False, descriptions=(None, "Terminated", None)),
            X,
            [],
        ),
        ("running: all null, no completion", record(completed=False), R, []),
        ("running: discovery done", record(0, None, None, completed=False), R, []),
    ],
)
def test_judge_extraction(name, rec, state, failed):
    verdict = judge_extraction(rec)
    assert verdict.state is state, name
    assert list(verdict.failed_phases) == failed
    assert verdict.state.is_final == (state is not R)


def test_failure_summary_names_phase_status_and_description():
    verdict = judge_extraction(record(0, -9, 1, descriptions=(None, "Killed", "quota")))
    assert verdict.summary == (
        "tap exited with status -9: Killed; target exited with status 1: quota"
    )


def handle(**kwargs) -> StitchSyncHandle:
    kwargs.setdefault("source_id", 1)
    kwargs.setdefault("requested_at", T0)
    return StitchSyncHandle(**kwargs)


def test_previous_job_still_listed_is_never_ours():
    ours = handle(job_name="116078.1.sync.ours")
    previous = record(0, 0, 0, job_name="116078.1.sync.previous", start=T0 + timedelta(hours=1))
    assert not record_matches(ours, previous)
    assert find_job_record(ours, [previous]) is None


def test_match_by_job_name_and_source():
    ours = handle(job_name="j")
    assert record_matches(ours, record(job_name="j"))
    assert not record_matches(ours, record(job_name="j", source_id=2))


@pytest.mark.parametrize(
    ("completion_offset", "matches"),
    [
        (timedelta(seconds=-3600), False),  # previous job, completed an hour before
        (timedelta(seconds=-5), False),  # completed before we saw a job running
        (timedelta(seconds=0), True),
        (timedelta(seconds=30), True),
    ],
)
def test_attached_job_is_first_record_completed_after_we_saw_it_running(completion_offset, matches):
    seen = T0 + timedelta(hours=2, milliseconds=400)
    attached = handle(attached=True, seen_running_at=seen)
    start = seen - timedelta(minutes=30)  # it started long before we attached
    rec = Extraction(
        job_name="x",
        source_id=1,
        start_time=start,
        completion_time=seen.replace(microsecond=0) + completion_offset,
        discovery_exit_status=0,
        tap_exit_status=0,
        target_exit_status=0,
    )
    assert record_matches(attached, rec) is matches


def test_retried_trigger_job_is_first_record_started_after_first_attempt():
    retried = handle(requested_at=T0, seen_running_at=T0 + timedelta(seconds=5))
    assert record_matches(retried, record(job_name="ours", start=T0 + timedelta(seconds=1)))
    assert not record_matches(retried, record(job_name="prev", start=T0 - timedelta(hours=1)))


def test_duplicate_records_from_shifting_pages_match_once():
    ours = handle(job_name="j")
    rec = record(0, 0, 0, job_name="j")
    assert find_job_record(ours, [rec, rec]) is rec


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        (
            "2017-11-17 16:44:41,159Z main - INFO Exit status is: Discovery succeeded. "
            "Tap failed with code -9. Target succeeded.",
            {"discovery": 0, "tap": -9, "target": 0},
        ),
        (
            "x\nmain - INFO Exit status is: Discovery failed with code 1.\n",
            {"discovery": 1},
        ),
        (
            "Exit status is: Discovery succeeded. Tap succeeded. Target succeeded.",
            {"discovery": 0, "tap": 0, "target": 0},
        ),
        ("tap - INFO replicated 14 records", None),
        ("Exit status is: something unexpected", None),
    ],
)
def test_exit_statuses_from_log(log, expected):
    from prefect_stitch.verdict import exit_statuses_from_log

    assert exit_statuses_from_log(log) == expected


def test_a_later_job_proves_ours_was_superseded_but_the_previous_one_does_not():
    from prefect_stitch.verdict import find_superseding_record

    ours = handle(job_name="ours", requested_at=T0)
    previous = record(job_name="previous", start=T0 - timedelta(hours=1))
    later = record(job_name="later", start=T0 + timedelta(minutes=3))
    assert find_superseding_record(ours, [previous]) is None
    assert find_superseding_record(ours, [previous, later]) is later
    assert find_superseding_record(handle(attached=True, seen_running_at=T0), [later]) is None
