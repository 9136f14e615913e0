"""Replayed vendor callbacks: the same signed callback POSTed to the web process many times.

The simulator sends no callbacks, so the chaos driver plays the vendor: every `every_s`
seconds it picks an order that was published, signs a callback for it the way the vendor
signs (DESIGN.md: X-API-Key, X-Timestamp, X-Signature over "<ts>\\nPOST\\n<path>\\n<body>",
with the key and secret the fleet is configured with) and POSTs the very same body and
headers `replays` times, a few per second, well inside the 300 s the signature is valid:

- every other burst says "pending", whatever the vendor's books say (issue 9: 40 replays of
  a signed "pending" callback burnt an order's status checks until it was dead-lettered);
- the others say what the vendor's books say (success, pending, failed), as a real vendor
  retrying its callback would.

Every answer is counted by status. Anything but a 200 or a 202 (a 5xx, a correctly signed
callback refused, a 404 for an order that exists, no answer at all) is a violation: no breaker
or limiter state may make the webhook fail. Failures while PostgreSQL or Redis is being
restarted, and a few seconds after, are excused (`excused`): the webhook cannot record
anything then, and says so.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from fulfillment.vendors.atishare_signing import signed_headers

WEBHOOK_PATH = "/webhooks/at-ishare"  # DESIGN.md: the vendor's callback route
REPLAY_GAP_S = 0.1


class CallbackReplayer(threading.Thread):
    """Bursts of one signed callback, replayed; `counts` by what came back."""

    def __init__(
        self,
        *,
        web_url: str,
        sim_control_url: str,
        key: str,
        secret: str,
        published: list[str],
        rng: random.Random,
        excused: Callable[[], bool],
        every_s: float = 5.0,
        replays: int = 40,
    ) -> None:
        super().__init__(name="chaos-callbacks", daemon=True)
        self.web_url = web_url
        self.sim_control_url = sim_control_url
        self.key = key
        self.secret = secret
        self.published = published
        self.rng = rng
        #: whether a failure now is a server restart's (Injector.servers_away)
        self.excused = excused
        self.every_s = every_s
        self.replays = replays
        #: answers by "<status code>" (and "error: <kind>"), excused 5xx apart
        self.counts: Counter[str] = Counter()
        self.bursts: Counter[str] = Counter()
        #: (order id, callback status, answer) of every 5xx not excused
        self.failures: list[tuple[str, str, str]] = []
        #: the first answer of each kind (status code: body), for the evidence
        self.examples: dict[str, str] = {}
        #: orders the next burst should prefer (the quiet outage's, say)
        self.prefer: list[str] = []
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self._burst = 0

    @property
    def sent(self) -> int:
        return sum(self.counts.values())

    def run(self) -> None:
        try:
            with httpx.Client(timeout=10) as http:
                while not self.stop_event.wait(self.every_s * self.rng.uniform(0.6, 1.4)):
                    self._one_burst(http)
        except Exception as exc:  # noqa: BLE001 -- reported by the run, never lost in a thread
            self.error = exc

    def _one_burst(self, http: httpx.Client) -> None:
        pool = self.prefer or self.published
        if not pool:
            return
        order_id = self.rng.choice(pool[-50:])  # recent orders: most likely still under way
        self._burst += 1
        if self._burst % 2:
            status, transaction_id = "pending", f"ATX-CHAOS{self._burst:011d}"
            self.bursts["'pending', whatever the vendor's books say"] += 1
        else:
            status, transaction_id = self._vendor_view(http, order_id)
            self.bursts[f"the vendor's own view ({status})"] += 1
        body = json.dumps(
            {"reference": order_id, "status": status, "transaction_id": transaction_id}
        ).encode()
        headers = signed_headers(self.key, self.secret, "POST", WEBHOOK_PATH, body, time.time())
        headers["Content-Type"] = "application/json"
        for _ in range(self.replays):
            if self.stop_event.is_set():
                return
            self._send(http, order_id, status, body, headers)
            time.sleep(REPLAY_GAP_S)

    def _vendor_view(self, http: httpx.Client, order_id: str) -> tuple[str, str]:
        ledger: dict[str, Any] = http.get(f"{self.sim_control_url}/_sim/ledger").json()
        entry = ledger["references"].get(order_id, {})
        status = entry.get("status", "not_found")
        if status == "not_found":  # nothing to call back about yet: a vendor would not
            return "pending", f"ATX-CHAOS{self._burst:011d}"
        return status, str(entry.get("transaction_id") or f"ATX-CHAOS{self._burst:011d}")

    def _send(
        self, http: httpx.Client, order_id: str, status: str, body: bytes, headers: dict[str, str]
    ) -> None:
        away_at_send = self.excused()
        try:
            response = http.post(f"{self.web_url}{WEBHOOK_PATH}", content=body, headers=headers)
        except httpx.HTTPError as exc:
            answer, failed = f"error: {type(exc).__name__}", True
        else:
            code = response.status_code
            answer, failed = str(code), code not in (200, 202)
            self.examples.setdefault(answer, f"{status} {order_id}: {response.text[:300]}")
        if failed and (away_at_send or self.excused()):
            self.counts[f"{answer} (a server restarting: excused)"] += 1
            return
        self.counts[answer] += 1
        if failed:
            self.failures.append((order_id, status, answer))
