"""The chaos suite: the real fleet under faults, then invariants that must hold anyway.

`python -m chaos.run --orders 300` (or `make chaos ORDERS=300`) starts its own embedded
PostgreSQL and Redis in a temporary state directory, the simulator with faults, several worker
groups, the dead-letter consumer, the reconciler and the admin web process; drives orders
through them while it kills workers (some between a POST and its answer), restarts Redis
(losing its data) and PostgreSQL, duplicates and garbles messages and replays signed vendor
callbacks; lets the fleet converge; takes the vendor down in a quiet hour; and checks what
must be true of the database and the vendor's ledger.

- `servers`: the embedded servers, with restarts (Redis on the same port, PostgreSQL fast or
  as a crash)
- `fleet`: the fleet's processes, each in its own process group, logs under the state dir
- `orders`: the orders and the purchase path that commits and publishes them
- `faults`: the fault schedule and the injector that counts what it did; the scripted vendor
  scenarios and the last-attempt trap
- `midcall`: a worker killed between its POST and the answer while a brownout opens the circuit
- `callbacks`: signed vendor callbacks, each replayed many times, at the web process
- `quiet`: a vendor outage in a quiet hour (orders one per breaker window), after the main run
- `invariants`: the checks, as SQL against the database plus the simulator's ledger (blind
  re-purchases included)
- `db`, `queries.sql`: the run's own read-only SQL, by name
- `config`: the run's timings, vendor faults and the fleet's environment
- `report`: the table
- `run`: the command line
"""
