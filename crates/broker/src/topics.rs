//! Topics and partitions on this node: creation with Kafka's name rules and per-topic configs,
//! deletion, lookup by name or id, and the partition state handlers use (log, leader epoch,
//! high watermark). The topic list is persisted in `<data dir>/topics.json` (written
//! atomically); each partition's log lives in `<data dir>/<topic>-<partition>/`.
//!
//! Single node for now: this node leads every partition and is its only in-sync replica, so
//! the high watermark follows the log end. The shape (epoch, high watermark beside the log)
//! is what replication will extend.

use crate::config::TopicDefaults;
use crate::meta;
use crate::producers::{ProducerBatch, ProducerStates};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use storage::{GroupCommit, Log, LogConfig, StorageError};
use wire::{ErrorCode, Uuid};

/// A request-level failure: the error code the client gets and a message for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

/// The topic that holds consumer groups and their committed offsets.
pub const CONSUMER_OFFSETS: &str = "__consumer_offsets";

/// Topics the broker keeps for itself (as Kafka's `Topic.isInternal`): clients may read them
/// but not write, create or delete them.
pub fn is_internal(name: &str) -> bool {
    name == CONSUMER_OFFSETS || name == "__transaction_state"
}

/// How record timestamps are set (`message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// Kafka's `ConfigType` codes, as DescribeConfigs reports them.
pub mod config_type {
    pub const STRING: i8 = 2;
    pub const INT: i8 = 3;
    pub const LONG: i8 = 5;
    pub const LIST: i8 = 7;
}

/// The topic configs this broker understands: name, the broker setting that supplies its
/// default (its synonym), type, and what it does.
pub const TOPIC_CONFIGS: &[(&str, &str, i8, &str)] = &[
    (
        "cleanup.policy",
        "log.cleanup.policy",
        config_type::LIST,
        "delete (compaction is not supported yet)",
    ),
    (
        "compression.type",
        "compression.type",
        config_type::STRING,
        "producer, uncompressed, gzip, snappy, lz4 or zstd",
    ),
    (
        "flush.messages",
        "log.flush.interval.messages",
        config_type::LONG,
        "fsync after this many unflushed records; 1: every acknowledged write is on disk first",
    ),
    (
        "flush.ms",
        "log.flush.interval.ms",
        config_type::LONG,
        "fsync when the last one is this old and records are waiting",
    ),
    (
        "max.message.bytes",
        "message.max.bytes",
        config_type::INT,
        "largest record batch accepted",
    ),
    (
        "message.timestamp.after.max.ms",
        "log.message.timestamp.after.max.ms",
        config_type::LONG,
        "how far ahead of the broker's clock a CreateTime timestamp may be",
    ),
    (
        "message.timestamp.before.max.ms",
        "log.message.timestamp.before.max.ms",
        config_type::LONG,
        "how far behind the broker's clock a CreateTime timestamp may be",
    ),
    (
        "message.timestamp.type",
        "log.message.timestamp.type",
        config_type::STRING,
        "CreateTime or LogAppendTime",
    ),
    (
        "min.insync.replicas",
        "min.insync.replicas",
        config_type::INT,
        "replicas that must acknowledge acks=all",
    ),
    (
        "retention.bytes",
        "log.retention.bytes",
        config_type::LONG,
        "bytes kept per partition; -1 no limit",
    ),
    (
        "retention.ms",
        "log.retention.ms",
        config_type::LONG,
        "how long records are kept; -1 forever",
    ),
    (
        "segment.bytes",
        "log.segment.bytes",
        config_type::INT,
        "segment size before a new one is rolled",
    ),
    (
        "segment.ms",
        "log.roll.ms",
        config_type::LONG,
        "roll a new segment after this long, so retention can delete the old one",
    ),
];

/// A topic's effective configuration: its overrides over the broker defaults.
#[derive(Debug, Clone)]
pub struct TopicConfig {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub segment_bytes: i64,
    pub segment_ms: i64,
    pub message_bytes_max: i64,
    pub min_insync_replicas: i32,
    pub timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms` / `after.max.ms`: the window around the broker's clock
    /// that CreateTime record timestamps must fall in.
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    pub cleanup_policy: String,
    pub compression_type: String,
    /// `flush.messages`: an append that leaves at least this many records unflushed waits
    /// for an fsync (shared with concurrent appends) before it is acknowledged.
    pub flush_messages: i64,
    /// `flush.ms`: the background flusher fsyncs a partition whose last fsync is this old.
    pub flush_ms: i64,
}

/// Checks one broker-level default (`value` for the topic config `key`): the reason when it is
/// not valid.
pub fn check_default(key: &str, value: &str) -> Result<(), String> {
    let one = BTreeMap::from([(key.to_string(), value.to_string())]);
    TopicConfig::resolve(&BTreeMap::new(), &one, false)
        .map(|_| ())
        .map_err(|e| e.message)
}

impl TopicConfig {
    /// A topic's configuration: Kafka's defaults, then the broker's `defaults` (by topic config
    /// name), then the topic's `overrides`. `internal`: the topic is one of the broker's own,
    /// which may be `compact`: the broker compacts those itself (see `group::coordinator`);
    /// general log compaction is not built.
    pub fn resolve(
        defaults: &BTreeMap<String, String>,
        overrides: &BTreeMap<String, String>,
        internal: bool,
    ) -> Result<TopicConfig, ApiError> {
        let mut c = TopicConfig {
            retention_ms: 604_800_000,
            retention_bytes: -1,
            segment_bytes: 1 << 30,
            segment_ms: 604_800_000,
            message_bytes_max: 1_048_588,
            min_insync_replicas: 1,
            timestamp_type: TimestampType::CreateTime,
            timestamp_before_max_ms: i64::MAX,
            // Kafka 4.0's default (KIP-1030).
            timestamp_after_max_ms: 3_600_000,
            cleanup_policy: "delete".into(),
            compression_type: "producer".into(),
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
        };
        let mut merged = defaults.clone();
        merged.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (key, value) in &merged {
            let bad = |why: &str| ApiError::new(ErrorCode::InvalidConfig, format!("{key}={value}: {why}"));
            let int = |min: i64| -> Result<i64, ApiError> {
                let v: i64 = value.trim().parse().map_err(|_| bad("expected a whole number"))?;
                if v < min {
                    return Err(bad(&format!("must be at least {min}")));
                }
                Ok(v)
            };
            match key.as_str() {
                "retention.ms" => c.retention_ms = int(-1)?,
                "retention.bytes" => c.retention_bytes = int(-1)?,
                "segment.bytes" => c.segment_bytes = int(14)?,
                "segment.ms" => c.segment_ms = int(1)?,
                "max.message.bytes" => c.message_bytes_max = int(0)?,
                "flush.messages" => c.flush_messages = int(1)?,
                "flush.ms" => c.flush_ms = int(0)?,
                "min.insync.replicas" => c.min_insync_replicas = int(1)?.min(i64::from(i32::MAX)) as i32,
                "message.timestamp.before.max.ms" => c.timestamp_before_max_ms = int(0)?,
                "message.timestamp.after.max.ms" => c.timestamp_after_max_ms = int(0)?,
                "message.timestamp.type" => {
                    c.timestamp_type = match value.as_str() {
                        "CreateTime" => TimestampType::CreateTime,
                        "LogAppendTime" => TimestampType::LogAppendTime,
                        _ => return Err(bad("expected CreateTime or LogAppendTime")),
                    }
                }
                "cleanup.policy" => match value.as_str() {
                    "delete" => c.cleanup_policy = value.clone(),
                    "compact" if internal => c.cleanup_policy = value.clone(),
                    "compact" | "compact,delete" | "delete,compact" => {
                        return Err(bad("log compaction is not supported yet"))
                    }
                    _ => return Err(bad("expected delete")),
                },
                "compression.type" => match value.as_str() {
                    "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd" => {
                        c.compression_type = value.clone()
                    }
                    _ => return Err(bad("expected producer, uncompressed, gzip, snappy, lz4 or zstd")),
                },
                _ => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidConfig,
                        format!("unknown topic config {key}"),
                    ))
                }
            }
        }
        Ok(c)
    }

    /// The effective value of a config in [`TOPIC_CONFIGS`], as text.
    pub fn value(&self, key: &str) -> Option<String> {
        Some(match key {
            "cleanup.policy" => self.cleanup_policy.clone(),
            "compression.type" => self.compression_type.clone(),
            "max.message.bytes" => self.message_bytes_max.to_string(),
            "flush.messages" => self.flush_messages.to_string(),
            "flush.ms" => self.flush_ms.to_string(),
            "message.timestamp.type" => match self.timestamp_type {
                TimestampType::CreateTime => "CreateTime".into(),
                TimestampType::LogAppendTime => "LogAppendTime".into(),
            },
            "message.timestamp.before.max.ms" => self.timestamp_before_max_ms.to_string(),
            "message.timestamp.after.max.ms" => self.timestamp_after_max_ms.to_string(),
            "min.insync.replicas" => self.min_insync_replicas.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            _ => return None,
        })
    }

    fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes.max(14) as u64,
            segment_ms: Some(self.segment_ms),
            index_interval_bytes: 4096,
            // The batch limit is checked by the produce handler (it knows the error code);
            // the log refuses only what could never be stored.
            batch_bytes_max: i32::MAX as usize,
            flush_messages: self.flush_messages,
        }
    }
}

/// What a partition's lock guards: the log and the producer state that must change with it.
#[derive(Debug)]
pub struct PartitionState {
    pub log: Log,
    pub producers: ProducerStates,
}

/// One partition: its log and its replication state.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub leader_epoch: i32,
    state: Mutex<PartitionState>,
    high_watermark: AtomicI64,
    /// fsyncs of the log, shared by concurrent appends (`flush.messages`, `flush.ms`).
    pub commit: GroupCommit,
    /// Set while rolled segments wait to be sealed (see `storage::Log::take_seal`).
    seal_pending: Arc<AtomicBool>,
    /// When a failed seal was last reported (ms since the epoch).
    seal_failure_reported_ms: AtomicI64,
    /// When a failed append or read was last logged (ms since the epoch).
    storage_error_reported_ms: AtomicI64,
    /// Bytes and records appended and fetched, for metrics.
    pub traffic: crate::metrics::Traffic,
}

impl Partition {
    /// The log and producer state, locked. Appends and reads are short file operations done
    /// under this lock.
    pub fn lock(&self) -> MutexGuard<'_, PartitionState> {
        // A panic while holding the lock leaves the log as consistent as any crash would;
        // keep serving rather than poisoning every later request.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks the leader epoch a client believes current (-1: it does not say).
    pub fn check_leader_epoch(&self, current: i32) -> Result<(), ErrorCode> {
        if current > self.leader_epoch {
            Err(ErrorCode::UnknownLeaderEpoch)
        } else if current >= 0 && current < self.leader_epoch {
            Err(ErrorCode::FencedLeaderEpoch)
        } else {
            Ok(())
        }
    }

    /// Whether a seal failure at `now_ms` should be logged: at most once a minute.
    pub fn should_report_seal_failure(&self, now_ms: i64) -> bool {
        let last = self.seal_failure_reported_ms.load(Ordering::Relaxed);
        now_ms.saturating_sub(last) >= 60_000
            && self
                .seal_failure_reported_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Logs a storage error of this partition (`what` failed: a write, a read), at most once
    /// a minute per partition so a full disk under load does not flood the log; metrics
    /// (`sluice_request_errors_total{error="KAFKA_STORAGE_ERROR"}`) count every one.
    pub fn report_storage_error(&self, what: &str, error: &dyn std::fmt::Display) {
        let now = crate::group::coordinator::now_ms();
        let last = self.storage_error_reported_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 60_000
            && self
                .storage_error_reported_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(topic = %self.topic, partition = self.index, dir = %format!("{}-{}", self.topic, self.index), error = %error, "{what} failed: clients get KAFKA_STORAGE_ERROR (CORRUPT_MESSAGE for damaged data) until it succeeds again; a full disk needs free space (logged at most once a minute per partition)");
        }
    }

    /// Whether rolled segments wait to be sealed.
    pub fn seal_pending(&self) -> bool {
        self.seal_pending.load(Ordering::Acquire)
    }

    /// Seals rolled segments: fsyncs them and writes their indexes, without holding the lock
    /// while fsyncing (blocking: call it off the async threads). A failed fsync of records
    /// fails the partition as a failed group fsync does.
    pub fn seal(&self) -> Result<(), StorageError> {
        let Some(work) = self.lock().log.take_seal() else {
            return Ok(());
        };
        if let Err(e) = work.run() {
            if e.data_lost {
                tracing::error!(topic = %self.topic, partition = self.index, error = %e.error, "fsync of a rolled segment failed: the partition takes no more writes until a restart");
                self.commit.fail();
            }
            return Err(e.error);
        }
        self.lock().log.sealed(work)
    }

    /// Returns once every record below `end_offset` is on disk (blocking: call it off the
    /// async threads). Concurrent callers share fsyncs.
    pub fn sync_to(&self, end_offset: i64) -> Result<(), StorageError> {
        self.commit.sync_to(end_offset, crate::group::coordinator::now_ms, || {
            self.lock().log.sync_target()
        })
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// The log was cut back to `end` while opening (damage stepped over by cutting, see
    /// `storage::Log::skip_damaged`), before anything was served: the high watermark and
    /// what counts as durable follow it down. Call with the partition's lock held.
    pub fn log_cut_to(&self, end: i64) {
        self.high_watermark.fetch_min(end, Ordering::AcqRel);
        self.commit.truncated_to(end);
    }

    /// Single node: everything appended is replicated to the whole ISR (this node).
    pub fn advance_high_watermark(&self, log_end: i64) {
        let prev = self.high_watermark.fetch_max(log_end, Ordering::AcqRel);
        assert!(prev <= log_end, "the high watermark never passes the log end");
    }
}

#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    pub partitions: Vec<Arc<Partition>>,
    pub config: TopicConfig,
    pub overrides: BTreeMap<String, String>,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index).ok().and_then(|i| self.partitions.get(i))
    }
}

#[derive(Serialize, Deserialize)]
struct TopicRecord {
    name: String,
    id: String,
    partitions: i32,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

#[derive(Default)]
struct Inner {
    by_name: HashMap<String, Arc<Topic>>,
    by_id: HashMap<Uuid, Arc<Topic>>,
}

pub struct Topics {
    /// Producer state read from the snapshot of a clean shutdown, by partition directory name,
    /// with the log end it was taken at; consumed as the partitions open.
    restored: Mutex<HashMap<String, ProducerSnapshot>>,
    dir: PathBuf,
    /// Every partition's files go through this one file system, which bounds open descriptors.
    fs: Arc<dyn storage::Fs>,
    defaults: RwLock<TopicDefaults>,
    inner: RwLock<Inner>,
    /// Serializes creations and deletions (and their writes of topics.json).
    changes: Mutex<()>,
}

/// Kafka's topic name rule: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        Err(ApiError::new(
            ErrorCode::InvalidTopicException,
            format!("topic name {name:?} {why}"),
        ))
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name == "." || name == ".." {
        return bad("cannot be \".\" or \"..\"");
    }
    if name.len() > 249 {
        return bad("is longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("may contain only ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// Names that differ only in '.' versus '_' collide in metric names, so Kafka refuses both.
fn collision_key(name: &str) -> String {
    name.replace('.', "_")
}

fn parse_uuid(s: &str) -> Option<Uuid> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(Uuid(id))
}

/// The most partitions a topic may have: a bound on what CreateTopics and CreatePartitions
/// ask for, and on a count read from `topics.json`.
pub const PARTITIONS_MAX: i32 = 1_000_000;

/// Checks every entry of `topics.json` (at `path`) as CreateTopics would: name, partition
/// count, id, and no two entries alike. Returns each entry's id.
fn check_records(path: &Path, records: &[TopicRecord]) -> Result<Vec<Uuid>, String> {
    let mut ids = Vec::with_capacity(records.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut seen_ids: HashMap<Uuid, usize> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        let bad = |why: String| {
            format!(
                "{}: entry {i} (topic {:?}) {why}; fix or remove that entry (or restore the file from a backup)",
                path.display(),
                r.name
            )
        };
        if !is_internal(&r.name) {
            validate_topic_name(&r.name).map_err(|e| bad(e.message))?;
        }
        if !(1..=PARTITIONS_MAX).contains(&r.partitions) {
            return Err(bad(format!(
                "has {} partitions: the count must be 1 to {PARTITIONS_MAX}",
                r.partitions
            )));
        }
        let id = parse_uuid(&r.id).ok_or_else(|| bad(format!("has a bad topic id {:?}", r.id)))?;
        if let Some(j) = names.insert(collision_key(&r.name), i) {
            return Err(bad(format!("collides with entry {j} (topic {:?})", records[j].name)));
        }
        if let Some(j) = seen_ids.insert(id, i) {
            return Err(bad(format!(
                "has the same id as entry {j} (topic {:?})",
                records[j].name
            )));
        }
        ids.push(id);
    }
    Ok(ids)
}

/// Names of the partition directories (`<topic>-<n>`) in the data directory `dir`.
fn partition_dirs(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| {
            name.rsplit_once('-').is_some_and(|(topic, n)| {
                !n.is_empty()
                    && n.bytes().all(|b| b.is_ascii_digit())
                    && (is_internal(topic) || validate_topic_name(topic).is_ok())
            })
        })
        .collect();
    out.sort();
    out
}

/// Kafka's `partition.metadata` in each partition directory: the topic id the directory
/// belongs to, so a directory left by another topic of the same name is never served.
const PARTITION_METADATA: &str = "partition.metadata";

fn partition_metadata_text(id: &Uuid) -> String {
    format!("version: 0\ntopic_id: {}\n", meta::base64_url(&id.0))
}

/// Writes `partition.metadata` (temp file, rename). Not fsynced, so creating many partitions
/// costs no extra fsyncs: a file a crash leaves missing or empty is written again at the next
/// start (only a readable file naming another id moves a directory aside).
fn write_partition_metadata(path: &Path, id: &Uuid) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, partition_metadata_text(id))?;
    std::fs::rename(&tmp, path)
}

/// The topic id a `partition.metadata` names, or why it cannot be read.
fn parse_partition_metadata(text: &str) -> Result<String, String> {
    let mut lines = text.lines();
    match lines.next().map(str::trim) {
        Some("version: 0") => {}
        other => return Err(format!("unknown version line {other:?}")),
    }
    match lines.next().and_then(|l| l.trim().strip_prefix("topic_id:")) {
        Some(id) => Ok(id.trim().to_string()),
        None => Err("no topic_id line".into()),
    }
}

/// Moves a partition directory aside as `<dir>.<random hex>-stray` (Kafka's name for a log
/// it does not recognise). Returns the new path.
fn move_aside(dir: &Path) -> std::io::Result<PathBuf> {
    let suffix: String = meta::random_id().iter().map(|b| format!("{b:02x}")).collect();
    let mut name = dir.as_os_str().to_owned();
    name.push(format!(".{suffix}-stray"));
    let to = PathBuf::from(name);
    std::fs::rename(dir, &to)?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent).and_then(|d| d.sync_all())?;
    }
    Ok(to)
}

fn storage_error(e: StorageError) -> ApiError {
    ApiError::new(ErrorCode::KafkaStorageError, e.to_string())
}

impl Topics {
    /// Loads every topic in `topics.json` and opens its partitions' logs: trusting their
    /// indexes after a clean shutdown (`clean`), recovering them otherwise.
    pub fn open(dir: &Path, defaults: TopicDefaults, clean: bool, fs: Arc<dyn storage::Fs>) -> Result<Topics, String> {
        let topics = Topics {
            restored: Mutex::new(if clean {
                load_producer_state(dir)
            } else {
                HashMap::new()
            }),
            dir: dir.to_path_buf(),
            fs,
            defaults: RwLock::new(defaults),
            inner: RwLock::default(),
            changes: Mutex::new(()),
        };
        let path = dir.join("topics.json");
        let records: Vec<TopicRecord> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{} is corrupt: {e}; restore it from a backup (each partition directory's partition.metadata names its topic id)",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Starting empty would hide every record, and a topic created again under an
                // old name would serve the old records: refuse instead.
                let found = partition_dirs(dir);
                if !found.is_empty() {
                    let shown: Vec<&str> = found.iter().take(5).map(String::as_str).collect();
                    return Err(format!(
                        "{} is missing, but {} holds {} partition director{} ({}{}): the topic list was lost. Restore topics.json from a backup, or move those directories out of the data directory to start without them",
                        path.display(),
                        dir.display(),
                        found.len(),
                        if found.len() == 1 { "y" } else { "ies" },
                        shown.join(", "),
                        if found.len() > shown.len() { ", ..." } else { "" },
                    ));
                }
                // A new data directory: written now, so that a crash while the first topic is
                // created leaves a topic list (without it) rather than directories and no list.
                if let Err(e) = meta::write_atomically(&path, b"[]") {
                    tracing::warn!(error = %e, "cannot write an empty {}; written with the first topic", path.display());
                }
                vec![]
            }
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let checked = check_records(&path, &records)?;
        for (r, id) in records.into_iter().zip(checked) {
            let topic = topics
                .materialize(&r.name, id, r.partitions, r.configs, clean, false)
                .map_err(|e| format!("cannot open topic {}: {}", r.name, e.message))?;
            topics.insert(topic);
        }
        // Directories of no topic in topics.json are not served; a topic created under that
        // name moves its directory aside first.
        let known: std::collections::HashSet<String> = topics
            .list()
            .iter()
            .flat_map(|t| (0..t.partitions.len()).map(move |i| format!("{}-{i}", t.name)))
            .collect();
        let unknown: Vec<String> = partition_dirs(dir).into_iter().filter(|d| !known.contains(d)).collect();
        if !unknown.is_empty() {
            tracing::warn!(dirs = ?unknown, "partition directories of no topic in {}: not served; a topic created under such a name moves its directory aside first", path.display());
        }
        topics.restored.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(topics)
    }

    /// Writes every partition's producer state, with the log end it matches, to one file, so
    /// that the next start after this clean shutdown need not read every batch header. Call
    /// it after the logs are synced and before the clean-shutdown marker; a missing or damaged
    /// file only means the next start scans the logs.
    pub fn save_producer_state(&self) -> Result<(), String> {
        let mut all = HashMap::new();
        for topic in self.list() {
            for p in &topic.partitions {
                let state = p.lock();
                let snapshot = ProducerSnapshot {
                    end: state.log.log_end_offset(),
                    state: state.producers.clone(),
                };
                all.insert(format!("{}-{}", p.topic, p.index), snapshot);
            }
        }
        let file = ProducerStateFile {
            format: PRODUCER_STATE_FORMAT,
            partitions: all,
        };
        let path = self.dir.join(PRODUCER_STATE_FILE);
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(&file).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    fn materialize(
        &self,
        name: &str,
        id: Uuid,
        partitions: i32,
        overrides: BTreeMap<String, String>,
        clean: bool,
        fresh: bool,
    ) -> Result<Topic, ApiError> {
        let config = TopicConfig::resolve(&self.defaults().configs, &overrides, is_internal(name))?;
        let parts = match (0..partitions)
            .map(|index| self.open_partition(name, id, index, &config, clean, fresh))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(parts) => parts,
            Err(e) => {
                if fresh {
                    // A topic that could not be created leaves nothing behind (a full disk
                    // must not leave half a topic for the next start to find).
                    self.remove_new_dirs(name, 0..partitions);
                }
                return Err(e);
            }
        };
        Ok(Topic {
            name: name.to_string(),
            id,
            partitions: parts,
            config,
            overrides,
        })
    }

    /// Removes the directories of partitions `range` of `name`, created by a creation that
    /// failed.
    fn remove_new_dirs(&self, name: &str, range: std::ops::Range<i32>) {
        for index in range {
            let dir = self.partition_dir(name, index);
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove the directory of a partition that failed to be created")
                }
                _ => {}
            }
        }
    }

    /// Opens partition `index` of topic `name` (id `id`). `fresh`: the partition is being
    /// created, so a directory already at its path belongs to an earlier topic of that name
    /// and is moved aside first; otherwise the directory's `partition.metadata` must name
    /// `id` (a directory of another topic is moved aside, and the partition starts empty).
    fn open_partition(
        &self,
        name: &str,
        id: Uuid,
        index: i32,
        config: &TopicConfig,
        clean: bool,
        fresh: bool,
    ) -> Result<Arc<Partition>, ApiError> {
        let dir = self.partition_dir(name, index);
        let metadata = dir.join(PARTITION_METADATA);
        let expected = meta::base64_url(&id.0);
        let aside_failed = |e: std::io::Error| {
            ApiError::new(
                ErrorCode::KafkaStorageError,
                format!("cannot move {} aside: {e}", dir.display()),
            )
        };
        if fresh {
            if std::fs::symlink_metadata(&dir).is_ok() {
                let to = move_aside(&dir).map_err(aside_failed)?;
                tracing::warn!(dir = %dir.display(), moved_to = %to.display(), "a directory of an earlier topic named {name} was on disk: moved aside so its records never come back; delete it once you have checked it");
            }
        } else {
            match std::fs::read_to_string(&metadata) {
                Ok(text) => {
                    let why = match parse_partition_metadata(&text) {
                        Ok(found) if found == expected => None,
                        Ok(found) => Some(format!(
                            "names topic id {found}, but topics.json gives {name} the id {expected}"
                        )),
                        // Not evidence of another topic (it is written without an fsync, so a
                        // crash can leave it empty): written again below.
                        Err(e) => {
                            tracing::warn!(file = %metadata.display(), error = %e, "unreadable; written again");
                            let _ = std::fs::remove_file(&metadata);
                            None
                        }
                    };
                    if let Some(why) = why {
                        let to = move_aside(&dir).map_err(aside_failed)?;
                        tracing::error!(file = %metadata.display(), moved_to = %to.display(), "{} {why}: the directory belongs to another topic; moved aside and not served, {name}-{index} starts empty; check it, then delete it or restore the matching topics.json", metadata.display());
                    }
                }
                // Written below: directories from before partition.metadata, or a new one.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(ApiError::new(
                        ErrorCode::KafkaStorageError,
                        format!("cannot read {}: {e}", metadata.display()),
                    ))
                }
            }
        }
        if !fresh && std::fs::symlink_metadata(&dir).is_err() {
            tracing::error!(dir = %dir.display(), "partition directory of {name}-{index} (in topics.json) is missing: the partition starts empty, its records are lost; restore the directory from a backup (with the broker stopped) to bring them back");
        }
        let log = Log::open_on(&self.fs, &dir, config.log_config(), clean).map_err(storage_error)?;
        if fresh || !metadata.exists() {
            if let Err(e) = write_partition_metadata(&metadata, &id) {
                if fresh {
                    return Err(ApiError::new(
                        ErrorCode::KafkaStorageError,
                        format!("cannot write {}: {e}", metadata.display()),
                    ));
                }
                tracing::warn!(error = %e, "cannot write {}: it is written at a later start", metadata.display());
            }
        }
        // Producer state: as saved at a clean shutdown when it matches the log, else rebuilt
        // from the batch headers still in the log.
        let saved = self
            .restored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&format!("{name}-{index}"))
            .filter(|s| s.end == log.log_end_offset());
        let producers = match saved {
            Some(mut s) => {
                s.state.sanitize();
                s.state
            }
            None => {
                let mut producers = ProducerStates::default();
                log.for_each_batch(|b| {
                    if b.producer_id >= 0 {
                        let delta = (b.last_offset - b.base_offset) as i32;
                        let batch = ProducerBatch::new(b.producer_id, b.producer_epoch, b.base_sequence, delta);
                        producers.record(&batch, b.base_offset);
                    }
                })
                .map_err(storage_error)?;
                producers
            }
        };
        let end = log.log_end_offset();
        let seal_pending = log.seal_pending();
        Ok(Arc::new(Partition {
            seal_pending,
            seal_failure_reported_ms: AtomicI64::new(i64::MIN),
            storage_error_reported_ms: AtomicI64::new(i64::MIN),
            traffic: Default::default(),
            topic: name.to_string(),
            index,
            leader_epoch: 0,
            state: Mutex::new(PartitionState { log, producers }),
            high_watermark: AtomicI64::new(end),
            // `Log::open` synced what it found.
            commit: GroupCommit::new(end, crate::group::coordinator::now_ms()),
        }))
    }

    fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.dir.join(format!("{topic}-{index}"))
    }

    fn insert(&self, topic: Topic) -> Arc<Topic> {
        let topic = Arc::new(topic);
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.by_name.insert(topic.name.clone(), topic.clone());
        inner.by_id.insert(topic.id, topic.clone());
        topic
    }

    pub fn defaults(&self) -> TopicDefaults {
        self.defaults.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the broker-level topic config defaults (a dynamic broker config changed): every
    /// topic is resolved again, and the change is refused whole if any topic would be invalid.
    /// Logs take their new settings from their next append.
    pub fn set_config_defaults(&self, configs: BTreeMap<String, String>, validate_only: bool) -> Result<(), ApiError> {
        let _serial = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let mut resolved = vec![];
        for topic in self.list() {
            let config = TopicConfig::resolve(&configs, &topic.overrides, is_internal(&topic.name))?;
            resolved.push((topic, config));
        }
        if validate_only {
            return Ok(());
        }
        self.defaults.write().unwrap_or_else(|p| p.into_inner()).configs = configs;
        for (topic, config) in resolved {
            for p in &topic.partitions {
                p.lock().log.set_config(config.log_config());
            }
            self.insert(Topic {
                name: topic.name.clone(),
                id: topic.id,
                partitions: topic.partitions.clone(),
                config,
                overrides: topic.overrides.clone(),
            });
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_name
            .get(name)
            .cloned()
    }

    pub fn get_by_id(&self, id: &Uuid) -> Option<Arc<Topic>> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .get(id)
            .cloned()
    }

    /// Every topic, sorted by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self
            .inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_name
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    fn persist(&self) -> Result<(), ApiError> {
        let records: Vec<TopicRecord> = self
            .list()
            .iter()
            .map(|t| TopicRecord {
                name: t.name.clone(),
                id: t.id.to_string(),
                partitions: t.partitions.len() as i32,
                configs: t.overrides.clone(),
            })
            .collect();
        let json = serde_json::to_vec_pretty(&records)
            .map_err(|e| ApiError::new(ErrorCode::UnknownServerError, e.to_string()))?;
        meta::write_atomically(&self.dir.join("topics.json"), &json)
            .map_err(|e| ApiError::new(ErrorCode::KafkaStorageError, e.to_string()))
    }

    /// Checks a creation request (`validate_only` stops here): name, partitions, replication
    /// factor against this single node, configs, and collisions with existing topics.
    pub fn check_create(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        overrides: &BTreeMap<String, String>,
    ) -> Result<(i32, i16), ApiError> {
        validate_topic_name(name)?;
        let partitions = if partitions == -1 {
            self.defaults().num_partitions
        } else {
            partitions
        };
        if !(1..=PARTITIONS_MAX).contains(&partitions) {
            return Err(ApiError::new(
                ErrorCode::InvalidPartitions,
                format!("the number of partitions must be 1 to {PARTITIONS_MAX}"),
            ));
        }
        self.check_partition_limits(partitions as usize)?;
        let replication_factor = if replication_factor == -1 {
            1
        } else {
            replication_factor
        };
        if replication_factor < 1 {
            return Err(ApiError::new(
                ErrorCode::InvalidReplicationFactor,
                "replication factor must be at least 1",
            ));
        }
        if replication_factor > 1 {
            return Err(ApiError::new(
                ErrorCode::InvalidReplicationFactor,
                format!("replication factor {replication_factor} is larger than the 1 available broker"),
            ));
        }
        TopicConfig::resolve(&self.defaults().configs, overrides, false)?;
        if self.get(name).is_some() {
            return Err(ApiError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic {name} already exists"),
            ));
        }
        if is_internal(name) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("{name} is an internal topic; the broker creates it when it is needed"),
            ));
        }
        let key = collision_key(name);
        if let Some(other) = self.list().into_iter().find(|t| collision_key(&t.name) == key) {
            return Err(ApiError::new(
                ErrorCode::InvalidTopicException,
                format!(
                    "topic {name} collides with existing topic {} ('.' and '_' are interchangeable)",
                    other.name
                ),
            ));
        }
        Ok((partitions, replication_factor))
    }

    /// Partitions this broker holds, internal topics' included.
    pub fn partition_count(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_name
            .values()
            .map(|t| t.partitions.len())
            .sum()
    }

    /// Refuses `adding` partitions past `max.partitions.per.request` or `max.broker.partitions`,
    /// before anything is created. (The per-request budget over several topics is the handlers'.)
    pub fn check_partition_limits(&self, adding: usize) -> Result<(), ApiError> {
        let defaults = self.defaults();
        if adding > defaults.partitions_per_request_max {
            return Err(ApiError::new(
                ErrorCode::InvalidPartitions,
                format!(
                    "{adding} partitions is more than one request may create (max.partitions.per.request = {})",
                    defaults.partitions_per_request_max
                ),
            ));
        }
        let held = self.partition_count();
        if held.saturating_add(adding) > defaults.partitions_max {
            return Err(ApiError::new(
                ErrorCode::PolicyViolation,
                format!(
                    "{adding} more partitions would make {} on this broker, more than max.broker.partitions = {} \
                     (delete topics or raise the limit)",
                    held.saturating_add(adding),
                    defaults.partitions_max
                ),
            ));
        }
        Ok(())
    }

    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        overrides: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, ApiError> {
        let _serial = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let (partitions, _) = self.check_create(name, partitions, replication_factor, &overrides)?;
        let topic = self.materialize(name, Uuid(meta::random_id()), partitions, overrides, false, true)?;
        let topic = self.insert(topic);
        if let Err(e) = self.persist() {
            self.remove(name);
            drop(topic);
            self.remove_new_dirs(name, 0..partitions);
            return Err(e);
        }
        tracing::info!(topic = name, partitions, id = %topic.id, "topic created");
        Ok(topic)
    }

    /// Creates one of the broker's internal topics (no name checks, `compact` allowed), or
    /// returns it if it exists.
    pub fn create_internal(
        &self,
        name: &str,
        partitions: i32,
        overrides: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, ApiError> {
        debug_assert!(is_internal(name));
        let _serial = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = self.get(name) {
            return Ok(t);
        }
        let topic = self.materialize(name, Uuid(meta::random_id()), partitions, overrides, false, true)?;
        let topic = self.insert(topic);
        if let Err(e) = self.persist() {
            self.remove(name);
            drop(topic);
            self.remove_new_dirs(name, 0..partitions);
            return Err(e);
        }
        tracing::info!(topic = name, partitions, id = %topic.id, "internal topic created");
        Ok(topic)
    }

    /// A user topic that exists, for the calls that change one.
    fn changeable(&self, name: &str) -> Result<Arc<Topic>, ApiError> {
        let topic = self.get(name).ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {name} does not exist"),
            )
        })?;
        if is_internal(name) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("{name} is an internal topic and cannot be changed"),
            ));
        }
        Ok(topic)
    }

    /// Replaces a topic in memory and on disk; the old value comes back if the write fails.
    fn replace(&self, old: &Arc<Topic>, new: Topic) -> Result<Arc<Topic>, ApiError> {
        let new = self.insert(new);
        if let Err(e) = self.persist() {
            let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
            inner.by_name.insert(old.name.clone(), old.clone());
            inner.by_id.insert(old.id, old.clone());
            return Err(e);
        }
        Ok(new)
    }

    /// Sets a topic's config overrides to what `change` makes of the current ones (after
    /// checking them), atomically with respect to other changes. Logs take the new segment size
    /// from their next append.
    pub fn update_overrides(
        &self,
        name: &str,
        validate_only: bool,
        change: impl FnOnce(&Topic) -> Result<BTreeMap<String, String>, ApiError>,
    ) -> Result<(), ApiError> {
        let _serial = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let topic = self.changeable(name)?;
        let overrides = change(&topic)?;
        let config = TopicConfig::resolve(&self.defaults().configs, &overrides, false)?;
        if validate_only {
            return Ok(());
        }
        for p in &topic.partitions {
            p.lock().log.set_config(config.log_config());
        }
        let new = Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions: topic.partitions.clone(),
            config,
            overrides,
        };
        self.replace(&topic, new)?;
        tracing::info!(topic = name, "topic configs changed");
        Ok(())
    }

    /// CreatePartitions: grows a topic to `count` partitions. Partitions are never removed.
    pub fn add_partitions(&self, name: &str, count: i32, validate_only: bool) -> Result<(), ApiError> {
        let _serial = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let topic = self.changeable(name)?;
        let current = topic.partitions.len() as i32;
        if count == current {
            return Err(ApiError::new(
                ErrorCode::InvalidPartitions,
                format!("topic {name} already has {current} partitions"),
            ));
        }
        if count > PARTITIONS_MAX {
            return Err(ApiError::new(
                ErrorCode::InvalidPartitions,
                format!("a topic may have at most {PARTITIONS_MAX} partitions"),
            ));
        }
        if count < current {
            return Err(ApiError::new(
                ErrorCode::InvalidPartitions,
                format!("topic {name} has {current} partitions, more than the {count} asked for; partitions cannot be removed"),
            ));
        }
        self.check_partition_limits((count - current) as usize)?;
        if validate_only {
            return Ok(());
        }
        let mut partitions = topic.partitions.clone();
        for index in current..count {
            match self.open_partition(name, topic.id, index, &topic.config, false, true) {
                Ok(p) => partitions.push(p),
                Err(e) => {
                    self.remove_new_dirs(name, current..count);
                    return Err(e);
                }
            }
        }
        let new = Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions,
            config: topic.config.clone(),
            overrides: topic.overrides.clone(),
        };
        if let Err(e) = self.replace(&topic, new) {
            self.remove_new_dirs(name, current..count);
            return Err(e);
        }
        tracing::info!(topic = name, from = current, to = count, "partitions added");
        Ok(())
    }

    fn remove(&self, name: &str) -> Option<Arc<Topic>> {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let topic = inner.by_name.remove(name)?;
        inner.by_id.remove(&topic.id);
        Some(topic)
    }

    /// Applies each topic's retention (`retention.ms`, `retention.bytes`) to its partitions.
    /// Returns how many segments were deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> usize {
        let mut deleted = 0;
        for topic in self.list() {
            let c = &topic.config;
            if c.cleanup_policy != "delete" {
                // Compacted (internal) topics are trimmed by their owner, never by age or size.
                continue;
            }
            let ms = (c.retention_ms >= 0).then_some(c.retention_ms);
            let bytes = (c.retention_bytes >= 0).then_some(c.retention_bytes as u64);
            if ms.is_none() && bytes.is_none() {
                continue;
            }
            for p in &topic.partitions {
                match p.lock().log.enforce_retention(now_ms, p.high_watermark(), ms, bytes) {
                    Ok(n) => deleted += n,
                    Err(e) => tracing::warn!(topic = %topic.name, partition = p.index, error = %e, "retention failed"),
                }
            }
        }
        deleted
    }

    /// Fsyncs every partition's log and writes its index (at shutdown, before the clean
    /// shutdown marker). Returns the first failure, after trying all.
    pub fn sync_all(&self) -> Result<(), StorageError> {
        let mut first_error = None;
        for topic in self.list() {
            for p in &topic.partitions {
                if p.commit.failed() {
                    first_error.get_or_insert(StorageError::Failed);
                    continue;
                }
                if let Err(e) = p.lock().log.sync() {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Deletes a topic: it disappears from metadata at once, then its files are removed.
    pub fn delete(&self, name: &str) -> Result<Arc<Topic>, ApiError> {
        if is_internal(name) && self.get(name).is_some() {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("{name} is an internal topic and cannot be deleted"),
            ));
        }
        let _serial = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let topic = self.remove(name).ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {name} does not exist"),
            )
        })?;
        self.persist()?;
        for p in &topic.partitions {
            let dir = self.partition_dir(name, p.index);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove a deleted topic's files");
            }
        }
        tracing::info!(topic = name, "topic deleted");
        Ok(topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rules() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
        for bad in ["", ".", "..", "has space", "ü", &"a".repeat(250)] {
            assert_eq!(
                validate_topic_name(bad).unwrap_err().code,
                ErrorCode::InvalidTopicException,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn topics_json_entries_are_checked_like_create_topics() {
        let path = Path::new("/data/topics.json");
        let entry = |name: &str, partitions: i32| TopicRecord {
            name: name.into(),
            id: Uuid(meta::random_id()).to_string(),
            partitions,
            configs: BTreeMap::new(),
        };
        assert!(check_records(path, &[entry("a", 1), entry(CONSUMER_OFFSETS, 50)]).is_ok());
        for (records, says) in [
            (vec![entry("../../etc", 1)], "../../etc"),
            (vec![entry("a", 0)], "0 partitions"),
            (vec![entry("a", PARTITIONS_MAX + 1)], "1000001 partitions"),
            (vec![entry("a.b", 1), entry("a_b", 1)], "collides"),
        ] {
            let e = check_records(path, &records).unwrap_err();
            assert!(e.contains("topics.json") && e.contains(says), "{e}");
        }
    }

    #[test]
    fn partition_metadata_is_kafkas_format() {
        let id = Uuid([0xfb; 16]);
        let text = partition_metadata_text(&id);
        assert!(text.starts_with("version: 0\ntopic_id: "), "{text}");
        assert_eq!(parse_partition_metadata(&text), Ok(meta::base64_url(&id.0)));
        assert!(parse_partition_metadata("").is_err());
    }

    #[test]
    fn uuids_round_trip_through_text() {
        let id = Uuid(meta::random_id());
        assert_eq!(parse_uuid(&id.to_string()), Some(id));
        assert_eq!(parse_uuid("nope"), None);
    }
}

/// `<data dir>/producer-state.json`: every partition's producer state at a clean shutdown.
const PRODUCER_STATE_FILE: &str = "producer-state.json";
const PRODUCER_STATE_FORMAT: u32 = 1;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ProducerStateFile {
    format: u32,
    partitions: HashMap<String, ProducerSnapshot>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ProducerSnapshot {
    /// The log end offset the state was taken at: it is used only for a log that ends there.
    end: i64,
    state: ProducerStates,
}

/// Reads (and removes, so that it is never used twice) the producer state snapshot; empty when
/// there is none or it cannot be read.
fn load_producer_state(dir: &Path) -> HashMap<String, ProducerSnapshot> {
    let path = dir.join(PRODUCER_STATE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the producer state snapshot; scanning the logs instead");
            return HashMap::new();
        }
    };
    let _ = std::fs::remove_file(&path);
    match serde_json::from_slice::<ProducerStateFile>(&bytes) {
        Ok(f) if f.format == PRODUCER_STATE_FORMAT => f.partitions,
        Ok(f) => {
            tracing::warn!(
                format = f.format,
                "unknown producer state snapshot format; scanning the logs instead"
            );
            HashMap::new()
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "damaged producer state snapshot; scanning the logs instead");
            HashMap::new()
        }
    }
}
