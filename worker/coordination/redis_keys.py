"""Every Redis key name entity-sync's resilience core uses, in one place.

All keys of one connection share the hash tag ``{cb:<connection_id>}``, so a
single Lua script may touch the connection breaker, every entity-type breaker,
the pause, the rate state and the concurrency slots of that connection and
still run on Redis Cluster (one tag, one slot).

    {cb:<c>}                  hash   connection breaker: state, until, reason, gen, ...
    {cb:<c>}:probe            string half-open probe token of the connection breaker
    {cb:<c>}:win              hash   failure-rate buckets of the connection breaker
    {cb:<c>}:pause            hash   connection-wide pause: until, reason
    {cb:<c>}:single           hash   one request at a time after a 429: until, holder, exp
    {cb:<c>}:ets              set    entity types that have breaker state (for show/reset)
    {cb:<c>}:et:<e>           hash   entity-type breaker
    {cb:<c>}:et:<e>:probe     string its probe token
    {cb:<c>}:et:<e>:win       hash   its failure-rate buckets
    {cb:<c>}:ev:<kind>        zset   entity types that failed with <kind> recently
    {cb:<c>}:rate             string GCRA theoretical arrival time
    {cb:<c>}:limits           hash   per-connection overrides: rate_per_s, burst, max_concurrency
    {cb:<c>}:slots            zset   concurrency-slot holders scored by expiry (ms)
    {cb:<c>}:lease:<e>        string sync lease of one entity type (worker.coordination.lease)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from worker.errors import Kind

# Entity types end up inside key names: keep them to a charset that cannot
# forge a suffix (":win", ":probe") or a hash tag.
_ENTITY_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_CONNECTION_RE = re.compile(r"^[^{}:\s]{1,128}$")


def check_connection_id(connection_id: str) -> str:
    """Return ``connection_id`` or raise ValueError if it cannot be part of a key."""
    if not _CONNECTION_RE.fullmatch(connection_id):
        raise ValueError(f"connection id {connection_id!r} cannot be used in a Redis key")
    return connection_id


def check_entity_type(entity_type: str) -> str:
    """Return ``entity_type`` or raise ValueError if it cannot be part of a key."""
    if not _ENTITY_RE.fullmatch(entity_type):
        raise ValueError(f"entity type {entity_type!r} cannot be used in a Redis key")
    return entity_type


def tag(connection_id: str) -> str:
    """The hash tag shared by every key of one connection."""
    return "{cb:" + check_connection_id(connection_id) + "}"


@dataclass(frozen=True, slots=True)
class LevelKeys:
    """The three keys of one breaker level."""

    state: str
    probe: str
    window: str

    def all(self) -> list[str]:
        """The three keys, in the order every breaker script takes them."""
        return [self.state, self.probe, self.window]


def connection_level(connection_id: str) -> LevelKeys:
    """Keys of the connection-wide breaker."""
    base = tag(connection_id)
    return LevelKeys(state=base, probe=f"{base}:probe", window=f"{base}:win")


def entity_level(connection_id: str, entity_type: str) -> LevelKeys:
    """Keys of one (connection, entity type) breaker."""
    base = f"{tag(connection_id)}:et:{check_entity_type(entity_type)}"
    return LevelKeys(state=base, probe=f"{base}:probe", window=f"{base}:win")


def pause(connection_id: str) -> str:
    """The connection-wide pause (429 Retry-After)."""
    return f"{tag(connection_id)}:pause"


def one_at_a_time(connection_id: str) -> str:
    """Set after a 429: the connection runs one request at a time (its holder) until then."""
    return f"{tag(connection_id)}:single"


def entity_index(connection_id: str) -> str:
    """Set of entity types that have breaker state, so show/reset can find them."""
    return f"{tag(connection_id)}:ets"


def evidence(connection_id: str, kind: Kind) -> str:
    """Entity types that recently failed with ``kind`` (escalation evidence)."""
    return f"{tag(connection_id)}:ev:{kind.value}"


def evidence_keys(connection_id: str) -> list[str]:
    """Evidence keys for every kind, for reset."""
    return [evidence(connection_id, kind) for kind in Kind]


def rate(connection_id: str) -> str:
    """GCRA state of the connection's proactive rate limit."""
    return f"{tag(connection_id)}:rate"


def limits(connection_id: str) -> str:
    """Per-connection overrides of rate, burst and concurrency cap."""
    return f"{tag(connection_id)}:limits"


def slots(connection_id: str) -> str:
    """Concurrency-slot holders of one connection."""
    return f"{tag(connection_id)}:slots"


def slot_waiters(connection_id: str) -> str:
    """Set while a job of the connection is parked waiting for a concurrency slot."""
    return f"{tag(connection_id)}:slotwait"


def lease(connection_id: str, entity_type: str) -> str:
    """The sync lease of one (connection, entity type): see ``worker.coordination.lease``."""
    return f"{tag(connection_id)}:lease:{check_entity_type(entity_type)}"


def preflight(connection_id: str) -> str:
    """The cached answer of the connection's status endpoint (a short TTL)."""
    return f"{tag(connection_id)}:preflight"


def halt_probe(connection_id: str) -> str:
    """Set while a halted connection's slow status probe is resting."""
    return f"{tag(connection_id)}:haltprobe"


def retry_budget(connection_id: str, window: int) -> str:
    """Retries a connection spent in one budget window (a counter with a TTL)."""
    return f"{tag(connection_id)}:retries:{window}"


def notify_lease(connection_id: str) -> str:
    """Held by the one notifier delivering a connection's events (keeps their order)."""
    return f"{tag(connection_id)}:notify"


def connection_pattern(connection_id: str) -> str:
    """A SCAN pattern matching every key of one connection (all share its tag)."""
    escaped = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in tag(connection_id))
    return escaped + "*"


SCHEDULER_LOCK = "entity_sync:scheduler:lock"  # the one active scheduler
BEAT_HEARTBEAT = (
    "entity_sync:beat:heartbeat"  # unix time of beat's last tick (worker.celeryapp.beat)
)
# Parked jobs a worker will resume by itself (countdown), scored by due time.
SELF_RESUMES = "entity_sync:parked:self_resumes"


def housekeeping_step(name: str) -> str:
    """Set while a housekeeping step rests between two runs (worker.sync.housekeeping)."""
    return f"entity_sync:housekeeping:{name}"


def deliveries(task_id: str, retries: int) -> str:
    """How often the broker handed out one message (same task id, same retry)."""
    return f"entity_sync:deliveries:{task_id}:{retries}"


def upstream_event_claim(event_id: str) -> str:
    """Held while one task acts on one kept upstream webhook (worker.inbound.actions)."""
    return f"entity_sync:upstream_event:{event_id}"
