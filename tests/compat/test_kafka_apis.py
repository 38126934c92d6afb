"""The Kafka 4 APIs a single node answers without a cluster behind it (issue 16, item 6):
DescribeTopicPartitions, ElectLeaders, AlterReplicaLogDirs with DescribeLogDirs, partition
reassignments, DescribeQuorum, SCRAM credentials and ACLs, each driven by the real clients
that can send it (confluent-kafka, kafka-python), and by raw frames only for what no client
sends (removed versions, a non-flexible version, a DescribeQuorum of the wrong partition)."""

import base64
import re
import struct
import urllib.request
import uuid

import kafka_raw as raw
import pytest
from confluent_kafka import ElectionType, KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

# Every operation of the topic resource (READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE,
# DESCRIBE_CONFIGS, ALTER_CONFIGS): what Kafka without an authorizer reports.
TOPIC_OPERATIONS = 3576


def name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def kp_admin(broker):
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)


def create(broker, *topics):
    """topics: (name, partitions)."""
    a = admin(broker)
    futures = a.create_topics([NewTopic(t, n) for t, n in topics], operation_timeout=10)
    for f in futures.values():
        f.result(timeout=15)


def metrics(broker):
    with urllib.request.urlopen(broker.admin_url + "/metrics", timeout=10) as r:
        return r.read().decode()


def requests_of(broker, api):
    m = re.search(rf'^sluice_requests_total\{{api="{api}"\}} (\d+)', metrics(broker), re.M)
    return int(m.group(1)) if m else 0


def errors_of(broker, api, error):
    pattern = rf'^sluice_request_errors_total\{{api="{api}",error="{error}"\}} (\d+)'
    m = re.search(pattern, metrics(broker), re.M)
    return int(m.group(1)) if m else 0


def test_api_versions_advertise_kafka_4_ranges(broker):
    s = raw.connect(broker.port)
    s.sendall(raw.request_v1(18, 0, 1))
    _, err, keys = raw.parse_api_versions_v0(raw.read_frame(s))
    assert err == 0
    expected = {
        29: (1, 3),  # DescribeAcls: v0 removed in Kafka 4.0
        30: (1, 3),
        31: (1, 3),
        34: (1, 2),  # AlterReplicaLogDirs: v0 removed
        35: (1, 4),  # DescribeLogDirs: v0 removed
        43: (0, 2),
        45: (0, 0),
        46: (0, 0),
        50: (0, 0),
        51: (0, 0),
        55: (0, 2),
        75: (0, 0),
    }
    assert {k: keys.get(k) for k in expected} == expected


# -- DescribeTopicPartitions ------------------------------------------------------------------


def test_kafka_python_pages_through_describe_topic_partitions(broker):
    b, a_, c = name("dtp-b"), name("dtp-a"), name("dtp-c")
    create(broker, (b, 2), (a_, 3), (c, 1))
    before = requests_of(broker, "DescribeTopicPartitions")
    a = kp_admin(broker)
    try:
        pages, cursor = [], None
        while True:
            page = a.describe_topic_partitions([c, b, a_, "dtp-missing"], response_partition_limit=2, cursor=cursor)
            pages.append([(t["name"], [p["partition_index"] for p in t["partitions"]]) for t in page["topics"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        topics = page["topics"]
        all_at_once = a.describe_topic_partitions([])
    finally:
        a.close()
    # Sorted by name, two partitions per page, the cursor resuming inside a topic, then at the
    # start of the next one; the unknown topic (last by name) uses none of the limit.
    assert pages == [
        [(a_, [0, 1])],
        [(a_, [2]), (b, [0])],
        [(b, [1]), (c, [0])],
        [("dtp-missing", [])],
    ]
    assert topics[0]["error_code"] == 3  # UNKNOWN_TOPIC_OR_PARTITION
    assert requests_of(broker, "DescribeTopicPartitions") == before + len(pages) + 1
    # All topics: only the ones that exist, in one page.
    everything = {t["name"]: t for t in all_at_once["topics"]}
    assert sorted(everything) == sorted([a_, b, c])
    assert all_at_once["next_cursor"] is None
    last = everything[c]
    assert last["error_code"] == 0 and not last["is_internal"]
    assert last["topic_authorized_operations"] == TOPIC_OPERATIONS
    p = last["partitions"][0]
    assert (p["leader_id"], p["leader_epoch"], p["replica_nodes"], p["isr_nodes"], p["offline_replicas"]) == (
        1,
        0,
        [1],
        [1],
        [],
    )
    # The same topic id as Metadata gives (librdkafka prints it in base64).
    ca = admin(broker)
    md = ca.describe_topics(TopicCollection([c]))[c].result(timeout=10)
    assert base64.b64decode(str(md.topic_id) + "==") == last["topic_id"].bytes


def test_describe_topic_partitions_unknown_topics_elr_and_bad_cursor(broker):
    from kafka.protocol.admin.topics import DescribeTopicPartitionsRequest

    t = name("dtp-one")
    create(broker, (t, 1))
    a = kp_admin(broker)
    try:
        send = lambda req: a._manager.run(a._manager.send, req)  # noqa: E731
        Topic = DescribeTopicPartitionsRequest.TopicRequest
        r = send(DescribeTopicPartitionsRequest(topics=[Topic(name=t), Topic(name="nope"), Topic(name="bad/name")]))
        got = {x.name: x for x in r.topics}
        assert [x.name for x in r.topics] == sorted([t, "nope", "bad/name"])
        assert got["nope"].error_code == 3  # UNKNOWN_TOPIC_OR_PARTITION
        assert got["bad/name"].error_code == 17  # INVALID_TOPIC_EXCEPTION: not a name Kafka accepts
        assert got["nope"].partitions == [] and got["nope"].topic_authorized_operations == TOPIC_OPERATIONS
        part = got[t].partitions[0]
        # No ELR on one node: empty lists, as Kafka sends them (not null).
        assert list(part.eligible_leader_replicas) == [] and part.eligible_leader_replicas is not None
        assert list(part.last_known_elr) == [] and part.last_known_elr is not None
        # A cursor naming a topic that is not asked for fails every topic with INVALID_REQUEST.
        Cursor = DescribeTopicPartitionsRequest.Cursor
        r = send(
            DescribeTopicPartitionsRequest(
                topics=[Topic(name=t)], cursor=Cursor(topic_name="other", partition_index=0)
            )
        )
        assert [(x.name, x.error_code) for x in r.topics] == [(t, 42)]
    finally:
        a.close()


def test_confluent_describe_topics(broker):
    t = name("desc")
    create(broker, (t, 2))
    before = {api: requests_of(broker, api) for api in ("DescribeTopicPartitions", "Metadata")}
    a = admin(broker)
    d = a.describe_topics(TopicCollection([t]), include_authorized_operations=True)[t].result(timeout=10)
    assert d.name == t and not d.is_internal
    assert [(p.id, p.leader.id, [r.id for r in p.replicas], [r.id for r in p.isr]) for p in d.partitions] == [
        (0, 1, [1], [1]),
        (1, 1, [1], [1]),
    ]
    with pytest.raises(KafkaException) as e:
        a.describe_topics(TopicCollection(["desc-missing"]))["desc-missing"].result(timeout=10)
    assert e.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    # librdkafka 2.16 describes topics with Metadata, not DescribeTopicPartitions (its
    # protocol table has no key 75): checked here so a librdkafka that switches is noticed.
    after = {api: requests_of(broker, api) for api in before}
    assert after["Metadata"] > before["Metadata"]
    assert after["DescribeTopicPartitions"] == before["DescribeTopicPartitions"]


# -- ElectLeaders -----------------------------------------------------------------------------


@pytest.mark.parametrize("election", [ElectionType.PREFERRED, ElectionType.UNCLEAN])
def test_confluent_elect_leaders_is_never_needed(broker, election):
    t = name("elect")
    create(broker, (t, 2))
    a = admin(broker)
    result = a.elect_leaders(election, [TopicPartition(t, 0), TopicPartition(t, 1), TopicPartition(t, 5), TopicPartition("elect-none", 0)]).result(timeout=10)
    codes = {(tp.topic, tp.partition): err.code() for tp, err in result.items()}
    assert codes == {
        (t, 0): KafkaError.ELECTION_NOT_NEEDED,
        (t, 1): KafkaError.ELECTION_NOT_NEEDED,
        (t, 5): KafkaError.UNKNOWN_TOPIC_OR_PART,
        ("elect-none", 0): KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
    messages = {(tp.topic, tp.partition): err.str() for tp, err in result.items()}
    assert messages[(t, 0)] == "Leader election not needed for topic partition."
    # All partitions (a null list): Kafka reports only partitions that needed an election.
    assert a.elect_leaders(election, None).result(timeout=10) == {}


def test_kafka_python_elect_leaders(broker):
    t = name("elect-kp")
    create(broker, (t, 1))
    a = kp_admin(broker)
    try:
        r = a.elect_leaders(0, {t: [0]})
    finally:
        a.close()
    assert r.error_code == 0
    assert [(x.topic, [(p.partition_id, p.error_code) for p in x.partition_result]) for x in r.replica_election_results] == [
        (t, [(0, 84)])
    ]


# -- Log dirs ---------------------------------------------------------------------------------


def test_kafka_python_alter_replica_log_dirs_within_the_one_dir(broker):
    from kafka import TopicPartitionReplica
    from kafka.errors import LogDirNotFoundError, NoError, UnknownTopicOrPartitionError

    t = name("logdir")
    create(broker, (t, 2))
    a = kp_admin(broker)
    try:
        dirs = a.describe_log_dirs()
        (entry,) = dirs
        (log_dir,) = entry["log_dirs"]
        path = log_dir["log_dir"]
        assert t in [x["name"] for x in log_dir["topics"]]
        same = a.alter_replica_log_dirs({TopicPartitionReplica(t, 0, 1): path})
        elsewhere = a.alter_replica_log_dirs({TopicPartitionReplica(t, 1, 1): "/no/such/dir"})
        missing = a.alter_replica_log_dirs({TopicPartitionReplica(t, 7, 1): path})
        after = a.describe_log_dirs()
    finally:
        a.close()
    assert same == {TopicPartitionReplica(t, 0, 1): NoError}
    assert elsewhere == {TopicPartitionReplica(t, 1, 1): LogDirNotFoundError}
    assert missing == {TopicPartitionReplica(t, 7, 1): UnknownTopicOrPartitionError}
    # Nothing moved: the same single dir, no future replica.
    (log_dir_after,) = after[0]["log_dirs"]
    assert log_dir_after["log_dir"] == path
    parts = [p for x in log_dir_after["topics"] if x["name"] == t for p in x["partitions"]]
    assert sorted(p["partition_index"] for p in parts) == [0, 1]
    assert not any(p["is_future_key"] for p in parts)


def test_alter_replica_log_dirs_v1_raw_and_removed_versions_close(broker):
    t = name("logdir-raw")
    create(broker, (t, 1))
    s = raw.connect(broker.port)
    # The configured data dir (absolute), as Kafka compares log dirs by absolute path.
    path = str(broker.data_dir.resolve())
    assert raw.alter_replica_log_dirs_v1(s, path, t, [0, 3]) == [(t, 0, 0), (t, 3, 3)]
    assert raw.alter_replica_log_dirs_v1(s, "/elsewhere", t, [0], correlation_id=2) == [(t, 0, 57)]
    # A name too long for the future log's directory (Kafka's 255-byte limit, KAFKA-4893).
    long = "l" * 230
    assert raw.alter_replica_log_dirs_v1(s, path, long, [0], correlation_id=3) == [(long, 0, 17)]
    # Version 0 of the log dir and ACL APIs is gone in Kafka 4.0: the connection closes.
    for key in (34, 35, 29):
        c = raw.connect(broker.port)
        c.sendall(raw.request_v1(key, 0, 1, struct.pack(">i", 0)))
        assert raw.is_closed(c)


# -- Reassignments ----------------------------------------------------------------------------


def test_kafka_python_partition_reassignments(broker):
    from kafka import TopicPartition as KTP
    from kafka.errors import (
        InvalidReplicationAssignmentError,
        NoReassignmentInProgressError,
        UnknownTopicOrPartitionError,
    )

    t = name("reassign")
    create(broker, (t, 2))
    a = kp_admin(broker)
    try:
        assert a.list_partition_reassignments() == {}
        assert a.list_partition_reassignments([KTP(t, 0), KTP("reassign-none", 0)]) == {}
        r = a.alter_partition_reassignments(
            {
                KTP(t, 0): [1],
                KTP(t, 1): [1, 2],
                KTP("reassign-none", 0): [1],
            }
        )
        cancel = a.alter_partition_reassignments({KTP(t, 0): None})
        assert a.list_partition_reassignments() == {}
    finally:
        a.close()
    # None: accepted (onto the broker it is on: nothing to move).
    assert r == {
        KTP(t, 0): None,
        KTP(t, 1): InvalidReplicationAssignmentError,
        KTP("reassign-none", 0): UnknownTopicOrPartitionError,
    }
    assert cancel == {KTP(t, 0): NoReassignmentInProgressError}


# -- DescribeQuorum ---------------------------------------------------------------------------


def test_kafka_python_describe_metadata_quorum(broker):
    from kafka.protocol.admin.cluster import DescribeQuorumRequest

    a = kp_admin(broker)
    try:
        q = a.describe_metadata_quorum()
        Topic = DescribeQuorumRequest.TopicData
        wrong = a._manager.run(
            a._manager.send,
            DescribeQuorumRequest(topics=[Topic(topic_name="__cluster_metadata", partitions=[Topic.PartitionData(partition_index=1)])]),
        )
    finally:
        a.close()
    (topic,) = q["topics"]
    assert topic["topic_name"] == "__cluster_metadata"
    (p,) = topic["partitions"]
    assert (p["partition_index"], p["error"], p["leader_id"], p["leader_epoch"]) == (0, None, 1, 1)
    (voter,) = p["current_voters"]
    # The metadata log's own end: at least the bootstrap and this start's registration, and a
    # quorum of one has committed all of it.
    assert voter["replica_id"] == 1 and voter["log_end_offset"] >= 2
    assert p["high_watermark"] == voter["log_end_offset"]
    assert voter["last_caught_up_timestamp"] > 0 and p["observers"] == []
    assert q["nodes"] == [{"node_id": 1, "listeners": [{"name": "PLAINTEXT", "host": "127.0.0.1", "port": broker.port}]}]
    assert [(x.partition_index, x.error_code) for x in wrong.topics[0].partitions] == [(1, 3)]


def test_describe_quorum_v0_raw(broker):
    """Version 0 (no timestamps, no nodes), which kafka-python never picks against this broker."""
    s = raw.connect(broker.port)
    before = raw.describe_quorum_v0(s, "__cluster_metadata", 0, correlation_id=9)
    assert before[:6] == (9, 0, 0, 0, 1, 1) and before[6] >= 2
    # A topic created is a metadata batch: the high watermark moves past it.
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("quorum-moves", 3, 1)])["quorum-moves"].result(10)
    after = raw.describe_quorum_v0(s, "__cluster_metadata", 0, correlation_id=11)
    assert after[6] == before[6] + 4, (before, after)  # TopicRecord and 3 PartitionRecords
    # Another topic: UNKNOWN_TOPIC_OR_PARTITION on the partition asked for.
    assert raw.describe_quorum_v0(s, "other", 0, correlation_id=10)[:4] == (10, 0, 0, 3)


# -- SCRAM ------------------------------------------------------------------------------------


def test_confluent_scram_credentials_without_scram_users(broker):
    a = admin(broker)
    assert a.describe_user_scram_credentials().result(timeout=10) == {}
    futures = a.describe_user_scram_credentials(["alice"])
    with pytest.raises(KafkaException) as e:
        futures["alice"].result(timeout=10)
    assert e.value.args[0].code() == KafkaError.RESOURCE_NOT_FOUND
    up = UserScramCredentialUpsertion("alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), b"secret")
    few = UserScramCredentialUpsertion("carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 100), b"secret")
    gone = UserScramCredentialDeletion("bob", ScramMechanism.SCRAM_SHA_512)
    results = a.alter_user_scram_credentials([up, few, gone])
    codes = {}
    for user, f in results.items():
        with pytest.raises(KafkaException) as e:
            f.result(timeout=10)
        codes[user] = (e.value.args[0].code(), e.value.args[0].str())
    assert codes["alice"][0] == KafkaError.UNSUPPORTED_SASL_MECHANISM
    assert "no SASL support" in codes["alice"][1]
    assert codes["carol"] == (KafkaError.UNACCEPTABLE_CREDENTIAL, "Too few iterations")
    assert codes["bob"] == (KafkaError.RESOURCE_NOT_FOUND, "Attempt to delete a user credential that does not exist")
    # Nothing was stored.
    assert a.describe_user_scram_credentials().result(timeout=10) == {}


def test_kafka_python_describe_scram_credentials(broker):
    a = kp_admin(broker)
    try:
        assert a.describe_user_scram_credentials() == {}
        assert a.describe_user_scram_credentials(["alice"]) == {
            "alice": {"error": "Attempt to describe a user credential that does not exist: alice", "credential_infos": []}
        }
    finally:
        a.close()


# -- ACLs -------------------------------------------------------------------------------------

ANY_ACL = AclBindingFilter(
    ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY
)


def test_confluent_acls_are_security_disabled(broker):
    a = admin(broker)
    before = errors_of(broker, "DescribeAcls", "SECURITY_DISABLED")
    # librdkafka drops DescribeAcls' top-level error and returns no bindings; the broker's
    # error metric shows the answer was SECURITY_DISABLED.
    assert a.describe_acls(ANY_ACL).result(timeout=10) == []
    assert errors_of(broker, "DescribeAcls", "SECURITY_DISABLED") == before + 1
    binding = AclBinding(
        ResourceType.TOPIC, "t", ResourcePatternType.LITERAL, "User:bob", "*", AclOperation.READ, AclPermissionType.ALLOW
    )
    for futures in (a.create_acls([binding]), a.delete_acls([ANY_ACL])):
        (f,) = futures.values()
        with pytest.raises(KafkaException) as e:
            f.result(timeout=10)
        assert e.value.args[0].code() == KafkaError.SECURITY_DISABLED
        assert e.value.args[0].str() == "No Authorizer is configured."


def test_kafka_python_acls_are_security_disabled(broker):
    from kafka.admin import (
        ACL,
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourcePatternFilter,
    )
    from kafka.admin import ResourceType as KResourceType
    from kafka.errors import SecurityDisabledError

    flt = ACLFilter(
        principal=None,
        host="*",
        operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(KResourceType.ANY, None, ACLResourcePatternType.ANY),
    )
    acl = ACL(
        principal="User:bob",
        host="*",
        operation=ACLOperation.READ,
        permission_type=ACLPermissionType.ALLOW,
        resource_pattern=ResourcePattern(KResourceType.TOPIC, "t", ACLResourcePatternType.LITERAL),
    )
    a = kp_admin(broker)
    try:
        with pytest.raises(SecurityDisabledError, match="No Authorizer is configured."):
            a.describe_acls(flt)
        created = a.create_acls([acl])
    finally:
        a.close()
    assert created == {"succeeded": [], "failed": [SecurityDisabledError]}


# -- Unaffected -------------------------------------------------------------------------------


def test_confluent_list_consumer_group_offsets_unaffected(broker):
    from confluent_kafka import ConsumerGroupTopicPartitions, Consumer, Producer

    t, group = name("offsets"), name("g")
    create(broker, (t, 1))
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(3):
        p.produce(t, value=b"v%d" % i)
    p.flush(10)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    c.assign([TopicPartition(t, 0, 0)])
    got = 0
    while got < 3:
        m = c.poll(10)
        assert m is not None and m.error() is None
        got += 1
    c.commit(asynchronous=False)
    c.close()
    a = admin(broker)
    f = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, [TopicPartition(t, 0)])])
    res = f[group].result(timeout=10)
    assert [(tp.topic, tp.partition, tp.offset) for tp in res.topic_partitions] == [(t, 0, 3)]
