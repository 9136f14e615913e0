"""What the admin web process's routes are given: WebDeps, built once by
fulfillment.web.server and kept on `app.state.deps`, and the JSON error body every route
and handler answers with. The routers import this module; only fulfillment.web.app imports
the routers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from db.store import Store
from fulfillment.messaging.dlq import DeadMessageQueue
from fulfillment.services.admin import AdminService
from fulfillment.services.pauses import PauseService
from fulfillment.services.ports import FulfilDeps


@dataclass(frozen=True)
class WebDeps:
    service: AdminService
    #: the runtime pause of the whole fleet or of a network (list, pause, resume)
    pauses: PauseService
    dlq: DeadMessageQueue
    store: Store
    api_token: str
    admin_token: str
    #: the vendor's webhook signing key and secret (the same pair the client signs with)
    vendor_key: str
    vendor_secret: str
    #: wiring for the webhook's confirmation (vendor client, store, publishing)
    fulfil_deps: Callable[[], FulfilDeps]
    #: raises when Redis does not answer
    ping_redis: Callable[[], Any]
    #: mark cookies Secure (behind HTTPS)
    secure_cookies: bool = False
    #: live fleet figures read at scrape time (fulfillment.runtime.metrics_server.FleetCollector)
    collector: Any = None
    #: raises when the vendor does not answer (readiness); None: not checked
    ping_vendor: Callable[[], Any] | None = None
    #: AGGREGATOR_WEBHOOK_SECRET ('' refuses the aggregator's callbacks)
    aggregator_secret: str = ""
    #: FULFILLMENT_ENABLED as this web process read it at start (the dashboard says when false)
    fulfillment_enabled: bool = True


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"success": False, "error": {"code": code, "message": message}}
