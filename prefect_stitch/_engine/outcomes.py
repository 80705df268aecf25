"""What a sync leaves behind, in one table: outcome -> log line, event, artifact, typed error.

Every outcome of a sync (and every job the watcher sees end) is described once, as a
[`SyncReport`][prefect_stitch._engine.outcomes.SyncReport], and reported by one function,
[`report`][prefect_stitch._engine.outcomes.report]: the log line, the Prefect event, the
markdown artifact and, for a failure, the typed error all come from the same record and the
table below; the caller then raises the record's typed error
([`SyncReport.error`][prefect_stitch._engine.outcomes.SyncReport.error]). A new outcome is one
more row, never another hand-written branch.

| status | event | level | artifact | typed error |
|---|---|---|---|---|
| ``running`` (started, followed) | ``started`` | INFO | no | none |
| ``succeeded`` | ``succeeded`` | INFO | yes | none |
| ``failed`` | ``failed`` | ERROR | yes | `StitchReplicationFailed` |
| ``terminated`` | ``terminated`` | ERROR | yes | `StitchJobTerminated` |
| ``load_failed`` | ``failed`` (``stage: "load"``) | ERROR | yes | `StitchLoadFailed` |
| ``timed_out`` | ``timed_out`` | ERROR | yes | `StitchSyncTimeout`, `StitchLoadTimeout` |
| ``cancelled`` | ``cancelled`` | WARNING | no | none (the run is cancelled) |

(Event names are ``stitch.sync.<event>``; a timeout in the load stage raises
`StitchLoadTimeout`.)

Each event's resource is the source (``stitch.source.<id>``), or the stream for a load error
the watcher saw; the source and the account are related resources (roles ``stitch-source``
and ``stitch-account``). A job's verdict event has an id derived from the job and the
verdict, so the Prefect API keeps one whoever emits it (the sync that waited, or the
watcher). The payload carries the job, the exit statuses and descriptions, a one-line
``summary`` and the Stitch link; never the token. Reporting never fails a sync: a broken
events or artifacts API is logged and ignored.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect_stitch._verdict import PHASES
from prefect_stitch.errors import (
    PhaseFailure,
    StitchError,
    StitchJobTerminated,
    StitchLoadFailed,
    StitchLoadTimeout,
    StitchReplicationFailed,
    StitchSyncTimeout,
)
from prefect_stitch.models import (
    Extraction,
    StitchSyncResult,
    SyncAttempt,
    SyncOutcome,
    SyncStatus,
    stitch_source_url,
)

__all__ = ["SyncReport", "event_id", "outcome_of", "report", "write_many_summary"]

EVENT_PREFIX = "stitch.sync"
_NAMESPACE = uuid.UUID("8f5e3c4e-6f0b-4d8f-9b51-0c9a7a3e2d11")
_logger = logging.getLogger("prefect_stitch.outcomes")


@dataclass(frozen=True)
class _Rule:
    """One row of the outcome table."""

    event: str
    level: int
    artifact: bool
    verdict: bool
    """A job's verdict: its event gets an id derived from the job, kept once by the API."""
    error: type[BaseException] | None


_RULES: Mapping[SyncStatus, _Rule] = {
    SyncStatus.RUNNING: _Rule("started", logging.INFO, False, False, None),
    SyncStatus.SUCCEEDED: _Rule("succeeded", logging.INFO, True, True, None),
    SyncStatus.FAILED: _Rule("failed", logging.ERROR, True, True, StitchReplicationFailed),
    SyncStatus.TERMINATED: _Rule("terminated", logging.ERROR, True, True, StitchJobTerminated),
    SyncStatus.LOAD_FAILED: _Rule("failed", logging.ERROR, True, False, StitchLoadFailed),
    SyncStatus.TIMED_OUT: _Rule("timed_out", logging.ERROR, True, False, StitchSyncTimeout),
    SyncStatus.CANCELLED: _Rule("cancelled", logging.WARNING, False, False, asyncio.CancelledError),
    SyncStatus.ERROR: _Rule("failed", logging.ERROR, False, False, None),
}
"""The outcome table. ``error`` is the typed error an outcome raises (a cancellation
re-raises the run's own ``CancelledError``); read backwards, it says which outcome an error
stands for (`status_of`). ``error`` is the one outcome no sync reports: an error before
any verdict (the many-sources summary's word for it)."""


@dataclass(frozen=True)
class SyncReport:
    """One outcome, described once: what the log, the event, the artifact and the error say.

    Attributes:
        status: The outcome.
        source_id: The Stitch source (``None`` for a stream's load error the watcher saw:
            the loads listing names the source's schema, not its id).
        client_id: The Stitch account, if known.
        headline: One line saying what happened (the log line, the artifact's headline).
        details: The rest of the message of the typed error (the log tail, ...).
        job_name: The job's name, if known (the result's, when there is one).
        result: The job's result, when there is one.
        stage: ``"load"`` when the outcome is the loads' (a load failure or timeout).
        failed_phases: The failed phases of the job.
        log_tail: The last lines of the extraction log.
        attempts: Every job the sync ran or followed.
        failed_streams: Each failed stream's message (a load failure).
        pending_streams: The streams not loaded in time (a load timeout).
        stopped: Whether a stop of the job was requested (timeout, cancellation).
        max_wait_seconds: The limit that ran out (a timeout).
        stream: ``(source_name, stream_name)`` of a load error the watcher saw: the event's
            resource is then the stream.
        summary: What Stitch said, in one line (the event's ``summary``: the verdict, e.g.
            "tap exited with status -9: Killed"); the headline when not given.
        record: The job's extraction record, when there is no result (the watcher's).
        payload: More event payload fields (JSON-serialisable).

    Example:
        ```python
        from prefect_stitch._engine.outcomes import SyncReport
        from prefect_stitch.models import SyncStatus

        report = SyncReport(SyncStatus.TIMED_OUT, source_id=1, client_id=2, headline="Timed out")
        print(report.event)  # stitch.sync.timed_out
        ```
    """

    status: SyncStatus
    source_id: int | None
    client_id: int | None
    headline: str
    details: str = ""
    job_name: str | None = None
    result: StitchSyncResult | None = None
    stage: str | None = None
    failed_phases: tuple[PhaseFailure, ...] = ()
    log_tail: str | None = None
    attempts: Sequence[SyncAttempt] = ()
    failed_streams: Mapping[str, str | None] = field(default_factory=dict)
    pending_streams: Sequence[str] = ()
    stopped: bool = False
    max_wait_seconds: float = 0.0
    stream: tuple[str, str] | None = None
    summary: str | None = None
    record: Extraction | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)

    @property
    def rule(self) -> _Rule:
        """The row of the outcome table."""
        return _RULES[self.status]

    @property
    def event(self) -> str:
        """The event's name."""
        return f"{EVENT_PREFIX}.{self.rule.event}"

    @property
    def job(self) -> str | None:
        """The job's name: the result's (or the record's), else the one given."""
        if self.result is not None:
            return self.result.job_name
        return self.record.job_name if self.record is not None else self.job_name

    @property
    def message(self) -> str:
        """The typed error's message: the headline, then the details."""
        return f"{self.headline}\n{self.details}" if self.details else self.headline

    def error(self) -> StitchError | None:
        """The typed error this outcome raises: the table's, built from this record.

        Returns:
            The error (``None`` for a success; a cancellation re-raises the run's own).
        """
        error_type = self.rule.error
        if error_type is StitchSyncTimeout and self.stage == "load":
            error_type = StitchLoadTimeout
        if error_type is None or not issubclass(error_type, StitchError):
            return None
        fields: dict[str, Any] = {
            "source_id": self.source_id or 0,
            "job_name": self.job,
            "attempts": list(self.attempts),
        }
        if issubclass(error_type, StitchSyncTimeout):
            fields.update(max_wait_seconds=self.max_wait_seconds, stopped=self.stopped)
        if issubclass(error_type, StitchLoadTimeout):
            fields.update(pending_streams=self.pending_streams, result=self.result)
        if issubclass(error_type, StitchReplicationFailed):
            fields.update(failed_phases=self.failed_phases, result=self.result)
            fields.update(log_tail=self.log_tail)
        if issubclass(error_type, StitchLoadFailed):
            fields.update(failed_streams=dict(self.failed_streams))
        error: StitchError = error_type(self.message, **fields)
        return error


def event_id(client_id: int | None, *parts: object) -> UUID:
    """A deterministic event id: the Prefect API keeps one event per id.

    A job's verdict event gets the same id whoever emits it (the sync that waited for it,
    or the account's watcher), so the Prefect API records one event per job and verdict.

    Args:
        client_id: The Stitch account.
        *parts: What identifies the event (a job name and the verdict, ...).

    Returns:
        The id.

    Example:
        ```python
        from prefect_stitch._engine.outcomes import event_id

        assert event_id(1, "job", "failed") == event_id(1, "job", "failed")
        ```
    """
    return uuid.uuid5(_NAMESPACE, ":".join(str(part) for part in (client_id, *parts)))


async def report(
    outcome: SyncReport,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    *,
    write_artifact: bool = True,
) -> None:
    """Tell people and automations about an outcome: a log line, an event, an artifact.

    Args:
        outcome: The outcome.
        logger: Where the log line goes (the run logger in a run).
        write_artifact: Also attach the markdown summary, where the table says so.

    Example:
        ```python
        import logging
        from prefect_stitch._engine.outcomes import SyncReport, report
        from prefect_stitch.models import SyncStatus

        async def tell() -> None:
            await report(SyncReport(SyncStatus.RUNNING, 1, 2, "Started job j"),
                         logging.getLogger("demo"))
        ```
    """
    rule = outcome.rule
    logger.log(rule.level, outcome.headline)
    _emit(outcome)
    if write_artifact and rule.artifact:
        await _write_artifact(outcome)


def _payload(outcome: SyncReport) -> dict[str, Any]:
    """The event's payload: the job, its statuses, a one-line summary, the link."""
    body: dict[str, Any] = {"source_id": outcome.source_id, "client_id": outcome.client_id}
    if outcome.source_id is not None:
        body["job_name"] = outcome.job
        body["stitch_url"] = stitch_source_url(outcome.client_id, outcome.source_id)
    if outcome.result is not None:
        body.update(outcome.result.model_dump(mode="json"))
    elif outcome.record is not None:
        body.update(outcome.record.model_dump(mode="json", include=_RECORD_FIELDS))
    body.setdefault("status", outcome.status.value)
    body["summary"] = outcome.summary or outcome.headline
    if outcome.rule.verdict or outcome.failed_phases:
        body["failed_phases"] = [
            {"phase": f.phase, "exit_status": f.exit_status, "description": f.description}
            for f in outcome.failed_phases
        ]
    if outcome.stage is not None:
        body["stage"] = outcome.stage
    if outcome.status in (SyncStatus.TIMED_OUT, SyncStatus.CANCELLED):
        body.update(stopped=outcome.stopped, max_wait_seconds=outcome.max_wait_seconds)
    body.update(outcome.payload)
    return body


_RECORD_FIELDS = {
    "start_time",
    "completion_time",
    *(f"{phase}_{what}" for phase in PHASES for what in ("exit_status", "description")),
}
"""What a verdict event carries of an extraction record (as a result carries it)."""


def _resources(outcome: SyncReport) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The event's resource (the source, or a stream) and its related resources."""
    related: list[dict[str, str]] = []
    if outcome.client_id is not None:
        related.append(
            {
                "prefect.resource.id": f"stitch.account.{outcome.client_id}",
                "prefect.resource.role": "stitch-account",
            }
        )
    if outcome.stream is not None:
        schema, table = outcome.stream
        stream = {
            "prefect.resource.id": f"stitch.account.{outcome.client_id}.stream.{schema}.{table}",
            "prefect.resource.name": f"{schema}.{table}",
        }
        return stream, related
    source = {
        "prefect.resource.id": f"stitch.source.{outcome.source_id}",
        "prefect.resource.name": f"Stitch source {outcome.source_id}",
    }
    return source, [{**source, "prefect.resource.role": "stitch-source"}, *related]


def _emit(outcome: SyncReport) -> None:
    """Emit the outcome's event (never fails the sync)."""
    from prefect.events import emit_event

    resource, related = _resources(outcome)
    job = outcome.job
    ident = event_id(outcome.client_id, job, outcome.rule.event) if job else None
    if outcome.stream is not None:
        ident = event_id(outcome.client_id, *outcome.stream, outcome.payload.get("fingerprint"))
    try:
        emit_event(
            event=outcome.event,
            resource=resource,
            related=related,
            payload=_payload(outcome),
            id=ident if outcome.rule.verdict or outcome.stream is not None else None,
        )
    except Exception as exc:  # reporting must never fail the sync
        _logger.warning("Could not emit the %s event: %s", outcome.event, exc)


def _cell(value: object) -> str:
    """A value as a markdown table cell."""
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _result_rows(result: StitchSyncResult) -> list[str]:
    """The job's facts, then its phases, its loads and its earlier jobs, as markdown."""
    duration = result.duration_seconds
    lines = [
        f"| Status | {result.status.value} |",
        f"| Attached to a running job | {'yes' if result.attached else 'no'} |",
        f"| Started (Stitch) | {_cell(result.start_time)} |",
        f"| Completed (Stitch) | {_cell(result.completion_time)} |",
        f"| Duration | {'' if duration is None else f'{duration:.0f} s'} |",
        f"| Status polls | {result.polls} |",
    ]
    phases = ["", "| Phase | Exit status | Description |", "|---|---|---|"]
    for phase in ("discovery", "tap", "target"):
        status = getattr(result, f"{phase}_exit_status")
        description = getattr(result, f"{phase}_description")
        phases.append(f"| {phase} | {_cell(status)} | {_cell(description)} |")
    return lines + phases


def _loads_and_attempts(result: StitchSyncResult) -> list[str]:
    """The job's loads and its earlier jobs, as markdown tables."""
    lines: list[str] = []
    if result.loads:
        lines += ["", "Loads into the warehouse:", ""]
        lines += [
            "| Stream | Load | Last batch loaded (Stitch) | Warehouse message |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {_cell(load.stream_name)} | {load.state} "
            f"| {_cell(load.last_batch_loaded_at)} | {_cell(load.warehouse_message)} |"
            for load in result.loads
        ]
    if len(result.attempts) > 1:
        lines += ["", "Every job of this sync (replication retries):", ""]
        lines += ["| # | Job | Status | Stitch said |", "|---|---|---|---|"]
        lines += [
            f"| {number} | `{_cell(attempt.job_name or 'unknown')}` | {attempt.status.value} "
            f"| {_cell(attempt.summary)} |"
            for number, attempt in enumerate(result.attempts, start=1)
        ]
    return lines


def artifact_markdown(outcome: SyncReport) -> str:
    """Render the markdown summary of one sync.

    Args:
        outcome: The outcome.

    Returns:
        Markdown text.

    Example:
        ```python
        from prefect_stitch._engine.outcomes import SyncReport, artifact_markdown
        from prefect_stitch.models import SyncStatus

        print(artifact_markdown(SyncReport(SyncStatus.TIMED_OUT, 1, 2, "Timed out")))
        ```
    """
    source_id = outcome.source_id or 0
    url = stitch_source_url(outcome.client_id, source_id)
    lines = [f"# Stitch sync of source {source_id}", "", outcome.headline, ""]
    lines += ["| Sync | |", "|---|---|", f"| Job | `{_cell(outcome.job or 'unknown')}` |"]
    result = outcome.result
    tail: list[str] = []
    if result is not None:
        rows = _result_rows(result)
        split = rows.index("")
        lines += rows[:split]
        tail = rows[split:] + _loads_and_attempts(result)
    lines.append(f"| Stitch | [source {source_id} in Stitch]({url}) |")
    lines += tail
    if outcome.log_tail:
        lines += ["", "Last lines of the extraction log:", "", "```text", outcome.log_tail, "```"]
    return "\n".join(lines) + "\n"


async def _write_artifact(outcome: SyncReport) -> None:
    """File the markdown summary under the flow run (key ``stitch-sync-<source_id>``).

    Written from a task, an artifact is the task run's: the flow run's Artifacts tab, the
    first place a user looks, would not show it. So it is filed under the flow run the task
    belongs to (the task run's own page still lists the run's artifacts).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate
    from prefect.context import FlowRunContext, TaskRunContext

    flow_context, task_context = FlowRunContext.get(), TaskRunContext.get()
    flow_run_id = flow_context.flow_run.id if flow_context and flow_context.flow_run else None
    if flow_run_id is None and task_context is not None:
        flow_run_id = task_context.task_run.flow_run_id
    artifact = ArtifactCreate(
        key=f"stitch-sync-{outcome.source_id}",
        type="markdown",
        data=artifact_markdown(outcome),
        description=f"Stitch sync of source {outcome.source_id}: {_short(outcome.headline)}",
        flow_run_id=flow_run_id,
        task_run_id=None
        if flow_run_id is not None or task_context is None
        else task_context.task_run.id,
    )
    try:
        async with get_client() as client:
            await client.create_artifact(artifact)
    except Exception as exc:  # reporting must never fail the sync
        _logger.warning("Could not write the Stitch sync artifact: %s", exc)


def status_of(value: StitchSyncResult | BaseException) -> SyncStatus:
    """The status a result or an error stands for (the table read backwards).

    Args:
        value: A sync's result, or what it raised.

    Returns:
        The most specific status whose typed error ``value`` is (``error`` when none is).

    Example:
        ```python
        from prefect_stitch import StitchLoadFailed
        from prefect_stitch._engine.outcomes import status_of

        error = StitchLoadFailed("", failed_streams={}, source_id=1, job_name="j")
        print(status_of(error))  # load_failed
        ```
    """
    if isinstance(value, StitchSyncResult):
        return value.status
    matches = [
        (len(rule.error.__mro__), status)
        for status, rule in _RULES.items()
        if rule.error is not None and isinstance(value, rule.error)
    ]
    return max(matches)[1] if matches else SyncStatus.ERROR


def outcome_of(source_id: int, value: StitchSyncResult | BaseException) -> SyncOutcome:
    """One source's outcome in a many-sources run.

    Args:
        source_id: The source.
        value: Its result, or what its sync raised.

    Returns:
        The outcome (the error's first line as its message).

    Example:
        ```python
        from prefect_stitch._engine.outcomes import outcome_of

        print(outcome_of(1, TimeoutError("slow")).status)  # error
        ```
    """
    if isinstance(value, StitchSyncResult):
        return SyncOutcome(source_id=source_id, status=value.status, result=value)
    result = value.result if isinstance(value, StitchReplicationFailed) else None
    return SyncOutcome(
        source_id=source_id,
        status=status_of(value),
        result=result,
        error_type=type(value).__name__,
        message=(str(value) or type(value).__name__).splitlines()[0],
    )


async def write_many_summary(
    outcomes: Sequence[SyncOutcome], logger: logging.Logger | logging.LoggerAdapter[Any]
) -> None:
    """Attach the many-sources summary table to the run (key ``stitch-sync-many``).

    Args:
        outcomes: Every source's outcome.
        logger: Where a failure to write it is logged.

    Example:
        ```python
        import logging
        from prefect_stitch._engine.outcomes import write_many_summary

        async def summarise(outcomes) -> None:
            await write_many_summary(outcomes, logging.getLogger("demo"))
        ```
    """
    from prefect.artifacts import acreate_table_artifact

    rows = [
        {
            "source": outcome.source_id,
            "status": outcome.status.value,
            "job": outcome.result.job_name if outcome.result else "",
            "duration (s)": _duration(outcome),
            "error": outcome.message or "",
        }
        for outcome in outcomes
    ]
    succeeded = sum(outcome.ok for outcome in outcomes)
    try:
        await acreate_table_artifact(
            table=rows,
            key="stitch-sync-many",
            description=f"{succeeded} of {len(outcomes)} Stitch syncs succeeded",
        )
    except Exception as exc:  # reporting never fails the run
        logger.warning("Could not write the summary artifact: %s", exc)


def _duration(outcome: SyncOutcome) -> str:
    """A source's job duration, for the summary table."""
    seconds = outcome.result.duration_seconds if outcome.result else None
    return "" if seconds is None else f"{seconds:.0f}"


def _short(headline: str, limit: int = 200) -> str:
    """The headline without its link (the body has it), in whole words, ``limit`` at most."""
    text = headline.split(" See http", 1)[0].rstrip()
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."
