"""The aggregator's signed callbacks (DESIGN.md "Other networks"), sent from a thread of their own.

Each accepted order's final state (delivered, failed, refunded) is POSTed to one URL with the
body of the status answer and the headers of fulfillment.vendors.aggregator_signing (none
without a secret: the receiver then refuses them). The thread also settles the ledger on
every tick, so a pending order's callback goes out when it is due, not at the next request.
One attempt per callback; `snapshot` counts the sent and the failed ones.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit

from fulfillment.dev.simulator.handler import JsonBody
from fulfillment.vendors.aggregator_signing import signed_headers

TICK_S: Final = 0.05
SEND_TIMEOUT_S: Final = 2.0


class Callbacks:
    """The callbacks of one vendor to `url`, signed with `secret` (None: unsigned)."""

    def __init__(self, url: str, secret: str | None, *, stopping: threading.Event) -> None:
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"callback URL must be http(s): {url!r}")
        self.url = url
        self._secret = secret
        self._stopping = stopping
        self._queue: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._sent = 0
        self._failed = 0
        self._thread: threading.Thread | None = None

    def notify(self, body: JsonBody) -> None:
        """Queue a callback (quick: the ledger calls it under its lock)."""
        self._queue.put(json.dumps(body).encode())

    def start(self, settle: Callable[[], None]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, args=(settle,), name="aggregator-callbacks", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Wait for the thread (the simulator's stopping event is set already)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def snapshot(self) -> JsonBody:
        """GET /aggregator/_sim/callbacks: {"url", "sent", "failed", "queued"}."""
        with self._lock:
            return {
                "url": self.url,
                "sent": self._sent,
                "failed": self._failed,
                "queued": self._queue.qsize(),
            }

    def reset(self) -> None:
        """Forget the queued callbacks and the counters."""
        with self._lock:
            while not self._queue.empty():
                self._queue.get_nowait()
            self._sent = self._failed = 0

    def _run(self, settle: Callable[[], None]) -> None:
        while not self._stopping.is_set():
            settle()
            while not self._stopping.is_set():
                try:
                    body = self._queue.get_nowait()
                except queue.Empty:
                    break
                ok = self._post(body)
                with self._lock:
                    if ok:
                        self._sent += 1
                    else:
                        self._failed += 1
            self._stopping.wait(TICK_S)

    def _post(self, body: bytes) -> bool:
        headers = {"Content-Type": "application/json"}
        if self._secret is not None:
            headers |= signed_headers(self._secret, body, time.time())
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")  # noqa: S310 - http(s) checked in __init__
        try:
            with urllib.request.urlopen(request, timeout=SEND_TIMEOUT_S) as response:  # noqa: S310 - http(s) checked in __init__
                return 200 <= int(response.status) < 300
        except (urllib.error.URLError, OSError, ValueError):
            return False
