"""Tests of the Stitch simulator itself, over real HTTP with plain httpx (no Prefect)."""

from __future__ import annotations

import calendar
import dataclasses
import email.utils
import json
import os
import re
import socket
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
    TERMINATED,
    UNAUTHORIZED_MESSAGE,
    Fault,
    Outcome,
    SimulatorState,
    StitchSimulator,
    StreamLoad,
)

TOKEN = "sim-token"
CLIENT = 116078
JOB_NAME = re.compile(
    r"^116078\.(\d+)\.sync\.[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$"
)
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
UNAUTHORIZED = {"error": {"type": "unauthorized", "message": UNAUTHORIZED_MESSAGE}}
PHASES = ("discovery", "tap", "target")
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}Z"
TERMINATED_SUMMARY = (
    "Exit status is: Discovery was terminated. Tap was terminated. Target was terminated."
)


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


@pytest.fixture
def control(sim: StitchSimulator) -> Iterator[httpx.Client]:
    """A client of the simulator's control API (unauthenticated)."""
    with httpx.Client(base_url=sim.base_url + "/_simulator") as client:
        yield client


def extractions(api: httpx.Client, page: int = 1) -> dict[str, Any]:
    response = api.get(f"/v4/{CLIENT}/extractions", params={"page": page})
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def record_of(api: httpx.Client, source_id: int) -> dict[str, Any] | None:
    found = [r for r in extractions(api)["data"] if r["source_id"] == source_id]
    return found[0] if found else None


def log_lines(api: httpx.Client, job_name: str) -> list[str]:
    response = api.get(f"/v4/{CLIENT}/extractions/{job_name}", follow_redirects=True)
    assert response.status_code == 200
    return response.text.splitlines()


def epoch(stamp: str) -> int:
    """Seconds since the epoch of a Stitch timestamp (`2020-06-19T15:09:38Z`)."""
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))


def log_epoch(line: str) -> float:
    """Seconds since the epoch of a log line's stamp (`2020-06-19 15:09:38,123Z ...`)."""
    day, clock = line.split(" ")[:2]
    whole, millis = clock.rstrip("Z").split(",")
    return calendar.timegm(time.strptime(f"{day} {whole}", "%Y-%m-%d %H:%M:%S")) + int(millis) / 1e3


def header_epoch(response: httpx.Response) -> float:
    return email.utils.parsedate_to_datetime(response.headers["date"]).timestamp()


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
        "stop_requested_at": None,
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
    for phase in PHASES:
        assert record[f"{phase}_exit_status"] is None
        assert record[f"{phase}_description"] is None  # told by the completion time alone
    assert sim.jobs(1001)[0]["stopped"] is True
    assert sim.jobs(1001)[0]["outcome"] == "terminated"
    assert sim.running_job(1001) is None
    assert log_lines(api, job_name)[-1].endswith(f"main - INFO {TERMINATED_SUMMARY}")


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
            {"discovery": (1, "no creds"), "tap": (None, None), "target": (None, None)},
        ),
        (
            Outcome.failure("target", exit_status=2, description="load"),
            {"discovery": (0, None), "tap": (0, None), "target": (2, "load")},
        ),
        (Outcome.terminated(), {p: (None, None) for p in PHASES}),
        (Outcome.terminated(description=TERMINATED), {p: (None, "Terminated") for p in PHASES}),
    ],
    ids=["success", "tap-9", "discovery", "target", "terminated", "terminated-docs-example"],
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
    sim.set_outcomes(1001, [Outcome.terminated(None, description=TERMINATED)])
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


def test_control_api_drives_a_simulator(
    sim: StitchSimulator, api: httpx.Client, control: httpx.Client
) -> None:
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


def test_state_settings_are_keyword_arguments_checked_like_a_signature() -> None:
    state = SimulatorState(token="t0k3n", jobs_rate_period_seconds=60)
    assert (state.token, state.client_id, state.jobs_rate_period_seconds) == ("t0k3n", CLIENT, 60.0)
    assert (state.page_size, state.tap_field, state.stop_delay_seconds) == (100, "source_type", 0.0)
    with pytest.raises(TypeError, match="bogus"):
        SimulatorState(bogus=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="page_size"):
        SimulatorState(page_size=0)
    with pytest.raises(ValueError, match="token"):
        StitchSimulator(token="")


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


# -- phases that never ran, terminated records (null, told by the completion time) ----------


@pytest.mark.parametrize(
    ("outcome", "expected", "summary"),
    [
        (
            Outcome.failure("discovery", 2, "no creds"),
            [(2, "no creds"), (None, None), (None, None)],
            "Discovery failed with code 2. Tap did not run. Target did not run.",
        ),
        (
            Outcome.failure("tap", -9, "Killed"),
            [(0, None), (-9, "Killed"), (0, None)],
            "Discovery succeeded. Tap failed with code -9. Target succeeded.",
        ),
        (
            Outcome.failure("target", 3, "bad column"),
            [(0, None), (0, None), (3, "bad column")],
            "Discovery succeeded. Tap succeeded. Target failed with code 3.",
        ),
        (
            Outcome.failure("tap", 1, "boom", later_exit_status=None),
            [(0, None), (1, "boom"), (None, None)],
            "Discovery succeeded. Tap failed with code 1. Target did not run.",
        ),
        (
            Outcome.failure("discovery", 1, "flaky", later_exit_status=0),
            [(1, "flaky"), (0, None), (0, None)],
            "Discovery failed with code 1. Tap succeeded. Target succeeded.",
        ),
        (
            Outcome.failure("tap", 1, "broken pipe", later_exit_status=-15),
            [(0, None), (1, "broken pipe"), (-15, None)],
            "Discovery succeeded. Tap failed with code 1. Target failed with code -15.",
        ),
    ],
    ids=["discovery", "tap", "target", "tap-later-null", "discovery-later-0", "tap-later-15"],
)
def test_phases_after_a_failure_in_the_record_and_the_log_summary(
    sim: StitchSimulator,
    api: httpx.Client,
    outcome: Outcome,
    expected: list[tuple[int | None, str | None]],
    summary: str,
) -> None:
    sim.add_source(1001, outcomes=[dataclasses.replace(outcome, duration_seconds=0.0)])
    job_name = api.post("/v4/sources/1001/sync").json()["job_name"]
    record = record_of(api, 1001)
    assert record is not None and record["job_name"] == job_name
    assert ISO.match(record["completion_time"])
    got = [(record[f"{p}_exit_status"], record[f"{p}_description"]) for p in PHASES]
    assert got == expected
    lines = log_lines(api, job_name)
    assert lines[-1].endswith(f"main - INFO Exit status is: {summary}")
    assert sum("Exit status is:" in line for line in lines) == 1


def test_failure_outcome_validation_and_json() -> None:
    with pytest.raises(ValueError, match="later_exit_status"):
        Outcome.failure("tap", later_exit_status="never")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="later_exit_status"):
        Outcome("success", later_exit_status=0)
    with pytest.raises(ValueError, match="only apply to a success"):
        Outcome("terminated", rows=(("a", 1),))
    assert Outcome.from_json({"kind": "discovery"}).later_exit_status == "auto"
    assert Outcome.from_json({"kind": "tap", "later_exit_status": None}).later_exit_status is None
    parsed = Outcome.from_json({"kind": "terminated", "description": "Terminated"})
    assert parsed == Outcome.terminated(description=TERMINATED)
    assert Outcome.from_json({"kind": "terminated"}).description is None


def test_terminated_outcome_is_told_by_its_completion_time_only(
    sim: StitchSimulator, api: httpx.Client
) -> None:
    sim.add_source(1, outcomes=[Outcome.terminated(0.0)])
    sim.add_source(2, outcomes=[Outcome.terminated(0.0, description=TERMINATED)])
    jobs = {i: api.post(f"/v4/sources/{i}/sync").json()["job_name"] for i in (1, 2)}
    records = {r["source_id"]: r for r in extractions(api)["data"]}
    for source_id, description in ((1, None), (2, "Terminated")):
        record = records[source_id]
        assert record["job_name"] == jobs[source_id]
        assert ISO.match(record["completion_time"])
        for phase in PHASES:
            assert record[f"{phase}_exit_status"] is None
            assert record[f"{phase}_description"] == description
        last = log_lines(api, jobs[source_id])[-1]
        assert last.endswith(f"main - INFO {TERMINATED_SUMMARY}")
        assert "succeeded" not in last and "failed with code" not in last


# -- Stitch's clock ----------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [5.0, -5.0, -600.0])
def test_date_header_and_every_timestamp_follow_stitchs_clock(
    stitch_simulator_factory: Any, offset: float
) -> None:
    sim = stitch_simulator_factory(clock_offset_seconds=offset)
    before = time.time()  # before the source exists: its created_at is in the exchange
    sim.add_source(1001, outcomes=[Outcome.success(0.0)])
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        trigger = api.post("/v4/sources/1001/sync")
        job_name = trigger.json()["job_name"]
        listing = api.get(f"/v4/{CLIENT}/extractions")
        loads = api.get(f"/v4/{CLIENT}/loads")
        paused = api.put("/v4/sources/1001", json={"paused_at": "2001-01-01T00:00:00Z"})
        unpaused = api.put("/v4/sources/1001", json={"paused_at": None})
        redirect = api.get(f"/v4/{CLIENT}/extractions/{job_name}")
        download = httpx.get(redirect.headers["location"])
        denied = httpx.get(redirect.headers["location"] + "x")  # the S3 stand-in's 403
        after = time.time()
    low, high = before + offset, after + offset  # Stitch's clock during the exchange
    responses = [trigger, listing, loads, paused, redirect, download, denied]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 302, 200, 403]
    for response in responses:
        assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", response.headers["date"])
        assert low - 1 < header_epoch(response) <= high  # whole seconds, floored
    [record] = listing.json()["data"]
    started, completed = epoch(record["start_time"]), epoch(record["completion_time"])
    assert low - 1 < started == completed <= high  # a zero-second job
    assert started <= header_epoch(listing) <= started + high - low + 1
    loaded = [epoch(r["last_batch_loaded_at"]) for r in loads.json()["data"]]
    assert loaded == [completed, completed]
    assert low - 1 < epoch(paused.json()["paused_at"]) <= high
    source = unpaused.json()
    assert low - 1 < epoch(source["created_at"]) <= high
    assert epoch(source["schedule"]["next_fire_time"]) == epoch(source["created_at"]) + 3600
    lines = download.text.splitlines()
    assert low - 1 < log_epoch(lines[0]) <= log_epoch(lines[-1]) <= high
    # The skew itself: Stitch's Date differs from this machine's clock by the offset.
    assert abs(header_epoch(listing) - (before + after) / 2 - offset) < 1 + (after - before)


# -- Stitch's scheduler -------------------------------------------------------------------------


def test_scheduler_chain_between_two_polls_is_settled_in_order(
    sim: StitchSimulator, api: httpx.Client
) -> None:
    sim.add_source(1001, outcomes=[Outcome.success(600)])
    ours = api.post("/v4/sources/1001/sync").json()["job_name"]
    t0 = epoch(sim.jobs(1001)[0]["started_at"])
    later = Outcome.failure("tap", 1, "the scheduler's job failed", duration_seconds=300)
    sim.run_after_current(1001, outcome=later, gap_seconds=60)  # ours ends +600: starts +660
    sim.schedule_job(1001, in_seconds=100)  # ours still runs: skipped
    sim.schedule_job(1001, in_seconds=700, outcome=Outcome.success(10))  # +660's job runs
    sim.schedule_job(1001, in_seconds=1000, outcome=Outcome.success(50))  # idle: starts
    assert record_of(api, 1001) is None
    sim.clock_offset_seconds += 2000  # 2000 s of Stitch's time pass between two polls

    record = record_of(api, 1001)
    jobs = sim.jobs(1001)
    assert [(j["triggered_via"], j["outcome"]) for j in jobs] == [
        ("api", "success"),
        ("scheduler", "failure"),
        ("scheduler", "success"),
    ]
    assert jobs[0]["job_name"] == ours and not any(j["running"] for j in jobs)
    times = [(epoch(j["started_at"]) - t0, epoch(j["completed_at"]) - t0) for j in jobs]
    assert times[:2] == [(0, 600), (660, 960)]  # exact historic times
    assert times[2][0] in (1000, 1001) and times[2][1] == times[2][0] + 50
    assert record is not None and record["job_name"] == jobs[2]["job_name"]
    assert (epoch(record["start_time"]) - t0, epoch(record["completion_time"]) - t0) == times[2]
    assert sim.scheduled_skips(1001) == 2
    # The replaced job's log still tells its own story, stamped within its own run.
    failed_log = log_lines(api, jobs[1]["job_name"])
    assert failed_log[-1].endswith("Tap failed with code 1. Target succeeded.")
    assert t0 + 660 <= log_epoch(failed_log[0]) <= log_epoch(failed_log[-1]) < t0 + 961


def test_run_after_current_replaces_our_record_between_two_polls(
    sim: StitchSimulator, api: httpx.Client
) -> None:
    sim.add_source(1001, outcomes=[Outcome.success(0.5)])
    sim.seed_completed(1001)
    theirs = Outcome.failure("target", 1, "later job", duration_seconds=0.05)
    sim.run_after_current(1001, outcome=theirs, gap_seconds=0.05)  # idle: arms on the next job
    ours = api.post("/v4/sources/1001/sync").json()["job_name"]
    first_poll = record_of(api, 1001)
    assert first_poll is not None and first_poll["job_name"] != ours  # the seeded record
    time.sleep(0.8)  # real time: ours ends, theirs starts and ends, before the next poll
    second_poll = record_of(api, 1001)
    assert second_poll is not None
    assert second_poll["job_name"] not in (ours, first_poll["job_name"])
    assert second_poll["target_exit_status"] == 1
    _seeded, our_job, their_job = sim.jobs(1001)
    assert our_job["job_name"] == ours and their_job["triggered_via"] == "scheduler"
    assert our_job["completed_at"] <= their_job["started_at"] <= their_job["completed_at"]
    # One-shot: the next job is not followed by another.
    api.post("/v4/sources/1001/sync")
    sim.clock_offset_seconds += 10
    assert [j["triggered_via"] for j in sim.jobs(1001)] == ["seed", "api", "scheduler", "api"]
    assert not any(j["running"] for j in sim.jobs(1001))


def test_scheduled_starts_are_skipped_while_busy_or_paused(
    sim: StitchSimulator, api: httpx.Client
) -> None:
    sim.add_source(1, outcomes=[Outcome.success(None)])
    sim.add_source(2, paused=True)
    api.post("/v4/sources/1/sync")
    sim.schedule_job(1)
    sim.schedule_job(2)  # Stitch's scheduler starts nothing for a paused source
    assert (sim.scheduled_skips(1), sim.scheduled_skips(2)) == (1, 1)
    assert [j["triggered_via"] for j in sim.jobs(1)] == ["api"] and sim.jobs(2) == []
    sim.finish_job(1)

    before = time.time() + sim.clock_offset_seconds
    sim.schedule_job(1, in_seconds=600, outcome=Outcome.success(None))
    fire = epoch(api.get("/v4/sources/1").json()["schedule"]["next_fire_time"])
    assert before + 599 < fire <= time.time() + sim.clock_offset_seconds + 600
    assert sim.running_job(1) is None
    sim.clock_offset_seconds += 601
    running = sim.running_job(1)
    assert running is not None and running["triggered_via"] == "scheduler"
    assert epoch(running["started_at"]) == fire
    assert api.post("/v4/sources/1/sync").json()["error"]["type"] == "already_running"
    assert sim.scheduled_skips(1) == 1
    with pytest.raises(ValueError, match="in_seconds"):
        sim.schedule_job(1, in_seconds=-1)
    with pytest.raises(KeyError):
        sim.schedule_job(99)


def test_start_job_outcome_override_does_not_consume_the_outcome_list(
    sim: StitchSimulator, api: httpx.Client
) -> None:
    sim.add_source(1, outcomes=[Outcome.failure("tap", duration_seconds=0.0), Outcome.success(0.0)])
    sim.start_job(1, Outcome.terminated(0.0))
    assert record_of(api, 1)["tap_exit_status"] is None  # type: ignore[index]
    api.post("/v4/sources/1/sync")
    assert record_of(api, 1)["tap_exit_status"] == 1  # type: ignore[index]
    with pytest.raises(ValueError, match="does not have"):
        sim.start_job(1, Outcome.success(rows={"nope": 1}))


# -- stop semantics ----------------------------------------------------------------------------


def test_stop_takes_effect_after_the_stop_delay(stitch_simulator_factory: Any) -> None:
    sim = stitch_simulator_factory(stop_delay_seconds=120)
    sim.add_source(1, outcomes=[Outcome.success(None)])
    sim.add_source(2, outcomes=[Outcome.success(30)])
    previous = sim.seed_completed(1)
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        ours = api.post("/v4/sources/1/sync").json()["job_name"]
        finishing = api.post("/v4/sources/2/sync").json()["job_name"]
        for source_id in (1, 2):
            response = api.delete(f"/v4/sources/{source_id}/sync")
            assert (response.status_code, response.json()) == (200, {"status": 200})
        stop_at = epoch(sim.jobs(1)[-1]["stop_requested_at"])
        assert api.post("/v4/sources/1/sync").json()["error"]["type"] == "already_running"
        assert record_of(api, 1)["job_name"] == previous  # type: ignore[index]

        sim.clock_offset_seconds += 119
        assert sim.running_job(1) is not None
        assert api.post("/v4/sources/1/sync").json()["error"]["type"] == "already_running"
        assert api.delete("/v4/sources/1/sync").json() == {"status": 200}  # does not re-arm
        # Source 2's job reached its own end (+30) before the stop (+120) took effect.
        done = record_of(api, 2)
        assert done is not None and done["job_name"] == finishing
        assert [done[f"{p}_exit_status"] for p in PHASES] == [0, 0, 0]
        assert sim.jobs(2)[0]["stopped"] is False

        sim.clock_offset_seconds += 2
        record = record_of(api, 1)
        assert record is not None and record["job_name"] == ours
        assert epoch(record["completion_time"]) == stop_at + 120
        assert [record[f"{p}_exit_status"] for p in PHASES] == [None] * 3
        assert [record[f"{p}_description"] for p in PHASES] == [None] * 3
        assert sim.jobs(1)[-1]["stopped"] is True
        assert "job_name" in api.post("/v4/sources/1/sync").json()


# -- streams, destinations -----------------------------------------------------------------------


def test_streams_endpoint(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.add_source(
        1, streams=("orders", "refunds", "customers"), selected=["orders"], deselected=["refunds"]
    )
    sim.add_source(2)
    response = api.get("/v4/sources/1/streams")
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body, list)
    assert [(s["stream_name"], s["selected"], s["metadata"]["selected"]) for s in body] == [
        ("orders", True, True),
        ("refunds", False, False),
        ("customers", None, None),  # never selected: Stitch says null
    ]
    assert all(s["tap_stream_id"] == s["stream_name"] for s in body)
    ids = [s["stream_id"] for s in body + api.get("/v4/sources/2/streams").json()]
    assert all(type(i) is int for i in ids) and len(set(ids)) == 5
    assert [s["selected"] for s in api.get("/v4/sources/2/streams").json()] == [True, True]
    missing = api.get("/v4/sources/9/streams")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"type": "not_found", "message": "source not found (9)"}}
    assert httpx.get(sim.base_url + "/v4/sources/1/streams").status_code == 401
    sim.inject("streams", Fault.status(502))
    assert api.get("/v4/sources/1/streams").status_code == 502
    assert [r.status for r in sim.requests_for("streams")] == [200, 200, 200, 404, 401, 502]
    assert sim.jobs_requests_in_window() == 0  # not a jobs endpoint
    with pytest.raises(ValueError, match="disjoint"):
        sim.add_source(3, streams=("a",), selected=["b"])


def test_destinations_endpoint(sim: StitchSimulator, api: httpx.Client) -> None:
    [default] = api.get("/v4/destinations").json()
    assert default == default | {
        "type": "postgres",
        "stitch_client_id": CLIENT,
        "paused_at": None,
        "system_paused_at": None,
        "deleted_at": None,
    }
    assert type(default["id"]) is int and ISO.match(default["created_at"])
    assert default["properties"]["database"] == "analytics"
    assert default["properties"]["port"] == "5432"  # form values are strings
    assert default["report_card"]["current_step_type"] == "fully_configured"
    sim.set_destination("snowflake", database="raw", host="acme.snowflakecomputing.com", port=443)
    [updated] = api.get("/v4/destinations").json()
    assert (updated["id"], updated["type"]) == (default["id"], "snowflake")
    assert updated["properties"] | {"database": "raw", "port": "443"} == updated["properties"]
    sim.remove_destination()
    assert api.get("/v4/destinations").json() == []
    control = httpx.post(
        sim.base_url + "/_simulator/destination", json={"type": "redshift", "database": "dw"}
    )
    assert control.json()["type"] == "redshift" and control.json()["id"] != default["id"]
    assert [d["type"] for d in api.get("/v4/destinations").json()] == ["redshift"]
    assert httpx.get(sim.base_url + "/v4/destinations").status_code == 401
    assert [r.status for r in sim.requests_for("destinations")] == [200, 200, 200, 200, 401]
    assert sim.jobs_requests_in_window() == 0


# -- loads per stream ----------------------------------------------------------------------------


def crm_loads(api: httpx.Client) -> dict[str, dict[str, Any]]:
    body = api.get(f"/v4/{CLIENT}/loads").json()
    return {r["stream_name"]: r for r in body["data"] if r["source_name"] == "crm"}


def test_loads_land_per_stream_after_their_delay(sim: StitchSimulator, api: httpx.Client) -> None:
    outcome = Outcome.success(
        0.0,
        rows={"accounts": 10, "contacts": 0, "deals": 5, "notes": 7, "tickets": 99},
        loads={
            "accounts": StreamLoad(delay_seconds=30),
            "deals": StreamLoad(delay_seconds=60, error="column too wide"),
            "notes": StreamLoad(never=True),
        },
    )
    sim.add_source(
        1001,
        name="crm",
        streams=("accounts", "contacts", "deals", "notes", "tickets"),
        deselected=["tickets"],
        outcomes=[outcome],
    )
    sim.seed_load(1001, "accounts", loaded_ago_seconds=7200)
    sim.seed_load(1001, "contacts", loaded_ago_seconds=3600, error="old failure")
    sim.seed_load(1001, "notes", loaded_ago_seconds=600)
    job_name = api.post("/v4/sources/1001/sync").json()["job_name"]
    completed = epoch(record_of(api, 1001)["completion_time"])  # type: ignore[index]

    first = crm_loads(api)
    assert set(first) == {"accounts", "contacts", "notes"}  # no attempt has landed yet
    assert epoch(first["accounts"]["last_batch_loaded_at"]) <= completed - 7199
    assert first["contacts"]["last_batch_loaded_at"] is None
    assert first["contacts"]["error_state"]["notification_data"]["warehouse_message"] == (
        "old failure"
    )
    sim.clock_offset_seconds += 31
    second = crm_loads(api)
    assert second["accounts"]["error_state"] is None
    assert epoch(second["accounts"]["last_batch_loaded_at"]) == completed + 30
    assert "deals" not in second
    assert (second["contacts"], second["notes"]) == (first["contacts"], first["notes"])
    sim.clock_offset_seconds += 30
    third = crm_loads(api)
    assert set(third) == {"accounts", "contacts", "deals", "notes"}  # tickets: not selected
    assert third["deals"]["last_batch_loaded_at"] is None
    error_state = third["deals"]["error_state"]
    assert error_state["notification_data"]["warehouse_message"] == "column too wide"
    assert error_state["exception_chain"][0]["message"] == "column too wide"
    assert third["notes"] == first["notes"]  # never=True: no attempt ever lands

    text = "\n".join(log_lines(api, job_name))
    tap = re.findall(
        rf'^{STAMP} tap - INFO replicated (\d+) records from "(\w+)" endpoint$', text, re.M
    )
    assert tap == [("10", "accounts"), ("5", "deals"), ("7", "notes")]
    target = re.findall(
        rf"^{STAMP} target - INFO com\.stitchdata\.target-stitch-avro\.flush-pipeline"
        r" - send-stream-record-count-impl (\w+)$",
        text,
        re.M,
    )
    assert target == ["accounts", "deals", "notes"]
    assert "contacts" not in text and "tickets" not in text


def test_default_rows_and_load_error_cover_every_selected_stream(
    sim: StitchSimulator, api: httpx.Client
) -> None:
    sim.add_source(
        1, name="crm", streams=("a", "b", "c"), selected=["a", "b"], outcomes=[Outcome.success(0)]
    )
    sim.add_source(
        2, name="erp", streams=("a", "b"), outcomes=[Outcome.success(0, load_error="disk full")]
    )
    jobs = [api.post(f"/v4/sources/{i}/sync").json()["job_name"] for i in (1, 2)]
    assert set(crm_loads(api)) == {"a", "b"}
    erp = [r for r in api.get(f"/v4/{CLIENT}/loads").json()["data"] if r["source_name"] == "erp"]
    assert [r["stream_name"] for r in erp] == ["a", "b"]
    assert all(r["last_batch_loaded_at"] is None for r in erp)
    assert {r["error_state"]["notification_data"]["warehouse_message"] for r in erp} == {
        "disk full"
    }
    named = re.findall(r'replicated (\d+) records from "(\w+)"', "\n".join(log_lines(api, jobs[0])))
    assert [stream for _, stream in named] == ["a", "b"] and all(int(n) > 0 for n, _ in named)


def test_failed_stopped_and_terminated_jobs_load_nothing(
    sim: StitchSimulator, api: httpx.Client
) -> None:
    sim.add_source(1, outcomes=[Outcome.failure("target", duration_seconds=0.0)])
    sim.add_source(2, outcomes=[Outcome.terminated(0.0)])
    sim.add_source(3, outcomes=[Outcome.success(None)])
    sim.add_source(4, name="ok", outcomes=[Outcome.success(0.0)])
    for source_id in (1, 2, 3, 4):
        api.post(f"/v4/sources/{source_id}/sync")
    api.delete("/v4/sources/3/sync")
    assert len(extractions(api)["data"]) == 4
    body = api.get(f"/v4/{CLIENT}/loads").json()
    assert [(r["source_name"], r["stream_name"]) for r in body["data"]] == [
        ("ok", "accounts"),
        ("ok", "contacts"),
    ]


def test_loads_are_sorted_and_paginated(stitch_simulator_factory: Any) -> None:
    sim = stitch_simulator_factory(page_size=3)
    sim.add_source(1, name="zeta", streams=("b", "a"))
    sim.add_source(2, name="alpha", streams=("a", "c"))
    sim.seed_completed(1)
    sim.seed_completed(2)
    with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        first = api.get(f"/v4/{CLIENT}/loads").json()
        assert (first["page"], first["total"], len(first["data"])) == (1, 4, 3)
        assert first["links"] == {"next": f"/v4/{CLIENT}/loads?page=2"}
        second = api.get(first["links"]["next"]).json()
    assert second["links"] == {"previous": f"/v4/{CLIENT}/loads?page=1"}
    assert [(r["stream_name"], r["source_name"]) for r in first["data"] + second["data"]] == [
        ("a", "alpha"),
        ("a", "zeta"),
        ("b", "zeta"),
        ("c", "alpha"),
    ]
    assert sim.jobs_requests_in_window() == 2
    with pytest.raises(ValueError, match="no stream"):
        sim.seed_load(1, "c")


# -- logs: stream lines, length, big logs ---------------------------------------------------


def test_log_length_and_numbering_around_the_stream_lines(
    sim: StitchSimulator, api: httpx.Client
) -> None:
    sim.add_source(
        1,
        streams=("accounts", "contacts", "deals"),
        log_lines=12,
        outcomes=[Outcome.success(0.1, rows={"accounts": 120, "deals": 3})],
    )
    sim.add_source(2, streams=("a", "b", "c", "d"), log_lines=3, outcomes=[Outcome.success(0.0)])
    jobs = [api.post(f"/v4/sources/{i}/sync").json()["job_name"] for i in (1, 2)]
    time.sleep(0.15)
    for job_name, total in ((jobs[0], 12), (jobs[1], 10)):  # 1 + 4 x 2 + 1 lines at least
        lines = log_lines(api, job_name)
        assert len(lines) == total
        assert all(re.match(rf"^{STAMP} ", line) for line in lines)
        stamps = [log_epoch(line) for line in lines]
        assert stamps == sorted(stamps)
        for number, line in enumerate(lines, 1):
            if "[line " in line:
                assert f"[line {number}/{total}]" in line
        assert "Starting extraction job" in lines[0]
        assert lines[-1].endswith(
            "Exit status is: Discovery succeeded. Tap succeeded. Target succeeded."
        )
        assert sum("replicated" in line for line in lines) == 2 if total == 12 else 4


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def test_a_200_mb_log_is_streamed_not_held(sim: StitchSimulator, api: httpx.Client) -> None:
    lines_wanted, line_bytes = 20_000, 10_000
    sim.add_source(
        1,
        log_lines=lines_wanted,
        log_line_bytes=line_bytes,
        outcomes=[Outcome.failure("tap", -9, "Killed", duration_seconds=0.0)],
    )
    job_name = api.post("/v4/sources/1/sync").json()["job_name"]
    location = api.get(f"/v4/{CLIENT}/extractions/{job_name}").headers["location"]
    baseline = _rss_bytes()
    peak = baseline or 0
    newlines = size = chunks = 0
    tail = b""
    with httpx.stream("GET", location, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in response.headers
        for chunk in response.iter_raw():
            newlines += chunk.count(b"\n")
            size += len(chunk)
            tail = (tail + chunk)[-2 * line_bytes :]
            chunks += 1
            if chunks % 16 == 0:
                peak = max(peak, _rss_bytes() or 0)
    assert newlines == lines_wanted
    assert (lines_wanted - 3) * line_bytes < size < lines_wanted * line_bytes
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1].decode()
    assert last.endswith(
        "main - INFO Exit status is: Discovery succeeded. Tap failed with code -9."
        " Target succeeded."
    )
    if baseline is not None:  # neither side held the log: far less than its 200 MB
        assert peak - baseline < 64 * 1024 * 1024


def test_log_download_over_http_1_0_ends_at_close(sim: StitchSimulator, api: httpx.Client) -> None:
    sim.add_source(1, log_lines=5, outcomes=[Outcome.success(0.0)])
    job_name = api.post("/v4/sources/1/sync").json()["job_name"]
    location = httpx.URL(api.get(f"/v4/{CLIENT}/extractions/{job_name}").headers["location"])
    with socket.create_connection((location.host, location.port), timeout=5) as connection:
        target = location.raw_path.decode()
        connection.sendall(f"GET {target} HTTP/1.0\r\nHost: {location.host}\r\n\r\n".encode())
        raw = b""
        while chunk := connection.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" not in head.lower()
    assert body.decode().splitlines()[-1].endswith("Target succeeded.")


# -- control API for the new features -------------------------------------------------------


def test_control_api_schedules_and_seeds_loads(
    sim: StitchSimulator, api: httpx.Client, control: httpx.Client
) -> None:
    shop = {
        "source_id": 7,
        "name": "shop",
        "streams": ["orders", "items", "refunds"],
        "deselected": ["refunds"],
        "log_line_bytes": 200,
        "outcomes": [
            {
                "kind": "success",
                "duration_seconds": 0,
                "rows": {"orders": 3},
                "loads": {"orders": {"delay_seconds": 5}},
            }
        ],
    }
    assert control.post("/sources", json=shop).status_code == 201
    bad = control.post("/sources", json={"source_id": 8, "outcomes": [{"rows": {"x": 1}}]})
    assert bad.status_code == 400 and "does not have" in bad.json()["error"]
    assert control.post(
        "/seed_load", json={"source_id": 7, "stream": "items", "error": "old"}
    ).json() == {"status": "seeded"}
    job_name = api.post("/v4/sources/7/sync").json()["job_name"]
    loads = {r["stream_name"]: r for r in api.get(f"/v4/{CLIENT}/loads").json()["data"]}
    assert set(loads) == {"items"} and loads["items"]["error_state"] is not None
    sim.clock_offset_seconds += 6
    loads = {r["stream_name"]: r for r in api.get(f"/v4/{CLIENT}/loads").json()["data"]}
    assert loads["orders"]["error_state"] is None and loads["orders"]["last_batch_loaded_at"]
    filler = log_lines(api, job_name)[1]
    assert "[line 2/" in filler and len(filler) + 1 == 200

    theirs = {"kind": "discovery", "exit_status": 2, "duration_seconds": 0}
    assert control.post(
        "/run_after_current", json={"source_id": 7, "outcome": theirs, "gap_seconds": 0}
    ).json() == {"status": "armed"}
    assert (
        control.post(
            "/start_job",
            json={"source_id": 7, "outcome": {"kind": "success", "duration_seconds": 0}},
        ).status_code
        == 200
    )
    record = record_of(api, 7)
    assert record is not None and record["discovery_exit_status"] == 2
    assert (record["tap_exit_status"], record["target_exit_status"]) == (None, None)
    running = {"kind": "success", "duration_seconds": None}
    assert control.post("/start_job", json={"source_id": 7, "outcome": running}).status_code == 200
    assert control.post("/schedule_job", json={"source_id": 7, "in_seconds": 0}).json() == {
        "status": "scheduled"
    }
    assert control.get("/scheduled_skips").json() == {"7": 1}
    assert [j["triggered_via"] for j in control.get("/jobs").json()] == [
        "api",
        "scheduler",
        "scheduler",
        "scheduler",
    ]
    assert control.post("/schedule_job", json={"source_id": 7, "in_seconds": -1}).status_code == 400
    assert control.post("/remove_destination").json() == {"status": "removed"}
    assert api.get("/v4/destinations").json() == []


def test_cli_accepts_a_stop_delay() -> None:
    from prefect_stitch.simulator.__main__ import build_parser

    assert build_parser().parse_args(["--stop-delay", "3"]).stop_delay == 3.0
    assert build_parser().parse_args([]).stop_delay == 0.0


# -- load errors and stream identity ----------------------------------------------------------


def loads_of(api: httpx.Client, source_name: str) -> list[dict[str, Any]]:
    """The load records of one source, in the listing's order."""
    body = api.get(f"/v4/{CLIENT}/loads").json()
    return [r for r in body["data"] if r["source_name"] == source_name]


def test_a_failed_load_carries_the_default_error_state_with_its_sql_state(
    sim: StitchSimulator, api: httpx.Client
) -> None:
    sim.add_source(1, name="crm", streams=("accounts",))
    sim.seed_completed(1, Outcome.success(load_error="permission denied for schema crm"))
    [record] = loads_of(api, "crm")
    message = "permission denied for schema crm"
    assert record["last_batch_loaded_at"] is None
    assert record["error_state"] == {
        "notification_data": {
            "message": message,
            "exception_message": message,
            "warehouse_error_code": 500151,
            "error": "LOADER_WAREHOUSE_ERROR",
            "new_column": None,
            "status": "ERROR",
            "warehouse_sql_state": "42501",
            "action": "get-connection",
            "warehouse_message": message,
            "column": None,
        },
        "exception_chain": [
            {"class": "LoaderError", "message": message, "chain_sequence_num": 0, "action": None}
        ],
    }


SCRIPTED_ERROR_STATES: list[Any] = [
    {"notification_data": "oops", "code": 7},  # an object of another shape
    "the warehouse refused the batch",  # a string
    [{"message": "first"}, {"message": "second"}],  # a list
    {},  # an empty object
    0,  # a number
]


@pytest.mark.parametrize("error_state", SCRIPTED_ERROR_STATES)
def test_a_scripted_error_state_replaces_the_default_object(
    sim: StitchSimulator, api: httpx.Client, error_state: Any
) -> None:
    scripted = StreamLoad(error="refused", error_state=error_state)
    sim.add_source(
        1,
        name="crm",
        streams=("accounts", "contacts"),
        outcomes=[Outcome.success(0.0, loads={"accounts": scripted})],
    )
    sim.add_source(2, name="erp", streams=("orders",))
    sim.seed_load(2, "orders", error="old", error_state=error_state)
    api.post("/v4/sources/1/sync")
    accounts, contacts = loads_of(api, "crm")
    assert (accounts["stream_name"], accounts["last_batch_loaded_at"]) == ("accounts", None)
    assert accounts["error_state"] == error_state  # the error still marks it failed
    assert contacts["error_state"] is None and contacts["last_batch_loaded_at"] is not None
    [orders] = loads_of(api, "erp")
    assert (orders["error_state"], orders["last_batch_loaded_at"]) == (error_state, None)


def test_a_scripted_error_state_needs_an_error_and_json() -> None:
    with pytest.raises(ValueError, match="needs an error"):
        StreamLoad(error_state={"code": 1})
    with pytest.raises(ValueError, match="JSON"):
        StreamLoad(error="x", error_state={"when": object()})
    with pytest.raises(ValueError, match="JSON"):
        StreamLoad(error="x", error_state=float("nan"))
    sim = SimulatorState()
    sim.add_source(1)
    with pytest.raises(ValueError, match="needs an error"):
        sim.seed_load(1, "accounts", error_state="orphan")
    assert StreamLoad(error="x").error_state is None  # None: the default object


def test_a_scripted_error_state_is_a_copy_and_has_a_json_form() -> None:
    original: dict[str, Any] = {"notification_data": {"message": "m"}}
    load = StreamLoad(error="m", error_state=original)
    original["notification_data"]["message"] = "changed later"
    assert load.error_state == {"notification_data": {"message": "m"}}
    assert StreamLoad(error="m", error_state=original) != load  # the error_state is compared
    assert hash(load) == hash(StreamLoad(error="m", error_state=["other"]))  # and hashable
    assert StreamLoad.from_json({"error": "m", "error_state": ["a", 1]}) == StreamLoad(
        error="m", error_state=["a", 1]
    )
    with pytest.raises(ValueError, match="needs an error"):
        StreamLoad.from_json({"error_state": "x"})
    outcome = Outcome.from_json(
        {"loads": {"accounts": {"error": "denied", "error_state": {"code": 42}}}}
    )
    assert dict(outcome.loads)["accounts"].error_state == {"code": 42}


def test_control_api_scripts_error_states(
    sim: StitchSimulator, api: httpx.Client, control: httpx.Client
) -> None:
    scripted = {"accounts": {"error": "denied", "error_state": "denied by policy"}}
    source = {
        "source_id": 1,
        "name": "crm",
        "outcomes": [{"kind": "success", "duration_seconds": 0, "loads": scripted}],
    }
    assert control.post("/sources", json=source).status_code == 201
    seeded = {"source_id": 1, "stream": "contacts", "error": "old", "error_state": [1, 2]}
    assert control.post("/seed_load", json=seeded).json() == {"status": "seeded"}
    orphan = {"source_id": 1, "stream": "contacts", "error_state": [1]}
    refused = control.post("/seed_load", json=orphan)
    assert refused.status_code == 400 and "needs an error" in refused.json()["error"]
    assert [r["error_state"] for r in loads_of(api, "crm")] == [[1, 2]]  # the seeded one only
    api.post("/v4/sources/1/sync")
    assert [r["error_state"] for r in loads_of(api, "crm")] == ["denied by policy", None]


def test_load_records_carry_no_stream_id_unless_asked(
    stitch_simulator_factory: Any, sim: StitchSimulator, api: httpx.Client
) -> None:
    sim.add_source(1, name="crm")
    sim.seed_completed(1)
    assert sim.load_stream_ids is False
    assert all(
        set(r)
        == {"stitch_client_id", "source_name", "stream_name", "last_batch_loaded_at", "error_state"}
        for r in loads_of(api, "crm")
    )
    sim.load_stream_ids = True  # a plain attribute, read at each request
    ids = {s["stream_name"]: s["stream_id"] for s in api.get("/v4/sources/1/streams").json()}
    assert {r["stream_name"]: r["stream_id"] for r in loads_of(api, "crm")} == ids

    other = stitch_simulator_factory(load_stream_ids=True)  # the fixture forwards it
    other.add_source(5, name="erp", streams=("orders",), outcomes=[Outcome.success(0.0)])
    with httpx.Client(base_url=other.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        c.post("/v4/sources/5/sync")
        [stream] = c.get("/v4/sources/5/streams").json()
        [record] = loads_of(c, "erp")
    assert record["stream_id"] == stream["stream_id"] and type(record["stream_id"]) is int


def test_cli_gives_load_records_stream_ids_on_request() -> None:
    from prefect_stitch.simulator.__main__ import _simulator, build_parser

    assert _simulator(build_parser().parse_args(["--load-stream-ids"])).load_stream_ids is True
    assert _simulator(build_parser().parse_args([])).load_stream_ids is False


def add_two_schema_source(sim: StitchSimulator, outcome: Outcome) -> None:
    """A database source with the table `users` in two schemas, and an `orders` table."""
    sim.add_source(
        1,
        name="pg",
        type="platform.postgres",
        streams=("public-users", "sales-users", "public-orders"),
        stream_names={"public-users": "users", "sales-users": "users", "public-orders": "orders"},
        outcomes=[outcome],
    )


def test_streams_whose_table_name_repeats_keep_their_identity(
    sim: StitchSimulator, api: httpx.Client
) -> None:
    outcome = Outcome.success(
        0.0,
        rows={"public-users": 3, "sales-users": 4, "public-orders": 5},
        loads={"sales-users": StreamLoad(error="denied")},
    )
    add_two_schema_source(sim, outcome)
    streams = api.get("/v4/sources/1/streams").json()
    assert [(s["tap_stream_id"], s["stream_name"]) for s in streams] == [
        ("public-users", "users"),
        ("sales-users", "users"),
        ("public-orders", "orders"),
    ]
    ids = {s["tap_stream_id"]: s["stream_id"] for s in streams}
    assert len(set(ids.values())) == 3
    sim.seed_load(1, "sales-users", loaded_ago_seconds=60)  # listed first until replaced
    job_name = api.post("/v4/sources/1/sync").json()["job_name"]
    records = loads_of(api, "pg")
    assert [(r["stream_name"], r["error_state"] is None) for r in records] == [
        ("orders", True),
        ("users", True),  # public-users (the lower stream ID first)
        ("users", False),  # sales-users: its own load failed
    ]
    sim.load_stream_ids = True
    assert [r["stream_id"] for r in loads_of(api, "pg")] == [
        ids["public-orders"],
        ids["public-users"],
        ids["sales-users"],
    ]

    text = "\n".join(log_lines(api, job_name))
    tap = re.findall(
        rf'^{STAMP} tap - INFO replicated (\d+) records from "(.+)" endpoint$', text, re.M
    )
    assert tap == [("3", "users"), ("4", "users"), ("5", "orders")]
    target = re.findall(
        rf"^{STAMP} target - INFO .* send-stream-record-count-impl (.+)$", text, re.M
    )
    assert target == ["users", "users", "orders"]
    assert "public-users" not in text and "sales-users" not in text


def test_a_mapped_stream_is_named_by_its_identity_in_the_simulators_api(
    sim: StitchSimulator, api: httpx.Client
) -> None:
    with pytest.raises(ValueError, match="does not have"):  # rows name identities, not tables
        add_two_schema_source(sim, Outcome.success(rows={"users": 1}))
    sim.add_source(
        1,
        name="pg",
        streams=("public-users", "sales-users"),
        stream_names={"sales-users": "users"},  # a stream left out keeps its identity
        deselected=["public-users"],
        outcomes=[Outcome.success(0.0)],
    )
    sim.seed_load(1, "public-users", error="old")
    with pytest.raises(ValueError, match="no stream"):
        sim.seed_load(1, "users")
    streams = api.get("/v4/sources/1/streams").json()
    assert [(s["stream_name"], s["selected"]) for s in streams] == [
        ("public-users", False),
        ("users", True),
    ]
    api.post("/v4/sources/1/sync")
    assert [r["stream_name"] for r in loads_of(api, "pg")] == ["public-users", "users"]


@pytest.mark.parametrize(
    ("stream_names", "message"),
    [
        ({"users": "users"}, "not in"),
        ({"accounts": ""}, "non-empty"),
        ({"accounts": 7}, "non-empty"),
        (["accounts"], "must map"),
    ],
)
def test_bad_stream_names_are_refused(stream_names: Any, message: str) -> None:
    sim = SimulatorState()
    with pytest.raises(ValueError, match=message):
        sim.add_source(1, stream_names=stream_names)
    with pytest.raises(KeyError):
        sim.source(1)  # nothing was added


def test_control_api_maps_stream_names(
    sim: StitchSimulator, api: httpx.Client, control: httpx.Client
) -> None:
    source = {
        "source_id": 3,
        "streams": ["public-users", "sales-users"],
        "stream_names": {"public-users": "users", "sales-users": "users"},
        "outcomes": [{"kind": "success", "duration_seconds": 0, "rows": {"sales-users": 2}}],
    }
    assert control.post("/sources", json=source).status_code == 201
    assert [s["stream_name"] for s in api.get("/v4/sources/3/streams").json()] == ["users"] * 2
    bad = control.post("/sources", json={"source_id": 4, "stream_names": {"x": "y"}})
    assert bad.status_code == 400 and "stream_names" in bad.json()["error"]
    api.post("/v4/sources/3/sync")
    assert [r["stream_name"] for r in api.get(f"/v4/{CLIENT}/loads").json()["data"]] == ["users"]
