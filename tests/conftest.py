"""Fixtures: real Redis, real SQLite and PostgreSQL stores, the sandbox, a worker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support import (
    SCRIPTS_REDIS_URL,
    WebhookReceiver,
    WorkerProcess,
    postgres_schema,
    require_redis,
)


@pytest.fixture
def test_redis() -> Iterator[redis.Redis]:
    """The test Redis database, flushed before and after."""
    client = require_redis()
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    """DB 15 of the test Redis for the breaker and limit scripts, flushed before and after."""
    c = redis.Redis.from_url(SCRIPTS_REDIS_URL, socket_connect_timeout=2)
    assert c.connection_pool.connection_kwargs.get("db") == 15
    c.ping()
    c.flushdb()
    yield c
    c.flushdb()
    c.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store URL, once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
    else:
        with postgres_schema() as url:
            yield url


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Collects worker processes started by a test and stops them afterwards."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture
def webhook_receiver() -> Iterator[Callable[..., WebhookReceiver]]:
    """Starts a ``WebhookReceiver`` for the given secrets; stops each after the test."""
    started: list[WebhookReceiver] = []

    def start(*secrets: str, **options: Any) -> WebhookReceiver:
        receiver = WebhookReceiver(*secrets, **options).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()
