"""The verification snippet in the README verifies what the notifier signs."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from worker.outbox.webhooks import sign

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_verify() -> Any:
    text = README.read_text(encoding="utf-8")
    snippet = re.search(r"```python\n(import hashlib, hmac, time\n.*?)```", text, re.S)
    assert snippet, "the README's verification snippet is missing"
    namespace: dict[str, Any] = {}
    exec(compile(snippet.group(1), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    return namespace["verify"]


def test_the_readme_snippet_accepts_our_signature_and_refuses_tampering() -> None:
    verify = _readme_verify()
    body = b'{"id":"evt_1","type":"connection.recovered"}'
    now = int(time.time())
    header = sign("s3cret", now, body)
    assert verify("s3cret", header, body)
    assert not verify("s3cret", header, body + b" ")
    assert not verify("other", header, body)
    assert not verify("s3cret", sign("s3cret", now - 3600, body), body)
    assert not verify("s3cret", "garbage", body)
