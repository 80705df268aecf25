"""The simulator's state and its Python API: `SimulatorState`, what `StitchSimulator` inherits.

Nothing here knows about sockets. The HTTP layer (`_server.py`) answers requests from the same
`Account` (`_account.py`): the parts that keep Stitch's semantics, under one lock, settled on
Stitch's clock first.

Time is Stitch's clock, `now()` (the wall clock plus `clock_offset_seconds`); every timestamp
the simulator emits comes from it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict, Unpack

from prefect_stitch.simulator._account import Account
from prefect_stitch.simulator._catalogue import Source, SourceOptions
from prefect_stitch.simulator._faults import Fault
from prefect_stitch.simulator._jobs import Job
from prefect_stitch.simulator._loads import LoadAttempt
from prefect_stitch.simulator._outcomes import Outcome, checked_error_state
from prefect_stitch.simulator._traffic import RecordedRequest


class SimulatorSettings(TypedDict, total=False):
    """The keyword arguments of `SimulatorState` (documented there)."""

    token: str
    client_id: int
    page_size: int
    jobs_rate_limit: int
    jobs_rate_period_seconds: float
    enforce_rate_limit: bool
    list_running_jobs: bool
    stop_when_idle_status: int
    tap_field: str
    clock_offset_seconds: float
    stop_delay_seconds: float
    load_stream_ids: bool


class SimulatorState:
    """State and Stitch semantics of the simulator, without the HTTP layer.

    `StitchSimulator` inherits every method documented here; use that class.

    Configuration attributes (`page_size`, `jobs_rate_limit`, `jobs_rate_period_seconds`,
    `enforce_rate_limit`, `list_running_jobs`, `stop_when_idle_status`, `tap_field`,
    `clock_offset_seconds`, `stop_delay_seconds`, `load_stream_ids`) are plain attributes and
    may be changed at any time. Moving `clock_offset_seconds` forward makes simulated time pass
    at once: the next request settles every job, stop, scheduled start and load that fell due
    meanwhile.

    Keyword Args:
        token (str): The access token the API accepts (`Authorization: Bearer <token>`).
        client_id (int): The Stitch client (account) ID of the token.
        page_size (int): Records per page of the extractions and loads lists.
        jobs_rate_limit (int): Jobs requests allowed per sliding window.
        jobs_rate_period_seconds (float): Length of the sliding window.
        enforce_rate_limit (bool): Answer 429 with `Retry-After` when the window is full.
        list_running_jobs (bool): List a running job (null statuses and completion time) in the
            extractions list instead of the source's previous record (an undocumented variant).
        stop_when_idle_status (int): HTTP status of a stop request when nothing runs (200 or 404).
        tap_field (str): Name of the tap field of extraction records (`"source_type"` or
            `"tap_name"`).
        clock_offset_seconds (float): Added to the wall clock to give Stitch's clock (`now()`).
        stop_delay_seconds (float): Time between a stop request (answered 200 at once) and the job
            actually ending as terminated; until then it still runs.
        load_stream_ids (bool): Every load record also carries its stream's `stream_id` (as
            `/streams` shows it), undocumented in the Load object; default off.

    Examples:
        >>> from prefect_stitch.simulator import StitchSimulator
        >>> sim = StitchSimulator(page_size=10, stop_delay_seconds=2, load_stream_ids=True)
        >>> sim.page_size, sim.stop_delay_seconds, sim.load_stream_ids
        (10, 2.0, True)
    """

    def __init__(self, **settings: Unpack[SimulatorSettings]) -> None:
        unknown = set(settings) - SimulatorSettings.__optional_keys__
        if unknown:
            raise TypeError(f"unexpected keyword arguments: {sorted(unknown)}")
        token = settings.get("token", "sim-token")
        if not token:
            raise ValueError("token must not be empty")
        self._token = token
        self._client_id = int(settings.get("client_id", 116078))
        self.page_size = settings.get("page_size", 100)
        self.jobs_rate_limit = settings.get("jobs_rate_limit", 30)
        self.jobs_rate_period_seconds = float(settings.get("jobs_rate_period_seconds", 600.0))
        self.enforce_rate_limit = settings.get("enforce_rate_limit", False)
        self.list_running_jobs = settings.get("list_running_jobs", False)
        self.stop_when_idle_status = settings.get("stop_when_idle_status", 200)
        self.tap_field = settings.get("tap_field", "source_type")
        self.clock_offset_seconds = float(settings.get("clock_offset_seconds", 0.0))
        self.stop_delay_seconds = float(settings.get("stop_delay_seconds", 0.0))
        self.load_stream_ids = settings.get("load_stream_ids", False)
        if self.page_size < 1:
            raise ValueError("page_size must be >= 1")
        if self.jobs_rate_limit < 1 or self.jobs_rate_period_seconds <= 0:
            raise ValueError("jobs_rate_limit must be >= 1 and jobs_rate_period_seconds > 0")
        if not self.stop_delay_seconds >= 0:
            raise ValueError("stop_delay_seconds must be >= 0")
        self._account = Account(self._client_id, self.now)
        self.set_destination()

    # -- read-only identity -------------------------------------------------------------------

    @property
    def token(self) -> str:
        """The access token the simulated API accepts.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> StitchSimulator(token="t0k3n").token
            't0k3n'
        """
        return self._token

    @property
    def client_id(self) -> int:
        """The Stitch client (account) ID the token belongs to.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> StitchSimulator(client_id=42).client_id
            42
        """
        return self._client_id

    def now(self) -> float:
        """Stitch's clock: `time.time() + clock_offset_seconds`.

        Every timestamp the simulator emits comes from it, including the `Date` header.

        Returns:
            Seconds since the epoch.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator(clock_offset_seconds=-3600)
            >>> sim.now() < __import__("time").time() - 3000
            True
        """
        return time.time() + self.clock_offset_seconds

    # -- sources ------------------------------------------------------------------------------

    def add_source(
        self,
        source_id: int,
        *,
        name: str | None = None,
        display_name: str | None = None,
        type: str = "platform.hubspot",  # Stitch's own field name
        outcomes: Sequence[Outcome] | None = None,
        paused: bool = False,
        deleted: bool = False,
        streams: Sequence[str] = ("accounts", "contacts"),
        stream_names: Mapping[str, str] | None = None,
        selected: Sequence[str] | None = None,
        deselected: Sequence[str] = (),
        log_lines: int = 20,
        log_line_bytes: int | None = None,
    ) -> dict[str, Any]:
        """Add a source (Stitch "integration") that jobs can be started for.

        Args:
            source_id: The integer source ID.
            name: Lowercase schema name (the loads' `source_name`); default `<tap>_<id>`.
            display_name: Human name; default `"<Tap> <id>"`.
            type: Source type, e.g. `"platform.hubspot"`; gives the tap name `tap-hubspot`.
            outcomes: Outcomes consumed one per started job; the last one repeats. Default
                `[Outcome.success(duration_seconds=1.0)]`.
            paused: Whether the source is paused (manual starts still work; Stitch's scheduler
                starts nothing).
            deleted: Whether the source is deleted (starts fail with 400).
            streams: The streams' identities (their `tap_stream_id`), in the order
                `GET /v4/sources/{id}/streams` lists them. A stream's identity is its name
                everywhere in the simulator's API (outcomes, selection, `seed_load`) and, unless
                `stream_names` maps it, also its `stream_name`.
            stream_names: Table names of streams whose `stream_name` differs from their
                identity, e.g. `{"public-users": "users", "sales-users": "users"}` (one table
                in two schemas): the `stream_name` of `/streams`, of the load records and of
                the log's stream lines. Two streams may share one.
            selected: The streams selected for replication (`"selected": true`); default all
                but `deselected`. Only selected streams receive rows and loads.
            deselected: Streams de-selected (`"selected": false`). A stream in neither list
                was never selected: Stitch reports `"selected": null`.
            log_lines: Number of lines of each job's log (more if the stream and summary lines
                need the room).
            log_line_bytes: Pad the log's filler lines to this many bytes each (for big logs).

        Returns:
            The Source object, as `GET /v4/sources/{id}` returns it.

        Raises:
            ValueError: If the source already exists, `outcomes` is empty, a selection or
                `stream_names` names an unknown stream, or an outcome names a stream the source
                does not have.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator, Outcome
            >>> sim = StitchSimulator()
            >>> sim.add_source(1001, outcomes=[Outcome.failure("tap")])["name"]
            'hubspot_1001'
            >>> _ = sim.add_source(
            ...     1002, streams=("public-users", "sales-users"),
            ...     stream_names={"public-users": "users", "sales-users": "users"})
            >>> [(s["tap_stream_id"], s["stream_name"]) for s in sim.streams(1002)]
            [('public-users', 'users'), ('sales-users', 'users')]
        """
        outcome_list = list(outcomes) if outcomes is not None else [Outcome.success()]
        options: SourceOptions = {
            "name": name,
            "display_name": display_name,
            "type": type,
            "paused": paused,
            "deleted": deleted,
            "streams": streams,
            "stream_names": stream_names,
            "selected": selected,
            "deselected": deselected,
            "log_lines": log_lines,
            "log_line_bytes": log_line_bytes,
        }
        with self._account.settled() as account:
            source = account.catalogue.add(int(source_id), self.now(), outcome_list, options)
            return account.source_object(source)

    def add_sources(self, source_ids: Iterable[int], **kwargs: Any) -> list[dict[str, Any]]:
        """Add many sources at once, all with the same options.

        Args:
            source_ids: The source IDs, e.g. `range(1, 151)`.
            **kwargs: Keyword arguments of `add_source` (not `name`/`display_name`).

        Returns:
            The Source objects.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> len(StitchSimulator().add_sources(range(1, 151)))
            150
        """
        with self._account.lock:
            return [self.add_source(source_id, **kwargs) for source_id in source_ids]

    def set_outcomes(self, source_id: int, outcomes: Sequence[Outcome]) -> None:
        """Replace a source's outcomes; the next started job takes the first one.

        Args:
            source_id: The source.
            outcomes: The new outcome sequence (the last one repeats).

        Raises:
            KeyError: If the source is unknown.
            ValueError: If `outcomes` is empty or names a stream the source does not have.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator, Outcome
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1)
            >>> sim.set_outcomes(1, [Outcome.terminated(0.1)])
        """
        if not outcomes:
            raise ValueError("outcomes must not be empty")
        with self._account.settled() as account:
            account.catalogue.get(source_id).set_outcomes(outcomes)

    def source(self, source_id: int) -> dict[str, Any]:
        """The Source object of one source, as the API returns it.

        Args:
            source_id: The source.

        Returns:
            The Source object.

        Raises:
            KeyError: If the source is unknown.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(7, paused=True)
            >>> sim.source(7)["schedule"] is None
            True
        """
        with self._account.settled() as account:
            return account.source_object(account.catalogue.get(source_id))

    def streams(self, source_id: int) -> list[dict[str, Any]]:
        """The Stream objects of one source, as `GET /v4/sources/{id}/streams` returns them.

        Args:
            source_id: The source.

        Returns:
            One `{"stream_id", "selected", "stream_name", "tap_stream_id", "metadata"}` per
            stream; `selected` is true, false (de-selected) or null (never selected), and
            `metadata` is the stream-level metadata object.

        Raises:
            KeyError: If the source is unknown.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1, streams=("orders", "refunds"), selected=["orders"])
            >>> [(s["stream_name"], s["selected"]) for s in sim.streams(1)]
            [('orders', True), ('refunds', None)]
        """
        with self._account.lock:
            return self._account.catalogue.stream_objects(self._account.catalogue.get(source_id))

    # -- destination --------------------------------------------------------------------------

    def set_destination(
        self, type: str = "postgres", database: str = "analytics", **properties: Any
    ) -> dict[str, Any]:
        """Configure the account's one destination (what `GET /v4/destinations` lists).

        A destination that already exists is updated in place (same `id`); otherwise a new one
        is created. As in Stitch's v4 API, the connection settings are the `properties`
        object (v3 called it `connection`), with scalar values as strings (`"port": "5432"`).

        Args:
            type: Destination type, e.g. `"postgres"`, `"snowflake"`, `"redshift"`.
            database: The database name.
            **properties: More connection properties (`host`, `port`, `username`, `name` for
                the destination's name, ...).

        Returns:
            The Destination object.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator()
            >>> sim.set_destination("snowflake", database="raw", port=443)["properties"]["port"]
            '443'
        """
        with self._account.lock:
            return self._account.catalogue.set_destination(type, database, properties, self.now())

    def remove_destination(self) -> None:
        """Remove the destination: `GET /v4/destinations` then returns `[]`.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator()
            >>> sim.remove_destination()
            >>> sim.destinations()
            []
        """
        with self._account.lock:
            self._account.catalogue.remove_destination()

    def destinations(self) -> list[dict[str, Any]]:
        """The Destination objects, as `GET /v4/destinations` returns them (zero or one).

        Returns:
            The list.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> [(d["type"], d["properties"]["database"]) for d in StitchSimulator().destinations()]
            [('postgres', 'analytics')]
        """
        with self._account.lock:
            return self._account.catalogue.destinations()

    # -- jobs ---------------------------------------------------------------------------------

    def seed_completed(
        self,
        source_id: int,
        outcome: Outcome | None = None,
        *,
        started_ago_seconds: float = 3600,
        duration_seconds: float = 60,
        job_name: str | None = None,
    ) -> str:
        """Add a past completed job; it becomes the source's listed extraction record.

        A successful seeded job also loads its streams (at its completion plus each stream's
        delay, see `Outcome.success`).

        Args:
            source_id: The source.
            outcome: How it ended; default `Outcome.success()` (its duration is ignored).
            started_ago_seconds: How long ago it started.
            duration_seconds: How long it ran (completion is clamped to "now").
            job_name: Its name; default `<client>.<source>.sync.<uuid4>`.

        Returns:
            The job name.

        Raises:
            KeyError: If the source is unknown.
            ValueError: If the job name is already taken.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator(client_id=5)
            >>> _ = sim.add_source(1)
            >>> sim.seed_completed(1).startswith("5.1.sync.")
            True
        """
        with self._account.settled() as account:
            outcome = outcome or Outcome.success()
            source = self._checked_source(source_id, outcome)
            now = self.now()
            name = job_name or account.book.new_name(source.source_id)
            started = now - started_ago_seconds
            job = Job(name, source.source_id, outcome, started, triggered_via="seed")
            account.book.seed(job, completed_at=min(now, started + duration_seconds))
            account.settle()
            return name

    def seed_load(
        self,
        source_id: int,
        stream: str,
        *,
        loaded_ago_seconds: float = 3600,
        error: str | None = None,
        error_state: Any = None,
    ) -> None:
        """Set a stream's previous load record (what `/loads` shows until a new attempt lands).

        Args:
            source_id: The source.
            stream: One of its streams (its identity, see `add_source`).
            loaded_ago_seconds: How long ago the attempt happened.
            error: An error message: the record is an old error (`error_state` set,
                `last_batch_loaded_at` null) instead of an old success.
            error_state: With `error`: the record's `error_state`, any JSON value, instead of
                the default object built from `error` (see `StreamLoad`).

        Raises:
            KeyError: If the source is unknown.
            ValueError: If the source has no such stream, or `error_state` comes without
                `error` or is not JSON.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1)
            >>> sim.seed_load(1, "accounts", error="disk full")
        """
        with self._account.settled() as account:
            source = account.catalogue.get(source_id)
            if stream not in source.streams:
                raise ValueError(f"source {source_id} has no stream {stream!r}")
            scripted = checked_error_state(error, error_state)
            attempt = LoadAttempt(self.now() - loaded_ago_seconds, error, scripted)
            account.loads.seed(source.source_id, stream, attempt)

    def start_job(self, source_id: int, outcome: Outcome | None = None) -> str:
        """Start a job now, as Stitch's own scheduler would (not through the API).

        Use it for "a job is already running" scenarios.

        Args:
            source_id: The source.
            outcome: How this job ends; default the source's next outcome. An explicit outcome
                does not consume the source's outcome list.

        Returns:
            The job name.

        Raises:
            KeyError: If the source is unknown.
            RuntimeError: If a job is already running or the source is deleted.
            ValueError: If the outcome names a stream the source does not have.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator, Outcome
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1, outcomes=[Outcome.success(None)])
            >>> sim.start_job(1) == sim.running_job(1)["job_name"]
            True
        """
        with self._account.settled() as account:
            source = self._checked_source(source_id, outcome)
            return account.book.start_now(source, outcome, self.now())

    def schedule_job(
        self, source_id: int, *, in_seconds: float = 0.0, outcome: Outcome | None = None
    ) -> None:
        """Have Stitch's scheduler try to start a job `in_seconds` from now (Stitch's clock).

        The attempt is made when that moment comes (lazily, with its exact time). It is
        skipped, and counted in `scheduled_skips`, if a job of the source is running at that
        moment, or the source is paused or deleted then (Stitch's scheduler does not start jobs
        of paused sources).

        Args:
            source_id: The source.
            in_seconds: Delay from now, >= 0.
            outcome: How the job ends; default the source's next outcome when it starts.

        Raises:
            KeyError: If the source is unknown.
            ValueError: If `in_seconds` is negative or the outcome names an unknown stream.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1)
            >>> sim.schedule_job(1)
            >>> sim.jobs(1)[0]["triggered_via"]
            'scheduler'
        """
        if not in_seconds >= 0:
            raise ValueError("in_seconds must be >= 0")
        with self._account.settled() as account:
            source = self._checked_source(source_id, outcome)
            account.scheduler.plan(self.now() + in_seconds, source.source_id, outcome)
            account.settle()

    def run_after_current(
        self, source_id: int, *, outcome: Outcome | None = None, gap_seconds: float = 0.0
    ) -> None:
        """When the source's current or next job completes, have the scheduler start another.

        The job that completes may be the one running now, or, if none runs, the next one to
        start (by the API, e.g. the job a client is about to trigger, or by the scheduler). The
        scheduler then tries a start `gap_seconds` after that completion, skipped like any
        `schedule_job` attempt if the source is busy or paused then. With a short outcome the
        new job starts and ends between two polls and replaces the previous record in the
        extractions list (Stitch keeps one record per source). One-shot.

        Args:
            source_id: The source.
            outcome: How the new job ends; default the source's next outcome when it starts.
            gap_seconds: Time from the completion to the new start, >= 0.

        Raises:
            KeyError: If the source is unknown.
            ValueError: If `gap_seconds` is negative or the outcome names an unknown stream.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator, Outcome
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1, outcomes=[Outcome.success(None)])
            >>> _ = sim.start_job(1)
            >>> sim.run_after_current(1, outcome=Outcome.success(None))
            >>> sim.finish_job(1)
            >>> [job["running"] for job in sim.jobs(1)]
            [False, True]
        """
        if not gap_seconds >= 0:
            raise ValueError("gap_seconds must be >= 0")
        with self._account.settled() as account:
            source = self._checked_source(source_id, outcome)
            account.scheduler.arm_after(source.source_id, outcome, float(gap_seconds))

    def scheduled_skips(self, source_id: int) -> int:
        """How many of the scheduler's start attempts for the source were skipped.

        An attempt is skipped when a job of the source is running at its moment, or the source
        is paused or deleted then.

        Args:
            source_id: The source.

        Returns:
            The count.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator, Outcome
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1, outcomes=[Outcome.success(None)])
            >>> _ = sim.start_job(1)
            >>> sim.schedule_job(1, in_seconds=0)  # while that job runs
            >>> sim.scheduled_skips(1)
            1
        """
        with self._account.settled() as account:
            return account.scheduler.skips(int(source_id))

    def finish_job(self, source_id: int) -> None:
        """Complete the source's running job now, with its outcome.

        Needed for outcomes with `duration_seconds=None`, which run until finished or stopped.

        Args:
            source_id: The source.

        Raises:
            KeyError: If the source is unknown.
            RuntimeError: If no job is running.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator, Outcome
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1, outcomes=[Outcome.success(None)])
            >>> _ = sim.start_job(1)
            >>> sim.finish_job(1)
            >>> sim.running_job(1) is None
            True
        """
        with self._account.settled() as account:
            account.book.finish(account.catalogue.get(source_id), self.now())
            account.settle()

    def running_job(self, source_id: int) -> dict[str, Any] | None:
        """The source's running job, or None.

        Args:
            source_id: The source.

        Returns:
            A job dict (see `jobs`) or None.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1)
            >>> sim.running_job(1) is None
            True
        """
        with self._account.settled() as account:
            job = account.book.running.get(int(source_id))
            return None if job is None else job.as_dict()

    def jobs(self, source_id: int | None = None) -> list[dict[str, Any]]:
        """Every job ever started or seeded, oldest first.

        Args:
            source_id: Only this source's jobs.

        Returns:
            Dicts with `job_name`, `source_id`, `outcome` (kind; `"terminated"` for a stopped
            job), `phase`, `exit_status`, `started_at`, `completed_at`, `running`, `stopped`,
            `stop_requested_at` and `triggered_via` (`"api"`, `"scheduler"` or `"seed"`).

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1)
            >>> _ = sim.seed_completed(1)
            >>> sim.jobs(1)[0]["triggered_via"]
            'seed'
        """
        with self._account.settled() as account:
            return [job.as_dict() for job in account.book.of_source(_int_or_none(source_id))]

    def jobs_started(self, source_id: int | None = None) -> list[str]:
        """Names of the jobs started through `POST /v4/sources/{id}/sync`, oldest first.

        Args:
            source_id: Only this source's jobs.

        Returns:
            Job names (seeded and scheduler jobs excluded).

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1)
            >>> _ = sim.start_job(1)
            >>> sim.jobs_started()
            []
        """
        with self._account.lock:
            jobs = self._account.book.of_source(_int_or_none(source_id))
            return [job.job_name for job in jobs if job.triggered_via == "api"]

    def _checked_source(self, source_id: int, outcome: Outcome | None) -> Source:
        """The source (KeyError if unknown), after checking the outcome fits its streams."""
        source = self._account.catalogue.get(source_id)
        if outcome is not None:
            source.check_outcome(outcome)
        return source

    # -- faults, request log, rate window -----------------------------------------------------

    def inject(self, endpoint: str, fault: Fault, times: int = 1) -> None:
        """Give the next `times` requests to `endpoint` the `fault` (FIFO queue per endpoint).

        Args:
            endpoint: An endpoint name, e.g. `"trigger"`, `"extractions"`, `"log_download"`.
            fault: The fault.
            times: How many requests get it.

        Raises:
            ValueError: On an unknown endpoint name or `times < 1`.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator, Fault
            >>> StitchSimulator().inject("extractions", Fault.status(502), times=2)
        """
        with self._account.lock:
            self._account.traffic.inject(endpoint, fault, times)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every Stitch request received so far, in arrival order (control API excluded).

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> StitchSimulator().requests
            []
        """
        with self._account.lock:
            return self._account.traffic.requests()

    def requests_for(self, endpoint: str) -> list[RecordedRequest]:
        """The recorded requests to one endpoint, in arrival order.

        Args:
            endpoint: An endpoint name, e.g. `"trigger"`.

        Returns:
            The requests.

        Raises:
            ValueError: On an unknown endpoint name.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> StitchSimulator().requests_for("loads")
            []
        """
        with self._account.lock:
            return self._account.traffic.requests(endpoint)

    def jobs_requests_in_window(self, period: float | None = None) -> int:
        """The most jobs-endpoint requests seen in any sliding window of `period` seconds.

        Every request to extractions, logs and loads counts, including faulted and rejected
        ones: the number measures how hard the client leaned on the shared budget.

        Args:
            period: Window length; default `jobs_rate_period_seconds`.

        Returns:
            The maximum count.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> StitchSimulator().jobs_requests_in_window()
            0
        """
        with self._account.lock:
            return self._account.traffic.most_in_window(
                self.jobs_rate_period_seconds if period is None else period
            )

    @property
    def rate_limit_violations(self) -> int:
        """How many jobs requests arrived while the sliding window was already full.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> StitchSimulator().rate_limit_violations
            0
        """
        with self._account.lock:
            return self._account.traffic.violations

    def reset(self) -> None:
        """Forget sources, jobs, faults, the request log and the rate window.

        Configuration is kept, and a running server keeps running.

        Examples:
            >>> from prefect_stitch.simulator import StitchSimulator
            >>> sim = StitchSimulator()
            >>> _ = sim.add_source(1)
            >>> sim.reset()
            >>> sim.jobs()
            []
        """
        with self._account.lock:
            self._account.clear()
            self.set_destination()

    # -- kept for code that reaches in (tests/test_faults.py, benchmarks/bench_processes.py) ---

    @property
    def _lock(self) -> threading.RLock:
        """The one lock every read and change of the state holds."""
        return self._account.lock

    @property
    def _jobs(self) -> dict[str, Job]:
        """Every job by name, oldest first (read under `_lock`)."""
        return self._account.book.jobs

    @property
    def _listed(self) -> dict[int, Job]:
        """Each source's listed job: pop one to age its record out of the extractions list."""
        return self._account.book.listed


def _int_or_none(source_id: int | None) -> int | None:
    """A source ID filter as an int (None: every source)."""
    return None if source_id is None else int(source_id)
