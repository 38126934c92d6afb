"""Answers shaped as a Kafka 4 broker shapes them, where real clients' own tests look (issue 16,
items 1, 4, 5 and 7): null error messages on success, authorized operations without an
authorizer, group sessions that end when they should, manual replica assignments."""

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, TopicCollection
from confluent_kafka.admin import AclOperation, AdminClient, NewTopic
from kafka.admin import KafkaAdminClient
from kafka.admin import NewTopic as KNewTopic

from test_produce_consume import topic_name

INVALID_REPLICA_ASSIGNMENT = 39
INVALID_PARTITIONS = 37

# Kafka's AclEntry.supportedOperations: what a broker without an authorizer allows.
TOPIC_OPERATIONS = {
    AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DESCRIBE,
    AclOperation.DELETE, AclOperation.ALTER, AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS,
}
GROUP_OPERATIONS = {
    AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE, AclOperation.DESCRIBE_CONFIGS,
    AclOperation.ALTER_CONFIGS,
}
CLUSTER_OPERATIONS = {
    AclOperation.CREATE, AclOperation.CLUSTER_ACTION, AclOperation.DESCRIBE_CONFIGS,
    AclOperation.ALTER_CONFIGS, AclOperation.IDEMPOTENT_WRITE, AclOperation.ALTER, AclOperation.DESCRIBE,
}


def test_error_messages_are_null_on_success(broker):
    kp = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=30000)
    try:
        topic = topic_name("nullmsg")
        # kafka-python hands back the decoded CreateTopics response.
        [t] = kp.create_topics([KNewTopic(topic, 1, 1)])["topics"]
        assert (t["name"], t["error_code"], t["error_message"]) == (topic, 0, None)
    finally:
        kp.close()


def test_authorized_operations_are_every_supported_one(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topic = topic_name("ops")
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    cluster = admin.describe_cluster(include_authorized_operations=True).result(30)
    assert set(cluster.authorized_operations) == CLUSTER_OPERATIONS
    [described] = admin.describe_topics(TopicCollection([topic]), include_authorized_operations=True).values()
    assert set(described.result(30).authorized_operations) == TOPIC_OPERATIONS
    group = "ops-" + uuid.uuid4().hex[:8]
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    deadline = time.monotonic() + 30
    while not c.assignment() and time.monotonic() < deadline:
        c.poll(0.2)
    g = admin.describe_consumer_groups([group], include_authorized_operations=True)[group].result(30)
    c.close()
    assert set(g.authorized_operations) == GROUP_OPERATIONS
    # Not asked, not given.
    assert admin.describe_cluster().result(30).authorized_operations is None


def test_manual_replica_assignments_on_the_only_broker(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    node = admin.describe_cluster().result(30).nodes[0].id
    topic = topic_name("manual")
    admin.create_topics([NewTopic(topic, 3, replica_assignment=[[node], [node], [node]])])[topic].result(30)
    md = admin.list_topics(topic, timeout=10).topics[topic]
    assert sorted(md.partitions) == [0, 1, 2]
    assert all(p.replicas == [node] and p.leader == node for p in md.partitions.values())
    for bad in ([[node + 1]], [[node, node]]):
        other = topic_name("badassign")
        with pytest.raises(KafkaException) as e:
            admin.create_topics([NewTopic(other, len(bad), replica_assignment=bad)])[other].result(30)
        assert e.value.args[0].code() == INVALID_REPLICA_ASSIGNMENT, bad
        assert other not in admin.list_topics(timeout=10).topics


def test_a_closed_static_members_session_ends_on_time(make_broker):
    """Three static members close without leaving (as static members do); the group is empty
    and deletable once their session timeout has passed, not a tick or a second later."""
    b = make_broker(
        extra_args=["--set", "group.initial.rebalance.delay.ms=0", "--set", "group.min.session.timeout.ms=1000"]
    ).start()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    topic = topic_name("static")
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
    group = "static-" + uuid.uuid4().hex[:8]
    session_ms = 3000
    members = [
        Consumer({
            "bootstrap.servers": b.bootstrap, "group.id": group, "group.instance.id": f"member-{i}",
            "session.timeout.ms": session_ms, "heartbeat.interval.ms": 300,
        })
        for i in range(3)
    ]
    for m in members:
        m.subscribe([topic])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for m in members:
            m.poll(0.1)
        if all(m.assignment() for m in members):
            break
    for m in members:
        m.poll(0.2)
    closed = time.monotonic()
    for m in members:
        m.close()
    deleted_at = None
    while time.monotonic() < closed + 20:
        try:
            admin.delete_consumer_groups([group])[group].result(10)
            deleted_at = time.monotonic() - closed
            break
        except KafkaException:
            time.sleep(0.05)
    assert deleted_at is not None, "the group never emptied"
    # Sessions end at their deadline: not before the last heartbeat's session has passed
    # (heartbeats every 0.3 s), and well within a second after.
    assert session_ms / 1000 - 0.5 <= deleted_at <= session_ms / 1000 + 1.0, deleted_at
