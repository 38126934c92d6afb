"""A minimal hand-rolled Kafka framing helper for protocol edge cases no real client will send
(oversized frames, unknown versions, garbage). Real-client behaviour is tested with the real
clients; this only pokes at the edges."""

import socket
import struct


def connect(port: int, timeout=5.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return s


def request_v1(api_key: int, version: int, correlation_id: int, body: bytes = b"", client_id: bytes = b"raw") -> bytes:
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def request_v2(api_key: int, version: int, correlation_id: int, body: bytes = b"\x00", client_id: bytes = b"raw") -> bytes:
    # flexible header: client id stays a classic string, then an empty tagged-field section
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id + b"\x00"
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def recv_exact(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def read_frame(s: socket.socket) -> bytes:
    (n,) = struct.unpack(">i", recv_exact(s, 4))
    return recv_exact(s, n)


def is_closed(s: socket.socket, timeout=5.0) -> bool:
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def parse_api_versions_v0(frame: bytes):
    corr, err, n = struct.unpack(">ihi", frame[:10])
    keys = {}
    off = 10
    for _ in range(n):
        k, lo, hi = struct.unpack(">hhh", frame[off : off + 6])
        keys[k] = (lo, hi)
        off += 6
    return corr, err, keys


def string(s):
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def init_producer_id_v0(s, correlation_id=1):
    s.sendall(request_v1(22, 0, correlation_id, string(None) + struct.pack(">i", 60000)))
    frame = read_frame(s)
    _corr, _throttle, err, pid, epoch = struct.unpack(">iihqh", frame[:20])
    return err, pid, epoch


def produce_v3(s, topic, partition, batch: bytes, correlation_id=1, acks=-1):
    body = string(None) + struct.pack(">hi", acks, 30000) + struct.pack(">i", 1) + string(topic)
    body += struct.pack(">i", 1) + struct.pack(">ii", partition, len(batch)) + batch
    s.sendall(request_v1(0, 3, correlation_id, body))
    frame = read_frame(s)
    off = 4 + 4  # correlation id, topic count
    (name_len,) = struct.unpack(">h", frame[off : off + 2])
    off += 2 + name_len + 4  # name, partition count
    _index, err, base_offset = struct.unpack(">ihq", frame[off : off + 14])
    return err, base_offset


def create_topics_v2(s, name, partitions, correlation_id=1, timeout_ms=15000):
    """One topic, the default replication factor, no configs. Returns (error code, message)."""
    [(_name, err, message)] = create_topics_v2_many(s, [(name, partitions, [])], correlation_id, timeout_ms)
    return err, message


def create_topics_v2_many(s, topics, correlation_id=1, timeout_ms=15000):
    """`topics`: (name, partitions, [(config, value)]), the default replication factor.
    Returns [(name, error code, message)] in the response's order."""
    body = struct.pack(">i", len(topics))
    for name, partitions, configs in topics:
        body += string(name) + struct.pack(">ih", partitions, -1) + struct.pack(">i", 0)
        body += struct.pack(">i", len(configs)) + b"".join(string(k) + string(v) for k, v in configs)
    body += struct.pack(">i", timeout_ms) + b"\x00"  # validate_only
    s.sendall(request_v1(19, 2, correlation_id, body))
    frame = read_frame(s)
    off = 4 + 4  # correlation id, throttle
    (count,) = struct.unpack(">i", frame[off : off + 4])
    off += 4
    out = []
    for _ in range(count):
        (name_len,) = struct.unpack(">h", frame[off : off + 2])
        name = frame[off + 2 : off + 2 + name_len].decode()
        off += 2 + name_len
        (err, msg_len) = struct.unpack(">hh", frame[off : off + 4])
        message = None if msg_len < 0 else frame[off + 4 : off + 4 + msg_len].decode()
        off += 4 + max(msg_len, 0)
        out.append((name, err, message))
    return out


def incremental_alter_configs_v0(s, resource_type, name, configs, correlation_id=1):
    """One resource; `configs`: (key, operation, value). Returns (error code, message). The
    Java admin client can address the cluster-wide broker default (resource name ""); none of
    the clients in this suite can, so the tests use this."""
    body = struct.pack(">i", 1) + struct.pack(">b", resource_type) + string(name) + struct.pack(">i", len(configs))
    for key, op, value in configs:
        body += string(key) + struct.pack(">b", op) + string(value)
    body += b"\x00"  # validate_only
    s.sendall(request_v1(44, 0, correlation_id, body))
    frame = read_frame(s)
    off = 4 + 4 + 4  # correlation id, throttle, response count
    (err, msg_len) = struct.unpack(">hh", frame[off : off + 4])
    message = None if msg_len < 0 else frame[off + 4 : off + 4 + msg_len].decode()
    return err, message


def alter_replica_log_dirs_v1(s, path, topic, partitions, correlation_id=1):
    """AlterReplicaLogDirs v1, Kafka 4.0's lowest version (non-flexible), which none of the
    clients in this suite sends: one dir, one topic. Returns [(topic, partition, error code)]."""
    body = struct.pack(">i", 1) + string(path) + struct.pack(">i", 1) + string(topic)
    body += struct.pack(">i", len(partitions)) + b"".join(struct.pack(">i", p) for p in partitions)
    s.sendall(request_v1(34, 1, correlation_id, body))
    frame = read_frame(s)
    off = 4 + 4  # correlation id, throttle
    (ntopics,) = struct.unpack(">i", frame[off : off + 4])
    off += 4
    out = []
    for _ in range(ntopics):
        (n,) = struct.unpack(">h", frame[off : off + 2])
        name_ = frame[off + 2 : off + 2 + n].decode()
        off += 2 + n
        (np,) = struct.unpack(">i", frame[off : off + 4])
        off += 4
        for _ in range(np):
            idx, err = struct.unpack(">ih", frame[off : off + 6])
            off += 6
            out.append((name_, idx, err))
    return out


def describe_quorum_v0(s, topic, partition, correlation_id=1):
    """DescribeQuorum v0 (flexible) for one partition. Returns (correlation id, top-level error,
    partition index, partition error, leader id, leader epoch, high watermark) of the first
    partition answered."""
    name = topic.encode()
    body = b"\x02" + bytes([len(name) + 1]) + name  # one topic; compact string
    body += b"\x02" + struct.pack(">i", partition) + b"\x00"  # one partition, no tags
    body += b"\x00" + b"\x00"  # topic tags, request tags
    s.sendall(request_v2(55, 0, correlation_id, body))
    frame = read_frame(s)
    corr, _header_tags, err = struct.unpack(">ibh", frame[:7])
    off = 7 + 1  # one topic
    n = frame[off] - 1
    off += 1 + n + 1  # name, one partition
    index, perr, leader, epoch, hw = struct.unpack(">ihiiq", frame[off : off + 22])
    return corr, err, index, perr, leader, epoch, hw
