"""Many partitions on one broker: how long creating them takes, what an idle partition costs
in memory, that open descriptors stay bounded by log.open.files.max, and how long a restart
takes before metadata answers. A benchmark, not a test: it prints one Markdown table row.

    cargo build --release --bin sluice
    .venv/bin/python bench/partitions.py [partitions] [log.open.files.max]
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "sluice"
PER_TOPIC = 1000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(data, port, open_files):
    env = dict(os.environ, SLUICE_LOG_OPEN_FILES_MAX=str(open_files))
    return subprocess.Popen(
        [str(BINARY), "server", "--listeners", f"127.0.0.1:{port}", "--admin-listeners", "", "--data-dir", str(data)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_for_metadata(bootstrap, topics, deadline_s=120):
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        try:
            md = admin.list_topics(timeout=10)
            if len([t for t in md.topics if t.startswith("p-")]) >= topics:
                return admin
        except Exception:
            pass
        time.sleep(0.05)
    raise SystemExit("the broker did not answer metadata in time")


def main():
    partitions = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    open_files = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    topics = max(1, partitions // PER_TOPIC)
    parent = Path(tempfile.mkdtemp(prefix="sluice-partitions-"))
    data, port = parent / "data", free_port()
    bootstrap = f"127.0.0.1:{port}"
    proc = start(data, port, open_files)
    try:
        admin = wait_for_metadata(bootstrap, 0)
        time.sleep(0.5)
        rss0, fds0 = rss_kib(proc.pid), fds(proc.pid)
        t = time.time()
        for i in range(topics):
            futures = admin.create_topics([NewTopic(f"p-{i}", PER_TOPIC, 1)], request_timeout=120)
            for f in futures.values():
                f.result(120)
        created_s = time.time() - t
        time.sleep(1)
        rss1, fds1 = rss_kib(proc.pid), fds(proc.pid)
        proc.terminate()
        proc.wait(60)
        t = time.time()
        proc = start(data, port, open_files)
        wait_for_metadata(bootstrap, topics)
        restart_s = time.time() - t
        rss2, fds2 = rss_kib(proc.pid), fds(proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)
        shutil.rmtree(parent, ignore_errors=True)
    n = topics * PER_TOPIC
    print("| partitions | created in s | RSS before → after KiB | bytes per idle partition | open fds (limit) | restart to metadata s | RSS after restart KiB | fds after restart |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {n} | {created_s:.1f} | {rss0} → {rss1} | {(rss1 - rss0) * 1024 / n:.0f} | {fds1} ({open_files}) "
        f"| {restart_s:.1f} | {rss2} | {fds2} |"
    )
    _ = fds0


if __name__ == "__main__":
    main()
