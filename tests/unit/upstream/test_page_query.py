"""A list request's URL, built as a string (client.list_page), is the one httpx would build."""

from __future__ import annotations

import httpx
from hypothesis import given
from hypothesis import strategies as st

from worker.upstream.client import PageQuery

BASE = "http://upstream.test:8080/api/eam/work-orders"


@given(
    page=st.integers(min_value=1, max_value=10**6),
    since=st.none() | st.text(),
    before=st.none() | st.sampled_from(["2026-01-01T00:00:00.000001Z", "a b+c&d=e/f?g#h%"]),
)
def test_the_query_string_is_what_httpx_makes_of_the_params(
    page: int, since: str | None, before: str | None
) -> None:
    query = PageQuery(page=page, per_page=100, since=since, before=before)
    by_params = httpx.Request("GET", BASE, params=query.params()).url
    assert httpx.URL(f"{BASE}?{query.query_string()}") == by_params
    assert httpx.URL(f"{BASE}?{query.query_string()}").params == by_params.params
