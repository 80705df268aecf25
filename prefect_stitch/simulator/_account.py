"""The simulated account under one lock: its parts, settled on Stitch's clock.

Nothing runs on timers: each time the state is touched it is first *settled* from the clock.
Settling replays, in chronological order, every event that is due (a job reaching the end of
its duration, a delayed stop taking effect, Stitch's scheduler starting a job, a stream's load
landing), and loops until nothing more is due, so a chain such as start -> complete -> start ->
complete between two requests gets exact historic times.

The parts, each in its own module, are plain objects: the catalogue (sources, streams, the
destination), the job book (jobs, their ends, the extraction records), Stitch's scheduler, the
load book, the log links and the traffic (faults, the request log, the jobs budget). Only the
account's lock guards them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prefect_stitch.simulator._catalogue import Source, SourceCatalogue
from prefect_stitch.simulator._faults import Fault
from prefect_stitch.simulator._jobs import JobBook
from prefect_stitch.simulator._loads import LoadBook
from prefect_stitch.simulator._logs import LogLinks, LogPlan
from prefect_stitch.simulator._scheduler import Scheduler
from prefect_stitch.simulator._traffic import RecordedRequest, Traffic

_RETENTION_SECONDS = 60 * 24 * 3600.0  # extractions and loads list the past 60 days only


class Account:
    """The account's parts, one re-entrant lock, and the reads and changes the API makes.

    `SimulatorState` holds one and works on its parts under `settled()`; the HTTP layer calls
    the methods below, each of which takes the lock.

    Args:
        client_id: The Stitch client (account) ID.
        clock: Stitch's clock (`SimulatorState.now`).

    Example:
        >>> import time
        >>> from prefect_stitch.simulator._account import Account
        >>> account = Account(116078, clock=time.time)
        >>> account.trigger(1)  # no such source
        ('unknown', '')
    """

    def __init__(self, client_id: int, clock: Callable[[], float]) -> None:
        self.client_id = client_id
        self.clock = clock
        self.lock = threading.RLock()
        self.clear()

    def clear(self) -> None:
        """Forget everything: no source, job, load, log link, fault or request."""
        with self.lock:
            self.catalogue = SourceCatalogue(self.client_id)
            self.scheduler = Scheduler()
            self.loads = LoadBook()
            self.book = JobBook(self.catalogue, self.scheduler, self.loads)
            self.log_links = LogLinks()
            self.traffic = Traffic()

    @contextmanager
    def settled(self) -> Iterator[Account]:
        """Hold the lock, with every event due by now replayed first."""
        with self.lock:
            self.settle()
            yield self

    def settle(self) -> None:
        """Replay every job end, scheduled start and load landing due by now (lock held)."""
        now = self.clock()
        self.book.settle(now)
        self.loads.land(now)

    def source_object(self, source: Source) -> dict[str, Any]:
        """The Source object as the API returns it, with its next start (lock held)."""
        next_start = self.scheduler.next_start(source.source_id)
        return self.catalogue.source_object(source, self.clock(), next_start)

    # -- what the HTTP layer asks (each takes the lock) -------------------------------------

    def source_objects(self) -> list[dict[str, Any]]:
        """Every Source object, by ID."""
        with self.settled():
            sources = self.catalogue.sources
            return [self.source_object(sources[i]) for i in sorted(sources)]

    def source_ids(self) -> list[int]:
        """The sources' IDs, in order."""
        with self.lock:
            return sorted(self.catalogue.sources)

    def update_source(self, source_id: int, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a PUT body (`paused_at`, `display_name`); raises KeyError for unknown ids."""
        with self.settled():
            source = self.catalogue.get(source_id)
            source.update(changes, self.clock())
            return self.source_object(source)

    def trigger(self, source_id: int) -> tuple[str, str]:
        """Start a job through the API: ("started", job_name) or (reason, "")."""
        with self.settled():
            return self.book.trigger(source_id, self.clock())

    def stop(self, source_id: int, delay: float) -> str:
        """Ask the running job to stop: "unknown", "idle" or "stopped" (maybe not yet ended).

        The stop takes effect `delay` seconds later; until then the job still runs.
        """
        with self.settled():
            result = self.book.request_stop(source_id, self.clock(), delay)
            self.settle()
            return result

    def extraction_records(self, list_running: bool, tap_field: str) -> list[dict[str, Any]]:
        """The extractions list: one record per source, of the past 60 days."""
        with self.settled():
            oldest = self.clock() - _RETENTION_SECONDS
            return self.book.extraction_records(oldest, list_running, tap_field)

    def load_records(self, with_stream_ids: bool) -> list[dict[str, Any]]:
        """The loads list: one record per stream loaded, of the past 60 days."""
        with self.settled():
            oldest = self.clock() - _RETENTION_SECONDS
            sources = self.catalogue.sources
            return self.loads.records(oldest, self.client_id, sources, with_stream_ids)

    def log_link(self, job_name: str) -> str | None:
        """A new token for the job's log link, or None if there is no such job."""
        with self.lock:
            return self.log_links.issue(job_name) if job_name in self.book.jobs else None

    def log_job(self, token: str) -> str | None:
        """The job whose log the link's token opens, if any."""
        with self.lock:
            return self.log_links.job_of(token)

    def log_plan(self, job_name: str) -> LogPlan:
        """Snapshot what the job's log says right now; the lines are generated later."""
        with self.settled():
            job = self.book.jobs[job_name]
            return LogPlan.of(job, self.catalogue.sources[job.source_id], self.clock())

    def take_fault(self, endpoint: str) -> Fault | None:
        """The next fault queued for the endpoint, if any."""
        with self.lock:
            return self.traffic.take_fault(endpoint)

    def record(self, request: RecordedRequest) -> None:
        """Add a request to the log."""
        with self.lock:
            self.traffic.record(request)
