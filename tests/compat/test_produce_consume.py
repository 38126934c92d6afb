"""Producing and consuming with real clients against the real binary: keys, null keys and
values, headers (duplicate keys too), timestamps, every compression codec, ordering, seeking,
size limits, topic admin, and data that survives restarts."""

import json
import os
import signal
import struct
import subprocess
import time
import uuid

import kafka_raw as raw
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def topic_name(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_topic(bootstrap, name, partitions=1, config=None):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})])
    fs[name].result(timeout=15)


def produce(bootstrap, topic, records, **conf):
    """records: list of dicts with value and optional key, partition, headers, timestamp."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **conf})
    reports = []

    def on_delivery(err, msg):
        reports.append((err, msg.partition() if msg else None, msg.offset() if msg else None, msg.key() if msg else None))

    for r in records:
        kwargs = {k: v for k, v in r.items() if k in ("key", "value", "partition", "headers", "timestamp")}
        p.produce(topic, on_delivery=on_delivery, **kwargs)
    assert p.flush(30) == 0, "messages still queued"
    return reports


def consume_all(bootstrap, topic, partitions, expected, start=None, timeout=30, **conf):
    """Reads `expected` messages by assignment (no group coordinator needed)."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "unused-" + topic,
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            **conf,
        }
    )
    offset = -2 if start is None else start  # -2: beginning
    c.assign([TopicPartition(topic, p, offset) for p in partitions])
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            raise KafkaException(m.error())
        got.append(m)
    c.close()
    return got


@pytest.mark.parametrize("codec", CODECS)
def test_confluent_round_trip_with_every_codec(broker, codec):
    topic = topic_name(codec)
    create_topic(broker.bootstrap, topic)
    records = [
        {"key": b"k1", "value": b"v1", "headers": [("h", b"1"), ("h", b"2")], "timestamp": 1_700_000_000_000},
        {"key": None, "value": b"no key"},
        {"key": b"tombstone", "value": None},
        {"key": b"big", "value": bytes(range(256)) * 400},
    ]
    reports = produce(broker.bootstrap, topic, records, **{"compression.type": codec})
    assert [r[0] for r in reports] == [None] * 4
    got = consume_all(broker.bootstrap, topic, [0], 4)
    assert [m.key() for m in got] == [b"k1", None, b"tombstone", b"big"]
    assert [m.value() for m in got] == [b"v1", b"no key", None, bytes(range(256)) * 400]
    assert got[0].headers() == [("h", b"1"), ("h", b"2")], "duplicate header keys are kept in order"
    assert got[0].timestamp() == (1, 1_700_000_000_000)
    assert [m.offset() for m in got] == [0, 1, 2, 3]
    # kafka-python decodes every codec too.
    from kafka import KafkaConsumer

    kc = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    kgot = [m for _, m in zip(range(4), kc)]
    kc.close()
    assert [(m.key, m.value) for m in kgot] == [(m.key(), m.value()) for m in got]
    assert kgot[0].headers == [("h", b"1"), ("h", b"2")]


def stored_codecs(data_dir, topic, partition=0):
    """The compression codec of every batch in a partition's segment files, read off disk."""
    codecs = []
    for seg in sorted((data_dir / f"{topic}-{partition}").glob("*.log")):
        data = seg.read_bytes()
        pos = 0
        while pos + 61 <= len(data):
            (length,) = struct.unpack(">i", data[pos + 8 : pos + 12])
            (attributes,) = struct.unpack(">h", data[pos + 21 : pos + 23])
            codecs.append(attributes & 7)
            pos += 12 + length
    return codecs


@pytest.mark.parametrize("topic_codec,codec_id", [("zstd", 4), ("uncompressed", 0)])
def test_topic_compression_type_recompresses(broker, topic_codec, codec_id):
    """A topic's compression.type other than `producer` stores every batch in that codec,
    whatever the producer used, and every client still reads the same records."""
    from kafka import KafkaConsumer, KafkaProducer

    topic = topic_name("recomp")
    create_topic(broker.bootstrap, topic, config={"compression.type": topic_codec})
    records = [{"key": f"k{i}".encode(), "value": f"v{i}".encode() * 50, "headers": [("h", b"x")]} for i in range(30)]
    for codec in ["none", "gzip", "lz4", "snappy"]:
        reports = produce(broker.bootstrap, topic, records[:10], **{"compression.type": codec, "enable.idempotence": True})
        assert [r[0] for r in reports] == [None] * 10
    kp = KafkaProducer(bootstrap_servers=broker.bootstrap, compression_type="gzip")
    for r in records[10:20]:
        kp.send(topic, key=r["key"], value=r["value"], partition=0)
    kp.flush()
    kp.close()
    codecs = stored_codecs(broker.data_dir, topic)
    assert len(codecs) >= 5 and set(codecs) == {codec_id}, codecs

    got = consume_all(broker.bootstrap, topic, [0], 50)
    assert [m.value() for m in got[:10]] == [r["value"] for r in records[:10]]
    assert got[0].headers() == [("h", b"x")]
    assert [m.offset() for m in got] == list(range(50))
    kc = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    kgot = [m for _, m in zip(range(50), kc)]
    kc.close()
    assert [m.key for m in kgot[40:]] == [r["key"] for r in records[10:20]]


def test_ordering_and_key_placement(broker):
    topic = topic_name("order")
    create_topic(broker.bootstrap, topic, partitions=4)
    records = [{"key": f"key-{i % 7}".encode(), "value": str(i).encode()} for i in range(300)]
    reports = produce(broker.bootstrap, topic, records)
    placement = {}
    assert len(reports) == 300
    for err, part, _, key in reports:
        assert err is None
        placement.setdefault(key, set()).add(part)
    assert len(set().union(*placement.values())) > 1, "7 keys over 4 partitions use more than one"
    assert all(len(parts) == 1 for parts in placement.values()), "a key always lands in one partition"
    got = consume_all(broker.bootstrap, topic, range(4), 300)
    by_key = {}
    for m in got:
        by_key.setdefault(m.key(), []).append(int(m.value()))
    for values in by_key.values():
        assert values == sorted(values), "order within a partition is kept"


def test_seek_by_offset_and_by_timestamp(broker):
    topic = topic_name("seek")
    create_topic(broker.bootstrap, topic)
    base = 1_700_000_000_000
    produce(broker.bootstrap, topic, [{"value": str(i).encode(), "timestamp": base + i * 1000} for i in range(20)])
    # Skip ahead to an offset.
    got = consume_all(broker.bootstrap, topic, [0], 5, start=15)
    assert [int(m.value()) for m in got] == [15, 16, 17, 18, 19]
    # Look up an offset by timestamp, then read from it.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "ts-" + topic})
    found = c.offsets_for_times([TopicPartition(topic, 0, base + 7500)], timeout=10)
    assert found[0].offset == 8
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    assert (lo, hi) == (0, 20)
    past = c.offsets_for_times([TopicPartition(topic, 0, base + 10**9)], timeout=10)
    assert past[0].offset == -1, "a time after every record has no offset"
    c.close()


def test_list_offsets_by_every_spec(broker):
    """The record with the largest timestamp (ListOffsets v7+), earliest, latest and the
    local and tiered specs, through each admin API that has them."""
    from confluent_kafka.admin import OffsetSpec
    from kafka import KafkaAdminClient, TopicPartition as KTopicPartition
    from kafka.admin import OffsetSpec as KOffsetSpec

    topic = topic_name("maxts")
    create_topic(broker.bootstrap, topic)
    base = 1_700_000_000_000
    # Timestamps rise to offset 6 then fall back: the max is not the last record.
    stamps = [base + t for t in [1, 5, 3, 9, 2, 9, 10, 4, 8]]
    produce(broker.bootstrap, topic, [{"value": b"v", "timestamp": ts} for ts in stamps])
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    tp = TopicPartition(topic, 0)
    specs = {"max": OffsetSpec.max_timestamp(), "earliest": OffsetSpec.earliest(), "latest": OffsetSpec.latest()}
    got = {name: admin.list_offsets({tp: spec})[tp].result(10) for name, spec in specs.items()}
    assert (got["max"].offset, got["max"].timestamp) == (6, base + 10)
    assert got["earliest"].offset == 0 and got["latest"].offset == 9

    k = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    ktp = KTopicPartition(topic, 0)
    kgot = {
        spec: k.list_partition_offsets({ktp: spec})[ktp]
        for spec in [KOffsetSpec.MAX_TIMESTAMP, KOffsetSpec.EARLIEST_LOCAL, KOffsetSpec.LATEST_TIERED]
    }
    k.close()
    assert kgot[KOffsetSpec.MAX_TIMESTAMP].offset == 6
    assert kgot[KOffsetSpec.EARLIEST_LOCAL].offset == 0
    assert kgot[KOffsetSpec.LATEST_TIERED].offset == -1, "nothing is tiered"


def test_timestamps_outside_the_topic_window_are_refused(broker):
    """KIP-937 with Kafka 4.0's defaults: CreateTime timestamps more than an hour ahead are
    refused with INVALID_TIMESTAMP; old ones only when the topic says so."""
    now = int(time.time() * 1000)
    topic = topic_name("tswin")
    create_topic(broker.bootstrap, topic)
    reports = produce(
        broker.bootstrap,
        topic,
        [{"value": b"future", "timestamp": now + 2 * 3600_000}, {"value": b"old", "timestamp": now - 30 * 86400_000}],
        **{"linger.ms": 0, "batch.num.messages": 1, "retries": 0},
    )
    codes = sorted((r[0].code() if r[0] else 0) for r in reports)
    assert codes == [0, KafkaError.INVALID_TIMESTAMP], reports

    strict = topic_name("tsstrict")
    create_topic(broker.bootstrap, strict, config={"message.timestamp.before.max.ms": "60000"})
    reports = produce(broker.bootstrap, strict, [{"value": b"old", "timestamp": now - 3600_000}], retries=0)
    assert reports[0][0].code() == KafkaError.INVALID_TIMESTAMP
    # LogAppendTime topics take any timestamp: the broker's replaces it.
    lat = topic_name("tslat")
    create_topic(broker.bootstrap, lat, config={"message.timestamp.type": "LogAppendTime"})
    assert produce(broker.bootstrap, lat, [{"value": b"x", "timestamp": now + 10 * 3600_000}])[0][0] is None
    got = consume_all(broker.bootstrap, topic, [0], 1)
    assert got[0].value() == b"old"


def test_min_insync_replicas_above_the_isr_refuses_acks_all(broker):
    topic = topic_name("minisr")
    create_topic(broker.bootstrap, topic, config={"min.insync.replicas": "2"})
    reports = produce(broker.bootstrap, topic, [{"value": b"x"}], acks="all", retries=0, **{"message.timeout.ms": 3000})
    assert reports[0][0].code() == KafkaError.NOT_ENOUGH_REPLICAS, reports
    # acks=1 does not wait for the ISR, as in Kafka.
    assert produce(broker.bootstrap, topic, [{"value": b"y"}], acks=1)[0][0] is None
    assert [m.value() for m in consume_all(broker.bootstrap, topic, [0], 1)] == [b"y"]


def test_large_messages_and_max_message_bytes(broker):
    topic = topic_name("big")
    create_topic(broker.bootstrap, topic)
    ok = produce(broker.bootstrap, topic, [{"value": b"x" * 1_000_000}], **{"message.max.bytes": 3_000_000})
    assert ok[0][0] is None
    too_big = produce(broker.bootstrap, topic, [{"value": b"x" * 1_100_000}], **{"message.max.bytes": 3_000_000})
    assert too_big[0][0] is not None and too_big[0][0].code() == KafkaError.MSG_SIZE_TOO_LARGE
    raised = topic_name("bigger")
    create_topic(broker.bootstrap, raised, config={"max.message.bytes": "2000000"})
    ok = produce(broker.bootstrap, raised, [{"value": b"x" * 1_100_000}], **{"message.max.bytes": 3_000_000})
    assert ok[0][0] is None
    got = consume_all(broker.bootstrap, raised, [0], 1, **{"fetch.max.bytes": 3_000_000})
    assert len(got[0].value()) == 1_100_000


def test_kcat_produces_and_consumes_with_headers(broker):
    topic = topic_name("kcat")
    lines = "".join(f"key{i}:value{i}\n" for i in range(10))
    out = subprocess.run(
        ["kcat", "-b", broker.bootstrap, "-P", "-t", topic, "-K:", "-H", "trace=abc", "-z", "lz4"],
        input=lines, capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    out = subprocess.run(
        ["kcat", "-b", broker.bootstrap, "-C", "-t", topic, "-e", "-f", "%o|%k|%s|%h\n"],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    rows = out.stdout.strip().splitlines()
    assert rows == [f"{i}|key{i}|value{i}|trace=abc" for i in range(10)]


def test_kafka_python_round_trip(broker):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KTP

    topic = topic_name("kp")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, compression_type="gzip", linger_ms=5)
    for i in range(50):
        producer.send(topic, key=b"k%d" % (i % 3), value=b"v%d" % i, headers=[("n", str(i).encode())])
    producer.flush(30)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, consumer_timeout_ms=10000)
    tp = KTP(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = [m for _, m in zip(range(50), consumer)]
    consumer.close()
    assert [m.value for m in got] == [b"v%d" % i for i in range(50)]
    assert got[7].headers == [("n", b"7")]


def test_topic_admin_with_confluent(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topic = topic_name("admin")
    # validate_only creates nothing.
    admin.create_topics([NewTopic(topic, 3, 1)], validate_only=True)[topic].result(10)
    assert topic not in admin.list_topics(timeout=10).topics
    admin.create_topics([NewTopic(topic, 3, 1, config={"retention.ms": "3600000"})])[topic].result(10)
    md = admin.list_topics(timeout=10).topics[topic]
    assert sorted(md.partitions) == [0, 1, 2]
    with pytest.raises(KafkaException) as e:
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(10)
    assert e.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS
    with pytest.raises(KafkaException) as e:
        admin.create_topics([NewTopic("bad name!", 1, 1)])["bad name!"].result(10)
    assert e.value.args[0].code() == KafkaError.TOPIC_EXCEPTION
    with pytest.raises(KafkaException) as e:
        admin.create_topics([NewTopic("rf3-" + topic, 1, 3)])["rf3-" + topic].result(10)
    assert e.value.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR
    admin.delete_topics([topic])[topic].result(10)
    deadline = time.monotonic() + 10
    while topic in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.1)
    assert topic not in admin.list_topics(timeout=10).topics


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["clean", "sigkill"])
def test_topics_and_data_survive_a_restart(make_broker, sig):
    b = make_broker().start()
    topic = topic_name("restart")
    create_topic(b.bootstrap, topic, partitions=2)
    produce(b.bootstrap, topic, [{"key": b"k", "value": str(i).encode()} for i in range(100)], acks="all")
    b.stop(sig)
    b.start()
    got = consume_all(b.bootstrap, topic, [0, 1], 100)
    assert sorted(int(m.value()) for m in got) == list(range(100))
    # Appends continue after the recovered end.
    produce(b.bootstrap, topic, [{"key": b"k", "value": b"after"}])
    got = consume_all(b.bootstrap, topic, [0, 1], 101)
    after = [m for m in got if m.value() == b"after"]
    assert len(after) == 1
    # Same key, same partition: the new record follows the 100 recovered ones there.
    assert after[0].offset() == sum(1 for m in got if m.partition() == after[0].partition()) - 1


def test_long_poll_waits_for_data_and_returns_when_it_comes(broker):
    topic = topic_name("poll")
    create_topic(broker.bootstrap, topic)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "lp", "fetch.wait.max.ms": 5000,
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    assert c.poll(1.0) is None
    produce(broker.bootstrap, topic, [{"value": b"late"}])
    start = time.monotonic()
    m = None
    while m is None and time.monotonic() - start < 10:
        m = c.poll(0.2)
    c.close()
    assert m is not None and m.value() == b"late"
    # Woken by the append rather than after the full 5 s wait (generous bound for busy CI).
    assert time.monotonic() - start < 4.5


def test_idempotent_producers_of_every_client(broker):
    from kafka import KafkaProducer

    topic = topic_name("idem")
    create_topic(broker.bootstrap, topic, partitions=2)
    reports = produce(broker.bootstrap, topic, [{"key": b"k%d" % (i % 5), "value": b"%d" % i} for i in range(200)],
                      **{"enable.idempotence": True, "acks": "all"})
    assert all(r[0] is None for r in reports)
    # kafka-python 3 is idempotent by default.
    kp = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i in range(50):
        kp.send(topic, key=b"kp", value=b"kp%d" % i)
    kp.flush(30)
    kp.close()
    got = consume_all(broker.bootstrap, topic, [0, 1], 250)
    assert len(got) == 250
    assert sorted(m.value() for m in got) == sorted([b"%d" % i for i in range(200)] + [b"kp%d" % i for i in range(50)])


def idempotent_batch(pid, epoch, first_seq, count):
    """A v2 batch of `count` records from an idempotent producer, built by kafka-python's own
    builder; record values are seq<N>."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=pid,
                                  producer_epoch=epoch, base_sequence=first_seq, batch_size=1 << 20)
    for i in range(count):
        b.append(i, timestamp=None, key=None, value=b"seq%d" % (first_seq + i), headers=[])
    return bytes(b.build())


def test_a_retried_batch_is_stored_once(broker):
    """A retry after a lost response, which real clients only send on network failures:
    driven by hand with kafka-python's own v2 batch builder."""
    topic = topic_name("retry")
    create_topic(broker.bootstrap, topic)
    s = raw.connect(broker.port)
    err, pid, epoch = raw.init_producer_id_v0(s)
    assert err == 0 and pid >= 0 and epoch == 0

    def batch(first_seq, count):
        return idempotent_batch(pid, epoch, first_seq, count)

    assert raw.produce_v3(s, topic, 0, batch(0, 3), 2) == (0, 0)
    assert raw.produce_v3(s, topic, 0, batch(0, 3), 3) == (0, 0), "the retry gets the original offset"
    assert raw.produce_v3(s, topic, 0, batch(5, 1), 4)[0] == 45, "a gap is OUT_OF_ORDER_SEQUENCE_NUMBER"
    assert raw.produce_v3(s, topic, 0, batch(3, 2), 5) == (0, 3)
    got = consume_all(broker.bootstrap, topic, [0], 5)
    assert [m.value() for m in got] == [b"seq0", b"seq1", b"seq2", b"seq3", b"seq4"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["clean", "sigkill"])
def test_producer_state_survives_a_restart(make_broker, sig):
    """A retry sent after the broker restarted still gets the original offset: after a clean
    stop the producer state comes from the snapshot written then; after SIGKILL it is rebuilt
    from the batch headers in the log."""
    b = make_broker().start()
    topic = topic_name("pstate")
    create_topic(b.bootstrap, topic)
    s = raw.connect(b.port)
    err, pid, epoch = raw.init_producer_id_v0(s)
    assert err == 0

    def batch(first_seq, count):
        return idempotent_batch(pid, epoch, first_seq, count)

    assert raw.produce_v3(s, topic, 0, batch(0, 3), 2) == (0, 0)
    assert raw.produce_v3(s, topic, 0, batch(3, 2), 3) == (0, 3)
    s.close()
    b.stop(sig)
    snapshot = b.data_dir / "producer-state.json"
    assert snapshot.exists() == (sig == signal.SIGTERM), "a snapshot is written at a clean stop only"
    if sig == signal.SIGTERM:
        saved = json.loads(snapshot.read_text())["partitions"][f"{topic}-0"]
        assert saved["end"] == 5 and str(pid) in saved["state"]["producers"], saved
    b.start()
    assert not snapshot.exists(), "the snapshot is used once, at the start after it"
    s = raw.connect(b.port)
    assert raw.produce_v3(s, topic, 0, batch(3, 2), 4) == (0, 3), "the retry gets the original offset"
    assert raw.produce_v3(s, topic, 0, batch(7, 1), 5)[0] == 45, "a gap is OUT_OF_ORDER_SEQUENCE_NUMBER"
    assert raw.produce_v3(s, topic, 0, batch(5, 1), 6) == (0, 5)
    got = consume_all(b.bootstrap, topic, [0], 6)
    assert [m.value() for m in got] == [b"seq%d" % i for i in range(6)]


def test_retention_removes_old_segments(make_broker):
    b = make_broker(extra_args=["--set", "log.retention.check.interval.ms=200"]).start()
    topic = topic_name("ret")
    create_topic(b.bootstrap, topic, config={"segment.bytes": "2000", "retention.bytes": "4000"})
    produce(b.bootstrap, topic, [{"value": b"x" * 500} for _ in range(100)], **{"linger.ms": 0, "batch.num.messages": 1})
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "ret"})
    deadline = time.monotonic() + 15
    lo = 0
    while time.monotonic() < deadline:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        if lo > 0:
            break
        time.sleep(0.2)
    c.close()
    assert hi == 100
    assert lo > 80, f"retention kept offsets from {lo}"
    got = consume_all(b.bootstrap, topic, [0], 100 - lo)
    assert got[0].offset() == lo


def test_configs_and_partitions_through_each_admin_api(make_broker):
    """Describe and alter topic configs, read broker settings and add partitions with
    confluent-kafka and kafka-python; the changes survive a restart."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ResourceType
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource as KConfigResource, ConfigResourceType, NewPartitions as KNewPartitions

    b = make_broker().start()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    topic = topic_name("cfg")
    create_topic(b.bootstrap, topic, partitions=2, config={"retention.ms": "3600000"})
    res = ConfigResource(ResourceType.TOPIC, topic)
    described = admin.describe_configs([res])[res].result(10)
    assert described["retention.ms"].value == "3600000" and not described["retention.ms"].is_default
    assert described["max.message.bytes"].value == "1048588" and described["max.message.bytes"].is_default

    change = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("max.message.bytes", "2097152", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
        ],
    )
    admin.incremental_alter_configs([change])[change].result(10)
    described = admin.describe_configs([res])[res].result(10)
    assert described["max.message.bytes"].value == "2097152"
    assert described["retention.ms"].is_default and described["retention.ms"].value == "604800000"
    # The new limit is enforced: a 1.5 MB record now fits.
    reports = produce(b.bootstrap, topic, [{"value": b"x" * 1_500_000, "partition": 0}], **{"message.max.bytes": 3_000_000})
    assert reports[0][0] is None, reports

    bad = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as e:
        admin.incremental_alter_configs([bad])[bad].result(10)
    assert e.value.args[0].code() == KafkaError.INVALID_CONFIG

    broker_res = ConfigResource(ResourceType.BROKER, "1")
    settings = admin.describe_configs([broker_res])[broker_res].result(10)
    assert settings["log.retention.ms"].value == "604800000" and not settings["log.retention.ms"].is_read_only
    assert settings["num.partitions"].is_read_only

    admin.create_partitions([NewPartitions(topic, 4)])[topic].result(10)
    assert sorted(admin.list_topics(timeout=10).topics[topic].partitions) == [0, 1, 2, 3]
    with pytest.raises(KafkaException) as e:
        admin.create_partitions([NewPartitions(topic, 3)])[topic].result(10)
    assert e.value.args[0].code() == KafkaError.INVALID_PARTITIONS
    # The new partitions take records.
    assert produce(b.bootstrap, topic, [{"value": b"new", "partition": 3}])[0][0] is None

    # kafka-python: the same through its admin client.
    k = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    k.alter_configs([KConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "120000", "max.message.bytes": "2097152"})])
    k.create_partitions({topic: KNewPartitions(total_count=6)})
    kdesc = k.describe_configs([KConfigResource(ConfigResourceType.TOPIC, topic)])
    text = str(kdesc)
    assert "120000" in text and "2097152" in text, text
    k.close()

    b.stop()
    b.start()
    described = admin.describe_configs([res])[res].result(10)
    assert described["retention.ms"].value == "120000"
    assert described["max.message.bytes"].value == "2097152"
    assert sorted(AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10).topics[topic].partitions) == list(range(6))


def test_time_retention_empties_a_quiet_topic(make_broker):
    """As in Kafka, expired records go even when they are all in the active segment."""
    b = make_broker(extra_args=["--set", "log.retention.check.interval.ms=200"]).start()
    topic = topic_name("quiet")
    create_topic(b.bootstrap, topic, config={"retention.ms": "1000"})
    produce(b.bootstrap, topic, [{"value": b"old"} for _ in range(10)])
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "quiet"})
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        if lo == 10:
            break
        time.sleep(0.2)
    c.close()
    assert (lo, hi) == (10, 10)
    # Offsets continue after the deleted ones.
    produce(b.bootstrap, topic, [{"value": b"new"}])
    got = consume_all(b.bootstrap, topic, [0], 1)
    assert [(m.offset(), m.value()) for m in got] == [(10, b"new")]


def test_dynamic_broker_configs(make_broker):
    """Broker-level topic defaults change at runtime for the cluster ("") or this broker, apply
    to every topic without its own value, are refused for static settings, and survive a
    restart."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigSource, ResourceType
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource as KConfigResource, ConfigResourceType

    b = make_broker().start()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    plain, pinned = topic_name("dyn"), topic_name("dynpin")
    create_topic(b.bootstrap, plain)
    create_topic(b.bootstrap, pinned, config={"retention.ms": "5000"})

    def alter(name, key, value, op=AlterConfigOpType.SET):
        res = ConfigResource(ResourceType.BROKER, name, incremental_configs=[ConfigEntry(key, value, incremental_operation=op)])
        admin.incremental_alter_configs([res])[res].result(10)

    def alter_cluster_default(key, value, op=0):
        with raw.connect(b.port) as s:
            assert raw.incremental_alter_configs_v0(s, 4, "", [(key, op, value)]) == (0, None)

    def topic_config(topic):
        res = ConfigResource(ResourceType.TOPIC, topic)
        return admin.describe_configs([res])[res].result(10)

    alter_cluster_default("message.max.bytes", "3000000")
    alter("1", "log.retention.ms", "100000")
    c = topic_config(plain)
    assert c["retention.ms"].value == "100000"
    assert c["retention.ms"].source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
    assert c["max.message.bytes"].value == "3000000"
    assert c["max.message.bytes"].source == ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value
    assert topic_config(pinned)["retention.ms"].value == "5000", "a topic's own value wins"
    # The new default limit is enforced at once.
    reports = produce(b.bootstrap, plain, [{"value": b"x" * 2_000_000}], **{"message.max.bytes": 4_000_000})
    assert reports[0][0] is None, reports

    me = ConfigResource(ResourceType.BROKER, "1")
    mine = admin.describe_configs([me])[me].result(10)
    assert mine["log.retention.ms"].value == "100000" and mine["message.max.bytes"].value == "3000000"

    # As Kafka: a read-only setting or a bad value is INVALID_REQUEST (KAFKA-13609); Sluice also
    # refuses a key that is no broker config at all.
    for key, value, code in [
        ("num.partitions", "3", KafkaError.INVALID_REQUEST),
        ("log.retention.ms", "soon", KafkaError.INVALID_REQUEST),
        ("no.such.setting", "1", KafkaError.INVALID_CONFIG),
    ]:
        with pytest.raises(KafkaException) as e:
            alter("1", key, value)
        assert e.value.args[0].code() == code, key
    with raw.connect(b.port) as s:
        err, message = raw.incremental_alter_configs_v0(s, 4, "7", [("log.retention.ms", 0, "1")])
        assert err == KafkaError.INVALID_REQUEST and "not this broker" in message

    # kafka-python changes only the keys it is given (it sends IncrementalAlterConfigs).
    k = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    k.alter_configs([KConfigResource(ConfigResourceType.BROKER, "1", configs={"log.segment.bytes": "2000000"})])
    k.close()
    c = topic_config(plain)
    assert c["segment.bytes"].value == "2000000" and c["retention.ms"].value == "100000"
    # The legacy AlterConfigs replaces the broker's whole dynamic set, as in Kafka.
    legacy = ConfigResource(ResourceType.BROKER, "1", set_config={"log.segment.bytes": "3000000"})
    admin.alter_configs([legacy])[legacy].result(10)
    c = topic_config(plain)
    assert c["segment.bytes"].value == "3000000"
    assert c["retention.ms"].value == "604800000", "the broker layer was replaced"

    b.stop()
    b.start()
    c = topic_config(plain)
    assert c["segment.bytes"].value == "3000000" and c["max.message.bytes"].value == "3000000"
    alter_cluster_default("message.max.bytes", None, 1)
    assert topic_config(plain)["max.message.bytes"].value == "1048588"


def test_delete_records_describe_cluster_and_log_dirs(broker):
    from kafka import KafkaAdminClient

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topic = topic_name("dr")
    create_topic(broker.bootstrap, topic)
    produce(broker.bootstrap, topic, [{"value": f"r{i}".encode()} for i in range(10)])
    deleted = admin.delete_records([TopicPartition(topic, 0, 4)])
    assert [f.result(10).low_watermark for f in deleted.values()] == [4]
    # A consumer starting from the beginning now starts at offset 4.
    got = consume_all(broker.bootstrap, topic, [0], expected=6)
    assert [m.offset() for m in got] == list(range(4, 10))
    with pytest.raises(KafkaException) as e:
        [f.result(10) for f in admin.delete_records([TopicPartition(topic, 0, 11)]).values()]
    assert e.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE

    cluster = admin.describe_cluster().result(10)
    assert cluster.cluster_id == admin.list_topics(timeout=10).cluster_id
    assert [(n.id, n.host, n.port) for n in cluster.nodes] == [(1, "127.0.0.1", broker.port)]

    k = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    dirs = k.describe_log_dirs()
    sizes = {t["name"]: t["partitions"][0]["partition_size"] for d in dirs[0]["log_dirs"] for t in d["topics"]}
    assert sizes[topic] > 0
    data_dir = dirs[0]["log_dirs"][0]
    disk = os.statvfs(broker.data_dir)
    assert data_dir["total_bytes"] == disk.f_blocks * disk.f_frsize
    assert 0 < data_dir["usable_bytes"] <= data_dir["total_bytes"]
    k.close()
