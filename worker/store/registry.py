"""The connection registry: who the customer systems are and how to reach them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worker.errors import ConnectionExists, UnknownConnection
from worker.store.base import StoreBase, translated
from worker.store.models import (
    Connection,
)
from worker.timeutil import utc_now

_CONNECTION_COLUMNS = (
    "id, name, entity_types, upstream_url, webhook_url, token_ciphertext, token_version, "
    "created_at, updated_at, rate_per_second, rate_burst, max_concurrency, "
    "webhook_secret_ciphertext, sync_interval_s, webhook_secret_previous_ciphertext, "
    "webhook_secret_previous_until"
)


MAX_MERGED_SLOTS = 100  # how many passed slots one claim logs as merged

# Every table with rows of one connection: `remove` deletes from each
# (tests/integration/ops/test_operator_input.py checks that none is missing).
CONNECTION_TABLES = (
    "records",
    "cursors",
    "quarantine",
    "parked_jobs",
    "transitions",
    "events",
    "schedule_log",
    "runs",
    "pair_counts",
    "run_totals",
    "transition_totals",
    "upstream_aspects",
    "notify_fences",
    "held_deletions",
)


class RegistryStore(StoreBase):
    """Connections: add, read, change, remove."""

    @translated
    def add_connection(self, connection: Connection) -> None:
        """Register a connection; ConnectionExists if the id is taken."""
        now = utc_now()
        with self._write() as tx:
            if tx.execute("SELECT 1 FROM connections WHERE id = ?", (connection.id,)).fetchall():
                raise ConnectionExists(f"connection {connection.id!r} already exists")
            tx.execute(
                f"INSERT INTO connections ({_CONNECTION_COLUMNS}) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    connection.id,
                    connection.name,
                    ",".join(connection.entity_types),
                    connection.upstream_url,
                    connection.webhook_url,
                    connection.token_ciphertext,
                    connection.token_version,
                    now,
                    now,
                    connection.rate_per_second,
                    connection.rate_burst,
                    connection.max_concurrency,
                    connection.webhook_secret_ciphertext,
                    connection.sync_interval_s,
                    connection.webhook_secret_previous_ciphertext,
                    connection.webhook_secret_previous_until,
                ),
            )

    @translated
    def get_connection(self, connection_id: str) -> Connection:
        """The connection with this id; UnknownConnection if there is none."""
        rows = self._read(
            f"SELECT {_CONNECTION_COLUMNS} FROM connections WHERE id = ?", (connection_id,)
        )
        if not rows:
            raise UnknownConnection(f"unknown connection {connection_id!r}")
        return _connection(rows[0])

    @translated
    def list_connections(self) -> list[Connection]:
        """Every registered connection, by id."""
        rows = self._read(f"SELECT {_CONNECTION_COLUMNS} FROM connections ORDER BY id")
        return [_connection(row) for row in rows]

    @translated
    def update_connection(
        self,
        connection_id: str,
        *,
        name: str | None = None,
        entity_types: Sequence[str] | None = None,
        upstream_url: str | None = None,
        webhook_url: str | None = None,
    ) -> Connection:
        """Change the given fields of a connection and return it.

        A new ``upstream_url`` forgets the upstream id learned at the old one
        (``upstream_ids.py``): it named the connection at another API. The
        next preflight learns the id at the new URL.
        """
        current = self.get_connection(connection_id)
        moved = upstream_url is not None and upstream_url != current.upstream_url
        with self._write() as tx:
            tx.execute(
                "UPDATE connections SET name = ?, entity_types = ?, upstream_url = ?, "
                "webhook_url = ?, updated_at = ? WHERE id = ?",
                (
                    current.name if name is None else name,
                    ",".join(current.entity_types if entity_types is None else entity_types),
                    current.upstream_url if upstream_url is None else upstream_url,
                    current.webhook_url if webhook_url is None else webhook_url,
                    utc_now(),
                    connection_id,
                ),
            )
            if moved:
                tx.execute(
                    "UPDATE connections SET upstream_base = NULL, upstream_connection_id = NULL, "
                    "upstream_id_refused = NULL WHERE id = ?",
                    (connection_id,),
                )
        return self.get_connection(connection_id)

    @translated
    def set_webhook(
        self,
        connection_id: str,
        *,
        url: str | None,
        secret_ciphertext: str | None,
        previous_until: str | None = None,
    ) -> None:
        """Set where a connection's events go, and (optionally) its own signing secret.

        With a new secret and ``previous_until``, the secret it replaces keeps
        signing next to it until that instant (a rotation window); without
        ``previous_until`` the replaced secret stops signing at once. Only
        the latest replaced secret is kept.
        """
        with self._write() as tx:
            if secret_ciphertext is not None:
                tx.execute(
                    "UPDATE connections SET webhook_secret_previous_ciphertext = CASE WHEN ? = 1 "
                    "THEN webhook_secret_ciphertext ELSE NULL END, "
                    "webhook_secret_previous_until = ? WHERE id = ?",
                    (
                        1 if previous_until is not None else 0,
                        previous_until,
                        connection_id,
                    ),
                )
            updated = tx.execute(
                "UPDATE connections SET webhook_url = ?, webhook_secret_ciphertext = "
                "COALESCE(?, webhook_secret_ciphertext), updated_at = ? WHERE id = ?",
                (url, secret_ciphertext, utc_now(), connection_id),
            ).rowcount
            if not updated:
                raise UnknownConnection(f"unknown connection {connection_id!r}")

    @translated
    def set_interval(self, connection_id: str, seconds: int | None) -> None:
        """Set (None: clear) how often a connection is synced on schedule.

        Slots are numbered per interval, so the last claimed slot of the old
        interval means nothing for the new one (a longer interval has smaller
        slot numbers, and would wait until it passed the old number): it is
        forgotten, and the next tick claims the new interval's current slot.
        """
        with self._write() as tx:
            rows = tx.execute(
                "SELECT sync_interval_s FROM connections WHERE id = ?", (connection_id,)
            ).fetchall()
            if not rows:
                raise UnknownConnection(f"unknown connection {connection_id!r}")
            if rows[0][0] != seconds:
                tx.execute("UPDATE connections SET last_slot = NULL WHERE id = ?", (connection_id,))
            tx.execute(
                "UPDATE connections SET sync_interval_s = ?, updated_at = ? WHERE id = ?",
                (seconds, utc_now(), connection_id),
            )

    @translated
    def last_slots(self) -> dict[str, int | None]:
        """Each connection's last claimed schedule slot, in one read."""
        return dict(self._read("SELECT id, last_slot FROM connections", ()))

    @translated
    def claim_slot(self, connection_id: str, slot: int, outcome: str) -> bool:
        """Claim schedule slot ``slot`` of a connection: True for exactly one caller.

        The claim moves ``last_slot`` forward in one statement, so two
        schedulers (or a restarted one) can never enqueue the same slot twice;
        the log keeps what became of each slot.
        """
        now = utc_now()
        with self._write() as tx:
            rows = tx.execute(
                "SELECT last_slot FROM connections WHERE id = ?", (connection_id,)
            ).fetchall()
            previous = rows[0][0] if rows else None
            claimed = tx.execute(
                "UPDATE connections SET last_slot = ? WHERE id = ? "
                "AND (last_slot IS NULL OR last_slot < ?)",
                (slot, connection_id, slot),
            ).rowcount
            if not claimed:
                return False
            # Slots passed while no scheduler ran (late, or down) are not sent
            # in a burst: this one sync covers them, and the log says so.
            missed = (
                range(max(previous + 1, slot - MAX_MERGED_SLOTS), slot)
                if previous is not None
                else ()
            )
            # A slot number may already be in the log when the interval changed
            # (slots are numbered per interval): the newest outcome replaces it.
            tx.executemany(
                "INSERT INTO schedule_log (connection_id, slot, outcome, at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (connection_id, slot) DO UPDATE SET outcome = excluded.outcome, "
                "at = excluded.at",
                [(connection_id, s, f"merged into {slot}", now) for s in missed]
                + [(connection_id, slot, outcome, now)],
            )
        return True

    @translated
    def schedule_log(self, connection_id: str | None = None) -> list[tuple[str, int, str]]:
        """(connection, slot, outcome) of every claimed slot, oldest first."""
        where, params = ("WHERE connection_id = ?", (connection_id,)) if connection_id else ("", ())
        rows = self._read(
            f"SELECT connection_id, slot, outcome FROM schedule_log {where} "
            "ORDER BY connection_id, slot",
            params,
        )
        return [(row[0], int(row[1]), row[2]) for row in rows]

    @translated
    def set_limits(
        self,
        connection_id: str,
        *,
        rate_per_second: float | None,
        rate_burst: int | None,
        max_concurrency: int | None,
    ) -> None:
        """Set (None: clear) a connection's rate and concurrency overrides."""
        with self._write() as tx:
            updated = tx.execute(
                "UPDATE connections SET rate_per_second = ?, rate_burst = ?, max_concurrency = ?, "
                "updated_at = ? WHERE id = ?",
                (rate_per_second, rate_burst, max_concurrency, utc_now(), connection_id),
            ).rowcount
            if not updated:
                raise UnknownConnection(f"unknown connection {connection_id!r}")

    @translated
    def set_token(self, connection_id: str, token_ciphertext: str) -> int:
        """Store a new encrypted token; returns the connection's new token version."""
        with self._write() as tx:
            updated = tx.execute(
                "UPDATE connections SET token_ciphertext = ?, token_version = token_version + 1, "
                "updated_at = ? WHERE id = ?",
                (token_ciphertext, utc_now(), connection_id),
            ).rowcount
            if not updated:
                raise UnknownConnection(f"unknown connection {connection_id!r}")
            rows = tx.execute(
                "SELECT token_version FROM connections WHERE id = ?", (connection_id,)
            ).fetchall()
        return int(rows[0][0])

    @translated
    def replace_ciphertexts(
        self,
        *,
        tokens: dict[str, tuple[str, str]],
        webhook_secrets: dict[str, tuple[str, str]],
        previous_webhook_secrets: dict[str, tuple[str, str]] | None = None,
    ) -> list[str]:
        """Swap stored ciphertexts (key rotation, same secrets) where they did not change.

        Each value is ``(expected, replacement)``: the replacement is written
        only while the column still holds ``expected`` (a compare-and-set), so
        a ``set-token`` that landed after the caller read the old ciphertext
        wins instead of being reverted. Returns the ids of the connections
        where something was left alone because it changed meanwhile.
        """
        changed: set[str] = set()
        columns = (
            ("token_ciphertext", tokens),
            ("webhook_secret_ciphertext", webhook_secrets),
            ("webhook_secret_previous_ciphertext", previous_webhook_secrets or {}),
        )
        with self._write() as tx:
            for column, swaps in columns:
                for connection_id, (expected, replacement) in swaps.items():
                    if not tx.execute(
                        f"UPDATE connections SET {column} = ? WHERE id = ? AND {column} = ?",
                        (replacement, connection_id, expected),
                    ).rowcount:
                        changed.add(connection_id)
        return sorted(changed)

    @translated
    def remove_connection(self, connection_id: str) -> dict[str, int]:
        """Delete a connection and everything kept for it; rows deleted per table.

        No history is kept under its id: a connection added again with the
        same id must start clean. Old runs would count as "still going" for the
        scheduler, old events as the subject's latest (so the outbox would skip
        the new connection's first event), old log rows would collide with its
        slots. The removal itself is logged by the caller instead.
        """
        deleted: dict[str, int] = {}
        with self._write() as tx:
            for table in CONNECTION_TABLES:
                deleted[table] = tx.execute(
                    f"DELETE FROM {table} WHERE connection_id = ?", (connection_id,)
                ).rowcount
            if not tx.execute("DELETE FROM connections WHERE id = ?", (connection_id,)).rowcount:
                raise UnknownConnection(f"unknown connection {connection_id!r}")
        return deleted


def _connection(row: Sequence[Any]) -> Connection:
    return Connection(
        id=row[0],
        name=row[1],
        entity_types=tuple(t for t in row[2].split(",") if t),
        upstream_url=row[3],
        webhook_url=row[4],
        token_ciphertext=row[5],
        token_version=int(row[6]),
        created_at=row[7],
        updated_at=row[8],
        rate_per_second=row[9],
        rate_burst=row[10],
        max_concurrency=row[11],
        webhook_secret_ciphertext=row[12],
        sync_interval_s=row[13],
        webhook_secret_previous_ciphertext=row[14],
        webhook_secret_previous_until=row[15],
    )
