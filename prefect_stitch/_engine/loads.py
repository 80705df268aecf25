"""The load phase of a sync: did the job's data reach the warehouse?

A Stitch replication job is extraction, then preparation, then loading, per stream. Its
extraction record says nothing of the loads; ``GET /v4/{client_id}/loads`` shows the
latest load attempt of every stream. After every phase of the job exited 0, this module
works out which streams must load (those that received rows, from the job's log, see
[`prefect_stitch._logscan`][prefect_stitch._logscan]), then reads the loads listing
through the account's shared poller until each has landed or one fails; the rules of
what a load record means live in [`judge_loads`][prefect_stitch._verdict.judge_loads].

**Which streams must load.** The streams the job's log says received rows, that are
selected in Stitch (``GET /v4/sources/{id}/streams``). The log costs a jobs request, so
it is read only when the loads listing cannot settle the job by itself: when every
selected stream has loaded since the job's completion, or one failed anew, no log is
needed; and while loads keep landing, the log is not read either: only after
``_STALLED_LISTINGS`` listings in a row bring no new load (or when the wait nears its
end, or once it ran out before the log was read). When the log says nothing usable (no
stream lines, or it cannot be read), every selected stream is waited for: a stream that
truly received no rows then never loads,
and the wait ends in `StitchLoadTimeout` saying why, rather than in a success nobody can
vouch for.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect_stitch._engine.context import LOOKUP_INTERVAL_SECONDS, SyncContext
from prefect_stitch._lineage import asset_key
from prefect_stitch._logscan import LogScan
from prefect_stitch._poll import Snapshot, Watch
from prefect_stitch._verdict import LoadVerdict, StreamRef, judge_loads
from prefect_stitch.client import is_transient
from prefect_stitch.errors import StitchError
from prefect_stitch.models import Destination, Extraction, Load, StitchSyncHandle, StreamLoadResult
from prefect_stitch.options import LoadsMode

__all__ = ["LoadOutcome", "LoadWait", "settle_loads", "with_load_baseline"]

_destinations: dict[tuple[str, int], Destination | None] = {}
_STALLED_LISTINGS = 2
"""Listings in a row without a new load before the job's log is read (it costs budget)."""


@dataclass
class LoadOutcome:
    """How the job's loads ended.

    Attributes:
        streams: One entry per stream that counts (selected, or named by the log).
        failed: Each failed stream (its name, with its id when two share it) and its
            record.
        pending: Streams whose load did not land in time (``"wait"`` only).
        log_names_streams: Whether the job's log said which streams received rows.
        source_name: The source's ``name`` (its schema in the warehouse).
        asset_keys: ``(asset key, table)`` of every table loaded, when the destination
            is known.

    Example:
        ```python
        from prefect_stitch._engine.loads import LoadOutcome

        print(LoadOutcome().ok)  # True
        ```
    """

    streams: list[StreamLoadResult] = field(default_factory=list)
    failed: dict[str, Load] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    log_names_streams: bool = True
    source_name: str | None = None
    asset_keys: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether nothing failed and nothing is still pending."""
        return not self.failed and not self.pending


async def settle_loads(
    ctx: SyncContext, handle: StitchSyncHandle, job: Extraction, log: LogScan | None
) -> LoadOutcome:
    """Follow a successful job's data into the warehouse (``"wait"``), or look once.

    Args:
        ctx: The sync's context (its options say how: ``loads``, the load wait's bound,
            the poll interval).
        handle: The job's handle (the source's name, its load records before the job).
        job: The job's final extraction record (its name, its completion time).
        log: The job's log, when it was already read (streams with rows).

    Returns:
        The outcome (failed streams, pending streams, one entry per stream).

    Raises:
        StitchAPIError: Stitch could not be read (beyond the tolerated failures).
    """
    source_name = handle.source_name
    if source_name is None:
        source_name = (await ctx.client.get_source(ctx.source_id)).name
    wait = LoadWait(ctx, job, source_name or "", handle.baseline_loads or (), log)
    await wait.learn_selected_streams()
    watch = ctx.poller.watch(ctx.options.poll_interval_seconds, extractions=False, loads=True)
    try:
        await wait.follow(watch)
    finally:
        watch.close()
    return await wait.outcome()


class LoadWait:
    """One job's wait for its loads: which streams must load, and where they stand."""

    def __init__(
        self,
        ctx: SyncContext,
        job: Extraction,
        source_name: str,
        baseline: Sequence[Load],
        log: LogScan | None,
    ) -> None:
        self.ctx, self.job, self.source_name, self.baseline = ctx, job, source_name, baseline
        self.log = log
        self.mode: LoadsMode = ctx.options.loads
        self.selected: set[StreamRef] = set()
        self.expected: set[StreamRef] = set()
        self.log_read = False
        self.log_names_streams = True
        self.listed: Sequence[Load] = ()
        self.verdict: LoadVerdict | None = None
        self.deadline = time.monotonic()
        """When the wait ends: set as it starts (after the streams and the log were read)."""
        self.failures = self.stalled = self.landed = 0

    async def learn_selected_streams(self) -> None:
        """The selected streams; the log's streams with rows among them, when it was read."""
        self.selected, unreadable = await _selected_streams(self.ctx)
        if unreadable is not None and (self.log is None or not self.log.names_streams):
            # Without the selected streams, only the log can say which streams must load.
            self.log = await _scan(self.ctx, self.job.job_name)
            if self.log is None or not self.log.names_streams:
                raise unreadable  # nobody could vouch for the loads
        self.expected = set(self.selected)
        if self.log is not None and self.log.names_streams:
            self.expected, self.log_read = _expected(self.log, self.selected), True

    def judge(self) -> LoadVerdict:
        """Judge the latest loads listing for the expected streams."""
        return judge_loads(
            source_name=self.source_name,
            expected=self.expected,
            completed_at=self.job.completion_time,
            baseline=self.baseline,
            current=self.listed,
        )

    async def read_log(self) -> LoadVerdict:
        """Which streams received rows? Read the log once, and judge the listing again."""
        self.log, self.log_read = await _scan(self.ctx, self.job.job_name), True
        if self.log is not None and self.log.names_streams:
            self.expected = _expected(self.log, self.selected)
        else:
            self.log_names_streams = False
            self.ctx.logger.warning(
                "The log of Stitch job %s does not say which streams received rows: "
                "waiting for every selected stream of source %s to load (%s)",
                self.job.job_name,
                self.ctx.source_id,
                ", ".join(sorted(map(str, self.expected))) or "none selected",
            )
        return self.judge()

    def settled(self) -> bool:
        """Whether the latest verdict ends the wait (a failure, or every load landed)."""
        return self.verdict is not None and bool(self.verdict.failed or self.verdict.done)

    def log_needed(self, stalled: int) -> bool:
        """Whether only the log can settle the job now (it costs a jobs request)."""
        if self.settled() or self.log_read:
            return False
        near_end = self.deadline - time.monotonic() < 3 * self.ctx.options.poll_interval_seconds
        return self.mode == "check" or stalled > _STALLED_LISTINGS or near_end

    def begin(self) -> None:
        """Start the wait's clock (after the streams, and maybe the log, were read)."""
        wait = self.ctx.options.max_load_wait_seconds if self.mode == "wait" else 0
        self.deadline = time.monotonic() + wait
        self.failures = self.stalled = self.landed = 0

    @property
    def over(self) -> bool:
        """Whether the wait is over: settled, nothing left to learn, or (wait) out of time."""
        if self.settled() or (not self.expected and self.log_read):
            return True
        return self.mode == "wait" and self.verdict is not None and self.seconds_left() <= 0

    def seconds_left(self) -> float:
        """Seconds left of the load wait (``check``: none)."""
        return self.deadline - time.monotonic()

    async def follow(self, watch: Watch) -> None:
        """Read the loads listing until the loads settle, the wait ends, or (check) once.

        While waiting (``"wait"``), the first listing judged is the account's latest, when
        it is at most a tick old and has the loads: a resumed run's is the one on which
        the watcher saw the loads land, so it reports at once instead of a tick later. It
        is never older than the listing that showed the job's end (it is the newest this
        process has), and a load counts when Stitch's own times put it after the job's
        completion. ``"check"`` looks once, at the next listing: the loads get a tick to
        land or fail, as before.
        """
        self.begin()
        interval = self.ctx.options.poll_interval_seconds
        next_listing = watch.baseline if self.mode == "wait" else watch.next_snapshot
        while not self.over:
            left = self.seconds_left()
            wait = max(left, 0.0) if self.mode == "wait" else max(4 * interval, 120.0)
            try:
                snapshot = await next_listing(wait)
            except TimeoutError:
                break
            next_listing = watch.next_snapshot
            if await self.take(snapshot) and self.mode == "check":
                break

    async def take(self, snapshot: Snapshot) -> bool:
        """Judge one listing of the account's loads (reading the job's log when stalled).

        Args:
            snapshot: The listing.

        Returns:
            Whether the listing was judged (``False``: it failed, or had no loads).

        Raises:
            StitchAPIError: Stitch could not be read (beyond the tolerated failures).
        """
        if snapshot.error is not None or snapshot.loads is None:
            self.failures += 1
            if snapshot.error is not None and (
                not is_transient(snapshot.error) or self.failures > self.ctx.max_poll_failures
            ):
                raise snapshot.error
            return False
        self.failures, self.listed = 0, snapshot.loads
        self.verdict = self.judge()
        self.stalled = self.stalled + 1 if len(self.verdict.loaded) <= self.landed else 0
        self.landed = len(self.verdict.loaded)
        if self.log_needed(self.stalled):
            self.verdict = await self.read_log()  # the listing alone cannot settle it
        if not self.settled():
            self._log_progress()
        return True

    def _log_progress(self) -> None:
        """Say which streams have landed and which are still awaited (DEBUG)."""
        assert self.verdict is not None
        self.ctx.logger.debug(
            "Loads of Stitch job %s: %d of %d streams landed; waiting for %s",
            self.job.job_name,
            len(self.verdict.loaded),
            len(self.expected),
            ", ".join(sorted(map(str, self.verdict.pending | set(self.verdict.old_errors)))),
        )

    async def outcome(self) -> LoadOutcome:
        """How the loads ended: failed streams, pending ones, an entry per stream."""
        if self.mode == "wait" and not self.log_read and not self.settled():
            # The wait ran out before the log was read (a slow or late listing): a stream
            # that received no rows never loads, so only the log can say which of the
            # pending streams this job still owes.
            self.verdict = await self.read_log()
        verdict = self.verdict or LoadVerdict({}, {}, {}, set(self.expected))
        failed = dict(verdict.failed)
        if self.mode == "check" or not verdict.pending:
            failed.update(verdict.old_errors)  # an error is all there is for these streams
        outcome = LoadOutcome(source_name=self.source_name)
        outcome.log_names_streams = self.log_names_streams
        names = _display_names(self.selected | self.expected)
        outcome.failed = {names[ref]: load for ref, load in sorted(failed.items(), key=_by_name)}
        if self.mode == "wait" and not verdict.failed:
            late = verdict.pending | (set(verdict.old_errors) - set(failed))
            outcome.pending = sorted(names[ref] for ref in late)
        destination = await _destination(self.ctx) if verdict.loaded else None
        outcome.streams = _entries(
            self.selected | self.expected,
            self.expected,
            verdict,
            self.mode,
            destination,
            self.source_name,
        )
        if destination is not None:
            outcome.asset_keys = [
                (entry.asset_key, entry.stream_name)
                for entry in outcome.streams
                if entry.state == "loaded" and entry.asset_key
            ]
        return outcome


def _expected(log: LogScan, selected: set[StreamRef]) -> set[StreamRef]:
    """The streams that received rows, among the selected ones (if the list was read).

    The log names streams by name: every selected stream of that name received rows (two
    streams may share a name; their loads are then told apart by their ids).
    """
    named = log.streams_with_rows
    if not selected:
        return {StreamRef(name) for name in named}
    return {ref for ref in selected if ref.name in named}


def _by_name(item: tuple[StreamRef, Load]) -> str:
    """Sort key: a stream's name."""
    return str(item[0])


def _display_names(refs: set[StreamRef]) -> dict[StreamRef, str]:
    """Each stream's name in the result and the error: its name, with its id if repeated."""
    counts = Counter(ref.name for ref in refs)
    return {ref: ref.name if counts[ref.name] == 1 else str(ref) for ref in refs}


def _entries(
    streams: set[StreamRef],
    expected: set[StreamRef],
    verdict: LoadVerdict | None,
    mode: LoadsMode = "wait",
    destination: Destination | None = None,
    source_name: str = "",
) -> list[StreamLoadResult]:
    """One entry per stream that counts, by name."""
    return [
        _entry(ref, ref in expected, verdict, mode, destination, source_name)
        for ref in sorted(streams, key=str)
    ]


def _entry(
    ref: StreamRef,
    expected: bool,
    verdict: LoadVerdict | None,
    mode: LoadsMode,
    destination: Destination | None,
    source_name: str,
) -> StreamLoadResult:
    """One stream's entry in the result: loaded, failed (with Stitch's words), or not."""
    entry = StreamLoadResult(stream_name=ref.name, stream_id=ref.stream_id, state="no_rows")
    if not expected or verdict is None:
        return entry
    if ref in verdict.loaded:
        key = asset_key(destination, source_name, ref.name) if destination else None
        loaded = verdict.loaded[ref].last_batch_loaded_at
        return entry.model_copy(
            update={"state": "loaded", "last_batch_loaded_at": loaded, "asset_key": key}
        )
    failed = verdict.failed.get(ref) or verdict.old_errors.get(ref)
    if failed is not None:
        return entry.model_copy(
            update={
                "state": "failed",
                "last_batch_loaded_at": failed.last_batch_loaded_at,
                "warehouse_message": failed.warehouse_message,
                "error": failed.details,
            }
        )
    state: Any = "unchecked" if mode == "check" else "not_loaded"
    return entry.model_copy(update={"state": state})


async def _selected_streams(ctx: SyncContext) -> tuple[set[StreamRef], StitchError | None]:
    """The source's selected streams, or the error that kept them unknown."""
    try:
        streams = await ctx.client.list_streams(ctx.source_id)
    except StitchError as exc:
        ctx.logger.warning("Could not list the streams of source %s: %s", ctx.source_id, exc)
        return set(), exc
    selected = (stream for stream in streams if stream.is_selected)
    return {StreamRef(stream.stream_name, stream.stream_id) for stream in selected}, None


async def _scan(ctx: SyncContext, job_name: str) -> LogScan | None:
    """The job's whole log, scanned for the streams with rows; ``None`` if unread."""
    try:
        return await ctx.client.scan_extraction_log(job_name, tail_lines=0)
    except StitchError as exc:
        ctx.logger.warning("Could not read the log of Stitch job %s: %s", job_name, exc)
        return None


async def _destination(ctx: SyncContext) -> Destination | None:
    """The account's destination, read once per process; ``None`` (with a warning) if unknown."""
    key = (ctx.client.base_url, ctx.client_id)
    if key in _destinations:
        return _destinations[key]
    try:
        destinations = await ctx.client.list_destinations()
    except StitchError as exc:
        ctx.logger.warning(
            "Could not read the Stitch destination (%s): the loaded tables get no Prefect "
            "assets this time",
            exc,
        )
        return None
    destination = destinations[0] if destinations else None
    if destination is None or destination.database is None:
        ctx.logger.warning(
            "The Stitch account has no destination with a database: the loaded tables get no "
            "Prefect assets"
        )
        destination = None
    _destinations[key] = destination
    return destination


async def with_load_baseline(ctx: SyncContext, handle: StitchSyncHandle) -> StitchSyncHandle:
    """Give a handle without one the source's load records as they are now.

    Args:
        ctx: The sync's context.
        handle: The handle (from a job name, or a trigger that did not read them).

    Returns:
        The handle, with the source's name and load records.
    """
    name = handle.source_name or (await ctx.client.get_source(handle.source_id)).name or ""
    watch = ctx.poller.watch(LOOKUP_INTERVAL_SECONDS, loads=True)
    try:
        snapshot = await watch.baseline(ctx.remaining())
    finally:
        watch.close()
    if snapshot.error is not None:
        raise snapshot.error
    loads = tuple(r for r in snapshot.loads or () if r.source_name == name)
    return handle.model_copy(update={"source_name": name, "baseline_loads": loads})
