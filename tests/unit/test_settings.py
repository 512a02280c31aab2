"""A wrong setting fails at start-up with a message naming the variable."""

from __future__ import annotations

import pytest

from worker.errors import ConfigError
from worker.secrets import generate_key
from worker.settings import load_settings


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ENTITY_SYNC_REDIS_URL", "http://localhost:6379"),
        ("ENTITY_SYNC_BROKER_URL", "kafka://x"),
        ("ENTITY_SYNC_STORE_URL", "mysql://db/x"),
        ("ENTITY_SYNC_STORE_URL", "sqlite://relative.db"),
        ("ENTITY_SYNC_UPSTREAM_URL", "ftp://example"),
        ("ENTITY_SYNC_UPSTREAM_URL", "http://"),
        ("ENTITY_SYNC_SECRET_KEY", "not-a-fernet-key"),
        ("ENTITY_SYNC_PAGE_SIZE", "500"),
        ("ENTITY_SYNC_PAGE_SIZE", "ten"),
        ("ENTITY_SYNC_CONNECT_TIMEOUT", "-1"),
        ("ENTITY_SYNC_LOG_LEVEL", "LOUD"),
        ("ENTITY_SYNC_MAX_RESPONSE_BYTES", "10"),
    ],
)
def test_each_wrong_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert variable in str(caught.value)


def test_a_stalled_run_check_shorter_than_the_lease_names_both_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENTITY_SYNC_LEASE_TTL", "600")
    monkeypatch.setenv("ENTITY_SYNC_STALLED_RUN_SECONDS", "300")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "ENTITY_SYNC_STALLED_RUN_SECONDS (300)" in str(caught.value)
    assert "ENTITY_SYNC_LEASE_TTL (600)" in str(caught.value)


def test_defaults_and_good_values(monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    monkeypatch.setenv("ENTITY_SYNC_SECRET_KEY", f"{generate_key()},{key}")
    monkeypatch.setenv("ENTITY_SYNC_STORE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("ENTITY_SYNC_UPSTREAM_URL", "https://api.example/")
    settings = load_settings()
    assert settings.store_url == "postgresql://u@h/db"
    assert settings.upstream_url == "https://api.example"
    assert settings.effective_broker_url == settings.redis_url
    assert key not in repr(settings)
