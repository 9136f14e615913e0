"""structlog setup: JSON by default, console when LOG_FORMAT=console; phones masked, no secrets.

Event names are dotted (`vendor.request_failed`); fields are key-values (order_id, attempt,
network, phone masked, latency_ms, error_code).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import structlog

from fulfillment.domain.phone import mask_phone, mask_phones_in_text

_SECRET_KEY = re.compile(r"secret|api_key|apikey|token|password|authorization|signature", re.I)
_PHONE_KEY = re.compile(r"phone", re.I)
_configured = False


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask phone numbers and drop secrets from every log line (a structlog processor)."""
    for key, value in list(event.items()):
        if _SECRET_KEY.search(key):
            event[key] = "[redacted]"
        elif _PHONE_KEY.search(key) and isinstance(value, str):
            event[key] = mask_phone(value)
        elif isinstance(value, str) and key != "timestamp":
            event[key] = mask_phones_in_text(value)
    return event


def url_without_password(url: str) -> str:
    """A database or Redis URL fit to print or log: its password dropped, the rest kept."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit(parts._replace(netloc=netloc))


def configure(log_format: str = "json", level: int = logging.INFO, *, force: bool = False) -> None:
    """Set up structlog once per process (idempotent unless force)."""
    global _configured  # noqa: PLW0603 - process-wide logging is global by nature
    if _configured and not force:
        return
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if log_format == "console"
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    _configured = True


def get_logger(name: str) -> Any:
    """A named logger; redaction is on even if nothing configured logging explicitly."""
    if not _configured:
        configure(os.environ.get("LOG_FORMAT", "json"))
    return structlog.get_logger(name)
