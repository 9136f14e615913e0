"""The baseline of bench/throughput.py: a Dramatiq actor that does nothing but count."""

from __future__ import annotations

import os

import dramatiq
import redis

from fulfillment.bootstrap import build_broker

_URL = os.environ["REDIS_URL"]
_NS = os.environ["REDIS_NAMESPACE"]
dramatiq.set_broker(build_broker(_URL, _NS))
_counter = redis.Redis.from_url(_URL)


@dramatiq.actor(queue_name="bench-noop", max_retries=0)
def noop(order_id: str) -> None:
    _counter.incr(f"{_NS}:bench-done")
