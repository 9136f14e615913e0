"""The chaos suite: the real fleet under faults, then invariants that must hold anyway.

`python -m chaos.run --orders 300` (or `make chaos ORDERS=300`) starts its own embedded
PostgreSQL and Redis in a temporary state directory, the simulator with faults, several worker
groups, the dead-letter consumer and the reconciler; drives orders through them while it kills
workers, restarts Redis (losing its data) and PostgreSQL, duplicates and garbles messages; lets
the fleet converge; and checks what must be true of the database and the vendor's ledger.

- `servers`: the embedded servers, with restarts (Redis on the same port, PostgreSQL fast or
  as a crash)
- `fleet`: the fleet's processes, each in its own process group, logs under the state dir
- `orders`: the orders and the purchase path that commits and publishes them
- `faults`: the fault schedule and the injector that counts what it did; the scripted vendor
  scenarios and the last-attempt trap
- `invariants`: the checks, as SQL against the database plus the simulator's ledger
- `db`, `queries.sql`: the run's own read-only SQL, by name
- `report`: the table
- `run`: the command line
"""
