"""Named configs in code: ``--preset NAME`` or ``load_config("NAME")``.

A preset is a function returning a plain config dict (the JSON format of
README.md), so a new one is one function plus one line in ``PRESETS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.sandbox.config import SandboxConfig, parse_config

PresetFactory = Callable[[], dict[str, Any]]


def demo() -> dict[str, Any]:
    """Healthy connections (``demo-globex`` changes while you watch) and broken ones."""
    return {
        "connections": {
            "demo-acme": {
                "company_name": "Acme Plant 3",
                "provider": "maximo",
                "seed": 1,
                "default_size": 400,
                "sizes": {"assets": 2500, "work-orders": 3000, "sites": 12, "users": 150},
                "latency_ms": 5,
            },
            "demo-globex": {
                "company_name": "Globex Refinery",
                "provider": "sap_pm",
                "seed": 2,
                "default_size": 300,
                "sizes": {"assets": 1200, "work-orders": 2000, "sites": 5},
                "latency_ms": 5,
                "mutation": {
                    "every_seconds": 5,
                    "updates": 5,
                    "deletes": 1,
                    "inserts": 3,
                    "bulk_import": 0,
                    "entities": ["assets", "work-orders"],
                },
            },
            "demo-initech": {
                "company_name": "Initech Facilities",
                "provider": "fiix",
                "seed": 3,
                "default_size": 250,
                "sizes": {"assets": 800, "work-orders": 1500, "sites": 3},
                "latency_ms": 3,
            },
            "demo-umbrella": {
                "company_name": "Umbrella Labs",
                "provider": "upkeep",
                "seed": 4,
                "default_size": 200,
                "sizes": {"assets": 600, "work-orders": 900, "sites": 2},
                "latency_ms": 3,
                "tie_order": "shuffled",
            },
            # Broken beside the healthy ones: each shows one of the worker's states.
            "demo-hooli": {
                "company_name": "Hooli Datacenter (on-premises)",
                "provider": "maximo",
                "seed": 5,
                "default_size": 200,
                "latency_ms": 3,
                "scenarios": [{"name": "offline", "for_s": 6}],
            },
            "demo-expiring": {
                "company_name": "Vandelay Industries",
                "provider": "sap_pm",
                "seed": 6,
                "default_size": 600,
                "latency_ms": 3,
                "scenarios": [{"name": "auth_fail_from_page", "page": 4}],
            },
            "demo-forbidden": {
                "company_name": "Stark Works",
                "provider": "fiix",
                "seed": 7,
                "default_size": 300,
                "latency_ms": 3,
                "scenarios": [{"name": "forbidden", "entity": "work-orders"}],
            },
            "demo-throttled": {
                "company_name": "Wayne Facilities",
                "provider": "upkeep",
                "seed": 8,
                "default_size": 500,
                "latency_ms": 3,
                "scenarios": [{"name": "rate_limit", "every": 12, "retry_after_s": 2}],
            },
        }
    }


def hostile() -> dict[str, Any]:
    """Good data with one record in five holding what old ERP systems really hold.

    Sizes stay below 300 per entity type: the generator's bulk import (120
    records sharing one updatedAt, read in a tie scan) starts there.
    """
    return {
        "connections": {
            "hostile-mixed": {
                "company_name": "Legacy Mill (AS/400 export)",
                "provider": "maximo",
                "seed": 21,
                "default_size": 120,
                "sizes": {"assets": 280, "work-orders": 250},
                "hostile": {"every": 5},
            },
            "hostile-numbers": {
                "company_name": "Python-era Plant",
                "provider": "sap_pm",
                "seed": 22,
                "default_size": 80,
                "hostile": {"every": 3, "classes": ["nan", "infinity", "huge_int", "past_double"]},
            },
            "hostile-clean-neighbour": {
                "company_name": "Tidy Works",
                "provider": "fiix",
                "seed": 23,
                "default_size": 150,
            },
        }
    }


def lying() -> dict[str, Any]:
    """One connection per lie of ``lies.py``, honest for its first minute, then lying.

    The minute is the time for a first, honest sync; a full read after it
    meets the lie. ``lying-honest-deletes`` deletes one asset for real every
    30 s and tells the truth about it: a complete read must find those gone.
    """
    honest_first_s = 60.0
    lies: dict[str, list[dict[str, Any]]] = {
        "lying-empty": [{"name": "empty"}],
        "lying-cut-short": [{"name": "cut_short", "keep": 40}],
        "lying-replica": [{"name": "lagging_replica", "share": 0.4}],
        "lying-replica-syncing": [
            {"name": "lagging_replica", "share": 0.4},
            {"name": "sync_status", "sync_status": "inprogress"},
        ],
        "lying-keyless": [{"name": "keyless", "entity": "sites"}],
    }
    connections: dict[str, Any] = {
        token: {
            "company_name": f"Liar {n} ({scenarios[0]['name']})",
            "seed": 40 + n,
            "default_size": 60,
            "sizes": {"assets": 465, "sites": 15},
            "scenarios": [{**s, "after_s": honest_first_s} for s in scenarios],
        }
        for n, (token, scenarios) in enumerate(lies.items())
    }
    connections["lying-honest-deletes"] = {
        "company_name": "Honest Hard Deletes",
        "seed": 49,
        "default_size": 60,
        "sizes": {"assets": 465},
        "mutation": {"every_seconds": 30, "hard_deletes": 1, "entities": ["assets"]},
    }
    return {"connections": connections}


def empty() -> dict[str, Any]:
    """No connections: configure everything through the control API."""
    return {"connections": {}}


PRESETS: dict[str, PresetFactory] = {
    "demo": demo,
    "empty": empty,
    "hostile": hostile,
    "lying": lying,
}


def preset(name: str) -> SandboxConfig:
    """The validated config of a named preset (``KeyError`` lists the known names)."""
    try:
        factory = PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None
    return parse_config(factory())
