"""Configs as a Kafka 4 broker has them (issue 16, items 2 and 3), through confluent-kafka and
kafka-python against the real binary: every Kafka 4.0 topic config is accepted at creation and
by both alter APIs, validated as Kafka validates it and described with Kafka's default, source
and type; the broker resource reports Kafka's broker configs (default.replication.factor and
the others clients read), accepts and keeps the ones Kafka changes at runtime, and refuses the
read-only ones as Kafka does."""

import json
import uuid

import kafka_raw as raw
import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewTopic,
    ResourceType,
)

# Kafka 4.0's LogConfig: every topic config with its default and its DescribeConfigs type.
KAFKA_TOPIC_DEFAULTS = {
    "cleanup.policy": ("delete", "LIST"),
    "compression.gzip.level": ("-1", "INT"),
    "compression.lz4.level": ("9", "INT"),
    "compression.type": ("producer", "STRING"),
    "compression.zstd.level": ("3", "INT"),
    "delete.retention.ms": ("86400000", "LONG"),
    "file.delete.delay.ms": ("60000", "LONG"),
    "flush.messages": ("9223372036854775807", "LONG"),
    "flush.ms": ("9223372036854775807", "LONG"),
    "follower.replication.throttled.replicas": ("", "LIST"),
    "index.interval.bytes": ("4096", "INT"),
    "leader.replication.throttled.replicas": ("", "LIST"),
    "local.retention.bytes": ("-2", "LONG"),
    "local.retention.ms": ("-2", "LONG"),
    "max.compaction.lag.ms": ("9223372036854775807", "LONG"),
    "max.message.bytes": ("1048588", "INT"),
    "message.timestamp.after.max.ms": ("3600000", "LONG"),
    "message.timestamp.before.max.ms": ("9223372036854775807", "LONG"),
    "message.timestamp.type": ("CreateTime", "STRING"),
    "min.cleanable.dirty.ratio": ("0.5", "DOUBLE"),
    "min.compaction.lag.ms": ("0", "LONG"),
    "min.insync.replicas": ("1", "INT"),
    "preallocate": ("false", "BOOLEAN"),
    "remote.log.copy.disable": ("false", "BOOLEAN"),
    "remote.log.delete.on.disable": ("false", "BOOLEAN"),
    "remote.storage.enable": ("false", "BOOLEAN"),
    "retention.bytes": ("-1", "LONG"),
    "retention.ms": ("604800000", "LONG"),
    "segment.bytes": ("1073741824", "INT"),
    "segment.index.bytes": ("10485760", "INT"),
    "segment.jitter.ms": ("0", "LONG"),
    "segment.ms": ("604800000", "LONG"),
    "unclean.leader.election.enable": ("false", "BOOLEAN"),
}

# The configs Sluice refused as unknown before: a non-default value of each, and how Kafka
# reports it back.
NEWLY_ACCEPTED = {
    "compression.gzip.level": ("5", "5"),
    "compression.lz4.level": ("10", "10"),
    "compression.zstd.level": ("-3", "-3"),
    "delete.retention.ms": ("3600000", "3600000"),
    "file.delete.delay.ms": ("1000", "1000"),
    "follower.replication.throttled.replicas": ("0:1, 1:1", "0:1,1:1"),
    "index.interval.bytes": ("2048", "2048"),
    "leader.replication.throttled.replicas": ("*", "*"),
    "local.retention.bytes": ("1000000", "1000000"),
    "local.retention.ms": ("3600000", "3600000"),
    "max.compaction.lag.ms": ("86400000", "86400000"),
    "min.cleanable.dirty.ratio": ("1", "1.0"),
    "min.compaction.lag.ms": ("1000", "1000"),
    "preallocate": ("TRUE", "true"),
    "remote.log.copy.disable": ("true", "true"),
    "remote.log.delete.on.disable": ("true", "true"),
    "remote.storage.enable": ("false", "false"),
    "segment.index.bytes": ("1048576", "1048576"),
    "segment.jitter.ms": ("100", "100"),
    "unclean.leader.election.enable": ("true", "true"),
}

# Out of range or of the wrong type, as Kafka's validators say.
INVALID = [
    ("min.cleanable.dirty.ratio", "1.5"),
    ("min.cleanable.dirty.ratio", "half"),
    ("segment.bytes", "13"),
    ("max.message.bytes", "-1"),
    ("segment.index.bytes", "3"),
    ("segment.jitter.ms", "-1"),
    ("delete.retention.ms", "-5"),
    ("max.compaction.lag.ms", "0"),
    ("local.retention.ms", "-3"),
    ("index.interval.bytes", "many"),
    ("preallocate", "yes"),
    ("unclean.leader.election.enable", "1"),
    ("compression.gzip.level", "0"),
    ("compression.lz4.level", "18"),
    ("compression.zstd.level", "23"),
    ("leader.replication.throttled.replicas", "0:1,*"),
    ("follower.replication.throttled.replicas", "p0:b1"),
    ("cleanup.policy", "forever"),
]


def test_configs_kafka_4_removed_are_accepted_and_ignored(broker):
    """Tools written for Kafka 3.x still set these; Kafka 4.0 ignores them."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    name = topic_name("removed")
    create(admin, name, {"message.format.version": "3.0-IV1", "message.downconversion.enable": "true"})
    entries = describe(admin, ConfigResource.Type.TOPIC, name)
    assert "message.format.version" not in entries
    assert "message.downconversion.enable" not in entries


def topic_name(prefix="cfg"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def describe(admin, kind, name):
    res = ConfigResource(kind, name)
    return admin.describe_configs([res])[res].result(10)


def create(admin, name, config):
    admin.create_topics([NewTopic(name, 1, 1, config=config)])[name].result(15)


def incremental(admin, kind, name, **ops):
    """ops: key=(op, value)."""
    res = ConfigResource(
        kind,
        name,
        incremental_configs=[ConfigEntry(k.replace("_", "."), v, incremental_operation=op) for k, (op, v) in ops.items()],
    )
    admin.incremental_alter_configs([res])[res].result(10)


def error_of(future):
    with pytest.raises(KafkaException) as e:
        future.result(15)
    return e.value.args[0]


def test_every_kafka_4_topic_config_is_accepted_and_described_with_kafkas_defaults(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    plain, custom = topic_name(), topic_name()
    create(admin, plain, {})
    create(admin, custom, {k: v for k, (v, _) in NEWLY_ACCEPTED.items()})

    got = describe(admin, ResourceType.TOPIC, plain)
    assert set(got) == set(KAFKA_TOPIC_DEFAULTS), set(got) ^ set(KAFKA_TOPIC_DEFAULTS)
    for key, (default, _) in KAFKA_TOPIC_DEFAULTS.items():
        assert got[key].value == default, key
        assert got[key].source == ConfigSource.DEFAULT_CONFIG.value and got[key].is_default, key
        assert not got[key].is_read_only and not got[key].is_sensitive, key

    got = describe(admin, ResourceType.TOPIC, custom)
    for key, (_, shown) in NEWLY_ACCEPTED.items():
        assert got[key].value == shown, key
        assert got[key].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value and not got[key].is_default, key

    # kafka-python sees the same, with Kafka's config types.
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource as KConfigResource, ConfigResourceType

    k = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    kgot = k.describe_configs([KConfigResource(ConfigResourceType.TOPIC, custom)], config_filter="all")
    configs = kgot["topic"][custom]
    k.close()
    for key, (default, kind) in KAFKA_TOPIC_DEFAULTS.items():
        assert configs[key]["config_type"] == kind, key
        expected = NEWLY_ACCEPTED[key][1] if key in NEWLY_ACCEPTED else default
        assert configs[key]["value"] == expected, key


def test_topic_configs_altered_by_both_apis_and_both_clients(make_broker):
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource as KConfigResource, ConfigResourceType

    b = make_broker().start()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    topic = topic_name()
    create(admin, topic, {"retention.ms": "3600000"})

    # IncrementalAlterConfigs: SET new ones, APPEND to a list, DELETE one.
    incremental(
        admin,
        ResourceType.TOPIC,
        topic,
        delete_retention_ms=(AlterConfigOpType.SET, "7200000"),
        min_cleanable_dirty_ratio=(AlterConfigOpType.SET, "0.75"),
        segment_jitter_ms=(AlterConfigOpType.SET, "500"),
    )
    res = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("leader.replication.throttled.replicas", "0:1", incremental_operation=AlterConfigOpType.APPEND),
            ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
        ],
    )
    admin.incremental_alter_configs([res])[res].result(10)
    got = describe(admin, ResourceType.TOPIC, topic)
    assert got["delete.retention.ms"].value == "7200000"
    assert got["min.cleanable.dirty.ratio"].value == "0.75"
    assert got["segment.jitter.ms"].value == "500"
    assert got["leader.replication.throttled.replicas"].value == "0:1"
    assert got["retention.ms"].value == "604800000" and got["retention.ms"].is_default

    # The legacy AlterConfigs replaces the whole set.
    legacy = ConfigResource(ResourceType.TOPIC, topic, set_config={"preallocate": "true", "file.delete.delay.ms": "0"})
    admin.alter_configs([legacy])[legacy].result(10)
    got = describe(admin, ResourceType.TOPIC, topic)
    assert got["preallocate"].value == "true" and got["file.delete.delay.ms"].value == "0"
    assert got["delete.retention.ms"].is_default and got["delete.retention.ms"].value == "86400000"

    # kafka-python: incremental (its default) and legacy.
    k = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    k.alter_configs([KConfigResource(ConfigResourceType.TOPIC, topic, configs={"unclean.leader.election.enable": "true"})])
    got = describe(admin, ResourceType.TOPIC, topic)
    assert got["unclean.leader.election.enable"].value == "true" and got["preallocate"].value == "true"
    k.alter_configs(
        [KConfigResource(ConfigResourceType.TOPIC, topic, configs={"local.retention.ms": "60000"})], incremental=False
    )
    k.close()
    got = describe(admin, ResourceType.TOPIC, topic)
    assert got["local.retention.ms"].value == "60000"
    assert got["local.retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value

    # Kept across a restart.
    b.stop()
    b.start()
    got = describe(AdminClient({"bootstrap.servers": b.bootstrap}), ResourceType.TOPIC, topic)
    assert got["local.retention.ms"].value == "60000"


@pytest.mark.parametrize("key,value", INVALID)
def test_an_invalid_topic_config_is_invalid_config_naming_the_key(broker, key, value):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topic = topic_name()
    e = error_of(admin.create_topics([NewTopic(topic, 1, 1, config={key: value})])[topic])
    assert e.code() == KafkaError.INVALID_CONFIG and key in e.str(), e
    assert topic not in admin.list_topics(timeout=10).topics

    create(admin, topic, {})
    res = ConfigResource(
        ResourceType.TOPIC, topic, incremental_configs=[ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)]
    )
    e = error_of(admin.incremental_alter_configs([res])[res])
    assert e.code() == KafkaError.INVALID_CONFIG and key in e.str(), e
    legacy = ConfigResource(ResourceType.TOPIC, topic, set_config={key: value})
    e = error_of(admin.alter_configs([legacy])[legacy])
    assert e.code() == KafkaError.INVALID_CONFIG and key in e.str(), e


def test_cross_checks_compaction_and_tiered_storage(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for config, says in [
        ({"min.compaction.lag.ms": "10", "max.compaction.lag.ms": "5"}, "min.compaction.lag.ms (10) > max.compaction.lag.ms (5)"),
        ({"remote.storage.enable": "true"}, "Tiered Storage functionality is disabled in the broker"),
        ({"cleanup.policy": "compact"}, "cleanup.policy=compact: log compaction is not supported yet"),
        ({"cleanup.policy": "compact,delete"}, "log compaction is not supported yet"),
    ]:
        topic = topic_name()
        e = error_of(admin.create_topics([NewTopic(topic, 1, 1, config=config)])[topic])
        assert e.code() == KafkaError.INVALID_CONFIG and says in e.str(), (config, e)


# Broker configs clients and tools read, with Kafka 4.0's defaults on a single node (the
# replication factors of the internal topics are what Sluice uses: 1).
BROKER_DEFAULTS = {
    "default.replication.factor": ("1", True),
    "num.partitions": ("1", True),
    "min.insync.replicas": ("1", False),
    "log.retention.ms": ("604800000", False),
    "log.retention.hours": ("168", True),
    "log.retention.bytes": ("-1", False),
    "log.segment.bytes": ("1073741824", False),
    "log.roll.ms": ("604800000", False),
    "message.max.bytes": ("1048588", False),
    "auto.create.topics.enable": ("true", True),
    "delete.topic.enable": ("true", True),
    "offsets.topic.replication.factor": ("1", True),
    "offsets.topic.num.partitions": ("50", True),
    "transaction.state.log.replication.factor": ("1", True),
    "transaction.state.log.min.isr": ("1", True),
    "transaction.state.log.num.partitions": ("50", True),
    "node.id": ("1", True),
    "process.roles": ("broker,controller", True),
    "num.network.threads": ("3", False),
    "num.io.threads": ("8", False),
    "background.threads": ("10", False),
    "log.cleaner.threads": ("1", False),
    "max.connections": ("10000", False),
    "group.initial.rebalance.delay.ms": ("3000", True),
    "group.min.session.timeout.ms": ("6000", True),
    "group.max.session.timeout.ms": ("1800000", True),
    "sasl.enabled.mechanisms": ("GSSAPI", False),
    "sasl.kerberos.min.time.before.relogin": ("60000", False),
    "unclean.leader.election.enable": ("false", False),
    "log.cleaner.delete.retention.ms": ("86400000", False),
    "log.cleaner.min.cleanable.ratio": ("0.5", False),
    "compression.type": ("producer", False),
}


def test_broker_describe_reports_kafkas_broker_configs(broker):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    got = describe(admin, ResourceType.BROKER, "1")
    for key, (value, read_only) in BROKER_DEFAULTS.items():
        assert key in got, key
        assert got[key].value == value, (key, got[key].value)
        assert got[key].is_read_only == read_only, key
        assert got[key].source == ConfigSource.DEFAULT_CONFIG.value, key
    # Set on the command line by the test harness.
    for key in ["listeners", "log.dirs"]:
        assert got[key].source == ConfigSource.STATIC_BROKER_CONFIG.value and got[key].is_read_only, key
    assert got["broker.id"].value == "1"
    assert got["listeners"].value == broker.bootstrap
    assert "advertised.listeners" in got and "controller.listener.names" in got
    # Secrets are never sent, set or not.
    for key in ["ssl.keystore.password", "ssl.key.password", "ssl.truststore.password", "sasl.jaas.config"]:
        assert got[key].is_sensitive and got[key].value is None, key

    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource as KConfigResource, ConfigResourceType

    k = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    kgot = k.describe_configs([KConfigResource(ConfigResourceType.BROKER, "1")], config_filter="all")["broker"]["1"]
    k.close()
    for key, kind in [
        ("default.replication.factor", "INT"),
        ("offsets.topic.replication.factor", "SHORT"),
        ("log.retention.ms", "LONG"),
        ("auto.create.topics.enable", "BOOLEAN"),
        ("log.cleaner.min.cleanable.ratio", "DOUBLE"),
        ("sasl.enabled.mechanisms", "LIST"),
        ("ssl.keystore.password", "PASSWORD"),
        ("listeners", "STRING"),
    ]:
        assert kgot[key]["config_type"] == kind, (key, kgot[key])
    assert kgot["default.replication.factor"]["value"] == "1"
    assert kgot["ssl.keystore.password"]["is_sensitive"] and kgot["ssl.keystore.password"]["value"] is None


def test_dynamic_broker_configs_are_kept_and_read_only_ones_refused(make_broker):
    b = make_broker().start()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    incremental(
        admin,
        ResourceType.BROKER,
        "1",
        num_io_threads=(AlterConfigOpType.SET, "16"),
        sasl_kerberos_min_time_before_relogin=(AlterConfigOpType.SET, "120000"),
        max_connections=(AlterConfigOpType.SET, "5000"),
    )
    # The cluster default of one, which this broker's own value then overrides.
    with raw.connect(b.port) as s:
        assert raw.incremental_alter_configs_v0(s, 4, "", [("log.cleaner.threads", 0, "3")]) == (0, None)
    incremental(admin, ResourceType.BROKER, "1", log_cleaner_threads=(AlterConfigOpType.SET, "2"))

    def check(got):
        for key, value in [
            ("num.io.threads", "16"),
            ("sasl.kerberos.min.time.before.relogin", "120000"),
            ("max.connections", "5000"),
            ("log.cleaner.threads", "2"),
        ]:
            assert got[key].value == value, key
            assert got[key].source == ConfigSource.DYNAMIC_BROKER_CONFIG.value, key
            assert not got[key].is_read_only, key

    check(describe(admin, ResourceType.BROKER, "1"))

    # The legacy AlterConfigs replaces this broker's set.
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource as KConfigResource, ConfigResourceType

    b.stop()
    b.start()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    check(describe(admin, ResourceType.BROKER, "1"))
    k = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    k.alter_configs(
        [KConfigResource(ConfigResourceType.BROKER, "1", configs={"num.network.threads": "6"})], incremental=False
    )
    k.close()
    got = describe(admin, ResourceType.BROKER, "1")
    # kafka-python sends the other dynamic values it read along with the change.
    assert got["num.network.threads"].value == "6" and got["num.io.threads"].value == "16"
    legacy = ConfigResource(ResourceType.BROKER, "1", set_config={"num.network.threads": "4"})
    admin.alter_configs([legacy])[legacy].result(10)
    got = describe(admin, ResourceType.BROKER, "1")
    assert got["num.network.threads"].value == "4"
    assert got["num.io.threads"].value == "8" and got["num.io.threads"].source == ConfigSource.DEFAULT_CONFIG.value
    assert got["log.cleaner.threads"].value == "3"
    assert got["log.cleaner.threads"].source == ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value

    # Read-only configs are refused as Kafka refuses them, by both APIs and both clients.
    for key, value in [("default.replication.factor", "3"), ("log.dirs", "/tmp/x"), ("num.partitions", "2")]:
        res = ConfigResource(
            ResourceType.BROKER, "1", incremental_configs=[ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)]
        )
        e = error_of(admin.incremental_alter_configs([res])[res])
        assert e.code() == KafkaError.INVALID_REQUEST, (key, e)
        assert e.str() == f"Cannot update these configs dynamically: Set({key})", e.str()
        legacy = ConfigResource(ResourceType.BROKER, "1", set_config={key: value})
        e = error_of(admin.alter_configs([legacy])[legacy])
        assert e.code() == KafkaError.INVALID_REQUEST and key in e.str(), (key, e)
    k = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    from kafka.errors import InvalidRequestError

    result = k.alter_configs(
        [KConfigResource(ConfigResourceType.BROKER, "1", configs={"default.replication.factor": "3"})],
        raise_on_unknown=False,
    )
    k.close()
    said = str(result["broker"]["1"])
    assert InvalidRequestError.__name__ in said and "Set(default.replication.factor)" in said, result
    with raw.connect(b.port) as s:
        err, message = raw.incremental_alter_configs_v0(s, 4, "", [("sasl.kerberos.min.time.before.relogin", 0, "1")])
        assert err == KafkaError.INVALID_REQUEST and "broker id must be specified" in message, message
        err, message = raw.incremental_alter_configs_v0(s, 4, "1", [("ssl.keystore.location", 0, "/k.jks")], 2)
        assert err == KafkaError.INVALID_REQUEST and "listener prefix" in message, message
        err, message = raw.incremental_alter_configs_v0(s, 4, "1", [("num.io.threads", 0, "many")], 3)
        assert err == KafkaError.INVALID_REQUEST and "num.io.threads" in message, message
    # Nothing refused was kept.
    got = describe(admin, ResourceType.BROKER, "1")
    assert got["default.replication.factor"].value == "1" and got["num.io.threads"].value == "8"


def test_create_topics_returns_the_created_topics_configs(broker):
    """CreateTopics v5+ answers with the new topic's configs and their sources, as Kafka does."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic as KNewTopic

    k = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    topic = topic_name()
    result = k.create_topics([KNewTopic(topic, 1, 1, topic_configs={"preallocate": "true", "segment.jitter.ms": "5"})])
    k.close()
    (created,) = result["topics"]
    assert created["error_code"] == 0, created
    configs = created["configs"]
    assert set(configs) == set(KAFKA_TOPIC_DEFAULTS)
    assert configs["preallocate"]["value"] == "true"
    assert configs["preallocate"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
    assert configs["segment.jitter.ms"]["value"] == "5"
    assert configs["min.cleanable.dirty.ratio"] == {
        "value": "0.5",
        "read_only": False,
        "config_source": "DEFAULT_CONFIG",
        "is_sensitive": False,
    }
