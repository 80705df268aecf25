"""Benchmark: suspending syncs next to polling syncs on a 2-slot process work pool (issue 19).

Not a test: it measures. Twenty single-source syncs, started together, run on a real
``prefect server`` through a ``process`` worker limited to 2 flow runs at a time, twice in
the same benchmark run, each time on a fresh stack (server, work pool, ``prefect deploy
--all``, worker, simulator):

* ``polling``: 20 runs of the deployment ``stitch-sync/sync-source``: each run's process
  triggers its job and waits for the verdict (its slot is held the whole time);
* ``suspending``: 20 runs of ``stitch-sync/sync-source-suspending``: each run triggers its
  job, files a registration and suspends (its process ends, the slot is free); the
  account's watcher, ``stitch_watch_flow(credentials='stitch', poll_interval_seconds=3)``
  in a process of its own (outside the pool), resumes it when the job's verdict is in (the
  job ended and its loads landed); the worker starts the resumed run again, which reports
  the verdict.

Usage (from the project root; about 10-15 minutes on 2 CPUs)::

    .venv/bin/python benchmarks/bench_suspend.py --write --keep-logs
    .venv/bin/python benchmarks/bench_suspend.py --scenarios suspending   # one scenario, print only
    BENCH_COMPRESSION=1 .venv/bin/python benchmarks/bench_suspend.py --timeout 3600 --write
                                                  # Stitch's own pace: about 40 minutes

Process start-up and exit are not compressed (about 2 s and 1 s a process here): at 10x
they weigh ten times more against the jobs than they do at Stitch's pace, so the goals that
compare process time with job time are measured at both paces; each pace has its own
section of RESULTS.md.

``--write`` replaces this benchmark's own section of ``benchmarks/RESULTS.md`` (between
``<!-- bench_suspend: start ... -->`` and ``<!-- bench_suspend: end -->``, appended at the
end the first time); ``--keep-logs`` keeps the temporary directory (server, worker and
watcher logs; ``scenario-<name>.json`` with every run's states, every flow-run process and
the simulator's request log).

Time is compressed 10x (``BENCH_COMPRESSION``): Stitch's jobs budget of 30 requests per
600 s is 30 per 60 s (the simulator enforces it: ``enforce_rate_limit=True``, 429 beyond;
the credentials block has the same budget), ``poll_interval_seconds`` 30 s is 3 s, jobs of
60-120 s last 6-12 s (uniform, seeded), each stream's load lands 10-30 s (1-3 s here) after
its job's end, and the worker asks for work every 10 s (1 s here,
``PREFECT_WORKER_QUERY_SECONDS``). Process start-up is not compressed: it costs the same
real seconds at any pace (see the reading in RESULTS.md).

The mix: 20 sources of one account, each with a previous completed job listed (and its
loads), two streams each; 18 jobs succeed (both streams receive rows and load), one fails
in its tap (exit -9, "Killed"), one in its target (exit 1); the two failing sources are
drawn with the seed. Every run waits for the loads (``loads="wait"``, the default).

What each figure is:

* **tick**: the shared poll's interval while syncs wait: ``max(poll_interval_seconds,
  pages per listing x period / (limit x 2/3))`` (the listings take two thirds of the
  budget at most); a listing here is 2 pages (the extractions page and the loads page),
  so ``max(3, 2 x 60 / 20)`` = 6 s (60 s at Stitch). The measured
  median gap between two extraction listings is printed next to it.
* **wall s**: from just before the 20 runs were created to the last run's final state
  (the server's state timestamp).
* **worker-s**: the sum of the flow-run processes' lifetimes: every child process of the
  worker that carries ``PREFECT__FLOW_RUN_ID``, from its start (``/proc/<pid>/stat``
  start time) to its exit (sampled every 0.2 s; the midpoint between the last sample that
  saw it and the first that did not). Also shown, from each run's states: the sum of every
  ``Pending -> Running`` interval (the worker submitted the run until its process reported
  Running: process start-up and imports) and of every ``Running -> (Paused | final)``
  interval (the process's work). Neither includes the process's exit after its last state.
* **peak procs**: the most flow-run processes alive at once (from their lifetimes).
* **verdict after job end**: each run's final state timestamp minus its job's completion
  (the simulator's exact ``completed_at``), p50 / p95, in seconds and in ticks; **after
  loads**: minus the later of its two streams' load landings (succeeded jobs only).
* **jobs requests**: requests to Stitch's jobs endpoints (extractions, loads, logs) from
  the simulator's log; **max in window**: the most of them in any sliding 60 s window,
  against the budget of 30 (``sim.jobs_requests_in_window()``); **violations**: requests
  that arrived while the window was full (``sim.rate_limit_violations``; answered 429).
* **right verdicts**: a run whose job succeeded ended Completed with that job's result
  (``job_name``, status ``succeeded``); a run whose job failed ended Failed with a
  ``StitchReplicationFailed`` of that job; each source had exactly one job triggered.
* **watcher**: its process is not in the pool and not in worker-s; its lifetime over the
  scenario and its CPU seconds are reported apart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import bench_sync_many as base  # its helpers only (this directory is on sys.path)

ROOT = base.ROOT
RESULTS = base.HERE / "RESULTS.md"

# -- the scenario ------------------------------------------------------------------------
COMPRESSION = float(os.environ.get("BENCH_COMPRESSION", "10"))
"""Every duration is Stitch's divided by this (``BENCH_COMPRESSION``, default 10)."""
_PACE = "" if COMPRESSION == 10 else f" at {COMPRESSION:g}x"
"""Each pace has its own section: the issue's 10x, and others (``BENCH_COMPRESSION=1``)."""
SECTION_START = f"<!-- bench_suspend{_PACE}: start (generated; replaced by each run) -->"
SECTION_END = f"<!-- bench_suspend{_PACE}: end -->"
PACE = "Stitch's pace" if COMPRESSION == 1 else f"{COMPRESSION:g}x faster than Stitch"
RUNS = 20
SLOTS = 2
JOBS_RATE_LIMIT = 30
JOBS_RATE_PERIOD_SECONDS = 600.0 / COMPRESSION
POLL_INTERVAL_SECONDS = 30.0 / COMPRESSION
LISTING_PAGES = 2
"""A listing while syncs wait for loads: the extractions page and the loads page."""
POLL_SHARE_OF_BUDGET = 2 / 3
"""The listings' part of the budget (``prefect_stitch._poll.poller.POLL_SHARE_OF_BUDGET``)."""
TICK_SECONDS = max(
    POLL_INTERVAL_SECONDS,
    LISTING_PAGES * JOBS_RATE_PERIOD_SECONDS / (JOBS_RATE_LIMIT * POLL_SHARE_OF_BUDGET),
)
JOB_RANGE = (60.0 / COMPRESSION, 120.0 / COMPRESSION)
"""Job durations (uniform, seeded): 60-120 s at Stitch, 6-12 s at 10x."""
LOAD_DELAY_RANGE = (10.0 / COMPRESSION, 30.0 / COMPRESSION)
"""Each stream's load lands this long after its job's end (uniform, seeded)."""
WORKER_QUERY_SECONDS = 10.0 / COMPRESSION
"""How often the worker asks the server for runs (Prefect's default 10 s, compressed)."""
SEED = 20_260_619
FIRST_SOURCE_ID = 400_001
STREAMS = ("accounts", "contacts")
FAILURES = (
    ("tap", -9, "Killed"),
    ("target", 1, "target-postgres: permission denied for schema analytics"),
)
SAMPLE_SECONDS = 0.2
SCENARIOS = {
    "polling": "stitch-sync/sync-source",
    "suspending": "stitch-sync/sync-source-suspending",
}
GOAL_WORKER_SECONDS_RATIO = 0.10
GOAL_TICKS = 3
LOG_PATTERNS = {
    "traceback": "Traceback (most recent call last)",
    "crash": "Crash detected",
    "not suspending": "Not suspending",
    "could not look after a run": "Could not look after suspended",
    "could not read registrations": "Could not read the suspended syncs",
    "rate limited (429)": "429",
    "error lines": "| ERROR",
    "warning lines": "| WARNING",
}


@dataclass(frozen=True)
class JobPlan:
    """One source's job: how long it runs, how it ends, when its loads land after."""

    source_id: int
    duration: float
    failure: tuple[str, int, str] | None
    load_delays: dict[str, float]

    def outcome(self) -> Any:
        from prefect_stitch.simulator import Outcome, StreamLoad

        if self.failure is not None:
            phase, status, description = self.failure
            return Outcome.failure(phase, status, description, duration_seconds=self.duration)  # type: ignore[arg-type]
        loads = {stream: StreamLoad(delay_seconds=d) for stream, d in self.load_delays.items()}
        return Outcome.success(duration_seconds=self.duration, loads=loads)


def plan_jobs() -> list[JobPlan]:
    """The 20 jobs, the same in both scenarios (seeded)."""
    rng = random.Random(SEED)
    failing = rng.sample(range(RUNS), len(FAILURES))
    plans = []
    for i in range(RUNS):
        duration = round(rng.uniform(*JOB_RANGE), 3)
        delays = {s: round(rng.uniform(*LOAD_DELAY_RANGE), 3) for s in STREAMS}
        failure = FAILURES[failing.index(i)] if i in failing else None
        plans.append(JobPlan(FIRST_SOURCE_ID + i, duration, failure, {} if failure else delays))
    return plans


# -- the stack -----------------------------------------------------------------------------


class Stack:
    """A Prefect server, the work pool, prefect.yaml deployed, a worker with ``--limit 2``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = base.free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": f"{WORKER_QUERY_SECONDS:g}",
            "PWD": str(ROOT),  # prefect.yaml's pull step: resolved at deploy time
        }
        self.env.pop("PREFECT_PROFILE", None)
        self.server: base.Process | None = None
        self.worker: base.Process | None = None

    def prefect(self, name: str, *args: str) -> base.Process:
        executable = str(Path(sys.executable).with_name("prefect"))
        return base.Process([executable, *args], self.env, self.home / f"{name}.log")

    def cli(self, *args: str) -> None:
        executable = str(Path(sys.executable).with_name("prefect"))
        done = subprocess.run(
            [executable, *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> None:
        self.server = self.prefect(
            "server", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)
        )

        def healthy() -> bool:
            assert self.server is not None
            if not self.server.alive():
                raise RuntimeError(f"prefect server exited:\n{self.server.tail()}")
            return base.http_json("GET", f"{self.api_url}/health", timeout=2) is True

        base.wait_until(healthy, 180, "the Prefect server's /api/health", poll=0.5)
        self.cli("work-pool", "create", "stitch-process", "--type", "process")
        self.cli("block", "register", "-m", "prefect_stitch")
        self.cli("--no-prompt", "deploy", "--all")

    def start_worker(self) -> base.Process:
        self.worker = self.prefect(
            "worker", "worker", "start", "--pool", "stitch-process", "--limit", str(SLOTS)
        )
        return self.worker

    def stop(self) -> None:
        for process in (self.worker, self.server):
            if process is not None:
                process.stop()


def start_watcher(stack: Stack) -> base.Process:
    """The account's watcher, a flow run in its own process (not in the work pool)."""
    code = (
        "from prefect_stitch import stitch_watch_flow; "
        f"stitch_watch_flow(credentials='stitch', poll_interval_seconds={POLL_INTERVAL_SECONDS})"
    )
    return base.Process([sys.executable, "-c", code], stack.env, stack.home / "watcher.log")


def start_simulator(plans: Sequence[JobPlan]) -> Any:
    """The simulator in this process (exact completion times), enforcing the budget."""
    from prefect_stitch.simulator import StitchSimulator

    sim = StitchSimulator(
        enforce_rate_limit=True,
        jobs_rate_limit=JOBS_RATE_LIMIT,
        jobs_rate_period_seconds=JOBS_RATE_PERIOD_SECONDS,
    ).start()
    for plan in plans:
        sim.add_source(plan.source_id, streams=STREAMS, outcomes=[plan.outcome()])
        sim.seed_completed(plan.source_id)  # listed from the first poll, loads landed
    return sim


# -- flow-run processes ----------------------------------------------------------------------


def _boot_time() -> float:
    """The wall-clock time of boot, to 10 ms (``/proc/stat``'s btime is whole seconds)."""
    return time.time() - float(Path("/proc/uptime").read_text().split()[0])


@dataclass
class Life:
    """One flow-run process: its run, its start, the last sample that saw it, its CPU."""

    pid: int
    run_id: str
    start: float
    last_seen: float
    end: float | None = None
    cpu_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        return (self.end or self.last_seen) - self.start


class ProcessSampler(threading.Thread):
    """Samples the worker's child processes every ``SAMPLE_SECONDS`` (Linux ``/proc``)."""

    def __init__(self, worker_pid: int) -> None:
        super().__init__(name="flow-run-process-sampler", daemon=True)
        self.worker_pid = worker_pid
        self.lives: dict[int, Life] = {}
        self.stopping = threading.Event()
        self.boot = _boot_time()
        self.tick = os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        while not self.stopping.is_set():
            self.sample()
            self.stopping.wait(SAMPLE_SECONDS)

    def sample(self) -> None:
        now, seen = time.time(), set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                text = stat.read_text()
                fields = text[text.rindex(")") + 2 :].split()  # fields[0] is field 3
                if int(fields[1]) != self.worker_pid:
                    continue
                pid = int(stat.parent.name)
                life = self.lives.get(pid) or self._new_life(pid, fields)
                if life is None:
                    continue
                life.last_seen = now
                life.cpu_seconds = (int(fields[11]) + int(fields[12])) / self.tick
                seen.add(pid)
        for pid, life in self.lives.items():
            if pid not in seen and life.end is None:
                life.end = (life.last_seen + now) / 2

    def _new_life(self, pid: int, fields: list[str]) -> Life | None:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        run_id = next(
            (
                v.split(b"=", 1)[1].decode()
                for v in environ
                if v.startswith(b"PREFECT__FLOW_RUN_ID=")
            ),
            None,
        )
        if run_id is None:
            return None  # forked, not exec'd yet: next sample
        start = self.boot + int(fields[19]) / self.tick
        self.lives[pid] = Life(pid, run_id, start, start)
        return self.lives[pid]

    def alive(self) -> int:
        return sum(1 for life in self.lives.values() if life.end is None)

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)
        self.sample()


def peak_concurrency(intervals: Sequence[tuple[float, float]]) -> int:
    """The most intervals open at once."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


# -- one scenario --------------------------------------------------------------------------


@dataclass
class RunRecord:
    """One flow run: its source, its states, its verdict."""

    source_id: int
    run_id: str
    created: float
    states: list[dict[str, Any]] = field(default_factory=list)
    final_type: str | None = None
    final_at: float | None = None
    message: str = ""
    right: bool = False
    why_wrong: str = ""


@dataclass
class Scenario:
    """What one scenario measured."""

    name: str
    deployment: str
    runs: list[RunRecord] = field(default_factory=list)
    lives: list[dict[str, Any]] = field(default_factory=list)
    jobs: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    max_in_window: int = 0
    violations: int = 0
    started: float = 0.0
    created: float = 0.0
    timed_out: bool = False
    watcher_seconds: float | None = None
    watcher_cpu_seconds: float | None = None
    worker_cpu_seconds: float = 0.0
    server_cpu_seconds: float = 0.0
    setup_seconds: float = 0.0
    began: float = 0.0
    ended: float = 0.0
    argv: list[str] = field(default_factory=list)
    log_findings: dict[str, dict[str, Any]] = field(default_factory=dict)


def _at(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


@contextlib.contextmanager
def prefect_pointed_at(stack: Stack) -> Iterator[None]:
    """This process's Prefect client pointed at the stack's server."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: stack.api_url, PREFECT_HOME: stack.home}):
        yield


async def save_credentials(sim: Any) -> None:
    """The ``stitch`` block the deployments name, with the simulated account's budget."""
    from prefect_stitch import StitchCredentials

    credentials = StitchCredentials(
        access_token=sim.token,
        client_id=sim.client_id,
        base_url=sim.base_url,
        jobs_rate_limit=JOBS_RATE_LIMIT,
        jobs_rate_period_seconds=JOBS_RATE_PERIOD_SECONDS,
    )
    await credentials.asave("stitch", overwrite=True)


async def create_runs(deployment: str, plans: Sequence[JobPlan]) -> list[RunRecord]:
    """Create the 20 runs one after the other, at once (together, SQLite answers 503)."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        found = await client.read_deployment_by_name(deployment)

        async def create(plan: JobPlan) -> RunRecord:
            run = await client.create_flow_run_from_deployment(
                found.id,
                parameters={
                    "source_id": plan.source_id,
                    "poll_interval_seconds": POLL_INTERVAL_SECONDS,
                },
            )
            return RunRecord(plan.source_id, str(run.id), _at(run.created))

        return [await create(plan) for plan in plans]


async def wait_final(runs: Sequence[RunRecord], seconds: float) -> bool:
    """Wait until every run is in a final state; False when ``seconds`` ran out first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    ids = [UUID(r.run_id) for r in runs]
    deadline = time.monotonic() + seconds
    async with get_client() as client:
        while time.monotonic() < deadline:
            found = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids)
            )
            if len(found) == len(ids) and all(r.state and r.state.is_final() for r in found):
                return True
            await asyncio.sleep(1.0)
    return False


async def read_verdicts(runs: Sequence[RunRecord], plans: dict[int, JobPlan], sim: Any) -> None:
    """Each run's states, and whether its verdict is right (see the module's docstring)."""
    from prefect.client.orchestration import get_client

    from prefect_stitch.errors import StitchReplicationFailed

    async with get_client() as client:
        for run in runs:
            flow_run = await client.read_flow_run(UUID(run.run_id))
            states = sorted(
                await client.read_flow_run_states(UUID(run.run_id)), key=lambda s: s.timestamp
            )
            run.states = [
                {"type": s.type.value, "name": s.name, "at": s.timestamp.timestamp()}
                for s in states
            ]
            state = flow_run.state
            if state is None or not state.is_final():
                run.why_wrong = f"not final: {state.type.value if state else None}"
                continue
            run.final_type, run.final_at = state.type.value, state.timestamp.timestamp()
            run.message = (state.message or "")[:200]
            jobs = sim.jobs_started(run.source_id)
            if len(jobs) != 1:
                run.why_wrong = f"{len(jobs)} jobs triggered"
                continue
            value = await state.aresult(raise_on_failure=False)
            if plans[run.source_id].failure is None:
                status = getattr(getattr(value, "status", None), "value", None)
                run.right = state.is_completed() and getattr(value, "job_name", None) == jobs[0]
                run.right = run.right and status == "succeeded"
            else:
                run.right = (
                    state.is_failed()
                    and isinstance(value, StitchReplicationFailed)
                    and value.job_name == jobs[0]
                )
            if not run.right:
                run.why_wrong = f"{run.final_type}: {run.message[:120]} ({type(value).__name__})"


def simulator_facts(scenario: Scenario, sim: Any, plans: dict[int, JobPlan]) -> None:
    """The jobs (exact floats of the simulator's clock, the wall clock) and the requests."""
    with sim._account.settled() as account:
        for job in account.book.of_source(None):
            if job.triggered_via != "api":
                continue
            delays = plans[job.source_id].load_delays
            scenario.jobs.setdefault(job.source_id, []).append(
                {
                    "job_name": job.job_name,
                    "started_at": job.started_at,
                    "completed_at": job.completed_at,
                    "succeeded": job.succeeded,
                    "landed_at": None
                    if job.completed_at is None or not delays
                    else job.completed_at + max(delays.values()),
                }
            )
    scenario.requests = [
        {"endpoint": r.endpoint, "status": r.status, "wall": r.wall} for r in sim.requests
    ]
    scenario.max_in_window = sim.jobs_requests_in_window()
    scenario.violations = sim.rate_limit_violations


def scan_logs(home: Path) -> dict[str, dict[str, Any]]:
    """Counts of notable lines in the worker's, watcher's and server's logs, with a sample."""
    findings: dict[str, dict[str, Any]] = {}
    for name in ("worker", "watcher", "server"):
        path = home / f"{name}.log"
        if not path.exists():
            continue
        lines = path.read_text(errors="replace").splitlines()
        for label, needle in LOG_PATTERNS.items():
            hits = [line for line in lines if needle in line]
            if hits:
                findings[f"{name}: {label}"] = {"count": len(hits), "first": hits[0][:300]}
    return findings


async def run_scenario(name: str, plans: Sequence[JobPlan], home: Path, cap: float) -> Scenario:
    """One scenario on a fresh stack, capped at ``cap`` seconds; what it starts it stops."""
    scenario = Scenario(name, SCENARIOS[name])
    by_source = {plan.source_id: plan for plan in plans}
    began = scenario.began = time.time()
    stack, sim = Stack(home), start_simulator(plans)
    watcher: base.Process | None = None
    watcher_began = 0.0
    try:
        stack.start()
        with prefect_pointed_at(stack):
            await save_credentials(sim)
            if name == "suspending":
                watcher, watcher_began = start_watcher(stack), time.time()
                await wait_watcher(sim, watcher)
            worker = stack.start_worker()
            sampler = ProcessSampler(worker.pid)
            sampler.start()
            await asyncio.sleep(3.0)  # the worker has polled the pool once at least
            scenario.setup_seconds = time.time() - began
            print(f"[{name}] stack ready in {scenario.setup_seconds:.0f} s; creating {RUNS} runs")
            scenario.started = time.time()
            scenario.runs = await create_runs(scenario.deployment, plans)
            scenario.created = time.time()
            scenario.timed_out = not await wait_final(scenario.runs, cap)
            with contextlib.suppress(RuntimeError):  # a process left over is in the figures
                base.wait_until(lambda: sampler.alive() == 0, 60, "the flow-run processes")
            sampler.stop()
            scenario.lives = [asdict(life) for life in sampler.lives.values()]
            await read_verdicts(scenario.runs, by_source, sim)
        simulator_facts(scenario, sim, by_source)
        if watcher is not None:
            scenario.watcher_seconds = time.time() - watcher_began
            scenario.watcher_cpu_seconds = base.group_cpu_seconds(watcher.pid)
        scenario.worker_cpu_seconds = base.group_cpu_seconds(worker.pid)
        assert stack.server is not None
        scenario.server_cpu_seconds = base.group_cpu_seconds(stack.server.pid)
    finally:
        if watcher is not None:
            watcher.stop()
        stack.stop()
        sim.stop()
    scenario.log_findings = scan_logs(home)
    scenario.ended = time.time()
    return scenario


async def wait_watcher(sim: Any, watcher: base.Process) -> None:
    """Wait until the watcher says that it runs (a suspending sync counts on it)."""
    from prefect_stitch._engine.suspension import watcher_alive

    deadline = time.monotonic() + 180
    while not await watcher_alive(sim.client_id, sim.base_url):
        if not watcher.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the watcher did not start:\n{watcher.tail()}")
        await asyncio.sleep(0.5)


# -- figures --------------------------------------------------------------------------------


@dataclass
class Figures:
    """One scenario's figures, as the table and the goals show them."""

    name: str
    right: int
    wall: float
    last_trigger: float
    worker_seconds: float
    pending_to_running: float
    running_to_end: float
    processes: int
    peak: int
    peak_states: int
    cpu_seconds: float
    verdict_p50: float
    verdict_p95: float
    verdict_max: float
    after_loads_p50: float
    after_loads_p95: float
    jobs_requests: dict[str, int]
    requests_429: int
    max_in_window: int
    violations: int
    measured_tick: float
    longest_job: float
    worker_seconds_at_stitch: float
    process_overhead: float
    """Sum over the processes of their start (to Running) and exit (after the last state)."""
    stranded: list[str]
    wrong: list[str]
    phases: dict[str, tuple[float, float, float]]


def state_intervals(states: Sequence[dict[str, Any]]) -> list[tuple[float, float, float]]:
    """Each process of a run from its states: (Pending, Running, Paused or final)."""
    found = []
    for i, state in enumerate(states):
        if state["type"] != "PENDING":
            continue
        later = states[i + 1 :]
        running = next((s for s in later if s["type"] == "RUNNING"), None)
        if running is None:
            continue
        end = next(
            (
                s
                for s in later
                if s["at"] >= running["at"]
                and s["type"] in ("PAUSED", "COMPLETED", "FAILED", "CRASHED", "CANCELLED")
            ),
            None,
        )
        if end is not None:
            found.append((state["at"], running["at"], end["at"]))
    return found


def process_overheads(s: Scenario) -> list[tuple[float, float]]:
    """Each flow-run process's own costs: (its start to its run's Running state, its run's
    Paused or final state to its exit). Neither waits on Stitch: start-up and imports,
    Prefect's bookkeeping at exit (logs, events, the shared poll's leave)."""
    runs = {run.run_id: run for run in s.runs}
    found = []
    for life in s.lives:
        run, end = runs.get(life["run_id"]), life["end"] or life["last_seen"]
        if run is None:
            continue
        inside = [st for st in run.states if life["start"] <= st["at"] <= end]
        running = next((st for st in inside if st["type"] == "RUNNING"), None)
        last = inside[-1] if inside else None
        if running is not None and last is not None and last["type"] in _ENDS:
            found.append((running["at"] - life["start"], end - last["at"]))
    return found


_ENDS = ("PAUSED", "COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95, max (nan when empty)."""
    if not values:
        return (float("nan"),) * 3
    return base.percentile(values, 50), base.percentile(values, 95), max(values)


def figures_of(s: Scenario) -> Figures:
    """The scenario's figures (see the module's docstring for each)."""
    jobs = {sid: js[0] for sid, js in s.jobs.items() if len(js) == 1}
    finals = [r.final_at for r in s.runs if r.final_at is not None]
    triggers = [j["started_at"] for j in jobs.values()]
    intervals = [iv for r in s.runs for iv in state_intervals(r.states)]
    verdicts, after_loads = [], []
    for run in s.runs:
        job = jobs.get(run.source_id)
        if job is None or run.final_at is None or job["completed_at"] is None:
            continue
        verdicts.append(run.final_at - job["completed_at"])
        if job["landed_at"] is not None:
            after_loads.append(run.final_at - job["landed_at"])
    counts = {"extractions": 0, "loads": 0, "logs": 0, "trigger": 0}
    for request in s.requests:
        if request["endpoint"] in counts:
            counts[request["endpoint"]] += 1
    listings = sorted(r["wall"] for r in s.requests if r["endpoint"] == "extractions")
    gaps = [b - a for a, b in itertools.pairwise(listings)]
    lives = [(life["start"], life["end"] or life["last_seen"]) for life in s.lives]
    v50, v95, vmax = spread(verdicts)
    l50, l95, _ = spread(after_loads)
    return Figures(
        name=s.name,
        right=sum(r.right for r in s.runs),
        wall=(max(finals) - s.started) if finals else float("nan"),
        last_trigger=(max(triggers) - s.started) if triggers else float("nan"),
        worker_seconds=sum(b - a for a, b in lives),
        pending_to_running=sum(r - p for p, r, _ in intervals),
        running_to_end=sum(e - r for _, r, e in intervals),
        processes=len(lives),
        peak=peak_concurrency(lives),
        peak_states=peak_concurrency([(p, e) for p, _, e in intervals]),
        cpu_seconds=sum(life["cpu_seconds"] for life in s.lives),
        verdict_p50=v50,
        verdict_p95=v95,
        verdict_max=vmax,
        after_loads_p50=l50,
        after_loads_p95=l95,
        jobs_requests=counts,
        requests_429=sum(1 for r in s.requests if r["status"] == 429),
        max_in_window=s.max_in_window,
        violations=s.violations,
        measured_tick=base.percentile(gaps, 50) if gaps else float("nan"),
        longest_job=max(j["completed_at"] - j["started_at"] for j in jobs.values())
        if jobs
        else float("nan"),
        worker_seconds_at_stitch=at_stitch_pace(s, jobs),
        process_overhead=sum(start + exit for start, exit in process_overheads(s)),
        stranded=[f"{r.source_id}: {r.why_wrong}" for r in s.runs if r.final_at is None],
        wrong=[f"{r.source_id}: {r.why_wrong}" for r in s.runs if not r.right],
        phases=phases_of(s, jobs),
    )


def at_stitch_pace(s: Scenario, jobs: dict[int, dict[str, Any]]) -> float:
    """An estimate of worker-s at Stitch's pace (not a measure): each process's lifetime, with
    the part that waits on Stitch stretched by the compression (process start-up, imports and
    Prefect API calls take the same seconds at any pace).

    A polling run's wait on Stitch is from its job's trigger to its final state; a resumed
    run's is its last Running -> final interval (stretched too, although it seldom waits for
    a listing: a pessimistic guess); the first process of a suspending run does not wait on
    Stitch.
    """
    total = sum((life["end"] or life["last_seen"]) - life["start"] for life in s.lives)
    for run in s.runs:
        job, intervals = jobs.get(run.source_id), state_intervals(run.states)
        if job is None or run.final_at is None or not intervals:
            continue
        waited = (
            run.final_at - job["started_at"]
            if len(intervals) == 1
            else intervals[-1][2] - intervals[-1][1]
        )
        total += (COMPRESSION - 1) * waited
    return total


def _first(states: Sequence[dict[str, Any]], kind: str, after: float, name: str = "") -> float:
    return next(
        (
            s["at"]
            for s in states
            if s["type"] == kind and s["at"] >= after and (not name or s["name"] == name)
        ),
        float("nan"),
    )


def phases_of(
    s: Scenario, jobs: dict[int, dict[str, Any]]
) -> dict[str, tuple[float, float, float]]:
    """Where each run's time went (p50, p95, max over the runs), by step."""
    steps: dict[str, list[float]] = {}

    def add(step: str, value: float) -> None:
        if value == value:  # not nan
            steps.setdefault(step, []).append(value)

    for run in s.runs:
        states, job = run.states, jobs.get(run.source_id)
        first_pending = _first(states, "PENDING", 0)
        add("created -> first Pending (queued for a slot)", first_pending - run.created)
        intervals = state_intervals(states)
        for p, r, _ in intervals:
            add("Pending -> Running (process start)", r - p)
        if job is None:
            continue
        if intervals:
            add("Running -> trigger", job["started_at"] - intervals[0][1])
        verdict_ready = job["landed_at"] or job["completed_at"]
        paused = _first(states, "PAUSED", 0)
        if paused == paused:
            add("trigger -> Paused (registration, suspension)", paused - job["started_at"])
            add("Running -> Paused (first process)", intervals[0][2] - intervals[0][1])
            resuming = _first(states, "SCHEDULED", paused, "Resuming")
            add("verdict ready -> Resuming (the watcher's resume)", resuming - verdict_ready)
            pending = _first(states, "PENDING", resuming)
            add("Resuming -> Pending (queued for a slot)", pending - resuming)
            if len(intervals) > 1:
                add("Running -> final (resumed process)", intervals[-1][2] - intervals[-1][1])
        elif run.final_at is not None:
            add("verdict ready -> final", run.final_at - verdict_ready)
    overheads = process_overheads(s)
    add_all = [("process start -> Running", [a for a, _ in overheads])]
    add_all.append(("Paused/final -> process exit", [b for _, b in overheads]))
    for step, values in add_all:
        for value in values:
            add(step, value)
    return {step: spread(values) for step, values in steps.items()}


# -- report ---------------------------------------------------------------------------------


def fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def in_ticks(value: float) -> str:
    return fmt(value / TICK_SECONDS, 2)


COLUMNS = (
    "scenario",
    "right verdicts",
    "wall s (to last verdict)",
    "last trigger s",
    "worker-s (process lifetimes)",
    "Pending->Running s",
    "Running->Paused/final s",
    "flow-run processes",
    "peak concurrent",
    "CPU s of flow-run processes",
    "verdict after job end p50 / p95 s (ticks)",
    "after loads landed p50 / p95 s",
    "jobs requests (extr. / loads / logs)",
    f"max in {JOBS_RATE_PERIOD_SECONDS:g} s window / {JOBS_RATE_LIMIT}",
    "violations (429)",
)


def row(f: Figures) -> list[str]:
    requests = f.jobs_requests
    total = requests["extractions"] + requests["loads"] + requests["logs"]
    return [
        f"`{f.name}`",
        f"{f.right}/{RUNS}",
        fmt(f.wall),
        fmt(f.last_trigger),
        fmt(f.worker_seconds),
        fmt(f.pending_to_running),
        fmt(f.running_to_end),
        str(f.processes),
        f"{f.peak} (states: {f.peak_states})",
        fmt(f.cpu_seconds),
        f"{fmt(f.verdict_p50, 2)} ({in_ticks(f.verdict_p50)}) / "
        f"{fmt(f.verdict_p95, 2)} ({in_ticks(f.verdict_p95)})",
        f"{fmt(f.after_loads_p50, 2)} / {fmt(f.after_loads_p95, 2)}",
        f"{total} ({requests['extractions']} / {requests['loads']} / {requests['logs']})",
        str(f.max_in_window),
        f"{f.violations} ({f.requests_429})",
    ]


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def phase_rows(figures: Sequence[Figures]) -> list[list[str]]:
    rows = []
    for f in figures:
        for step, (p50, p95, top) in f.phases.items():
            rows.append([f"`{f.name}`", step, fmt(p50, 2), fmt(p95, 2), fmt(top, 2)])
    return rows


def goals(figures: dict[str, Figures]) -> list[str]:
    """Each goal of the issue, met or not, with its numbers."""
    poll, susp = figures.get("polling"), figures.get("suspending")
    lines = []
    everyone = [f for f in (poll, susp) if f is not None]
    right = all(f.right == RUNS for f in everyone)
    lines.append(
        f"- **Every verdict right**: {'met' if right else 'NO'} ("
        + "; ".join(
            f"`{f.name}`: {f.right}/{RUNS}" + (f", wrong: {f.wrong}" if f.wrong else "")
            for f in everyone
        )
        + ")."
    )
    if poll is not None and susp is not None:
        ratio = susp.worker_seconds / poll.worker_seconds
        states = (susp.pending_to_running + susp.running_to_end) / (
            poll.pending_to_running + poll.running_to_end
        )
        running = susp.running_to_end / poll.running_to_end
        lines.append(
            f"- **Suspending worker-seconds under {GOAL_WORKER_SECONDS_RATIO:.0%} of polling's**: "
            f"{'met' if ratio < GOAL_WORKER_SECONDS_RATIO else 'NO'}: {susp.worker_seconds:.1f} "
            f"against {poll.worker_seconds:.1f} process-seconds = {ratio:.0%} ({susp.processes} "
            f"processes against {poll.processes}; from the states, Pending -> Paused/final: "
            f"{states:.0%}; Running -> Paused/final only: {running:.0%}). Estimated at "
            f"Stitch's pace (waits on Stitch x {COMPRESSION:g}, process start-up as measured; "
            f"not a measure): {susp.worker_seconds_at_stitch:.0f} against "
            f"{poll.worker_seconds_at_stitch:.0f} = "
            f"{susp.worker_seconds_at_stitch / poll.worker_seconds_at_stitch:.0%}. The "
            f"processes' own start-up and exit (no Stitch work in them) sum to "
            f"{susp.process_overhead:.1f} s = {susp.process_overhead / poll.worker_seconds:.0%} "
            "of polling's worker-s: with two processes per run, no suspension goes below that "
            "at this pace."
        )
    if susp is not None:
        bound = susp.longest_job + GOAL_TICKS * TICK_SECONDS
        polling = "" if poll is None else f"; `polling`: last verdict at {poll.wall:.1f} s"
        lines.append(
            f"- **With {SLOTS} slots, every suspending verdict within the longest job plus "
            f"{GOAL_TICKS} ticks of the runs' creation** ({susp.longest_job:.1f} + "
            f"{GOAL_TICKS} x {TICK_SECONDS:g} = {bound:.1f} s): "
            f"{'met' if susp.wall <= bound else 'NO'}: last verdict at {susp.wall:.1f} s, last "
            f"trigger at {susp.last_trigger:.1f} s{polling}. The slots' own share: "
            f"{susp.processes} processes' lifetimes on {SLOTS} slots take "
            f"{susp.worker_seconds / SLOTS:.1f} s of slot time, "
            f"{susp.process_overhead / SLOTS:.1f} s of it start-up and exit."
        )
    for f in everyone:
        bound = GOAL_TICKS * TICK_SECONDS
        lines.append(
            f"- **Verdict p95 within {GOAL_TICKS} ticks of the job's end** (`{f.name}`, "
            f"{bound:g} s): {'met' if f.verdict_p95 <= bound else 'NO'}: p95 "
            f"{f.verdict_p95:.2f} s = {in_ticks(f.verdict_p95)} ticks, max "
            f"{f.verdict_max:.2f} s."
        )
    held = all(f.max_in_window <= JOBS_RATE_LIMIT and f.violations == 0 for f in everyone)
    lines.append(
        f"- **The budget held** ({JOBS_RATE_LIMIT} per {JOBS_RATE_PERIOD_SECONDS:g} s): "
        f"{'met' if held else 'NO'} ("
        + "; ".join(
            f"`{f.name}`: at most {f.max_in_window} in a window, {f.violations} violations"
            for f in everyone
        )
        + ")."
    )
    return lines


def details(scenarios: Sequence[Scenario], figures: dict[str, Figures]) -> list[str]:
    lines = []
    for s in scenarios:
        f = figures[s.name]
        watcher = (
            ""
            if s.watcher_seconds is None
            else f"; the watcher's process (outside the pool, not in worker-s): alive "
            f"{s.watcher_seconds:.0f} s from its start to the scenario's end, "
            f"{s.watcher_cpu_seconds:.1f} CPU s"
        )
        lines.append(
            f"- `{s.name}`: stack set up in {s.setup_seconds:.0f} s; measured tick (median "
            f"gap between extraction listings) {fmt(f.measured_tick, 2)} s; "
            f"{f.jobs_requests['trigger']} triggers; longest job {f.longest_job:.1f} s; CPU s: "
            f"worker {s.worker_cpu_seconds:.1f}, Prefect server {s.server_cpu_seconds:.1f}"
            f"{watcher}" + (f"; TIMED OUT, stranded: {f.stranded}" if s.timed_out else "") + "."
        )
        for label, finding in s.log_findings.items():
            lines.append(f"  - {label}: {finding['count']} (first: `{finding['first'][:160]}`)")
    return lines


def section(
    scenarios: Sequence[Scenario], figures: dict[str, Figures], argv: Sequence[str], took: float
) -> list[str]:
    plans = plan_jobs()
    failing = [f"{p.source_id} ({p.failure[0]} exit {p.failure[1]})" for p in plans if p.failure]
    return [
        SECTION_START,
        f"## `bench_suspend.py`: suspending syncs next to polling ones, {SLOTS} worker slots, "
        f"{PACE}",
        "",
        f"Generated by `benchmarks/bench_suspend.py` on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; it took {took:.0f} s. Command (from the "
        "project root):",
        "",
        "```bash",
        command_line(argv),
        "```",
        "",
        f"Package measured: {package_revision()}.",
        "",
        f"Scenario ({PACE}): {RUNS} single-source syncs created "
        f"together, a `process` work pool whose worker runs `--limit {SLOTS}`; jobs of "
        f"{JOB_RANGE[0]:g}-{JOB_RANGE[1]:g} s (uniform, seed {SEED}); {RUNS - len(failing)} "
        f"succeed, {len(failing)} fail: {', '.join(failing)}; each succeeded job's two streams "
        f"load {LOAD_DELAY_RANGE[0]:g}-{LOAD_DELAY_RANGE[1]:g} s after its end and every run "
        f'waits for them (`loads="wait"`); budget {JOBS_RATE_LIMIT} jobs requests per '
        f"{JOBS_RATE_PERIOD_SECONDS:g} s, enforced by the simulator (429) and kept by the "
        f"credentials; `poll_interval_seconds={POLL_INTERVAL_SECONDS:g}`; the worker queries "
        f"every {WORKER_QUERY_SECONDS:g} s. **A tick is {TICK_SECONDS:g} s**: the budget floor "
        f"of a listing of {LISTING_PAGES} pages (extractions + loads) x "
        f"{JOBS_RATE_PERIOD_SECONDS:g} s / (two thirds of {JOBS_RATE_LIMIT}), above the poll "
        "interval. Each "
        "scenario runs on a fresh stack (server, pool, `prefect deploy --all`, worker, "
        "simulator in the benchmark's process); `suspending` also runs the account's watcher "
        f"(`stitch_watch_flow(credentials='stitch', poll_interval_seconds="
        f"{POLL_INTERVAL_SECONDS:g})`) in a process of its own, outside the pool. The figures "
        "are defined in the benchmark's docstring.",
        "",
        *markdown(COLUMNS, [row(figures[s.name]) for s in scenarios]),
        "",
        "Where the time went, per run (seconds, p50 / p95 / max over the runs; 'verdict "
        "ready' is the later loads' landing of a succeeded job, the job's end otherwise):",
        "",
        *markdown(("scenario", "step", "p50", "p95", "max"), phase_rows(list(figures.values()))),
        "",
        "Details and the logs (counts of notable lines):",
        "",
        *details(scenarios, figures),
        "",
        "Against the goals of issue 19:",
        "",
        *goals(figures),
        SECTION_END,
    ]


def package_revision() -> str:
    """The commit measured, and whether prefect_stitch/ had local changes."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=30
        )
        return done.stdout.rstrip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--", "prefect_stitch", "flows", "prefect.yaml")
    subject = git("log", "-1", "--format=%s")[:80]
    state = (
        "clean"
        if not changed
        else "with local changes: " + ", ".join(line[3:] for line in changed.splitlines())
    )
    return f"`{commit}` ({subject}…), prefect_stitch/ {state}"


def command_line(argv: Sequence[str]) -> str:
    env = ""
    if "BENCH_COMPRESSION" in os.environ:
        env = f"BENCH_COMPRESSION={shlex.quote(os.environ['BENCH_COMPRESSION'])} "
    args = "".join(" " + shlex.quote(arg) for arg in argv)
    return f"{env}.venv/bin/python benchmarks/bench_suspend.py{args}"


def write_section(lines: Sequence[str]) -> None:
    """Replace this benchmark's section of RESULTS.md (re-read just before), or append it."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if SECTION_START in text and SECTION_END in text:
        head, _, rest = text.partition(SECTION_START)
        tail = rest.partition(SECTION_END)[2]
    else:
        head, tail = text.rstrip("\n") + "\n\n", "\n"
    RESULTS.write_text(head + "\n".join(lines) + tail)


# -- driver ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per scenario")
    parser.add_argument("--write", action="store_true", help="replace the section in RESULTS.md")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--report-from", type=Path, help="do not run: report a kept directory's scenario files"
    )
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    if args.report_from is not None:
        scenarios = [
            load_scenario(path) for path in sorted(args.report_from.glob("*/scenario-*.json"))
        ]
        took = max(s.ended for s in scenarios) - min(s.began for s in scenarios)
        return report(scenarios, scenarios[0].argv, took=took, write=args.write)
    root = Path(tempfile.mkdtemp(prefix="bench-suspend-"))
    os.environ["PREFECT_HOME"] = str(root / "driver")  # never the developer's profile
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    for name in ("PREFECT_API_URL", "PREFECT_PROFILE"):
        os.environ.pop(name, None)
    began = time.time()
    scenarios = []
    try:
        for name in args.scenarios:
            home = root / name
            home.mkdir()
            scenario = asyncio.run(run_scenario(name, plan_jobs(), home, args.timeout))
            scenario.argv = list(argv)
            (home / f"scenario-{name}.json").write_text(json.dumps(asdict(scenario), default=str))
            scenarios.append(scenario)
            print(f"[{name}] done: {sum(r.right for r in scenario.runs)}/{RUNS} right")
    finally:
        if args.keep_logs:
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return report(scenarios, argv, took=time.time() - began, write=args.write)


def load_scenario(path: Path) -> Scenario:
    """A scenario from the JSON file a run kept."""
    data = json.loads(path.read_text())
    data["runs"] = [RunRecord(**run) for run in data["runs"]]
    data["jobs"] = {int(sid): jobs for sid, jobs in data["jobs"].items()}
    return Scenario(**data)


def report(scenarios: Sequence[Scenario], argv: Sequence[str], took: float, write: bool) -> int:
    """Print the section; with ``write``, replace it in RESULTS.md."""
    figures = {s.name: figures_of(s) for s in scenarios}
    lines = section(scenarios, figures, argv, took)
    print("\n".join(lines))
    if write:
        write_section(lines)
        print(f"wrote its section of {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
