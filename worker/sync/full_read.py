"""What a full read must show before it may mark anything deleted.

A source that deletes for real just stops listing a key, so a full read marks
the keys it did not see as deleted. An empty answer, a page cut short, a
lagging replica or a source still syncing end a read early too, and look
exactly like deletions. So a full read proves it read the whole list first
(docs/design.md, "Deletions"):

- every record it read had a usable key (a keyless one cannot be told apart);
- no page ended the read with fewer records than its own ``meta`` promised
  (every page before the last was full by the pager's rule; the last one
  must hold what ``meta.total`` and ``meta.last_page`` said was left);
- the keys it read, stored or quarantined, reach ``meta.total`` as a closing
  request announces it when the read ends (page 1 of the whole list, one
  record), and fall short of the total the read's first page announced by no
  more than the mass-deletion guard applies at once: records deleted while
  the list is read are honest, but a list that shrank by more proves nothing
  until a second read;
- the status endpoint says, when the read ends, that the upstream's own sync
  is done (``done`` or ``fulldone``): a source still syncing is still filling.

A read that cannot show all of it still stores what it read and succeeds,
but marks nothing, and says why (run, status, dashboard, sync.completed). A
complete read is bounded once more by the store's mass-deletion guard
(``worker/store/held_deletions.py``): a lagging replica can be consistent
with itself, and only a second read or a person tells it from a mass delete.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.errors import Blocked, Deferred, Halted, RetryLater, UpstreamError
from worker.logs import connection_log
from worker.resilience.classify import Where
from worker.resilience.guard import Guard
from worker.settings import Settings
from worker.store import SqlStore
from worker.store.models import DeletionGuard, FullReadEvidence, FullReadVerdict
from worker.upstream.client import PageQuery, UpstreamClient

SETTLED = frozenset({"done", "fulldone"})  # the upstream's own sync is not filling the list


@dataclass(frozen=True)
class Census:
    """What the upstream said of the whole list once the read had ended."""

    sync_status: str | None = None
    total: int | None = None
    problem: str | None = None  # why it could not be asked


def take_census(
    *, client: UpstreamClient, guard: Guard, base_url: str, token: str, entity_type: str
) -> Census:
    """Ask the status endpoint and the list's total (two requests, through the guard).

    A failure here is not the run's: the read is done and stays stored; it
    only cannot prove itself, so nothing is marked deleted this time.
    """
    try:
        status = guard.call(None, Where.STATUS, lambda: client.status(base_url, token))
        page = guard.call(
            entity_type,
            Where.LIST,
            lambda: client.list_page(base_url, token, entity_type, PageQuery(page=1, per_page=1)),
        )
    except (UpstreamError, Deferred, Halted, Blocked, RetryLater) as exc:
        return Census(problem=f"the closing check of the list could not be made: {exc}")
    return Census(sync_status=status.sync_status, total=page.meta.total)


def judge(
    evidence: FullReadEvidence | None, census: Census | None, guard: DeletionGuard
) -> str | None:
    """Why the read proves nothing, or None when it proves it read the whole list."""
    if evidence is None:
        return "the run's record of its read is missing"
    if evidence.keyless:
        return f"{evidence.keyless} records were read without a usable key"
    if evidence.short_pages:
        return "a page ended the read with fewer records than its meta said were left"
    if census is None:
        return "the read ended without a closing check of the list"
    if census.problem is not None:
        return census.problem
    if census.sync_status not in SETTLED:
        return f"the upstream's own sync is not done (sync_status {census.sync_status!r})"
    start, end, read = evidence.listed_total, census.total, evidence.keys_read
    if start is None or end is None:
        return (
            f"the upstream gave no meta.total at the read's {'start' if start is None else 'end'}"
        )
    if read < end:
        return f"{read} keys read, fewer than the {end} records meta.total listed at the end"
    shortfall = start - read
    if shortfall > 0 and guard.holds(shortfall, shortfall, start):
        return (
            f"{read} keys read, {shortfall} fewer than the {start} records meta.total listed "
            "at the start: more than the deletion guard takes from one read"
        )
    return None


def guard_of(settings: Settings) -> DeletionGuard:
    """The mass-deletion guard the settings ask for (a connection may set its own)."""
    return DeletionGuard(
        max_percent=settings.deletion_guard_percent,
        min_records=settings.deletion_guard_min_records,
        confirm_after_s=float(settings.deletion_confirm_after_seconds),
    )


def verdict_for(
    evidence: FullReadEvidence | None, census: Census | None, settings: Settings
) -> FullReadVerdict:
    """The store's verdict on a full run that read to the end of the list."""
    guard = guard_of(settings)
    return FullReadVerdict(incomplete=judge(evidence, census, guard), guard=guard)


def report_full_read(store: SqlStore, run_id: str, verdict: FullReadVerdict) -> int:
    """Log what a finished full run did about deletions; returns the keys it newly held.

    A read that proved nothing is a WARNING (the next full read tries again),
    told from the verdict itself: it marked and held nothing, so the store is
    not asked. A new hold is one ERROR line, and so one Sentry event: a person
    must look.
    """
    if verdict.incomplete is not None:
        connection_log.warning(
            "full read not reconciled: %s", verdict.incomplete, extra={"run_id": run_id}
        )
        return 0
    marked, held_now, note = store.run_reconciliation(run_id)
    extra = {"run_id": run_id, "reconciled": marked, "held": held_now}
    if held_now:
        connection_log.error("deletions held: %s", note, extra=extra)
    elif marked:
        connection_log.info("full read marked %d keys deleted", marked, extra=extra)
    return held_now
