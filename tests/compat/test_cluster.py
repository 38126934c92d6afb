"""Three combined sluice nodes on loopback, started as a user would start a cluster (the same
binary, `controller.quorum.voters` and a CONTROLLER listener each), driven by real clients:
the nodes form one metadata quorum, every node answers for the whole cluster, a topic's
partitions are spread over the brokers and served by their leaders to clients bootstrapped
anywhere, a SIGKILLed controller is replaced and topic creation works again, the dead broker
is fenced (its partitions lose their leader, new ones go elsewhere) and unfenced when it
returns, and a whole cluster restarted keeps every topic.

Not yet (issue 19's next steps): brokers other than the active controller forward clients'
admin requests (today the clients send them to the controller Metadata names, which is where
Kafka's admin clients send them anyway); kafkajs against a cluster."""

import json
import signal
import socket
import subprocess
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import BINARY, free_port


class Node:
    def __init__(self, root, node_id, voters, controller_port):
        """`controller_port` None: a broker-only node (an observer of the quorum)."""
        self.node_id = node_id
        self.port = free_port()
        self.admin_port = free_port()
        self.controller_port = controller_port
        self.voters = voters
        self.data_dir = root / f"node-{node_id}"
        self.log_path = root / f"node-{node_id}.log"
        self.proc = None
        self.extra = []

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def launch(self):
        self.log = open(self.log_path, "ab")
        if self.controller_port is None:
            listeners, roles = f"PLAINTEXT://127.0.0.1:{self.port}", ["--set", "process.roles=broker"]
        else:
            listeners, roles = f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}", []
        self.proc = subprocess.Popen(
            [
                str(BINARY),
                "server",
                *roles,
                "--listeners",
                listeners,
                "--admin-listeners",
                f"127.0.0.1:{self.admin_port}",
                "--data-dir",
                str(self.data_dir),
                "--set",
                f"node.id={self.node_id}",
                "--set",
                f"controller.quorum.voters={self.voters}",
                *self.extra,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        return self

    def wait_serving(self, timeout=60.0):
        """Up once its client port answers: the node has caught up with the quorum and is
        registered (it listens only then)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.node_id} exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"node {self.node_id} did not serve within {timeout}s:\n{self.logs()}")

    def stop(self, sig=signal.SIGTERM, timeout=30.0):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self.log.close()
        return code

    def logs(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@pytest.fixture
def cluster(tmp_path):
    ports = {i: free_port() for i in (1, 2, 3)}
    voters = ",".join(f"{i}@127.0.0.1:{p}" for i, p in ports.items())
    nodes = {i: Node(tmp_path, i, voters, ports[i]) for i in ports}
    # All at once, as a cluster's nodes start in any order: none serves before a majority is up.
    for n in nodes.values():
        n.launch()
    for n in nodes.values():
        n.wait_serving()
    yield nodes
    for n in nodes.values():
        n.stop(signal.SIGKILL)


def until(what, timeout, f):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            got = f()
            if got:
                return got
        except Exception as e:  # a client error while the cluster moves: try again
            last = e
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


def cluster_view(bootstrap):
    """(controller id, broker ids, {topic: [partition leaders]}) as this node answers."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(timeout=10)
    topics = {name: sorted(p.leader for p in t.partitions.values()) for name, t in md.topics.items()}
    return md.controller_id, sorted(md.brokers), topics


def create(bootstraps, name, partitions):
    admin = AdminClient({"bootstrap.servers": bootstraps})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(15)


def test_three_nodes_are_one_cluster_that_survives_its_controllers_death(cluster):
    everyone = ",".join(n.bootstrap for n in cluster.values())
    # One controller, three brokers, the same answer from every node.
    views = {i: cluster_view(n.bootstrap) for i, n in cluster.items()}
    controller = views[1][0]
    assert controller in (1, 2, 3), views
    for i, (c, brokers, _) in views.items():
        assert (c, brokers) == (controller, [1, 2, 3]), (i, views)

    # Each node's /metrics: the quorum's leader and epoch, and which role it has.
    import urllib.request

    for i, n in cluster.items():
        text = urllib.request.urlopen(f"http://127.0.0.1:{n.admin_port}/metrics", timeout=10).read().decode()
        values = dict(
            line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("sluice_raft_")
        )
        assert float(values["sluice_raft_current_leader"]) == controller, (i, values)
        role = "leader" if i == controller else "follower"
        assert float(values[f'sluice_raft_current_state{{state="{role}"}}']) == 1, (i, values)
        assert float(values["sluice_raft_high_watermark"]) > 0, values
        applied = [l for l in text.splitlines() if l.startswith("sluice_metadata_last_applied_record_offset ")]
        assert len(applied) == 1 and float(applied[0].split()[1]) > 0, applied
        # The leader reports each voter's lag behind the high watermark; the others none.
        lags = sorted(k for k in values if k.startswith("sluice_raft_replica_fetch_lag{"))
        if i == controller:
            assert lags == [f'sluice_raft_replica_fetch_lag{{replica="{v}",kind="voter"}}' for v in (1, 2, 3)], lags
            assert all(float(values[k]) >= 0 for k in lags), values
        else:
            assert lags == [], lags

    # kafka-python's describe-quorum, at the controller: three voters, every one caught up.
    from kafka import KafkaAdminClient

    a = KafkaAdminClient(bootstrap_servers=cluster[controller].bootstrap)
    try:
        q = a.describe_metadata_quorum()
    finally:
        a.close()
    (p,) = q["topics"][0]["partitions"]
    assert p["leader_id"] == controller
    assert sorted(v["replica_id"] for v in p["current_voters"]) == [1, 2, 3]
    assert all(v["log_end_offset"] == p["high_watermark"] for v in p["current_voters"]), p

    # A topic created through the admin client is spread over the three brokers, one leader
    # each; every node names the same leaders.
    create(everyone, "orders", 3)
    for n in cluster.values():
        until(f"node {n.node_id} to know orders", 10, lambda: cluster_view(n.bootstrap)[2].get("orders") == [1, 2, 3])

    # A broker that is not the active controller forwards admin requests to it: CreateTopics
    # and IncrementalAlterConfigs sent to such a node (as a tool that does not look for the
    # controller would) are made by the controller, and every node sees the result.
    import kafka_raw as raw

    other = next(n for i, n in cluster.items() if i != controller)
    s = raw.connect(other.port, timeout=30)
    assert raw.create_topics_v2(s, "forwarded", 2) == (0, None)
    assert raw.create_topics_v2(s, "forwarded", 2, correlation_id=2)[0] == 36  # TOPIC_ALREADY_EXISTS
    assert raw.incremental_alter_configs_v0(s, 2, "forwarded", [("retention.ms", 0, "60000")], correlation_id=3) == (0, None)
    s.close()
    for n in cluster.values():
        until(f"node {n.node_id} to know forwarded", 10, lambda: len(cluster_view(n.bootstrap)[2].get("forwarded", [])) == 2)
    from confluent_kafka.admin import ConfigResource

    for n in cluster.values():
        admin = AdminClient({"bootstrap.servers": n.bootstrap})
        (future,) = admin.describe_configs([ConfigResource("topic", "forwarded")]).values()
        until(f"node {n.node_id} to describe forwarded's retention", 10, lambda: future.result(10)["retention.ms"].value == "60000")

    # Produced and consumed by clients bootstrapped at one node: each partition's records go
    # to, and come from, the broker that leads it.
    p = Producer({"bootstrap.servers": other.bootstrap, "acks": "all"})
    for i in range(100):
        p.produce("orders", value=b"v%d" % i, partition=i % 3)
    assert p.flush(20) == 0
    c = Consumer({"bootstrap.servers": other.bootstrap, "group.id": "unused", "enable.auto.commit": False})
    c.assign([TopicPartition("orders", i, 0) for i in range(3)])
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 100 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    assert sorted(got) == sorted(b"v%d" % i for i in range(100))

    # Producer ids come in blocks from the active controller, so they never repeat across
    # brokers: InitProducerId at every node, twice each.
    ids = []
    for n in cluster.values():
        s = raw.connect(n.port)
        for k in range(2):
            err, pid, _epoch = raw.init_producer_id_v0(s, correlation_id=k + 1)
            assert err == 0, (n.node_id, err)
            ids.append(pid)
        s.close()
    assert len(set(ids)) == len(ids), ids
    # And idempotent producers bootstrapped at each node deliver.
    for n in cluster.values():
        p = Producer({"bootstrap.servers": n.bootstrap, "enable.idempotence": True, "message.timeout.ms": 15000})
        failed = []
        p.produce("orders", value=b"idempotent", partition=0, on_delivery=lambda e, m: e and failed.append(e))
        assert p.flush(20) == 0 and failed == [], (n.node_id, failed)

    # A consumer group, its members bootstrapped at a node that does not coordinate it: they
    # find the coordinator, share the partitions, read everything and commit.
    members = [
        Consumer(
            {
                "bootstrap.servers": other.bootstrap,
                "group.id": "readers",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        for _ in range(2)
    ]
    for m in members:
        m.subscribe(["orders"])
    read = []
    deadline = time.monotonic() + 30
    while len(read) < 103 and time.monotonic() < deadline:
        for m in members:
            msg = m.poll(0.2)
            if msg is not None and msg.error() is None:
                read.append(msg.value())
    assert sorted(read) == sorted([b"v%d" % i for i in range(100)] + [b"idempotent"] * 3), len(read)
    for m in members:
        m.commit(asynchronous=False)
    committed = members[0].committed([TopicPartition("orders", i) for i in range(3)], timeout=10)
    for m in members:
        m.close()
    assert sum(tp.offset for tp in committed if tp.offset >= 0) == 103, committed

    # kcat, bootstrapped at yet another node, sees the same cluster.
    third = next(n for i, n in cluster.items() if i not in (controller, other.node_id))
    listing = subprocess.run(["kcat", "-b", third.bootstrap, "-L", "-t", "orders"], capture_output=True, text=True, timeout=30)
    assert listing.returncode == 0, listing.stderr
    assert " 3 brokers:" in listing.stdout and "(controller)" in listing.stdout, listing.stdout
    for b in (1, 2, 3):
        assert listing.stdout.count(f"leader {b},") == 1, listing.stdout

    # `sluice cluster describe` from a node that does not lead the quorum (it forwards
    # DescribeQuorum to the controller).
    out = subprocess.run(
        [str(BINARY), "cluster", "describe", "-b", other.bootstrap, "-o", "json"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    described = json.loads(out.stdout)
    assert described["controller"] == controller and [b["id"] for b in described["brokers"]] == [1, 2, 3]
    quorum = described["quorum"]
    assert quorum["leader"] == controller and sorted(v["id"] for v in quorum["voters"]) == [1, 2, 3], quorum
    assert all(v["lag"] == 0 for v in quorum["voters"]), quorum

    # The controller dies: the others elect one of themselves, and creation works again.
    cluster[controller].stop(signal.SIGKILL)
    killed_at = time.monotonic()
    live = [n for i, n in cluster.items() if i != controller]
    live_bootstrap = ",".join(n.bootstrap for n in live)
    new = until("a new controller", 30, lambda: (lambda c: c if c not in (-1, controller) else None)(cluster_view(live[0].bootstrap)[0]))
    print(f"a new controller, node {new}, named {time.monotonic() - killed_at:.2f}s after the kill")
    # The dead broker is fenced once its session (broker.session.timeout.ms, 9 s) runs out:
    # Metadata no longer lists it, and its partition of orders has no leader.
    live_ids = sorted(n.node_id for n in live)
    until("the dead broker to be fenced", 30, lambda: cluster_view(live[0].bootstrap)[1] == live_ids)
    print(f"the dead broker fenced {time.monotonic() - killed_at:.2f}s after the kill")
    # `sluice cluster describe` (DescribeCluster v2 with the fenced brokers) says which.
    out = subprocess.run(
        [str(BINARY), "cluster", "describe", "-b", live[0].bootstrap, "-o", "json"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    brokers = json.loads(out.stdout)["brokers"]
    assert {b["id"]: b["fenced"] for b in brokers} == {controller: True, **{i: False for i in live_ids}}, brokers
    assert all(b["epoch"] > 0 for b in brokers), brokers
    until("orders to lose the dead broker's leader", 10, lambda: cluster_view(live[1].bootstrap)[2].get("orders") == [-1] + live_ids)
    # The fenced broker leaves the ISR of its partition (KIP-966: it waits among the eligible
    # leader replicas, the only one that may lead it again); the others keep theirs.
    md = AdminClient({"bootstrap.servers": live[1].bootstrap}).list_topics("orders", timeout=10)
    isrs = {p.leader: p.isrs for p in md.topics["orders"].partitions.values()}
    assert isrs == {-1: [], **{i: [i] for i in live_ids}}, isrs
    out = subprocess.run(
        [str(BINARY), "topic", "describe", "orders", "-b", live[1].bootstrap, "-o", "json"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    [orders] = json.loads(out.stdout)
    elr = {p["leader"]: p["elr"] for p in orders["partitions"]}
    assert elr == {-1: [controller], **{i: [] for i in live_ids}}, orders
    # The active controller's gauges (Kafka's KafkaController ones) say the same; the other
    # live node reports none.
    import urllib.request

    def gauges(n):
        text = urllib.request.urlopen(f"http://127.0.0.1:{n.admin_port}/metrics", timeout=10).read().decode()
        return {l.split()[0]: float(l.split()[1]) for l in text.splitlines() if l.startswith("sluice_controller_")}

    g = {n.node_id: gauges(n) for n in live}
    assert g[new]["sluice_controller_active"] == 1 and g[new]["sluice_controller_fenced_brokers"] == 1, g
    assert g[new]["sluice_controller_active_brokers"] == 2 and g[new]["sluice_controller_offline_partitions"] >= 1, g
    other_live = next(i for i in live_ids if i != new)
    assert g[other_live]["sluice_controller_active"] == 0 and g[other_live]["sluice_controller_offline_partitions"] == 0, g
    # New partitions go to the live brokers only.
    until("a topic created after the controller's death", 30, lambda: create(live_bootstrap, "after-kill", 2) or True)
    until("after-kill's leaders", 10, lambda: cluster_view(live[1].bootstrap)[2].get("after-kill") == live_ids)

    # The dead node comes back, catches up, is unfenced and leads its partition again.
    cluster[controller].launch().wait_serving()
    until("the returning node to know after-kill", 15, lambda: "after-kill" in cluster_view(cluster[controller].bootstrap)[2])
    for n in cluster.values():
        until(f"node {n.node_id} to see orders led by all three again", 15, lambda: cluster_view(n.bootstrap)[2].get("orders") == [1, 2, 3])
    md = AdminClient({"bootstrap.servers": live[1].bootstrap}).list_topics("orders", timeout=10)
    assert all(p.isrs == [p.leader] for p in md.topics["orders"].partitions.values()), md.topics["orders"].partitions
    p = Producer({"bootstrap.servers": cluster[controller].bootstrap, "acks": "all"})
    for i in range(3):
        p.produce("orders", value=b"back", partition=i)
    assert p.flush(20) == 0

    # Every node restarted: all metadata is kept.
    for n in cluster.values():
        assert n.stop() == 0, n.logs()
    for n in cluster.values():
        n.launch()
    for n in cluster.values():
        n.wait_serving()
    for n in cluster.values():
        _, brokers, topics = cluster_view(n.bootstrap)
        assert brokers == [1, 2, 3]
        assert topics.get("orders") == [1, 2, 3] and topics.get("after-kill") == live_ids, topics
    for n in cluster.values():
        assert "panicked" not in n.logs(), n.logs()


def test_dynamic_broker_configs_reach_every_broker(cluster):
    """A cluster-wide dynamic config (resource "") and one broker's own (resource = its id),
    each changed through a node that is not the active controller (which forwards it), take
    effect on the brokers they address, and only there."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    controller = cluster_view(cluster[1].bootstrap)[0]
    others = [i for i in cluster if i != controller]

    def change(bootstrap, resource, key, value):
        admin = AdminClient({"bootstrap.servers": bootstrap})
        entry = ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
        (future,) = admin.incremental_alter_configs([ConfigResource("broker", resource, incremental_configs=[entry])]).values()
        future.result(15)

    def described(node_id, key):
        # Kafka's admin clients send a broker's DescribeConfigs to that broker.
        admin = AdminClient({"bootstrap.servers": cluster[node_id].bootstrap})
        (future,) = admin.describe_configs([ConfigResource("broker", str(node_id))]).values()
        entry = future.result(10)[key]
        return entry.value, int(entry.source)

    # librdkafka refuses a broker resource without a name, so the cluster default goes raw.
    import kafka_raw as raw

    s = raw.connect(cluster[others[0]].port, timeout=30)
    assert raw.incremental_alter_configs_v0(s, 4, "", [("log.retention.ms", 0, "3600000")]) == (0, None)
    s.close()
    # A forwarded request as large as a client's may be (here 1.3 MB of CreateTopics, above the
    # 1 MiB the quorum's own requests are held to) reaches the controller, which makes it (a
    # forward that failed would be answered NOT_CONTROLLER by the node itself).
    throttled = ",".join(["0:1"] * 8000)
    configs = [("leader.replication.throttled.replicas", throttled), ("follower.replication.throttled.replicas", throttled)]
    big = [(f"big-{i}", 1, configs) for i in range(20)]
    s = raw.connect(cluster[others[0]].port, timeout=30)
    assert raw.create_topics_v2_many(s, big) == [(f"big-{i}", 0, None) for i in range(20)]
    s.close()
    for i in cluster:
        until(f"broker {i} to take up the cluster default", 10, lambda: described(i, "log.retention.ms") == ("3600000", 3))

    # Broker others[1]'s own value, sent to it (as the admin client sends a broker resource):
    # it forwards the change, the controller writes it, and only that broker takes it up.
    target = others[1]
    change(cluster[target].bootstrap, str(target), "log.retention.ms", "7200000")
    until("the broker's own value", 10, lambda: described(target, "log.retention.ms") == ("7200000", 2))
    for i in cluster:
        if i != target:
            assert described(i, "log.retention.ms") == ("3600000", 3), i
    # A value the controller refuses is refused for the client, wherever it was sent.
    with pytest.raises(Exception, match="log.retention.ms"):
        change(cluster[target].bootstrap, str(target), "log.retention.ms", "soon")
    # Kept across a restart of the broker (it reads its layer from the metadata log).
    assert cluster[target].stop() == 0
    cluster[target].launch().wait_serving()
    assert described(target, "log.retention.ms") == ("7200000", 2)


def test_a_restart_after_a_reboot_counts_as_an_unclean_shutdown(cluster):
    """A broker restarted without its machine rebooting names its last epoch (its page cache,
    hence everything it wrote, survived); one whose machine rebooted (here: the boot id it
    kept is not this machine's) and that did not shut down cleanly does not, and the
    controller removes it from its partitions' eligible leader replicas (KIP-966). With one
    replica each there is nobody else, so the partition falls back to it (Kafka 4's
    last-known-leader rule) and is led again."""
    controller = cluster_view(cluster[1].bootstrap)[0]
    others = [i for i in cluster if i != controller]
    everyone = ",".join(n.bootstrap for n in cluster.values())
    create(everyone, "u", 3)
    for n in cluster.values():
        until(f"node {n.node_id} to know u", 10, lambda: cluster_view(n.bootstrap)[2].get("u") == [1, 2, 3])

    def logs():
        return "".join(n.logs() for n in cluster.values())

    # A process crash (SIGKILL), same boot: it registers with its previous epoch.
    a = cluster[others[0]]
    a.stop(signal.SIGKILL)
    a.launch().wait_serving()
    until("u led by all three again", 15, lambda: cluster_view(cluster[controller].bootstrap)[2].get("u") == [1, 2, 3])
    assert "after an unclean shutdown" not in logs()

    # A "reboot": the boot id it kept is not this machine's.
    b = cluster[others[1]]
    b.stop(signal.SIGKILL)
    path = b.data_dir / "data" / ".broker-epoch" if (b.data_dir / "data").exists() else b.data_dir / ".broker-epoch"
    epoch = path.read_text().split()[0]
    path.write_text(f"{epoch} 00000000-0000-0000-0000-000000000000\n")
    b.launch().wait_serving()
    until("the controller to see the unclean shutdown", 15, lambda: f"broker={b.node_id}" in "".join(
        l for l in logs().splitlines() if "after an unclean shutdown" in l))
    until("u led by all three again", 15, lambda: cluster_view(cluster[controller].bootstrap)[2].get("u") == [1, 2, 3])
    p = Producer({"bootstrap.servers": everyone, "acks": "all"})
    for i in range(3):
        p.produce("u", value=b"after", partition=i)
    assert p.flush(20) == 0


def test_a_broker_only_node_follows_the_quorum_as_an_observer(cluster, tmp_path):
    voters = cluster[1].voters
    observer = Node(tmp_path, 4, voters, None).launch()
    try:
        observer.wait_serving()
        out = subprocess.run(
            [str(BINARY), "cluster", "describe", "-b", observer.bootstrap, "-o", "json"], capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0, out.stderr
        d = json.loads(out.stdout)
        assert [b["id"] for b in d["brokers"]] == [1, 2, 3, 4]
        assert sorted(v["id"] for v in d["quorum"]["voters"]) == [1, 2, 3]
        assert [o["id"] for o in d["quorum"]["observers"]] == [4], d["quorum"]
    finally:
        assert observer.stop() == 0, observer.logs()


def meta_cluster_id(node):
    text = (node.data_dir / "meta.properties").read_text()
    return next(line.split("=", 1)[1] for line in text.splitlines() if line.startswith("cluster.id="))


def test_the_cluster_id_is_the_first_leaders_and_a_node_of_another_cluster_refuses_to_join(tmp_path):
    ports = {i: free_port() for i in (1, 2, 3)}
    voters = ",".join(f"{i}@127.0.0.1:{p}" for i, p in ports.items())
    nodes = {i: Node(tmp_path, i, voters, ports[i]) for i in ports}
    given = "c1usterIdGivenBy-user_"  # 22 characters of base64url, as Kafka's ids
    # Given to one node only (as `kafka-storage format --cluster-id` would be to each): the
    # others learn it from the log if that node bootstraps, and otherwise it refuses the one
    # the others chose. Either way every node ends in one cluster.
    nodes[1].extra = ["--cluster-id", given]
    try:
        for n in nodes.values():
            n.launch()
        for n in nodes.values():
            try:
                n.wait_serving()
            except RuntimeError:
                pass
        running = {i: n for i, n in nodes.items() if n.proc.poll() is None}
        ids = {i: AdminClient({"bootstrap.servers": n.bootstrap}).list_topics(timeout=10).cluster_id for i, n in running.items()}
        assert len(set(ids.values())) == 1, ids
        (cluster_id,) = set(ids.values())
        for i in running:
            assert meta_cluster_id(nodes[i]) == cluster_id
        if 1 in running:
            assert cluster_id == given
        else:
            assert "cluster.id is" in nodes[1].logs(), nodes[1].logs()
            nodes[1].extra = []
            nodes[1].launch().wait_serving()

        # A node whose meta.properties names another cluster refuses to join, saying why.
        n = nodes[3]
        assert n.stop() == 0
        props = n.data_dir / "meta.properties"
        kept = props.read_text()
        props.write_text(kept.replace(f"cluster.id={cluster_id}", "cluster.id=AnotherClusterIdXXXXXXXX"))
        n.launch()
        assert n.proc.wait(timeout=60) != 0
        assert "belongs to another cluster" in n.logs(), n.logs()
        # With its own meta.properties back, it rejoins.
        props.write_text(kept)
        n.launch().wait_serving()
        assert AdminClient({"bootstrap.servers": n.bootstrap}).list_topics(timeout=10).cluster_id == cluster_id
    finally:
        for n in nodes.values():
            n.stop(signal.SIGKILL)


def ports_free(ports):
    held = []
    try:
        for p in ports:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", p))
            held.append(s)
        return True
    except OSError:
        return False
    finally:
        for s in held:
            s.close()


def test_cluster_dev_starts_three_nodes_prints_the_bootstrap_and_stops_them_on_ctrl_c(tmp_path):
    base = next(
        b for b in (free_port() for _ in range(50)) if b < 65000 and ports_free([b + o + i for o in (0, 100, 200) for i in range(3)])
    )
    dev = subprocess.Popen(
        [str(BINARY), "cluster", "dev", "--port", str(base), "--dir", str(tmp_path / "dev")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        bootstrap = dev.stdout.readline().strip()
        assert bootstrap == ",".join(f"127.0.0.1:{base + i}" for i in range(3)), (bootstrap, dev.stderr.read())
        md = until("the dev cluster's three brokers", 30, lambda: (lambda m: m if len(m.brokers) == 3 else None)(
            AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5)))
        assert md.controller_id in (1, 2, 3)
    finally:
        dev.send_signal(signal.SIGINT)
        assert dev.wait(timeout=30) == 0
    # Every node stopped cleanly with it.
    for i in (1, 2, 3):
        log = (tmp_path / "dev" / f"node-{i}.log").read_text()
        assert "sluice broker stopped" in log, log
