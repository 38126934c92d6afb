"""Controller failover on a three-node cluster on loopback: SIGKILL the active controller, then
measure how long until the survivors name a new controller (Metadata's controller id, as a
client sees it) and until the first CreateTopics through the admin client succeeds; restart
the killed node and repeat. Also the time from a CreateTopics answered by the controller to
every node's Metadata listing the topic. Kafka's default timeouts throughout
(controller.quorum.fetch.timeout.ms 2000, election timeout 1000). A benchmark, not a test:
it prints Markdown rows for docs/benchmarks.md.

    cargo build --release --bin sluice
    .venv/bin/python bench/failover.py [rounds]
"""

import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "sluice"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, root, node_id, voters, controller_port):
        self.node_id, self.port, self.controller_port = node_id, free_port(), controller_port
        self.voters, self.data_dir, self.proc = voters, root / f"node-{node_id}", None

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def launch(self):
        self.proc = subprocess.Popen(
            [
                str(BINARY), "server",
                "--listeners", f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                "--admin-listeners", "",
                "--data-dir", str(self.data_dir),
                "--set", f"node.id={self.node_id}",
                "--set", f"controller.quorum.voters={self.voters}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self

    def wait_serving(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"node {self.node_id} did not serve")


def controller_of(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5).controller_id


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    root = Path(tempfile.mkdtemp(prefix="sluice-failover-"))
    ports = {i: free_port() for i in (1, 2, 3)}
    voters = ",".join(f"{i}@127.0.0.1:{p}" for i, p in ports.items())
    nodes = {i: Node(root, i, voters, ports[i]).launch() for i in ports}
    for n in nodes.values():
        n.wait_serving()
    everyone = ",".join(n.bootstrap for n in nodes.values())
    to_leader, to_create, propagation = [], [], []
    try:
        # Propagation: CreateTopics answered, then every node's Metadata lists the topic.
        admin = AdminClient({"bootstrap.servers": everyone})
        clients = {i: AdminClient({"bootstrap.servers": n.bootstrap}) for i, n in nodes.items()}
        for k in range(rounds * 5):
            name = f"prop-{k}"
            admin.create_topics([NewTopic(name, 1, 1)])[name].result(15)
            answered = time.monotonic()
            pending = set(nodes)
            while pending:
                for i in list(pending):
                    if name in clients[i].list_topics(timeout=5).topics:
                        pending.discard(i)
            propagation.append(time.monotonic() - answered)
        for r in range(rounds):
            controller = controller_of(everyone)
            live = [n for i, n in nodes.items() if i != controller]
            live_bootstrap = ",".join(n.bootstrap for n in live)
            nodes[controller].proc.send_signal(signal.SIGKILL)
            nodes[controller].proc.wait()
            killed = time.monotonic()
            while True:
                try:
                    c = controller_of(live_bootstrap)
                    if c not in (-1, controller):
                        break
                except Exception:
                    pass
                time.sleep(0.01)
            to_leader.append(time.monotonic() - killed)
            admin = AdminClient({"bootstrap.servers": live_bootstrap})
            name = f"after-{r}"
            while True:
                try:
                    admin.create_topics([NewTopic(name, 1, 1)], request_timeout=5)[name].result(10)
                    break
                except Exception as e:
                    if "already exists" in str(e):
                        break
                    time.sleep(0.01)
            to_create.append(time.monotonic() - killed)
            nodes[controller].launch().wait_serving()
    finally:
        for n in nodes.values():
            if n.proc and n.proc.poll() is None:
                n.proc.send_signal(signal.SIGKILL)

    def row(what, xs):
        xs = sorted(x * 1000 for x in xs)
        p99 = xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]
        return f"| {what} | {len(xs)} | {statistics.median(xs):.0f} | {p99:.0f} | {xs[0]:.0f} | {xs[-1]:.0f} |"

    print("| measure (ms) | samples | p50 | p99 | min | max |")
    print("|---|---:|---:|---:|---:|---:|")
    print(row("SIGKILL of the controller → a new controller named", to_leader))
    print(row("SIGKILL of the controller → first CreateTopics succeeds", to_create))
    print(row("CreateTopics answered → listed by every node's Metadata", propagation))


if __name__ == "__main__":
    main()
