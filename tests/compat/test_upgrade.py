"""Upgrade from the release before the metadata log: today's binary starts on a copy of a data
directory that release wrote (tests/fixtures/datadir-v1, made by make_datadir_v1.py) and every
topic, record, config, dynamic broker config, producer id and committed offset is there, read
with confluent-kafka, kafka-python and raw frames. Then: delete and re-create across a SIGKILL."""

import json
import shutil
import signal
import sys
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

import kafka_raw

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
sys.path.insert(0, str(FIXTURES))
from make_datadir_v1 import EXPECTED  # noqa: E402


def read_all(bootstrap, topic, partition, count):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "upgrade-check", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, partition, 0)])
    out = []
    for _ in range(200):
        if len(out) >= count:
            break
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            out.append(m)
    # Nothing beyond `count` either.
    extra = c.poll(0.5)
    c.close()
    assert extra is None or extra.error() is not None, f"unexpected record at {extra.offset()}"
    return out


def check_everything(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    md = admin.list_topics(timeout=10)
    for name, (partitions, configs) in EXPECTED["topics"].items():
        assert name in md.topics, sorted(md.topics)
        assert len(md.topics[name].partitions) == partitions
        res = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, name)])
        got = next(iter(res.values())).result(10)
        for k, v in configs.items():
            assert got[k].value == v and not got[k].is_default, (name, k, got[k])
    n = EXPECTED["orders_records_per_partition"]
    for part in range(3):
        msgs = read_all(broker.bootstrap, "orders", part, n)
        assert [(m.offset(), m.key(), m.value()) for m in msgs] == [
            (i, f"k{part}-{i}".encode(), f"v{part}-{i}".encode()) for i in range(n)
        ]
        assert [m.timestamp()[1] for m in msgs] == [1_700_000_000_000 + i for i in range(n)]
        assert [m.headers() for m in msgs] == [[("h", f"{i}".encode())] for i in range(n)]
    events = read_all(broker.bootstrap, "events.v1", 0, EXPECTED["events_records"])
    assert [m.value() for m in events] == [f"e{i}".encode() for i in range(EXPECTED["events_records"])]
    assert read_all(broker.bootstrap, "empty", 1, 0) == []

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "billing", "enable.auto.commit": False})
    committed = c.committed([TopicPartition(t, p) for (t, p) in EXPECTED["groups"]["billing"]], timeout=10)
    c.close()
    assert {(tp.topic, tp.partition): tp.offset for tp in committed} == EXPECTED["groups"]["billing"]

    res = admin.describe_configs([ConfigResource(ConfigResource.Type.BROKER, "1")])
    got = next(iter(res.values())).result(10)
    for k, v in EXPECTED["broker_configs"].items():
        assert got[k].value == v and got[k].source == 2, got[k]  # DYNAMIC_BROKER_CONFIG
    for k, v in EXPECTED["cluster_configs"].items():
        assert got[k].value == v and got[k].source == 3, got[k]  # DYNAMIC_DEFAULT_BROKER_CONFIG

    # Ids of the old release's block are never handed out again.
    with kafka_raw.connect(broker.port) as s:
        err, pid, _epoch = kafka_raw.init_producer_id_v0(s)
    assert err == 0 and pid >= EXPECTED["producer_ids_below"], (err, pid)


def test_a_data_directory_of_the_previous_release_is_converted_without_loss(make_broker, tmp_path):
    shutil.copytree(FIXTURES / "datadir-v1", tmp_path / "data")
    b = make_broker().start()
    check_everything(b)
    assert b.stop() == 0
    data = tmp_path / "data"
    for name in ["topics.json", "broker-configs.json", "producer-ids"]:
        assert not (data / name).exists() and (data / f"{name}.migrated").exists(), name
    assert (data / "__cluster_metadata-0" / "00000000000000000000.log").stat().st_size > 0
    # The second start reads the metadata log alone, after a SIGKILL too.
    b = make_broker().start()
    check_everything(b)
    b.stop(signal.SIGKILL)
    b = make_broker().start()
    check_everything(b)
    assert b.stop() == 0


def test_a_data_directory_of_the_local_metadata_log_release_opens_unchanged(make_broker, tmp_path):
    # datadir-v2: written by the release with the local metadata log (epoch 1 batches, no
    # quorum-state file), before the metadata quorum.
    shutil.copytree(FIXTURES / "datadir-v2", tmp_path / "data")
    meta = tmp_path / "data" / "__cluster_metadata-0"
    assert not (meta / "quorum-state").exists()
    b = make_broker().start()
    check_everything(b)
    assert b.stop() == 0
    # The quorum of one took over the log: a new epoch, recorded in Kafka's quorum-state file.
    state = json.loads((meta / "quorum-state").read_text())
    assert (state["leaderId"], state["leaderEpoch"], state["data_version"]) == (1, 2, 0), state
    b = make_broker().start()
    check_everything(b)
    b.stop(signal.SIGKILL)
    b = make_broker().start()
    check_everything(b)
    assert b.stop() == 0
    assert json.loads((meta / "quorum-state").read_text())["leaderEpoch"] == 4


def test_a_topic_deleted_and_created_again_never_sees_its_old_records_even_across_a_kill(make_broker):
    b = make_broker().start()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    for f in admin.create_topics([NewTopic("phoenix", 2, 1)]).values():
        f.result(10)
    p = Producer({"bootstrap.servers": b.bootstrap})
    for i in range(30):
        p.produce("phoenix", value=f"old-{i}", partition=i % 2)
    assert p.flush(10) == 0
    for f in admin.delete_topics(["phoenix"]).values():
        f.result(10)
    # Killed right after the deletion was answered: the renamed directories may still be there.
    b.stop(signal.SIGKILL)
    b = make_broker().start()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    assert "phoenix" not in admin.list_topics(timeout=10).topics
    for f in admin.create_topics([NewTopic("phoenix", 3, 1)]).values():
        f.result(10)
    p = Producer({"bootstrap.servers": b.bootstrap})
    p.produce("phoenix", value=b"new", partition=0)
    assert p.flush(10) == 0
    b.stop(signal.SIGKILL)
    b = make_broker().start()
    msgs = read_all(b.bootstrap, "phoenix", 0, 1)
    assert [m.value() for m in msgs] == [b"new"]
    for part in (1, 2):
        assert read_all(b.bootstrap, "phoenix", part, 0) == []
    assert b.stop() == 0
