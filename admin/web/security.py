"""Tokens, sessions and CSRF for the admin web process.

- Platform API: `Authorization: Bearer <API_TOKEN>`.
- Admin JSON routes: `Authorization: Bearer <ADMIN_TOKEN>`, or the dashboard session.
- Dashboard: a login form (name + ADMIN_TOKEN) sets a signed, HttpOnly, SameSite=Strict
  cookie carrying who logged in and a CSRF token; every state-changing form sends that CSRF
  token back. Tokens are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

SESSION_COOKIE = "fulfillment_session"
SESSION_MAX_AGE_S = 12 * 3600


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
