"""The fault matrix: each call of ``stitch_sync_flow``, each transient fault, in and beyond budget.

End to end: the real flow, over real HTTP, against the simulator, with the Prefect harness.

For each API call of a sync (the trigger, the extraction listing, page 2 of it alone, the
client-id lookup, the logs redirect and the pre-signed log download) and each fault (500,
502 with an HTML page, 503, 429 with and without ``Retry-After``, a dropped connection, a
read timeout, a malformed JSON body, valid JSON of the wrong shape), ``k`` consecutive
faults are injected:

* ``k`` within the retry budget: the verdict is the one the sync has without faults, and
  exactly one Stitch job was started;
* ``k`` beyond it: a typed ``StitchAPIError`` names the call and its last status, the flow
  run ends Failed, and it does so quickly. Faults on the logs never change the verdict:
  the replication failure is still raised, without a log tail.

The budgets, with ``r = credentials.max_retries``:

* trigger: ``r`` Prefect task retries of one request each (``k = r`` within, ``r + 1``
  beyond);
* every other call: ``r`` client retries per request; ``k = r`` is within, ``k = 100`` is
  beyond. The extraction listing is first read by the trigger task (the baseline it
  needs to recognise our job), and the client-id lookup sits inside it too: Prefect
  retries that task, so beyond the budget no job is started and the run fails with the
  listing's error. Once the job runs, the wait also tolerates ``max_poll_failures`` (5)
  failed polls in a row.

Faults that cost real seconds each (``Retry-After: 1``, a read timeout) run with ``r = 1``
to keep the matrix fast; every other fault runs with the suite's ``r = 3``.

The 108 cases run in a module fixture, one call's 18 at a time, each on its own simulator
(so its own account, poller and rate limiter): the 4 that mostly sleep side by side, then
the others one after the other (Prefect's SQLite test API answers concurrent writes with
503s, which its client backs off from for seconds). Each case is then checked by its own
test. pytest-xdist keeps a call's cases on one worker (a class per call).

Then the special cases: a trigger whose answer is lost after Stitch started the job, a
flow run retried by Prefect while its job runs, and an extraction list that shifts between
its pages while it is read.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import prefect.events
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from prefect.client.schemas.objects import State
from prefect.settings import (
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    PREFECT_LOGGING_TO_API_ENABLED,
    temporary_settings,
)

from prefect_stitch import (
    PhaseFailure,
    StitchAPIError,
    StitchCredentials,
    StitchReplicationFailed,
    StitchSyncResult,
    StitchTransportError,
    stitch_sync_flow,
)
from prefect_stitch.client import _client_id_cache as client_id_cache
from prefect_stitch.simulator import Fault, Outcome, StitchSimulator
from tests.conftest import make_credentials
from tests.helpers import when

POLL_SECONDS = 0.05
GUARD_SECONDS = 60.0
"""``max_wait_seconds`` of every run: far above what any case needs, so nothing can hang."""
QUICK_SECONDS = 30.0
"""Every run of this module must end within this wall-clock time."""
MAX_POLL_FAILURES = 5
"""``wait_for_stitch_sync``'s default tolerance of consecutive failed polls."""
BEYOND = 100
"""``k`` beyond the budget of every call but the trigger."""
SLOW_SECONDS = 2.0
"""A slow answer comes this long after the request: far past the client's timeout, so that
a busy machine (an event loop that wakes late, finding the answer already there) still
sees a timeout."""
REQUEST_TIMEOUT_SECONDS = 0.5
JOB_SECONDS = 0.05

HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n"
    "<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
KILLED = Outcome.failure("tap", -9, "Killed", duration_seconds=JOB_SECONDS)
KILLED_PHASES = [PhaseFailure("tap", -9, "Killed")]
KILLED_SUMMARY = "Exit status is: Discovery succeeded. Tap failed with code -9. Target succeeded."
PASS = Fault.mutate(lambda sim: None)
"""A fault that answers normally: it holds a place in an endpoint's fault queue."""


@pytest.fixture(scope="module", autouse=True)
def _no_heartbeat_join() -> Iterator[None]:
    """Switch off Prefect's flow-run heartbeats for this module.

    Prefect joins its heartbeat thread, which sleeps in 1 s steps, at the end of every flow
    run: about half a second per run, for ~150 runs here. Heartbeats (crash detection of
    deployed runs) play no part in what these tests check.
    """
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


# -- the matrix ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultCase:
    name: str
    make: Callable[[], Fault]
    status: int | None
    """The HTTP status the error must report (None: no response at all)."""
    costly: bool = False
    """Each fault costs real time (Retry-After, timeout): run with max_retries=1."""

    @property
    def kind(self) -> str:
        return self.make().kind

    @property
    def retries(self) -> int:
        return 1 if self.costly else 3


FAULTS = [
    FaultCase("500", lambda: Fault.status(500), 500),
    FaultCase("502-html", lambda: Fault.status(502, body=HTML_502), 502),
    FaultCase("503", lambda: Fault.status(503), 503),
    FaultCase(
        "429-retry-after", lambda: Fault.status(429, headers={"Retry-After": "1"}), 429, True
    ),
    FaultCase("429", lambda: Fault.status(429), 429),
    FaultCase("drop", Fault.drop, None),
    FaultCase("read-timeout", lambda: Fault.slow(SLOW_SECONDS), None, True),
    FaultCase("malformed-json", Fault.malformed_json, 200),
    FaultCase("wrong-shape", Fault.wrong_shape, 200),
]
CALLS = ["trigger", "extractions", "extractions-page2", "source", "logs", "log_download"]
SOURCE = {
    "trigger": 501,
    "extractions": 502,
    "extractions-page2": 140,  # on page 2 of 150 sources
    "source": 503,
    "logs": 504,
    "log_download": 505,
}
CASES = [
    pytest.param(fault, within, id=f"{fault.name}-{'within' if within else 'beyond'}")
    for fault in FAULTS
    for within in (True, False)
]
"""The cases of one call: each fault, within and beyond its budget."""
MATRIX = [
    pytest.param(call, *case.values, id=f"{call}-{case.id}") for call in CALLS for case in CASES
]


def run_flow(credentials: StitchCredentials, source_id: int, **options: Any) -> State[Any]:
    """Run the real flow to a final state; fail the test if it took long."""
    options.setdefault("poll_interval_seconds", POLL_SECONDS)
    options.setdefault("max_wait_seconds", GUARD_SECONDS)
    flow = options.pop("flow", stitch_sync_flow)
    started = time.monotonic()
    state: State[Any] = flow(
        source_id=source_id, credentials=credentials, return_state=True, **options
    )
    elapsed = time.monotonic() - started
    assert elapsed < QUICK_SECONDS, f"the flow run took {elapsed:.1f} s"
    return state


def outcome_of(state: State[Any]) -> Any:
    """The flow's return value, or the exception it ended with."""
    try:
        return state.result()
    except Exception as exc:
        return exc


def api_jobs(sim: StitchSimulator, source_id: int) -> list[dict[str, Any]]:
    return [job for job in sim.jobs(source_id) if job["triggered_via"] == "api"]


def faults_served(sim: StitchSimulator, endpoint: str, kind: str, page2: bool = False) -> int:
    return sum(
        1
        for request in sim.requests_for(endpoint)
        if request.fault == kind and (not page2 or request.query.get("page") == "2")
    )


def arrange(sim: StitchSimulator, call: str, fault: FaultCase, within: bool) -> int:
    """Add the sources and queue the faults of one matrix case; return how many were queued."""
    retries = fault.retries
    source_id = SOURCE[call]
    failing = call in ("logs", "log_download")
    # A slow trigger is processed by the simulator after its delay, when the client has given up
    # and retried; the job must still run by then (as a real one would) to be met as running.
    slow_trigger = call == "trigger" and fault.name == "read-timeout"
    duration = SLOW_SECONDS + 1.5 if slow_trigger else JOB_SECONDS
    outcome = KILLED if failing else Outcome.success(duration_seconds=duration)
    if call == "extractions-page2":
        sim.add_sources(range(1, 151), outcomes=[outcome])
        for other in range(1, 151):
            sim.seed_completed(other)
    else:
        sim.add_source(source_id, outcomes=[outcome])

    if call == "trigger":
        k = retries if within else retries + 1
        sim.inject("trigger", fault.make(), times=k)
    elif call == "extractions-page2":
        # Requests alternate page 1, page 2: a pass-through fault lets each page 1 through.
        rounds = 1 if within else 20
        per_round = retries if within else retries + 1
        for _ in range(rounds):
            sim.inject("extractions", PASS)
            sim.inject("extractions", fault.make(), times=per_round)
        k = rounds * per_round
    else:
        k = retries if within else BEYOND
        sim.inject(call, fault.make(), times=k)
    return k


def least_served(call: str, fault: FaultCase, within: bool, k: int) -> int:
    """How many of the queued faults the sync must have met."""
    if within:
        return k
    if call == "trigger":
        return k
    if call in ("extractions", "extractions-page2"):
        # The trigger reads the listing first (its baseline): the faults exhaust the
        # client's retries in each of Prefect's trigger attempts, and no job is started.
        return (fault.retries + 1) ** 2
    if call == "source":  # the client's retries, within each of Prefect's trigger attempts
        return (fault.retries + 1) ** 2
    return fault.retries + 1  # the logs: one fetch, with the client's retries


@dataclass
class Observed:
    """What one matrix case did: the flow's final state and what the simulator saw."""

    state: State[Any]
    outcome: Any
    jobs: list[dict[str, Any]]
    k: int
    served: int
    least: int
    elapsed: float
    client_id: int


def run_case(call: str, fault: FaultCase, within: bool) -> Observed:
    """Run one matrix case on its own simulator."""
    with StitchSimulator() as sim:
        source_id = SOURCE[call]
        k = arrange(sim, call, fault, within)
        overrides: dict[str, Any] = {
            "max_retries": fault.retries,
            "request_timeout_seconds": REQUEST_TIMEOUT_SECONDS,
        }
        if call == "source":
            overrides["client_id"] = None  # looked up: GET /v4/sources/{id}
            # The process caches the id per (API URL, token): a new simulator may get an
            # earlier one's port, and the lookup under test would then never be made.
            client_id_cache.clear()
        credentials = make_credentials(sim, **overrides)
        started = time.monotonic()
        state: State[Any] = stitch_sync_flow(
            source_id=source_id,
            credentials=credentials,
            poll_interval_seconds=POLL_SECONDS,
            max_wait_seconds=GUARD_SECONDS,
            return_state=True,
        )
        elapsed = time.monotonic() - started
        endpoint = "extractions" if call == "extractions-page2" else call
        page2 = call == "extractions-page2"
        least = least_served(call, fault, within, k)
        # A slow answer is recorded when its delay is over, after the client gave up on it.
        deadline = time.monotonic() + (SLOW_SECONDS + 1.0 if fault.kind == "slow" else 0)
        served = faults_served(sim, endpoint, fault.kind, page2)
        while served < least and time.monotonic() < deadline:
            time.sleep(0.05)
            served = faults_served(sim, endpoint, fault.kind, page2)
        return Observed(
            state=state,
            outcome=outcome_of(state),
            jobs=api_jobs(sim, source_id),
            k=k,
            served=served,
            least=least,
            elapsed=elapsed,
            client_id=sim.client_id,
        )


SLEEPY_WORKERS = 3
"""Cases whose faults cost real seconds (Retry-After, read timeouts) mostly sleep: they run
side by side. The others keep Prefect's SQLite API busy and run one at a time (concurrent
writes there get 503s, which Prefect's client backs off from for seconds)."""
QUIET_RUNS = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, PREFECT_LOGGING_TO_API_ENABLED: False}
MATRIX_DEADLINE_SECONDS = 150.0
"""Of one call's cases."""


def case_cost(case: Any) -> float:
    """A rough guess of a case's wall time, to start the longest ones first."""
    call, _, within = case.values
    if not within and call in ("extractions", "extractions-page2"):
        return 7.0
    return 2.5


class Matrix:
    """Runs the matrix cases of one call when a test first asks for them, then keeps them."""

    def __init__(self, selected: set[str]) -> None:
        self.selected = selected
        self.results: dict[str, dict[str, Observed | BaseException]] = {}

    def of(self, call: str) -> dict[str, Observed | BaseException]:
        """The outcome of every selected case of ``call``, by case id."""
        if call not in self.results:
            cases = [c for c in MATRIX if c.values[0] == call and c.id in self.selected]
            self.results[call] = run_cases(cases)
        return self.results[call]


@pytest.fixture(scope="session")  # not "module": pytest-xdist may set a module's up twice
def matrix(request: pytest.FixtureRequest) -> Matrix:
    """Run the matrix cases, each on its own simulator (so its own account, poller, limiter).

    Only the cases pytest selected are run, one call at a time (so that pytest-xdist can
    hand each call's cases to a different worker: they are grouped by call). Within a call
    the sleepy ones run first, SLEEPY_WORKERS at a time, then the others one after the
    other; each test below then checks one case. A case still running at the deadline is
    reported as hung, not waited for.

    The cases poll alone (``PREFECT_STITCH_SHARED_POLLING=0``): each is the only process
    of its account, so sharing would only add its lease and Variables, about half a second
    of Prefect API writes per case; the faults are Stitch's, met by the same poller either
    way. The special cases below, and every other end-to-end test, run with sharing on.
    """
    selected = {
        f"{item.cls.call}-{item.callspec.id}"
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_fault_matrix" and item.cls is not None
    }
    return Matrix(selected)


def run_cases(cases: list[Any]) -> dict[str, Observed | BaseException]:
    """Run matrix cases: the sleepy ones side by side, then the others one at a time."""
    sleepy = sorted((c for c in cases if c.values[1].costly), key=case_cost, reverse=True)
    busy = [c for c in cases if not c.values[1].costly]
    results: dict[str, Observed | BaseException] = {}
    lock = threading.Lock()

    def worker(pending: list[Any]) -> None:
        while True:
            with lock:
                if not pending:
                    return
                case = pending.pop(0)
            try:  # each run gets a copy of the harness's settings, plus QUIET_RUNS
                observed: Observed | BaseException = context.copy().run(run_case, *case.values)
            except BaseException as exc:
                observed = exc
            with lock:
                results[case.id] = observed

    deadline = time.monotonic() + MATRIX_DEADLINE_SECONDS
    with temporary_settings(updates=QUIET_RUNS):
        context = contextvars.copy_context()
    with pytest.MonkeyPatch.context() as patch:  # while no other test runs in this process
        patch.setenv("PREFECT_STITCH_SHARED_POLLING", "0")
        for pending, workers in ((sleepy, SLEEPY_WORKERS), (busy, 1)):
            threads = [
                threading.Thread(target=worker, args=(pending,), daemon=True)
                for _ in range(workers)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(max(deadline - time.monotonic(), 0))
    with lock:
        return dict(results)


class FaultMatrix:
    """The checks of one call's cases.

    One subclass per call: pytest-xdist (``--dist loadscope``) hands a class to one
    worker, which runs that call's cases once.
    """

    call: str

    @pytest.mark.parametrize(("fault", "within"), CASES)
    def test_fault_matrix(
        self, matrix: Matrix, request: pytest.FixtureRequest, fault: FaultCase, within: bool
    ) -> None:
        check_case(matrix, f"{self.call}-{request.node.callspec.id}", self.call, fault, within)


class TestTriggerFaults(FaultMatrix):
    call = "trigger"


class TestExtractionsFaults(FaultMatrix):
    call = "extractions"


class TestExtractionsPage2Faults(FaultMatrix):
    call = "extractions-page2"


class TestSourceLookupFaults(FaultMatrix):
    call = "source"


class TestLogsFaults(FaultMatrix):
    call = "logs"


class TestLogDownloadFaults(FaultMatrix):
    call = "log_download"


def test_every_call_has_its_class() -> None:
    assert sorted(cls.call for cls in FaultMatrix.__subclasses__()) == sorted(CALLS)


def check_case(matrix: Matrix, case_id: str, call: str, fault: FaultCase, within: bool) -> None:
    """Check one matrix case's outcome."""
    results = matrix.of(call)
    assert case_id in results, "the case did not finish: it hangs"
    observed = results[case_id]
    if isinstance(observed, BaseException):
        raise observed
    state, outcome, jobs = observed.state, observed.outcome, observed.jobs
    source_id = SOURCE[call]
    assert observed.elapsed < QUICK_SECONDS, f"the flow run took {observed.elapsed:.1f} s"

    if call in ("logs", "log_download"):
        # A failing source: its logs are fetched. No fault on them changes the verdict.
        assert state.is_failed()
        assert type(outcome) is StitchReplicationFailed, repr(outcome)
        assert outcome.failed_phases == KILLED_PHASES
        assert len(jobs) == 1
        assert outcome.job_name == jobs[0]["job_name"]
        unreadable_download = call == "log_download" and fault.kind in (
            "malformed_json",
            "wrong_shape",
        )
        if unreadable_download:
            # A pre-signed download is plain text: any 200 body is the log as far as anyone
            # can tell. Only the verdict is at stake here, and it stands.
            assert outcome.log_tail is None or len(outcome.log_tail.splitlines()) <= 20
            return
        if within:
            assert outcome.log_tail is not None, "a fault within budget lost the log tail"
            assert outcome.log_tail.splitlines()[-1].endswith(KILLED_SUMMARY), outcome.log_tail
        else:
            assert outcome.log_tail is None, f"log tail from faulty answers: {outcome.log_tail!r}"
        assert observed.served >= observed.least, (
            f"{observed.served} faults served, {observed.least} expected"
        )
        return

    if within:
        assert state.is_completed(), f"{state.type}: {state.message}"
        assert isinstance(outcome, StitchSyncResult)
        assert outcome.status == "succeeded"
        assert len(jobs) == 1, jobs
        assert outcome.job_name == jobs[0]["job_name"]
        assert outcome.source_id == source_id
        assert observed.served == observed.k, f"{observed.served} of {observed.k} faults served"
        return

    assert state.is_failed(), f"{state.type}: {state.message}"
    assert isinstance(outcome, StitchAPIError), repr(outcome)
    expected_type = StitchAPIError if fault.kind == "status" else StitchTransportError
    assert type(outcome) is expected_type, repr(outcome)
    method, path = {
        "trigger": ("POST", f"/v4/sources/{source_id}/sync"),
        "extractions": ("GET", f"/v4/{observed.client_id}/extractions"),
        "extractions-page2": ("GET", f"/v4/{observed.client_id}/extractions?page=2"),
        "source": ("GET", f"/v4/sources/{source_id}"),
    }[call]
    assert (outcome.method, outcome.path) == (method, path)
    assert outcome.status_code == fault.status
    message = str(outcome)
    assert f"{method} {path}" in message
    assert (f"HTTP {fault.status}" if fault.status else "no response") in message
    assert "<html" not in message.lower()
    assert type(outcome).__name__ in (state.message or "")
    assert len(jobs) <= 1, jobs
    assert observed.served >= observed.least, (
        f"{observed.served} faults served, {observed.least} expected"
    )


# -- (a) the trigger's answer is lost after Stitch started the job ---------------------------------


@pytest.mark.parametrize(
    ("policy", "failing", "job_done_before_retry"),
    [
        pytest.param("attach", False, False, id="succeeding-attach"),
        pytest.param("attach", True, False, id="failing-attach"),
        pytest.param("fail", False, False, id="succeeding-fail"),
        pytest.param("fail", True, False, id="failing-fail"),
        pytest.param("fail", False, True, id="succeeding-fail-job-done-before-the-retry"),
        pytest.param("attach", True, True, id="failing-attach-job-done-before-the-retry"),
    ],
)
def test_trigger_answer_lost_after_the_job_started(
    sim: StitchSimulator, policy: str, failing: bool, job_done_before_retry: bool
) -> None:
    source_id = 601
    duration = 0.2 if job_done_before_retry else 0.6
    outcome = (
        Outcome.failure("tap", -9, "Killed", duration_seconds=duration)
        if failing
        else Outcome.success(duration_seconds=duration)
    )
    sim.add_source(source_id, outcomes=[outcome])
    previous = sim.seed_completed(source_id)
    sim.inject("trigger", Fault.start_then_drop())
    # With a 0.6 s backoff the retried trigger comes after a 0.2 s job has ended.
    backoff = 0.6 if job_done_before_retry else 0.01
    credentials = make_credentials(sim, retry_backoff_seconds=backoff)

    state = run_flow(credentials, source_id, on_already_running=policy)

    [job] = api_jobs(sim, source_id)
    assert job["job_name"] != previous
    assert sim.requests_for("trigger")[0].fault == "start_then_drop"
    result = outcome_of(state)
    if failing:
        assert state.is_failed()
        assert type(result) is StitchReplicationFailed, repr(result)
        assert result.failed_phases == KILLED_PHASES
        assert result.job_name == job["job_name"]
    else:
        assert state.is_completed(), state.message
        assert isinstance(result, StitchSyncResult)
        assert (result.status, result.job_name) == ("succeeded", job["job_name"])


@pytest.mark.parametrize("clock_offset", [-4.0, 4.0], ids=["stitch-behind", "stitch-ahead"])
def test_a_lost_answer_never_leaves_a_second_job_running_nor_reports_it(
    sim: StitchSimulator, clock_offset: float, caplog: pytest.LogCaptureFixture
) -> None:
    """The first trigger starts the job and its answer is lost; the job ends just after the
    listing the retry reads first (Stitch lists only completed jobs: that listing cannot show
    it), so the retried trigger starts a second job. It is stopped at once, the first one is
    reported, both are in the result, and a WARNING says so. Never two jobs left running,
    never the second one reported; Stitch's clock ahead of ours or behind it.
    """
    source_id = 602
    sim.clock_offset_seconds = clock_offset
    sim.add_source(source_id, outcomes=[Outcome.success(duration_seconds=60)])
    sim.seed_completed(source_id)
    sim.inject("trigger", Fault.start_then_drop())

    def end_the_first_job(simulator: StitchSimulator) -> None:
        simulator.finish_job(source_id)  # after the listing was read, before the retry's POST

    when(
        lambda: len(sim.requests_for("trigger")) == 1,
        lambda: sim.inject("extractions", Fault.mutate(end_the_first_job)),
    )
    credentials = make_credentials(sim, retry_backoff_seconds=0.3)

    with caplog.at_level(logging.WARNING):
        state = run_flow(credentials, source_id, loads="ignore")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    result = outcome_of(state)
    assert state.is_completed(), state.message
    first, second = (job["job_name"] for job in api_jobs(sim, source_id))
    assert result.job_name == first, "the job the lost answer started is the one reported"
    assert [(a.job_name, a.status) for a in result.attempts] == [
        (second, "cancelled"),
        (first, "succeeded"),
    ]
    assert [r.endpoint for r in sim.requests if r.endpoint in ("trigger", "stop")] == [
        "trigger",
        "trigger",
        "stop",
    ]
    assert any(first in line and second in line for line in warnings), warnings
    deadline = time.monotonic() + 10
    while sim.running_job(source_id) is not None and time.monotonic() < deadline:
        time.sleep(0.1)  # Stitch ends a stopped job on its own time
    assert sim.running_job(source_id) is None, "the second job was left running"


# -- (b) Prefect retries the whole flow run while the job runs -------------------------------------


def poll_budget_burst(sim: StitchSimulator, retries: int) -> int:
    """Exactly the 500s that exhaust one wait's poll budget: the retried run sees none."""
    burst = (retries + 1) * (MAX_POLL_FAILURES + 1)
    sim.inject("extractions", Fault.status(500), times=burst)
    return burst


def one_client_error(sim: StitchSimulator, retries: int) -> int:
    """One 400 on the listing: not retried by the client, so the first attempt dies at once."""
    sim.inject("extractions", Fault.status(400))
    return 1


@pytest.mark.parametrize(
    ("crash", "policy", "failing", "job_seconds"),
    [
        pytest.param(poll_budget_burst, "attach", False, 1.5, id="500-burst-attach-running"),
        pytest.param(poll_budget_burst, "fail", True, 1.5, id="500-burst-fail-running-failing"),
        pytest.param(one_client_error, "fail", False, 1.2, id="400-fail-running"),
        pytest.param(poll_budget_burst, "fail", False, 0.3, id="500-burst-fail-job-done"),
    ],
)
def test_retried_flow_run_attaches_to_the_job_its_first_attempt_started(
    sim: StitchSimulator,
    crash: Callable[[StitchSimulator, int], int],
    policy: str,
    failing: bool,
    job_seconds: float,
) -> None:
    source_id = 701
    outcome = (
        Outcome.failure("tap", -9, "Killed", duration_seconds=job_seconds)
        if failing
        else Outcome.success(duration_seconds=job_seconds)
    )
    sim.add_source(source_id, outcomes=[outcome])
    previous = sim.seed_completed(source_id)
    credentials = make_credentials(sim)
    burst = crash(sim, credentials.max_retries)
    retried_flow = stitch_sync_flow.with_options(retries=1, retry_delay_seconds=0)

    state = run_flow(credentials, source_id, flow=retried_flow, on_already_running=policy)

    faulted = [r for r in sim.requests_for("extractions") if r.fault is not None]
    assert len(faulted) == burst, "the first attempt did not die of the injected faults"
    [job] = api_jobs(sim, source_id)
    assert job["job_name"] != previous
    assert len(sim.requests_for("trigger")) >= 1
    result = outcome_of(state)
    if failing:
        assert state.is_failed()
        assert type(result) is StitchReplicationFailed, repr(result)
        assert result.failed_phases == KILLED_PHASES
        assert result.job_name == job["job_name"]
    else:
        assert state.is_completed(), state.message
        assert isinstance(result, StitchSyncResult)
        assert (result.status, result.job_name) == ("succeeded", job["job_name"])
    assert state.state_details.flow_run_id is not None
    assert asyncio.run(run_count(state)) == 2, "the flow run was not retried"


async def run_count(state: State[Any]) -> int:
    async with get_client() as client:
        flow_run = await client.read_flow_run(state.state_details.flow_run_id)  # type: ignore[arg-type]
    return flow_run.run_count


# -- (c) the extraction list shifts between its pages while it is read ----------------------------

FIRST = 1001  # sources 1001..1150: page 1 holds 1001..1100, page 2 1101..1150


def forget_record(sim: StitchSimulator, source_id: int) -> None:
    """Drop a source's record from the listing (as when it ages out of Stitch's 60 days)."""
    sim._listed.pop(source_id)  # the simulator has no public way to age a record out


def insert_record(sim: StitchSimulator, source_id: int) -> None:
    """A source that sorts first completes a job: every later record moves one place down."""
    sim.add_source(source_id)
    sim.seed_completed(source_id)


def shifting_listing(sim: StitchSimulator, outcome: Outcome) -> None:
    sim.add_sources(range(FIRST, FIRST + 150), outcomes=[outcome])
    for source_id in range(FIRST, FIRST + 150):
        sim.seed_completed(source_id)


@pytest.fixture
def emitted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every Prefect event emitted during the test, as (event name, resource id)."""
    events: list[tuple[str, str]] = []
    emit = prefect.events.emit_event

    def spy(event: str, resource: dict[str, str], **kwargs: Any) -> Any:
        events.append((event, resource.get("prefect.resource.id", "")))
        return emit(event=event, resource=resource, **kwargs)

    monkeypatch.setattr(prefect.events, "emit_event", spy)
    return events


async def artifacts_of(flow_run_id: Any, source_id: int) -> int:
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"stitch-sync-{source_id}"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            )
        )
    return len(artifacts)


def test_record_listed_twice_while_the_list_shifts_is_reported_once(
    sim: StitchSimulator, emitted: list[tuple[str, str]]
) -> None:
    source_id = FIRST + 99  # the last record of page 1
    shifting_listing(sim, Outcome.success(duration_seconds=None))  # runs until finished
    # The baseline listing (2 pages) before the trigger. Poll 1, page 1: our job ends. Poll
    # 2, page 1 lists its record; then a new record sorts first, so page 2 starts with our
    # record again: it is listed twice in one listing.
    sim.inject("extractions", PASS, times=2)
    sim.inject("extractions", Fault.mutate(lambda s: s.finish_job(source_id)))
    sim.inject("extractions", PASS)
    sim.inject("extractions", Fault.mutate(lambda s: insert_record(s, FIRST - 1)))

    state = run_flow(make_credentials(sim), source_id)

    assert state.is_completed(), state.message
    result = state.result()
    [job] = api_jobs(sim, source_id)
    assert (result.status, result.job_name) == ("succeeded", job["job_name"])
    assert result.polls == 2
    assert [r.fault for r in sim.requests_for("extractions")[:5]] == ["mutate"] * 5
    ours = [name for name, resource in emitted if resource == f"stitch.source.{source_id}"]
    assert ours == ["stitch.sync.started", "stitch.sync.succeeded"]
    assert asyncio.run(artifacts_of(state.state_details.flow_run_id, source_id)) == 1


def test_record_skipped_while_the_list_shifts_is_not_missed(
    sim: StitchSimulator, emitted: list[tuple[str, str]]
) -> None:
    source_id = FIRST + 100  # the first record of page 2
    shifting_listing(sim, Outcome.failure("tap", -9, "Killed", duration_seconds=None))

    # Poll 1, page 1: our job ends, and a record of page 1 leaves the list, so our record
    # moves to page 1 after it was read: page 2 no longer holds it. Poll 2 must find it.
    def shift(s: StitchSimulator) -> None:
        s.finish_job(source_id)
        forget_record(s, FIRST)

    sim.inject("extractions", PASS, times=2)  # the baseline listing, before the trigger
    sim.inject("extractions", Fault.mutate(shift))

    state = run_flow(make_credentials(sim), source_id)

    assert state.is_failed()
    error = outcome_of(state)
    [job] = api_jobs(sim, source_id)
    assert type(error) is StitchReplicationFailed, repr(error)
    assert (error.job_name, error.failed_phases) == (job["job_name"], KILLED_PHASES)
    assert error.result is not None and error.result.polls == 2  # missed once, then found
    ours = [name for name, resource in emitted if resource == f"stitch.source.{source_id}"]
    assert ours == ["stitch.sync.started", "stitch.sync.failed"]
    assert asyncio.run(artifacts_of(state.state_details.flow_run_id, source_id)) == 1


async def test_client_listing_returns_a_shifted_record_once(sim: StitchSimulator) -> None:
    shifting_listing(sim, Outcome.success())
    sim.inject("extractions", Fault.mutate(lambda s: insert_record(s, FIRST - 1)))
    async with make_credentials(sim).get_client() as client:
        records = await client.list_extractions()
    names = [record.job_name for record in records]
    boundary = [record for record in records if record.source_id == FIRST + 99]
    assert len(boundary) == 1  # served on both pages, returned once
    assert len(names) == len(set(names)) == 150
    assert FIRST - 1 not in {record.source_id for record in records}  # inserted after page 1
