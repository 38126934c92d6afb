"""The `sluice` command line (built on the native client) against the real binary, and across
clients: what `sluice produce` writes, kcat and kafka-python read (and the reverse), keys land
in the same partition whichever client wrote them, and a consumer group mixes a `sluice
consume` member with a confluent-kafka member."""

import json
import signal
import subprocess
import time

import pytest
from confluent_kafka import Consumer
from kafka import KafkaConsumer, KafkaProducer
from kafka.partitioner.default import murmur2

from conftest import BINARY, free_port
from test_groups import FAST_GROUPS, group_name
from test_produce_consume import create_topic, produce, topic_name


@pytest.fixture
def fbroker(make_broker):
    return make_broker(extra_args=FAST_GROUPS).start()


def sluice(broker, *args, input=None, check=True, timeout=60):
    out = subprocess.run(
        [str(BINARY), *args, "-b", broker.bootstrap],
        input=input,
        capture_output=True,
        timeout=timeout,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"sluice {' '.join(args)} exited {out.returncode}:\n{out.stderr.decode()}")
    return out


def sluice_json(broker, *args, **kw):
    return json.loads(sluice(broker, *args, "-o", "json", **kw).stdout)


def java_partition(key: bytes, n: int) -> int:
    # kafka-python's murmur2 is a port of the Java client's; placement is toPositive(h) % n.
    return (murmur2(key) & 0x7FFFFFFF) % n


def test_topic_lifecycle_and_configs(fbroker):
    t = topic_name("cli")
    out = sluice(fbroker, "topic", "create", t, "-p", "3", "-c", "retention.ms=3600000")
    assert f"created topic {t}" in out.stdout.decode()
    again = sluice(fbroker, "topic", "create", t, check=False)
    assert again.returncode == 1
    err = again.stderr.decode()
    assert "TOPIC_ALREADY_EXISTS" in err and t in err and err.count("\n") == 1
    assert sluice(fbroker, "topic", "create", t, "--if-not-exists").returncode == 0

    listed = {x["name"]: x for x in sluice_json(fbroker, "topic", "list")}
    assert listed[t]["partitions"] == 3 and listed[t]["replication_factor"] == 1

    [desc] = sluice_json(fbroker, "topic", "describe", t)
    assert [p["partition"] for p in desc["partitions"]] == [0, 1, 2]
    assert all(p["leader"] == 1 and p["start_offset"] == 0 and p["end_offset"] == 0 for p in desc["partitions"])
    assert all(p["isr"] == [1] and p["elr"] == [] for p in desc["partitions"])
    assert desc["configs"]["retention.ms"] == "3600000"

    sluice(fbroker, "topic", "alter", t, "--set", "retention.ms=7200000", "--set", "max.message.bytes=2097152")
    got = {c["name"]: c for c in sluice_json(fbroker, "config", "get", "--topic", t)}
    assert got["retention.ms"]["value"] == "7200000" and got["retention.ms"]["source"] == "DYNAMIC_TOPIC_CONFIG"
    assert got["max.message.bytes"]["value"] == "2097152"
    sluice(fbroker, "config", "set", "--topic", t, "--delete", "retention.ms", "segment.ms=60000")
    got = {c["name"]: c for c in sluice_json(fbroker, "config", "get", "--topic", t, "retention.ms", "segment.ms")}
    assert got["retention.ms"]["source"] == "DEFAULT_CONFIG" and got["segment.ms"]["value"] == "60000"
    bad = sluice(fbroker, "config", "set", "--topic", t, "retention.ms=soon", check=False)
    assert bad.returncode == 1 and "INVALID_CONFIG" in bad.stderr.decode()

    sluice(fbroker, "topic", "add-partitions", t, "--partitions", "5")
    [desc] = sluice_json(fbroker, "topic", "describe", t)
    assert len(desc["partitions"]) == 5
    shrink = sluice(fbroker, "topic", "add-partitions", t, "--partitions", "2", check=False)
    assert shrink.returncode == 1 and "INVALID_PARTITIONS" in shrink.stderr.decode()

    cluster = sluice_json(fbroker, "cluster", "describe")
    assert cluster["controller"] == 1
    (b,) = cluster["brokers"]
    assert b == {"id": 1, "host": "127.0.0.1", "port": fbroker.port, "rack": None, "fenced": False, "epoch": b["epoch"]}
    assert b["epoch"] >= 0

    sluice(fbroker, "topic", "delete", t)
    assert t not in {x["name"] for x in sluice_json(fbroker, "topic", "list")}
    gone = sluice(fbroker, "topic", "delete", t, check=False)
    assert gone.returncode == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in gone.stderr.decode()
    assert sluice(fbroker, "topic", "delete", t, "--if-exists").returncode == 0


def test_errors_are_one_line_that_says_what_to_do(tmp_path):
    port = free_port()
    out = subprocess.run([str(BINARY), "topic", "list", "-b", f"127.0.0.1:{port}"], capture_output=True, timeout=30)
    assert out.returncode == 1
    err = out.stderr.decode()
    assert err.count("\n") == 1, err
    assert f"cannot reach 127.0.0.1:{port}" in err and "is `sluice server` running" in err
    usage = subprocess.run([str(BINARY), "topic", "create"], capture_output=True, timeout=30)
    assert usage.returncode == 2


def test_every_command_has_help_with_examples():
    commands = [
        ["topic", "create"], ["topic", "list"], ["topic", "describe"], ["topic", "alter"],
        ["topic", "add-partitions"], ["topic", "delete"], ["produce"], ["consume"],
        ["group", "list"], ["group", "describe"], ["group", "reset-offsets"], ["group", "delete"],
        ["config", "get"], ["config", "set"], ["cluster", "describe"],
        ["bench", "produce"], ["bench", "consume"], ["bench", "e2e"], ["server"], [],
    ]
    for c in commands:
        out = subprocess.run([str(BINARY), *c, "--help"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, c
        assert "Examples:" in out.stdout, f"`sluice {' '.join(c)} --help` has no examples"


def test_produce_and_consume_with_keys_headers_formats_and_positions(fbroker):
    t = topic_name("cli")
    sluice(fbroker, "topic", "create", t, "-p", "1")
    lines = b"".join(b"k%d|value %d\n" % (i, i) for i in range(20))
    out = sluice(fbroker, "produce", t, "-K", "|", "-H", "src=test", "-H", "n=1", input=lines)
    assert "produced 20 records" in out.stderr.decode()

    got = [json.loads(l) for l in sluice(fbroker, "consume", t, "--from-beginning", "-e", "-o", "json").stdout.splitlines()]
    assert [r["offset"] for r in got] == list(range(20))
    assert got[3]["key"] == "k3" and got[3]["value"] == "value 3"
    assert got[0]["headers"] == [{"key": "src", "value": "test"}, {"key": "n", "value": "1"}]

    fmt = sluice(fbroker, "consume", t, "--offset", "18", "-e", "-f", "%t:%p:%o:%k=%s;%h\\n").stdout.decode()
    assert fmt == f"{t}:0:18:k18=value 18;src=test,n=1\n{t}:0:19:k19=value 19;src=test,n=1\n"
    assert sluice(fbroker, "consume", t, "--from-beginning", "-n", "3").stdout == b"value 0\nvalue 1\nvalue 2\n"
    # By time: every record is newer than a minute ago, none is from the future.
    ts = int(time.time() * 1000)
    assert len(sluice(fbroker, "consume", t, "--timestamp", str(ts - 60_000), "-e").stdout.splitlines()) == 20
    assert sluice(fbroker, "consume", t, "--timestamp", str(ts + 60_000), "-e").stdout == b""
    missing = sluice(fbroker, "consume", t, "-p", "7", "-e", check=False)
    assert missing.returncode == 1 and "no partition 7" in missing.stderr.decode()

    # Compressed, acks=0 and acks=1 writes are all read back by kcat.
    for codec, acks in [("gzip", "1"), ("snappy", "all"), ("lz4", "0"), ("zstd", "all")]:
        sluice(fbroker, "produce", t, "-z", codec, "--acks", acks, input=f"{codec}-a\n{codec}-b\n".encode())
    kc = subprocess.run(
        ["kcat", "-b", fbroker.bootstrap, "-C", "-t", t, "-o", "20", "-e", "-q", "-f", "%s\n"],
        capture_output=True, text=True, timeout=60,
    )
    assert kc.returncode == 0, kc.stderr
    assert sorted(kc.stdout.split()) == sorted(f"{c}-{x}" for c in ["gzip", "snappy", "lz4", "zstd"] for x in "ab")


def test_keys_land_where_the_java_partitioner_puts_them_whoever_writes(fbroker):
    n = 6
    keys = [f"user-{i}".encode() for i in range(60)]
    expected = {k: java_partition(k, n) for k in keys}
    assert len(set(expected.values())) == n, "the keys should spread over every partition"

    # sluice writes; kcat and kafka-python read.
    t1 = topic_name("keys")
    create_topic(fbroker.bootstrap, t1, partitions=n)
    sluice(fbroker, "produce", t1, "-K", ":", input=b"".join(k + b":v-" + k + b"\n" for k in keys))
    kc = subprocess.run(
        ["kcat", "-b", fbroker.bootstrap, "-C", "-t", t1, "-o", "beginning", "-e", "-q", "-f", "%k %p %s\n"],
        capture_output=True, text=True, timeout=60,
    )
    assert kc.returncode == 0, kc.stderr
    seen = {}
    for line in kc.stdout.splitlines():
        k, p, v = line.split(" ")
        assert v == f"v-{k}"
        seen[k.encode()] = int(p)
    assert seen == expected
    kp = KafkaConsumer(t1, bootstrap_servers=fbroker.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    by_python = {m.key: m.partition for m in kp}
    kp.close()
    assert by_python == expected

    # kafka-python (murmur2 by default) and kcat (told to use murmur2) write; sluice reads.
    t2 = topic_name("keys")
    create_topic(fbroker.bootstrap, t2, partitions=n)
    producer = KafkaProducer(bootstrap_servers=fbroker.bootstrap)
    for k in keys[:30]:
        producer.send(t2, key=k, value=b"py")
    producer.flush()
    producer.close()
    kc = subprocess.run(
        ["kcat", "-b", fbroker.bootstrap, "-P", "-t", t2, "-K", ":", "-X", "topic.partitioner=murmur2_random"],
        input="".join(f"{k.decode()}:kcat\n" for k in keys[30:]), capture_output=True, text=True, timeout=60,
    )
    assert kc.returncode == 0, kc.stderr
    got = sluice(fbroker, "consume", t2, "--from-beginning", "-e", "-f", "%k %p %s\\n").stdout.decode().splitlines()
    placed = {}
    for line in got:
        k, p, v = line.split(" ")
        placed[k.encode()] = int(p)
        assert v == ("py" if k.encode() in keys[:30] else "kcat")
    assert placed == expected


@pytest.mark.parametrize("assignor", ["range", "cooperative-sticky"])
def test_a_group_mixes_a_sluice_member_and_a_confluent_member(fbroker, tmp_path, assignor):
    t = topic_name("mix")
    g = group_name()
    create_topic(fbroker.bootstrap, t, partitions=4)
    out_path = tmp_path / "sluice-member.txt"
    with open(out_path, "wb") as out:
        member = subprocess.Popen(
            [str(BINARY), "consume", t, "-g", g, "--from-beginning", "-f", "%p %o %s\\n", "-b", fbroker.bootstrap,
             "--assignor", assignor],
            stdout=out, stderr=subprocess.PIPE,
        )
    # With cooperative-sticky the sluice member joins first and owns all four partitions; it
    # must hand two over (revoke, rejoin) without stopping on the two it keeps.
    if assignor == "cooperative-sticky":
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = sluice(fbroker, "group", "describe", g, "-o", "json", check=False)
            if out.returncode == 0 and (d := json.loads(out.stdout))["members"]:
                if len(d["members"][0]["assignment"]) == 4:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("the sluice member never owned all four partitions")
    theirs = Consumer({
        "bootstrap.servers": fbroker.bootstrap, "group.id": g, "auto.offset.reset": "earliest",
        "enable.auto.commit": True, "auto.commit.interval.ms": 200, "partition.assignment.strategy": assignor,
    })
    theirs.subscribe([t])
    try:
        def split():
            # Until a member's join is accepted the group may not exist yet.
            out = sluice(fbroker, "group", "describe", g, "-o", "json", check=False)
            if out.returncode != 0:
                return None
            d = json.loads(out.stdout)
            return d if len(d["members"]) == 2 and all(m["assignment"] for m in d["members"]) else None

        deadline = time.monotonic() + 60
        desc = None
        while desc is None and time.monotonic() < deadline:
            theirs.poll(0.2)
            desc = split()
        assert desc, f"the group never split between the two members: {sluice_json(fbroker, 'group', 'describe', g)}"
        assert desc["assignor"] == assignor
        owned = [sorted(p["partition"] for p in m["assignment"]) for m in desc["members"]]
        if assignor == "range":
            assert sorted(owned) == [[0, 1], [2, 3]]
        else:
            assert sorted(len(o) for o in owned) == [2, 2] and sorted(sum(owned, [])) == [0, 1, 2, 3]

        produce(fbroker.bootstrap, t, [{"value": f"r{i}".encode(), "partition": i % 4} for i in range(40)])
        read_by_them = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = theirs.poll(0.2)
            if m is not None and not m.error():
                read_by_them.append((m.partition(), m.value().decode()))
            read_by_us = out_path.read_text().splitlines()
            if len(read_by_them) + len(read_by_us) >= 40:
                break
        read_by_us = [(int(p), v) for p, _, v in (l.split(" ") for l in out_path.read_text().splitlines())]
        assert sorted(v for _, v in read_by_them + read_by_us) == sorted(f"r{i}" for i in range(40))
        ours = {p for p, _ in read_by_us}
        assert ours and not ours & {p for p, _ in read_by_them}, "each partition is read by one member only"
    finally:
        theirs.close()
        member.send_signal(signal.SIGTERM)
        code = member.wait(timeout=30)
    assert code == 0, member.stderr.read().decode()
    # Both left; the sluice member committed what it printed.
    d = sluice_json(fbroker, "group", "describe", g)
    assert d["members"] == [] and d["state"] == "Empty"
    lag = {o["partition"]: o for o in d["offsets"]}
    assert all(lag[p]["committed"] == 10 and lag[p]["lag"] == 0 for p in ours)


def test_group_describe_reset_offsets_and_delete(fbroker):
    t = topic_name("cli")
    g = group_name()
    sluice(fbroker, "topic", "create", t, "-p", "1")
    sluice(fbroker, "produce", t, input=b"".join(b"m%d\n" % i for i in range(10)))
    out = sluice(fbroker, "consume", t, "-g", g, "--from-beginning", "-n", "4")
    assert out.stdout == b"m0\nm1\nm2\nm3\n"

    d = sluice_json(fbroker, "group", "describe", g)
    assert d["state"] == "Empty"
    assert d["offsets"] == [{"topic": t, "partition": 0, "committed": 4, "end": 10, "lag": 6, "member": None}]
    table = sluice(fbroker, "group", "describe", g).stdout.decode().splitlines()
    assert table[1].split() == ["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "MEMBER", "CLIENT"]
    assert table[2].split() == [t, "0", "4", "10", "6", "-", "-"]
    assert g in {x["group"] for x in sluice_json(fbroker, "group", "list")}

    def committed():
        return sluice_json(fbroker, "group", "describe", g)["offsets"][0]["committed"]

    plan = sluice_json(fbroker, "group", "reset-offsets", g, "--topic", t, "--to-earliest")
    assert plan["executed"] is False and plan["offsets"][0]["to"] == 0 and committed() == 4
    sluice(fbroker, "group", "reset-offsets", g, "--topic", t, "--to-earliest", "--execute")
    assert committed() == 0
    sluice(fbroker, "group", "reset-offsets", g, "--topic", t, "--shift-by", "3", "--execute")
    assert committed() == 3
    sluice(fbroker, "group", "reset-offsets", g, "--topic", t, "--shift-by", "-100", "--execute")
    assert committed() == 0, "shifts are clamped to the log"
    sluice(fbroker, "group", "reset-offsets", g, "--topic", t, "--to-offset", "7", "--execute")
    assert committed() == 7
    # The group resumes where it was reset to.
    assert sluice(fbroker, "consume", t, "-g", g, "-e").stdout == b"m7\nm8\nm9\n"
    sluice(fbroker, "group", "reset-offsets", g, "--topic", t, "--to-latest", "--execute")
    assert committed() == 10

    sluice(fbroker, "group", "delete", g)
    assert g not in {x["group"] for x in sluice_json(fbroker, "group", "list")}
    gone = sluice(fbroker, "group", "describe", g, check=False)
    assert gone.returncode == 1


def test_a_group_whose_committed_offset_fell_out_of_the_log_resets(fbroker):
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    t = topic_name("oor")
    g = group_name()
    sluice(fbroker, "topic", "create", t, "-p", "1")
    sluice(fbroker, "produce", t, input=b"".join(b"m%d\n" % i for i in range(10)))
    sluice(fbroker, "group", "reset-offsets", g, "--topic", t, "--to-offset", "2", "--execute")
    # Retention (here DeleteRecords) moves the log start past the committed offset.
    admin = AdminClient({"bootstrap.servers": fbroker.bootstrap})
    [f] = admin.delete_records([TopicPartition(t, 0, 5)]).values()
    assert f.result(timeout=15).low_watermark == 5
    out = sluice(fbroker, "consume", t, "-g", g, "--from-beginning", "-e", timeout=60)
    assert out.stdout == b"m5\nm6\nm7\nm8\nm9\n"
    assert sluice_json(fbroker, "group", "describe", g)["offsets"][0]["committed"] == 10


def test_bench_reports_json(fbroker):
    t = topic_name("bench")
    p = sluice_json(fbroker, "bench", "produce", "-t", t, "-p", "2", "-n", "3000", "-s", "100", "--acks", "all", "--json")
    assert p["kind"] == "produce" and p["records"] == 3000 and p["bytes"] == 300_000 and p["errors"] == 0
    assert p["latency_ms"]["samples"] == 3000
    lat = p["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]
    c = sluice_json(fbroker, "bench", "consume", "-t", t, "--consumers", "2", "--json")
    assert c["records"] == 3000 and c["bytes"] == 300_000 and c["consumers"] == 2
    e = sluice_json(fbroker, "bench", "e2e", "-t", t, "-d", "1", "--rate", "500", "-s", "64", "--json")
    assert e["produced"] == e["received"] > 300
    assert e["latency_ms"]["samples"] == e["received"]
    # What the bench wrote is real data other clients can read.
    kc = subprocess.run(
        ["kcat", "-b", fbroker.bootstrap, "-C", "-t", t, "-o", "beginning", "-e", "-q", "-f", "%S\n"],
        capture_output=True, text=True, timeout=60,
    )
    sizes = kc.stdout.split()
    assert sizes.count("100") == 3000 and sizes.count("64") == e["produced"]
