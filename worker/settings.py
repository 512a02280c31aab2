"""All configuration, read once from ``ENTITY_SYNC_*`` environment variables.

``get_settings()`` is the only entry point. A wrong value raises ConfigError
whose message names the environment variable, so a worker fails at start-up
instead of at the first job.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from functools import lru_cache
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.errors import ConfigError
from worker.operator_input import (
    InvalidInput,
    check_http_url,
    check_webhook_secret,
    upstream_base,
)

ENV_PREFIX = "ENTITY_SYNC_"

PositiveSeconds = Annotated[float, Field(gt=0, le=86_400)]


class Settings(BaseSettings):
    """Every knob of entity-sync; each field is ENTITY_SYNC_<FIELD NAME>."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # Where things live.
    redis_url: str = "redis://127.0.0.1:6379/0"  # coordination: leases, breakers, limits
    broker_url: str | None = None  # the Celery broker (Redis or AMQP); default: REDIS_URL
    store_url: str = "sqlite:///var/entity-sync.db"  # sqlite:///PATH or postgresql://...
    # The unified API of a connection registered without --upstream-url.
    upstream_url: str = "http://127.0.0.1:8900"

    # Secrets: comma-separated Fernet keys, newest first (older ones only decrypt).
    secret_key: SecretStr | None = None  # required by workers: tokens are encrypted with it

    # Upstream HTTP behaviour.
    connect_timeout: PositiveSeconds = 5.0  # to open a connection to the unified API
    read_timeout: PositiveSeconds = 30.0  # the longest wait for the next bytes of an answer
    request_deadline: PositiveSeconds = 60.0  # over connect, TLS, headers and body
    # An answer larger than this, decoded (gzip and deflate inflated), is refused.
    max_response_bytes: Annotated[int, Field(ge=1024)] = 32 * 1024 * 1024
    page_size: Annotated[int, Field(ge=1, le=100)] = 100  # per_page of each list request
    pool_size: Annotated[int, Field(ge=1, le=1000)] = 20  # HTTP connections kept per process

    # Bounded work per task: continue in a new task after this many pages or seconds.
    pages_per_task: Annotated[int, Field(ge=1, le=10_000)] = 50  # pages in one task
    task_time_budget: PositiveSeconds = 120.0  # seconds of one task before it hands over
    # A tie group (records sharing one updatedAt) is only left behind once it is
    # this much older than the upstream's clock, so late writers cannot join it.
    tie_settle_seconds: PositiveSeconds = 2.0
    max_tie_passes: Annotated[int, Field(ge=1, le=1000)] = 20  # re-reads of one tie group
    # A run reads changes up to the upstream's clock at its first page plus this
    # margin, then ends; later changes are the next run's.
    run_horizon_margin_seconds: Annotated[float, Field(ge=0, le=86_400)] = 5.0

    # Scheduling: every connection syncs this often unless it has its own interval.
    sync_interval_seconds: Annotated[int, Field(ge=1, le=7 * 86_400)] = 900  # the default interval
    schedule_enabled: bool = True  # false: only requested syncs run (tests, maintenance)
    # A scheduled sync becomes a full read (a reconciliation, which finds keys the
    # source deleted for real) when an entity type had none for this long.
    reconcile_interval_seconds: Annotated[int, Field(ge=1, le=366 * 86_400)] = 7 * 86_400
    # The mass-deletion guard: a complete read that would mark more than this
    # share of a pair's live records and more than this many (or all of them)
    # holds them instead, until a complete read this much later confirms them
    # or an operator decides (`entity-sync deletions`). Per connection:
    # `connections deletion-guard ID`.
    deletion_guard_percent: Annotated[float, Field(ge=0, le=100)] = 10.0
    # ... and more than this many records (or all of them): the guard's second part.
    deletion_guard_min_records: Annotated[int, Field(ge=0, le=10_000_000)] = 20
    # A complete read at least this long after a hold applies the keys it still misses.
    deletion_confirm_after_seconds: Annotated[int, Field(ge=0, le=366 * 86_400)] = 3600
    # The broker may hand out a message again after a crash; past this many
    # deliveries it is a poison job and is dead-lettered instead of run.
    max_deliveries: Annotated[int, Field(ge=1, le=100)] = 5

    # Coordination.
    lease_ttl: PositiveSeconds = 300.0  # a crashed run blocks its pair at most this long
    # A running run with no task start, page or lease for this long lost its
    # next task (a broker restarted empty, a crash in kombu's pop-to-unacked
    # window): housekeeping sends it again from its saved cursor. Must exceed LEASE_TTL.
    stalled_run_seconds: PositiveSeconds = 900.0
    # The broker hands an unacknowledged task to another worker after this long.
    visibility_timeout: PositiveSeconds = 3600.0
    # Beat sends one housekeeping tick this often; the tick runs every step that
    # is due. A worker that sees no beat heartbeat for beat_stale_seconds warns
    # once: long deferrals wait for beat.
    housekeeping_tick_seconds: Annotated[float, Field(ge=0.5, le=60)] = 5.0
    beat_stale_seconds: PositiveSeconds = 120.0  # no beat heartbeat this long: warn

    # Breakers (worker.resilience.breaker): trip on a failure rate over a window once
    # enough calls were made, or on consecutive failures for low volume.
    breaker_failure_rate: Annotated[float, Field(gt=0, le=1)] = 0.5  # failure share that trips it
    breaker_min_calls: Annotated[int, Field(ge=1, le=10_000)] = 10  # calls before the rate counts
    # Failures in a row that trip it, whatever the rate.
    breaker_consecutive_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    breaker_base_open_seconds: PositiveSeconds = 5.0  # first open time; doubles, full jitter
    breaker_max_open_seconds: PositiveSeconds = 600.0  # the longest open time
    block_reprobe_seconds: PositiveSeconds = 1800.0  # a blocked entity type is probed again
    max_pause_seconds: PositiveSeconds = 3600.0  # a Retry-After is clamped to this
    preflight_cache_seconds: PositiveSeconds = 30.0  # a status answer is reused this long

    # Per-connection limits (defaults; `entity-sync connections limits` overrides).
    rate_per_second: Annotated[float, Field(gt=0, le=10_000)] = 10.0  # requests per second
    rate_burst: Annotated[int, Field(ge=1, le=10_000)] = 10  # requests allowed at once
    max_concurrency: Annotated[int, Field(ge=1, le=1000)] = 4  # tasks of one connection at once

    # Retries: transient failures retry with capped full-jitter backoff.
    max_retries: Annotated[int, Field(ge=0, le=100)] = 8  # retries of one task
    retry_backoff_cap_seconds: Annotated[float, Field(gt=0, le=60)] = 60.0  # the longest backoff
    # Retries a connection may spend per minute, whatever its requests ...
    retry_budget_reserve: Annotated[int, Field(ge=0, le=10_000)] = 10
    # ... plus this share of its requests in that minute.
    retry_budget_ratio: Annotated[float, Field(ge=0, le=10)] = 0.2

    # Webhooks (worker.outbox.notifier): signed with the connection's secret, else the global one.
    #
    # The global signing secret, at least 16 bytes. Every connection without its own
    # shares it, so their receivers could forge events to one another (docs/webhooks.md).
    webhook_secret: SecretStr | None = None
    # Rotating the global secret: the previous one signs next to it until then.
    webhook_secret_previous: SecretStr | None = None
    webhook_secret_previous_until: datetime | None = None  # its end: an instant with its offset
    # `connections set-webhook --secret-stdin`: how long the replaced secret still signs.
    webhook_secret_rotation_seconds: Annotated[int, Field(ge=0, le=30 * 86_400)] = 86_400
    webhook_default_url: str | None = None  # for connections without a webhook URL
    webhook_allow_http: bool = False  # local development only
    webhook_allow_private: bool = False  # loopback/private targets: local development only
    webhook_timeout: PositiveSeconds = 10.0  # one delivery attempt
    webhook_max_age_seconds: PositiveSeconds = 86_400.0  # then the event is dead-lettered
    webhook_retry_base_seconds: PositiveSeconds = 5.0  # first wait between attempts
    webhook_retry_cap_seconds: PositiveSeconds = 3600.0  # longest wait between attempts
    # A connection whose breaker stays open this long fires connection.unavailable.
    unavailable_after_seconds: PositiveSeconds = 300.0

    # Retention: history is deleted once old; dead events (never delivered) are
    # kept longer. Pending events and what is still read are never deleted.
    #
    # Runs, transitions, the schedule log and delivered events: deleted after this many days.
    history_retention_days: Annotated[float, Field(gt=0, le=3650)] = 14.0
    # Dead events are kept this many days (at least the history's period).
    dead_event_retention_days: Annotated[float, Field(gt=0, le=3650)] = 90.0
    retention_batch_size: Annotated[int, Field(ge=10, le=100_000)] = 1000  # rows per transaction

    # Webhooks the unified API sends (`entity-sync receiver`, worker/inbound/actions.py):
    # its secret may be several, comma-separated, the current one first; any of them
    # verifies, so a rotation keeps the old one listed until the sender uses the new one.
    upstream_webhook_secret: SecretStr | None = None  # required by the receiver
    receiver_host: str = "127.0.0.1"  # where `entity-sync receiver` listens
    receiver_port: Annotated[int, Field(ge=1, le=65_535)] = 8902  # and on which port
    # A body larger than this is refused unread (413); the upstream's events are small.
    upstream_webhook_max_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 65_536
    # How long a connection.status_changed "offline" opens the connection's breaker
    # when no "online" follows; a half-open probe (polling) comes after it.
    upstream_offline_open_seconds: PositiveSeconds = 300.0
    # The base URL of the unified API whose webhooks the receiver takes (default:
    # UPSTREAM_URL). An event's connection_id names connections only of that API:
    # a connection with another upstream_url is never matched by it.
    receiver_upstream_url: str | None = None
    # The freshness window of an upstream event, by its created_at: an event
    # older than this is refused at receipt (422; a replay, or a retry too late),
    # and one kept but not processed within it (its connection id unknown until
    # a preflight learns it, or no worker) is marked stale instead of acted on.
    # Ids are remembered for at least this plus the skew below, so a replay
    # inside the window is a duplicate (200) and never acted on twice.
    upstream_event_max_age_seconds: PositiveSeconds = 3600.0
    # How far ahead of this clock an event's created_at may be (the sender's
    # clock may run ahead a little); further is refused at receipt (422): a
    # forged future date would win every later ordering comparison.
    upstream_event_future_skew_seconds: Annotated[float, Field(ge=0, le=3600)] = 300.0
    # Events for an upstream connection id no connection here has (yet) are
    # listed (`entity-sync upstream-events --unmapped`) and pruned after this;
    # never before the freshness window plus the skew (the duplicate memory).
    upstream_unmapped_retention_seconds: PositiveSeconds = 86_400.0

    # The read-only health dashboard (`entity-sync dashboard`): loopback by default.
    dashboard_host: str = "127.0.0.1"  # where `entity-sync dashboard` listens
    dashboard_port: Annotated[int, Field(ge=1, le=65_535)] = 8901  # and on which port
    # A client silent this long is dropped.
    dashboard_socket_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 10.0
    # A request (line and headers) must arrive whole within this.
    dashboard_request_deadline_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    # More connections than this at once are closed unanswered.
    dashboard_max_connections: Annotated[int, Field(ge=1, le=10_000)] = 64

    # Operations.
    log_level: str = "INFO"  # DEBUG, INFO, WARNING, ERROR or CRITICAL; JSON lines on stderr
    sentry_dsn: SecretStr | None = None  # workers and beat report to Sentry; unset: nothing sent

    @property
    def effective_broker_url(self) -> str:
        """The Celery broker: ENTITY_SYNC_BROKER_URL, else the Redis URL."""
        return self.broker_url or self.redis_url

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in {
            "redis",
            "rediss",
            "amqp",
            "amqps",
            "pyamqp",
        }:
            raise ValueError("must be a redis:// or amqp:// URL")
        return value

    @field_validator("store_url")
    @classmethod
    def _store_scheme(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in {"sqlite", "postgresql", "postgres"}:
            raise ValueError("must be sqlite:///PATH or postgresql://HOST/DB")
        if scheme == "sqlite" and not value.startswith("sqlite:///"):
            raise ValueError("a SQLite URL is sqlite:///relative/path or sqlite:////abs/path")
        return value

    @field_validator("upstream_url", "receiver_upstream_url")
    @classmethod
    def _http_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None  # receiver_upstream_url: UPSTREAM_URL's
        try:
            return check_http_url(value, what="the URL")
        except InvalidInput:
            # The same rule as `connections add --upstream-url` (worker/operator_input.py).
            raise ValueError("must be an http:// or https:// URL with a host") from None

    def receiver_upstream_base(self) -> str:
        """The normalised base URL of the unified API the receiver hears from."""
        return upstream_base(self.receiver_upstream_url or self.upstream_url)

    @field_validator("upstream_webhook_secret")
    @classmethod
    def _secret_list(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        parts = [p.strip() for p in value.get_secret_value().split(",")]
        if not all(parts) or any(len(p) < 16 for p in parts):
            raise ValueError(
                "must be one or more comma-separated secrets of at least 16 characters each"
            )
        return value

    def upstream_webhook_secrets(self) -> list[bytes]:
        """The secrets that verify an upstream webhook, the current one first."""
        if self.upstream_webhook_secret is None:
            return []
        raw = self.upstream_webhook_secret.get_secret_value()
        return [p.strip().encode() for p in raw.split(",") if p.strip()]

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret_length(cls, value: SecretStr | None) -> SecretStr | None:
        # Only the current secret: a short previous one may still sign during
        # its window, so that a deployment can rotate away from it.
        if value is not None:
            try:
                check_webhook_secret(value.get_secret_value(), what="secret")
            except InvalidInput as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("webhook_secret_previous_until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must be an instant with its offset, e.g. 2026-12-01T00:00:00Z")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("secret_key")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        for key in value.get_secret_value().split(","):
            try:
                raw = base64.urlsafe_b64decode(key.strip().encode())
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != 32:
                raise ValueError(
                    "must be one or more comma-separated Fernet keys "
                    "(generate one with `entity-sync keygen`)"
                )
        return value

    @model_validator(mode="after")
    def _rotation_has_an_end(self) -> Settings:
        if self.webhook_secret_previous is not None and self.webhook_secret_previous_until is None:
            raise ValueError(
                f"{ENV_PREFIX}WEBHOOK_SECRET_PREVIOUS is set without "
                f"{ENV_PREFIX}WEBHOOK_SECRET_PREVIOUS_UNTIL: say until when the previous "
                "secret still signs (an instant such as 2026-12-01T00:00:00Z)"
            )
        if self.webhook_secret_previous is not None and self.webhook_secret is None:
            raise ValueError(
                f"{ENV_PREFIX}WEBHOOK_SECRET_PREVIOUS is set without {ENV_PREFIX}WEBHOOK_SECRET"
            )
        return self

    @model_validator(mode="after")
    def _dead_kept_longer(self) -> Settings:
        if self.dead_event_retention_days < self.history_retention_days:
            raise ValueError(
                f"{ENV_PREFIX}DEAD_EVENT_RETENTION_DAYS ({self.dead_event_retention_days:g}) "
                f"must be at least {ENV_PREFIX}HISTORY_RETENTION_DAYS "
                f"({self.history_retention_days:g}): dead events are kept longer"
            )
        return self

    @model_validator(mode="after")
    def _stalled_after_lease(self) -> Settings:
        if self.stalled_run_seconds <= self.lease_ttl:
            raise ValueError(
                f"{ENV_PREFIX}STALLED_RUN_SECONDS ({self.stalled_run_seconds:g}) must be greater "
                f"than {ENV_PREFIX}LEASE_TTL ({self.lease_ttl:g}): a run between two tasks "
                "would be sent twice"
            )
        return self


def _explain(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        # A check across fields has no location: its message names the variables.
        lines.append(f"{ENV_PREFIX}{field.upper()}: {error['msg']}" if field else error["msg"])
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings() -> Settings:
    """Read the environment now; raise ConfigError naming each bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
