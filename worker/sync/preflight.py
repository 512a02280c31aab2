"""Ask the status endpoint before a run, through the guard, and cache a good answer.

A connection whose status says ``fail`` needs re-authorisation and halts
before a single list page is requested; ``error`` means the source system is
down, which counts against the connection's breaker. A healthy answer is
cached in Redis briefly, so a fan-out of eight entity types asks once.

The answer also names the connection as the unified API's webhooks do: its
``id``. Every preflight (and the slow probe of a halted connection) reports
that id to ``learn_upstream_id`` with the base URL it asked; the store maps
it per normalised base URL (``worker/store/upstream_ids.py``), so an event the
receiver takes from one API never reaches a connection of another, and one
id at one API names at most one connection. A second connection reporting an
id that another holds is refused, shown by ``status`` and ``connections
show``, and logged once as a warning naming both: two tokens of one upstream
connection, or something between us and the API rewriting ids.
"""

from __future__ import annotations

import redis

from worker.coordination import redis_keys
from worker.coordination.scripts import coordination
from worker.errors import StoreError
from worker.logs import connection_log, log
from worker.operator_input import upstream_base
from worker.resilience.classify import Where, error_for_sync_status
from worker.resilience.guard import Guard
from worker.store import SqlStore
from worker.store.upstream_ids import Learned, Learning
from worker.upstream.client import UpstreamClient


def preflight(
    *,
    guard: Guard,
    client: UpstreamClient,
    cache: redis.Redis,
    connection_id: str,
    base_url: str,
    token: str,
    cache_seconds: float,
    store: SqlStore,
) -> None:
    """Raise what the guard decides when the connection is not healthy.

    The status endpoint's ``id`` of the connection (the id the unified API's
    webhooks name it by) is learned even when the status says ``fail``.
    """
    key = redis_keys.preflight(connection_id)
    with coordination(f"preflight of {connection_id}"):
        if cache.exists(key):
            return

    def ask() -> str:
        status = client.status(base_url, token)
        learn_upstream_id(store, connection_id, status.id, base_url=base_url)
        problem = error_for_sync_status(status.sync_status)
        if problem is not None:
            raise problem
        return status.sync_status

    sync_status = guard.call(None, Where.STATUS, ask)
    with coordination(f"preflight of {connection_id}"):
        cache.set(key, sync_status, px=max(1, int(cache_seconds * 1000)))


def forget_preflight(cache: redis.Redis, connection_id: str) -> None:
    """Drop the cached answer (after a new token, say)."""
    with coordination(f"preflight of {connection_id}"):
        cache.delete(redis_keys.preflight(connection_id))


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
