"""The relay: moves committed outbox rows into the stream store (see issue 4)."""

__all__: list[str] = []
