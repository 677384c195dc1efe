"""kcat 1.7.1 (librdkafka 2.0.2, an old librdkafka as found in distributions) against the store.

Runs against Kafka too (``broker`` fixture) so every expectation below is one Kafka also meets.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from tests.compat._util import CODECS, TIMEOUT, create_topic, read_partitions, stored_batches
from tests.compat.conftest import Target

KCAT = shutil.which("kcat") or "/usr/bin/kcat"



def kcat(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [KCAT, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        check=False,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"kcat {args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def test_kcat_produce_lz4_idempotent_and_consume(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic, partitions=2)
    common = ["-b", broker.bootstrap, "-t", topic, "-P", "-K:", "-z", "lz4", "-X", "enable.idempotence=true"]
    # Values must compress well: librdkafka sends a batch uncompressed if lz4 does not shrink it.
    pad = "z" * 300
    first = kcat(*common, "-H", "trace=abc", "-H", "tenant=t1", "-p", "0",
                 input=f'order-1:{{"id": 1, "pad": "{pad}"}}\norder-2:{{"id": 2}}\n')
    second = kcat(*common, "-H", "only=one", "-p", "1", input=f"order-3:third {pad}\n")
    for run in (first, second):
        # librdkafka < 2.11.1 silently skips compression unless the broker advertises Produce v0.
        assert "not compressing" not in run.stderr, run.stderr

    out = kcat("-b", broker.bootstrap, "-t", topic, "-C", "-o", "beginning", "-e", "-q",
               "-f", "%t|%p|%o|%k|%s|%h|%T\n").stdout
    lines = sorted(out.splitlines())
    fields = [line.split("|") for line in lines]
    assert [f[:6] for f in fields] == [
        [topic, "0", "0", "order-1", f'{{"id": 1, "pad": "{pad}"}}', "trace=abc,tenant=t1"],
        [topic, "0", "1", "order-2", '{"id": 2}', "trace=abc,tenant=t1"],
        [topic, "1", "0", "order-3", f"third {pad}", "only=one"],
    ]
    # The CreateTime timestamps kcat printed are the ones another client reads back.
    recs = read_partitions(broker.bootstrap, topic, {0: 2, 1: 1})
    assert [int(f[6]) for f in fields] == [r.timestamp for r in recs]
    assert all(r.timestamp > 1_600_000_000_000 for r in recs)

    # What is on disk is what kcat sent: lz4 batches of an idempotent producer.
    for partition, counts in ((0, [2]), (1, [1])):
        batches = stored_batches(broker.log_dir, topic, partition)
        assert [b.record_count for b in batches] == counts
        assert all(b.codec == CODECS["lz4"] and b.magic == 2 for b in batches)
        assert all(b.producer_id >= 0 and b.producer_epoch == 0 and b.base_sequence == 0 for b in batches)


def test_kcat_metadata(broker: Target, topic: str) -> None:
    create_topic(broker.bootstrap, topic, partitions=3)
    host, port = broker.bootstrap.rsplit(":", 1)
    md = json.loads(kcat("-b", broker.bootstrap, "-L", "-J").stdout)
    assert md["controllerid"] == 1
    assert md["brokers"] == [{"id": 1, "name": f"{host}:{port}"}]
    topics = {t["topic"]: t for t in md["topics"]}
    assert topics[topic] == {
        "topic": topic,
        "partitions": [
            {"partition": p, "leader": 1, "replicas": [{"id": 1}], "isrs": [{"id": 1}]} for p in range(3)
        ],
    }

    text = kcat("-b", broker.bootstrap, "-L", "-t", topic).stdout
    assert f"broker 1 at {host}:{port} (controller)" in text
    assert f'topic "{topic}" with 3 partitions:' in text
    for p in range(3):
        assert f"partition {p}, leader 1, replicas: 1, isrs: 1" in text
