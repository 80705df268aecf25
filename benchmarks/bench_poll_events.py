"""Benchmark: the events the shared poll writes into Prefect's Event Feed, at K processes.

Not a test: it measures. For K = 1, 10, 50 it starts K processes that share the poll of
ONE simulated Stitch account, each keeping ONE watch open
(``poller_for(credentials, client_id).watch(poll_interval_seconds=3)``, the way a waiting
``stitch_sync_flow`` does, without a flow run: no flow run events) for a fixed window
(180 s by default, ``--seconds``), then reads back EVERY event the Prefect server stored
during the run (``POST /events/filter``, then each ``next_page``) and prints, per event
type: how many, which part of the shared poll caused it (the listing marker, the
followers' demands, the leader's slot, an artifact, or nothing of ours), whether the
event is tagged as ours, and how many per hour that makes at this K.

A **process** is an OS process (``--child``): one Python interpreter, one poller, one
member of the shared poll (about 100 MB RSS each; 50 fit on the benchmark's machine).

**Time.** The poll interval and Stitch's budget are compressed 10x
(``BENCH_COMPRESSION``), as in ``bench_processes.py``: a 3 s poll interval (30 s at
Stitch) and 30 jobs requests per 60 s (per 600 s), so a tick is 3 s. The protocol's own
timers are not compressed (a follower's heartbeat every 10 s, the leader's lease renewed
every 15 s): they are the same at Stitch's pace. So the events per hour are given twice:
at this run's pace (extrapolated from the window), and at Stitch's pace, where what a
listing causes (the marker's writes) is divided by the compression and what a heartbeat
or a lease causes is not.

**Listings** are the extraction listings the simulator served during the window (one
page each: 20 sources), i.e. the leader's ticks.

Usage (from the project root)::

    .venv/bin/python benchmarks/bench_poll_events.py                 # K = 1, 10, 50; prints
    .venv/bin/python benchmarks/bench_poll_events.py --write         # and into RESULTS.md
    .venv/bin/python benchmarks/bench_poll_events.py --ks 1 10 --seconds 60

``--write`` replaces this benchmark's own section of ``benchmarks/RESULTS.md`` (between
its two HTML comment markers; appended when absent), keeping the table of the run before
(the previous section's) under it, so that a change's before and after stand together.

Architecture: the driver (this process, no Prefect import) starts ONE real
``prefect server`` (temporary PREFECT_HOME, as ``bench_sync_many.py`` does) for all
runs, and one simulator process per run (a new port: a new account key, so runs never
share a marker); each child prints ``BENCH READY`` once it joined the poll and
``BENCH DONE`` with its poller's counters after the driver told it to stop (a file).
"""

import argparse
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench_sync_many as base  # its helpers only (this directory is on sys.path)

RESULTS = base.HERE / "RESULTS.md"
SECTION_START = "<!-- bench_poll_events: start (generated; replaced by each run) -->"
SECTION_END = "<!-- bench_poll_events: end -->"
BEFORE_START = "<!-- bench_poll_events: the run before -->"

COMPRESSION = float(os.environ.get("BENCH_COMPRESSION", "10"))
"""The poll interval and the budget are Stitch's divided by this (default 10)."""
POLL_INTERVAL_SECONDS = 30.0 / COMPRESSION
JOBS_RATE_LIMIT = 30
JOBS_RATE_PERIOD_SECONDS = 600.0 / COMPRESSION
CLIENT_ID = 116078
TOKEN = "sim-token"  # the simulator's well-known test token, not a secret
SOURCES = 20
FIRST_SOURCE_ID = 400_001
DEFAULT_KS = (1, 10, 50)
DEFAULT_SECONDS = 180.0
LAUNCH_GAP_SECONDS = 0.2
SETTLE_SECONDS = 15.0
"""After the last process joined: the election and the first demands, before the window."""
PERSIST_SECONDS = 12.0
"""After the run: the server's event persister writes its batches (every few seconds)."""
MARK = "BENCH "
ROLES = {
    "stitch-listing-": "listing marker",
    "stitch-demand-": "demands",
    "stitch-poll-": "leader slot",
}
PER_LISTING_ROLES = {"listing marker", "listing document"}
"""What listings cause (the marker once per listing, the document every few): compressed."""


# -- child mode: one process, one watch ---------------------------------------------------


def emit(kind: str, payload: dict[str, Any]) -> None:
    print(f"{MARK}{kind} {json.dumps(payload)}", flush=True)


def child_main(args: argparse.Namespace) -> int:
    import asyncio

    import prefect_stitch
    from prefect_stitch import StitchCredentials
    from prefect_stitch._poll import poller_for

    credentials = StitchCredentials(
        access_token=TOKEN,
        client_id=CLIENT_ID,
        base_url=args.base_url,
        jobs_rate_limit=JOBS_RATE_LIMIT,
        jobs_rate_period_seconds=JOBS_RATE_PERIOD_SECONDS,
    )
    stop_file = Path(args.stop_file)
    package = str(Path(prefect_stitch.__file__).resolve().parent)

    async def watch_until_told() -> dict[str, Any]:
        poller = poller_for(credentials, CLIENT_ID)
        watch = poller.watch(poll_interval_seconds=POLL_INTERVAL_SECONDS)
        emit("READY", {"t": time.time(), "package": package})
        try:
            while not await asyncio.to_thread(stop_file.exists):
                with contextlib.suppress(TimeoutError):
                    await watch.next_snapshot(1.0)
        finally:
            watch.close()
        return {"t": time.time(), "ticks": poller.ticks}

    emit("DONE", asyncio.run(watch_until_told()))
    return 0  # at exit, the idle poller hands the account over (or withdraws its demand)


# -- driver ---------------------------------------------------------------------------------


@dataclass
class EventRow:
    """The events of one type and one part of the poll, in one run."""

    event: str
    role: str
    tagged: bool
    total: int = 0
    in_window: int = 0


@dataclass
class RunFigures:
    """What one run at K processes measured."""

    k: int
    window_seconds: float = 0.0
    listings: int = 0
    rows: list[EventRow] = field(default_factory=list)
    ready: int = 0
    packages: set[str] = field(default_factory=set)
    """Where the processes imported ``prefect_stitch`` from."""
    notes: list[str] = field(default_factory=list)

    def per_hour(self, row: EventRow, stitch_pace: bool) -> float:
        """The row's events per hour, from the window."""
        rate = row.in_window * 3600.0 / self.window_seconds if self.window_seconds else 0.0
        if stitch_pace and row.role in PER_LISTING_ROLES:
            rate /= COMPRESSION
        return rate

    def of_the_poll(self) -> list[EventRow]:
        return [row for row in self.rows if row.role != "not the poll"]


def role_of(event: dict[str, Any], account: str) -> str:
    """Which part of the shared poll an event is about (its resource's name says)."""
    resource = event.get("resource") or {}
    name = str(resource.get("prefect.resource.name", ""))
    if account in name:
        for prefix, role in ROLES.items():
            if name.startswith(prefix):
                return role
    if str(resource.get("prefect.resource.id", "")).startswith("prefect.artifact"):
        # The Prefect client's own artifact events name no artifact: their type says.
        kind = str((event.get("payload") or {}).get("type", ""))
        if kind == "stitch-listing" or kind.startswith("stitch-poll-listing-"):
            return "listing document"
        return "listing marker" if kind.startswith("stitch-poll-marker-") else "artifact"
    return "ours (tagged)" if is_tagged(event, account) else "not the poll"


def is_tagged(event: dict[str, Any], account: str) -> bool:
    """Whether an event says it is prefect-stitch's, of this account (a related resource)."""
    related = event.get("related") or []
    ids = {str(r.get("prefect.resource.id", "")) for r in related}
    return "prefect.tag.prefect-stitch" in ids and any(account in i for i in ids)


def read_events(server: base.PrefectServer, since: datetime) -> list[dict[str, Any]]:
    """Every event the server stored since then, every page."""
    page = base.http_json(
        "POST",
        f"{server.api_url}/events/filter",
        {"filter": {"occurred": {"since": since.isoformat()}, "order": "ASC"}, "limit": 50},
    )
    events = list(page["events"])
    while page.get("next_page"):
        page = base.http_json("GET", page["next_page"])
        events.extend(page["events"])
    return events


def count_events(
    events: list[dict[str, Any]], account: str, window: tuple[float, float]
) -> list[EventRow]:
    """Events by (type, role, tagged): in all, and within the window."""
    rows: dict[tuple[str, str, bool], EventRow] = {}
    for event in events:
        role = role_of(event, account)
        key = (event["event"], role, is_tagged(event, account))
        row = rows.setdefault(key, EventRow(*key))
        row.total += 1
        occurred = datetime.fromisoformat(event["occurred"].replace("Z", "+00:00")).timestamp()
        if window[0] <= occurred < window[1]:
            row.in_window += 1
    return sorted(rows.values(), key=lambda r: (r.role == "not the poll", -r.total, r.event))


def child_lines(process: base.Process) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    if process.log.exists():
        for line in process.log.read_text(errors="replace").splitlines():
            if line.startswith(MARK):
                kind, _, payload = line[len(MARK) :].partition(" ")
                with contextlib.suppress(ValueError):
                    found.setdefault(kind, []).append(json.loads(payload))
    return found


def start_simulator(home: Path, k: int) -> base.Simulator:
    """A simulated account of ``SOURCES`` sources, each with its last job listed (1 page)."""
    sim = base.Simulator(home, f"k{k}")
    for source_id in range(FIRST_SOURCE_ID, FIRST_SOURCE_ID + SOURCES):
        sim.control("POST", "sources", {"source_id": source_id})
        sim.control("POST", "seed_completed", {"source_id": source_id})
    return sim


def launch(k: int, sim: base.Simulator, server: base.PrefectServer, home: Path) -> list[Any]:
    """Start K children, a little apart; they watch until the stop file appears."""
    env = {
        **os.environ,
        "PREFECT_API_URL": server.api_url,
        "PREFECT_HOME": str(home / "client"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_STITCH_SHARED_POLLING", None)
    stop_file = home / f"stop-k{k}"
    children = []
    for index in range(k):
        argv = [sys.executable, str(Path(__file__).resolve()), "--child"]
        argv += ["--base-url", sim.base_url, "--stop-file", str(stop_file)]
        children.append(base.Process(argv, env, home / f"child-k{k}-{index}.log"))
        time.sleep(LAUNCH_GAP_SECONDS)
    return children


def run_one(k: int, seconds: float, server: base.PrefectServer, home: Path) -> RunFigures:
    figures = RunFigures(k)
    started = datetime.now(UTC)
    sim = start_simulator(home, k)
    account = f"{CLIENT_ID}-{hashlib.sha256(sim.base_url.encode()).hexdigest()[:8]}"
    children = []
    try:
        children = launch(k, sim, server, home)
        base.wait_until(
            lambda: all("READY" in child_lines(c) for c in children), 300, f"{k} watches"
        )
        time.sleep(SETTLE_SECONDS)
        window = (time.time(), time.time() + seconds)
        time.sleep(seconds)
        (home / f"stop-k{k}").touch()
        for child in children:
            if child.reap(60) is None:
                figures.notes.append(f"a process did not exit: {child.tail(300)!r}")
                child.stop()
        listed = [
            r
            for r in sim.control("GET", "requests")
            if r["endpoint"] == "extractions" and window[0] <= r["wall"] < window[1]
        ]
    finally:
        for child in children:
            child.stop()
        sim.stop()
    figures.ready = sum("DONE" in child_lines(c) for c in children)
    figures.packages = {
        ready["package"] for c in children for ready in child_lines(c).get("READY", [])
    }
    figures.window_seconds = window[1] - window[0]
    figures.listings = len(listed)  # one page each
    time.sleep(PERSIST_SECONDS)
    figures.rows = count_events(read_events(server, started), account, window)
    return figures


# -- output ---------------------------------------------------------------------------------

COLUMNS = (
    "K",
    "event",
    "caused by",
    "tagged",
    "whole run",
    "in the window",
    "per hour (3 s ticks)",
    "per hour (Stitch's pace)",
)


def table_rows(results: Sequence[RunFigures]) -> list[list[str]]:
    rows = []
    for r in results:
        ours = r.of_the_poll()
        for row in ours:
            rows.append(
                [
                    str(r.k),
                    f"`{row.event}`",
                    row.role,
                    "yes" if row.tagged else "no",
                    str(row.total),
                    str(row.in_window),
                    f"{r.per_hour(row, False):.0f}",
                    f"{r.per_hour(row, True):.0f}",
                ]
            )
        in_window = sum(row.in_window for row in ours)
        per_hour = sum(r.per_hour(row, False) for row in ours)
        stitch = sum(r.per_hour(row, True) for row in ours)
        per_listing = f"{in_window / r.listings:.2f}" if r.listings else "n/a"
        rows.append(
            [
                str(r.k),
                f"**all of the poll** ({r.listings} listings in {r.window_seconds:.0f} s; "
                f"{per_listing} events per listing)",
                "",
                "",
                str(sum(row.total for row in ours)),
                str(in_window),
                f"{per_hour:.0f}",
                f"{stitch:.0f}",
            ]
        )
    return rows


def others_line(results: Sequence[RunFigures]) -> str:
    counts = Counter()
    for r in results:
        for row in r.rows:
            if row.role == "not the poll":
                counts[row.event] += row.total
    listed = ", ".join(f"`{event}` {n}" for event, n in sorted(counts.items()))
    return listed or "none"


def imported_from(results: Sequence[RunFigures]) -> str:
    """Where the processes imported ``prefect_stitch`` from, without absolute paths."""
    packages = {package for r in results for package in r.packages}
    here = str(base.ROOT / "prefect_stitch")
    if packages <= {here}:
        return "this checkout's `prefect_stitch/`"
    return "a copy outside this checkout (`PYTHONPATH`), not this checkout's `prefect_stitch/`"


def ran_to_the_end(results: Sequence[RunFigures]) -> str:
    return ", ".join(f"K={r.k}: {r.ready}/{r.k}" for r in results)


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def section(
    results: Sequence[RunFigures], args: argparse.Namespace, argv: Sequence[str], took: float
) -> str:
    command = "".join(" " + shlex.quote(arg) for arg in argv)
    env = f"BENCH_COMPRESSION={COMPRESSION:g} " if "BENCH_COMPRESSION" in os.environ else ""
    notes = [f"- K={r.k}: {note}" for r in results for note in r.notes]
    measured = f" ({args.package_note})" if args.package_note else ""
    text = [
        SECTION_START,
        "## The shared poll's events in the Event Feed (`bench_poll_events.py`)",
        "",
        f"Generated on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {took:.0f} s. Checkout: "
        f"{base.package_revision()}; the processes imported {imported_from(results)}"
        f"{measured}.",
        "",
        "```bash",
        f"{env}.venv/bin/python benchmarks/bench_poll_events.py{command}",
        "```",
        "",
        f"K processes (OS processes, one watch each, poll interval {POLL_INTERVAL_SECONDS:g} "
        f"s: a tick of {POLL_INTERVAL_SECONDS:g} s) share the poll of one simulated account "
        f"({SOURCES} sources, 1 page) through one `prefect server` (SQLite). The window "
        "starts once every process joined and the poll settled; the events are read back "
        "from the server (`/events/filter`, every page). Per hour at Stitch's pace: what a "
        f"listing causes (the marker) divided by {COMPRESSION:g}, the rest (heartbeats, "
        "leases: timers not compressed) as measured.",
        "",
        markdown_table(table_rows(results)),
        "",
        f"- Processes that ran to the end: {ran_to_the_end(results)}.",
        f"- Events that were not the shared poll's (whole runs): {others_line(results)}.",
        *notes,
    ]
    before = previous_table(RESULTS.read_text() if RESULTS.exists() else "")
    if before:
        text += ["", BEFORE_START, before.strip()]
    return "\n".join([*text, SECTION_END])


def previous_table(current: str) -> str:
    """The table (and its heading lines) of the section now in RESULTS.md, for "before"."""
    if SECTION_START not in current:
        return ""
    old = current.split(SECTION_START, 1)[1].split(SECTION_END, 1)[0]
    old = old.split(BEFORE_START, 1)[0]
    generated = re.search(r"Generated on .*?\.\n", old, flags=re.S)
    table = "\n".join(line for line in old.splitlines() if line.startswith("|"))
    heading = "### The run before"
    return f"{heading}\n\n{generated.group(0).strip() if generated else ''}\n\n{table}\n"


def write_results(
    results: Sequence[RunFigures], args: argparse.Namespace, argv: Sequence[str], took: float
) -> None:
    text = section(results, args, argv, took)
    current = RESULTS.read_text() if RESULTS.exists() else ""  # read just before writing
    if SECTION_START in current and SECTION_END in current:
        head, rest = current.split(SECTION_START, 1)
        tail = rest.split(SECTION_END, 1)[1]
        RESULTS.write_text(head + text + tail)
    else:
        RESULTS.write_text(current.rstrip("\n") + "\n\n" + text + "\n")


def driver_main(args: argparse.Namespace, argv: Sequence[str]) -> int:
    started = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="bench-poll-events-"))
    results = []
    try:
        with base.prefect_server(home) as server:
            for k in args.ks:
                print(f"K={k}: {args.seconds:.0f} s window ...", flush=True)
                results.append(run_one(k, args.seconds, server, home))
                print(base.text_table(COLUMNS, table_rows(results[-1:])), flush=True)
    finally:
        if args.keep_logs:
            print(f"logs kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    print(f"Events that were not the shared poll's: {others_line(results)}")
    print(f"prefect_stitch imported from: {sorted({p for r in results for p in r.packages})}")
    if args.write:
        write_results(results, args, argv, time.monotonic() - started)
        print(f"wrote {RESULTS.relative_to(base.ROOT)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS))
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="the window")
    parser.add_argument("--write", action="store_true", help="into benchmarks/RESULTS.md")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--package-note", default="", help="what was measured, for RESULTS.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return child_main(args) if args.child else driver_main(args, argv)


if __name__ == "__main__":
    sys.exit(main())
