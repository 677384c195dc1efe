"""Test infrastructure: real PostgreSQL, Apache Kafka and stream store processes (no pytest here).

- ``tests.support.postgres``: ``PostgresServer`` (throw-away cluster or ``OUTBOX_TEST_DATABASE_URL``).
- ``tests.support.kafka``: ``kafka_jars()``, ``KafkaBroker``, ``run_kafka_tool()``, ``run_java_source()``.
- ``tests.support.store``: ``StoreProcess`` (``python -m streams serve``), ``free_port()``.

The pytest fixtures built on these live in ``tests/conftest.py``; ``bench/`` imports them directly.
"""
