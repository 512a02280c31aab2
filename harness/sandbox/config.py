"""The sandbox's configuration: connections keyed by bearer token.

The JSON form is documented, with an example, in ``harness/sandbox/README.md``.
Every model forbids unknown fields so that a typo in a scenario fails loudly
instead of silently testing nothing.
"""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.sandbox.clock import format_instant, parse_instant, to_us
from harness.sandbox.hostile import CLASSES
from worker.entities import EntityType

ScenarioName = Literal[
    "offline",
    "auth_fail_from_page",
    "forbidden",
    "not_supported",
    "rate_limit",
    "flaky",
    "source_timeout",
    "slow",
    "html_502",
    "not_json",
    "no_data",
    "truncated",
    "bad_record",
    "trickle",
    "disconnect",
    # Lies (lies.py): answers that look like the end of a list while records are missing.
    "empty",
    "cut_short",
    "lagging_replica",
    "keyless",
    # The status endpoint's sync_status, e.g. "inprogress" while the upstream syncs.
    "sync_status",
]
TieOrder = Literal["stable", "shuffled"]
SyncStatus = Literal["inprogress", "done", "fulldone", "error", "fail"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScenarioSpec(_Model):
    """One named fault, optionally restricted to an entity type and a time window.

    Only the parameters of the named scenario matter; the others keep their
    defaults. The window is ``[after_s, after_s + for_s)`` seconds on the
    connection's scenario clock (sandbox start, config PUT, connection PUT or
    scenarios POST, whichever was last).
    """

    name: ScenarioName
    entity: EntityType | None = None
    lists_only: bool = False
    after_s: float = Field(default=0.0, ge=0)
    for_s: float | None = Field(default=None, gt=0)
    # Active only from the K-th list request of the connection on the scenario
    # clock (any entity type, any page): a lie that starts in the middle of a read.
    from_request: int = Field(default=1, ge=1)
    # auth_fail_from_page: the K-th list request of the connection starts the 401s.
    page: int = Field(default=1, ge=1)
    # auth_fail_from_page: answer the status endpoint with 401 too (default: 200 "fail").
    status_401: bool = False
    # offline: let the status endpoint answer 200 with sync_status "error".
    status_ok: bool = False
    # rate_limit
    every: int = Field(default=1, ge=1)
    retry_after_s: int = Field(default=1, ge=0)
    as_date: bool = False
    # flaky
    p: float = Field(default=0.2, ge=0, le=1)
    # slow
    latency_ms: float = Field(default=0.0, ge=0)
    # bad_record
    every_page: bool = True
    variant: Literal["missing_key", "bad_updated_at"] = "missing_key"
    # trickle
    bytes_per_second: float = Field(default=1.0, gt=0)
    # disconnect: abort with a TCP reset instead of a clean close.
    reset: bool = False
    # cut_short: records left on page 1 (always fewer than the page size).
    keep: int = Field(default=40, ge=0)
    # lagging_replica: the share of keys the replica holds.
    share: float = Field(default=0.4, ge=0, le=1)
    # sync_status: what the status endpoint says.
    sync_status: SyncStatus = "inprogress"


class MutationBatch(_Model):
    """One batch of changes applied to an entity type of a connection.

    ``entities`` limits the batch to those types; ``None`` means the type of
    the request that triggered it (request-driven) or every type (time-driven
    and control API).
    """

    updates: int = Field(default=0, ge=0)
    deletes: int = Field(default=0, ge=0)
    # Deleted for real: the record is no longer listed at all (no deletedAt).
    hard_deletes: int = Field(default=0, ge=0)
    inserts: int = Field(default=0, ge=0)
    bulk_import: int = Field(default=0, ge=0)
    entities: list[EntityType] | None = None


class MutationSpec(MutationBatch):
    """A batch plus when to apply it: after every N list requests and/or every S seconds."""

    every_requests: int | None = Field(default=None, ge=1)
    every_seconds: float | None = Field(default=None, gt=0)


class HostileSpec(_Model):
    """Odd record contents mixed into good data (``hostile.py``): one record in ``every``."""

    every: int = Field(default=10, ge=1)
    classes: list[str] | None = None  # default: every class in hostile.CLASSES

    @field_validator("classes")
    @classmethod
    def _known(cls, classes: list[str] | None) -> list[str] | None:
        unknown = sorted(set(classes or ()) - set(CLASSES))
        if unknown or classes == []:
            raise ValueError(f"unknown hostile classes {unknown}; known: {', '.join(CLASSES)}")
        return classes


WebhookSwitch = Literal["reauthorization", "sync", "status"]


class ConnectionSpec(_Model):
    """What one bearer token connects to: a company, its data and its faults."""

    company_name: str = "Sandbox Company"
    provider: str = "maximo"
    id: str | None = None
    sync_status: SyncStatus = "done"
    seed: int = 0
    sizes: dict[EntityType, int] = Field(default_factory=dict)
    default_size: int = Field(default=100, ge=0)
    latency_ms: float = Field(default=0.0, ge=0)
    tie_order: TieOrder = "stable"
    mutation: MutationSpec | None = None
    scenarios: list[ScenarioSpec] = Field(default_factory=list)
    hostile: HostileSpec | None = None
    # Which webhooks the sandbox sends by itself for this connection (when it has
    # a webhook target): "reauthorization" when its 401 latch trips, "sync" after
    # each mutation batch, "status" when an offline scenario's window starts or ends.
    webhooks: list[WebhookSwitch] = Field(default_factory=list)

    @field_validator("sizes")
    @classmethod
    def _sizes_not_negative(cls, sizes: dict[EntityType, int]) -> dict[EntityType, int]:
        if any(n < 0 for n in sizes.values()):
            raise ValueError("sizes must not be negative")
        return sizes

    def size_of(self, entity: EntityType) -> int:
        """Records generated for an entity type."""
        return self.sizes.get(entity, self.default_size)

    def connection_id(self) -> str:
        """The id the status endpoint reports: configured, or 14 digits from seed and name."""
        if self.id is not None:
            return self.id
        # crc32 rather than hash(): str hashes are salted per process.
        digest = zlib.crc32(f"{self.seed}:{self.company_name}".encode())
        return f"09{digest * 1_000_003 % 10**12:012d}"


class SandboxConfig(_Model):
    """The whole sandbox: connections by token, and where generated history ends."""

    data_end: str | None = None
    connections: dict[str, ConnectionSpec] = Field(default_factory=dict)

    @field_validator("data_end")
    @classmethod
    def _instant(cls, value: str | None) -> str | None:
        if value is not None:
            parse_instant(value)
        return value

    @field_validator("connections")
    @classmethod
    def _tokens(cls, conns: dict[str, ConnectionSpec]) -> dict[str, ConnectionSpec]:
        for token in conns:
            validate_token(token)
        return conns

    def data_end_us(self) -> int:
        """End of the generated year of history; default: today's UTC midnight.

        Midnight rather than "now" keeps two processes started the same day
        generating identical data from the same seed.
        """
        if self.data_end is not None:
            return parse_instant(self.data_end)
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return to_us(today)

    def data_end_text(self) -> str:
        """``data_end_us`` as an ISO instant."""
        return format_instant(self.data_end_us())


def validate_token(token: str) -> str:
    """A token is 1..200 visible ASCII characters without spaces."""
    if not 0 < len(token) <= 200 or not all(33 <= ord(c) < 127 for c in token):
        raise ValueError(f"invalid token {token!r}")
    return token


def parse_config(raw: Any) -> SandboxConfig:
    """Validate a decoded JSON object as a config (raises pydantic ``ValidationError``)."""
    return SandboxConfig.model_validate(raw)


def read_config_file(path: str | Path) -> SandboxConfig:
    """Read and validate a JSON config file."""
    return parse_config(json.loads(Path(path).read_text(encoding="utf-8")))
