"""One entity type of one connection: records kept in (updatedAt, key) order.

Queries bisect the order for the ``updatedAt`` filters and slice one page;
nothing sorts the whole set per request. Mutations replace record dicts
instead of editing them, so a page already taken under the lock stays
consistent while it is serialised outside the lock.
"""

from __future__ import annotations

import random
from bisect import bisect_left, insort
from collections.abc import Callable
from dataclasses import dataclass

from harness.sandbox.clock import format_instant
from harness.sandbox.records import Record, RecordFactory, key_index
from worker.entities import EntityType

Entry = tuple[int, str]  # (updatedAt in microseconds, key)


@dataclass(frozen=True)
class Window:
    """The records matching the filters: positions ``[lo, hi)`` of the order.

    ``subset``, when set, holds the only entries of ``[lo, hi)`` that are
    served (a lagging replica, ``lies.py``), still in order.
    """

    lo: int
    hi: int
    subset: list[Entry] | None = None

    @property
    def total(self) -> int:
        """How many records match."""
        return self.hi - self.lo if self.subset is None else len(self.subset)


class EntityTable:
    """Records of one entity type with their sort order and mutation operations."""

    def __init__(self, factory: RecordFactory, records: list[Record], stamps: list[int]) -> None:
        self.entity: EntityType = factory.entity
        self._factory = factory
        self._records: dict[str, Record] = {r["key"]: r for r in records}
        # (updatedAt in microseconds, key): the key breaks ties, which is the
        # "stable" tie order; "shuffled" reorders ties per request on top.
        self._order: list[Entry] = sorted(zip(stamps, (r["key"] for r in records), strict=True))
        self._stamps: dict[str, int] = {key: stamp for stamp, key in self._order}
        self._next_index = max((key_index(k) for k in self._records), default=0) + 1

    def __len__(self) -> int:
        return len(self._order)

    @property
    def max_stamp(self) -> int:
        """The greatest updatedAt held, in microseconds (0 when empty)."""
        return self._order[-1][0] if self._order else 0

    def window(
        self, gteq: int | None, lt: int | None, only: Callable[[str], bool] | None = None
    ) -> Window:
        """Positions of the records with ``gteq <= updatedAt < lt`` (and keys ``only`` keeps).

        ``only`` costs a pass over the window per request: fine for a lie.
        """
        # "" sorts before every key, so (t, "") is the first position at time t.
        lo = 0 if gteq is None else bisect_left(self._order, (gteq, ""))
        hi = max(lo, len(self._order) if lt is None else bisect_left(self._order, (lt, "")))
        if only is None:
            return Window(lo, hi)
        return Window(lo, hi, [entry for entry in self._order[lo:hi] if only(entry[1])])

    def page(
        self,
        window: Window,
        offset: int,
        limit: int,
        *,
        descending: bool,
        shuffle: random.Random | None,
    ) -> list[Record]:
        """``limit`` records from ``offset`` within the window, in the requested direction.

        With ``shuffle``, records sharing an updatedAt come in a fresh random
        order: whole tie groups are shuffled before slicing, so a group that
        straddles a page boundary splits differently on every request.
        """
        order, lo, hi = self._order, window.lo, window.hi
        if window.subset is not None:
            order, lo, hi = window.subset, 0, len(window.subset)
        if descending:
            start, stop = hi - offset - limit, hi - offset
        else:
            start, stop = lo + offset, lo + offset + limit
        start, stop = max(start, lo), min(stop, hi)
        if start >= stop:
            return []
        if shuffle is None:
            entries = order[start:stop]
        else:
            entries = _shuffled_slice(order, start, stop, shuffle)
        if descending:
            entries.reverse()
        return [self._records[key] for _, key in entries]

    def all_records(self) -> list[Record]:
        """Every record, deleted ones included, in (updatedAt, key) order."""
        return [self._records[key] for _, key in self._order]

    def next_stamp(self, now: int) -> int:
        """``now``, or one microsecond past the newest record if the clock lags behind."""
        return max(now, self.max_stamp + 1)

    def pick_live(self, rng: random.Random, count: int) -> list[str]:
        """Up to ``count`` distinct non-deleted keys, biased to the start of the order.

        The bias (position ~ u**3) moves early records to the end, which is what
        makes a page-number client that is past them skip the records behind.
        """
        chosen: list[str] = []
        seen: set[str] = set()
        size = len(self._order)
        attempts = 0
        while len(chosen) < count and size and attempts < count * 20:
            attempts += 1
            key = self._order[int(size * rng.random() ** 3)][1]
            if key not in seen and self._records[key]["deletedAt"] is None:
                seen.add(key)
                chosen.append(key)
        return chosen

    def pick_any_live(self, rng: random.Random, count: int) -> list[str]:
        """Up to ``count`` distinct non-deleted keys drawn evenly from the whole order."""
        live = sorted(key for key, record in self._records.items() if record["deletedAt"] is None)
        return rng.sample(live, min(count, len(live)))

    def remove(self, key: str) -> None:
        """Delete ``key`` for real: it is no longer listed at all, and no trace is kept."""
        stamp = self._stamps.pop(key)
        del self._order[bisect_left(self._order, (stamp, key))]
        del self._records[key]

    def update(self, key: str, stamp: int, rng: random.Random) -> Record:
        """Store a new version of ``key`` with updatedAt ``stamp`` (must be newer)."""
        old = self._records[key]
        new = self._factory.touched(rng, old, stamp)
        self._move(key, new, stamp)
        return new

    def delete(self, key: str, stamp: int) -> Record:
        """Soft-delete ``key``: set deletedAt and bump updatedAt to ``stamp``."""
        old = self._records[key]
        text = format_instant(stamp)
        new = {**old, "deletedAt": text, "updatedAt": text}
        self._move(key, new, stamp)
        return new

    def insert(self, stamp: int, rng: random.Random) -> Record:
        """Create a record with the next key, created and updated at ``stamp``."""
        index = self._next_index
        self._next_index += 1
        record = self._factory.build(rng, index, stamp, stamp)
        self._records[record["key"]] = record
        self._stamps[record["key"]] = stamp
        insort(self._order, (stamp, record["key"]))
        return record

    def _move(self, key: str, new: Record, stamp: int) -> None:
        old_stamp = self._stamps[key]
        if stamp <= old_stamp:
            raise ValueError("an update must move updatedAt forward")
        position = bisect_left(self._order, (old_stamp, key))
        del self._order[position]
        insort(self._order, (stamp, key))
        self._stamps[key] = stamp
        self._records[key] = new


def _shuffled_slice(order: list[Entry], start: int, stop: int, rng: random.Random) -> list[Entry]:
    """``order[start:stop]`` with every tie group it touches shuffled as a whole."""
    # Widen to whole tie groups; filters cut at instants, so groups never
    # cross the window's edges.
    group_lo = bisect_left(order, (order[start][0], ""))
    group_hi = bisect_left(order, (order[stop - 1][0] + 1, ""))
    span = order[group_lo:group_hi]
    run = 0
    for i in range(1, len(span) + 1):
        if i == len(span) or span[i][0] != span[run][0]:
            if i - run > 1:
                tie = span[run:i]
                rng.shuffle(tie)
                span[run:i] = tie
            run = i
    return span[start - group_lo : stop - group_lo]
