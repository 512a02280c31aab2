"""Unit tests for worker.resilience.classify: the status table, the messy cases, the rule table."""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.errors import (
    AuthFailed,
    BadRequest,
    BadResponse,
    Kind,
    NotSupported,
    PermissionDenied,
    RateLimited,
    Scope,
    Unavailable,
    UpstreamError,
    error_for_status,
)
from worker.resilience import classify as classify_module
from worker.resilience.classify import (
    RULES,
    Action,
    Rule,
    Verdict,
    Where,
    action_for,
    base_scope,
    classify,
    classify_record_problem,
    deferral,
    error_for_sync_status,
)

CLIENT_KINDS = {
    Kind.AUTH,
    Kind.PERMISSION,
    Kind.RATE_LIMITED,
    Kind.NOT_SUPPORTED,
    Kind.BAD_REQUEST,
}
RANK = {Scope.RECORD: 0, Scope.ENTITY_TYPE: 1, Scope.CONNECTION: 2}
UPSTREAM_CLASSES: list[type[UpstreamError]] = [
    UpstreamError,
    AuthFailed,
    PermissionDenied,
    NotSupported,
    RateLimited,
    BadRequest,
    Unavailable,
    BadResponse,
]


# --- docs/upstream-api.md's error table, one test per row --------------------
# (status, code, exception, kind, scope on a list page, action, counts_as_failure)
ERROR_TABLE = [
    (400, "INVALID_REQUEST", BadRequest, Kind.BAD_REQUEST, Scope.ENTITY_TYPE, Action.FAIL, False),
    (422, "INVALID_REQUEST", BadRequest, Kind.BAD_REQUEST, Scope.ENTITY_TYPE, Action.FAIL, False),
    (401, "AUTHENTICATION_FAILED", AuthFailed, Kind.AUTH, Scope.CONNECTION, Action.HALT, False),
    (
        403,
        "PERMISSION_DENIED",
        PermissionDenied,
        Kind.PERMISSION,
        Scope.ENTITY_TYPE,
        Action.BLOCK_ENTITY,
        False,
    ),
    (
        404,
        "ENTITY_NOT_SUPPORTED",
        NotSupported,
        Kind.NOT_SUPPORTED,
        Scope.ENTITY_TYPE,
        Action.BLOCK_ENTITY,
        False,
    ),
    (
        429,
        "RATE_LIMIT_EXCEEDED",
        RateLimited,
        Kind.RATE_LIMITED,
        Scope.CONNECTION,
        Action.PAUSE,
        False,
    ),
    (500, "INTERNAL_ERROR", Unavailable, Kind.UNAVAILABLE, Scope.ENTITY_TYPE, Action.RETRY, True),
    (
        502,
        "CONNECTION_OFFLINE",
        Unavailable,
        Kind.UNAVAILABLE,
        Scope.ENTITY_TYPE,
        Action.RETRY,
        True,
    ),
    (
        503,
        "CONNECTION_OFFLINE",
        Unavailable,
        Kind.UNAVAILABLE,
        Scope.ENTITY_TYPE,
        Action.RETRY,
        True,
    ),
    (504, "SOURCE_TIMEOUT", Unavailable, Kind.UNAVAILABLE, Scope.ENTITY_TYPE, Action.RETRY, True),
]


@pytest.mark.parametrize(
    ("status", "code", "exc_type", "kind", "scope", "action", "counts"),
    ERROR_TABLE,
    ids=[f"{row[0]}-{row[1]}" for row in ERROR_TABLE],
)
def test_error_table_row_on_a_list_page(
    status: int,
    code: str,
    exc_type: type[UpstreamError],
    kind: Kind,
    scope: Scope,
    action: Action,
    counts: bool,
) -> None:
    retry_after = 7.0 if status == 429 else None
    error = error_for_status(status, code, "upstream said no", retry_after, "req_8f2c")

    assert type(error) is exc_type
    assert (error.status, error.code, error.request_id) == (status, code, "req_8f2c")
    verdict = classify(error, where=Where.LIST, distinct_entity_types_failing=1)
    assert (verdict.kind, verdict.scope, verdict.action) == (kind, scope, action)
    assert verdict.counts_as_failure is counts
    assert verdict.retry_after == retry_after


@pytest.mark.parametrize(
    ("status", "code", "exc_type", "kind", "scope", "action", "counts"),
    ERROR_TABLE,
    ids=[f"{row[0]}-{row[1]}" for row in ERROR_TABLE],
)
def test_error_table_row_on_the_status_endpoint_reaches_the_connection(
    status: int,
    code: str,
    exc_type: type[UpstreamError],
    kind: Kind,
    scope: Scope,
    action: Action,
    counts: bool,
) -> None:
    verdict = classify(error_for_status(status, code, "x", None, None), where=Where.STATUS)

    assert verdict.kind == kind
    assert verdict.scope == Scope.CONNECTION
    assert verdict.action == action_for(kind, Scope.CONNECTION)
    assert verdict.counts_as_failure is counts


def test_429_carries_retry_after_and_pauses_whichever_entity_type_got_it() -> None:
    verdict = classify(RateLimited("slow down", status=429, retry_after=30.0), where=Where.LIST)

    assert verdict.action == Action.PAUSE
    assert verdict.scope == Scope.CONNECTION
    assert verdict.retry_after == 30.0
    assert verdict.transient is True


def test_401_halts_the_connection_and_is_not_transient() -> None:
    verdict = classify(AuthFailed("token expired", status=401), where=Where.LIST)

    assert (verdict.scope, verdict.action, verdict.transient) == (
        Scope.CONNECTION,
        Action.HALT,
        False,
    )


# --- error_for_status beyond the table ---------------------------------------


@pytest.mark.parametrize("status", [405, 409, 410, 413, 415, 418, 451, 499])
def test_unknown_4xx_is_bad_request(status: int) -> None:
    assert type(error_for_status(status, None, "?", None, None)) is BadRequest


def test_408_request_timeout_is_unavailable_not_our_fault() -> None:
    assert type(error_for_status(408, None, "timeout", None, None)) is Unavailable


@pytest.mark.parametrize("status", [501, 505, 507, 520, 524, 599])
def test_unknown_5xx_is_unavailable(status: int) -> None:
    assert type(error_for_status(status, None, "?", None, None)) is Unavailable


@pytest.mark.parametrize("status", [0, 100, 101, 200, 204, 301, 302, 304, 399, 600, 999, -1])
def test_unexpected_status_is_bad_response(status: int) -> None:
    error = error_for_status(status, None, "?", None, None)
    assert type(error) is BadResponse
    assert error.status == status


def test_status_decides_not_the_code() -> None:
    error = error_for_status(403, "AUTHENTICATION_FAILED", "mixed up", None, None)
    assert type(error) is PermissionDenied


def test_retry_after_on_503_is_kept() -> None:
    error = error_for_status(503, "CONNECTION_OFFLINE", "offline", 12.0, None)
    assert classify(error, where=Where.LIST).retry_after == 12.0


@pytest.mark.parametrize(
    ("sync_status", "exc_type", "action"),
    [("fail", AuthFailed, Action.HALT), ("error", Unavailable, Action.OPEN_BREAKER)],
)
def test_sync_status_fail_and_error_on_the_status_endpoint(
    sync_status: str, exc_type: type[UpstreamError], action: Action
) -> None:
    error = error_for_sync_status(sync_status)
    assert type(error) is exc_type
    assert classify(error, where=Where.STATUS).action == action


@pytest.mark.parametrize("sync_status", ["inprogress", "done", "fulldone", "", "whatever"])
def test_other_sync_statuses_are_healthy(sync_status: str) -> None:
    assert error_for_sync_status(sync_status) is None


# --- the messier list, as the exceptions the HTTP client raises ---------------

MESSY_UNAVAILABLE = {
    "html 502 from a proxy": error_for_status(
        502, None, "<html><body><h1>502 Bad Gateway</h1></body></html>", None, None
    ),
    "empty 503 body": error_for_status(503, None, "", None, None),
    "refused connection": Unavailable("connection refused"),
    "dns failure": Unavailable("name or service not known: api.example"),
    "tls error": Unavailable("TLS handshake failed: certificate verify failed"),
    "read timeout": Unavailable("read timed out after 30.0 s"),
    "trickling server": Unavailable("total deadline of 60.0 s exceeded"),
}
MESSY_BAD_BODY = {
    "empty 200 body": BadResponse("empty body", status=200),
    "truncated json": BadResponse("truncated JSON at byte 4096", status=200),
    "200 not json": BadResponse("body is not JSON: '<html>Login</html>'", status=200),
    "200 without data": BadResponse("body has no 'data'", status=200),
}


@pytest.mark.parametrize("error", MESSY_UNAVAILABLE.values(), ids=MESSY_UNAVAILABLE.keys())
def test_messy_network_and_5xx_on_a_list_page_retry_and_count(error: UpstreamError) -> None:
    verdict = classify(error, where=Where.LIST, distinct_entity_types_failing=1)

    assert (verdict.kind, verdict.scope, verdict.action) == (
        Kind.UNAVAILABLE,
        Scope.ENTITY_TYPE,
        Action.RETRY,
    )
    assert verdict.counts_as_failure is True
    assert verdict.transient is True


@pytest.mark.parametrize("error", MESSY_UNAVAILABLE.values(), ids=MESSY_UNAVAILABLE.keys())
def test_messy_network_and_5xx_on_the_status_endpoint_open_the_breaker(
    error: UpstreamError,
) -> None:
    verdict = classify(error, where=Where.STATUS)

    assert (verdict.scope, verdict.action, verdict.counts_as_failure) == (
        Scope.CONNECTION,
        Action.OPEN_BREAKER,
        True,
    )


@pytest.mark.parametrize("error", MESSY_BAD_BODY.values(), ids=MESSY_BAD_BODY.keys())
def test_messy_bodies_on_a_list_page_retry_and_count(error: UpstreamError) -> None:
    verdict = classify(error, where=Where.LIST, distinct_entity_types_failing=1)

    assert (verdict.kind, verdict.scope, verdict.action) == (
        Kind.BAD_DATA,
        Scope.ENTITY_TYPE,
        Action.RETRY,
    )
    assert verdict.counts_as_failure is True


@pytest.mark.parametrize("error", MESSY_BAD_BODY.values(), ids=MESSY_BAD_BODY.keys())
def test_messy_bodies_everywhere_open_the_breaker(error: UpstreamError) -> None:
    verdict = classify(error, where=Where.LIST, distinct_entity_types_failing=3)
    assert (verdict.scope, verdict.action) == (Scope.CONNECTION, Action.OPEN_BREAKER)


def test_malformed_record_is_quarantined_and_does_not_count() -> None:
    verdict = classify_record_problem("record has no 'key'")

    assert (verdict.kind, verdict.scope, verdict.action) == (
        Kind.BAD_DATA,
        Scope.RECORD,
        Action.QUARANTINE,
    )
    assert verdict.counts_as_failure is False
    assert verdict.transient is False
    assert verdict.retry_after is None
    assert "no 'key'" in verdict.summary


def test_malformed_record_as_bad_response_at_record_is_the_same_verdict() -> None:
    from_error = classify(BadResponse("updatedAt is not a date"), where=Where.RECORD)
    from_reason = classify_record_problem("updatedAt is not a date")

    assert (from_error.kind, from_error.scope, from_error.action) == (
        from_reason.kind,
        from_reason.scope,
        from_reason.action,
    )
    assert from_error.counts_as_failure is from_reason.counts_as_failure is False


def test_record_scope_never_escalates() -> None:
    verdict = classify(BadResponse("bad"), where=Where.RECORD, distinct_entity_types_failing=99)
    assert verdict.scope == Scope.RECORD


# --- other exceptions are our bugs --------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ValueError("boom"),
        KeyError("key"),
        TypeError("x"),
        RuntimeError(),
        asyncio.CancelledError(),
        KeyboardInterrupt(),
        UpstreamError("no subclass"),
    ],
)
@pytest.mark.parametrize("where", list(Where))
def test_other_exceptions_are_bugs_that_fail_and_are_not_transient(
    error: BaseException, where: Where
) -> None:
    verdict = classify(error, where=where, distinct_entity_types_failing=5)

    assert verdict.kind == Kind.BUG
    assert verdict.action == Action.FAIL
    assert verdict.transient is False
    assert verdict.counts_as_failure is False
    # 5 failing entity types escalate a list failure; a record stays a record.
    expected = {Where.STATUS: Scope.CONNECTION, Where.LIST: Scope.CONNECTION}
    assert verdict.scope == expected.get(where, Scope.RECORD)


def test_bug_summary_does_not_repeat_the_message() -> None:
    verdict = classify(ValueError("password=hunter2"), where=Where.LIST)
    assert "hunter2" not in verdict.summary
    assert "ValueError" in verdict.summary


def test_exception_whose_str_raises_is_classified() -> None:
    class Nasty(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    assert classify(Nasty(), where=Where.LIST).kind == Kind.BUG


def test_classifier_failure_is_a_bug_verdict_not_a_crash() -> None:
    class Liar(UpstreamError):
        kind = "not a kind"  # type: ignore[assignment]

    verdict = classify(Liar("x"), where=Where.LIST)
    assert (verdict.kind, verdict.action) == (Kind.BUG, Action.FAIL)
    assert "classifier failed" in verdict.summary


def test_summary_redacts_credentials_and_stays_short() -> None:
    error = Unavailable(
        "proxy echoed Authorization: Bearer sk_live_abc123 and token=xyz789 " + "x" * 500,
        status=502,
        code="CONNECTION_OFFLINE",
        request_id="req_1",
    )
    summary = classify(error, where=Where.LIST).summary

    assert "sk_live_abc123" not in summary
    assert "xyz789" not in summary
    assert "502" in summary and "CONNECTION_OFFLINE" in summary and "req_1" in summary
    assert len(summary) < 300
    assert "\n" not in summary


# --- the rule table -------------------------------------------------------------


def test_every_kind_and_scope_has_exactly_one_row() -> None:
    keys = [(rule.kind, rule.scope) for rule in RULES]
    assert len(keys) == len(set(keys)) == len(Kind) * len(Scope)
    assert set(keys) == {(k, s) for k in Kind for s in Scope}
    for rule in RULES:
        assert action_for(rule.kind, rule.scope) == rule.action
        assert rule.why.strip()


def test_defer_is_never_a_table_action() -> None:
    # Deferral is not failure (principle 4): only deferral() produces it.
    assert all(rule.action != Action.DEFER for rule in RULES)


@pytest.mark.parametrize(
    ("kind", "scope", "action"),
    [
        (Kind.AUTH, Scope.CONNECTION, Action.HALT),
        (Kind.PERMISSION, Scope.ENTITY_TYPE, Action.BLOCK_ENTITY),
        (Kind.PERMISSION, Scope.CONNECTION, Action.HALT),
        (Kind.RATE_LIMITED, Scope.CONNECTION, Action.PAUSE),
        (Kind.UNAVAILABLE, Scope.ENTITY_TYPE, Action.RETRY),
        (Kind.UNAVAILABLE, Scope.CONNECTION, Action.OPEN_BREAKER),
        (Kind.NOT_SUPPORTED, Scope.ENTITY_TYPE, Action.BLOCK_ENTITY),
        (Kind.BAD_DATA, Scope.RECORD, Action.QUARANTINE),
        (Kind.BAD_DATA, Scope.ENTITY_TYPE, Action.RETRY),
    ]
    + [(Kind.AUTH, s, Action.HALT) for s in Scope]
    + [(Kind.RATE_LIMITED, s, Action.PAUSE) for s in Scope]
    + [(Kind.BAD_REQUEST, s, Action.FAIL) for s in Scope]
    + [(Kind.BUG, s, Action.FAIL) for s in Scope],
)
def test_required_rows(kind: Kind, scope: Scope, action: Action) -> None:
    assert action_for(kind, scope) == action


def test_table_drawn_in_the_docstring_matches_the_data() -> None:
    doc = classify_module.__doc__ or ""
    drawn: dict[tuple[Kind, Scope], Action] = {}
    for line in doc.splitlines():
        cells = line.split()
        if len(cells) == 4 and cells[0] in {k.value for k in Kind}:
            for scope, cell in zip(
                (Scope.RECORD, Scope.ENTITY_TYPE, Scope.CONNECTION), cells[1:], strict=True
            ):
                drawn[(Kind(cells[0]), scope)] = Action(cell)
    assert drawn == {(rule.kind, rule.scope): rule.action for rule in RULES}


def test_a_broken_table_is_refused() -> None:
    with pytest.raises(ValueError, match="two rows"):
        classify_module._index((*RULES, Rule(Kind.BUG, Scope.RECORD, Action.RETRY, "dup")))
    with pytest.raises(ValueError, match="no row"):
        classify_module._index(RULES[1:])


def test_base_scope() -> None:
    for where in Where:
        assert base_scope(Kind.AUTH, where) == Scope.CONNECTION
        assert base_scope(Kind.RATE_LIMITED, where) == Scope.CONNECTION
    for kind in Kind:
        assert base_scope(kind, Where.STATUS) == Scope.CONNECTION
    for kind in set(Kind) - {Kind.AUTH, Kind.RATE_LIMITED}:
        assert base_scope(kind, Where.LIST) == Scope.ENTITY_TYPE
        assert base_scope(kind, Where.RECORD) == Scope.RECORD


# --- escalation by evidence ----------------------------------------------------


def test_403_on_one_entity_type_blocks_only_that_type() -> None:
    verdict = classify(
        PermissionDenied("no", status=403), where=Where.LIST, distinct_entity_types_failing=1
    )
    assert (verdict.scope, verdict.action) == (Scope.ENTITY_TYPE, Action.BLOCK_ENTITY)


def test_403_on_every_entity_type_is_an_account_problem() -> None:
    verdict = classify(
        PermissionDenied("no", status=403),
        where=Where.LIST,
        distinct_entity_types_failing=8,
        escalate_at=8,
    )
    assert (verdict.scope, verdict.action) == (Scope.CONNECTION, Action.HALT)


def test_404_on_every_entity_type_halts() -> None:
    verdict = classify(
        NotSupported("no", status=404), where=Where.LIST, distinct_entity_types_failing=2
    )
    assert (verdict.scope, verdict.action) == (Scope.CONNECTION, Action.HALT)


def test_500_on_one_entity_type_while_others_succeed_stays_entity_type() -> None:
    error = error_for_status(500, "INTERNAL_ERROR", "oops", None, None)
    verdict = classify(error, where=Where.LIST, distinct_entity_types_failing=1)
    assert (verdict.scope, verdict.action) == (Scope.ENTITY_TYPE, Action.RETRY)


def test_503_on_two_entity_types_opens_the_connection_breaker() -> None:
    error = error_for_status(503, "CONNECTION_OFFLINE", "offline", None, None)
    verdict = classify(error, where=Where.LIST, distinct_entity_types_failing=2)
    assert (verdict.scope, verdict.action) == (Scope.CONNECTION, Action.OPEN_BREAKER)
    assert verdict.counts_as_failure is True


@pytest.mark.parametrize("escalate_at", [0, -3])
def test_escalate_at_below_one_needs_at_least_one_failure(escalate_at: int) -> None:
    error = Unavailable("x")
    assert classify(error, where=Where.LIST, escalate_at=escalate_at).scope == Scope.ENTITY_TYPE
    assert (
        classify(
            error, where=Where.LIST, distinct_entity_types_failing=1, escalate_at=escalate_at
        ).scope
        == Scope.CONNECTION
    )


def test_where_may_be_given_as_its_string_value() -> None:
    verdict = classify(Unavailable("x"), where="status")  # type: ignore[arg-type]
    assert verdict.scope == Scope.CONNECTION


# --- deferral -------------------------------------------------------------------


def test_deferral_is_not_a_failure() -> None:
    verdict = deferral(
        kind=Kind.UNAVAILABLE, scope=Scope.CONNECTION, retry_after=42.0, reason="breaker open"
    )
    assert verdict.action == Action.DEFER
    assert verdict.counts_as_failure is False
    assert verdict.transient is True
    assert verdict.retry_after == 42.0


def test_verdict_is_frozen() -> None:
    verdict = classify(Unavailable("x"), where=Where.LIST)
    with pytest.raises(AttributeError):
        verdict.action = Action.FAIL  # type: ignore[misc]


# --- properties --------------------------------------------------------------------

statuses = st.one_of(st.none(), st.integers(min_value=-1000, max_value=1000))
floats_any = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
texts = st.text(max_size=300)


@st.composite
def upstream_errors(draw: st.DrawFn) -> UpstreamError:
    cls = draw(st.sampled_from(UPSTREAM_CLASSES))
    return cls(
        draw(texts),
        status=draw(statuses),
        code=draw(st.one_of(st.none(), texts)),
        retry_after=draw(floats_any),
        request_id=draw(st.one_of(st.none(), texts)),
    )


@st.composite
def status_errors(draw: st.DrawFn) -> UpstreamError:
    return error_for_status(
        draw(st.integers(min_value=-1000, max_value=1000)),
        draw(st.one_of(st.none(), texts)),
        draw(texts),
        draw(floats_any),
        draw(st.one_of(st.none(), texts)),
    )


other_errors = st.builds(
    lambda cls, msg: cls(msg),
    st.sampled_from(
        [ValueError, TypeError, KeyError, OSError, RuntimeError, ZeroDivisionError, Exception]
    ),
    texts,
) | st.sampled_from([KeyboardInterrupt(), SystemExit(1), asyncio.CancelledError()])

any_error = st.one_of(upstream_errors(), status_errors(), other_errors)
counts = st.integers(min_value=-10, max_value=10**6)


@given(any_error, st.sampled_from(list(Where)), counts, st.integers(-5, 20))
def test_classify_never_raises_and_returns_a_consistent_verdict(
    error: BaseException, where: Where, failing: int, escalate_at: int
) -> None:
    verdict = classify(
        error, where=where, distinct_entity_types_failing=failing, escalate_at=escalate_at
    )

    assert isinstance(verdict, Verdict)
    assert verdict.action == action_for(verdict.kind, verdict.scope)
    assert verdict.retry_after is None or 0.0 <= verdict.retry_after < float("inf")
    assert isinstance(verdict.summary, str) and "\n" not in verdict.summary
    assert len(verdict.summary) < 400
    if not isinstance(error, UpstreamError):
        assert (verdict.kind, verdict.action, verdict.transient) == (Kind.BUG, Action.FAIL, False)


@given(
    st.one_of(upstream_errors(), status_errors(), other_errors),
    st.sampled_from(list(Where)),
    st.integers(min_value=0, max_value=50),
    st.integers(min_value=0, max_value=50),
    st.integers(min_value=1, max_value=10),
)
def test_scope_escalates_monotonically_with_the_count(
    error: BaseException, where: Where, low: int, extra: int, escalate_at: int
) -> None:
    before = classify(
        error, where=where, distinct_entity_types_failing=low, escalate_at=escalate_at
    )
    after = classify(
        error, where=where, distinct_entity_types_failing=low + extra, escalate_at=escalate_at
    )

    assert RANK[after.scope] >= RANK[before.scope]
    assert after.kind == before.kind


@given(st.one_of(upstream_errors(), status_errors()), st.sampled_from(list(Where)), counts)
def test_client_kinds_never_count_as_failures(
    error: UpstreamError, where: Where, failing: int
) -> None:
    verdict = classify(error, where=where, distinct_entity_types_failing=failing)
    if verdict.kind in CLIENT_KINDS or verdict.kind == Kind.BUG:
        assert verdict.counts_as_failure is False
    if verdict.kind == Kind.UNAVAILABLE:
        assert verdict.counts_as_failure is True


@given(st.integers(min_value=400, max_value=499), st.sampled_from(list(Where)), counts)
def test_every_4xx_is_a_client_kind_or_a_timeout(status: int, where: Where, failing: int) -> None:
    verdict = classify(
        error_for_status(status, None, "", None, None),
        where=where,
        distinct_entity_types_failing=failing,
    )
    if status == 408:
        assert verdict.kind == Kind.UNAVAILABLE
    else:
        assert verdict.kind in CLIENT_KINDS
        assert verdict.counts_as_failure is False


@given(st.integers(min_value=500, max_value=599))
def test_every_5xx_is_unavailable_and_counts(status: int) -> None:
    verdict = classify(error_for_status(status, None, "", None, None), where=Where.LIST)
    assert verdict.kind == Kind.UNAVAILABLE
    assert verdict.counts_as_failure is True


@given(texts)
def test_record_problem_never_raises_and_stays_one_line(reason: str) -> None:
    verdict = classify_record_problem(reason)
    assert verdict.action == Action.QUARANTINE
    assert not re.search(r"[\r\n]", verdict.summary)


def test_unavailable_at_record_scope_still_counts() -> None:
    # A timeout fetching one record is still the upstream failing to answer.
    verdict = classify(Unavailable("read timed out"), where=Where.RECORD)
    assert (verdict.scope, verdict.action, verdict.counts_as_failure) == (
        Scope.RECORD,
        Action.RETRY,
        True,
    )
