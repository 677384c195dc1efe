"""``make demo``: the whole platform on one machine, with crashes on the way, verified at the end.

``python -m demo`` starts PostgreSQL (a throw-away cluster, or ``OUTBOX_DATABASE_URL``), the stream
store (or, with ``--kafka``, Apache Kafka), a relay, the example orders service and the inventory and
email consumer groups, each as its own process. On the way it kills the relay and the email
consumer with SIGKILL and restarts them. When ``OUTBOX_DEMO_EVENTS`` orders (20,000 by default) are
placed and applied, it checks every effect against the orders table and prints
``verified: N events, 0 lost, 0 duplicate effects, 0 out of order`` (exit status 1 if a count is
not zero).
"""
