"""The 16-byte floor of a webhook signing secret: the operator check and the setting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.errors import ConfigError
from worker.operator_input import MIN_WEBHOOK_SECRET_BYTES, InvalidInput, check_webhook_secret
from worker.settings import Settings, load_settings


def test_the_floor_counts_utf8_bytes_of_the_whole_secret() -> None:
    assert MIN_WEBHOOK_SECRET_BYTES == 16
    assert check_webhook_secret("s" * 16) == "s" * 16
    assert check_webhook_secret("whsec_0123456789") == "whsec_0123456789"  # the prefix counts
    assert check_webhook_secret("é" * 8) == "é" * 8  # 8 characters, 16 bytes
    for short in ("short", "s" * 15, "é" * 7 + "s"):
        with pytest.raises(InvalidInput, match="at least 16 bytes") as caught:
            check_webhook_secret(short)
        assert short not in str(caught.value)


def test_a_short_global_secret_is_a_settings_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENTITY_SYNC_WEBHOOK_SECRET", "tiny-secret")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "ENTITY_SYNC_WEBHOOK_SECRET" in message and "at least 16 bytes" in message
    assert "tiny-secret" not in message


def test_a_short_previous_global_secret_still_signs_during_its_window() -> None:
    settings = Settings(
        webhook_secret="whsec_new_global_secret_01",  # type: ignore[arg-type]
        webhook_secret_previous="tiny",  # type: ignore[arg-type]
        webhook_secret_previous_until=datetime.now(UTC) + timedelta(days=1),
    )
    assert settings.webhook_secret_previous is not None
