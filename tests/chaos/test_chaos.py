"""CI's share of issue 7: a short randomized fault campaign, and the decoder corpus replayed over TCP.

The campaign is the one ``make chaos`` runs (writers, two relays, the store behind the fault proxy,
two consumers; kill -9 / SIGSTOP / PostgreSQL restarts / proxy faults / crash points / power cuts
/ a full disk / clock jumps), for
``CHAOS_CI_SECONDS`` (default 120) seconds; its checker must report no violation. The printed seed
reproduces a failure's schedule: ``CHAOS_SEED=<seed> make chaos``.
"""

from __future__ import annotations

import os
import select
import socket
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tests.chaos.campaign import CampaignConfig, run_campaign

CORPUS = sorted((Path(__file__).parent / "corpus" / "decoder").glob("*.bin"))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_short_fault_campaign_has_no_violations(tmp_path: Path) -> None:
    seconds = float(os.environ.get("CHAOS_CI_SECONDS", "120"))
    seed = int(os.environ["CHAOS_SEED"]) if os.environ.get("CHAOS_SEED") else None
    cfg = CampaignConfig(seconds=seconds, seed=seed, work_dir=tmp_path / "chaos", quiesce_timeout=180)
    used_seed, result = run_campaign(cfg)
    assert result.stats["committed (witness table)"] > 0, "the writers committed nothing"
    assert result.violations == 0, f"seed {used_seed}:\n{result.table()}"


def _replay(address: tuple[str, int], data: bytes, timeout: float = 15.0) -> str:
    """Send ``data``, half-close, read until the store closes; 'closed', 'answered' or 'hung'."""
    with socket.create_connection(address, timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return "closed"  # the store hung up while we were still sending
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([sock], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = sock.recv(65536)
            except OSError:
                return "closed" if not received else "answered"
            if not chunk:
                return "answered" if received else "closed"
            received += chunk
        return "hung"


def test_decoder_corpus_replayed_against_the_store(store_factory, tmp_path: Path) -> None:
    assert CORPUS, "tests/chaos/corpus/decoder is empty"
    store = store_factory(["--idle-timeout", "5"])
    host, _, port = store.bootstrap.rpartition(":")
    outcomes = {}
    for path in CORPUS:
        outcomes[path.name] = _replay((host, int(port)), path.read_bytes())
        assert store.is_running(), f"the store died on {path.name}"
    hung = [n for n, o in outcomes.items() if o == "hung"]
    assert not hung, f"no answer and no close within 15 s: {hung}"
    # A normal client is still served, and what it wrote reads back.
    producer = KafkaProducer(bootstrap_servers=store.bootstrap, acks="all")
    try:
        producer.send("after-corpus", key=b"k", value=b"still fine").get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(bootstrap_servers=store.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        consumer.assign([TopicPartition("after-corpus", 0)])
        assert [m.value for m in consumer] == [b"still fine"]
    finally:
        consumer.close()
    log = store.log_text()
    assert "Traceback" not in log, f"the store logged a traceback on hostile input (see {store.log_path})"
