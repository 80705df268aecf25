"""Stitch's rules, in one pure place: what an extraction record means, and which record is ours.

Nothing else in the package compares exit statuses or decides which record belongs to
the job being waited for. Both functions are pure and table-tested
(``tests/test_verdict.py``), with property tests over every combination of statuses.

The rules, from Stitch's documentation of the extraction object:

* a job has three phases (discovery, tap, target), each with an exit status:
  ``null`` while running, ``0`` on success, anything else (``1``, ``-9``, ...) on failure;
* **any** non-zero status means the job failed, whatever the other phases say;
* all three ``0`` means it succeeded;
* all statuses ``null`` *with* a ``completion_time`` (or a description ``"Terminated"``)
  means the job was terminated, **not** that it is still running;
* otherwise (or when our record is not listed yet) the job is still running.

Matching: ``GET /extractions`` lists the *last completed* job per source, so right
after a trigger the source's record is the **previous** job. We match by ``job_name``;
when we follow a job whose name Stitch never told us (we attached to a running job),
we match the source's first record that completed after we saw the job running.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from prefect_stitch.errors import PhaseFailure
from prefect_stitch.models import Extraction, StitchSyncHandle

__all__ = [
    "PHASES",
    "ExtractionState",
    "Verdict",
    "exit_statuses_from_log",
    "find_job_record",
    "find_superseding_record",
    "judge_extraction",
    "record_matches",
]

PHASES: tuple[str, ...] = ("discovery", "tap", "target")
"""The phases of a Stitch replication job, in the order they run."""

TERMINATED_DESCRIPTION = "terminated"
DEFAULT_CLOCK_SKEW = timedelta(seconds=1)
"""Slack between our clock and Stitch's when matching a job by its times."""


class ExtractionState(StrEnum):
    """What an extraction record says about its job.

    Example:
        ```python
        from prefect_stitch.verdict import ExtractionState

        print(ExtractionState.TERMINATED.is_final)  # True
        ```
    """

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TERMINATED = "terminated"

    @property
    def is_final(self) -> bool:
        """Whether the job has ended (succeeded, failed or terminated)."""
        return self is not ExtractionState.RUNNING


@dataclass(frozen=True)
class Verdict:
    """The judgement of one extraction record.

    Attributes:
        state: Running, succeeded, failed or terminated.
        failed_phases: Every phase with a non-zero exit status, in phase order (only
            for ``FAILED``).

    Example:
        ```python
        from prefect_stitch.models import Extraction
        from prefect_stitch.verdict import judge_extraction

        verdict = judge_extraction(Extraction(job_name="j", source_id=1,
                                              discovery_exit_status=0, tap_exit_status=-9))
        print(verdict.state, verdict.summary)  # failed  tap exited with status -9 ...
        ```
    """

    state: ExtractionState
    failed_phases: tuple[PhaseFailure, ...] = field(default=())

    @property
    def summary(self) -> str:
        """A one-line human description of the verdict."""
        if self.state is ExtractionState.FAILED:
            return "; ".join(str(failure) for failure in self.failed_phases)
        return {
            ExtractionState.RUNNING: "still running",
            ExtractionState.SUCCEEDED: "every phase exited 0",
            ExtractionState.TERMINATED: "terminated before any phase reported an exit status",
        }[self.state]


def _phase(record: Extraction, phase: str) -> tuple[int | None, str | None]:
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
        from prefect_stitch.verdict import ExtractionState, judge_extraction

        terminated = Extraction(job_name="j", source_id=1,
                                completion_time="2020-06-19T21:09:38Z",
                                tap_description="Terminated")
        assert judge_extraction(terminated).state is ExtractionState.TERMINATED
        assert judge_extraction(None).state is ExtractionState.RUNNING
        ```
    """
    if record is None:
        return Verdict(ExtractionState.RUNNING)
    phases = [(name, *_phase(record, name)) for name in PHASES]
    failed = tuple(
        PhaseFailure(name, status, description)
        for name, status, description in phases
        if status is not None and status != 0
    )
    if failed:
        return Verdict(ExtractionState.FAILED, failed)
    if all(status == 0 for _, status, _ in phases):
        return Verdict(ExtractionState.SUCCEEDED)
    says_terminated = any(
        (description or "").strip().lower() == TERMINATED_DESCRIPTION
        for _, _, description in phases
    )
    if record.completion_time is not None or says_terminated:
        return Verdict(ExtractionState.TERMINATED)
    return Verdict(ExtractionState.RUNNING)


def record_matches(
    handle: StitchSyncHandle, record: Extraction, *, clock_skew: timedelta = DEFAULT_CLOCK_SKEW
) -> bool:
    """Whether an extraction record is the job that ``handle`` waits for.

    * A known ``job_name`` must match exactly: the source's listed record right after a
      trigger is the *previous* job, never ours.
    * A job we attached to (its name unknown) was running when we saw it, so it is the
      source's first record that completed at or after that moment; the previous job
      completed before it.
    * A job we started but whose name we never received (the trigger's answer was lost
      and the retry met ``already_running``) started after our first trigger request.

    Stitch's timestamps have whole seconds and come from Stitch's clock, so the times
    are compared with ``clock_skew`` of slack.

    Args:
        handle: What the trigger learnt.
        record: An extraction record.
        clock_skew: Tolerance between our clock and Stitch's.

    Returns:
        True when the record belongs to the job.

    Example:
        ```python
        from datetime import UTC, datetime
        from prefect_stitch.models import Extraction, StitchSyncHandle
        from prefect_stitch.verdict import record_matches

        handle = StitchSyncHandle(source_id=1, job_name="ours", requested_at=datetime.now(UTC))
        previous = Extraction(job_name="previous", source_id=1)
        assert not record_matches(handle, previous)
        ```
    """
    if record.source_id != handle.source_id:
        return False
    if handle.job_name is not None:
        return record.job_name == handle.job_name
    if handle.seen_running_at is not None and handle.attached:
        if record.completion_time is None:
            return False
        return record.completion_time >= _floor_second(handle.seen_running_at) - clock_skew
    if record.start_time is None:
        return False
    return record.start_time >= _floor_second(handle.requested_at) - clock_skew


def find_job_record(
    handle: StitchSyncHandle,
    records: list[Extraction],
    *,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> Extraction | None:
    """Find the record of the job that ``handle`` waits for in one listing.

    Duplicates (a record listed on two pages because the list shifted while it was
    read) are harmless: the first match wins.

    Args:
        handle: What the trigger learnt.
        records: Every record of one listing (all pages).
        clock_skew: Tolerance between our clock and Stitch's.

    Returns:
        The job's record, or ``None`` while it is not listed.

    Example:
        ```python
        from datetime import UTC, datetime
        from prefect_stitch.models import Extraction, StitchSyncHandle
        from prefect_stitch.verdict import find_job_record

        handle = StitchSyncHandle(source_id=1, job_name="ours", requested_at=datetime.now(UTC))
        print(find_job_record(handle, [Extraction(job_name="ours", source_id=1)]))
        ```
    """
    for record in records:
        if record_matches(handle, record, clock_skew=clock_skew):
            return record
    return None


def _floor_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def find_superseding_record(
    handle: StitchSyncHandle,
    records: list[Extraction],
    *,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> Extraction | None:
    """A record of a *later* job of the source that replaced ours in the listing.

    Stitch lists one record per source. If our job completes and another job of the
    source (Stitch's own schedule, a colleague) starts and completes before the next
    poll, our record is gone. A record whose job started after our trigger and is not
    ours proves it: Stitch runs one job per source at a time, so ours had ended.

    Args:
        handle: What the trigger learnt (only a known job name can be superseded).
        records: Every record of one listing.
        clock_skew: Tolerance between our clock and Stitch's.

    Returns:
        The later job's record, or ``None``.

    Example:
        ```python
        from datetime import UTC, datetime, timedelta
        from prefect_stitch.models import Extraction, StitchSyncHandle
        from prefect_stitch.verdict import find_superseding_record

        now = datetime.now(UTC)
        handle = StitchSyncHandle(source_id=1, job_name="ours", requested_at=now)
        later = Extraction(job_name="later", source_id=1, start_time=now + timedelta(minutes=1))
        assert find_superseding_record(handle, [later]) is later
        ```
    """
    if handle.job_name is None:
        return None
    threshold = _floor_second(handle.requested_at) + clock_skew
    for record in records:
        if (
            record.source_id == handle.source_id
            and record.job_name != handle.job_name
            and record.start_time is not None
            and record.start_time >= threshold
        ):
            return record
    return None


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
        from prefect_stitch.verdict import exit_statuses_from_log

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
