"""Property tests: the verdict rules over every combination, and the client over any answer.

* ``judge_extraction`` gives exactly one verdict for any record, and the one the rules of
  ``prefect_stitch/verdict.py`` give: failed iff some exit status is non-null and non-zero
  (``failed_phases`` lists exactly those, in phase order); succeeded iff all three are 0;
  terminated iff none failed, not all are 0, and the record has a completion time or a
  description "Terminated" (any case); running otherwise.
* Every client method, served any JSON body (or any bytes) with any status code, returns a
  valid value or raises a ``StitchError``, nothing else; and whatever the ``Retry-After``
  header says, the client never sleeps for a non-finite or unbounded time.

No network: the client talks to an ``httpx.MockTransport`` behind an https base URL.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefect_stitch import StitchCredentials
from prefect_stitch.client import StitchClient
from prefect_stitch.errors import PhaseFailure, StitchError
from prefect_stitch.models import Extraction, Load, Source
from prefect_stitch.verdict import PHASES, ExtractionState, judge_extraction

# -- (a) the verdict -------------------------------------------------------------------------------

statuses = st.none() | st.integers() | st.sampled_from([0, 1, -1, -9, 2, 137, 255])
descriptions = (
    st.none()
    | st.sampled_from(["Terminated", "terminated", "TERMINATED", "TeRmInAtEd", "Killed", ""])
    | st.text(max_size=30)
)
moments = st.none() | st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


def says_terminated(description: str | None) -> bool:
    return description is not None and description.strip().lower() == "terminated"


@settings(max_examples=1000, deadline=None, database=None)
@given(
    discovery=statuses,
    tap=statuses,
    target=statuses,
    discovery_description=descriptions,
    tap_description=descriptions,
    target_description=descriptions,
    start_time=moments,
    completion_time=moments,
)
def test_judge_extraction_follows_the_rules(
    discovery: int | None,
    tap: int | None,
    target: int | None,
    discovery_description: str | None,
    tap_description: str | None,
    target_description: str | None,
    start_time: datetime | None,
    completion_time: datetime | None,
) -> None:
    record = Extraction(
        job_name="116078.1.sync.x",
        source_id=1,
        start_time=start_time,
        completion_time=completion_time,
        discovery_exit_status=discovery,
        discovery_description=discovery_description,
        tap_exit_status=tap,
        tap_description=tap_description,
        target_exit_status=target,
        target_description=target_description,
    )
    verdict = judge_extraction(record)
    statuses_ = dict(zip(PHASES, (discovery, tap, target), strict=True))
    described = dict(
        zip(PHASES, (discovery_description, tap_description, target_description), strict=True)
    )
    failing = [
        PhaseFailure(phase, status, described[phase])
        for phase, status in statuses_.items()
        if status is not None and status != 0
    ]
    if failing:
        expected = ExtractionState.FAILED
    elif all(status == 0 for status in statuses_.values()):
        expected = ExtractionState.SUCCEEDED
    elif completion_time is not None or any(says_terminated(d) for d in described.values()):
        expected = ExtractionState.TERMINATED
    else:
        expected = ExtractionState.RUNNING

    assert verdict.state is expected
    assert isinstance(verdict.state, ExtractionState)
    assert list(verdict.failed_phases) == failing
    assert verdict.state.is_final is (expected is not ExtractionState.RUNNING)
    assert isinstance(verdict.summary, str) and verdict.summary
    if expected is ExtractionState.FAILED:
        for failure in failing:
            assert f"{failure.phase} exited with status {failure.exit_status}" in verdict.summary


@settings(database=None)
@given(status=st.integers().filter(lambda n: n != 0), phase=st.sampled_from(PHASES))
def test_any_non_zero_status_fails_even_if_the_others_succeeded(status: int, phase: str) -> None:
    fields: dict[str, Any] = {f"{p}_exit_status": 0 for p in PHASES}
    fields[f"{phase}_exit_status"] = status
    fields[f"{phase}_description"] = "Terminated"  # a description never overrides a status
    record = Extraction(job_name="j", source_id=1, completion_time=datetime.now(UTC), **fields)
    verdict = judge_extraction(record)
    assert verdict.state is ExtractionState.FAILED
    assert verdict.failed_phases == (PhaseFailure(phase, status, "Terminated"),)


def test_no_record_yet_is_running() -> None:
    assert judge_extraction(None).state is ExtractionState.RUNNING


# -- (b) the client over any answer ----------------------------------------------------------------

BASE_URL = "https://api.stitchdata.com"
CLIENT_ID = 987654  # an account of its own: the process-wide rate limiter is keyed by it

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "data",
                    "links",
                    "next",
                    "error",
                    "type",
                    "message",
                    "code",
                    "job_name",
                    "id",
                    "source_id",
                    "stitch_client_id",
                    "page",
                    "total",
                    "paused_at",
                    "completion_time",
                    "tap_exit_status",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=12,
)
plausible = st.fixed_dictionaries(
    {},
    optional={
        "data": st.lists(json_values, max_size=3),
        "links": st.fixed_dictionaries(
            {}, optional={"next": st.sampled_from(["/v4/x?page=2", "", None, 3])}
        ),
        "job_name": json_values,
        "id": json_values,
        "error": json_values,
        "stitch_client_id": json_values,
    },
)
bodies = (
    json_values.map(lambda value: json.dumps(value).encode())
    | plausible.map(lambda value: json.dumps(value).encode())
    | st.binary(max_size=64)
    | st.sampled_from([b"", b"<html><body>502 Bad Gateway</body></html>", b'{"data": ['])
)
status_codes = st.sampled_from(
    [200, 200, 200, 201, 204, 301, 302, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504]
) | st.integers(min_value=400, max_value=599)
content_types = st.sampled_from(
    ["application/json", "text/html; charset=utf-8", "text/plain", "application/xml", None]
)
headers_extra = st.fixed_dictionaries(
    {},
    optional={
        "Retry-After": st.text(max_size=12),
        "Location": st.sampled_from(
            ["https://logs.example.com/bucket/j?sig=1", "/v4/elsewhere", "", "::not a url"]
        ),
    },
)

Call = Callable[[StitchClient], Awaitable[Any]]
CALLS: dict[str, Call] = {
    "start_replication_job": lambda c: c.start_replication_job(120643),
    "stop_replication_job": lambda c: c.stop_replication_job(120643),
    "get_source": lambda c: c.get_source(120643),
    "list_sources": lambda c: c.list_sources(),
    "pause_source": lambda c: c.pause_source(120643),
    "unpause_source": lambda c: c.unpause_source(120643),
    "list_extractions": lambda c: c.list_extractions(),
    "list_loads": lambda c: c.list_loads(),
    "get_extraction_logs": lambda c: c.get_extraction_logs("116078.120643.sync.x", tail_lines=5),
    "resolve_client_id": lambda c: c.resolve_client_id(120643),
    "jobs_limiter": lambda c: c.jobs_limiter(),
}
VALID: dict[str, Callable[[Any], bool]] = {
    "start_replication_job": lambda v: isinstance(v, str),
    "stop_replication_job": lambda v: isinstance(v, bool),
    "get_source": lambda v: isinstance(v, Source),
    "list_sources": lambda v: isinstance(v, list) and all(isinstance(s, Source) for s in v),
    "pause_source": lambda v: isinstance(v, Source),
    "unpause_source": lambda v: isinstance(v, Source),
    "list_extractions": lambda v: isinstance(v, list) and all(isinstance(e, Extraction) for e in v),
    "list_loads": lambda v: isinstance(v, list) and all(isinstance(x, Load) for x in v),
    "get_extraction_logs": lambda v: isinstance(v, str),
    "resolve_client_id": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "jobs_limiter": lambda v: v is not None,
}
examples = {"count": 0}


def serve(status: int, body: bytes, content_type: str | None, extra: dict[str, str]) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = dict(extra)
        if content_type:
            headers["Content-Type"] = content_type
        try:
            return httpx.Response(status, content=body, headers=headers, request=request)
        except (UnicodeEncodeError, ValueError):  # a header httpx cannot even send
            return httpx.Response(status, content=body, request=request)

    return httpx.MockTransport(handler)


async def call_once(method: str, transport: httpx.MockTransport, client_id: int | None) -> Any:
    examples["count"] += 1
    credentials = StitchCredentials(
        # A token per example: the client-id cache is keyed by it.
        access_token=f"ac_property_{examples['count']}",
        client_id=client_id,
        base_url=BASE_URL,
        max_retries=0,
        request_timeout_seconds=2,
        jobs_rate_limit=10**9,
        jobs_rate_period_seconds=1,
    )
    async with credentials.get_client(transport=transport) as client:
        return await CALLS[method](client)


@pytest.mark.parametrize("method", sorted(CALLS))
@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    status=status_codes,
    body=bodies,
    content_type=content_types,
    extra=headers_extra,
    lookup=st.booleans(),
)
def test_any_answer_gives_a_value_or_a_stitch_error(
    method: str,
    status: int,
    body: bytes,
    content_type: str | None,
    extra: dict[str, str],
    lookup: bool,
) -> None:
    client_id = None if lookup or method == "resolve_client_id" else CLIENT_ID
    transport = serve(status, body, content_type, extra)
    try:
        value = asyncio.run(call_once(method, transport, client_id))
    except StitchError as error:
        text = str(error)
        assert text and "ac_property_" not in text
        assert "ac_property_" not in repr(error)
        return
    assert VALID[method](value), f"{method} returned {value!r}"


header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
sleeps = header_text | st.sampled_from(
    ["nan", "NaN", "-nan", "inf", "-inf", "1e309", "infinity", "1_0", "0x10", "+3", "-1"]
)


@settings(max_examples=200, deadline=None, database=None)
@given(retry_after=sleeps, status=st.sampled_from([429, 500, 502, 503]))
def test_the_client_never_waits_an_unbounded_time(retry_after: str, status: int) -> None:
    """Whatever Retry-After says, each wait before a retry is finite, >= 0 and capped."""
    waits: list[float] = []
    answers = iter([status, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        code = next(answers)
        if code == 200:
            return httpx.Response(200, json={"id": 1, "stitch_client_id": 5}, request=request)
        return httpx.Response(code, headers={"Retry-After": retry_after}, request=request)

    async def no_sleep(seconds: float) -> None:
        waits.append(seconds)

    async def main() -> Any:
        credentials = StitchCredentials(
            access_token="ac_property_sleep",
            client_id=CLIENT_ID,
            base_url=BASE_URL,
            max_retries=1,
            retry_backoff_seconds=0.01,
        )
        async with credentials.get_client(transport=httpx.MockTransport(handler)) as client:
            return await client.get_source(1)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("prefect_stitch.client.asyncio.sleep", no_sleep)
        source = asyncio.run(main())
    assert source.id == 1
    assert len(waits) == 1
    [wait] = waits
    assert math.isfinite(wait), f"Retry-After {retry_after!r} made the client wait {wait}"
    assert 0 <= wait <= 600
