"""Celery's consumer and kombu's Redis channel, hardened for a broker lost mid-task.

Two gaps, both seen on every Redis restart under load (RELIABILITY.md), both
ending the worker process with "Unrecoverable error: AttributeError
'NoneType' object has no attribute 'hostname'":

1. celery 5.7.0 handles a lost broker connection by detaching the
   connection's transport (``collect()``) and only then closing it. Closing
   the channel returns the unacknowledged messages (the tasks running right
   now) to the queue through a Redis client it can no longer build once the
   transport is detached. ``Consumer`` closes the connection first, while the
   transport is attached: the messages go back when the broker already
   answers, and the attempt fails quietly when it does not.
2. A task that finishes after the loss acknowledges its message on the old,
   closed channel, which needs the same client. ``Channel`` drops an ack or
   reject on a closed channel: that message was returned to the queue when
   the channel closed (it runs again, and the run's lease makes the copy
   stand down), or it is gone with the broker.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.utils.threads import bound_open_broker_sockets
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.transport import redis as kombu_redis
from kombu.utils.url import maybe_sanitize_url

log = logging.getLogger("entity_sync.broker")

# A silent broker must not hang the clean-up (Celery bounds its own the same way).
CLOSE_SOCKET_TIMEOUT_S = 2.0


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer, closing a lost connection before Celery collects it."""

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        connection: Any = self.connection
        if connection is not None:
            # Celery's own line says "broker"; this one says which (password masked).
            url = maybe_sanitize_url(self.app.conf.broker_url)
            log.warning("broker %s unreachable (%r): reconnecting", url, exc)
            bound_open_broker_sockets(connection, CLOSE_SOCKET_TIMEOUT_S)
            try:
                connection.close()
            except Exception as close_error:  # teardown of a broken connection
                log.warning(
                    "broker connection lost (%r); the tasks running now could not be "
                    "returned to the queue (%r): the broker's visibility timeout or the "
                    "stalled-run check sends them again",
                    exc,
                    close_error,
                )
        super().on_connection_error_after_connected(exc)


class Channel(kombu_redis.Channel):
    """kombu's Redis channel; acks and rejects after it closed are dropped."""

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        if self.closed:
            log.info("message %s finished after its broker connection was lost", delivery_tag)
            return
        super().basic_ack(delivery_tag, multiple=multiple)  # type: ignore[no-untyped-call]

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if self.closed:
            log.info("message %s rejected after its broker connection was lost", delivery_tag)
            return
        super().basic_reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with the channel above."""

    Channel = Channel
