"""Deterministic, realistic records per entity type, in Makini's camelCase shape.

Everything is drawn from a ``random.Random`` the caller seeds from
(connection seed, entity type), so one seed always yields the same data in
every process. Cross references (``siteKey``, ``assetKey``...) point at keys
that exist in the same connection, given its configured sizes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from harness.sandbox.clock import US_PER_S, format_instant
from worker.entities import EntityType

Record = dict[str, Any]

PREFIX: Mapping[EntityType, str] = {
    EntityType.SITES: "S",
    EntityType.LOCATIONS: "L",
    EntityType.ASSETS: "A",
    EntityType.WORK_ORDERS: "WO",
    EntityType.MATERIALS: "M",
    EntityType.PURCHASE_ORDERS: "PO",
    EntityType.VENDORS: "V",
    EntityType.USERS: "U",
}

# Fields a mutation redraws, so an update changes content and not only updatedAt.
VOLATILE: Mapping[EntityType, tuple[str, ...]] = {
    EntityType.SITES: ("name",),
    EntityType.LOCATIONS: ("isActive", "name"),
    EntityType.ASSETS: ("criticality", "isActive"),
    EntityType.WORK_ORDERS: ("status", "statusKey", "severity", "completedAt", "tasks"),
    EntityType.MATERIALS: ("cost",),
    EntityType.PURCHASE_ORDERS: ("statusKey", "lineItems", "totalNetValue"),
    EntityType.VENDORS: ("name",),
    EntityType.USERS: ("roleName", "isActive"),
}

_DAY_S = 86_400
_YEAR_S = 365 * _DAY_S

_CITIES = (
    ("Rotterdam", "NL", "3011 AA", 51.92, 4.48),
    ("Hamburg", "DE", "20095", 53.55, 9.99),
    ("Lyon", "FR", "69001", 45.76, 4.84),
    ("Austin", "US", "73301", 30.27, -97.74),
    ("Leeds", "GB", "LS1 4AP", 53.80, -1.55),
    ("Gdansk", "PL", "80-001", 54.35, 18.65),
    ("Porto", "PT", "4000-001", 41.15, -8.61),
    ("Tampere", "FI", "33100", 61.50, 23.76),
)
_SITE_KINDS = ("Plant", "Warehouse", "Depot", "Refinery", "Mill", "Terminal")
_STREETS = ("Industrieweg", "Harbour Road", "Mill Lane", "Station Street", "Canal Street")
_LOCATION_TYPES = ("Building", "Floor", "Room", "Area", "Line")
_ASSET_KINDS = (
    "Pump",
    "Motor",
    "Compressor",
    "Conveyor",
    "Boiler",
    "Chiller",
    "Valve",
    "Fan",
    "Gearbox",
    "Press",
    "Generator",
    "Transformer",
)
_CATEGORIES = ("Rotating", "Electrical", "HVAC", "Piping", "Instrumentation", "Structural")
_CRITICALITY = ("low", "medium", "high", "critical")
_MAKES = ("Grundfos", "Siemens", "ABB", "Atlas Copco", "KSB", "SKF", "Emerson", "Schneider")
_WO_VERBS = ("Inspect", "Repair", "Lubricate", "Replace filter on", "Calibrate", "Overhaul")
_WO_STATUS = (
    ("open", "ST-OPEN"),
    ("in_progress", "ST-INPRG"),
    ("on_hold", "ST-HOLD"),
    ("completed", "ST-COMP"),
    ("cancelled", "ST-CAN"),
)
_SEVERITY = ("low", "medium", "high", "urgent")
_PARTS = (
    "Bearing 6204",
    "V-belt A42",
    "Oil filter",
    "Gasket DN50",
    "Fuse 16A",
    "Hydraulic hose",
    "Seal kit",
    "Contactor 24V",
    "Grease cartridge",
    "Impeller",
)
_UOMS = ("EA", "M", "L", "KG", "BOX")
_CURRENCIES = ("EUR", "USD", "GBP")
_PO_STATUS = ("draft", "approved", "ordered", "received", "closed")
_VENDOR_A = ("Nordic", "Atlas", "Delta", "Prime", "Summit", "Vertex", "Apex", "Orion")
_VENDOR_B = (
    "Industrial Supply",
    "Bearings Ltd",
    "Hydraulics",
    "Electric",
    "Tools GmbH",
    "Services BV",
)
_FIRST = (
    "Anna",
    "Ben",
    "Chloe",
    "David",
    "Eva",
    "Finn",
    "Grace",
    "Hugo",
    "Iris",
    "Jonas",
    "Kim",
    "Lena",
    "Marco",
    "Nora",
    "Omar",
    "Pia",
)
_LAST = (
    "Jansen",
    "Schmidt",
    "Dubois",
    "Smith",
    "Kowalski",
    "Silva",
    "Virtanen",
    "Meyer",
    "Novak",
    "Rossi",
)
_ROLES = ("Technician", "Planner", "Supervisor", "Storekeeper", "Maintenance Manager", "Engineer")


# random.randrange/choice cost ~1.5 us each in pure Python; scaling random()
# is ~5x cheaper and keeps 100k records per entity type within seconds.
def _below(rng: random.Random, n: int) -> int:
    return int(rng.random() * n)


def _between(rng: random.Random, low: int, high: int) -> int:
    return low + int(rng.random() * (high - low + 1))


def _pick(rng: random.Random, options: tuple[Any, ...]) -> Any:
    return options[int(rng.random() * len(options))]


def record_key(entity: EntityType, index: int) -> str:
    """The key of the index-th (1-based) record of an entity type, e.g. ``A-000123``."""
    return f"{PREFIX[entity]}-{index:06d}"


def key_index(key: str) -> int:
    """Inverse of ``record_key``."""
    return int(key.rsplit("-", 1)[1])


def history_stamps(rng: random.Random, count: int, end_us: int) -> list[int]:
    """``count`` updatedAt values (second precision) over the year before ``end_us``.

    About a quarter of the records come in small batches sharing one second,
    and from 300 records on there is one bulk import of 120 records sharing one
    instant: more than a page, as the contract warns.
    """
    end_s = end_us // US_PER_S
    stamps: list[int] = []
    if count >= 300:
        stamps.extend([end_s - 1 - _below(rng, _YEAR_S)] * 120)
    while len(stamps) < count:
        second = end_s - 1 - _below(rng, _YEAR_S)
        batch = 1 if rng.random() < 0.75 else _between(rng, 2, 12)
        stamps.extend([second] * min(batch, count - len(stamps)))
    rng.shuffle(stamps)
    return [s * US_PER_S for s in stamps]


FieldBuilder = Callable[["RecordFactory", random.Random, int, int], Record]


class RecordFactory:
    """Builds records of one entity type, referencing the connection's other types."""

    def __init__(self, entity: EntityType, sizes: Mapping[EntityType, int]) -> None:
        self.entity = entity
        self._sizes = sizes
        self._build_fields = _BUILDERS[entity]

    def ref(self, rng: random.Random, entity: EntityType) -> str | None:
        """A random existing key of another entity type, or None when it has none."""
        size = self._sizes.get(entity, 0)
        return record_key(entity, _below(rng, size) + 1) if size > 0 else None

    def refs(self, rng: random.Random, entity: EntityType, most: int) -> list[str]:
        """One to ``most`` distinct keys of another entity type."""
        size = self._sizes.get(entity, 0)
        if size == 0:
            return []
        picks = {_below(rng, size) + 1 for _ in range(_between(rng, 1, most))}
        return [record_key(entity, i) for i in sorted(picks)]

    def build(self, rng: random.Random, index: int, created_us: int, updated_us: int) -> Record:
        """A complete record; ``key``, ``createdAt``, ``updatedAt`` and ``deletedAt`` first."""
        record: Record = {
            "key": record_key(self.entity, index),
            "createdAt": format_instant(created_us),
            "updatedAt": format_instant(updated_us),
            "deletedAt": None,
        }
        record.update(self._build_fields(self, rng, index, created_us))
        return record

    def touched(self, rng: random.Random, old: Record, updated_us: int) -> Record:
        """A new version of ``old``: its volatile fields redrawn, ``updatedAt`` moved."""
        fresh = self._build_fields(self, rng, key_index(old["key"]), updated_us)
        new = dict(old)
        for name in VOLATILE[self.entity]:
            new[name] = fresh.get(name)
        new["updatedAt"] = format_instant(updated_us)
        return new


def generate(
    entity: EntityType, seed: int, sizes: Mapping[EntityType, int], end_us: int
) -> tuple[list[Record], list[int]]:
    """The initial records of one entity type and their updatedAt stamps (parallel lists)."""
    # A str seed goes through SHA-512, so it is stable across processes and
    # independent of PYTHONHASHSEED.
    rng = random.Random(f"{seed}:{entity.value}")
    count = sizes.get(entity, 0)
    stamps = history_stamps(rng, count, end_us)
    factory = RecordFactory(entity, sizes)
    records = []
    for index, updated in enumerate(stamps, start=1):
        created = updated - _below(rng, 180 * _DAY_S) * US_PER_S
        records.append(factory.build(rng, index, created, updated))
    return records, stamps


def _later(rng: random.Random, start_us: int, most_days: int) -> str:
    return format_instant(start_us + _between(rng, 1, most_days * _DAY_S - 1) * US_PER_S)


def _earlier(f: RecordFactory, rng: random.Random, index: int, chance: float) -> str | None:
    """Sometimes a parent: a key created before this one (no cycles)."""
    if index > 1 and rng.random() < chance:
        return record_key(f.entity, _between(rng, 1, index - 1))
    return None


def _site(f: RecordFactory, rng: random.Random, index: int, created: int) -> Record:
    city, country, postal, lat, lng = _pick(rng, _CITIES)
    return {
        "name": f"{city} {_pick(rng, _SITE_KINDS)} {index}",
        "code": f"{city[:3].upper()}-{index:02d}",
        "organizationKey": f"ORG-{_between(rng, 1, 3):02d}",
        "address": {
            "street": f"{_pick(rng, _STREETS)} {_between(rng, 1, 250)}",
            "city": city,
            "postalCode": postal,
            "country": country,
        },
        "lat": round(lat + rng.uniform(-0.2, 0.2), 5),
        "lng": round(lng + rng.uniform(-0.2, 0.2), 5),
    }


def _location(f: RecordFactory, rng: random.Random, index: int, created: int) -> Record:
    kind = _pick(rng, _LOCATION_TYPES)
    parent = _earlier(f, rng, index, 0.7)
    return {
        "name": f"{kind} {_between(rng, 1, 40)}",
        "code": f"LOC-{index:05d}",
        "siteKey": f.ref(rng, EntityType.SITES),
        "parentKey": parent,
        "type": kind,
        "isActive": rng.random() < 0.95,
    }


def _asset(f: RecordFactory, rng: random.Random, index: int, created: int) -> Record:
    kind = _pick(rng, _ASSET_KINDS)
    make = _pick(rng, _MAKES)
    parent = _earlier(f, rng, index, 0.2)
    return {
        "name": f"{kind} {_between(rng, 1, 99)}",
        "description": f"{kind} on line {_between(rng, 1, 12)}",
        "siteKey": f.ref(rng, EntityType.SITES),
        "locationKey": f.ref(rng, EntityType.LOCATIONS),
        "parentKey": parent,
        "vendorKey": f.ref(rng, EntityType.VENDORS),
        "categoryName": _pick(rng, _CATEGORIES),
        "criticality": _pick(rng, _CRITICALITY),
        "isActive": rng.random() < 0.93,
        "makeName": make,
        "modelName": f"{make[:3].upper()}-{_between(rng, 100, 9999)}",
        "serialNumber": f"SN{_below(rng, 10**8):08d}",
    }


def _work_order(f: RecordFactory, rng: random.Random, index: int, created: int) -> Record:
    kind = _pick(rng, _ASSET_KINDS)
    status, status_key = _pick(rng, _WO_STATUS)
    key = record_key(f.entity, index)
    scheduled = created + _between(rng, 1, 30 * _DAY_S - 1) * US_PER_S
    return {
        "title": f"{_pick(rng, _WO_VERBS)} {kind.lower()} {_between(rng, 1, 99)}",
        "code": f"WO{index:07d}",
        "status": status,
        "statusKey": status_key,
        "severity": _pick(rng, _SEVERITY),
        "siteKey": f.ref(rng, EntityType.SITES),
        "assetKey": f.ref(rng, EntityType.ASSETS),
        "locationKey": f.ref(rng, EntityType.LOCATIONS),
        "dueAt": _later(rng, scheduled, 14),
        "scheduledAt": format_instant(scheduled),
        "completedAt": _later(rng, scheduled, 10) if status == "completed" else None,
        "tasks": [
            {
                "key": f"{key}-T{n}",
                "sequence": n * 10,
                "description": f"Step {n}: {_pick(rng, _WO_VERBS).lower()} {kind.lower()}",
                "isCompleted": status == "completed" or rng.random() < 0.3,
            }
            for n in range(1, _between(rng, 0, 4) + 1)
        ],
    }


def _material(f: RecordFactory, rng: random.Random, index: int, created: int) -> Record:
    return {
        "partNumber": f"P-{_below(rng, 10**6):06d}",
        "name": _pick(rng, _PARTS),
        "manufacturerName": _pick(rng, _MAKES),
        "uomKey": _pick(rng, _UOMS),
        "cost": round(rng.uniform(0.5, 2500.0), 2),
        "currency": _pick(rng, _CURRENCIES),
        "siteKeys": f.refs(rng, EntityType.SITES, 3),
    }


def _purchase_order(f: RecordFactory, rng: random.Random, index: int, created: int) -> Record:
    key = record_key(f.entity, index)
    lines: list[dict[str, Any]] = []
    for n in range(1, _between(rng, 1, 5) + 1):
        quantity = _between(rng, 1, 50)
        price = round(rng.uniform(1.0, 900.0), 2)
        lines.append(
            {
                "key": f"{key}-{n}",
                "lineNo": n,
                "materialKey": f.ref(rng, EntityType.MATERIALS),
                "quantity": quantity,
                "unitPrice": price,
                "netValue": round(quantity * price, 2),
            }
        )
    return {
        "orderNo": f"PO{index:08d}",
        "siteKey": f.ref(rng, EntityType.SITES),
        "vendorKey": f.ref(rng, EntityType.VENDORS),
        "statusKey": _pick(rng, _PO_STATUS),
        "dueAt": _later(rng, created, 60),
        "totalNetValue": round(sum(line["netValue"] for line in lines), 2),
        "lineItems": lines,
    }


def _vendor(f: RecordFactory, rng: random.Random, index: int, created: int) -> Record:
    return {
        "name": f"{_pick(rng, _VENDOR_A)} {_pick(rng, _VENDOR_B)}",
        "code": f"V{index:05d}",
        "companyKey": f"CO-{_between(rng, 1, 3):02d}",
    }


def _user(f: RecordFactory, rng: random.Random, index: int, created: int) -> Record:
    first, last = _pick(rng, _FIRST), _pick(rng, _LAST)
    return {
        "name": f"{first} {last}",
        "email": f"{first}.{last}{index}@example.com".lower(),
        "roleName": _pick(rng, _ROLES),
        "isActive": rng.random() < 0.9,
        "siteKeys": f.refs(rng, EntityType.SITES, 2),
    }


_BUILDERS: Mapping[EntityType, FieldBuilder] = {
    EntityType.SITES: _site,
    EntityType.LOCATIONS: _location,
    EntityType.ASSETS: _asset,
    EntityType.WORK_ORDERS: _work_order,
    EntityType.MATERIALS: _material,
    EntityType.PURCHASE_ORDERS: _purchase_order,
    EntityType.VENDORS: _vendor,
    EntityType.USERS: _user,
}
