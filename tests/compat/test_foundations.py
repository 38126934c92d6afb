"""The broker skeleton against real clients (kcat, confluent-kafka, kafka-python, aiokafka)
and against protocol edge cases."""

import asyncio
import json
import signal
import struct
import subprocess

import kafka_raw as raw
import pytest

API_VERSIONS = 18
METADATA = 3


def test_kcat_lists_the_cluster(broker):
    out = subprocess.run(
        ["kcat", "-b", broker.bootstrap, "-L", "-J", "-m", "10"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    md = json.loads(out.stdout)
    assert md["brokers"] == [{"id": 1, "name": f"{broker.bootstrap}"}]
    assert md["controllerid"] == 1
    assert md["topics"] == []


def test_confluent_admin_lists_topics(broker):
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    md = admin.list_topics(timeout=10)
    assert md.controller_id == 1
    assert len(md.cluster_id) == 22 and md.cluster_id != "A" * 22
    assert [(b.id, b.host, b.port) for b in md.brokers.values()] == [(1, "127.0.0.1", broker.port)]
    assert md.topics == {}


def test_kafka_python_connects_and_probes_versions(broker):
    from kafka import KafkaAdminClient, KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
    try:
        assert consumer.topics() == set()
    finally:
        consumer.close()
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        cluster = admin.describe_cluster()
        assert cluster["controller_id"] == 1
        assert [(b["broker_id"], b["port"]) for b in cluster["brokers"]] == [(1, broker.port)]
    finally:
        admin.close()


def test_aiokafka_bootstraps(broker):
    from aiokafka import AIOKafkaClient

    async def run():
        client = AIOKafkaClient(bootstrap_servers=broker.bootstrap)
        await client.bootstrap()
        try:
            return [b.nodeId for b in client.cluster.brokers()]
        finally:
            await client.close()

    assert asyncio.run(run()) == [1]


def test_cluster_id_survives_a_restart(make_broker):
    from confluent_kafka.admin import AdminClient

    b = make_broker().start()
    first = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10).cluster_id
    assert b.stop() == 0
    b.start()
    assert AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10).cluster_id == first


def test_api_versions_from_the_future_gets_the_v0_fallback(broker):
    s = raw.connect(broker.port)
    s.sendall(raw.request_v2(API_VERSIONS, 99, 42))
    corr, err, keys = raw.parse_api_versions_v0(raw.read_frame(s))
    assert corr == 42
    assert err == 35  # UNSUPPORTED_VERSION
    assert keys[API_VERSIONS] == (0, 4)
    assert METADATA in keys
    # The connection stays usable: the client retries with a version we have.
    s.sendall(raw.request_v1(API_VERSIONS, 0, 43))
    corr, err, _ = raw.parse_api_versions_v0(raw.read_frame(s))
    assert (corr, err) == (43, 0)


def test_pipelined_requests_are_answered_in_order(broker):
    s = raw.connect(broker.port)
    s.sendall(b"".join(raw.request_v1(API_VERSIONS, 0, i) for i in range(50)))
    assert [raw.parse_api_versions_v0(raw.read_frame(s))[0] for _ in range(50)] == list(range(50))


@pytest.mark.parametrize(
    "frame",
    [
        struct.pack(">i", 104857601),  # larger than socket.request.max.bytes
        struct.pack(">i", -5),  # negative size
        struct.pack(">i", 2) + b"\x00\x12",  # header cut short
        raw.request_v1(999, 0, 1),  # unknown api key
        raw.request_v1(METADATA, 77, 1),  # unsupported version
        raw.request_v1(METADATA, 1, 1, body=b"\x7f\xff\xff\xff"),  # array count far beyond the frame
    ],
    ids=["oversized", "negative", "short-header", "unknown-api", "unsupported-version", "hostile-count"],
)
def test_bad_frames_close_that_connection_only(broker, frame):
    bystander = raw.connect(broker.port)
    s = raw.connect(broker.port)
    s.sendall(frame)
    assert raw.is_closed(s), "the broker should close a connection that sent a bad frame"
    bystander.sendall(raw.request_v1(API_VERSIONS, 0, 7))
    assert raw.parse_api_versions_v0(raw.read_frame(bystander))[:2] == (7, 0)
    assert broker.proc.poll() is None


def test_bad_config_is_refused_with_the_key_named(tmp_path):
    from conftest import BINARY

    out = subprocess.run(
        [str(BINARY), "server", "--data-dir", str(tmp_path), "--set", "max.connections=lots"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "max.connections" in out.stderr and "whole number" in out.stderr
    config = tmp_path / "sluice.toml"
    config.write_text('node.id = 1\nlisteners = "127.0.0.1:1"\nretention = 5\n')
    out = subprocess.run(
        [str(BINARY), "server", "--config", str(config), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "sluice.toml" in out.stderr and "unknown setting `retention`" in out.stderr


def test_two_brokers_cannot_share_a_data_dir(make_broker):
    first = make_broker().start()
    second = make_broker()
    second.data_dir = first.data_dir
    with pytest.raises(RuntimeError, match="in use by another sluice process"):
        second.start()


def test_sigint_stops_the_broker_cleanly(make_broker):
    b = make_broker().start()
    assert b.stop(signal.SIGINT) == 0
    assert "sluice broker stopped" in b.logs()


def test_stalled_and_idle_connections_are_closed(make_broker):
    b = make_broker(extra_args=["--set", "connections.max.idle.ms=300"]).start()
    stalled = raw.connect(b.port)
    stalled.sendall(struct.pack(">i", 1000) + b"\x00\x12")  # announces 1000 bytes, sends 2
    idle = raw.connect(b.port)
    assert raw.is_closed(stalled, timeout=10)
    assert raw.is_closed(idle, timeout=10)
    fresh = raw.connect(b.port)
    fresh.sendall(raw.request_v1(API_VERSIONS, 0, 3))
    assert raw.parse_api_versions_v0(raw.read_frame(fresh))[:2] == (3, 0)


def test_shutdown_does_not_wait_for_a_stalled_client(make_broker):
    b = make_broker().start()
    stalled = raw.connect(b.port)
    stalled.sendall(struct.pack(">i", 1000) + b"\x00\x12")
    fresh = raw.connect(b.port)
    fresh.sendall(raw.request_v1(API_VERSIONS, 0, 1))
    raw.read_frame(fresh)
    assert b.stop(timeout=15) == 0
