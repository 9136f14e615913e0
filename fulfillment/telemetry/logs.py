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
from typing import Any, NamedTuple
from urllib.parse import quote, unquote, unquote_plus, urlsplit, urlunsplit

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
    """A database or Redis connection string fit to print or log: its password dropped, the
    rest kept. In each form the drivers take: a URL's `user:password@`, a `password=` in a
    URL's query (libpq and redis-py read it there too), and libpq's key=value string
    (`host=db user=app password=... dbname=app`, which psycopg takes as DATABASE_URL). A
    string that is neither (libpq would refuse it) is cut before its first `password`."""
    if _URL.match(url):
        return _url_shown(url)
    pairs = _conninfo_pairs(url)
    if pairs is None:
        return _cut_at_password(url)
    if not any(p.key in _PASSWORD_KEYS for p in pairs):
        return url
    return " ".join(p.written for p in pairs if p.key not in _PASSWORD_KEYS)


def passwords_in(url: str) -> list[str]:
    """The passwords a connection string carries (the three forms above), each as written in
    it, decoded (what the server is sent) and percent-encoded: what to scrub from text that
    may quote one, such as a driver's error message."""
    if _URL.match(url):
        found = _url_passwords(url)
    elif (pairs := _conninfo_pairs(url)) is not None:
        found = [v for p in pairs if p.key in _PASSWORD_KEYS for v in (p.value, p.written_value)]
    else:
        found = [m.group(1) for m in _LOOSE_PASSWORD.finditer(url)]
    forms: dict[str, None] = {}
    for value in found:
        for form in (value, value.strip("'"), unquote(value), unquote_plus(value)):
            forms.update(dict.fromkeys((form, quote(form, safe=""))))
    return [f for f in forms if f]


# Connection strings. libpq's key=value rules are parsed here rather than by
# psycopg.conninfo: telemetry lies below db/ (the only psycopg importer), and every layer
# prints its URLs through this one helper. The rules are few, those of libpq's
# conninfo_parse: blanks between pairs; a key, then `=` (blanks around it allowed); a value
# bare up to the next blank, or in single quotes (may hold blanks, may be empty); a backslash
# takes the next character as it is, in either. A URL is told apart by its `scheme://`.

#: the keys whose value is a secret (sslpassword: the passphrase of the client key)
_PASSWORD_KEYS = frozenset({"password", "sslpassword"})
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: a URL's user info, for a URL urlsplit refuses (a `[` host without its `]`)
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")
_USERINFO_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*:([^/?#]*)@")
#: a password's value in a string that parses as nothing: quoted (perhaps unterminated) or bare
_LOOSE_PASSWORD = re.compile(r"password\s*=\s*('(?:[^'\\]|\\.)*'?|[^\s&#]+)", re.IGNORECASE)
#: libpq's blanks (C's isspace)
_BLANKS = frozenset(" \t\n\r\f\v")


class _Pair(NamedTuple):
    key: str
    value: str  # unquoted and unescaped: what libpq reads
    written: str  # the pair as it stands in the string
    written_value: str  # its value as it stands there (quotes, backslashes)


def _conninfo_pairs(text: str) -> list[_Pair] | None:
    """A libpq key=value string's pairs in order, or None when libpq would refuse it (a key
    without `=`, an unterminated quote)."""
    pairs: list[_Pair] = []
    i, end = 0, len(text)
    while True:
        while i < end and text[i] in _BLANKS:
            i += 1
        if i == end:
            return pairs
        start = i
        while i < end and text[i] != "=" and text[i] not in _BLANKS:
            i += 1
        key = text[start:i]
        while i < end and text[i] in _BLANKS:
            i += 1
        if not key or i == end or text[i] != "=":
            return None
        i += 1
        while i < end and text[i] in _BLANKS:
            i += 1
        value_start = i
        quoted = i < end and text[i] == "'"
        i += quoted
        value: list[str] = []
        while True:
            if i >= end:
                if quoted:
                    return None  # unterminated quoted string
                break
            char = text[i]
            if char == "\\":
                value.append(text[i + 1 : i + 2])
                i += 2
                continue
            if (char == "'" and quoted) or (char in _BLANKS and not quoted):
                i += quoted
                break
            value.append(char)
            i += 1
        i = min(i, end)
        pairs.append(_Pair(key, "".join(value), text[start:i], text[value_start:i]))


def _url_shown(url: str) -> str:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # urlsplit refuses it: drop the whole user info
        return _cut_at_password(_USERINFO.sub(r"\1", url, count=1))
    netloc = parts.netloc
    if password is not None:
        host = netloc.rpartition("@")[2]
        netloc = f"{parts.username}@{host}" if parts.username else host
    query = "&".join(p for p in parts.query.split("&") if not _is_password_parameter(p))
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _url_passwords(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        found = [m.group(1) for m in _USERINFO_PASSWORD.finditer(url)]
        return found + [m.group(1) for m in _LOOSE_PASSWORD.finditer(url)]
    found = [password] if password else []
    for parameter in parts.query.split("&"):
        if _is_password_parameter(parameter):
            found.append(parameter.partition("=")[2])
    return found


def _is_password_parameter(parameter: str) -> bool:
    """`password=...` in a URL's query, its key written in any case or percent-encoded."""
    return unquote_plus(parameter.partition("=")[0]).strip().lower() in _PASSWORD_KEYS


def _cut_at_password(text: str) -> str:
    at = text.lower().find("password")
    return text if at < 0 else f"{text[:at].rstrip()} [the rest not shown]".lstrip()


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


def duration(seconds: float) -> str:
    """A length of time for people, as the dashboard, `fulfillment check` and `fulfillment
    pauses` print it: '12.3 s', '4 min 05 s', '2 h 07 min'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
