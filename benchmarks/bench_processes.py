"""Benchmark: K processes, each syncing one source of one Stitch account, at the same time.

Not a test: it measures. For K = 1, 10, 50 it starts K processes at (nearly) the same
time, each running ONE ``stitch_sync_flow(source_id=..., loads="ignore")`` against ONE
simulated Stitch account, in three modes:

* ``shared``: the package as it is (``PREFECT_STITCH_SHARED_POLLING`` unset): the
  processes elect a leader through the Prefect API, only the leader reads the listing,
  and it publishes each listing in one artifact updated in place, its sequence number in
  a Variable;
* ``alone``: ``PREFECT_STITCH_SHARED_POLLING=0``: each process polls by itself, with its
  own in-process limiter only;
* ``alone-gcl``: each process polls by itself, every jobs request pacing itself on the
  Prefect global concurrency limit ``stitch-jobs-<client_id>``, created before the run
  with ``prefect_stitch._ratelimit.global_limit_settings(30, period)`` (as README
  recommends) and deleted after it.

and prints, per (K, mode), the jobs requests the simulator received, the most of them in
any window of the budget's period, the time from each job's end to the moment its process
had its result, peak RSS and CPU seconds per process, and whether every verdict was
right. Then, at K = 10 ``shared``, it kills the leading process (SIGKILL) while every
process waits, and reports how long the account went unpolled and whether the others
still got their verdicts. With ``--outage SECONDS``, at K = 8 ``shared`` (jobs of 60-90 s),
it kills the Prefect server 15 s in and starts it again on the same port and database
SECONDS later, and reports the budget through the outage and each verdict's delay after
its job's end or the API's return, whichever is later. Time is compressed 10x
(``BENCH_COMPRESSION``).

Usage (from the project root)::

    BENCH_COMPRESSION=10 .venv/bin/python benchmarks/bench_processes.py
    .venv/bin/python benchmarks/bench_processes.py --ks 1 10 --modes shared --no-takeover --no-write
    .venv/bin/python benchmarks/bench_processes.py --ks --no-takeover --outage 40 90

Architecture: the driver (this process) starts ONE real ``prefect server`` (temporary
PREFECT_HOME) for all runs, and runs ONE simulator per run in its own threads (so the
exact completion time of every job is readable: simulator clock = wall clock). Each of
the K processes of a run is a child (``--child``) whose ``PREFECT_API_URL`` points at the
server; it prints, on lines starting with ``BENCH``, when it booted, when it led the
account's poll (a thread watching ``pollers_of(credentials)[0]._sharing.leading``), its
result with ``time.time()`` when ``stitch_sync_flow`` returned, and its
``getrusage(RUSAGE_SELF)`` at exit. Every job runs until the driver ends it: a drawn
10-40 s after the last process triggered its job (so that all K processes wait at once),
or, in the take-over run, after the leader was killed, or, in an outage run, a drawn
60-90 s after its own trigger.
"""

import argparse
import asyncio
import contextlib
import faulthandler
import hashlib
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
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from dataclasses import fields as field_list
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench_sync_many as base  # its helpers only (this directory is on sys.path)

ROOT = base.ROOT
HERE = base.HERE
RESULTS = HERE / "RESULTS.md"
SECTION_START = "<!-- bench_processes: start (generated; replaced by each run) -->"
SECTION_END = "<!-- bench_processes: end -->"
OUTAGE_START = "<!-- bench_processes --outage: start (generated; replaced by each outage run) -->"
OUTAGE_END = "<!-- bench_processes --outage: end -->"

# -- the scenario ------------------------------------------------------------------------
COMPRESSION = float(os.environ.get("BENCH_COMPRESSION", "10"))
"""Every duration is Stitch's divided by this (``BENCH_COMPRESSION``, default 10)."""
JOBS_RATE_LIMIT = 30
JOBS_RATE_PERIOD_SECONDS = 600.0 / COMPRESSION
POLL_INTERVAL_SECONDS = 30.0 / COMPRESSION
BUDGET_FLOOR_SECONDS = 1 * JOBS_RATE_PERIOD_SECONDS / (JOBS_RATE_LIMIT * 2 / 3)
"""The poller's tick floor for a one-page listing: pages x period / (limit x 2/3): the
listings take two thirds of the budget at most (``POLL_SHARE_OF_BUDGET``)."""
TICK_SECONDS = max(POLL_INTERVAL_SECONDS, BUDGET_FLOOR_SECONDS)
JOB_END_RANGE = (100.0 / COMPRESSION, 400.0 / COMPRESSION)
"""Each job ends this long (uniform, fixed seed) after the last process triggered its job."""
SEED = 20_240_611
CLIENT_ID = 116078
TOKEN = "sim-token"  # the simulator's well-known test token, not a secret
PAGE_SIZE = 100
FIRST_SOURCE_ID = 300_001
DEFAULT_KS = (1, 10, 50)
MODES = ("shared", "alone", "alone-gcl")
GCL_NAME = f"stitch-jobs-{CLIENT_ID}"
MAX_WAIT_SECONDS = 3600.0
"""The flows' ``max_wait_seconds``: longer than any run (a run is capped by ``--timeout``)."""
TAKEOVER_K = 10
TAKEOVER_SETTLE_SECONDS = 5.0
"""Take-over run: how long after the last trigger the leader is killed."""
OUTAGE_K = 8
OUTAGE_AFTER_SECONDS = 15.0
"""Outage runs: the server is killed this long after the first launch (once every process
has triggered its job: a flow run cannot start without the API)."""
OUTAGE_JOB_RANGE = (600.0 / COMPRESSION, 900.0 / COMPRESSION)
"""Outage runs: each job ends this long (uniform, fixed seed) after its own trigger."""
MARK = "BENCH "
WARNING_PATTERNS = {
    "two leaders (one steps down)": "steps down",
    "lost the lead": "Lost the lead",
    "took over from a silent leader": "taking over from a silent leader",
    "could not share (polling alone)": "Cannot share the poll",
    "could not reach the API (polling alone)": "Cannot reach the Prefect API",
    "traceback": "Traceback (most recent call last)",
    "crashed flow run": "Crash detected",
}


def source_ids(k: int) -> list[int]:
    return [FIRST_SOURCE_ID + i for i in range(k)]


def job_ends(k: int, span: tuple[float, float] = JOB_END_RANGE) -> dict[int, float]:
    """When each job ends, after the reference moment; K=10's are the first ten of K=50's."""
    rng = random.Random(SEED)
    low, high = span
    return {sid: round(rng.uniform(low, high), 3) for sid in source_ids(k)}


# -- child mode: one process, one source ----------------------------------------------------


def emit(kind: str, payload: dict[str, Any]) -> None:
    print(f"{MARK}{kind} {json.dumps(payload)}", flush=True)


SLOW_CALL_SECONDS = 2.0
"""A sharing call (a Prefect API request or a few) slower than this is reported (``SLOW``)."""


def time_slow_sharing_calls() -> None:
    """Report each call of the poll sharing that takes longer than ``SLOW_CALL_SECONDS``.

    A diagnostic of this benchmark only: it wraps the steps of the shared poll that talk
    to the Prefect API (`prefect_stitch._poll.sharing.Sharing` and its roles), reported
    under the names they had before the poll was split by role.
    """
    import functools

    from prefect_stitch._poll.demand import Heartbeat
    from prefect_stitch._poll.election import Election
    from prefect_stitch._poll.sharing import Sharing

    def timed(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.time()
            try:
                return await method(*args, **kwargs)
            finally:
                took = time.time() - started
                if took > SLOW_CALL_SECONDS:
                    emit("SLOW", {"t": started, "call": name, "seconds": round(took, 2)})

        return wrapper

    steps: tuple[tuple[type, str, str], ...] = (
        (Sharing, "start", "start"),
        (Sharing, "try_lead", "try_lead"),
        (Sharing, "prepare", "prepare"),
        (Sharing, "follow", "follow"),
        (Heartbeat, "announce", "_announce"),
        (Sharing, "refresh_demands", "refresh_demands"),
        (Sharing, "publish", "publish"),
        (Election, "renew", "renew_if_due"),
        (Sharing, "stop", "stop"),
    )
    for owner, method, call in steps:
        setattr(owner, method, timed(call, getattr(owner, method)))


def report_listings_seen(source_id: int) -> None:
    """Print when this process's waiters first got a listing that shows each job of its source
    ended (``SEEN``): the poll's verdict, apart from the flow's own reporting to the API."""
    from prefect_stitch._poll.poller import AccountPoller

    deliver = AccountPoller._deliver
    seen: set[str] = set()

    def reported(self: AccountPoller, snapshot: Any) -> None:
        for record in snapshot.records:
            done = record.source_id == source_id and record.completion_time is not None
            if done and record.job_name not in seen:
                seen.add(record.job_name)
                emit("SEEN", {"t": time.time(), "job": record.job_name})
        deliver(self, snapshot)

    AccountPoller._deliver = reported  # type: ignore[method-assign]


def child_main(args: argparse.Namespace) -> int:
    emit("BOOT", {"t": time.time(), "pid": os.getpid()})
    import prefect_stitch
    from prefect_stitch import StitchCredentials, stitch_sync_flow
    from prefect_stitch._poll.poller import pollers_of

    credentials = StitchCredentials(
        access_token=TOKEN,
        client_id=CLIENT_ID,
        base_url=args.base_url,
        jobs_rate_limit=JOBS_RATE_LIMIT,
        jobs_rate_period_seconds=JOBS_RATE_PERIOD_SECONDS,
    )
    emit(
        "IMPORTED",
        {"t": time.time(), "package_file": str(Path(prefect_stitch.__file__).resolve())},
    )
    stop = threading.Event()
    time_slow_sharing_calls()
    report_listings_seen(args.source_id)
    if os.environ.get("BENCH_DEBUG_SHARING"):  # every step of the shared poll, in the log
        import logging

        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("SHARING %(created).3f %(message)s"))
        sharing_logger = logging.getLogger("prefect_stitch._poll")  # the protocol's roles
        sharing_logger.addHandler(handler)
        sharing_logger.setLevel(logging.DEBUG)
    # Diagnostics for a stalled run: SIGUSR1 dumps every thread's Python stack (to
    # stderr, i.e. the log), SIGUSR2 the tasks of the poller's event loop.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    def dump_poller_tasks(signum: int, frame: Any) -> None:
        for poller in pollers_of(credentials):
            loop = poller._loop
            print(f"BENCH-DUMP poller loop {loop!r} at {time.time():.3f}", flush=True)
            if loop is None:
                continue
            for _ in range(3):  # the set may change while we read it
                with contextlib.suppress(RuntimeError):
                    tasks = list(asyncio.all_tasks(loop))
                    break
            else:
                tasks = []
            for task in tasks:
                print(f"BENCH-DUMP task {task.get_name()}: {task.get_coro()!r}", flush=True)
                task.print_stack(file=sys.stdout)
        sys.stdout.flush()

    signal.signal(signal.SIGUSR2, dump_poller_tasks)

    def watch_leadership() -> None:
        """Print each change of this process's leadership of the poll, and its listings."""
        last: tuple[str, bool] | None = None
        ticks = 0
        while not stop.is_set():
            pollers = pollers_of(credentials)
            sharing = pollers[0]._sharing if pollers else None
            now = (sharing.id, bool(sharing.leading)) if sharing is not None else None
            if now != last:
                if now is not None:
                    emit("LEAD", {"t": time.time(), "id": now[0], "leading": now[1]})
                elif last is not None and last[1]:
                    emit("LEAD", {"t": time.time(), "id": last[0], "leading": False})
                last = now
            listed = sum(p.ticks for p in pollers)
            if listed != ticks:  # a counter: a short spell of leadership is not missed
                emit("TICKS", {"t": time.time(), "ticks": listed})
                ticks = listed
            stop.wait(0.1)

    threading.Thread(target=watch_leadership, name="bench-leadership", daemon=True).start()
    result: dict[str, Any]
    try:
        value = stitch_sync_flow(
            source_id=args.source_id,
            credentials=credentials,
            poll_interval_seconds=POLL_INTERVAL_SECONDS,
            max_wait_seconds=MAX_WAIT_SECONDS,
            loads="ignore",
        )
        result = {"t": time.time(), "status": value.status, "job_name": value.job_name}
    except Exception as exc:  # a wrong verdict is reported, not raised
        result = {"t": time.time(), "status": None, "error": f"{type(exc).__name__}: {exc}"}
        result["error"] = result["error"][:600]
    emit("RESULT", result)
    stop.set()
    pollers = pollers_of(credentials)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    emit(
        "EXIT",
        {
            "t": time.time(),
            "peak_rss_mb": usage.ru_maxrss / 1024.0,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "poller_ticks": sum(p.ticks for p in pollers),
            "poller_requests": sum(p.requests for p in pollers),
            "listings_received": sum(p.received for p in pollers),
        },
    )
    return 0


# -- driver ---------------------------------------------------------------------------------


@dataclass
class Child:
    index: int
    source_id: int
    process: base.Process
    launched: float
    killed_at: float | None = None
    exited_at: float | None = None
    capped: bool = False
    lines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def read(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        if self.process.log.exists():
            for line in self.process.log.read_text(errors="replace").splitlines():
                if not line.startswith(MARK):
                    continue
                kind, _, payload = line[len(MARK) :].partition(" ")
                with contextlib.suppress(ValueError):
                    found.setdefault(kind, []).append(json.loads(payload))
        self.lines = found
        return found

    def first(self, kind: str) -> dict[str, Any] | None:
        items = self.lines.get(kind) or []
        return items[0] if items else None


def try_reap(process: base.Process) -> bool:
    """Collect the child's exit (and rusage) if it has exited; never blocks."""
    if process.returncode is not None:
        return True
    try:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
    except ChildProcessError:  # reaped elsewhere
        process.returncode = process.popen.poll()
        if process.returncode is not None:
            process._log_file.close()
        return process.returncode is not None
    if pid != process.pid:
        return False
    process.rusage = usage
    process.returncode = os.waitstatus_to_exitcode(status)
    process.popen.returncode = process.returncode
    process._log_file.close()
    return True


def kill_group(process: base.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def reap_within(process: base.Process, seconds: float) -> bool:
    """Wait for the child's exit (keeping its rusage), at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while not try_reap(process):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@dataclass
class RunResult:
    k: int
    mode: str
    takeover: bool = False
    error: str | None = None
    launch_spread: float = 0.0
    boot_spread: float = float("nan")
    trigger_spread: float = float("nan")
    first_trigger_after_launch: float = float("nan")
    last_trigger_after_launch: float = float("nan")
    triggered: int = 0
    all_waiting_together: bool = False
    max_overlap: int = 0
    jobs_requests: int = 0
    extraction_requests: int = 0
    loads_requests: int = 0
    logs_requests: int = 0
    listings: int = 0
    window_seconds: float = 0.0
    requests_per_tick_all_waiting: float = float("nan")
    requests_per_tick_span: float = float("nan")
    min_listing_gap: float = float("nan")
    median_listing_gap: float = float("nan")
    close_listings: int = 0
    max_in_window: int = 0
    violations: int = 0
    right: int = 0
    wrong: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    latency_p50: float = float("nan")
    latency_p95: float = float("nan")
    latency_max: float = float("nan")
    detect_p95: float = float("nan")
    overhead_p50: float = float("nan")
    overhead_p95: float = float("nan")
    rss_p50: float = float("nan")
    rss_max: float = float("nan")
    cpu_p50: float = float("nan")
    cpu_max: float = float("nan")
    cpu_total: float = 0.0
    server_cpu: float = 0.0
    driver_cpu: float = 0.0
    wall_seconds: float = 0.0
    leaders: int = 0
    max_leaders: int = 0
    handoffs: int = 0
    poller_requests: int = 0
    listings_received: int = 0
    warnings: dict[str, int] = field(default_factory=dict)
    excerpts: list[str] = field(default_factory=list)
    gcl: dict[str, Any] = field(default_factory=dict)
    takeover_info: dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0
    exit_lag_p50: float = float("nan")
    exit_lag_max: float = float("nan")
    stall: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    package_files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    outage: float | None = None
    """Outage runs: how long the Prefect server was to stay down (``--outage``)."""
    outage_info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outage:
    """The Prefect server killed while the processes wait, and started again (``--outage``).

    Killed (SIGKILL, its process group: its leases die with it) ``OUTAGE_AFTER_SECONDS``
    after the first launch, once every process has triggered its job; started again on
    the same port and database ``seconds`` later, in a thread (the driver goes on ending
    jobs while it starts).
    """

    seconds: float
    server: base.PrefectServer
    home: Path
    killed_at: float | None = None
    restarted_at: float | None = None
    back_at: float | None = None
    error: str | None = None
    thread: threading.Thread | None = None

    def step(self, started: float, triggered: bool) -> None:
        """Kill the server, or start it again, when due."""
        now = time.time()
        if self.killed_at is None:
            if triggered and now >= started + OUTAGE_AFTER_SECONDS:
                assert self.server.process is not None
                kill_group(self.server.process)
                reap_within(self.server.process, 30)
                self.killed_at = now
                print(f"    killed the Prefect server {now - started:.1f} s in", flush=True)
        elif self.thread is None and now >= self.killed_at + self.seconds:
            log = self.home / "server.log"
            if log.exists():
                log.rename(self.home / f"server-until-{int(now)}.log")
            self.restarted_at = now
            self.thread = threading.Thread(target=self._start, name="bench-restart", daemon=True)
            self.thread.start()

    def _start(self) -> None:
        """Start the server again (same port, same PREFECT_HOME and database)."""
        try:
            self.server.start()
            self.back_at = time.time()
            print(f"    the Prefect server answers again ({self.back_at:.1f})", flush=True)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"[:600]

    def finish(self) -> None:
        """Wait for the restart (the next runs need the server)."""
        if self.thread is not None:
            self.thread.join(240)
        if self.killed_at is not None and self.back_at is None and self.error is None:
            self._start()


def create_gcl(server: base.PrefectServer) -> dict[str, Any]:
    from prefect_stitch._ratelimit import global_limit_settings

    capacity, decay = global_limit_settings(JOBS_RATE_LIMIT, JOBS_RATE_PERIOD_SECONDS)
    with contextlib.suppress(Exception):  # a leftover of an interrupted run
        delete_gcl(server)
    created: dict[str, Any] = base.http_json(
        "POST",
        f"{server.api_url}/v2/concurrency_limits/",
        {"name": GCL_NAME, "limit": capacity, "slot_decay_per_second": decay, "active": True},
    )
    return created


def read_gcl(server: base.PrefectServer) -> dict[str, Any]:
    found: dict[str, Any] = base.http_json(
        "GET", f"{server.api_url}/v2/concurrency_limits/{GCL_NAME}"
    )
    return found


def delete_gcl(server: base.PrefectServer) -> None:
    request = urllib.request.Request(
        f"{server.api_url}/v2/concurrency_limits/{GCL_NAME}", method="DELETE"
    )
    with urllib.request.urlopen(request, timeout=30):
        pass


def leader_intervals(children: Sequence[Child], end: float) -> list[tuple[float, float, int]]:
    """(start, end, child index) of every spell of leadership the children printed."""
    spells = []
    for child in children:
        began: float | None = None
        for line in child.lines.get("LEAD", []):
            if line["leading"] and began is None:
                began = line["t"]
            elif not line["leading"] and began is not None:
                spells.append((began, line["t"], child.index))
                began = None
        if began is not None:
            stop = child.killed_at or (child.first("EXIT") or {}).get("t") or end
            spells.append((began, stop, child.index))
    return sorted(spells)


def max_concurrent(intervals: Sequence[tuple[float, float]]) -> int:
    points = [(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals]
    best = current = 0
    for _, step in sorted(points, key=lambda p: (p[0], p[1])):
        current += step
        best = max(best, current)
    return best


def current_leader(children: Sequence[Child]) -> Child | None:
    leading = []
    for child in children:
        if child.killed_at is not None or child.process.returncode is not None:
            continue
        child.read()
        lines = child.lines.get("LEAD", [])
        if lines and lines[-1]["leading"]:
            leading.append((lines[-1]["t"], child))
    return min(leading, key=lambda item: item[0])[1] if leading else None


def run_one(
    k: int,
    mode: str,
    server: base.PrefectServer,
    home: Path,
    args: argparse.Namespace,
    takeover: bool = False,
    outage: float | None = None,
) -> RunResult:
    from prefect_stitch.simulator import Outcome, StitchSimulator

    label = f"{mode}-{k}" + ("-takeover" if takeover else "")
    label += f"-outage{outage:g}" if outage is not None else ""
    result = RunResult(k, mode, takeover, outage=outage)
    print(f"--- {label}: {k} processes", flush=True)
    sim = StitchSimulator(
        token=TOKEN,
        client_id=CLIENT_ID,
        page_size=PAGE_SIZE,
        jobs_rate_limit=JOBS_RATE_LIMIT,
        jobs_rate_period_seconds=JOBS_RATE_PERIOD_SECONDS,
    ).start()
    ids = source_ids(k)
    ends = job_ends(k, OUTAGE_JOB_RANGE if outage is not None else JOB_END_RANGE)
    stage = None if outage is None else Outage(outage, server, home)
    for sid in ids:
        sim.add_source(sid, outcomes=[Outcome.success(duration_seconds=None)])
        sim.seed_completed(sid)  # a real account lists every source's last job
    if mode == "alone-gcl":
        result.gcl["created"] = create_gcl(server)
    env = {
        **os.environ,
        "PREFECT_API_URL": server.api_url,
        "PREFECT_HOME": str(home / "client"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_PROFILE", None)
    if mode == "shared":
        env.pop("PREFECT_STITCH_SHARED_POLLING", None)
    else:
        env["PREFECT_STITCH_SHARED_POLLING"] = "0"
    assert server.process is not None
    server_cpu = base.group_cpu_seconds(server.process.pid)
    driver_cpu = base._cpu(resource.getrusage(resource.RUSAGE_SELF))
    children: list[Child] = []
    started = time.time()
    reference: float | None = None
    finished: set[int] = set()
    try:
        for index, sid in enumerate(ids):
            if index:
                time.sleep(args.stagger)
            argv = [sys.executable, str(Path(__file__).resolve()), "--child"]
            argv += ["--source-id", str(sid), "--base-url", sim.base_url]
            process = base.Process(argv, env, home / f"{label}-{index:02d}.log")
            children.append(Child(index, sid, process, time.time()))
        result.launch_spread = children[-1].launched - children[0].launched
        deadline = started + args.timeout
        killed_for_takeover = False
        while True:
            now = time.time()
            triggers = trigger_times(sim)
            everyone = len(triggers) == k or now > started + args.trigger_deadline
            if reference is None and not takeover and everyone:
                reference = max(triggers.values()) if len(triggers) == k else now
            if takeover and not killed_for_takeover and triggers:
                ready = len(triggers) == k or now > started + args.trigger_deadline
                if ready and now >= max(triggers.values()) + TAKEOVER_SETTLE_SECONDS:
                    leader = current_leader(children)
                    if leader is not None:
                        kill_group(leader.process)
                        leader.killed_at = reference = time.time()
                        killed_for_takeover = True
                        print(f"    killed the leader, process {leader.index}", flush=True)
                    elif now > max(triggers.values()) + 60:
                        reference = now
                        killed_for_takeover = True
                        result.notes.append("no leader found to kill")
            if stage is not None:  # each job its draw after its own trigger
                stage.step(started, len(triggers) == k)
                for sid, at in triggers.items():
                    if sid not in finished and time.time() >= at + ends[sid]:
                        sim.finish_job(sid)
                        finished.add(sid)
            elif reference is not None:
                for sid, at in triggers.items():
                    if sid not in finished and time.time() >= max(reference, at) + ends[sid]:
                        sim.finish_job(sid)
                        finished.add(sid)
            alive = []
            for child in children:
                if try_reap(child.process):
                    if child.exited_at is None:
                        child.exited_at = time.time()
                else:
                    alive.append(child)
            if not alive:
                break
            if mode == "shared" and not (takeover or stage) and not result.stall and triggers:
                watch_for_stall(result, sim, server, alive, args.stall_seconds)
            if now > deadline:
                for child in alive:
                    child.capped = True
                    kill_group(child.process)
                for child in alive:
                    reap_within(child.process, 30)
                result.notes.append(
                    f"capped at {args.timeout:.0f} s: {len(alive)} processes still running "
                    "were killed"
                )
                break
            time.sleep(0.05)
        ended = time.time()
        if stage is not None:
            stage.finish()  # the next runs need the server
        result.server_cpu = (
            base.group_cpu_seconds(server.process.pid) - server_cpu
            if stage is None  # restarted: the killed server's CPU is gone
            else float("nan")
        )
        result.driver_cpu = base._cpu(resource.getrusage(resource.RUSAGE_SELF)) - driver_cpu
        if mode == "alone-gcl":
            with contextlib.suppress(Exception):
                result.gcl["after"] = read_gcl(server)
    finally:
        for child in children:
            if not try_reap(child.process):
                kill_group(child.process)
                reap_within(child.process, 30)
        if stage is not None:
            stage.finish()
        if mode == "alone-gcl":
            try:
                delete_gcl(server)
            except Exception as exc:
                result.notes.append(f"could not delete {GCL_NAME}: {exc}")
        sim.stop()
    for child in children:
        child.read()
    measure(result, sim, children, started, ended, reference, ends)
    if stage is not None:
        measure_outage(result, stage, sim, children)
    data = {
        "result": asdict(result),
        "children": [
            {"index": c.index, "source_id": c.source_id, "launched": c.launched, **c.lines}
            for c in children
        ],
        "requests": [r.as_dict() for r in sim.requests],
        "jobs": sim.jobs(),
    }
    (home / f"run-{label}.json").write_text(json.dumps(data, default=str))
    return result


def watch_for_stall(
    result: RunResult,
    sim: Any,
    server: base.PrefectServer,
    alive: Sequence[Child],
    seconds: float,
) -> None:
    """Once per run: no listing for ``seconds`` while processes wait: dump and probe."""
    listings = [r.wall for r in sim.requests if r.endpoint == "extractions"]
    now = time.time()
    if not listings or now - listings[-1] < seconds:
        return
    info: dict[str, Any] = {"at": now, "last_listing": listings[-1], "alive": len(alive)}
    for child in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.process.pid, signal.SIGUSR1)
            os.kill(child.process.pid, signal.SIGUSR2)
    host = hashlib.sha256(sim.base_url.encode()).hexdigest()[:8]
    probes = {
        "health": ("GET", f"{server.api_url}/health", None),
        "leader slot": (
            "GET",
            f"{server.api_url}/v2/concurrency_limits/stitch-poll-{CLIENT_ID}-{host}",
            None,
        ),
        "flow runs": ("POST", f"{server.api_url}/flow_runs/filter", {"limit": 1}),
    }
    for name, (method, url, payload) in probes.items():
        began = time.monotonic()
        try:
            answer = base.http_json(method, url, payload, timeout=30)
            info[name] = {"seconds": round(time.monotonic() - began, 3)}
            if isinstance(answer, dict):
                info[name]["active_slots"] = answer.get("active_slots")
                info[name]["limit"] = answer.get("limit")
        except Exception as exc:
            info[name] = {"seconds": round(time.monotonic() - began, 3), "error": repr(exc)[:200]}
    spy = os.environ.get("BENCH_PY_SPY")  # a py-spy executable: dump the server's stacks too
    if spy and server.process is not None:
        dumps = []
        for pid in group_pids(server.process.pid):
            done = subprocess.run(
                [spy, "dump", "--pid", str(pid)],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
            dumps.append(f"== pid {pid}\n{done.stdout}{done.stderr}")
        path = server.home / f"server-stacks-{int(now)}.txt"
        path.write_text("\n".join(dumps))
        info["server_stacks"] = path.name
    result.stall = info
    print(f"    no listing for {seconds:g} s: dumped the processes' stacks; {info}", flush=True)


def group_pids(pgid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            if int(text[text.rindex(")") + 2 :].split()[2]) == pgid:
                pids.append(int(stat.parent.name))
    return sorted(pids)


def api_jobs(sim: Any) -> list[Any]:
    """The jobs the processes triggered, with their exact times (floats of the simulator's
    clock, the wall clock here; its API gives Stitch's whole seconds)."""
    with sim._account.settled() as account:
        return [job for job in account.book.of_source(None) if job.triggered_via == "api"]


def trigger_times(sim: Any) -> dict[int, float]:
    """When each source's API-triggered job started (the trigger's arrival), exact floats."""
    return {job.source_id: job.started_at for job in api_jobs(sim)}


def completion_times(sim: Any) -> dict[str, float]:
    """When each API-triggered job completed, exact floats."""
    return {job.job_name: job.completed_at for job in api_jobs(sim) if job.completed_at is not None}


def measure(
    result: RunResult,
    sim: Any,
    children: Sequence[Child],
    started: float,
    ended: float,
    reference: float | None,
    ends: dict[int, float],
) -> None:
    k = result.k
    requests = sim.requests
    jobs_endpoints = {"extractions", "logs", "loads"}
    jobs_requests = [r for r in requests if r.endpoint in jobs_endpoints]
    result.jobs_requests = len(jobs_requests)
    result.extraction_requests = sum(1 for r in jobs_requests if r.endpoint == "extractions")
    result.loads_requests = sum(1 for r in jobs_requests if r.endpoint == "loads")
    result.logs_requests = sum(1 for r in jobs_requests if r.endpoint == "logs")
    listings = sorted(
        r.wall
        for r in jobs_requests
        if r.endpoint == "extractions" and r.query.get("page", "1") == "1"
    )
    result.listings = len(listings)
    result.max_in_window = sim.jobs_requests_in_window(JOBS_RATE_PERIOD_SECONDS)
    result.violations = sim.rate_limit_violations
    triggers = trigger_times(sim)
    completions = completion_times(sim)
    result.triggered = len(triggers)
    if triggers:
        result.trigger_spread = max(triggers.values()) - min(triggers.values())
        result.first_trigger_after_launch = min(triggers.values()) - started
        result.last_trigger_after_launch = max(triggers.values()) - started
    boots = [c.first("BOOT")["t"] for c in children if c.first("BOOT")]
    if boots:
        result.boot_spread = max(boots) - min(boots)
    result.started_at = started
    result.package_files = sorted(
        {c.first("IMPORTED")["package_file"] for c in children if c.first("IMPORTED")}
    )

    # Verdicts: the job the simulator says this process started, succeeded; latency from
    # the job's exact completion to the moment the process had its result.
    latencies, detect, overhead, waits = [], [], [], []
    for child in children:
        started_jobs = sim.jobs_started(child.source_id)
        line = child.first("RESULT")
        who = f"process {child.index} (source {child.source_id})"
        if child.killed_at is not None:
            continue
        if len(started_jobs) != 1:
            result.notes.append(f"{who}: {len(started_jobs)} jobs started")
        if line is None:
            why = "capped (killed at the cap)" if child.capped else "no result"
            code = child.process.returncode
            result.missing.append(f"{who}: {why}, exit code {code}")
            continue
        expected = started_jobs[0] if started_jobs else None
        if line.get("status") != "succeeded" or line.get("job_name") != expected:
            result.wrong.append(
                f"{who}: got {line.get('status')} {line.get('job_name')} "
                f"{line.get('error', '')[:300]}; the simulator started {expected}"
            )
            continue
        result.right += 1
        done = completions.get(expected)
        if done is None:
            result.notes.append(f"{who}: succeeded before its job completed")
            continue
        latencies.append(line["t"] - done)
        seen = [t for t in listings if t >= done]
        if seen:
            detect.append(seen[0] - done)
            overhead.append(line["t"] - seen[0])
        if child.source_id in triggers:
            waits.append((triggers[child.source_id], line["t"]))
    result.latency_p50 = base.percentile(latencies, 50)
    result.latency_p95 = base.percentile(latencies, 95)
    result.latency_max = max(latencies, default=float("nan"))
    result.detect_p95 = base.percentile(detect, 95)
    result.overhead_p50 = base.percentile(overhead, 50)
    result.overhead_p95 = base.percentile(overhead, 95)
    result.max_overlap = max_concurrent(waits)
    if triggers and completions:
        result.all_waiting_together = len(triggers) == k and max(triggers.values()) < min(
            completions.values()
        )

    # Jobs requests per tick: while all K waited (last trigger to first completion), and
    # over the polling span (first trigger to last result).
    results_at = [c.first("RESULT")["t"] for c in children if c.first("RESULT")]
    if triggers and completions:
        low, high = max(triggers.values()), min(completions.values())
        if high > low:
            count = sum(1 for r in jobs_requests if low <= r.wall < high)
            result.window_seconds = high - low
            result.requests_per_tick_all_waiting = count * TICK_SECONDS / (high - low)
    if triggers and results_at:
        low, high = min(triggers.values()), max(results_at)
        if high > low:
            count = sum(1 for r in jobs_requests if low <= r.wall < high)
            result.requests_per_tick_span = count * TICK_SECONDS / (high - low)
        gaps = [b - a for a, b in itertools.pairwise(listings) if low <= a < high]
        if gaps:
            result.min_listing_gap = min(gaps)
            result.median_listing_gap = sorted(gaps)[len(gaps) // 2]
            result.close_listings = sum(1 for g in gaps if g < BUDGET_FLOOR_SECONDS / 2)

    exits = [c.first("EXIT") for c in children if c.first("EXIT")]
    rss = [e["peak_rss_mb"] for e in exits]
    cpu = [e["cpu_seconds"] for e in exits]
    for child in children:  # killed or capped: what the kernel counted until then
        if child.first("EXIT") is None and child.process.rusage is not None:
            usage = child.process.rusage
            cpu.append(usage.ru_utime + usage.ru_stime)
            rss.append(usage.ru_maxrss / 1024.0)
    result.rss_p50, result.rss_max = base.percentile(rss, 50), max(rss, default=float("nan"))
    result.cpu_p50, result.cpu_max = base.percentile(cpu, 50), max(cpu, default=float("nan"))
    result.cpu_total = sum(cpu)
    result.poller_requests = sum(e["poller_requests"] for e in exits)
    result.listings_received = sum(e["listings_received"] for e in exits)
    last_exit = max((e["t"] for e in exits), default=ended)
    result.wall_seconds = max(last_exit, ended if any(c.capped for c in children) else 0) - started

    lags = [
        c.exited_at - c.first("RESULT")["t"]
        for c in children
        if c.exited_at is not None and c.first("RESULT") and not c.capped
    ]
    result.exit_lag_p50 = base.percentile(lags, 50)
    result.exit_lag_max = max(lags, default=float("nan"))

    spells = leader_intervals(children, ended)
    result.leaders = len({index for _, _, index in spells})
    result.max_leaders = max_concurrent([(a, b) for a, b, _ in spells])
    result.handoffs = max(len(spells) - 1, 0)

    for child in children:
        text = child.process.log.read_text(errors="replace") if child.process.log.exists() else ""
        for what, pattern in WARNING_PATTERNS.items():
            count = text.count(pattern)
            if count:
                result.warnings[what] = result.warnings.get(what, 0) + count
                if len(result.excerpts) < 6:
                    at = text.index(pattern)
                    line_start = text.rfind("\n", 0, at) + 1
                    line_end = text.find("\n", at)
                    excerpt = text[line_start : line_end if line_end > 0 else None][:300]
                    result.excerpts.append(f"process {child.index}: {excerpt.strip()}")

    if result.takeover:
        killed = [c for c in children if c.killed_at is not None]
        info: dict[str, Any] = {}
        if killed:
            victim = killed[0]
            kill = victim.killed_at
            assert kill is not None
            before = [t for t in listings if t < kill]
            after = [t for t in listings if t >= kill]
            info["killed_process"] = victim.index
            info["killed_after_launch"] = kill - started
            info["last_listing_before_kill"] = (before[-1] - kill) if before else None
            info["first_listing_after_kill"] = (after[0] - kill) if after else None
            info["silence"] = (after[0] - before[-1]) if before and after else None
            # Who listed next: a process's listings counter (sampled every 0.1 s, so
            # a spell of leadership shorter than that is not missed).
            listed = sorted(
                (line["t"], c.index)
                for c in children
                if c is not victim
                for line in c.lines.get("TICKS", [])
                if line["t"] >= kill
            )
            later = [s for s in spells if s[2] != victim.index and s[0] >= kill]
            if listed:
                info["new_leader"] = listed[0][1]
                info["new_leader_after_kill"] = listed[0][0] - kill
            elif later:
                info["new_leader"] = later[0][2]
                info["new_leader_after_kill"] = later[0][0] - kill
            else:
                survivors = [
                    c.index
                    for c in children
                    if c is not victim and (c.first("EXIT") or {}).get("poller_ticks")
                ]
                info["listed_after_kill"] = survivors
            info["remaining"] = k - 1
            info["remaining_right"] = result.right
            done_during = [
                completions[name]
                for name in completions
                if after
                and completions[name] < after[0]
                and name not in sim.jobs_started(victim.source_id)
            ]
            info["jobs_done_while_unpolled"] = len(done_during)
        result.takeover_info = info


def measure_outage(result: RunResult, stage: Outage, sim: Any, children: Sequence[Child]) -> None:
    """What the outage run shows: the budget through it, and each verdict's delay after its
    job's end or the API's return, whichever is later (the poll's, and the flow's)."""
    info: dict[str, Any] = {"error": stage.error}
    killed, back = stage.killed_at, stage.back_at
    if killed is None or back is None:
        result.outage_info = info
        return
    info.update(
        killed_after_launch=killed - result.started_at,
        back_after_kill=back - killed,
        restart_seconds=back - (stage.restarted_at or back),
    )
    listings = [r.wall for r in sim.requests_for("extractions") if r.query.get("page", "1") == "1"]
    info["listings_while_down"] = sum(1 for t in listings if killed < t < back)
    completions = completion_times(sim)
    polls, flows, alone = [], [], []
    info["results_each"] = sorted({len(child.lines.get("RESULT", [])) for child in children})
    for child in children:
        started = sim.jobs_started(child.source_id)
        job = started[0] if len(started) == 1 else None
        line = child.first("RESULT")
        if job not in completions or line is None or line.get("job_name") != job:
            continue
        due = max(completions[job], back)
        flows.append(line["t"] - due)
        seen = [item["t"] for item in child.lines.get("SEEN", []) if item["job"] == job]
        if seen:
            polls.append(min(seen) - due)
            if completions[job] < back:  # read alone while the API was down
                alone.append(min(seen) - completions[job])
    info.update(
        poll_p50=base.percentile(polls, 50),
        poll_p95=base.percentile(polls, 95),
        poll_max=max(polls, default=float("nan")),
        flow_p50=base.percentile(flows, 50),
        flow_p95=base.percentile(flows, 95),
        flow_max=max(flows, default=float("nan")),
        ended_while_down=sum(1 for t in completions.values() if killed < t < back),
        alone_p50=base.percentile(alone, 50),
        alone_p95=base.percentile(alone, 95),
    )
    result.outage_info = info


# -- reporting ----------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return base.fmt(float("nan") if value is None else value, digits)


def ticks(value: float) -> str:
    return f"{fmt(value)} ({fmt(value / TICK_SECONDS, 1)})"


COLUMNS = (
    "K",
    "mode",
    "jobs reqs (extractions/loads/logs)",
    "jobs reqs per tick, all K waiting (window s)",
    "jobs reqs per tick, whole wait",
    "max in 60 s window (budget 30)",
    "violations",
    "right verdicts",
    "verdict p50 s (ticks)",
    "verdict p95 s (ticks)",
    "verdict max s (ticks)",
    "peak RSS MB per process (p50 / max)",
    "CPU s per process (p50 / max)",
    "wall s",
)


def mode_label(r: RunResult) -> str:
    outage = f"outage {r.outage:g} s" if r.outage is not None else ""
    return r.mode + "".join(f" ({x})" for x in ("take-over" * r.takeover, outage, r.label) if x)


def main_rows(results: Sequence[RunResult]) -> list[list[str]]:
    rows = []
    for r in results:
        rows.append(
            [
                str(r.k),
                mode_label(r),
                f"{r.jobs_requests} ({r.extraction_requests}/{r.loads_requests}/{r.logs_requests})",
                f"{fmt(r.requests_per_tick_all_waiting)} ({fmt(r.window_seconds, 1)})",
                fmt(r.requests_per_tick_span),
                str(r.max_in_window),
                str(r.violations),
                f"{r.right}/{r.k - (1 if 'killed_process' in r.takeover_info else 0)}",
                ticks(r.latency_p50),
                ticks(r.latency_p95),
                ticks(r.latency_max),
                f"{fmt(r.rss_p50, 0)} / {fmt(r.rss_max, 0)}",
                f"{fmt(r.cpu_p50, 1)} / {fmt(r.cpu_max, 1)}",
                fmt(r.wall_seconds, 1),
            ]
        )
    return rows


DETAIL_COLUMNS = (
    "K",
    "mode",
    "launch spread s",
    "boot spread s",
    "first / last trigger s after the first launch",
    "triggers",
    "all K waiting at once",
    "most waits at once",
    "listings (page 1)",
    "listing gap min / median s",
    "listings < 1 s apart (half the budget floor)",
    "completion→listing p95 s",
    "listing→result p50 / p95 s",
    "processes that led / most at once / hand-offs",
    "listings received (followers)",
    "result→exit p50 / max s",
    "CPU s all processes",
    "Prefect server CPU s",
    "driver (simulator) CPU s",
    "warnings in the logs",
    "notes",
)


def detail_rows(results: Sequence[RunResult]) -> list[list[str]]:
    rows = []
    for r in results:
        notes = list(r.notes)
        if r.stall:
            notes.append(stall_text(r))
        notes += r.wrong + shorten(r.missing)
        if r.gcl.get("after"):
            after = r.gcl["after"]
            notes.append(
                f"{GCL_NAME} after the run: limit {after.get('limit')}, decay "
                f"{after.get('slot_decay_per_second')}/s, active slots "
                f"{after.get('active_slots')}"
            )
        rows.append(
            [
                str(r.k),
                mode_label(r),
                fmt(r.launch_spread, 1),
                fmt(r.boot_spread, 1),
                f"{fmt(r.first_trigger_after_launch, 1)} / {fmt(r.last_trigger_after_launch, 1)}",
                f"{r.triggered}/{r.k}",
                "yes" if r.all_waiting_together else "no",
                str(r.max_overlap),
                str(r.listings),
                f"{fmt(r.min_listing_gap)} / {fmt(r.median_listing_gap)}",
                str(r.close_listings),
                fmt(r.detect_p95),
                f"{fmt(r.overhead_p50)} / {fmt(r.overhead_p95)}",
                f"{r.leaders} / {r.max_leaders} / {r.handoffs}" if r.mode == "shared" else "n/a",
                str(r.listings_received) if r.mode == "shared" else "n/a",
                f"{fmt(r.exit_lag_p50)} / {fmt(r.exit_lag_max)}",
                fmt(r.cpu_total, 1),
                fmt(r.server_cpu, 1),
                fmt(r.driver_cpu, 1),
                ", ".join(f"{w}: {n}" for w, n in sorted(r.warnings.items())) or "none",
                "; ".join(notes) or "",
            ]
        )
    return rows


def stall_text(r: RunResult) -> str:
    info = r.stall
    probes = ", ".join(
        f"{name} {info[name].get('seconds')} s"
        + (f" (active slots {info[name]['active_slots']})" if info[name].get("limit") else "")
        + (f" ({info[name]['error']})" if info[name].get("error") else "")
        for name in ("health", "leader slot", "flow runs")
        if name in info
    )
    return (
        f"STALL: no listing from {fmt(info['last_listing'] - r.started_at, 1)} s after the "
        f"first launch; at {fmt(info['at'] - r.started_at, 1)} s the {info['alive']} live "
        f"processes' stacks were dumped, and the Prefect API answered: {probes}"
    )


def label_of(r: RunResult) -> str:
    return f" ({r.label})" if r.label else ""


def shorten(missing: Sequence[str]) -> list[str]:
    if len(missing) <= 3:
        return list(missing)
    return [*missing[:2], f"... {len(missing) - 2} more without a result"]


def find(results: Sequence[RunResult], k: int, mode: str) -> RunResult | None:
    return next((r for r in results if r.k == k and r.mode == mode and not r.takeover), None)


def reading(results: Sequence[RunResult]) -> list[str]:
    lines = []
    shared = [r for r in results if r.mode == "shared" and not r.takeover]
    if shared:
        met = all(r.jobs_requests <= r.listings and not r.close_listings for r in shared)
        lines.append(
            "- **Jobs requests per tick = pages of the listing (1 here), whatever the number "
            "of processes** (one listing of 1 page per leader tick, never two listings less "
            f"than half the budget floor ({BUDGET_FLOOR_SECONDS / 2:g} s) apart): "
            f"{'met' if met else 'NOT met'} ("
            + "; ".join(
                f"K={r.k}{label_of(r)}: {r.jobs_requests} jobs requests for {r.listings} "
                f"listings, median gap {fmt(r.median_listing_gap)} s, "
                f"min {fmt(r.min_listing_gap)} s, "
                f"{r.close_listings} closer than {BUDGET_FLOOR_SECONDS / 2:g} s; "
                f"{fmt(r.requests_per_tick_all_waiting)} per {TICK_SECONDS:g} s while all "
                f"waited, {fmt(r.requests_per_tick_span)} over the whole wait"
                for r in shared
            )
            + f"; per {TICK_SECONDS:g} s while all waited, "
            + per_other_mode(results, lambda r: fmt(r.requests_per_tick_all_waiting))
            + ")."
        )
        over = [r for r in shared if r.max_in_window > JOBS_RATE_LIMIT or r.violations]
        lines.append(
            f"- **The budget ({JOBS_RATE_LIMIT} per {JOBS_RATE_PERIOD_SECONDS:g} s) never "
            f"exceeded by default (`shared`, nothing configured)**: "
            f"{'met' if not over else 'NOT met'} ("
            + "; ".join(
                f"K={r.k}{label_of(r)}: at most {r.max_in_window} in a window, "
                f"{r.violations} violations"
                for r in shared
            )
            + "; "
            + per_other_mode(results, lambda r: f"{r.max_in_window} ({r.violations} violations)")
            + ")."
        )
        late = [
            r
            for r in shared
            if r.k >= 10 and not (r.latency_p95 <= 2 * TICK_SECONDS and r.right == r.k)
        ]
        lines.append(
            "- **Verdict p95 within 2 ticks of the job's end at K = 10 and K = 50 "
            f"(`shared`; tick {TICK_SECONDS:g} s)**: "
            + ("met" if not late and any(r.k >= 10 for r in shared) else "NOT met")
            + " ("
            + "; ".join(
                f"K={r.k}{label_of(r)}: p95 {fmt(r.latency_p95)} s = "
                f"{fmt(r.latency_p95 / TICK_SECONDS)} ticks, max {fmt(r.latency_max)} s, "
                f"{r.right}/{r.k} right"
                for r in shared
            )
            + ")."
        )
    wrong = [r for r in results if r.wrong or r.missing]
    lines.append(
        "- **Every verdict right**: "
        + (
            "yes, in every run"
            if not wrong
            else "NO: "
            + "; ".join(
                f"{r.mode} K={r.k}{label_of(r)}: " + "; ".join(r.wrong + shorten(r.missing))
                for r in wrong
            )
        )
        + "."
    )
    for r in results:
        if r.takeover:
            info = r.takeover_info
            lines.append(
                f"- **Take-over (K={r.k}, `shared`, the leader SIGKILLed)**: process "
                f"{info.get('killed_process')} was killed {fmt(info.get('killed_after_launch'), 1)}"
                f" s after the first launch; the last listing before it came "
                f"{fmt(-(info.get('last_listing_before_kill') or float('nan')))} s before the "
                f"kill, the next {fmt(info.get('first_listing_after_kill'))} s after it (the "
                f"account went unpolled for {fmt(info.get('silence'))} s); process "
                + (
                    f"{info['new_leader']} listed next, "
                    f"{fmt(info.get('new_leader_after_kill'))} s after the kill; "
                    if "new_leader" in info
                    else f"{info.get('listed_after_kill')} made the next listing; "
                )
                + f"{info.get('jobs_done_while_unpolled')} jobs completed while nobody polled; "
                f"{r.right}/{info.get('remaining')} remaining processes got the right verdict "
                f"(p50 / p95 / max {fmt(r.latency_p50)} / {fmt(r.latency_p95)} / "
                f"{fmt(r.latency_max)} s after their job's end); budget: at most "
                f"{r.max_in_window} in a window, {r.violations} violations."
            )
    return lines


def package_revision() -> tuple[str, str]:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=30
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--", ".", ":(exclude)benchmarks")
    subject = git("log", "-1", "--format=%s")[:80]
    return commit, (
        f"`{commit}` ({subject}); the working tree was "
        + ("clean outside `benchmarks/`" if not changed else f"NOT clean: `{changed}`")
    )


def per_other_mode(results: list[RunResult], show: Callable[[RunResult], str]) -> str:
    """One figure per K for each mode but `shared`: "`alone`: K=1: ...; `alone-gcl`: ..."."""
    return "; ".join(
        f"`{mode}`: "
        + "; ".join(f"K={r.k}{label_of(r)}: {show(r)}" for r in results if r.mode == mode)
        for mode in MODES
        if mode != "shared"
    )


def command_line(argv: Sequence[str]) -> str:
    env = ""
    if "BENCH_COMPRESSION" in os.environ:
        env = f"BENCH_COMPRESSION={shlex.quote(os.environ['BENCH_COMPRESSION'])} "
    args = "".join(" " + shlex.quote(arg) for arg in argv)
    return f"{env}.venv/bin/python benchmarks/bench_processes.py{args}"


def preamble(
    results: Sequence[RunResult], commands: Sequence[str], took: str, revision: str
) -> list[str]:
    """When and how the runs were made: the date, the package, the commands, the interpreter."""
    files = {f for r in results for f in r.package_files}
    here = bool(files) and all(Path(f).is_relative_to(ROOT) for f in files)
    outside = not Path(sys.executable).absolute().is_relative_to(ROOT)
    interpreter = []
    if outside:
        interpreter.append(
            "The interpreter was not this checkout's `.venv/bin/python` but that of a "
            f"virtualenv outside this checkout (Python {platform.python_version()})"
            + (", with `PYTHONPATH` set to this checkout" if os.environ.get("PYTHONPATH") else "")
            + "."
        )
    interpreter.append(
        "Every process checked that `prefect_stitch` was imported from this checkout's "
        "`prefect_stitch/`."
        if here
        else "**`prefect_stitch` was NOT imported from this checkout** in some processes."
    )
    return [
        f"Generated by `benchmarks/bench_processes.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} "
        f"UTC; {took}. Package measured: {revision}.",
        "",
        "```bash",
        *commands,
        "```",
        "",
        " ".join(interpreter),
    ]


def section(
    results: Sequence[RunResult], commands: Sequence[str], took: str, revision: str, args: Any
) -> list[str]:
    """The K-process runs' part of RESULTS.md's section (the outage runs have their own)."""
    return [
        "## K processes, one account: shared poll vs polling alone (`bench_processes.py`)",
        "",
        *preamble(results, commands, took, revision),
        "",
        f"Scenario ({COMPRESSION:g}x compression; at Stitch every duration is "
        f"{COMPRESSION:g} times longer):",
        "",
        f"- ONE simulated account (client {CLIENT_ID}, page size {PAGE_SIZE}, every source's "
        "previous job listed: 1 page), its sliding window of "
        f"{JOBS_RATE_LIMIT} jobs requests per {JOBS_RATE_PERIOD_SECONDS:g} s counted, not "
        "enforced; ONE real `prefect server` (SQLite) for every run; the simulator runs in "
        "the driver process, so each job's completion time is exact.",
        "- K processes (`python benchmarks/bench_processes.py --child`), each ONE "
        f'`stitch_sync_flow(source_id=..., loads="ignore", poll_interval_seconds='
        f"{POLL_INTERVAL_SECONDS:g})` of its own source, with the budget "
        f"`jobs_rate_limit={JOBS_RATE_LIMIT}`, `jobs_rate_period_seconds="
        f"{JOBS_RATE_PERIOD_SECONDS:g}` and `PREFECT_API_URL` set to the benchmark's server; "
        f"launched {args.stagger:g} s apart.",
        "- Every job runs until the driver ends it, a drawn "
        f"{JOB_END_RANGE[0]:g}-{JOB_END_RANGE[1]:g} s (uniform, seed {SEED}) after the last "
        "process triggered its job (so that all K wait at once); a job therefore lasts its "
        "draw plus the time from its trigger to the last one. If not all K have triggered "
        f"{args.trigger_deadline:g} s after the first launch, the jobs end their draw after "
        "that moment (or after their own trigger, if later). In the take-over run, each job "
        "ends its draw after the leader was killed.",
        f"- Modes: `shared`: the package as it is; `alone`: "
        "`PREFECT_STITCH_SHARED_POLLING=0`, no global limit; `alone-gcl`: "
        f"`PREFECT_STITCH_SHARED_POLLING=0` and the global concurrency limit `{GCL_NAME}` "
        "created before the run with `global_limit_settings("
        f"{JOBS_RATE_LIMIT}, {JOBS_RATE_PERIOD_SECONDS:g})` = limit "
        f"{max(JOBS_RATE_LIMIT // 2, 1)}, slot decay "
        f"{(JOBS_RATE_LIMIT - max(JOBS_RATE_LIMIT // 2, 1)) / JOBS_RATE_PERIOD_SECONDS:g}/s, "
        "deleted after it.",
        f"- A **tick** is {TICK_SECONDS:g} s: the poll interval ({POLL_INTERVAL_SECONDS:g} s), "
        f"since the budget's floor for a 1-page listing (1 x {JOBS_RATE_PERIOD_SECONDS:g} s "
        f"/ two thirds of {JOBS_RATE_LIMIT} = {BUDGET_FLOOR_SECONDS:g} s) is not higher.",
        f"- Each run is capped at {args.timeout:g} s from its first launch: processes still "
        "running then are killed and counted as without a result.",
        "",
        markdown(COLUMNS, main_rows(results)),
        "",
        "- **jobs reqs**: requests to the jobs endpoints the simulator received during the "
        "run (extraction pages, loads pages, log reads), from its request log.",
        "- **jobs reqs per tick, all K waiting**: jobs requests between the last trigger and "
        "the first job's end (every process waiting), per tick; in brackets, that window's "
        "length. **whole wait**: the same from the first trigger to the last result.",
        f"- **max in 60 s window**: `jobs_requests_in_window({JOBS_RATE_PERIOD_SECONDS:g})` "
        "of the simulator; **violations**: requests that arrived when the window already "
        f"held {JOBS_RATE_LIMIT}.",
        "- **right verdicts**: processes whose `stitch_sync_flow` returned `succeeded` with "
        "the job the simulator says that process's trigger started.",
        "- **verdict**: from the job's completion (the simulator's exact `completed_at`) to "
        "the `time.time()` the process printed when `stitch_sync_flow` returned (the flow "
        "run's end included); in brackets, in ticks.",
        "- **peak RSS**, **CPU s**: `getrusage(RUSAGE_SELF)` each process printed after its "
        "flow (`ru_maxrss`; `ru_utime + ru_stime`, interpreter start and imports included).",
        "- **wall s**: from the first launch to the last process's exit.",
        "",
        "Details:",
        "",
        markdown(DETAIL_COLUMNS, detail_rows(results)),
        "",
        "- **launch spread**: first to last process started by the driver; **boot spread**: "
        "first to last process's first line; **first / last trigger**: when the first and "
        "the last trigger reached the simulator, after the first launch.",
        "- **all K waiting at once**: every process had triggered before the first job "
        "ended; **most waits at once**: the most processes between their trigger and their "
        "result at the same moment.",
        "- **completion→listing**: from a job's completion to the next extraction listing "
        "(page 1) the simulator received; **listing→result**: from that listing to the "
        "process's result (the leader's publication, the follower's read and verdict, the "
        "flow run's end).",
        "- **processes that led**: processes that printed that they held the account's "
        "leader slot (a thread in each process reads "
        "`pollers_of(credentials)[0]._sharing.leading` every 0.1 s); **most at once**: the "
        "most that said so at the same moment; **hand-offs**: spells of leadership after "
        "the first. **listings received**: listings the followers took from the leader's "
        "publications (`AccountPoller.received`, summed).",
        "- **CPU s all processes**: the K processes together; **Prefect server CPU s**: the "
        "`prefect server` process group during the run; **driver CPU s**: this process, "
        "which runs the simulator.",
        "- **warnings in the logs**: "
        + ", ".join(f"`{p}`" for p in WARNING_PATTERNS.values())
        + " counted in the processes' output.",
        "",
        *(
            ["Log excerpts:", "", *[f"- `{e}`" for r in results for e in r.excerpts], ""]
            if any(r.excerpts for r in results)
            else []
        ),
        "Against the targets:",
        "",
        *reading(results),
    ]


OUTAGE_COLUMNS = (
    "K",
    "outage asked s",
    "server killed s after the first launch",
    "API back s after the kill (restart s)",
    "jobs reqs (extractions/loads/logs)",
    "listings while down",
    "max in 60 s window (budget 30)",
    "violations",
    "right verdicts",
    "jobs ended while down (seen p50 / p95 s after their end)",
    "poll verdict p50 / p95 / max s (ticks)",
    "flow result p50 / p95 / max s (ticks)",
    "warnings in the logs",
    "notes",
)


def outage_row(r: RunResult) -> list[str]:
    """An outage run's row: the budget through the outage, and the verdicts after it."""
    info = r.outage_info
    poll = [info.get(f"poll_{x}", float("nan")) for x in ("p50", "p95", "max")]
    flow = [info.get(f"flow_{x}", float("nan")) for x in ("p50", "p95", "max")]
    return [
        str(r.k),
        fmt(r.outage, 0),
        fmt(info.get("killed_after_launch"), 1),
        f"{fmt(info.get('back_after_kill'), 1)} ({fmt(info.get('restart_seconds'), 1)})",
        f"{r.jobs_requests} ({r.extraction_requests}/{r.loads_requests}/{r.logs_requests})",
        str(info.get("listings_while_down", "n/a")),
        str(r.max_in_window),
        str(r.violations),
        f"{r.right}/{r.k}",
        f"{info.get('ended_while_down', 'n/a')} ({fmt(info.get('alone_p50'))} / "
        f"{fmt(info.get('alone_p95'))})",
        " / ".join(ticks(v) for v in poll),
        " / ".join(ticks(v) for v in flow),
        ", ".join(f"{w}: {n}" for w, n in sorted(r.warnings.items())) or "none",
        "; ".join(n for n in [*r.notes, *r.wrong, *shorten(r.missing), info.get("error")] if n),
    ]


def outage_reading(results: Sequence[RunResult]) -> list[str]:
    """Each outage run against the issue's goal."""
    lines = []
    for r in results:
        info = r.outage_info
        held = r.max_in_window <= JOBS_RATE_LIMIT and not r.violations
        bound = 3 * TICK_SECONDS
        in_time = info.get("poll_max", math.inf) <= bound
        lines.append(
            f"- **Outage of {fmt(r.outage, 0)} s (K={r.k}{label_of(r)})**: the budget "
            f"{'held' if held else 'was NOT held'} in every window (at most {r.max_in_window} "
            f"in {JOBS_RATE_PERIOD_SECONDS:g} s, {r.violations} violations; "
            f"{info.get('listings_while_down', 'n/a')} listings while the API was down); "
            f"{r.right}/{r.k} right verdicts, "
            + (
                "one result per process"
                if info.get("results_each") == [1]
                else f"results per process: {info.get('results_each')}"
            )
            + "; the poll's verdicts "
            f"{'within' if in_time else 'NOT all within'} {bound:g} s (3 ticks) of their job's "
            "end or the API's return, whichever is later (p50 / p95 / max "
            f"{fmt(info.get('poll_p50'))} / {fmt(info.get('poll_p95'))} / "
            f"{fmt(info.get('poll_max'))} s); the flows' results (their task and flow states "
            f"reported to the API first) p50 / p95 / max {fmt(info.get('flow_p50'))} / "
            f"{fmt(info.get('flow_p95'))} / {fmt(info.get('flow_max'))} s after it."
        )
    return lines


def outage_section(
    results: Sequence[RunResult], commands: Sequence[str], took: str, revision: str
) -> list[str]:
    """The outage runs' part of RESULTS.md's section."""
    low, high = OUTAGE_JOB_RANGE
    return [
        "### The Prefect API down while K processes wait (`--outage`)",
        "",
        *preamble(results, commands, took, revision),
        "",
        f"Scenario: as above ({COMPRESSION:g}x compression, one account, one real `prefect "
        f"server`), K = {OUTAGE_K} processes `shared`, each job ending a drawn "
        f"{low:g}-{high:g} s (uniform, seed {SEED}) after its own trigger. The server is "
        f"killed (SIGKILL, its process group) {OUTAGE_AFTER_SECONDS:g} s after the first "
        "launch (once every process has triggered its job), and started again on the same "
        "port and database the outage's seconds later; the API is back when it answers "
        "`/api/health`.",
        "",
        markdown(OUTAGE_COLUMNS, [outage_row(r) for r in results]),
        "",
        "- **poll verdict**: from the later of the job's completion (the simulator's exact "
        "`completed_at`) and the API's return to the moment the process's waiters first got "
        "a listing that shows the job ended (its poller's delivery, printed as `SEEN`); in "
        f"brackets, in ticks of {TICK_SECONDS:g} s; below 0 when it came before the API "
        "did (read alone). **flow result**: the same to the "
        "`time.time()` the process printed when `stitch_sync_flow` returned (its task and "
        "flow states reported to the API, with the Prefect client's own retries).",
        "- **listings while down**: extraction listings (page 1) between the kill and the "
        "API's return; **jobs ended while down**: and how long after its end each process's "
        "waiters got the listing that shows it (read alone, at its share); **max in 60 s "
        "window**, **violations**, **right verdicts** and **warnings**: as above.",
        "",
        *outage_reading(results),
    ]


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return base.markdown_table(header, [[c.replace("|", "\\|") for c in row] for row in rows])


def write_section(runs: Sequence[str] | None, outage: Sequence[str] | None) -> None:
    """Replace this benchmark's section of RESULTS.md: the part of each kind of run made.

    The K-process runs' part, and the outage runs' part (between markers of its own, at
    the section's end): a run of one kind leaves the other's figures as they were.
    """
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if SECTION_START in text and SECTION_END in text:
        head, _, rest = text.partition(SECTION_START)
        inner, _, tail = rest.partition(SECTION_END)
    else:
        head, inner, tail = text.rstrip("\n") + "\n\n", "", "\n"
    kept_runs, _, rest = inner.partition(OUTAGE_START)
    kept_outage = rest.partition(OUTAGE_END)[0]
    parts = [SECTION_START, "\n".join(runs) if runs is not None else kept_runs.strip("\n")]
    outage_text = "\n".join(outage) if outage is not None else kept_outage.strip("\n")
    if outage_text:
        parts += ["", OUTAGE_START, outage_text, OUTAGE_END]
    RESULTS.write_text(head + "\n".join([*parts, SECTION_END]) + tail)


def rebuild(directories: Sequence[Path]) -> list[RunResult]:
    """The results of the runs kept in these log directories (``run-*.json``), in run order.

    Runs of the second directory and later are labelled "repeat A", "repeat B"...
    """
    names = {f.name for f in field_list(RunResult)}
    results = []
    for number, directory in enumerate(directories):
        for path in sorted(directory.glob("run-*.json"), key=lambda p: p.stat().st_mtime):
            data = json.loads(path.read_text())
            result = RunResult(**{k: v for k, v in data["result"].items() if k in names})
            if number:
                result.label = f"repeat {chr(ord('A') + number - 1)}"
            info = result.takeover_info
            if result.takeover and info and "new_leader" not in info:
                victim = info.get("killed_process")
                info["listed_after_kill"] = [
                    c["index"]
                    for c in data["children"]
                    if c["index"] != victim and (c.get("EXIT") or [{}])[0].get("poller_ticks")
                ]
            results.append(result)
    return results


def report(
    results: Sequence[RunResult], commands: Sequence[str], took: str, revision: str, args: Any
) -> None:
    """Print the tables and readings; write RESULTS.md's parts of the kinds of run made."""
    runs = [r for r in results if r.outage is None]
    outages = [r for r in results if r.outage is not None]
    if runs:
        print(base.text_table(COLUMNS, main_rows(runs)))
        print()
        print(base.text_table(DETAIL_COLUMNS, detail_rows(runs)))
        print()
        print("\n".join(reading(runs)))
    if outages:
        print()
        print(base.text_table(OUTAGE_COLUMNS, [outage_row(r) for r in outages]))
        print()
        print("\n".join(outage_reading(outages)))
    if not args.no_write:
        write_section(
            section(runs, commands, took, revision, args) if runs else None,
            outage_section(outages, commands, took, revision) if outages else None,
        )
        print(f"Wrote {RESULTS}")


def driver_main(args: argparse.Namespace) -> int:
    if args.report_from:
        _, revision = package_revision()
        took = "rebuilt with `--report-from` from the kept logs of the runs of the commands below"
        report(rebuild(args.report_from), args.report_command or [], took, revision, args)
        return 0
    began = time.monotonic()
    _, revision = package_revision()
    home = Path(tempfile.mkdtemp(prefix="bench-processes-"))
    os.environ.setdefault("PREFECT_HOME", str(home / "driver"))  # the simulator imports prefect
    results: list[RunResult] = []
    plan: list[tuple[int, str, bool, float | None]] = [
        (k, m, False, None) for k in args.ks for m in args.modes
    ]
    if not args.no_takeover:
        plan.append((TAKEOVER_K, "shared", True, None))
    plan += [(OUTAGE_K, "shared", False, seconds) for seconds in args.outage or []]
    try:
        with base.prefect_server(home) as server:
            for k, mode, takeover, outage in plan:
                result = run_one(k, mode, server, home, args, takeover, outage)
                results.append(result)
                print(json.dumps(asdict(result), default=str), flush=True)
    finally:
        if args.keep_logs:
            print(f"logs kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    total = time.monotonic() - began
    print(f"\nWhole benchmark: {total:.0f} s")
    _, revision_after = package_revision()
    if revision_after != revision:
        revision = f"{revision} at the start, {revision_after} at the end"
    took = f"the whole benchmark took {total:.0f} s"
    report(results, [command_line(args.argv)], took, revision, args)
    return 0 if all(not r.wrong and not r.missing for r in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--ks", type=int, nargs="*", default=list(DEFAULT_KS), help="numbers of processes"
    )
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--no-takeover", action="store_true", help="skip the take-over run")
    parser.add_argument(
        "--outage",
        type=float,
        nargs="+",
        metavar="SECONDS",
        help=f"an outage run per value: K={OUTAGE_K} shared, the Prefect server down so long",
    )
    parser.add_argument(
        "--stagger", type=float, default=0.2, help="seconds between two process launches"
    )
    parser.add_argument(
        "--trigger-deadline",
        type=float,
        default=240.0,
        help="seconds after the first launch after which jobs end even if not all triggered",
    )
    parser.add_argument("--timeout", type=float, default=420.0, help="cap of a run, seconds")
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=30.0,
        help="shared: no listing for this long while processes wait: dump their stacks",
    )
    parser.add_argument(
        "--report-from",
        type=Path,
        nargs="+",
        help="rebuild the report from the run-*.json files of kept log directories",
    )
    parser.add_argument("--report-command", nargs="+", help="with --report-from: the commands")
    parser.add_argument("--no-write", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary logs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--source-id", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.child:
        return child_main(args)
    return driver_main(args)


if __name__ == "__main__":
    sys.exit(main())
