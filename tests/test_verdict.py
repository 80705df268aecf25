"""The vendor rules, table-tested: what a record means, and which record is ours."""

from datetime import UTC, datetime, timedelta

import pytest

from prefect_stitch.errors import PhaseFailure
from prefect_stitch.models import Extraction, StitchSyncHandle
from prefect_stitch.verdict import (
    ExtractionState,
    Order,
    find_earlier_attempt,
    judge_extraction,
    locate_job,
    order_of,
    started_before_baseline,
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


def at(seconds: float) -> datetime:
    """A moment of Stitch's clock, ``seconds`` after T0."""
    return T0 + timedelta(seconds=seconds)


def job(name: str, start: float | None, end: float | None, *, source_id: int = 1) -> Extraction:
    """A succeeded record of Stitch's clock: started and completed ``start``/``end`` s after T0."""
    return Extraction(
        job_name=name,
        source_id=source_id,
        start_time=None if start is None else at(start),
        completion_time=None if end is None else at(end),
        discovery_exit_status=0,
        tap_exit_status=0,
        target_exit_status=0,
    )


@pytest.mark.parametrize(
    ("moment", "reference", "order"),
    [
        (at(0), at(1), Order.BEFORE),
        (at(2), at(1), Order.AFTER),
        (at(1), at(1.9), Order.SAME_SECOND),  # whole seconds: cannot be ordered
        (at(1.9), at(1), Order.SAME_SECOND),
        (None, at(1), Order.UNKNOWN),
        (at(1), None, Order.UNKNOWN),
    ],
)
def test_order_of_stitch_timestamps(moment, reference, order):
    assert order_of(moment, reference) is order


# Known name: the trigger answered at T0+100 s (Stitch's clock), the baseline was "B".
STARTED = {"job_name": "J", "baseline_job_name": "B", "answer_stitch_time": at(100)}


@pytest.mark.parametrize(
    ("name", "records", "expected"),
    [
        ("nothing listed", [], "none"),
        ("the baseline (previous job) is never ours", [job("B", 0, 50)], "none"),
        (
            "the baseline with a newer clock is still not ours",
            [job("B", 200, 300)],
            "none",
        ),
        ("our record, by name", [job("B", 0, 50), job("J", 100, 160)], "record:J"),
        ("another source's record with our name", [job("J", 100, 160, source_id=2)], "none"),
        (
            "a job that ended before Stitch answered our trigger is ignored",
            [job("S", 60, 99)],
            "none",
        ),
        ("a job that completed after our trigger ran after ours", [job("L", 101, 130)], "later:L"),
        ("same second as the answer: ask the log", [job("X", 99, 100)], "check_log:X"),
        (
            "no Date from Stitch: ask the log",
            [job("X", 0, 10)],
            "check_log:X",
        ),
        ("our record wins over a later one", [job("L", 161, 170), job("J", 100, 160)], "record:J"),
    ],
)
def test_locate_a_job_whose_name_we_know(name, records, expected):
    fields = dict(STARTED)
    if name == "no Date from Stitch: ask the log":
        fields["answer_stitch_time"] = None
    located = locate_job(handle(**fields), records)
    assert describe(located) == expected, name


# Attached: Stitch said "already running" at T0+100 s; the baseline was "B".
ATTACHED = {"origin": "attached", "baseline_job_name": "B", "answer_stitch_time": at(100)}


@pytest.mark.parametrize(
    ("name", "records", "expected"),
    [
        ("only the baseline", [job("B", 0, 50)], "none"),
        ("the running job's record", [job("B", 0, 50), job("R", 90, 130)], "record:R"),
        (
            "the running job started long before we attached",
            [job("R", -3600, 130)],
            "record:R",
        ),
        (
            "a job that completed before Stitch said 'running' is not the one we follow",
            [job("S", 40, 95)],
            "none",
        ),
        (
            "a job that started after Stitch said 'running' replaced ours",
            [job("L", 140, 150)],
            "later:L",
        ),
        ("completed in the same second as the answer", [job("R", 50, 100)], "record:R"),
        ("another source", [job("R", 90, 130, source_id=2)], "none"),
    ],
)
def test_locate_the_job_we_attached_to(name, records, expected):
    assert describe(locate_job(handle(**ATTACHED), records)) == expected, name


def test_without_stitch_time_the_first_new_record_is_the_job_followed():
    followed = handle(origin="attached", baseline_job_name="B")
    assert describe(locate_job(followed, [job("B", 0, 1), job("R", 5, 6)])) == "record:R"


def test_a_running_record_of_the_followed_job_is_found_but_not_final():
    running = job("R", 90, None).model_copy(update={"target_exit_status": None})
    located = locate_job(handle(**ATTACHED), [running])
    assert located.record is running
    assert not judge_extraction(located.record).state.is_final


def test_duplicate_records_from_shifting_pages_match_once():
    ours = handle(job_name="J")
    rec = job("J", 0, 1)
    assert locate_job(ours, [rec, rec]).record is rec


@pytest.mark.parametrize(
    ("start", "baseline", "before"),
    [(10, 11, True), (11, 11, False), (12, 11, False), (None, 11, False), (10, None, False)],
)
def test_started_before_baseline(start, baseline, before):
    rec = job("R", start, 20)
    followed = handle(baseline_stitch_time=None if baseline is None else at(baseline))
    assert started_before_baseline(followed, rec) is before


def test_a_lost_answers_job_is_a_new_record_that_did_not_start_before_the_baseline():
    first = handle(baseline_job_name="B", baseline_stitch_time=at(100))
    assert find_earlier_attempt(first, [job("B", 0, 50)]) is None
    assert find_earlier_attempt(first, [job("S", 90, 101)]) is None  # started before we asked
    ours = job("J", 100, 104)
    assert find_earlier_attempt(first, [job("B", 0, 50), ours]) is ours
    assert find_earlier_attempt(first, [job("J", 100, 104, source_id=2)]) is None


def describe(located) -> str:
    for field_name in ("record", "later", "check_log"):
        value = getattr(located, field_name)
        if value is not None:
            return f"{field_name}:{value.job_name}"
    return "none"


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
