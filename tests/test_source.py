"""The saved ``StitchSource`` job block: trigger, wait, fetch; from scripts, sync and async flows.

Also: every block the package registers passes Prefect's standard block tests (found by
walking the package, not listed by hand), and every flow's parameters read whole in the
Prefect UI's form.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from prefect import flow
from prefect.blocks.core import Block
from prefect.flows import Flow
from prefect.testing.standard_test_suites import BlockStandardTestSuite

import prefect_stitch
from prefect_stitch import (
    StitchLoadFailed,
    StitchReplicationFailed,
    StitchSource,
    StitchSyncResult,
    StitchSyncRun,
    stitch_source_sync_flow,
)
from prefect_stitch.simulator import Outcome, StitchSimulator, StreamLoad
from tests.conftest import make_credentials

BLOCKS = sorted(
    {
        obj
        for _, obj in inspect.getmembers(prefect_stitch, inspect.isclass)
        if issubclass(obj, Block) and obj.__module__.startswith("prefect_stitch")
    },
    key=lambda cls: cls.__name__,
)
FLOWS = [obj for _, obj in inspect.getmembers(prefect_stitch) if isinstance(obj, Flow)]


def test_the_package_registers_both_blocks() -> None:
    assert [cls.__name__ for cls in BLOCKS] == ["StitchCredentials", "StitchSource"]


@pytest.mark.parametrize("block_class", BLOCKS, ids=lambda cls: cls.__name__)
class TestEveryBlock(BlockStandardTestSuite):
    @pytest.fixture
    def block(self, block_class: type[Block]) -> type[Block]:
        return block_class

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        """Prefect's version downloads the logo (and skips without Pillow): read the file.

        The logo URL is this repository's ``docs/img/stitch.png`` on GitHub; the file must be
        a square PNG between 46 and 999 pixels wide, as Prefect's suite requires.
        """
        url = str(block._logo_url)
        prefix = "https://raw.githubusercontent.com/prefect-stitch/prefect-stitch/main/"
        assert url.startswith(prefix), url
        png = (Path(__file__).parents[1] / url.removeprefix(prefix)).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk comes first
        assert width == height
        assert 1000 > width > 45


def _descriptions(schema: Any, path: str = "") -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in ("description", "title") and isinstance(value, str):
                found.append((f"{path}.{key}", value))
            found += _descriptions(value, f"{path}/{key}")
    elif isinstance(schema, list):
        for item in schema:
            found += _descriptions(item, path)
    return found


@pytest.mark.parametrize("deployable", FLOWS, ids=lambda f: f.name)
def test_every_parameter_description_reads_whole_in_the_ui(deployable: Flow[Any, Any]) -> None:
    """The UI renders descriptions as markdown/HTML: a `<client_id>` vanishes from the form."""
    schema = deployable.parameters.model_dump()
    texts = _descriptions(schema)
    assert texts, "no descriptions at all"
    for where, text in texts:
        assert not re.search(r"<[A-Za-z_][^>]*>", text), f"{deployable.name} {where}: {text!r}"
    for name, spec in schema["properties"].items():
        assert spec.get("description"), f"{deployable.name}: {name} has no description"


def saved(sim: StitchSimulator, source_id: int, **options: Any) -> StitchSource:
    options.setdefault("poll_interval_seconds", 0.1)
    options.setdefault("max_wait_seconds", 30)
    return StitchSource(credentials=make_credentials(sim), source_id=source_id, **options)


def test_from_a_plain_script(sim: StitchSimulator) -> None:
    sim.add_source(1, outcomes=[Outcome.success(0.3)])
    saved(sim, 1).save("source-script", overwrite=True)
    source = StitchSource.load("source-script")
    run = source.trigger()
    assert isinstance(run, StitchSyncRun)
    [job] = sim.jobs_started(1)
    assert run.job_name == job
    assert run.wait_for_completion() is None
    result = run.fetch_result()
    assert isinstance(result, StitchSyncResult)
    assert (result.job_name, result.status) == (job, "succeeded")
    assert {load.state for load in result.loads} == {"loaded"}


def test_from_a_sync_flow_with_the_typed_failure(sim: StitchSimulator) -> None:
    sim.add_source(2, outcomes=[Outcome.failure("tap", -9, "Killed", duration_seconds=0.3)])
    source = saved(sim, 2)

    @flow
    def pipeline() -> str:
        run = source.trigger()
        run.wait_for_completion()
        try:
            run.fetch_result()
        except StitchReplicationFailed as exc:
            return f"{exc.job_name}:{exc.failed_phases[0].exit_status}"
        return "succeeded?"

    assert pipeline() == f"{sim.jobs_started(2)[0]}:-9"


def test_from_an_async_flow(sim: StitchSimulator) -> None:
    sim.add_source(3, outcomes=[Outcome.success(0.3, loads={"contacts": StreamLoad(error="x")})])
    sim.add_source(4, outcomes=[Outcome.success(0.3)])
    failing, healthy = saved(sim, 3), saved(sim, 4)

    @flow
    async def pipeline() -> tuple[str, str]:
        ok_run = await healthy.trigger()
        bad_run = await failing.trigger()
        await ok_run.wait_for_completion()
        result = await ok_run.fetch_result()
        with pytest.raises(StitchLoadFailed) as caught:
            await bad_run.fetch_result()
        return result.status, caught.value.job_name or ""

    assert asyncio.run(pipeline()) == ("succeeded", sim.jobs_started(3)[0])


def test_the_deployable_flow_takes_the_saved_block(sim: StitchSimulator) -> None:
    sim.add_source(
        5,
        outcomes=[Outcome.success(0.3)],
    )
    saved(sim, 5, replication_retries=1).save("source-flow", overwrite=True)
    result = stitch_source_sync_flow(source=StitchSource.load("source-flow"))
    assert (result.job_name, result.status) == (sim.jobs_started(5)[0], "succeeded")
    schema = stitch_source_sync_flow.parameters.model_dump()
    assert schema["properties"]["source"]["$ref"].endswith("StitchSource")
    assert schema["definitions"]["StitchSource"]["block_type_slug"] == "stitch-source"


def test_a_saved_source_pauses_stitchs_schedule_first_and_shows_its_log_lines(
    sim: StitchSimulator,
) -> None:
    """The block's options are the flow's: pause_stitch_schedule and log_tail_lines work."""
    sim.add_source(9, outcomes=[Outcome.failure("tap", -9, "Killed", duration_seconds=0.3)])
    source = saved(sim, 9, pause_stitch_schedule=True, log_tail_lines=3)
    run = source.trigger()
    with pytest.raises(StitchReplicationFailed) as caught:
        run.fetch_result()
    calls = [r.endpoint for r in sim.requests if r.endpoint in ("update_source", "trigger")]
    assert calls == ["update_source", "trigger"]  # paused before the job was started
    assert sim.source(9)["paused_at"] is not None
    assert caught.value.log_tail is not None and len(caught.value.log_tail.splitlines()) == 3
