"""A circuit breaker around the vendor, shared by every worker of the fleet through Redis.

Closed: calls go through; each outcome is counted in per-second buckets. When most calls of
the last window failed for vendor-wide reasons (timeouts, connection errors, 5xx, 401), the
circuit opens: workers do not call the vendor, orders wait (delayed, no attempt spent) until
it may close. After the open period one worker at a time is let through as a half-open probe:
success closes the circuit, failure opens it again for longer. Redis errors fail open (calls
go through): the breaker protects the vendor and attempts, it must never stop the fleet.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import RedisError

from fulfillment.domain.breaker import BreakerPolicy
from fulfillment.logs import get_logger

log = get_logger("fulfillment.breaker")

# KEYS: state, probe, bucket prefix. ARGV: now, success(0/1), probe(0/1), window, min_calls,
# ratio, open_s, max_open_s. Returns {state, until, opened(0/1)}.
_RECORD = """
local state_key, probe_key, prefix = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[1])
local success = ARGV[2] == '1'
local probe = ARGV[3] == '1'
local window, min_calls = tonumber(ARGV[4]), tonumber(ARGV[5])
local ratio, open_s, max_open_s = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local second = math.floor(now)
local bucket = prefix .. second
redis.call('HINCRBY', bucket, 'calls', 1)
if not success then redis.call('HINCRBY', bucket, 'failures', 1) end
redis.call('EXPIRE', bucket, window + 5)
local state = redis.call('HGET', state_key, 'state') or 'closed'
local openings = tonumber(redis.call('HGET', state_key, 'openings') or '0')
if probe then
  redis.call('DEL', probe_key)
  if success then
    redis.call('DEL', state_key)
    return {'closed', '0', '0'}
  end
  openings = openings + 1
  local until_ts = now + math.min(open_s * 2 ^ (openings - 1), max_open_s)
  redis.call('HSET', state_key, 'state', 'open', 'until', tostring(until_ts),
             'openings', openings)
  return {'open', tostring(until_ts), '0'}
end
if success then
  -- a success cannot raise the failure ratio: the window is read after failures only
  return {state, '0', '0'}
end
if state ~= 'closed' then
  return {state, redis.call('HGET', state_key, 'until') or '0', '0'}
end
local calls, failures = 0, 0
for s = second - window + 1, second do
  local c = redis.call('HMGET', prefix .. s, 'calls', 'failures')
  calls = calls + tonumber(c[1] or '0')
  failures = failures + tonumber(c[2] or '0')
end
if calls >= min_calls and failures >= ratio * calls then
  local until_ts = now + open_s
  redis.call('HSET', state_key, 'state', 'open', 'until', tostring(until_ts), 'openings', 1,
             'opened_at', tostring(now))
  return {'open', tostring(until_ts), '1'}
end
return {'closed', '0', '0'}
"""


@dataclass(frozen=True, slots=True)
class Permit:
    allowed: bool
    #: this call is the half-open probe: its outcome closes or reopens the circuit
    probe: bool = False
    #: when denied: seconds to wait before trying again
    retry_in_s: float = 0.0


class VendorBreaker:
    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        policy: BreakerPolicy,
        *,
        on_open: Callable[[float, str], None] | None = None,
        clock: Callable[[], float] = time.time,
        probe_ttl_s: float = 5.0,
    ) -> None:
        self.client = client
        self.policy = policy
        self.on_open = on_open
        self.clock = clock
        self.probe_ttl_ms = int(probe_ttl_s * 1000)
        self.state_key = f"{namespace}:fulfillment:breaker:state"
        self.probe_key = f"{namespace}:fulfillment:breaker:probe"
        self.pause_key = f"{namespace}:fulfillment:breaker:pause"
        self.bucket_prefix = f"{namespace}:fulfillment:breaker:bucket:"
        self._record = client.register_script(_RECORD)

    def state(self) -> dict[str, Any]:
        try:
            raw = self.client.hgetall(self.state_key)
        except RedisError:
            return {"state": "unknown"}
        data = {_text(k): _text(v) for k, v in raw.items()}
        try:
            paused = self.client.get(self.pause_key)
        except RedisError:
            paused = None
        if paused is not None and float(_text(paused)) > self.clock():
            return {
                "state": "open",
                "until": float(_text(paused)),
                "openings": 0,
                "reason": "paused",
            }
        state = data.get("state", "closed")
        until = float(data.get("until", "0") or 0)
        if state == "open" and self.clock() >= until:
            state = "half_open"
        return {"state": state, "until": until, "openings": int(data.get("openings", 0) or 0)}

    def allow(self) -> Permit:
        try:
            # the pause and the circuit's state in one round trip
            pipe = self.client.pipeline(transaction=False)
            pipe.get(self.pause_key)
            pipe.hmget(self.state_key, "state", "until")
            paused, raw = pipe.execute()
            if paused is not None:
                wait = float(_text(paused)) - self.clock()
                if wait > 0:  # a pause (429 Retry-After, 402) simply ends: no probe needed
                    return Permit(False, retry_in_s=wait)
            state = _text(raw[0] or b"closed")
            if state != "open":
                return Permit(True)
            wait = float(_text(raw[1] or b"0")) - self.clock()
            if wait > 0:
                return Permit(False, retry_in_s=wait)
            # Half-open: one probe at a time across the fleet.
            if self.client.set(self.probe_key, "1", nx=True, px=self.probe_ttl_ms):
                return Permit(True, probe=True)
            return Permit(False, retry_in_s=min(self.policy.open_s, 5.0))
        except RedisError as exc:
            log.warning("breaker.redis_unavailable", error=type(exc).__name__)
            return Permit(True)

    def record(self, *, success: bool, probe: bool = False) -> None:
        p = self.policy
        try:
            state, until, opened = self._record(
                keys=[self.state_key, self.probe_key, self.bucket_prefix],
                args=[
                    self.clock(),
                    int(success),
                    int(probe),
                    p.window_s,
                    p.min_calls,
                    p.failure_ratio,
                    p.open_s,
                    p.max_open_s,
                ],
            )
        except RedisError as exc:
            log.warning("breaker.redis_unavailable", error=type(exc).__name__)
            return
        state = state.decode() if isinstance(state, bytes) else state
        if probe:
            log.warning("breaker.probe_done", success=success, state=state)
        if int(opened):
            until_ts = float(until)
            log.error("breaker.opened", until=until_ts, window_s=p.window_s)
            if self.on_open is not None:
                self.on_open(until_ts, "vendor_failing")

    def is_open(self) -> bool:
        return self.state()["state"] in ("open", "half_open")

    def trip(self, seconds: float, reason: str, *, alert: bool = True) -> None:
        """Pause every vendor call for `seconds` (a 429's Retry-After, INSUFFICIENT_BALANCE).

        A pause is not an open circuit: it ends by itself, with no probe, and never lasts
        longer than BREAKER_MAX_OPEN_S whatever the vendor asked for."""
        if math.isnan(seconds) or seconds <= 0:
            return
        now = self.clock()
        until = now + min(seconds, self.policy.max_open_s)
        try:
            current = self.client.get(self.pause_key)
            if current is not None and float(_text(current)) >= until:
                return
            ttl_ms = int((until - now) * 1000) + 1000
            fresh = self.client.set(self.pause_key, repr(until), px=ttl_ms, get=True) is None
            if fresh:
                log.error("breaker.paused", reason=reason, until=until)
                if alert and self.on_open is not None:
                    self.on_open(until, reason)
        except RedisError as exc:
            log.warning("breaker.redis_unavailable", error=type(exc).__name__)

    def release_probe(self) -> None:
        """The probe's holder made no vendor call after all: let another worker probe."""
        try:
            self.client.delete(self.probe_key)
        except RedisError as exc:
            log.warning("breaker.redis_unavailable", error=type(exc).__name__)

    def reset(self) -> None:
        self.client.delete(self.state_key, self.probe_key, self.pause_key)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
