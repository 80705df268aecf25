"""Tests of the Stitch simulator itself, over real HTTP with plain httpx (no Prefect)."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from prefect_stitch.simulator import (
    DELETED_SOURCE_MESSAGE,
    EXTRACTION_NOT_FOUND_MESSAGE,
    SERVER_ERROR_MESSAGE,
    UNAUTHORIZED_MESSAGE,
    Fault,
    Outcome,
    StitchSimulator,
)

TOKEN = "sim-token"
CLIENT = 116078
JOB_NAME = re.compile(
    r"^116078\.(\d+)\.sync\.[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$"
)
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
UNAUTHORIZED = {"error": {"type": "unauthorized", "message": UNAUTHORIZED_MESSAGE}}


@pytest.fixture
def sim(stitch_simulator: StitchSimulator) -> StitchSimulator:
    # Local on purpose: these tests only need the package's own pytest plugin.
    return stitch_simulator


@pytest.fixture
def api(sim: StitchSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=sim.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    ) as client:
        yield client


def extractions(api: httpx.Client, page: int = 1) -> dict[str, Any]:
    response = api.get(f"/v4/{CLIENT}/extractions", params={"page": page})
    assert response.status_code == 200
    return response.json()


def record_of(api: httpx.Client, source_id: int) -> dict[str, Any] | None:
    found = [r for r in extractions(api)["data"] if r["source_id"] == source_id]
    return found[0] if found else None


# -- auth -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}],
    ids=["missing", "wrong-token", "no-scheme", "basic"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v4/sources/1001/sync"),
        ("GET", "/v4/sources"),
        ("GET", f"/v4/{CLIENT}/extractions"),
        ("GET", f"/v4/{CLIENT}/loads"),
    ],
)
def test_bad_or_missing_token_is_401(
    sim: StitchSimulator, headers: dict[str, str], method: str, path: str
) -> None:
    sim.add_source(1001)
    response = httpx.request(method, sim.base_url + path, headers=headers)
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED
    assert sim.jobs_started() == []


def test_jobs_endpoints_reject_another_client_id(sim: StitchSimulator, api: httpx.Client) -> None:
    for path in ("/v4/999/extractions", "/v4/999/loads", "/v4/999/extractions/x.y.sync.z"):
        response = api.get(path)
        assert response.status_code == 401, path
        assert response.json() == UNAUTHORIZED


def test_bearer_scheme_is_case_insensitive(sim: StitchSimulator) -> None:
    response = httpx.get(sim.base_url + "/v4/sources", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200


# -- start / stop ---------------------------------------------------------------------------


def test_trigger_returns_job_name(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.add_source(1001)
    response = api.post("/v4/sources/1001/sync")
    assert response.status_code == 200
    job_name = response.json()["job_name"]
    assert JOB_NAME.match(job_name)
    assert sim.jobs_started() == [job_name]
    assert sim.running_job(1001)["job_name"] == job_name  # type: ignore[index]
    assert sim.jobs(1001)[0]["triggered_via"] == "api"


def test_already_running_is_200_with_error_body(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.add_source(1001, outcomes=[Outcome.success(None)])
    first = api.post("/v4/sources/1001/sync").json()["job_name"]
    response = api.post("/v4/sources/1001/sync")
    assert response.status_code == 200
    assert response.json() == {
        "error": {
            "type": "already_running",
            "message": "Did not create job for client-id: 116078; connection-id: 1001"
            " because one already exists",
        }
    }
    assert sim.jobs_started() == [first]


def test_job_started_by_the_scheduler_blocks_a_trigger(
    sim: StitchSimulator, api: httpx.Client
) -> None:
    sim.add_source(1001, outcomes=[Outcome.success(None)])
    scheduled = sim.start_job(1001)
    assert api.post("/v4/sources/1001/sync").json()["error"]["type"] == "already_running"
    assert sim.jobs_started() == []
    assert sim.jobs(1001)[0] | {"started_at": None} == {
        "job_name": scheduled,
        "source_id": 1001,
        "outcome": "success",
        "phase": None,
        "exit_status": None,
        "started_at": None,
        "completed_at": None,
        "running": True,
        "stopped": False,
        "triggered_via": "scheduler",
    }


def test_unknown_and_deleted_sources_are_400(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.add_source(1002, deleted=True)
    unknown = api.post("/v4/sources/1001/sync")
    assert unknown.status_code == 400
    assert unknown.json() == {
        "error": {
            "type": "invalid_source",
            "message": "Unable to locate source(1001) for client (116078)",
        }
    }
    deleted = api.post("/v4/sources/1002/sync")
    assert deleted.status_code == 400
    assert deleted.json() == {
        "error": {"type": "invalid_source", "message": DELETED_SOURCE_MESSAGE}
    }
    assert api.post("/v4/sources/abc/sync").status_code == 404


def test_paused_source_can_be_started_manually(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.add_source(1001, paused=True)
    assert "job_name" in api.post("/v4/sources/1001/sync").json()
    assert api.get("/v4/sources/1001").json()["paused_at"] is not None


def test_stop_turns_the_running_job_into_a_terminated_record(
    sim: StitchSimulator, api: httpx.Client
) -> None:
    sim.add_source(1001, outcomes=[Outcome.success(None)])
    job_name = api.post("/v4/sources/1001/sync").json()["job_name"]
    response = api.delete("/v4/sources/1001/sync")
    assert (response.status_code, response.json()) == (200, {"status": 200})
    record = record_of(api, 1001)
    assert record is not None
    assert record["job_name"] == job_name
    assert ISO.match(record["completion_time"])
    for phase in ("discovery", "tap", "target"):
        assert record[f"{phase}_exit_status"] is None
        assert record[f"{phase}_description"] == "Terminated"
    assert sim.jobs(1001)[0]["stopped"] is True
    assert sim.running_job(1001) is None


@pytest.mark.parametrize(("idle_status", "expected_body_key"), [(200, "status"), (404, "error")])
def test_stop_when_nothing_runs(
    stitch_simulator_factory: Any, idle_status: int, expected_body_key: str
) -> None:
    sim = stitch_simulator_factory(stop_when_idle_status=idle_status)
    sim.add_source(1001)
    response = httpx.delete(
        sim.base_url + "/v4/sources/1001/sync", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == idle_status
    assert expected_body_key in response.json()


def test_stop_unknown_source_is_400(sim: StitchSimulator, api: httpx.Client) -> None:
    response = api.delete("/v4/sources/4242/sync")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_source"


def test_concurrent_triggers_start_exactly_one_job(sim: StitchSimulator) -> None:
    sim.add_source(1001, outcomes=[Outcome.success(None)])
    bodies: list[dict[str, Any]] = []

    def trigger() -> None:
        response = httpx.post(
            sim.base_url + "/v4/sources/1001/sync", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        bodies.append(response.json())

    threads = [threading.Thread(target=trigger) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum("job_name" in body for body in bodies) == 1
    assert sum(body.get("error", {}).get("type") == "already_running" for body in bodies) == 11


# -- extractions ------------------------------------------------------------------------------


def test_previous_record_is_listed_while_the_job_runs(
    sim: StitchSimulator, api: httpx.Client
) -> None:
    sim.add_source(1001, outcomes=[Outcome.success(duration_seconds=0.2)])
    previous = sim.seed_completed(1001, started_ago_seconds=7200, duration_seconds=120)
    job_name = api.post("/v4/sources/1001/sync").json()["job_name"]
    running = record_of(api, 1001)
    assert running is not None
    assert running["job_name"] == previous
    time.sleep(0.3)
    done = record_of(api, 1001)
    assert done is not None
    assert done["job_name"] == job_name
    assert done == done | {
        "stitch_client_id": CLIENT,
        "source_id": 1001,
        "source_type": "tap-hubspot",
        "discovery_exit_status": 0,
        "discovery_description": None,
        "tap_exit_status": 0,
        "tap_description": None,
        "target_exit_status": 0,
        "target_description": None,
    }
    assert ISO.match(done["start_time"]) and ISO.match(done["completion_time"])
    assert done["start_time"] <= done["completion_time"]


def test_no_record_before_the_first_completion(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.add_source(1001, outcomes=[Outcome.success(None)])
    api.post("/v4/sources/1001/sync")
    assert extractions(api) == {"data": [], "page": 1, "total": 0, "links": {}}


def test_list_running_jobs_variant(stitch_simulator_factory: Any) -> None:
    sim = stitch_simulator_factory(list_running_jobs=True)
    sim.add_source(1001, outcomes=[Outcome.success(None)])
    sim.seed_completed(1001)
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        job_name = api.post("/v4/sources/1001/sync").json()["job_name"]
        record = record_of(api, 1001)
    assert record is not None
    assert record["job_name"] == job_name
    assert record["completion_time"] is None
    assert record["tap_exit_status"] is None and record["tap_description"] is None


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (Outcome.success(), {"discovery": (0, None), "tap": (0, None), "target": (0, None)}),
        (
            Outcome.failure("tap", exit_status=-9, description="killed"),
            {"discovery": (0, None), "tap": (-9, "killed"), "target": (0, None)},
        ),
        (
            Outcome.failure("discovery", description="no creds"),
            {"discovery": (1, "no creds"), "tap": (0, None), "target": (0, None)},
        ),
        (
            Outcome.failure("target", exit_status=2, description="load"),
            {"discovery": (0, None), "tap": (0, None), "target": (2, "load")},
        ),
        (
            Outcome.terminated(),
            {p: (None, "Terminated") for p in ("discovery", "tap", "target")},
        ),
    ],
    ids=["success", "tap-9", "discovery", "target", "terminated"],
)
def test_outcomes_become_records(
    sim: StitchSimulator,
    api: httpx.Client,
    outcome: Outcome,
    expected: dict[str, tuple[int | None, str | None]],
) -> None:
    sim.add_source(1001, outcomes=[dataclasses.replace(outcome, duration_seconds=None)])
    api.post("/v4/sources/1001/sync")
    sim.finish_job(1001)
    record = record_of(api, 1001)
    assert record is not None
    assert ISO.match(record["completion_time"])
    for phase, (status, description) in expected.items():
        assert record[f"{phase}_exit_status"] == status
        assert record[f"{phase}_description"] == description


def test_outcomes_are_consumed_in_order_and_the_last_repeats(
    sim: StitchSimulator, api: httpx.Client
) -> None:
    sim.add_source(
        1001, outcomes=[Outcome.failure("tap", duration_seconds=None), Outcome.success(None)]
    )
    seen = []
    for _ in range(3):
        api.post("/v4/sources/1001/sync")
        sim.finish_job(1001)
        seen.append(record_of(api, 1001)["tap_exit_status"])  # type: ignore[index]
    assert seen == [1, 0, 0]
    sim.set_outcomes(1001, [Outcome.terminated(None)])
    api.post("/v4/sources/1001/sync")
    sim.finish_job(1001)
    assert record_of(api, 1001)["tap_description"] == "Terminated"  # type: ignore[index]


def test_tap_field_variant(stitch_simulator_factory: Any) -> None:
    sim = stitch_simulator_factory(tap_field="tap_name")
    sim.add_source(1001, type="platform.github")
    sim.seed_completed(1001)
    response = httpx.get(
        f"{sim.base_url}/v4/{CLIENT}/extractions", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    record = response.json()["data"][0]
    assert record["tap_name"] == "tap-github"
    assert "source_type" not in record


def test_clock_offset_skews_timestamps(stitch_simulator_factory: Any) -> None:
    sim = stitch_simulator_factory(clock_offset_seconds=-7200)
    sim.add_source(1001)
    sim.seed_completed(1001, started_ago_seconds=10, duration_seconds=5)
    record = sim.jobs(1001)[0]
    started = time.mktime(time.strptime(record["started_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert started - time.mktime(time.gmtime()) < -7000


def test_records_older_than_60_days_are_not_listed(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.add_source(1001)
    sim.seed_completed(1001, started_ago_seconds=61 * 24 * 3600)
    assert extractions(api)["total"] == 0


def test_pagination_with_150_sources(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.add_sources(range(150, 0, -1))
    for source_id in range(1, 151):
        sim.seed_completed(source_id)
    first = extractions(api)
    assert (first["page"], first["total"], len(first["data"])) == (1, 150, 100)
    assert first["links"] == {"next": f"/v4/{CLIENT}/extractions?page=2"}
    assert [r["source_id"] for r in first["data"]] == list(range(1, 101))
    second = api.get(first["links"]["next"]).json()
    assert [r["source_id"] for r in second["data"]] == list(range(101, 151))
    assert "next" not in second["links"]
    assert second["links"] == {"previous": f"/v4/{CLIENT}/extractions?page=1"}
    beyond = extractions(api, page=3)
    assert beyond["data"] == [] and "next" not in beyond["links"]
    assert api.get(f"/v4/{CLIENT}/extractions", params={"page": "zero"}).status_code == 400


def test_single_page_has_empty_links(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.add_sources(range(1, 101))
    for source_id in range(1, 101):
        sim.seed_completed(source_id)
    page = extractions(api)
    assert (page["total"], page["links"]) == (100, {})


# -- logs -------------------------------------------------------------------------------------


def test_logs_redirect_to_a_presigned_url_on_another_origin(
    sim: StitchSimulator, api: httpx.Client
) -> None:
    sim.add_source(1001, outcomes=[Outcome.failure("tap", exit_status=-9, duration_seconds=None)])
    sim.add_source(1002, log_lines=5)
    job_name = api.post("/v4/sources/1001/sync").json()["job_name"]
    sim.finish_job(1001)
    response = api.get(f"/v4/{CLIENT}/extractions/{job_name}")
    assert response.status_code == 302
    assert response.content == b"" and response.headers["content-length"] == "0"
    location = httpx.URL(response.headers["location"])
    assert location.port != httpx.URL(sim.base_url).port
    assert location.path == f"/com-stitchdata-prod-platform-pod-logs/{job_name}"
    assert location.params["x-amz-security-token"]

    download = httpx.get(location)
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/plain")
    lines = download.text.splitlines()
    assert len(lines) == 20
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}Z tap - INFO \[line 2/20\]", lines[1])
    assert lines[-1].endswith(
        "main - INFO Exit status is: Discovery succeeded. Tap failed with code -9."
        " Target succeeded."
    )

    with_auth = httpx.get(location, headers={"Authorization": f"Bearer {TOKEN}"})
    assert with_auth.status_code == 400
    assert "<Code>InvalidArgument</Code>" in with_auth.text
    assert "Only one auth mechanism allowed" in with_auth.text
    forged = httpx.get(location.copy_set_param("x-amz-security-token", "forged"))
    assert forged.status_code == 403 and "<Code>AccessDenied</Code>" in forged.text
    assert httpx.get(location.copy_remove_param("x-amz-security-token")).status_code == 403

    # httpx drops Authorization on a cross-origin redirect, as S3 requires.
    followed = api.get(f"/v4/{CLIENT}/extractions/{job_name}", follow_redirects=True)
    assert followed.status_code == 200 and followed.text.count("\n") == 20
    assert [r.authorization_present for r in sim.requests_for("log_download")] == [
        False,
        True,
        False,
        False,
        False,
    ]


def test_logs_of_unknown_job_is_404(sim: StitchSimulator, api: httpx.Client) -> None:
    response = api.get(f"/v4/{CLIENT}/extractions/{CLIENT}.1.sync.nope")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"type": "not_found", "message": EXTRACTION_NOT_FOUND_MESSAGE}
    }


def test_logs_of_a_running_job_have_no_summary(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.add_source(1001, outcomes=[Outcome.success(None)], log_lines=4)
    job_name = api.post("/v4/sources/1001/sync").json()["job_name"]
    text = api.get(f"/v4/{CLIENT}/extractions/{job_name}", follow_redirects=True).text
    assert len(text.splitlines()) == 4
    assert "Exit status is" not in text


# -- loads ------------------------------------------------------------------------------------


def test_loads_list_streams_of_successful_jobs(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.add_source(1001, name="hubspot_main", streams=("contacts", "deals"))
    sim.add_source(1002)
    sim.add_source(1003, name="broken")
    sim.seed_completed(1001)
    sim.seed_completed(1002, Outcome.failure("tap"))
    sim.seed_completed(1003, Outcome.success(load_error="disk full"))
    body = api.get(f"/v4/{CLIENT}/loads").json()
    assert (body["page"], body["total"], body["links"]) == (1, 4, {})
    by_key = {(r["source_name"], r["stream_name"]): r for r in body["data"]}
    assert set(by_key) == {
        ("hubspot_main", "contacts"),
        ("hubspot_main", "deals"),
        ("broken", "accounts"),
        ("broken", "contacts"),
    }
    completion = record_of(api, 1001)["completion_time"]  # type: ignore[index]
    assert by_key["hubspot_main", "deals"] == {
        "stitch_client_id": CLIENT,
        "source_name": "hubspot_main",
        "stream_name": "deals",
        "last_batch_loaded_at": completion,
        "error_state": None,
    }
    broken = by_key["broken", "accounts"]
    assert broken["last_batch_loaded_at"] is None
    assert broken["error_state"]["notification_data"]["warehouse_message"] == "disk full"


# -- sources ----------------------------------------------------------------------------------


def test_sources_endpoints(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.add_source(2, deleted=True)
    sim.add_source(1, display_name="HubSpot prod")
    listed = api.get("/v4/sources").json()
    assert [s["id"] for s in listed] == [1, 2]
    one = api.get("/v4/sources/1").json()
    assert one == one | {
        "id": 1,
        "name": "hubspot_1",
        "display_name": "HubSpot prod",
        "type": "platform.hubspot",
        "stitch_client_id": CLIENT,
        "deleted_at": None,
        "paused_at": None,
        "system_paused_at": None,
        "properties": {},
    }
    assert one["schedule"]["type"] == "interval" and ISO.match(one["schedule"]["next_fire_time"])
    assert one["report_card"]["current_step_type"] == "fully_configured"
    deleted = api.get("/v4/sources/2").json()
    assert ISO.match(deleted["deleted_at"]) and deleted["schedule"] is None
    missing = api.get("/v4/sources/3")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"type": "not_found", "message": "source not found (3)"}}


def test_pause_and_unpause(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.add_source(1)
    paused = api.put("/v4/sources/1", json={"paused_at": "2020-01-01T00:00:00Z"})
    assert paused.status_code == 200
    assert ISO.match(paused.json()["paused_at"]) and paused.json()["schedule"] is None
    assert api.get("/v4/sources/1").json()["paused_at"] == paused.json()["paused_at"]
    unpaused = api.put("/v4/sources/1", json={"paused_at": None}).json()
    assert unpaused["paused_at"] is None and unpaused["schedule"] is not None

    unknown = api.put("/v4/sources/9", json={"paused_at": None})
    assert unknown.status_code == 400
    assert unknown.json() == {"error": "InvalidId", "data": {"message": "source not found (9)"}}
    invalid = api.put("/v4/sources/1", content=b"{not json")
    assert invalid.status_code == 400 and invalid.json()["error"] == "InvalidBody"


def test_unknown_paths_and_methods_are_404(sim: StitchSimulator, api: httpx.Client) -> None:
    for method, path in [("GET", "/v4/nope"), ("PATCH", "/v4/sources/1"), ("GET", "/")]:
        response = api.request(method, path)
        assert response.status_code == 404, path
        assert response.json()["error"]["type"] == "not_found"
    assert {r.endpoint for r in sim.requests} == {"unknown"}


# -- faults -----------------------------------------------------------------------------------


def test_status_fault_default_body_then_normal(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.add_source(1001)
    sim.inject("trigger", Fault.status(500), times=2)
    for _ in range(2):
        response = api.post("/v4/sources/1001/sync")
        assert response.status_code == 500
        assert response.json() == {
            "error": {"type": "internal_server_error", "message": SERVER_ERROR_MESSAGE}
        }
    assert "job_name" in api.post("/v4/sources/1001/sync").json()
    assert [r.fault for r in sim.requests_for("trigger")] == ["status", "status", None]
    assert [r.status for r in sim.requests_for("trigger")] == [500, 500, 200]
    assert len(sim.jobs_started()) == 1


def test_status_fault_with_html_body_and_headers(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.inject("extractions", Fault.status(502, body="<html>Bad Gateway</html>"))
    sim.inject("extractions", Fault.status(429, body={"oops": 1}, headers={"Retry-After": "3"}))
    html = api.get(f"/v4/{CLIENT}/extractions")
    assert html.status_code == 502 and html.headers["content-type"].startswith("text/html")
    assert html.text == "<html>Bad Gateway</html>"
    limited = api.get(f"/v4/{CLIENT}/extractions")
    assert (limited.status_code, limited.json()) == (429, {"oops": 1})
    assert limited.headers["retry-after"] == "3"
    assert api.get(f"/v4/{CLIENT}/extractions").status_code == 200


def test_drop_fault_closes_without_response(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.inject("list_sources", Fault.drop())
    with pytest.raises(httpx.RemoteProtocolError):
        api.get("/v4/sources")
    assert api.get("/v4/sources").status_code == 200
    dropped = sim.requests_for("list_sources")[0]
    assert (dropped.status, dropped.fault) == (None, "drop")


def test_slow_fault_times_out_the_client(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.inject("source", Fault.slow(0.4))
    sim.add_source(1)
    with pytest.raises(httpx.ReadTimeout):
        api.get("/v4/sources/1", timeout=0.1)
    sim.inject("source", Fault.slow(0.1))
    started = time.monotonic()
    assert api.get("/v4/sources/1").status_code == 200
    assert time.monotonic() - started >= 0.1


def test_malformed_json_fault(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.inject("loads", Fault.malformed_json())
    response = api.get(f"/v4/{CLIENT}/loads")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_wrong_shape_fault(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.inject("extractions", Fault.wrong_shape())
    sim.inject("list_sources", Fault.wrong_shape())
    assert api.get(f"/v4/{CLIENT}/extractions").json() == {"unexpected": [1, 2]}
    assert api.get("/v4/sources").json() == [1, 2]


def test_start_then_drop_starts_the_job_but_the_client_never_learns_it(
    sim: StitchSimulator, api: httpx.Client
) -> None:
    sim.add_source(1001, outcomes=[Outcome.success(None)])
    sim.inject("trigger", Fault.start_then_drop())
    with pytest.raises(httpx.RemoteProtocolError):
        api.post("/v4/sources/1001/sync")
    [job_name] = sim.jobs_started()
    assert sim.running_job(1001)["job_name"] == job_name  # type: ignore[index]
    retry = api.post("/v4/sources/1001/sync")
    assert retry.json()["error"]["type"] == "already_running"


def test_mutate_fault_moves_records_between_pages(
    stitch_simulator_factory: Any,
) -> None:
    sim = stitch_simulator_factory(page_size=10)
    sim.add_sources(range(11, 26))
    for source_id in range(11, 26):
        sim.seed_completed(source_id)

    def add_low_ids(s: StitchSimulator) -> None:
        for source_id in (1, 2, 3):
            s.add_source(source_id)
            s.seed_completed(source_id)

    sim.inject("extractions", Fault.mutate(add_low_ids))
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        first = api.get(f"/v4/{CLIENT}/extractions").json()
        second = api.get(first["links"]["next"]).json()
    assert [r["source_id"] for r in first["data"]] == list(range(11, 21))
    assert first["total"] == 15 and second["total"] == 18
    assert [r["source_id"] for r in second["data"]] == [18, 19, 20, 21, 22, 23, 24, 25]


def test_faults_are_fifo_per_endpoint(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.inject("list_sources", Fault.status(503))
    sim.inject("list_sources", Fault.status(504))
    sim.inject("source", Fault.status(500))
    assert [api.get("/v4/sources").status_code for _ in range(3)] == [503, 504, 200]
    with pytest.raises(ValueError, match="unknown endpoint"):
        sim.inject("nope", Fault.drop())


def test_log_download_faults(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.add_source(1)
    job_name = sim.seed_completed(1)
    sim.inject("log_download", Fault.status(500))
    response = api.get(f"/v4/{CLIENT}/extractions/{job_name}", follow_redirects=True)
    assert response.status_code == 500


# -- request log ------------------------------------------------------------------------------


def test_request_log_never_holds_the_token(stitch_simulator_factory: Any) -> None:
    secret = "ac_s3cr3t-token-value"
    sim = stitch_simulator_factory(token=secret)
    sim.add_source(1)
    headers = {"Authorization": f"Bearer {secret}", "X-Echo": secret}
    httpx.post(f"{sim.base_url}/v4/sources/1/sync", headers=headers)
    httpx.get(f"{sim.base_url}/v4/sources?token={secret}", headers={"Authorization": "Bearer no"})
    httpx.get(f"{sim.base_url}/_simulator/requests")
    requests = sim.requests
    assert [r.endpoint for r in requests] == ["trigger", "list_sources"]
    assert [r.authorization_valid for r in requests] == [True, False]
    assert all(r.authorization_present for r in requests)
    assert requests[0].headers["authorization"] == "Bearer ***"
    assert requests[0].headers["x-echo"] == "***"
    assert requests[1].query == {"token": "***"}
    assert secret not in repr(requests) and secret not in repr(sim)
    control = httpx.get(f"{sim.base_url}/_simulator/requests")
    assert secret not in control.text and len(control.json()) == 2
    assert requests[0].at <= requests[1].at and requests[0].wall > 0


# -- rate window ------------------------------------------------------------------------------


def test_rate_window_counts_jobs_requests_only(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.add_source(1)
    job_name = sim.seed_completed(1)
    for _ in range(3):
        api.get(f"/v4/{CLIENT}/extractions")
    api.get(f"/v4/{CLIENT}/loads")
    api.get(f"/v4/{CLIENT}/extractions/{job_name}", follow_redirects=True)  # + log_download
    api.get("/v4/sources")
    api.post("/v4/sources/1/sync")
    assert sim.jobs_requests_in_window() == 5
    assert sim.jobs_requests_in_window(period=1e-9) == 1
    assert sim.rate_limit_violations == 0


def test_rate_window_violations_without_enforcement(stitch_simulator_factory: Any) -> None:
    sim = stitch_simulator_factory(jobs_rate_limit=2, jobs_rate_period_seconds=60)
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        statuses = [api.get(f"/v4/{CLIENT}/loads").status_code for _ in range(4)]
    assert statuses == [200] * 4
    assert sim.rate_limit_violations == 2
    assert sim.jobs_requests_in_window() == 4


def test_enforced_rate_limit_answers_429_with_retry_after(stitch_simulator_factory: Any) -> None:
    sim = stitch_simulator_factory(
        jobs_rate_limit=3, jobs_rate_period_seconds=0.4, enforce_rate_limit=True
    )
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        statuses = [api.get(f"/v4/{CLIENT}/extractions").status_code for _ in range(3)]
        limited = api.get(f"/v4/{CLIENT}/loads")
        assert statuses == [200, 200, 200]
        assert limited.status_code == 429
        assert limited.json()["error"]["type"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        assert api.get("/v4/sources").status_code == 200  # not a jobs endpoint
        time.sleep(0.45)
        assert api.get(f"/v4/{CLIENT}/extractions").status_code == 200
    assert sim.rate_limit_violations == 1
    assert sim.jobs_requests_in_window(period=0.4) == 4


# -- control API, lifecycle, CLI, fixtures ----------------------------------------------------


def test_control_api_drives_a_simulator(sim: StitchSimulator, api: httpx.Client) -> None:
    control = httpx.Client(base_url=sim.base_url + "/_simulator")
    created = control.post(
        "/sources",
        json={
            "source_id": 1001,
            "outcomes": [
                {"kind": "failure", "phase": "tap", "exit_status": -9},
                {"kind": "success"},
            ],
            "streams": ["orders"],
        },
    )
    assert created.status_code == 201 and created.json()["id"] == 1001
    assert control.post("/sources", json={"source_id": 1002, "bogus": 1}).status_code == 400
    assert control.post(
        "/faults", json={"endpoint": "trigger", "fault": {"kind": "status", "code": 502}}
    ).json() == {"queued": 1}
    assert api.post("/v4/sources/1001/sync").status_code == 502
    job_name = api.post("/v4/sources/1001/sync").json()["job_name"]
    jobs = control.get("/jobs").json()
    assert [(j["job_name"], j["outcome"], j["exit_status"]) for j in jobs] == [
        (job_name, "failure", -9)
    ]
    assert control.post("/finish_job", json={"source_id": 1001}).status_code == 200
    assert control.post("/finish_job", json={"source_id": 1001}).status_code == 400
    recorded = control.get("/requests").json()
    assert [(r["endpoint"], r["status"], r["fault"]) for r in recorded] == [
        ("trigger", 502, "status"),
        ("trigger", 200, None),
    ]
    assert control.get("/rate").json()["max_in_window"] == 0
    assert control.post("/reset").json() == {"status": "reset"}
    assert sim.jobs() == [] and sim.requests == [] and api.get("/v4/sources").json() == []
    assert control.get("/nope").status_code == 404
    control.close()


def test_stop_frees_the_port_and_closes_keepalive_connections() -> None:
    sim = StitchSimulator().start()
    port = sim.port
    client = httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert client.get("/v4/sources").status_code == 200  # keeps a connection open
    sim.stop()
    sim.stop()  # idempotent
    assert not sim.running
    with StitchSimulator(port=port) as again:  # the port is free for a new simulator
        assert again.port == port
    with pytest.raises(httpx.TransportError):
        client.get("/v4/sources")
    client.close()
    with pytest.raises(RuntimeError):
        _ = sim.base_url


def test_factory_fixture_starts_independent_simulators(stitch_simulator_factory: Any) -> None:
    first = stitch_simulator_factory()
    second = stitch_simulator_factory(client_id=7, token="other")
    assert first.base_url != second.base_url
    response = httpx.get(f"{second.base_url}/v4/7/loads", headers={"Authorization": "Bearer other"})
    assert response.status_code == 200


def test_cli_serves_and_prints_requests_without_the_token() -> None:
    secret = "cli-secret-token"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect_stitch.simulator",
            "--port",
            "0",
            "--token",
            secret,
            "--source",
            "1001:success:0.1",
            "--source",
            "1002:tap=-9:none",
            "--page-size",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        match = re.search(r"STITCH_BASE_URL=(http://127\.0\.0\.1:\d+)", banner)
        assert match, banner
        assert f"STITCH_CLIENT_ID={CLIENT}" in banner
        base_url = match.group(1)
        headers = {"Authorization": f"Bearer {secret}"}
        started = httpx.post(f"{base_url}/v4/sources/1001/sync", headers=headers)
        assert JOB_NAME.match(started.json()["job_name"])
        failing = httpx.post(f"{base_url}/v4/sources/1002/sync", headers=headers)
        assert "job_name" in failing.json()
        time.sleep(0.15)
        page = httpx.get(f"{base_url}/v4/{CLIENT}/extractions", headers=headers).json()
        assert page["total"] == 1 and page["links"] == {}
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "POST /v4/sources/1001/sync -> 200" in output
    assert f"GET /v4/{CLIENT}/extractions -> 200" in output
    assert secret not in banner + output


def test_cli_rejects_bad_source_specs(capsys: pytest.CaptureFixture[str]) -> None:
    from prefect_stitch.simulator.__main__ import main, parse_source

    with pytest.raises(SystemExit) as exit_info:
        main(["--source", "1001:explode"])
    assert exit_info.value.code == 2
    assert "bad source spec" in capsys.readouterr().err
    assert parse_source("7:tap=-9:none")[1] == Outcome.failure("tap", -9, duration_seconds=None)
    assert parse_source("7")[1] == Outcome.success()
