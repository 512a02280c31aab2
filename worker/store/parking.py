"""Jobs parked behind a breaker, pause or busy connection, one per pair."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worker.store.base import StoreBase, translated
from worker.store.models import (
    ParkedJob,
)
from worker.store.runs import refresh_latest_of_run
from worker.timeutil import utc_now

_PARKED_COLUMNS = (
    "connection_id, entity_type, run_id, due_at, reason, payload, parked_at, times_parked"
)

# Never let an older version overwrite a newer one (principle 2); an equal
# version is rewritten so a repeated page is harmless and refreshes synced_at.


class ParkingStore(StoreBase):
    """Park, claim and list deferred sync jobs."""

    @translated
    def park_job(self, job: ParkedJob) -> str | None:
        """Park a job (one per pair: a newer one replaces it); marks its run deferred.

        Returns the id of a run that the new job supersedes, if any; that run
        is closed as skipped.
        """
        now = utc_now()
        with self._write() as tx:
            rows = tx.execute(
                "SELECT run_id FROM parked_jobs WHERE connection_id = ? AND entity_type = ?",
                (job.connection_id, job.entity_type),
            ).fetchall()
            superseded = rows[0][0] if rows and rows[0][0] != job.run_id else None
            tx.execute(
                "INSERT INTO parked_jobs (connection_id, entity_type, run_id, due_at, reason, "
                "payload, parked_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (connection_id, entity_type) DO UPDATE SET run_id = excluded.run_id, "
                "due_at = excluded.due_at, reason = excluded.reason, payload = excluded.payload, "
                "parked_at = excluded.parked_at, times_parked = parked_jobs.times_parked + 1",
                (
                    job.connection_id,
                    job.entity_type,
                    job.run_id,
                    job.due_at,
                    job.reason,
                    job.payload_json,
                    now,
                ),
            )
            tx.execute(
                "UPDATE runs SET status = 'deferred', error_message = ? "
                "WHERE id = ? AND status IN ('running', 'deferred')",
                (job.reason, job.run_id),
            )
            if superseded:
                tx.execute(
                    "UPDATE runs SET status = 'skipped', finished_at = ?, coalesced_into = ?, "
                    "error_message = 'superseded by a newer run' "
                    "WHERE id = ? AND status IN ('running', 'deferred')",
                    (now, job.run_id, superseded),
                )
                refresh_latest_of_run(tx, job.run_id)
        return superseded

    @translated
    def claim_due_jobs(self, *, now: str, claim_until: str, limit: int) -> list[ParkedJob]:
        """Parked jobs due by ``now``, claimed until ``claim_until``.

        A claimed job stays parked (its due time pushed to ``claim_until``)
        until its task starts (``touch_run``), so a crash between claiming and
        sending loses nothing: the job comes due again.
        """
        with self._write() as tx:
            rows = tx.execute(
                f"SELECT {_PARKED_COLUMNS} FROM parked_jobs WHERE due_at <= ? "
                "ORDER BY due_at LIMIT ?",
                (now, limit),
            ).fetchall()
            # Each row is claimed only if nobody moved it since the SELECT (a
            # worker's own resume, claim_parked_job): the park row is the one claim.
            claimed = [
                row
                for row in rows
                if tx.execute(
                    "UPDATE parked_jobs SET due_at = ? WHERE connection_id = ? "
                    "AND entity_type = ? AND due_at = ?",
                    (claim_until, row[0], row[1], row[3]),
                ).rowcount
                == 1
            ]
        return [_parked(row) for row in claimed]

    @translated
    def claim_parked_job(
        self, connection_id: str, entity_type: str, *, run_id: str, due_at: str, claim_until: str
    ) -> ParkedJob | None:
        """Claim one parked job exactly as it was parked (same run, same due time).

        None when it is gone or changed: resumed already (by beat's claim or a
        task start), or parked again (which scheduled its own resume).
        """
        with self._write() as tx:
            rows = tx.execute(
                f"SELECT {_PARKED_COLUMNS} FROM parked_jobs WHERE connection_id = ? "
                "AND entity_type = ? AND run_id = ? AND due_at = ?",
                (connection_id, entity_type, run_id, due_at),
            ).fetchall()
            if not rows:
                return None
            updated = tx.execute(
                "UPDATE parked_jobs SET due_at = ? WHERE connection_id = ? AND entity_type = ? "
                "AND run_id = ? AND due_at = ?",
                (claim_until, connection_id, entity_type, run_id, due_at),
            ).rowcount
        return _parked(rows[0]) if updated == 1 else None

    @translated
    def parked_jobs(self, connection_id: str | None = None) -> list[ParkedJob]:
        """Every parked job (of one connection), soonest first."""
        where, params = ("WHERE connection_id = ?", (connection_id,)) if connection_id else ("", ())
        rows = self._read(
            f"SELECT {_PARKED_COLUMNS} FROM parked_jobs {where} ORDER BY due_at", params
        )
        return [_parked(row) for row in rows]


def _parked(row: Sequence[Any]) -> ParkedJob:
    return ParkedJob(
        connection_id=row[0],
        entity_type=row[1],
        run_id=row[2],
        due_at=row[3],
        reason=row[4],
        payload_json=row[5],
        parked_at=row[6],
        times_parked=int(row[7]),
    )
