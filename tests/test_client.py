"""The async Stitch client over real HTTP, against the bundled simulator.

Every endpoint method, every error mapping of the client's contract, transient retries
(and what is never retried), pagination and the logs redirect. No mocks: the simulator
answers like the documented Connect API and records what it received. Two tests use an
``httpx.MockTransport`` where they need answers the simulator does not give (a Date per
page) or watch what the send path takes (the Prefect global limit).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import prefect.concurrency.asyncio
import pytest

from prefect_stitch import (
    StitchAPIError,
    StitchAuthError,
    StitchConfigurationError,
    StitchCredentials,
    StitchError,
    StitchInvalidSourceError,
    StitchJobAlreadyRunning,
    StitchNotFoundError,
    StitchTransportError,
)
from prefect_stitch.client import StitchClient
from prefect_stitch.models import Extraction, Load, Source
from prefect_stitch.simulator import (
    DELETED_SOURCE_MESSAGE,
    SERVER_ERROR_MESSAGE,
    UNAUTHORIZED_MESSAGE,
    Fault,
    Outcome,
    StitchSimulator,
)
from tests.conftest import make_credentials

JOB_NAME = re.compile(r"^116078\.(\d+)\.sync\.[0-9a-f-]{36}$")
HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n"
    "<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)
WRONG_TOKEN = "ac_wrong_0123456789abcdef"

Call = Callable[[StitchClient], Awaitable[Any]]
E = TypeVar("E", bound=BaseException)


def assert_no_token(error: BaseException, *tokens: str) -> None:
    """The access token(s) never show in what a user or the Prefect UI would see."""
    shown = f"{error!s}\n{error!r}"
    for token in tokens or ("sim-token",):
        assert token not in shown, f"token leaked in {shown!r}"


async def failure_of(credentials: StitchCredentials, call: Call, expected: type[E]) -> E:
    """What ``call`` raises on a new client: an ``expected``, which never shows the token."""
    async with credentials.get_client() as client:
        with pytest.raises(expected) as caught:
            await call(client)
    assert_no_token(caught.value, credentials.access_token.get_secret_value(), "sim-token")
    return caught.value


def _seed_one(sim: StitchSimulator) -> None:
    """Source 1, whose last job (its log too) is ``116078.1.sync.seeded``."""
    sim.add_source(1)
    sim.seed_completed(1, job_name="116078.1.sync.seeded")


def _call_logs(client: StitchClient) -> Awaitable[str]:
    return client.get_extraction_logs("116078.1.sync.seeded")


# -- replication jobs ------------------------------------------------------------------------


async def test_start_replication_job_returns_the_new_job_name(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.add_source(120643, outcomes=[Outcome.success(None)])
    async with credentials.get_client() as client:
        job_name = await client.start_replication_job(120643)

    assert JOB_NAME.match(job_name), job_name
    assert sim.jobs_started(120643) == [job_name]
    assert sim.running_job(120643)["job_name"] == job_name  # type: ignore[index]
    (trigger,) = sim.requests_for("trigger")
    assert trigger.method == "POST"
    assert trigger.path == "/v4/sources/120643/sync"
    assert trigger.status == 200
    assert trigger.authorization_valid
    assert trigger.headers["content-type"] == "application/json"


async def test_already_running_is_a_typed_error_on_http_200(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.add_source(7, outcomes=[Outcome.success(None)])
    running = sim.start_job(7)  # Stitch's scheduler started it
    error = await failure_of(
        credentials, lambda client: client.start_replication_job(7), StitchJobAlreadyRunning
    )

    assert error.source_id == 7
    assert error.stitch_message is not None
    assert "because one already exists" in error.stitch_message
    assert "already running" in str(error)
    assert error.seen_running_at is not None
    assert [r.status for r in sim.requests_for("trigger")] == [200]
    assert sim.jobs_started() == []
    assert sim.running_job(7)["job_name"] == running  # type: ignore[index]


async def test_trigger_200_with_another_error_body_raises_api_error(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.add_source(7)
    body = {"error": {"type": "generic", "message": "Could not create job for client-id: 1"}}
    sim.inject("trigger", Fault.status(200, body=body))
    error = await failure_of(
        credentials, lambda client: client.start_replication_job(7), StitchAPIError
    )

    assert not isinstance(error, StitchJobAlreadyRunning)
    assert error.error_type == "generic"
    assert error.stitch_message == "Could not create job for client-id: 1"
    assert len(sim.requests_for("trigger")) == 1


@pytest.mark.parametrize("deleted", [False, True], ids=["unknown", "deleted"])
async def test_trigger_invalid_source_raises_invalid_source_error(
    sim: StitchSimulator, credentials: StitchCredentials, deleted: bool
) -> None:
    if deleted:
        sim.add_source(55, deleted=True)
    error = await failure_of(
        credentials, lambda client: client.start_replication_job(55), StitchInvalidSourceError
    )

    assert error.status_code == 400
    assert error.error_type == "invalid_source"
    expected = DELETED_SOURCE_MESSAGE if deleted else "Unable to locate source(55) for client"
    assert error.stitch_message is not None
    assert expected in error.stitch_message
    assert expected in str(error)
    assert error.call == "POST /v4/sources/55/sync"
    assert len(sim.requests_for("trigger")) == 1


@pytest.mark.parametrize("bad_id", [0, -3, True, "120643", 2**31])
async def test_bad_source_id_is_refused_before_any_request(
    sim: StitchSimulator, credentials: StitchCredentials, bad_id: Any
) -> None:
    error = await failure_of(
        credentials, lambda client: client.start_replication_job(bad_id), StitchConfigurationError
    )
    assert error.parameter == "source_id"
    assert sim.requests == []


async def test_stop_replication_job_stops_the_running_job(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.add_source(3, outcomes=[Outcome.success(None)])
    job_name = sim.start_job(3)  # Stitch's scheduler started it
    async with credentials.get_client() as client:
        assert await client.stop_replication_job(3) is True
        records = await client.list_extractions()

    assert sim.running_job(3) is None
    (job,) = sim.jobs(3)
    assert job["job_name"] == job_name and job["stopped"] is True
    (stop,) = sim.requests_for("stop")
    assert (stop.method, stop.path, stop.status) == ("DELETE", "/v4/sources/3/sync", 200)
    (record,) = records
    assert record.job_name == job_name
    assert record.tap_exit_status is None and record.completion_time is not None
    assert record.tap_description is None  # a stopped job: terminated, descriptions null


@pytest.mark.parametrize(("idle_status", "expected"), [(200, True), (404, False)])
async def test_stop_when_nothing_runs(
    sim: StitchSimulator,
    credentials: StitchCredentials,
    idle_status: int,
    expected: bool,
) -> None:
    sim.stop_when_idle_status = idle_status
    sim.add_source(3)
    async with credentials.get_client() as client:
        assert await client.stop_replication_job(3) is expected

    assert [r.status for r in sim.requests_for("stop")] == [idle_status]  # never retried


async def test_stop_unknown_source_raises_invalid_source(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    error = await failure_of(
        credentials, lambda client: client.stop_replication_job(404404), StitchInvalidSourceError
    )
    assert error.call == "DELETE /v4/sources/404404/sync"
    assert len(sim.requests_for("stop")) == 1


# -- sources ---------------------------------------------------------------------------------


async def test_get_source(sim: StitchSimulator, credentials: StitchCredentials) -> None:
    sim.add_source(120643, type="platform.recurly", display_name="Recurly", paused=True)
    async with credentials.get_client() as client:
        source = await client.get_source(120643)

    assert isinstance(source, Source)
    assert source.id == 120643
    assert source.stitch_client_id == sim.client_id
    assert source.display_name == "Recurly"
    assert source.name == "recurly_120643"
    assert source.is_paused and not source.is_deleted
    assert source.paused_at is not None and source.paused_at.tzinfo is not None
    (request,) = sim.requests_for("source")
    assert (request.method, request.path, request.status) == ("GET", "/v4/sources/120643", 200)


async def test_list_sources(sim: StitchSimulator, credentials: StitchCredentials) -> None:
    sim.add_source(2)
    sim.add_source(1, deleted=True)
    sim.add_source(3, paused=True)
    async with credentials.get_client() as client:
        sources = await client.list_sources()

    assert [source.id for source in sources] == [1, 2, 3]
    assert all(isinstance(source, Source) for source in sources)
    by_id = {source.id: source for source in sources}
    assert by_id[1].is_deleted and by_id[3].is_paused and not by_id[2].is_paused
    assert len(sim.requests_for("list_sources")) == 1


async def test_pause_and_unpause_source(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.add_source(9)
    async with credentials.get_client() as client:
        paused = await client.pause_source(9)
        assert paused.is_paused
        assert sim.source(9)["paused_at"] is not None
        assert sim.source(9)["schedule"] is None

        resumed = await client.unpause_source(9)
        assert not resumed.is_paused
        assert sim.source(9)["paused_at"] is None

    updates = sim.requests_for("update_source")
    assert [(r.method, r.path, r.status) for r in updates] == [("PUT", "/v4/sources/9", 200)] * 2


async def test_pause_unknown_source_reads_the_sources_error_shape(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    error = await failure_of(credentials, lambda client: client.pause_source(999), StitchAPIError)

    assert error.status_code == 400
    assert error.error_type == "InvalidId"  # {"error": "<Code>", "data": {"message": ...}}
    assert error.stitch_message == "source not found (999)"
    assert len(sim.requests_for("update_source")) == 1


async def test_list_streams_and_destinations(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.add_source(4)
    sim.set_destination("snowflake", "warehouse")
    async with credentials.get_client() as client:
        streams = await client.list_streams(4)
        destinations = await client.list_destinations()

    assert [stream.stream_name for stream in streams] == [
        stream["stream_name"] for stream in sim.streams(4)
    ]
    assert streams and all(stream.is_selected for stream in streams)
    assert [(d.type, d.database) for d in destinations] == [("snowflake", "warehouse")]
    (request,) = sim.requests_for("streams")
    assert (request.path, request.status) == ("/v4/sources/4/streams", 200)


async def test_a_lone_destination_object_is_read_as_a_list(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    lone = {"id": 7, "type": "postgres", "properties": {"database": "analytics"}}
    sim.inject("destinations", Fault.wrong_shape(lone))
    async with credentials.get_client() as client:
        (destination,) = await client.list_destinations()
    assert (destination.id, destination.database) == (7, "analytics")
    assert len(sim.requests_for("destinations")) == 1


# -- jobs endpoints: extractions and loads -----------------------------------------------------


READ: dict[str, Call] = {
    "extractions": lambda client: client.read_extractions(),
    "loads": lambda client: client.read_loads(),
}
LIST: dict[str, Call] = {
    "extractions": lambda client: client.list_extractions(),
    "loads": lambda client: client.list_loads(),
}


async def read_two_pages(
    sim: StitchSimulator, credentials: StitchCredentials, endpoint: str
) -> Any:
    """Read a listing of the simulator's ``endpoint``, which must take its two pages."""
    async with credentials.get_client() as client:
        listing = await READ[endpoint](client)
    assert listing.pages == 2
    requests = sim.requests_for(endpoint)
    assert [r.path for r in requests] == [f"/v4/{sim.client_id}/{endpoint}"] * 2
    assert [r.query.get("page", "1") for r in requests] == ["1", "2"]
    return listing


async def test_list_extractions_reads_every_page(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.add_sources(range(1, 156))
    seeded = {source_id: sim.seed_completed(source_id) for source_id in range(1, 156)}
    records = (await read_two_pages(sim, credentials, "extractions")).records
    assert len(records) == 155
    assert all(isinstance(record, Extraction) for record in records)
    by_source = {record.source_id: record for record in records}
    assert by_source[150].job_name == seeded[150]  # on page 2
    assert by_source[150].tap_name == "tap-hubspot"
    assert by_source[150].completion_time is not None


async def test_list_loads_reads_every_page(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.add_sources(range(1, 61))  # two streams each: 120 load records, 2 pages
    for source_id in range(1, 60):
        sim.seed_completed(source_id)
    sim.seed_completed(60, Outcome.success(load_error="Column too long"))
    loads = (await read_two_pages(sim, credentials, "loads")).records
    assert len(loads) == 120
    assert all(isinstance(load, Load) for load in loads)
    failed = {(load.source_name, load.stream_name) for load in loads if load.failed}
    assert failed == {("hubspot_60", "accounts"), ("hubspot_60", "contacts")}
    ok = [load for load in loads if not load.failed]
    assert all(load.last_batch_loaded_at is not None for load in ok)


def _record(source_id: int, job_name: str) -> dict[str, Any]:
    return {
        "job_name": job_name,
        "stitch_client_id": 116078,
        "source_id": source_id,
        "source_type": "tap-hubspot",
        "start_time": "2026-01-01T00:00:00Z",
        "completion_time": "2026-01-01T00:01:00Z",
        "discovery_exit_status": 0,
        "tap_exit_status": 0,
        "target_exit_status": 0,
    }


def _load(source_name: str, stream_name: str) -> dict[str, Any]:
    return {"source_name": source_name, "stream_name": stream_name, "error_state": None}


FIRST_PAGE_DATE, SECOND_PAGE_DATE = "Sun, 29 Nov 2026 12:00:00 GMT", "Sun, 29 Nov 2026 12:00:07 GMT"
PAGES: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]] = {
    # A record listed on both pages (the list shifted) is one extraction...
    "extractions": (
        [_record(1, "116078.1.sync.a"), _record(2, "116078.2.sync.b")],
        [_record(2, "116078.2.sync.b"), _record(3, "116078.3.sync.c")],
        ["116078.1.sync.a", "116078.2.sync.b", "116078.3.sync.c"],
    ),
    # ...while loads are listed as read.
    "loads": (
        [_load("hubspot_1", "accounts"), _load("hubspot_1", "contacts")],
        [_load("hubspot_2", "accounts")],
        ["hubspot_1.accounts", "hubspot_1.contacts", "hubspot_2.accounts"],
    ),
}


def _name(record: Extraction | Load) -> str:
    if isinstance(record, Extraction):
        return record.job_name
    return f"{record.source_name}.{record.stream_name}"


def _two_pages(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> httpx.MockTransport:
    """Two pages of a jobs listing; Stitch's clock (``Date``) moved on between them."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("page") == "2":
            page = {"data": second, "links": {}}
            return httpx.Response(200, json=page, headers={"Date": SECOND_PAGE_DATE})
        page = {"data": first, "links": {"next": f"{request.url.path}?page=2"}}
        return httpx.Response(200, json=page, headers={"Date": FIRST_PAGE_DATE})

    return httpx.MockTransport(answer)


@pytest.mark.parametrize("kind", sorted(PAGES))
async def test_a_listing_returns_what_it_read_and_stitchs_clock_at_its_first_page(
    kind: str,
) -> None:
    first, second, expected = PAGES[kind]
    credentials = StitchCredentials(
        access_token=f"ac_listing_{kind}", client_id=424243, base_url="https://api.stitchdata.com"
    )
    async with credentials.get_client(transport=_two_pages(first, second)) as client:
        listing = await READ[kind](client)
        listed = await LIST[kind](client)
        assert client.requests_made == 4

    assert [_name(record) for record in listing.records] == expected
    assert listed == list(listing.records)
    assert listing.pages == 2
    assert listing.stitch_time == datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _serve_first_page_linking_to(host: str, sim: StitchSimulator, job_name: str) -> None:
    """Page 1 of the extractions: one record, and an absolute link to page 2 on ``host``."""
    page_one = {
        "data": [_record(1, job_name)],
        "page": 1,
        "total": 2,
        "links": {"next": f"{host}/v4/{sim.client_id}/extractions?page=2"},
    }
    sim.inject("extractions", Fault.wrong_shape(page_one))


async def test_absolute_next_link_on_the_api_host_is_followed(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.page_size = 1
    sim.add_sources([1, 2])
    sim.seed_completed(1, job_name="116078.1.sync.one")
    sim.seed_completed(2, job_name="116078.2.sync.two")
    _serve_first_page_linking_to(sim.base_url, sim, "116078.1.sync.one")
    listing = await read_two_pages(sim, credentials, "extractions")

    names = [record.job_name for record in listing.records]
    assert names == ["116078.1.sync.one", "116078.2.sync.two"]


@pytest.mark.parametrize("elsewhere", ["evil", "logs_origin", "https"])
async def test_next_link_to_another_host_is_refused(
    sim: StitchSimulator, credentials: StitchCredentials, elsewhere: str
) -> None:
    sim.add_source(1)
    sim.seed_completed(1)
    host = {
        "evil": "http://evil.example.com",
        "logs_origin": sim.logs_base_url,
        "https": sim.base_url.replace("http://", "https://"),
    }[elsewhere]
    _serve_first_page_linking_to(host, sim, "116078.1.sync.a")
    error = await failure_of(
        credentials, lambda client: client.list_extractions(), StitchTransportError
    )

    assert "another host" in str(error)
    assert len(sim.requests_for("extractions")) == 1
    assert sim.requests_for("log_download") == []


# -- jobs endpoints: logs ----------------------------------------------------------------------


async def test_get_extraction_logs_follows_redirect_without_authorization(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.add_source(1, log_lines=12)
    job_name = sim.seed_completed(1, Outcome.failure("tap", exit_status=-9))
    async with credentials.get_client() as client:
        log = await client.get_extraction_logs(job_name)

    lines = log.splitlines()
    assert len(lines) == 12
    assert f"Starting extraction job {job_name}" in lines[0]
    assert lines[-1].endswith("Tap failed with code -9. Target succeeded.")
    (logs,) = sim.requests_for("logs")
    assert logs.status == 302 and logs.authorization_valid
    assert logs.path == f"/v4/{sim.client_id}/extractions/{job_name}"
    (download,) = sim.requests_for("log_download")
    assert download.status == 200
    assert not download.authorization_present
    assert "authorization" not in download.headers


async def test_get_extraction_logs_tail_lines(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.add_source(1, log_lines=40)
    job_name = sim.seed_completed(1)
    async with credentials.get_client() as client:
        full = await client.get_extraction_logs(job_name)
        tail = await client.get_extraction_logs(job_name, tail_lines=5)

    assert len(full.splitlines()) == 40
    assert tail.splitlines() == full.splitlines()[-5:]
    assert "Exit status is:" in tail.splitlines()[-1]
    assert all(not r.authorization_present for r in sim.requests_for("log_download"))


async def test_get_extraction_logs_unknown_job_is_not_found(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    error = await failure_of(
        credentials,
        lambda client: client.get_extraction_logs("116078.1.sync.no-such-job"),
        StitchNotFoundError,
    )

    assert str(error) == "Not Found"
    assert error.status_code == 404
    assert len(sim.requests_for("logs")) == 1
    assert sim.requests_for("log_download") == []


@pytest.mark.parametrize(
    ("job_name", "tail_lines"), [("", None), ("a/b", None), ("116078.1.sync.a", -1)]
)
async def test_get_extraction_logs_rejects_bad_arguments_before_any_request(
    sim: StitchSimulator, credentials: StitchCredentials, job_name: str, tail_lines: int | None
) -> None:
    error = await failure_of(
        credentials,
        lambda client: client.get_extraction_logs(job_name, tail_lines=tail_lines),
        StitchConfigurationError,
    )
    assert error.parameter == ("tail_lines" if tail_lines else "job_name")
    assert sim.requests == []


async def test_log_download_transient_fault_is_retried_without_authorization(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    _seed_one(sim)
    sim.inject("log_download", Fault.status(503))
    sim.inject("log_download", Fault.drop())
    async with credentials.get_client() as client:
        log = await _call_logs(client)

    assert "Exit status is:" in log
    downloads = sim.requests_for("log_download")
    assert [r.status for r in downloads] == [503, None, 200]
    assert not any(r.authorization_present for r in downloads)


async def test_log_download_4xx_is_not_retried_and_hides_the_presigned_query(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    _seed_one(sim)
    sim.inject("log_download", Fault.status(403))
    error = await failure_of(credentials, _call_logs, StitchAPIError)

    assert error.status_code == 403
    assert "x-amz-security-token" not in f"{error!s}{error!r}"
    assert len(sim.requests_for("log_download")) == 1


DOWNLOAD_FAULTS: dict[str, tuple[Fault, type[StitchAPIError], int | None, str]] = {
    "drop": (Fault.drop(), StitchTransportError, None, "connection dropped"),
    "503": (Fault.status(503), StitchAPIError, 503, "Service Unavailable"),
}


@pytest.mark.parametrize("case", sorted(DOWNLOAD_FAULTS))
async def test_log_download_faults_beyond_budget_report_their_attempts(
    sim: StitchSimulator, case: str
) -> None:
    fault, error_type, status, reason = DOWNLOAD_FAULTS[case]
    credentials = make_credentials(sim, max_retries=2)
    _seed_one(sim)
    sim.inject("log_download", fault, times=3)
    error = await failure_of(credentials, _call_logs, StitchAPIError)

    assert type(error) is error_type
    assert (error.status_code, error.reason, error.attempts) == (status, reason, 3)
    assert str(error).startswith(reason)
    assert "after 3 attempts" in str(error)  # like every other call that gave up
    assert "x-amz-security-token" not in str(error)
    assert len(sim.requests_for("log_download")) == 3


# -- the client id ---------------------------------------------------------------------------


async def test_resolve_client_id_discovers_it_from_the_source_and_caches_it(
    sim: StitchSimulator,
) -> None:
    sim.add_source(120643)
    sim.seed_completed(120643)
    credentials = make_credentials(sim, client_id=None)
    assert credentials.client_id is None

    async with credentials.get_client() as client:
        assert await client.resolve_client_id(source_id=120643) == sim.client_id
    (request,) = sim.requests_for("source")
    assert request.path == "/v4/sources/120643"

    async with credentials.get_client() as second:  # a new client: the id is cached
        assert await second.resolve_client_id(source_id=120643) == sim.client_id
        records = await second.list_extractions()
    assert len(sim.requests_for("source")) == 1
    assert sim.requests_for("list_sources") == []
    assert [r.path for r in sim.requests_for("extractions")] == [f"/v4/{sim.client_id}/extractions"]
    assert [record.source_id for record in records] == [120643]


async def test_resolve_client_id_without_a_source_reads_the_source_list(
    sim: StitchSimulator,
) -> None:
    sim.add_source(5)
    credentials = make_credentials(sim, client_id=None)
    async with credentials.get_client() as client:
        assert await client.resolve_client_id() == sim.client_id
    assert len(sim.requests_for("list_sources")) == 1


async def test_resolve_client_id_without_any_source_is_a_configuration_error(
    sim: StitchSimulator,
) -> None:
    credentials = make_credentials(sim, client_id=None)
    error = await failure_of(
        credentials, lambda client: client.list_extractions(), StitchConfigurationError
    )
    assert error.parameter == "client_id"
    assert sim.requests_for("extractions") == []


async def test_explicit_client_id_needs_no_discovery(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    async with credentials.get_client() as client:
        assert await client.resolve_client_id(source_id=1) == sim.client_id
    assert sim.requests == []


# -- error mapping -----------------------------------------------------------------------------


async def test_401_message_is_stitchs_raw_message(sim: StitchSimulator) -> None:
    sim.add_source(1)
    credentials = make_credentials(sim, access_token=WRONG_TOKEN)
    error = await failure_of(credentials, lambda client: client.get_source(1), StitchAuthError)

    assert str(error) == UNAUTHORIZED_MESSAGE
    assert error.status_code == 401
    assert error.call == "GET /v4/sources/1"
    (request,) = sim.requests_for("source")
    assert request.authorization_present and not request.authorization_valid
    assert_no_token(error, WRONG_TOKEN, "sim-token")


async def test_401_for_a_client_id_of_another_account(sim: StitchSimulator) -> None:
    credentials = make_credentials(sim, client_id=999)
    error = await failure_of(credentials, lambda client: client.list_extractions(), StitchAuthError)
    assert len(sim.requests_for("extractions")) == 1
    assert str(error) == UNAUTHORIZED_MESSAGE
    assert error.path == "/v4/999/extractions"


async def test_401_with_empty_body_falls_back_to_the_reason(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.add_source(1)
    sim.inject("source", Fault.status(401, body=""))
    error = await failure_of(credentials, lambda client: client.get_source(1), StitchAuthError)
    assert str(error) == "Unauthorized"
    assert error.stitch_message is None


async def test_404_message_is_the_reason_phrase(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    error = await failure_of(
        credentials, lambda client: client.get_source(424242), StitchNotFoundError
    )

    assert str(error) == "Not Found"
    assert error.status_code == 404
    assert error.path == "/v4/sources/424242"
    assert len(sim.requests_for("source")) == 1


@pytest.mark.parametrize(("code", "reason"), [(500, "Internal Server Error"), (502, "Bad Gateway")])
async def test_5xx_with_json_body(sim: StitchSimulator, code: int, reason: str) -> None:
    credentials = make_credentials(sim, max_retries=0)
    sim.add_source(1)
    sim.inject("source", Fault.status(code))
    error = await failure_of(credentials, lambda client: client.get_source(1), StitchAPIError)

    assert type(error) is StitchAPIError
    assert error.status_code == code
    assert str(error).startswith(reason)
    assert SERVER_ERROR_MESSAGE in str(error)
    assert error.stitch_message == SERVER_ERROR_MESSAGE
    assert "GET /v4/sources/1" in str(error)


async def test_502_with_html_body_is_a_clear_api_error(sim: StitchSimulator) -> None:
    credentials = make_credentials(sim, max_retries=0)
    sim.add_source(1)
    sim.inject("source", Fault.status(502, body=HTML_502))
    error = await failure_of(credentials, lambda client: client.get_source(1), StitchAPIError)

    assert not isinstance(error, json.JSONDecodeError)
    assert not isinstance(error.__cause__, json.JSONDecodeError)
    assert error.status_code == 502
    assert str(error).startswith("Bad Gateway")
    assert "<" not in str(error) and "html" not in str(error).lower()
    assert "<" not in repr(error)
    assert error.stitch_message is None


# -- transient faults: retried ---------------------------------------------------------------


async def test_502_then_success_on_a_get(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.add_source(1)
    sim.inject("source", Fault.status(502))
    async with credentials.get_client() as client:
        source = await client.get_source(1)
    assert source.id == 1
    assert [r.status for r in sim.requests_for("source")] == [502, 200]


@pytest.mark.parametrize(
    ("endpoint", "code", "retry_after"),
    [("source", 503, "0"), ("source", 429, "1"), ("extractions", 429, "1")],
)
async def test_503_and_429_with_retry_after_then_success(
    sim: StitchSimulator,
    credentials: StitchCredentials,
    endpoint: str,
    code: int,
    retry_after: str,
) -> None:
    sim.add_source(1)
    sim.seed_completed(1)
    sim.inject(endpoint, Fault.status(code, headers={"Retry-After": retry_after}))
    async with credentials.get_client() as client:
        if endpoint == "source":
            assert (await client.get_source(1)).id == 1
        else:
            assert [r.source_id for r in await client.list_extractions()] == [1]

    requests = sim.requests_for(endpoint)
    assert [r.status for r in requests] == [code, 200]
    # Retry-After is honoured (measured from the simulator's own arrival times).
    assert requests[1].at - requests[0].at >= float(retry_after) - 0.01


async def test_dropped_connection_then_success(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.add_source(1)
    sim.inject("source", Fault.drop())
    async with credentials.get_client() as client:
        assert (await client.get_source(1)).id == 1
    requests = sim.requests_for("source")
    assert [(r.status, r.fault) for r in requests] == [(None, "drop"), (200, None)]


@pytest.mark.parametrize(
    ("endpoint", "fault", "shown", "why"),
    [
        ("source", Fault.status(502), "GET /v4/sources/1", "HTTP 502 Bad Gateway"),
        ("log_download", Fault.drop(), "(pre-signed log URL)", "connection dropped"),
    ],
    ids=["buffered", "streamed"],
)
async def test_each_retry_is_one_warning_line(
    sim: StitchSimulator,
    credentials: StitchCredentials,
    caplog: pytest.LogCaptureFixture,
    endpoint: str,
    fault: Fault,
    shown: str,
    why: str,
) -> None:
    _seed_one(sim)
    sim.inject(endpoint, fault, times=2)
    caplog.set_level(logging.WARNING, logger="prefect_stitch.client")
    async with credentials.get_client() as client:
        await (client.get_source(1) if endpoint == "source" else _call_logs(client))

    ours = [record for record in caplog.records if record.name == "prefect_stitch.client"]
    assert [record.levelno for record in ours] == [logging.WARNING] * 2
    for attempt, record in enumerate(ours, start=1):
        line = record.getMessage()
        assert shown in line and f"failed ({why}); retry {attempt}/3 in " in line
        assert "?" not in line  # never a pre-signed query


RETRIED_CALLS: list[tuple[str, Call, str]] = [
    ("source", lambda client: client.get_source(1), "GET /v4/sources/1"),
    ("list_sources", lambda client: client.list_sources(), "GET /v4/sources"),
    ("update_source", lambda client: client.pause_source(1), "PUT /v4/sources/1"),
    ("update_source", lambda client: client.unpause_source(1), "PUT /v4/sources/1"),
    ("stop", lambda client: client.stop_replication_job(1), "DELETE /v4/sources/1/sync"),
    ("extractions", lambda client: client.list_extractions(), "GET /v4/116078/extractions"),
    ("loads", lambda client: client.list_loads(), "GET /v4/116078/loads"),
    ("logs", _call_logs, "GET /v4/116078/extractions/116078.1.sync.seeded"),
]
RETRIED_IDS = [
    "source-source",
    "list_sources-sources",
    "update_source-pause",
    "update_source-unpause",
    "stop-stop",
    "extractions-extractions",
    "loads-loads",
    "logs-logs",
]


@pytest.mark.parametrize(("endpoint", "call", "shown"), RETRIED_CALLS, ids=RETRIED_IDS)
async def test_every_idempotent_call_retries_a_502(
    sim: StitchSimulator,
    credentials: StitchCredentials,
    endpoint: str,
    call: Call,
    shown: str,
) -> None:
    _seed_one(sim)
    sim.inject(endpoint, Fault.status(502))
    async with credentials.get_client() as client:
        await call(client)
    statuses = [r.status for r in sim.requests_for(endpoint)]
    assert statuses[:2] == [502, 200 if endpoint != "logs" else 302]
    assert len(statuses) == 2


@pytest.mark.parametrize(("endpoint", "call", "shown"), RETRIED_CALLS, ids=RETRIED_IDS)
async def test_every_idempotent_call_gives_up_after_max_retries(
    sim: StitchSimulator, endpoint: str, call: Call, shown: str
) -> None:
    credentials = make_credentials(sim, max_retries=2)
    _seed_one(sim)
    sim.inject(endpoint, Fault.status(503), times=3)
    error = await failure_of(credentials, call, StitchAPIError)

    assert error.status_code == 503
    assert error.attempts == 3
    assert error.call == shown
    assert shown in str(error) and "after 3 attempts" in str(error)
    assert len(sim.requests_for(endpoint)) == 3


FAULTS_BEYOND_BUDGET: list[tuple[str, Fault, type[StitchAPIError], int | None, str]] = [
    ("500", Fault.status(500), StitchAPIError, 500, "Internal Server Error"),
    ("502", Fault.status(502), StitchAPIError, 502, "Bad Gateway"),
    ("502-html", Fault.status(502, body=HTML_502), StitchAPIError, 502, "Bad Gateway"),
    ("503", Fault.status(503), StitchAPIError, 503, "Service Unavailable"),
    ("504", Fault.status(504), StitchAPIError, 504, "Gateway Timeout"),
    ("429", Fault.status(429), StitchAPIError, 429, "Too Many Requests"),
    ("drop", Fault.drop(), StitchTransportError, None, "connection dropped"),
    ("malformed", Fault.malformed_json(), StitchTransportError, 200, "malformed JSON"),
    ("wrong-shape", Fault.wrong_shape(), StitchTransportError, 200, "unexpected response"),
]


@pytest.mark.parametrize(
    ("fault", "error_type", "status", "reason"),
    [case[1:] for case in FAULTS_BEYOND_BUDGET],
    ids=[case[0] for case in FAULTS_BEYOND_BUDGET],
)
async def test_faults_beyond_max_retries(
    sim: StitchSimulator,
    fault: Fault,
    error_type: type[StitchAPIError],
    status: int | None,
    reason: str,
) -> None:
    credentials = make_credentials(sim, max_retries=2)
    sim.add_source(1)
    sim.inject("source", fault, times=3)
    error = await failure_of(credentials, lambda client: client.get_source(1), StitchAPIError)

    assert type(error) is error_type
    assert isinstance(error, StitchError)
    assert error.status_code == status
    assert error.reason.startswith(reason)
    assert str(error).startswith(reason)
    assert error.attempts == 3
    assert (error.method, error.path) == ("GET", "/v4/sources/1")
    assert "GET /v4/sources/1" in str(error)
    assert "<" not in str(error)
    assert len(sim.requests_for("source")) == 3


@pytest.mark.parametrize(
    "fault",
    [Fault.status(500), Fault.drop(), Fault.malformed_json(), Fault.wrong_shape()],
    ids=["500", "drop", "malformed", "wrong-shape"],
)
async def test_faults_within_budget_recover(sim: StitchSimulator, fault: Fault) -> None:
    credentials = make_credentials(sim, max_retries=2)
    sim.add_source(1)
    sim.inject("source", fault, times=2)
    async with credentials.get_client() as client:
        assert (await client.get_source(1)).id == 1
        assert client.requests_made == 3
    assert len(sim.requests_for("source")) == 3


@pytest.mark.parametrize(
    ("endpoint", "call"),
    [
        ("list_sources", lambda client: client.list_sources()),
        ("extractions", lambda client: client.list_extractions()),
        ("loads", lambda client: client.list_loads()),
    ],
    ids=["list_sources", "extractions", "loads"],
)
@pytest.mark.parametrize(
    "fault", [Fault.malformed_json(), Fault.wrong_shape()], ids=["malformed", "wrong-shape"]
)
async def test_unreadable_listing_bodies_are_retried(
    sim: StitchSimulator,
    credentials: StitchCredentials,
    endpoint: str,
    call: Call,
    fault: Fault,
) -> None:
    _seed_one(sim)
    sim.inject(endpoint, fault)
    async with credentials.get_client() as client:
        result = await call(client)
    assert len(result) >= 1
    assert [r.fault for r in sim.requests_for(endpoint)] == [fault.kind, None]


async def test_wrong_shape_records_in_a_page_are_retried(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    """A page whose records lack required fields is an unreadable body, like any other."""
    _seed_one(sim)
    bad_page = {"data": [{"unexpected": 1}], "page": 1, "total": 1, "links": {}}
    sim.inject("extractions", Fault.wrong_shape(bad_page))
    async with credentials.get_client() as client:
        records = await client.list_extractions()
    assert [record.job_name for record in records] == ["116078.1.sync.seeded"]
    assert len(sim.requests_for("extractions")) == 2


async def test_wrong_shape_records_beyond_budget_name_the_call(sim: StitchSimulator) -> None:
    credentials = make_credentials(sim, max_retries=1)
    _seed_one(sim)
    bad_page = {"data": [{"unexpected": 1}], "page": 1, "total": 1, "links": {}}
    sim.inject("extractions", Fault.wrong_shape(bad_page), times=2)
    error = await failure_of(
        credentials, lambda client: client.list_extractions(), StitchTransportError
    )
    assert error.call == "GET /v4/116078/extractions"
    assert error.attempts == 2


# -- never retried -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        (400, StitchAPIError),
        (401, StitchAuthError),
        (403, StitchAPIError),
        (404, StitchNotFoundError),
        (409, StitchAPIError),
    ],
)
async def test_4xx_is_never_retried(
    sim: StitchSimulator,
    credentials: StitchCredentials,
    code: int,
    error_type: type[StitchAPIError],
) -> None:
    sim.add_source(1)
    sim.inject("source", Fault.status(code), times=2)
    error = await failure_of(credentials, lambda client: client.get_source(1), StitchAPIError)

    assert type(error) is error_type
    assert error.status_code == code
    assert error.attempts == 1
    assert len(sim.requests_for("source")) == 1


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        (Fault.status(502), StitchAPIError),
        (Fault.status(503, headers={"Retry-After": "0"}), StitchAPIError),
        (Fault.drop(), StitchTransportError),
        (Fault.start_then_drop(), StitchTransportError),
    ],
    ids=["502", "503", "drop", "start-then-drop"],
)
async def test_the_trigger_is_never_retried(
    sim: StitchSimulator,
    credentials: StitchCredentials,
    fault: Fault,
    error_type: type[StitchAPIError],
) -> None:
    sim.add_source(1, outcomes=[Outcome.success(None)])
    sim.inject("trigger", fault)
    error = await failure_of(
        credentials, lambda client: client.start_replication_job(1), StitchAPIError
    )

    assert type(error) is error_type
    assert error.attempts == 1
    assert error.call == "POST /v4/sources/1/sync"
    assert len(sim.requests_for("trigger")) == 1
    started = sim.jobs_started(1)
    assert len(started) == (1 if fault.kind == "start_then_drop" else 0)


# -- timeouts --------------------------------------------------------------------------------


async def test_slow_answer_beyond_budget_is_a_timeout(sim: StitchSimulator) -> None:
    credentials = make_credentials(sim, request_timeout_seconds=0.2, max_retries=1)
    sim.add_source(1)
    sim.inject("source", Fault.slow(0.6), times=2)
    started = time.monotonic()
    async with credentials.get_client() as client:
        with pytest.raises(StitchTransportError) as caught:
            await client.get_source(1)
        assert client.requests_made == 2
    elapsed = time.monotonic() - started

    error = caught.value
    assert "timeout" in error.reason
    assert error.status_code is None
    assert error.attempts == 2
    assert error.call == "GET /v4/sources/1"
    assert elapsed < 1.2  # the client gave up on its own timeout, not the server's delay
    assert_no_token(error)


async def test_slow_answer_within_budget_recovers(sim: StitchSimulator) -> None:
    credentials = make_credentials(sim, request_timeout_seconds=0.2, max_retries=1)
    sim.add_source(1)
    sim.inject("source", Fault.slow(0.6))
    async with credentials.get_client() as client:
        assert (await client.get_source(1)).id == 1
        assert client.requests_made == 2


# -- the jobs budget ---------------------------------------------------------------------------


async def test_every_jobs_request_takes_a_slot_of_the_global_limit_when_one_is_named(
    sim: StitchSimulator, credentials: StitchCredentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[tuple[str, int]] = []

    async def rate_limit(name: str, occupy: int) -> None:
        taken.append((name, occupy))

    monkeypatch.setattr(prefect.concurrency.asyncio, "rate_limit", rate_limit)
    sim.page_size = 1
    sim.add_sources([1, 2])
    job_name = sim.seed_completed(1)
    sim.seed_completed(2)
    async with credentials.get_client() as client:
        await client.list_extractions()
        assert taken == []  # no limit named: only the process's own limiter
        client.global_limit_name = "stitch-jobs"
        sim.inject("extractions", Fault.status(502))
        await client.list_extractions()  # a 502, then two pages: three requests
        await client.get_extraction_logs(job_name)  # one (not the pre-signed download)
        await client.get_source(1)  # not a jobs request
        assert client.requests_made == 2 + 3 + 2 + 1

    assert taken == [("stitch-jobs", 1)] * 4
    assert [r.status for r in sim.requests_for("extractions")][2:] == [502, 200, 200]


# -- the token ---------------------------------------------------------------------------------


async def test_the_token_is_sent_only_as_bearer_and_not_in_the_client_repr(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.add_source(1)
    async with credentials.get_client() as client:
        await client.get_source(1)
        assert "sim-token" not in repr(client)
    (request,) = sim.requests
    assert request.authorization_valid
    assert request.headers["authorization"] == "Bearer ***"


async def test_a_closed_client_cannot_be_reused(credentials: StitchCredentials) -> None:
    client = credentials.get_client()
    async with client:
        pass
    with pytest.raises(RuntimeError):
        await client.get_source(1)
