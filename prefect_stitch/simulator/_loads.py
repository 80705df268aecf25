"""The load book: when each stream's rows land in the destination, and what `/loads` lists.

A successful job plans one load attempt per stream that received rows, at its completion plus
the stream's delay (`StreamLoad`); until an attempt lands, the stream's record still shows its
previous attempt (or no record at all). Not thread-safe: `SimulatorState` calls it under its
lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect_stitch.simulator._catalogue import Source
from prefect_stitch.simulator._clock import iso
from prefect_stitch.simulator._outcomes import Outcome, StreamLoad


@dataclass(frozen=True)
class LoadAttempt:
    """One attempt to load a stream: when it lands, and its error (None: a success).

    A failed attempt's `error_state` is the scripted one, or (None) the default object built
    from its error.
    """

    at: float
    error: str | None
    error_state: Any = field(default=None, hash=False)

    def error_state_object(self) -> Any:
        """The record's `error_state`: null for a success, else the scripted or default one."""
        if self.error is None:
            return None
        return _error_state(self.error) if self.error_state is None else self.error_state


class LoadBook:
    """Each stream's latest landed load attempt, and the attempts still to land.

    Example:
        >>> from prefect_stitch.simulator._loads import LoadBook
        >>> LoadBook().records(oldest=0.0, client_id=116078, sources={}, with_stream_ids=False)
        []
    """

    def __init__(self) -> None:
        self._landed: dict[tuple[int, str], LoadAttempt] = {}
        self._pending: list[tuple[int, str, LoadAttempt]] = []

    def plan(self, source: Source, outcome: Outcome, completed_at: float) -> None:
        """Plan the load attempts of a successful job that completed at `completed_at`."""
        plans = dict(outcome.loads)
        for stream, _ in source.stream_rows(outcome):
            plan = plans.get(stream, StreamLoad())
            if plan.never:
                continue
            error = plan.error if plan.error is not None else outcome.load_error
            attempt = LoadAttempt(completed_at + plan.delay_seconds, error, plan.error_state)
            self._pending.append((source.source_id, stream, attempt))

    def seed(self, source_id: int, stream: str, attempt: LoadAttempt) -> None:
        """Set a stream's previous load record."""
        self._landed[source_id, stream] = attempt

    def land(self, now: float) -> None:
        """Land every planned attempt due by `now`; of two, the later one is the record."""
        keep = []
        for item in self._pending:
            source_id, stream, landing = item
            if landing.at > now:
                keep.append(item)
                continue
            previous = self._landed.get((source_id, stream))
            if previous is None or landing.at >= previous.at:  # the latest attempt wins
                self._landed[source_id, stream] = landing
        self._pending = keep

    def records(
        self, oldest: float, client_id: int, sources: dict[int, Source], with_stream_ids: bool
    ) -> list[dict[str, Any]]:
        """The load records of the attempts landed since `oldest`.

        Args:
            oldest: The oldest landing time listed (Stitch lists the past 60 days).
            client_id: The account's ID, which every record carries.
            sources: The account's sources by ID.
            with_stream_ids: Whether each record also carries its stream's `stream_id`.

        Returns:
            The records, sorted by stream name, then source name, then stream ID (two streams
            of a source may share a table name).
        """
        keyed = []
        for (source_id, stream), attempt in self._landed.items():
            if attempt.at < oldest:
                continue
            source = sources[source_id]
            record: dict[str, Any] = {
                "stitch_client_id": client_id,
                "source_name": source.name,
                "stream_name": source.stream_name_of(stream),
                "last_batch_loaded_at": None if attempt.error else iso(attempt.at),
                "error_state": attempt.error_state_object(),
            }
            if with_stream_ids:
                record["stream_id"] = source.stream_ids[stream]
            keyed.append(((record["stream_name"], source.name, source.stream_ids[stream]), record))
        keyed.sort(key=lambda pair: pair[0])
        return [record for _, record in keyed]


def _error_state(message: str) -> dict[str, Any]:
    """The `error_state` of a load that failed with `message`, as Stitch reports it."""
    return {
        "notification_data": {
            "message": message,
            "exception_message": message,
            "warehouse_error_code": 500151,
            "error": "LOADER_WAREHOUSE_ERROR",
            "new_column": None,
            "status": "ERROR",
            "warehouse_sql_state": "42501",
            "action": "get-connection",
            "warehouse_message": message,
            "column": None,
        },
        "exception_chain": [
            {"class": "LoaderError", "message": message, "chain_sequence_num": 0, "action": None}
        ],
    }
