"""Learning which connection an upstream connection id names (at the preflight).

The unified API's webhooks name a connection by the ``id`` its status
endpoint returns. Every preflight (and the slow probe of a halted
connection) reports that id here with the base URL it asked; the store maps
it per normalised base URL (``worker/store/upstream_ids.py``), so an event the
receiver takes from one API never reaches a connection of another, and one
id at one API names at most one connection. A second connection reporting an
id that another holds is refused, shown by ``status`` and ``connections
show``, and logged once as a warning naming both: two tokens of one upstream
connection, or something between us and the API rewriting ids.
"""

from __future__ import annotations

from worker.errors import StoreError
from worker.logs import connection_log, log
from worker.operator_input import upstream_base
from worker.store import SqlStore
from worker.store.upstream_ids import Learned, Learning


def learn_upstream_id(
    store: SqlStore, connection_id: str, upstream_id: object, *, base_url: str
) -> None:
    """Remember the id the status endpoint at ``base_url`` reported for a connection.

    Events kept for that id before it was known are processed again by the
    sweep. Never raises: the preflight that learned it must go on.
    """
    if upstream_id is None or str(upstream_id) == "":
        return
    reported, base = str(upstream_id), upstream_base(base_url)
    try:
        known = store.upstream_mapping(connection_id)
        if known is not None and known.base_url == base:
            if known.upstream_id == reported and known.refused_id is None:
                return  # known: a read, not a write lock, at every preflight
            if known.refused_id == reported and known.holder is not None:
                return  # still held by another: refused and shown already
        learning = _learn(store, connection_id, base, reported)
    except Exception as exc:  # a store hiccup costs the mapping until the next preflight
        log.warning("could not store the upstream id of %s: %s", connection_id, exc)
        return
    if learning.outcome is Learned.REFUSED and learning.new:
        connection_log.warning(
            "upstream connection id %s at %s is already mapped to connection %s: not mapped "
            "to %s as well, whose webhooks are not applied until it reports an id of its own "
            "(two tokens of one upstream connection, or a proxy rewriting ids?)",
            reported,
            base,
            learning.holder,
            connection_id,
            extra={"connection_id": connection_id, "upstream_id_holder": learning.holder},
        )
    elif learning.outcome is Learned.LEARNED:
        connection_log.info(
            "upstream connection id %s learned at %s; %d kept webhook event(s) to apply",
            reported,
            base,
            learning.requeued,
            extra={"connection_id": connection_id},
        )


def _learn(store: SqlStore, connection_id: str, base: str, reported: str) -> Learning:
    try:
        return store.learn_upstream_id(connection_id, base, reported)
    except StoreError:
        # On PostgreSQL two connections learning one id at once: the unique
        # index fails the later one, which now sees the id held and is refused.
        return store.learn_upstream_id(connection_id, base, reported)
