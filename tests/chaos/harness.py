#!/usr/bin/env python3
"""The fault harness (issue 18): starts the real `sluice` binary the way a user would, runs the
native workload (`sluice verify run`) and confluent-kafka and kafka-python clients
(pyclients.py) side by side against it, injects faults on a seeded schedule, and checks every
history with `sluice verify check`.

    python harness.py run --seed 7                      # the fault kinds follow from the seed
    python harness.py run --seed 7 --faults kill,pause --seconds 12
    python harness.py suite --schedules 100 --seconds 12 --write-docs   # what chaos/run does

Fault kinds:
- kill: SIGKILL a node, restart it on the same ports and data directory after a short delay.
- pause: SIGSTOP a node, SIGCONT it 1 to 5 seconds later.
- diskfull: each node's data directory lives on a tmpfs of fixed size mounted by the harness;
  a filler file takes every free byte (until ENOSPC), is held a few seconds, then deleted.
- cut: nftables rules, in a table of the harness's own, drop every packet to and from a node's
  address and ports; then the table is deleted. In a cluster every node shares the loopback
  address, and a node's own connections to the others leave from ephemeral ports, so each node
  runs in a cgroup (v2) of its own and the cut also drops every packet its sockets send
  (`socket cgroupv2`): the node is cut off from clients and from the other nodes alike.
diskfull needs root and mount(8), cut needs root and nft(8) (and a cgroup v2 hierarchy for a
cluster): without them those kinds are skipped, loudly, and never reported as run.

The seed fixes the schedule (random.Random(seed)); the schedule is printed before the run, so a
failing run is rerun exactly with `run --seed N` (the fault kinds too: they follow from the seed
unless --faults is given). A run passes when `sluice verify check` finds every safety count
(lost, unexpected, duplicated, inconsistent_offsets, order_violations, poll_skips, non_monotonic,
committed_regressions) at 0, something was acknowledged and read, and every node came back.

A Cluster holds Nodes, each with its own id, address, ports, data directory (and tmpfs) and
log, and every fault names the node it hits. `--nodes N` runs N combined nodes as one cluster
(every one a voter of the metadata quorum; partitions have one replica each, so a killed
node's partitions are unavailable until it is back, and its clients retry).
"""

import argparse
import dataclasses
import datetime
import errno
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("SLUICE_BIN", ROOT / "target" / "debug" / "sluice"))
PYCLIENTS = Path(__file__).resolve().with_name("pyclients.py")
DOCS = ROOT / "docs" / "reliability.md"
START, END = "<!-- chaos/run:start -->", "<!-- chaos/run:end -->"

KINDS = ("kill", "pause", "diskfull", "cut")
# The suite cycles through these; a seed picks its kinds (seed % 5), so `run --seed N` alone
# reruns a schedule of the suite.
CYCLE = (("kill",), ("pause",), ("diskfull",), ("cut",), KINDS)
SAFETY = (
    "lost", "unexpected", "duplicated", "inconsistent_offsets", "order_violations",
    "poll_skips", "non_monotonic", "committed_regressions",
)
TOPIC = "chaos"
PARTITIONS = 4
TMPFS_SIZE = "256m"


# The binary as given (the suite runs a copy of it, BINARY).
GIVEN_BINARY = BINARY
# The clients' Python: the repo's venv (confluent-kafka, kafka-python) when there is one.
PYTHON = os.environ.get("SLUICE_CHAOS_PYTHON") or next(
    (str(p) for p in (Path(os.environ.get("SLUICE_VENV", ROOT / ".venv")) / "bin" / "python",) if p.exists()), sys.executable
)


def rerun(seed, seconds, kinds, nodes=1) -> str:
    """The command that reruns one schedule exactly."""
    env = "" if GIVEN_BINARY == ROOT / "target" / "debug" / "sluice" else f"SLUICE_BIN={GIVEN_BINARY} "
    nodes = f" --nodes {nodes}" if nodes > 1 else ""
    return f"{env}tests/chaos/harness.py run --seed {seed} --seconds {seconds:g} --faults {','.join(kinds)}{nodes}"


def kinds_for(seed: int):
    return CYCLE[seed % len(CYCLE)]


def label(kinds) -> str:
    return kinds[0] if len(kinds) == 1 else "mixed"


def _die_with_parent():
    """In a child before exec: SIGKILL it when the harness dies, even by SIGKILL, so that no
    broker or client outlives a killed harness."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _join_cgroup(path):
    """A preexec_fn that moves the child into the cgroup `path` (then dies with the parent)."""

    def pre():
        with open(Path(path) / "cgroup.procs", "w") as f:
            f.write(str(os.getpid()))
        _die_with_parent()

    return pre


def cgroup2_root():
    """Where the cgroup v2 hierarchy is mounted (None: nowhere)."""
    for line in read_text("/proc/mounts").splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return Path(fields[1])
    return None


def child_env():
    """The harness's own settings (SLUICE_BIN, SLUICE_CHAOS_*) are not the broker's: sluice
    reads SLUICE_* variables as settings and warns about unknown ones."""
    return {k: v for k, v in os.environ.items() if not (k == "SLUICE_BIN" or k.startswith(("SLUICE_CHAOS", "SLUICE_VENV")))}


def free_port(host="127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Output:
    """Prints to stdout and to the run's own log."""

    def __init__(self, path: Path, quiet=False):
        self.file = open(path, "a", buffering=1)
        self.quiet = quiet
        self.t0 = time.monotonic()

    def __call__(self, msg: str):
        line = f"[{time.monotonic() - self.t0:7.2f}s] {msg}"
        self.file.write(line + "\n")
        if not self.quiet:
            print(line, flush=True)

    def loud(self, msg: str):
        bar = "!" * 78
        self(f"{bar}\n!!! {msg}\n{bar}")

    def close(self):
        self.file.close()


# ---------------------------------------------------------------------------------------------
# Nodes and the cluster


class Node:
    """One `sluice server` process: its id, address, ports, data directory and log. Restarting
    it reuses all of them, as an operator's restart would."""

    def __init__(self, node_id: int, host: str, workdir: Path, data_dir: Path, extra_args=(), clustered=False):
        self.node_id = node_id
        self.host = host
        self.port = free_port(host)
        self.admin_port = free_port(host)
        # A node of a cluster: its CONTROLLER listener, and every voter's (set by `Cluster`).
        self.controller_port = free_port(host) if clustered else None
        self.voters = None
        self.data_dir = data_dir
        self.log_path = workdir / f"broker-{node_id}.log"
        self.extra_args = list(extra_args)
        self.proc = None
        self.paused = False
        self.starts = 0
        # The cgroup this node runs in (set by the harness when it can cut a cluster's node).
        self.cgroup = None

    @property
    def ports(self):
        return [p for p in (self.port, self.controller_port) if p is not None]

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self):
        if self.controller_port is None:
            listeners, quorum = self.bootstrap, []
        else:
            listeners = f"PLAINTEXT://{self.bootstrap},CONTROLLER://{self.host}:{self.controller_port}"
            quorum = ["-s", f"controller.quorum.voters={self.voters}"]
        return [
            str(BINARY), "server",
            "--node-id", str(self.node_id),
            "--listeners", listeners,
            *quorum,
            "--admin-listeners", f"{self.host}:{self.admin_port}",
            "--data-dir", str(self.data_dir),
            *self.extra_args,
        ]

    def start(self, timeout=30.0):
        self.launch()
        self.wait_listening(timeout)

    def launch(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== harness: start #{self.starts + 1} at {datetime.datetime.now().isoformat()}\n".encode())
            log.flush()
            pre = _join_cgroup(self.cgroup) if self.cgroup is not None else _die_with_parent
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=pre, env=child_env())
        self.starts += 1
        self.paused = False

    def wait_listening(self, timeout=30.0):
        """Until the client port accepts: the node is loaded (in a cluster: caught up with the
        metadata quorum, registered and unfenced)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.node_id} exited with {self.proc.returncode} on start (log: {self.log_path})")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"node {self.node_id} did not listen on {self.bootstrap} within {timeout}s (log: {self.log_path})")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.paused = False

    def pause(self):
        if self.alive():
            self.proc.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self):
        if self.alive() and self.paused:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self, timeout=20.0):
        """SIGTERM, as an operator stops a broker: its exit code (None if it had to be killed)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.resume()
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None


class Cluster:
    """The nodes of a run: one, or several combined nodes forming one cluster (a metadata
    quorum of all of them, on loopback ports of their own, so that a cut can name one node's
    address and port)."""

    def __init__(self, nodes):
        self.nodes = nodes
        if len(nodes) > 1:
            voters = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in nodes)
            for n in nodes:
                n.voters = voters

    def start(self, timeout=60.0):
        """Every node at once: none serves before a majority of the voters is up."""
        for n in self.nodes:
            n.launch()
        for n in self.nodes:
            n.wait_listening(timeout)

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    def node(self, node_id):
        return next(n for n in self.nodes if n.node_id == node_id)


# ---------------------------------------------------------------------------------------------
# Fault machinery: disks and the network


class Tmpfs:
    """A file system of fixed size for a node's data directory, so that it can be filled."""

    def __init__(self, path: Path, size=TMPFS_SIZE):
        self.path = path
        self.size = size
        self.mounted = False
        self.filler = path / "filler"

    def mount(self):
        self.path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return "mounting a tmpfs needs root"
        if shutil.which("mount") is None:
            return "mount(8) is missing"
        out = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size}", "sluice-chaos", str(self.path)],
            capture_output=True, text=True, timeout=20,
        )
        if out.returncode != 0:
            return f"mount -t tmpfs failed: {(out.stderr or out.stdout).strip()}"
        self.mounted = True
        return None

    def fill(self) -> int:
        """Writes until not one byte more fits: bytes written."""
        written = 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 1 << 12, 1):
                block = b"\0" * size
                for _ in range(1 << 20):
                    try:
                        written += os.write(fd, block)
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        return written

    def free(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def drain(self):
        try:
            self.filler.unlink()
        except FileNotFoundError:
            pass

    def unmount(self):
        if not self.mounted:
            return None
        self.drain()
        for args in (["umount", str(self.path)], ["umount", "-l", str(self.path)]):
            out = subprocess.run(args, capture_output=True, text=True, timeout=20)
            if out.returncode == 0:
                self.mounted = False
                return None
            time.sleep(0.5)
        return f"umount {self.path} failed: {out.stderr.strip()}"


class Nft:
    """Cuts nodes off with nftables: one table of the harness's own per cut node, holding an
    input-hook chain that drops every packet to or from the node's address and ports (on
    loopback both directions pass the input hook) and, for a node in a cgroup of its own, an
    output-hook chain that drops every packet its sockets send (its connections to the other
    nodes leave from ephemeral ports on the same address). Healing deletes the table."""

    def __init__(self):
        self.prefix = f"sluice_chaos_{os.getpid()}"
        self.cut_nodes = set()
        self.cgroups = []

    def cgroup_for(self, node_id):
        """A cgroup v2 of the harness's own for `node` (a child of the hierarchy's root, as
        `socket cgroupv2 level 1` matches), or the reason there cannot be one."""
        root = cgroup2_root()
        if root is None:
            return None, "no cgroup v2 hierarchy is mounted (a cluster's node cannot be cut off)"
        if not root.is_relative_to("/sys/fs/cgroup"):
            return None, f"the cgroup v2 hierarchy is at {root}, not under /sys/fs/cgroup where nft(8) looks"
        path = root / f"{self.prefix}_n{node_id}"
        try:
            path.mkdir(exist_ok=True)
        except OSError as e:
            return None, f"cannot make a cgroup at {path}: {e}"
        self.cgroups.append(path)
        return path, None

    def remove_cgroups(self):
        """Once the nodes have stopped (a cgroup with processes cannot be removed)."""
        left = []
        for path in self.cgroups:
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError as e:
                left.append(f"{path}: {e}")
        self.cgroups = []
        return left

    def table(self, node) -> str:
        return f"{self.prefix}_n{node.node_id}"

    def nft(self, *args, stdin=None):
        return subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True, timeout=20)

    def probe(self):
        if os.geteuid() != 0:
            return "nftables needs root"
        if shutil.which("nft") is None:
            return "nft(8) is missing (Debian: apt-get install nftables)"
        name = f"{self.prefix}_probe"
        out = self.nft("add", "table", "inet", name)
        if out.returncode != 0:
            return f"nft add table failed: {(out.stderr or out.stdout).strip()}"
        self.nft("delete", "table", "inet", name)
        return None

    def cut(self, node):
        family = "ip6" if ":" in node.host else "ip"
        ports = ", ".join(map(str, node.ports))
        output = ""
        if node.cgroup is not None:
            relative = Path(node.cgroup).relative_to(Path("/sys/fs/cgroup"))
            output = (
                f"  chain output {{\n"
                f"    type filter hook output priority -150; policy accept;\n"
                f"    socket cgroupv2 level 1 \"{relative}\" drop\n"
                f"  }}\n"
            )
        rules = (
            f"table inet {self.table(node)} {{\n"
            f"  chain input {{\n"
            f"    type filter hook input priority -150; policy accept;\n"
            f"    {family} daddr {node.host} tcp dport {{ {ports} }} drop\n"
            f"    {family} saddr {node.host} tcp sport {{ {ports} }} drop\n"
            f"  }}\n"
            f"{output}"
            f"}}\n"
        )
        out = self.nft("-f", "-", stdin=rules)
        if out.returncode != 0:
            raise RuntimeError(f"nft -f failed: {out.stderr.strip()}")
        self.cut_nodes.add(node.node_id)

    def heal(self, node):
        out = self.nft("delete", "table", "inet", self.table(node))
        self.cut_nodes.discard(node.node_id)
        if out.returncode != 0 and "No such file" not in out.stderr:
            raise RuntimeError(f"nft delete table failed: {out.stderr.strip()}")

    def leftovers(self):
        out = self.nft("list", "tables")
        return [l.split()[-1] for l in out.stdout.splitlines() if self.prefix in l]

    def heal_all(self):
        for name in self.leftovers():
            self.nft("delete", "table", "inet", name)
        self.cut_nodes.clear()


# ---------------------------------------------------------------------------------------------
# The schedule


@dataclasses.dataclass
class Fault:
    at: float  # seconds after the clients start
    kind: str
    node: int  # CONTROLLER: whichever node is the active controller when the fault comes
    hold: float  # seconds the fault lasts (a killed node is down this long before its restart)

    def describe(self) -> str:
        node = "the active controller" if self.node == CONTROLLER else f"node {self.node}"
        what = {
            "kill": f"SIGKILL {node}, restart after {self.hold:.2f}s",
            "pause": f"SIGSTOP {node}, SIGCONT after {self.hold:.2f}s",
            "diskfull": f"fill {node}'s disk, free it after {self.hold:.2f}s",
            "cut": f"cut {node} off, heal after {self.hold:.2f}s",
        }[self.kind]
        return f"+{self.at:6.2f}s {self.kind:8s} {what}"


# A fault's node meaning "the active controller", in a cluster's schedules.
CONTROLLER = 0

HOLD = {"kill": (0.3, 2.0), "pause": (1.0, 5.0), "diskfull": (2.0, 4.0), "cut": (2.0, 5.0)}


def make_schedule(seed: int, seconds: float, kinds, node_ids=(1,)):
    """Faults that do not overlap, the first after the clients have settled (a group joined),
    the last healed a second and a half before the clients stop."""
    rng = random.Random(seed)
    kinds = list(kinds)
    # In a cluster, the active controller is one of the targets, whichever node it is then.
    targets = list(node_ids) + ([CONTROLLER] if len(node_ids) > 1 else [])
    faults = []
    t = rng.uniform(2.5, 3.5)
    end = seconds - 1.5
    order = []
    while True:
        if not order:  # every kind once, in a random order, before any repeats
            order = kinds[:]
            rng.shuffle(order)
        kind = order.pop()
        lo, hi = HOLD[kind]
        hold = rng.uniform(lo, hi)
        if t + hold > end:
            if not faults and t + lo <= end:
                hold = lo  # every schedule injects at least one fault
            else:
                break
        faults.append(Fault(round(t, 2), kind, rng.choice(targets), round(hold, 2)))
        t += hold + rng.uniform(1.0, 2.5)
    return faults


# ---------------------------------------------------------------------------------------------
# Clients


def verify_supported(sub: str) -> bool:
    try:
        out = subprocess.run([str(BINARY), "verify", sub, "--help"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


@dataclasses.dataclass
class Client:
    name: str
    role: str  # producer | consumer | group | native
    command: list
    history: Path
    log: Path
    proc: subprocess.Popen = None
    code: int = None

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_die_with_parent, env=child_env())

    def wait(self, deadline) -> int:
        """Its exit code; past the deadline SIGTERM, then SIGKILL (None)."""
        try:
            self.code = self.proc.wait(max(0.0, deadline - time.monotonic()))
            return self.code
        except subprocess.TimeoutExpired:
            pass
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
            self.code = None
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.code = None
        return None


PY_CLIENTS = (
    # name, library, role, producer settings
    ("py-ck-p", "confluent", "producer", ["--acks", "all", "--idempotent", "--compression", "lz4"]),
    ("py-kp-p", "kafka-python", "producer", ["--acks", "1", "--compression", "none"]),
    ("py-ck-g", "confluent", "group", []),
    ("py-kp-g", "kafka-python", "group", []),
    ("py-ck-a", "confluent", "consumer", []),
    ("py-kp-a", "kafka-python", "consumer", []),
)


def make_clients(workdir: Path, bootstrap: str, seconds: float, seed: int, native: bool, python: bool, rate: float):
    clients = []
    wait_file = workdir / "producers-done"
    if native:
        clients.append(Client(
            "native", "native",
            [
                str(BINARY), "verify", "run",
                "--bootstrap-server", bootstrap, "--topic", TOPIC, "--partitions", str(PARTITIONS),
                "--producers", "2", "--consumers", "2", "--duration", f"{seconds:g}s",
                "--acks", "all", "--idempotent", "--rate", os.environ.get("SLUICE_CHAOS_NATIVE_RATE", "300"),
                "--delivery-timeout", "15s", "--drain-timeout", "45s", "--run-id", f"native-{seed}",
                "--history", str(workdir / "native.jsonl"),
            ],
            workdir / "native.jsonl", workdir / "native.log",
        ))
    if python:
        for name, library, role, extra in PY_CLIENTS:
            cmd = [
                PYTHON, str(PYCLIENTS), "--library", library, "--role", role,
                "--bootstrap-server", bootstrap, "--topic", TOPIC, "--partitions", str(PARTITIONS),
                "--duration", f"{seconds:g}", "--client", name, "--history", str(workdir / f"{name}.jsonl"),
                "--drain-timeout", "45", "--flush-timeout", "20", "--message-timeout", "15",
            ]
            if role == "producer":
                cmd += ["--rate", f"{rate:g}", *extra]
            else:
                cmd += ["--wait-file", str(wait_file)]
                if role == "group":
                    cmd += ["--group", f"chaos-py-{seed}"]
            clients.append(Client(name, role, cmd, workdir / f"{name}.jsonl", workdir / f"{name}.log"))
    return clients, wait_file


# ---------------------------------------------------------------------------------------------
# One schedule


def run_schedule(seed: int, seconds: float = 12.0, kinds=None, workdir=None, native=None, python=True,
                 keep=False, quiet=False, rate=100.0, nodes=1):
    """Runs one schedule and checks its histories: a dict of what happened (see `summary`)."""
    kinds = tuple(kinds or kinds_for(seed))
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown fault kind {k!r} (known: {', '.join(KINDS)})")
    if workdir is None:
        base = Path(os.environ.get("SLUICE_CHAOS_DIR", tempfile.gettempdir())) / "sluice-chaos"
        base.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"seed-{seed}-", dir=base))
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out = Output(workdir / "harness.log", quiet=quiet)
    started = time.monotonic()
    result = {
        "seed": seed, "seconds": seconds, "kinds": list(kinds), "label": label(kinds), "nodes": nodes,
        "workdir": str(workdir), "schedule": [], "injected": {k: 0 for k in KINDS}, "skipped": {},
        "problems": [], "check": None, "passed": False, "ran": True,
    }
    if native is None:
        native = verify_supported("run")
        if not native:
            out.loud(f"`sluice verify run` is not in {BINARY}: the native workload is left out of this run")
            result["problems"].append("native workload missing from the binary (not run)")

    node_ids = tuple(range(1, nodes + 1))
    schedule = make_schedule(seed, seconds, kinds, node_ids)
    out(f"seed {seed}: {seconds:g}s, {nodes} node(s), fault kinds {','.join(kinds)}; rerun with: {rerun(seed, seconds, kinds, nodes)}")
    out("schedule:")
    for f in schedule:
        out("  " + f.describe())

    disks, nft, cluster, clients, cgroups = {}, None, None, [], {}
    try:
        # The machinery each fault kind needs; a kind that cannot run here is skipped, loudly.
        if "diskfull" in kinds:
            for nid in node_ids:
                disk = Tmpfs(workdir / f"disk-{nid}")
                why = disk.mount()
                if why:
                    result["skipped"]["diskfull"] = why
                    break
                disks[nid] = disk
        if "cut" in kinds:
            nft = Nft()
            why = nft.probe()
            for nid in node_ids if nodes > 1 and not why else ():
                cgroups[nid], why = nft.cgroup_for(nid)
                if why:
                    break
            if why:
                result["skipped"]["cut"] = why
                nft.remove_cgroups()
                nft = None
                cgroups = {}
        for kind, why in result["skipped"].items():
            n = sum(1 for f in schedule if f.kind == kind)
            out.loud(f"SKIPPED fault kind {kind}: {why} -- its {n} fault(s) in this schedule are NOT injected")
        schedule = [f for f in schedule if f.kind not in result["skipped"]]
        result["schedule"] = [dataclasses.asdict(f) for f in schedule]
        if all(k in result["skipped"] for k in kinds):
            out.loud(f"SKIPPED seed {seed}: none of its fault kinds ({','.join(kinds)}) can run here")
            result["ran"] = False
            raise _NotRun()

        members = []
        for nid in node_ids:
            data_dir = (disks[nid].path if nid in disks else workdir / f"node-{nid}") / "data"
            members.append(Node(nid, "127.0.0.1", workdir, data_dir, ["-s", "group.initial.rebalance.delay.ms=500"],
                                clustered=nodes > 1))
            members[-1].cgroup = cgroups.get(nid)
        cluster = Cluster(members)
        cluster.start()
        out(f"started {len(members)} node(s): {cluster.bootstrap} (logs: {', '.join(str(n.log_path) for n in members)})")
        create_topic(cluster.bootstrap, out)

        clients, wait_file = make_clients(workdir, cluster.bootstrap, seconds, seed, native, python, rate)
        t0 = time.monotonic()
        for c in clients:
            c.start()
        out(f"started clients: {', '.join(c.name for c in clients)}")

        for f in schedule:
            delay = t0 + f.at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            inject(f, cluster, disks, nft, out, result)

        # Producers finish (a bounded flush), then consumers read to the end offsets.
        wait_deadline = t0 + seconds + 40
        for c in clients:
            if c.role == "producer":
                note_exit(c, c.wait(wait_deadline), out, result)
        native_deadline = t0 + seconds + 90
        for c in clients:
            if c.role == "native":
                note_exit(c, c.wait(native_deadline), out, result)
        wait_file.touch()
        out("producers done: consumers drain to the end offsets")
        for c in clients:
            if c.role in ("consumer", "group"):
                note_exit(c, c.wait(time.monotonic() + 60), out, result)
    except _NotRun:
        pass
    except Exception as e:
        result["problems"].append(f"harness: {type(e).__name__}: {e}")
        out.loud(f"harness error: {type(e).__name__}: {e}")
    finally:
        cleanup(clients, nft, disks, cluster, out, result)

    if result.get("ran") is False:
        result["passed"] = None
        result["elapsed"] = round(time.monotonic() - started, 1)
        out.close()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        return result
    histories = [c.history for c in clients if c.history.exists() and c.history.stat().st_size > 0]
    for c in clients:
        if not (c.history.exists() and c.history.stat().st_size > 0):
            result["problems"].append(f"client {c.name} wrote no history (log: {c.log})")
    result["check"] = check(histories, workdir, out, result)
    result["elapsed"] = round(time.monotonic() - started, 1)
    result["passed"] = passed(result)
    report(result, clients, cluster, out)
    out.close()
    if result["passed"] and not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


class _NotRun(Exception):
    pass


def cleanup(clients, nft, disks, cluster, out, result):
    """Whatever happened: no process, nft table, filler or mount is left behind."""

    def attempt(what, fn):
        try:
            fn()
        except Exception as e:
            result["problems"].append(f"harness: cleanup of {what} failed: {type(e).__name__}: {e}")
            out.loud(f"cleanup of {what} failed: {type(e).__name__}: {e}")

    def kill(c):
        c.proc.kill()
        c.proc.wait(10)

    for c in clients:
        if c.proc is not None and c.proc.poll() is None:
            attempt(c.name, lambda c=c: kill(c))

    def heal_net():
        nft.heal_all()
        if nft.leftovers():
            result["problems"].append(f"nft tables left behind: {nft.leftovers()}")

    if nft is not None:
        attempt("nft tables", heal_net)
    for disk in disks.values():
        attempt("the filler", disk.drain)

    def stop(n):
        code = n.stop()
        if code is None:
            result["problems"].append(f"node {n.node_id} did not stop within 20 s of SIGTERM (log: {n.log_path})")
        elif code != 0:
            result["problems"].append(f"node {n.node_id} exited with {code} on SIGTERM (log: {n.log_path})")
        if "panicked" in read_text(n.log_path):
            result["problems"].append(f"node {n.node_id} panicked (log: {n.log_path})")

    for n in cluster.nodes if cluster is not None else ():
        attempt(f"node {n.node_id}", lambda n=n: stop(n))

    def remove_cgroups():
        for left in nft.remove_cgroups():
            result["problems"].append(f"harness: a cgroup was left behind: {left}")

    if nft is not None:
        attempt("the cgroups", remove_cgroups)

    def unmount(disk):
        why = disk.unmount()
        if why:
            result["problems"].append(why)
            out.loud(why)

    for disk in disks.values():
        attempt(f"the tmpfs {disk.path}", lambda d=disk: unmount(d))


FATAL_PROBLEMS = ("harness:", "did not restart", "panicked", "nft tables left behind", "umount", "wrote no history")


def passed(result) -> bool:
    c = result["check"]
    if not c or c.get("error"):
        return False
    if any(c.get(k, 0) for k in SAFETY):
        return False
    if not c.get("acknowledged") or not c.get("read"):
        return False
    return not any(f in p for p in result["problems"] for f in FATAL_PROBLEMS)


def read_text(path) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def note_exit(client, code, out, result):
    if code == 0:
        return
    if code is None:
        msg = f"client {client.name} did not finish in time and was stopped (log: {client.log})"
    elif code == 3:
        msg = f"client {client.name} did not reach the end offsets (log: {client.log})"
    else:
        msg = f"client {client.name} exited with {code} (log: {client.log})"
    result["problems"].append(msg)
    out(msg)


def create_topic(bootstrap, out, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        p = subprocess.run(
            [str(BINARY), "topic", "create", TOPIC, "-p", str(PARTITIONS), "-b", bootstrap],
            capture_output=True, text=True, timeout=20,
        )
        if p.returncode == 0:
            out(f"created topic {TOPIC} with {PARTITIONS} partitions")
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"sluice topic create failed: {p.stderr.strip() or p.stdout.strip()}")
        time.sleep(0.3)


def active_controller(cluster: Cluster) -> int:
    """The metadata quorum's leader, as `sluice cluster describe` says (asked of every node)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        p = subprocess.run([str(BINARY), "cluster", "describe", "-b", cluster.bootstrap, "-o", "json"],
                           capture_output=True, text=True, timeout=15)
        if p.returncode == 0:
            c = json.loads(p.stdout).get("controller", -1)
            if any(n.node_id == c for n in cluster.nodes):
                return c
        time.sleep(0.2)
    raise RuntimeError("no active controller named within 15s")


def inject(f: Fault, cluster: Cluster, disks, nft, out, result):
    if f.node == CONTROLLER:
        f = dataclasses.replace(f, node=active_controller(cluster))
        out(f"{f.kind}: the active controller is node {f.node}")
        result["controller_faults"] = result.get("controller_faults", 0) + 1
    node = cluster.node(f.node)
    if f.kind == "kill":
        out(f"kill: SIGKILL node {node.node_id} (pid {node.proc.pid})")
        node.kill()
        result["injected"]["kill"] += 1
        time.sleep(f.hold)
        t = time.monotonic()
        try:
            node.start()
        except RuntimeError as e:
            result["problems"].append(f"node {node.node_id} did not restart: {e}")
            raise
        out(f"kill: node {node.node_id} restarted (pid {node.proc.pid}, listening after {time.monotonic() - t:.2f}s)")
    elif f.kind == "pause":
        out(f"pause: SIGSTOP node {node.node_id}")
        node.pause()
        result["injected"]["pause"] += 1
        try:
            time.sleep(f.hold)
        finally:
            node.resume()
        out(f"pause: SIGCONT node {node.node_id}")
    elif f.kind == "diskfull":
        disk = disks[node.node_id]
        written = disk.fill()
        result["injected"]["diskfull"] += 1
        out(f"diskfull: node {node.node_id}'s disk full ({written >> 20} MiB of filler, {disk.free()} bytes free)")
        try:
            time.sleep(f.hold)
        finally:
            disk.drain()
        out(f"diskfull: filler deleted, {disk.free() >> 20} MiB free")
    elif f.kind == "cut":
        nft.cut(node)
        result["injected"]["cut"] += 1
        out(f"cut: node {node.node_id} ({node.bootstrap}) cut off")
        try:
            time.sleep(f.hold)
        finally:
            nft.heal(node)
        out(f"cut: node {node.node_id} reachable again")
    if not node.alive():
        result["problems"].append(f"node {node.node_id} did not restart: it died during the {f.kind} fault (log: {node.log_path})")
        out.loud(f"node {node.node_id} is not running after the {f.kind} fault (log: {node.log_path})")
        code = node.proc.returncode
        try:
            node.start()
            out(f"node {node.node_id} (exit code {code}) restarted to let the clients finish")
        except RuntimeError as e:
            raise RuntimeError(f"node {node.node_id} cannot be restarted: {e}")


def check(histories, workdir, out, result):
    if not histories:
        return {"error": "no histories"}
    if not verify_supported("check"):
        msg = f"`sluice verify check` is not in {BINARY}: the histories are not checked"
        out.loud(msg)
        return {"error": msg}
    p = subprocess.run(
        [str(BINARY), "verify", "check", *map(str, histories), "-o", "json"],
        capture_output=True, text=True, timeout=300,
    )
    (workdir / "check.json").write_text(p.stdout)
    (workdir / "check.err").write_text(p.stderr)
    try:
        counts = json.loads(p.stdout)
    except json.JSONDecodeError:
        return {"error": f"sluice verify check exited {p.returncode} without JSON: {p.stderr.strip()[:500]}"}
    counts["exit_code"] = p.returncode
    violated = any(counts.get(k, 0) for k in SAFETY)
    if (p.returncode == 1) != violated or p.returncode not in (0, 1):
        counts["error"] = f"sluice verify check exited {p.returncode} with safety counts {[counts.get(k) for k in SAFETY]}"
    return counts


def top_level(check_result):
    return {k: v for k, v in (check_result or {}).items() if not isinstance(v, (dict, list))}


def report(result, clients, cluster, out):
    c = result["check"] or {}
    out("injected: " + ", ".join(f"{k} {v}" for k, v in result["injected"].items() if v) or "injected: nothing")
    for kind, why in result["skipped"].items():
        out(f"SKIPPED {kind}: {why}")
    out("check: " + json.dumps(top_level(c)))
    for p in result["problems"]:
        out(f"problem: {p}")
    if result["passed"]:
        out(f"PASSED seed {result['seed']} ({result['label']}) in {result['elapsed']}s")
        return
    out(f"FAILED seed {result['seed']} ({result['label']}); rerun: {rerun(result['seed'], result['seconds'], result['kinds'], result.get('nodes', 1))}")
    out(f"work dir (kept): {result['workdir']}")
    if cluster is not None:
        for n in cluster.nodes:
            out(f"  broker log: {n.log_path}")
    for cl in clients:
        out(f"  {cl.name}: log {cl.log}, history {cl.history}")
    if c.get("examples"):
        out("examples: " + json.dumps(c["examples"])[:4000])


# ---------------------------------------------------------------------------------------------
# Many schedules, and docs/reliability.md


ROWS = ("kill", "pause", "diskfull", "cut", "mixed")


def pin_binary():
    """A copy of the binary for the whole suite: a rebuild half-way through would otherwise
    restart a killed broker as another build. Returns (what was copied, its version)."""
    global BINARY
    original = BINARY
    pinned = Path(tempfile.mkdtemp(prefix="sluice-chaos-bin-")) / "sluice"
    shutil.copy2(original, pinned)
    BINARY = pinned
    version = subprocess.run([str(pinned), "--version"], capture_output=True, text=True, timeout=20).stdout.strip()
    return original, version


def run_suite(schedules: int, seed: int, seconds: float, write_docs: bool, keep=False, native=None, nodes=1):
    original, version = pin_binary()
    print(f"binary: {original} ({version}), copied to {BINARY} for the suite", flush=True)
    try:
        return _run_suite(schedules, seed, seconds, write_docs, keep, native, original, version, nodes)
    finally:
        shutil.rmtree(BINARY.parent, ignore_errors=True)


def _run_suite(schedules, seed, seconds, write_docs, keep, native, original, version, nodes):
    started = time.monotonic()
    when = datetime.datetime.now(datetime.timezone.utc)
    results = []
    for i in range(schedules):
        s = seed + i
        print(f"\n=== schedule {i + 1}/{schedules}: seed {s} ({label(kinds_for(s))})", flush=True)
        r = run_schedule(s, seconds, kinds_for(s), keep=keep, quiet=False, native=native, nodes=nodes)
        results.append(r)
        verdict = {True: "passed", False: "FAILED", None: "SKIPPED (its fault kinds cannot run here)"}[r["passed"]]
        print(f"=== seed {s}: {verdict} in {r['elapsed']}s", flush=True)
    elapsed = time.monotonic() - started
    section = render(results, seed, seconds, when, elapsed, original, version, nodes)
    print("\n" + section)
    if write_docs:
        write_section(section, nodes)
        print(f"wrote {DOCS}")
    failed = [r for r in results if r["passed"] is False]
    skipped = [r for r in results if r["passed"] is None]
    if skipped:
        print(f"\n{len(skipped)} schedules SKIPPED: their fault kinds cannot run here "
              f"({'; '.join(sorted({w for r in skipped for w in r['skipped'].values()}))})")
    if failed:
        print(f"\n{len(failed)} of {len(results)} schedules FAILED; rerun each with:")
        for r in failed:
            print(f"  {rerun(r['seed'], r['seconds'], r['kinds'], nodes)}   # {r['workdir']}")
        return 1
    print(f"\nall {len(results) - len(skipped)} schedules that ran passed in {elapsed / 60:.1f} min")
    return 0


def git_commit(where=ROOT) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def render(results, seed, seconds, when, elapsed, binary=None, version="", nodes=1) -> str:
    def c(r, k):
        return (r["check"] or {}).get(k, 0) or 0

    ran = [r for r in results if r["passed"] is not None]
    skipped = [r for r in results if r["passed"] is None]
    other = [k for k in SAFETY if k not in ("lost", "duplicated", "inconsistent_offsets")]
    head = ("| fault | schedules | passed | faults injected | acknowledged | read | unknown | lost | duplicated "
            "| inconsistent | other violations | unverified |")
    lines = [head, "|---|" + "---:|" * 11]
    for row in ROWS + ("total",):
        rs = ran if row == "total" else [r for r in ran if r["label"] == row]
        if not rs:
            continue
        injected = {k: sum(r["injected"][k] for r in rs) for k in KINDS}
        n_inj = sum(injected.values())
        inj = str(n_inj) if row in KINDS else f"{n_inj} (" + ", ".join(f"{k} {v}" for k, v in injected.items() if v) + ")"
        not_run = sorted({k for r in rs for k in r["skipped"]})
        if not_run:
            inj += " (skipped: " + ", ".join(not_run) + ")"
        cells = [
            f"**{row}**" if row == "total" else row, str(len(rs)), str(sum(bool(r["passed"]) for r in rs)), inj,
            str(sum(c(r, "acknowledged") for r in rs)), str(sum(c(r, "read") for r in rs)),
            str(sum(c(r, "unknown") for r in rs)),
            str(sum(c(r, "lost") for r in rs)), str(sum(c(r, "duplicated") for r in rs)),
            str(sum(c(r, "inconsistent_offsets") for r in rs)),
            str(sum(c(r, k) for r in rs for k in other)), str(sum(c(r, "unverified") for r in rs)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in ran if not r["passed"]]
    on_controller = sum(r.get("controller_faults", 0) for r in ran)
    native = all("native workload missing from the binary (not run)" not in r["problems"] for r in ran)
    binary = Path(binary or BINARY)
    source = binary.resolve().parents[2]  # <repo>/target/debug/sluice
    built = ""
    if (source / ".git").exists() and source.resolve() != ROOT.resolve():
        built = f" built from commit `{git_commit(source)}` of {source}"
    binary = f"`{binary.relative_to(ROOT) if binary.is_relative_to(ROOT) else binary}`" + (f" ({version})" if version else "") + built
    out = [
        f"Last run: {when:%Y-%m-%d %H:%M} UTC, harness at commit `{git_commit()}`, `chaos/run --schedules {len(results)} "
        f"--seed {seed} --seconds {seconds:g}{f' --nodes {nodes}' if nodes > 1 else ''}` (seeds {seed} to {seed + len(results) - 1}, {seconds:g} s of "
        f"faults and traffic each), {elapsed / 60:.1f} minutes on {os.cpu_count()} cores, binary {binary}.",
        "",
        "Clients per schedule: " + ("`sluice verify run` (2 idempotent acks=all producers, 2 consumers), " if native else
                                    "(the native `sluice verify run` workload was NOT part of this run), ")
        + "a confluent-kafka producer (idempotent, acks=all, lz4), a kafka-python producer (acks=1, "
        "uncompressed), one group of a confluent-kafka and a kafka-python member (committing), and an assigned "
        "confluent-kafka and kafka-python consumer of every partition; "
        + ("a topic of 4 partitions on one node." if nodes == 1 else
           f"a topic of 4 partitions (one replica each) spread over a cluster of {nodes} combined nodes, every one a "
           "voter of the metadata quorum; each fault hits one node or, as often as any node, the active controller "
           "(a cut drops every packet to and from the node, clients' and the other nodes' alike)."),
        "",
        *lines,
        "",
        *([f"Faults that hit the active controller: {on_controller} of {sum(sum(r['injected'].values()) for r in ran)}.", ""]
          if nodes > 1 else []),
        "Other violations: unexpected reads, order violations, poll skips, non-monotonic reads and committed "
        "regressions. Unknown: records whose producer got no definite answer (allowed either way). "
        "Unverified: acknowledged records no consumer read past (nothing can be said of them).",
        "",
    ]
    if skipped:
        why = "; ".join(sorted({w for r in skipped for w in r["skipped"].values()}))
        out += [f"**{len(skipped)} schedule(s) skipped**, their fault kinds cannot run on this machine: {why}.", ""]
    if failed:
        out.append(f"**{len(failed)} schedule(s) failed**; rerun each with `tests/chaos/harness.py run --seed N`:")
        out.append("")
        for r in failed:
            why = [f"{k} {c(r, k)}" for k in SAFETY if c(r, k)] or r["problems"][:3] or [(r["check"] or {}).get("error", "?")]
            out.append(f"- seed {r['seed']} ({r['label']}): " + "; ".join(map(str, why)))
    else:
        out.append(f"All {len(ran)} schedules that ran passed.")
    return "\n".join(out)


def write_section(section: str, nodes=1):
    """Into docs/reliability.md, between the markers of this node count (a cluster's run has
    markers of its own, so neither replaces the other)."""
    start, end = (START, END) if nodes == 1 else (START.replace(":start", f"-nodes-{nodes}:start"),
                                                   END.replace(":end", f"-nodes-{nodes}:end"))
    text = DOCS.read_text() if DOCS.exists() else ""
    block = f"{start}\n{section}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOCS.write_text(text)


# ---------------------------------------------------------------------------------------------


def cleanup_leftovers() -> int:
    """For a harness that was SIGKILLed: its nft tables and tmpfs mounts (and brokers on them)."""
    if shutil.which("nft"):
        out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            if "sluice_chaos_" in line:
                family, name = line.split()[1:3]
                subprocess.run(["nft", "delete", "table", family, name])
                print(f"deleted nft table {family} {name}")
    root = cgroup2_root()
    for path in root.glob("sluice_chaos_*") if root is not None else ():
        try:
            path.rmdir()
            print(f"removed cgroup {path}")
        except OSError as e:
            print(f"cannot remove cgroup {path}: {e} (a node of a killed harness may still run in it)")
    for line in Path("/proc/mounts").read_text().splitlines():
        source, target = line.split()[:2]
        if source == "sluice-chaos":
            subprocess.run(["umount", "-l", target])
            print(f"unmounted {target}")
    return 0


def _interrupt(*_):
    raise KeyboardInterrupt()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="one schedule")
    r.add_argument("--seed", type=int, required=True)
    r.add_argument("--seconds", type=float, default=12.0)
    r.add_argument("--nodes", type=int, default=1, help="combined nodes forming one cluster (default 1)")
    r.add_argument("--faults", default=None, help=f"comma-separated kinds ({','.join(KINDS)}) or all; default: from the seed")
    r.add_argument("--workdir", default=None)
    r.add_argument("--keep", action="store_true", help="keep the work dir of a passing run")
    r.add_argument("--no-native", action="store_true", help="leave out `sluice verify run`")
    r.add_argument("--no-python", action="store_true", help="leave out the Python clients")
    r.add_argument("--print-schedule", action="store_true", help="print the schedule and exit")
    s = sub.add_parser("suite", help="many schedules, cycling the fault kinds")
    s.add_argument("--schedules", type=int, default=100)
    s.add_argument("--seed", type=int, default=1, help="the first seed; schedule i runs seed+i")
    s.add_argument("--seconds", type=float, default=12.0)
    s.add_argument("--nodes", type=int, default=1, help="combined nodes forming one cluster (default 1)")
    s.add_argument("--write-docs", action="store_true", help=f"write the results into {DOCS.relative_to(ROOT)}")
    s.add_argument("--keep", action="store_true")
    s.add_argument("--no-native", action="store_true")
    sub.add_parser("cleanup", help="remove what a killed harness left: sluice_chaos_* nft tables, sluice-chaos tmpfs mounts")
    a = ap.parse_args(argv)
    if a.cmd == "cleanup":
        return cleanup_leftovers()
    # A SIGTERM unwinds like Ctrl-C, through the cleanup of mounts, nft tables and processes.
    signal.signal(signal.SIGTERM, _interrupt)
    if not BINARY.exists():
        print(f"{BINARY} is missing: build it (cargo build --bin sluice) or set SLUICE_BIN", file=sys.stderr)
        return 2
    if a.cmd == "suite":
        return run_suite(a.schedules, a.seed, a.seconds, a.write_docs, keep=a.keep, native=False if a.no_native else None,
                         nodes=a.nodes)
    kinds = None
    if a.faults:
        kinds = KINDS if a.faults == "all" else tuple(k.strip() for k in a.faults.split(",") if k.strip())
    if a.print_schedule:
        for f in make_schedule(a.seed, a.seconds, kinds or kinds_for(a.seed), tuple(range(1, a.nodes + 1))):
            print(f.describe())
        return 0
    res = run_schedule(a.seed, a.seconds, kinds, workdir=a.workdir, keep=a.keep,
                       native=False if a.no_native else None, python=not a.no_python, nodes=a.nodes)
    print(json.dumps({k: res[k] for k in ("seed", "label", "passed", "injected", "skipped", "problems", "elapsed")}))
    print(json.dumps(top_level(res["check"])))
    if res["passed"] is None:
        print(f"SKIPPED: none of the fault kinds {','.join(res['kinds'])} can run here: {res['skipped']}", file=sys.stderr)
        return 3
    return 0 if res["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
