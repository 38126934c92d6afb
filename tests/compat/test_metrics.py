"""The admin HTTP port: /metrics parsed by Prometheus's own OpenMetrics parser after real clients
produce, consume and commit, with every counter checked against what the clients did;
/health and /ready."""

import urllib.error
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import kafka_raw

RECORDS = 100


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def scrape(broker):
    """Every sample as {(name, frozenset(labels)): value}."""
    status, content_type, text = get(broker.admin_url + "/metrics")
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0)


def total(samples, name, **labels):
    """Sum over every series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def test_health_and_ready(broker):
    assert get(broker.admin_url + "/health")[0] == 200
    status, _, body = get(broker.admin_url + "/ready")
    assert (status, body) == (200, "ready\n")
    assert get(broker.admin_url + "/nothing-here")[0] == 404


def test_counters_move_by_what_clients_did(broker):
    topic = "metered"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(10)
    before = scrape(broker)
    assert value(before, "sluice_topic_records_in_total", topic=topic) == 0

    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for i in range(RECORDS):
        producer.produce(topic, key=str(i).encode(), value=b"v" * 100, partition=i % 2)
    assert producer.flush(10) == 0

    after_produce = scrape(broker)
    assert value(after_produce, "sluice_topic_records_in_total", topic=topic) == RECORDS
    # Batches are stored as received: bytes in are exactly the partitions' log sizes.
    bytes_in = value(after_produce, "sluice_topic_bytes_in_total", topic=topic)
    assert bytes_in > RECORDS * 100
    assert bytes_in == total(after_produce, "sluice_log_size_bytes", topic=topic)
    for p in (0, 1):
        assert value(after_produce, "sluice_log_end_offset", topic=topic, partition=str(p)) == RECORDS // 2
        assert value(after_produce, "sluice_log_start_offset", topic=topic, partition=str(p)) == 0
    produces = value(after_produce, "sluice_requests_total", api="Produce") - value(
        before, "sluice_requests_total", api="Produce"
    )
    assert produces >= 1
    assert (
        value(after_produce, "sluice_request_duration_seconds_count", api="Produce")
        - value(before, "sluice_request_duration_seconds_count", api="Produce")
        == produces
    )
    assert value(after_produce, "sluice_topics") >= 1
    assert value(after_produce, "sluice_partitions") >= 2

    # Consume everything once: what goes out is exactly what came in.
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "metered-group",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)])
    seen = 0
    while seen < RECORDS:
        for m in consumer.consume(num_messages=RECORDS, timeout=10):
            assert m.error() is None, m.error()
            seen += 1
    assert seen == RECORDS
    # Commit 30 of partition 0's 50 and 10 of partition 1's: 60 records of lag left.
    consumer.commit(offsets=[TopicPartition(topic, 0, 30), TopicPartition(topic, 1, 10)], asynchronous=False)
    consumer.close()

    after = scrape(broker)
    assert value(after, "sluice_topic_records_out_total", topic=topic) == RECORDS
    assert value(after, "sluice_topic_bytes_out_total", topic=topic) == bytes_in
    assert value(after, "sluice_group_lag", group="metered-group", topic=topic, partition="0") == 20
    assert value(after, "sluice_group_lag", group="metered-group", topic=topic, partition="1") == 40
    assert value(after, "sluice_requests_total", api="OffsetCommit") >= 1

    # An error in a response is counted under its API and name.
    s = kafka_raw.connect(broker.port)
    err, _ = kafka_raw.produce_v3(s, topic, 99, b"\x00" * 70)
    s.close()
    assert err == 3  # UNKNOWN_TOPIC_OR_PARTITION
    errors = scrape(broker)
    assert (
        value(errors, "sluice_request_errors_total", api="Produce", error="UNKNOWN_TOPIC_OR_PARTITION")
        - value(after, "sluice_request_errors_total", api="Produce", error="UNKNOWN_TOPIC_OR_PARTITION")
        == 1
    )
    assert value(errors, "sluice_connections_accepted_total") >= 3
    assert value(errors, "process_resident_memory_bytes") > 1 << 20
    assert value(errors, "process_open_fds") > 0
    # A consumer's last long poll may still be waiting out its max wait: only present.
    assert ("sluice_fetch_purgatory_requests", frozenset()) in errors
    assert ("sluice_produce_purgatory_requests", frozenset()) in errors


def test_deleted_topic_leaves_metrics(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("short-lived", num_partitions=1, replication_factor=1)])["short-lived"].result(10)
    assert ("sluice_log_size_bytes", frozenset({("topic", "short-lived"), ("partition", "0")})) in scrape(broker)
    admin.delete_topics(["short-lived"])["short-lived"].result(10)
    assert not [k for k in scrape(broker) if ("topic", "short-lived") in k[1]]


def test_a_group_id_with_quotes_and_newlines_keeps_the_page_parseable(broker):
    """Group ids are the client's choice: the page must stay valid whatever they hold."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("odd", num_partitions=1, replication_factor=1)])["odd"].result(10)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for _ in range(5):
        producer.produce("odd", value=b"x")
    assert producer.flush(10) == 0
    group = 'a "quoted"\\ group\nwith a newline'
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition("odd", 0, 2)], asynchronous=False)
    consumer.close()
    samples = scrape(broker)
    assert value(samples, "sluice_group_lag", group=group, topic="odd", partition="0") == 3
    assert value(samples, "sluice_groups") >= 1
