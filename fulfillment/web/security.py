"""Tokens, sessions and CSRF for the admin web process.

- Platform API: `Authorization: Bearer <API_TOKEN>`.
- Admin JSON routes: `Authorization: Bearer <ADMIN_TOKEN>`, or the dashboard session.
- Dashboard: a login form (name + ADMIN_TOKEN) sets a signed, HttpOnly, SameSite=Strict
  cookie carrying who logged in and a CSRF token; every state-changing form sends that CSRF
  token back. Tokens are compared in constant time.
- Guessing: after AUTH_FAILURES_MAX wrong tokens (login form or bearer) from one address within
  AUTH_FAILURES_WINDOW_S, that address is refused (429) until the oldest leaves the window,
  even with the right token (AuthThrottle, per admin process).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

SESSION_COOKIE = "fulfillment_session"
SESSION_MAX_AGE_S = 12 * 3600
AUTH_FAILURES_MAX = 10
AUTH_FAILURES_WINDOW_S = 300.0


def tokens_match(given: str | None, expected: str | None) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


@dataclass(frozen=True, slots=True)
class Session:
    actor: str
    csrf: str


class Sessions:
    """Signed session cookies; the signing key is derived from the admin token, so rotating
    ADMIN_TOKEN logs everybody out."""

    def __init__(self, admin_token: str) -> None:
        key = hmac.new(admin_token.encode(), b"fulfillment-session", hashlib.sha256).hexdigest()
        self._serializer = URLSafeTimedSerializer(key, salt="fulfillment-dashboard")

    def issue(self, actor: str) -> tuple[str, Session]:
        session = Session(actor=actor[:80], csrf=secrets.token_urlsafe(24))
        value = self._serializer.dumps({"actor": session.actor, "csrf": session.csrf})
        return value, session

    def read(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        try:
            data: Any = self._serializer.loads(cookie, max_age=SESSION_MAX_AGE_S)
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        actor, csrf = data.get("actor"), data.get("csrf")
        if not isinstance(actor, str) or not isinstance(csrf, str):
            return None
        return Session(actor=actor, csrf=csrf)


class TooManyAttempts(Exception):
    """This address guessed wrong too often: refused whatever it sends for retry_after_s."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many wrong tokens; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


def check_token(request: Any, given: str | None, expected: str) -> bool:
    """Whether `given` is the token. A wrong one counts against the caller's address (the
    app's AuthThrottle); an address that guessed wrong too often gets TooManyAttempts, even
    with the right token."""
    throttle: AuthThrottle = request.app.state.auth_throttle
    client = client_address(request)
    wait = throttle.retry_after(client)
    if wait:
        raise TooManyAttempts(wait)
    if tokens_match(given, expected):
        return True
    if given:
        throttle.failed(client)
    return False


def client_address(request: Any) -> str:
    """The caller's address (behind a proxy: what uvicorn's --proxy-headers made of it)."""
    client = getattr(request, "client", None)
    return str(client.host) if client is not None else "unknown"


class AuthThrottle:
    """Wrong tokens per client address, in a sliding window. Thread-safe; bounded memory (the
    addresses seen longest ago are forgotten first)."""

    MAX_CLIENTS = 10_000

    def __init__(
        self,
        limit: int = AUTH_FAILURES_MAX,
        window_s: float = AUTH_FAILURES_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int:
        """Whole seconds until `client` may try again; 0: it may now."""
        with self._lock:
            failures = self._recent(client)
            if len(failures) < self.limit:
                return 0
            return max(1, math.ceil(failures[0] + self.window_s - self.clock()))

    def failed(self, client: str) -> None:
        with self._lock:
            failures = self._recent(client)
            failures.append(self.clock())
            self._failures[client] = failures
            self._failures.move_to_end(client)
            while len(self._failures) > self.MAX_CLIENTS:
                self._failures.popitem(last=False)

    def _recent(self, client: str) -> deque[float]:
        failures = self._failures.get(client, deque())
        horizon = self.clock() - self.window_s
        while failures and failures[0] <= horizon:
            failures.popleft()
        return failures
