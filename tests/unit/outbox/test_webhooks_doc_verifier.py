"""The verification code docs/webhooks.md gives integrators verifies what the notifier signs."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from worker.outbox.webhooks import sign

DOC = Path(__file__).resolve().parents[3] / "docs" / "webhooks.md"


def _documented_verify() -> Any:
    """The page's Python verifier of the deprecated header, run as an integrator would."""
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    snippet = [b for b in blocks if "def entity_sync_signature_ok(" in b]
    assert len(snippet) == 1, "docs/webhooks.md's verification snippet is missing"
    namespace: dict[str, Any] = {}
    exec(compile(snippet[0], str(DOC.name), "exec"), namespace)  # noqa: S102 - our own doc
    return namespace["entity_sync_signature_ok"]


def test_the_documented_verifier_accepts_our_signature_and_refuses_tampering() -> None:
    verify = _documented_verify()
    body = b'{"id":"evt_1","type":"connection.recovered"}'
    now = int(time.time())
    header = sign("s3cret", now, body)
    assert verify("s3cret", header, body)
    assert not verify("s3cret", header, body + b" ")
    assert not verify("other", header, body)
    assert not verify("s3cret", sign("s3cret", now - 3600, body), body)
    assert not verify("s3cret", "garbage", body)
