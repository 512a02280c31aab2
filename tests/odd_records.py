"""What the store must hold after syncing the sandbox's hostile data (shared by tests and chaos).

``audit_hostile`` compares one (connection, entity type) with the sandbox's
truth and the expectations of ``harness.sandbox.hostile``: good records as
received, odd ones stored as docs/records.md says or quarantined with a reason.
Quarantine keeps one row per distinct bad text (its fingerprint), so a bad
record that changed upstream is there once per version seen.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from harness.sandbox.hostile import KEYLESS, OUTCOME, odd_class
from harness.testing.sandbox import SandboxHandle
from worker.store import SqlStore
from worker.timeutil import NULL_DATE, canonical_instant

# Classes whose ``data`` is an escaped form, with the exact text in ``raw``.
ESCAPED = frozenset({"nul_text", "nul_byte", "nan", "infinity", "past_numeric", "lone_surrogate"})


@dataclass
class HostileAudit:
    """Records checked, those found nowhere, and every other mismatch, by class."""

    checked: int = 0
    lost: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    classes: Counter[str] = field(default_factory=Counter)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.wrong)

    def add(self, other: HostileAudit) -> None:
        self.checked += other.checked
        self.lost += other.lost
        self.wrong += other.wrong
        self.classes.update(other.classes)


def audit_hostile(
    store: SqlStore,
    sandbox: SandboxHandle,
    connection_id: str,
    token: str,
    entity: str,
    *,
    seed: int,
    every: int | None,
    classes: tuple[str, ...] | None = None,
) -> HostileAudit:
    """``every=None``: a clean connection, every record must be stored as received."""
    result = HostileAudit()
    truth = {r["key"]: r for r in sandbox.truth(token, entity)}
    stored = {r.key: r for r in store.records(connection_id, entity)}
    quarantine = store.quarantined(connection_id, entity)
    quarantined_keys = Counter(key for key, _ in quarantine)
    if any(not reason for _, reason in quarantine):
        result.wrong.append(f"{connection_id}/{entity}: a quarantined record has no reason")
    keyless = 0
    for key, record in truth.items():
        result.checked += 1
        cls = odd_class(seed, key, every=every, classes=classes) if every else None
        where = f"{connection_id}/{entity}/{key} ({cls or 'good'})"
        if cls is not None:
            result.classes[cls] += 1
        if cls is not None and OUTCOME[cls] == "quarantined":
            if key in stored:
                result.wrong.append(f"{where}: stored, expected in quarantine")
            if cls in KEYLESS:
                keyless += 1
            elif quarantined_keys[key] == 0:  # once per distinct bad version it had
                result.lost.append(f"{where}: not in quarantine")
            continue
        copy = stored.get(key)
        if copy is None:
            result.lost.append(f"{where}: not stored")
            continue
        updated = canonical_instant(record["updatedAt"])
        if cls == "null_date_updated_at":
            updated = NULL_DATE
        elif cls == "year_below_1000":
            updated = "0999-05-01T00:00:00.000000Z"
        deleted = canonical_instant(record["deletedAt"]) if record.get("deletedAt") else None
        if cls == "null_date_deleted_at":
            deleted = None  # the sandbox sends the sentinel instead, which means "not deleted"
        expected = (updated, deleted, cls in ESCAPED)
        actual = (copy.updated_at, copy.deleted_at, copy.raw is not None)
        if actual != expected:
            result.wrong.append(f"{where}: stored {actual}, expected {expected}")
        if cls is None and copy.data != record:
            result.wrong.append(f"{where}: data differs from the upstream")
        if cls is not None and copy.data.get("key") != key:
            result.wrong.append(f"{where}: data lost its key")
    if quarantined_keys[None] < keyless:
        result.lost.append(
            f"{connection_id}/{entity}: {quarantined_keys[None]} keyless quarantined, "
            f"expected at least {keyless}"
        )
    extra = sorted(set(stored) - set(truth))
    if extra:
        result.wrong.append(f"{connection_id}/{entity}: stored keys the upstream never had {extra}")
    return result
