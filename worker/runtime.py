"""The composition root: the per-process resources a task or command needs.

Settings, store, Redis, the upstream and webhook clients, breaker, limits,
leases, delivery counters, retry budgets, the transition recorder, and how to publish a job.
Built lazily on first use and again after a fork, so a Celery prefork child
never shares its parent's sockets. Tasks and CLI commands unpack a
``Runtime``; the functions below them take only what they use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property, partial

import redis

from worker.client import EntitySyncClient
from worker.coordination.client import redis_client
from worker.coordination.deliveries import Deliveries
from worker.coordination.lease import Leases
from worker.jobs import Publish
from worker.outbox.notifier import relay, webhook_client
from worker.outbox.transitions import TransitionRecorder
from worker.outbox.webhooks import WebhookClient
from worker.resilience.breaker import Breaker, BreakerPolicy
from worker.resilience.limits import Limits, RatePolicy
from worker.resilience.retry_budget import RetryBudget, RetryBudgets
from worker.secrets import SecretBox
from worker.settings import Settings, get_settings
from worker.store import SqlStore, open_store
from worker.upstream.client import UpstreamClient


@dataclass
class Runtime:
    """Lazily opened resources of one worker process.

    ``publish`` sends a job by name: a worker passes its app's; without one
    (the CLI, a test) jobs go out through an ``EntitySyncClient`` of the
    configured broker, so no command builds the worker's Celery app.
    """

    settings: Settings
    publisher: Publish | None = None

    @cached_property
    def publish(self) -> Publish:
        if self.publisher is not None:
            return self.publisher
        return EntitySyncClient(self.settings.effective_broker_url).send

    @cached_property
    def store(self) -> SqlStore:
        return open_store(self.settings.store_url)

    @cached_property
    def redis(self) -> redis.Redis:
        return redis_client(self.settings.redis_url)

    @cached_property
    def upstream(self) -> UpstreamClient:
        return UpstreamClient(settings=self.settings)

    @cached_property
    def secrets(self) -> SecretBox:
        return SecretBox.from_settings(self.settings)

    @cached_property
    def deliveries(self) -> Deliveries:
        return Deliveries(self.redis)

    @cached_property
    def leases(self) -> Leases:
        return Leases(self.redis, ttl_s=self.settings.lease_ttl)

    @cached_property
    def breaker(self) -> Breaker:
        return Breaker(
            client=self.redis, policy=breaker_policy(self.settings), rate=rate_policy(self.settings)
        )

    @cached_property
    def limits(self) -> Limits:
        return Limits(client=self.redis, policy=rate_policy(self.settings))

    @cached_property
    def retry_budgets(self) -> RetryBudgets:
        return RetryBudgets(
            self.redis,
            self.breaker,
            budget=RetryBudget(
                ratio=self.settings.retry_budget_ratio,
                min_retries_per_window=self.settings.retry_budget_reserve,
            ),
            window_s=60.0,
        )

    @cached_property
    def webhooks(self) -> WebhookClient:
        return webhook_client(self.settings)

    @cached_property
    def transitions(self) -> TransitionRecorder:
        return TransitionRecorder(self.store, partial(relay, self.publish))


def breaker_policy(settings: Settings) -> BreakerPolicy:
    """The breaker thresholds the settings ask for."""
    return BreakerPolicy(
        failure_rate=settings.breaker_failure_rate,
        min_calls=settings.breaker_min_calls,
        consecutive_failures=settings.breaker_consecutive_failures,
        base_open_s=settings.breaker_base_open_seconds,
        min_open_s=min(1.0, settings.breaker_base_open_seconds),
        max_open_s=max(settings.breaker_max_open_seconds, settings.breaker_base_open_seconds),
        state_ttl_s=max(2400.0, 4 * settings.breaker_max_open_seconds),
        probe_ttl_s=settings.request_deadline + 30.0,
        block_reprobe_s=settings.block_reprobe_seconds,
        max_pause_s=settings.max_pause_seconds,
    )


def rate_policy(settings: Settings) -> RatePolicy:
    """The per-connection rate and concurrency defaults."""
    return RatePolicy(
        rate_per_s=settings.rate_per_second,
        burst=settings.rate_burst,
        max_concurrency=settings.max_concurrency,
    )


_runtime: Runtime | None = None
_runtime_pid: int | None = None


def runtime(publish: Publish | None = None) -> Runtime:
    """This process's Runtime (a new one after a fork). A worker passes its app's
    ``publish``; without one (a script, a shell) the Runtime publishes through a
    client of the configured broker."""
    global _runtime, _runtime_pid
    stale = _runtime is None or _runtime_pid != os.getpid()
    if stale or (
        publish is not None and _runtime is not None and _runtime.publisher is not publish
    ):
        _runtime = Runtime(settings=get_settings(), publisher=publish)
        _runtime_pid = os.getpid()
    assert _runtime is not None
    return _runtime
