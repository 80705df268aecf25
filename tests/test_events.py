"""Events for automations: stitch.sync.* with the source as a related resource."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from prefect_stitch import StitchReplicationFailed, stitch_sync_flow
from prefect_stitch.simulator import Outcome, StitchSimulator
from tests.conftest import make_credentials
from tests.helpers import stitch_events, until

FAST = {"poll_interval_seconds": 0.1, "max_wait_seconds": 30.0}


async def events_named(source_id: int, names: set[str]) -> dict[str, object]:
    async with get_client() as client:

        async def found():  # type: ignore[no-untyped-def]
            events = {event.event: event for event in await stitch_events(client, source_id)}
            return events if names <= set(events) else None

        return await until(found, 30, f"events {sorted(names)} for source {source_id}")


async def test_success_emits_started_and_succeeded(sim: StitchSimulator) -> None:
    sim.add_source(301, outcomes=[Outcome.success(duration_seconds=0.2)])
    result = await asyncio.to_thread(
        stitch_sync_flow, source_id=301, credentials=make_credentials(sim), **FAST
    )
    events = await events_named(301, {"stitch.sync.started", "stitch.sync.succeeded"})
    succeeded = events["stitch.sync.succeeded"]
    assert succeeded.resource.id == "stitch.source.301"  # type: ignore[attr-defined]
    related = {r.id: r.role for r in succeeded.related}  # type: ignore[attr-defined]
    assert related["stitch.source.301"] == "stitch-source"
    assert related[f"stitch.account.{sim.client_id}"] == "stitch-account"
    assert any(rid.startswith("prefect.flow-run.") for rid in related)
    payload = succeeded.payload  # type: ignore[attr-defined]
    assert payload["job_name"] == result.job_name
    assert payload["tap_exit_status"] == 0
    assert payload["status"] == "succeeded"
    started = events["stitch.sync.started"]
    assert started.payload["job_name"] == result.job_name  # type: ignore[attr-defined]
    assert sim.token not in str([e.model_dump() for e in events.values()])  # type: ignore[attr-defined]


async def test_failure_emits_failed_with_phases_and_descriptions(sim: StitchSimulator) -> None:
    sim.add_source(302, outcomes=[Outcome.failure("tap", -9, "Killed", duration_seconds=0.2)])
    with pytest.raises(StitchReplicationFailed):
        await asyncio.to_thread(
            stitch_sync_flow, source_id=302, credentials=make_credentials(sim), **FAST
        )
    events = await events_named(302, {"stitch.sync.failed"})
    payload = events["stitch.sync.failed"].payload  # type: ignore[attr-defined]
    assert payload["failed_phases"] == [
        {"phase": "tap", "exit_status": -9, "description": "Killed"}
    ]
    assert payload["tap_description"] == "Killed"
    assert payload["job_name"] == sim.jobs_started(302)[0]


async def test_terminated_and_timed_out_events(sim: StitchSimulator) -> None:
    sim.add_source(303, outcomes=[Outcome.terminated(duration_seconds=0.2)])
    sim.add_source(304, outcomes=[Outcome.success(duration_seconds=None)])
    credentials = make_credentials(sim)
    with pytest.raises(StitchReplicationFailed):
        await asyncio.to_thread(stitch_sync_flow, source_id=303, credentials=credentials, **FAST)
    with pytest.raises(Exception, match="did not finish"):
        await asyncio.to_thread(
            stitch_sync_flow,
            source_id=304,
            credentials=credentials,
            poll_interval_seconds=0.1,
            max_wait_seconds=4.0,  # time to start the job on a loaded machine, then time out
        )
    await events_named(303, {"stitch.sync.terminated"})
    timed_out = await events_named(304, {"stitch.sync.timed_out"})
    assert timed_out["stitch.sync.timed_out"].payload["stopped"] is True  # type: ignore[attr-defined]


def readme_templates() -> list[str]:
    """Every notification body the README's automation recipes give (Jinja templates)."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    bodies = re.findall(r"`(Stitch job \{\{.*?)`", " ".join(text.split()), flags=re.S)
    assert bodies, "the README gives no notification body"
    return sorted(set(bodies))


async def rendered(template: str, source_id: int, name: str) -> str:
    """The template rendered as Prefect's automation renders it, against the stored event."""
    from prefect.server.events.schemas.events import ReceivedEvent
    from prefect.server.utilities.user_templates import render_user_template

    events = await events_named(source_id, {name})
    stored = ReceivedEvent.model_validate(events[name].model_dump(mode="json"))
    return await render_user_template(template, {"event": stored})


@pytest.mark.parametrize(
    ("outcome", "event", "reason"),
    [
        (
            Outcome.failure("tap", -9, "Killed", duration_seconds=0.2),
            "stitch.sync.failed",
            "tap exited with status -9: Killed",
        ),
        (Outcome.terminated(duration_seconds=0.2), "stitch.sync.terminated", "terminated"),
    ],
    ids=["failed", "terminated"],
)
async def test_the_readme_recipes_render_the_reason_of_a_failed_sync(
    sim: StitchSimulator, outcome: Outcome, event: str, reason: str
) -> None:
    """The README's alert bodies, rendered against a sync flow's failure event: the reason is
    there (it was blank, `summary` being the watcher's only), and no raw list of dicts."""
    source_id = 320 if event.endswith("failed") else 321
    sim.add_source(source_id, outcomes=[outcome])
    with pytest.raises(StitchReplicationFailed):
        await asyncio.to_thread(
            stitch_sync_flow, source_id=source_id, credentials=make_credentials(sim), **FAST
        )
    for template in readme_templates():
        text = await rendered(template, source_id, event)
        assert reason in text, text
        assert f"of source {source_id}: " in text and not text.rstrip().endswith(":"), text
        assert "{'" not in text and "[{" not in text, text
