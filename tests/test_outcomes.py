"""The outcome table: each outcome's event, log level, artifact and typed error, in one place.

Table-tested: what `report` logs and emits for each status, the typed error each outcome
raises, and the table read backwards (`status_of`, the many-sources summary's status). The
watcher's announcements go through the same table: their payload and event id are those of
a sync's verdict.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import prefect.events
import pytest

from prefect_stitch import (
    PhaseFailure,
    StitchError,
    StitchJobAlreadyRunning,
    StitchJobTerminated,
    StitchLoadFailed,
    StitchLoadTimeout,
    StitchReplicationFailed,
    StitchSyncTimeout,
    StitchVerdictUnavailable,
    SyncStatus,
)
from prefect_stitch._engine.outcomes import SyncReport, event_id, outcome_of, report, status_of
from prefect_stitch.models import Extraction

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every event `report` emits (not sent anywhere)."""
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda **event: seen.append(event))
    return seen


TABLE = [
    # status, stage, event, level, typed error
    (SyncStatus.RUNNING, None, "stitch.sync.started", logging.INFO, None),
    (SyncStatus.SUCCEEDED, None, "stitch.sync.succeeded", logging.INFO, None),
    (SyncStatus.FAILED, None, "stitch.sync.failed", logging.ERROR, StitchReplicationFailed),
    (SyncStatus.TERMINATED, None, "stitch.sync.terminated", logging.ERROR, StitchJobTerminated),
    (SyncStatus.LOAD_FAILED, "load", "stitch.sync.failed", logging.ERROR, StitchLoadFailed),
    (SyncStatus.TIMED_OUT, None, "stitch.sync.timed_out", logging.ERROR, StitchSyncTimeout),
    (SyncStatus.TIMED_OUT, "load", "stitch.sync.timed_out", logging.ERROR, StitchLoadTimeout),
    (SyncStatus.CANCELLED, None, "stitch.sync.cancelled", logging.WARNING, None),
]


@pytest.mark.parametrize(("status", "stage", "event", "level", "error"), TABLE)
def test_each_outcome_logs_emits_and_raises_as_the_table_says(
    events: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
    status: SyncStatus,
    stage: str | None,
    event: str,
    level: int,
    error: type[StitchError] | None,
) -> None:
    outcome = SyncReport(
        status, 7, 116078, f"{status.value} happened", job_name="116078.7.sync.a", stage=stage
    )
    with caplog.at_level(logging.DEBUG, logger="demo"):
        asyncio.run(report(outcome, logging.getLogger("demo"), write_artifact=False))
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(level, outcome.headline)]
    [emitted] = events
    assert emitted["event"] == event
    assert emitted["resource"]["prefect.resource.id"] == "stitch.source.7"
    assert emitted["payload"]["summary"] == outcome.headline
    raised = outcome.error()
    assert type(raised) is error if error else raised is None
    if raised is not None:
        assert str(raised) == outcome.headline and raised.source_id == 7  # type: ignore[attr-defined]


def test_a_verdict_event_has_the_jobs_id_whoever_emits_it(events: list[dict[str, Any]]) -> None:
    record = Extraction(
        job_name="116078.7.sync.b",
        source_id=7,
        start_time=T0,
        completion_time=T0,
        discovery_exit_status=0,
        tap_exit_status=-9,
        tap_description="Killed",
    )
    watched = SyncReport(
        SyncStatus.FAILED,
        7,
        116078,
        "Stitch job 116078.7.sync.b of source 7 failed: ...",
        record=record,
        failed_phases=(PhaseFailure("tap", -9, "Killed"),),
        summary="tap exited with status -9: Killed",
        payload={"watched": True},
    )
    asyncio.run(report(watched, logging.getLogger("demo"), write_artifact=False))
    [emitted] = events
    assert emitted["id"] == event_id(116078, "116078.7.sync.b", "failed")
    payload = emitted["payload"]
    assert payload["summary"] == "tap exited with status -9: Killed"
    assert payload["watched"] is True and payload["tap_exit_status"] == -9
    assert payload["failed_phases"] == [
        {"phase": "tap", "exit_status": -9, "description": "Killed"}
    ]
    assert payload["job_name"] == "116078.7.sync.b" and "attached" not in payload


def test_a_stream_load_error_the_watcher_saw_is_the_streams_event(
    events: list[dict[str, Any]],
) -> None:
    outcome = SyncReport(
        SyncStatus.LOAD_FAILED,
        None,
        116078,
        "Stitch could not load stream accounts of recurly: disk full",
        stage="load",
        stream=("recurly", "accounts"),
        payload={"fingerprint": "abc"},
    )
    asyncio.run(report(outcome, logging.getLogger("demo"), write_artifact=False))
    [emitted] = events
    assert (
        emitted["resource"]["prefect.resource.id"]
        == "stitch.account.116078.stream.recurly.accounts"
    )
    assert [r["prefect.resource.id"] for r in emitted["related"]] == ["stitch.account.116078"]
    assert emitted["id"] == event_id(116078, "recurly", "accounts", "abc")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (StitchLoadFailed("", failed_streams={}, source_id=1, job_name="j"), "load_failed"),
        (StitchJobTerminated("", source_id=1, job_name="j"), "terminated"),
        (StitchReplicationFailed("", source_id=1, job_name="j"), "failed"),
        (
            StitchSyncTimeout("", source_id=1, job_name=None, max_wait_seconds=1, stopped=False),
            "timed_out",
        ),
        (
            StitchLoadTimeout(
                "",
                pending_streams=[],
                source_id=1,
                job_name=None,
                max_wait_seconds=1,
                stopped=False,
            ),
            "timed_out",
        ),
        (asyncio.CancelledError(), "cancelled"),
        (StitchJobAlreadyRunning("busy", source_id=1), "error"),
        (StitchVerdictUnavailable("gone", source_id=1, job_name="j", superseded_by="k"), "error"),
        (TimeoutError("slow"), "error"),
    ],
)
def test_an_error_stands_for_the_most_specific_outcome(error: BaseException, status: str) -> None:
    assert status_of(error) == status
    outcome = outcome_of(1, error)
    assert (outcome.status, outcome.error_type) == (status, type(error).__name__)


def test_a_watcher_run_is_named_after_the_account_it_watches(
    stitch_simulator: Any,
) -> None:
    from prefect.client.orchestration import get_client

    from prefect_stitch import stitch_watch_flow
    from tests.conftest import make_credentials

    state = stitch_watch_flow(
        credentials=make_credentials(stitch_simulator),
        poll_interval_seconds=0.2,
        duration_seconds=0.5,
        return_state=True,
    )
    assert state.is_completed()

    async def name() -> str:
        async with get_client() as client:
            run = await client.read_flow_run(state.state_details.flow_run_id)  # type: ignore[arg-type]
        return run.name

    assert asyncio.run(name()) == "stitch-watch-account"


def test_the_artifacts_description_never_cuts_a_link_or_a_word() -> None:
    """The UI shows the description as text with links: a cut address is a broken link."""
    from prefect_stitch._engine.outcomes import _short

    url = "https://app.stitchdata.com/client/116078/pipeline/v2/sources/120644/summary"
    headline = (
        "Failed: tap exited with status -9: Simulated tap failure (exit status -9) (Stitch "
        f"replication job 116078.120644.sync.0123456789abcdef of source 120644). See {url}"
    )
    short = _short(headline)
    assert "http" not in short and short.endswith("of source 120644).")
    long = _short("word " * 60)
    assert len(long) <= 204 and long.endswith("word ...")
