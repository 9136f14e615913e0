"""The README's receiver example verifies what the fleet signs, and refuses what it does not."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from fulfillment.notify.platform_webhook import sign

README = Path(__file__).resolve().parents[2] / "README.md"


def _receiver() -> Any:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("**What the purchase platform must do with an event.**") :]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None, "the README lost its receiver example"
    namespace: dict[str, Any] = {}
    exec(compile(code.group(1), "README.md", "exec"), namespace)
    return namespace["accept"]


def test_the_readme_receiver_accepts_once_and_refuses_forgeries() -> None:
    accept = _receiver()
    body = b'{"event_id": "e-1", "type": "order.failed", "refund_advised": true}'
    ts = str(int(time.time()))
    headers = {"X-Fulfillment-Timestamp": ts, "X-Fulfillment-Signature": sign("s3", ts, body)}
    seen: set[str] = set()
    assert accept("s3", headers, body, seen) == 200
    assert seen == {"e-1"}
    assert accept("s3", headers, body, seen) == 200  # a redelivery
    assert accept("other", headers, body, seen) == 401
    assert accept("s3", headers, body + b" ", seen) == 401
    stale = str(int(time.time()) - 3600)
    old = {"X-Fulfillment-Timestamp": stale, "X-Fulfillment-Signature": sign("s3", stale, body)}
    assert accept("s3", old, body, set()) == 401
