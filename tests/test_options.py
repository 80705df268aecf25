"""One options model: every entry point takes the same options, and one layer refuses bad ones."""

from __future__ import annotations

import asyncio
import inspect
import math
from typing import Any

import pytest
from prefect.exceptions import ParameterTypeError

from prefect_stitch import (
    StitchConfigurationError,
    StitchSource,
    SyncOptions,
    run_stitch_sync,
    run_stitch_sync_many,
    stitch_sync_flow,
    stitch_sync_many_flow,
)
from prefect_stitch.options import DEFAULTS
from prefect_stitch.simulator import StitchSimulator
from tests.conftest import make_credentials

FLOWS = [stitch_sync_flow, stitch_sync_many_flow]


@pytest.mark.parametrize("deployable", FLOWS, ids=lambda f: f.name)
def test_every_flow_takes_every_option_with_its_default(deployable: Any) -> None:
    parameters = inspect.signature(deployable.fn).parameters
    for name in SyncOptions.names():
        assert name in parameters, f"{deployable.name} lacks the option {name}"
        assert parameters[name].default == getattr(DEFAULTS, name), name


def test_the_saved_source_takes_every_option_with_its_default() -> None:
    fields = StitchSource.model_fields
    for name in SyncOptions.names():
        assert name in fields, f"StitchSource lacks the option {name}"
        assert fields[name].default == getattr(DEFAULTS, name), name


def test_the_saved_source_form_starts_with_its_credentials_and_source() -> None:
    assert list(StitchSource.model_fields)[:2] == ["credentials", "source_id"]


def test_a_saved_source_hands_its_options_to_the_sync(sim: StitchSimulator) -> None:
    source = StitchSource(
        credentials=make_credentials(sim),
        source_id=7,
        log_tail_lines=5,
        global_rate_limit="stitch-limit",
        pause_stitch_schedule=True,
    )
    options = source.options()
    assert (options.log_tail_lines, options.global_rate_limit) == (5, "stitch-limit")
    assert options.pause_stitch_schedule is True


BAD = [
    ("poll_interval_seconds", 0),
    ("poll_interval_seconds", -1.5),
    ("poll_interval_seconds", math.nan),
    ("poll_interval_seconds", True),
    ("poll_interval_seconds", "soon"),
    ("max_wait_seconds", 0),
    ("max_wait_seconds", math.inf),
    ("max_load_wait_seconds", -1),
    ("on_already_running", "maybe"),
    ("loads", "always"),
    ("replication_retries", -1),
    ("replication_retries", 101),
    ("replication_retries", 1.5),
    ("replication_retry_delay_seconds", -1),
    ("log_tail_lines", -1),
    ("stop_on_timeout", "perhaps"),
    ("global_rate_limit", ""),
]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_the_model_refuses_a_bad_option_naming_it(name: str, value: object) -> None:
    with pytest.raises(StitchConfigurationError) as caught:
        SyncOptions.of(**{name: value})
    assert caught.value.parameter == name
    assert name in str(caught.value)


def test_numbers_and_switches_may_come_as_text_as_a_form_sends_them() -> None:
    options = SyncOptions.of(
        poll_interval_seconds="60", replication_retries="2", stop_on_timeout="false"
    )
    assert (options.poll_interval_seconds, options.replication_retries) == (60.0, 2)
    assert options.stop_on_timeout is False


def test_an_unknown_option_is_refused_and_named() -> None:
    with pytest.raises(StitchConfigurationError) as caught:
        SyncOptions.of(poll_interval=30)
    assert caught.value.parameter == "poll_interval"
    assert "poll_interval_seconds" in str(caught.value)  # the options are listed


def test_options_are_frozen_and_replaced_through_the_same_checks() -> None:
    options = SyncOptions.of(replication_retries=2)
    with pytest.raises(ValueError):
        options.replication_retries = 3  # type: ignore[misc]
    assert options.replace(loads="ignore").loads == "ignore"
    with pytest.raises(StitchConfigurationError):
        options.replace(loads="sometimes")


@pytest.mark.parametrize(("name", "value"), [BAD[0], BAD[8], BAD[10], BAD[14]])
def test_a_flow_refuses_a_bad_option_with_one_error_type(
    sim: StitchSimulator, name: str, value: object
) -> None:
    with pytest.raises(ParameterTypeError) as caught:
        stitch_sync_flow(source_id=3, credentials=make_credentials(sim), **{name: value})
    assert name in str(caught.value)
    with pytest.raises(ParameterTypeError) as caught:
        stitch_sync_many_flow(source_ids=[3], credentials=make_credentials(sim), **{name: value})
    assert name in str(caught.value)
    assert sim.requests == []


@pytest.mark.parametrize(("name", "value"), [BAD[0], BAD[8], BAD[10], BAD[14], ("nope", 1)])
def test_a_coroutine_body_refuses_a_bad_option_with_one_error_type(
    sim: StitchSimulator, name: str, value: object
) -> None:
    credentials = make_credentials(sim)
    for call in (
        lambda: run_stitch_sync(3, credentials, **{name: value}),
        lambda: run_stitch_sync_many([3], credentials, **{name: value}),
    ):
        with pytest.raises(StitchConfigurationError) as caught:
            asyncio.run(call())
        assert caught.value.parameter == name
    assert sim.requests == []


def test_the_flows_keep_their_parameter_order_new_options_come_last() -> None:
    """Positional callers and the deployment form keep working: nothing moved."""
    single = list(inspect.signature(stitch_sync_flow.fn).parameters)
    assert single[:12] == [
        "source_id",
        "credentials",
        "poll_interval_seconds",
        "max_wait_seconds",
        "on_already_running",
        "stop_on_timeout",
        "fetch_logs_on_failure",
        "pause_stitch_schedule",
        "replication_retries",
        "replication_retry_delay_seconds",
        "loads",
        "max_load_wait_seconds",
    ]
    many = list(inspect.signature(stitch_sync_many_flow.fn).parameters)
    assert many[:14] == [
        "source_ids",
        "credentials",
        "poll_interval_seconds",
        "max_wait_seconds",
        "max_concurrent",
        "fail_fast",
        "on_already_running",
        "stop_on_timeout",
        "fetch_logs_on_failure",
        "global_rate_limit",
        "replication_retries",
        "replication_retry_delay_seconds",
        "loads",
        "max_load_wait_seconds",
    ]


@pytest.mark.parametrize("deployable", FLOWS, ids=lambda f: f.name)
def test_the_form_describes_each_option_in_the_words_of_the_options_model(
    deployable: Any,
) -> None:
    """A deployment's form reads the flow's docstring: it must say what SyncOptions says."""
    properties = deployable.parameters.model_dump()["properties"]
    for name, field in SyncOptions.model_fields.items():
        shown = " ".join(str(properties[name]["description"]).split())
        assert shown == field.description, name


def test_old_import_paths_still_work_with_a_deprecation_warning() -> None:
    import importlib
    import sys

    for old in ("prefect_stitch.verdict", "prefect_stitch.poller", "prefect_stitch.reporting"):
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match="internal now"):
            importlib.import_module(old)
    verdict = sys.modules["prefect_stitch.verdict"]
    with pytest.warns(DeprecationWarning, match="SyncStatus"):
        assert verdict.ExtractionState.TERMINATED.is_final
    assert verdict.judge_extraction is not None
    import prefect_stitch._verdict as moved

    assert moved.__spec__ is not None and moved.__spec__.name == "prefect_stitch._verdict"
    import prefect_stitch.tasks as tasks

    with pytest.warns(DeprecationWarning, match="DEFAULT_LOG_TAIL_LINES"):
        assert DEFAULTS.log_tail_lines == tasks.DEFAULT_LOG_TAIL_LINES
