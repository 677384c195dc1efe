"""Example services built on Outbox Streams: an orders service and two consumer groups.

``python -m examples.orders_service`` commits orders and their events in the same transactions;
``python -m examples.consumer --group inventory|email`` applies them exactly once. ``make demo``
runs both against a throw-away PostgreSQL and store; ``compose/`` runs them as containers.
"""
