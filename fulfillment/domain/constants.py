"""Names shared by every process: queues, actors, Redis keys, network codes.

Changing a queue or actor name breaks the purchase service's contract (DESIGN.md).
"""

from typing import Final

FULFILLMENT_QUEUE: Final = "fulfillment"
DEAD_LETTER_QUEUE: Final = "fulfillment.deadletter"
#: the notifier's queues: the customer's SMS and the platform's outcome events, each its own
#: so that a slow SMS provider never holds an event, nor either a delivery
SMS_QUEUE: Final = "fulfillment.sms"
EVENTS_QUEUE: Final = "fulfillment.events"

FULFILL_ACTOR: Final = "fulfill_order"
DEAD_LETTER_ACTOR: Final = "dead_letter_order"
GAVE_UP_ACTOR: Final = "message_gave_up"
SMS_ACTOR: Final = "send_customer_sms"
EVENT_ACTOR: Final = "send_platform_event"

NETWORK_AT_ISHARE: Final = "at-ishare"
KNOWN_NETWORKS: Final = frozenset({"at-ishare", "at-bigtime", "mtn", "telecel"})

# Dramatiq's Redis key prefix when REDIS_NAMESPACE is not set.
DEFAULT_REDIS_NAMESPACE: Final = "dramatiq"


def vendor_keys(namespace: str, vendor: str) -> str:
    """The prefix of one vendor's fleet-wide state in Redis (breaker, rate limit, balance):
    AT-iShare keeps the keys it always had, so a release that knew only it shares its breaker
    with this one during a rolling deploy; every other vendor has keys of its own."""
    return (
        f"{namespace}:fulfillment" if vendor == "at-ishare" else f"{namespace}:fulfillment:{vendor}"
    )


# The vendor reference of an order is its id; this header pair is what the vendor signs.
VENDOR_SIGNATURE_MAX_SKEW_S: Final = 300

# Exit codes of every command (`fulfillment ...`, `fulfillment web`, the simulator).
#: an action was refused, or PostgreSQL / Redis / the vendor failed
EXIT_REFUSED: Final = 1
#: bad input: a malformed id, an unknown filter, a missing flag (argparse's own code)
EXIT_USAGE: Final = 2
#: an order or a message that does not exist
EXIT_NOT_FOUND: Final = 3
#: a state that could not be read (`migrate --status` with PostgreSQL away): neither yes nor no
EXIT_UNREADABLE: Final = 4
