"""What a sync leaves behind for people and automations: Prefect events and artifacts.

Events (for Prefect Automations, e.g. "notify on any Stitch failure for source 42"):

| event | when |
|---|---|
| ``stitch.sync.started`` | a job was started, or we attached to a running one |
| ``stitch.sync.succeeded`` | every phase exited 0 (and, with loads on, the data loaded) |
| ``stitch.sync.failed`` | a phase exited non-zero, or (payload ``stage: "load"``) a load failed |
| ``stitch.sync.terminated`` | the job ended with null exit statuses |
| ``stitch.sync.timed_out`` | past ``max_wait_seconds`` (``stage: "load"``: the load wait) |
| ``stitch.sync.cancelled`` | the flow run was cancelled while waiting |

Each event's resource is the source (``stitch.source.<id>``); the source and the
account are also listed as related resources (roles ``stitch-source`` and
``stitch-account``) next to the flow and task runs Prefect adds. The payload carries the
job name, the exit statuses and descriptions, and the Stitch link; never the token.

Reporting never fails a sync: a broken events or artifacts API is logged and ignored.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from prefect_stitch.models import StitchSyncResult, stitch_source_url

__all__ = [
    "OutcomeKind",
    "SyncReport",
    "emit_sync_event",
    "event_id",
    "report_outcome",
    "sync_artifact_markdown",
    "write_sync_artifact",
]

OutcomeKind = Literal[
    "started",
    "succeeded",
    "failed",
    "terminated",
    "timed_out",
    "cancelled",
    "load_failed",
    "load_timed_out",
]

_LEVELS: dict[str, int] = {"started": logging.INFO, "succeeded": logging.INFO}
_VERDICTS = frozenset({"succeeded", "failed", "terminated"})
_NAMESPACE = uuid.UUID("8f5e3c4e-6f0b-4d8f-9b51-0c9a7a3e2d11")


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
        from prefect_stitch._reporting import event_id

        assert event_id(1, "job", "failed") == event_id(1, "job", "failed")
        ```
    """
    return uuid.uuid5(_NAMESPACE, ":".join(str(part) for part in (client_id, *parts)))


@dataclass(frozen=True)
class SyncReport:
    """One outcome of a sync, described once: what the log, the event and the artifact say.

    Attributes:
        kind: The outcome (the event is ``stitch.sync.<kind>``).
        source_id: The Stitch source.
        client_id: The Stitch account, if known.
        headline: One line saying what happened (the log line, the artifact's headline).
        job_name: The job's name, if known.
        result: The job's result (statuses, times, attempts), when there is one.
        log_tail: The last lines of the extraction log.
        payload: More event payload fields (JSON-serialisable).

    Example:
        ```python
        from prefect_stitch._reporting import SyncReport

        report = SyncReport("timed_out", source_id=1, client_id=2, headline="Timed out")
        print(report.level)  # 40
        ```
    """

    kind: OutcomeKind
    source_id: int
    client_id: int | None
    headline: str
    job_name: str | None = None
    result: StitchSyncResult | None = None
    log_tail: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)

    @property
    def level(self) -> int:
        """The log level: INFO for good news, WARNING for a cancellation, ERROR otherwise."""
        if self.kind == "cancelled":
            return logging.WARNING
        return _LEVELS.get(self.kind, logging.ERROR)


async def report_outcome(
    report: SyncReport,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    *,
    write_artifact: bool = True,
) -> None:
    """Tell people and automations about an outcome: a log line, an event, an artifact.

    Every outcome of a sync goes through here, so a new outcome is one more
    [`SyncReport`][prefect_stitch._reporting.SyncReport], never another hand-written
    branch. Reporting never fails a sync.

    Args:
        report: The outcome.
        logger: Where the log line goes (the run logger in a run).
        write_artifact: Also attach the markdown summary to the run (not for ``started``).

    Example:
        ```python
        import logging
        from prefect_stitch._reporting import SyncReport, report_outcome

        async def tell() -> None:
            await report_outcome(
                SyncReport("succeeded", source_id=1, client_id=2, headline="Succeeded"),
                logging.getLogger("demo"),
            )
        ```
    """
    logger.log(report.level, report.headline)
    job_name = report.result.job_name if report.result is not None else report.job_name
    # One event per job and verdict, whoever emits it (a load failure has its own events).
    verdict = job_name and (
        report.kind == "succeeded" or (report.kind in _VERDICTS and "stage" not in report.payload)
    )
    emit_sync_event(
        report.kind,
        source_id=report.source_id,
        client_id=report.client_id,
        job_name=job_name,
        result=report.result,
        event_id=event_id(report.client_id, job_name, report.kind) if verdict else None,
        **dict(report.payload),
    )
    if write_artifact and report.kind != "started":
        await write_sync_artifact(
            source_id=report.source_id,
            client_id=report.client_id,
            headline=report.headline,
            result=report.result,
            job_name=job_name,
            log_tail=report.log_tail,
        )


_logger = logging.getLogger("prefect_stitch._reporting")

EVENT_PREFIX = "stitch.sync"


def emit_sync_event(
    kind: str,
    *,
    source_id: int,
    client_id: int | None,
    job_name: str | None,
    result: StitchSyncResult | None = None,
    event_id: UUID | None = None,
    **payload: Any,
) -> None:
    """Emit one ``stitch.sync.<kind>`` Prefect event.

    Args:
        kind: ``started``, ``succeeded``, ``failed``, ``terminated``, ``timed_out`` or
            ``cancelled``.
        source_id: The Stitch source.
        client_id: The Stitch account, if known.
        job_name: The job's name, if known.
        result: The job's result, whose statuses go into the payload.
        event_id: The event's id (a deterministic one makes the Prefect API keep one
            event however often it is emitted); random by default.
        **payload: More payload fields (JSON-serialisable).

    Example:
        ```python
        from prefect_stitch._reporting import emit_sync_event

        emit_sync_event("started", source_id=120643, client_id=116078, job_name="j")
        ```
    """
    from prefect.events import emit_event

    related: list[dict[str, str]] = [
        {
            "prefect.resource.id": f"stitch.source.{source_id}",
            "prefect.resource.role": "stitch-source",
            "prefect.resource.name": f"Stitch source {source_id}",
        }
    ]
    if client_id is not None:
        related.append(
            {
                "prefect.resource.id": f"stitch.account.{client_id}",
                "prefect.resource.role": "stitch-account",
            }
        )
    body: dict[str, Any] = {
        "source_id": source_id,
        "client_id": client_id,
        "job_name": job_name,
        "stitch_url": stitch_source_url(client_id, source_id),
    }
    if result is not None:
        body.update(result.model_dump(mode="json"))
    body.update(payload)
    try:
        emit_event(
            event=f"{EVENT_PREFIX}.{kind}",
            resource={
                "prefect.resource.id": f"stitch.source.{source_id}",
                "prefect.resource.name": f"Stitch source {source_id}",
            },
            related=related,
            payload=body,
            id=event_id,
        )
    except Exception as exc:  # reporting must never fail the sync
        _logger.warning("Could not emit the %s.%s event: %s", EVENT_PREFIX, kind, exc)


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def sync_artifact_markdown(
    *,
    source_id: int,
    client_id: int | None,
    headline: str,
    result: StitchSyncResult | None = None,
    job_name: str | None = None,
    log_tail: str | None = None,
) -> str:
    """Render the markdown summary of one sync.

    Args:
        source_id: The Stitch source.
        client_id: The Stitch account, if known.
        headline: One line saying what happened.
        result: The job's result (phases, statuses, times), when there is one.
        job_name: The job's name when there is no result.
        log_tail: The last lines of the extraction log.

    Returns:
        Markdown text.

    Example:
        ```python
        from prefect_stitch._reporting import sync_artifact_markdown

        print(sync_artifact_markdown(source_id=1, client_id=2, headline="Timed out"))
        ```
    """
    url = stitch_source_url(client_id, source_id)
    lines = [f"# Stitch sync of source {source_id}", "", headline, ""]
    lines += ["| | |", "|---|---|"]
    name = result.job_name if result is not None else job_name
    lines.append(f"| Job | `{_cell(name or 'unknown')}` |")
    if result is not None:
        lines.append(f"| Status | {result.status} |")
        lines.append(f"| Attached to a running job | {'yes' if result.attached else 'no'} |")
        lines.append(f"| Started (Stitch) | {_cell(result.start_time)} |")
        lines.append(f"| Completed (Stitch) | {_cell(result.completion_time)} |")
        duration = result.duration_seconds
        lines.append(f"| Duration | {'' if duration is None else f'{duration:.0f} s'} |")
        lines.append(f"| Status polls | {result.polls} |")
    lines.append(f"| Stitch | [source {source_id} in Stitch]({url}) |")
    if result is not None:
        lines += ["", "| Phase | Exit status | Description |", "|---|---|---|"]
        for phase in ("discovery", "tap", "target"):
            status = getattr(result, f"{phase}_exit_status")
            description = getattr(result, f"{phase}_description")
            lines.append(f"| {phase} | {_cell(status)} | {_cell(description)} |")
        if result.loads:
            lines += ["", "Loads into the warehouse:", ""]
            lines += [
                "| Stream | Load | Last batch loaded (Stitch) | Warehouse message |",
                "|---|---|---|---|",
            ]
            for load in result.loads:
                lines.append(
                    f"| {_cell(load.stream_name)} | {load.state} "
                    f"| {_cell(load.last_batch_loaded_at)} | {_cell(load.warehouse_message)} |"
                )
        if len(result.attempts) > 1:
            lines += ["", "Every job of this sync (replication retries):", ""]
            lines += ["| # | Job | Status | Stitch said |", "|---|---|---|---|"]
            for number, attempt in enumerate(result.attempts, start=1):
                lines.append(
                    f"| {number} | `{_cell(attempt.job_name or 'unknown')}` | {attempt.status} "
                    f"| {_cell(attempt.summary)} |"
                )
    if log_tail:
        lines += ["", "Last lines of the extraction log:", "", "```text", log_tail, "```"]
    return "\n".join(lines) + "\n"


async def write_sync_artifact(
    *,
    source_id: int,
    client_id: int | None,
    headline: str,
    result: StitchSyncResult | None = None,
    job_name: str | None = None,
    log_tail: str | None = None,
) -> None:
    """Attach the markdown summary of a sync to the current run (key ``stitch-sync-<id>``).

    Args:
        source_id: The Stitch source.
        client_id: The Stitch account, if known.
        headline: One line saying what happened.
        result: The job's result, when there is one.
        job_name: The job's name when there is no result.
        log_tail: The last lines of the extraction log.

    Example:
        ```python
        from prefect_stitch._reporting import write_sync_artifact

        async def report() -> None:
            await write_sync_artifact(source_id=1, client_id=2, headline="Succeeded")
        ```
    """
    from prefect.artifacts import acreate_markdown_artifact

    markdown = sync_artifact_markdown(
        source_id=source_id,
        client_id=client_id,
        headline=headline,
        result=result,
        job_name=job_name,
        log_tail=log_tail,
    )
    try:
        await acreate_markdown_artifact(
            markdown=markdown,
            key=f"stitch-sync-{source_id}",
            description=f"Stitch sync of source {source_id}: {headline[:200]}",
        )
    except Exception as exc:  # reporting must never fail the sync
        _logger.warning("Could not write the Stitch sync artifact: %s", exc)
