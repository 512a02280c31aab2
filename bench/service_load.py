"""Services of a suite's own, and the load one run puts on them (bench/scale_out.py).

- Redis: a private ``redis-server``, so INFO commandstats and its CPU are the
  run's alone.
- PostgreSQL: a private cluster (``chaos.infra.PostgresCluster``, fsync on)
  with pg_stat_statements; the workers connect as ``postgres``, the harness as
  ``OBSERVER``, whose statements are left out.
- RabbitMQ: the machine's server, in a virtual host of the run's own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil
import psycopg
import redis

from chaos.infra import PostgresCluster, RedisServer

AMQP_BASE = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
OBSERVER = "bench_observer"  # the harness's PostgreSQL role, left out of the counts


@contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A broker URL on a RabbitMQ virtual host of this run's own, deleted afterwards."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise RuntimeError("needs rabbitmqctl to make a virtual host of its own")
    vhost = f"es_bench_{uuid.uuid4().hex[:8]}"

    def rabbitmqctl(*args: str) -> None:
        subprocess.run([ctl, *args], check=True, capture_output=True, timeout=60)

    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"{AMQP_BASE}/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


@contextmanager
def private_redis() -> Iterator[tuple[str, redis.Redis]]:
    """A Redis of this suite's own (its INFO commandstats and CPU are the suite's)."""
    with RedisServer() as server:
        client = redis.Redis(port=server.port, socket_connect_timeout=3)
        try:
            yield server.url(), client
        finally:
            client.close()


@contextmanager
def private_postgres() -> Iterator[PostgresCluster]:
    """A private cluster with pg_stat_statements and fsync on (what production has)."""
    cluster = PostgresCluster(
        options="-c fsync=on -c shared_preload_libraries=pg_stat_statements "
        "-c pg_stat_statements.track_utility=on"
    )
    with cluster:
        with psycopg.connect(cluster.url, autocommit=True) as admin:
            admin.execute("CREATE EXTENSION pg_stat_statements")
            admin.execute(f"CREATE ROLE {OBSERVER} LOGIN SUPERUSER")
        yield cluster


def with_user(url: str, user: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://{user}@", 1)


def postgres_cpu_s(cluster: PostgresCluster) -> float:
    """CPU of the whole cluster so far: postmaster, live processes, ended backends."""
    pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
    main = psutil.Process(pid)
    t = main.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in main.children():
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.NoSuchProcess:
            pass  # ended in between: its time is in children_* next time
    return total


def redis_load(client: redis.Redis) -> tuple[int, float]:
    """(commands executed, Lua-internal included; CPU seconds) of the private Redis so far."""
    stats = client.info("commandstats")
    calls = sum(int(v["calls"]) for name, v in stats.items() if name != "cmdstat_info")
    cpu = client.info("cpu")
    return calls, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


@dataclass
class PgLoad:
    statements: int  # every statement the workers sent, BEGIN and COMMIT included
    commits: int  # transactions committed by the workers
    rows: int  # rows returned or affected
    wal_bytes: int
    cpu_s: float
    top: list[tuple[str, int]]  # the statements most called: (text, calls)


def postgres_load(cluster: PostgresCluster) -> PgLoad:
    """pg_stat_statements totals of the workers' role, and the cluster's CPU."""
    workers = (
        "FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid "
        "WHERE r.rolname = 'postgres' AND s.query NOT ILIKE '%pg_stat_%'"
    )
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT coalesce(sum(calls), 0), 0, coalesce(sum(rows), 0), "
            f"coalesce(sum(wal_bytes), 0) {workers}"
        ).fetchone()
        # Transactions: the database's commits less the harness's own (its
        # statements run one per transaction); pg_stat_statements does not
        # count BEGIN and COMMIT.
        commits = conn.execute(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database())"
            " - (SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_roles r "
            f"ON r.oid = s.userid WHERE r.rolname = '{OBSERVER}')"
        ).fetchone()
        top = conn.execute(
            f"SELECT regexp_replace(left(query, 90), '\\s+', ' ', 'g'), calls {workers} "
            "ORDER BY calls DESC LIMIT 6"
        ).fetchall()
    assert row is not None
    assert commits is not None
    return PgLoad(
        int(row[0]),
        int(commits[0]),
        int(row[2]),
        int(row[3]),
        postgres_cpu_s(cluster),
        [(str(q), int(c)) for q, c in top],
    )


def reset_postgres_stats(cluster: PostgresCluster) -> None:
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
        conn.execute("SELECT pg_stat_reset()")  # this database's transaction counts
