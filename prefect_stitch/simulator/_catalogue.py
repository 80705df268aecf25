"""The account's catalogue: its sources (with their streams and outcomes) and its destination.

It answers what `GET /v4/sources`, `/v4/sources/{id}`, `/v4/sources/{id}/streams` and
`/v4/destinations` return. Not thread-safe: `SimulatorState` calls it under its lock.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from prefect_stitch.simulator._clock import iso
from prefect_stitch.simulator._outcomes import Outcome

_SCHEDULE_MINUTES = 60
_FIRST_STREAM_ID = 2288740  # stream IDs count up from here, in the range of Stitch's examples
_FIRST_DESTINATION_ID = 155582


class SourceOptions(TypedDict):
    """The options of `SimulatorState.add_source` besides the ID and the outcomes.

    The control API accepts exactly these names in `POST /_simulator/sources`.
    """

    name: str | None
    display_name: str | None
    type: str
    paused: bool
    deleted: bool
    streams: Sequence[str]
    stream_names: Mapping[str, str] | None
    selected: Sequence[str] | None
    deselected: Sequence[str]
    log_lines: int
    log_line_bytes: int | None


SOURCE_OPTIONS: frozenset[str] = SourceOptions.__required_keys__
"""The names of `SourceOptions`."""


@dataclass
class Source:
    """One source (Stitch "integration"): what the API shows of it and what its jobs do.

    Example:
        >>> from prefect_stitch.simulator import StitchSimulator
        >>> sim = StitchSimulator()
        >>> _ = sim.add_source(1, streams=("orders",))
        >>> sim.streams(1)[0]["stream_name"]
        'orders'
    """

    source_id: int
    name: str
    display_name: str
    type: str
    created_at: float
    updated_at: float
    paused_at: float | None
    deleted_at: float | None
    outcomes: list[Outcome]
    streams: tuple[str, ...]
    selection: dict[str, bool | None]  # stream -> selected (None: never selected)
    stream_ids: dict[str, int]
    stream_names: dict[str, str]  # stream -> its table name, where it differs from the stream
    log_lines: int
    log_line_bytes: int | None
    check_job_name: str
    next_outcome: int = 0

    @property
    def tap_name(self) -> str:
        """The tap of the source's type: `platform.hubspot` runs `tap-hubspot`."""
        return "tap-" + self.type.rsplit(".", 1)[-1].replace("_", "-")

    def stream_name_of(self, stream: str) -> str:
        """The stream's `stream_name` (its table name): mapped in `stream_names`, or itself."""
        return self.stream_names.get(stream, stream)

    @property
    def schedulable(self) -> bool:
        """Whether Stitch's scheduler starts jobs for it (neither paused nor deleted)."""
        return self.paused_at is None and self.deleted_at is None

    def take_outcome(self) -> Outcome:
        """The outcome of the next started job (the last one repeats)."""
        outcome = self.outcomes[min(self.next_outcome, len(self.outcomes) - 1)]
        self.next_outcome += 1
        return outcome

    def set_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        """Replace the outcomes after checking each; the next job takes the first one."""
        if not outcomes:
            raise ValueError("outcomes must not be empty")
        for outcome in outcomes:
            self.check_outcome(outcome)
        self.outcomes = list(outcomes)
        self.next_outcome = 0

    def check_outcome(self, outcome: Outcome) -> None:
        """Raise ValueError if the outcome's rows or loads name a stream the source lacks."""
        named = {stream for stream, _ in outcome.rows or ()} | {s for s, _ in outcome.loads}
        unknown = named - set(self.streams)
        if unknown:
            raise ValueError(
                f"outcome names streams {sorted(unknown)} that source {self.source_id} does not"
                f" have (its streams: {list(self.streams)})"
            )

    def stream_rows(self, outcome: Outcome) -> list[tuple[str, int]]:
        """The selected streams that receive rows in a job with this outcome, in stream order."""
        if outcome.kind != "success":
            return []
        selected = [stream for stream in self.streams if self.selection[stream]]
        if outcome.rows is None:
            return [(stream, 100 * (index + 1)) for index, stream in enumerate(selected)]
        counts = dict(outcome.rows)
        return [(stream, counts[stream]) for stream in selected if counts.get(stream, 0) > 0]

    def update(self, changes: Mapping[str, Any], now: float) -> None:
        """Apply a PUT body: `paused_at` (null unpauses, any value pauses) and `display_name`."""
        if "paused_at" in changes:
            if changes["paused_at"] is None:
                self.paused_at = None
            elif self.paused_at is None:
                self.paused_at = now  # "any value pauses it immediately"
        if isinstance(changes.get("display_name"), str):
            self.display_name = changes["display_name"]
        self.updated_at = now


def _selection(
    streams: Sequence[str], selected: Sequence[str] | None, deselected: Sequence[str]
) -> dict[str, bool | None]:
    """Each stream's `selected` value (true, false or never selected: null), checked."""
    names = tuple(streams)
    if isinstance(streams, str) or len(set(names)) != len(names):
        raise ValueError("streams must be a sequence of distinct stream names")
    chosen = set(names) - set(deselected) if selected is None else set(selected)
    dropped = set(deselected)
    if (chosen | dropped) - set(names) or chosen & dropped:
        raise ValueError(f"selected/deselected must be disjoint subsets of the streams {names}")
    return {s: True if s in chosen else False if s in dropped else None for s in names}


def _stream_names(streams: Sequence[str], names: Mapping[str, str] | None) -> dict[str, str]:
    """The table names of the mapped streams (identity -> `stream_name`), checked."""
    if names is None:
        return {}
    if not isinstance(names, Mapping):
        raise ValueError("stream_names must map stream identities to table names")
    unknown = set(names) - set(streams)
    if unknown:
        raise ValueError(f"stream_names names streams {sorted(unknown)} not in {list(streams)}")
    for stream, name in names.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"the table name of {stream!r} must be a non-empty string")
    return dict(names)


class SourceCatalogue:
    """The account's sources and its one destination, and their API objects.

    Args:
        client_id: The Stitch client (account) ID the objects carry.

    Example:
        >>> from prefect_stitch.simulator._catalogue import SourceCatalogue
        >>> catalogue = SourceCatalogue(client_id=116078)
        >>> [d["type"] for d in catalogue.destinations()]
        []
    """

    def __init__(self, client_id: int) -> None:
        self.client_id = client_id
        self.sources: dict[int, Source] = {}
        self._next_stream_id = _FIRST_STREAM_ID
        self._next_destination_id = _FIRST_DESTINATION_ID
        self._destination: dict[str, Any] | None = None

    # -- sources --------------------------------------------------------------------------

    def add(
        self, source_id: int, now: float, outcomes: list[Outcome], options: SourceOptions
    ) -> Source:
        """Add a source (see `SimulatorState.add_source`); raise ValueError on bad options."""
        if not outcomes:
            raise ValueError("outcomes must not be empty")
        selection = _selection(options["streams"], options["selected"], options["deselected"])
        line_bytes = options["log_line_bytes"]
        if line_bytes is not None and line_bytes < 1:
            raise ValueError("log_line_bytes must be >= 1 or None")
        if source_id in self.sources:
            raise ValueError(f"source {source_id} already exists")
        short = options["type"].rsplit(".", 1)[-1]
        name = options["name"]
        source = Source(
            source_id=source_id,
            name=name if name is not None else f"{short.lower()}_{source_id}",
            display_name=options["display_name"] or f"{short.capitalize()} {source_id}",
            type=options["type"],
            created_at=now,
            updated_at=now,
            paused_at=now if options["paused"] else None,
            deleted_at=now if options["deleted"] else None,
            outcomes=outcomes,
            streams=tuple(selection),
            selection=selection,
            stream_ids={},
            stream_names=_stream_names(tuple(selection), options["stream_names"]),
            log_lines=max(1, int(options["log_lines"])),
            log_line_bytes=None if line_bytes is None else int(line_bytes),
            check_job_name=f"{self.client_id}.{source_id}.check.{uuid.uuid4()}",
        )
        source.set_outcomes(outcomes)
        for stream in source.streams:
            source.stream_ids[stream] = self._next_stream_id
            self._next_stream_id += 1
        self.sources[source_id] = source
        return source

    def get(self, source_id: int) -> Source:
        """The source; KeyError("unknown source N") if there is none."""
        try:
            return self.sources[int(source_id)]
        except KeyError:
            raise KeyError(f"unknown source {source_id}") from None

    def source_object(self, source: Source, now: float, next_start: float | None) -> dict[str, Any]:
        """The Source object, as `GET /v4/sources/{id}` returns it.

        Args:
            source: The source.
            now: Stitch's clock.
            next_start: When Stitch's scheduler next tries a start for it, if planned.

        Returns:
            The object; its schedule fires hourly from the source's creation, or at
            `next_start` if that is sooner, and is null while the source is paused or deleted.
        """
        return {
            "id": source.source_id,
            "name": source.name,
            "display_name": source.display_name,
            "type": source.type,
            "stitch_client_id": self.client_id,
            "created_at": iso(source.created_at),
            "updated_at": iso(source.updated_at),
            "deleted_at": None if source.deleted_at is None else iso(source.deleted_at),
            "paused_at": None if source.paused_at is None else iso(source.paused_at),
            "system_paused_at": None,
            "schedule": _schedule(source, now, next_start) if source.schedulable else None,
            "check_job_name": source.check_job_name,
            "properties": {},
            "report_card": {
                "type": source.type,
                "current_step": 2,
                "current_step_type": "fully_configured",
                "steps": [],
            },
        }

    @staticmethod
    def stream_objects(source: Source) -> list[dict[str, Any]]:
        """The Stream objects, as `GET /v4/sources/{id}/streams` returns them."""
        return [
            {
                "stream_id": source.stream_ids[stream],
                "selected": source.selection[stream],
                "stream_name": source.stream_name_of(stream),
                "tap_stream_id": stream,
                "metadata": {
                    "selected": source.selection[stream],
                    "forced-replication-method": "INCREMENTAL",
                    "table-key-properties": ["id"],
                    "valid-replication-keys": ["updated_at"],
                },
            }
            for stream in source.streams
        ]

    # -- the destination ------------------------------------------------------------------

    def set_destination(
        self, type: str, database: str, properties: dict[str, Any], now: float
    ) -> dict[str, Any]:
        """Create or update (same `id`) the destination; see `SimulatorState.set_destination`."""
        name = str(properties.pop("name", "Default Warehouse"))
        if self._destination is None:
            destination_id, created = self._next_destination_id, iso(now)
            self._next_destination_id += 1
        else:
            destination_id = self._destination["id"]
            created = self._destination["created_at"]
        self._destination = {
            "id": destination_id,
            "name": name,
            "display_name": None,
            "type": type,
            "stitch_client_id": self.client_id,
            "created_at": created,
            "updated_at": iso(now),
            "paused_at": None,
            "system_paused_at": None,
            "deleted_at": None,
            "properties": _destination_properties(type, database, properties),
            "report_card": {
                "type": type,
                "current_step": 2,
                "current_step_type": "fully_configured",
                "steps": [
                    {"type": "form", "properties": []},
                    {"type": "fully_configured", "properties": []},
                ],
            },
        }
        return dict(self._destination)

    def remove_destination(self) -> None:
        """Remove the destination: the list is then empty."""
        self._destination = None

    def destinations(self) -> list[dict[str, Any]]:
        """The Destination objects, as `GET /v4/destinations` returns them (zero or one)."""
        return [] if self._destination is None else [dict(self._destination)]


def _schedule(source: Source, now: float, next_start: float | None) -> dict[str, Any]:
    """The Source object's interval schedule and its next fire time."""
    period = _SCHEDULE_MINUTES * 60
    fires = math.floor((now - source.created_at) / period) + 1
    next_fire = source.created_at + fires * period
    if next_start is not None:
        next_fire = min(next_fire, next_start)
    return {
        "type": "interval",
        "unit": "minute",
        "interval": _SCHEDULE_MINUTES,
        "next_fire_time": iso(next_fire),
    }


def _destination_properties(
    type: str, database: str, properties: Mapping[str, Any]
) -> dict[str, Any]:
    """The destination's connection properties, scalars as strings (`"port": "5432"`), sorted."""
    values: dict[str, Any] = {
        "database": database,
        "encryption_type": "none",
        "host": f"{type}.warehouse.example.com",
        "port": "5432" if type == "postgres" else "443",
        "ssl": "true",
        "username": "stitch",
    }
    for key, value in properties.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int | float):
            value = str(value)
        values[key] = value
    return dict(sorted(values.items()))
