"""The shared circuit breaker on a real Redis: with a fake clock standing in for Redis's, and,
for one clock across hosts, with none (worker processes whose clocks are an hour off)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fulfillment.fleet.breaker import BreakerPolicy, VendorBreaker

pytestmark = pytest.mark.integration
POLICY = BreakerPolicy(window_s=10, min_calls=5, failure_ratio=0.5, open_s=4, max_open_s=10)


def _fresh_breaker(
    redis_url: str, namespace: str, policy: BreakerPolicy, clock: Clock
) -> tuple[VendorBreaker, list[float]]:
    """A breaker in a key space of its own, and the list of the deadlines it opened until."""
    opened: list[float] = []
    b = VendorBreaker(
        redis.Redis.from_url(redis_url),
        f"{namespace}:{uuid.uuid4().hex[:8]}",
        policy,
        on_open=lambda until, _reason: opened.append(until),
        clock=clock,
    )
    return b, opened


def should_open(policy: BreakerPolicy, calls: int, failures: int) -> bool:
    """The rule the script must follow, written the plain way: every call of the window failed
    (at any volume: a quiet hour), or most calls failed once there are enough to tell."""
    if failures >= policy.quiet_failures and failures == calls:
        return True
    return calls >= policy.min_calls and failures >= policy.failure_ratio * calls


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def breaker(redis_url: str, redis_namespace: str) -> tuple[VendorBreaker, Clock, list[float]]:
    clock = Clock()
    opened: list[float] = []
    b = VendorBreaker(
        redis.Redis.from_url(redis_url),
        redis_namespace,
        POLICY,
        on_open=lambda until, _reason: opened.append(until),
        clock=clock,
    )
    return b, clock, opened


def test_opens_once_when_most_calls_fail_then_probes_and_closes(breaker: tuple) -> None:
    b, clock, opened = breaker
    for _ in range(3):
        b.record(success=True)
    for _ in range(3):
        assert b.allow().allowed
        b.record(success=False)
    assert opened == [clock.now + 4]  # 3 of 6 failed: open, admins told once
    b.record(success=False)  # late answers while open change nothing
    assert len(opened) == 1
    denied = b.allow()
    assert not denied.allowed and denied.retry_in_s == pytest.approx(4)
    clock.now += 4.1
    probe = b.allow()
    assert probe.allowed and probe.probe
    assert not b.allow().allowed  # one probe at a time across the fleet
    b.record(success=False, probe=True)  # still down: open again, for longer
    assert b.state()["state"] == "open"
    assert b.allow().retry_in_s == pytest.approx(8)
    clock.now += 8.1
    probe = b.allow()
    assert probe.probe
    b.record(success=True, probe=True)
    assert b.state()["state"] == "closed"
    assert b.allow() == b.allow()  # closed: everyone through
    assert b.allow().allowed


def test_few_calls_with_an_answer_among_them_or_old_failures_do_not_open(
    breaker: tuple,
) -> None:
    b, clock, opened = breaker
    b.record(success=False)  # one failure alone is not an outage
    assert opened == []
    b.record(success=True)  # the vendor answered
    for _ in range(2):
        b.record(success=False)  # 3 of 4 failed, but below min_calls
    assert opened == []
    clock.now += 11  # those fell out of the window
    for _ in range(4):
        b.record(success=True)
    b.record(success=False)
    assert opened == []
    clock.now += 11
    b.record(success=False)
    clock.now += 11  # one failure per window: never two at once
    b.record(success=False)
    assert opened == []


def test_a_quiet_vendor_wide_outage_opens_the_circuit(breaker: tuple) -> None:
    """Finding 7: in a quiet hour, one order's POST times out and its status lookup fails
    right after: two vendor-wide failures, no call answered, far below min_calls."""
    b, clock, opened = breaker
    b.record(success=False)
    clock.now += 0.5
    b.record(success=False)
    assert opened == [pytest.approx(clock.now + POLICY.open_for(1))]
    denied = b.allow()
    assert not denied.allowed and denied.retry_in_s == pytest.approx(POLICY.open_for(1))


def test_each_failed_probe_reopens_for_the_policys_next_period(breaker: tuple) -> None:
    b, clock, _opened = breaker
    for _ in range(2):
        b.record(success=False)
    for n in range(2, 6):
        clock.now += POLICY.open_for(n - 1) + 0.1
        assert b.allow().probe
        b.record(success=False, probe=True)
        assert b.allow().retry_in_s == pytest.approx(POLICY.open_for(n))


_policies = st.builds(
    BreakerPolicy,
    window_s=st.integers(1, 8),
    min_calls=st.integers(1, 8),
    failure_ratio=st.sampled_from([0.1, 0.25, 0.5, 2 / 3, 0.75, 1.0]),
    quiet_failures=st.integers(1, 5),
    open_s=st.just(4.0),
    max_open_s=st.just(10.0),
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    policy=_policies,
    calls=st.lists(
        st.tuples(st.booleans(), st.sampled_from([0.0, 0.001, 0.3, 0.999, 1.0, 2.5, 9.0])),
        max_size=40,
    ),
)
def test_the_script_opens_exactly_when_the_rule_says(
    redis_url: str, redis_namespace: str, policy: BreakerPolicy, calls: list[tuple[bool, float]]
) -> None:
    """The Lua script follows should_open above: after every recorded call,
    the circuit opened iff should_open holds for the calls in the window, and only on a
    failure; it opens for open_for(1)."""
    clock = Clock()
    b, opened = _fresh_breaker(redis_url, redis_namespace, policy, clock)
    seen: list[tuple[int, bool]] = []  # (second, success) of every call recorded
    for success, advance in calls:
        clock.now += advance
        second = math.floor(clock.now)
        seen.append((second, success))
        window = [ok for s, ok in seen if s > second - policy.window_s]
        expected = not success and should_open(policy, len(window), window.count(False))
        b.record(success=success)
        assert bool(opened) is expected, (len(window), window.count(False))
        if opened:
            assert opened == [pytest.approx(clock.now + policy.open_for(1), abs=1e-5)]
            opened.clear()
            b.reset()  # closed again, the window kept: the next failure is judged afresh
    b.client.close()


@pytest.mark.parametrize(
    ("calls", "failures", "opens"),
    [
        (2, 2, True),  # a quiet hour: a POST timed out, its status lookup failed
        (1, 1, False),  # one failure is not yet an outage
        (3, 2, False),  # the vendor answered one call: not down, and too few for the ratio
        (19, 19, True),  # every call failed, still below min_calls
        (20, 10, True),  # the ratio rule
        (20, 9, False),
        (40, 20, True),
        (0, 0, False),
    ],
)
def test_the_script_on_named_windows(
    redis_url: str, redis_namespace: str, calls: int, failures: int, opens: bool
) -> None:
    """Successes, then failures, within one second, through the real script."""
    policy = BreakerPolicy(min_calls=20, failure_ratio=0.5, quiet_failures=2)
    b, opened = _fresh_breaker(redis_url, redis_namespace, policy, Clock())
    for i in range(calls):
        b.record(success=i < calls - failures)
    assert bool(opened) is opens
    assert should_open(policy, calls, failures) is opens
    b.client.close()


def test_a_success_never_opens_the_circuit(breaker: tuple) -> None:
    """Only a failure can tip the window: a success that brings it up to min_calls while
    failures are already at the ratio leaves it closed; the next failure opens it."""
    b, _clock, opened = breaker
    b.record(success=True)
    for _ in range(3):
        b.record(success=False)
    b.record(success=True)  # 3 of 5 failed, but a success is no evidence of an outage
    assert opened == [] and b.allow().allowed
    b.record(success=False)
    assert len(opened) == 1 and not b.allow().allowed


def test_a_pause_and_the_circuit_are_read_together(breaker: tuple) -> None:
    b, clock, opened = breaker
    b.trip(2.0, "rate_limited", alert=False)
    denied = b.allow()
    assert not denied.allowed and denied.retry_in_s == pytest.approx(2)
    clock.now += 2.1
    assert b.allow().allowed  # a pause ends by itself: no probe
    assert opened == []


def test_redis_down_fails_open() -> None:
    b = VendorBreaker(redis.Redis(port=1, socket_connect_timeout=0.2, retry=None), "x", POLICY)
    assert b.allow().allowed
    b.record(success=False)  # logged, not raised


# -- one clock: hosts whose clocks disagree honour the same deadlines ----------------------

_HOST = """
import json, sys, time
_real = time.time
time.time = lambda: _real() + float(sys.argv[3])  # this host's clock is off
import redis
from fulfillment.fleet.breaker import BreakerPolicy
from fulfillment.fleet.breaker import VendorBreaker
b = VendorBreaker(redis.Redis.from_url(sys.argv[1]), sys.argv[2],
                  BreakerPolicy(**json.loads(sys.argv[4])))
for line in sys.stdin:
    command, _, arg = line.strip().partition(" ")
    if command == "trip":
        b.trip(float(arg), "rate_limited", alert=False)
    elif command == "fail":
        b.record(success=False)
    p = b.allow()
    print(json.dumps([p.allowed, p.probe, p.retry_in_s]), flush=True)
"""


class Host:
    """A worker process on another host, its clock `skew_s` off (time.time patched before
    anything is imported), using the breaker as bootstrap builds it: no clock given."""

    def __init__(self, redis_url: str, namespace: str, policy: dict, skew_s: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOST, redis_url, namespace, str(skew_s), json.dumps(policy)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parents[2],
        )

    def send(self, command: str) -> tuple[bool, bool, float]:
        """Runs the command, then answers allow() as (allowed, probe, retry_in_s)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        while line and not line.startswith("["):  # a log line, should logging print here
            line = self.proc.stdout.readline()
        assert line, "the host process died"
        allowed, probe, retry_in_s = json.loads(line)
        return allowed, probe, retry_in_s

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


@pytest.fixture
def hosts(redis_url: str, redis_namespace: str) -> Iterator[tuple[Host, Host]]:
    policy = {"window_s": 10, "min_calls": 5, "open_s": 1.0, "max_open_s": 2.0}
    ahead = Host(redis_url, redis_namespace, policy, +3600)
    behind = Host(redis_url, redis_namespace, policy, -3600)
    yield ahead, behind
    ahead.close()
    behind.close()


def test_deadlines_are_kept_by_one_clock_whatever_each_hosts_clock_says(
    hosts: tuple[Host, Host],
) -> None:
    """Finding 9: a pause or an open circuit set on one host ends at the same moment for
    every host, one an hour ahead and one an hour behind: Redis's clock decides."""
    ahead, behind = hosts
    allowed, _, wait = ahead.send("trip 1.0")  # a 429 with Retry-After: 1
    started = time.monotonic()
    assert not allowed and 0 < wait <= 1.0
    allowed, _, wait = behind.send("allow")
    assert not allowed and 0 < wait <= 1.0, "the host an hour behind waits about as long"
    time.sleep(max(1.1 - (time.monotonic() - started), 0))
    assert behind.send("allow")[0], "the pause ended for the host an hour behind too"
    assert ahead.send("allow")[0]

    for _ in range(2):  # a quiet outage seen by the host an hour behind: open for 1 s
        allowed, _, wait = behind.send("fail")
    started = time.monotonic()
    assert not allowed and 0.5 < wait <= 1.0
    allowed, _, wait = ahead.send("allow")
    assert not allowed and 0.5 < wait <= 1.0, "the host an hour ahead sees it open as long"
    time.sleep(max(1.1 - (time.monotonic() - started), 0))
    allowed, probe, _ = ahead.send("allow")
    assert allowed and probe, "after the open period one host probes"
    allowed, probe, _ = behind.send("allow")
    assert not allowed and not probe, "and only one"
