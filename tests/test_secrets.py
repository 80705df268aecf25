"""The access token never leaks, and it never travels unprotected.

Each path of a sync (success, a tap failure with its log tail, a terminated job, a timeout,
a 401 for a wrong token, 500s beyond the retry budget, "already running" with
``on_already_running="fail"``, a trigger whose answer is lost, the client-id lookup) runs
with a distinctive token while everything a person, a log shipper or the Prefect UI could
see is captured:

* every log record, at DEBUG, of the root, ``prefect``, ``httpx``, ``httpcore`` and
  ``prefect_stitch`` loggers (tracebacks included);
* the run's logs, flow run, task runs, artifacts and ``stitch.sync.*`` events as stored in
  the Prefect API;
* the flow's result or exception (``str``, ``repr``, traceback and chained causes), and the
  persisted result on disk;
* the credentials block's ``repr``/``str``/JSON dump, and the client's ``repr``;
* the simulator's request log, printed and through its control endpoint;
* stdout and stderr.

The token must appear in none of it, and each capture must hold something (a test that
captured nothing would pass for the wrong reason). Then TLS: certificate verification is on
for real hosts, and plain http is refused for anything but this machine.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import State
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from pydantic import ValidationError

from prefect_stitch import StitchCredentials, stitch_sync_flow
from prefect_stitch.simulator import Fault, Outcome, RecordedRequest, StitchSimulator
from prefect_stitch.simulator.pytest_plugin import SimulatorFactory
from tests.conftest import make_credentials
from tests.helpers import until

TOKEN = "ac_SECRET_c0ffee_9d1b7"
WRONG_TOKEN = "ac_SECRET_f00dbabe_wrong"
FRAGMENTS = (TOKEN, "c0ffee_9d1b7", WRONG_TOKEN, "f00dbabe_wrong")
"""The tokens, and their tails (a mask that keeps the end of a token still leaks it)."""
FAST = {"poll_interval_seconds": 0.05, "max_wait_seconds": 30.0}
LOGGERS = (
    "",
    "prefect",
    "prefect.extra",
    "prefect._internal",
    "httpx",
    "httpcore",
    "prefect_stitch",
)


@pytest.fixture(scope="module", autouse=True)
def _no_heartbeat_join() -> Iterator[None]:
    """Prefect joins its 1 s heartbeat thread at the end of each flow run; not needed here."""
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@pytest.fixture
def secret_sim(stitch_simulator_factory: SimulatorFactory) -> StitchSimulator:
    return stitch_simulator_factory(token=TOKEN)


class Collector(logging.Handler):
    """Keeps every record it sees."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def debug_logging() -> Iterator[Collector]:
    """Every record of every relevant logger at DEBUG, non-propagating ones included."""
    collector = Collector()
    saved = {name: logging.getLogger(name).level for name in LOGGERS}
    attached = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        if not name or not logger.propagate:
            logger.addHandler(collector)
            attached.append(logger)
    try:
        yield collector
    finally:
        for logger in attached:
            logger.removeHandler(collector)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@dataclass
class Capture:
    """Named texts gathered from everywhere a token could end up."""

    texts: dict[str, list[str]] = field(default_factory=dict)

    def add(self, where: str, *values: object) -> None:
        self.texts.setdefault(where, []).extend(
            value if isinstance(value, str) else repr(value) for value in values
        )

    def assert_no_token(self) -> None:
        for where, values in self.texts.items():
            for text in values:
                for fragment in FRAGMENTS:
                    assert fragment not in text, f"{fragment!r} leaked in {where}: {text[:2000]}"

    def assert_captured(self, *wheres: str) -> None:
        for where in wheres:
            assert any(text.strip() for text in self.texts.get(where, [])), f"nothing in {where}"


def exception_texts(error: BaseException) -> list[str]:
    """str, repr and the formatted traceback of an error and of every error chained to it."""
    texts: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), *traceback.format_exception(current)]
        texts.append(repr(vars(current)) if hasattr(current, "__dict__") else "")
        pending += [current.__cause__, current.__context__]
    return texts


def persisted_result(state: State[Any]) -> list[str]:
    """What Prefect stored on disk for the run's result (or exception), decoded."""
    metadata = getattr(state.data, "metadata", state.data)
    key = getattr(metadata, "storage_key", None)
    if key is None or not Path(key).exists():
        return []
    raw = Path(key).read_bytes()
    texts = [raw.decode("latin-1")]
    try:  # a JSON record whose "result" is the base64 of the pickled value
        record = json.loads(raw)
        texts.append(base64.b64decode(record["result"]).decode("latin-1"))
    except (ValueError, KeyError, TypeError):
        pass
    return texts


async def api_records(runs: dict[str, tuple[Any, bool]]) -> dict[str, dict[str, list[str]]]:
    """What the Prefect API holds about each flow run, once its logs and events have landed.

    Args:
        runs: For each path, its flow run id and whether it announces anything (a run refused
            before a job started emits no stitch.sync event).
    """
    async with get_client() as client:

        async def logs_of(flow_run_id: Any) -> list[Any]:
            """Every log of the run: at DEBUG a run writes more than the API's page of 200."""
            logs: list[Any] = []
            while True:
                page = await client.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                    limit=200,
                    offset=len(logs),
                )
                logs += page
                if len(page) < 200:
                    return logs

        async def events_of(flow_run_id: Any) -> list[Any]:
            page = await client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(prefix=["stitch.sync."]),
                    related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
                ),
                limit=50,
            )
            return list(page.events)

        async def landed() -> bool:
            for flow_run_id, announces in runs.values():
                logs = await logs_of(flow_run_id)
                if not any("Finished in state" in log.message for log in logs):
                    return False
                if announces and not await events_of(flow_run_id):
                    return False
            return True

        await until(landed, 30, "the logs and events of every run")
        every_stitch_event = await client.read_events(
            filter=EventFilter(event=EventNameFilter(prefix=["stitch.sync."])), limit=50
        )
        records: dict[str, dict[str, list[str]]] = {}
        for name, (flow_run_id, _) in runs.items():
            flow_run = await client.read_flow_run(flow_run_id)
            task_runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
                )
            )
            records[name] = {
                "api logs": [
                    f"{log.level} {log.name} {log.message}" for log in await logs_of(flow_run_id)
                ],
                "events": [event.model_dump_json() for event in await events_of(flow_run_id)],
                "all stitch.sync events": [
                    event.model_dump_json() for event in every_stitch_event.events
                ],
                "flow run": [flow_run.model_dump_json(), repr(flow_run.parameters)],
                "task runs": [task_run.model_dump_json() for task_run in task_runs],
                "artifacts": [artifact.model_dump_json() for artifact in artifacts],
            }
    return records


@dataclass(frozen=True)
class SyncPath:
    name: str
    outcome: Outcome
    options: dict[str, Any] = field(default_factory=dict)
    fails: bool = True
    announces: bool = True
    """Whether the run emits stitch.sync events (not when refused before a job started)."""


PATHS = [
    SyncPath("success", Outcome.success(duration_seconds=0.1), fails=False),
    SyncPath("tap-failure-with-logs", Outcome.failure("tap", -9, "Killed", duration_seconds=0.1)),
    SyncPath("terminated", Outcome.terminated(duration_seconds=0.1)),
    SyncPath("timeout", Outcome.success(duration_seconds=None), {"max_wait_seconds": 4.0}),
    SyncPath("401-wrong-token", Outcome.success(duration_seconds=0.1), announces=False),
    # The listing fails before the trigger (its baseline): no job, no event.
    SyncPath("500s-beyond-budget", Outcome.success(duration_seconds=0.1), announces=False),
    SyncPath(
        "already-running-fail",
        Outcome.success(duration_seconds=None),
        {"on_already_running": "fail"},
        announces=False,
    ),
    SyncPath("trigger-answer-lost", Outcome.success(duration_seconds=0.3), fails=False),
    SyncPath("client-id-lookup", Outcome.success(duration_seconds=0.1), fails=False),
]


@dataclass
class Run:
    """One path's run and everything captured while it ran."""

    path: SyncPath
    credentials: StitchCredentials
    state: State[Any]
    records: list[logging.LogRecord]
    stdout: str
    stderr: str
    requests: list[RecordedRequest]
    control: str
    api: dict[str, list[str]] = field(default_factory=dict)


def run_path(path: SyncPath, sim: StitchSimulator, source_id: int) -> tuple[Any, Any, Any]:
    sim.add_source(source_id, outcomes=[path.outcome], log_lines=40)
    overrides: dict[str, Any] = {}
    if path.name == "401-wrong-token":
        overrides["access_token"] = WRONG_TOKEN
    elif path.name == "500s-beyond-budget":
        sim.inject("extractions", Fault.status(500), times=100)
    elif path.name == "already-running-fail":
        sim.start_job(source_id)
    elif path.name == "trigger-answer-lost":
        sim.inject("trigger", Fault.start_then_drop())
    elif path.name == "client-id-lookup":
        overrides["client_id"] = None
    credentials = make_credentials(sim, **overrides)
    with debug_logging() as collector:
        state = stitch_sync_flow(
            source_id=source_id,
            credentials=credentials,
            return_state=True,
            **{**FAST, **path.options},
        )
    return credentials, state, collector.records


@pytest.fixture(scope="session")  # not "module": pytest-xdist may set a module's up twice
def runs(request: pytest.FixtureRequest) -> Iterator[dict[str, Run]]:
    """Run every path selected for the test below, then read what the API holds of each.

    They run one after the other with their own DEBUG log capture; the API is read once at
    the end, when every run's logs and events have landed (events take a few seconds).
    """
    selected = {
        item.callspec.id
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_the_token_appears_nowhere"
    }
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def output() -> tuple[str, str]:
        if capture is None:  # running with -p no:capture: stdout is checked by the test only
            return "", ""
        out, err = capture.read_global_capture()
        return out, err

    done: dict[str, Run] = {}
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        with StitchSimulator(token=TOKEN) as sim:
            for number, path in enumerate(PATHS):
                if path.name not in selected:
                    continue
                output()  # drop what was printed before this run
                credentials, state, records = run_path(path, sim, 900 + number)
                print(sim.requests)  # the request log, as a user would print it
                print(*(str(r) for r in sim.requests), sep="\n")
                control = httpx.get(f"{sim.base_url}/_simulator/requests", timeout=5).text
                out, err = output()
                done[path.name] = Run(
                    path, credentials, state, records, out, err, sim.requests, control
                )
                sim.reset()
        api = asyncio.run(
            api_records(
                {
                    name: (run.state.state_details.flow_run_id, run.path.announces)
                    for name, run in done.items()
                }
            )
        )
    for name, records in api.items():
        done[name].api = records
    yield done


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_the_token_appears_nowhere(
    runs: dict[str, Run], capsys: pytest.CaptureFixture[str], path: SyncPath
) -> None:
    run = runs[path.name]
    state, credentials = run.state, run.credentials
    capture = Capture()
    assert state.is_failed() is path.fails, f"{state.type}: {state.message}"
    capture.add("state", state.message or "", repr(state))
    try:
        result = state.result()
    except Exception as error:
        capture.add("exception", *exception_texts(error))
    else:
        capture.add("result", result.model_dump_json(), repr(result), str(result))
    capture.add("persisted result", *persisted_result(state))
    capture.add(
        "block",
        repr(credentials),
        str(credentials),
        credentials.model_dump_json(),
        repr(credentials.model_dump(mode="json")),
        repr(credentials.model_dump()),
        repr(credentials.get_client()),
    )
    for where, texts in run.api.items():
        capture.add(where, *texts)
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    capture.add(
        "log records",
        *(formatter.format(record) for record in run.records),
        *(repr(record.args) for record in run.records),
    )
    capture.add("simulator control API", run.control)
    print(run.requests)
    out, err = capsys.readouterr()
    capture.add("stdout", out, run.stdout)
    capture.add("stderr", err, run.stderr)

    capture.assert_no_token()
    capture.assert_captured(
        "state",
        "block",
        "api logs",
        "all stitch.sync events",
        "flow run",
        "task runs",
        "log records",
        "simulator control API",
        "stdout",
    )
    capture.assert_captured("exception" if path.fails else "result", "persisted result")
    if path.announces:
        capture.assert_captured("events")
    if path.name in ("success", "tap-failure-with-logs", "terminated", "timeout"):
        capture.assert_captured("artifacts")
    # The capture saw the traffic: requests were logged, with the Authorization header sent.
    assert any("HTTP Request" in record.getMessage() for record in run.records)
    api_requests = [r for r in run.requests if r.endpoint != "log_download"]
    assert api_requests and all(r.authorization_present for r in api_requests)
    assert all(r.headers.get("authorization") == "Bearer ***" for r in api_requests)


def test_the_block_never_shows_the_token_but_still_holds_it() -> None:
    credentials = StitchCredentials(access_token=TOKEN, client_id=116078)
    shown = [
        repr(credentials),
        str(credentials),
        credentials.model_dump_json(),
        repr(credentials.model_dump(mode="json")),
        repr(credentials.access_token),
        str(credentials.access_token),
    ]
    for text in shown:
        assert TOKEN not in text, text
    assert credentials.access_token.get_secret_value() == TOKEN


@pytest.mark.parametrize(
    "base_url",
    [
        pytest.param(TOKEN, id="token-in-place-of-the-url"),
        pytest.param(f"https://api.stitchdata.com:abc/?t={TOKEN}", id="token-in-a-bad-url"),
    ],
)
def test_a_token_pasted_into_base_url_is_not_echoed(base_url: str) -> None:
    """Fields swapped in the block form: the refusal must not print the token back.

    The message and repr hide every input. ``errors()`` is pydantic's structured report
    and carries the offending field's own input by design (callers opt out with
    ``include_input=False``); what it must never carry is another field, above all the
    real ``access_token``: the base_url check is a field validator for that reason.
    """
    with pytest.raises(ValidationError) as caught:
        StitchCredentials(access_token="ac_other_token", base_url=base_url)
    assert "base_url" in str(caught.value)
    for text in (
        str(caught.value),
        repr(caught.value),
        repr(caught.value.errors(include_input=False)),
    ):
        assert TOKEN not in text, text
    assert "ac_other_token" not in repr(caught.value.errors())


# -- transport security ---------------------------------------------------------------------------


def ssl_context_of(http: httpx.AsyncClient) -> ssl.SSLContext:
    transport = http._transport
    pool = transport._pool  # type: ignore[attr-defined]
    context: ssl.SSLContext = pool._ssl_context
    return context


@pytest.mark.parametrize(
    "base_url",
    ["https://api.stitchdata.com", "https://api.eu-central-1.stitchdata.com"],
)
async def test_tls_certificates_are_verified_for_real_hosts(base_url: str) -> None:
    credentials = StitchCredentials(access_token=TOKEN, client_id=116078, base_url=base_url)
    async with credentials.get_client() as client:
        # The API client, and the one that downloads pre-signed log URLs (made on first use).
        clients = [client._http, client._download_client()]
        for http in clients:
            assert http is not None
            context = ssl_context_of(http)
            assert context.verify_mode == ssl.CERT_REQUIRED
            assert context.check_hostname is True
        assert str(client._http.base_url).startswith(base_url)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "base_url",
    [
        "http://api.stitchdata.com",
        "http://api.eu-central-1.stitchdata.com:80",
        "http://10.0.0.5:8765",
        "http://0.0.0.0:8765",
        "http://localhost.example.com",
        "http://127.0.0.1.nip.io",
        "HTTP://API.STITCHDATA.COM",
    ],
)
def test_plain_http_is_refused_for_a_remote_host(base_url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        StitchCredentials(access_token=TOKEN, base_url=base_url)
    assert "base_url" in str(caught.value)
    assert "https" in str(caught.value)
    allowed = StitchCredentials(access_token=TOKEN, base_url=base_url, allow_insecure_http=True)
    assert allowed.base_url.lower().startswith("http://")


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765", "http://127.8.9.1"],
)
def test_plain_http_is_accepted_for_this_machine(base_url: str) -> None:
    assert StitchCredentials(access_token=TOKEN, base_url=base_url).base_url == base_url


async def test_the_token_goes_only_to_the_api_host_never_to_the_log_storage(
    secret_sim: StitchSimulator,
) -> None:
    secret_sim.add_source(950, outcomes=[Outcome.failure("tap", 1, "x", duration_seconds=0)])
    job_name = secret_sim.seed_completed(950, Outcome.failure("tap", 1, "x"))
    async with make_credentials(secret_sim).get_client() as client:
        assert await client.get_extraction_logs(job_name, tail_lines=3)
    [download] = secret_sim.requests_for("log_download")
    assert download.authorization_present is False
    [logs] = secret_sim.requests_for("logs")
    assert logs.authorization_valid is True
