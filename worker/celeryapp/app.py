"""The Celery app and its configuration; nothing else.

``celery -A worker worker`` starts a worker. Task bodies live in ``tasks``.
"""

from __future__ import annotations

import sys
from typing import Any

from celery import Celery, signals

from worker import logs
from worker.celeryapp.beat import watch_beat
from worker.celeryapp.startup import check_ready
from worker.errors import ConfigError
from worker.jobs import HOUSEKEEPING_QUEUE, HOUSEKEEPING_TICK, NOTIFY_QUEUE, SYNC_QUEUE, publisher
from worker.observability.sentry import init_sentry
from worker.settings import Settings, get_settings

TASK_MODULES = ["tasks.sync", "tasks.schedule", "tasks.notify", "tasks.inbound"]


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Beat's one entry: the housekeeping tick, every ``housekeeping_tick_seconds``."""
    return {
        "housekeeping": {
            "task": HOUSEKEEPING_TICK,
            "schedule": settings.housekeeping_tick_seconds,
        }
    }


def create_app(settings: Settings) -> Celery:
    """A Celery app configured for long, resumable, at-least-once sync work."""
    app = Celery("entity_sync", broker=settings.effective_broker_url, include=TASK_MODULES)
    transport = broker_transport_options(settings)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # outcomes live in the store's run history
        # At least once: a task is acknowledged after it ran, and a task whose
        # worker died goes back to the queue. Every task is idempotent.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_eta_task_limit=100,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        # A hard ceiling far above a slice's own budget: a wedged task dies
        # long before the broker would redeliver it.
        task_time_limit=int(settings.task_time_budget + 4 * settings.request_deadline),
        task_default_queue=SYNC_QUEUE,
        task_routes={
            "entity_sync.notify*": {"queue": NOTIFY_QUEUE},
            "entity_sync.housekeeping.*": {"queue": HOUSEKEEPING_QUEUE},
        },
        beat_schedule=beat_schedule(settings),
        # Writes beat's heartbeat as it ticks (worker/celeryapp/beat.py).
        beat_scheduler="worker.celeryapp.beat:HeartbeatScheduler",
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        # Celery's consumer and kombu's Redis channel, fixed to survive a broker
        # restart under running tasks (worker/celeryapp/broker_loss.py).
        worker_consumer="worker.celeryapp.broker_loss:Consumer",
    )
    if _redis_broker(settings):
        app.conf.broker_transport = "worker.celeryapp.broker_loss:Transport"
    return app


# Broker socket limits (seconds). kombu polls Redis with a 1 s BRPOP, so a read
# that takes longer than this means the server is gone or frozen: the consumer
# then says so and reconnects, instead of waiting on the socket for ever.
BROKER_SOCKET_TIMEOUT_S = 5.0
BROKER_CONNECT_TIMEOUT_S = 5.0
BROKER_HEALTH_CHECK_S = 25


def _redis_broker(settings: Settings) -> bool:
    return settings.effective_broker_url.startswith(("redis://", "rediss://"))


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """Visibility timeout for every broker; socket timeouts for a Redis one."""
    options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout}
    if _redis_broker(settings):
        options |= {
            "socket_timeout": BROKER_SOCKET_TIMEOUT_S,
            "socket_connect_timeout": BROKER_CONNECT_TIMEOUT_S,
            "socket_keepalive": True,
            "health_check_interval": BROKER_HEALTH_CHECK_S,
        }
    return options


app = create_app(get_settings())
# How the tasks publish: handed down to everything below them (jobs.Publish).
publish = publisher(app)
BEAT_SCHEDULE: dict[str, dict[str, Any]] = app.conf.beat_schedule


@signals.setup_logging.connect
def _configure_logging(**_: Any) -> None:
    logs.configure(get_settings().log_level)


@signals.worker_init.connect
def _check_ready(**_: Any) -> None:
    try:
        check_ready(get_settings())
    except ConfigError as exc:
        # Celery logs and swallows an exception from a worker_init handler,
        # before logging is set up: the worker would start and fail every job.
        # A wrong setting (a missing secret key in a container) stops it here.
        print(f"entity-sync worker cannot start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from exc


@signals.celeryd_init.connect
@signals.beat_init.connect
def _init_sentry(**_: Any) -> None:
    init_sentry(get_settings(), beat_schedule=BEAT_SCHEDULE)


@signals.worker_ready.connect
def _watch_beat(**_: Any) -> None:
    # Warns once in this worker's log while no beat heartbeat is seen.
    watch_beat(get_settings())
