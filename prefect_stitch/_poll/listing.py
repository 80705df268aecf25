"""The listing a leading poller shares with the others, and the changes between two.

A leader publishes each listing it reads (see `prefect_stitch._poll.sharing`). Sent whole, a
listing of a few hundred sources is tens of kilobytes: too big for a Prefect Variable
(5,000 characters), so it goes in an artifact, and every follower reads it after the
small Variable that says it changed; two Prefect calls between Stitch's answer and the
follower, and one more for the leader. Between two listings, though, only a few records
change (the jobs that ended). So the leader puts **the changes** in the Variable itself,
and writes the whole listing to the artifact afterwards, for followers that lack the
listing the changes apply to.

Pure and table-tested: rows, their keys, the changes, and their application.

* A listing's state is its header (tick, times, pages, error...) and its rows, by key:
  an extraction record is keyed by its source (Stitch lists one record per source), a
  load record by its source and stream. A listing with two rows of one key (Stitch never
  sends one) keys them apart by their order.
* A failed listing, or one that did not read a section (the extractions while only loads
  are awaited), leaves that section's rows as they were; its header says so, and the
  snapshot rebuilt from it has no records for that section.
* Every state is stamped with the leader that published it and its sequence number.
  The changes a leader publishes are relative to a *base* state it names; they hold every
  key touched since that base, so they apply to the base or to any later state of the
  same leader (a follower that missed a listing still catches up).
* Rows are kept sorted by key: a follower rebuilds exactly the state the leader has. The
  order of records carries no meaning in Stitch's listings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prefect_stitch._poll.snapshot import Snapshot
from prefect_stitch.errors import StitchAPIError, StitchError
from prefect_stitch.models import Extraction, Load

__all__ = ["MARKER_BUDGET", "HeldListing", "ListingState"]

MARKER_BUDGET = 4_500
"""Characters of JSON the listing Variable may hold (Prefect allows 5,000)."""
_SECTIONS = ("x", "l")  # extractions, loads
VERSION = 3


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


_FIELDS = {
    "x": (
        "job_name",
        "source_id",
        "start_time",
        "completion_time",
        "discovery_exit_status",
        "discovery_description",
        "tap_exit_status",
        "tap_description",
        "target_exit_status",
        "target_description",
    ),
    "l": ("source_name", "stream_name", "last_batch_loaded_at", "error_state"),
}
"""The fields of a row of each section, in order (a row is a JSON list of them)."""


def _row(section: str, record: Extraction | Load) -> list[Any]:
    values = (getattr(record, name) for name in _FIELDS[section])
    return [_iso(v) if isinstance(v, datetime) else v for v in values]


def _keyed(section: str, rows: list[list[Any]]) -> dict[str, list[Any]]:
    """Rows by key (a key seen twice is told apart by its order)."""
    keyed: dict[str, list[Any]] = {}
    seen: dict[str, int] = {}
    for row in rows:
        base = json.dumps(row[1] if section == "x" else row[:2])
        n = seen.get(base, 0)
        seen[base] = n + 1
        keyed[base if n == 0 else f"{base}#{n:06d}"] = row
    return keyed


def _sorted(rows: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {key: rows[key] for key in sorted(rows)}


@dataclass
class ListingState:
    """One account's listing as the processes share it: a header and rows by key.

    Attributes:
        leader: The id of the leader that published this state ("" before any).
        seq: Its sequence number (continues across leaders).
        header: The listing's tick, times, pages, which sections were read, its error.
        rows: The rows of each section (``"x"`` extractions, ``"l"`` loads), by key.

    Example:
        ```python
        from datetime import UTC, datetime
        from prefect_stitch.models import Extraction
        from prefect_stitch._poll import Snapshot
        from prefect_stitch._poll.listing import ListingState

        record = Extraction(job_name="j1", source_id=7)
        leader = ListingState()
        leader.advance(Snapshot(1, (record,), datetime.now(UTC), 1), "a", 1)
        follower = ListingState.from_document(leader.document())
        print(follower.snapshot().records[0].job_name)  # j1
        ```
    """

    leader: str = ""
    seq: int = 0
    header: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, dict[str, list[Any]]] = field(
        default_factory=lambda: {section: {} for section in _SECTIONS}
    )

    # -- the leader's side ---------------------------------------------------------

    def advance(self, snapshot: Snapshot, leader: str, seq: int) -> set[tuple[str, str]]:
        """Take a new listing (the leader's); return the keys it changed.

        Args:
            snapshot: The listing read.
            leader: The publishing leader's id.
            seq: The listing's sequence number.

        Returns:
            The (section, key) pairs whose row changed, appeared or went.
        """
        error = None
        if snapshot.error is not None:
            error = {
                "message": str(snapshot.error)[:2000],
                "status": getattr(snapshot.error, "status_code", None),
                "reason": getattr(snapshot.error, "reason", None),
                "retry_after": getattr(snapshot.error, "retry_after", None),
            }
        read_x = snapshot.error is None and snapshot.extractions_read
        read_l = snapshot.error is None and snapshot.loads is not None
        self.header = {
            "tick": snapshot.tick,
            "fetched_at": _iso(snapshot.fetched_at),
            "stitch_time": _iso(snapshot.stitch_time),
            "pages": snapshot.pages,
            "x": read_x,
            "l": read_l,
            "error": error,
        }
        touched: set[tuple[str, str]] = set()
        news = {
            "x": [_row("x", r) for r in snapshot.records] if read_x else None,
            "l": [_row("l", r) for r in snapshot.loads or ()] if read_l else None,
        }
        for section, fresh in news.items():
            if fresh is None:
                continue  # not read this time: the rows stay as they were
            new, old = _keyed(section, fresh), self.rows[section]
            touched |= {(section, k) for k in old.keys() - new.keys()}
            touched |= {(section, k) for k, row in new.items() if old.get(k) != row}
            self.rows[section] = _sorted(new)
        self.leader, self.seq = leader, seq
        return touched

    def changes(self, touched: set[tuple[str, str]]) -> dict[str, Any]:
        """The changes of the touched keys: the rows they have now, or their removal.

        Args:
            touched: (section, key) pairs, as `advance` returns them (accumulated).

        Returns:
            ``{section: {"s": {key: row}, "d": [key, ...]}}`` (JSON-ready).
        """
        out: dict[str, Any] = {}
        for section, key in sorted(touched):
            part = out.setdefault(section, {"s": {}, "d": []})
            row = self.rows[section].get(key)
            if row is None:
                part["d"].append(key)
            else:
                part["s"][key] = row
        return out

    def document(self) -> dict[str, Any]:
        """The whole state, as the artifact holds it (JSON-ready).

        Returns:
            The document.
        """
        return {
            "v": VERSION,
            "w": self.leader,
            "seq": self.seq,
            "h": self.header,
            "rows": self.rows,
        }

    # -- the follower's side -------------------------------------------------------

    @classmethod
    def from_document(cls, document: Any) -> ListingState:
        """Rebuild a state from the artifact's document.

        Args:
            document: What `document` made (after a JSON round trip).

        Returns:
            The state.

        Raises:
            ValueError: The document is not a shared listing of this version.
        """
        if not isinstance(document, dict) or document.get("v") != VERSION:
            raise ValueError("not a shared Stitch listing")
        rows = document.get("rows") or {}
        return cls(
            leader=str(document.get("w", "")),
            seq=int(document.get("seq", 0)),
            header=dict(document.get("h") or {}),
            rows={section: _sorted(dict(rows.get(section) or {})) for section in _SECTIONS},
        )

    def can_apply(self, base_leader: str, base_seq: int, seq: int) -> bool:
        """Whether changes from the base (``base_leader``, ``base_seq``) to ``seq`` apply here.

        They do to the base and to any later state of the same leader, up to ``seq``.

        Args:
            base_leader: The leader of the state the changes start from.
            base_seq: Its sequence number.
            seq: The sequence number the changes lead to.

        Returns:
            True when `apply` rebuilds the state at ``seq`` exactly.
        """
        return self.leader == base_leader and base_seq <= self.seq < seq

    def apply(self, changes: dict[str, Any], header: dict[str, Any], leader: str, seq: int) -> None:
        """Apply published changes (check `can_apply` first).

        Args:
            changes: What `changes` made.
            header: The new listing's header.
            leader: Its leader.
            seq: Its sequence number.
        """
        for section in _SECTIONS:
            part = changes.get(section) or {}
            rows = dict(self.rows[section])
            for key in part.get("d") or ():
                rows.pop(key, None)
            rows.update(part.get("s") or {})
            self.rows[section] = _sorted(rows)
        self.header = dict(header)
        self.leader, self.seq = leader, seq

    def snapshot(self) -> Snapshot:
        """The listing, as a snapshot of a poller.

        Returns:
            The snapshot: no records for a section not read (or a failed listing), as the
            leader's own waiters saw it.
        """
        h = self.header
        records: tuple[Extraction, ...] = ()
        if h.get("x"):
            records = tuple(
                Extraction(**dict(zip(_FIELDS["x"], row, strict=True)))
                for row in self.rows["x"].values()
            )
        loads: tuple[Load, ...] | None = None
        if h.get("l"):
            loads = tuple(
                Load(**dict(zip(_FIELDS["l"], row, strict=True))) for row in self.rows["l"].values()
            )
        error: StitchError | None = None
        if h.get("error"):
            raw = h["error"]
            error = StitchAPIError(
                str(raw.get("message") or "the leader's listing failed"),
                status_code=raw.get("status"),
                reason=str(raw.get("reason") or "listing failed"),
                retry_after=raw.get("retry_after"),
            )
        return Snapshot(
            tick=int(h.get("tick", 0)),
            records=records,
            fetched_at=_parse(h.get("fetched_at")) or datetime.now(UTC),
            pages=int(h.get("pages", 0)),
            error=error,
            stitch_time=_parse(h.get("stitch_time")),
            loads=loads,
            extractions_read=bool(h.get("x", True)) or error is not None,
        )


@dataclass
class HeldListing:
    """The listing a process holds: the last it published (a leader) or took (a follower).

    Attributes:
        state: The listing.
        seen: The (leader, seq) of the newest listing marker this process took, if any.

    Example:
        ```python
        from prefect_stitch._poll.listing import HeldListing

        held = HeldListing()
        print(held.state.seq, held.seen)  # 0 None
        ```
    """

    state: ListingState = field(default_factory=ListingState)
    seen: tuple[str, int] | None = None

    def next_seq(self) -> int:
        """The sequence number of the next listing a leader publishes (they go on across leaders).

        Returns:
            One more than the newest listing held or seen.
        """
        return max(self.state.seq, self.seen[1] if self.seen else 0) + 1
