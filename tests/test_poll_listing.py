"""The shared listing: what a leader publishes and what a follower rebuilds from it.

Pure: no Prefect, no HTTP. A follower must rebuild exactly the listing the leader read,
from the changes alone when it holds a listing they apply to, whatever it missed.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from prefect_stitch._poll import Snapshot
from prefect_stitch._poll.listing import MARKER_BUDGET, ListingState
from prefect_stitch.errors import StitchAPIError
from prefect_stitch.models import Extraction, Load

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def record(source: int, job: str, *, done: bool = True, tap: int | None = 0) -> Extraction:
    return Extraction(
        job_name=f"116078.{source}.sync.{job}",
        source_id=source,
        start_time=T0,
        completion_time=T0 + timedelta(seconds=source) if done else None,
        discovery_exit_status=0 if done else None,
        tap_exit_status=tap if done else None,
        tap_description="Killed" if tap not in (0, None) else None,
        target_exit_status=0 if done else None,
    )


def snap(
    tick: int,
    records: tuple[Extraction, ...] = (),
    loads: tuple[Load, ...] | None = None,
    *,
    error: StitchAPIError | None = None,
    extractions_read: bool = True,
) -> Snapshot:
    return Snapshot(
        tick=tick,
        records=() if error else records,
        fetched_at=T0 + timedelta(seconds=tick),
        pages=2,
        error=error,
        stitch_time=T0,
        loads=loads,
        extractions_read=extractions_read,
    )


def travelled(value: Any) -> Any:
    """As the Prefect API stores and returns it."""
    return json.loads(json.dumps(value))


def same_listing(a: Snapshot, b: Snapshot) -> bool:
    """Equal but for the order of records (it carries no meaning in Stitch's listings)."""

    def key(r: Any) -> str:
        return json.dumps(r.model_dump(mode="json"), sort_keys=True)

    return (
        sorted(map(key, a.records)) == sorted(map(key, b.records))
        and (a.loads is None) == (b.loads is None)
        and sorted(map(key, a.loads or ())) == sorted(map(key, b.loads or ()))
        and (a.tick, a.pages, a.stitch_time, a.fetched_at, a.ok)
        == (b.tick, b.pages, b.stitch_time, b.fetched_at, b.ok)
        and str(a.error) == str(b.error)
    )


def test_a_listing_travels_whole_through_the_artifact() -> None:
    records = tuple(record(i, "x" * 40, tap=-9 if i % 7 == 0 else 0) for i in range(600, 0, -1))
    loads = tuple(
        Load(source_name=f"s{i}", stream_name="accounts", error_state={"m": "x"} if i % 3 else None)
        for i in range(2000)
    )
    snapshot = snap(7, records, loads)
    leader = ListingState()
    leader.advance(snapshot, "a", 1)
    back = ListingState.from_document(travelled(leader.document())).snapshot()
    assert same_listing(back, snapshot)
    assert len(back.records) == 600 and back.loads is not None and len(back.loads) == 2000
    with pytest.raises(ValueError):
        ListingState.from_document({"v": 2, "extractions": []})


def test_changes_list_exactly_the_rows_that_changed_appeared_or_went() -> None:
    leader = ListingState()
    leader.advance(snap(1, (record(1, "a"), record(2, "a"), record(3, "a"))), "L", 1)
    touched = leader.advance(
        snap(2, (record(1, "a"), record(2, "b"), record(4, "a"))), "L", 2
    )  # 2 changed, 3 went, 4 came, 1 as it was
    assert touched == {("x", "2"), ("x", "3"), ("x", "4")}
    changes = travelled(leader.changes(touched))
    assert sorted(changes["x"]["s"]) == ["2", "4"] and changes["x"]["d"] == ["3"]


@pytest.mark.parametrize(
    ("listing", "kept_records", "loads_read"),
    [
        (snap(2, error=StitchAPIError("boom", status_code=500, reason="Server Error")), 0, False),
        (snap(2, (), (Load(source_name="s", stream_name="t"),), extractions_read=False), 0, True),
    ],
    ids=["failed listing", "loads only"],
)
def test_a_section_not_read_keeps_its_rows_for_the_next_listing(
    listing: Snapshot, kept_records: int, loads_read: bool
) -> None:
    """A failed listing (or one that read only loads) is passed on as such, but the rows
    stay: the next good listing's changes are small, not the whole account again."""
    leader = ListingState()
    leader.advance(snap(1, (record(1, "a"), record(2, "a"))), "L", 1)
    follower = ListingState.from_document(travelled(leader.document()))
    touched = leader.advance(listing, "L", 2)
    assert not [t for t in touched if t[0] == "x"], "unread extractions were dropped"
    follower.apply(travelled(leader.changes(touched)), travelled(leader.header), "L", 2)
    got = follower.snapshot()
    assert len(got.records) == kept_records and (got.loads is not None) == loads_read
    assert same_listing(got, ListingState.from_document(leader.document()).snapshot())
    assert got.ok == listing.ok and str(got.error) == str(listing.error)
    touched = leader.advance(snap(3, (record(1, "a"), record(2, "b"))), "L", 3)
    assert {t for t in touched if t[0] == "x"} == {("x", "2")}


def test_two_records_of_one_source_are_both_kept() -> None:
    """Stitch lists one record per source; should it ever list two, none is lost."""
    twice = (record(5, "old"), record(5, "new", done=False))
    leader = ListingState()
    leader.advance(snap(1, twice), "L", 1)
    back = ListingState.from_document(travelled(leader.document())).snapshot()
    assert sorted(r.job_name for r in back.records) == sorted(r.job_name for r in twice)


@pytest.mark.parametrize(
    ("follower_at", "base", "seq", "applies"),
    [
        (("L", 4), ("L", 4), 5, True),  # the listing just before
        (("L", 6), ("L", 4), 7, True),  # a later one of the same leader (missed some)
        (("L", 3), ("L", 4), 7, False),  # older than the base
        (("M", 5), ("L", 4), 7, False),  # another leader's listing 5
        (("L", 7), ("L", 4), 7, False),  # already there
    ],
)
def test_changes_apply_to_their_base_and_later_listings_of_its_leader(
    follower_at: tuple[str, int], base: tuple[str, int], seq: int, applies: bool
) -> None:
    state = ListingState(leader=follower_at[0], seq=follower_at[1])
    assert state.can_apply(base[0], base[1], seq) is applies


def test_a_follower_rebuilds_every_listing_whatever_it_missed() -> None:
    """Random listings; followers hold every possible earlier listing of the leader.

    Each applies the changes accumulated since the artifact was last written and must
    get the leader's listing exactly, rows that came and went in between included."""
    rng = random.Random(7)
    leader = ListingState()
    history: list[dict[str, Any]] = []  # every published state, as documents
    base_doc: dict[str, Any] | None = None
    touched: set[tuple[str, str]] = set()
    for seq in range(1, 80):
        sources = rng.sample(range(1, 30), rng.randint(0, 12))
        records = tuple(record(s, rng.choice("abc")) for s in sources)
        loads = (
            None
            if rng.random() < 0.3
            else tuple(
                Load(source_name=f"s{s}", stream_name=rng.choice(["a", "b"]))
                for s in rng.sample(range(5), rng.randint(0, 4))
            )
        )
        listing = (
            snap(seq, error=StitchAPIError("429", status_code=429, reason="Too Many"))
            if rng.random() < 0.1
            else snap(seq, records, loads)
        )
        touched |= leader.advance(listing, "L", seq)
        if base_doc is None:
            base_doc, touched = travelled(leader.document()), set()
        changes = travelled(leader.changes(touched))
        expected = ListingState.from_document(travelled(leader.document())).snapshot()
        base = ListingState.from_document(base_doc)
        for held in [base_doc, *history]:
            follower = ListingState.from_document(held)
            if follower.seq >= seq:  # the artifact just written: it is the listing
                assert follower.rows == leader.rows
                continue
            if follower.seq < base.seq:
                assert not follower.can_apply(base.leader, base.seq, seq)
                continue
            assert follower.can_apply(base.leader, base.seq, seq)
            follower.apply(changes, travelled(leader.header), "L", seq)
            assert same_listing(follower.snapshot(), expected), (held["seq"], seq)
            assert follower.rows == leader.rows
        history.append(travelled(leader.document()))
        if rng.random() < 0.3:  # the artifact is rewritten: the changes start afresh
            base_doc, touched = history[-1], set()


def test_a_tick_of_changes_fits_the_variable_where_the_listing_does_not() -> None:
    """The point of the changes: at 50 sources the whole listing is over Prefect's 5,000
    characters; the few jobs that end in one tick are far below."""
    leader = ListingState()
    records = [record(300000 + i, "x" * 36) for i in range(50)]
    leader.advance(snap(1, tuple(records)), "L", 1)
    assert len(json.dumps(leader.document())) > 5000
    records[:5] = [record(300000 + i, "y" * 36) for i in range(5)]
    touched = leader.advance(snap(2, tuple(records)), "L", 2)
    marker = {"h": leader.header, "c": leader.changes(touched), "base": ["L", 1]}
    assert len(json.dumps(marker)) < MARKER_BUDGET
