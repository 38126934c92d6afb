#!/usr/bin/env python3
"""Python client drivers for the fault harness (issue 18): confluent-kafka (librdkafka) and
kafka-python producers and consumers that write down everything they asked for and everything
they were told, as the JSON lines of docs/verify.md, so `sluice verify check` can judge their
histories next to the native workload's.

One process drives one client:

    python pyclients.py --library confluent --role producer --bootstrap-server 127.0.0.1:9092 \\
        --topic vt --partitions 4 --duration 10 --rate 100 --acks all --idempotent \\
        --compression lz4 --client ck-p --history ck-p.jsonl

Roles:
- producer: a `producer` line, then for each record a `send` line (written before the send; an
  explicit partition, round robin; the value `<client>-<n>`), and a `produce` line when the
  client answers: `ok` with the offset, `unknown` for timeouts and transport errors (the record
  may or may not have been written), `fail` for anything else. At the end a bounded flush, then
  `unknown` for every record never answered.
- consumer: an assigned consumer of every partition, from the beginning.
- group: a member of `--group`, committing after each poll batch, synchronously, the next offset
  of each partition it read; `assign` lines (the full new assignment) from the rebalance
  callbacks, written before any read that follows.

Faults are expected: every client retries, catches what its library raises and writes down
what it could not confirm; every loop is bounded in time and count. After `--duration`, a
consumer keeps reading (waiting up to `--drain-timeout` for `--wait-file` to appear, if given:
the harness creates it when every producer has finished) until it has reached the end offsets
of its partitions, so that no acknowledged record is left unverified. The history file is
line-buffered: a client killed half-way leaves every line it wrote.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
import uuid

STOP = threading.Event()


def now_us() -> int:
    return time.time_ns() // 1000


_last_said = {}


def log_once_a_second(key, msg: str):
    """For the libraries' error callbacks, which repeat themselves while a broker is down."""
    now = time.monotonic()
    if now - _last_said.get(key, 0) >= 1.0:
        _last_said[key] = now
        log(msg)


def log(msg: str):
    sys.stderr.write(f"{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} {msg}\n")
    sys.stderr.flush()


class History:
    """One client's lines, each stamped with the wall clock under the lock, so that the file's
    order is the order the client saw things in (callbacks run on the libraries' threads)."""

    def __init__(self, path: str, client: str):
        self.file = open(path, "a", buffering=1, encoding="utf-8")
        self.client = client
        self.lock = threading.Lock()
        self.closed = False

    def write(self, type_: str, **fields):
        with self.lock:
            if self.closed:
                return  # a library callback after the end (e.g. a revoke from close())
            line = {"type": type_, "client": self.client, "time": now_us(), **fields}
            self.file.write(json.dumps(line, separators=(",", ":")) + "\n")

    def close(self):
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()


# Errors after which a record may or may not be in the log: the request may have arrived.
UNKNOWN_MARKERS = (
    "TIMED_OUT", "TIMEOUT", "TIMEDOUT", "TRANSPORT", "CONNECTION", "DISCONNECT", "NETWORK",
    "ALL_BROKERS_DOWN", "AFTER_APPEND", "PURGE_INFLIGHT", "NODENOTREADY", "NODE_NOT_READY", "FATAL",
    "BROKERNOTAVAILABLE", "BROKER_NOT_AVAILABLE", "KAFKASTORAGE", "KAFKA_STORAGE",
)


def classify(error) -> str:
    """`unknown` for timeouts and transport trouble (and anything that might have reached the
    log), `fail` for an error the client reported as final."""
    text = f"{type(error).__name__} {error}".upper().replace(" ", "")
    name = getattr(error, "name", None)
    if callable(name):
        try:
            text += name().upper()
        except Exception:
            pass
    return "unknown" if any(m.replace(" ", "") in text for m in UNKNOWN_MARKERS) else "fail"


def describe(error) -> str:
    return f"{type(error).__name__}: {error}"[:300]


# ---------------------------------------------------------------------------------------------
# Producers


class Pending:
    """Records sent and not yet answered: each gets exactly one `produce` line."""

    def __init__(self, history: History):
        self.history = history
        self.lock = threading.Lock()
        self.values = {}  # value -> partition
        self.acked = self.failed = self.unknown = 0

    def add(self, value, partition):
        with self.lock:
            self.values[value] = partition

    def answer(self, value, outcome, offset=None, error=None):
        with self.lock:
            partition = self.values.pop(value, None)
            if partition is None:
                return  # answered already (or written off as unknown at the end)
            fields = {"topic": self.topic, "partition": partition, "value": value, "outcome": outcome}
            if outcome == "ok":
                fields["offset"] = offset
                self.acked += 1
            else:
                fields["error"] = error
                if outcome == "fail":
                    self.failed += 1
                else:
                    self.unknown += 1
            self.history.write("produce", **fields)

    def write_off(self, why):
        with self.lock:
            left = list(self.values)
        for value in left:
            self.answer(value, "unknown", error=why)
        return len(left)

    def __len__(self):
        with self.lock:
            return len(self.values)


def produce_loop(a, history, pending, send):
    """Paces sends at --rate, round robin over the partitions, until --duration has passed.
    `send(value, partition)` hands one record to the library, returns False when the library's
    producer is broken (the caller starts a new one). The `send` line precedes the send."""
    start = time.monotonic()
    end = start + a.duration
    limit = int(a.rate * a.duration * 2) + 10
    n = 0
    while not STOP.is_set() and time.monotonic() < end and n < limit:
        due = start + n / a.rate
        delay = due - time.monotonic()
        if delay > 0:
            yield ("idle", min(delay, 0.05))
            continue
        partition = n % a.partitions
        value = f"{history.client}-{n}"
        history.write("send", topic=a.topic, partition=partition, value=value)
        pending.add(value, partition)
        n += 1
        if not send(value, partition):
            yield ("broken", None)
        else:
            yield ("sent", None)


def confluent_producer(a, history):
    from confluent_kafka import KafkaError, KafkaException, Producer

    pending = Pending(history)
    pending.topic = a.topic
    fatal = threading.Event()

    def make():
        conf = {
            "bootstrap.servers": a.bootstrap_server,
            "client.id": history.client,
            "acks": a.acks,
            "enable.idempotence": a.idempotent,
            "compression.type": a.compression,
            "linger.ms": 5,
            "message.timeout.ms": int(a.message_timeout * 1000),
            "request.timeout.ms": 5000,
            "socket.timeout.ms": 5000,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 1000,
            "retry.backoff.ms": 100,
            "topic.metadata.refresh.interval.ms": 5000,
            "error_cb": on_error,
        }
        if not a.idempotent:
            conf["max.in.flight.requests.per.connection"] = 5
        return Producer(conf)

    def on_error(err):
        log_once_a_second(err.code(), f"error_cb: {err}")
        try:
            if err.fatal():
                fatal.set()
        except Exception:
            pass

    def on_delivery(value):
        def cb(err, msg):
            if err is None:
                pending.answer(value, "ok", offset=msg.offset())
            else:
                pending.answer(value, classify(err), error=describe(err))

        return cb

    producer = make()

    def send(value, partition):
        for attempt in range(50):
            try:
                producer.produce(a.topic, value=value.encode(), partition=partition, on_delivery=on_delivery(value))
                return not fatal.is_set()
            except BufferError:
                producer.poll(0.1)
            except KafkaException as e:
                pending.answer(value, classify(e.args[0]) if e.args else "fail", error=describe(e))
                return not fatal.is_set()
            except Exception as e:  # never crash: the record was not handed over
                pending.answer(value, "fail", error=describe(e))
                return True
        pending.answer(value, "fail", error="the local queue stayed full")
        return True

    for event, arg in produce_loop(a, history, pending, send):
        if event == "idle":
            producer.poll(arg)
        else:
            producer.poll(0)
        if event == "broken" or fatal.is_set():
            # A fatal error (e.g. the idempotent producer's sequence state was lost): what it
            # held is unknown; carry on with a new producer under a new client name.
            log("fatal producer error: starting a new producer")
            finish_confluent(producer, pending, 2.0)
            return "restart"
    finish_confluent(producer, pending, a.flush_timeout)
    log(f"done: acked {pending.acked}, failed {pending.failed}, unknown {pending.unknown}")
    return "done"


def finish_confluent(producer, pending, timeout):
    if STOP.is_set():
        timeout = min(timeout, 2.0)
    deadline = time.monotonic() + timeout
    while len(pending) and time.monotonic() < deadline:
        try:
            producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
        except Exception as e:
            log(f"flush: {describe(e)}")
            time.sleep(0.1)
    left = pending.write_off("no answer before the run ended")
    if left:
        log(f"{left} records never answered: written down as unknown")
    try:
        producer.purge()
        producer.flush(0)
    except Exception:
        pass


def kafka_python_producer(a, history):
    from kafka import KafkaProducer
    from kafka.errors import KafkaTimeoutError

    pending = Pending(history)
    pending.topic = a.topic
    broken = threading.Event()

    producer = connect(
        lambda: KafkaProducer(
            bootstrap_servers=a.bootstrap_server,
            client_id=history.client,
            acks="all" if a.acks == "all" else int(a.acks),
            enable_idempotence=a.idempotent,
            compression_type=None if a.compression == "none" else a.compression,
            linger_ms=5,
            request_timeout_ms=5000,
            delivery_timeout_ms=int(a.message_timeout * 1000),
            max_block_ms=2000,
            retry_backoff_ms=100,
            reconnect_backoff_ms=100,
            reconnect_backoff_max_ms=1000,
            metadata_max_age_ms=5000,
        ),
        a,
    )
    if producer is None:
        return "gave up"

    def send(value, partition):
        try:
            future = producer.send(a.topic, value=value.encode(), partition=partition)
        except KafkaTimeoutError as e:
            # Metadata did not arrive within max_block_ms: the record was never queued.
            pending.answer(value, "fail", error=describe(e))
            return True
        except Exception as e:
            pending.answer(value, "fail", error=describe(e))
            if "IllegalState" in type(e).__name__ or "Fatal" in str(e) or "closed" in str(e):
                broken.set()
                return False
            return True
        future.add_callback(lambda md, v=value: pending.answer(v, "ok", offset=md.offset))
        future.add_errback(lambda e, v=value: pending.answer(v, classify(e), error=describe(e)))
        return True

    for event, arg in produce_loop(a, history, pending, send):
        if event == "idle":
            time.sleep(arg)
        if event == "broken":
            log("producer broken: starting a new producer")
            finish_kafka_python(producer, pending, 2.0)
            return "restart"
    finish_kafka_python(producer, pending, a.flush_timeout)
    log(f"done: acked {pending.acked}, failed {pending.failed}, unknown {pending.unknown}")
    return "done"


def finish_kafka_python(producer, pending, timeout):
    if STOP.is_set():
        timeout = min(timeout, 2.0)
    deadline = time.monotonic() + timeout
    while len(pending) and time.monotonic() < deadline:
        try:
            producer.flush(timeout=min(1.0, max(0.01, deadline - time.monotonic())))
        except Exception as e:
            if "Timeout" not in type(e).__name__:
                log(f"flush: {describe(e)}")
                time.sleep(0.1)
    left = pending.write_off("no answer before the run ended")
    if left:
        log(f"{left} records never answered: written down as unknown")
    try:
        producer.close(timeout=0)
    except Exception:
        pass


def connect(make, a):
    """Builds a kafka-python client, which refuses to start while no broker answers."""
    deadline = time.monotonic() + a.duration + a.drain_timeout
    attempt = 0
    while not STOP.is_set() and time.monotonic() < deadline:
        try:
            return make()
        except Exception as e:
            attempt += 1
            log(f"connect attempt {attempt}: {describe(e)}")
            time.sleep(0.5)
    return None


# ---------------------------------------------------------------------------------------------
# Consumers


class Reader:
    """What one consumer read: its `read` lines, where each partition stands, and the
    partitions it holds now."""

    def __init__(self, a, history):
        self.a = a
        self.history = history
        self.next = {}  # partition -> next offset to read (after the last one read)
        self.assigned = []
        self.reads = 0
        self.commits = {"ok": 0, "fail": 0, "unknown": 0}

    def assign(self, partitions):
        self.assigned = sorted(set(partitions))
        self.history.write("assign", topic=self.a.topic, partitions=self.assigned)
        # Every position may have moved: forget where partitions stood.
        self.next = {p: o for p, o in self.next.items() if p in self.assigned}

    def read(self, partition, offset, value):
        v = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
        self.history.write("read", topic=self.a.topic, partition=partition, offset=offset, value=v)
        self.next[partition] = offset + 1
        self.reads += 1

    def commit_lines(self, offsets, sent, outcomes):
        for partition, offset in sorted(offsets.items()):
            outcome = outcomes.get(partition, "unknown")
            self.commits[outcome] += 1
            self.history.write(
                "commit", topic=self.a.topic, partition=partition, offset=offset,
                group=self.a.group, sent=sent, outcome=outcome,
            )


def consume_phases(a, reader, poll_once, end_offsets, positions):
    """Runs the consumer: reads until --duration has passed, then until --wait-file appears
    (if given), then until every assigned partition has been read to its end offset, each
    phase bounded in time (and the whole in count)."""
    end = time.monotonic() + a.duration
    drain_deadline = end + a.drain_timeout
    polls = 0
    limit = int((a.duration + a.drain_timeout) * 200) + 100
    while not STOP.is_set() and time.monotonic() < end and polls < limit:
        poll_once()
        polls += 1
    if a.wait_file:
        while not os.path.exists(a.wait_file) and time.monotonic() < drain_deadline and polls < limit and not STOP.is_set():
            poll_once()
            polls += 1
        if not os.path.exists(a.wait_file):
            log(f"{a.wait_file} did not appear within the drain timeout")
    # Drain: read every assigned partition to its end offset; the end offsets are asked for
    # again once reached, until they stay put. (Its own 20 s at least, however long the wait.)
    drain_deadline = max(drain_deadline, time.monotonic() + 20)
    reached_at = None
    while time.monotonic() < drain_deadline and polls < limit and not STOP.is_set():
        poll_once()
        polls += 1
        assigned = list(reader.assigned)
        ends = end_offsets(assigned)
        if ends is None:
            continue
        pos = positions(assigned)
        behind = {p: (pos.get(p), e) for p, e in ends.items() if e > 0 and (pos.get(p) is None or pos.get(p) < e)}
        if behind:
            reached_at = None
            continue
        if reached_at is None:
            reached_at = (time.monotonic(), ends)
        elif reached_at[1] == ends and time.monotonic() - reached_at[0] > 1.0:
            log(f"reached the end offsets {ends}")
            return True
        elif reached_at[1] != ends:
            reached_at = (time.monotonic(), ends)
    log(f"drain ended without reaching every end offset (assigned {reader.assigned}, next {reader.next})")
    return False


def confluent_consumer(a, history, group):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    reader = Reader(a, history)
    conf = {
        "bootstrap.servers": a.bootstrap_server,
        "client.id": history.client,
        "group.id": a.group if group else f"{history.client}-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "socket.timeout.ms": 5000,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 1000,
        "fetch.wait.max.ms": 100,
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "max.poll.interval.ms": 60000,
        "partition.assignment.strategy": "range",
        "topic.metadata.refresh.interval.ms": 5000,
        "error_cb": lambda err: log_once_a_second(err.code(), f"error_cb: {err}"),
    }
    consumer = Consumer(conf)
    if group:
        def on_assign(c, partitions):
            reader.assign([tp.partition for tp in partitions])

        def on_revoke(c, partitions):
            # Eager protocol (range): every partition is revoked; the member holds none.
            reader.assign([])

        consumer.subscribe([a.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke)
    else:
        reader.assign(list(range(a.partitions)))
        consumer.assign([TopicPartition(a.topic, p, OFFSET_BEGINNING) for p in range(a.partitions)])

    def poll_once():
        try:
            msgs = consumer.consume(num_messages=500, timeout=0.2)
        except Exception as e:
            log(f"consume: {describe(e)}")
            time.sleep(0.1)
            return
        batch = {}
        for m in msgs:
            if m.error() is not None:
                log(f"consume error: {m.error()}")
                continue
            if m.partition() not in reader.assigned:
                log(f"read from partition {m.partition()} outside the assignment {reader.assigned}")
            reader.read(m.partition(), m.offset(), m.value())
            batch[m.partition()] = m.offset() + 1
        if group and batch:
            sent = now_us()
            outcomes = {}
            try:
                result = consumer.commit(
                    offsets=[TopicPartition(a.topic, p, o) for p, o in batch.items()], asynchronous=False
                )
                for tp in result or []:
                    outcomes[tp.partition] = "ok" if tp.error is None else classify(tp.error)
                for p in batch:
                    outcomes.setdefault(p, "unknown")
            except KafkaException as e:
                err = e.args[0] if e.args else e
                outcome = classify(err)
                outcomes = {p: outcome for p in batch}
                log(f"commit: {describe(err)}")
            except Exception as e:
                outcomes = {p: "unknown" for p in batch}
                log(f"commit: {describe(e)}")
            reader.commit_lines(batch, sent, outcomes)

    def end_offsets(partitions):
        ends = {}
        for p in partitions:
            try:
                _, high = consumer.get_watermark_offsets(TopicPartition(a.topic, p), timeout=2, cached=False)
            except Exception as e:
                log(f"watermarks: {describe(e)}")
                return None
            ends[p] = high
        return ends

    def positions(partitions):
        out = dict((p, reader.next.get(p)) for p in partitions)
        try:
            for tp in consumer.position([TopicPartition(a.topic, p) for p in partitions]):
                if tp.offset >= 0 and (out.get(tp.partition) is None or tp.offset > out[tp.partition]):
                    out[tp.partition] = tp.offset
        except Exception as e:
            log(f"position: {describe(e)}")
        # A member handed a partition with nothing left to read has no position until it reads
        # (librdkafka's position() is the last consumed offset + 1): it starts at the commit.
        unknown = [p for p in partitions if out.get(p) is None]
        if group and unknown:
            try:
                for tp in consumer.committed([TopicPartition(a.topic, p) for p in unknown], timeout=2):
                    if tp.offset >= 0:
                        out[tp.partition] = tp.offset
            except Exception as e:
                log(f"committed: {describe(e)}")
        return out

    try:
        return consume_phases(a, reader, poll_once, end_offsets, positions)
    finally:
        log(f"read {reader.reads}, commits {reader.commits}")
        closer = threading.Thread(target=consumer.close, daemon=True)
        closer.start()
        closer.join(5)


def kafka_python_consumer(a, history, group):
    from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    reader = Reader(a, history)
    consumer = connect(
        lambda: KafkaConsumer(
            bootstrap_servers=a.bootstrap_server,
            client_id=history.client,
            group_id=a.group if group else None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=11000,
            session_timeout_ms=10000,
            heartbeat_interval_ms=1000,
            max_poll_interval_ms=60000,
            fetch_max_wait_ms=100,
            retry_backoff_ms=100,
            reconnect_backoff_ms=100,
            reconnect_backoff_max_ms=1000,
            metadata_max_age_ms=5000,
        ),
        a,
    )
    if consumer is None:
        return False
    tps = [TopicPartition(a.topic, p) for p in range(a.partitions)]
    if group:
        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                reader.assign([])

            def on_partitions_assigned(self, assigned):
                reader.assign([tp.partition for tp in assigned])

        consumer.subscribe(topics=[a.topic], listener=Listener())
    else:
        reader.assign(list(range(a.partitions)))
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)

    def poll_once():
        try:
            got = consumer.poll(timeout_ms=200, max_records=500)
        except Exception as e:
            log(f"poll: {describe(e)}")
            time.sleep(0.1)
            return
        batch = {}
        for tp, records in got.items():
            for r in records:
                if tp.partition not in reader.assigned:
                    log(f"read from partition {tp.partition} outside the assignment {reader.assigned}")
                reader.read(tp.partition, r.offset, r.value)
                batch[tp.partition] = r.offset + 1
        if group and batch:
            sent = now_us()
            try:
                consumer.commit(
                    offsets={TopicPartition(a.topic, p): OffsetAndMetadata(o, "", -1) for p, o in batch.items()},
                    timeout_ms=5000,
                )
                outcomes = {p: "ok" for p in batch}
            except Exception as e:
                outcome = classify(e)
                outcomes = {p: outcome for p in batch}
                log(f"commit: {describe(e)}")
            reader.commit_lines(batch, sent, outcomes)

    def end_offsets(partitions):
        try:
            got = consumer.end_offsets([TopicPartition(a.topic, p) for p in partitions], timeout_ms=2000)
        except Exception as e:
            log(f"end offsets: {describe(e)}")
            return None
        return {tp.partition: o for tp, o in got.items()}

    def positions(partitions):
        out = dict((p, reader.next.get(p)) for p in partitions)
        for p in partitions:
            try:
                o = consumer.position(TopicPartition(a.topic, p), timeout_ms=1000)
            except Exception:
                continue
            if o is not None and o >= 0 and (out.get(p) is None or o > out[p]):
                out[p] = o
        return out

    try:
        return consume_phases(a, reader, poll_once, end_offsets, positions)
    finally:
        log(f"read {reader.reads}, commits {reader.commits}")
        closer = threading.Thread(target=lambda: consumer.close(autocommit=False, timeout_ms=3000), daemon=True)
        closer.start()
        closer.join(5)


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--library", choices=["confluent", "kafka-python"], required=True)
    ap.add_argument("--role", choices=["producer", "consumer", "group"], required=True)
    ap.add_argument("--bootstrap-server", default="127.0.0.1:9092")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of producing or reading")
    ap.add_argument("--rate", type=float, default=100.0, help="records per second (producers)")
    ap.add_argument("--acks", choices=["0", "1", "all"], default="all")
    ap.add_argument("--idempotent", action="store_true")
    ap.add_argument("--compression", choices=["none", "gzip", "snappy", "lz4", "zstd"], default="none")
    ap.add_argument("--group", default=None, help="consumer group (role group)")
    ap.add_argument("--client", required=True, help="client name, unique across every history checked together")
    ap.add_argument("--history", required=True)
    ap.add_argument("--message-timeout", type=float, default=15.0, help="seconds a record may wait for its answer")
    ap.add_argument("--flush-timeout", type=float, default=20.0, help="seconds the final flush may take")
    ap.add_argument("--drain-timeout", type=float, default=40.0, help="seconds after --duration to reach the end offsets")
    ap.add_argument("--wait-file", default=None, help="consumers: drain only once this file exists")
    a = ap.parse_args(argv)
    if a.role == "group" and not a.group:
        ap.error("--role group needs --group")
    if a.role != "group":
        a.group = None

    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    signal.signal(signal.SIGINT, lambda *_: STOP.set())
    code = 0
    if a.role == "producer":
        generation = 0
        base = a.client
        started = time.monotonic()
        total = a.duration
        while True:
            client = base if generation == 0 else f"{base}.{generation}"
            history = History(a.history, client)
            history.write(
                "producer", topic=a.topic, library=a.library, idempotent=a.idempotent,
                acks=a.acks, compression=a.compression,
            )
            run = confluent_producer if a.library == "confluent" else kafka_python_producer
            try:
                outcome = run(a, history)
            except Exception:
                log(traceback.format_exc())
                outcome = "crashed"
                code = 1
            history.close()
            a.duration = total - (time.monotonic() - started)
            if outcome != "restart" or a.duration <= 0.5 or generation >= 20:
                break
            generation += 1
    else:
        history = History(a.history, a.client)
        history.write("consumer", topic=a.topic, library=a.library, group=a.group)
        run = confluent_consumer if a.library == "confluent" else kafka_python_consumer
        try:
            if not run(a, history, a.role == "group"):
                code = 3  # did not reach the end offsets: its reads stand, but say so
        except Exception:
            log(traceback.format_exc())
            code = 1
        history.close()
    sys.stderr.flush()
    # Library threads (librdkafka's, kafka-python's) must not hold the process up.
    os._exit(code)


if __name__ == "__main__":
    main()
