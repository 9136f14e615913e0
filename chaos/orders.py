"""The orders of a chaos run and the purchase path that commits and publishes them.

The purchase path does what the platform does: commit the order row, then call
`publish_fulfillment`. While PostgreSQL is down the commit is retried (the platform's own
retry); while Redis is down the publish fails and the order is left to the reconciler. About
2 % of the numbers end in the simulator's invalid-phone suffix (the vendor rejects them:
dead letters), and a few are not Ghanaian mobile numbers at all (refused at publish, committed
anyway, dead-lettered by the worker once the reconciler enqueues them).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass

from db.store import Store
from fulfillment.dev.simulator.faults import VENDOR_REJECTS_SUFFIX
from fulfillment.domain.errors import InvalidOrder, StoreError
from producers.publish import publish_fulfillment

NOT_MOBILE = ("12345", "+4915112345678", "0302123456", "not-a-number")
VENDOR_REJECTS_RATE = 0.02
NOT_MOBILE_RATE = 0.005
COMMIT_PATIENCE_S = 60.0


@dataclass(frozen=True, slots=True)
class OrderSpec:
    order_id: str
    phone: str
    size_gb: float | None
    package_name: str | None
    #: normal | vendor_rejects | not_mobile
    kind: str


def _mobile(rng: random.Random, *, rejected: bool) -> str:
    prefix = rng.choice(["026", "027", "056", "057"])  # AirtelTigo ranges
    tail = f"{rng.randrange(0, 1000):03d}"
    last = VENDOR_REJECTS_SUFFIX if rejected else f"{rng.randrange(1, 10000):04d}"
    if not rejected and last == VENDOR_REJECTS_SUFFIX:
        last = "0001"
    number = prefix + tail + last
    # People type numbers in many shapes; the producer normalises them.
    return rng.choice(
        [
            number,
            "+233" + number[1:],
            "233" + number[1:],
            f"{number[:3]} {number[3:6]} {number[6:]}",
        ]
    )


def make_orders(count: int, rng: random.Random) -> list[OrderSpec]:
    specs = []
    for i in range(count):
        roll = rng.random()
        if roll < NOT_MOBILE_RATE:
            kind, phone = "not_mobile", NOT_MOBILE[i % len(NOT_MOBILE)]
        elif roll < NOT_MOBILE_RATE + VENDOR_REJECTS_RATE:
            kind, phone = "vendor_rejects", _mobile(rng, rejected=True)
        else:
            kind, phone = "normal", _mobile(rng, rejected=False)
        size: float | None = rng.choice([1, 2, 5, 10, 0.5, None])
        package = None if size is not None else rng.choice(["AT iShare 2GB", "500MB", "1.5GB"])
        specs.append(OrderSpec(str(uuid.UUID(int=rng.getrandbits(128), version=4)), phone, size,
                               package, kind))  # fmt: skip
    return specs


class Publisher(threading.Thread):
    """Commits and publishes the orders evenly over `window_s` seconds."""

    def __init__(self, specs: list[OrderSpec], store: Store, broker: object, window_s: float):
        super().__init__(name="chaos-publisher", daemon=True)
        self.specs = specs
        self.store = store
        self.broker = broker
        self.window_s = window_s
        self.counts: Counter[str] = Counter()
        self.published: list[str] = []  # appended only; read by the fault injector
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.pace = window_s / max(len(specs), 1)
        self._index = {spec.order_id: i for i, spec in enumerate(specs)}

    def offset(self, order_id: str) -> float | None:
        """Seconds after the start when the order is to be committed and published; None for
        an order not its own."""
        i = self._index.get(order_id)
        return None if i is None else i * self.pace

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # noqa: BLE001 -- reported by the run, never lost in a thread
            self.error = exc

    def _run(self) -> None:
        started = time.monotonic()
        for i, spec in enumerate(self.specs):
            wait = started + i * self.pace - time.monotonic()
            if wait > 0 and self.stop_event.wait(wait):
                return
            self._commit(spec)
            self._publish(spec)

    def _commit(self, spec: OrderSpec) -> None:
        deadline = time.monotonic() + COMMIT_PATIENCE_S
        while True:
            try:
                self.store.insert_order(
                    spec.order_id,
                    phone_number=spec.phone,
                    network="at-ishare",
                    size_gb=spec.size_gb,
                    package_name=spec.package_name,
                )
            except StoreError:
                # PostgreSQL is restarting; the insert may have committed before the
                # connection broke, so look before trying again.
                self.counts["commit retried (PostgreSQL down)"] += 1
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
                if self._committed(spec.order_id):
                    return
            else:
                return

    def _committed(self, order_id: str) -> bool:
        try:
            return self.store.order_row(order_id) is not None
        except StoreError:
            return False

    def _publish(self, spec: OrderSpec) -> None:
        try:
            result = publish_fulfillment(
                spec.order_id,
                phone_number=spec.phone,
                network="at-ishare",
                size_gb=spec.size_gb,
                package_name=spec.package_name,
                broker=self.broker,
                enabled=True,
            )
        except InvalidOrder:
            self.counts["refused at publish (left to the reconciler)"] += 1
            return
        if result.published:
            self.counts["published"] += 1
            self.published.append(spec.order_id)
        else:
            self.counts[f"not published: {result.reason} (left to the reconciler)"] += 1
