"""AT-iShare fulfillment fleet: the application core (settings, domain, wiring, CLI)."""
