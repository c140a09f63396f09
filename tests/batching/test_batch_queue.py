"""BatchQueue: which waiting entries run together, and when, with plain floats as the clock."""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferkit.batching.queue import DEFAULT_LEVEL, BatchQueue, Entry

INF = math.inf


def entry(
    item: str,
    rows: int = 1,
    key: Hashable = "k",
    arrived: float = 0.0,
    deadline: float | None = None,
    level: int = DEFAULT_LEVEL,
) -> Entry[str]:
    return Entry(item, rows=rows, key=key, arrived=arrived, deadline=deadline, level=level)


def queue(
    *entries: Entry[str], max_rows: int = 10, max_wait: float = 1.0, idle: float | None = None
) -> BatchQueue[str]:
    q: BatchQueue[str] = BatchQueue(max_rows, max_wait, idle)
    for e in entries:
        q.push(e)
    return q


def names(batch: list[Entry[str]] | None) -> list[str] | None:
    return None if batch is None else [e.item for e in batch]


def drain(q: BatchQueue[str], now: float = INF) -> list[list[str]]:
    """Every batch ``take`` gives at ``now``, in order."""
    batches = []
    while (batch := q.take(now)) is not None:
        batches.append([e.item for e in batch])
    return batches


# --- construction and bookkeeping ---


@pytest.mark.parametrize("max_rows", [0, -1])
def test_max_rows_below_one_is_refused(max_rows: int) -> None:
    with pytest.raises(ValueError, match=f"^max_rows must be at least 1, got {max_rows}$"):
        BatchQueue(max_rows, 1.0)


def test_len_counts_waiting_entries() -> None:
    q = queue()
    assert len(q) == 0
    q.push(entry("a"))
    q.push(entry("b", key="other"))
    assert len(q) == 2
    q.take(INF)
    assert len(q) == 1


def test_push_numbers_entries_in_arrival_order() -> None:
    a, b, c = entry("a"), entry("b"), entry("c")
    queue(a, b, c)
    assert a.seq < b.seq < c.seq


def test_an_empty_queue_has_nothing_to_take_or_wake_for() -> None:
    q = queue()
    assert q.take(INF) is None
    assert q.wake_at() is None
    assert q.wake_at(closing=False) is None
    assert q.expire(INF) == []


# --- joining by key ---


def test_entries_of_one_key_join_into_one_batch() -> None:
    q = queue(entry("a"), entry("b"), entry("c"), max_wait=1.0)
    assert q.take(0.5) is None  # not full, not old enough: it may still grow
    assert len(q) == 3
    assert names(q.take(1.0)) == ["a", "b", "c"]
    assert len(q) == 0


def test_different_keys_make_separate_batches() -> None:
    q = queue(entry("a1", key="a"), entry("b1", key="b"), entry("a2", key="a"))
    assert drain(q) == [["a1", "a2"], ["b1"]]


def test_keys_are_compared_by_equality() -> None:
    q = queue(entry("a", key=("x", (1, 2))), entry("b", key=("x", (1, 2))))
    assert drain(q) == [["a", "b"]]


def test_take_returns_the_entry_objects_pushed() -> None:
    a, b = entry("a"), entry("b")
    batch = queue(a, b).take(INF)
    assert batch is not None
    assert batch[0] is a
    assert batch[1] is b


# --- when a batch closes ---


def test_a_batch_waits_max_wait_from_its_oldest_entry() -> None:
    q = queue(entry("a", arrived=1.0), entry("b", arrived=1.25), max_wait=0.5)
    assert q.take(1.0) is None
    assert q.take(1.25) is None
    assert names(q.take(1.5)) == ["a", "b"]  # oldest.arrived + max_wait <= now


def test_the_oldest_entry_decides_even_if_it_arrived_later_in_order() -> None:
    # A priority entry goes first in the batch, but the batch waits only as long as its
    # *oldest* entry may wait.
    q = queue(entry("old", arrived=0.0), entry("urgent", arrived=0.75, level=1), max_wait=1.0)
    assert q.take(0.9) is None
    assert names(q.take(1.0)) == ["urgent", "old"]


def test_a_batch_nobody_joined_for_idle_seconds_closes_before_max_wait() -> None:
    q = queue(entry("a", arrived=0.0), entry("b", arrived=0.2), max_wait=1.0, idle=0.25)
    assert q.wake_at() == 0.45  # the newest entry decides
    assert q.take(0.44) is None
    assert names(q.take(0.45)) == ["a", "b"]


def test_idle_is_counted_per_kind_of_entry() -> None:
    q = queue(entry("a", key="k"), entry("b", key="j", arrived=0.25), max_wait=1.0, idle=0.125)
    assert names(q.take(0.125)) == ["a"]  # b, of another kind, does not keep a's batch open
    assert q.take(0.3) is None
    assert names(q.take(0.375)) == ["b"]


def test_without_quiet_the_idle_rule_is_suspended() -> None:
    q = queue(entry("a", arrived=0.0), max_wait=1.0, idle=0.25)
    assert q.wake_at(quiet=False) == 1.0
    assert q.take(0.5, quiet=False) is None
    assert q.wake_at() == 0.25
    assert names(q.take(0.5)) == ["a"]


def test_max_wait_still_bounds_a_batch_that_keeps_growing() -> None:
    q = queue(*(entry(str(i), arrived=i * 0.1) for i in range(8)), max_wait=0.5, idle=0.15)
    assert q.wake_at() == 0.5
    assert names(q.take(0.5)) == [str(i) for i in range(8)]


def test_a_full_batch_closes_at_once() -> None:
    q = queue(entry("a", rows=1), entry("b", rows=2), max_rows=3, max_wait=100.0)
    assert names(q.take(0.0)) == ["a", "b"]


def test_a_batch_closes_when_the_next_entry_does_not_fit() -> None:
    q = queue(entry("a", rows=3), entry("b", rows=2), max_rows=4, max_wait=1.0)
    assert names(q.take(0.0)) == ["a"]  # cannot grow: b does not fit
    assert len(q) == 1
    assert q.take(0.0) is None  # b is left for the next batch, which may still grow
    assert names(q.take(1.0)) == ["b"]


def test_an_entry_that_does_not_fit_is_not_overtaken() -> None:
    # The batch is a *run* in order: c would fit after a, but b comes first.
    q = queue(entry("a", rows=3), entry("b", rows=2), entry("c", rows=1), max_rows=4)
    assert names(q.take(0.0)) == ["a"]
    assert names(q.take(INF)) == ["b", "c"]


def test_entries_of_another_key_do_not_stop_a_batch() -> None:
    q = queue(
        entry("a1", rows=2, key="a"),
        entry("b1", rows=3, key="b"),
        entry("a2", rows=2, key="a"),
        max_rows=4,
    )
    assert names(q.take(0.0)) == ["a1", "a2"]  # full (4 rows), b1 is not in its way


def test_an_entry_larger_than_max_rows_runs_alone() -> None:
    q = queue(entry("big", rows=9), max_rows=4, max_wait=100.0)
    assert names(q.take(0.0)) == ["big"]


def test_an_entry_larger_than_max_rows_ends_the_batch_before_it() -> None:
    q = queue(entry("a"), entry("big", rows=9), entry("c"), max_rows=4, max_wait=1.0)
    assert names(q.take(0.0)) == ["a"]
    assert names(q.take(0.0)) == ["big"]
    assert q.take(0.0) is None
    assert names(q.take(1.0)) == ["c"]


def test_a_deadline_closes_a_batch_before_max_wait() -> None:
    q = queue(entry("a", arrived=0.0), entry("b", arrived=1.0, deadline=5.0), max_wait=10.0)
    assert q.take(4.5) is None
    assert names(q.take(5.0)) == ["a", "b"]


def test_a_deadline_closes_a_batch_the_estimate_earlier() -> None:
    q = queue(entry("a", arrived=0.0, deadline=5.0), max_wait=10.0)
    assert q.take(3.75, estimate=1.0) is None
    assert names(q.take(4.0, estimate=1.0)) == ["a"]


def test_close_by_moves_the_closing_earlier_but_not_the_expiry() -> None:
    e = entry("a", arrived=0.0, deadline=5.0)
    e.close_by = 4.5
    q = queue(e, max_wait=10.0)
    assert q.wake_at(estimate=1.0) == 3.5
    assert q.expire(4.75) == []  # still waiting is fine until the deadline itself
    assert names(q.take(3.5, estimate=1.0)) == ["a"]


def test_a_deadline_closes_only_its_own_batch() -> None:
    q = queue(
        entry("a", key="a", arrived=0.0),
        entry("b", key="b", arrived=0.0, deadline=2.0),
        max_wait=10.0,
    )
    assert names(q.take(2.0)) == ["b"]
    assert q.take(2.0) is None


def test_a_deadline_later_than_max_wait_changes_nothing() -> None:
    q = queue(entry("a", arrived=0.0, deadline=50.0), max_wait=1.0)
    assert q.take(0.5) is None
    assert names(q.take(1.0)) == ["a"]


def test_a_closed_batch_of_a_less_urgent_kind_runs_while_an_open_one_waits() -> None:
    q = queue(
        entry("urgent", key="a", level=1, arrived=0.0),
        entry("full", key="b", rows=4, arrived=0.0),
        max_rows=4,
        max_wait=1.0,
    )
    assert names(q.take(0.5)) == ["full"]
    assert q.take(0.5) is None
    assert names(q.take(1.0)) == ["urgent"]


def test_of_two_closed_batches_the_more_urgent_kind_runs_first() -> None:
    q = queue(
        entry("late", key="b", arrived=0.0),
        entry("early", key="a", arrived=0.5, level=1),
        max_wait=1.0,
    )
    assert drain(q, now=2.0) == [["early"], ["late"]]


def test_take_nothing_leaves_the_queue_as_it_was() -> None:
    q = queue(entry("a"), entry("b", key="other"))
    assert q.take(0.0) is None
    assert len(q) == 2
    assert drain(q) == [["a"], ["b"]]


# --- priority ---


def test_smaller_levels_run_first() -> None:
    q = queue(
        entry("none", key="a"),
        entry("two", key="b", level=2),
        entry("one", key="c", level=1),
    )
    assert drain(q) == [["one"], ["two"], ["none"]]


def test_the_default_level_comes_after_any_explicit_priority() -> None:
    assert DEFAULT_LEVEL > 2**62
    q = queue(entry("none", key="a"), entry("low", key="b", level=2**62))
    assert drain(q) == [["low"], ["none"]]


def test_priority_orders_entries_within_a_batch() -> None:
    q = queue(entry("none"), entry("three", level=3), entry("one", level=1))
    assert drain(q) == [["one", "three", "none"]]


def test_equal_levels_keep_arrival_order() -> None:
    q = queue(entry("a", level=2), entry("b", level=2), entry("c", level=2), max_rows=2)
    assert drain(q) == [["a", "b"], ["c"]]


def test_priority_decides_who_fits_in_a_batch() -> None:
    q = queue(entry("d1"), entry("d2"), entry("p", level=1), max_rows=2)
    assert drain(q) == [["p", "d1"], ["d2"]]


# --- expire and remove ---


def test_expire_takes_out_only_entries_past_their_deadline() -> None:
    a = entry("a", deadline=1.0)
    b = entry("b", deadline=3.0)
    c = entry("c")
    q = queue(a, b, c)
    assert q.expire(0.5) == []
    assert len(q) == 3
    assert q.expire(1.0) == [a]  # a deadline equal to now has passed
    assert len(q) == 2
    assert q.expire(1.0) == []
    assert q.expire(10.0) == [b]
    assert q.expire(INF) == []
    assert drain(q) == [["c"]]


def test_expire_returns_every_expired_entry_and_keeps_the_order_of_the_rest() -> None:
    q = queue(
        entry("a", deadline=1.0),
        entry("b"),
        entry("c", deadline=2.0),
        entry("d"),
        entry("e", key="other", deadline=0.5),
    )
    assert names(q.expire(2.0)) == ["a", "c", "e"]
    assert drain(q) == [["b", "d"]]


def test_take_does_not_skip_an_expired_entry() -> None:
    # The driver calls expire first; take alone still runs the entry (documented).
    q = queue(entry("a", deadline=1.0))
    assert names(q.take(5.0)) == ["a"]


def test_remove_takes_out_a_waiting_entry() -> None:
    a, b = entry("a"), entry("b")
    q = queue(a, b)
    assert q.remove(a) is True
    assert len(q) == 1
    assert q.remove(a) is False
    assert drain(q) == [["b"]]


def test_remove_is_false_for_an_entry_taken_expired_or_never_pushed() -> None:
    taken, expired = entry("taken", key="x"), entry("expired", key="y", deadline=1.0)
    q = queue(taken, expired)
    q.expire(1.0)
    assert names(q.take(INF)) == ["taken"]
    assert q.remove(taken) is False
    assert q.remove(expired) is False
    assert q.remove(entry("stranger")) is False


def test_remove_goes_by_identity_not_by_equal_fields() -> None:
    first, twin = entry("same"), entry("same")
    q = queue(first, twin)
    assert q.remove(twin) is True
    batch = q.take(INF)
    assert batch is not None
    assert len(batch) == 1
    assert batch[0] is first


# --- wake_at ---


def test_wake_at_is_when_the_batch_has_waited_max_wait() -> None:
    q = queue(entry("a", arrived=1.0), entry("b", arrived=2.0), max_wait=2.0)
    assert q.wake_at() == 3.0
    assert q.wake_at(closing=False) is None  # no deadline: nothing to expire


def test_wake_at_is_the_earliest_of_every_kind() -> None:
    q = queue(entry("a", key="a", arrived=4.0), entry("b", key="b", arrived=1.0), max_wait=2.0)
    assert q.wake_at() == 3.0


def test_wake_at_closes_early_for_a_deadline() -> None:
    q = queue(entry("a", arrived=0.0, deadline=4.0), max_wait=10.0)
    assert q.wake_at() == 4.0
    assert q.wake_at(estimate=1.5) == 2.5
    # Without a free instance only expiry matters, and that is the deadline itself.
    assert q.wake_at(estimate=1.5, closing=False) == 4.0


def test_wake_at_without_closing_gives_only_deadlines() -> None:
    q = queue(
        entry("a", key="a", arrived=0.0),
        entry("b", key="b", arrived=0.0, deadline=7.0),
        entry("c", key="c", arrived=0.0, deadline=6.0),
        max_wait=1.0,
    )
    assert q.wake_at() == 1.0
    assert q.wake_at(closing=False) == 6.0


def test_wake_at_counts_deadlines_of_entries_outside_any_batch() -> None:
    # b waits behind a full batch of its kind; it can still expire.
    q = queue(entry("a", arrived=0.0), entry("b", arrived=0.0, deadline=7.0), max_rows=1)
    assert q.wake_at(closing=False) == 7.0


def test_wake_at_changes_nothing() -> None:
    q = queue(entry("a", deadline=1.0), entry("b", key="other"))
    q.wake_at()
    q.wake_at(closing=False)
    assert len(q) == 2
    assert drain(q) == [["a"], ["b"]]


# --- properties ---

LEVELS = [1, 2, 5, DEFAULT_LEVEL]


@st.composite
def scenarios(draw: Any) -> tuple[int, float, list[Entry[str]]]:
    max_rows = draw(st.integers(1, 6))
    max_wait = draw(st.sampled_from([0.0, 0.5, 1.0, 3.0]))
    specs = draw(
        st.lists(
            st.tuples(
                st.integers(1, 8),  # rows: some larger than max_rows
                st.sampled_from(["a", "b", "c"]),
                st.sampled_from(LEVELS),
                st.integers(0, 10),  # arrived
                st.none() | st.integers(0, 15),  # deadline
            ),
            max_size=25,
        )
    )
    entries = [
        entry(
            f"e{i}",
            rows=rows,
            key=key,
            arrived=float(arrived),
            deadline=None if deadline is None else float(deadline),
            level=level,
        )
        for i, (rows, key, level, arrived, deadline) in enumerate(specs)
    ]
    return max_rows, max_wait, entries


def order(e: Entry[Any]) -> tuple[int, int]:
    return e.level, e.seq


def greedy_batch(waiting: list[Entry[str]], max_rows: int) -> list[Entry[str]]:
    """The batch the rules describe for the most urgent entry's kind: written out again."""
    ranked = sorted(waiting, key=order)
    kind = [e for e in ranked if e.key == ranked[0].key]
    batch, rows = [kind[0]], kind[0].rows
    for e in kind[1:]:
        if rows >= max_rows or rows + e.rows > max_rows:
            break
        batch.append(e)
        rows += e.rows
    return batch


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_taking_with_infinite_time_drains_every_entry_once(
    scenario: tuple[int, float, list[Entry[str]]],
) -> None:
    max_rows, max_wait, entries = scenario
    q = queue(*entries, max_rows=max_rows, max_wait=max_wait)
    waiting = list(entries)
    seen: list[Entry[str]] = []
    while (batch := q.take(INF)) is not None:
        assert batch, "take never returns an empty batch"
        assert len({e.key for e in batch}) == 1
        rows = sum(e.rows for e in batch)
        assert rows <= max_rows or len(batch) == 1
        assert batch == sorted(batch, key=order)
        assert [e.item for e in batch] == [e.item for e in greedy_batch(waiting, max_rows)]
        waiting = [e for e in waiting if all(e is not b for b in batch)]
        assert len(q) == len(waiting)
        seen.extend(batch)
    assert len(q) == 0
    assert sorted(id(e) for e in seen) == sorted(id(e) for e in entries)


@settings(max_examples=300, deadline=None)
@given(
    scenarios(),
    st.integers(0, 20).map(float),
    st.sampled_from([0.0, 0.5, 2.0]),
)
def test_take_runs_only_closed_batches_and_wake_at_never_stalls(
    scenario: tuple[int, float, list[Entry[str]]], now: float, estimate: float
) -> None:
    max_rows, max_wait, entries = scenario
    q = queue(*entries, max_rows=max_rows, max_wait=max_wait)
    expired = q.expire(now)
    assert all(e.deadline is not None and e.deadline <= now for e in expired)
    waiting = [e for e in entries if all(e is not x for x in expired)]
    assert all(e.deadline is None or e.deadline > now for e in waiting)
    while (batch := q.take(now, estimate)) is not None:
        waiting = [e for e in waiting if all(e is not b for b in batch)]
        rows = sum(e.rows for e in batch)
        following = sorted((e for e in waiting if e.key == batch[0].key), key=order)
        cannot_grow = rows >= max_rows or bool(following and rows + following[0].rows > max_rows)
        waited = min(e.arrived for e in batch) + max_wait <= now
        too_late = any(e.deadline - estimate <= now for e in batch if e.deadline is not None)
        assert cannot_grow or waited or too_late
    # Nothing more to run now: the driver must be told a later time (or none), never a past one.
    wake = q.wake_at(estimate)
    assert (wake is None) == (len(q) == 0)
    assert wake is None or wake > now
