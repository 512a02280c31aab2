"""The limit with N fetching processes: plain httpx + JSON, CONCURRENCY threads each.

What entity-sync with N worker processes is compared with (bench/scale_out.py);
bench/throughput.py's ``limit_run`` is the one-process version.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx

from bench.throughput import Shape

CONCURRENCY = 16  # threads per process, as a worker's --concurrency


def _fetch_pages(
    url: str,
    pages: Sequence[tuple[str, str, int]],
    per_page: int,
    concurrency: int,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """One fetching process: ``concurrency`` threads over its share of the pages."""
    jobs: queue.Queue[tuple[str, str, int]] = queue.Queue()
    for page in pages:
        jobs.put(page)
    client = httpx.Client(
        base_url=url,
        timeout=60.0,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    )
    counts = [0] * concurrency

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

    ready.put(1)
    go.wait()
    threads = [threading.Thread(target=fetch, args=(n,)) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    results.put(sum(counts))


def limit_with_processes(url: str, shape: Shape, processes: int) -> float:
    """Records/s of plain httpx + JSON with ``processes`` processes of CONCURRENCY threads."""
    pages = [
        (shape.token(i), entity, page)
        for i in range(shape.connections)
        for entity in shape.entity_types
        for page in range(1, -(-shape.records // shape.per_page) + 1)
    ]
    context = multiprocessing.get_context("fork")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    children = [
        context.Process(
            target=_fetch_pages,
            args=(url, pages[n::processes], shape.per_page, CONCURRENCY, ready, go, results),
        )
        for n in range(processes)
    ]
    for child in children:
        child.start()
    for _ in children:
        ready.get(timeout=60)
    t0 = time.perf_counter()
    go.set()
    records = sum(results.get(timeout=600) for _ in children)
    seconds = time.perf_counter() - t0
    for child in children:
        child.join(30)
    if records != shape.total:
        raise RuntimeError(f"the limit read {records}/{shape.total} records")
    return records / seconds
