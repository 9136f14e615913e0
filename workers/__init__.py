"""The fleet's processes: fulfill_order workers, the dead-letter consumer, the reconciler."""
