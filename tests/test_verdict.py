"""The vendor rules, table-tested: what a record means, and which record is ours."""

from datetime import UTC, datetime, timedelta

import pytest

from prefect_stitch._verdict import (
    LoadVerdict,
    Located,
    Order,
    StreamRef,
    find_earlier_attempt,
    judge_extraction,
    judge_loads,
    locate_job,
    order_of,
    started_before_baseline,
)
from prefect_stitch.errors import PhaseFailure
from prefect_stitch.models import Extraction, Load, StitchSyncHandle, SyncStatus

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
    SyncStatus.SUCCEEDED,
    SyncStatus.FAILED,
    SyncStatus.RUNNING,
    SyncStatus.TERMINATED,
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
        (
            "Terminated description in another case and padded, no completion time",
            record(completed=False, descriptions=(None, " TERMINATED\n", None)),
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


@pytest.mark.parametrize(
    ("rec", "words"),
    [
        (None, "running"),
        (record(completed=False), "running"),
        (record(0, 0, 0), "exited 0"),
        (record(descriptions=("Terminated",) * 3), "terminated"),
    ],
)
def test_summary_says_what_the_record_means(rec, words):
    summary = judge_extraction(rec).summary
    assert words in summary
    others = {"running", "exited 0", "terminated"} - {words}
    assert not any(other in summary for other in others), summary


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
        ("another source's later job is not ours", [job("L", 101, 130, source_id=2)], "none"),
        (
            "another source's job in the same second is not ours",
            [job("X", 99, 100, source_id=2)],
            "none",
        ),
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
        (
            "started in the same second as the answer: not provably a later job",
            [job("R", 100, 130)],
            "record:R",
        ),
        ("another source", [job("R", 90, 130, source_id=2)], "none"),
    ],
)
def test_locate_the_job_we_attached_to(name, records, expected):
    assert describe(locate_job(handle(**ATTACHED), records)) == expected, name


def test_without_stitch_time_the_first_new_record_is_the_job_followed():
    followed = handle(origin="attached", baseline_job_name="B")
    assert describe(locate_job(followed, [job("B", 0, 1), job("R", 5, 6)])) == "record:R"


@pytest.mark.parametrize(
    ("located", "found"),
    [
        (Located(), False),
        (Located(record=job("J", 0, 1)), True),
        (Located(later=job("L", 0, 1)), True),
        (Located(check_log=job("X", 0, 1)), True),
    ],
)
def test_a_listing_says_something_when_any_field_is_set(located, found):
    assert located.found is found


def test_a_record_that_cannot_be_ordered_is_found():
    located = locate_job(handle(**STARTED), [job("B", 0, 50), job("X", 99, 100)])
    assert located.found is True
    assert describe(located) == "check_log:X"


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


@pytest.mark.parametrize(
    ("name", "records"),
    [
        ("the baseline, started in the baseline listing's second", [job("B", 100, 100)]),
        ("the baseline, with no start time", [job("B", None, 50)]),
        ("the baseline, with a later clock", [job("B", 150, 160)]),
    ],
)
def test_the_baseline_record_is_never_a_lost_answers_job(name, records):
    first = handle(baseline_job_name="B", baseline_stitch_time=at(100))
    assert find_earlier_attempt(first, records) is None, name


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
        (
            "Exit status is: Discovery failed with code 2. Tap did not run. Target did not run.",
            {"discovery": 2},
        ),
        (
            "Exit status is: Discovery succeeded. Tap was terminated. Target did not run.",
            {"discovery": 0},
        ),
        (
            "Exit status is: Discovery succeeded. Tap was terminated. Target failed with code 3.",
            {"discovery": 0, "target": 3},
        ),
        (
            # the job's last line is its verdict
            "Exit status is: Discovery succeeded. Tap failed with code 1.\n"
            "tap - INFO retrying\n"
            "Exit status is: Discovery succeeded. Tap succeeded. Target succeeded.\n",
            {"discovery": 0, "tap": 0, "target": 0},
        ),
        # other wordings of a failure are read too
        ("Exit status is: Tap failed with exit code 137.", {"tap": 137}),
        ("Exit status is: Target failed with status -1.", {"target": -1}),
        ("tap - INFO replicated 14 records", None),
        ("Exit status is: something unexpected", None),
    ],
)
def test_exit_statuses_from_log(log, expected):
    from prefect_stitch._verdict import exit_statuses_from_log

    assert exit_statuses_from_log(log) == expected


# -- judge_loads: where a job's data stands, stream by stream --------------------------------
# Stitch's loads listing shows each stream's *latest* load attempt, by the source's ``name``
# (``source_name``), with no job link and no time on errors (``last_batch_loaded_at`` is null
# then). A load of this job is one at or after its completion (Stitch's clock, whole seconds);
# an error the baseline already showed is an earlier load's; a new error is this job's.

SOURCE = "recurly"
DONE = at(300)  # the job's completion_time
ERROR = {"notification_data": {"warehouse_message": "permission denied"}}
OTHER_ERROR = {"notification_data": {"warehouse_message": "disk full"}}


def load(
    stream: str,
    seconds: float | None = None,
    error: object = None,
    *,
    source: str = SOURCE,
    stream_id: int | None = None,
) -> Load:
    """A load record: landed ``seconds`` after T0 (Stitch's clock), or in an error state."""
    return Load(
        source_name=source,
        stream_name=stream,
        stream_id=stream_id,
        last_batch_loaded_at=None if seconds is None else at(seconds),
        error_state=error,
    )


USERS_1, USERS_2 = StreamRef("users", 1), StreamRef("users", 2)


def categories(verdict: LoadVerdict) -> dict[str, str]:
    """Each stream's category; a stream in two categories fails the test."""
    found: dict[str, str] = {}
    for category, streams in (
        ("loaded", verdict.loaded),
        ("failed", verdict.failed),
        ("old_error", verdict.old_errors),
        ("pending", verdict.pending),
    ):
        for ref in streams:
            stream = str(ref)
            assert stream not in found, f"{stream} is {found[stream]} and {category}"
            found[stream] = category
    return found


@pytest.mark.parametrize(
    ("name", "expected", "baseline", "current", "verdict"),
    [
        ("nothing listed yet", ["a"], [], [], {"a": "pending"}),
        ("landed after the job completed", ["a"], [], [load("a", 360)], {"a": "loaded"}),
        ("landed in the job's completion second", ["a"], [], [load("a", 300.9)], {"a": "loaded"}),
        (
            "landed before the job completed: an earlier load",
            ["a"],
            [],
            [load("a", 299)],
            {"a": "pending"},
        ),
        ("no error and no load time", ["a"], [], [load("a")], {"a": "pending"}),
        ("a new error", ["a"], [], [load("a", error=ERROR)], {"a": "failed"}),
        (
            "an error where the baseline had a success",
            ["a"],
            [load("a", 100)],
            [load("a", error=ERROR)],
            {"a": "failed"},
        ),
        (
            "the baseline's error, unchanged: an earlier load's",
            ["a"],
            [load("a", error=ERROR)],
            [load("a", error=ERROR)],
            {"a": "old_error"},
        ),
        (
            "a different error than the baseline's",
            ["a"],
            [load("a", error=OTHER_ERROR)],
            [load("a", error=ERROR)],
            {"a": "failed"},
        ),
        (
            "the baseline's error is fixed by this job's load",
            ["a"],
            [load("a", error=ERROR)],
            [load("a", 310)],
            {"a": "loaded"},
        ),
        (
            "another source's stream of the same name is not ours",
            ["a"],
            [],
            [load("a", 360, source="shopify")],
            {"a": "pending"},
        ),
        (
            "another source's error is not ours",
            ["a"],
            [],
            [load("a", error=ERROR, source="shopify"), load("a", 360)],
            {"a": "loaded"},
        ),
        (
            "another source's baseline error does not excuse ours",
            ["a"],
            [load("a", error=ERROR, source="shopify")],
            [load("a", error=ERROR)],
            {"a": "failed"},
        ),
        (
            "streams that are not expected never count",
            ["a"],
            [],
            [load("a", 360), load("deselected", error=ERROR), load("no_rows", 10)],
            {"a": "loaded"},
        ),
        (
            "every stream judged on its own",
            ["a", "b", "c", "d"],
            [load("c", error=ERROR)],
            [load("a", 301), load("b", error=ERROR), load("c", error=ERROR)],
            {"a": "loaded", "b": "failed", "c": "old_error", "d": "pending"},
        ),
        (
            "a stream expected twice is judged once",
            ["a", "a"],
            [],
            [load("a", 301)],
            {"a": "loaded"},
        ),
        ("no stream expected", [], [], [load("a", error=ERROR)], {}),
        (
            "one table name in two schemas: each stream judged by its id",
            [USERS_1, USERS_2],
            [],
            [load("users", 360, stream_id=1), load("users", error=ERROR, stream_id=2)],
            {"users (stream 1)": "loaded", "users (stream 2)": "failed"},
        ),
        (
            "the same, listed in the other order",
            [USERS_1, USERS_2],
            [],
            [load("users", error=ERROR, stream_id=2), load("users", 360, stream_id=1)],
            {"users (stream 1)": "loaded", "users (stream 2)": "failed"},
        ),
        (
            "a baseline error of the other stream of that name does not excuse ours",
            [USERS_1, USERS_2],
            [load("users", error=ERROR, stream_id=1)],
            [load("users", 360, stream_id=1), load("users", error=ERROR, stream_id=2)],
            {"users (stream 1)": "loaded", "users (stream 2)": "failed"},
        ),
        (
            "ids listed, none of them ours: not loaded yet",
            [StreamRef("users", 3)],
            [],
            [load("users", 360, stream_id=1)],
            {"users (stream 3)": "pending"},
        ),
        (
            "no ids listed: the name decides",
            [StreamRef("accounts", 7)],
            [],
            [load("accounts", 360)],
            {"accounts (stream 7)": "loaded"},
        ),
    ],
)
def test_judge_loads(name, expected, baseline, current, verdict):
    result = judge_loads(
        source_name=SOURCE,
        expected=expected,
        completed_at=DONE,
        baseline=baseline,
        current=current,
    )
    assert categories(result) == verdict, name
    listed = [r for r in current if r.source_name == SOURCE]
    for ref, record in {**result.loaded, **result.failed, **result.old_errors}.items():
        assert record in listed and record.stream_name == ref.name, name
        assert ref.stream_id is None or record.stream_id in (None, ref.stream_id), name
    assert result.done is (set(verdict.values()) <= {"loaded"}), name


def test_without_the_jobs_completion_time_no_load_can_be_its():
    result = judge_loads(
        source_name=SOURCE,
        expected=["a", "b"],
        completed_at=None,
        baseline=[],
        current=[load("a", 360), load("b", error=ERROR)],
    )
    assert categories(result) == {"a": "pending", "b": "failed"}


@pytest.mark.parametrize(
    ("loaded", "failed", "old_errors", "pending", "done"),
    [
        ({}, {}, {}, set(), True),
        ({"a": load("a", 301)}, {}, {}, set(), True),
        ({"a": load("a", 301)}, {"b": load("b", error=ERROR)}, {}, set(), False),
        ({"a": load("a", 301)}, {}, {"c": load("c", error=ERROR)}, set(), False),
        ({"a": load("a", 301)}, {}, {}, {"d"}, False),
        ({}, {"b": load("b", error=ERROR)}, {"c": load("c", error=ERROR)}, {"d"}, False),
    ],
)
def test_loads_are_done_only_when_every_expected_stream_landed(
    loaded, failed, old_errors, pending, done
):
    assert LoadVerdict(loaded, failed, old_errors, pending).done is done
