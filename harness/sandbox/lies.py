"""Lies: list answers that look complete and are not, as a hostile upstream sends them.

A deletion-tracking client marks the keys a complete read did not see as
deleted, so an answer that *looks* like the end of a list while records are
missing is the most dangerous answer an upstream can give. Each lie below is
a fault scenario (``scenarios.py``, switched per connection at run time with
``POST /_sandbox/connections/{token}/scenarios``); the table underneath stays
the truth and ``/_sandbox/.../records/{entity}`` still shows it.

- ``empty``: ``data: []``, ``meta.total: 0``, ``last_page: 1`` on every page
  and filter;
- ``cut_short``: page 1 of every query holds ``keep`` records (40), never a
  full page, while ``meta`` keeps the requested ``per_page``, the full
  ``total``, ``last_page`` and ``to``;
- ``lagging_replica``: only a stable ``share`` (0.4) of the keys, chosen per
  key from the seed, with ``meta`` consistent with that subset under every
  filter and page;
- ``keyless``: every record has ``Key`` instead of ``key``.

``sync_status`` (the status endpoint's ``sync_status``, e.g. ``inprogress``)
goes with them: a lagging replica while the upstream says it is still syncing.
An honest hard delete is no lie: the ``hard_deletes`` of a mutation batch
removes keys for real, and a complete read must still find them gone.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

Record = dict[str, Any]

LIES = frozenset({"empty", "cut_short", "lagging_replica", "keyless"})


def in_replica(seed: int, key: str, share: float) -> bool:
    """Whether a lagging replica of this seed holds ``key``: a pure function of both.

    Per key rather than per position, so the subset stays the same whatever
    the filter, page or process, and a mutation does not reshuffle it.
    """
    return zlib.crc32(f"{seed}:replica:{key}".encode()) % 10_000 < share * 10_000


def replica(seed: int, share: float) -> Callable[[str], bool]:
    """The keys a lagging replica of this seed serves (see ``in_replica``)."""
    return lambda key: in_replica(seed, key, share)


def cut(records: list[Record], keep: int, per_page: int) -> list[Record]:
    """A first page cut short: ``keep`` records, and always fewer than ``per_page``.

    "Fewer than a page" is the point: a client sees a last page, while
    ``meta`` (computed before the cut) still promises the full total.
    """
    return records[: min(keep, per_page - 1)]


def keyless(record: Record) -> Record:
    """A copy of the record with ``Key`` in place of ``key`` (same position, same value)."""
    return {("Key" if name == "key" else name): value for name, value in record.items()}


__all__ = ["LIES", "cut", "in_replica", "keyless", "replica"]
