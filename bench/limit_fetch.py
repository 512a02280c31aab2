"""The limit's fetching: threads sharing one httpx client read pages by number, parse the JSON.

Used by the one-process limit (bench/throughput.py) and by each process of
the N-process limit (bench/limit_processes.py), so both measure the same work.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence

import httpx

Page = tuple[str, str, int]  # token, entity type, page number


def fetch_pages(
    url: str,
    pages: Sequence[Page],
    *,
    per_page: int,
    concurrency: int,
    before_start: Callable[[], None] = lambda: None,
) -> int:
    """Fetch every page with ``concurrency`` threads; the number of records read.

    ``before_start`` runs once the client is ready, just before the threads
    start (the caller starts its clock there, or waits for a signal).
    """
    jobs: queue.Queue[Page] = queue.Queue()
    for page in pages:
        jobs.put(page)
    counts = [0] * concurrency
    client = httpx.Client(
        base_url=url,
        timeout=60.0,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    )

    def fetch(slot: int) -> None:
        while True:
            try:
                token, entity, page = jobs.get_nowait()
            except queue.Empty:
                return
            response = client.get(
                f"/api/eam/{entity}",
                params={"page": page, "per_page": per_page, "sort[updatedAt]": 0},
                headers={"Authorization": f"Bearer {token}"},
            )
            response.raise_for_status()
            counts[slot] += len(response.json()["data"])

    threads = [threading.Thread(target=fetch, args=(n,)) for n in range(concurrency)]
    before_start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    return sum(counts)
