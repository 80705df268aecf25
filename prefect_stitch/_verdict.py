"""Stitch's rules, in one pure place: what an extraction record means, and which record is ours.

Nothing else in the package compares exit statuses or decides which record belongs to
the job being waited for. Every function here is pure and table-tested
(``tests/test_verdict.py``).

The rules, from Stitch's documentation of the extraction object:

* a job has three phases (discovery, tap, target), each with an exit status:
  ``null`` while running (or when the phase never ran), ``0`` on success, anything
  else (``1``, ``-9``, ...) on failure;
* **any** non-zero status means the job failed, whatever the other phases say;
* all three ``0`` means it succeeded;
* no non-zero status, not all ``0``, and a ``completion_time`` means the job was
  terminated, **not** that it is still running (the descriptions may be null);
* otherwise (or when our record is not listed yet) the job is still running.

Which record is ours: ``GET /extractions`` lists the *last completed* job per source, so
right after a trigger the source's record is the **previous** job. Stitch's clock is not
ours, so identity is decided from Stitch's records and Stitch's clock only: the job's
name, the source's record before we acted (the *baseline*), and Stitch's ``Date``
header on its answer to our trigger, compared with its record times
([`locate_job`][prefect_stitch._verdict.locate_job]).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from prefect_stitch.errors import PhaseFailure
from prefect_stitch.models import Extraction, Load, StitchSyncHandle, SyncStatus

__all__ = [
    "PHASES",
    "LoadVerdict",
    "Located",
    "Order",
    "StreamRef",
    "Verdict",
    "exit_statuses_from_log",
    "find_earlier_attempt",
    "judge_extraction",
    "judge_loads",
    "locate_job",
    "order_of",
    "started_before_baseline",
]

PHASES: tuple[str, ...] = ("discovery", "tap", "target")
"""The phases of a Stitch replication job, in the order they run."""

TERMINATED_DESCRIPTION = "terminated"


@dataclass(frozen=True)
class Verdict:
    """The judgement of one extraction record.

    Attributes:
        state: ``running``, ``succeeded``, ``failed`` or ``terminated``.
        failed_phases: Every phase with a non-zero exit status, in phase order (only
            for ``FAILED``).

    Example:
        ```python
        from prefect_stitch.models import Extraction
        from prefect_stitch._verdict import judge_extraction

        verdict = judge_extraction(Extraction(job_name="j", source_id=1,
                                              discovery_exit_status=0, tap_exit_status=-9))
        print(verdict.state, verdict.summary)  # failed  tap exited with status -9 ...
        ```
    """

    state: SyncStatus
    failed_phases: tuple[PhaseFailure, ...] = field(default=())

    @property
    def summary(self) -> str:
        """A one-line human description of the verdict."""
        if self.state is SyncStatus.FAILED:
            return "; ".join(str(failure) for failure in self.failed_phases)
        return {
            SyncStatus.RUNNING: "still running",
            SyncStatus.SUCCEEDED: "every phase exited 0",
            SyncStatus.TERMINATED: "terminated before every phase reported an exit status",
        }[self.state]


def _phase(record: Extraction, phase: str) -> tuple[int | None, str | None]:
    """One phase's exit status and description."""
    status: int | None = getattr(record, f"{phase}_exit_status")
    description: str | None = getattr(record, f"{phase}_description")
    return status, description


def judge_extraction(record: Extraction | None) -> Verdict:
    """Decide what an extraction record means.

    Args:
        record: The job's extraction record, or ``None`` when it is not listed yet.

    Returns:
        The verdict: exactly one of running, succeeded, failed, terminated.

    Example:
        ```python
        from prefect_stitch.models import Extraction
        from prefect_stitch._verdict import judge_extraction
        from prefect_stitch.models import SyncStatus

        terminated = Extraction(job_name="j", source_id=1,
                                completion_time="2020-06-19T21:09:38Z",
                                tap_description="Terminated")
        assert judge_extraction(terminated).state is SyncStatus.TERMINATED
        assert judge_extraction(None).state is SyncStatus.RUNNING
        ```
    """
    if record is None:
        return Verdict(SyncStatus.RUNNING)
    phases = [(name, *_phase(record, name)) for name in PHASES]
    failed = tuple(
        PhaseFailure(name, status, description)
        for name, status, description in phases
        if status is not None and status != 0
    )
    if failed:
        return Verdict(SyncStatus.FAILED, failed)
    if all(status == 0 for _, status, _ in phases):
        return Verdict(SyncStatus.SUCCEEDED)
    says_terminated = any(
        (description or "").strip().lower() == TERMINATED_DESCRIPTION
        for _, _, description in phases
    )
    if record.completion_time is not None or says_terminated:
        return Verdict(SyncStatus.TERMINATED)
    return Verdict(SyncStatus.RUNNING)


class Order(StrEnum):
    """How a Stitch timestamp stands to another Stitch timestamp (whole seconds).

    Example:
        ```python
        from datetime import UTC, datetime
        from prefect_stitch._verdict import Order, order_of

        moment = datetime(2026, 1, 1, tzinfo=UTC)
        assert order_of(moment, moment) is Order.SAME_SECOND
        ```
    """

    BEFORE = "before"
    SAME_SECOND = "same_second"
    AFTER = "after"
    UNKNOWN = "unknown"


def order_of(moment: datetime | None, reference: datetime | None) -> Order:
    """Compare two of Stitch's own timestamps (never one of this machine's).

    Stitch's record times and its ``Date`` header both have whole seconds, so two
    moments in the same second cannot be ordered.

    Args:
        moment: A Stitch timestamp (a record's start or completion time).
        reference: Another Stitch timestamp (the ``Date`` of one of its answers).

    Returns:
        ``BEFORE``/``AFTER`` when the seconds differ, ``SAME_SECOND`` when they are
        equal, ``UNKNOWN`` when either is missing.

    Example:
        ```python
        from datetime import UTC, datetime, timedelta
        from prefect_stitch._verdict import Order, order_of

        now = datetime(2026, 1, 1, tzinfo=UTC)
        assert order_of(now + timedelta(seconds=1), now) is Order.AFTER
        assert order_of(None, now) is Order.UNKNOWN
        ```
    """
    if moment is None or reference is None:
        return Order.UNKNOWN
    a, b = _floor_second(moment), _floor_second(reference)
    if a < b:
        return Order.BEFORE
    if a > b:
        return Order.AFTER
    return Order.SAME_SECOND


@dataclass(frozen=True)
class Located:
    """Where the job a handle waits for stands in one listing of the account.

    Exactly one of the fields is set, or none (the job is not listed yet: keep waiting).

    Attributes:
        record: The job's own record (final or not: judge it).
        later: A record of a *later* job of the source: ours has ended, but its record
            was replaced before a poll could read it.
        check_log: A record of another job that cannot be ordered against ours from
            Stitch's timestamps alone (same second): ours may have ended; its log says.

    Example:
        ```python
        from prefect_stitch._verdict import Located

        print(Located().found)  # False
        ```
    """

    record: Extraction | None = None
    later: Extraction | None = None
    check_log: Extraction | None = None

    @property
    def found(self) -> bool:
        """Whether the listing says anything about the job."""
        return self.record is not None or self.later is not None or self.check_log is not None


def locate_job(handle: StitchSyncHandle, records: Sequence[Extraction]) -> Located:
    """Find what one listing says about the job that ``handle`` waits for.

    Stitch lists one record per source, its *last completed* job, so the rules compare
    Stitch's records with Stitch's records (the source's record before we acted, the
    job's name) and Stitch's timestamps with Stitch's own clock (the ``Date`` of its
    answer to our trigger), never with this machine's clock:

    * **Known name** (the trigger told it): the record with that name is ours. Another
      record of the source that is not the baseline (the record listed before we
      acted) belongs to another job: if it completed after Stitch answered our trigger,
      it ran *after* ours (one job per source at a time: ours had ended) -> ``later``;
      if it completed before, it is a job that ended before ours started -> ignored;
      in the same second (or with no ``Date``) -> ``check_log``.
    * **Unknown name** (we met ``already_running`` and follow the job that was
      running): the first record of the source other than the baseline is that job,
      unless it completed before Stitch's answer (an earlier job: ignored) or started
      after it (a later job replaced the one we followed -> ``later``).

    Args:
        handle: What the trigger learnt.
        records: Every record of one listing (all pages; duplicates are harmless).

    Returns:
        What the listing says.

    Example:
        ```python
        from datetime import UTC, datetime
        from prefect_stitch.models import Extraction, Load, StitchSyncHandle, SyncStatus
        from prefect_stitch._verdict import locate_job

        handle = StitchSyncHandle(source_id=1, job_name="ours", baseline_job_name="previous",
                                  requested_at=datetime.now(UTC))
        previous = Extraction(job_name="previous", source_id=1)
        assert not locate_job(handle, [previous]).found
        ```
    """
    answered = handle.answer_stitch_time
    for record in records:
        if record.source_id != handle.source_id or record.job_name == handle.baseline_job_name:
            continue
        if handle.job_name is not None:
            if record.job_name == handle.job_name:
                return Located(record=record)
            continue
        # The job we follow was running when Stitch answered: it completed after that.
        if order_of(record.completion_time, answered) is Order.BEFORE:
            continue  # a job that ended before the one we follow
        if order_of(record.start_time, answered) is Order.AFTER:
            return Located(later=record)  # started after Stitch saw ours running
        return Located(record=record)
    if handle.job_name is None:
        return Located()
    for record in records:
        if record.source_id != handle.source_id or record.job_name in (
            handle.job_name,
            handle.baseline_job_name,
        ):
            continue
        order = order_of(record.completion_time, answered)
        if order is Order.AFTER:
            return Located(later=record)
        if order is not Order.BEFORE:
            return Located(check_log=record)
    return Located()


def started_before_baseline(handle: StitchSyncHandle, record: Extraction) -> bool:
    """Whether a job provably started before we first asked Stitch for one.

    A retried trigger that meets ``already_running`` cannot tell at once whether the
    running job is the one its lost first attempt started. Once the job's record is
    listed, its ``start_time`` settles it: a job that started before the baseline
    listing (Stitch's ``Date`` of it, read before our first trigger) was not ours.

    Args:
        handle: The handle (its ``baseline_stitch_time`` is Stitch's clock before we acted).
        record: The job's record.

    Returns:
        True when the job started in an earlier second than the baseline listing.

    Example:
        ```python
        from datetime import UTC, datetime, timedelta
        from prefect_stitch.models import Extraction, Load, StitchSyncHandle, SyncStatus
        from prefect_stitch._verdict import started_before_baseline

        before = datetime(2026, 1, 1, tzinfo=UTC)
        handle = StitchSyncHandle(source_id=1, requested_at=before,
                                  baseline_stitch_time=before + timedelta(minutes=1))
        assert started_before_baseline(handle, Extraction(job_name="j", source_id=1,
                                                          start_time=before))
        ```
    """
    return order_of(record.start_time, handle.baseline_stitch_time) is Order.BEFORE


def find_earlier_attempt(
    handle: StitchSyncHandle, records: Sequence[Extraction]
) -> Extraction | None:
    """The completed job that a trigger attempt whose answer was lost may have started.

    Before a retried trigger sends its request again, it looks at the listing: a record
    of the source other than the baseline, of a job that did not start before the
    baseline listing, is a job that ran since we first asked, so the earlier attempt's
    job (it has already ended): report it instead of starting another.

    Args:
        handle: The first attempt's handle (baseline and Stitch's time of the baseline).
        records: Every record of one listing.

    Returns:
        That record, or ``None``.

    Example:
        ```python
        from datetime import UTC, datetime
        from prefect_stitch.models import Extraction, Load, StitchSyncHandle, SyncStatus
        from prefect_stitch._verdict import find_earlier_attempt

        handle = StitchSyncHandle(source_id=1, baseline_job_name="b",
                                  requested_at=datetime.now(UTC))
        print(find_earlier_attempt(handle, [Extraction(job_name="b", source_id=1)]))  # None
        ```
    """
    for record in records:
        if record.source_id != handle.source_id or record.job_name == handle.baseline_job_name:
            continue
        if not started_before_baseline(handle, record):
            return record
    return None


def _floor_second(moment: datetime) -> datetime:
    """The moment without its fraction of a second (Stitch's precision)."""
    return moment.replace(microsecond=0)


_EXIT_LINE = re.compile(r"Exit status is:(?P<rest>[^\n]*)")
_PHASE_STATUS = re.compile(
    r"\b(?P<phase>discovery|tap|target)\b[^.]*?"
    r"(?:(?P<ok>succeeded)|failed with (?:exit )?(?:code|status)\s*(?P<code>-?\d+))",
    re.IGNORECASE,
)


def exit_statuses_from_log(text: str) -> dict[str, int] | None:
    """Read the exit statuses from the ``Exit status is: ...`` line of an extraction log.

    Stitch ends each extraction log with a line such as ``main - INFO Exit status is:
    Discovery succeeded. Tap failed with code -9. Target succeeded.``. It is the only
    account of a job whose record was replaced in the listing by a later job.

    Args:
        text: The log (or its tail).

    Returns:
        The exit status of each phase the line names (0 for "succeeded"), or ``None``
        when the log has no such line.

    Example:
        ```python
        from prefect_stitch._verdict import exit_statuses_from_log

        line = "main - INFO Exit status is: Discovery succeeded. Tap failed with code -9."
        print(exit_statuses_from_log(line))  # {'discovery': 0, 'tap': -9}
        ```
    """
    lines = list(_EXIT_LINE.finditer(text))
    if not lines:
        return None
    statuses: dict[str, int] = {}
    for match in _PHASE_STATUS.finditer(lines[-1].group("rest")):
        phase = match.group("phase").lower()
        statuses[phase] = 0 if match.group("ok") else int(match.group("code"))
    return statuses or None


class StreamRef(NamedTuple):
    """A stream of a source: its name, and its id when Stitch gave one.

    A stream's name need not be unique within a source (one table name in two schemas of
    a database source); its ``stream_id`` is. A load record is a stream's when its name
    matches and, where both sides have an id, its id does too.

    Example:
        ```python
        from prefect_stitch._verdict import StreamRef

        print(StreamRef("users", 12), StreamRef("accounts"))  # users (stream 12) accounts
        ```
    """

    name: str
    stream_id: int | str | None = None

    def __str__(self) -> str:
        return self.name if self.stream_id is None else f"{self.name} (stream {self.stream_id})"

    def record_in(self, records: Sequence[Load]) -> Load | None:
        """This stream's record among one source's load records, if listed.

        Args:
            records: The source's load records.

        Returns:
            The record with this stream's id; without ids, the first with its name.
        """
        named = [record for record in records if record.stream_name == self.name]
        if self.stream_id is not None and any(r.stream_id is not None for r in named):
            wanted = str(self.stream_id)
            return next((r for r in named if str(r.stream_id) == wanted), None)
        return named[0] if named else None


@dataclass(frozen=True)
class LoadVerdict:
    """What the loads listing says of the streams a job's data must reach.

    Attributes:
        loaded: Streams whose load landed at or after the job's completion.
        failed: Streams in an error state that is new since the baseline.
        old_errors: Streams whose error is the one the baseline already showed (an
            earlier load's; this job's load may still land).
        pending: Streams with no load of this job yet.

    Example:
        ```python
        from prefect_stitch._verdict import LoadVerdict

        print(LoadVerdict(loaded={}, failed={}, old_errors={}, pending=set()).done)  # True
        ```
    """

    loaded: dict[StreamRef, Load]
    failed: dict[StreamRef, Load]
    old_errors: dict[StreamRef, Load]
    pending: set[StreamRef]

    @property
    def done(self) -> bool:
        """Whether every expected stream's load landed."""
        return not self.failed and not self.old_errors and not self.pending


def judge_loads(
    *,
    source_name: str,
    expected: Iterable[StreamRef | str],
    completed_at: datetime | None,
    baseline: Sequence[Load],
    current: Sequence[Load],
) -> LoadVerdict:
    """Decide where a job's data stands in the warehouse, stream by stream.

    Stitch's loads listing shows the *latest* load attempt of each stream (its
    ``source_name`` is the source's ``name``), without a job link and without a time on
    errors. So:

    * a stream is **loaded** when its record has no error and ``last_batch_loaded_at``
      is at or after the job's ``completion_time`` (Stitch's clock with Stitch's clock,
      whole seconds: the same second counts);
    * a stream **failed** when its record is in an error state that the baseline (the
      records listed before the job started) did not show: a new error;
    * an error the baseline already showed may be an earlier load's: it is an
      **old error** (this job's load may still land, and replace it);
    * anything else is **pending**.

    Only the expected streams count: deselected streams, streams that received no rows
    and other sources' streams never block or fail a job. A stream's record is found by its
    name and, where Stitch gives ids, its id (see `StreamRef`).

    Args:
        source_name: The source's ``name`` (the schema its tables load into).
        expected: The streams that received rows in the job (a name stands for a stream
            whose id is unknown).
        completed_at: The job's ``completion_time`` (Stitch's clock).
        baseline: Load records listed before the job started.
        current: Load records listed now.

    Returns:
        The verdict.

    Example:
        ```python
        from prefect_stitch.models import Load
        from prefect_stitch._verdict import judge_loads

        done = Load(source_name="s", stream_name="a", last_batch_loaded_at="2026-01-01T00:05:00Z")
        verdict = judge_loads(source_name="s", expected=["a"],
                              completed_at=done.last_batch_loaded_at, baseline=[], current=[done])
        print(verdict.done)  # True
        ```
    """
    before = [r for r in baseline if r.source_name == source_name]
    now = [r for r in current if r.source_name == source_name]
    loaded: dict[StreamRef, Load] = {}
    failed: dict[StreamRef, Load] = {}
    old_errors: dict[StreamRef, Load] = {}
    pending: set[StreamRef] = set()
    refs = {ref if isinstance(ref, StreamRef) else StreamRef(ref) for ref in expected}
    for stream in sorted(refs, key=str):
        record = stream.record_in(now)
        if record is None:
            pending.add(stream)
        elif record.failed:
            earlier = stream.record_in(before)
            if earlier is not None and earlier.failed and earlier.error_state == record.error_state:
                old_errors[stream] = record
            else:
                failed[stream] = record
        elif order_of(record.last_batch_loaded_at, completed_at) in (
            Order.AFTER,
            Order.SAME_SECOND,
        ):
            loaded[stream] = record
        else:
            pending.add(stream)
    return LoadVerdict(loaded, failed, old_errors, pending)
