"""A circuit breaker around the vendor, shared by every worker of the fleet through Redis.

Closed: calls go through; each outcome is counted in per-second buckets. When the last
window's calls show the vendor down (every call failed for vendor-wide reasons, timeouts,
connection errors, 5xx, 401, or most of enough calls did: the rule is the _RECORD script),
the circuit opens: workers do not call the vendor, orders wait (delayed, no attempt spent)
until it may close. After the open period one worker at a time is let through as a half-open
probe: success closes the circuit, failure opens it again for longer. Redis errors fail open
(calls go through): the breaker protects the vendor and attempts, it must never stop the fleet.

One clock: every deadline (the open circuit's, a pause's) and the window's buckets are read
and written by Lua scripts against Redis's own clock (TIME), so hosts whose clocks disagree
see the same moments. Each of allow(), record() and trip() is one script, one round trip.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import RedisError

from fulfillment.domain.constants import vendor_keys
from fulfillment.telemetry.logs import get_logger

log = get_logger("fulfillment.breaker")

#: open_periods() stops doubling here, whatever the ratio of max_open_s to open_s
_MAX_PERIODS = 32


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    #: seconds of recent vendor calls, across the fleet, that the rule looks at
    window_s: int = 60
    #: the ratio rule needs at least this many calls in the window
    min_calls: int = 20
    #: open when at least this share of the window's calls failed for vendor-wide reasons
    failure_ratio: float = 0.5
    #: ...or when at least this many failed and none succeeded, however few calls there were
    quiet_failures: int = 2
    #: first open period; each failed half-open probe doubles it up to max_open_s
    open_s: float = 30.0
    max_open_s: float = 300.0

    def open_for(self, consecutive_openings: int) -> float:
        """How long the n-th opening in a row (1-based) lasts."""
        n = max(consecutive_openings, 1)
        return float(min(self.open_s * 2 ** (n - 1), self.max_open_s))

    def open_periods(self) -> tuple[float, ...]:
        """open_for(1), open_for(2)... up to the first that reaches max_open_s (at most 32);
        the last one lasts for every later opening."""
        periods = [self.open_for(1)]
        while periods[-1] < self.max_open_s and len(periods) < _MAX_PERIODS:
            periods.append(self.open_for(len(periods) + 1))
        return tuple(periods)


# ARGV[1] of every script: "now" in seconds, or "" for Redis's clock (a test injects one).
_NOW = """
local function now_from(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fmt(x) return string.format('%.6f', x) end
"""

# KEYS: state, probe, bucket prefix. ARGV: now, success(0/1), probe(0/1), window, min_calls,
# ratio, quiet_failures, then the policy's open periods (open_periods()).
# Returns {state, until, opened(0/1)}.
_RECORD = (
    _NOW
    + """
local state_key, probe_key, prefix = KEYS[1], KEYS[2], KEYS[3]
local now = now_from(ARGV[1])
local success = ARGV[2] == '1'
local probe = ARGV[3] == '1'
local window, min_calls = tonumber(ARGV[4]), tonumber(ARGV[5])
local ratio, quiet = tonumber(ARGV[6]), tonumber(ARGV[7])
local periods = {}
for i = 8, #ARGV do periods[#periods + 1] = tonumber(ARGV[i]) end
local function open_for(n) return periods[math.min(n, #periods)] end
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
  local until_ts = fmt(now + open_for(openings))
  redis.call('HSET', state_key, 'state', 'open', 'until', until_ts, 'openings', openings)
  return {'open', until_ts, '0'}
end
if success then
  -- a success cannot show the vendor down: the window is read after failures only
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
-- the rule: every call of the window failed (at least `quiet` of them), or most of enough
if (failures >= quiet and failures == calls)
    or (calls >= min_calls and failures >= ratio * calls) then
  local until_ts = fmt(now + open_for(1))
  redis.call('HSET', state_key, 'state', 'open', 'until', until_ts, 'openings', 1,
             'opened_at', fmt(now))
  return {'open', until_ts, '1'}
end
return {'closed', '0', '0'}
"""
)

# KEYS: pause, state, probe. ARGV: now, probe ttl (ms), retry_in_s while another probes.
# Returns {allowed(0/1), probe(0/1), retry_in_s}.
_ALLOW = (
    _NOW
    + """
local now = now_from(ARGV[1])
local paused = tonumber(redis.call('GET', KEYS[1]) or '')
if paused and paused > now then  -- a pause (429 Retry-After, 402) simply ends: no probe
  return {0, 0, fmt(paused - now)}
end
local circuit = redis.call('HMGET', KEYS[2], 'state', 'until')
if circuit[1] ~= 'open' then return {1, 0, '0'} end
local until_ts = tonumber(circuit[2] or '0')
if until_ts > now then return {0, 0, fmt(until_ts - now)} end
-- half-open: one probe at a time across the fleet
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then return {1, 1, '0'} end
return {0, 0, ARGV[3]}
"""
)

# KEYS: pause. ARGV: now, seconds. A pause only ever grows. Returns {fresh(0/1), until}:
# fresh when no pause was running before this one.
_TRIP = (
    _NOW
    + """
local now = now_from(ARGV[1])
local seconds = tonumber(ARGV[2])
local until_ts = now + seconds
local current = tonumber(redis.call('GET', KEYS[1]) or '')
if current and current >= until_ts then return {0, fmt(current)} end
redis.call('SET', KEYS[1], fmt(until_ts), 'PX', math.ceil(seconds * 1000) + 1000)
if current and current > now then return {0, fmt(until_ts)} end
return {1, fmt(until_ts)}
"""
)


@dataclass(frozen=True, slots=True)
class BreakerPermit:
    """allow()'s answer; satisfies fulfillment.services.ports.Permit (the port)."""

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
        clock: Callable[[], float] | None = None,
        probe_ttl_s: float = 5.0,
        vendor: str = "at-ishare",
    ) -> None:
        """`clock` is for tests only: its value stands in for Redis's clock as "now" in
        every script. In production leave it None: deadlines are Redis TIME. Each vendor has
        a breaker of its own (its keys: constants.vendor_keys)."""
        self.client = client
        self.vendor = vendor
        prefix = vendor_keys(namespace, vendor)
        self.policy = policy
        self.on_open = on_open
        self.clock = clock
        self.probe_ttl_ms = int(probe_ttl_s * 1000)
        self.state_key = f"{prefix}:breaker:state"
        self.probe_key = f"{prefix}:breaker:probe"
        self.pause_key = f"{prefix}:breaker:pause"
        self.bucket_prefix = f"{prefix}:breaker:bucket:"
        self._record = client.register_script(_RECORD)
        self._allow = client.register_script(_ALLOW)
        self._trip = client.register_script(_TRIP)

    def _now_arg(self) -> str:
        return "" if self.clock is None else repr(self.clock())

    def state(self) -> dict[str, Any]:
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.time()
            pipe.get(self.pause_key)
            pipe.hgetall(self.state_key)
            (seconds, micros), paused, raw = pipe.execute()
        except RedisError:
            return {"state": "unknown"}
        now = seconds + micros / 1e6 if self.clock is None else self.clock()
        data = {_text(k): _text(v) for k, v in raw.items()}
        if paused is not None and float(_text(paused)) > now:
            return {
                "state": "open",
                "until": float(_text(paused)),
                "openings": 0,
                "reason": "paused",
            }
        state = data.get("state", "closed")
        until = float(data.get("until", "0") or 0)
        if state == "open" and now >= until:
            state = "half_open"
        return {"state": state, "until": until, "openings": int(data.get("openings", 0) or 0)}

    def allow(self) -> BreakerPermit:
        try:
            allowed, probe, retry_in_s = self._allow(
                keys=[self.pause_key, self.state_key, self.probe_key],
                args=[self._now_arg(), self.probe_ttl_ms, min(self.policy.open_s, 5.0)],
            )
        except RedisError as exc:
            log.warning("breaker.redis_unavailable", vendor=self.vendor, error=type(exc).__name__)
            return BreakerPermit(True)
        return BreakerPermit(bool(allowed), probe=bool(probe), retry_in_s=float(retry_in_s))

    def record(self, *, success: bool, probe: bool = False) -> None:
        p = self.policy
        try:
            state, until, opened = self._record(
                keys=[self.state_key, self.probe_key, self.bucket_prefix],
                args=[
                    self._now_arg(),
                    int(success),
                    int(probe),
                    p.window_s,
                    p.min_calls,
                    p.failure_ratio,
                    p.quiet_failures,
                    *p.open_periods(),
                ],
            )
        except RedisError as exc:
            log.warning("breaker.redis_unavailable", vendor=self.vendor, error=type(exc).__name__)
            return
        state = _text(state)
        if probe:
            log.warning("breaker.probe_done", vendor=self.vendor, success=success, state=state)
        if int(opened):
            until_ts = float(until)
            log.error("breaker.opened", vendor=self.vendor, until=until_ts, window_s=p.window_s)
            if self.on_open is not None:
                self.on_open(until_ts, "vendor_failing")

    def is_open(self) -> bool:
        return self.state()["state"] in ("open", "half_open")

    def trip(self, seconds: float, reason: str, *, alert: bool = True) -> None:
        """Pause every vendor call for `seconds` (a 429's Retry-After, INSUFFICIENT_BALANCE).

        A pause is not an open circuit: it ends by itself, with no probe, and never lasts
        longer than BREAKER_MAX_OPEN_S whatever the vendor asked for. A pause already
        running is only ever extended; admins are told when a pause starts."""
        if math.isnan(seconds) or seconds <= 0:
            return
        try:
            fresh, until = self._trip(
                keys=[self.pause_key],
                args=[self._now_arg(), min(seconds, self.policy.max_open_s)],
            )
        except RedisError as exc:
            log.warning("breaker.redis_unavailable", vendor=self.vendor, error=type(exc).__name__)
            return
        if int(fresh):
            until_ts = float(until)
            log.error("breaker.paused", vendor=self.vendor, reason=reason, until=until_ts)
            if alert and self.on_open is not None:
                self.on_open(until_ts, reason)

    def release_probe(self) -> None:
        """The probe's holder made no vendor call after all: let another worker probe."""
        try:
            self.client.delete(self.probe_key)
        except RedisError as exc:
            log.warning("breaker.redis_unavailable", vendor=self.vendor, error=type(exc).__name__)

    def reset(self) -> None:
        self.client.delete(self.state_key, self.probe_key, self.pause_key)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
