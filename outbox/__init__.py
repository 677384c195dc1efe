"""The transactional outbox library (see issue 4); also home of the ``outbox`` command line."""

__all__: list[str] = []
