"""Stop poison jobs: a message the broker handed out too many times is not run again.

A task that kills its worker is requeued (``task_reject_on_worker_lost``) and
would kill the next one, for ever. Each delivery of a message (same task id,
same retry number) is counted in Redis (``coordination.deliveries``): a
``sync_entity`` counts in its start's one round trip (``sync.runner``), a
``sync_connection`` before anything else. Past ``max_deliveries`` the job is
dead-lettered with its reason instead of being run again (``dead_letter``).
"""

from __future__ import annotations

from worker.coordination.lease import holder_of, parse_holder
from worker.logs import log
from worker.runtime import Runtime
from worker.store import RunStatus
from worker.sync.task_failures import close_or_record, run_id_of, safe_fields


def dead_letter(
    rt: Runtime, task_name: str, payload: object, deliveries: int, *, task_id: str
) -> None:
    """Stop a poison job: record why in the run history and the log (never raises).

    It takes the runtime on purpose: the leases and the store are opened inside
    the guard, after the log line, so one that cannot be opened never raises.
    """
    fields = payload if isinstance(payload, dict) else {}
    reason = (
        f"{task_name} was delivered {deliveries} times without finishing "
        f"(it crashes its worker?): dead-lettered"
    )
    log.error(reason, extra={"task_name": task_name, "payload": safe_fields(fields)})
    try:
        successor = _run_goes_on_without(rt, fields, task_id)
        if successor is not None:
            # A stale copy: the run was sent again (stalled-run check) and goes
            # on in another task. Failing the run would strand that task's work.
            log.warning("the run of the dead-lettered job goes on in task %s", successor)
            return
        close_or_record(rt, fields, task_id, RunStatus.FAILED, "poison", reason)
    except Exception:
        log.exception("could not record the dead-lettered job")


def _run_goes_on_without(rt: Runtime, fields: dict[str, object], task_id: str) -> str | None:
    """The other task of the same run that holds the pair's lease now, if any."""
    connection_id, entity_type = fields.get("connection_id"), fields.get("entity_type")
    if not isinstance(connection_id, str) or not isinstance(entity_type, str):
        return None
    run_id = run_id_of(fields, task_id)
    holder = rt.leases.holder(connection_id, entity_type)
    if holder is None or holder == holder_of(run_id, task_id):
        return None
    held_by_run, held_by_task = parse_holder(holder)
    return held_by_task if held_by_run == run_id else None
