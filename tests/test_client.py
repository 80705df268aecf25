"""The async Stitch client over real HTTP, against the bundled simulator.

Every endpoint method, every error mapping of the client's contract, transient retries
(and what is never retried), pagination and the logs redirect. No mocks: the simulator
answers like the documented Connect API and records what it received.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from prefect_stitch import StitchCredentials
from prefect_stitch.client import StitchClient
from prefect_stitch.errors import (
    StitchAPIError,
    StitchAuthError,
    StitchConfigurationError,
    StitchError,
    StitchInvalidSourceError,
    StitchJobAlreadyRunning,
    StitchNotFoundError,
    StitchTransportError,
)
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


def assert_no_token(error: BaseException, *tokens: str) -> None:
    """The access token(s) never show in what a user or the Prefect UI would see."""
    shown = f"{error!s}\n{error!r}"
    for token in tokens or ("sim-token",):
        assert token not in shown, f"token leaked in {shown!r}"


Call = Callable[[StitchClient], Awaitable[Any]]


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
    async with credentials.get_client() as client:
        with pytest.raises(StitchJobAlreadyRunning) as caught:
            await client.start_replication_job(7)

    error = caught.value
    assert error.source_id == 7
    assert error.stitch_message is not None
    assert "because one already exists" in error.stitch_message
    assert "already running" in str(error)
    assert error.seen_running_at is not None
    assert [r.status for r in sim.requests_for("trigger")] == [200]
    assert sim.jobs_started() == []
    assert sim.running_job(7)["job_name"] == running  # type: ignore[index]
    assert_no_token(error)


async def test_trigger_200_with_another_error_body_raises_api_error(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.add_source(7)
    body = {"error": {"type": "generic", "message": "Could not create job for client-id: 1"}}
    sim.inject("trigger", Fault.status(200, body=body))
    async with credentials.get_client() as client:
        with pytest.raises(StitchAPIError) as caught:
            await client.start_replication_job(7)

    error = caught.value
    assert not isinstance(error, StitchJobAlreadyRunning)
    assert error.error_type == "generic"
    assert error.stitch_message == "Could not create job for client-id: 1"
    assert len(sim.requests_for("trigger")) == 1
    assert_no_token(error)


@pytest.mark.parametrize("deleted", [False, True], ids=["unknown", "deleted"])
async def test_trigger_invalid_source_raises_invalid_source_error(
    sim: StitchSimulator, credentials: StitchCredentials, deleted: bool
) -> None:
    if deleted:
        sim.add_source(55, deleted=True)
    async with credentials.get_client() as client:
        with pytest.raises(StitchInvalidSourceError) as caught:
            await client.start_replication_job(55)

    error = caught.value
    assert error.status_code == 400
    assert error.error_type == "invalid_source"
    expected = DELETED_SOURCE_MESSAGE if deleted else "Unable to locate source(55) for client"
    assert error.stitch_message is not None
    assert expected in error.stitch_message
    assert expected in str(error)
    assert error.call == "POST /v4/sources/55/sync"
    assert len(sim.requests_for("trigger")) == 1
    assert_no_token(error)


@pytest.mark.parametrize("bad_id", [0, -3, True, "120643", 2**31])
async def test_bad_source_id_is_refused_before_any_request(
    sim: StitchSimulator, credentials: StitchCredentials, bad_id: Any
) -> None:
    async with credentials.get_client() as client:
        with pytest.raises(StitchConfigurationError) as caught:
            await client.start_replication_job(bad_id)
    assert caught.value.parameter == "source_id"
    assert sim.requests == []


async def test_stop_replication_job_stops_the_running_job(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.add_source(3, outcomes=[Outcome.success(None)])
    async with credentials.get_client() as client:
        job_name = await client.start_replication_job(3)
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
    async with credentials.get_client() as client:
        with pytest.raises(StitchInvalidSourceError) as caught:
            await client.stop_replication_job(404404)
    assert caught.value.call == "DELETE /v4/sources/404404/sync"
    assert len(sim.requests_for("stop")) == 1
    assert_no_token(caught.value)


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
    async with credentials.get_client() as client:
        with pytest.raises(StitchAPIError) as caught:
            await client.pause_source(999)

    error = caught.value
    assert error.status_code == 400
    assert error.error_type == "InvalidId"  # {"error": "<Code>", "data": {"message": ...}}
    assert error.stitch_message == "source not found (999)"
    assert len(sim.requests_for("update_source")) == 1
    assert_no_token(error)


# -- jobs endpoints: extractions, loads, logs --------------------------------------------------


async def test_list_extractions_reads_every_page(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.add_sources(range(1, 156))
    seeded = {source_id: sim.seed_completed(source_id) for source_id in range(1, 156)}
    async with credentials.get_client() as client:
        listing = await client.read_extractions()

    records = listing.records
    assert listing.pages == 2
    assert len(records) == 155
    assert all(isinstance(record, Extraction) for record in records)
    by_source = {record.source_id: record for record in records}
    assert by_source[150].job_name == seeded[150]  # on page 2
    assert by_source[150].tap_name == "tap-hubspot"
    assert by_source[150].completion_time is not None
    requests = sim.requests_for("extractions")
    assert [r.path for r in requests] == [f"/v4/{sim.client_id}/extractions"] * 2
    assert [r.query.get("page", "1") for r in requests] == ["1", "2"]


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


async def test_absolute_next_link_on_the_api_host_is_followed(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.page_size = 1
    sim.add_sources([1, 2])
    sim.seed_completed(1, job_name="116078.1.sync.one")
    sim.seed_completed(2, job_name="116078.2.sync.two")
    page_one = {
        "data": [_record(1, "116078.1.sync.one")],
        "page": 1,
        "total": 2,
        "links": {"next": f"{sim.base_url}/v4/{sim.client_id}/extractions?page=2"},
    }
    sim.inject("extractions", Fault.wrong_shape(page_one))
    async with credentials.get_client() as client:
        listing = await client.read_extractions()
        records = list(listing.records)
    assert listing.pages == 2

    assert [record.job_name for record in records] == ["116078.1.sync.one", "116078.2.sync.two"]
    requests = sim.requests_for("extractions")
    assert [r.query.get("page", "1") for r in requests] == ["1", "2"]
    assert all(r.path == f"/v4/{sim.client_id}/extractions" for r in requests)


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
    page_one = {
        "data": [_record(1, "116078.1.sync.a")],
        "page": 1,
        "total": 2,
        "links": {"next": f"{host}/v4/{sim.client_id}/extractions?page=2"},
    }
    sim.inject("extractions", Fault.wrong_shape(page_one))
    async with credentials.get_client() as client:
        with pytest.raises(StitchTransportError) as caught:
            await client.list_extractions()

    assert "another host" in str(caught.value)
    assert len(sim.requests_for("extractions")) == 1
    assert sim.requests_for("log_download") == []
    assert_no_token(caught.value)


async def test_list_loads_reads_every_page(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.add_sources(range(1, 61))  # two streams each: 120 load records, 2 pages
    for source_id in range(1, 60):
        sim.seed_completed(source_id)
    sim.seed_completed(60, Outcome.success(load_error="Column too long"))
    async with credentials.get_client() as client:
        listing = await client.read_loads()

    loads = listing.records
    assert listing.pages == 2
    assert len(loads) == 120
    assert all(isinstance(load, Load) for load in loads)
    failed = {(load.source_name, load.stream_name) for load in loads if load.failed}
    assert failed == {("hubspot_60", "accounts"), ("hubspot_60", "contacts")}
    ok = [load for load in loads if not load.failed]
    assert all(load.last_batch_loaded_at is not None for load in ok)
    requests = sim.requests_for("loads")
    assert [r.path for r in requests] == [f"/v4/{sim.client_id}/loads"] * 2
    assert [r.query.get("page", "1") for r in requests] == ["1", "2"]


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
    async with credentials.get_client() as client:
        with pytest.raises(StitchNotFoundError) as caught:
            await client.get_extraction_logs("116078.1.sync.no-such-job")

    assert str(caught.value) == "Not Found"
    assert caught.value.status_code == 404
    assert len(sim.requests_for("logs")) == 1
    assert sim.requests_for("log_download") == []
    assert_no_token(caught.value)


@pytest.mark.parametrize("job_name", ["", "a/b"])
async def test_get_extraction_logs_rejects_bad_job_names_before_any_request(
    sim: StitchSimulator, credentials: StitchCredentials, job_name: str
) -> None:
    async with credentials.get_client() as client:
        with pytest.raises(StitchConfigurationError):
            await client.get_extraction_logs(job_name)
    assert sim.requests == []


async def test_log_download_transient_fault_is_retried_without_authorization(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.add_source(1)
    job_name = sim.seed_completed(1)
    sim.inject("log_download", Fault.status(503))
    sim.inject("log_download", Fault.drop())
    async with credentials.get_client() as client:
        log = await client.get_extraction_logs(job_name)

    assert "Exit status is:" in log
    downloads = sim.requests_for("log_download")
    assert [r.status for r in downloads] == [503, None, 200]
    assert not any(r.authorization_present for r in downloads)


async def test_log_download_4xx_is_not_retried_and_hides_the_presigned_query(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.add_source(1)
    job_name = sim.seed_completed(1)
    sim.inject("log_download", Fault.status(403))
    async with credentials.get_client() as client:
        with pytest.raises(StitchAPIError) as caught:
            await client.get_extraction_logs(job_name)

    error = caught.value
    assert error.status_code == 403
    assert "x-amz-security-token" not in f"{error!s}{error!r}"
    assert len(sim.requests_for("log_download")) == 1
    assert_no_token(error)


async def test_log_download_faults_beyond_budget(sim: StitchSimulator) -> None:
    credentials = make_credentials(sim, max_retries=2)
    sim.add_source(1)
    job_name = sim.seed_completed(1)
    sim.inject("log_download", Fault.drop(), times=3)
    async with credentials.get_client() as client:
        with pytest.raises(StitchTransportError) as caught:
            await client.get_extraction_logs(job_name)

    assert caught.value.attempts == 3
    assert caught.value.reason == "connection dropped"
    assert "after 3 attempts" in str(caught.value)
    assert len(sim.requests_for("log_download")) == 3
    assert_no_token(caught.value)


async def test_log_download_5xx_beyond_budget_reports_its_attempts(sim: StitchSimulator) -> None:
    credentials = make_credentials(sim, max_retries=2)
    sim.add_source(1)
    job_name = sim.seed_completed(1)
    sim.inject("log_download", Fault.status(503), times=3)
    async with credentials.get_client() as client:
        with pytest.raises(StitchAPIError) as caught:
            await client.get_extraction_logs(job_name)

    error = caught.value
    assert error.status_code == 503
    assert error.attempts == 3
    assert str(error).startswith("Service Unavailable")
    assert "after 3 attempts" in str(error)  # like every other call that gave up
    assert "x-amz-security-token" not in str(error)
    assert len(sim.requests_for("log_download")) == 3
    assert_no_token(error)


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
    async with credentials.get_client() as client:
        with pytest.raises(StitchConfigurationError) as caught:
            await client.list_extractions()
    assert caught.value.parameter == "client_id"
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
    async with credentials.get_client() as client:
        with pytest.raises(StitchAuthError) as caught:
            await client.get_source(1)

    error = caught.value
    assert str(error) == UNAUTHORIZED_MESSAGE
    assert error.status_code == 401
    assert error.call == "GET /v4/sources/1"
    (request,) = sim.requests_for("source")
    assert request.authorization_present and not request.authorization_valid
    assert_no_token(error, WRONG_TOKEN, "sim-token")


async def test_401_for_a_client_id_of_another_account(sim: StitchSimulator) -> None:
    credentials = make_credentials(sim, client_id=999)
    async with credentials.get_client() as client:
        with pytest.raises(StitchAuthError) as caught:
            await client.list_extractions()
    assert str(caught.value) == UNAUTHORIZED_MESSAGE
    assert caught.value.path == "/v4/999/extractions"
    assert len(sim.requests_for("extractions")) == 1
    assert_no_token(caught.value)


async def test_401_with_empty_body_falls_back_to_the_reason(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    sim.add_source(1)
    sim.inject("source", Fault.status(401, body=""))
    async with credentials.get_client() as client:
        with pytest.raises(StitchAuthError) as caught:
            await client.get_source(1)
    assert str(caught.value) == "Unauthorized"
    assert caught.value.stitch_message is None
    assert_no_token(caught.value)


async def test_404_message_is_the_reason_phrase(
    sim: StitchSimulator, credentials: StitchCredentials
) -> None:
    async with credentials.get_client() as client:
        with pytest.raises(StitchNotFoundError) as caught:
            await client.get_source(424242)

    error = caught.value
    assert str(error) == "Not Found"
    assert error.status_code == 404
    assert error.path == "/v4/sources/424242"
    assert len(sim.requests_for("source")) == 1
    assert_no_token(error)


@pytest.mark.parametrize(("code", "reason"), [(500, "Internal Server Error"), (502, "Bad Gateway")])
async def test_5xx_with_json_body(sim: StitchSimulator, code: int, reason: str) -> None:
    credentials = make_credentials(sim, max_retries=0)
    sim.add_source(1)
    sim.inject("source", Fault.status(code))
    async with credentials.get_client() as client:
        with pytest.raises(StitchAPIError) as caught:
            await client.get_source(1)

    error = caught.value
    assert type(error) is StitchAPIError
    assert error.status_code == code
    assert str(error).startswith(reason)
    assert SERVER_ERROR_MESSAGE in str(error)
    assert error.stitch_message == SERVER_ERROR_MESSAGE
    assert "GET /v4/sources/1" in str(error)
    assert_no_token(error)


async def test_502_with_html_body_is_a_clear_api_error(sim: StitchSimulator) -> None:
    credentials = make_credentials(sim, max_retries=0)
    sim.add_source(1)
    sim.inject("source", Fault.status(502, body=HTML_502))
    async with credentials.get_client() as client:
        with pytest.raises(StitchAPIError) as caught:
            await client.get_source(1)

    error = caught.value
    assert not isinstance(error, json.JSONDecodeError)
    assert not isinstance(error.__cause__, json.JSONDecodeError)
    assert error.status_code == 502
    assert str(error).startswith("Bad Gateway")
    assert "<" not in str(error) and "html" not in str(error).lower()
    assert "<" not in repr(error)
    assert error.stitch_message is None
    assert_no_token(error)


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


async def _call_source(client: StitchClient) -> Any:
    return await client.get_source(1)


async def _call_sources(client: StitchClient) -> Any:
    return await client.list_sources()


async def _call_pause(client: StitchClient) -> Any:
    return await client.pause_source(1)


async def _call_unpause(client: StitchClient) -> Any:
    return await client.unpause_source(1)


async def _call_stop(client: StitchClient) -> Any:
    return await client.stop_replication_job(1)


async def _call_extractions(client: StitchClient) -> Any:
    return await client.list_extractions()


async def _call_loads(client: StitchClient) -> Any:
    return await client.list_loads()


async def _call_logs(client: StitchClient) -> Any:
    return await client.get_extraction_logs("116078.1.sync.seeded")


RETRIED_CALLS: list[tuple[str, Call, str]] = [
    ("source", _call_source, "GET /v4/sources/1"),
    ("list_sources", _call_sources, "GET /v4/sources"),
    ("update_source", _call_pause, "PUT /v4/sources/1"),
    ("update_source", _call_unpause, "PUT /v4/sources/1"),
    ("stop", _call_stop, "DELETE /v4/sources/1/sync"),
    ("extractions", _call_extractions, "GET /v4/116078/extractions"),
    ("loads", _call_loads, "GET /v4/116078/loads"),
    ("logs", _call_logs, "GET /v4/116078/extractions/116078.1.sync.seeded"),
]
RETRIED_IDS = [f"{endpoint}-{call.__name__[6:]}" for endpoint, call, _ in RETRIED_CALLS]


def _seed_one(sim: StitchSimulator) -> None:
    sim.add_source(1)
    sim.seed_completed(1, job_name="116078.1.sync.seeded")


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
    async with credentials.get_client() as client:
        with pytest.raises(StitchAPIError) as caught:
            await call(client)

    error = caught.value
    assert error.status_code == 503
    assert error.attempts == 3
    assert error.call == shown
    assert shown in str(error) and "after 3 attempts" in str(error)
    assert len(sim.requests_for(endpoint)) == 3
    assert_no_token(error)


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
    async with credentials.get_client() as client:
        with pytest.raises(StitchAPIError) as caught:
            await client.get_source(1)

    error = caught.value
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
    assert_no_token(error)


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
    [("list_sources", _call_sources), ("extractions", _call_extractions), ("loads", _call_loads)],
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
    async with credentials.get_client() as client:
        with pytest.raises(StitchTransportError) as caught:
            await client.list_extractions()
    error = caught.value
    assert error.call == "GET /v4/116078/extractions"
    assert error.attempts == 2
    assert_no_token(error)


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
    async with credentials.get_client() as client:
        with pytest.raises(StitchAPIError) as caught:
            await client.get_source(1)

    assert type(caught.value) is error_type
    assert caught.value.status_code == code
    assert caught.value.attempts == 1
    assert len(sim.requests_for("source")) == 1
    assert_no_token(caught.value)


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
    async with credentials.get_client() as client:
        with pytest.raises(StitchAPIError) as caught:
            await client.start_replication_job(1)

    assert type(caught.value) is error_type
    assert caught.value.attempts == 1
    assert caught.value.call == "POST /v4/sources/1/sync"
    assert len(sim.requests_for("trigger")) == 1
    started = sim.jobs_started(1)
    assert len(started) == (1 if fault.kind == "start_then_drop" else 0)
    assert_no_token(caught.value)


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
