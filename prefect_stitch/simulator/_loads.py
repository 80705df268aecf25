"""The load book: when each stream's rows land in the destination, and what `/loads` lists.

A successful job plans one load attempt per stream that received rows, at its completion plus
the stream's delay (`StreamLoad`); until an attempt lands, the stream's record still shows its
previous attempt (or no record at all). Not thread-safe: `SimulatorState` calls it under its
lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect_stitch.simulator._catalogue import Source
from prefect_stitch.simulator._clock import iso
from prefect_stitch.simulator._outcomes import Outcome, StreamLoad


@dataclass(frozen=True)
class LoadAttempt:
    """One attempt to load a stream: when it lands, and its error (None: a success)."""

    at: float
    error: str | None


class LoadBook:
    """Each stream's latest landed load attempt, and the attempts still to land.

    Example:
        >>> from prefect_stitch.simulator._loads import LoadBook
        >>> LoadBook().records(oldest=0.0, client_id=116078, sources={})
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
            attempt = LoadAttempt(at=completed_at + plan.delay_seconds, error=error)
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
        self, oldest: float, client_id: int, sources: dict[int, Source]
    ) -> list[dict[str, Any]]:
        """The Load records landed since `oldest`, by stream then source name."""
        records = [
            {
                "stitch_client_id": client_id,
                "source_name": sources[source_id].name,
                "stream_name": stream,
                "last_batch_loaded_at": None if attempt.error else iso(attempt.at),
                "error_state": None if attempt.error is None else _error_state(attempt.error),
            }
            for (source_id, stream), attempt in self._landed.items()
            if attempt.at >= oldest
        ]
        records.sort(key=lambda r: (r["stream_name"], r["source_name"]))
        return records


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
            "warehouse_sql_state": None,
            "action": "get-connection",
            "warehouse_message": message,
            "column": None,
        },
        "exception_chain": [
            {"class": "LoaderError", "message": message, "chain_sequence_num": 0, "action": None}
        ],
    }
