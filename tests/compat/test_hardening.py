"""One hostile client must not take the broker down (issue 15, items 1-8): partition counts,
stalled and oversized requests, fetches that are never read, connection floods, costly
batches, group metadata, log floods and poison records. Each test drives the real binary with
raw frames (what an attacker sends) next to a real client (what must keep working)."""

import select
import socket
import struct
import subprocess
import time

import kafka_raw as raw
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic
from kafka.record.util import calc_crc32c

from conftest import BINARY
from test_produce_consume import topic_name

INVALID_PARTITIONS = 37
POLICY_VIOLATION = 44
INVALID_RECORD = 87
CORRUPT_MESSAGE = 2
MESSAGE_TOO_LARGE = 10
COORDINATOR_LOAD_IN_PROGRESS = 14


# ---- raw frames --------------------------------------------------------------------------


def zigzag(n: int) -> bytes:
    """A Kafka varint (zigzag, then base-128)."""
    z = (n << 1) ^ (n >> 63)
    z &= (1 << 64) - 1
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def record(offset_delta: int, key_len=None, key=None, value=b"v") -> bytes:
    """One v2 record. `key_len` overrides the key's length field (to send lengths no client
    would); otherwise `key` is written as given (None is null)."""
    body = b"\x00" + zigzag(0) + zigzag(offset_delta)
    if key_len is not None:
        body += zigzag(key_len)
    elif key is None:
        body += zigzag(-1)
    else:
        body += zigzag(len(key)) + key
    body += zigzag(len(value)) + value if value is not None else zigzag(-1)
    body += zigzag(0)  # headers
    return zigzag(len(body)) + body


def batch(records: bytes, count: int, codec: int = 0, timestamp=None) -> bytes:
    """A v2 batch of `count` records (already encoded, compressed if `codec` says so)."""
    ts = int(time.time() * 1000) if timestamp is None else timestamp
    after_crc = struct.pack(">hiqqqhii", codec, count - 1, ts, ts, -1, -1, -1, count) + records
    crc = calc_crc32c(after_crc)
    rest = struct.pack(">ibI", 0, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(rest)) + rest


def api_versions(s, correlation_id=1):
    s.sendall(raw.request_v1(18, 0, correlation_id))
    return raw.read_frame(s)


def create_topics_v2(s, topics, correlation_id=1):
    """`topics`: (name, partitions). Sends without reading the answer."""
    body = struct.pack(">i", len(topics))
    for name, n in topics:
        body += raw.string(name) + struct.pack(">ihii", n, -1, 0, 0)
    body += struct.pack(">ib", 60000, 0)
    s.sendall(raw.request_v1(19, 2, correlation_id, body))


def create_partitions_v0(s, topic, count, correlation_id=1):
    body = struct.pack(">i", 1) + raw.string(topic) + struct.pack(">ii", count, -1) + struct.pack(">ib", 60000, 0)
    s.sendall(raw.request_v1(37, 0, correlation_id, body))


def read_create_topics_v2(s):
    """CreateTopics v2 and CreatePartitions v0 answers: (name, error code, message) each."""
    frame = raw.read_frame(s)
    (n,) = struct.unpack(">i", frame[8:12])
    off, out = 12, []
    for _ in range(n):
        (ln,) = struct.unpack(">h", frame[off : off + 2])
        name = frame[off + 2 : off + 2 + ln].decode()
        off += 2 + ln
        err, ml = struct.unpack(">hh", frame[off : off + 4])
        off += 4
        msg = None if ml < 0 else frame[off : off + ml].decode()
        off += max(ml, 0)
        out.append((name, err, msg))
    return out


def fetch_v4(topic, partition, offset, max_bytes=2**31 - 1, partition_max=2**31 - 1, correlation_id=1, max_wait=100):
    body = struct.pack(">iiiib", -1, max_wait, 1, max_bytes, 0) + struct.pack(">i", 1) + raw.string(topic)
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, partition_max)
    return raw.request_v1(1, 4, correlation_id, body)


def join_group_v0(s, group, metadata: bytes, correlation_id=1):
    body = raw.string(group) + struct.pack(">i", 30000) + raw.string("") + raw.string("consumer")
    body += struct.pack(">i", 1) + raw.string("range") + struct.pack(">i", len(metadata)) + metadata
    s.sendall(raw.request_v1(11, 0, correlation_id, body))
    frame = raw.read_frame(s)
    (err,) = struct.unpack(">h", frame[4:6])
    return err


def answered(s, timeout) -> bool:
    return bool(select.select([s], [], [], timeout)[0])


def settle(broker, timeout=10):
    """Waits until the broker holds no connection (the fixture's readiness probe counts
    against per-address limits until the broker notices it closed)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = urllib.request.urlopen(broker.admin_url + "/metrics", timeout=5).read().decode()
        if any(l == "sluice_connections 0" for l in page.splitlines()):
            return
        time.sleep(0.05)
    raise AssertionError("the broker still holds connections")


def log_lines(broker, needle):
    return [l for l in broker.logs().splitlines() if needle in l]


# ---- 1. partition counts -------------------------------------------------------------------


def test_partition_counts_have_limits_refused_up_front(make_broker):
    b = make_broker(extra_args=["--set", "max.broker.partitions=200", "--set", "max.partitions.per.request=100"]).start()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})

    def create(name, n):
        return admin.create_topics([NewTopic(name, n, 1)], operation_timeout=30)[name].result(30)

    # The ~50-byte request that created 4,500 directories a second: refused before any
    # (raw: librdkafka will not send a count above 100,000).
    s = raw.connect(b.port)
    create_topics_v2(s, [("huge", 2**31 - 1)])
    [(_, err, message)] = read_create_topics_v2(s)
    assert err == INVALID_PARTITIONS and "max.partitions.per.request" in message, (err, message)
    with pytest.raises(KafkaException) as e:
        create("big", 101)
    assert e.value.args[0].code() == INVALID_PARTITIONS
    create("t1", 80)
    create_partitions_v0(s, "t1", 2**31 - 1)
    [(_, err, message)] = read_create_topics_v2(s)
    assert err == INVALID_PARTITIONS and "max.partitions.per.request" in message, (err, message)
    admin.create_partitions([NewPartitions("t1", 150)])["t1"].result(30)
    with pytest.raises(KafkaException) as e:
        create("t2", 60)
    assert e.value.args[0].code() == POLICY_VIOLATION
    assert "max.broker.partitions" in e.value.args[0].str()
    # Several topics in one request share its budget.
    create_topics_v2(s, [("t3", 30), ("t4", 30)])
    (_, e3, _), (_, e4, m4) = read_create_topics_v2(s)
    assert e3 == 0 and e4 == POLICY_VIOLATION, (e3, e4, m4)
    assert not (b.data_dir / "t2-0").exists(), "nothing is created for a refused topic"
    # The broker answers as before.
    assert admin.list_topics(timeout=10).topics.keys() >= {"t1", "t3"}


def test_partition_settings_out_of_range_are_refused_at_start(tmp_path):
    for setting in ["num.partitions=100000000", "max.partitions.per.request=0"]:
        out = subprocess.run(
            [str(BINARY), "server", "--data-dir", str(tmp_path / "d"), "--set", setting],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 2, out
        assert setting.split("=")[0] in out.stderr


def test_topic_creation_runs_off_the_request_threads(broker):
    """Creations held the async workers (a lock, then file work): with two of them busy the
    broker answered nothing, not even ApiVersions, until they were done."""
    creators = []
    for i in range(3):
        s = raw.connect(broker.port, timeout=120)
        create_topics_v2(s, [(topic_name(f"many{i}"), 4000)])
        creators.append(s)
    time.sleep(0.3)
    probe = raw.connect(broker.port, timeout=120)
    probe.sendall(raw.request_v1(18, 0, 7))
    assert answered(probe, 100), "ApiVersions was not answered"
    done = [i for i, s in enumerate(creators) if answered(s, 0)]
    assert not done, f"ApiVersions waited for creations {done} to finish"
    for s in creators:
        assert read_create_topics_v2(s)[0][1] == 0


# ---- 2. stalled request bodies -------------------------------------------------------------


def test_announced_but_unsent_requests_do_not_freeze_other_clients(broker):
    b = broker
    # Six connections announce 100 MB each (more than queued.max.request.bytes) and stall.
    stalled = [raw.connect(b.port) for _ in range(6)]
    for s in stalled:
        s.sendall(struct.pack(">i", 104857600))
    time.sleep(0.3)
    topic = topic_name("stall")
    p = Producer({"bootstrap.servers": b.bootstrap, "message.timeout.ms": 15000})
    delivered = []
    for i in range(10):
        p.produce(topic, b"v%d" % i, on_delivery=lambda err, m: delivered.append(err))
    assert p.flush(20) == 0
    assert delivered == [None] * 10
    for s in stalled:
        s.close()


def test_requests_that_stop_arriving_are_dropped(make_broker):
    b = make_broker(extra_args=["--set", "socket.request.read.timeout.ms=2000"]).start()
    stalled = [raw.connect(b.port) for _ in range(3)]
    for s in stalled:
        s.sendall(struct.pack(">i", 104857600))
    half = raw.connect(b.port)
    half.sendall(struct.pack(">i", 1000) + b"x" * 10)
    assert raw.is_closed(half, timeout=15)
    assert all(raw.is_closed(s, timeout=15) for s in stalled)
    assert log_lines(b, "socket.request.read.timeout.ms"), "the drop is logged"
    assert all("127.0.0.1" in l for l in log_lines(b, "socket.request.read.timeout.ms"))


# ---- 3. fetch responses --------------------------------------------------------------------


def fill(bootstrap, topic, total_bytes, record_bytes=10_000):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 100_000})
    for i in range(total_bytes // record_bytes):
        p.produce(topic, b"%08d" % i + b"x" * (record_bytes - 8), partition=0)
        if i % 100 == 0:
            p.poll(0)
    assert p.flush(30) == 0


def test_fetch_responses_are_capped_and_unread_ones_dropped(make_broker):
    b = make_broker(
        extra_args=["--set", "fetch.max.bytes=8388608", "--set", "socket.write.timeout.ms=1000"]
    ).start()
    topic = topic_name("fetchcap")
    fill(b.bootstrap, topic, 12_000_000)
    s = raw.connect(b.port)
    s.sendall(fetch_v4(topic, 0, 0))
    frame = raw.read_frame(s)
    # The records field's own framing aside, at most fetch.max.bytes of batches (the client
    # asked for 2 GiB; it got 12 MB before).
    assert 7_000_000 < len(frame) <= 8_388_608 + 4096, len(frame)
    # A client that asks for a large response and stops reading is dropped, not waited for.
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", b.port))
    stuck.sendall(fetch_v4(topic, 0, 0))
    time.sleep(4)
    got = 0
    stuck.settimeout(10)
    try:
        while True:
            chunk = stuck.recv(65536)
            if not chunk:
                break
            got += len(chunk)
    except (ConnectionResetError, socket.timeout):
        pass
    assert got < len(frame), f"the whole response was kept for a client that did not read ({got} bytes)"
    assert log_lines(b, "socket.write.timeout.ms")
    # Consumers are unaffected.
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "g", "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, 0, 0)])
    n, deadline = 0, time.monotonic() + 30
    while n < 1200 and time.monotonic() < deadline:
        m = c.poll(1)
        if m is not None and not m.error():
            n += 1
    c.close()
    assert n == 1200


# ---- 4. connections per address ------------------------------------------------------------


def test_connections_per_address_are_limited(make_broker):
    b = make_broker(extra_args=["--set", "max.connections.per.ip=5"]).start()
    settle(b)
    held = [raw.connect(b.port) for _ in range(5)]
    for i, s in enumerate(held):
        assert api_versions(s, i)
    extra = raw.connect(b.port)
    assert raw.is_closed(extra, timeout=5), "a sixth connection from the address is closed at once"
    for i, s in enumerate(held):
        assert api_versions(s, 10 + i), "the others keep working"
    # Many refusals: each line names the client, and repeats are rate-limited.
    for _ in range(200):
        raw.connect(b.port).close()
    time.sleep(0.5)
    lines = log_lines(b, "max.connections.per.ip")
    assert 1 <= len(lines) <= 10, f"{len(lines)} lines for 201 refusals"
    assert all("127.0.0.1" in l for l in lines)
    for s in held:
        s.close()


def test_per_address_overrides(make_broker):
    b = make_broker(
        extra_args=["--set", "max.connections.per.ip=1", "--set", "max.connections.per.ip.overrides=127.0.0.1:4"]
    ).start()
    settle(b)
    held = [raw.connect(b.port) for _ in range(4)]
    for i, s in enumerate(held):
        assert api_versions(s, i)
    assert raw.is_closed(raw.connect(b.port), timeout=5)


def test_at_max_connections_a_newcomer_waits_when_every_connection_has_spoken(make_broker):
    b = make_broker(extra_args=["--set", "max.connections=2"]).start()
    settle(b)
    first, second = raw.connect(b.port), raw.connect(b.port)
    assert api_versions(first) and api_versions(second)
    newcomer = raw.connect(b.port, timeout=20)
    newcomer.sendall(raw.request_v1(18, 0, 5))
    assert not answered(newcomer, 1), "no slot yet"
    first.close()
    assert answered(newcomer, 15), "served once a slot frees"
    assert raw.read_frame(newcomer)
    assert api_versions(second, 6)


def test_silent_connections_are_the_first_to_go_at_max_connections(make_broker):
    b = make_broker(extra_args=["--set", "max.connections=5"]).start()
    settle(b)
    spoke = raw.connect(b.port)
    assert api_versions(spoke)
    silent = [raw.connect(b.port) for _ in range(4)]
    time.sleep(0.3)
    newcomer = raw.connect(b.port, timeout=10)
    assert api_versions(newcomer, 2), "a new client gets in"
    assert raw.is_closed(silent[0], timeout=5), "the oldest silent connection made room"
    assert api_versions(spoke, 3), "a connection that spoke is kept"


# ---- 5. costly batches ---------------------------------------------------------------------


def zstd_bomb(records: int) -> bytes:
    """A valid zstd batch of many tiny records: cheap to send, costly to check."""
    import zstandard

    body = b"".join(record(i, value=b"") for i in range(records))
    return batch(zstandard.ZstdCompressor().compress(body), records, codec=4)


def test_costly_batches_are_checked_off_the_request_threads(make_broker):
    b = make_broker(extra_args=["--set", "message.max.bytes=10485760"]).start()
    topic = topic_name("bomb")
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    bomb = zstd_bomb(1_500_000)
    assert len(bomb) < 10_000_000
    senders = []
    for i in range(3):
        s = raw.connect(b.port, timeout=300)
        body = raw.string(None) + struct.pack(">hi", 1, 30000) + struct.pack(">i", 1) + raw.string(topic)
        body += struct.pack(">i", 1) + struct.pack(">ii", 0, len(bomb)) + bomb
        s.sendall(raw.request_v1(0, 3, 1, body))
        senders.append(s)
    time.sleep(0.3)
    probe = raw.connect(b.port, timeout=120)
    probe.sendall(raw.request_v1(18, 0, 7))
    assert answered(probe, 100)
    done = [i for i, s in enumerate(senders) if answered(s, 0)]
    assert not done, f"ApiVersions waited for batches {done} to be checked"
    for s in senders:
        raw.read_frame(s)
    # A snappy block that claims 60 MiB in a few bytes is refused without expanding it.
    # Raw snappy: the length varint (60 MiB), then far too little data.
    claim = bytes([0x80, 0x80, 0x80, 0x1E]) + b"\x00" * 60
    s = raw.connect(b.port)
    err, _ = raw.produce_v3(s, topic, 0, batch(claim, 1, codec=2))
    assert err in (CORRUPT_MESSAGE, INVALID_RECORD), err
    assert api_versions(s, 9)


# ---- 6. group member metadata --------------------------------------------------------------


def test_group_member_metadata_is_bounded(make_broker):
    b = make_broker(
        extra_args=[
            "--set", "group.max.member.metadata.bytes=100000",
            "--set", "group.max.memory.bytes=300000",
            "--set", "group.initial.rebalance.delay.ms=0",
        ]
    ).start()
    def connect_from(address):
        s = socket.socket()
        s.settimeout(30)
        s.bind((address, 0))
        s.connect(("127.0.0.1", b.port))
        return s

    s = connect_from("127.0.0.1")
    assert join_group_v0(s, "big", b"m" * 200_000) == MESSAGE_TOO_LARGE, "larger than one member may be"
    assert join_group_v0(s, "g1", b"m" * 90_000, 2) == 0
    # One address holds at most a quarter of the budget (here: one member's worth); past it,
    # a retriable answer, not a fatal one.
    assert join_group_v0(s, "g2", b"m" * 90_000, 3) == COORDINATOR_LOAD_IN_PROGRESS
    # Other addresses have their own share, within the total.
    assert join_group_v0(connect_from("127.0.0.2"), "g3", b"m" * 90_000) == 0
    assert join_group_v0(connect_from("127.0.0.3"), "g4", b"m" * 90_000) == 0
    assert join_group_v0(connect_from("127.0.0.4"), "g5", b"m" * 90_000) == COORDINATOR_LOAD_IN_PROGRESS
    assert log_lines(b, "group.max.memory.bytes")


def test_default_member_metadata_limit(broker):
    s = raw.connect(broker.port, timeout=30)
    assert join_group_v0(s, "huge", b"m" * 5_000_000) == MESSAGE_TOO_LARGE


# ---- 7. log floods -------------------------------------------------------------------------


def test_refused_frames_are_logged_with_the_address_and_rate_limited(broker):
    for _ in range(300):
        s = raw.connect(broker.port)
        s.sendall(struct.pack(">i", -1))
        raw.is_closed(s, timeout=5)
    lines = log_lines(broker, "frame size")
    assert 1 <= len(lines) <= 10, f"{len(lines)} lines for 300 refusals"
    assert all("127.0.0.1" in l for l in lines)


# ---- 8. poison records ---------------------------------------------------------------------


@pytest.mark.parametrize("length", [-2, -(2**31)])
def test_records_with_impossible_lengths_are_refused(broker, length):
    topic = topic_name("poison")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    s = raw.connect(broker.port)
    assert raw.produce_v3(s, topic, 0, batch(record(0, key=b"k"), 1)) == (0, 0)
    err, _ = raw.produce_v3(s, topic, 0, batch(record(0, key_len=length), 1), 2)
    assert err == INVALID_RECORD
    assert raw.produce_v3(s, topic, 0, batch(record(0, key=b"k2"), 1), 3) == (0, 1)
    # A consumer reads on past where the poison would have been.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "p", "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, 0, 0)])
    keys, deadline = [], time.monotonic() + 20
    while len(keys) < 2 and time.monotonic() < deadline:
        m = c.poll(1)
        if m is not None and not m.error():
            keys.append(m.key())
    c.close()
    assert keys == [b"k", b"k2"]
