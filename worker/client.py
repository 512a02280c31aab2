"""Enqueue entity-sync jobs from another service: needs only celery and the broker URL.

    from worker.client import EntitySyncClient
    client = EntitySyncClient("redis://127.0.0.1:6379/0")
    request_id = client.sync_connection("acme-plant-3", entity_types=["assets"])

Publishing gives up after a few seconds with BrokerUnavailable instead of
hanging when the broker is down.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from celery import Celery

from worker.errors import EntitySyncError
from worker.jobs import (
    MANUAL_QUEUE,
    SYNC_CONNECTION,
    SYNC_QUEUE,
    SyncConnectionJob,
    publisher,
)

PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1}


class BrokerUnavailable(EntitySyncError):
    """The broker did not take the job."""


class EntitySyncClient:
    """Sends validated jobs to the entity-sync workers by task name."""

    def __init__(self, broker_url: str, *, app: Celery | None = None, retry: bool = True) -> None:
        self._app = app or Celery("entity_sync_client", broker=broker_url)
        self._app.conf.broker_connection_timeout = 3
        self._app.conf.broker_transport_options = {"socket_connect_timeout": 3, "socket_timeout": 5}
        # retry=False: one attempt (a caller that must not wait on the broker).
        options = {"retry": True, "retry_policy": PUBLISH_RETRY} if retry else {"retry": False}
        self._publish = publisher(self._app, **options)

    def sync_connection(
        self,
        connection_id: str,
        *,
        entity_types: Sequence[str] | None = None,
        full: bool = False,
        trigger: str = "manual",
        request_id: str | None = None,
    ) -> str:
        """Enqueue a sync of a connection; returns the request id its runs carry."""
        job = SyncConnectionJob.model_validate(
            {
                "connection_id": connection_id,
                "entity_types": list(entity_types) if entity_types else None,
                "full": full,
                "trigger": trigger,
                "request_id": request_id or str(uuid.uuid4()),
            }
        )
        queue = MANUAL_QUEUE if job.trigger == "manual" else SYNC_QUEUE
        self.send(SYNC_CONNECTION, job.model_dump(mode="json", exclude_none=True), queue=queue)
        assert job.request_id is not None
        return job.request_id

    def send(
        self,
        name: str,
        payload: dict[str, Any],
        queue: str | None = SYNC_QUEUE,
        *,
        task_id: str | None = None,
        countdown: float | None = None,
    ) -> str:
        """Send any job by name; returns the Celery task id (a ``jobs.Publish``)."""
        try:
            return self._publish(name, payload, queue, task_id=task_id, countdown=countdown)
        except Exception as exc:  # kombu raises several unrelated types for "no broker"
            raise BrokerUnavailable(f"could not enqueue {name}: {exc}") from exc
