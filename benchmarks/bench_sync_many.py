"""Benchmark ``stitch_sync_many_flow`` against the Stitch simulator and a per-source baseline.

Not a test: it measures. For N = 1, 10, 100, 500 concurrent source syncs of scripted
durations it runs, each in a fresh process:

* ``shared``: ``stitch_sync_many_flow(..., loads="ignore")`` (one shared extraction poller
  per account; the loads are not followed, so its figures compare with the results of
  the package before loads were followed);
* ``baseline``: the same triggers, then one naive wait task per source that polls the
  extraction list itself, page by page, every poll interval, without any rate limiter
  (the way other Stitch integrations wait for a job);
* ``shared-loads``: ``stitch_sync_many_flow(..., loads="wait")`` (the default): each
  source has two streams whose loads land a scripted delay after its job ends, and the
  shared poller reads the loads listing in the same tick as the extraction listing.

and prints, per run, the jobs-API requests made (by endpoint), requests per tick, the
time from each job's completion (``shared-loads``: its last load's landing) to its
verdict (p50, p95), wall time, peak RSS and CPU seconds of the flow process. Time is
compressed 100x (see ``COMPRESSION``). Results go to stdout and to
``benchmarks/RESULTS.md``.

Usage (from the project root)::

    .venv/bin/python benchmarks/bench_sync_many.py                  # N = 1, 10, 100, 500
    .venv/bin/python benchmarks/bench_sync_many.py --ns 1 10 --no-write

Architecture: the driver (this process, no Prefect import) starts ONE real
``prefect server`` (temporary PREFECT_HOME) for all runs and ONE simulator process per
run (``python -m prefect_stitch.simulator``, driven through its ``/_simulator`` control
API). Each (N, mode) runs in a child process (``--child``) whose ``PREFECT_API_URL``
points at the server, so its ``getrusage(RUSAGE_SELF)`` is the flow process's own. After
a run the driver reads the simulator's request log, jobs and rate window, and the
Prefect API's task runs (the verdict time of a source is the ``end_time`` of its wait
task run).
"""

import argparse
import contextlib
import itertools
import json
import math
import os
import platform
import random
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"

# -- the scenario ------------------------------------------------------------------------
COMPRESSION = float(os.environ.get("BENCH_COMPRESSION", "100"))
"""Every duration is Stitch's divided by this (``BENCH_COMPRESSION``, default 100)."""
JOBS_RATE_LIMIT = 30
"""Stitch: 30 jobs requests (extractions, logs, loads) per 10 minutes per account."""
JOBS_RATE_PERIOD_SECONDS = 600.0 / COMPRESSION
POLL_INTERVAL_SECONDS = 30.0 / COMPRESSION
JOB_DURATION_RANGE = (50.0 / COMPRESSION, 600.0 / COMPRESSION)
PAGE_SIZE = 100
"""Stitch's page size of the extraction list."""
SEED = 20_240_601
MAX_CONCURRENT = 50
"""Triggers in flight at a time (the same for both modes)."""
MAX_WAIT_SECONDS = 300.0
STREAMS = ("accounts", "contacts")
"""Every source's streams (all selected; each receives rows in every job)."""
LOAD_DELAY_RANGE = (30.0 / COMPRESSION, 300.0 / COMPRESSION)
"""``shared-loads``: each stream's load lands this long after its job ends (uniform)."""
MAX_LOAD_WAIT_SECONDS = 3600.0 / COMPRESSION
"""``shared-loads``: ``max_load_wait_seconds``, the flow's default (one hour), compressed."""
CLIENT_ID = 116078
TOKEN = "sim-token"  # the simulator's well-known test token, not a secret
FIRST_SOURCE_ID = 200_001
DEFAULT_NS = (1, 10, 100, 500)
MODES = ("shared", "baseline", "shared-loads")
LOADS_MODE = "shared-loads"
WAIT_TASK_PREFIX = {
    "shared": "wait-for-stitch-sync-",
    "baseline": "naive-wait-",
    LOADS_MODE: "wait-for-stitch-sync-",
}
FLOW_LOADS = {"shared": "ignore", LOADS_MODE: "wait"}
"""The ``loads`` argument each product mode passes (``shared`` explicitly ignores them)."""
TARGET_RATIO_AT_100 = 50.0
TARGET_RSS_MB = 400.0
TARGET_CPU_SECONDS = 60.0


def source_ids(n: int) -> list[int]:
    return [FIRST_SOURCE_ID + i for i in range(n)]


def job_durations(n: int) -> dict[int, float]:
    """Scripted durations; N=10's are the first ten of N=100's, and so on."""
    rng = random.Random(SEED)
    low, high = JOB_DURATION_RANGE
    return {sid: round(rng.uniform(low, high), 3) for sid in source_ids(n)}


def load_delays(n: int) -> dict[int, dict[str, float]]:
    """Scripted load delays per source and stream (their own seed: same durations)."""
    rng = random.Random(SEED + 1)
    low, high = LOAD_DELAY_RANGE
    return {sid: {s: round(rng.uniform(low, high), 3) for s in STREAMS} for sid in source_ids(n)}


# -- child mode: the flow process -----------------------------------------------------------


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def build_baseline_flow() -> Callable[..., Any]:
    """The peers' way of waiting: one task per source, each polling the listing itself.

    Kept out of module level so that the driver never imports Prefect.
    """
    import asyncio

    import httpx
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    from prefect_stitch import StitchCredentials, start_stitch_sync
    from prefect_stitch._engine.runner import run_cancellable
    from prefect_stitch._verdict import judge_extraction
    from prefect_stitch.models import Extraction, SyncStatus

    @task(
        name="Naive wait for Stitch sync",
        task_run_name="naive-wait-{source_id}",
        cache_policy=NO_CACHE,
        persist_result=False,
    )
    async def naive_wait_for_stitch_sync(
        credentials: StitchCredentials,
        source_id: int,
        job_name: str,
        poll_interval_seconds: float,
        max_wait_seconds: float,
    ) -> str:
        """Sleep, read the extraction list page by page until our record, judge, repeat."""
        token = credentials.access_token.get_secret_value()
        listing = f"/v4/{credentials.client_id}/extractions"
        deadline = time.monotonic() + max_wait_seconds
        async with httpx.AsyncClient(
            base_url=credentials.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=credentials.request_timeout_seconds,
        ) as http:
            while time.monotonic() < deadline:
                await asyncio.sleep(poll_interval_seconds)
                record = None
                page = 1
                while record is None:
                    response = await http.get(listing, params={"page": page})
                    response.raise_for_status()
                    body = response.json()
                    for item in body["data"]:
                        if item["job_name"] == job_name:
                            record = Extraction.model_validate(item)
                            break
                    if not body.get("links", {}).get("next"):
                        break
                    page += 1
                verdict = judge_extraction(record)
                if verdict.state is SyncStatus.SUCCEEDED:
                    return job_name
                if record is not None and verdict.state.is_final:
                    raise RuntimeError(f"job {job_name} of source {source_id}: {verdict.summary}")
        raise TimeoutError(f"job {job_name} of source {source_id} did not end in time")

    async def body(
        ids: list[int],
        credentials: StitchCredentials,
        max_concurrent: int,
        poll_interval_seconds: float,
        max_wait_seconds: float,
    ) -> int:
        triggers = asyncio.Semaphore(max_concurrent)

        async def one(source_id: int) -> str:
            async with triggers:
                # The baseline waits for the extraction only: its trigger must not read
                # the loads listing for a load baseline (start_stitch_sync's default).
                handle = await start_stitch_sync(credentials, source_id, loads="ignore")
            assert handle.job_name is not None
            return await naive_wait_for_stitch_sync(
                credentials, source_id, handle.job_name, poll_interval_seconds, max_wait_seconds
            )

        outcomes = await asyncio.gather(*(one(i) for i in ids), return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(ids)} syncs failed; first: {failed[0]!r}")
        return len(outcomes)

    @flow(name="stitch-sync-many-baseline")
    def stitch_sync_many_baseline_flow(
        source_ids: list[int],
        credentials: StitchCredentials,
        max_concurrent: int = 10,
        poll_interval_seconds: float = 30.0,
        max_wait_seconds: float = 6 * 3600.0,
    ) -> int:
        return run_cancellable(
            lambda: body(
                source_ids, credentials, max_concurrent, poll_interval_seconds, max_wait_seconds
            )
        )

    return stitch_sync_many_baseline_flow


def child_main(args: argparse.Namespace) -> int:
    """Run one flow (shared, shared-loads or baseline) and write the process's own measurements."""
    import prefect_stitch
    from prefect_stitch import StitchCredentials, stitch_sync_many_flow
    from prefect_stitch._poll.poller import pollers_of
    from prefect_stitch.errors import StitchSyncManyFailed
    from prefect_stitch.models import StitchSyncManyResult

    credentials = StitchCredentials(
        access_token=TOKEN,
        client_id=CLIENT_ID,
        base_url=args.base_url,
        jobs_rate_limit=JOBS_RATE_LIMIT,
        jobs_rate_period_seconds=JOBS_RATE_PERIOD_SECONDS,
    )
    ids = source_ids(args.n)
    baseline = build_baseline_flow() if args.mode == "baseline" else None
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.time()
    t0 = time.monotonic()
    if baseline is None:
        loads = FLOW_LOADS[args.mode]
        options: dict[str, Any] = {"loads": loads}
        if loads == "wait":
            options["max_load_wait_seconds"] = MAX_LOAD_WAIT_SECONDS
        state = stitch_sync_many_flow(
            source_ids=ids,
            credentials=credentials,
            max_concurrent=MAX_CONCURRENT,
            poll_interval_seconds=POLL_INTERVAL_SECONDS,
            max_wait_seconds=MAX_WAIT_SECONDS,
            return_state=True,
            **options,
        )
    else:
        state = baseline(
            source_ids=ids,
            credentials=credentials,
            max_concurrent=MAX_CONCURRENT,
            poll_interval_seconds=POLL_INTERVAL_SECONDS,
            max_wait_seconds=MAX_WAIT_SECONDS,
            return_state=True,
        )
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_SELF)
    reported_requests = None
    outcomes: list[dict[str, Any]] = []
    if baseline is None:
        try:
            value = state.result(raise_on_failure=False)
        except Exception as exc:  # a result we cannot read is reported, not raised
            value = exc
        items: list[Any] = []
        if isinstance(value, StitchSyncManyResult):
            reported_requests = value.jobs_requests
            items = list(value.outcomes)
        elif isinstance(value, StitchSyncManyFailed):
            items = list(value.results.values())
        for item in items:
            streams = item.result.loads if item.result is not None else []
            outcomes.append(
                {
                    "source_id": item.source_id,
                    "status": item.status,
                    "error_type": item.error_type,
                    "message": (item.message or "")[:400],
                    "loads": [[e.stream_name, e.state] for e in streams],
                }
            )
    out = {
        "flow_run_id": str(state.state_details.flow_run_id),
        "state": state.type.value,
        "message": state.message,
        "flow_started_wall": started,
        "flow_wall_seconds": wall,
        "cpu_seconds": _cpu(after),
        "cpu_seconds_in_flow": _cpu(after) - _cpu(before),
        "peak_rss_mb": after.ru_maxrss / 1024.0,
        "reported_jobs_requests": reported_requests,
        "poller_ticks": sum(poller.ticks for poller in pollers_of(credentials)),
        "outcomes": outcomes,
        "package_file": str(Path(prefect_stitch.__file__).resolve()),
    }
    Path(args.out).write_text(json.dumps(out))
    return 0 if state.is_completed() else 1


# -- driver helpers -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_json(method: str, url: str, payload: Any = None, timeout: float = 60.0) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds (user + system) of the live processes of a process group (Linux)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def wait_until(check: Callable[[], bool], timeout: float, what: str, poll: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if check():
                return
        time.sleep(poll)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


class Process:
    """A child process in its own session, stopped by its pid (its process group)."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._log_file = log.open("wb")
        self.popen = subprocess.Popen(
            list(argv),
            env=env,
            cwd=ROOT,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        self.rusage: resource.struct_rusage | None = None
        self.returncode: int | None = None

    def alive(self) -> bool:
        return self.returncode is None and self.popen.poll() is None

    def reap(self, timeout: float) -> int | None:
        """Wait for the process (collecting its rusage); None on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.rusage = usage
                self.returncode = os.waitstatus_to_exitcode(status)
                self.popen.returncode = self.returncode
                self._log_file.close()
                return self.returncode
            time.sleep(0.1)
        return None

    def stop(self, grace: float = 20.0) -> None:
        if self.returncode is not None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(10)
        self.returncode = self.popen.returncode
        self._log_file.close()

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


class PrefectServer:
    """One real ``prefect server`` for every run, in a temporary PREFECT_HOME."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(home / "server"),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
        }
        self.env.pop("PREFECT_PROFILE", None)
        self.process: Process | None = None

    def start(self) -> None:
        prefect = str(Path(sys.executable).with_name("prefect"))
        argv = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = Process(argv, self.env, self.home / "server.log")

        def healthy() -> bool:
            assert self.process is not None
            if not self.process.alive():
                raise RuntimeError(f"prefect server exited:\n{self.process.tail()}")
            return http_json("GET", f"{self.api_url}/health", timeout=2) is True

        wait_until(healthy, 180, "the Prefect server's /api/health", poll=0.5)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def task_runs(self, flow_run_id: str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = []
        while True:
            batch = http_json(
                "POST",
                f"{self.api_url}/task_runs/filter",
                {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200, "offset": len(runs)},
            )
            runs.extend(batch)
            if len(batch) < 200:
                return runs

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = http_json("GET", f"{self.api_url}/flow_runs/{flow_run_id}")
        return result


class Simulator:
    """One Stitch simulator process per run, with the compressed budget, not enforced."""

    def __init__(self, home: Path, label: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        argv = [
            sys.executable,
            "-m",
            "prefect_stitch.simulator",
            "--port",
            str(self.port),
            "--client-id",
            str(CLIENT_ID),
            "--token",
            TOKEN,
            "--page-size",
            str(PAGE_SIZE),
            "--jobs-rate-limit",
            str(JOBS_RATE_LIMIT),
            "--jobs-rate-period",
            str(JOBS_RATE_PERIOD_SECONDS),
            "--quiet",
        ]  # no --enforce-rate-limit: excess requests are counted, not refused
        self.process = Process(argv, dict(os.environ), home / f"simulator-{label}.log")
        wait_until(lambda: self.control("GET", "rate") is not None, 60, "the simulator")

    def control(self, method: str, action: str, payload: Any = None) -> Any:
        return http_json(method, f"{self.base_url}/_simulator/{action}", payload)

    def stop(self) -> None:
        self.process.stop()


@dataclass
class RunResult:
    n: int
    mode: str
    ok: bool
    error: str | None = None
    pages: int = 0
    jobs_requests: int = 0
    reported_jobs_requests: int | None = None
    listings: int = 0
    ticks: float = 0.0
    tick_seconds: float = 0.0
    requests_per_tick: float = 0.0
    max_in_window: int = 0
    violations: int = 0
    latency_p50: float = float("nan")
    latency_p95: float = float("nan")
    latency_max: float = float("nan")
    detect_p95: float = float("nan")
    overhead_p50: float = float("nan")
    overhead_p95: float = float("nan")
    verdicts: int = 0
    wall_seconds: float = 0.0
    flow_run_seconds: float = 0.0
    work_seconds: float = 0.0
    critical_path_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    cpu_seconds: float = 0.0
    cpu_seconds_in_flow: float = 0.0
    child_wall_seconds: float = 0.0
    polls_kept: float = float("nan")
    scheduled_baseline_requests: int = 0
    server_cpu_seconds: float = 0.0
    late_verdicts: int = 0
    late_p95: float = float("nan")
    simulator_cpu_seconds: float = 0.0
    extraction_requests: int = 0
    loads_requests: int = 0
    logs_requests: int = 0
    loads_pages: int = 0
    listing_pages_per_tick: float = 0.0
    max_pages_in_tick: int = 0
    poller_ticks: int | None = None
    statuses: dict[str, int] = field(default_factory=dict)
    early_verdicts: int = 0
    load_delay_p50: float = float("nan")
    load_delay_p95: float = float("nan")
    package_file: str = ""
    notes: list[str] = field(default_factory=list)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(math.ceil(p / 100.0 * len(ordered)) - 1, 0)]


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def run_one(n: int, mode: str, server: PrefectServer, home: Path, timeout: float) -> RunResult:
    label = f"{mode}-{n}"
    print(f"--- {label}: starting the simulator", flush=True)
    sim = Simulator(home, label)
    child: Process | None = None
    try:
        durations = job_durations(n)
        delays = load_delays(n) if mode == LOADS_MODE else {}
        for sid, seconds in durations.items():
            outcome: dict[str, Any] = {"kind": "success", "duration_seconds": seconds}
            source: dict[str, Any] = {"source_id": sid, "outcomes": [outcome]}
            if mode == LOADS_MODE:
                # Both streams receive rows (the default) and load a scripted delay after
                # the job ends; until then /loads shows the seeded job's loads.
                outcome["loads"] = {s: {"delay_seconds": d} for s, d in delays[sid].items()}
                source["streams"] = list(STREAMS)
            sim.control("POST", "sources", source)
            # Every source of a real account is listed (its last job): the listing has
            # ceil(N / 100) pages from the first poll on.
            sim.control("POST", "seed_completed", {"source_id": sid})
        out = home / f"child-{label}.json"
        env = {
            **os.environ,
            "PREFECT_API_URL": server.api_url,
            "PREFECT_HOME": str(home / "client"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        env.pop("PREFECT_PROFILE", None)
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", "--n", str(n)]
        argv += ["--mode", mode, "--base-url", sim.base_url, "--out", str(out)]
        print(f"--- {label}: running the flow ({n} sources)", flush=True)
        assert server.process is not None
        server_cpu = group_cpu_seconds(server.process.pid)
        t0 = time.monotonic()
        child = Process(argv, env, home / f"child-{label}.log")
        code = child.reap(timeout)
        child_wall = time.monotonic() - t0
        server_cpu = group_cpu_seconds(server.process.pid) - server_cpu
        simulator_cpu = group_cpu_seconds(sim.process.pid)
        if code is None:
            child.stop()
            rate = sim.control("GET", "rate")
            return RunResult(
                n,
                mode,
                False,
                f"timed out after {timeout:.0f} s (max in window {rate['max_in_window']}, "
                f"{rate['violations']} over the budget)",
            )
        if not out.exists():
            return RunResult(n, mode, False, f"child exited {code}:\n{child.tail()}")
        measured = json.loads(out.read_text())
        requests = sim.control("GET", "requests")
        (home / f"requests-{label}.json").write_text(json.dumps(requests))
        rate = sim.control("GET", "rate")
        jobs = [job for job in sim.control("GET", "jobs") if job["triggered_via"] == "api"]
    finally:
        if child is not None and child.alive():
            child.stop()
        sim.stop()

    result = RunResult(n, mode, measured["state"] == "COMPLETED")
    if not result.ok:
        result.error = f"flow run {measured['state']}: {measured['message']}"
    result.wall_seconds = measured["flow_wall_seconds"]
    result.child_wall_seconds = child_wall
    result.server_cpu_seconds = server_cpu
    result.simulator_cpu_seconds = simulator_cpu
    result.peak_rss_mb = measured["peak_rss_mb"]
    result.cpu_seconds = measured["cpu_seconds"]
    result.cpu_seconds_in_flow = measured["cpu_seconds_in_flow"]
    result.reported_jobs_requests = measured["reported_jobs_requests"]
    result.poller_ticks = measured["poller_ticks"] if mode != "baseline" else None
    result.package_file = measured["package_file"]
    if not Path(result.package_file).is_relative_to(ROOT):
        result.notes.append("prefect_stitch was NOT imported from this checkout")
    for outcome in measured["outcomes"]:
        result.statuses[outcome["status"]] = result.statuses.get(outcome["status"], 0) + 1
    wrong = [o for o in measured["outcomes"] if o["status"] != "succeeded"]
    if wrong:
        first = wrong[0]
        result.notes.append(
            f"{len(wrong)} sources not succeeded; first: {first['source_id']} "
            f"{first['error_type']}: {first['message'][:200]}"
        )
    if mode == LOADS_MODE:
        unloaded = [
            o["source_id"]
            for o in measured["outcomes"]
            if o["status"] == "succeeded"
            and sorted(s for s, state in o["loads"] if state == "loaded") != sorted(STREAMS)
        ]
        if unloaded:
            result.notes.append(
                f"{len(unloaded)} succeeded sources do not report both streams loaded "
                f"(first: {unloaded[0]})"
            )
    if child is not None and child.rusage is not None:
        whole = child.rusage.ru_utime + child.rusage.ru_stime
        result.notes.append(f"whole child process incl. exit: {whole:.1f} CPU s")
    result.work_seconds = sum(durations.values())
    if len(jobs) != n:
        result.notes.append(f"{len(jobs)} jobs started for {n} sources")

    jobs_endpoints = {"extractions", "logs", "loads"}
    jobs_requests = [r for r in requests if r["endpoint"] in jobs_endpoints]
    listing = [r for r in requests if r["endpoint"] == "extractions"]
    load_listing = [r for r in requests if r["endpoint"] == "loads"]
    result.jobs_requests = len(jobs_requests)
    result.extraction_requests = len(listing)
    result.loads_requests = len(load_listing)
    result.logs_requests = sum(1 for r in requests if r["endpoint"] == "logs")
    result.pages = max((int(r["query"].get("page", "1")) for r in listing), default=0)
    result.loads_pages = max((int(r["query"].get("page", "1")) for r in load_listing), default=0)
    first_pages = sorted(r["at"] for r in listing if r["query"].get("page", "1") == "1")
    result.listings = len(first_pages)
    result.max_in_window = int(rate["max_in_window"])
    result.violations = int(rate["violations"])
    # Ticks of the shared poller, from the request log: a tick reads the extraction pages
    # (if some wait needs them), then the loads pages (if some wait needs them). A tick
    # starts at an extraction page 1, or at a loads page 1 that no extraction page of the
    # same tick precedes.
    tick_starts: list[float] = []
    tick_pages: list[int] = []
    previous: dict[str, Any] | None = None
    for r in sorted(listing + load_listing, key=lambda r: r["at"]):
        first = r["query"].get("page", "1") == "1"
        if first and (
            r["endpoint"] == "extractions" or previous is None or previous["endpoint"] == "loads"
        ):
            tick_starts.append(r["at"])
            tick_pages.append(0)
        if tick_pages:
            tick_pages[-1] += 1
        previous = r
    if mode != "baseline":
        gaps = [b - a for a, b in itertools.pairwise(tick_starts)]
        result.tick_seconds = statistics.median(gaps) if gaps else POLL_INTERVAL_SECONDS
        result.ticks = float(len(tick_starts))
        result.max_pages_in_tick = max(tick_pages, default=0)
        result.listing_pages_per_tick = (
            (len(listing) + len(load_listing)) / len(tick_starts) if tick_starts else 0.0
        )
    else:
        result.tick_seconds = POLL_INTERVAL_SECONDS  # each waiter's own poll interval
        span = (jobs_requests[-1]["at"] - jobs_requests[0]["at"]) if jobs_requests else 0.0
        result.ticks = max(span / POLL_INTERVAL_SECONDS, 1.0)
    result.requests_per_tick = result.jobs_requests / result.ticks if result.ticks else 0.0

    # Completion of each job: the trigger's arrival (the job starts as it is answered)
    # plus its scripted duration; the simulator completes it exactly then. Its loads land
    # their scripted delays after that (shared-loads); the reference of a verdict is the
    # completion, or the landing of the source's last load.
    triggered: dict[int, float] = {}
    for r in requests:
        if r["endpoint"] == "trigger" and r["status"] == 200:
            sid = int(r["path"].rstrip("/").split("/")[-2])
            triggered.setdefault(sid, r["wall"])
    completion = {sid: triggered[sid] + durations[sid] for sid in triggered}
    landing = {
        sid: {s: done + d for s, d in delays[sid].items()}
        for sid, done in completion.items()
        if sid in delays
    }
    reference = (
        {sid: max(streams.values()) for sid, streams in landing.items()}
        if mode == LOADS_MODE
        else completion
    )
    if mode == LOADS_MODE:
        scripted = [max(d.values()) for d in delays.values()]
        result.load_delay_p50 = percentile(scripted, 50)
        result.load_delay_p95 = percentile(scripted, 95)
    result.critical_path_seconds = (
        max(reference.values()) - measured["flow_started_wall"] if reference else 0.0
    )

    # The per-source baseline's own schedule for this work: a waiter polls every interval
    # from its trigger on, reading every page until its job is listed, then stops at the
    # record's page. This is what it costs when the process keeps up (polls kept 100 %).
    pages = max(math.ceil(n / PAGE_SIZE), 1)
    result.scheduled_baseline_requests = sum(
        (max(math.ceil(durations[sid] / POLL_INTERVAL_SECONDS), 1) - 1) * pages + i // PAGE_SIZE + 1
        for i, sid in enumerate(sorted(durations))
    )

    # Verdicts: end of each source's wait task run, as Prefect recorded it. Task runs
    # reach the server through events, so wait until all of them have ended.
    prefix = WAIT_TASK_PREFIX[mode]
    flow_run_id = measured["flow_run_id"]
    verdict: dict[int, float] = {}

    def all_ended() -> bool:
        verdict.clear()
        for run in server.task_runs(flow_run_id):
            if run["name"].startswith(prefix) and run.get("end_time"):
                verdict[int(run["name"][len(prefix) :])] = parse_time(run["end_time"])
        return len(verdict) >= n

    try:
        wait_until(all_ended, 120 if result.ok else 10, f"{n} ended wait task runs", poll=1.0)
    except RuntimeError as exc:
        result.notes.append(f"{exc} (got {len(verdict)})")
    flow_run = server.flow_run(flow_run_id)
    if flow_run.get("start_time") and flow_run.get("end_time"):
        result.flow_run_seconds = parse_time(flow_run["end_time"]) - parse_time(
            flow_run["start_time"]
        )
    latencies = [verdict[sid] - reference[sid] for sid in verdict if sid in reference]
    timeline = {
        sid: {
            "triggered": triggered.get(sid),
            "completed": completion.get(sid),
            "loads_landed": landing.get(sid),
            "verdict": verdict.get(sid),
        }
        for sid in durations
    }
    (home / f"timeline-{label}.json").write_text(json.dumps(timeline))
    result.verdicts = len(latencies)
    result.early_verdicts = sum(1 for value in latencies if value < 0)
    if result.early_verdicts:
        result.notes.append(
            f"{result.early_verdicts} verdicts came before the "
            + ("last load landed" if mode == LOADS_MODE else "job completed")
        )
    # How much of its polling schedule the process kept (a CPU-starved process polls late).
    if mode == "shared" and len(first_pages) > 1:
        nominal = max(
            POLL_INTERVAL_SECONDS,
            result.pages * JOBS_RATE_PERIOD_SECONDS / (JOBS_RATE_LIMIT * 2 / 3),
        )
        scheduled = (first_pages[-1] - first_pages[0]) / nominal + 1
        result.polls_kept = len(first_pages) / scheduled
    elif mode == LOADS_MODE and len(tick_starts) > 1:
        # The poller waits max(poll interval, pages of its last tick x period / (limit x 2/3)).
        wanted = sum(
            max(POLL_INTERVAL_SECONDS, pages * JOBS_RATE_PERIOD_SECONDS / (JOBS_RATE_LIMIT * 2 / 3))
            for pages in tick_pages[:-1]
        )
        result.polls_kept = wanted / (tick_starts[-1] - tick_starts[0])
    elif mode == "baseline":
        scheduled = sum(
            (verdict[sid] - triggered[sid]) / POLL_INTERVAL_SECONDS
            for sid in verdict
            if sid in triggered
        )
        result.polls_kept = len(first_pages) / scheduled if scheduled else float("nan")
    result.latency_p50 = percentile(latencies, 50)
    result.latency_p95 = percentile(latencies, 95)
    result.latency_max = max(latencies, default=float("nan"))
    # Sources done after the last trigger: no trigger burst competes with them.
    last_trigger = max(triggered.values(), default=0.0)
    late = [verdict[s] - reference[s] for s in verdict if reference.get(s, 0) > last_trigger]
    result.late_verdicts = len(late)
    result.late_p95 = percentile(late, 95)

    # Decomposition: reference -> first listing of the record's page(s) that arrived after
    # it (bounded by the tick while the poller keeps its pace), then -> verdict (the
    # process's own work, and for shared-loads the reads of the log and the source).
    detect, overhead = [], []
    order = {sid: i for i, sid in enumerate(sorted(durations))}
    if mode == "shared":
        arrivals: dict[int, list[float]] = {}
        for r in listing:
            arrivals.setdefault(int(r["query"].get("page", "1")), []).append(r["wall"])
        for sid, done in completion.items():
            seen = [t for t in arrivals.get(order[sid] // PAGE_SIZE + 1, []) if t >= done]
            if seen and sid in verdict:
                detect.append(min(seen) - done)
                overhead.append(verdict[sid] - min(seen))
    elif mode == LOADS_MODE:
        # /loads lists records by (stream, source name): stream k of the i-th source is
        # record k * N + i (every source's streams are listed, seeded loads included).
        arrivals = {}
        for r in load_listing:
            arrivals.setdefault(int(r["query"].get("page", "1")), []).append(r["wall"])
        for sid, streams in landing.items():
            seen_all = []
            for k, stream in enumerate(STREAMS):
                page = (k * n + order[sid]) // PAGE_SIZE + 1
                seen = [t for t in arrivals.get(page, []) if t >= streams[stream]]
                if seen:
                    seen_all.append(min(seen))
            if len(seen_all) == len(STREAMS) and sid in verdict:
                detect.append(max(seen_all) - reference[sid])
                overhead.append(verdict[sid] - max(seen_all))
    result.detect_p95 = percentile(detect, 95)
    result.overhead_p50 = percentile(overhead, 50)
    result.overhead_p95 = percentile(overhead, 95)
    return result


# -- reporting ----------------------------------------------------------------------------------


def fmt(value: float, digits: int = 2) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.{digits}f}")
    )


COLUMNS = (
    "N",
    "mode",
    "jobs reqs",
    "pages",
    "tick s",
    "reqs/tick",
    "max in window (budget 30)",
    "verdict p50 s (ticks)",
    "verdict p95 s (ticks)",
    "wall s",
    "peak RSS MB",
    "CPU s",
    "CPU s in flow",
)


def table_rows(results: Sequence[RunResult]) -> list[list[str]]:
    rows = []
    for r in results:
        if r.mode == LOADS_MODE:
            continue
        if not r.ok and not r.verdicts:
            rows.append([str(r.n), r.mode, f"FAILED: {(r.error or '').splitlines()[0][:60]}"])
            continue

        def ticks(value: float, r: RunResult = r) -> str:
            return f"{fmt(value)} ({fmt(value / r.tick_seconds, 1)})" if r.tick_seconds else "n/a"

        rows.append(
            [
                str(r.n),
                r.mode,
                str(r.jobs_requests),
                str(r.pages),
                fmt(r.tick_seconds),
                fmt(r.requests_per_tick, 1),
                f"{r.max_in_window}" + (f" ({r.violations} over)" if r.violations else ""),
                ticks(r.latency_p50),
                ticks(r.latency_p95),
                fmt(r.wall_seconds, 1),
                fmt(r.peak_rss_mb, 0),
                fmt(r.cpu_seconds, 1),
                fmt(r.cpu_seconds_in_flow, 1),
            ]
        )
    return rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row[: len(widths)]):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) for row in rows]
    return "\n".join(lines)


def detail_rows(results: Sequence[RunResult]) -> list[list[str]]:
    rows = []
    for r in results:
        if r.mode == LOADS_MODE:
            continue
        rows.append(
            [
                str(r.n),
                r.mode,
                str(r.listings),
                "n/a" if r.reported_jobs_requests is None else str(r.reported_jobs_requests),
                str(r.scheduled_baseline_requests),
                str(r.violations),
                f"{r.verdicts}/{r.n}",
                fmt(r.latency_max),
                f"{fmt(r.late_p95)} ({r.late_verdicts})",
                fmt(r.detect_p95),
                f"{fmt(r.overhead_p50)} / {fmt(r.overhead_p95)}",
                fmt(r.work_seconds, 0),
                fmt(r.critical_path_seconds, 1),
                fmt(r.flow_run_seconds, 1),
                fmt(r.child_wall_seconds, 1),
                fmt(r.server_cpu_seconds, 1),
                fmt(r.simulator_cpu_seconds, 1),
                fmt(100 * r.polls_kept, 0),
                fmt(100 * r.cpu_seconds_in_flow / r.wall_seconds, 0) if r.wall_seconds else "n/a",
                "; ".join(r.notes + ([r.error.splitlines()[0][:120]] if r.error else [])),
            ]
        )
    return rows


DETAIL_COLUMNS = (
    "N",
    "mode",
    "page-1 listings",
    "jobs reqs (flow's count)",
    "baseline schedule reqs",
    "window violations",
    "verdicts",
    "verdict max s",
    "verdict p95 s, jobs done after the last trigger (count)",
    "completion→listing p95 s",
    "listing→verdict p50 / p95 s",
    "sum of job durations s",
    "last completion s",
    "flow run s (Prefect)",
    "child process s",
    "Prefect server CPU s",
    "simulator CPU s",
    "polls kept %",
    "CPU busy % of a core",
    "notes",
)


def in_ticks(value: float, r: RunResult) -> str:
    return f"{fmt(value)} ({fmt(value / r.tick_seconds, 1)})" if r.tick_seconds else "n/a"


def notes_of(r: RunResult) -> str:
    return "; ".join(r.notes + ([r.error.splitlines()[0][:160]] if r.error else []))


def statuses_of(r: RunResult) -> str:
    return ", ".join(f"{count} {status}" for status, count in sorted(r.statuses.items())) or "none"


LOADS_COLUMNS = (
    "N",
    "jobs reqs",
    "extractions pages",
    "loads pages",
    "logs",
    "ticks",
    "tick s",
    "listing pages/tick (max)",
    "jobs reqs/tick",
    "max in window (budget 30)",
    "violations",
    "outcomes",
    "last load→verdict p50 s (ticks)",
    "last load→verdict p95 s (ticks)",
    "wall s",
    "peak RSS MB",
    "CPU s",
    "CPU s in flow",
)


def loads_rows(results: Sequence[RunResult]) -> list[list[str]]:
    rows = []
    for r in results:
        if r.mode != LOADS_MODE:
            continue
        if not r.ok and not r.verdicts:
            rows.append([str(r.n), f"FAILED: {(r.error or '').splitlines()[0][:160]}"])
            continue
        rows.append(
            [
                str(r.n),
                str(r.jobs_requests),
                str(r.extraction_requests),
                str(r.loads_requests),
                str(r.logs_requests),
                fmt(r.ticks, 0),
                fmt(r.tick_seconds),
                f"{fmt(r.listing_pages_per_tick, 1)} ({r.max_pages_in_tick})",
                fmt(r.requests_per_tick, 1),
                str(r.max_in_window),
                str(r.violations),
                statuses_of(r),
                in_ticks(r.latency_p50, r),
                in_ticks(r.latency_p95, r),
                fmt(r.wall_seconds, 1),
                fmt(r.peak_rss_mb, 0),
                fmt(r.cpu_seconds, 1),
                fmt(r.cpu_seconds_in_flow, 1),
            ]
        )
    return rows


LOADS_DETAIL_COLUMNS = (
    "N",
    "pages per listing (extractions / loads)",
    "poller ticks (flow's count)",
    "listing reqs (flow's count)",
    "scripted last-load delay p50 / p95 s",
    "verdicts",
    "verdicts before the last load",
    "last load→verdict max s",
    "last load→listing p95 s",
    "listing→verdict p50 / p95 s",
    "last load landed s",
    "flow run s (Prefect)",
    "child process s",
    "Prefect server CPU s",
    "simulator CPU s",
    "polls kept %",
    "CPU busy % of a core",
    "notes",
)


def loads_detail_rows(results: Sequence[RunResult]) -> list[list[str]]:
    rows = []
    for r in results:
        if r.mode != LOADS_MODE:
            continue
        rows.append(
            [
                str(r.n),
                f"{r.pages} / {r.loads_pages}",
                "n/a" if r.poller_ticks is None else str(r.poller_ticks),
                "n/a" if r.reported_jobs_requests is None else str(r.reported_jobs_requests),
                f"{fmt(r.load_delay_p50)} / {fmt(r.load_delay_p95)}",
                f"{r.verdicts}/{r.n}",
                str(r.early_verdicts),
                fmt(r.latency_max),
                fmt(r.detect_p95),
                f"{fmt(r.overhead_p50)} / {fmt(r.overhead_p95)}",
                fmt(r.critical_path_seconds, 1),
                fmt(r.flow_run_seconds, 1),
                fmt(r.child_wall_seconds, 1),
                fmt(r.server_cpu_seconds, 1),
                fmt(r.simulator_cpu_seconds, 1),
                fmt(100 * r.polls_kept, 0),
                fmt(100 * r.cpu_seconds_in_flow / r.wall_seconds, 0) if r.wall_seconds else "n/a",
                notes_of(r),
            ]
        )
    return rows


def find(results: Sequence[RunResult], n: int, mode: str) -> RunResult | None:
    return next((r for r in results if r.n == n and r.mode == mode and r.verdicts), None)


def reading(results: Sequence[RunResult]) -> list[str]:
    """Each target, met or not, with the numbers."""
    lines = []
    shared = [r for r in results if r.mode == "shared" and r.verdicts]

    per_tick = [
        f"N={r.n}: {r.requests_per_tick:.2f} per tick for {r.pages} page(s)" for r in shared
    ]
    met = all(r.requests_per_tick <= r.pages * 1.05 for r in shared)
    lines.append(
        f"- **Requests per tick = pages, independent of N**: {'met' if met else 'NOT met'} "
        f"({'; '.join(per_tick)})."
    )

    s100, b100 = find(results, 100, "shared"), find(results, 100, "baseline")
    if s100 and b100 and s100.jobs_requests:
        ratio = b100.jobs_requests / s100.jobs_requests
        scheduled = b100.scheduled_baseline_requests / s100.jobs_requests
        verdict = "met" if ratio >= TARGET_RATIO_AT_100 else "NOT met"
        lines.append(
            f"- **At N=100, at least {TARGET_RATIO_AT_100:.0f}x fewer requests than the "
            f"baseline**: {verdict} as measured ({b100.jobs_requests} vs "
            f"{s100.jobs_requests} requests, {ratio:.1f}x). The baseline kept "
            f"{fmt(100 * b100.polls_kept, 0)} % of its polling schedule; kept in full, its "
            f"schedule for this work is {b100.scheduled_baseline_requests} requests, "
            f"{scheduled:.1f}x the shared poller's."
        )
    else:
        lines.append("- **At N=100, 50x fewer requests**: not measured (N=100 not run in both).")

    over = [r for r in shared if r.max_in_window > JOBS_RATE_LIMIT or r.violations]
    windows = ", ".join(f"N={r.n}: {r.max_in_window}" for r in shared)
    lines.append(
        f"- **Budget ({JOBS_RATE_LIMIT} per {JOBS_RATE_PERIOD_SECONDS:g} s window) never "
        f"exceeded**: {'met' if not over else 'NOT met'} for the shared poller (max in any "
        f"window: {windows}). The baseline, which has no limiter, peaked at "
        + ", ".join(
            f"N={r.n}: {r.max_in_window}" for r in results if r.mode == "baseline" and r.verdicts
        )
        + "."
    )

    late = [r for r in shared if r.latency_p95 > r.tick_seconds]
    lines.append(
        "- **Verdict within one tick of completion (p95)**: "
        + ("met" if not late else "NOT met")
        + " ("
        + "; ".join(
            f"N={r.n}: p95 {r.latency_p95:.2f} s for a {r.tick_seconds:.2f} s tick "
            f"= {r.latency_p95 / r.tick_seconds:.2f} ticks, of which completion→listing p95 "
            f"{r.detect_p95 / r.tick_seconds:.2f} ticks and listing→verdict p95 "
            f"{r.overhead_p95:.2f} s; jobs done after the last trigger: p95 "
            f"{r.late_p95 / r.tick_seconds:.2f} ticks"
            for r in shared
        )
        + "). Waiting for the next listing alone is uniform over a tick (p95 = 0.95 tick), "
        "so the target leaves the process about 5 % of a tick for a listing, the hand-off, "
        f"the verdict and the task run's end. That share is compressed {COMPRESSION:g}x here: "
        f"0.05 tick is {50 * POLL_INTERVAL_SECONDS:g} ms of a {POLL_INTERVAL_SECONDS:g} s "
        "tick, but 1.5 s of Stitch's 30 s.",
    )

    s500 = find(results, 500, "shared")
    if s500:
        ok = s500.peak_rss_mb < TARGET_RSS_MB and s500.cpu_seconds < TARGET_CPU_SECONDS
        lines.append(
            f"- **N=500 in one flow run: peak RSS < {TARGET_RSS_MB:.0f} MB and < "
            f"{TARGET_CPU_SECONDS:.0f} CPU s**: {'met' if ok else 'NOT met'} "
            f"({s500.peak_rss_mb:.0f} MB, {s500.cpu_seconds:.1f} CPU s for the whole flow "
            f"process of which {s500.cpu_seconds_in_flow:.1f} s in the flow run; wall "
            f"{s500.wall_seconds:.1f} s)."
        )
    else:
        lines.append("- **N=500 RSS/CPU**: not measured.")

    loaded = [r for r in results if r.verdicts and r.wall_seconds]
    lines.append(
        "- **Flow process load** (CPU s in flow / wall s, and polls kept): "
        + "; ".join(
            f"{r.mode} N={r.n}: {100 * r.cpu_seconds_in_flow / r.wall_seconds:.0f} % of a "
            f"core, {fmt(100 * r.polls_kept, 0)} % of polls"
            for r in loaded
        )
        + ". CPU seconds and RSS do not depend on the time compression, but latencies and "
        "the baseline's request count do: a fixed per-source CPU cost that is small next to "
        "a 30 s poll interval is large next to a 0.3 s one. Where a process is near 100 % of "
        "a core, its event loop is saturated, its polls come late (polls kept < 100 %) and "
        "its verdicts wait for the loop, not for Stitch."
    )
    lines += reading_loads(results)
    return lines


def reading_loads(results: Sequence[RunResult]) -> list[str]:
    """What the ``shared-loads`` runs show (nothing when it was not run)."""
    runs = [r for r in results if r.mode == LOADS_MODE]
    if not runs:
        return []
    measured = [r for r in runs if r.verdicts]
    failed = [r for r in runs if not r.verdicts]
    lines = [
        "",
        f'`{LOADS_MODE}` (`loads="wait"`; the issue\'s targets were set for the extraction '
        "waits, so these are readings, not targets):",
        "",
    ]
    if failed:
        lines.append(
            "- **Runs without verdicts**: "
            + "; ".join(f"N={r.n}: {(r.error or '').splitlines()[0][:200]}" for r in failed)
            + "."
        )
    if not measured:
        return lines
    lines.append(
        "- **Listing pages per tick = extraction pages + loads pages, independent of N**: "
        + "; ".join(
            f"N={r.n}: {r.listing_pages_per_tick:.2f} per tick (at most {r.max_pages_in_tick}) "
            f"for {r.pages} + {r.loads_pages} pages"
            for r in measured
        )
        + ". A tick reads the loads only while some wait follows loads, and the extractions "
        "only while some wait needs them, so the mean is below the sum."
    )
    lines.append(
        "- **Logs**: "
        + "; ".join(
            f"N={r.n}: {r.logs_requests} log reads for {r.n} sources "
            f"({100 * r.logs_requests / max(r.jobs_requests, 1):.0f} % of the "
            f"{r.jobs_requests} jobs requests)"
            for r in measured
        )
        + ". A source reads its job's log (one jobs request) when the loads listing alone "
        "cannot settle it: when its loads have not all landed at the first loads listing "
        "after its job's end."
    )
    over = [r for r in measured if r.max_in_window > JOBS_RATE_LIMIT or r.violations]
    lines.append(
        f"- **Budget ({JOBS_RATE_LIMIT} per {JOBS_RATE_PERIOD_SECONDS:g} s window, all jobs "
        f"requests) never exceeded**: {'met' if not over else 'NOT met'} ("
        + "; ".join(
            f"N={r.n}: max {r.max_in_window} in a window, {r.violations} violations"
            for r in measured
        )
        + ")."
    )
    wrong = [
        r
        for r in measured
        if r.statuses.get("succeeded", 0) != r.n or r.early_verdicts or r.verdicts != r.n
    ]
    lines.append(
        "- **Verdicts**: "
        + ("every source succeeded after its loads landed" if not wrong else "**NOT all right**")
        + " ("
        + "; ".join(
            f"N={r.n}: {statuses_of(r)}, {r.verdicts}/{r.n} wait task runs ended, "
            f"{r.early_verdicts} before the last load landed"
            for r in measured
        )
        + ")."
    )
    lines.append(
        "- **Verdict after the last load**: "
        + "; ".join(
            f"N={r.n}: p50 {r.latency_p50:.2f} s, p95 {r.latency_p95:.2f} s for a "
            f"{r.tick_seconds:.2f} s tick = {r.latency_p50 / r.tick_seconds:.2f} / "
            f"{r.latency_p95 / r.tick_seconds:.2f} ticks, of which last load→listing p95 "
            f"{r.detect_p95:.2f} s and listing→verdict p50 / p95 {r.overhead_p50:.2f} / "
            f"{r.overhead_p95:.2f} s; polls kept {fmt(100 * r.polls_kept, 0)} %"
            for r in measured
        )
        + "."
    )
    lines.append(
        f"- **Cost of the flow process** (targets of N=500 for the extraction waits: < "
        f"{TARGET_RSS_MB:.0f} MB, < {TARGET_CPU_SECONDS:.0f} CPU s): "
        + "; ".join(
            f"N={r.n}: {r.peak_rss_mb:.0f} MB, {r.cpu_seconds:.1f} CPU s "
            f"({r.cpu_seconds_in_flow:.1f} in the flow run), wall {r.wall_seconds:.1f} s"
            for r in measured
        )
        + "."
    )
    return lines


def machine() -> list[str]:
    def first(path: str, key: str) -> str:
        with contextlib.suppress(OSError):
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        return "unknown"

    try:
        uname = subprocess.run(
            ["uname", "-a"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        uname = " ".join(platform.uname())
    memory_kb = first("/proc/meminfo", "MemTotal").split()[0]
    memory = f"{int(memory_kb) / 1024 / 1024:.1f} GiB" if memory_kb.isdigit() else "unknown"
    return [
        f"- `uname -a`: `{uname}`",
        f"- CPU: {first('/proc/cpuinfo', 'model name')}, {os.cpu_count()} logical CPUs",
        f"- Memory: {memory} (MemTotal)",
        f"- Python {platform.python_version()}, Prefect {metadata.version('prefect')}, "
        f"prefect-stitch {metadata.version('prefect-stitch')}, httpx {metadata.version('httpx')}",
        "- The Prefect server (SQLite), the simulator and the flow process share these CPUs.",
    ]


def package_revision() -> str:
    """The commit the package was measured at, and whether its files had local changes."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=30
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    changed = git("status", "--porcelain", "--", "prefect_stitch")
    subject = git("log", "-1", "--format=%s")
    state = "with uncommitted changes in prefect_stitch/" if changed else "clean prefect_stitch/"
    return f"`{commit}` ({subject[:80]}), {state}"


def command_line(argv: Sequence[str]) -> str:
    """The command, relative to the project root (never an absolute path)."""
    env = ""
    if "BENCH_COMPRESSION" in os.environ:
        env = f"BENCH_COMPRESSION={shlex.quote(os.environ['BENCH_COMPRESSION'])} "
    args = "".join(" " + shlex.quote(arg) for arg in argv)
    return f"{env}.venv/bin/python benchmarks/bench_sync_many.py{args}"


def interpreter_note(results: Sequence[RunResult]) -> str:
    """Where the interpreter and the measured package came from, without absolute paths."""
    outside = not Path(sys.executable).absolute().is_relative_to(ROOT)
    files = {r.package_file for r in results if r.package_file}
    here = all(Path(f).is_relative_to(ROOT) for f in files)
    if not outside and here:
        return ""
    text = []
    if outside:
        text.append(
            "The interpreter was not this checkout's `.venv/bin/python` but that of a "
            f"virtualenv outside this checkout (Python {platform.python_version()}; the "
            "versions under Machine are its)"
            + (", with `PYTHONPATH` set to this checkout" if os.environ.get("PYTHONPATH") else "")
            + "."
        )
    if here:
        text.append(
            "Every flow process checked that `prefect_stitch` was imported from this "
            "checkout's `prefect_stitch/`."
        )
    else:
        text.append(
            "**`prefect_stitch` was NOT imported from this checkout** in some flow "
            "processes: the figures may be of another copy of the package."
        )
    return " ".join(text)


def runs_of(results: Sequence[RunResult], loads: bool) -> str:
    modes: dict[str, list[str]] = {}
    for r in results:
        if (r.mode == LOADS_MODE) == loads:
            modes.setdefault(r.mode, []).append(str(r.n))
    return "; ".join(f"`{mode}` at N = {', '.join(ns)}" for mode, ns in modes.items()) or "none"


def loads_section(results: Sequence[RunResult]) -> list[str]:
    """The results of ``shared-loads`` (nothing when it was not run)."""
    if not any(r.mode == LOADS_MODE for r in results):
        return []
    return [
        f'## Results: waiting for the loads (`{LOADS_MODE}`, `loads="wait"`)',
        "",
        f"Runs: {runs_of(results, True)}.",
        "",
        markdown_table(LOADS_COLUMNS, loads_rows(results)),
        "",
        "Columns:",
        "",
        "- **jobs reqs**: every request to the jobs endpoints the simulator received, "
        "split into **extractions pages** (`GET /v4/{client}/extractions`), **loads pages** "
        "(`GET /v4/{client}/loads`) and **logs** (`GET /v4/{client}/extractions/{job}`, one "
        "per log read; the download it redirects to is not a jobs request).",
        "- **ticks**: the shared poller's listings, from the simulator's request log (a tick "
        "reads the extraction pages if a wait needs them, then the loads pages if a wait "
        "needs them; it starts at an extractions page 1, or at a loads page 1 that no "
        "extractions page of the same tick precedes). **tick s**: median gap between two "
        "ticks' first requests. **listing pages/tick**: (extractions + loads pages) / "
        "ticks, in brackets the most pages one tick read. **jobs reqs/tick**: all jobs "
        "requests, logs included, / ticks.",
        "- **max in window**: most jobs requests (all three endpoints) the simulator saw in "
        f"any sliding window of {JOBS_RATE_PERIOD_SECONDS:g} s, against the budget of "
        f"{JOBS_RATE_LIMIT}; **violations**: requests that arrived when the window already "
        f"held {JOBS_RATE_LIMIT}.",
        "- **outcomes**: each source's status in the flow's result "
        "(`StitchSyncManyResult.outcomes`, or `StitchSyncManyFailed.results`).",
        "- **last load→verdict**: from the landing of the source's last load (its job's "
        "completion, as above, plus the larger of its two scripted load delays: the "
        "simulator lands a load exactly then) to its verdict (the `end_time` of its "
        "`wait-for-stitch-sync-<id>` task run, which waits for the loads); in brackets, in "
        "ticks of this run.",
        "- **wall s**, **peak RSS MB**, **CPU s**, **CPU s in flow**: as above.",
        "",
        "Details:",
        "",
        markdown_table(LOADS_DETAIL_COLUMNS, loads_detail_rows(results)),
        "",
        "- **pages per listing**: pages of the extraction list / of the loads list. "
        "**poller ticks (flow's count)**: `AccountPoller.ticks` in the flow process. "
        "**listing reqs (flow's count)**: `StitchSyncManyResult.jobs_requests` "
        "(extractions and loads pages; the logs are not in it).",
        "- **scripted last-load delay**: the larger of a source's two load delays, over "
        "the sources (from the job's end to its last load's landing).",
        "- **verdicts before the last load**: wait task runs that ended before the "
        "source's last load landed (a success then would be a wrong verdict).",
        "- **last load→listing**: from the last load's landing to the first loads "
        "listing after it of the page of each of the source's two records (the loads list "
        "is sorted by stream, then source); **listing→verdict**: from that listing to the "
        "wait task run's end (hand-off, judging, the log read when it is needed, the "
        "source's streams and name, events, task run end).",
        "- **last load landed s**: from the flow call to the last load's landing (a lower "
        "bound of the wall time).",
        "- **polls kept %**: the poller's intended time for its ticks (after each tick, "
        "max(poll interval, that tick's pages x period / limit)) / the time they took. "
        "Below 100 %, the ticks came later than the poller meant (the limiter held them "
        "back, or the process was busy).",
        "",
    ]


def write_results(
    results: Sequence[RunResult],
    command: str,
    total_seconds: float,
    capped: str | None,
    revision: str,
) -> None:
    header = list(COLUMNS)
    text = [
        "# Benchmark: `stitch_sync_many_flow` vs per-source polling, and waiting for loads",
        "",
        f"Generated by `benchmarks/bench_sync_many.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} "
        f"UTC; the whole benchmark took {total_seconds:.0f} s.",
        "",
        "Command (from the project root):",
        "",
        "```bash",
        command,
        "```",
        "",
        *([interpreter_note(results), ""] if interpreter_note(results) else []),
        f"Package measured: {revision}.",
        "",
        "## Machine",
        "",
        *machine(),
        "",
        f"## Scenario: Stitch's arithmetic, {COMPRESSION:g}x faster",
        "",
        f"Every duration is divided by {COMPRESSION:.0f}, so a run takes seconds instead of "
        "hours while the budget arithmetic stays Stitch's:",
        "",
        "| | here | at Stitch |",
        "|---|---|---|",
        f"| jobs budget (client `jobs_rate_limit`/`jobs_rate_period_seconds`, simulator "
        f"window) | {JOBS_RATE_LIMIT} per {JOBS_RATE_PERIOD_SECONDS:g} s | 30 per 600 s |",
        f"| `poll_interval_seconds` | {POLL_INTERVAL_SECONDS:g} s | 30 s |",
        f"| job durations (uniform, seed {SEED}) | {JOB_DURATION_RANGE[0]:g}-"
        f"{JOB_DURATION_RANGE[1]:g} s | 50-600 s |",
        f"| extraction list page size | {PAGE_SIZE} | {PAGE_SIZE} |",
        "| shared tick at N=500 (5 pages): pages x period / limit | "
        f"{5 * JOBS_RATE_PERIOD_SECONDS / JOBS_RATE_LIMIT:g} s | 100 s |",
        f"| `{LOADS_MODE}`: each stream's load lands after its job's end (uniform, seed "
        f"{SEED + 1}) | {LOAD_DELAY_RANGE[0]:g}-{LOAD_DELAY_RANGE[1]:g} s | 30-300 s |",
        f"| `{LOADS_MODE}`: `max_load_wait_seconds` (the flow's default, compressed) | "
        f"{MAX_LOAD_WAIT_SECONDS:g} s | 3600 s |",
        "",
        "- Each source has a previous completed job (seeded), as in a real account, so the "
        "listing has ceil(N/100) pages from the first poll: 1 page up to N=100, 5 at N=500.",
        "- The simulator counts the budget with a sliding window of the same size as the "
        "client's and does **not** enforce it (no 429): requests over the budget are counted "
        "(`GET /_simulator/rate`: `max_in_window`, `violations`), not refused.",
        f"- Every mode triggers with `start_stitch_sync`, {MAX_CONCURRENT} triggers in "
        "flight. `shared` then runs `stitch_sync_many_flow`'s waits (one poller per account, "
        f'`max_concurrent={MAX_CONCURRENT}`) with **`loads="ignore"` passed explicitly**: '
        '`loads="wait"` is now the flow\'s default, and `shared` measures the extraction '
        "waits alone, as the results before loads were followed did, so that its figures "
        'stay comparable with them. `baseline` triggers with `loads="ignore"` too (no '
        "load baseline is read) and then runs one naive task per source that "
        "sleeps the poll interval, reads `GET /v4/{client}/extractions` page by page with "
        "plain httpx (no limiter) until it finds its `job_name`, and judges the record with "
        "`prefect_stitch._verdict.judge_extraction`.",
        f'- `{LOADS_MODE}` runs `stitch_sync_many_flow` with `loads="wait"` (the default) '
        f"and `max_load_wait_seconds={MAX_LOAD_WAIT_SECONDS:g}`. Each source has two "
        f"streams ({', '.join(f'`{s}`' for s in STREAMS)}), both selected; its job gives "
        "both rows, and each stream's load lands its own scripted delay after the job's "
        "end. Before that, `GET /v4/{client}/loads` lists the seeded job's loads of both "
        "streams (landed an hour earlier): 2N load records, ceil(2N/100) pages.",
        "- All jobs and loads succeed; every run is a fresh simulator process and a fresh "
        "flow process against one real `prefect server`.",
        "",
        "## Results: extraction waits (`shared`, `baseline`)",
        "",
        f'`shared` passes `loads="ignore"` (see above). Runs: {runs_of(results, False)}.',
        "",
        markdown_table(header, table_rows(results)),
        "",
        "Columns:",
        "",
        "- **jobs reqs**: requests to the jobs endpoints (extractions, logs, loads) the "
        "simulator received during the run, retries included.",
        "- **tick s**: shared: the poller's measured tick (median gap between two listings' "
        f"first pages); baseline: each waiter's poll interval ({POLL_INTERVAL_SECONDS:g} s). "
        "**reqs/tick**: shared: jobs requests / listings; baseline: jobs requests per poll "
        "interval of the run's polling span.",
        "- **max in window**: most jobs requests the simulator saw in any sliding window of "
        f"{JOBS_RATE_PERIOD_SECONDS:g} s (the budget is {JOBS_RATE_LIMIT}).",
        "- **verdict**: time from a job's completion (its trigger's arrival at the simulator "
        "plus its scripted duration: the simulator completes it exactly then) to its verdict "
        "(the `end_time` of its wait task run, `wait-for-stitch-sync-<id>` or "
        "`naive-wait-<id>`, read from the Prefect API); in brackets, in ticks.",
        "- **wall s**: the flow call in the flow process, triggers included.",
        "- **peak RSS MB**, **CPU s**: `getrusage(RUSAGE_SELF)` of the flow process after "
        "the flow (`ru_maxrss`; `ru_utime + ru_stime`, interpreter start and imports "
        "included). **CPU s in flow**: the same, counted from just before the flow call. "
        "The jobs run in the simulator, another process, so their durations cost the flow "
        "process no CPU: these CPU seconds are all *beyond the jobs' own durations*.",
        "",
        "Details:",
        "",
        markdown_table(DETAIL_COLUMNS, detail_rows(results)),
        "",
        "- **completion→listing**: from a job's completion to the arrival of the first "
        "listing of its record's page after it: at most a tick while the poller runs, "
        "longer when no wait task was watching yet (the poller runs only while some wait "
        "watches); **listing→verdict**: from that listing to the wait task run's end (page "
        "reads, hand-off to the waiter, matching, event, artifact, task run end).",
        "- **verdict p95, jobs done after the last trigger**: the same latency for the "
        "jobs that completed after the last trigger reached the simulator, when no trigger "
        "burst competes with the waits for the flow process.",
        "- **jobs reqs (flow's count)**: `StitchSyncManyResult.jobs_requests` (shared "
        "only). **baseline schedule reqs**: the jobs requests a per-source waiter makes for "
        "this work when it keeps its schedule (polls every interval from its trigger, reads "
        "every page until its record is listed, then up to its record's page); computed "
        "from the scripted durations, the same for both modes.",
        "- **Prefect server CPU s**: CPU the `prefect server` process group used while the "
        "flow process ran; **simulator CPU s**: the simulator process's whole life. They "
        "share the machine's CPUs with the flow process.",
        "- **last completion s**: from the flow call to the last job's completion (a lower "
        "bound of the wall time).",
        "- **polls kept %**: listings made / listings the schedule asks for (shared: one "
        "per tick over the polling span; baseline: one per poll interval per waiting "
        "source, from its trigger to its verdict). Below 100 %, the process could not "
        "poll as often as it meant to. **CPU busy %**: CPU s in flow / wall s (100 % = "
        "one core saturated: the flow's event loop is one thread).",
        "",
        *loads_section(results),
        "## Reading against the targets",
        "",
        *reading(results),
    ]
    if capped:
        text += ["", capped]
    RESULTS.write_text("\n".join(text) + "\n")


# -- driver -------------------------------------------------------------------------------------


@contextlib.contextmanager
def prefect_server(home: Path) -> Iterator[PrefectServer]:
    server = PrefectServer(home)
    try:
        print(f"Starting prefect server on {server.api_url} ...", flush=True)
        server.start()
        yield server
    finally:
        server.stop()


def driver_main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    revision = package_revision()
    home = Path(tempfile.mkdtemp(prefix="bench-stitch-"))
    results: list[RunResult] = []
    capped = None
    loads_ns = args.ns if args.loads_ns is None else args.loads_ns
    plan = [
        (n, mode)
        for n in sorted(set(args.ns) | set(loads_ns))
        for mode in args.modes
        if n in (loads_ns if mode == LOADS_MODE else args.ns)
    ]
    skipped = [(n, m) for n, m in plan if m == "baseline" and n > args.baseline_max_n]
    if skipped:
        capped = (
            f"The baseline was capped at N={args.baseline_max_n} "
            f"(`--baseline-max-n`); not run for N = {', '.join(str(n) for n, _ in skipped)}."
        )
    plan = [p for p in plan if p not in skipped]
    try:
        with prefect_server(home) as server:
            for n, mode in plan:
                result = run_one(n, mode, server, home, args.timeout)
                results.append(result)
                print(json.dumps(asdict(result)), flush=True)
    finally:
        if args.keep_logs:
            print(f"logs kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    total = time.monotonic() - started
    print()
    print(text_table(COLUMNS, table_rows(results)))
    print()
    print(text_table(DETAIL_COLUMNS, detail_rows(results)))
    if any(r.mode == LOADS_MODE for r in results):
        print()
        print(text_table(LOADS_COLUMNS, loads_rows(results)))
        print()
        print(text_table(LOADS_DETAIL_COLUMNS, loads_detail_rows(results)))
    print()
    print("\n".join(reading(results)))
    if capped:
        print(capped)
    print(f"\nWhole benchmark: {total:.0f} s")
    if not args.no_write:
        after = package_revision()
        if after != revision:
            revision = f"{revision} at the start, {after} at the end"
        write_results(results, command_line(args.argv), total, capped, revision)
        print(f"Wrote {RESULTS}")
    return 0 if all(r.ok for r in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", type=int, nargs="+", default=list(DEFAULT_NS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--loads-ns",
        type=int,
        nargs="+",
        help=f"numbers of sources for the {LOADS_MODE} mode (default: those of --ns)",
    )
    parser.add_argument(
        "--baseline-max-n", type=int, default=500, help="skip the baseline above this N"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    parser.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary logs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.child:
        return child_main(args)
    return driver_main(args)


if __name__ == "__main__":
    sys.exit(main())
