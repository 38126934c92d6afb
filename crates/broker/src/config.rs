//! Broker configuration: every setting, its default, and how layers combine.
//!
//! A setting comes from, in increasing precedence: its default, the TOML file, a `SLUICE_*`
//! environment variable, a command-line flag. All layers speak the same keys (`node.id`,
//! `listeners`, …, as in Kafka's `server.properties`); the environment spells them upper case
//! with `_` for `.` (`SLUICE_NODE_ID`). Every error names the key, the layer and what was wrong.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => write!(f, "the default"),
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Env(v) => write!(f, "environment variable {v}"),
            Source::Flag => write!(f, "the command line"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}: unknown setting `{key}` (known: {known})")]
    UnknownKey { key: String, origin: Source, known: String },
    #[error("{origin}: `{key}` = {value:?} is invalid: {why}")]
    Invalid {
        key: String,
        value: String,
        origin: Source,
        why: String,
    },
    #[error("cannot read config file {path}: {why}")]
    File { path: PathBuf, why: String },
}

/// A listener: where to bind, and what to tell clients to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub bind: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: u16,
}

/// How this node takes part in the metadata quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumConfig {
    /// `process.roles` holds `controller`: this node is one of the voters.
    pub controller: bool,
    /// `controller.quorum.voters`, by id: where each voter's controller listener is. Empty:
    /// this node is the only voter (the single-node default).
    pub voters: BTreeMap<i32, String>,
    /// The controller listener's address (`controller.listener.names` in `listeners`), on a
    /// voter among others.
    pub listener: Option<SocketAddr>,
    pub election_timeout_ms: u64,
    pub fetch_timeout_ms: u64,
    pub election_backoff_max_ms: u64,
    /// `broker.heartbeat.interval.ms`: how often a broker tells the active controller it lives.
    pub heartbeat_interval_ms: u64,
    /// `broker.session.timeout.ms`: a broker the active controller has not heard from for this
    /// long is fenced (its partitions lose their leader until it is back).
    pub session_timeout_ms: u64,
}

impl QuorumConfig {
    /// This node is the quorum's only voter.
    pub fn is_alone(&self, node_id: i32) -> bool {
        self.voters.is_empty() || (self.voters.len() == 1 && self.voters.contains_key(&node_id))
    }
}

/// `controller.quorum.voters`: `id@host:port,...`.
fn parse_voters(s: &str) -> Result<BTreeMap<i32, String>, String> {
    let mut voters = BTreeMap::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry
            .split_once('@')
            .ok_or_else(|| format!("`{entry}`: expected id@host:port"))?;
        let id: i32 = id
            .trim()
            .parse()
            .ok()
            .filter(|i| *i >= 0)
            .ok_or_else(|| format!("`{entry}`: `{id}` is not a node id"))?;
        let (host, port) = parse_host_port(addr)?;
        if voters.insert(id, format!("{host}:{port}")).is_some() {
            return Err(format!("voter {id} is named twice"));
        }
    }
    Ok(voters)
}

/// `listeners` (or `advertised.listeners`) as (name, address) pairs; a bare `host:port` is
/// named PLAINTEXT.
fn parse_listeners(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, addr) = match entry.split_once("://") {
            Some((n, a)) => (n.trim().to_ascii_uppercase(), a.trim()),
            None => ("PLAINTEXT".to_string(), entry),
        };
        if name.is_empty() {
            return Err(format!("`{entry}`: the listener has no name"));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(format!("the listener name {name} is used twice"));
        }
        out.push((name, addr.to_string()));
    }
    if out.is_empty() {
        return Err("no listener".into());
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `node.id`: this broker's numeric id.
    pub node_id: i32,
    /// `cluster.id` (Kafka's `kafka-storage format --cluster-id`): the id a new cluster gets;
    /// a data directory of another cluster refuses to start with it. `None`: a new cluster
    /// gets a random one (its first leader writes it), and a node joins whatever cluster its
    /// voters are.
    pub cluster_id: Option<String>,
    /// `listeners`: the address clients connect to (`host:port`, or `PLAINTEXT://host:port`).
    pub listener: Listener,
    /// `admin.listeners`: where the admin HTTP port listens (`None`: it is off).
    pub admin_bind: Option<SocketAddr>,
    /// `process.roles`, `controller.quorum.*`, and the controller listener.
    pub quorum: QuorumConfig,
    /// `log.dirs`: where data lives.
    pub data_dir: PathBuf,
    /// `max.connections`: connections held at once; past it, accepting pauses until one closes.
    pub connections_max: usize,
    /// `socket.request.max.bytes`: the largest request frame; a larger one closes the connection.
    pub request_frame_bytes_max: usize,
    /// `queued.max.request.bytes`: request bytes held in memory across all connections; past it,
    /// connections wait before reading the next request body.
    pub queued_request_bytes_max: usize,
    /// `connections.max.idle.ms`: a connection idle, or stalled mid-request, this long is closed.
    pub connection_idle_max: std::time::Duration,
    /// `max.connections.per.ip`: connections one client address may hold; past it, a new one
    /// from that address is closed at once (as Kafka does).
    pub connections_per_ip_max: usize,
    /// `max.connections.per.ip.overrides`: per-address exceptions to the above.
    pub connections_per_ip_overrides: BTreeMap<std::net::IpAddr, usize>,
    /// `socket.request.read.timeout.ms`: a request whose bytes have not all arrived this long
    /// after its size did is dropped with its connection (Sluice only).
    pub request_read_timeout: std::time::Duration,
    /// `socket.write.timeout.ms`: a response that makes no progress into the socket for this
    /// long closes the connection (Sluice only).
    pub write_timeout: std::time::Duration,
    /// `fetch.max.bytes`: the most record data one fetch response carries, whatever the
    /// client asks (the first batch excepted, as Kafka).
    pub fetch_response_bytes_max: usize,
    /// `queued.max.response.bytes`: record data held in fetch responses not yet written to
    /// their sockets, across connections (Sluice only).
    pub queued_response_bytes_max: usize,

    /// Topic defaults and creation policy.
    pub topic_defaults: TopicDefaults,
    /// `log.open.files.max`: segment file descriptors open at once (see `storage::RealFs`).
    pub open_files_max: usize,
    /// Consumer group coordinator settings (`group.*`, `offsets.*`).
    pub groups: crate::group::coordinator::GroupConfig,
    /// Every setting as text, and whether it is the default (for DescribeConfigs).
    pub settings: Vec<(String, String, bool)>,
}

/// Broker-wide defaults for topics (`num.partitions`, `log.*`, `message.max.bytes`, …).
#[derive(Debug, Clone)]
pub struct TopicDefaults {
    pub num_partitions: i32,
    pub auto_create: bool,
    pub retention_check_interval_ms: i64,
    /// `max.broker.partitions`: partitions this broker holds, internal ones included; a
    /// creation past it is refused with `POLICY_VIOLATION`.
    pub partitions_max: usize,
    /// `max.partitions.per.request`: partitions one CreateTopics or CreatePartitions request
    /// may add over all its topics; past it, `INVALID_PARTITIONS` (Sluice only).
    pub partitions_per_request_max: usize,
    /// The default of every topic config in [`crate::topics::TOPIC_CONFIGS`], by topic config
    /// name (`retention.ms`), taken from its broker synonym (`log.retention.ms`).
    pub configs: BTreeMap<String, String>,
}

/// Every key, its default and what it means (for `--help` and error messages).
pub const SETTINGS: &[(&str, &str, &str)] = &[
    ("node.id", "1", "this broker's numeric id"),
    (
        "cluster.id",
        "",
        "the id of a new cluster (22 characters, base64url of 16 bytes); empty: a random one",
    ),
    (
        "process.roles",
        "broker,controller",
        "broker, or broker,controller (a combined node); controller alone is not supported yet",
    ),
    (
        "listeners",
        "127.0.0.1:9092",
        "addresses to accept connections on: host:port, or NAME://host:port,... (one of them the controller listener when this node votes with others)",
    ),
    (
        "controller.listener.names",
        "CONTROLLER",
        "the name, in listeners, of the listener the metadata quorum speaks on",
    ),
    (
        "controller.quorum.voters",
        "",
        "the metadata quorum: id@host:port,... of every controller (empty: this node alone)",
    ),
    (
        "controller.quorum.election.timeout.ms",
        "1000",
        "how long a voter without a leader waits (plus a random share) before an election",
    ),
    (
        "controller.quorum.fetch.timeout.ms",
        "2000",
        "how long a follower goes without hearing from the leader before it looks for another",
    ),
    (
        "controller.quorum.election.backoff.max.ms",
        "1000",
        "the longest random wait after a lost election",
    ),
    (
        "broker.heartbeat.interval.ms",
        "2000",
        "how often a broker in a cluster heartbeats to the active controller",
    ),
    (
        "broker.session.timeout.ms",
        "9000",
        "a broker the active controller has not heard from for this long is fenced: its partitions have no leader until it returns",
    ),
    (
        "advertised.listeners",
        "",
        "address clients are told to connect to (default: listeners)",
    ),
    (
        "admin.listeners",
        "127.0.0.1:9644",
        "address of the admin HTTP port: /metrics, /health, /ready (empty: off)",
    ),
    ("log.dirs", "./sluice-data", "directory that holds the broker's data"),
    ("max.connections", "10000", "client connections held at once"),
    (
        "socket.request.max.bytes",
        "104857600",
        "largest request frame accepted",
    ),
    (
        "queued.max.request.bytes",
        "536870912",
        "request bytes held in memory across connections",
    ),
    (
        "connections.max.idle.ms",
        "600000",
        "close a connection idle (or stalled mid-request) this long",
    ),
    (
        "max.connections.per.ip",
        "1000",
        "connections one client address may hold; more from it are closed at once (Kafka: unlimited)",
    ),
    (
        "max.connections.per.ip.overrides",
        "",
        "per-address exceptions to max.connections.per.ip: `ip:count,ip:count`",
    ),
    (
        "socket.request.read.timeout.ms",
        "30000",
        "drop a connection whose request has not fully arrived this long after its size (Sluice only)",
    ),
    (
        "socket.write.timeout.ms",
        "30000",
        "close a connection whose response makes no progress into the socket this long (Sluice only)",
    ),
    (
        "fetch.max.bytes",
        "57671680",
        "most record data in one fetch response, whatever the client asks",
    ),
    (
        "queued.max.response.bytes",
        "536870912",
        "fetch response data held for clients, across connections; fetches shrink to fit (Sluice only)",
    ),
    (
        "max.broker.partitions",
        "100000",
        "partitions this broker holds, internal ones included; creations past it are refused",
    ),
    (
        "max.partitions.per.request",
        "10000",
        "partitions one CreateTopics or CreatePartitions request may add (Sluice only)",
    ),
    ("num.partitions", "1", "partitions of a topic created without a count"),
    (
        "auto.create.topics.enable",
        "true",
        "create a topic when a client asks for its metadata",
    ),
    (
        "message.max.bytes",
        "1048588",
        "largest record batch accepted (topic default)",
    ),
    (
        "log.segment.bytes",
        "1073741824",
        "segment size before a new one is rolled (topic default)",
    ),
    (
        "log.retention.ms",
        "604800000",
        "keep records this long; -1 forever (topic default)",
    ),
    (
        "log.retention.bytes",
        "-1",
        "keep at most this many bytes per partition; -1 no limit (topic default)",
    ),
    (
        "log.roll.ms",
        "604800000",
        "roll a new segment after this long (topic default segment.ms)",
    ),
    (
        "log.flush.interval.messages",
        "9223372036854775807",
        "fsync once this many records are unflushed; 1 makes every acknowledged write durable (topic default flush.messages)",
    ),
    (
        "log.flush.interval.ms",
        "9223372036854775807",
        "fsync a partition whose last fsync is this old (topic default flush.ms)",
    ),
    (
        "log.cleanup.policy",
        "delete",
        "what happens to old segments: delete (topic default)",
    ),
    (
        "log.message.timestamp.type",
        "CreateTime",
        "CreateTime or LogAppendTime (topic default)",
    ),
    (
        "log.message.timestamp.before.max.ms",
        "9223372036854775807",
        "refuse CreateTime records older than this (topic default)",
    ),
    (
        "log.message.timestamp.after.max.ms",
        "3600000",
        "refuse CreateTime records this far in the future (topic default; Kafka 4.0's)",
    ),
    (
        "compression.type",
        "producer",
        "producer (keep as sent), uncompressed, gzip, snappy, lz4 or zstd (topic default)",
    ),
    (
        "min.insync.replicas",
        "1",
        "replicas that must have a write before acks=all succeeds (topic default)",
    ),
    (
        "log.index.interval.bytes",
        "4096",
        "bytes between offset index entries (topic default index.interval.bytes)",
    ),
    (
        "log.index.size.max.bytes",
        "10485760",
        "largest offset index (topic default segment.index.bytes; no effect yet)",
    ),
    (
        "log.roll.jitter.ms",
        "0",
        "jitter subtracted from log.roll.ms (topic default segment.jitter.ms; no effect yet)",
    ),
    (
        "log.segment.delete.delay.ms",
        "60000",
        "wait before a deleted segment's files go (topic default file.delete.delay.ms; no effect yet)",
    ),
    (
        "log.preallocate",
        "false",
        "preallocate segment files (topic default preallocate; no effect yet)",
    ),
    (
        "log.cleaner.delete.retention.ms",
        "86400000",
        "tombstone retention in compacted topics (topic default delete.retention.ms; no effect yet)",
    ),
    (
        "log.cleaner.min.compaction.lag.ms",
        "0",
        "topic default min.compaction.lag.ms (no effect yet)",
    ),
    (
        "log.cleaner.max.compaction.lag.ms",
        "9223372036854775807",
        "topic default max.compaction.lag.ms (no effect yet)",
    ),
    (
        "log.cleaner.min.cleanable.ratio",
        "0.5",
        "topic default min.cleanable.dirty.ratio (no effect yet)",
    ),
    (
        "log.local.retention.ms",
        "-2",
        "topic default local.retention.ms (no tiered storage; no effect)",
    ),
    (
        "log.local.retention.bytes",
        "-2",
        "topic default local.retention.bytes (no tiered storage; no effect)",
    ),
    (
        "unclean.leader.election.enable",
        "false",
        "topic default unclean.leader.election.enable (single node; no effect)",
    ),
    (
        "compression.gzip.level",
        "-1",
        "topic default compression.gzip.level (no effect yet)",
    ),
    (
        "compression.lz4.level",
        "9",
        "topic default compression.lz4.level (no effect yet)",
    ),
    (
        "compression.zstd.level",
        "3",
        "topic default compression.zstd.level (no effect yet)",
    ),
    ("log.retention.check.interval.ms", "300000", "how often retention runs"),
    (
        "log.open.files.max",
        "1000",
        "segment files kept open at once; idle ones are closed and reopened on use (Sluice only)",
    ),
    (
        "group.min.session.timeout.ms",
        "6000",
        "shortest session timeout a group member may ask for",
    ),
    (
        "group.max.session.timeout.ms",
        "1800000",
        "longest session timeout a group member may ask for",
    ),
    (
        "group.initial.rebalance.delay.ms",
        "3000",
        "how long an empty group waits for more members before its first assignment",
    ),
    (
        "group.max.size",
        "10000",
        "members a consumer group may hold (Kafka: unlimited)",
    ),
    (
        "group.max.member.metadata.bytes",
        "1048576",
        "largest protocol metadata (or assignment) of one group member; larger joins get MESSAGE_TOO_LARGE (Sluice only)",
    ),
    (
        "group.max.memory.bytes",
        "268435456",
        "member metadata and assignments all groups may hold; past it joins get GROUP_MAX_SIZE_REACHED (Sluice only)",
    ),
    (
        "offsets.topic.num.partitions",
        "50",
        "partitions of __consumer_offsets (fixed once it exists)",
    ),
    (
        "offsets.topic.segment.bytes",
        "104857600",
        "segment size of __consumer_offsets",
    ),
    (
        "offsets.retention.minutes",
        "10080",
        "keep a group's committed offsets this long after it empties",
    ),
    (
        "offsets.retention.check.interval.ms",
        "600000",
        "how often expired committed offsets are removed",
    ),
    (
        "offset.metadata.max.bytes",
        "4096",
        "largest metadata string stored with a committed offset",
    ),
];

/// Whether, and where, a broker setting can change at runtime (Kafka's "update mode").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    /// Only in the file, environment or flags, with a restart.
    ReadOnly,
    /// For one broker (resource name = its id), never as the cluster default.
    PerBroker,
    /// For one broker or as the cluster default (resource name "").
    ClusterWide,
    /// Only with a listener prefix (`listener.name.<l>.ssl...`): TLS key and trust stores.
    PerListener,
}

/// A Kafka broker config that is not one of Sluice's [`SETTINGS`]: reported by
/// DescribeConfigs with Kafka 4.0's default (or Sluice's fixed value where Sluice's behaviour
/// is fixed), and, when Kafka lets it change at runtime, stored by the alter APIs in
/// `broker-configs.json`. None of them changes what Sluice does yet.
#[derive(Debug, Clone, Copy)]
pub struct KafkaSetting {
    pub name: &'static str,
    pub default: Option<&'static str>,
    /// A [`crate::topics::config_type`] code; `PASSWORD` ones are sensitive.
    pub kind: i8,
    pub mode: UpdateMode,
}

const fn ks(name: &'static str, default: Option<&'static str>, kind: i8, mode: UpdateMode) -> KafkaSetting {
    KafkaSetting {
        name,
        default,
        kind,
        mode,
    }
}

/// Kafka 4.0 broker configs beyond Sluice's own [`SETTINGS`] (the common ones clients, tools
/// and dashboards read).
pub const KAFKA_BROKER_CONFIGS: &[KafkaSetting] = {
    use crate::topics::config_type::*;
    use UpdateMode::*;
    const MAX: Option<&str> = Some("9223372036854775807");
    &[
        // Identity and roles (process.roles and controller.quorum.* are in SETTINGS).
        ks("broker.id", Some("-1"), INT, ReadOnly),
        ks("broker.rack", None, STRING, ReadOnly),
        ks("reserved.broker.max.id", Some("1000"), INT, ReadOnly),
        ks("controller.quorum.bootstrap.servers", Some(""), LIST, ReadOnly),
        ks("controller.quorum.request.timeout.ms", Some("2000"), INT, ReadOnly),
        ks("controller.quorum.retry.backoff.ms", Some("20"), INT, ReadOnly),
        ks("controller.quorum.append.linger.ms", Some("25"), INT, ReadOnly),
        ks("controller.socket.timeout.ms", Some("30000"), INT, ReadOnly),
        ks("metadata.log.dir", None, STRING, ReadOnly),
        ks("metadata.log.segment.bytes", Some("1073741824"), INT, ReadOnly),
        ks("metadata.max.retention.bytes", Some("104857600"), LONG, ReadOnly),
        ks("metadata.max.retention.ms", Some("604800000"), LONG, ReadOnly),
        ks("initial.broker.registration.timeout.ms", Some("60000"), INT, ReadOnly),
        // Listeners and the network.
        ks(
            "listener.security.protocol.map",
            Some("SASL_SSL:SASL_SSL,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT"),
            STRING,
            PerBroker,
        ),
        ks("inter.broker.listener.name", None, STRING, ReadOnly),
        ks("security.inter.broker.protocol", Some("PLAINTEXT"), STRING, ReadOnly),
        ks("num.network.threads", Some("3"), INT, ClusterWide),
        ks("num.io.threads", Some("8"), INT, ClusterWide),
        ks("background.threads", Some("10"), INT, ClusterWide),
        ks("queued.max.requests", Some("500"), INT, ReadOnly),
        ks("socket.send.buffer.bytes", Some("102400"), INT, ReadOnly),
        ks("socket.receive.buffer.bytes", Some("102400"), INT, ReadOnly),
        ks("socket.listen.backlog.size", Some("50"), INT, ReadOnly),
        ks("socket.connection.setup.timeout.ms", Some("10000"), LONG, ReadOnly),
        ks("socket.connection.setup.timeout.max.ms", Some("30000"), LONG, ReadOnly),
        ks("max.connection.creation.rate", Some("2147483647"), INT, ClusterWide),
        ks("connections.max.reauth.ms", Some("0"), LONG, ReadOnly),
        ks("max.incremental.fetch.session.cache.slots", Some("1000"), INT, ReadOnly),
        ks("fetch.purgatory.purge.interval.requests", Some("1000"), INT, ReadOnly),
        ks(
            "producer.purgatory.purge.interval.requests",
            Some("1000"),
            INT,
            ReadOnly,
        ),
        ks(
            "delete.records.purgatory.purge.interval.requests",
            Some("1"),
            INT,
            ReadOnly,
        ),
        // Topics and logs.
        ks("default.replication.factor", Some("1"), INT, ReadOnly),
        ks("delete.topic.enable", Some("true"), BOOLEAN, ReadOnly),
        ks("log.retention.hours", Some("168"), INT, ReadOnly),
        ks("log.retention.minutes", None, INT, ReadOnly),
        ks("log.roll.hours", Some("168"), INT, ReadOnly),
        ks("log.roll.jitter.hours", Some("0"), INT, ReadOnly),
        ks("log.flush.scheduler.interval.ms", MAX, LONG, ReadOnly),
        ks("log.flush.offset.checkpoint.interval.ms", Some("60000"), INT, ReadOnly),
        ks(
            "log.flush.start.offset.checkpoint.interval.ms",
            Some("60000"),
            INT,
            ReadOnly,
        ),
        ks("log.dir.failure.timeout.ms", Some("30000"), LONG, ReadOnly),
        ks("num.recovery.threads.per.data.dir", Some("2"), INT, ClusterWide),
        ks("log.cleaner.enable", Some("true"), BOOLEAN, ReadOnly),
        ks("log.cleaner.threads", Some("1"), INT, ClusterWide),
        ks(
            "log.cleaner.io.max.bytes.per.second",
            Some("1.7976931348623157E308"),
            DOUBLE,
            ClusterWide,
        ),
        ks("log.cleaner.dedupe.buffer.size", Some("134217728"), LONG, ClusterWide),
        ks("log.cleaner.io.buffer.size", Some("524288"), INT, ClusterWide),
        ks("log.cleaner.io.buffer.load.factor", Some("0.9"), DOUBLE, ClusterWide),
        ks("log.cleaner.backoff.ms", Some("15000"), LONG, ClusterWide),
        ks("create.topic.policy.class.name", None, CLASS, ReadOnly),
        ks("alter.config.policy.class.name", None, CLASS, ReadOnly),
        ks("remote.log.storage.system.enable", Some("false"), BOOLEAN, ReadOnly),
        // Replication (a single node has none).
        ks("num.replica.fetchers", Some("1"), INT, ClusterWide),
        ks("num.replica.alter.log.dirs.threads", None, INT, ReadOnly),
        ks("replica.lag.time.max.ms", Some("30000"), LONG, ReadOnly),
        ks("replica.fetch.max.bytes", Some("1048576"), INT, ReadOnly),
        ks("replica.fetch.min.bytes", Some("1"), INT, ReadOnly),
        ks("replica.fetch.wait.max.ms", Some("500"), INT, ReadOnly),
        ks("replica.fetch.backoff.ms", Some("1000"), INT, ReadOnly),
        ks("replica.fetch.response.max.bytes", Some("10485760"), INT, ReadOnly),
        ks("replica.socket.timeout.ms", Some("30000"), INT, ReadOnly),
        ks("replica.socket.receive.buffer.bytes", Some("65536"), INT, ReadOnly),
        ks(
            "replica.high.watermark.checkpoint.interval.ms",
            Some("5000"),
            LONG,
            ReadOnly,
        ),
        ks("replica.selector.class", None, CLASS, ReadOnly),
        ks("auto.leader.rebalance.enable", Some("true"), BOOLEAN, ReadOnly),
        ks("leader.imbalance.check.interval.seconds", Some("300"), LONG, ReadOnly),
        ks("leader.imbalance.per.broker.percentage", Some("10"), INT, ReadOnly),
        ks("leader.replication.throttled.rate", MAX, LONG, PerBroker),
        ks("follower.replication.throttled.rate", MAX, LONG, PerBroker),
        ks("replica.alter.log.dirs.io.max.bytes.per.second", MAX, LONG, PerBroker),
        // Internal topics: Sluice creates them with one replica (a single node).
        ks("offsets.topic.replication.factor", Some("1"), SHORT, ReadOnly),
        ks("offsets.topic.compression.codec", Some("0"), INT, ReadOnly),
        ks("offsets.load.buffer.size", Some("5242880"), INT, ReadOnly),
        ks("offsets.commit.timeout.ms", Some("5000"), INT, ReadOnly),
        ks("transaction.state.log.replication.factor", Some("1"), SHORT, ReadOnly),
        ks("transaction.state.log.min.isr", Some("1"), INT, ReadOnly),
        ks("transaction.state.log.num.partitions", Some("50"), INT, ReadOnly),
        ks("transaction.state.log.segment.bytes", Some("104857600"), INT, ReadOnly),
        ks("transaction.state.log.load.buffer.size", Some("5242880"), INT, ReadOnly),
        ks("transaction.max.timeout.ms", Some("900000"), INT, ReadOnly),
        ks("transactional.id.expiration.ms", Some("604800000"), INT, ReadOnly),
        ks(
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            Some("10000"),
            INT,
            ReadOnly,
        ),
        ks(
            "transaction.remove.expired.transaction.cleanup.interval.ms",
            Some("3600000"),
            INT,
            ReadOnly,
        ),
        ks(
            "transaction.partition.verification.enable",
            Some("true"),
            BOOLEAN,
            ClusterWide,
        ),
        ks("producer.id.expiration.ms", Some("86400000"), INT, ClusterWide),
        ks(
            "producer.id.expiration.check.interval.ms",
            Some("600000"),
            INT,
            ReadOnly,
        ),
        // Groups: Sluice speaks the classic protocol only.
        ks("group.coordinator.rebalance.protocols", Some("classic"), LIST, ReadOnly),
        // Security (Sluice has no TLS or SASL yet: these are reported and stored only).
        ks("authorizer.class.name", Some(""), STRING, ReadOnly),
        ks("super.users", None, STRING, ReadOnly),
        ks(
            "principal.builder.class",
            Some("org.apache.kafka.common.security.authenticator.DefaultKafkaPrincipalBuilder"),
            CLASS,
            ReadOnly,
        ),
        ks("sasl.enabled.mechanisms", Some("GSSAPI"), LIST, PerBroker),
        ks(
            "sasl.mechanism.inter.broker.protocol",
            Some("GSSAPI"),
            STRING,
            PerBroker,
        ),
        ks("sasl.mechanism.controller.protocol", Some("GSSAPI"), STRING, ReadOnly),
        ks("sasl.jaas.config", None, PASSWORD, PerBroker),
        ks("sasl.kerberos.service.name", None, STRING, PerBroker),
        ks("sasl.kerberos.kinit.cmd", Some("/usr/bin/kinit"), STRING, PerBroker),
        ks(
            "sasl.kerberos.ticket.renew.window.factor",
            Some("0.8"),
            DOUBLE,
            PerBroker,
        ),
        ks("sasl.kerberos.ticket.renew.jitter", Some("0.05"), DOUBLE, PerBroker),
        ks("sasl.kerberos.min.time.before.relogin", Some("60000"), LONG, PerBroker),
        ks(
            "sasl.kerberos.principal.to.local.rules",
            Some("DEFAULT"),
            LIST,
            PerBroker,
        ),
        ks("sasl.login.refresh.window.factor", Some("0.8"), DOUBLE, PerBroker),
        ks("sasl.login.refresh.window.jitter", Some("0.05"), DOUBLE, PerBroker),
        ks("sasl.login.refresh.min.period.seconds", Some("60"), SHORT, PerBroker),
        ks("sasl.login.refresh.buffer.seconds", Some("300"), SHORT, PerBroker),
        ks("sasl.server.callback.handler.class", None, CLASS, ReadOnly),
        ks("sasl.login.class", None, CLASS, ReadOnly),
        ks("sasl.login.callback.handler.class", None, CLASS, ReadOnly),
        ks("sasl.oauthbearer.jwks.endpoint.url", None, STRING, ReadOnly),
        ks("sasl.oauthbearer.expected.audience", None, LIST, ReadOnly),
        ks("sasl.oauthbearer.expected.issuer", None, STRING, ReadOnly),
        ks("ssl.protocol", Some("TLSv1.3"), STRING, PerListener),
        ks("ssl.enabled.protocols", Some("TLSv1.2,TLSv1.3"), LIST, PerListener),
        ks("ssl.cipher.suites", Some(""), LIST, PerListener),
        ks("ssl.provider", None, STRING, PerListener),
        ks("ssl.keystore.type", Some("JKS"), STRING, PerListener),
        ks("ssl.keystore.location", None, STRING, PerListener),
        ks("ssl.keystore.password", None, PASSWORD, PerListener),
        ks("ssl.key.password", None, PASSWORD, PerListener),
        ks("ssl.keystore.key", None, PASSWORD, PerListener),
        ks("ssl.keystore.certificate.chain", None, PASSWORD, PerListener),
        ks("ssl.truststore.type", Some("JKS"), STRING, PerListener),
        ks("ssl.truststore.location", None, STRING, PerListener),
        ks("ssl.truststore.password", None, PASSWORD, PerListener),
        ks("ssl.truststore.certificates", None, PASSWORD, PerListener),
        ks("ssl.keymanager.algorithm", Some("SunX509"), STRING, PerListener),
        ks("ssl.trustmanager.algorithm", Some("PKIX"), STRING, PerListener),
        ks(
            "ssl.endpoint.identification.algorithm",
            Some("https"),
            STRING,
            PerListener,
        ),
        ks("ssl.secure.random.implementation", None, STRING, PerListener),
        ks("ssl.client.auth", Some("none"), STRING, PerListener),
        ks("ssl.principal.mapping.rules", Some("DEFAULT"), STRING, ReadOnly),
        ks("ssl.engine.factory.class", None, CLASS, PerListener),
        ks("ssl.allow.dn.changes", Some("false"), BOOLEAN, ReadOnly),
        ks("ssl.allow.san.changes", Some("false"), BOOLEAN, ReadOnly),
        // Metrics and quotas.
        ks("metric.reporters", Some(""), LIST, ClusterWide),
        ks("metrics.num.samples", Some("2"), INT, ReadOnly),
        ks("metrics.sample.window.ms", Some("30000"), LONG, ReadOnly),
        ks("metrics.recording.level", Some("INFO"), STRING, ReadOnly),
        ks("quota.window.num", Some("11"), INT, ReadOnly),
        ks("quota.window.size.seconds", Some("1"), INT, ReadOnly),
        ks("replication.quota.window.num", Some("11"), INT, ReadOnly),
    ]
};

/// Sluice settings Kafka lets change at runtime besides the topic defaults (stored, not acted
/// on until Sluice reads them at runtime).
const DYNAMIC_SETTINGS: &[&str] = &[
    "max.connections",
    "max.connections.per.ip",
    "max.connections.per.ip.overrides",
];

/// A Kafka broker config that is not one of Sluice's settings.
pub fn kafka_setting(key: &str) -> Option<&'static KafkaSetting> {
    KAFKA_BROKER_CONFIGS.iter().find(|s| s.name == key)
}

/// Whether `key` is a broker config this broker knows (a setting or a Kafka one).
pub fn is_broker_config(key: &str) -> bool {
    SETTINGS.iter().any(|(k, ..)| *k == key) || kafka_setting(key).is_some()
}

/// The built-in default of a broker config (`None`: Kafka's is null).
pub fn broker_default(key: &str) -> Option<&'static str> {
    match SETTINGS.iter().find(|(k, ..)| *k == key) {
        Some((_, d, _)) => Some(d),
        None => kafka_setting(key).and_then(|s| s.default),
    }
}

/// The topic config a broker setting is the default of.
pub fn synonym_of(key: &str) -> Option<&'static crate::topics::TopicConfigDef> {
    crate::topics::TOPIC_CONFIGS.iter().find(|d| d.synonym == Some(key))
}

/// Where a broker config can change at runtime, as in Kafka.
pub fn update_mode(key: &str) -> UpdateMode {
    if synonym_of(key).is_some() || DYNAMIC_SETTINGS.contains(&key) {
        return UpdateMode::ClusterWide;
    }
    kafka_setting(key).map_or(UpdateMode::ReadOnly, |s| s.mode)
}

/// The Kafka type of a broker config (a [`crate::topics::config_type`] code).
pub fn broker_config_type(key: &str) -> i8 {
    use crate::topics::config_type::*;
    if let Some(d) = synonym_of(key) {
        return d.kind;
    }
    if let Some(s) = kafka_setting(key) {
        return s.kind;
    }
    match key {
        "auto.create.topics.enable" => BOOLEAN,
        "queued.max.request.bytes"
        | "connections.max.idle.ms"
        | "queued.max.response.bytes"
        | "log.retention.check.interval.ms"
        | "group.max.memory.bytes"
        | "offsets.retention.check.interval.ms" => LONG,
        "listeners"
        | "advertised.listeners"
        | "admin.listeners"
        | "log.dirs"
        | "max.connections.per.ip.overrides"
        | "controller.listener.names" => STRING,
        "process.roles" | "controller.quorum.voters" => LIST,
        _ => INT,
    }
}

/// Checks a value a dynamic broker config is given: the reason it is refused.
pub fn check_broker_value(key: &str, value: &str) -> Result<(), String> {
    let invalid = |why: String| format!("Invalid value {value} for configuration {key}: {why}");
    if let Some(d) = synonym_of(key) {
        // The message names the broker key, as Kafka's does.
        return crate::topics::check_default(d.name, value)
            .map_err(|why| why.replace(&format!("configuration {}:", d.name), &format!("configuration {key}:")));
    }
    let kind = broker_config_type(key);
    let canonical = crate::topics::parse_config_value(kind, value).map_err(invalid)?;
    match key {
        "max.connections.per.ip.overrides" => parse_ip_overrides(value).map(|_| ()).map_err(invalid),
        "max.connections"
        | "max.connections.per.ip"
        | "num.network.threads"
        | "num.io.threads"
        | "background.threads"
        | "log.cleaner.threads"
        | "num.replica.fetchers"
        | "num.recovery.threads.per.data.dir" => {
            let min = if key.starts_with("max.connections") { 0 } else { 1 };
            match canonical.parse::<i64>() {
                Ok(n) if n >= min => Ok(()),
                _ => Err(invalid(format!("Value must be at least {min}"))),
            }
        }
        _ => Ok(()),
    }
}

/// Layers of raw `key = value` strings, applied in order; later layers win.
#[derive(Debug, Default)]
pub struct ConfigLayers {
    values: BTreeMap<String, (String, Source)>,
}

fn known_keys() -> String {
    SETTINGS.iter().map(|(k, _, _)| *k).collect::<Vec<_>>().join(", ")
}

impl ConfigLayers {
    pub fn new() -> Self {
        let mut layers = ConfigLayers::default();
        for (k, v, _) in SETTINGS {
            layers
                .values
                .insert((*k).to_string(), ((*v).to_string(), Source::Default));
        }
        layers
    }

    pub fn set(&mut self, key: &str, value: String, source: Source) -> Result<(), ConfigError> {
        if !SETTINGS.iter().any(|(k, _, _)| *k == key) {
            return Err(ConfigError::UnknownKey {
                key: key.to_string(),
                origin: source,
                known: known_keys(),
            });
        }
        self.values.insert(key.to_string(), (value, source));
        Ok(())
    }

    /// Reads a TOML file of `key = value` pairs (keys as in [`SETTINGS`], dotted keys quoted or
    /// nested: `node.id = 1` in TOML is the table `node` with key `id`, which is accepted too).
    pub fn load_toml(&mut self, path: &std::path::Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        self.load_toml_str(&text, path)
    }

    pub fn load_toml_str(&mut self, text: &str, path: &std::path::Path) -> Result<(), ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::File {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        let mut flat = vec![];
        flatten("", &table, &mut flat);
        for (key, value) in flat {
            self.set(&key, value, Source::File(path.to_path_buf()))?;
        }
        Ok(())
    }

    /// Applies `SLUICE_*` variables from `vars` (pass `std::env::vars()`). Variables that name
    /// no setting are returned, not refused: other tools share the prefix (scripts set
    /// `SLUICE_BIN`, say), so the caller warns about them instead.
    pub fn load_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<Vec<String>, ConfigError> {
        let mut ignored = vec![];
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix("SLUICE_") else {
                continue;
            };
            // SLUICE_LOG (log filter) and SLUICE_CONFIG (file path) are read by the binary.
            if matches!(rest, "LOG" | "CONFIG") {
                continue;
            }
            let key = rest.to_ascii_lowercase().replace('_', ".");
            if SETTINGS.iter().any(|(k, _, _)| *k == key) {
                self.set(&key, value, Source::Env(name.clone()))?;
            } else {
                ignored.push(name);
            }
        }
        Ok(ignored)
    }

    pub fn build(&self) -> Result<BrokerConfig, ConfigError> {
        let get = |key: &str| -> (&String, &Source) {
            let (v, s) = &self.values[key];
            (v, s)
        };
        let invalid = |key: &str, why: String| {
            let (v, s) = get(key);
            ConfigError::Invalid {
                key: key.to_string(),
                value: v.clone(),
                origin: s.clone(),
                why,
            }
        };
        let num = |key: &str| -> Result<u64, ConfigError> {
            get(key)
                .0
                .trim()
                .parse::<u64>()
                .map_err(|e| invalid(key, format!("expected a whole number ({e})")))
        };
        let node_id = get("node.id")
            .0
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| invalid("node.id", "expected a whole number from 0 to 2147483647".into()))?;
        let cluster_id = match get("cluster.id").0.trim() {
            "" => None,
            id if id.len() == 22 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') => {
                Some(id.to_string())
            }
            id => {
                return Err(invalid(
                    "cluster.id",
                    format!("{id:?} is not a cluster id: 22 characters of A-Z, a-z, 0-9, '-' and '_' (a UUID in base64url, as Kafka's)"),
                ))
            }
        };
        let listeners = parse_listeners(get("listeners").0).map_err(|why| invalid("listeners", why))?;
        let controller_names: Vec<String> = get("controller.listener.names")
            .0
            .split(',')
            .map(|n| n.trim().to_ascii_uppercase())
            .filter(|n| !n.is_empty())
            .collect();
        let (client_name, client_addr) = listeners
            .iter()
            .find(|(n, _)| !controller_names.contains(n))
            .cloned()
            .ok_or_else(|| {
                invalid(
                    "listeners",
                    "no listener for clients (every one is a controller listener)".into(),
                )
            })?;
        let bind = parse_addr(&client_addr).map_err(|why| invalid("listeners", why))?;
        let roles: Vec<String> = get("process.roles")
            .0
            .split(',')
            .map(|r| r.trim().to_ascii_lowercase())
            .filter(|r| !r.is_empty())
            .collect();
        if let Some(r) = roles.iter().find(|r| *r != "broker" && *r != "controller") {
            return Err(invalid(
                "process.roles",
                format!("`{r}` is not a role (broker, controller)"),
            ));
        }
        if !roles.iter().any(|r| r == "broker") {
            return Err(invalid(
                "process.roles",
                "a node that is only a controller is not supported yet: run controllers as combined nodes (broker,controller)"
                    .into(),
            ));
        }
        let controller = roles.iter().any(|r| r == "controller");
        let voters =
            parse_voters(get("controller.quorum.voters").0).map_err(|why| invalid("controller.quorum.voters", why))?;
        if voters.is_empty() && !controller {
            return Err(invalid(
                "process.roles",
                "a node that is only a broker needs controller.quorum.voters: the controllers it takes its metadata from".into(),
            ));
        }
        if !voters.is_empty() && controller != voters.contains_key(&node_id) {
            return Err(invalid(
                "controller.quorum.voters",
                if controller {
                    format!("this node ({node_id}) has the controller role but is not among the voters")
                } else {
                    format!("this node ({node_id}) is among the voters but has no controller role")
                },
            ));
        }
        let alone = voters.is_empty() || (voters.len() == 1 && voters.contains_key(&node_id));
        let controller_listener = listeners.iter().find(|(n, _)| controller_names.contains(n));
        let quorum_listener = match controller_listener {
            Some((_, addr)) if controller => Some(parse_addr(addr).map_err(|why| invalid("listeners", why))?),
            _ if controller && !alone => {
                return Err(invalid(
                    "listeners",
                    format!(
                        "a controller among other voters needs a controller listener: add {}://host:port (controller.listener.names)",
                        controller_names.first().map_or("CONTROLLER", String::as_str)
                    ),
                ))
            }
            _ => None,
        };
        let timeout = |key: &str| -> Result<u64, ConfigError> {
            num(key).and_then(|v| {
                if v == 0 {
                    Err(invalid(key, "must be above 0".into()))
                } else {
                    Ok(v)
                }
            })
        };
        let quorum = QuorumConfig {
            controller,
            voters,
            listener: quorum_listener,
            election_timeout_ms: timeout("controller.quorum.election.timeout.ms")?,
            fetch_timeout_ms: timeout("controller.quorum.fetch.timeout.ms")?,
            election_backoff_max_ms: timeout("controller.quorum.election.backoff.max.ms")?,
            heartbeat_interval_ms: timeout("broker.heartbeat.interval.ms")?,
            session_timeout_ms: timeout("broker.session.timeout.ms")?,
        };
        let adv_all = get("advertised.listeners").0.clone();
        let adv_text = if adv_all.trim().is_empty() {
            String::new()
        } else {
            let adv = parse_listeners(&adv_all).map_err(|why| invalid("advertised.listeners", why))?;
            adv.iter()
                .find(|(n, _)| *n == client_name)
                .or_else(|| adv.iter().find(|(n, _)| !controller_names.contains(n)))
                .map(|(_, a)| a.clone())
                .ok_or_else(|| {
                    invalid(
                        "advertised.listeners",
                        format!("no entry for the {client_name} listener"),
                    )
                })?
        };
        let (advertised_host, advertised_port) = if adv_text.trim().is_empty() {
            if bind.ip().is_unspecified() {
                return Err(invalid(
                    "listeners",
                    "binding to all interfaces needs advertised.listeners: clients must be told a reachable address"
                        .into(),
                ));
            }
            (bind.ip().to_string(), bind.port())
        } else {
            parse_host_port(&adv_text).map_err(|why| invalid("advertised.listeners", why))?
        };
        let admin_text = get("admin.listeners").0.trim().to_string();
        let admin_bind = if admin_text.is_empty() {
            None
        } else {
            Some(parse_addr(&admin_text).map_err(|why| invalid("admin.listeners", why))?)
        };
        let data_dir = PathBuf::from(get("log.dirs").0.trim());
        if data_dir.as_os_str().is_empty() {
            return Err(invalid("log.dirs", "must not be empty".into()));
        }
        let connections_max = num("max.connections")? as usize;
        if connections_max == 0 {
            return Err(invalid("max.connections", "must be at least 1".into()));
        }
        let request_frame_bytes_max = num("socket.request.max.bytes")?;
        if !(1024..=i32::MAX as u64).contains(&request_frame_bytes_max) {
            return Err(invalid(
                "socket.request.max.bytes",
                "must be between 1024 and 2147483647".into(),
            ));
        }
        let queued_request_bytes_max = num("queued.max.request.bytes")?;
        if !(request_frame_bytes_max..=1 << 40).contains(&queued_request_bytes_max) {
            return Err(invalid(
                "queued.max.request.bytes",
                "must be between socket.request.max.bytes and 1 TiB".into(),
            ));
        }
        let idle_ms = num("connections.max.idle.ms")?;
        if idle_ms == 0 {
            return Err(invalid("connections.max.idle.ms", "must be at least 1".into()));
        }
        let ranged = |key: &str, range: std::ops::RangeInclusive<u64>| -> Result<u64, ConfigError> {
            let v = num(key)?;
            if !range.contains(&v) {
                return Err(invalid(
                    key,
                    format!("must be between {} and {}", range.start(), range.end()),
                ));
            }
            Ok(v)
        };
        let connections_per_ip_max = ranged("max.connections.per.ip", 1..=u32::MAX as u64)? as usize;
        let connections_per_ip_overrides = parse_ip_overrides(get("max.connections.per.ip.overrides").0)
            .map_err(|why| invalid("max.connections.per.ip.overrides", why))?;
        // A connection stalled mid-request or mid-response is also idle: the shorter wins.
        let request_read_timeout_ms = ranged("socket.request.read.timeout.ms", 1..=i32::MAX as u64)?.min(idle_ms);
        let write_timeout_ms = ranged("socket.write.timeout.ms", 1..=i32::MAX as u64)?.min(idle_ms);
        let fetch_response_bytes_max = ranged("fetch.max.bytes", 1024..=i32::MAX as u64)?;
        let queued_response_bytes_max = ranged("queued.max.response.bytes", fetch_response_bytes_max..=1 << 40)?;
        let partitions_max = ranged("max.broker.partitions", 1..=10_000_000)?;
        let partitions_per_request_max = ranged("max.partitions.per.request", 1..=partitions_max)?;
        let int = |key: &str, min: i64| -> Result<i64, ConfigError> {
            let v = get(key)
                .0
                .trim()
                .parse::<i64>()
                .map_err(|e| invalid(key, format!("expected a whole number ({e})")))?;
            if v < min {
                return Err(invalid(key, format!("must be at least {min}")));
            }
            Ok(v)
        };
        let flag = |key: &str| -> Result<bool, ConfigError> {
            match get(key).0.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(invalid(key, "expected true or false".into())),
            }
        };
        let mut configs = BTreeMap::new();
        for d in crate::topics::TOPIC_CONFIGS {
            let Some(broker_key) = d.synonym else { continue };
            let value = get(broker_key).0.trim().to_string();
            crate::topics::check_default(d.name, &value).map_err(|why| invalid(broker_key, why))?;
            configs.insert(d.name.to_string(), value);
        }
        let num_partitions = int("num.partitions", 1)?;
        if num_partitions as u64 > partitions_per_request_max {
            return Err(invalid(
                "num.partitions",
                format!("must be at most max.partitions.per.request ({partitions_per_request_max})"),
            ));
        }
        let topic_defaults = TopicDefaults {
            num_partitions: num_partitions as i32,
            auto_create: flag("auto.create.topics.enable")?,
            retention_check_interval_ms: int("log.retention.check.interval.ms", 1)?,
            partitions_max: partitions_max as usize,
            partitions_per_request_max: partitions_per_request_max as usize,
            configs,
        };
        let open_files_max = int("log.open.files.max", 16)? as usize;
        let min_session = int("group.min.session.timeout.ms", 1)?;
        let max_session = int("group.max.session.timeout.ms", min_session)?;
        let as_i32 = |v: i64| v.min(i64::from(i32::MAX)) as i32;
        let groups = crate::group::coordinator::GroupConfig {
            limits: crate::group::state::Limits {
                session_timeout_min_ms: as_i32(min_session),
                session_timeout_max_ms: as_i32(max_session),
                initial_rebalance_delay_ms: as_i32(int("group.initial.rebalance.delay.ms", 0)?),
                members_max: int("group.max.size", 1)? as usize,
            },
            offsets_partitions: {
                let n = int("offsets.topic.num.partitions", 1)?;
                if n as u64 > partitions_per_request_max {
                    return Err(invalid(
                        "offsets.topic.num.partitions",
                        format!("must be at most max.partitions.per.request ({partitions_per_request_max})"),
                    ));
                }
                n as i32
            },
            offsets_segment_bytes: {
                // It becomes the topic's segment.bytes, an INT in Kafka.
                let v = int("offsets.topic.segment.bytes", 14)?;
                if v > i64::from(i32::MAX) {
                    return Err(invalid(
                        "offsets.topic.segment.bytes",
                        "must be at most 2147483647".into(),
                    ));
                }
                v
            },
            offsets_retention_ms: int("offsets.retention.minutes", 1)?.saturating_mul(60_000),
            offsets_retention_check_ms: int("offsets.retention.check.interval.ms", 1)?,
            offset_metadata_bytes_max: int("offset.metadata.max.bytes", 0)? as usize,
            // At most 1 GiB: a member's metadata is one bytes field of Kafka's group record,
            // whose length is an int32 (so the store's encode cannot fail).
            member_metadata_bytes_max: ranged("group.max.member.metadata.bytes", 1..=1 << 30)? as usize,
            memory_bytes_max: int("group.max.memory.bytes", 1)? as usize,
            ..Default::default()
        };
        let mut settings: Vec<(String, String, bool)> = self
            .values
            .iter()
            .map(|(k, (v, source))| (k.clone(), v.clone(), *source == Source::Default))
            .collect();
        // Kafka reports a KRaft node's id under both names.
        settings.push(("broker.id".into(), node_id.to_string(), false));
        Ok(BrokerConfig {
            settings,
            groups,
            node_id,
            cluster_id,
            listener: Listener {
                bind,
                advertised_host,
                advertised_port,
            },
            admin_bind,
            quorum,
            data_dir,
            connections_max,
            request_frame_bytes_max: request_frame_bytes_max as usize,
            queued_request_bytes_max: queued_request_bytes_max as usize,
            connection_idle_max: std::time::Duration::from_millis(idle_ms),
            connections_per_ip_max,
            connections_per_ip_overrides,
            request_read_timeout: std::time::Duration::from_millis(request_read_timeout_ms),
            write_timeout: std::time::Duration::from_millis(write_timeout_ms),
            fetch_response_bytes_max: fetch_response_bytes_max as usize,
            queued_response_bytes_max: queued_response_bytes_max as usize,

            topic_defaults,
            open_files_max,
        })
    }
}

/// Kafka's `max.connections.per.ip.overrides`: `host:count` pairs separated by commas. Hosts
/// must be IP addresses here (Kafka also resolves names; a broker that resolves names at start
/// would depend on DNS to start).
pub(crate) fn parse_ip_overrides(text: &str) -> Result<BTreeMap<std::net::IpAddr, usize>, String> {
    let mut out = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (host, count) = entry
            .rsplit_once(':')
            .ok_or_else(|| format!("`{entry}` is not `ip:count`"))?;
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        let ip = host
            .parse::<std::net::IpAddr>()
            .map_err(|_| format!("`{host}` is not an IP address"))?;
        let count = count
            .trim()
            .parse::<usize>()
            .map_err(|_| format!("`{count}` in `{entry}` is not a whole number"))?;
        out.insert(ip, count);
    }
    Ok(out)
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            toml::Value::String(s) => out.push((key, s.clone())),
            other => out.push((key, other.to_string())),
        }
    }
}

fn strip_scheme(s: &str) -> &str {
    let s = s.trim();
    match s.split_once("://") {
        Some((_, rest)) => rest,
        None => s,
    }
}

fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    if s.contains(',') {
        return Err("expected one address".into());
    }
    let s = strip_scheme(s);
    let (host, port) = s.rsplit_once(':').ok_or("expected host:port")?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("`{port}` is not a port number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    Ok((host.to_string(), port))
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let (host, port) = parse_host_port(s)?;
    let host = if host == "localhost" {
        "127.0.0.1".to_string()
    } else {
        host
    };
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|_| format!("`{host}` is not an IP address to bind to"))?;
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_voters_and_named_listeners_are_read_as_kafka_writes_them() {
        // The default: a combined node, alone, no controller listener needed.
        let c = ConfigLayers::new().build().unwrap();
        assert!(c.quorum.controller && c.quorum.is_alone(1) && c.quorum.listener.is_none());
        let set = |pairs: &[(&str, &str)]| {
            let mut l = ConfigLayers::new();
            for (k, v) in pairs {
                l.set(k, v.to_string(), Source::Flag).unwrap();
            }
            l.build()
        };
        let voters = "1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103";
        let c = set(&[
            ("node.id", "2"),
            ("listeners", "PLAINTEXT://127.0.0.1:9002,CONTROLLER://127.0.0.1:9102"),
            ("controller.quorum.voters", voters),
        ])
        .unwrap();
        assert_eq!(c.listener.bind.port(), 9002);
        assert_eq!(c.quorum.listener.map(|a| a.port()), Some(9102));
        assert_eq!(c.quorum.voters.len(), 3);
        assert_eq!(c.quorum.voters[&3], "127.0.0.1:9103");
        assert!(!c.quorum.is_alone(2));
        // A broker that only observes: not a voter, no controller listener.
        let c = set(&[
            ("node.id", "7"),
            ("process.roles", "broker"),
            ("listeners", "127.0.0.1:9007"),
            ("controller.quorum.voters", voters),
        ])
        .unwrap();
        assert!(!c.quorum.controller && c.quorum.listener.is_none());
        // Each mistake is named.
        for (pairs, says) in [
            (vec![("controller.quorum.voters", "1@127.0.0.1:9101,2@x")], "host:port"),
            (
                vec![("controller.quorum.voters", "one@127.0.0.1:9101")],
                "not a node id",
            ),
            (
                vec![("controller.quorum.voters", "2@127.0.0.1:9101,3@127.0.0.1:9103")],
                "not among the voters",
            ),
            (
                vec![("controller.quorum.voters", voters)],
                "needs a controller listener",
            ),
            (vec![("process.roles", "controller")], "not supported yet"),
            (vec![("process.roles", "broker")], "needs controller.quorum.voters"),
            (vec![("process.roles", "broker,zookeeper")], "not a role"),
            (
                vec![("listeners", "CONTROLLER://127.0.0.1:9101")],
                "no listener for clients",
            ),
            (vec![("listeners", "A://127.0.0.1:1,A://127.0.0.1:2")], "used twice"),
        ] {
            let e = set(&pairs).unwrap_err().to_string();
            assert!(e.contains(says), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn defaults_are_a_single_local_node() {
        let c = ConfigLayers::new().build().unwrap();
        assert_eq!(c.node_id, 1);
        assert_eq!(c.listener.bind, "127.0.0.1:9092".parse().unwrap());
        assert_eq!(c.listener.advertised_host, "127.0.0.1");
        assert_eq!(c.request_frame_bytes_max, 104857600);
    }

    #[test]
    fn later_layers_win() {
        let mut l = ConfigLayers::new();
        l.load_toml_str(
            "node.id = 5\nlisteners = \"127.0.0.1:9000\"\n[log]\ndirs = \"/tmp/x\"\n",
            "f.toml".as_ref(),
        )
        .unwrap();
        l.load_env([
            ("SLUICE_NODE_ID".to_string(), "6".to_string()),
            ("HOME".into(), "/".into()),
        ])
        .unwrap();
        l.set("listeners", "PLAINTEXT://127.0.0.1:9001".into(), Source::Flag)
            .unwrap();
        let c = l.build().unwrap();
        assert_eq!(c.node_id, 6);
        assert_eq!(c.listener.bind.port(), 9001);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn errors_name_the_key_the_source_and_the_problem() {
        let mut l = ConfigLayers::new();
        l.load_env([("SLUICE_NODE_ID".to_string(), "abc".to_string())]).unwrap();
        let e = l.build().unwrap_err().to_string();
        assert!(
            e.contains("SLUICE_NODE_ID") && e.contains("node.id") && e.contains("whole number"),
            "{e}"
        );

        let e = ConfigLayers::new()
            .load_toml_str("nodeid = 1", "s.toml".as_ref())
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.toml") && e.contains("unknown setting `nodeid`"), "{e}");

        let mut l = ConfigLayers::new();
        l.set("listeners", "0.0.0.0:9092".into(), Source::Flag).unwrap();
        assert!(l.build().unwrap_err().to_string().contains("advertised.listeners"));
        l.set("advertised.listeners", "broker1:9092".into(), Source::Flag)
            .unwrap();
        assert_eq!(l.build().unwrap().listener.advertised_host, "broker1");
    }
}
