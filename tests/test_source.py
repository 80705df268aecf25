"""The saved ``StitchSource`` job block: trigger, wait, fetch; from scripts, sync and async flows.

Also: every block the package registers passes Prefect's standard block tests (found by
walking the package, not listed by hand); the block types read, as the Prefect server stores
them, the way a new user needs them in the UI (no stray block type, one-line descriptions,
code snippets that run as pasted on a saved block's page, the source form's credentials
field); every link the package shows resolves; every flow's parameters read whole in the
Prefect UI's form.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from prefect import flow
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import BlockSchema, BlockType
from prefect.flows import Flow
from prefect.settings import PREFECT_API_URL
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from prefect.utilities.dispatch import get_registry_for_type

import prefect_stitch
from prefect_stitch import (
    StitchCredentials,
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
        """No logo rather than a dead link: Prefect's version would require one.

        The package has no published home that could serve an image, and no image URL could
        be checked to resolve; without a logo the Prefect UI shows its own block icon.
        """
        assert block._logo_url is None

    def test_links_to_stitchs_api_reference(self, block: type[Block]) -> None:
        assert str(block._documentation_url) == STITCH_API_DOCS


# -- what the Prefect UI shows of the blocks ------------------------------------------------

STITCH_API_DOCS = "https://www.stitchdata.com/docs/developers/stitch-connect/api"
UI_SNIPPET = re.compile(r"```python([\S\s]*?)```")
"""How the Prefect UI (both of 3.9.1's) reads a block type's code example: the first fence."""


def stored_block_types() -> dict[str, tuple[BlockType, BlockSchema | None]]:
    """Register the package's blocks, then read every block type back from the server."""
    for block in BLOCKS:
        block.register_type_and_schema()
    with get_client(sync_client=True) as client:
        return {
            block_type.slug: (
                block_type,
                client.get_most_recent_block_schema_for_block_type(block_type.id),
            )
            for block_type in client.read_block_types()
        }


def as_shown(block: type[Block], block_name: str) -> str:
    """The snippet the UI shows on the page of a saved block: its name for BLOCK_NAME."""
    block_type, _ = stored_block_types()[block.get_block_type_slug()]
    assert block_type.code_example is not None
    [code] = UI_SNIPPET.findall(block_type.code_example)
    return str(code).replace("BLOCK_NAME", block_name, 1).strip()


def test_the_package_adds_no_other_block_type() -> None:
    """A parametrized generic base (``JobBlock[StitchSyncResult]``) was a block type too."""
    package_classes = {
        cls
        for cls in (get_registry_for_type(Block) or {}).values()  # the server registers these
        if cls.__module__.startswith("prefect_stitch")
    }
    assert package_classes == set(BLOCKS)
    stored = stored_block_types()
    names = sorted(block_type.name for block_type, _ in stored.values())
    assert [name for name in names if "Stitch" in name] == ["Stitch Credentials", "Stitch Source"]
    assert not [name for name in names if "[" in name]


@pytest.mark.parametrize("block", BLOCKS, ids=lambda cls: cls.__name__)
def test_the_block_types_description_is_one_line(block: type[Block]) -> None:
    """The UI shows each line of a description as its own line, so a wrap breaks a sentence."""
    block_type, schema = stored_block_types()[block.get_block_type_slug()]
    assert block_type.description and "\n" not in block_type.description
    assert schema is not None and schema.fields["description"] == block_type.description
    assert block_type.logo_url is None
    assert str(block_type.documentation_url) == STITCH_API_DOCS


@pytest.mark.parametrize("block", BLOCKS, ids=lambda cls: cls.__name__)
def test_the_block_types_code_example_is_python_that_loads_the_saved_block(
    block: type[Block],
) -> None:
    """The stored example is one fence of plain Python: nothing the UI would escape or drop."""
    block_type, _ = stored_block_types()[block.get_block_type_slug()]
    stored = block_type.code_example
    assert stored is not None
    [code] = UI_SNIPPET.findall(stored)
    assert stored.strip() == f"```python{code}```", "text outside the fence"
    compile(code, f"<{block.__name__} code example>", "exec")
    assert not re.search(r"&(#?\w+);", stored), "an HTML entity"
    assert "<" not in stored and ">" not in stored, "the UI escapes < and >"
    assert code.count("BLOCK_NAME") == 1  # the UI replaces the first one only
    assert re.search(rf'^\w+ = {block.__name__}\.load\("BLOCK_NAME"\)$', code, re.MULTILINE)
    assert ".save(" not in code


def test_the_credentials_page_snippet_lists_the_accounts_sources(
    sim: StitchSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.add_source(11, display_name="Recurly")
    sim.add_source(12, display_name="HubSpot")
    make_credentials(sim).save("ui-credentials", overwrite=True)
    code = as_shown(StitchCredentials, "ui-credentials")
    exec(compile(code, "<pasted>", "exec"), {"__name__": "__main__"})
    printed = capsys.readouterr().out.splitlines()
    assert "11 Recurly" in printed and "12 HubSpot" in printed


def test_the_source_page_snippet_syncs_it_from_a_plain_script_without_warnings(
    sim: StitchSimulator,
) -> None:
    """Pasted into a script of its own: no UserWarning about logs without a flow run."""
    sim.add_source(13, outcomes=[Outcome.success(0.3)])
    saved(sim, 13).save("ui-source", overwrite=True)
    code = as_shown(StitchSource, "ui-source")
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    script = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180
    )
    assert script.returncode == 0, script.stderr
    [job] = sim.jobs_started(13)
    assert script.stdout.split()[:2] == ["succeeded", job]
    assert "Finished in state Completed" in script.stderr  # the task engine's lines, shown
    assert "UserWarning" not in script.stderr
    assert "without a flow run id" not in script.stderr


def test_the_source_form_labels_its_credentials_field() -> None:
    _, schema = stored_block_types()["stitch-source"]
    assert schema is not None
    field = schema.fields["properties"]["credentials"]
    assert field["title"] == "Stitch credentials"
    assert field["description"] == (
        "The Stitch Credentials block of the account the source belongs to."
    )
    assert field["position"] == 0


LINKED_FILES = ["prefect_stitch", "docs", "README.md", "mkdocs.yml", "pyproject.toml"]
HOSTS_THAT_EXIST = {
    "www.stitchdata.com",  # Stitch's documentation
    "app.stitchdata.com",  # the Stitch app (source pages)
    "api.stitchdata.com",  # the Connect API
    "api.eu-central-1.stitchdata.com",  # Stitch's documented EU host
    "docs.prefect.io",
    "www.singer.io",
    "www.mkdocs.org",
    "squidfunk.github.io",
    "mkdocstrings.github.io",
    "127.0.0.1",
    "localhost",
}
"""Hosts known to answer; the package has no published repository or site to link to."""


def test_every_link_the_package_shows_points_to_a_host_that_exists() -> None:
    root = Path(__file__).parents[1]
    texts = {
        path: path.read_text()
        for name in LINKED_FILES
        for path in ([root / name] if (root / name).is_file() else (root / name).rglob("*"))
        if path.suffix in (".py", ".md", ".yml", ".toml")
    }
    links = {
        (path.relative_to(root).as_posix(), url)
        for path, text in texts.items()
        for url in re.findall(r"https?://[\w.\-\[\]:]+", text)
    }
    assert links
    unknown = sorted(
        (where, url)
        for where, url in links
        if (urlsplit(url).hostname or "").strip("[]") not in HOSTS_THAT_EXIST | {"::1"}
    )
    assert unknown == []


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
