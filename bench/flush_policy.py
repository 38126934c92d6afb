"""Produce throughput and latency against the release binary under each flush policy: the
page cache only (Kafka's default), flush.messages=1 (every acknowledged write fsynced, with
group commit), and flush.ms=1000. A benchmark, not a test: it prints a Markdown table.

    cargo build --release --bin sluice
    .venv/bin/python bench/flush_policy.py [data-dir-parent]
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "release" / "sluice"
RECORDS = 200_000
SIZE = 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(parent, name, config, partitions, acks, rate=None):
    """`rate`: records per second to pace at (None: as fast as the producer goes)."""
    data = Path(tempfile.mkdtemp(dir=parent)) / "data"
    port = free_port()
    proc = subprocess.Popen(
        [str(BINARY), "server", "--listeners", f"127.0.0.1:{port}", "--admin-listeners", "", "--data-dir", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        bootstrap = f"127.0.0.1:{port}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("bench", num_partitions=partitions, replication_factor=1, config=config)])["bench"].result(15)
        p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 5, "queue.buffering.max.messages": 500_000})
        value = b"x" * SIZE
        latencies = []

        def delivered(err, msg, sent=None):
            if err is None:
                latencies.append(msg.latency())

        start = time.monotonic()
        count = RECORDS if rate is None else rate * 4
        for i in range(count):
            if rate is not None and i % 100 == 0:
                ahead = start + i / rate - time.monotonic()
                if ahead > 0:
                    # Waiting in poll serves delivery reports as they come: msg.latency() is
                    # measured when the report is served, so a sleep here would add to it.
                    p.poll(ahead)
            while True:
                try:
                    p.produce("bench", value=value, on_delivery=delivered)
                    break
                except BufferError:
                    p.poll(0.01)
            if i % 200 == 0:
                p.poll(0)
        p.flush(120)
        elapsed = time.monotonic() - start
        latencies.sort()
        pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3
        return {
            "policy": name,
            "partitions": partitions,
            "acks": acks,
            "rec_s": len(latencies) / elapsed,
            "mib_s": len(latencies) * SIZE / elapsed / (1 << 20),
            "p50": pct(0.50),
            "p99": pct(0.99),
            "max": latencies[-1] * 1e3,
            "delivered": len(latencies),
            "expected": count,
            "rate": rate,
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def main():
    parent = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target")
    os.makedirs(parent, exist_ok=True)
    rows = []
    policies = [
        ("page cache (default)", {}),
        ("flush.ms=1000", {"flush.ms": "1000"}),
        ("flush.messages=1", {"flush.messages": "1"}),
    ]
    for partitions in (1, 8):
        for name, config in policies:
            rows.append(run(parent, name, config, partitions, "all"))
    # Latency at a steady rate well below the peak, where queueing in the client does not
    # dominate.
    for name, config in policies:
        rows.append(run(parent, name, config, 8, "all", rate=50_000))
    print(f"One confluent-kafka producer, records of {SIZE} B, acks=all, linger.ms=5; {RECORDS} records flat out, or 4 s at a fixed rate:")
    print()
    print("| policy | partitions | offered rate | records/s | MiB/s | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        assert r["delivered"] == r["expected"], r
        offered = "flat out" if r["rate"] is None else f"{r['rate']}/s"
        print(
            f"| {r['policy']} | {r['partitions']} | {offered} | {r['rec_s']:.0f} | {r['mib_s']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} |"
        )


if __name__ == "__main__":
    main()
