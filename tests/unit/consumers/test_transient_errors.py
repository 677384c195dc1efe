"""Which Kafka client errors the consumer loop waits out instead of stopping (found by make chaos)."""

from __future__ import annotations

import kafka.errors as ke

from consumers._core import transient_kafka_error


def test_connection_and_timeout_errors_are_transient() -> None:
    for exc in (
        ke.KafkaConnectionError("reset"),
        ke.NodeNotReadyError(),
        ke.KafkaTimeoutError(),
        ke.RequestTimedOutError(),
        ke.UnknownBrokerIdError(2),  # a leader kafka-python's connection manager does not know yet
    ):
        assert transient_kafka_error(exc), exc


def test_client_mistakes_are_not_transient() -> None:
    for exc in (ke.KafkaConfigurationError("bad"), ke.TopicAuthorizationFailedError(), ValueError("x")):
        assert not transient_kafka_error(exc), exc
