"""A vendor's share of a process's threads: a slow vendor's next caller is refused at once,
a fast vendor's waits briefly for the place a call is about to free."""

from __future__ import annotations

import threading
import time

from fulfillment.fleet.bulkhead import MAX_WAIT_S, Bulkhead, thread_limit


def test_the_share_is_a_floor_of_the_threads_and_at_least_one() -> None:
    assert (thread_limit(0.75, 8), thread_limit(0.25, 8), thread_limit(0.1, 4)) == (6, 2, 1)


def test_a_slow_vendors_next_caller_is_refused_at_once() -> None:
    slow = Bulkhead("aggregator", limit=1)
    assert slow.enter()
    slow.leave(10.0)  # its calls take 10 s
    assert slow.enter()
    started = time.monotonic()
    assert not slow.enter()
    assert time.monotonic() - started < 0.05
    assert 7.5 <= slow.busy_delay_s() <= 15


def test_a_fast_vendors_next_caller_waits_for_the_place_a_call_frees() -> None:
    fast = Bulkhead("at-ishare", limit=1)
    assert fast.enter()
    fast.leave(0.2)
    assert fast.enter()
    threading.Timer(0.1, fast.leave, args=(0.2,)).start()
    started = time.monotonic()
    assert fast.enter()  # waited about 0.1 s, not refused
    assert 0.05 <= time.monotonic() - started < 0.4
    started = time.monotonic()
    assert not fast.enter()  # nobody leaves: refused after about two calls' time
    assert 0.35 <= time.monotonic() - started <= MAX_WAIT_S + 0.1
    assert fast.in_use == 1
