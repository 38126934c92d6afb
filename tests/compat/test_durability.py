"""Crash safety with the real binary: the broker is killed with SIGKILL at random moments while
producers write, and after every restart each acknowledged record is where it was
acknowledged, the log has no holes, and nothing was half-written or written twice.

SIGKILL keeps the page cache, so this checks recovery and acknowledgement order, not fsync (a
power loss cannot be simulated here; `flush.messages` is checked for what it promises in the
storage crate's tests)."""

import random
import signal
import threading
import time
import uuid

import pytest

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROUNDS = 4


def produce_until_stopped(bootstrap, topic, round_no, acked, stop):
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,
            "message.timeout.ms": 3000,
            "reconnect.backoff.max.ms": 200,
        }
    )

    def on_delivery(err, msg):
        if err is None:
            acked.append((msg.partition(), msg.offset(), msg.value()))

    i = 0
    while not stop.is_set():
        try:
            p.produce(topic, value=f"{round_no}-{i}".encode(), partition=i % 2, on_delivery=on_delivery)
            i += 1
        except BufferError:
            pass
        p.poll(0.001 if i % 50 else 0.01)
    # Whatever was in flight when the broker died either was acknowledged or fails now.
    p.flush(5)


def read_all(bootstrap, topic, partition):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "crash-check", "enable.auto.commit": False})
    low, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    c.assign([TopicPartition(topic, partition, low)])
    out = []
    deadline = time.monotonic() + 30
    while len(out) < high - low and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            out.append((m.offset(), m.value()))
    c.close()
    assert low == 0
    assert len(out) == high, f"read {len(out)} of {high} records"
    return out


@pytest.mark.parametrize("flush_messages", [None, "1"], ids=["default-flush", "flush-every-write"])
def test_acknowledged_records_survive_repeated_sigkills(make_broker, flush_messages):
    rng = random.Random(20261122)
    b = make_broker().start()
    topic = "crash-" + uuid.uuid4().hex[:8]
    # flush.messages=1: every acknowledged write is fsynced first (the durable-acks setting).
    # Small segments: kills land while segments roll and are sealed in the background.
    config = {"segment.bytes": "16384"}
    if flush_messages:
        config["flush.messages"] = flush_messages
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    fs = admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1, config=config)])
    fs[topic].result(15)
    acked = []
    for round_no in range(ROUNDS):
        stop = threading.Event()
        writer = threading.Thread(target=produce_until_stopped, args=(b.bootstrap, topic, round_no, acked, stop))
        writer.start()
        time.sleep(rng.uniform(0.3, 1.5))
        b.stop(signal.SIGKILL)
        stop.set()
        writer.join(30)
        assert not writer.is_alive()
        b.start()
    assert len(acked) > 100, f"only {len(acked)} records were acknowledged"

    for partition in (0, 1):
        records = read_all(b.bootstrap, topic, partition)
        # No holes: offsets run 0, 1, 2, … (read_all checked the count against the end offset).
        assert [o for o, _ in records] == list(range(len(records)))
        values = [v for _, v in records]
        assert len(set(values)) == len(values), "no record was stored twice"
        # Each round's records are in the order they were produced.
        by_round = {}
        for v in values:
            r, i = map(int, v.decode().split("-"))
            by_round.setdefault(r, []).append(i)
        for r, seq in by_round.items():
            assert seq == sorted(seq), f"round {r} out of order"
        stored = dict(records)
        for p, offset, value in acked:
            if p == partition:
                assert stored.get(offset) == value, f"acknowledged {value!r} at {partition}/{offset} is missing"


def test_durable_flag_sets_flush_messages_and_writes_still_work(make_broker):
    """`sluice server --durable` sets the broker default flush.messages=1; topics show it and
    take writes and offset commits as usual (that the fsyncs happen is checked in the storage
    crate's tests; it cannot be observed from a client)."""
    from confluent_kafka.admin import ConfigResource, ConfigSource, ResourceType

    b = make_broker(extra_args=["--durable"]).start()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    topic = "durable-" + uuid.uuid4().hex[:8]
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(15)
    res = ConfigResource(ResourceType.TOPIC, topic)
    flush = admin.describe_configs([res])[res].result(10)["flush.messages"]
    assert flush.value == "1" and flush.source == ConfigSource.STATIC_BROKER_CONFIG.value
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 0})
    delivered = []
    for i in range(50):
        p.produce(topic, value=str(i).encode(), on_delivery=lambda err, msg: delivered.append(err))
    p.flush(30)
    assert delivered == [None] * 50
    # Offset commits go through the same fsync before they are acknowledged.
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "durable", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    got = [c.poll(10) for _ in range(5)]
    assert all(m is not None and m.error() is None for m in got)
    c.commit(message=got[-1], asynchronous=False)
    assert c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == 5
    c.close()
