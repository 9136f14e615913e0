"""Replayed vendor callbacks: the same signed callback POSTed to the web process many times.

The simulated AT-iShare sends no callbacks (the simulated aggregator sends one per final
state, once), so the chaos driver plays the vendor: every `every_s` seconds it picks an
order that was published, signs a callback for it the way the vendor its network routes to
signs (DESIGN.md: AT-iShare's X-API-Key, X-Timestamp, X-Signature over
"<ts>\\nPOST\\n<path>\\n<body>" to /webhooks/at-ishare; the aggregator's
X-Aggregator-Timestamp, X-Aggregator-Signature over "<ts>.<body>" of its status answer to
/webhooks/aggregator; with the credentials the fleet is configured with) and POSTs the very
same body and headers `replays` times, a few per second, well inside the 300 s the signature
is valid:

- every other burst says "pending" (the aggregator: "processing"), whatever the vendor's books
  say (issue 9: 40 replays of a signed "pending" callback burnt an order's status checks
  until it was dead-lettered);
- the others say what the vendor's books say (AT-iShare: success, pending, failed; the
  aggregator: delivered, queued, processing, failed, refunded), as a real vendor retrying its
  callback would.

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
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from chaos.vendors import AGGREGATOR, AT_ISHARE, LABELS, WEBHOOK_PATHS
from fulfillment.vendors import aggregator_signing, atishare_signing

REPLAY_GAP_S = 0.1
#: what each vendor calls an order under way
PENDING = {AT_ISHARE: "pending", AGGREGATOR: "processing"}


class CallbackReplayer(threading.Thread):
    """Bursts of one signed callback, replayed; `counts` by what came back."""

    def __init__(
        self,
        *,
        web_url: str,
        controls: Mapping[str, str],
        key: str,
        secret: str,
        aggregator_secret: str,
        published: list[str],
        vendor_of: Mapping[str, str],
        rng: random.Random,
        excused: Callable[[], bool],
        every_s: float = 5.0,
        replays: int = 40,
    ) -> None:
        super().__init__(name="chaos-callbacks", daemon=True)
        self.web_url = web_url
        self.controls = controls  # vendor -> the base of its control routes
        self.key = key
        self.secret = secret
        self.aggregator_secret = aggregator_secret
        self.published = published
        self.vendor_of = vendor_of  # order id -> the vendor its network routes to
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
        vendor = self.vendor_of[order_id]
        self._burst += 1
        if self._burst % 2:
            status, transaction_id = PENDING[vendor], self._made_up(vendor)
            self.bursts[f"{LABELS[vendor]}: '{status}', whatever the vendor's books say"] += 1
        else:
            status, transaction_id = self._vendor_view(http, vendor, order_id)
            self.bursts[f"{LABELS[vendor]}: the vendor's own view ({status})"] += 1
        path = WEBHOOK_PATHS[vendor]
        now = time.time()
        if vendor == AGGREGATOR:
            order = {"order_ref": transaction_id, "request_id": order_id, "status": status}
            body = json.dumps({"data": order}).encode()
            headers = aggregator_signing.signed_headers(self.aggregator_secret, body, now)
        else:
            callback = {"reference": order_id, "status": status, "transaction_id": transaction_id}
            body = json.dumps(callback).encode()
            headers = atishare_signing.signed_headers(
                self.key, self.secret, "POST", path, body, now
            )
        headers["Content-Type"] = "application/json"
        for _ in range(self.replays):
            if self.stop_event.is_set():
                return
            self._send(http, path, order_id, status, body, headers)
            time.sleep(REPLAY_GAP_S)

    def _made_up(self, vendor: str) -> str:
        return f"{'AGG' if vendor == AGGREGATOR else 'ATX'}-CHAOS{self._burst:011d}"

    def _vendor_view(self, http: httpx.Client, vendor: str, order_id: str) -> tuple[str, str]:
        ledger: dict[str, Any] = http.get(f"{self.controls[vendor]}/ledger").json()
        entry = ledger["references"].get(order_id, {})
        status = entry.get("status", "not_found")
        if status == "not_found":  # nothing to call back about yet: a vendor would not
            return PENDING[vendor], self._made_up(vendor)
        return status, str(entry.get("transaction_id") or self._made_up(vendor))

    def _send(
        self,
        http: httpx.Client,
        path: str,
        order_id: str,
        status: str,
        body: bytes,
        headers: dict[str, str],
    ) -> None:
        away_at_send = self.excused()
        try:
            response = http.post(f"{self.web_url}{path}", content=body, headers=headers)
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
