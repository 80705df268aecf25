"""LogScan, table-tested against the lines a Stitch extraction log holds.

The forms come from Stitch's docs and the public clients that read these logs:

* each line reads ``<date> <time>,<ms>Z <component> - <LEVEL> <message>``;
* the job's last line is ``main - INFO Exit status is: Discovery succeeded. Tap failed with
  code -9. Target succeeded.`` (a phase that failed says its code, which may be negative; one
  that was stopped ``was terminated``; one that never started ``did not run``);
* the tap logs ``replicated N records from "<stream>" endpoint`` per stream (dagster-stitch);
* the target logs ``com.stitchdata.target-stitch-avro.flush-pipeline -
  send-stream-record-count-impl <stream>`` per stream that received rows (Mage).

A stream received rows when a target line names it or a tap line counts rows for it; a log
with neither kind of line says nothing about streams.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from prefect_stitch._logscan import DEFAULT_MAX_LINE_CHARS, LogScan

STAMP = "2026-03-01 12:34:56,789Z"
TARGET = "com.stitchdata.target-stitch-avro.flush-pipeline - send-stream-record-count-impl"


def tap(count: int, stream: str, stamp: str = STAMP) -> str:
    return f'{stamp} tap - INFO replicated {count} records from "{stream}" endpoint'


def target(stream: str, stamp: str = STAMP) -> str:
    return f"{stamp} target - INFO {TARGET} {stream}"


def exit_line(summary: str, stamp: str = STAMP) -> str:
    return f"{stamp} main - INFO Exit status is: {summary}"


def scan_of(lines: list[str], **kwargs: int | None) -> LogScan:
    scan = LogScan(**kwargs)  # type: ignore[arg-type]
    for line in lines:
        scan.feed(line)
    return scan


# -- the tail: bounded, whatever the log's size ------------------------------------------


def test_a_huge_log_keeps_only_its_last_lines() -> None:
    lines = [f"2026-03-01 00:00:00,000Z tap - INFO State update {n}" for n in range(100_000)]
    scan = scan_of(lines, tail_lines=50)
    assert scan.lines == 100_000
    assert scan.tail.split("\n") == lines[-50:]


@pytest.mark.parametrize(
    ("tail_lines", "kept"),
    [(3, ["c", "d", "e"]), (1, ["e"]), (None, ["a", "b", "c", "d", "e"])],
)
def test_the_tail_is_the_last_lines_in_order(tail_lines: int | None, kept: list[str]) -> None:
    scan = scan_of(["a", "b", "c", "d", "e"], tail_lines=tail_lines)
    assert scan.tail == "\n".join(kept)
    assert scan.lines == 5


def test_no_tail_still_reads_the_verdict() -> None:
    scan = scan_of([tap(3, "accounts"), exit_line("Discovery succeeded.")], tail_lines=0)
    assert scan.tail == ""
    assert scan.ended is True
    assert scan.exit_statuses == {"discovery": 0}
    assert scan.streams_with_rows == {"accounts"}


def test_a_negative_tail_is_refused() -> None:
    with pytest.raises(ValueError, match="tail_lines"):
        LogScan(tail_lines=-1)


@pytest.mark.parametrize(
    ("cap", "line", "kept"),
    [
        (10, "0123456789", "0123456789"),  # exactly the cap: kept whole
        (10, "0123456789A", "0123456789 …"),  # one more: cut, and shown cut
        (10, "0123456789" * 50, "0123456789 …"),
        (0, "abc", "a …"),  # a cap below one character still keeps one
    ],
)
def test_lines_longer_than_the_cap_are_cut_from_their_start(cap: int, line: str, kept: str) -> None:
    assert scan_of([line], max_line_chars=cap).tail == kept


def test_the_default_cap_bounds_each_kept_line() -> None:
    scan = scan_of(["x" * (DEFAULT_MAX_LINE_CHARS * 50)] * 3, tail_lines=3)
    assert all(len(line) <= DEFAULT_MAX_LINE_CHARS + 2 for line in scan.tail.split("\n"))
    assert len(scan.tail) < 4 * DEFAULT_MAX_LINE_CHARS


def test_line_breaks_are_not_kept() -> None:
    scan = scan_of(["first\r\n", "second\n", exit_line("Tap succeeded.") + "\r\n"])
    assert scan.tail.split("\n") == ["first", "second", exit_line("Tap succeeded.")]
    assert "\r" not in scan.tail


# -- the exit statuses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "lines", "statuses"),
    [
        ("no exit line: not ended", [tap(1, "a")], None),
        (
            "the docs' line: a negative code",
            [exit_line("Discovery succeeded. Tap failed with code -9. Target succeeded.")],
            {"discovery": 0, "tap": -9, "target": 0},
        ),
        (
            "every phase succeeded",
            [exit_line("Discovery succeeded. Tap succeeded. Target succeeded.")],
            {"discovery": 0, "tap": 0, "target": 0},
        ),
        (
            "phases that did not run are absent",
            [exit_line("Discovery failed with code 2. Tap did not run. Target did not run.")],
            {"discovery": 2},
        ),
        (
            "phases that were terminated are absent",
            [exit_line("Discovery succeeded. Tap was terminated. Target did not run.")],
            {"discovery": 0},
        ),
        (
            "a positive code after a terminated phase",
            [exit_line("Discovery succeeded. Tap was terminated. Target failed with code 1.")],
            {"discovery": 0, "target": 1},
        ),
        (
            "no phase reported a status: ended, with no statuses",
            [exit_line("Discovery was terminated. Tap did not run. Target did not run.")],
            {},
        ),
        (
            "the last exit line is the job's",
            [
                exit_line("Discovery succeeded. Tap failed with code 1. Target succeeded."),
                tap(4, "accounts"),
                exit_line("Discovery succeeded. Tap succeeded. Target failed with code -15."),
            ],
            {"discovery": 0, "tap": 0, "target": -15},
        ),
    ],
)
def test_exit_statuses(name: str, lines: list[str], statuses: dict[str, int] | None) -> None:
    scan = scan_of(lines)
    assert scan.exit_statuses == statuses, name
    assert scan.ended is (statuses is not None), name


@pytest.mark.parametrize(
    ("line", "moment"),
    [
        (
            exit_line("Tap succeeded.", stamp="2026-03-01 12:34:56,789Z"),
            datetime(2026, 3, 1, 12, 34, 56, tzinfo=UTC),  # Stitch's clock: whole seconds
        ),
        (
            exit_line("Tap succeeded.", stamp="2017-11-17 16:44:41,159Z"),
            datetime(2017, 11, 17, 16, 44, 41, tzinfo=UTC),
        ),
        ("main - INFO Exit status is: Tap succeeded.", None),  # no timestamp
        (exit_line("Tap succeeded.", stamp="2026-02-30 25:61:00,000Z"), None),  # no such moment
    ],
)
def test_exit_time_is_stitchs_timestamp_of_the_exit_line(
    line: str, moment: datetime | None
) -> None:
    scan = scan_of([f"{STAMP} tap - INFO starting", line])
    assert scan.exit_time == moment
    assert scan.ended is True
    if moment is not None:
        assert scan.exit_time is not None and scan.exit_time.utcoffset() is not None


def test_exit_time_is_the_last_exit_lines() -> None:
    scan = scan_of(
        [
            exit_line("Tap failed with code 1.", stamp="2026-03-01 10:00:00,000Z"),
            exit_line("Tap succeeded.", stamp="2026-03-01 11:00:00,000Z"),
        ]
    )
    assert scan.exit_time == datetime(2026, 3, 1, 11, 0, 0, tzinfo=UTC)


# -- the streams that received rows ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "lines", "with_rows", "names_streams"),
    [
        ("a log that names no stream", [f"{STAMP} tap - INFO State update"], set(), False),
        ("a target line names a stream", [target("accounts")], {"accounts"}, True),
        ("a tap line with rows", [tap(120, "accounts")], {"accounts"}, True),
        ("one row is rows", [tap(1, "plans")], {"plans"}, True),
        (
            "the singular wording is read too",
            [f'{STAMP} tap - INFO replicated 1 record from "plans" endpoint'],
            {"plans"},
            True,
        ),
        ("zero rows: named, but no rows", [tap(0, "accounts")], set(), True),
        (
            "rows then zero rows for a stream: it received rows",
            [tap(5, "accounts"), tap(0, "accounts")],
            {"accounts"},
            True,
        ),
        (
            "target and tap lines together",
            [target("accounts"), tap(3, "invoices"), tap(0, "plans")],
            {"accounts", "invoices"},
            True,
        ),
        (
            "a target line for a stream the tap counted zero",
            [tap(0, "accounts"), target("accounts")],
            {"accounts"},
            True,
        ),
        ("stream names keep their case", [tap(2, "Account__c")], {"Account__c"}, True),
        ("a target line with no stream after the marker", [f"{STAMP} {TARGET}"], set(), False),
        (
            "the marker without the usual prefix",
            ["send-stream-record-count-impl accounts"],
            {"accounts"},
            True,
        ),
        (
            "a quoted stream name",
            [f'{STAMP} target - INFO {TARGET} "accounts",'],
            {"accounts"},
            True,
        ),
    ],
)
def test_streams_with_rows(
    name: str, lines: list[str], with_rows: set[str], names_streams: bool
) -> None:
    scan = scan_of([*lines, exit_line("Discovery succeeded. Tap succeeded. Target succeeded.")])
    assert scan.streams_with_rows == with_rows, name
    assert scan.names_streams is names_streams, name


def test_tap_counts_add_up_per_stream() -> None:
    scan = scan_of([tap(3, "accounts"), tap(4, "accounts"), tap(0, "plans"), target("invoices")])
    assert scan.row_counts == {"accounts": 7, "plans": 0}
    assert scan.target_streams == {"invoices"}
