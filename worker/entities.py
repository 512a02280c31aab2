"""The entity types the unified API lists, and helpers to name them."""

from __future__ import annotations

from enum import StrEnum


class EntityType(StrEnum):
    """One list endpoint of the unified API: ``GET /api/eam/{value}``."""

    SITES = "sites"
    LOCATIONS = "locations"
    ASSETS = "assets"
    WORK_ORDERS = "work-orders"
    MATERIALS = "materials"
    PURCHASE_ORDERS = "purchase-orders"
    VENDORS = "vendors"
    USERS = "users"


ALL_ENTITY_TYPES: tuple[EntityType, ...] = tuple(EntityType)
