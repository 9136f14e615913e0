"""The orders of a chaos run and the purchase path that commits and publishes them.

The purchase path does what the platform does: commit the order row, then call
`publish_fulfillment`. While PostgreSQL is down the commit is retried (the platform's own
retry); while Redis is down the publish fails and the order is left to the reconciler.

The orders are of all four networks (MIX: half AT-iShare, half the aggregator's MTN, Telecel
and AT-BigTime), each of a size its network sells (SIZES, from the shipped catalogue
fulfillment.domain.package.DEFAULT_CATALOGUE), on a number of its network's prefixes, but for
a few ported ones (PORTED_RATE: another network's prefix, which is logged, never refused).
About 2 % of the numbers end in the simulators' invalid-phone suffix (either vendor rejects
them: dead letters), and a few are not Ghanaian mobile numbers at all (refused at publish,
committed anyway, dead-lettered by the worker once the reconciler enqueues them).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from chaos.vendors import vendor_of
from db.store import Store
from fulfillment.dev.simulator.faults import VENDOR_REJECTS_SUFFIX
from fulfillment.domain.errors import InvalidOrder, StoreError
from producers.publish import publish_fulfillment

NOT_MOBILE = ("12345", "+4915112345678", "0302123456", "not-a-number")
VENDOR_REJECTS_RATE = 0.02
NOT_MOBILE_RATE = 0.005
COMMIT_PATIENCE_S = 60.0
PORTED_RATE = 0.03

#: each network's share of the orders
MIX: Final[Mapping[str, float]] = {"at-ishare": 0.5, "mtn": 0.25, "telecel": 0.125,
                                   "at-bigtime": 0.125}  # fmt: skip
#: per network: sizes it sells as size_gb, and package names of sizes it sells (the catalogue)
SIZES: Final[Mapping[str, tuple[Sequence[float], Sequence[str]]]] = {
    "at-ishare": ([1, 2, 5, 10, 0.5], ["AT iShare 2GB", "500MB", "1.5GB"]),
    "mtn": ([1, 2, 5, 10, 0.5], ["MTN 5GB", "500MB", "1.5GB"]),
    "telecel": ([1, 1.5, 2, 5, 0.5], ["Telecel 1.5GB", "500MB", "10GB"]),
    "at-bigtime": ([15, 20, 30, 50], ["BigTime 20GB", "40GB"]),
}
#: the leading digits of each network's numbers (DESIGN.md's prefixes, as far as the number
#: plan the producer validates against allows: of MTN's 025 only 0256 and 0257 are issued, of
#: its 059 not 0590; a number outside the plan is refused at publish)
PREFIXES: Final[Mapping[str, Sequence[str]]] = {
    "at-ishare": ("026", "027", "056", "057"),  # AirtelTigo ranges
    "at-bigtime": ("026", "027", "056", "057"),
    "mtn": ("024", "0256", "0257", "053", "054", "055", "0591", "0595", "0599"),
    "telecel": ("020", "050"),
}


@dataclass(frozen=True, slots=True)
class OrderSpec:
    order_id: str
    phone: str
    size_gb: float | None
    package_name: str | None
    #: normal | vendor_rejects | not_mobile
    kind: str
    network: str = "at-ishare"

    @property
    def vendor(self) -> str:
        """The vendor connection its network routes to (chaos.vendors)."""
        return vendor_of(self.network)


def _mobile(rng: random.Random, network: str, *, rejected: bool) -> str:
    ported = rng.random() < PORTED_RATE
    prefix = rng.choice(PREFIXES[rng.choice(list(PREFIXES))] if ported else PREFIXES[network])
    width = 10 - len(prefix) - 4
    tail = f"{rng.randrange(0, 10**width):0{width}d}"
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


def make_orders(count: int, rng: random.Random, mix: Mapping[str, float] = MIX) -> list[OrderSpec]:
    """`count` orders, their networks drawn from `mix`."""
    networks, weights = list(mix), list(mix.values())
    specs = []
    for i in range(count):
        network = rng.choices(networks, weights)[0]
        roll = rng.random()
        if roll < NOT_MOBILE_RATE:
            kind, phone = "not_mobile", NOT_MOBILE[i % len(NOT_MOBILE)]
        elif roll < NOT_MOBILE_RATE + VENDOR_REJECTS_RATE:
            kind, phone = "vendor_rejects", _mobile(rng, network, rejected=True)
        else:
            kind, phone = "normal", _mobile(rng, network, rejected=False)
        sizes, packages = SIZES[network]
        size: float | None = rng.choice([*sizes, None])
        package = None if size is not None else rng.choice(packages)
        specs.append(OrderSpec(str(uuid.UUID(int=rng.getrandbits(128), version=4)), phone, size,
                               package, kind, network))  # fmt: skip
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
                    network=spec.network,
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
                network=spec.network,
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
