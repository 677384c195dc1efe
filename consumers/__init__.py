"""The consumer SDK: exactly-once effects on top of Kafka consumer groups (see issue 5)."""

__all__: list[str] = []
