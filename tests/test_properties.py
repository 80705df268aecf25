"""Property tests: the verdict rules over every combination, and the client over any answer.

* ``judge_extraction`` gives exactly one verdict for any record, and the one the rules of
  ``prefect_stitch/_verdict.py`` give: failed iff some exit status is non-null and non-zero
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
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefect_stitch import StitchCredentials
from prefect_stitch._verdict import PHASES, judge_extraction
from prefect_stitch.client import StitchClient
from prefect_stitch.errors import PhaseFailure, StitchError
from prefect_stitch.models import Extraction, Load, Source, SyncStatus

# -- (a) the verdict -------------------------------------------------------------------------------

# The verdict's classes, stated from Stitch's documentation of the extraction object and built
# from it (never by re-running the implementation's rules):
# * a phase's exit status is null while it runs or when it never ran, 0 when it succeeded, and
#   anything else when it failed;
# * a job failed when any phase failed, whatever the others, the times and the descriptions say;
# * it succeeded when its three phases succeeded;
# * a record with a completion time whose phases did not all succeed and none failed was
#   terminated (the docs' example says "Terminated"; a null description means the same);
# * a record without a completion time, no phase failed, not all done, is still running.

non_zero = st.integers().filter(lambda n: n != 0) | st.sampled_from([1, -1, -9, 2, 137, 255])
not_failed = st.sampled_from([0, None])
any_description = st.none() | st.text(max_size=30) | st.sampled_from(["Terminated", "Killed", ""])
quiet_description = st.none() | st.sampled_from(["", "Killed", "in progress"])
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


def make_record(statuses: dict[str, int | None], **fields: Any) -> Extraction:
    values = {f"{phase}_exit_status": statuses[phase] for phase in PHASES}
    return Extraction(job_name="116078.1.sync.x", source_id=1, **values, **fields)


@st.composite
def failed_records(draw: st.DrawFn) -> tuple[Extraction, list[PhaseFailure]]:
    failing = draw(st.sets(st.sampled_from(PHASES), min_size=1))
    statuses = {p: draw(non_zero) if p in failing else draw(not_failed) for p in PHASES}
    described = {p: draw(any_description) for p in PHASES}
    record = make_record(
        statuses,
        start_time=draw(st.none() | moments),
        completion_time=draw(st.none() | moments),
        **{f"{p}_description": described[p] for p in PHASES},
    )
    expected = [PhaseFailure(p, statuses[p], described[p]) for p in PHASES if p in failing]
    return record, expected


@settings(max_examples=500, deadline=None, database=None)
@given(case=failed_records())
def test_a_job_with_a_failed_phase_failed_and_names_exactly_those_phases(
    case: tuple[Extraction, list[PhaseFailure]],
) -> None:
    record, expected = case
    verdict = judge_extraction(record)
    assert verdict.state is SyncStatus.FAILED
    assert list(verdict.failed_phases) == expected  # in phase order
    for failure in expected:
        assert f"{failure.phase} exited with status {failure.exit_status}" in verdict.summary


@settings(max_examples=200, deadline=None, database=None)
@given(
    descriptions=st.tuples(any_description, any_description, any_description),
    completion=st.none() | moments,
)
def test_three_succeeded_phases_are_a_success_whatever_the_descriptions(
    descriptions: tuple[str | None, ...], completion: datetime | None
) -> None:
    record = make_record(
        dict.fromkeys(PHASES, 0),
        completion_time=completion,
        **{f"{p}_description": d for p, d in zip(PHASES, descriptions, strict=True)},
    )
    verdict = judge_extraction(record)
    assert verdict.state is SyncStatus.SUCCEEDED and verdict.failed_phases == ()


unfinished = st.fixed_dictionaries({p: not_failed for p in PHASES}).filter(
    lambda statuses: any(status is None for status in statuses.values())
)


@settings(max_examples=300, deadline=None, database=None)
@given(
    statuses=unfinished,
    descriptions=st.tuples(any_description, any_description, any_description),
    completion=moments,
)
def test_a_completed_record_without_every_phase_done_was_terminated(
    statuses: dict[str, int | None], descriptions: tuple[str | None, ...], completion: datetime
) -> None:
    record = make_record(
        statuses,
        completion_time=completion,
        **{f"{p}_description": d for p, d in zip(PHASES, descriptions, strict=True)},
    )
    verdict = judge_extraction(record)
    assert verdict.state is SyncStatus.TERMINATED
    assert verdict.state.is_final and verdict.failed_phases == ()


@settings(max_examples=300, deadline=None, database=None)
@given(
    statuses=unfinished,
    descriptions=st.tuples(quiet_description, quiet_description, quiet_description),
)
def test_an_uncompleted_record_without_a_failure_is_still_running(
    statuses: dict[str, int | None], descriptions: tuple[str | None, ...]
) -> None:
    record = make_record(
        statuses, **{f"{p}_description": d for p, d in zip(PHASES, descriptions, strict=True)}
    )
    verdict = judge_extraction(record)
    assert verdict.state is SyncStatus.RUNNING and not verdict.state.is_final


def test_no_record_yet_is_running() -> None:
    assert judge_extraction(None).state is SyncStatus.RUNNING


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


RETRY_AFTER_CASES = [
    # (Retry-After, the least and the most seconds the client may wait before its retry)
    ("2", 1.9, 3.0),  # honoured
    ("0", 0.0, 1.0),
    ("nan", 0.0, 1.0),  # not a number of seconds: the client's own short backoff
    ("-nan", 0.0, 1.0),
    ("inf", 0.0, 1.0),
    ("-inf", 0.0, 1.0),
    ("1e309", 0.0, 1.0),
    ("infinity", 0.0, 1.0),
    ("1_0", 0.0, 1.0),  # Python would read 10; HTTP allows digits only
    ("0x10", 0.0, 1.0),
    ("+3", 0.0, 1.0),
    ("-1", 0.0, 1.0),
    ("soon", 0.0, 1.0),
    ("", 0.0, 1.0),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0, 1.0),  # a date in the past: no wait
]


@pytest.mark.parametrize(("retry_after", "least", "most"), RETRY_AFTER_CASES)
@pytest.mark.parametrize("status", [429, 503])
async def test_the_client_waits_what_retry_after_allows_and_never_more(
    stitch_simulator: Any, retry_after: str, least: float, most: float, status: int
) -> None:
    """Measured at the simulator: the time between the refused request and its retry."""
    from prefect_stitch.simulator import Fault

    sim = stitch_simulator
    sim.add_source(1)
    sim.inject("source", Fault.status(status, headers={"Retry-After": retry_after}))
    credentials = StitchCredentials(
        access_token=sim.token,
        client_id=sim.client_id,
        base_url=sim.base_url,
        max_retries=1,
        retry_backoff_seconds=0.01,
    )
    async with credentials.get_client() as client:
        source = await client.get_source(1)
    refused, retried = sim.requests_for("source")
    assert (refused.status, retried.status, source.id) == (status, 200, 1)
    waited = retried.at - refused.at
    assert least <= waited <= most, f"Retry-After {retry_after!r}: waited {waited:.2f} s"
