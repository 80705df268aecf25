"""The job book: every job started or seeded, which one runs, which one each source lists.

Nothing runs on timers: the book is *settled* on Stitch's clock each time the state is touched.
Settling replays, in chronological order, every event that is due (a job reaching the end of
its duration, a delayed stop taking effect, Stitch's scheduler starting a job) and loops until
nothing more is due, so a chain such as start -> complete -> start -> complete between two
requests gets exact historic times. Not thread-safe: `SimulatorState` calls it under its lock.
"""

from __future__ import annotations

import heapq
import itertools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from prefect_stitch.simulator._catalogue import Source, SourceCatalogue
from prefect_stitch.simulator._clock import iso
from prefect_stitch.simulator._loads import LoadBook
from prefect_stitch.simulator._outcomes import PHASES, STOPPED, Outcome
from prefect_stitch.simulator._scheduler import Attempt, Scheduler

TriggeredVia = Literal["api", "scheduler", "seed"]


@dataclass
class Job:
    """One replication job: how it was started, how it ends, whether a stop was asked for.

    Example:
        >>> from prefect_stitch.simulator import Outcome
        >>> from prefect_stitch.simulator._jobs import Job
        >>> job = Job("116078.1.sync.x", 1, Outcome.success(5), started_at=0.0, triggered_via="api")
        >>> job.due()  # it ends on its own after 5 seconds, not by a stop
        (5.0, False)
    """

    job_name: str
    source_id: int
    outcome: Outcome
    started_at: float
    triggered_via: TriggeredVia
    completed_at: float | None = None
    stopped: bool = False  # ended by a stop request (DELETE /sync)
    stop_requested_at: float | None = None
    stop_effective_at: float | None = None

    @property
    def final_outcome(self) -> Outcome:
        """How the job ends: its outcome, or a termination if a stop ended it."""
        return STOPPED if self.stopped else self.outcome

    @property
    def succeeded(self) -> bool:
        """Whether it completed with a success."""
        return self.completed_at is not None and self.final_outcome.kind == "success"

    def due(self) -> tuple[float, bool] | None:
        """When the running job ends on its own, and whether that end is a stop."""
        duration = self.outcome.duration_seconds
        natural = None if duration is None else self.started_at + duration
        stop = self.stop_effective_at
        if stop is not None and (natural is None or stop < natural):
            return stop, True
        return None if natural is None else (natural, False)

    def final_fields(self) -> dict[str, Any]:
        """The record's six exit-status/description fields: all null while it runs."""
        if self.completed_at is None:
            return {f"{p}_{s}": None for p in PHASES for s in ("exit_status", "description")}
        return self.final_outcome.record_fields()

    def as_dict(self) -> dict[str, Any]:
        """The job as `SimulatorState.jobs` describes it."""
        outcome = self.final_outcome
        return {
            "job_name": self.job_name,
            "source_id": self.source_id,
            "outcome": outcome.kind,
            "phase": outcome.phase,
            "exit_status": outcome.exit_status,
            "started_at": iso(self.started_at),
            "completed_at": None if self.completed_at is None else iso(self.completed_at),
            "running": self.completed_at is None,
            "stopped": self.stopped,
            "stop_requested_at": (
                None if self.stop_requested_at is None else iso(self.stop_requested_at)
            ),
            "triggered_via": self.triggered_via,
        }


class JobBook:
    """The jobs of every source: starting, stopping and settling them; the extraction records.

    Args:
        catalogue: The sources the jobs run for.
        scheduler: Stitch's scheduler, whose start attempts settling makes.
        loads: Where a successful job plans its streams' loads.

    Example:
        >>> from prefect_stitch.simulator import StitchSimulator
        >>> sim = StitchSimulator()
        >>> _ = sim.add_source(1)
        >>> job_name = sim.start_job(1)
        >>> [job["job_name"] for job in sim.jobs()] == [job_name]
        True
    """

    def __init__(self, catalogue: SourceCatalogue, scheduler: Scheduler, loads: LoadBook) -> None:
        self.jobs: dict[str, Job] = {}  # insertion order = start order
        self.running: dict[int, Job] = {}
        self.listed: dict[int, Job] = {}  # the source's last completed (or seeded) job
        self._catalogue = catalogue
        self._scheduler = scheduler
        self._loads = loads

    # -- starting and ending --------------------------------------------------------------

    def new_name(self, source_id: int) -> str:
        """A fresh job name, `<client>.<source>.sync.<uuid4>`."""
        return f"{self._catalogue.client_id}.{source_id}.sync.{uuid.uuid4()}"

    def start(
        self, source: Source, via: TriggeredVia, at: float, outcome: Outcome | None = None
    ) -> Job:
        """Start a job at `at`; without an outcome it takes the source's next one."""
        job = Job(
            job_name=self.new_name(source.source_id),
            source_id=source.source_id,
            outcome=source.take_outcome() if outcome is None else outcome,
            started_at=at,
            triggered_via=via,
        )
        self.jobs[job.job_name] = job
        self.running[source.source_id] = job
        return job

    def start_now(self, source: Source, outcome: Outcome | None, now: float) -> str:
        """Start a job as Stitch's scheduler would; RuntimeError if deleted or busy."""
        if source.deleted_at is not None:
            raise RuntimeError(f"source {source.source_id} is deleted")
        if source.source_id in self.running:
            raise RuntimeError(f"a job is already running for source {source.source_id}")
        return self.start(source, "scheduler", now, outcome).job_name

    def trigger(self, source_id: int, now: float) -> tuple[str, str]:
        """Start a job through the API: ("started", job_name) or (reason, "")."""
        source = self._catalogue.sources.get(source_id)
        if source is None:
            return "unknown", ""
        if source.deleted_at is not None:
            return "deleted", ""
        if source_id in self.running:
            return "already_running", ""
        return "started", self.start(source, "api", now).job_name

    def seed(self, job: Job, completed_at: float) -> None:
        """Add a past job that completed at `completed_at`: the source's listed record."""
        if job.job_name in self.jobs:
            raise ValueError(f"job name {job.job_name!r} already exists")
        self.jobs[job.job_name] = job
        self.complete(job, completed_at, stopped=False)

    def request_stop(self, source_id: int, now: float, delay: float) -> str:
        """Ask the running job to stop: "unknown", "idle" or "stopped" (maybe not yet ended).

        The stop takes effect `delay` seconds later; until then the job still runs.
        """
        if source_id not in self._catalogue.sources:
            return "unknown"
        job = self.running.get(source_id)
        if job is None:
            return "idle"
        if job.stop_requested_at is None:
            at = max(now, job.started_at)
            job.stop_requested_at = at
            job.stop_effective_at = at + delay
        return "stopped"

    def finish(self, source: Source, now: float) -> None:
        """Complete the source's running job now; RuntimeError if none runs."""
        job = self.running.get(source.source_id)
        if job is None:
            raise RuntimeError(f"no job is running for source {source.source_id}")
        self.complete(job, max(now, job.started_at), stopped=False)

    def complete(self, job: Job, at: float, *, stopped: bool) -> list[Attempt]:
        """End `job` at `at`: list it, plan its loads, fire the source's after-hooks.

        Returns:
            The scheduler attempts the after-hooks added.
        """
        job.completed_at = at
        job.stopped = stopped
        if self.running.get(job.source_id) is job:
            del self.running[job.source_id]
        self.listed[job.source_id] = job
        if job.succeeded:
            self._loads.plan(self._catalogue.sources[job.source_id], job.outcome, at)
        if job.triggered_via == "seed":
            return []
        return self._scheduler.after_completion(job.source_id, at)

    # -- settling on the clock ------------------------------------------------------------

    def settle(self, now: float) -> None:
        """Replay every event due by `now`, in chronological order, until none is left.

        Events are a running job's end (its duration elapsed, or a delayed stop took effect)
        and the scheduler's start attempts; at the same moment, ends come first. Handling one
        can make another due (a job the scheduler started in the past may have ended since), so
        new events join the queue as they appear.
        """
        due = _DueEvents(now)
        for job in self.running.values():
            due.add_job(job)
        due.add_attempts(self._scheduler.attempts)
        while (event := due.pop()) is not None:
            at, what = event
            if isinstance(what, Job):
                ending = what.due()
                due.add_attempts(self.complete(what, at, stopped=ending is not None and ending[1]))
                continue
            started = self._make_attempt(what, at)
            if started is not None:
                due.add_job(started)

    def _make_attempt(self, attempt: Attempt, at: float) -> Job | None:
        """Make one of the scheduler's attempts: the job started, or None if it is skipped."""
        self._scheduler.take(attempt)
        source = self._catalogue.sources.get(attempt.source_id)
        if source is None:
            return None
        if source.source_id in self.running or not source.schedulable:
            self._scheduler.skip(source.source_id)
            return None
        return self.start(source, "scheduler", at, attempt.outcome)

    # -- what the API and the control API read --------------------------------------------

    def extraction_records(
        self, oldest: float, list_running: bool, tap_field: str
    ) -> list[dict[str, Any]]:
        """One Extraction record per source, by source ID: its last job completed since `oldest`.

        With `list_running`, a running job is listed instead (an undocumented variant).
        """
        records = []
        for source_id in sorted(self._catalogue.sources):
            job = self.running.get(source_id) if list_running else None
            if job is None:
                job = self.listed.get(source_id)
                if job is None or (job.completed_at or 0.0) < oldest:
                    continue
            records.append(self._extraction_record(job, tap_field))
        return records

    def _extraction_record(self, job: Job, tap_field: str) -> dict[str, Any]:
        """The job's Extraction record: null statuses and completion time while it runs."""
        return {
            "job_name": job.job_name,
            "stitch_client_id": self._catalogue.client_id,
            "source_id": job.source_id,
            tap_field: self._catalogue.sources[job.source_id].tap_name,
            "start_time": iso(job.started_at),
            "completion_time": None if job.completed_at is None else iso(job.completed_at),
            **job.final_fields(),
        }

    def of_source(self, source_id: int | None) -> list[Job]:
        """Every job (of one source), oldest first."""
        return [job for job in self.jobs.values() if source_id in (None, job.source_id)]


class _DueEvents:
    """The events due by `now`, earliest first; at the same moment, job ends before starts."""

    def __init__(self, now: float) -> None:
        self._now = now
        self._heap: list[tuple[float, int, int, Job | Attempt]] = []
        self._order = itertools.count()

    def add_job(self, job: Job) -> None:
        """Queue the running job's end, if it is due."""
        due = job.due()
        if due is not None and due[0] <= self._now:
            heapq.heappush(self._heap, (due[0], 0, next(self._order), job))

    def add_attempts(self, attempts: Iterable[Attempt]) -> None:
        """Queue the scheduler's attempts that are due."""
        for attempt in attempts:
            if attempt.at <= self._now:
                heapq.heappush(self._heap, (attempt.at, 1, attempt.seq, attempt))

    def pop(self) -> tuple[float, Job | Attempt] | None:
        """The earliest event and its moment, or None when none is left."""
        if not self._heap:
            return None
        at, _, _, what = heapq.heappop(self._heap)
        return at, what
