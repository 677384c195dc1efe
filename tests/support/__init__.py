"""Test infrastructure: real PostgreSQL, Apache Kafka and stream store processes (no pytest here)."""
