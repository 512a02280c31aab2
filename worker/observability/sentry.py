"""Sentry for the worker and beat: one event per transition, tagged, grouped, scrubbed.

``init_sentry(settings)`` does nothing without ENTITY_SYNC_SENTRY_DSN. With
one, every event carries the tags ``connection_id``, ``entity_type``,
``task_id`` (and ``error_kind``, ``error_scope`` where known) and passes
through ``scrub`` on its way out:

- expected outcomes are dropped: a job meeting an open breaker, a pause, a
  halt or a block (``Deferred``, ``Halted``, ``Blocked``), a transient failure
  that will retry (``RetryLater``) and Celery's own Retry/Ignore/Reject;
- one repeating problem sends at most a few events a minute from a process
  (``sentry_throttle``): a flood of bad jobs cannot use up the quota;
- secrets are redacted wherever they sit: values under keys that name a
  secret, ``Bearer``/``Basic`` credentials, Fernet ciphertexts, and every
  value passed to ``register_secret`` (decrypted tokens and webhook secrets).

Failures of a connection are told once, as they change state:
``report_transition`` sends one event per breaker transition that needs a
person (halted, open, blocked), grouped per (connection, kind). The
``TransitionRecorder`` calls it, and it is called once per transition.

Beat entries are watched as Sentry cron monitors. Sentry Crons cannot watch
intervals under a minute, so those entries send a heartbeat check-in instead,
at most once a minute per worker process, after the task ran.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import sentry_sdk
from celery import signals
from celery.exceptions import Ignore, Reject, Retry
from celery.schedules import crontab, schedule
from sentry_sdk.crons import MonitorStatus, capture_checkin
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.logging import LoggingIntegration

from worker.errors import Blocked, Deferred, Halted, RetryLater, Scope, UpstreamError
from worker.logs import context, log
from worker.observability.sentry_throttle import RepeatThrottle, kind_of
from worker.redaction import FILTERED, redact, register_secret
from worker.resilience.breaker_types import Actor, State

if TYPE_CHECKING:
    from sentry_sdk._types import Breadcrumb, BreadcrumbHint, Event, Hint
    from sentry_sdk.transport import Transport

    from worker.resilience.guard import StateChange
    from worker.settings import Settings


# Outcomes the worker expects and handles: never a Sentry event.
EXPECTED = (Deferred, Halted, Blocked, RetryLater, Retry, Ignore, Reject)
_EXPECTED_NAMES = frozenset(cls.__name__ for cls in EXPECTED)

# Transitions a person must hear about, and how loudly.
REPORTED_STATES: dict[State, Literal["error", "warning"]] = {
    State.HALTED: "error",
    State.OPEN: "warning",
    State.BLOCKED: "warning",
}

_SECRET_KEY = re.compile(
    r"authorization|token|secret|password|passwd|api[-_]?key|cookie|credential", re.IGNORECASE
)

_TAG_MAX = 200  # Sentry's limit on a tag value

HEARTBEAT_EVERY_S = 60.0
_initialized_dsn: str | None = None
_throttle = RepeatThrottle()


# -- set-up -----------------------------------------------------------------------


def init_sentry(
    settings: Settings,
    *,
    transport: Transport | None = None,
    beat_schedule: Mapping[str, Mapping[str, Any]] | None = None,
) -> bool:
    """Start Sentry in this worker or beat process; False (a no-op) without a DSN.

    ``transport`` replaces the HTTP transport (tests capture envelopes with it).
    ``beat_schedule`` is the app's schedule, for the cron monitors.
    """
    global _initialized_dsn, _throttle
    if settings.sentry_dsn is None:
        return False
    dsn = settings.sentry_dsn.get_secret_value()
    if transport is None and _initialized_dsn == dsn and sentry_sdk.is_initialized():
        return True  # worker_init and beat_init in one process, or a forked child
    for secret in (settings.webhook_secret, settings.webhook_secret_previous, settings.secret_key):
        if secret is not None:
            for part in secret.get_secret_value().split(","):
                register_secret(part.strip())
    too_frequent, heartbeats = beat_monitors(beat_schedule or {})
    _throttle = RepeatThrottle()
    sentry_sdk.init(
        dsn=dsn,
        transport=transport,
        integrations=[
            CeleryIntegration(monitor_beat_tasks=True, exclude_beat_tasks=too_frequent),
            # Warnings (every transition, every failed run) stay in the log;
            # a Sentry event per warning would bury the transitions.
            LoggingIntegration(level=logging.INFO, event_level=logging.ERROR),
        ],
        # No PII: left unset, since sentry-sdk 2.x deprecates send_default_pii
        # (for data_collection) and its default already sends none.
        max_request_body_size="never",
        before_send=scrub,
        before_send_transaction=scrub,
        before_breadcrumb=scrub_breadcrumb,
        environment=getattr(settings, "sentry_environment", None),
        release=getattr(settings, "sentry_release", None),
    )
    _initialized_dsn = dsn
    _connect_signals(heartbeats)
    return True


def beat_monitors(
    beat_schedule: Mapping[str, Mapping[str, Any]],
) -> tuple[list[str], dict[str, tuple[str, int]]]:
    """Entries Sentry Crons cannot watch natively, and their heartbeats.

    Returns the entry-name patterns to exclude from native monitoring, and
    ``task name -> (monitor slug, heartbeat interval in minutes)``.
    """
    excluded: list[str] = []
    heartbeats: dict[str, tuple[str, int]] = {}
    for name, entry in beat_schedule.items():
        seconds = _interval_seconds(entry.get("schedule"))
        if seconds is None or (seconds >= 60 and seconds % 60 == 0):
            continue  # crontab or whole minutes: Sentry watches it natively
        excluded.append(f"^{re.escape(name)}$")
        heartbeats[str(entry["task"])] = (name, max(1, math.ceil(seconds / 60)))
    return excluded, heartbeats


def _interval_seconds(value: object) -> float | None:
    if isinstance(value, crontab):
        return None
    if isinstance(value, schedule):
        return float(value.seconds)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float):
        return float(value)
    return None


_signals_connected = False
_heartbeats: dict[str, tuple[str, int]] = {}
_last_beat: dict[tuple[str, str], float] = {}
_beat_lock = threading.Lock()


def _connect_signals(heartbeats: dict[str, tuple[str, int]]) -> None:
    global _signals_connected
    _heartbeats.clear()
    _heartbeats.update(heartbeats)
    if _signals_connected:
        return
    signals.task_prerun.connect(_tag_task, weak=False)
    signals.task_success.connect(_heartbeat_ok, weak=False)
    signals.task_failure.connect(_heartbeat_error, weak=False)
    _signals_connected = True


def _tag_task(task_id: str | None = None, args: Any = None, kwargs: Any = None, **_: Any) -> None:
    """Tag the task's own scope from its payload (keywords, or one JSON object)."""
    payload = kwargs if isinstance(kwargs, dict) and kwargs else None
    if payload is None and isinstance(args, list | tuple) and args and isinstance(args[0], dict):
        payload = args[0]
    fields = payload or {}
    bind_scope(
        connection_id=_text(fields.get("connection_id")),
        entity_type=_text(fields.get("entity_type")),
        task_id=_text(task_id),
    )


def _text(value: object) -> str | None:
    return value[:_TAG_MAX] if isinstance(value, str) and value else None


def _heartbeat_ok(sender: Any = None, **_: Any) -> None:
    _heartbeat(sender, MonitorStatus.OK)


def _heartbeat_error(sender: Any = None, **_: Any) -> None:
    _heartbeat(sender, MonitorStatus.ERROR)


def _heartbeat(task: Any, status: str) -> None:
    """A check-in for a beat task too frequent for Sentry Crons, at most once a minute."""
    monitor = _heartbeats.get(str(getattr(task, "name", "")))
    if monitor is None:
        return
    slug, minutes = monitor
    now = time.monotonic()
    with _beat_lock:
        last = _last_beat.get((slug, status))
        if last is not None and now - last < HEARTBEAT_EVERY_S:
            return
        _last_beat[(slug, status)] = now
    capture_checkin(
        monitor_slug=slug,
        status=status,
        monitor_config={
            "schedule": {"type": "interval", "value": minutes, "unit": "minute"},
            "checkin_margin": 5,  # minutes: a stuck beat or a dead queue, not a slow minute
            "max_runtime": 5,
        },
    )


# -- tags and transitions ---------------------------------------------------------


def bind_scope(
    *, connection_id: str | None = None, entity_type: str | None = None, task_id: str | None = None
) -> None:
    """Tag the current task's scope (the Celery integration gives each task its own)."""
    scope = sentry_sdk.get_isolation_scope()
    for name, value in (
        ("connection_id", connection_id),
        ("entity_type", entity_type),
        ("task_id", task_id),
    ):
        if value is not None:
            scope.set_tag(name, value[:_TAG_MAX])


def report_transition(change: StateChange) -> str | None:
    """One Sentry event for a transition a person must hear about; its id, or None.

    Never raises: Sentry trouble must not break the recorder that calls it.
    """
    level = REPORTED_STATES.get(change.to_state)
    if level is None or change.actor is Actor.OPERATOR:
        return None  # a recovery, a pause (routine 429s) or a person's own action
    if change.from_state is State.HALF_OPEN:
        return None  # a failed probe: the same outage goes on, and its start was told
    if not sentry_sdk.get_client().is_active():
        return None
    try:
        cause = change.cause
        kind = cause.kind.value if cause is not None else "unknown"
        scope = Scope.CONNECTION if change.entity_type is None else Scope.ENTITY_TYPE
        where = change.entity_type or "connection"
        tags = {
            "connection_id": change.connection_id[:_TAG_MAX],
            "entity_type": (change.entity_type or "")[:_TAG_MAX] or None,
            "error_kind": kind,
            "error_scope": scope.value,
            "transition": f"{change.from_state}->{change.to_state}",
        }
        return sentry_sdk.capture_message(
            f"{change.connection_id}: {where} {change.to_state} ({kind})",
            level=level,
            tags={k: v for k, v in tags.items() if v is not None},
            fingerprint=["entity-sync", change.connection_id, kind],
            contexts={
                "transition": {
                    "from_state": change.from_state,
                    "to_state": change.to_state,
                    "reason": change.reason,
                    "until": change.until,
                    "http_status": cause.status if cause else None,
                    "code": cause.code if cause else None,
                    "upstream_request_id": cause.request_id if cause else None,
                }
            },
        )
    except Exception:
        log.warning("could not report a transition to Sentry", exc_info=True)
        return None


# -- scrubbing --------------------------------------------------------------------


def scrub(event: Event, hint: Hint) -> Event | None:
    """``before_send``: drop expected outcomes and floods, fill tags, redact secrets."""
    if event.get("type") != "check_in":
        if _is_expected(event, hint):
            return None
        if event.get("type") != "transaction" and not _admitted(event):
            return None
        _fill_tags(event, hint)
    scrubbed: Event = _scrub_value(event)
    return scrubbed


def _admitted(event: Event) -> bool:
    """Pass the throttle; an admitted event says how many like it were dropped."""
    dropped = _throttle.admit(kind_of(event))
    if dropped:
        event.setdefault("extra", {})["dropped_repeats"] = dropped
    return dropped is not None


def scrub_breadcrumb(crumb: Breadcrumb, hint: BreadcrumbHint) -> Breadcrumb | None:
    """``before_breadcrumb``: the same redaction for breadcrumbs as they are recorded."""
    scrubbed: Breadcrumb = _scrub_value(crumb)
    return scrubbed


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {
            (redact(k) if isinstance(k, str) else k): (
                FILTERED
                if isinstance(k, str) and _SECRET_KEY.search(k) and v not in (None, "")
                else _scrub_value(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub_value(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return FILTERED
    return value


def _is_expected(event: Event, hint: Hint) -> bool:
    exc_info = hint.get("exc_info")
    if exc_info and isinstance(exc_info[1], EXPECTED):
        return True
    values = (event.get("exception") or {}).get("values") or []
    return bool(values) and values[-1].get("type") in _EXPECTED_NAMES


def _fill_tags(event: Event, hint: Hint) -> None:
    tags = event.setdefault("tags", {})
    assert isinstance(tags, dict)
    for name, value in context().items():
        if name in ("connection_id", "entity_type", "task_id") and isinstance(value, str):
            tags.setdefault(name, value[:_TAG_MAX])
    exc_info = hint.get("exc_info")
    exc = exc_info[1] if exc_info else None
    if isinstance(exc, UpstreamError):
        tags.setdefault("error_kind", exc.kind.value)
