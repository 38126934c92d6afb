"""Load under attack (issue 15): a well-behaved client's produce and fetch round trips while one
hostile client runs each attack of issue 15's items 1-5, next to the same client on the same
broker with no attack, in one run. A benchmark, not a test: it measures and writes results
down (docs/benchmarks.md, between the `bench/attack` markers).

    bench/attack            # every attack, about 3 minutes
    bench/attack --quick    # shorter phases, to check the script

Each attack gets a fresh release broker with default settings (except `message.max.bytes`
for the costly-batch attack, so that its batches are checked at all). On it, the client runs
alone for a quiet phase, then again while the attack runs in other processes. The client sends
one small acks=1 produce and one fetch (max wait 0) at a time, 200 times a second, on raw
sockets (so the numbers are the broker's, not a client library's batching). The broker's RSS
is sampled throughout.
"""

import argparse
import datetime
import multiprocessing
import os
import resource
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "compat"))

import kafka_raw as raw  # noqa: E402
from suite import Broker, machine, commit, percentiles  # noqa: E402
from test_hardening import batch, create_topics_v2, fetch_v4, record, zstd_bomb  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench/attack:start -->", "<!-- bench/attack:end -->"
MIB = 1 << 20


# ---- the well-behaved client ---------------------------------------------------------------


def produce_request(topic: str, correlation_id: int) -> bytes:
    b = batch(record(0, key=b"k", value=b"x" * 100), 1)
    body = raw.string(None) + struct.pack(">hi", 1, 30000) + struct.pack(">i", 1) + raw.string(topic)
    body += struct.pack(">i", 1) + struct.pack(">ii", 0, len(b)) + b
    return raw.request_v1(0, 3, correlation_id, body)


def client(port: int, topic: str, seconds: float) -> dict:
    """Produce and fetch round trips, in ms."""
    s = raw.connect(port, timeout=60)
    produce_ms, fetch_ms, errors = [], [], 0
    end, n = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        n += 1
        t = time.perf_counter()
        try:
            s.sendall(produce_request(topic, n))
            frame = raw.read_frame(s)
            produce_ms.append((time.perf_counter() - t) * 1000)
            off = 8
            (ln,) = struct.unpack(">h", frame[off : off + 2])
            off += 2 + ln + 4
            _index, err, base = struct.unpack(">ihq", frame[off : off + 14])
            if err:
                errors += 1
            t = time.perf_counter()
            s.sendall(fetch_v4(topic, 0, max(base, 0), max_bytes=MIB, partition_max=MIB, correlation_id=n, max_wait=0))
            raw.read_frame(s)
            fetch_ms.append((time.perf_counter() - t) * 1000)
        except (OSError, ConnectionError):
            errors += 1
            s = raw.connect(port, timeout=60)
        time.sleep(0.005)
    return {"produce": percentiles(produce_ms), "fetch": percentiles(fetch_ms), "errors": errors, "rounds": n}


# ---- the attacks (each in its own process, until `stop` is set) ----------------------------


# The attacker is another host: its connections come from another loopback address, so that
# the per-address limits (connections, response memory, group memory) apply to it and not to
# the measured client. (`--same-address` runs it from the client's address instead.)
ATTACKER = ["127.0.0.2"]


def attacker_socket(port, timeout=60.0, rcvbuf=None) -> socket.socket:
    s = socket.socket()
    s.settimeout(timeout)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((ATTACKER[0], 0))
    s.connect(("127.0.0.1", port))
    return s


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def attack_partitions(port, stop):
    """Item 1: a partition count of 2^31-1, and topics of the most one request may create,
    until the broker's limit."""
    s = attacker_socket(port, timeout=120)
    i = 0
    while not stop.is_set():
        i += 1
        create_topics_v2(s, [(f"huge{i}", 2**31 - 1)], i)
        raw.read_frame(s)
        create_topics_v2(s, [(f"many{i}", 10_000)], i)
        raw.read_frame(s)


def attack_stalled(port, stop):
    """Item 2: connections that announce 100 MB requests and send nothing more."""
    held = []
    while not stop.is_set():
        held = [c for c in held if not raw.is_closed(c, timeout=0.001)]
        while len(held) < 50:
            c = attacker_socket(port)
            c.sendall(struct.pack(">i", 104857600))
            held.append(c)
        time.sleep(0.2)


def attack_fetch(port, topic, stop):
    """Item 3: fetches of 2 GiB from offset 0 whose responses are never read."""
    held = []
    while not stop.is_set():
        held = [c for c in held if c.fileno() != -1]
        while len(held) < 20:
            c = attacker_socket(port, rcvbuf=4096)
            c.sendall(fetch_v4(topic, 0, 0))
            held.append(c)
        time.sleep(0.5)


def attack_connections(port, stop):
    """Item 4: as many idle connections as the broker lets one address hold, and more."""
    raise_nofile()
    held = []
    while not stop.is_set():
        try:
            for _ in range(200):
                held.append(attacker_socket(port, timeout=2))
        except OSError:
            time.sleep(0.1)
        if len(held) > 12_000:
            time.sleep(0.2)


# Built once, before the attackers fork (building it costs seconds of Python CPU, which would
# otherwise compete with the measured client).
BOMB = []


def attack_costly(port, topic, stop):
    """Item 5: valid zstd batches of 1.5M tiny records, and snappy blocks claiming 60 MiB."""
    bomb = BOMB[0]
    claim = batch(bytes([0x80, 0x80, 0x80, 0x1E]) + b"\x00" * 60, 1, codec=2)
    s = attacker_socket(port, timeout=300)
    while not stop.is_set():
        for b in (bomb, claim):
            raw.produce_v3(s, topic, 0, b)


ATTACKS = [
    ("1. partition counts", attack_partitions, 1, [], False),
    ("2. stalled request bodies", attack_stalled, 1, [], False),
    ("3. unread 2 GiB fetches", attack_fetch, 1, [], True),
    ("4. connection flood", attack_connections, 1, [], False),
    ("5. costly batches", attack_costly, 4, ["message.max.bytes=10485760"], True),
]


def fill(bootstrap, topic, total):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 1_000_000, "log_level": 0})
    value = b"f" * 10_000
    for i in range(total // len(value)):
        while True:
            try:
                p.produce(topic, value, partition=0)
                break
            except BufferError:
                p.poll(0.05)
    p.flush(120)


def run_one(name, attack, copies, settings, needs_data, parent, seconds, fill_bytes) -> dict:
    b = Broker(parent, settings=settings)
    try:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        for f in admin.create_topics([NewTopic("quiet", 1, 1), NewTopic("big", 1, 1)]).values():
            f.result(30)
        if needs_data:
            fill(b.bootstrap, "big", fill_bytes)
        rss = []
        quiet = client(b.port, "quiet", seconds)
        rss_quiet = b.status_kib("VmRSS:")
        stop = multiprocessing.Event()
        args = (b.port, "big", stop) if needs_data else (b.port, stop)
        procs = [multiprocessing.Process(target=attack, args=args, daemon=True) for _ in range(copies)]
        for p in procs:
            p.start()
        time.sleep(1)
        sampler_stop = time.monotonic() + seconds
        def sample():
            while time.monotonic() < sampler_stop:
                rss.append(b.status_kib("VmRSS:"))
                time.sleep(0.25)

        import threading

        t = threading.Thread(target=sample)
        t.start()
        under = client(b.port, "quiet", seconds)
        t.join()
        stop.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
        alive = b.proc.poll() is None
        return {
            "name": name,
            "quiet": quiet,
            "attack": under,
            "rss_quiet_mib": rss_quiet / 1024,
            "rss_peak_mib": max(rss) / 1024 if rss else 0,
            "alive": alive,
        }
    finally:
        b.stop()


def render(rows, seconds, same_address=False) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        f"Run {now} on {machine()}, commit {commit()}; `bench/attack` ({seconds:.0f} s quiet, then "
        f"{seconds:.0f} s under attack, per attack; a fresh release broker with default limits for each; "
        f"the attacker connects from {'the client' + chr(39) + 's own address' if same_address else 'another address, 127.0.0.2'}).",
        "",
        "| attack | produce p50 / p99 quiet (ms) | under attack | fetch p50 / p99 quiet (ms) | under attack | p99 ratio (worse of the two) | client errors | broker RSS quiet → peak (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        q, a = r["quiet"], r["attack"]
        ratio = max(
            a["produce"]["p99"] / max(q["produce"]["p99"], 1e-9),
            a["fetch"]["p99"] / max(q["fetch"]["p99"], 1e-9),
        )
        out.append(
            f"| {r['name']} | {q['produce']['p50']:.2f} / {q['produce']['p99']:.2f} | "
            f"{a['produce']['p50']:.2f} / {a['produce']['p99']:.2f} | "
            f"{q['fetch']['p50']:.2f} / {q['fetch']['p99']:.2f} | {a['fetch']['p50']:.2f} / {a['fetch']['p99']:.2f} | "
            f"{ratio:.1f}× | {a['errors']} of {a['rounds']} | {r['rss_quiet_mib']:.0f} → {r['rss_peak_mib']:.0f}"
            + ("" if r["alive"] else " (broker died)")
            + " |"
        )
    return "\n".join(out)


def write_docs(report: str):
    text = DOCS.read_text() if DOCS.exists() else ""
    block = f"{START}\n{report}\n{END}"
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        text += "\n\n## Load under attack\n\n" + block + "\n"
    DOCS.write_text(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")))
    ap.add_argument("--no-docs", action="store_true", help="print only")
    ap.add_argument("--only", type=int, action="append", help="run only attack N (1-5; repeatable)")
    ap.add_argument("--same-address", action="store_true", help="attack from the client's own address")
    ap.add_argument("--binary", type=Path, help="another sluice binary (an older build, to compare)")
    args = ap.parse_args()
    if args.same_address:
        ATTACKER[0] = "127.0.0.1"
    if args.binary:
        import suite

        suite.BINARY = args.binary
    BOMB.append(zstd_bomb(1_500_000))
    seconds = 5.0 if args.quick else 15.0
    fill_bytes = 50 * MIB if args.quick else 200 * MIB
    rows = []
    for i, (name, attack, copies, settings, needs_data) in enumerate(ATTACKS, 1):
        if args.only and i not in args.only:
            continue
        print(f"{name} ...", flush=True)
        rows.append(run_one(name, attack, copies, settings, needs_data, args.dir, seconds, fill_bytes))
        print(render(rows[-1:], seconds).splitlines()[-1], flush=True)
    report = render(rows, seconds, args.same_address)
    print(report)
    if not args.no_docs:
        write_docs(report)


if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    main()
