"""Issue 15, data on disk: damage found in the data directory is never served wrong and never
dropped silently. Each test damages real files of a real broker the way a disk, an operator or
a stray script would, restarts the real binary, and checks that the damage is reported (with
the file named) and worked around, or that the broker refuses to start with exit code 2 and a
message that says which file and what to do."""

import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import uuid
from pathlib import Path

import kafka_raw as raw
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import BINARY, Broker, free_port


def create_topic(bootstrap, name, partitions=1, config=None):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})])
    fs[name].result(15)


def produce(bootstrap, topic, values, partition=0):
    """One batch per record (so small segments roll), all acknowledged."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "batch.num.messages": 1, "acks": "all"})
    errors = []
    for v in values:
        p.produce(topic, value=v, partition=partition, on_delivery=lambda e, m: e and errors.append(e))
        p.flush(10)
    assert not errors, errors


def consume(bootstrap, topic, partition=0, timeout=20):
    """Every record from the low watermark to the high watermark: [(offset, value)]."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader-" + uuid.uuid4().hex[:6], "enable.auto.commit": False})
    low, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    c.assign([TopicPartition(topic, partition, low)])
    out = []
    deadline = time.monotonic() + timeout
    while (not out or out[-1][0] < high - 1) and time.monotonic() < deadline and high > low:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            out.append((m.offset(), m.value()))
    c.close()
    return low, high, out


def watermarks(bootstrap, topic, partition=0):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "wm"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    finally:
        c.close()


def run_server(data_dir, timeout=30):
    """Starts the binary expecting it to refuse: (exit code, stderr+stdout)."""
    out = subprocess.run(
        [str(BINARY), "server", "--listeners", f"127.0.0.1:{free_port()}", "--admin-listeners", "", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return out.returncode, out.stderr + out.stdout


def segments(partition_dir):
    return sorted(p for p in Path(partition_dir).iterdir() if p.suffix == ".log")


def error_lines(logs):
    return [l for l in logs.splitlines() if "ERROR" in l]


def java_hash_partition(group, partitions=50):
    h = 0
    data = group.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (h * 31 + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    if h >= 1 << 31:
        h -= 1 << 32
    h = 0 if h == -(1 << 31) else abs(h)
    return h % partitions


# --- item 9: damage in __consumer_offsets ---------------------------------------------------


def batch_positions(data):
    pos, out = 0, []
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">i", data[pos + 8 : pos + 12])
        out.append(pos)
        pos += 12 + length
    return out


@pytest.mark.parametrize("where", ["records", "header"])
def test_a_flipped_byte_in_consumer_offsets_is_skipped_and_reported(make_broker, where):
    """records: the damaged batch is stepped over by its header. header: the batch cannot be
    stepped over, so the log is cut there (as after a crash); either way the commit before the
    damage is kept and the coordinator goes on writing to that partition."""
    b = make_broker().start()
    topic = "orders"
    create_topic(b.bootstrap, topic)
    produce(b.bootstrap, topic, [b"v%d" % i for i in range(10)])
    group = "g-damaged"
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group, "enable.auto.commit": False})
    # One batch per commit; more than an index interval (4096 bytes), so the damage lies where
    # opening after a clean shutdown trusts the index and does not look.
    for offset in range(1, 61):
        c.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    c.close()
    assert b.stop() == 0
    part = b.data_dir / f"__consumer_offsets-{java_hash_partition(group)}"
    log = segments(part)[-1]
    data = bytearray(log.read_bytes())
    positions = batch_positions(data)
    assert len(positions) == 60 and positions[10] < 4096
    if where == "records":
        # Inside the batch of the 10th commit (offset 10): its CRC no longer holds.
        data[positions[10] - 2] ^= 0xFF
    else:
        data[positions[9] + 16] = 0x7F  # that batch's magic byte
    log.write_bytes(bytes(data))
    b.start()
    errors = [l for l in error_lines(b.logs()) if "__consumer_offsets" in l]
    assert errors and log.name in errors[0], b.logs()
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group, "enable.auto.commit": False})
    committed = c.committed([TopicPartition(topic, 0)], timeout=10)
    c.close()
    # Skipped: the commits after the damaged batch are kept too. Cut: the one before it.
    assert committed[0].offset == (60 if where == "records" else 9), "commits before the damage are kept"
    # The coordinator keeps working on the damaged partition.
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, 0, 5)], asynchronous=False)
    assert c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == 5
    c.close()
    assert "panicked" not in b.logs(), b.logs()


# --- item 10: a full disk at start ----------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def fill(path):
    """Fills the file system holding `path` until no byte more fits."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def produce_raw(port, topic, value):
    from kafka.record.default_records import DefaultRecordBatchBuilder

    bb = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                   producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    bb.append(0, timestamp=None, key=None, value=value, headers=[])
    s = raw.connect(port)
    try:
        return raw.produce_v3(s, topic, 0, bytes(bb.build()))
    finally:
        s.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["clean", "sigkill"])
def test_a_full_disk_at_start_still_serves_reads(small_disk, sig):
    data_dir = small_disk / "data"
    b = Broker(data_dir)
    b.log_path = small_disk.parent / "broker.log"
    b.start()
    try:
        topic = "drain-me"
        create_topic(b.bootstrap, topic)
        produce(b.bootstrap, topic, [b"r%d" % i for i in range(20)])
        b.stop(sig)
        fill(small_disk / "filler")
        b.start()
        # Starting removed a file or two (the clean-shutdown marker): fill what they freed.
        fill(small_disk / "filler2")
        low, high, got = consume(b.bootstrap, topic)
        assert (low, high) == (0, 20) and [v for _, v in got] == [b"r%d" % i for i in range(20)]
        # Writes fail with KAFKA_STORAGE_ERROR (56) while the disk is full.
        for _ in range(5):
            assert produce_raw(b.port, topic, b"x" * 8000)[0] == 56
        logs = b.logs().split("sluice broker started")[-1]
        storage_errors = [l for l in error_lines(logs) if "drain-me" in l and "KAFKA_STORAGE_ERROR" in l]
        assert len(storage_errors) == 1, "storage errors are logged, once per partition per interval:\n" + logs
        # A group needs __consumer_offsets, which cannot be created now: no partial directories
        # and no ERROR per FindCoordinator.
        for _ in range(10):
            s = raw.connect(b.port)
            s.sendall(raw.request_v1(10, 0, 1, raw.string("g-full")))
            frame = raw.read_frame(s)
            s.close()
            assert struct.unpack(">h", frame[4:6])[0] == 15  # COORDINATOR_NOT_AVAILABLE
        assert not list(data_dir.glob("__consumer_offsets-*")), sorted(os.listdir(data_dir))
        logs = b.logs().split("sluice broker started")[-1]
        assert len([l for l in error_lines(logs) if "__consumer_offsets" in l]) <= 1, logs
        # Space comes back: writes succeed again, and groups work.
        (small_disk / "filler").unlink()
        (small_disk / "filler2").unlink()
        deadline = time.monotonic() + 10
        while produce_raw(b.port, topic, b"after")[0] != 0:
            assert time.monotonic() < deadline, "writes do not resume once space returns"
            time.sleep(0.2)
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "g-full", "enable.auto.commit": False})
        c.commit(offsets=[TopicPartition(topic, 0, 5)], asynchronous=False)
        c.close()
    finally:
        b.stop(signal.SIGKILL)


# --- item 11: every file read at start is validated ------------------------------------------


def many_segments(make_broker, records=30):
    b = make_broker().start()
    topic = "segmented"
    create_topic(b.bootstrap, topic, config={"segment.bytes": "300"})
    produce(b.bootstrap, topic, [b"value-%03d" % i + b"x" * 100 for i in range(records)])
    assert b.stop() == 0
    part = b.data_dir / f"{topic}-0"
    segs = segments(part)
    assert len(segs) >= 5, segs
    return b, topic, part, segs


def test_a_deleted_middle_segment_is_reported_and_the_rest_kept(make_broker):
    b, topic, part, segs = many_segments(make_broker)
    gone = segs[2]
    missing_from, missing_to = int(gone.stem), int(segs[3].stem)
    gone.unlink()
    gone.with_suffix(".index").unlink(missing_ok=True)
    b.start()
    errors = [l for l in error_lines(b.logs()) if segs[1].name in l and segs[3].name in l]
    assert errors, b.logs()
    assert f"{missing_from}" in errors[0] and f"{missing_to}" in errors[0]
    low, high, got = consume(b.bootstrap, topic)
    assert high == 30, "acknowledged records after the hole are still served"
    offsets = [o for o, _ in got]
    assert offsets == [o for o in range(30) if not missing_from <= o < missing_to]


def test_a_stray_segment_file_does_not_move_the_log_end(make_broker):
    b, topic, part, segs = many_segments(make_broker)
    stray = part / "00000000000000099999.log"
    shutil.copy(segs[0], stray)
    (part / "junk.log").write_bytes(b"not a segment")
    b.start()
    assert watermarks(b.bootstrap, topic) == (0, 30)
    assert not stray.exists() and not (part / "junk.log").exists(), "quarantined under another name"
    logs = b.logs()
    assert any(stray.name in l for l in error_lines(logs)), logs
    assert any("junk.log" in l for l in logs.splitlines() if "WARN" in l or "ERROR" in l), logs
    produce(b.bootstrap, topic, [b"next"])
    assert watermarks(b.bootstrap, topic) == (0, 31)


def test_an_emptied_first_segment_does_not_wipe_the_partition(make_broker):
    b, topic, part, segs = many_segments(make_broker)
    first_kept = int(segs[1].stem)
    segs[0].write_bytes(b"")
    b.start()
    assert any(segs[0].name in l for l in error_lines(b.logs())), b.logs()
    low, high, got = consume(b.bootstrap, topic)
    assert high == 30 and low <= first_kept
    assert [o for o, _ in got] == list(range(first_kept, 30))


def test_a_lost_metadata_log_refuses_start(make_broker):
    b = make_broker().start()
    create_topic(b.bootstrap, "kept")
    produce(b.bootstrap, "kept", [b"old"])
    assert b.stop() == 0
    shutil.rmtree(b.data_dir / "__cluster_metadata-0")
    code, out = run_server(b.data_dir)
    assert code == 2, out
    assert "__cluster_metadata-0" in out and "kept-0" in out, out
    assert (b.data_dir / "kept-0" / "00000000000000000000.log").stat().st_size > 0, "nothing removed"


def test_a_partition_directory_the_metadata_log_does_not_know_is_removed_at_start(make_broker):
    b = make_broker().start()
    create_topic(b.bootstrap, "reborn")
    produce(b.bootstrap, "reborn", [b"old-1", b"old-2"])
    assert b.stop() == 0
    # A directory of a topic id the metadata log does not hold (a deleted topic's, put back
    # from a backup by hand...): never served, removed after a line naming it.
    shutil.copytree(b.data_dir / "reborn-0", b.data_dir / "ghost-0")
    b.start()
    deadline = time.monotonic() + 10
    while any(d.startswith("ghost-0") for d in os.listdir(b.data_dir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(d.startswith("ghost-0") for d in os.listdir(b.data_dir)), os.listdir(b.data_dir)
    assert any("ghost-0" in l for l in b.logs().splitlines() if "WARN" in l), b.logs()
    assert watermarks(b.bootstrap, "reborn") == (0, 2), "the known partition is untouched"
    # Each partition directory names its topic id, as Kafka's partition.metadata does.
    meta = (b.data_dir / "reborn-0" / "partition.metadata").read_text()
    assert meta.startswith("version: 0\ntopic_id: "), meta


def test_a_deleted_topics_directories_go_and_crash_leftovers_are_cleaned_at_start(make_broker):
    b = make_broker().start()
    create_topic(b.bootstrap, "doomed", partitions=2)
    produce(b.bootstrap, "doomed", [b"old-1", b"old-2"])
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.delete_topics(["doomed"])["doomed"].result(30)
    # Renamed at once (the name is free for a new topic), removed in the background.
    assert not (b.data_dir / "doomed-0").exists() and not (b.data_dir / "doomed-1").exists()
    deadline = time.monotonic() + 10
    while any(d.startswith("doomed-") for d in os.listdir(b.data_dir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(d.startswith("doomed-") for d in os.listdir(b.data_dir)), os.listdir(b.data_dir)
    create_topic(b.bootstrap, "doomed", partitions=2)
    assert watermarks(b.bootstrap, "doomed") == (0, 0)
    assert b.stop() == 0
    # A crash between the rename and the removal leaves `-delete` directories, and one before
    # the rename leaves a directory of no topic: the next start removes the first and moves the
    # second aside.
    leftover = b.data_dir / "gone-0.0123456789abcdef0123456789abcdef-delete"
    leftover.mkdir()
    (leftover / "00000000000000000000.log").write_bytes(b"x" * 100)
    unknown = b.data_dir / "orphan-0"
    unknown.mkdir()
    (unknown / "00000000000000000000.log").write_bytes(b"")
    b.start()
    deadline = time.monotonic() + 10
    while leftover.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not leftover.exists()
    assert not unknown.exists()
    assert any(d.startswith("orphan-0.") and d.endswith("-stray") for d in os.listdir(b.data_dir))


def test_a_partition_dir_of_another_topic_id_is_quarantined(make_broker):
    b = make_broker().start()
    create_topic(b.bootstrap, "swapped")
    produce(b.bootstrap, "swapped", [b"old"])
    assert b.stop() == 0
    # The directory now names another topic id than the metadata log gives the topic.
    other = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    (b.data_dir / "swapped-0" / "partition.metadata").write_text(f"version: 0\ntopic_id: {other}\n")
    b.start()
    assert watermarks(b.bootstrap, "swapped") == (0, 0), "a directory of another topic id is not served"
    assert any(d.startswith("swapped-0.") and d.endswith("-stray") for d in os.listdir(b.data_dir))
    assert any("swapped-0" in l and "partition.metadata" in l for l in error_lines(b.logs())), b.logs()


def test_a_deleted_partition_directory_is_reported(make_broker):
    b = make_broker().start()
    create_topic(b.bootstrap, "lost", partitions=2)
    produce(b.bootstrap, "lost", [b"gone"], partition=1)
    assert b.stop() == 0
    shutil.rmtree(b.data_dir / "lost-1")
    b.start()
    assert any("lost-1" in l and "missing" in l for l in error_lines(b.logs())), b.logs()


@pytest.mark.parametrize(
    "entry,why",
    [
        ({"name": "../../etc", "id": str(uuid.uuid4()), "partitions": 1}, "../../etc"),
        ({"name": "ok", "id": str(uuid.uuid4()), "partitions": -3}, "-3"),
        ({"name": "ok", "id": str(uuid.uuid4()), "partitions": 100000000}, "100000000"),
    ],
    ids=["path-escape", "negative-partitions", "huge-partitions"],
)
def test_a_bad_topics_json_entry_refuses_start(tmp_path, entry, why):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "topics.json").write_text(json.dumps([entry]))
    code, out = run_server(data_dir)
    assert code == 2, out
    assert "topics.json" in out and why in out, out
    assert not (tmp_path / "etc-0").exists() and not (tmp_path.parent / "etc-0").exists()


def test_negative_producer_ids_refuse_start(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "producer-ids").write_text("-5\n")
    code, out = run_server(data_dir)
    assert code == 2, out
    assert "producer-ids" in out and "-5" in out, out


def test_the_lock_holds_when_the_lock_file_is_deleted(make_broker):
    a = make_broker().start()
    lock = a.data_dir / ".lock"
    if lock.exists():
        lock.unlink()
    code, out = run_server(a.data_dir, timeout=20)
    assert code == 2, out
    assert "in use by another sluice process" in out, out


# --- item 12: small ones --------------------------------------------------------------------


def test_an_empty_partition_restarts_without_a_false_alarm(make_broker):
    b = make_broker().start()
    create_topic(b.bootstrap, "empty", partitions=2)
    assert b.stop() == 0
    b.start()
    assert b.stop() == 0
    assert "does not fit" not in b.logs(), b.logs()


def offset_commit_v2(port, group: bytes, topic, offset):
    body = struct.pack(">h", len(group)) + group + struct.pack(">i", -1) + raw.string("") + struct.pack(">q", -1)
    body += struct.pack(">i", 1) + raw.string(topic) + struct.pack(">i", 1) + struct.pack(">iq", 0, offset) + raw.string("")
    s = raw.connect(port)
    try:
        s.sendall(raw.request_v1(8, 2, 1, body))
        frame = raw.read_frame(s)
    finally:
        s.close()
    off = 4 + 4
    (n,) = struct.unpack(">h", frame[off : off + 2])
    off += 2 + n + 4
    _p, err = struct.unpack(">ih", frame[off : off + 6])
    return err


def test_group_ids_with_control_characters_keep_metrics_valid(broker):
    create_topic(broker.bootstrap, "m")
    produce(broker.bootstrap, "m", [b"a", b"b"])
    weird = "g\x00\x01\x1b[31m\x7f%"
    assert offset_commit_v2(broker.port, weird.encode(), "m", 1) == 0
    import urllib.request

    with urllib.request.urlopen(broker.admin_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    assert not any(ord(ch) < 0x20 and ch != "\n" or ord(ch) == 0x7F for ch in text), "no control characters"
    groups = set()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if "group" in s.labels:
                groups.add(s.labels["group"])
    assert any(g.startswith("g") and "31m" in g for g in groups), groups


def test_a_group_id_that_is_not_utf8_is_refused(broker):
    create_topic(broker.bootstrap, "u")
    # INVALID_GROUP_ID (24): b"a\xff" and b"a\xfe" would otherwise both become "a\ufffd".
    assert offset_commit_v2(broker.port, b"a\xff", "u", 1) == 24
    assert offset_commit_v2(broker.port, b"a\xfe", "u", 1) == 24
    assert offset_commit_v2(broker.port, "a\u00ff".encode(), "u", 1) == 0
