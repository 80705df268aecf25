"""Bad input gets a clear, typed error that names the parameter, before any request to Stitch.

Where the input alone decides (a source id of the wrong type, a knob out of range, an empty
token, a malformed URL, a block that does not exist), the simulator must have received no
request at all, so in particular no job was triggered. Where only Stitch can tell (a source
that does not exist or was deleted), the answer is a typed error after exactly one request,
never retried and never a second trigger.

Every entry point is covered: the flow (Prefect validates its parameters), its body as a
coroutine, the tasks called inside a flow, the client, the credentials block and
``StitchCredentials.from_env``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.client.schemas.objects import State
from prefect.exceptions import ParameterTypeError
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from pydantic import ValidationError

from prefect_stitch import (
    StitchConfigurationError,
    StitchCredentials,
    StitchInvalidSourceError,
    StitchNotFoundError,
    fetch_stitch_extraction_logs,
    pause_stitch_source,
    run_stitch_sync,
    start_stitch_sync,
    stitch_sync_flow,
    stop_stitch_sync,
    wait_for_stitch_sync,
)
from prefect_stitch.client import StitchClient
from prefect_stitch.simulator import DELETED_SOURCE_MESSAGE, Outcome, StitchSimulator
from tests.conftest import make_credentials

FAST = {"poll_interval_seconds": 0.05, "max_wait_seconds": 30.0}
BAD_SOURCE_IDS = [
    pytest.param("abc", id="str"),
    pytest.param("42", id="numeric-str"),
    pytest.param(1.5, id="float"),
    pytest.param(42.0, id="integral-float"),
    pytest.param(None, id="None"),
    pytest.param(True, id="True"),
    pytest.param([1], id="list"),
    pytest.param(0, id="zero"),
    pytest.param(-1, id="negative"),
    pytest.param(2**31, id="2**31"),
    pytest.param(10**20, id="10**20"),
]
BAD_SECONDS = [
    pytest.param(0, id="zero"),
    pytest.param(0.0, id="zero-float"),
    pytest.param(-1, id="negative"),
    pytest.param(-0.5, id="negative-float"),
    pytest.param(math.nan, id="nan"),
    pytest.param("abc", id="str"),
]
ENV_VARIABLES = (
    "STITCH_ACCESS_TOKEN",
    "STITCH_CLIENT_ID",
    "STITCH_BASE_URL",
    "STITCH_REQUEST_TIMEOUT_SECONDS",
    "STITCH_MAX_RETRIES",
    "STITCH_RETRY_BACKOFF_SECONDS",
    "STITCH_JOBS_RATE_LIMIT",
    "STITCH_JOBS_RATE_PERIOD_SECONDS",
    "STITCH_ALLOW_INSECURE_HTTP",
)
MALFORMED_BASE_URLS = [
    pytest.param("", id="empty"),
    pytest.param("   ", id="blank"),
    pytest.param("api.stitchdata.com", id="no-scheme"),
    pytest.param("ftp://api.stitchdata.com", id="ftp"),
    pytest.param("https://", id="no-host"),
    pytest.param("https:///v4", id="no-host-path"),
    pytest.param("https://api.stitchdata.com:abc", id="bad-port"),
    pytest.param("https://api.stitchdata.com:99999", id="port-out-of-range"),
    pytest.param("https://[::1", id="bad-ipv6"),
    pytest.param("https://user:pw@api.stitchdata.com", id="userinfo"),
    pytest.param("https://api.stitchdata.com/?page=1", id="query"),
    pytest.param("https://api.stitchdata.com/#top", id="fragment"),
    pytest.param("http://api.stitchdata.com", id="plain-http-remote"),
]


@pytest.fixture(scope="module", autouse=True)
def _no_heartbeat_join() -> Iterator[None]:
    """Prefect joins its 1 s heartbeat thread at the end of each flow run; not needed here."""
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def in_a_flow(call: Callable[[], Awaitable[Any]]) -> State[Any]:
    """Run ``call`` (a task call, usually) in a throwaway async flow; return its final state."""

    @flow(name="bad-input-probe")
    async def probe() -> Any:
        return await call()

    state: State[Any] = asyncio.run(probe(return_state=True))
    return state


def raised(state: State[Any]) -> BaseException:
    assert state.is_failed(), f"{state.type}: {state.message}"
    try:
        state.result()
    except BaseException as exc:
        return exc
    raise AssertionError("the failed state carries no exception")


def assert_names(error: BaseException, parameter: str) -> None:
    assert isinstance(error, StitchConfigurationError), repr(error)
    assert isinstance(error, ValueError)  # the configuration error is also a ValueError
    assert error.parameter == parameter
    message = str(error)
    assert parameter in message or parameter.replace("_", " ") in message, message


# -- source_id ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_SOURCE_IDS)
def test_flow_refuses_a_bad_source_id_before_any_request(sim: StitchSimulator, bad: Any) -> None:
    with pytest.raises(ParameterTypeError) as caught:
        stitch_sync_flow(source_id=bad, credentials=make_credentials(sim), **FAST)
    assert "source_id" in str(caught.value)
    assert sim.requests == []


@pytest.mark.parametrize("bad", BAD_SOURCE_IDS)
def test_flow_body_refuses_a_bad_source_id_before_any_request(
    sim: StitchSimulator, bad: Any
) -> None:
    with pytest.raises(StitchConfigurationError) as caught:
        asyncio.run(run_stitch_sync(bad, make_credentials(sim), poll_interval_seconds=0.05))
    assert_names(caught.value, "source_id")
    assert sim.requests == []


TASK_CALLS: dict[str, Callable[[StitchCredentials, Any], Awaitable[Any]]] = {
    "start": lambda credentials, source_id: start_stitch_sync(credentials, source_id),
    "wait": lambda credentials, source_id: wait_for_stitch_sync(
        credentials, source_id, "116078.1.sync.x", poll_interval_seconds=0.05
    ),
    "stop": lambda credentials, source_id: stop_stitch_sync(credentials, source_id),
    "pause": lambda credentials, source_id: pause_stitch_source(credentials, source_id),
}


TASK_BAD_SOURCE_IDS: list[Any] = ["abc", 1.5, None, True, 0, -7, 10**20]


def errors_in_a_flow(calls: dict[str, Callable[[], Awaitable[Any]]]) -> dict[str, Any]:
    """Make each call inside one flow run; what each raised (None if it did not)."""
    errors: dict[str, Any] = {}

    async def each() -> None:
        for label, call in calls.items():
            try:
                await call()
            except Exception as exc:
                errors[label] = exc
            else:
                errors[label] = None

    state = in_a_flow(each)
    assert state.is_completed(), state.message
    assert list(errors) == list(calls)
    return errors


@pytest.mark.parametrize("task_name", sorted(TASK_CALLS))
def test_tasks_refuse_a_bad_source_id_before_any_request(
    sim: StitchSimulator, task_name: str
) -> None:
    credentials = make_credentials(sim)
    task_call = TASK_CALLS[task_name]
    errors = errors_in_a_flow(
        {repr(bad): (lambda bad=bad: task_call(credentials, bad)) for bad in TASK_BAD_SOURCE_IDS}
    )
    for bad, error in errors.items():
        assert error is not None, f"{task_name} accepted source_id={bad}"
        assert_names(error, "source_id")
    assert sim.requests == []


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda c: c.start_replication_job("abc"), id="start"),
        pytest.param(lambda c: c.stop_replication_job(0), id="stop"),
        pytest.param(lambda c: c.get_source(-1), id="get_source"),
        pytest.param(lambda c: c.pause_source(True), id="pause"),
        pytest.param(lambda c: c.unpause_source(2**31), id="unpause"),
        pytest.param(lambda c: c.resolve_client_id(1.5), id="resolve_client_id"),
    ],
)
async def test_client_refuses_a_bad_source_id_before_any_request(
    sim: StitchSimulator, call: Callable[[StitchClient], Awaitable[Any]]
) -> None:
    async with make_credentials(sim, client_id=None).get_client() as client:
        with pytest.raises(StitchConfigurationError) as caught:
            await call(client)
    assert_names(caught.value, "source_id")
    assert sim.requests == []


async def test_an_account_without_sources_is_a_configuration_error_naming_client_id(
    sim: StitchSimulator,
) -> None:
    async with make_credentials(sim, client_id=None).get_client() as client:
        with pytest.raises(StitchConfigurationError) as caught:
            await client.resolve_client_id()
    assert_names(caught.value, "client_id")
    assert [request.endpoint for request in sim.requests] == ["list_sources"]


@pytest.mark.parametrize(
    ("job_name", "parameter"),
    [
        pytest.param("", "job_name", id="empty"),
        pytest.param("116078/1.sync.x", "job_name", id="slash"),
    ],
)
def test_fetch_logs_refuses_a_bad_job_name_before_any_request(
    sim: StitchSimulator, job_name: str, parameter: str
) -> None:
    credentials = make_credentials(sim)
    state = in_a_flow(lambda: fetch_stitch_extraction_logs(credentials, job_name))
    assert_names(raised(state), parameter)
    assert sim.requests == []


def test_wait_refuses_an_empty_job_name_before_any_request(sim: StitchSimulator) -> None:
    credentials = make_credentials(sim)
    state = in_a_flow(lambda: wait_for_stitch_sync(credentials, 5, "  "))
    assert_names(raised(state), "job_name")
    assert sim.requests == []


# -- sources Stitch does not know -----------------------------------------------------------------


def test_unknown_source_is_a_typed_error_after_one_trigger(sim: StitchSimulator) -> None:
    sim.add_source(1, outcomes=[Outcome.success(duration_seconds=0.1)])  # another source
    state = stitch_sync_flow(
        source_id=404404, credentials=make_credentials(sim), return_state=True, **FAST
    )
    error = raised(state)
    assert type(error) is StitchInvalidSourceError, repr(error)
    assert error.status_code == 400
    assert error.error_type == "invalid_source"
    assert "Unable to locate source(404404)" in str(error)
    assert (error.method, error.path) == ("POST", "/v4/sources/404404/sync")
    assert len(sim.requests_for("trigger")) == 1  # a 4xx is never retried
    assert sim.jobs_started() == []


def test_deleted_source_is_a_typed_error_after_one_trigger(sim: StitchSimulator) -> None:
    sim.add_source(77, deleted=True)
    state = stitch_sync_flow(
        source_id=77, credentials=make_credentials(sim), return_state=True, **FAST
    )
    error = raised(state)
    assert type(error) is StitchInvalidSourceError, repr(error)
    assert error.stitch_message == DELETED_SOURCE_MESSAGE
    assert DELETED_SOURCE_MESSAGE in str(error)
    assert len(sim.requests_for("trigger")) == 1
    assert sim.jobs_started() == []


def test_unknown_source_without_client_id_never_triggers(sim: StitchSimulator) -> None:
    state = stitch_sync_flow(
        source_id=404405,
        credentials=make_credentials(sim, client_id=None),
        return_state=True,
        **FAST,
    )
    error = raised(state)
    assert isinstance(error, StitchNotFoundError | StitchInvalidSourceError), repr(error)
    assert error.path == "/v4/sources/404405"
    assert len(sim.requests_for("source")) == 1  # not retried
    assert sim.requests_for("trigger") == []


# -- credentials ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [pytest.param("no-such-stitch-block", id="unknown"), pytest.param("   ", id="blank")],
)
def test_unknown_block_name_is_a_configuration_error_naming_credentials(
    sim: StitchSimulator, name: str
) -> None:
    state = stitch_sync_flow(source_id=1, credentials=name, return_state=True, **FAST)
    error = raised(state)
    assert_names(error, "credentials")
    if name.strip():
        assert name in str(error)
    assert sim.requests == []


def test_credentials_of_the_wrong_type_are_refused_by_the_flow(sim: StitchSimulator) -> None:
    with pytest.raises(ParameterTypeError) as caught:
        stitch_sync_flow(source_id=1, credentials=12345, **FAST)  # type: ignore[call-overload]
    assert "credentials" in str(caught.value)
    assert sim.requests == []


@pytest.mark.parametrize("token", ["", "   ", "\t\n"], ids=["empty", "blank", "whitespace"])
def test_empty_token_is_a_validation_error_naming_access_token(token: str) -> None:
    with pytest.raises(ValidationError) as caught:
        StitchCredentials(access_token=token)
    assert "access_token" in str(caught.value)


def test_missing_token_is_a_validation_error_naming_access_token() -> None:
    with pytest.raises(ValidationError) as caught:
        StitchCredentials()  # type: ignore[call-arg]
    assert "access_token" in str(caught.value)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for variable in ENV_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env file around
    return monkeypatch


def test_from_env_without_the_token_names_the_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("STITCH_CLIENT_ID", "116078")
    with pytest.raises(StitchConfigurationError) as caught:
        StitchCredentials.from_env()
    assert_names(caught.value, "STITCH_ACCESS_TOKEN")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("STITCH_ACCESS_TOKEN", "", id="empty-token"),
        pytest.param("STITCH_ACCESS_TOKEN", "  ", id="blank-token"),
        pytest.param("STITCH_CLIENT_ID", "abc", id="client-id-str"),
        pytest.param("STITCH_CLIENT_ID", "-3", id="client-id-negative"),
        pytest.param("STITCH_BASE_URL", "api.stitchdata.com", id="base-url-no-scheme"),
        pytest.param("STITCH_BASE_URL", "http://api.stitchdata.com", id="base-url-plain-http"),
        pytest.param("STITCH_MAX_RETRIES", "-1", id="max-retries-negative"),
        pytest.param("STITCH_REQUEST_TIMEOUT_SECONDS", "0", id="timeout-zero"),
    ],
)
def test_from_env_invalid_variable_is_named(
    clean_env: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    clean_env.setenv("STITCH_ACCESS_TOKEN", "ac_env_token")
    clean_env.setenv(variable, value)
    with pytest.raises(StitchConfigurationError) as caught:
        StitchCredentials.from_env()
    assert_names(caught.value, variable)


@pytest.mark.parametrize("base_url", MALFORMED_BASE_URLS)
def test_malformed_base_url_is_a_validation_error_naming_base_url(base_url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        StitchCredentials(access_token="ac_token", base_url=base_url)
    assert "base_url" in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("client_id", 0),
        ("client_id", -5),
        ("client_id", "abc"),
        ("request_timeout_seconds", 0),
        ("request_timeout_seconds", -1),
        ("max_retries", -1),
        ("retry_backoff_seconds", -0.1),
        ("jobs_rate_limit", 0),
        ("jobs_rate_period_seconds", 0),
    ],
)
def test_out_of_range_settings_are_validation_errors_naming_the_field(
    field: str, value: Any
) -> None:
    with pytest.raises(ValidationError) as caught:
        StitchCredentials(access_token="ac_token", **{field: value})
    assert field in str(caught.value)


# -- knobs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("parameter", ["poll_interval_seconds", "max_wait_seconds"])
@pytest.mark.parametrize("bad", BAD_SECONDS)
def test_flow_refuses_bad_seconds_before_any_request(
    sim: StitchSimulator, parameter: str, bad: Any
) -> None:
    sim.add_source(3)
    options: dict[str, Any] = {**FAST, parameter: bad}
    with pytest.raises(ParameterTypeError) as caught:
        stitch_sync_flow(source_id=3, credentials=make_credentials(sim), **options)
    assert parameter in str(caught.value)
    assert sim.requests == []


@pytest.mark.parametrize("parameter", ["poll_interval_seconds", "max_wait_seconds"])
def test_wait_task_refuses_bad_seconds_before_any_request(
    sim: StitchSimulator, parameter: str
) -> None:
    sim.add_source(4)
    credentials = make_credentials(sim)

    def wait_with(bad: Any) -> Callable[[], Awaitable[Any]]:
        options: dict[str, Any] = {"poll_interval_seconds": 0.05, "max_wait_seconds": 5.0}
        options[parameter] = bad
        return lambda: wait_for_stitch_sync(credentials, 4, "116078.4.sync.x", **options)

    errors = errors_in_a_flow(
        {repr(bad): wait_with(bad) for bad in [0, -0.5, math.nan, "abc", True, None]}
    )
    for bad, error in errors.items():
        assert error is not None, f"wait_for_stitch_sync accepted {parameter}={bad}"
        assert_names(error, parameter)
    assert sim.requests == []


@pytest.mark.parametrize("bad", ["maybe", "", "ATTACH", None])
def test_flow_refuses_an_unknown_already_running_policy(sim: StitchSimulator, bad: Any) -> None:
    with pytest.raises(ParameterTypeError) as caught:
        stitch_sync_flow(
            source_id=5, credentials=make_credentials(sim), on_already_running=bad, **FAST
        )
    assert "on_already_running" in str(caught.value)
    assert sim.requests == []


def test_start_task_refuses_an_unknown_already_running_policy(sim: StitchSimulator) -> None:
    credentials = make_credentials(sim)
    state = in_a_flow(lambda: start_stitch_sync(credentials, 5, "maybe"))  # type: ignore[call-overload]
    assert_names(raised(state), "on_already_running")
    assert sim.requests == []
