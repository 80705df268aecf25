"""``stitch_watch_flow``: an event for every Stitch job that ends, whoever started it.

Stitch's own schedule runs jobs nobody orchestrates; a team wants to hear when one of
them fails as much as when an orchestrated one does. The watcher reads the account's
extraction listing (through the account's shared poll, within the jobs budget) and emits
``stitch.sync.succeeded``, ``stitch.sync.failed`` or ``stitch.sync.terminated`` for
**every** job that completes, exactly once per job across watcher runs:

* a compact cursor in a Prefect Variable (``stitch-watch-<client_id>``) remembers the
  jobs already announced: the latest completion time seen (Stitch's clock) and short
  hashes of the jobs that completed in the lookback window before it; a Variable holds
  at most 5,000 characters, so the window shrinks when an account is very busy;
* each event's id is derived from the job's name and verdict, so even an event emitted
  twice (a run that crashed between emitting and saving its cursor, or a sync that
  waited for the same job) is kept once by the Prefect API.

The first run of an account only records what is listed: it announces the jobs that
complete from then on. With ``loads=True`` it also announces each *new* load error of a
stream (``stitch.sync.failed`` with ``"stage": "load"``).
"""

import asyncio
import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from prefect_stitch._engine.outcomes import SyncReport, report
from prefect_stitch._engine.outcomes import event_id as event_id  # a job verdict event's id
from prefect_stitch._engine.resume import Resumer
from prefect_stitch._engine.runner import load_credentials, run_cancellable
from prefect_stitch._engine.suspension import PRESENCE_SECONDS, Presence
from prefect_stitch._poll import Snapshot, Watch, poller_for
from prefect_stitch._verdict import judge_extraction
from prefect_stitch.credentials import StitchCredentials
from prefect_stitch.errors import StitchConfigurationError
from prefect_stitch.models import Extraction, Load, SyncStatus, stitch_source_url

__all__ = [
    "StitchWatchSummary",
    "WatchCursor",
    "run_stitch_watch",
    "stitch_watch_flow",
]

_MAX_CURSOR_CHARS = 4800
_HASH_CHARS = 10
DEFAULT_LOOKBACK = timedelta(hours=1)


def _job_hash(job_name: str) -> str:
    """A job's short fingerprint in the cursor."""
    return hashlib.sha256(job_name.encode()).hexdigest()[:_HASH_CHARS]


@dataclass
class WatchCursor:
    """Which completed jobs were already announced, compactly (it lives in a Variable).

    Attributes:
        watermark: The latest completion time seen (Stitch's clock), if any.
        seen: Short hashes of announced jobs, with their completion time (epoch s).
        lookback: Jobs that completed this long before the watermark are still checked
            against ``seen`` (a listing may show a job late); older ones are not news.

    Example:
        ```python
        from prefect_stitch.models import Extraction
        from prefect_stitch.watcher import WatchCursor

        cursor = WatchCursor()
        record = Extraction(job_name="j", source_id=1, completion_time="2026-01-01T00:00:00Z")
        print(cursor.is_new(record))  # True
        cursor.add(record)
        print(cursor.is_new(record))  # False
        ```
    """

    watermark: datetime | None = None
    seen: dict[str, int] = field(default_factory=dict)
    lookback: timedelta = DEFAULT_LOOKBACK

    def is_new(self, record: Extraction) -> bool:
        """Whether a completed record is a job not announced yet."""
        if record.completion_time is None:
            return False
        if self.watermark is not None and record.completion_time < self.watermark - self.lookback:
            return False
        return _job_hash(record.job_name) not in self.seen

    def add(self, record: Extraction) -> None:
        """Remember a job as announced."""
        if record.completion_time is None:
            return
        self.seen[_job_hash(record.job_name)] = int(record.completion_time.timestamp())
        if self.watermark is None or record.completion_time > self.watermark:
            self.watermark = record.completion_time
        self._prune()

    def _prune(self) -> None:
        """Forget jobs older than the window; shrink the window while the cursor is too big."""
        if self.watermark is None:
            return
        horizon = int((self.watermark - self.lookback).timestamp())
        self.seen = {h: t for h, t in self.seen.items() if t >= horizon}
        while len(self.dumps()) > _MAX_CURSOR_CHARS and self.seen:
            # Too busy for the window: keep the newer half, and shrink the window to it.
            times = sorted(self.seen.values())
            keep_from = times[len(times) // 2]
            self.seen = {h: t for h, t in self.seen.items() if t > keep_from}
            newest = int(self.watermark.timestamp())
            self.lookback = timedelta(seconds=max(newest - keep_from, 0))

    def dumps(self) -> str:
        """The cursor as the Variable's JSON text (at most ~4,800 characters)."""
        return json.dumps(
            {
                "v": 1,
                "w": None if self.watermark is None else self.watermark.isoformat(),
                "l": int(self.lookback.total_seconds()),
                "s": self.seen,
            },
            separators=(",", ":"),
        )

    @classmethod
    def loads(cls, text: str) -> "WatchCursor":
        """Read a cursor from the Variable's JSON text.

        Args:
            text: What `dumps` wrote.

        Returns:
            The cursor.

        Raises:
            ValueError: The text is not a cursor.
        """
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("v") != 1:
            raise ValueError("not a Stitch watch cursor")
        watermark = datetime.fromisoformat(data["w"]) if data.get("w") else None
        seen = {str(k): int(v) for k, v in dict(data.get("s") or {}).items()}
        return cls(watermark, seen, timedelta(seconds=int(data.get("l", 3600))))


class StitchWatchSummary(BaseModel):
    """What one watcher run saw and announced.

    Example:
        ```python
        from prefect_stitch.watcher import StitchWatchSummary

        print(StitchWatchSummary(client_id=1).announced)  # 0
        ```
    """

    client_id: int
    listings: int = Field(default=0, description="Listings read (or received).")
    announced: int = Field(default=0, description="Job verdicts announced.")
    succeeded: int = 0
    failed: int = 0
    terminated: int = 0
    load_failures: int = Field(default=0, description="New load errors announced.")
    jobs: list[str] = Field(default_factory=list, description="The jobs announced.")
    resumed: int = Field(default=0, description="Suspended syncs resumed.")
    cancelled: int = Field(
        default=0, description="Syncs cancelled while suspended whose jobs were stopped."
    )


def _variable_name(client_id: int) -> str:
    """The name of the account's cursor Variable."""
    return f"stitch-watch-{client_id}"


async def _read_cursor(client_id: int) -> WatchCursor | None:
    """The account's cursor, or ``None`` on a first run (or an unreadable one)."""
    from prefect.variables import Variable

    value: Any = await Variable.aget(_variable_name(client_id), default="")
    if not isinstance(value, str) or not value:
        return None
    try:
        return WatchCursor.loads(value)
    except (ValueError, KeyError, TypeError):
        get_run_logger().warning(
            "The watch cursor of account %s is unreadable: starting over", client_id
        )
        return None


async def _save_cursor(client_id: int, cursor: WatchCursor) -> None:
    """Save the account's cursor."""
    from prefect.variables import Variable

    await Variable.aset(_variable_name(client_id), cursor.dumps(), overwrite=True)


async def _announce(client_id: int, record: Extraction, summary: StitchWatchSummary) -> None:
    """Report a job that ended, through the same outcome table as a sync's verdict."""
    verdict = judge_extraction(record)
    if not verdict.state.is_final:
        return
    url = stitch_source_url(client_id, record.source_id)
    await report(
        SyncReport(
            verdict.state,
            record.source_id,
            client_id,
            f"Stitch job {record.job_name} of source {record.source_id} {verdict.state.value}: "
            f"{verdict.summary}. See {url}",
            record=record,
            failed_phases=verdict.failed_phases,
            summary=verdict.summary,
            payload={"watched": True},
        ),
        get_run_logger(),
        write_artifact=False,
    )
    summary.announced += 1
    setattr(summary, verdict.state.value, getattr(summary, verdict.state.value) + 1)
    summary.jobs.append(record.job_name)


async def _announce_load_errors(
    client_id: int,
    before: dict[tuple[str, str], Any],
    loads: tuple[Load, ...],
    summary: StitchWatchSummary,
) -> dict[tuple[str, str], Any]:
    """Report each stream whose load error is new since the last listing."""
    now: dict[tuple[str, str], Any] = {}
    for load in loads:
        key = (load.source_name, load.stream_name)
        now[key] = load.error_state
        if load.error_state is None or before.get(key) == load.error_state:
            continue
        fingerprint = hashlib.sha256(
            json.dumps(load.error_state, sort_keys=True, default=str).encode()
        ).hexdigest()[:16]
        message = load.warehouse_message
        await report(
            SyncReport(
                SyncStatus.LOAD_FAILED,
                None,
                client_id,
                f"Stitch could not load stream {load.stream_name} of {load.source_name}: "
                f"{message or 'no message from Stitch'}",
                stage="load",
                stream=key,
                payload={
                    "watched": True,
                    "source_name": load.source_name,
                    "stream_name": load.stream_name,
                    "warehouse_message": message,
                    "fingerprint": fingerprint,
                },
            ),
            get_run_logger(),
            write_artifact=False,
        )
        summary.load_failures += 1
    return now


class _Watcher:
    """One watcher run: the cursor, the announcements, the loads seen."""

    def __init__(
        self, client_id: int, cursor: WatchCursor | None, loads: bool, resumer: Resumer
    ) -> None:
        self.client_id = client_id
        self.first_run = cursor is None
        self.cursor = cursor or WatchCursor()
        self.loads = loads
        self.resumer = resumer
        self.load_states: dict[tuple[str, str], Any] | None = None
        self.summary = StitchWatchSummary(client_id=client_id)

    async def take(self, snapshot: Snapshot) -> None:
        """Announce what one listing shows that ended since (and save the cursor)."""
        self.summary.listings += 1
        changed = False
        await self.resumer.refresh()
        if snapshot.extractions_read:
            # A suspended sync's job is announced by the sync, with its loads' verdict; the
            # watcher announces it only if it is still listed once nobody waits for it.
            fresh = sorted(
                (
                    r
                    for r in snapshot.records
                    if self.cursor.is_new(r) and not self.resumer.follows(r)
                ),
                key=lambda r: r.completion_time or datetime.min.replace(tzinfo=UTC),
            )
            for record in fresh:
                if not self.first_run:
                    await _announce(self.client_id, record, self.summary)
                self.cursor.add(record)
                changed = True
            self.first_run = False
        if self.loads and snapshot.loads is not None:
            before = self.load_states
            if before is None:
                before = {(r.source_name, r.stream_name): r.error_state for r in snapshot.loads}
            self.load_states = await _announce_load_errors(
                self.client_id, before, snapshot.loads, self.summary
            )
        if changed:
            await _save_cursor(self.client_id, self.cursor)
        await self.resumer.take(snapshot)

    async def follow(self, watch: Watch, deadline: float | None) -> None:
        """Take listings until the deadline (or cancellation)."""
        while deadline is None or time.monotonic() < deadline:
            left = None if deadline is None else max(deadline - time.monotonic(), 0)
            try:
                snapshot = await watch.next_snapshot(left)
            except TimeoutError:
                return
            if snapshot.error is not None:
                get_run_logger().warning("Could not read the account's listing: %s", snapshot.error)
                continue
            await self.take(snapshot)
            # The loads listing is read while this run or a suspended sync needs it.
            watch.loads = self.loads or self.resumer.needs_loads


async def _keep_present(presence: Presence) -> None:
    """Say every ``PRESENCE_SECONDS`` that the watcher runs (suspending syncs count on it)."""
    while True:
        try:
            await presence.beat()
        except Exception as exc:  # the Prefect API may be away for a while
            get_run_logger().debug("Could not say that the watcher runs: %s", exc)
        await asyncio.sleep(PRESENCE_SECONDS)


async def run_stitch_watch(
    credentials: StitchCredentials | str = "stitch",
    *,
    poll_interval_seconds: float = 30.0,
    duration_seconds: float | None = None,
    loads: bool = False,
) -> StitchWatchSummary:
    """The body of `stitch_watch_flow`, as a coroutine.

    Args:
        credentials: A block or a block name.
        poll_interval_seconds: Seconds between listings (the budget may stretch it).
        duration_seconds: Stop after this long; ``None`` runs until cancelled.
        loads: Also announce new load errors.

    Returns:
        What the run saw and announced.

    Example:
        ```python
        import asyncio
        from prefect_stitch import run_stitch_watch

        summary = asyncio.run(run_stitch_watch("stitch", duration_seconds=600))
        ```
    """
    _check_watch(poll_interval_seconds, duration_seconds)
    resolved = await load_credentials(credentials)
    async with resolved.get_client() as client:
        client_id = await client.resolve_client_id()
        resumer = Resumer(resolved, client, client_id)
        watcher = _Watcher(client_id, await _read_cursor(client_id), loads, resumer)
        logger = get_run_logger()
        deadline = None if duration_seconds is None else time.monotonic() + duration_seconds
        logger.info(
            "Watching every Stitch job of account %s (%s); resuming its suspended syncs",
            client_id,
            "until cancelled" if deadline is None else f"for {duration_seconds:.0f} s",
        )
        presence = Presence(client_id, resolved.base_url)
        beating = asyncio.create_task(_keep_present(presence))
        watch = poller_for(resolved, client_id).watch(poll_interval_seconds, loads=loads)
        try:
            await watcher.follow(watch, deadline)
        finally:
            watch.close()
            beating.cancel()
            with contextlib.suppress(Exception):
                await presence.leave()
    summary = watcher.summary
    summary.resumed, summary.cancelled = resumer.resumed, resumer.cancelled
    logger.info(
        "Watched %d listings of account %s: %d jobs announced (%d failed, %d terminated); "
        "%d suspended syncs resumed",
        summary.listings,
        client_id,
        summary.announced,
        summary.failed,
        summary.terminated,
        summary.resumed,
    )
    return summary


def _check_watch(poll_interval_seconds: object, duration_seconds: object) -> None:
    """Refuse a bad interval or duration before any request."""
    if (
        isinstance(poll_interval_seconds, bool)
        or not isinstance(poll_interval_seconds, int | float)
        or not poll_interval_seconds > 0
    ):
        raise StitchConfigurationError(
            "poll_interval_seconds must be positive", parameter="poll_interval_seconds"
        )
    if duration_seconds is not None and not (
        isinstance(duration_seconds, int | float) and duration_seconds > 0
    ):
        raise StitchConfigurationError(
            "duration_seconds must be positive or None", parameter="duration_seconds"
        )


PositiveSeconds = Annotated[float, Field(gt=0)]


def _watch_run_name() -> str:
    """``stitch-watch-<credentials block>``: which account's jobs the run watches."""
    from prefect.runtime import flow_run

    credentials = flow_run.parameters.get("credentials", "stitch")
    if not isinstance(credentials, str):
        credentials = getattr(credentials, "_block_document_name", None) or "account"
    return f"stitch-watch-{credentials}"


@flow(
    name="stitch-watch",
    flow_run_name=_watch_run_name,
    description=(
        "Announce every Stitch job of the account that ends (Stitch's own schedule's too) "
        "with a stitch.sync.succeeded, failed or terminated event, exactly once per job."
    ),
    persist_result=True,
)
def stitch_watch_flow(
    credentials: StitchCredentials | str = "stitch",
    poll_interval_seconds: PositiveSeconds = 30.0,
    duration_seconds: PositiveSeconds | None = None,
    loads: bool = False,
) -> StitchWatchSummary:
    """Watch an account and emit an event for every job that completes, exactly once.

    Args:
        credentials: A StitchCredentials block, or the name of a saved one.
        poll_interval_seconds: Seconds between readings of the account's listing (shared
            with every sync of the account; the budget may stretch it).
        duration_seconds: Run this long (for a scheduled deployment), or, when empty,
            until the run is cancelled.
        loads: Also announce each new load error of a stream (stitch.sync.failed with
            stage "load").

    Returns:
        What the run saw and announced.

    Example:
        ```python
        from prefect_stitch import stitch_watch_flow

        summary = stitch_watch_flow(credentials="stitch", duration_seconds=600)
        print(summary.announced, summary.jobs)
        ```
    """
    return run_cancellable(
        lambda: run_stitch_watch(
            credentials,
            poll_interval_seconds=poll_interval_seconds,
            duration_seconds=duration_seconds,
            loads=loads,
        )
    )
