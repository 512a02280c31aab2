"""The limit with N fetching processes: plain httpx + JSON, CONCURRENCY threads each.

What entity-sync with N worker processes is compared with (bench/scale_out.py);
bench/throughput.py's ``limit_run`` is the one-process version.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence
from typing import Any

from bench.limit_fetch import Page, fetch_pages
from bench.throughput import Shape

CONCURRENCY = 16  # threads per process, as a worker's --concurrency


def _fetch_pages(
    url: str,
    pages: Sequence[Page],
    per_page: int,
    concurrency: int,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """One fetching process: ``concurrency`` threads over its share of the pages."""

    def wait_for_go() -> None:
        ready.put(1)
        go.wait()

    results.put(
        fetch_pages(
            url, pages, per_page=per_page, concurrency=concurrency, before_start=wait_for_go
        )
    )


def limit_with_processes(url: str, shape: Shape, processes: int) -> float:
    """Records/s of plain httpx + JSON with ``processes`` processes of CONCURRENCY threads."""
    pages = shape.page_list()
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
