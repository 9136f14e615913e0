"""The baselines of the benchmarks: Dramatiq actors that do nothing (or only wait) but count.

`noop` (queue bench-noop) is the bare-Dramatiq baseline of bench/pipeline.py, throughput.py
and backlog.py; `nap` (queue bench-nap) sleeps as long as the vendor's latency, the
Dramatiq-only baseline of bench/concurrency.py.
"""

from __future__ import annotations

import os
import time

import dramatiq
import redis

from fulfillment.messaging.publish import build_broker

_URL = os.environ["REDIS_URL"]
_NS = os.environ["REDIS_NAMESPACE"]
dramatiq.set_broker(build_broker(_URL, _NS))
_counter = redis.Redis.from_url(_URL)


@dramatiq.actor(queue_name="bench-noop", max_retries=0)
def noop(order_id: str) -> None:
    _counter.incr(f"{_NS}:bench-done")


@dramatiq.actor(queue_name="bench-nap", max_retries=0)
def nap(milliseconds: str) -> None:
    time.sleep(float(milliseconds) / 1000)
    _counter.incr(f"{_NS}:bench-done")
