"""The benchmark suite (issue 7): OpenMessaging-Benchmark-shaped workloads against the release
binary, each next to the machine's own limits measured in the same run. A benchmark, not a
test: it measures and writes results down; it asserts only that every record arrived.

Run it through `bench/run` (which builds the binary and the Python venv first):

    bench/run                  # the whole suite, about 10 minutes on 2 cores
    bench/run --quick          # one workload of each kind, to check the script

Results: a Markdown section printed to stdout and written into docs/benchmarks.md between the
`bench/run` markers, plus docs/bench-throughput.svg and docs/bench-latency.svg.

What is measured:
- Limits: raw sequential write of 1 GiB to the same disk (1 MiB writes, then one fsync; a
  produce run writes 0.3 to 2.3 GiB), raw read of it back from disk (after evicting it from the page cache) and from the
  page cache, and loopback TCP throughput (one stream, 1 MiB writes).
- Produce: 1 topic of 1, 16 or 100 partitions; 100 B and 1 KiB records; acks=1 and acks=all;
  uncompressed and lz4; one confluent-kafka (librdkafka) producer flat out for a fixed time.
- Consume: everything just produced, from the page cache; then again after the partition
  files are evicted from the page cache (a catch-up read from disk).
- End to end: a producer at a quarter of the measured peak rate and a consumer in another
  process; produce latency (send to acknowledgement) and end-to-end latency (send to receipt).
- Idle connections: 10 000 client connections, each having sent ApiVersions, held open.
- For every broker: its CPU seconds per phase and its peak RSS.
- A second driver, `sluice bench` (the native Rust client): produce (acks=1 and acks=all),
  consume and end to end on 16 partitions with 1 KiB records, next to librdkafka's figures.
"""

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import random
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
# SLUICE_BENCH_PIN=1: the broker on core 1 and every client on core 0, so the two do not
# take each other's time (steadier figures for side-by-side runs; lower than unpinned ones).
PIN = os.environ.get("SLUICE_BENCH_PIN") == "1"
# SLUICE_BIN: another build to measure (a side-by-side run against an older release).
BINARY = Path(os.environ.get("SLUICE_BIN", ROOT / "target" / "release" / "sluice"))
DOCS = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench/run:start -->", "<!-- bench/run:end -->"
MIB = 1 << 20
TOPIC = "bench"


# ---------------------------------------------------------------------------------------------
# The machine's limits


def disk_limits(directory: Path, volume: int) -> dict:
    path = directory / "raw-disk-probe"
    block = os.urandom(MIB)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    t = time.perf_counter()
    for _ in range(volume // MIB):
        os.write(fd, block)
    cached = time.perf_counter() - t
    os.fsync(fd)
    synced = time.perf_counter() - t
    os.close(fd)

    def read_all() -> float:
        fd = os.open(path, os.O_RDONLY)
        t = time.perf_counter()
        while os.read(fd, MIB):
            pass
        elapsed = time.perf_counter() - t
        os.close(fd)
        return elapsed

    hot = read_all()
    evict(path)
    cold = read_all()
    os.unlink(path)
    return {
        "write_cache_mib_s": volume / cached / MIB,
        "write_mib_s": volume / synced / MIB,
        "read_disk_mib_s": volume / cold / MIB,
        "read_cache_mib_s": volume / hot / MIB,
    }


def evict(path: Path):
    """Drops a file's pages from the page cache (they must be clean: fsync first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _sink(port_queue, seconds):
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port_queue.put(srv.getsockname()[1])
        conn, _ = srv.accept()
        buf = bytearray(MIB)
        view = memoryview(buf)
        with conn:
            while conn.recv_into(view):
                pass


def loopback_limit(seconds=3.0) -> float:
    """One TCP stream over loopback, sender and receiver in separate processes (MiB/s)."""
    q = multiprocessing.Queue()
    sink = multiprocessing.Process(target=_sink, args=(q, seconds))
    sink.start()
    port = q.get(timeout=10)
    block = b"\0" * MIB
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as s:
        t = time.perf_counter()
        while time.perf_counter() - t < seconds:
            s.sendall(block)
            sent += len(block)
        elapsed = time.perf_counter() - t
    sink.join(10)
    return sent / elapsed / MIB


# Both limit measurements write and read the same volume.
LIMIT_BYTES = 1 << 30


def measure_limits(directory: Path, volume: int, earlier: dict | None = None) -> dict:
    limits = disk_limits(directory, volume)
    limits["loopback_mib_s"] = loopback_limit()
    if earlier:
        limits = {k: max(v, earlier[k]) for k, v in limits.items()} | {
            "runs": {k: (round(earlier[k]), round(v)) for k, v in limits.items()}
        }
    return limits


# ---------------------------------------------------------------------------------------------
# The broker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, parent: Path, settings=()):
        self.data = Path(tempfile.mkdtemp(dir=parent)) / "data"
        self.port, self.admin_port = free_port(), free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                str(BINARY),
                "server",
                "--listeners",
                self.bootstrap,
                "--admin-listeners",
                f"127.0.0.1:{self.admin_port}",
                "--data-dir",
                str(self.data),
                *[a for kv in settings for a in ("--set", kv)],
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=(lambda: os.sched_setaffinity(0, {1})) if PIN else None,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit("the broker did not start")
                time.sleep(0.05)

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def status_kib(self, key: str) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key))

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def create_topic(self, partitions: int):
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        admin.create_topics([NewTopic(TOPIC, num_partitions=partitions, replication_factor=1)])[TOPIC].result(30)

    def evict_logs(self):
        for path in self.data.rglob("*.log"):
            evict(path)

    def stop(self):
        """Stops the broker and removes its data (every run writes gigabytes)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(60)
        shutil.rmtree(self.data.parent, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Workloads


def values(size: int, count=1024) -> list:
    """Distinct values of `size` bytes of word-like text (compressible about 2:1 by lz4, as
    OMB's payloads are; random bytes would make compression pure cost)."""
    rng = random.Random(size)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(4096)]
    out = []
    for _ in range(count):
        v = b""
        while len(v) < size:
            v += rng.choice(words) + b" "
        out.append(v[:size])
    return out


def percentiles(samples: list) -> dict:
    if not samples:
        return {"p50": 0, "p99": 0, "p999": 0, "max": 0}
    s = sorted(samples)
    at = lambda q: s[min(len(s) - 1, int(q * len(s)))]
    return {"p50": at(0.5), "p99": at(0.99), "p999": at(0.999), "max": s[-1]}


def produce(bootstrap, size, acks, compression, seconds, rate=None, count_max=None) -> dict:
    """One producer, flat out (or at `rate` records/s) for `seconds`. Latency: produce() to the
    delivery report, which the loop polls for at least every 200 records."""
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": acks,
            "compression.type": compression,
            "linger.ms": 1 if rate else 5,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "socket.nagle.disable": True,
        }
    )
    pool = values(size)
    latencies, errors = [], []

    def delivered(err, msg):
        if err is None:
            latencies.append(msg.latency())
        else:
            errors.append(err)

    sent = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        now = time.perf_counter()
        if now >= end or (count_max and sent >= count_max):
            break
        if rate:
            ahead = start + sent / rate - now
            if ahead > 0:
                p.poll(ahead)
                continue
        try:
            p.produce(TOPIC, value=pool[sent & 1023], on_delivery=delivered)
            sent += 1
        except BufferError:
            p.poll(0.005)
            continue
        if sent % 200 == 0:
            p.poll(0)
    remaining = p.flush(120)
    elapsed = time.perf_counter() - start
    if errors or remaining or len(latencies) != sent:
        raise SystemExit(f"produce lost records: sent {sent}, acknowledged {len(latencies)}, errors {errors[:3]}")
    lat = {k: v * 1e3 for k, v in percentiles(latencies).items()}
    return {"records": sent, "seconds": elapsed, "rec_s": sent / elapsed, "mib_s": sent * size / elapsed / MIB, **lat}


def consume(bootstrap, partitions, expected) -> dict:
    """Reads every record of the topic from the beginning, by assignment (no group)."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-reader",
            "enable.auto.commit": False,
            "fetch.max.bytes": 52428800,
            "max.partition.fetch.bytes": 4 * MIB,
            "queued.max.messages.kbytes": 262144,
        }
    )
    c.assign([TopicPartition(TOPIC, p, 0) for p in range(partitions)])
    got, nbytes = 0, 0
    start = None
    deadline = time.perf_counter() + 300
    while got < expected and time.perf_counter() < deadline:
        # consume(n) returns when n messages are there or the timeout passes: never ask for
        # more than remain, or the last call idles for the whole timeout.
        for m in c.consume(num_messages=min(10_000, expected - got), timeout=1.0):
            if m.error() is None:
                if start is None:
                    # Timed from the first record: connecting and metadata are not reading.
                    start = time.perf_counter()
                got += 1
                nbytes += len(m.value())
    elapsed = time.perf_counter() - (start or time.perf_counter())
    c.close()
    if got != expected:
        raise SystemExit(f"consume read {got} of {expected} records")
    return {"records": got, "seconds": elapsed, "rec_s": got / elapsed, "mib_s": nbytes / elapsed / MIB}


def raw_fetch(port, partitions, ends) -> dict:
    """Reads every partition to `ends` with bare Fetch v4 requests on one connection, walking
    only batch headers: what the broker and the socket can do when the client decodes nothing
    (as a replica following a leader would). Not a Kafka client: shown next to the real ones."""
    offsets = [0] * partitions
    nbytes, requests = 0, 0
    # One receive buffer for every response, as a real client keeps: fresh memory per
    # response costs the client a page fault per 4 KiB, more than the transfer itself.
    frame = bytearray(128 * MIB)
    view = memoryview(frame)
    s = socket.create_connection(("127.0.0.1", port))
    start = time.perf_counter()
    while any(o < e for o, e in zip(offsets, ends)):
        requests += 1
        body = struct.pack(">iiiib", -1, 500, 1, 64 * MIB, 0) + struct.pack(">i", 1)
        body += struct.pack(">h", len(TOPIC)) + TOPIC.encode() + struct.pack(">i", partitions)
        for p in range(partitions):
            body += struct.pack(">iqi", p, offsets[p], 4 * MIB)
        header = struct.pack(">hhih", 1, 4, requests, 3) + b"raw"
        s.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
        (n,) = struct.unpack(">i", recv_exact(s, 4))
        if n > len(frame):
            frame = bytearray(n)
            view = memoryview(frame)
        got = 0
        while got < n:
            k = s.recv_into(view[got:n])
            if not k:
                raise SystemExit("the broker closed the connection")
            got += k
        at = 4 + 4 + 4  # correlation id, throttle time, topic count
        (name_len,) = struct.unpack_from(">h", frame, at)
        at += 2 + name_len
        (count,) = struct.unpack_from(">i", frame, at)
        at += 4
        for _ in range(count):
            p, err, _hw, _lso, aborted = struct.unpack_from(">ihqqi", frame, at)
            at += 4 + 2 + 8 + 8 + 4 + max(aborted, 0) * 16
            if err:
                raise SystemExit(f"raw fetch: partition {p} error {err}")
            (size,) = struct.unpack_from(">i", frame, at)
            at += 4
            end = at + max(size, 0)
            while at + 61 <= end:
                base, length = struct.unpack_from(">qi", frame, at)
                (delta,) = struct.unpack_from(">i", frame, at + 23)
                if at + 12 + length > end:
                    break
                offsets[p] = base + delta + 1
                at += 12 + length
            nbytes += max(size, 0)
            at = end
    elapsed = time.perf_counter() - start
    s.close()
    return {"seconds": elapsed, "mib_s": nbytes / elapsed / MIB, "requests": requests}


def _e2e_consumer(bootstrap, partitions, expected, out):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-e2e", "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(TOPIC, p, 0) for p in range(partitions)])
    out.put("ready")
    latencies = []
    deadline = time.time() + 300
    while len(latencies) < expected and time.time() < deadline:
        # One message per poll, which returns as soon as one is there: consume(n, timeout)
        # waits for n messages or the timeout, and would add that wait to the latency.
        m = c.poll(0.1)
        if m is not None and m.error() is None:
            # CreateTime, stamped by the producer's clock: this machine's.
            latencies.append(time.time() * 1e3 - m.timestamp()[1])
    c.close()
    out.put(latencies)


def end_to_end(bootstrap, partitions, size, rate, seconds) -> dict:
    q = multiprocessing.Queue()
    expected = int(rate * seconds)
    reader = multiprocessing.Process(target=_e2e_consumer, args=(bootstrap, partitions, expected, q))
    reader.start()
    q.get(timeout=30)
    time.sleep(1.0)  # let the consumer's first fetches reach the broker
    produced = produce(bootstrap, size, "all", "none", seconds + 60, rate=rate, count_max=expected)
    latencies = q.get(timeout=360)
    reader.join(30)
    if len(latencies) != expected:
        raise SystemExit(f"end to end: consumed {len(latencies)} of {expected}")
    return {"produce": produced, "e2e": percentiles(latencies)}


def sluice_bench(bootstrap, *args) -> dict:
    """Runs `sluice bench ... --json` and returns its result object."""
    out = subprocess.run(
        [str(BINARY), "bench", *args, "-b", bootstrap, "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode != 0:
        raise SystemExit(f"sluice bench {' '.join(args)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def native_driver(directory: Path, seconds: float, e2e_rate: int, e2e_seconds: float) -> list:
    """The same shapes driven by `sluice bench`: 16 partitions, 1 KiB records."""
    rows = []
    for acks in ["1", "all"]:
        b = Broker(directory)
        try:
            b.create_topic(16)
            cpu0 = b.cpu_seconds()
            r = sluice_bench(b.bootstrap, "produce", "-t", TOPIC, "-d", str(seconds), "-s", "1024", "--acks", acks)
            r["broker_cpu_s"] = b.cpu_seconds() - cpu0
            r["what"] = f"produce, acks={acks}, flat out"
            rows.append(r)
            if acks == "1":
                cpu0 = b.cpu_seconds()
                c = sluice_bench(b.bootstrap, "consume", "-t", TOPIC)
                c["broker_cpu_s"] = b.cpu_seconds() - cpu0
                c["what"] = "consume everything just produced (page cache)"
                if c["records"] != r["records"]:
                    raise SystemExit(f"sluice bench consume read {c['records']} of {r['records']} records")
                rows.append(c)
        finally:
            b.stop()
    b = Broker(directory)
    try:
        b.create_topic(16)
        cpu0 = b.cpu_seconds()
        e = sluice_bench(
            b.bootstrap, "e2e", "-t", TOPIC, "-d", str(e2e_seconds), "-s", "1024", "--acks", "all", "--rate", str(e2e_rate), "--linger-ms", "1"
        )
        e["broker_cpu_s"] = b.cpu_seconds() - cpu0
        e["what"] = f"end to end at {e2e_rate:,} records/s, acks=all, linger 1 ms"
        rows.append(e)
    finally:
        b.stop()
    return rows


def idle_connections(bootstrap_port, count) -> dict:
    """Opens `count` connections, each sending ApiVersions v0 and reading the answer, holds them,
    then checks the broker still answers."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 1024)), hard))
    request = struct.pack(">hhih", 18, 0, 1, 5) + b"idle-"
    frame = struct.pack(">i", len(request)) + request
    socks = []
    t = time.perf_counter()
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", bootstrap_port), timeout=30)
        s.sendall(frame)
        socks.append(s)
    for s in socks:
        (n,) = struct.unpack(">i", recv_exact(s, 4))
        recv_exact(s, n)
    opened = time.perf_counter() - t
    return {"socks": socks, "open_seconds": opened}


def recv_exact(s, n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = s.recv_into(view[got:])
        if not k:
            raise SystemExit("the broker closed a connection")
        got += k
    return bytes(buf)


def histogram_quantiles(metrics_page: str, api: str) -> dict:
    """Upper bounds of p50 and p99 of an API's broker-side duration (ms), from /metrics'
    histogram buckets (each bound twice the previous)."""
    buckets = []
    for line in metrics_page.splitlines():
        if line.startswith("sluice_request_duration_seconds_bucket{") and f'api="{api}"' in line:
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    at = lambda q: next((le * 1e3 for le, n in buckets if n >= q * total), float("inf"))
    return {"p50": at(0.5), "p99": at(0.99), "p999": at(0.999), "count": total}


def end_offsets(metrics_page: str, partitions: int) -> list:
    """Each partition's log end offset, from /metrics."""
    ends = [0] * partitions
    for line in metrics_page.splitlines():
        if line.startswith("sluice_log_end_offset{") and f'topic="{TOPIC}"' in line:
            p = int(line.split('partition="')[1].split('"')[0])
            ends[p] = int(float(line.split()[-1]))
    return ends


# ---------------------------------------------------------------------------------------------
# Report


def svg_bars(title, rows, unit, limit=None, limit_label=""):
    """A horizontal bar chart: rows of (label, value)."""
    width, left, bar_h, gap = 760, 250, 16, 6
    top = 40
    height = top + len(rows) * (bar_h + gap) + 40
    vmax = max([v for _, v in rows] + ([limit] if limit else [])) * 1.1 or 1
    scale = (width - left - 30) / vmax
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="20" font-size="14" font-weight="bold">{title}</text>',
    ]
    for i, (label, v) in enumerate(rows):
        y = top + i * (bar_h + gap)
        out.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{label}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{v * scale:.1f}" height="{bar_h}" fill="#3b78c4"/>')
        out.append(f'<text x="{left + v * scale + 4:.1f}" y="{y + 12}">{v:.0f} {unit}</text>')
    if limit:
        x = left + limit * scale
        out.append(f'<line x1="{x:.1f}" y1="{top - 8}" x2="{x:.1f}" y2="{height - 30}" stroke="#c43b3b" stroke-dasharray="4"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 16}" fill="#c43b3b" text-anchor="middle">{limit_label} {limit:.0f} {unit}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def svg_latency(title, series):
    """Grouped bars of p50/p99/p99.9/max (ms, log scale) per series: (label, {p50..max})."""
    import math

    keys = ["p50", "p99", "p999", "max"]
    colors = ["#3b78c4", "#e0a030", "#c43b3b", "#777777"]
    width, left, bar_h = 760, 250, 10
    top = 50
    group_h = bar_h * len(keys) + 10
    height = top + len(series) * group_h + 30
    lo, hi = 0.1, max(max(s[k] for k in keys) for _, s in series) * 2
    span = math.log10(hi) - math.log10(lo)
    x_of = lambda v: left + (math.log10(max(v, lo)) - math.log10(lo)) / span * (width - left - 60)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="20" font-size="14" font-weight="bold">{title}</text>',
    ]
    for j, (k, c) in enumerate(zip(keys, colors)):
        out.append(f'<rect x="{left + j * 90}" y="30" width="10" height="10" fill="{c}"/><text x="{left + j * 90 + 14}" y="39">{k.replace("p999", "p99.9")}</text>')
    for i, (label, s) in enumerate(series):
        y0 = top + i * group_h
        out.append(f'<text x="{left - 6}" y="{y0 + group_h / 2}" text-anchor="end">{label}</text>')
        for j, (k, c) in enumerate(zip(keys, colors)):
            y = y0 + j * bar_h
            out.append(f'<rect x="{left}" y="{y}" width="{x_of(s[k]) - left:.1f}" height="{bar_h - 1}" fill="{c}"/>')
            out.append(f'<text x="{x_of(s[k]) + 4:.1f}" y="{y + 8}" font-size="9">{s[k]:.2f} ms</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def machine() -> str:
    cpu = "?"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return f"{os.cpu_count()} vCPU ({cpu}), {mem:.0f} GiB, Linux {platform.release()}"


def commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return rev + ("+changes" if dirty else "")
    except OSError:
        return "?"


# ---------------------------------------------------------------------------------------------


def main():
    if PIN:
        os.sched_setaffinity(0, {0})
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one workload of each kind")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each produce run")
    ap.add_argument("--dir", type=Path, default=ROOT / "target" / "bench", help="where data goes")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    log = lambda *a: print(*a, file=sys.stderr, flush=True)

    sizes = [1024] if args.quick else [100, 1024]
    partition_counts = [16] if args.quick else [1, 16, 100]
    acks_list = ["1"] if args.quick else ["1", "all"]
    codecs = ["none"] if args.quick else ["none", "lz4"]

    # The limits are measured before and after the workloads; each is the better of the two
    # (a shared virtual machine's figures move between runs: both are reported).
    log("limits: disk and loopback")
    first = measure_limits(args.dir, LIMIT_BYTES)
    log(f"limits: {first}")
    produce_rows = []
    consume_rows = []
    peak = {}
    for partitions in partition_counts:
        for size in sizes:
            for acks in acks_list:
                for codec in codecs:
                    b = Broker(args.dir)
                    try:
                        b.create_topic(partitions)
                        cpu0 = b.cpu_seconds()
                        r = produce(b.bootstrap, size, acks, codec, args.seconds)
                        r["broker_cpu_s"] = b.cpu_seconds() - cpu0
                        r.update(partitions=partitions, size=size, acks=acks, codec=codec)
                        # Reads of what was just written: once from the page cache, once from
                        # disk. Uncompressed acks=1 only (the consumer path does not depend on
                        # how the data was acknowledged).
                        if acks == "1" and codec == "none":
                            cpu0 = b.cpu_seconds()
                            c = consume(b.bootstrap, partitions, r["records"])
                            c["broker_cpu_s"] = b.cpu_seconds() - cpu0
                            c.update(partitions=partitions, size=size, source="page cache")
                            consume_rows.append(c)
                            ends = end_offsets(b.metrics(), partitions)
                            cpu0 = b.cpu_seconds()
                            c = raw_fetch(b.port, partitions, ends)
                            c["broker_cpu_s"] = b.cpu_seconds() - cpu0
                            c.update(partitions=partitions, size=size, source="page cache, bare fetches (batch bytes)", rec_s=r["records"] / c["seconds"])
                            consume_rows.append(c)
                            b.evict_logs()
                            cpu0 = b.cpu_seconds()
                            c = consume(b.bootstrap, partitions, r["records"])
                            c["broker_cpu_s"] = b.cpu_seconds() - cpu0
                            c.update(partitions=partitions, size=size, source="disk (catch-up)")
                            consume_rows.append(c)
                        r["peak_rss_mib"] = b.status_kib("VmHWM") / 1024
                    finally:
                        b.stop()
                    produce_rows.append(r)
                    key = (partitions, size)
                    # The end-to-end run is uncompressed: a quarter of the uncompressed peak.
                    if codec == "none" and (acks == "all" or args.quick):
                        peak[key] = max(peak.get(key, 0), r["rec_s"])
                    log(f"produce p={partitions} size={size} acks={acks} {codec}: {r['rec_s']:.0f} rec/s {r['mib_s']:.0f} MiB/s p99 {r['p99']:.1f} ms")

    log("limits: disk and loopback")
    limits = measure_limits(args.dir, LIMIT_BYTES, first)
    log(f"limits: {limits}")

    # End to end at a quarter of the peak acks=all rate, 1 KiB records, 16 partitions.
    e2e_partitions = 16
    rate = int(peak.get((e2e_partitions, 1024), 100_000) / 4)
    b = Broker(args.dir)
    try:
        b.create_topic(e2e_partitions)
        cpu0 = b.cpu_seconds()
        e2e = end_to_end(b.bootstrap, e2e_partitions, 1024, rate, 10.0 if not args.quick else 4.0)
        e2e["broker_cpu_s"] = b.cpu_seconds() - cpu0
        e2e["rate"] = rate
        e2e["broker_produce"] = histogram_quantiles(b.metrics(), "Produce")
    finally:
        b.stop()
    log(f"e2e at {rate}/s: produce p99 {e2e['produce']['p99']:.2f} ms, e2e p99 {e2e['e2e']['p99']:.2f} ms")

    # The second driver: the native client through `sluice bench`, same shapes.
    log("sluice bench: produce, consume, e2e")
    native = native_driver(args.dir, args.seconds, rate, 10.0 if not args.quick else 4.0)
    for n in native:
        log(f"sluice bench {n['what']}: {n['records_per_sec']:.0f} rec/s {n['mib_per_sec']:.0f} MiB/s")

    # Idle connections.
    connections = 1000 if args.quick else 10_000
    # Room above the held connections for the client that checks the broker still answers
    # (at max.connections, new connections wait in the accept backlog).
    # All of them come from 127.0.0.1, so the per-address limit (1000 by default) is raised too.
    b = Broker(
        args.dir,
        settings=[f"max.connections={connections + 100}", f"max.connections.per.ip={connections + 100}"],
    )
    try:
        rss0 = b.status_kib("VmRSS")
        held = idle_connections(b.port, connections)
        time.sleep(2)
        rss1 = b.status_kib("VmRSS")
        page = b.metrics()
        open_now = next(
            (float(l.split()[-1]) for l in page.splitlines() if l.startswith("sluice_connections ")), 0.0
        )
        AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10)
        for s in held["socks"]:
            s.close()
        conn = {
            "count": connections,
            "held": int(open_now),
            "open_seconds": held["open_seconds"],
            "kib_per_connection": (rss1 - rss0) / connections,
        }
    finally:
        b.stop()
    log(f"connections: {conn}")

    # Many partitions: bench/partitions.py (creation time, memory per idle partition, bounded
    # descriptors, restart), its table kept as it prints it.
    count = "1000" if args.quick else "10000"
    log(f"partitions: {count}")
    many = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "partitions.py"), count],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout.strip()

    total = time.monotonic() - began
    report = render(produce_rows, consume_rows, e2e, native, conn, many, limits, total, args)
    print(report)
    if not args.no_write:
        write_docs(report, produce_rows, consume_rows, e2e, limits)
    (args.dir / "results.json").write_text(
        json.dumps({"produce": produce_rows, "consume": consume_rows, "e2e": e2e, "native": native, "connections": conn, "limits": limits}, indent=1)
    )


def render(produce_rows, consume_rows, e2e, native, conn, many, limits, total, args) -> str:
    def runs(key):
        r = limits.get("runs", {}).get(key)
        return f"{r[0]}, {r[1]}" if r else ""

    lines = [
        f"Run {datetime.date.today().isoformat()}, commit `{commit()}`, {machine()}; `bench/run{' --quick' if args.quick else ''}` took {total / 60:.1f} min.",
        "Driver: one confluent-kafka (librdkafka) producer or consumer in Python, on the same 2 cores as the broker.",
        "",
        "**The machine's limits, measured in this run** before and after the workloads; the better of the two is the limit:",
        "",
        "| limit | MiB/s | before, after |",
        "|---|---:|---:|",
        f"| disk: sequential write, 1 MiB writes + one fsync | {limits['write_mib_s']:.0f} | {runs('write_mib_s')} |",
        f"| disk: the same writes into the page cache (no fsync) | {limits['write_cache_mib_s']:.0f} | {runs('write_cache_mib_s')} |",
        f"| disk: sequential read, evicted from the page cache | {limits['read_disk_mib_s']:.0f} | {runs('read_disk_mib_s')} |",
        f"| page cache: sequential read | {limits['read_cache_mib_s']:.0f} | {runs('read_cache_mib_s')} |",
        f"| loopback TCP, one stream | {limits['loopback_mib_s']:.0f} | {runs('loopback_mib_s')} |",
        "",
        f"**Produce**, one producer flat out for {args.seconds:.0f} s (linger.ms=5); latency is produce() to acknowledgement, so it includes queueing in the client:",
        "",
        "| partitions | record | acks | compression | records/s | MiB/s | of disk write | p50 ms | p99 ms | p99.9 ms | max ms | broker CPU s | broker peak RSS MiB |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in produce_rows:
        lines.append(
            f"| {r['partitions']} | {r['size']} B | {r['acks']} | {r['codec']} | {r['rec_s']:,.0f} | {r['mib_s']:.0f} | "
            f"{r['mib_s'] / limits['write_mib_s']:.0%} | {r['p50']:.1f} | {r['p99']:.1f} | {r['p999']:.1f} | {r['max']:.1f} | "
            f"{r['broker_cpu_s']:.1f} | {r['peak_rss_mib']:.0f} |"
        )
    lines += [
        "",
        "**Consume** everything just produced, by one consumer; compared with loopback TCP (page cache) and with a raw read from disk (catch-up):",
        "",
        "| partitions | record | read from | records/s | MiB/s | of limit | broker CPU s |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for c in consume_rows:
        limit = limits["loopback_mib_s"] if c["source"].startswith("page cache") else limits["read_disk_mib_s"]
        lines.append(
            f"| {c['partitions']} | {c['size']} B | {c['source']} | {c['rec_s']:,.0f} | {c['mib_s']:.0f} | {c['mib_s'] / limit:.0%} | {c['broker_cpu_s']:.1f} |"
        )
    p, e, bp = e2e["produce"], e2e["e2e"], e2e["broker_produce"]
    lines += [
        "",
        f"**End to end** at {e2e['rate']:,} records/s (a quarter of the peak acks=all rate), 1 KiB records, 16 partitions, acks=all, linger.ms=1, producer and consumer in separate processes:",
        "",
        "| latency | p50 ms | p99 ms | p99.9 ms | max ms |",
        "|---|---:|---:|---:|---:|",
        f"| produce (send to acknowledgement) | {p['p50']:.2f} | {p['p99']:.2f} | {p['p999']:.2f} | {p['max']:.2f} |",
        f"| end to end (send to receipt) | {e['p50']:.2f} | {e['p99']:.2f} | {e['p999']:.2f} | {e['max']:.2f} |",
        f"| inside the broker: Produce request read to response ready (upper bounds, from /metrics) | ≤ {bp['p50']:.2f} | ≤ {bp['p99']:.2f} | ≤ {bp['p999']:.2f} | |",
        "",
        "**Second driver: `sluice bench`** (the native Rust client, one process; linger 5 ms, or 1 ms end to end as above; batches up to 1 MB), 16 partitions, 1 KiB records; latency is send to acknowledgement (produce) or send to receipt (end to end):",
        "",
        "| workload | records/s | MiB/s | of limit | p50 ms | p99 ms | p99.9 ms | max ms | broker CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in native:
        lat = n.get("latency_ms") or {}
        limit = limits["loopback_mib_s"] if n["kind"] == "consume" else limits["write_mib_s"]
        cell = lambda k: f"{lat[k]:.2f}" if k in lat else ""
        lines.append(
            f"| {n['what']} | {n['records_per_sec']:,.0f} | {n['mib_per_sec']:.0f} | {n['mib_per_sec'] / limit:.0%} | "
            f"{cell('p50')} | {cell('p99')} | {cell('p99_9')} | {cell('max')} | {n['broker_cpu_s']:.1f} |"
        )
    lines += [
        "",
        "**Many partitions** (`bench/partitions.py`: topics of 1000 partitions created through the admin API, log.open.files.max=1000):",
        "",
        many,
        "",
        f"**Idle connections:** {conn['count']:,} opened (each sent ApiVersions) in {conn['open_seconds']:.1f} s; the broker held {conn['held']:,} and still answered metadata; {conn['kib_per_connection']:.1f} KiB of broker RSS per connection.",
        "",
        "![produce throughput](bench-throughput.svg)",
        "",
        "![latency](bench-latency.svg)",
    ]
    return "\n".join(lines)


def write_docs(report, produce_rows, consume_rows, e2e, limits):
    text = DOCS.read_text()
    section = f"{START}\n{report}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip() + "\n\n## The benchmark suite (`bench/run`)\n\n" + section + "\n"
    DOCS.write_text(text)
    bars = [
        (f"p={r['partitions']} {r['size']}B acks={r['acks']} {r['codec']}", r["mib_s"]) for r in produce_rows
    ] + [(f"consume p={c['partitions']} {c['size']}B {c['source']}", c["mib_s"]) for c in consume_rows]
    (DOCS.parent / "bench-throughput.svg").write_text(
        svg_bars("Throughput (MiB/s), one librdkafka client, 2 vCPUs", bars, "MiB/s", limits["write_mib_s"], "disk write")
    )
    series = [
        (f"produce p={r['partitions']} {r['size']}B acks={r['acks']} {r['codec']}", r)
        for r in produce_rows
        if r["codec"] == "none" and r["acks"] == "all"
    ]
    series += [("produce at 1/4 peak", e2e["produce"]), ("end to end at 1/4 peak", e2e["e2e"])]
    (DOCS.parent / "bench-latency.svg").write_text(svg_latency("Latency percentiles (ms, log scale)", series))


if __name__ == "__main__":
    main()
