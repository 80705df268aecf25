"""Success means the data reached the warehouse: load-aware verdicts, end to end.

The real flows, over real HTTP, against the simulator (per-stream loads with delays and
errors, the streams and destinations endpoints, logs naming the streams with rows), with
the Prefect harness and the realistic compressed jobs budget.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from prefect_stitch import (
    StitchAPIError,
    StitchLoadFailed,
    StitchLoadTimeout,
    StitchReplicationFailed,
    StitchSyncManyFailed,
    StitchSyncResult,
    StitchSyncTimeout,
    stitch_sync_flow,
    stitch_sync_many_flow,
)
from prefect_stitch.simulator import Fault, Outcome, StitchSimulator, StreamLoad
from tests.conftest import make_credentials
from tests.helpers import stitch_events, until

FAST = {"poll_interval_seconds": 0.1, "max_wait_seconds": 30.0}


def run(sim: StitchSimulator, source_id: int, **options: Any) -> Any:
    """Run stitch_sync_flow; return its result or the exception it ended with."""
    state = stitch_sync_flow(
        source_id=source_id,
        credentials=make_credentials(sim),
        return_state=True,
        **{**FAST, **options},
    )
    try:
        return state.result()
    except BaseException as exc:
        return exc


def states(result: StitchSyncResult) -> dict[str, str]:
    return {load.stream_name: load.state for load in result.loads}


def within_budget(sim: StitchSimulator) -> None:
    assert sim.rate_limit_violations == 0
    assert all(request.status != 429 for request in sim.requests)


def test_a_slow_load_holds_the_flow_until_it_lands(sim: StitchSimulator) -> None:
    sim.add_source(
        1, outcomes=[Outcome.success(0.2, loads={"accounts": StreamLoad(delay_seconds=2.5)})]
    )
    started = time.monotonic()
    result = run(sim, 1)
    elapsed = time.monotonic() - started
    assert isinstance(result, StitchSyncResult), repr(result)
    assert states(result) == {"accounts": "loaded", "contacts": "loaded"}
    accounts = next(load for load in result.loads if load.stream_name == "accounts")
    assert accounts.last_batch_loaded_at is not None and result.completion_time is not None
    assert (accounts.last_batch_loaded_at - result.completion_time).total_seconds() >= 2
    assert elapsed >= 2.5, "the flow returned before the slow load landed"
    within_budget(sim)


def test_ignore_returns_when_the_extraction_ends(sim: StitchSimulator) -> None:
    sim.add_source(
        2,
        outcomes=[
            Outcome.success(
                0.2,
                loads={
                    "accounts": StreamLoad(delay_seconds=20),
                    "contacts": StreamLoad(error="permission denied"),
                },
            )
        ],
    )
    started = time.monotonic()
    result = run(sim, 2, loads="ignore")
    assert isinstance(result, StitchSyncResult), repr(result)
    assert result.loads == [] and result.status == "succeeded"
    assert time.monotonic() - started < 15
    assert sim.requests_for("loads") == []


def test_a_load_error_fails_the_sync_naming_the_stream_and_the_warehouse_message(
    sim: StitchSimulator,
) -> None:
    message = 'permission denied for schema "hubspot_3"'
    sim.add_source(
        3, outcomes=[Outcome.success(0.2, loads={"contacts": StreamLoad(error=message)})]
    )
    outcome = run(sim, 3)
    assert type(outcome) is StitchLoadFailed, repr(outcome)
    assert isinstance(outcome, StitchReplicationFailed)  # a failed sync, for every `except`
    assert outcome.failed_streams == {"contacts": message}
    assert "contacts" in str(outcome) and message in str(outcome)
    assert outcome.result is not None and outcome.result.status == "load_failed"
    assert states(outcome.result) == {"accounts": "loaded", "contacts": "failed"}
    events = asyncio.run(events_of(3, {"stitch.sync.failed"}, outcome.job_name))
    payload = events["stitch.sync.failed"].payload
    assert payload["stage"] == "load"
    assert {"stream_name": "contacts", "state": "failed"}.items() <= {
        **next(load for load in payload["loads"] if load["stream_name"] == "contacts")
    }.items()


def test_a_deselected_streams_old_error_and_a_stream_without_rows_never_block(
    sim: StitchSimulator,
) -> None:
    sim.add_source(
        4,
        streams=("accounts", "contacts", "deals"),
        selected=("accounts", "contacts"),
        outcomes=[Outcome.success(0.2, rows={"accounts": 12, "contacts": 0})],
    )
    sim.seed_load(4, "deals", error="an old error of a deselected stream")
    sim.seed_load(4, "contacts", error="an old error of a stream with no rows this time")
    result = run(sim, 4, max_load_wait_seconds=20)
    assert isinstance(result, StitchSyncResult), repr(result)
    assert states(result) == {"accounts": "loaded", "contacts": "no_rows"}


def test_an_earlier_loads_error_then_this_jobs_load_is_a_success(sim: StitchSimulator) -> None:
    sim.add_source(
        5, outcomes=[Outcome.success(0.2, loads={"accounts": StreamLoad(delay_seconds=1.5)})]
    )
    sim.seed_load(5, "accounts", error="yesterday's load failed")
    result = run(sim, 5)
    assert isinstance(result, StitchSyncResult), repr(result)
    assert states(result) == {"accounts": "loaded", "contacts": "loaded"}


def test_an_old_error_is_all_there_is_when_the_wait_runs_out(sim: StitchSimulator) -> None:
    sim.add_source(6, outcomes=[Outcome.success(0.2, loads={"accounts": StreamLoad(never=True)})])
    sim.seed_load(6, "accounts", error="still broken")
    outcome = run(sim, 6, max_load_wait_seconds=4.0)
    assert type(outcome) is StitchLoadFailed, repr(outcome)
    assert outcome.failed_streams == {"accounts": "still broken"}


def test_a_load_that_never_lands_times_out_naming_the_streams(sim: StitchSimulator) -> None:
    sim.add_source(7, outcomes=[Outcome.success(0.2, loads={"contacts": StreamLoad(never=True)})])
    started = time.monotonic()
    outcome = run(sim, 7, max_load_wait_seconds=4.0)
    assert type(outcome) is StitchLoadTimeout, repr(outcome)
    assert isinstance(outcome, StitchSyncTimeout)
    assert outcome.pending_streams == ["contacts"]
    assert "contacts" in str(outcome)
    assert outcome.result is not None and states(outcome.result)["accounts"] == "loaded"
    assert time.monotonic() - started < 15


def test_the_load_wait_is_a_bound_of_its_own(sim: StitchSimulator) -> None:
    """max_wait_seconds bounds the extraction; the load wait starts when it succeeded."""
    sim.add_source(
        8, outcomes=[Outcome.success(1.0, loads={"accounts": StreamLoad(delay_seconds=5.0)})]
    )
    result = run(sim, 8, max_wait_seconds=4.0, max_load_wait_seconds=15)
    assert isinstance(result, StitchSyncResult), repr(result)
    assert states(result)["accounts"] == "loaded"


def test_check_fails_on_an_error_now_and_does_not_wait(sim: StitchSimulator) -> None:
    sim.add_source(9, outcomes=[Outcome.success(0.2, loads={"contacts": StreamLoad(error="bad")})])
    sim.add_source(
        10, outcomes=[Outcome.success(0.2, loads={"accounts": StreamLoad(delay_seconds=30)})]
    )
    failed = run(sim, 9, loads="check")
    assert type(failed) is StitchLoadFailed, repr(failed)
    assert failed.failed_streams == {"contacts": "bad"}
    started = time.monotonic()
    result = run(sim, 10, loads="check")
    assert isinstance(result, StitchSyncResult), repr(result)
    assert states(result) == {"accounts": "unchecked", "contacts": "loaded"}
    assert time.monotonic() - started < 15


def test_a_log_that_names_no_stream_falls_back_to_every_selected_stream(
    sim: StitchSimulator,
) -> None:
    sim.add_source(11, outcomes=[Outcome.success(0.2, rows={"accounts": 0, "contacts": 0})])
    outcome = run(sim, 11, max_load_wait_seconds=4.0)
    assert type(outcome) is StitchLoadTimeout, repr(outcome)
    assert outcome.pending_streams == ["accounts", "contacts"]
    assert "did not say which streams received rows" in str(outcome)


def test_a_wait_that_ends_before_the_log_was_read_still_asks_it_which_streams_owe_a_load(
    sim: StitchSimulator,
) -> None:
    # Every loads listing takes 3 s, the wait 1.5 s: it runs out before any listing (or a
    # stall) made the log worth reading. A stream that received no rows never loads, so
    # the timeout must still name only the streams the log says received rows.
    sim.add_source(
        13,
        outcomes=[
            Outcome.success(
                0.2, rows={"accounts": 5, "contacts": 0}, loads={"accounts": StreamLoad(never=True)}
            )
        ],
    )
    sim.inject("loads", Fault.slow(3.0), times=20)
    state = stitch_sync_flow(
        source_id=13,
        credentials=make_credentials(sim, request_timeout_seconds=10.0),
        return_state=True,
        max_load_wait_seconds=1.5,
        **FAST,
    )
    with pytest.raises(StitchLoadTimeout) as raised:
        state.result()
    outcome = raised.value
    assert outcome.pending_streams == ["accounts"]
    assert "did not say" not in str(outcome)
    assert [r for r in sim.requests if r.endpoint == "logs"], "the log was never read"


def test_many_sources_fail_on_one_sources_load_error(sim: StitchSimulator) -> None:
    sim.add_source(12, outcomes=[Outcome.success(0.2)])
    sim.add_source(13, outcomes=[Outcome.success(0.2, loads={"accounts": StreamLoad(error="x")})])
    sim.add_source(
        14, outcomes=[Outcome.success(0.2, loads={"contacts": StreamLoad(delay_seconds=1)})]
    )
    with pytest.raises(StitchSyncManyFailed) as caught:
        stitch_sync_many_flow(source_ids=[12, 13, 14], credentials=make_credentials(sim), **FAST)
    results = caught.value.results
    assert results[12].ok and results[14].ok
    assert results[13].status == "load_failed"
    assert isinstance(caught.value.failures[13], StitchLoadFailed)
    assert "13 (StitchLoadFailed" in str(caught.value)
    within_budget(sim)


def test_loaded_tables_become_prefect_assets_keyed_like_dbt_sources(sim: StitchSimulator) -> None:
    sim.set_destination(type="snowflake", database="analytics")
    sim.add_source(15, name="recurly", outcomes=[Outcome.success(0.2)])
    result = run(sim, 15)
    assert isinstance(result, StitchSyncResult), repr(result)
    keys = {load.stream_name: load.asset_key for load in result.loads}
    assert keys == {
        "accounts": "snowflake://ANALYTICS/RECURLY/ACCOUNTS",
        "contacts": "snowflake://ANALYTICS/RECURLY/CONTACTS",
    }
    events = asyncio.run(asset_events(set(keys.values())))
    assert {event.resource.id for event in events} == set(keys.values())
    related = {(r.id, r.role) for event in events for r in event.related}
    assert ("stitch", "asset-materialized-by") in related


def test_no_destination_means_no_assets_and_still_a_success(sim: StitchSimulator) -> None:
    sim.inject("destinations", Fault.status(500), times=50)
    sim.add_source(16, outcomes=[Outcome.success(0.2)])
    result = run(sim, 16)
    assert isinstance(result, StitchSyncResult), repr(result)
    assert all(load.asset_key is None for load in result.loads)
    assert states(result) == {"accounts": "loaded", "contacts": "loaded"}


async def events_of(source_id: int, names: set[str], job_name: str | None) -> dict[str, Any]:
    """The job's ``stitch.sync.*`` events by name (other tests of this worker's Prefect
    API may have used the same source id with another simulator: their jobs are not
    this one)."""
    async with get_client() as client:

        async def found() -> dict[str, Any] | None:
            events = {
                event.event: event
                for event in await stitch_events(client, source_id)
                if event.payload.get("job_name") == job_name
            }
            return events if names <= set(events) else None

        return await until(found, 30, f"events {sorted(names)} of source {source_id}")


async def asset_events(keys: set[str]) -> list[Any]:
    async with get_client() as client:

        async def found() -> list[Any] | None:
            page = await client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=["prefect.asset.materialization.succeeded"]),
                    resource=EventResourceFilter(id=sorted(keys)),
                ),
                limit=50,
            )
            events = list(page.events)
            return events if {e.resource.id for e in events} >= keys else None

        return await until(found, 30, f"asset events for {sorted(keys)}")


def test_unreadable_streams_fall_back_to_the_log(sim: StitchSimulator) -> None:
    """The selected streams can't be read: the log says which streams must load."""
    sim.inject("streams", Fault.status(500), times=50)
    sim.add_source(
        17, outcomes=[Outcome.success(0.2, loads={"accounts": StreamLoad(delay_seconds=2.0)})]
    )
    started = time.monotonic()
    result = run(sim, 17)
    assert isinstance(result, StitchSyncResult), repr(result)
    assert states(result) == {"accounts": "loaded", "contacts": "loaded"}
    assert time.monotonic() - started >= 2.0, "returned before the slow load landed"


def test_unreadable_streams_and_a_silent_log_fail_instead_of_vouching(
    sim: StitchSimulator,
) -> None:
    sim.inject("streams", Fault.status(500), times=50)
    sim.add_source(18, outcomes=[Outcome.success(0.2, rows={"accounts": 0, "contacts": 0})])
    outcome = run(sim, 18)
    assert isinstance(outcome, StitchAPIError), repr(outcome)
    assert "streams" in outcome.path


# -- Stitch's own words on a failed load, and streams told apart by their ids -----------------


def test_a_failed_load_carries_stitchs_error_code_sql_state_and_exception_chain(
    sim: StitchSimulator,
) -> None:
    denied = StreamLoad(error='permission denied for schema "recurly"')
    sim.add_source(30, outcomes=[Outcome.success(0.2, loads={"contacts": denied})])
    error = run(sim, 30)
    assert isinstance(error, StitchLoadFailed), repr(error)
    first_line = str(error).splitlines()[0]
    assert 'permission denied for schema "recurly"' in first_line
    assert "warehouse error code 500151" in first_line and "SQL state 42501" in first_line
    assert error.failed_streams == {"contacts": 'permission denied for schema "recurly"'}
    [failed] = [load for load in error.result.loads if load.state == "failed"]
    assert failed.error is not None
    assert (failed.error.error, failed.error.warehouse_error_code) == (
        "LOADER_WAREHOUSE_ERROR",
        "500151",
    )
    assert (failed.error.warehouse_sql_state, failed.error.action) == ("42501", "get-connection")
    assert [str(link) for link in failed.error.exception_chain] == [
        'LoaderError: permission denied for schema "recurly"'
    ]


@pytest.mark.parametrize(
    ("error_state", "shown"),
    [
        pytest.param("disk full", "disk full", id="a plain string"),
        pytest.param({"message": "quota", "code": [1]}, "quota", id="another object"),
        pytest.param(
            {"notification_data": "gone", "exception_chain": [{"class": "E", "message": "boom"}]},
            "boom",
            id="a chain only",
        ),
        pytest.param([1, 2], "no message from Stitch", id="a list"),
    ],
)
def test_an_error_state_of_any_shape_still_fails_the_sync_with_what_can_be_read(
    sim: StitchSimulator, error_state: Any, shown: str
) -> None:
    odd = StreamLoad(error="x", error_state=error_state)
    sim.add_source(31, outcomes=[Outcome.success(0.2, loads={"contacts": odd})])
    error = run(sim, 31)
    assert isinstance(error, StitchLoadFailed), repr(error)
    assert f"stream contacts: {shown}" in str(error)


def test_two_streams_of_one_name_are_told_apart_by_their_ids(
    stitch_simulator_factory: Any,
) -> None:
    sim = stitch_simulator_factory(load_stream_ids=True)
    sim.add_source(
        32,
        streams=("public-users", "sales-users"),
        stream_names={"public-users": "users", "sales-users": "users"},
        outcomes=[Outcome.success(0.2, loads={"sales-users": StreamLoad(error="no space")})],
    )
    ids = {stream["tap_stream_id"]: stream["stream_id"] for stream in sim.streams(32)}
    error = run(sim, 32)
    assert isinstance(error, StitchLoadFailed), repr(error)
    failed_name = f"users (stream {ids['sales-users']})"
    assert error.failed_streams == {failed_name: "no space"}
    assert f"stream {failed_name}: no space" in str(error)
    assert {(load.stream_id, load.state) for load in error.result.loads} == {
        (ids["public-users"], "loaded"),
        (ids["sales-users"], "failed"),
    }


async def test_a_recent_listing_that_shows_the_loads_settles_them_without_waiting_for_another(
    sim: StitchSimulator,
) -> None:
    """A resumed run's loads: the listing on which the watcher saw them land is at hand
    (published, taken up as the run's process joined the shared poll). Judging it, the run
    reports at once; waiting for the next listing cost a tick (6 s here, 60 s at Stitch's
    pace) of a worker slot for every resumed run."""
    import logging
    from datetime import UTC, datetime

    from prefect_stitch._engine.context import SyncContext
    from prefect_stitch._engine.loads import settle_loads
    from prefect_stitch._poll.reading import read_listing
    from prefect_stitch.models import StitchSyncHandle
    from prefect_stitch.options import SyncOptions

    credentials = make_credentials(sim, jobs_rate_period_seconds=60.0)  # a tick of 6 s
    sim.add_source(71, outcomes=[Outcome.success(0.2)])
    async with credentials.get_client() as client:
        before = [load for load in await client.list_loads() if load.source_id == 71]
        job_name = await client.start_replication_job(71)

        async def ended() -> bool:
            return sim.running_job(71) is None

        await until(ended, 10, "the job's end")
        listing = await read_listing(client, sim.client_id, 1, extractions=True, loads=True)
        [record] = [r for r in listing.records if r.job_name == job_name]
        options = SyncOptions(poll_interval_seconds=0.1, max_load_wait_seconds=60)
        ctx = SyncContext(
            credentials, client, sim.client_id, 71, options, None, logging.getLogger("t")
        )
        assert ctx.poller.tick_seconds() is None or ctx.poller.tick_seconds() == 0
        ctx.poller.prime(listing)  # as a process that joins the shared poll does
        handle = StitchSyncHandle(
            source_id=71, job_name=job_name, requested_at=datetime.now(UTC), baseline_loads=before
        )
        started = time.monotonic()
        outcome = await settle_loads(ctx, handle, record, log=None)
        elapsed = time.monotonic() - started
    assert outcome.ok and {entry.state for entry in outcome.streams} == {"loaded"}, outcome
    assert elapsed < 3, f"{elapsed:.1f} s: the loads waited for another listing"


async def test_check_looks_at_the_listing_after_the_jobs_end_not_the_one_that_showed_it(
    sim: StitchSimulator,
) -> None:
    """``loads="check"`` looks once: at the next listing, which gives the loads a tick to
    land, not at the listing that showed the job's end (in which they had not)."""
    import logging
    from datetime import UTC, datetime

    from prefect_stitch._engine.context import SyncContext
    from prefect_stitch._engine.loads import settle_loads
    from prefect_stitch._poll.reading import read_listing
    from prefect_stitch.models import StitchSyncHandle
    from prefect_stitch.options import SyncOptions

    credentials = make_credentials(sim, jobs_rate_period_seconds=60.0)  # a tick of 6 s
    soon = StreamLoad(delay_seconds=1.0)
    sim.add_source(74, outcomes=[Outcome.success(0.2, loads={"accounts": soon, "contacts": soon})])
    async with credentials.get_client() as client:
        before = [load for load in await client.list_loads() if load.source_id == 74]
        job_name = await client.start_replication_job(74)

        async def ended() -> bool:
            return sim.running_job(74) is None

        await until(ended, 10, "the job's end")
        listing = await read_listing(client, sim.client_id, 1, extractions=True, loads=True)
        [record] = [r for r in listing.records if r.job_name == job_name]
        options = SyncOptions(poll_interval_seconds=0.1, loads="check")
        ctx = SyncContext(
            credentials, client, sim.client_id, 74, options, None, logging.getLogger("t")
        )
        ctx.poller.prime(listing)  # the listing that showed the job's end: no load yet
        handle = StitchSyncHandle(
            source_id=74, job_name=job_name, requested_at=datetime.now(UTC), baseline_loads=before
        )
        outcome = await settle_loads(ctx, handle, record, log=None)
    assert {entry.state for entry in outcome.streams} == {"loaded"}, outcome.streams
