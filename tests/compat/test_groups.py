"""Consumer groups with real clients against the real binary: partitions shared out and moved
when members come and go, committed offsets that survive restarts, cooperative and static
membership, and group admin."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition, ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient

from test_produce_consume import create_topic, produce, topic_name

# Groups form without the initial 3 s wait, to keep the suite quick (the wait itself is
# covered by the state machine tests).
FAST_GROUPS = ["--set", "group.initial.rebalance.delay.ms=0"]


@pytest.fixture
def gbroker(make_broker):
    return make_broker(extra_args=FAST_GROUPS).start()


def group_name():
    return f"g-{uuid.uuid4().hex[:10]}"


class Member:
    """A confluent-kafka consumer in a group, recording what it is given and what it reads."""

    def __init__(self, bootstrap, group, topics, **conf):
        self.assigned = set()
        self.events = []
        self.records = []
        self.c = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": True,
                "auto.commit.interval.ms": 200,
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 500,
                **conf,
            }
        )
        self.cooperative = conf.get("partition.assignment.strategy") == "cooperative-sticky"
        self.c.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, c, parts):
        ps = {p.partition for p in parts}
        self.events.append(("assign", ps))
        if self.cooperative:
            self.assigned |= ps
        else:
            self.assigned = ps

    def _on_revoke(self, c, parts):
        ps = {p.partition for p in parts}
        self.events.append(("revoke", ps))
        self.assigned -= ps

    def poll(self, t=0.1):
        m = self.c.poll(t)
        if m is not None and not m.error():
            self.records.append((m.partition(), m.offset(), m.value()))

    def close(self):
        self.c.close()


def pump(members, until, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in members:
            m.poll(0.05)
        if until():
            return
    state = [(sorted(m.assigned), len(m.records)) for m in members]
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; members: {state}")


def partitions_shared(members, n):
    owned = [p for m in members for p in m.assigned]
    return sorted(owned) == list(range(n))


def test_three_members_share_six_partitions_and_read_every_record_once(gbroker):
    topic = topic_name("grp")
    create_topic(gbroker.bootstrap, topic, partitions=6)
    group = group_name()
    members = [Member(gbroker.bootstrap, group, [topic]) for _ in range(3)]
    pump(members, lambda: partitions_shared(members, 6) and all(len(m.assigned) == 2 for m in members),
         what="3 members with 2 partitions each")
    produce(gbroker.bootstrap, topic, [{"value": f"v{i}".encode(), "partition": i % 6} for i in range(600)])
    pump(members, lambda: sum(len(m.records) for m in members) >= 600, what="600 records")
    time.sleep(0.5)
    for m in members:
        m.poll(0.1)
    values = [v for m in members for (_, _, v) in m.records]
    assert len(values) == 600 and set(values) == {f"v{i}".encode() for i in range(600)}
    for m in members:
        assert {p for (p, _, _) in m.records} <= m.assigned, "a member read only its own partitions"
    for m in members:
        m.close()


class PythonMember(threading.Thread):
    """A kafka-python consumer polling in its own thread. kafka-python 3.0.12 must be polled
    with a timeout longer than a rebalance takes: a JoinGroup that completes while no poll
    waits for it is thrown away and sent again, so round-robin polling of several consumers
    with short timeouts rebalances for ever (seen against this broker; the code path is the
    client's `ensure_active_group`)."""

    def __init__(self, bootstrap, group, topic):
        from kafka import KafkaConsumer

        super().__init__(daemon=True)
        self.c = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            # Long: a takeover must come from the LeaveGroup, not a timeout.
            session_timeout_ms=30000,
            heartbeat_interval_ms=500,
        )
        self.assigned = set()
        self.stop = threading.Event()
        self.start()

    def run(self):
        while not self.stop.is_set():
            self.c.poll(timeout_ms=500)
            self.assigned = {tp.partition for tp in self.c.assignment()}
        self.c.close()


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_more_members_than_partitions_and_a_leaving_member_is_replaced_at_once(gbroker):
    """kafka-python: the third member of a two-partition topic idles until another leaves."""
    topic = topic_name("idle")
    create_topic(gbroker.bootstrap, topic, partitions=2)
    group = group_name()
    members = [PythonMember(gbroker.bootstrap, group, topic) for _ in range(3)]
    try:
        wait_for(
            lambda: sorted(p for m in members for p in m.assigned) == [0, 1]
            and sorted(len(m.assigned) for m in members) == [0, 1, 1],
            60,
            "one idle member",
        )
        idle = next(m for m in members if not m.assigned)
        leaving = next(m for m in members if m.assigned)
        staying = next(m for m in members if m is not idle and m is not leaving)
        left_at = time.monotonic()
        leaving.stop.set()
        leaving.join(30)
        # The range assignor may swap partitions between the two that remain; what matters is
        # that the idle member now has one and both partitions are owned.
        wait_for(
            lambda: len(idle.assigned) == 1 and sorted(idle.assigned | staying.assigned) == [0, 1],
            60,
            "the idle member to take over",
        )
        # The session timeout is 30 s: only the LeaveGroup explains a takeover well before it.
        assert time.monotonic() - left_at < 20
    finally:
        for m in members:
            m.stop.set()
        for m in members:
            m.join(30)


def test_two_groups_each_receive_every_record(gbroker):
    topic = topic_name("two")
    create_topic(gbroker.bootstrap, topic, partitions=3)
    produce(gbroker.bootstrap, topic, [{"value": f"r{i}".encode(), "partition": i % 3} for i in range(90)])
    a = Member(gbroker.bootstrap, group_name(), [topic])
    b = Member(gbroker.bootstrap, group_name(), [topic])
    pump([a, b], lambda: len(a.records) >= 90 and len(b.records) >= 90, what="both groups to read 90")
    assert sorted(v for (_, _, v) in a.records) == sorted(v for (_, _, v) in b.records)
    assert len(set(v for (_, _, v) in a.records)) == 90
    a.close()
    b.close()


KILLABLE_MEMBER = textwrap.dedent(
    """
    import sys, time
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
                  "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    c.subscribe([sys.argv[3]], on_assign=lambda c, ps: print("assigned", len(ps), flush=True))
    while True:
        c.poll(0.2)
    """
)


def test_a_killed_member_loses_its_partitions_after_the_session_timeout(gbroker):
    topic = topic_name("kill")
    create_topic(gbroker.bootstrap, topic, partitions=4)
    group = group_name()
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLABLE_MEMBER, gbroker.bootstrap, group, topic],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().startswith("assigned"), "the child consumer joined"
        survivor = Member(gbroker.bootstrap, group, [topic])
        pump([survivor], lambda: len(survivor.assigned) == 2, what="the group to split 2 + 2")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = time.monotonic()
        pump([survivor], lambda: len(survivor.assigned) == 4, timeout=40, what="the survivor to own all 4")
        # No LeaveGroup was sent: the move waits for the 6 s session to lapse.
        assert time.monotonic() - killed_at >= 5.0
        survivor.close()
    finally:
        proc.kill()


def test_committed_offsets_survive_consumer_and_broker_restarts(make_broker):
    b = make_broker(extra_args=FAST_GROUPS).start()
    topic = topic_name("commit")
    create_topic(b.bootstrap, topic, partitions=1)
    produce(b.bootstrap, topic, [{"value": f"m{i}".encode()} for i in range(20)])
    group = group_name()

    def read(n, **conf):
        m = Member(b.bootstrap, group, [topic], **{"enable.auto.commit": False, **conf})
        pump([m], lambda: len(m.records) >= n, what=f"{n} records")
        first = m.records[0][1]
        last = m.records[n - 1][1]
        m.c.commit(offsets=[TopicPartition(topic, 0, last + 1)], asynchronous=False)
        m.close()
        return first, last

    assert read(5) == (0, 4)
    assert read(5) == (5, 9), "a new consumer resumes from the commit"
    b.stop(signal.SIGTERM)
    b.start()
    assert read(5) == (10, 14), "after a clean broker restart"
    b.stop(signal.SIGKILL)
    b.start()
    first, _ = read(5)
    assert first == 15, "after the broker was killed"
    committed = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group}).committed(
        [TopicPartition(topic, 0)], timeout=10
    )
    assert committed[0].offset == 20


def test_auto_offset_reset_applies_only_without_a_commit(gbroker):
    topic = topic_name("reset")
    create_topic(gbroker.bootstrap, topic, partitions=1)
    produce(gbroker.bootstrap, topic, [{"value": b"old"}])
    earliest = Member(gbroker.bootstrap, group_name(), [topic], **{"auto.offset.reset": "earliest"})
    latest = Member(gbroker.bootstrap, group_name(), [topic], **{"auto.offset.reset": "latest"})
    pump([earliest, latest], lambda: earliest.records and latest.assigned, what="both to start")
    # `latest` starts wherever the log ends once it has looked: keep producing until it reads
    # something; it must never see the record that was there before it joined.
    for i in range(100):
        produce(gbroker.bootstrap, topic, [{"value": f"new{i}".encode()}])
        pump([earliest, latest], lambda: True, what="")
        if latest.records:
            break
        time.sleep(0.1)
    pump([earliest], lambda: len(earliest.records) >= i + 2, what="earliest to catch up")
    assert latest.records and b"old" not in [v for (_, _, v) in latest.records]
    assert [v for (_, _, v) in earliest.records][:2] == [b"old", b"new0"]
    earliest.close()
    latest.close()


def test_cooperative_sticky_members_keep_what_they_own(gbroker):
    topic = topic_name("coop")
    create_topic(gbroker.bootstrap, topic, partitions=4)
    group = group_name()
    conf = {"partition.assignment.strategy": "cooperative-sticky"}
    a = Member(gbroker.bootstrap, group, [topic], **conf)
    pump([a], lambda: len(a.assigned) == 4, what="the first member to own all 4")
    b = Member(gbroker.bootstrap, group, [topic], **conf)
    pump([a, b], lambda: len(a.assigned) == 2 and len(b.assigned) == 2, what="a 2 + 2 split")
    revoked = set().union(*[ps for (kind, ps) in a.events if kind == "revoke"])
    assert revoked == b.assigned, f"only what moved to b was revoked from a: {a.events}"
    assert a.events[0] == ("assign", {0, 1, 2, 3})
    a.close()
    b.close()


def test_a_restarted_static_member_gets_its_partitions_back_without_a_rebalance(gbroker):
    topic = topic_name("static")
    create_topic(gbroker.bootstrap, topic, partitions=4)
    group = group_name()
    conf = {"session.timeout.ms": 30000}
    a = Member(gbroker.bootstrap, group, [topic], **{"group.instance.id": "a", **conf})
    b = Member(gbroker.bootstrap, group, [topic], **{"group.instance.id": "b", **conf})
    pump([a, b], lambda: len(a.assigned) == 2 and len(b.assigned) == 2, what="a 2 + 2 split")
    before = set(b.assigned)
    a_events = len(a.events)
    # A static member does not leave the group when it closes.
    b.close()
    b2 = Member(gbroker.bootstrap, group, [topic], **{"group.instance.id": "b", **conf})
    pump([a, b2], lambda: b2.assigned, what="the restarted member's assignment")
    assert b2.assigned == before
    for _ in range(20):
        a.poll(0.1)
    assert a.events[a_events:] == [], "the other member saw no rebalance"
    a.close()
    b2.close()


def test_group_admin_with_confluent_and_kafka_python(gbroker):
    from kafka import KafkaAdminClient

    topic = topic_name("admin")
    create_topic(gbroker.bootstrap, topic, partitions=2)
    produce(gbroker.bootstrap, topic, [{"value": b"x", "partition": i % 2} for i in range(10)])
    group = group_name()
    m = Member(gbroker.bootstrap, group, [topic], **{"enable.auto.commit": False})
    pump([m], lambda: len(m.records) >= 10, what="10 records")
    m.c.commit(offsets=[TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 5)], asynchronous=False)

    admin = AdminClient({"bootstrap.servers": gbroker.bootstrap})
    listed = admin.list_consumer_groups().result(timeout=15)
    assert group in {g.group_id for g in listed.valid}
    desc = admin.describe_consumer_groups([group])[group].result(timeout=15)
    assert str(desc.state).endswith("STABLE"), desc.state
    assert len(desc.members) == 1
    assert {tp.partition for tp in desc.members[0].assignment.topic_partitions} == {0, 1}
    offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=15)
    committed = {tp.partition: tp.offset for tp in offsets.topic_partitions}
    assert committed == {0: 3, 1: 5}
    lag = {p: m.c.get_watermark_offsets(TopicPartition(topic, p))[1] - committed[p] for p in (0, 1)}
    assert lag == {0: 2, 1: 0}

    kadmin = KafkaAdminClient(bootstrap_servers=gbroker.bootstrap)
    listed = {g["group_id"]: g for g in kadmin.list_groups()}
    assert listed[group]["protocol_type"] == "consumer", listed
    kdesc = kadmin.describe_groups([group])[group]
    assert kdesc["group_state"] == "Stable" and len(kdesc["members"]) == 1, kdesc
    koffsets = kadmin.list_group_offsets(group)[group]
    assert {tp.partition: om.offset for tp, om in koffsets.items()} == {0: 3, 1: 5}

    # A group with members cannot be deleted; once empty it can.
    with pytest.raises(KafkaException) as e:
        admin.delete_consumer_groups([group])[group].result(timeout=15)
    assert "NON_EMPTY_GROUP" in str(e.value)
    m.close()
    admin.delete_consumer_groups([group])[group].result(timeout=15)
    assert group not in {g.group_id for g in admin.list_consumer_groups().result(timeout=15).valid}
    kadmin.close()


def test_kcat_balanced_consumer_reads_and_commits(broker):
    """With the default settings, including the 3 s initial rebalance delay."""
    topic = topic_name("kcat")
    create_topic(broker.bootstrap, topic, partitions=2)
    produce(broker.bootstrap, topic, [{"value": f"k{i}".encode(), "partition": i % 2} for i in range(10)])
    group = group_name()
    out = subprocess.run(
        ["kcat", "-b", broker.bootstrap, "-G", group, "-o", "beginning", "-c", "10", "-e",
         "-X", "auto.commit.interval.ms=100", "-f", "%s\n", topic],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split()) == sorted(f"k{i}" for i in range(10))
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    committed = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
    assert sum(tp.offset for tp in committed) == 10, committed
    c.close()


def test_aiokafka_group_consumer_commits_and_resumes(gbroker):
    import asyncio

    from aiokafka import AIOKafkaConsumer

    topic = topic_name("aio")
    create_topic(gbroker.bootstrap, topic, partitions=2)
    produce(gbroker.bootstrap, topic, [{"value": f"a{i}".encode(), "partition": i % 2} for i in range(20)])
    group = group_name()

    async def read(n):
        c = AIOKafkaConsumer(
            topic, bootstrap_servers=gbroker.bootstrap, group_id=group,
            auto_offset_reset="earliest", enable_auto_commit=False,
        )
        await c.start()
        got = []
        try:
            async with asyncio.timeout(60):
                while len(got) < n:
                    batches = await c.getmany(timeout_ms=500, max_records=n - len(got))
                    for msgs in batches.values():
                        got.extend(m.value for m in msgs)
            await c.commit()
        finally:
            await c.stop()
        return got

    first = asyncio.run(read(10))
    rest = asyncio.run(read(10))
    assert sorted(first + rest) == sorted(f"a{i}".encode() for i in range(20)), "no record twice, none lost"
