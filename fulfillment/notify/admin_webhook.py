"""POST a notification to the admin webhook, with retries of its own. The HTTP edge for admins."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True, slots=True)
class Delivery:
    state: str  # delivered | failed | not_configured
    attempts: int
    last_error: str | None


def deliver(
    url: str | None,
    payload: dict[str, Any],
    *,
    attempts: int = 3,
    timeout_s: float = 5.0,
    backoff_s: float = 0.5,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """Try up to `attempts` times; any 2xx counts as delivered."""
    if not url:
        return Delivery("not_configured", 0, None)
    last_error: str | None = None
    with httpx.Client(timeout=timeout_s, transport=transport) as client:
        for attempt in range(1, attempts + 1):
            try:
                response = client.post(url, json=payload)
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}"[:300]
            else:
                if response.is_success:
                    return Delivery("delivered", attempt, None)
                last_error = f"HTTP {response.status_code}"
            if attempt < attempts:
                sleep(backoff_s * 2 ** (attempt - 1))
    return Delivery("failed", attempts, last_error)
