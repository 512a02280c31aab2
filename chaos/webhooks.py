"""The webhook receiver down (connections refused) for a long time: every event after.

Events come from two sources during the outage: a real one (a connection
whose token stops working mid-sync: ``connection.reauthorization_required``)
and a steady stream written to the outbox for three more connections, as
transitions would. Then the receiver comes up: every event must arrive,
each once (by id), in order per connection.
"""

from __future__ import annotations

import time
from collections import Counter

from chaos.harness import CaseResult, log, stack
from harness.testing.processes import wait_for
from harness.testing.receiver import WebhookReceiver
from worker.events import EventReason, EventType, build_event

SECRET = "whsec_chaos_0123456789abcdef"  # noqa: S105 - a throwaway test secret


def run(*, outage_s: float = 20.0, events_per_connection: int = 6) -> CaseResult:
    short = outage_s < 600
    result = CaseResult(
        fault=f"Webhook receiver down for {outage_s:g} s",
        scale=f"{outage_s:g} s refused"
        + (" (shortened; --long: 600 s)" if short else "")
        + f", {3 * events_per_connection + 1} events, retry cap 30 s",
    )
    receiver = WebhookReceiver(SECRET)  # not listening: connections are refused
    settings = {
        "ENTITY_SYNC_WEBHOOK_SECRET": SECRET,
        "ENTITY_SYNC_WEBHOOK_ALLOW_HTTP": "true",
        "ENTITY_SYNC_WEBHOOK_ALLOW_PRIVATE": "true",
        "ENTITY_SYNC_WEBHOOK_RETRY_BASE_SECONDS": "1",
        "ENTITY_SYNC_WEBHOOK_RETRY_CAP_SECONDS": "30",
    }
    with stack(**settings) as s:
        token = f"tok-expiring-{time.time_ns()}"
        s.sandbox.put_connection(
            token,
            {
                "seed": 5,
                "sizes": {"assets": 600},
                "scenarios": [{"name": "auth_fail_from_page", "page": 3}],
            },
        )
        s.env.add_connection("expiring", token, ("assets",), webhook_url=receiver.url)
        ids = ["hook-a", "hook-b", "hook-c"]
        for cid in ids:
            s.env.add_connection(cid, f"tok-{cid}", ("assets",), webhook_url=receiver.url)
        worker = s.worker("w", pool="threads", concurrency=4)
        s.client().sync_connection("expiring")
        written: dict[str, list[str]] = {cid: [] for cid in ids}
        started = time.monotonic()
        kinds = [EventType.REAUTHORIZATION_REQUIRED, EventType.RECOVERED]
        step = outage_s / (events_per_connection + 1)
        for n in range(events_per_connection):
            for cid in ids:
                event = build_event(
                    kinds[n % 2], connection_id=cid, entity_type=None,
                    reason=EventReason(message=f"chaos event {n}"),
                )  # fmt: skip
                assert s.store.add_event(event)
                written[cid].append(event.id)
            time.sleep(step)
        wait_for(lambda: s.store.events(connection_id="expiring"), 60, "the 401 event", worker)
        written["expiring"] = [e.id for e in s.store.events(connection_id="expiring")]
        time.sleep(max(0.0, outage_s - (time.monotonic() - started)))
        attempts = sum(e.attempts for e in s.store.events())
        log(f"receiver up after {outage_s:g}s; {attempts} failed attempts so far")
        receiver.start()
        up = time.monotonic()
        total = sum(len(v) for v in written.values())
        try:
            wait_for(lambda: len({e["id"] for e in receiver.received}) >= total, 180,
                     "every event after the outage", worker)  # fmt: skip
            lag = time.monotonic() - up
            time.sleep(3)  # room for a duplicate to arrive before counting
        except AssertionError:
            lag = float("nan")
        finally:
            receiver.stop()
        got = [e["id"] for e in receiver.received]
        counts = Counter(got)
        expected = {i for v in written.values() for i in v}
        in_order = all([i for i in got if i in set(v)] == v for v in written.values())
        result.injected = attempts
        result.records_checked = total
        result.records_lost = len(expected - set(got))
        result.duplicates = sum(c - 1 for c in counts.values())
        result.survived = not result.records_lost and not result.duplicates and in_order
        result.outcome = (
            f"{len(set(got) & expected)}/{total} events delivered {lag:.1f} s after the receiver "
            f"came back, {'in order per connection' if in_order else 'OUT OF ORDER'}; "
            f"{attempts} refused attempts during the outage"
        )
        result.notes.append(
            "events lost and duplicate deliveries are counted by event id at the receiver; "
            "with the production retry cap (1 h) the first delivery after an outage can "
            "wait up to that cap"
        )
    return result
