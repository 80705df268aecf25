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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from prefect_stitch._lineage import asset_key
from prefect_stitch._logscan import LogScan
from prefect_stitch._poll.poller import poller_for
from prefect_stitch._verdict import LoadVerdict, judge_loads
from prefect_stitch.client import StitchClient, is_transient
from prefect_stitch.credentials import StitchCredentials
from prefect_stitch.errors import StitchError
from prefect_stitch.models import Destination, Load, StreamLoadResult

__all__ = ["LoadOutcome", "LoadsMode", "settle_loads"]

LoadsMode = Literal["wait", "check", "ignore"]

_destinations: dict[tuple[str, int], Destination | None] = {}
_STALLED_LISTINGS = 2
"""Listings in a row without a new load before the job's log is read (it costs budget)."""


@dataclass
class LoadOutcome:
    """How the job's loads ended.

    Attributes:
        streams: One entry per stream that counts (selected, or named by the log).
        failed: Failed streams and the warehouse's message.
        pending: Streams whose load did not land in time (``"wait"`` only).
        log_names_streams: Whether the job's log said which streams received rows.
        source_name: The source's ``name`` (its schema in the warehouse).
        asset_keys: ``(asset key, table)`` of every table loaded, when the destination
            is known.

    Example:
        ```python
        from prefect_stitch._loads import LoadOutcome

        print(LoadOutcome().ok)  # True
        ```
    """

    streams: list[StreamLoadResult] = field(default_factory=list)
    failed: dict[str, str | None] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    log_names_streams: bool = True
    source_name: str | None = None
    asset_keys: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether nothing failed and nothing is still pending."""
        return not self.failed and not self.pending


async def settle_loads(
    client: StitchClient,
    credentials: StitchCredentials,
    client_id: int,
    *,
    source_id: int,
    job_name: str,
    completed_at: Any,
    mode: LoadsMode,
    baseline: Sequence[Load] | None,
    log: LogScan | None,
    poll_interval_seconds: float,
    max_load_wait_seconds: float,
    max_poll_failures: int,
    logger: Any,
) -> LoadOutcome:
    """Follow a successful job's data into the warehouse (``"wait"``), or look once.

    Args:
        client: An open client.
        credentials: The account's credentials (for its shared poller).
        client_id: The account.
        source_id: The source.
        job_name: The job.
        completed_at: The job's ``completion_time`` (Stitch's clock).
        mode: ``"wait"`` or ``"check"``.
        baseline: The source's load records listed before the job started.
        log: The job's log, when it was already read (streams with rows).
        poll_interval_seconds: Seconds between readings of the loads listing.
        max_load_wait_seconds: How long to wait for the loads (``"wait"``).
        max_poll_failures: Consecutive failed readings tolerated.
        logger: The run logger.

    Returns:
        The outcome (failed streams, pending streams, one entry per stream).

    Raises:
        StitchAPIError: Stitch could not be read (beyond the tolerated failures).

    Example:
        ```python
        from prefect_stitch._loads import settle_loads

        async def loaded(client, credentials, record, logger) -> bool:
            outcome = await settle_loads(
                client, credentials, 116078, source_id=record.source_id,
                job_name=record.job_name, completed_at=record.completion_time, mode="wait",
                baseline=[], log=None, poll_interval_seconds=30, max_load_wait_seconds=3600,
                max_poll_failures=5, logger=logger)
            return outcome.ok
        ```
    """
    source_name = (await client.get_source(source_id)).name or ""
    selected, unreadable = await _selected_streams(client, source_id, logger)
    outcome = LoadOutcome(source_name=source_name)
    if unreadable is not None and (log is None or not log.names_streams):
        # Without the selected streams, only the log can say which streams must load.
        log = await _scan(client, job_name, logger)
        if log is None or not log.names_streams:
            raise unreadable  # nobody could vouch for the loads
    expected, log_read = set(selected), False
    if log is not None and log.names_streams:
        expected, log_read = _expected(log, selected), True

    watch = poller_for(credentials, client_id, global_limit_name=client.global_limit_name).watch(
        poll_interval_seconds, extractions=False, loads=True
    )
    deadline = time.monotonic() + (max_load_wait_seconds if mode == "wait" else 0)
    verdict: LoadVerdict | None = None
    listed: Sequence[Load] = ()
    failures = stalled = landed = 0

    def judge(streams: set[str]) -> LoadVerdict:
        return judge_loads(
            source_name=source_name,
            expected=streams,
            completed_at=completed_at,
            baseline=baseline or (),
            current=listed,
        )

    async def read_log() -> LoadVerdict:
        """Which streams received rows? Read the log once, and judge the listing again."""
        nonlocal log, log_read, expected
        log, log_read = await _scan(client, job_name, logger), True
        if log is not None and log.names_streams:
            expected = _expected(log, selected)
        else:
            outcome.log_names_streams = False
            logger.warning(
                "The log of Stitch job %s does not say which streams received rows: "
                "waiting for every selected stream of source %s to load (%s)",
                job_name,
                source_id,
                ", ".join(sorted(expected)) or "none selected",
            )
        return judge(expected)

    try:
        while expected or not log_read:
            left = deadline - time.monotonic()
            if mode == "wait" and left <= 0 and verdict is not None:
                break
            wait = max(left, 0.0) if mode == "wait" else max(4 * poll_interval_seconds, 120.0)
            try:
                snapshot = await watch.next_snapshot(wait)
            except TimeoutError:
                break
            if snapshot.error is not None or snapshot.loads is None:
                failures += 1
                if snapshot.error is not None and (
                    not is_transient(snapshot.error) or failures > max_poll_failures
                ):
                    raise snapshot.error
                continue
            failures = 0
            listed = snapshot.loads
            verdict = judge(expected)
            stalled = stalled + 1 if len(verdict.loaded) <= landed else 0
            landed = len(verdict.loaded)
            if (
                not (verdict.failed or verdict.done)
                and not log_read
                and (
                    mode == "check"
                    or stalled > _STALLED_LISTINGS
                    or deadline - time.monotonic() < 3 * poll_interval_seconds
                )
            ):
                verdict = await read_log()  # the listing alone cannot settle it
            if verdict.failed or verdict.done or mode == "check":
                break
            logger.debug(
                "Loads of Stitch job %s: %d of %d streams landed; waiting for %s",
                job_name,
                len(verdict.loaded),
                len(expected),
                ", ".join(sorted(verdict.pending | set(verdict.old_errors))),
            )
    finally:
        watch.close()

    if mode == "wait" and not log_read and not (verdict and (verdict.failed or verdict.done)):
        # The wait ran out before the log was read (a slow or late listing): a
        # stream that received no rows never loads, so only the log can say which of the
        # pending streams this job still owes.
        verdict = await read_log()
    if verdict is None:
        verdict = LoadVerdict({}, {}, {}, set(expected))
    failed = dict(verdict.failed)
    if mode == "check" or not verdict.pending:
        failed.update(verdict.old_errors)  # an error is all there is for these streams
    outcome.failed = {stream: load.warehouse_message for stream, load in sorted(failed.items())}
    outcome.pending = (
        sorted(verdict.pending | (set(verdict.old_errors) - set(failed)))
        if mode == "wait" and not verdict.failed
        else []
    )
    destination = await _destination(client, client_id, logger) if verdict.loaded else None
    outcome.streams = _entries(
        selected | expected, expected, verdict, mode, destination, source_name
    )
    if destination is not None:
        outcome.asset_keys = [
            (entry.asset_key, entry.stream_name)
            for entry in outcome.streams
            if entry.state == "loaded" and entry.asset_key
        ]
    return outcome


def _expected(log: LogScan, selected: set[str]) -> set[str]:
    """The streams that received rows, among the selected ones (if the list was read)."""
    return log.streams_with_rows & selected if selected else set(log.streams_with_rows)


def _entries(
    streams: set[str],
    expected: set[str],
    verdict: LoadVerdict | None,
    mode: LoadsMode = "wait",
    destination: Destination | None = None,
    source_name: str = "",
) -> list[StreamLoadResult]:
    entries = []
    for stream in sorted(streams):
        key = asset_key(destination, source_name, stream) if destination else None
        if stream not in expected or verdict is None:
            entries.append(StreamLoadResult(stream_name=stream, state="no_rows"))
            continue
        if stream in verdict.loaded:
            load = verdict.loaded[stream]
            entries.append(
                StreamLoadResult(
                    stream_name=stream,
                    state="loaded",
                    last_batch_loaded_at=load.last_batch_loaded_at,
                    asset_key=key,
                )
            )
            continue
        failed = verdict.failed.get(stream) or verdict.old_errors.get(stream)
        if failed is not None:
            entries.append(
                StreamLoadResult(
                    stream_name=stream,
                    state="failed",
                    last_batch_loaded_at=failed.last_batch_loaded_at,
                    warehouse_message=failed.warehouse_message,
                )
            )
            continue
        state: Any = "unchecked" if mode == "check" else "not_loaded"
        entries.append(StreamLoadResult(stream_name=stream, state=state))
    return entries


async def _selected_streams(
    client: StitchClient, source_id: int, logger: Any
) -> tuple[set[str], StitchError | None]:
    """The source's selected streams, or the error that kept them unknown."""
    try:
        streams = await client.list_streams(source_id)
    except StitchError as exc:
        logger.warning("Could not list the streams of source %s: %s", source_id, exc)
        return set(), exc
    return {stream.stream_name for stream in streams if stream.is_selected}, None


async def _scan(client: StitchClient, job_name: str, logger: Any) -> LogScan | None:
    try:
        return await client.scan_extraction_log(job_name, tail_lines=0)
    except StitchError as exc:
        logger.warning("Could not read the log of Stitch job %s: %s", job_name, exc)
        return None


async def _destination(client: StitchClient, client_id: int, logger: Any) -> Destination | None:
    """The account's destination, read once per process; ``None`` (with a warning) if unknown."""
    key = (client.base_url, client_id)
    if key in _destinations:
        return _destinations[key]
    try:
        destinations = await client.list_destinations()
    except StitchError as exc:
        logger.warning(
            "Could not read the Stitch destination (%s): the loaded tables get no Prefect "
            "assets this time",
            exc,
        )
        return None
    destination = destinations[0] if destinations else None
    if destination is None or destination.database is None:
        logger.warning(
            "The Stitch account has no destination with a database: the loaded tables get no "
            "Prefect assets"
        )
        destination = None
    _destinations[key] = destination
    return destination
