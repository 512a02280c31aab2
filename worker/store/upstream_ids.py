"""Which of our connections an upstream connection id names, per unified API.

The unified API's webhooks name a connection by its own id: the ``id`` that
its status endpoint returns for the connection's token. The preflight learns
it and stores it here with the normalised base URL it asked
(``upstream_base``), because an id means something only at the API that gave
it: a connection that talks to another base URL (a proxy, a second region)
may report the very same digits for a different customer.

At one base an id maps to at most one connection (a unique index). A second
connection reporting an id another already holds is refused: it stays
unmapped, and what it reported is kept in ``upstream_id_refused`` so status
can show both connections; the one holding the id keeps it. A refused
connection learns the id at a later preflight once nobody holds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from worker.store.base import StoreBase, translated
from worker.store.inbound import UpstreamEventStatus


class Learned(StrEnum):
    """What storing a reported upstream id did."""

    KNOWN = "known"  # already mapped so: nothing written
    LEARNED = "learned"  # mapped now
    REFUSED = "refused"  # another connection of the same base holds the id
    GONE = "gone"  # the connection was removed meanwhile


@dataclass(frozen=True)
class UpstreamMapping:
    """A connection's upstream id as last reported, and whether it is mapped."""

    connection_id: str
    base_url: str | None  # normalised; None until a preflight reports an id
    upstream_id: str | None  # mapped: events of base_url naming it apply here
    refused_id: str | None = None  # reported, but held by ``holder``
    holder: str | None = None  # who holds refused_id now (None: free again)


@dataclass(frozen=True)
class Learning:
    """The outcome of ``learn_upstream_id``."""

    outcome: Learned
    requeued: int = 0  # unmapped events made ``received`` again (LEARNED)
    holder: str | None = None  # the connection holding the id (REFUSED)
    new: bool = False  # REFUSED: the refusal was not recorded before


_MAPPING = (
    "SELECT r.id, r.upstream_base, r.upstream_connection_id, r.upstream_id_refused, h.id "
    "FROM connections r LEFT JOIN connections h ON r.upstream_id_refused IS NOT NULL "
    "AND h.upstream_base = r.upstream_base AND h.upstream_connection_id = r.upstream_id_refused"
)


class UpstreamIdStore(StoreBase):
    """The upstream id of each connection, unique per unified API base URL."""

    @translated
    def connections_for_upstream_id(self, base_url: str, upstream_connection_id: str) -> list[str]:
        """Our connection (at most one) mapped to this id at this normalised base URL."""
        rows = self._read(
            "SELECT id FROM connections WHERE upstream_base = ? AND upstream_connection_id = ? "
            "ORDER BY id",
            (base_url, upstream_connection_id),
        )
        return [row[0] for row in rows]

    @translated
    def upstream_connection_id(self, connection_id: str) -> str | None:
        """The upstream's id of one of our connections, once learned and mapped."""
        rows = self._read(
            "SELECT upstream_connection_id FROM connections WHERE id = ?", (connection_id,)
        )
        return rows[0][0] if rows else None

    @translated
    def upstream_mapping(self, connection_id: str) -> UpstreamMapping | None:
        """How a connection is mapped; None when there is no such connection."""
        rows = self._read(f"{_MAPPING} WHERE r.id = ?", (connection_id,))
        return _mapping(rows[0]) if rows else None

    @translated
    def upstream_id_refusals(self) -> list[UpstreamMapping]:
        """Every connection whose reported id was refused, by id."""
        rows = self._read(f"{_MAPPING} WHERE r.upstream_id_refused IS NOT NULL ORDER BY r.id")
        return [_mapping(row) for row in rows]

    @translated
    def learn_upstream_id(
        self, connection_id: str, base_url: str, upstream_connection_id: str
    ) -> Learning:
        """Map a connection to the id its status endpoint at ``base_url`` reported.

        Refused when another connection holds the id at that base; the
        connection is then unmapped (it no longer reports what it was mapped
        to). When it is mapped anew, events kept as ``unmapped`` for the id go
        back to ``received`` in the same transaction (the sweep processes
        them). Two connections learning one id at once on PostgreSQL: the
        unique index fails the second, which the caller may try again.
        """
        reported = (base_url, upstream_connection_id)
        with self._write() as tx:
            rows = tx.execute(
                "SELECT upstream_base, upstream_connection_id, upstream_id_refused "
                "FROM connections WHERE id = ?",
                (connection_id,),
            ).fetchall()
            if not rows:
                return Learning(Learned.GONE)
            current = tuple(rows[0])
            held = tx.execute(
                "SELECT id FROM connections WHERE upstream_base = ? "
                "AND upstream_connection_id = ? AND id <> ? ORDER BY id",
                (*reported, connection_id),
            ).fetchall()
            if held:
                refused = (base_url, None, upstream_connection_id)
                if current != refused:
                    tx.execute(
                        "UPDATE connections SET upstream_base = ?, upstream_connection_id = ?, "
                        "upstream_id_refused = ? WHERE id = ?",
                        (*refused, connection_id),
                    )
                return Learning(Learned.REFUSED, holder=held[0][0], new=current != refused)
            if current == (*reported, None):
                return Learning(Learned.KNOWN)
            tx.execute(
                "UPDATE connections SET upstream_base = ?, upstream_connection_id = ?, "
                "upstream_id_refused = NULL WHERE id = ?",
                (*reported, connection_id),
            )
            requeued = tx.execute(
                "UPDATE upstream_events SET status = ? WHERE upstream_connection_id = ? "
                "AND status = ?",
                (
                    UpstreamEventStatus.RECEIVED.value,
                    upstream_connection_id,
                    UpstreamEventStatus.UNMAPPED.value,
                ),
            ).rowcount
        return Learning(Learned.LEARNED, requeued=int(requeued))


def _mapping(row: Sequence[Any]) -> UpstreamMapping:
    return UpstreamMapping(
        connection_id=row[0],
        base_url=row[1],
        upstream_id=row[2],
        refused_id=row[3],
        holder=row[4],
    )
