"""What goes wrong, and how often: the simulator's fault model, free of network I/O.

`FaultConfig` holds the rates and timings, `roll` picks the fault of one purchase
request, `ScriptBook` replaces the dice with a fixed list per reference so that tests
can say exactly what the vendor answers next, and `Chaos` is the live, thread-safe
combination of them (plus outages) that one simulated vendor consults. Both vendors (AT-iShare
and the aggregator) use the same model, each with a config, dice and scripts of its own.
The parties that are not vendors (the SMS provider, the platform receiver) have a smaller
model of the same shape: `PartyFaults` (a subclass each) and `PartyChaos`.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Any, Final, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from fulfillment.domain.constants import NETWORK_AT_ISHARE

PHONE_PATTERN: Final = re.compile(r"\+233\d{9}")
MAX_GB: Final = 100
#: The invalid-phone suffix the demo and the chaos run configure (SIM_INVALID_PHONE_SUFFIX,
#: FaultConfig.invalid_phone_suffix): the simulator answers INVALID_PHONE for numbers ending so.
VENDOR_REJECTS_SUFFIX: Final = "0000"

Rate = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]


class FaultKind(StrEnum):
    """One way a request can go wrong; the values are the names scripts use.

    `roll` picks the ones `FaultConfig.rates` lists; INVALID_PHONE, GARBAGE and
    STALL_AFTER_DELIVERY exist only in scripts. The PENDING kinds accept the purchase as pending
    (AT-iShare "pending", the aggregator "queued" then "processing") for pending_seconds, then
    deliver it, or fail it or refund it (nothing delivered, the price back in the account).
    """

    RATE_LIMIT = "rate_limit"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    ERROR = "error"
    TIMEOUT = "timeout"
    DROP_AFTER_DELIVERY = "drop_after_delivery"
    PENDING = "pending"
    PENDING_THEN_FAILED = "pending_then_failed"
    PENDING_THEN_REFUNDED = "pending_then_refunded"
    INVALID_PHONE = "invalid_phone"
    GARBAGE = "garbage"
    #: delivered, then the answer held for timeout_seconds: the client gives up (or dies) first
    STALL_AFTER_DELIVERY = "stall_after_delivery"


OK: Final = "ok"  # a scripted "answer normally"

PURCHASE_SCRIPT_KINDS: Final = frozenset(FaultKind)
STATUS_SCRIPT_KINDS: Final = frozenset({FaultKind.ERROR, FaultKind.TIMEOUT, FaultKind.GARBAGE})

# Environment variables whose name is not SIM_<FIELD>: the flag is singular, repeatable.
_ENV_NAMES: Final = {"invalid_phones": "invalid_phone"}
#: the prefix of the AT-iShare side's fault variables (SIM_ERROR_RATE, ...)
ENV_PREFIX: Final = "SIM_"
#: the prefix of the aggregator side's (SIM_AGGREGATOR_ERROR_RATE, ...)
AGGREGATOR_ENV_PREFIX: Final = "SIM_AGGREGATOR_"


class FaultConfig(BaseModel):
    """Rates (0..1) of each random fault, latency, and the vendor account's opening balance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    error_rate: Rate = 0.0
    timeout_rate: Rate = 0.0
    rate_limit_rate: Rate = 0.0
    insufficient_balance_rate: Rate = 0.0
    drop_after_delivery_rate: Rate = 0.0
    pending_rate: Rate = 0.0
    pending_failed_rate: Rate = 0.0
    pending_refunded_rate: Rate = 0.0
    latency_ms: NonNegative = 0.0
    latency_jitter_ms: NonNegative = 0.0
    timeout_seconds: NonNegative = 30.0
    #: how long clients wait for an answer: one sent later is an unknown outcome to them
    #: (0: not assumed; a client that hung up is noticed either way)
    client_timeout_seconds: NonNegative = 0.0
    pending_seconds: NonNegative = 2.0
    invalid_phones: frozenset[str] = frozenset()
    invalid_phone_suffix: str | None = None
    balance: float = 100_000.0

    @classmethod
    def env_name(cls, field: str, prefix: str = ENV_PREFIX) -> str:
        """The variable of `field`: SIM_ERROR_RATE, or SIM_AGGREGATOR_ERROR_RATE with the
        aggregator's prefix."""
        return prefix + _ENV_NAMES.get(field, field).upper()

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, prefix: str = ENV_PREFIX
    ) -> FaultConfig:
        """Read SIM_* variables (e.g. SIM_ERROR_RATE=0.1, SIM_INVALID_PHONE=+233200000000,...),
        or those of another prefix (AGGREGATOR_ENV_PREFIX: SIM_AGGREGATOR_ERROR_RATE, ...).

        Unset or empty variables keep the default; invalid values raise pydantic's
        ValidationError.
        """
        env = os.environ if environ is None else environ
        data: dict[str, Any] = {}
        for field in cls.model_fields:
            raw = env.get(cls.env_name(field, prefix), "").strip()
            if not raw:
                continue
            if field == "invalid_phones":
                data[field] = frozenset(p.strip() for p in raw.split(",") if p.strip())
            else:
                data[field] = raw
        return cls.model_validate(data)

    def updated(self, changes: Mapping[str, Any]) -> FaultConfig:
        """A copy with `changes` applied and validated (a partial config from /_sim/faults)."""
        return type(self).model_validate({**self.model_dump(), **changes})

    def rates(self) -> tuple[tuple[FaultKind, float], ...]:
        """The random faults in the order they are checked."""
        return (
            (FaultKind.RATE_LIMIT, self.rate_limit_rate),
            (FaultKind.INSUFFICIENT_BALANCE, self.insufficient_balance_rate),
            (FaultKind.ERROR, self.error_rate),
            (FaultKind.TIMEOUT, self.timeout_rate),
            (FaultKind.DROP_AFTER_DELIVERY, self.drop_after_delivery_rate),
            (FaultKind.PENDING, self.pending_rate),
            (FaultKind.PENDING_THEN_FAILED, self.pending_failed_rate),
            (FaultKind.PENDING_THEN_REFUNDED, self.pending_refunded_rate),
        )


def roll(rng: random.Random, config: FaultConfig) -> FaultKind | None:
    """The fault of one purchase request, or None to answer normally.

    Each fault is checked in `FaultConfig.rates` order with its own draw; the first
    hit wins. Faults with rate 0 draw nothing, so a quiet config leaves rng untouched.
    """
    for kind, rate in config.rates():
        if rate > 0 and rng.random() < rate:
            return kind
    return None


def latency_seconds(rng: random.Random, config: FaultConfig) -> float:
    """How long to stall one request: latency_ms ± latency_jitter_ms, never negative."""
    if config.latency_ms == 0 and config.latency_jitter_ms == 0:
        return 0.0
    jitter = rng.uniform(-config.latency_jitter_ms, config.latency_jitter_ms)
    return max(0.0, config.latency_ms + jitter) / 1000.0


def is_valid_phone(
    phone: object, config: FaultConfig, pattern: re.Pattern[str] = PHONE_PATTERN
) -> bool:
    """In the vendor's form (default +233 and nine digits), and not configured as a number
    the vendor rejects (invalid_phones, invalid_phone_suffix)."""
    if not isinstance(phone, str) or pattern.fullmatch(phone) is None:
        return False
    if phone in config.invalid_phones:
        return False
    suffix = config.invalid_phone_suffix
    return not (suffix and phone.endswith(suffix))


def purchase_problem(payload: Mapping[str, Any], config: FaultConfig) -> tuple[str, str] | None:
    """(error code, message) for the first invalid field of a purchase body, or None."""
    if not is_valid_phone(payload.get("phone_number"), config):
        return "INVALID_PHONE", "phone_number must be a valid +233 number"
    if payload.get("network") != NETWORK_AT_ISHARE:
        return "INVALID_NETWORK", f"network must be {NETWORK_AT_ISHARE!r}"
    size = payload.get("size_gb")
    if isinstance(size, bool) or not isinstance(size, int | float) or not 0 < size <= MAX_GB:
        return "INVALID_PACKAGE", f"size_gb must be a number in (0, {MAX_GB}]"
    return None


def parse_script(values: object, allowed: frozenset[FaultKind]) -> list[FaultKind | None]:
    """Script names to kinds ("ok" is None); ValueError on anything not in `allowed`."""
    if not isinstance(values, list):
        raise ValueError("a script is a list of response names")  # noqa: TRY004
    parsed: list[FaultKind | None] = []
    for value in values:
        if value == OK:
            parsed.append(None)
            continue
        if not isinstance(value, str) or value not in allowed:
            names = sorted([*allowed, OK])
            raise ValueError(f"unknown scripted response {value!r}; expected one of {names}")
        parsed.append(FaultKind(value))
    return parsed


class ScriptBook:
    """Scripted answers per reference; a reference with a purchase script never rolls dice."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._purchase: dict[str, deque[FaultKind | None]] = {}
        self._status: dict[str, deque[FaultKind | None]] = {}

    def set(
        self,
        reference: str,
        responses: Sequence[FaultKind | None] | None,
        status_responses: Sequence[FaultKind | None] | None,
    ) -> None:
        """Replace the scripts given (None leaves that script as it is)."""
        with self._lock:
            if responses is not None:
                self._purchase[reference] = deque(responses)
            if status_responses is not None:
                self._status[reference] = deque(status_responses)

    def next_purchase(self, reference: str) -> tuple[bool, FaultKind | None]:
        """(whether the reference is scripted, its next answer); an empty script answers ok."""
        with self._lock:
            script = self._purchase.get(reference)
            if script is None:
                return False, None
            return True, script.popleft() if script else None

    def next_status(self, reference: str) -> FaultKind | None:
        with self._lock:
            script = self._status.get(reference)
            return script.popleft() if script else None

    def clear(self) -> None:
        with self._lock:
            self._purchase.clear()
            self._status.clear()

    def set_from_json(self, payload: Mapping[str, Any]) -> None:
        """Apply a /_sim/script body {"reference", "responses"?, "status_responses"?} (the
        aggregator's scripts may say "request_id" instead of "reference")."""
        reference = payload.get("reference", payload.get("request_id"))
        if not isinstance(reference, str) or not reference:
            raise ValueError("reference must be a non-empty string")
        responses = payload.get("responses")
        status_responses = payload.get("status_responses")
        self.set(
            reference,
            None if responses is None else parse_script(responses, PURCHASE_SCRIPT_KINDS),
            None
            if status_responses is None
            else parse_script(status_responses, STATUS_SCRIPT_KINDS),
        )


class Chaos:
    """One simulator's live fault state: config, seeded dice, scripts and outage, thread-safe."""

    def __init__(self, config: FaultConfig, *, seed: int | None = None) -> None:
        self.scripts = ScriptBook()
        self._lock = threading.Lock()
        self._config = config
        self._rng = random.Random(seed)  # noqa: S311 - fault dice, not cryptography
        self._down_until = 0.0
        self._spared: frozenset[str] = frozenset()

    @property
    def config(self) -> FaultConfig:
        with self._lock:
            return self._config

    def update(self, changes: Mapping[str, Any]) -> FaultConfig:
        """Apply a partial config; pydantic's ValidationError leaves the old one in place."""
        with self._lock:
            self._config = self._config.updated(changes)
            return self._config

    def decide(self, reference: str) -> FaultKind | None:
        """The fault of one purchase: the reference's script if it has one, else the dice."""
        scripted, kind = self.scripts.next_purchase(reference)
        if scripted:
            return kind
        with self._lock:
            return roll(self._rng, self._config)

    def latency(self) -> float:
        with self._lock:
            return latency_seconds(self._rng, self._config)

    def go_down(self, seconds: float, spare: Sequence[str] = ()) -> None:
        """Every API route answers 503 for the next `seconds` (0 ends an outage), except the
        purchases of the references in `spare`, which reach the books as usual."""
        if not seconds >= 0:  # also refuses NaN
            raise ValueError("seconds must be a number >= 0")
        with self._lock:
            self._down_until = time.monotonic() + seconds
            self._spared = frozenset(spare)

    def is_down(self, reference: str | None = None) -> bool:
        """Whether the vendor is down (for a purchase of `reference`: unless spared)."""
        with self._lock:
            return time.monotonic() < self._down_until and reference not in self._spared

    def down_from_json(self, payload: Mapping[str, Any]) -> None:
        """Apply a /_sim/down body {"seconds", "spare"?: [reference...]}."""
        spare = payload.get("spare", [])
        if not isinstance(spare, list) or not all(isinstance(r, str) for r in spare):
            raise ValueError("spare must be a list of references")
        self.go_down(float(payload.get("seconds", "?")), spare)

    def reset(self) -> None:
        """Forget scripts and any outage; the config and the dice stay."""
        self.scripts.clear()
        with self._lock:
            self._down_until = 0.0
            self._spared = frozenset()


# -- the parties that are not vendors (the SMS provider, the platform receiver) ---------

#: a party's scripted fault: a fault name, or None for "answer normally" ("ok" in a script)
PartyFault = str | None


class PartyFaults(BaseModel):
    """The fault config of a simulated party that is not a vendor; each subclass names its
    random faults in `rates`, checked in that order (the first hit wins)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, prefix: str) -> Self:
        """<prefix><FIELD> for each field (SIM_SMS_ERROR_RATE, ...); unset or empty variables
        keep the default, invalid values raise pydantic's ValidationError."""
        env = os.environ if environ is None else environ
        raw = {f: env.get(prefix + f.upper(), "").strip() for f in cls.model_fields}
        data = {f: value for f, value in raw.items() if value}
        return cls.model_validate(data)

    def updated(self, changes: Mapping[str, Any]) -> Self:
        """A copy with `changes` applied and validated (a partial config from _sim/faults)."""
        return self.model_validate({**self.model_dump(), **changes})

    def rates(self) -> tuple[tuple[str, float], ...]:
        """(fault name, rate) of each random fault."""
        return ()


_Config = TypeVar("_Config", bound=PartyFaults)


class PartyChaos(Generic[_Config]):
    """One party's live fault state: config, seeded dice, scripts per key (a ClientReference,
    an event_id) and outage, thread-safe. `kinds` are the fault names a script may use."""

    def __init__(self, config: _Config, *, kinds: frozenset[str], seed: int | None) -> None:
        self.kinds = kinds
        self._lock = threading.Lock()
        self._config = config
        self._rng = random.Random(seed)  # noqa: S311 - fault dice, not cryptography
        self._scripts: dict[str, deque[PartyFault]] = {}
        self._down_until = 0.0

    @property
    def config(self) -> _Config:
        with self._lock:
            return self._config

    def update(self, changes: Mapping[str, Any]) -> _Config:
        """Apply a partial config; pydantic's ValidationError leaves the old one in place."""
        with self._lock:
            self._config = self._config.updated(changes)
            return self._config

    def decide(self, key: str) -> PartyFault:
        """The fault of one request: the key's script if it has one (empty: ok), else the dice."""
        with self._lock:
            script = self._scripts.get(key)
            if script is not None:
                return script.popleft() if script else None
            for kind, rate in self._config.rates():
                if rate > 0 and self._rng.random() < rate:
                    return kind
            return None

    def chance(self, rate: float) -> bool:
        """One draw of the dice at `rate` (none drawn at 0)."""
        with self._lock:
            return rate > 0 and self._rng.random() < rate

    def script_from_json(self, payload: Mapping[str, Any], key_field: str) -> None:
        """Apply a _sim/script body {"reference" (or key_field), "responses": [name or "ok"...]}."""
        key = payload.get("reference", payload.get(key_field))
        if not isinstance(key, str) or not key:
            raise ValueError(f"reference ({key_field}) must be a non-empty string")
        responses = payload.get("responses")
        names = sorted([*self.kinds, OK])
        if not isinstance(responses, list) or not all(r in names for r in responses):
            raise ValueError(f"responses must be a list of {names}")
        with self._lock:
            self._scripts[key] = deque(None if r == OK else str(r) for r in responses)

    def down_from_json(self, payload: Mapping[str, Any]) -> None:
        """Apply a _sim/down body {"seconds"}: every API route answers 503 that long (0 ends it)."""
        seconds = float(payload.get("seconds", "?"))
        if not seconds >= 0:  # also refuses NaN
            raise ValueError("seconds must be a number >= 0")
        with self._lock:
            self._down_until = time.monotonic() + seconds

    def is_down(self) -> bool:
        with self._lock:
            return time.monotonic() < self._down_until

    def reset(self) -> None:
        """Forget scripts and any outage; the config and the dice stay."""
        with self._lock:
            self._scripts.clear()
            self._down_until = 0.0
