"""The fault matrix, end to end: the Prefect API down while syncs wait, then back.

A real `prefect server` (its own PREFECT_HOME, a free port) and real processes, each running
`stitch_sync_flow` on its own source of one simulated account. While their jobs run, the
server is killed (SIGKILL: leases, kept in the server's memory, die with it; the database
still counts the leader's slot taken) and started again a while later on the same port and
database. What the processes must do (see `prefect_stitch._poll.isolation`): keep reading
Stitch within the account's budget while the API is down, each at its share; get every
verdict right, once, within three ticks of the job's end or of the API's return (whichever
is later); take up the shared poll again when the API is back.

Everything this test starts (server, processes) it stops by process id.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_stitch._poll.schedule import isolated_after
from prefect_stitch.simulator import Outcome, StitchSimulator

pytestmark = pytest.mark.deployment

ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))
TICK = 2.0
"""The processes' poll interval (the budget's floor is lower: a listing every 2/3 s)."""
LIMIT, PERIOD = 30, 20.0
"""The account's jobs budget: Stitch's 30 requests per 10 minutes, 30 times faster."""
SOURCES = (1, 2, 3, 4)
REPORT_SECONDS = 3.0
"""The flow's own reports once it has its verdict (task and flow states to the API)."""
DOWN_SECONDS = isolated_after(TICK) + 10.0
"""How long the server stays down: the processes poll alone for a while."""

CHILD = """
import json, sys, time
from prefect_stitch import StitchCredentials, stitch_sync_flow
from prefect_stitch._poll.poller import AccountPoller

source_id, base_url = int(sys.argv[1]), sys.argv[2]
deliver = AccountPoller._deliver


def seen(self, snapshot):  # when this process's waiters got a listing that shows a job ended
    for record in snapshot.records:
        if record.source_id == source_id and record.completion_time is not None:
            print("SEEN " + json.dumps([time.time(), record.job_name]), flush=True)
    deliver(self, snapshot)


AccountPoller._deliver = seen
credentials = StitchCredentials(access_token="sim-token", client_id=116078, base_url=base_url,
                                jobs_rate_limit={limit}, jobs_rate_period_seconds={period})
result = stitch_sync_flow(source_id=source_id, credentials=credentials,
                          poll_interval_seconds={tick}, loads="ignore", max_wait_seconds=600)
print("RESULT " + json.dumps([time.time(), result.status, result.job_name]), flush=True)
"""


class Server:
    """A `prefect server` that can be killed and started again on its port and database."""

    def __init__(self, home: Path) -> None:
        self.home = home
        with socket.create_server(("127.0.0.1", 0)) as listener:  # a port nobody uses now
            self.port = int(listener.getsockname()[1])
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        environment = {key: value for key, value in os.environ.items() if key != "PREFECT_PROFILE"}
        self.env = environment | {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 180.0) -> float:
        """Start it; when it answered (``time.time()``)."""
        self.starts += 1
        with (self.home / f"server-{self.starts}.log").open("wb") as log:  # the child's copy
            self.process = subprocess.Popen(
                [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return time.time()
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the server did not answer in {timeout:.0f} s\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL its process group: no goodbye (its leases die with it)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def log(self) -> str:
        """The end of its log (this start's)."""
        path = self.home / f"server-{self.starts}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "prefect-home")
    server.home.mkdir()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def child(tmp_path: Path, server: Server) -> Iterator[Callable[[int, str], subprocess.Popen[str]]]:
    """Start ``stitch_sync_flow`` for one source in a process of its own."""
    script = tmp_path / "sync_child.py"
    script.write_text(CHILD.format(limit=LIMIT, period=PERIOD, tick=TICK))
    started: list[subprocess.Popen[str]] = []

    def start(source_id: int, base_url: str) -> subprocess.Popen[str]:
        env = {**server.env, "PREFECT_HOME": str(tmp_path / f"client-{source_id}")}
        env["PREFECT_CLIENT_MAX_RETRIES"] = "8"  # the flow's own calls outlast the outage
        process = subprocess.Popen(
            [sys.executable, str(script), str(source_id), base_url],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            start_new_session=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def lines_of(output: str, kind: str) -> list[list[Any]]:
    """The values a child printed on its lines of this kind (``RESULT``, ``SEEN``)."""
    prefix = f"{kind} "
    lines = output.splitlines()
    return [json.loads(line[len(prefix) :]) for line in lines if line.startswith(prefix)]


def completed_at(sim: StitchSimulator) -> dict[str, float]:
    """When each job the processes triggered completed, exactly (the simulator's clock)."""
    with sim._account.settled() as account:  # the exact float, not Stitch's whole seconds
        return {
            job.job_name: job.completed_at
            for job in account.book.of_source(None)
            if job.triggered_via == "api" and job.completed_at is not None
        }


def test_the_prefect_api_down_and_restarted_while_syncs_wait(
    server: Server,
    child: Callable[[int, str], subprocess.Popen[str]],
    stitch_simulator_factory: Callable[..., StitchSimulator],
) -> None:
    """Four syncs wait; the server is killed; two jobs end while it is down (the processes
    read Stitch alone by then), one as it starts again, one after it answers.

    Every verdict is right and reported once; each came within three ticks of its job's end
    or of the API's return, whichever is later (when the waiter got the listing that shows
    it: the flow's own calls to the API, retried with Prefect's backoff, are not the poll's);
    the flow's result came at most a few seconds after that; the budget held in every
    window; someone read Stitch while the API was down; and after the return one process
    reads Stitch again (no two listings within half a tick).
    """
    sim = stitch_simulator_factory(jobs_rate_limit=LIMIT, jobs_rate_period_seconds=PERIOD)
    sim.add_sources(SOURCES, outcomes=[Outcome.success(duration_seconds=None)])
    server.start()
    processes = {source_id: child(source_id, sim.base_url) for source_id in SOURCES}
    deadline = time.monotonic() + 120
    while not all(sim.jobs_started(s) for s in SOURCES):
        assert time.monotonic() < deadline, "not every process triggered its job"
        assert all(p.poll() is None for p in processes.values())
        time.sleep(0.2)
    time.sleep(3 * TICK)  # one leads, the others follow

    server.kill()
    killed = time.time()
    time.sleep(isolated_after(TICK) + 2.0)  # they poll alone by now
    sim.finish_job(1)
    time.sleep(TICK + 1.0)
    sim.finish_job(2)  # read alone, reported once the API is back
    time.sleep(max(killed + DOWN_SECONDS - time.time(), 0.0))
    sim.finish_job(3)  # as the server starts: the API still down
    back = server.start()
    time.sleep(2 * TICK)
    sim.finish_job(4)  # after the return: the shared poll again

    outputs = {}
    for source_id, process in processes.items():
        output, _ = process.communicate(timeout=120)
        outputs[source_id] = output
    ended = completed_at(sim)
    late = []
    for source_id, output in outputs.items():
        [job] = sim.jobs_started(source_id)
        results = lines_of(output, "RESULT")
        assert [r[1:] for r in results] == [["succeeded", job]], output[-3000:]
        first_seen = min(t for t, name in lines_of(output, "SEEN") if name == job)
        due = max(ended[job], back)
        if first_seen - due > 3 * TICK:
            late.append(f"source {source_id}: {first_seen - due:.1f} s after {due - killed:.1f}")
        # The flow's result too: a verdict seen while the API was down is held until it
        # answers, then reported at once (not at the next step of Prefect's client backoff).
        reported = results[0][0] - due
        if reported > 3 * TICK + REPORT_SECONDS:
            late.append(f"source {source_id}: its result {reported:.1f} s after {due - killed:.1f}")
    assert not late, late
    assert sim.jobs_requests_in_window(PERIOD) <= LIMIT
    assert sim.rate_limit_violations == 0
    listings = [r.wall for r in sim.requests_for("extractions")]
    while_down = [t for t in listings if killed < t < back]
    assert len(while_down) >= 3, "nobody read Stitch while the API was down"
    after = [t for t in listings if t > back + TICK]
    assert all(b - a >= TICK / 2 for a, b in itertools.pairwise(after)), "two read it at once"
