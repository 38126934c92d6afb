//! Topics and partitions on this node: creation with Kafka's name rules and per-topic configs,
//! deletion, lookup by name or id, and the partition state handlers use (log, leader epoch,
//! high watermark). Every change is committed to the metadata log (`crate::metadata_log`)
//! before it is made, and the topics opened at start are the image's; each partition's log
//! lives in `<data dir>/<topic>-<partition>/`, its `partition.metadata` naming the topic id.
//!
//! Single node for now: this node leads every partition and is its only in-sync replica, so
//! the high watermark follows the log end. The shape (epoch, high watermark beside the log)
//! is what replication will extend.

use crate::config::TopicDefaults;
use crate::meta;
use crate::metadata_log::{CommitError, MetadataLog};
use crate::producers::{ProducerBatch, ProducerStates};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use storage::{Log, LogConfig, StorageError};
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
    pub const BOOLEAN: i8 = 1;
    pub const STRING: i8 = 2;
    pub const INT: i8 = 3;
    pub const SHORT: i8 = 4;
    pub const LONG: i8 = 5;
    pub const DOUBLE: i8 = 6;
    pub const LIST: i8 = 7;
    pub const CLASS: i8 = 8;
    pub const PASSWORD: i8 = 9;
}

/// How a topic config's value is checked, after it parsed as its type (Kafka's validators).
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// Any value of the type.
    Any,
    /// A whole number at least this.
    AtLeast(i64),
    /// A number in this closed range.
    Between(f64, f64),
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// `cleanup.policy`: a list of `delete` and `compact` (only `delete` until compaction lands).
    CleanupPolicy,
    /// `*.replication.throttled.replicas`: `*`, or `partition:broker` pairs.
    ThrottledReplicas,
    /// `compression.gzip.level`: 1 to 9, or -1 (zlib's default).
    GzipLevel,
}

/// One topic config as Kafka 4.0's `LogConfig` defines it.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    pub name: &'static str,
    /// The broker setting that supplies its default (Kafka's primary synonym), if any.
    pub synonym: Option<&'static str>,
    /// A [`config_type`] code.
    pub kind: i8,
    /// Kafka's default, as DescribeConfigs reports it.
    pub default: &'static str,
    pub check: Check,
    /// Whether Sluice acts on it; the others are checked, stored and reported only.
    pub effect: bool,
    pub doc: &'static str,
}

const fn def(
    name: &'static str,
    synonym: Option<&'static str>,
    kind: i8,
    default: &'static str,
    check: Check,
    effect: bool,
    doc: &'static str,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        synonym,
        kind,
        default,
        check,
        effect,
        doc,
    }
}

const LONG_MAX: &str = "9223372036854775807";

/// Every topic config of Kafka 4.0 (`TopicConfig` / `LogConfig`), sorted by name: the one
/// table of topic configs. `effect: false` ones are accepted, validated, kept in the metadata
/// log and reported, but change nothing yet.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = {
    use config_type::*;
    use Check::*;
    &[
        def(
            "cleanup.policy",
            Some("log.cleanup.policy"),
            LIST,
            "delete",
            CleanupPolicy,
            true,
            "delete (compaction is not supported yet)",
        ),
        def(
            "compression.gzip.level",
            Some("compression.gzip.level"),
            INT,
            "-1",
            GzipLevel,
            false,
            "gzip level when compression.type is gzip (Sluice recompresses at its codec's default level)",
        ),
        def(
            "compression.lz4.level",
            Some("compression.lz4.level"),
            INT,
            "9",
            Between(1.0, 17.0),
            false,
            "lz4 level when compression.type is lz4 (Sluice recompresses at its codec's default level)",
        ),
        def(
            "compression.type",
            Some("compression.type"),
            STRING,
            "producer",
            OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
            true,
            "producer, uncompressed, gzip, snappy, lz4 or zstd",
        ),
        def(
            "compression.zstd.level",
            Some("compression.zstd.level"),
            INT,
            "3",
            Between(-131072.0, 22.0),
            false,
            "zstd level when compression.type is zstd (Sluice recompresses at its codec's default level)",
        ),
        def(
            "delete.retention.ms",
            Some("log.cleaner.delete.retention.ms"),
            LONG,
            "86400000",
            AtLeast(0),
            false,
            "how long delete tombstones are kept in a compacted topic (no compaction yet)",
        ),
        def(
            "file.delete.delay.ms",
            Some("log.segment.delete.delay.ms"),
            LONG,
            "60000",
            AtLeast(0),
            false,
            "wait before deleting a file from disk (Sluice deletes in the background at once)",
        ),
        def(
            "flush.messages",
            Some("log.flush.interval.messages"),
            LONG,
            LONG_MAX,
            AtLeast(1),
            true,
            "fsync after this many unflushed records; 1: every acknowledged write is on disk first",
        ),
        def(
            "flush.ms",
            Some("log.flush.interval.ms"),
            LONG,
            LONG_MAX,
            AtLeast(0),
            true,
            "fsync when the last one is this old and records are waiting",
        ),
        def(
            "follower.replication.throttled.replicas",
            None,
            LIST,
            "",
            ThrottledReplicas,
            false,
            "replicas throttled on the follower side (single node: no replication)",
        ),
        def(
            "index.interval.bytes",
            Some("log.index.interval.bytes"),
            INT,
            "4096",
            AtLeast(0),
            true,
            "bytes between offset index entries (from the next segment)",
        ),
        def(
            "leader.replication.throttled.replicas",
            None,
            LIST,
            "",
            ThrottledReplicas,
            false,
            "replicas throttled on the leader side (single node: no replication)",
        ),
        def(
            "local.retention.bytes",
            Some("log.local.retention.bytes"),
            LONG,
            "-2",
            AtLeast(-2),
            false,
            "bytes kept locally with tiered storage; -2: retention.bytes (no tiered storage)",
        ),
        def(
            "local.retention.ms",
            Some("log.local.retention.ms"),
            LONG,
            "-2",
            AtLeast(-2),
            false,
            "time kept locally with tiered storage; -2: retention.ms (no tiered storage)",
        ),
        def(
            "max.compaction.lag.ms",
            Some("log.cleaner.max.compaction.lag.ms"),
            LONG,
            LONG_MAX,
            AtLeast(1),
            false,
            "longest a record stays uncompacted (no compaction yet)",
        ),
        def(
            "max.message.bytes",
            Some("message.max.bytes"),
            INT,
            "1048588",
            AtLeast(0),
            true,
            "largest record batch accepted",
        ),
        def(
            "message.timestamp.after.max.ms",
            Some("log.message.timestamp.after.max.ms"),
            LONG,
            "3600000",
            AtLeast(0),
            true,
            "how far ahead of the broker's clock a CreateTime timestamp may be",
        ),
        def(
            "message.timestamp.before.max.ms",
            Some("log.message.timestamp.before.max.ms"),
            LONG,
            LONG_MAX,
            AtLeast(0),
            true,
            "how far behind the broker's clock a CreateTime timestamp may be",
        ),
        def(
            "message.timestamp.type",
            Some("log.message.timestamp.type"),
            STRING,
            "CreateTime",
            OneOf(&["CreateTime", "LogAppendTime"]),
            true,
            "CreateTime or LogAppendTime",
        ),
        def(
            "min.cleanable.dirty.ratio",
            Some("log.cleaner.min.cleanable.ratio"),
            DOUBLE,
            "0.5",
            Between(0.0, 1.0),
            false,
            "dirty share of a log that makes it eligible for compaction (no compaction yet)",
        ),
        def(
            "min.compaction.lag.ms",
            Some("log.cleaner.min.compaction.lag.ms"),
            LONG,
            "0",
            AtLeast(0),
            false,
            "shortest a record stays uncompacted (no compaction yet)",
        ),
        def(
            "min.insync.replicas",
            Some("min.insync.replicas"),
            INT,
            "1",
            AtLeast(1),
            true,
            "replicas that must acknowledge acks=all",
        ),
        def(
            "preallocate",
            Some("log.preallocate"),
            BOOLEAN,
            "false",
            Any,
            false,
            "preallocate segment files (Sluice never does)",
        ),
        def(
            "remote.log.copy.disable",
            None,
            BOOLEAN,
            "false",
            Any,
            false,
            "stop copying to tiered storage (no tiered storage)",
        ),
        def(
            "remote.log.delete.on.disable",
            None,
            BOOLEAN,
            "false",
            Any,
            false,
            "delete tiered data when tiered storage is turned off (no tiered storage)",
        ),
        def(
            "remote.storage.enable",
            None,
            BOOLEAN,
            "false",
            Any,
            false,
            "tiered storage; true is refused, as by a Kafka broker without remote.log.storage.system.enable",
        ),
        def(
            "retention.bytes",
            Some("log.retention.bytes"),
            LONG,
            "-1",
            Any,
            true,
            "bytes kept per partition; -1 no limit",
        ),
        def(
            "retention.ms",
            Some("log.retention.ms"),
            LONG,
            "604800000",
            AtLeast(-1),
            true,
            "how long records are kept; -1 forever",
        ),
        def(
            "segment.bytes",
            Some("log.segment.bytes"),
            INT,
            "1073741824",
            AtLeast(14),
            true,
            "segment size before a new one is rolled",
        ),
        def(
            "segment.index.bytes",
            Some("log.index.size.max.bytes"),
            INT,
            "10485760",
            AtLeast(4),
            false,
            "largest offset index file (Sluice's index grows as needed)",
        ),
        def(
            "segment.jitter.ms",
            Some("log.roll.jitter.ms"),
            LONG,
            "0",
            AtLeast(0),
            false,
            "random jitter subtracted from segment.ms (Sluice rolls at segment.ms)",
        ),
        def(
            "segment.ms",
            Some("log.roll.ms"),
            LONG,
            "604800000",
            AtLeast(1),
            true,
            "roll a new segment after this long, so retention can delete the old one",
        ),
        def(
            "unclean.leader.election.enable",
            Some("unclean.leader.election.enable"),
            BOOLEAN,
            "false",
            Any,
            false,
            "elect an out-of-sync replica as a last resort (single node: no elections)",
        ),
    ]
};

/// Topic configs Kafka 4.0 removed. Tools written for Kafka 3.x still set them (the issue that
/// asked for them names `message.format.version`), so they are accepted and ignored — neither
/// acted on nor reported — rather than failing the whole request; what replaces each is here.
const REMOVED_TOPIC_CONFIGS: &[(&str, &str)] = &[
    (
        "message.downconversion.enable",
        "removed in Kafka 4.0 with fetch versions below 4 (KIP-896)",
    ),
    (
        "message.format.version",
        "removed in Kafka 4.0: every batch is format v2 (KIP-724)",
    ),
    (
        "message.timestamp.difference.max.ms",
        "removed in Kafka 4.0: use message.timestamp.before.max.ms and message.timestamp.after.max.ms (KIP-937)",
    ),
];

/// The definition of a topic config.
pub fn topic_config(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// A Java `Double.toString`, as Kafka reports doubles: `0.5`, `1.0`, `1.0E-4`.
pub fn java_double(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 || (1e-3..1e7).contains(&a) {
        return format!("{v:?}");
    }
    let s = format!("{v:e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let mantissa = if mantissa.contains('.') {
        mantissa.to_string()
    } else {
        format!("{mantissa}.0")
    };
    format!("{mantissa}E{exp}")
}

/// Parses `value` as a config of `kind` the way Kafka's `ConfigDef` does, and checks it; the
/// canonical text Kafka reports for it, or the reason it is refused.
pub fn parse_config_value(kind: i8, value: &str) -> Result<String, String> {
    let v = value.trim();
    Ok(match kind {
        config_type::BOOLEAN => {
            if v.eq_ignore_ascii_case("true") {
                "true".into()
            } else if v.eq_ignore_ascii_case("false") {
                "false".into()
            } else {
                return Err("Expected value to be either true or false".into());
            }
        }
        config_type::INT => v
            .parse::<i32>()
            .map_err(|_| "Not a number of type INT".to_string())?
            .to_string(),
        config_type::SHORT => v
            .parse::<i16>()
            .map_err(|_| "Not a number of type SHORT".to_string())?
            .to_string(),
        config_type::LONG => v
            .parse::<i64>()
            .map_err(|_| "Not a number of type LONG".to_string())?
            .to_string(),
        config_type::DOUBLE => {
            let d = v
                .parse::<f64>()
                .ok()
                .filter(|d| d.is_finite())
                .ok_or_else(|| "Not a number of type DOUBLE".to_string())?;
            java_double(d)
        }
        config_type::LIST => split_list(v).join(","),
        _ => v.to_string(),
    })
}

/// Kafka's list syntax: items separated by commas, spaces around them dropped.
fn split_list(v: &str) -> Vec<&str> {
    if v.trim().is_empty() {
        return vec![];
    }
    v.split(',').map(str::trim).collect()
}

impl TopicConfigDef {
    /// Checks one value of this config: its canonical text, or the error Kafka answers
    /// (`INVALID_CONFIG` naming the key). `internal`: the topic is one of the broker's own.
    pub fn check(&self, value: &str, internal: bool) -> Result<String, ApiError> {
        let key = self.name;
        let bad = |why: &str| {
            ApiError::new(
                ErrorCode::InvalidConfig,
                format!("Invalid value {value} for configuration {key}: {why}"),
            )
        };
        let canonical = parse_config_value(self.kind, value).map_err(|why| bad(&why))?;
        match self.check {
            Check::Any => {}
            Check::AtLeast(min) => {
                let n: i64 = canonical.parse().map_err(|_| bad("not a whole number"))?;
                if n < min {
                    return Err(bad(&format!("Value must be at least {min}")));
                }
            }
            Check::Between(lo, hi) => {
                let n: f64 = canonical.parse().map_err(|_| bad("not a number"))?;
                let show = |x: f64| {
                    if self.kind == config_type::DOUBLE {
                        java_double(x)
                    } else {
                        format!("{}", x as i64)
                    }
                };
                if n < lo {
                    return Err(bad(&format!("Value must be at least {}", show(lo))));
                }
                if n > hi {
                    return Err(bad(&format!("Value must be no more than {}", show(hi))));
                }
            }
            Check::OneOf(allowed) => {
                if !allowed.contains(&canonical.as_str()) {
                    return Err(bad(&format!("String must be one of: {}", allowed.join(", "))));
                }
            }
            Check::GzipLevel => {
                let n: i32 = canonical.parse().map_err(|_| bad("not a whole number"))?;
                if n != -1 && !(1..=9).contains(&n) {
                    return Err(bad("Value must be between 1 and 9, or -1"));
                }
            }
            Check::ThrottledReplicas => {
                let items = split_list(&canonical);
                let pair = |s: &str| {
                    s.split_once(':').is_some_and(|(p, b)| {
                        !p.is_empty()
                            && !b.is_empty()
                            && p.bytes().all(|c| c.is_ascii_digit())
                            && b.bytes().all(|c| c.is_ascii_digit())
                    })
                };
                let ok = items == ["*"] || items.iter().all(|s| pair(s));
                if !ok {
                    return Err(bad("must be the literal '*' or a list of replicas in the following format: [partitionId]:[brokerId],[partitionId]:[brokerId],..."));
                }
            }
            Check::CleanupPolicy => {
                let items = split_list(&canonical);
                if let Some(other) = items.iter().find(|i| !matches!(**i, "delete" | "compact")) {
                    return Err(bad(&format!("Invalid value {other}: expected delete")));
                }
                let compact = items.contains(&"compact");
                if compact && !(internal && items == ["compact"]) {
                    // The message Sluice has always given.
                    return Err(ApiError::new(
                        ErrorCode::InvalidConfig,
                        format!("{key}={value}: log compaction is not supported yet"),
                    ));
                }
                if items.is_empty() {
                    return Err(bad(
                        "expected delete (an empty policy, which keeps everything, is not supported)",
                    ));
                }
            }
        }
        Ok(canonical)
    }
}

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
    /// `index.interval.bytes`: bytes between offset index entries.
    pub index_interval_bytes: i64,
    /// Every config of [`TOPIC_CONFIGS`] as Kafka reports it (canonical text).
    values: BTreeMap<&'static str, String>,
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
        let mut values: BTreeMap<&'static str, String> =
            TOPIC_CONFIGS.iter().map(|d| (d.name, d.default.to_string())).collect();
        let mut merged = defaults.clone();
        merged.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (key, value) in &merged {
            let Some(d) = topic_config(key) else {
                if let Some((_, why)) = REMOVED_TOPIC_CONFIGS.iter().find(|(k, _)| k == key) {
                    tracing::debug!(config = %key, "ignored: {why}");
                    continue;
                }
                return Err(ApiError::new(
                    ErrorCode::InvalidConfig,
                    format!("Unknown topic config name: {key}"),
                ));
            };
            values.insert(d.name, d.check(value, internal)?);
        }
        let long = |k: &str| values[k].parse::<i64>().unwrap_or_default();
        // Kafka's cross-checks (`LogConfig.validateValues` and the tiered storage ones).
        let (min_lag, max_lag) = (long("min.compaction.lag.ms"), long("max.compaction.lag.ms"));
        if min_lag > max_lag {
            return Err(ApiError::new(
                ErrorCode::InvalidConfig,
                format!("conflict topic config setting min.compaction.lag.ms ({min_lag}) > max.compaction.lag.ms ({max_lag})"),
            ));
        }
        if values["remote.storage.enable"] == "true" {
            return Err(ApiError::new(
                ErrorCode::InvalidConfig,
                "Tiered Storage functionality is disabled in the broker. Topic cannot be configured with remote log storage.",
            ));
        }
        Ok(TopicConfig {
            retention_ms: long("retention.ms"),
            retention_bytes: long("retention.bytes"),
            segment_bytes: long("segment.bytes"),
            segment_ms: long("segment.ms"),
            message_bytes_max: long("max.message.bytes"),
            min_insync_replicas: long("min.insync.replicas").clamp(1, i64::from(i32::MAX)) as i32,
            timestamp_type: if values["message.timestamp.type"] == "LogAppendTime" {
                TimestampType::LogAppendTime
            } else {
                TimestampType::CreateTime
            },
            timestamp_before_max_ms: long("message.timestamp.before.max.ms"),
            timestamp_after_max_ms: long("message.timestamp.after.max.ms"),
            cleanup_policy: values["cleanup.policy"].clone(),
            compression_type: values["compression.type"].clone(),
            flush_messages: long("flush.messages"),
            flush_ms: long("flush.ms"),
            index_interval_bytes: long("index.interval.bytes"),
            values,
        })
    }

    /// The effective value of a config in [`TOPIC_CONFIGS`], as Kafka reports it.
    pub fn value(&self, key: &str) -> Option<String> {
        self.values.get(key).cloned()
    }

    fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes.max(14) as u64,
            segment_ms: Some(self.segment_ms),
            index_interval_bytes: self.index_interval_bytes.max(0) as u64,
            // The batch limit is checked by the produce handler (it knows the error code);
            // the log refuses only what could never be stored.
            batch_bytes_max: i32::MAX as usize,
            flush_messages: self.flush_messages,
        }
    }
}

pub use crate::replica::{Partition, PartitionState};

/// A topic as this node holds it: the partitions it has a replica of (in a cluster, some of
/// the topic's; alone, all), with the topic's config.
#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    /// This node's partitions of the topic, by index (ascending, not necessarily 0, 1, …).
    pub partitions: Vec<Arc<Partition>>,
    pub config: TopicConfig,
    pub overrides: BTreeMap<String, String>,
}

impl Topic {
    /// Partition `index`, if this node holds it.
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        self.partitions
            .binary_search_by_key(&index, |p| p.index)
            .ok()
            .map(|i| &self.partitions[i])
    }
}

/// A topic's config overrides and the config they resolve to, as the metadata image has them
/// (for topics whether or not this node holds a partition of them).
#[derive(Debug, Clone)]
pub struct TopicSettings {
    pub overrides: BTreeMap<String, String>,
    pub config: TopicConfig,
}

/// The partitions of `t` that have a replica on node `node`.
fn local_partitions(t: &metadata::TopicImage, node: i32) -> Vec<i32> {
    t.partitions
        .iter()
        .filter(|(_, p)| p.replicas.contains(&node))
        .map(|(i, _)| *i)
        .collect()
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
    /// Serializes the changes of topics (and their commits to the metadata log).
    changes: Mutex<()>,
    /// Where every change is written before it is made.
    metadata: Arc<MetadataLog>,
    /// Where new topic ids come from (the broker's seeded randomness).
    random: Arc<crate::random::Random>,
    /// The broker's clock, handed to every partition.
    clock: Arc<dyn crate::clock::Clock>,
    /// High watermarks read from `replication-offset-checkpoint`, consumed as partitions open.
    restored_hw: Mutex<HashMap<(String, i32), i64>>,
    node_id: i32,
}

/// Why a replication factor above 1 is refused, until replication exists (issue 20).
const NOT_REPLICATED: &str = "Sluice does not replicate partitions yet, so every partition has one replica";

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
pub(crate) fn collision_key(name: &str) -> String {
    name.replace('.', "_")
}

/// The most partitions a topic may have: a bound on what CreateTopics and CreatePartitions
/// ask for, and on a count read from an old `topics.json`.
pub const PARTITIONS_MAX: i32 = 1_000_000;

/// Names of the partition directories (`<topic>-<n>`) in the data directory `dir`.
pub(crate) fn partition_dirs(fs: &dyn storage::Fs, dir: &Path) -> Vec<String> {
    let Ok(entries) = fs.list_dirs(dir) else {
        return vec![];
    };
    let mut out: Vec<String> = entries
        .into_iter()
        .filter(|name| name != crate::metadata_log::DIR)
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
fn write_partition_metadata(fs: &dyn storage::Fs, path: &Path, id: &Uuid) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let f = fs.open(&tmp, storage::OpenMode::Truncate)?;
    f.write_all_at(partition_metadata_text(id).as_bytes(), 0)?;
    drop(f);
    fs.rename(&tmp, path)
}

/// A small text file's contents through `fs`.
fn read_text(fs: &dyn storage::Fs, path: &Path) -> std::io::Result<String> {
    fs.read_all(path).map(|b| String::from_utf8_lossy(&b).into_owned())
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Moves a partition directory aside as `<dir>.<random hex>-stray` (Kafka's name for a log
/// it does not recognise). Returns the new path.
fn move_aside(fs: &dyn storage::Fs, dir: &Path) -> std::io::Result<PathBuf> {
    let suffix = hex(&meta::random_id()); // a name for people, not an answer: need not replay
    let mut name = dir.as_os_str().to_owned();
    name.push(format!(".{suffix}-stray"));
    let to = PathBuf::from(name);
    fs.rename_dir(dir, &to)?;
    if let Some(parent) = dir.parent() {
        fs.sync_dir(parent)?;
    }
    Ok(to)
}

/// A refused commit is a bug (records are checked before they are written); a failed one is
/// the disk's.
impl From<CommitError> for ApiError {
    fn from(e: CommitError) -> ApiError {
        let code = match e {
            CommitError::Storage(_) => ErrorCode::KafkaStorageError,
            CommitError::Refused(_) => ErrorCode::UnknownServerError,
            CommitError::NotController { .. } => ErrorCode::NotController,
            CommitError::Timeout => ErrorCode::RequestTimedOut,
        };
        ApiError::new(code, e.to_string())
    }
}

fn storage_error(e: StorageError) -> ApiError {
    ApiError::new(ErrorCode::KafkaStorageError, e.to_string())
}

impl Topics {
    /// Opens the partition logs of every topic in the metadata image: trusting their indexes
    /// after a clean shutdown (`clean`), recovering them otherwise.
    pub fn open(
        dir: &Path,
        defaults: TopicDefaults,
        clean: bool,
        fs: Arc<dyn storage::Fs>,
        metadata: Arc<MetadataLog>,
        node_id: i32,
        clock: Arc<dyn crate::clock::Clock>,
        random: Arc<crate::random::Random>,
    ) -> Result<Topics, String> {
        let fs_for_hw = fs.clone();
        let topics = Topics {
            restored: Mutex::new(if clean {
                load_producer_state(&*fs, dir)
            } else {
                HashMap::new()
            }),
            dir: dir.to_path_buf(),
            fs,
            defaults: RwLock::new(defaults),
            inner: RwLock::default(),
            changes: Mutex::new(()),
            random,
            clock,
            restored_hw: Mutex::new(crate::replica::read_hw_checkpoint(&*fs_for_hw, dir)),
            metadata,
            node_id,
        };
        let image = topics.metadata.image();
        for t in image.topics() {
            let count = t.partition_count() as i32;
            if t.partitions.keys().copied().ne(0..count) {
                return Err(format!(
                    "topic {} in the metadata log has partitions {:?}, not 0 to {}; restore {} from a backup",
                    t.name,
                    t.partitions.keys().collect::<Vec<_>>(),
                    count - 1,
                    crate::metadata_log::DIR
                ));
            }
        }
        topics.reconcile_with(&image, clean)?;
        // Directories of no topic in the image are not served; a topic created under that
        // name moves its directory aside first.
        let known: std::collections::HashSet<String> = topics
            .list()
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| format!("{}-{}", t.name, p.index)))
            .collect();
        let unknown: Vec<String> = partition_dirs(&*topics.fs, dir)
            .into_iter()
            .filter(|d| !known.contains(d))
            .collect();
        if !unknown.is_empty() {
            topics.remove_strays(&unknown);
        }
        // Deleted topics' directories left by a crash before their background removal.
        let leftovers: Vec<PathBuf> = topics
            .fs
            .list_dirs(dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.ends_with("-delete"))
            .map(|n| dir.join(n))
            .collect();
        if !leftovers.is_empty() {
            tracing::info!(dirs = leftovers.len(), "removing the directories of deleted topics");
            storage::remove_dirs_later(&topics.fs, leftovers);
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
        let bytes = serde_json::to_vec(&file).map_err(|e| e.to_string())?;
        self.fs
            .write_atomically(&path, &bytes)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Opens this node's partitions `indexes` of a topic (`fresh`: being created now).
    fn materialize(
        &self,
        name: &str,
        id: Uuid,
        indexes: &[i32],
        overrides: BTreeMap<String, String>,
        clean: bool,
        fresh: bool,
    ) -> Result<Topic, ApiError> {
        let config = TopicConfig::resolve(&self.defaults().configs, &overrides, is_internal(name))?;
        let parts = match indexes
            .iter()
            .map(|&index| self.open_partition(name, id, index, &config, clean, fresh))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(parts) => parts,
            Err(e) => {
                if fresh {
                    // A topic that could not be created leaves nothing behind (a full disk
                    // must not leave half a topic for the next start to find).
                    self.remove_new_dirs(name, indexes);
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

    /// Removes the directories of partitions `indexes` of `name`, created by a creation that
    /// failed.
    fn remove_new_dirs(&self, name: &str, indexes: &[i32]) {
        for &index in indexes {
            let dir = self.partition_dir(name, index);
            match self.fs.remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove the directory of a partition that failed to be created")
                }
                _ => {}
            }
        }
    }

    /// Makes this node's partitions what `image` says they are, under the change lock (so a
    /// change this node's controller is making is either all done or not begun): the logs of
    /// topics the image no longer holds are removed, partitions placed on this node and not
    /// open are opened (created when new), and config overrides that changed are applied.
    /// Every node runs it at start and after each metadata change it learns of (the
    /// publisher, `crate::server`), so a topic made by the controller on another node appears
    /// here. Returns the first failure, after trying every topic (a failed one is tried again
    /// at the next call).
    pub fn reconcile(&self) -> Result<(), String> {
        let _serial = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        // Read under the lock: an image read before it could predate a change already made.
        let image = self.metadata.image();
        self.reconcile_with(&image, false)
    }

    fn reconcile_with(&self, image: &metadata::MetadataImage, clean: bool) -> Result<(), String> {
        let mut first_error = None;
        for topic in self.list() {
            if image.topic_by_id(&topic.id).is_none() {
                self.remove(&topic.name);
                self.remove_local(&topic);
                tracing::info!(topic = %topic.name, "topic deleted");
            }
        }
        for t in image.topics() {
            let wanted = local_partitions(t, self.node_id);
            if wanted.is_empty() {
                continue;
            }
            let overrides = image.topic_configs(&t.name).clone();
            let outcome = match self.get_by_id(&t.id) {
                None => self
                    .materialize(&t.name, t.id, &wanted, overrides, clean, false)
                    .map(|topic| {
                        self.insert(topic);
                    }),
                Some(local) => self.catch_up_topic(t, &local, &wanted, overrides),
            };
            if let Err(e) = outcome {
                first_error.get_or_insert(format!("cannot open topic {}: {}", t.name, e.message));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Brings an open topic to the image's partitions `wanted` (with their leaders and leader
    /// epochs, in `image`) and `overrides`.
    fn catch_up_topic(
        &self,
        image: &metadata::TopicImage,
        local: &Topic,
        wanted: &[i32],
        overrides: BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        for p in &local.partitions {
            if let Some(r) = image.partition(p.index) {
                let leading = r.leader == self.node_id;
                if (p.role() == crate::replica::Role::Leader) != leading || p.leader_epoch() != r.leader_epoch {
                    p.set_leadership(leading, r.leader_epoch);
                    tracing::info!(topic = %local.name, partition = p.index, leader = r.leader, leader_epoch = r.leader_epoch, "partition leadership changed");
                }
            }
        }
        let missing: Vec<i32> = wanted
            .iter()
            .copied()
            .filter(|i| local.partition(*i).is_none())
            .collect();
        if missing.is_empty() && overrides == local.overrides {
            return Ok(());
        }
        let config = TopicConfig::resolve(&self.defaults().configs, &overrides, is_internal(&local.name))?;
        let mut partitions = local.partitions.clone();
        for &index in &missing {
            partitions.push(self.open_partition(&local.name, local.id, index, &config, false, false)?);
        }
        partitions.sort_by_key(|p| p.index);
        if overrides != local.overrides {
            for p in &partitions {
                p.lock().log.set_config(config.log_config());
            }
        }
        self.insert(Topic {
            name: local.name.clone(),
            id: local.id,
            partitions,
            config,
            overrides,
        });
        Ok(())
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
            if self.fs.exists(&dir) {
                let to = move_aside(&*self.fs, &dir).map_err(aside_failed)?;
                tracing::warn!(dir = %dir.display(), moved_to = %to.display(), "a directory of an earlier topic named {name} was on disk: moved aside so its records never come back; delete it once you have checked it");
            }
        } else {
            match read_text(&*self.fs, &metadata) {
                Ok(text) => {
                    let why = match parse_partition_metadata(&text) {
                        Ok(found) if found == expected => None,
                        Ok(found) => Some(format!(
                            "names topic id {found}, but the metadata log gives {name} the id {expected}"
                        )),
                        // Not evidence of another topic (it is written without an fsync, so a
                        // crash can leave it empty): written again below.
                        Err(e) => {
                            tracing::warn!(file = %metadata.display(), error = %e, "unreadable; written again");
                            let _ = self.fs.remove(&metadata);
                            None
                        }
                    };
                    if let Some(why) = why {
                        let to = move_aside(&*self.fs, &dir).map_err(aside_failed)?;
                        tracing::error!(file = %metadata.display(), moved_to = %to.display(), "{} {why}: the directory belongs to another topic; moved aside and not served, {name}-{index} starts empty; check it, then delete it", metadata.display());
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
        let checkpointed = self
            .restored_hw
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(name.to_string(), index));
        // A partition of the image without a directory is new here (placed on this node by
        // the controller) unless its high watermark was checkpointed: then it was held, and
        // its records are gone.
        if !fresh && !self.fs.exists(&dir) && checkpointed.is_some() {
            tracing::error!(dir = %dir.display(), "partition directory of {name}-{index} (in the metadata log) is missing: the partition starts empty, its records are lost; restore the directory from a backup (with the broker stopped) to bring them back");
        }
        let log = Log::open_on(&self.fs, &dir, config.log_config(), clean).map_err(storage_error)?;
        if fresh || !self.fs.exists(&metadata) {
            if let Err(e) = write_partition_metadata(&*self.fs, &metadata, &id) {
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
        let registration = self
            .metadata
            .image()
            .topic_by_id(&id)
            .and_then(|t| t.partition(index).cloned());
        let leader_epoch = registration.as_ref().map_or(0, |p| p.leader_epoch);
        // This node is the partition's only replica and its whole ISR; it leads unless the
        // controller took the leadership away (a fenced broker).
        let partition = Partition::open(
            name,
            index,
            leader_epoch,
            log,
            producers,
            checkpointed,
            self.clock.clone(),
        )
        .lead_alone();
        if registration.is_some_and(|p| p.leader != self.node_id) {
            partition.set_leadership(false, leader_epoch);
        }
        Ok(Arc::new(partition))
    }

    /// Deals with the partition directories `names` that no partition of the image has. One
    /// whose `partition.metadata` names a topic id the image does not hold, or a partition a
    /// known topic does not have, is of a deleted topic (or of a creation a crash cut short
    /// before its commit): removed, after a log line naming it. One without a readable
    /// `partition.metadata` proves nothing and is moved aside (`-stray`), kept for a person.
    fn remove_strays(&self, names: &[String]) {
        let mut doomed = vec![];
        for name in names {
            let dir = self.dir.join(name);
            let id = read_text(&*self.fs, &dir.join(PARTITION_METADATA))
                .ok()
                .and_then(|t| parse_partition_metadata(&t).ok());
            match id {
                Some(id) => {
                    tracing::warn!(dir = %name, topic_id = %id, "partition directory of no partition in the metadata log (a deleted topic, or a creation a crash interrupted): removed");
                    let mut to = dir.as_os_str().to_owned();
                    to.push(format!(".{}-delete", hex(&self.random.bytes16())));
                    let to = PathBuf::from(to);
                    match self.fs.rename_dir(&dir, &to) {
                        Ok(()) => doomed.push(to),
                        Err(e) => {
                            tracing::warn!(dir = %name, error = %e, "could not rename a stray partition directory for removal")
                        }
                    }
                }
                None => match move_aside(&*self.fs, &dir) {
                    Ok(to) => {
                        tracing::warn!(dir = %name, moved_to = %to.display(), "partition directory of no topic, without a readable partition.metadata: moved aside, not served; check it, then delete it")
                    }
                    Err(e) => {
                        tracing::warn!(dir = %name, error = %e, "could not move a stray partition directory aside")
                    }
                },
            }
        }
        if !doomed.is_empty() {
            if let Err(e) = self.fs.sync_dir(&self.dir) {
                tracing::warn!(error = %e, "could not sync the data directory");
            }
            storage::remove_dirs_later(&self.fs, doomed);
        }
    }

    fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.dir.join(format!("{topic}-{index}"))
    }

    fn insert(&self, topic: Topic) -> Arc<Topic> {
        self.insert_arc(Arc::new(topic))
    }

    fn insert_arc(&self, topic: Arc<Topic>) -> Arc<Topic> {
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

    /// Writes one change to the metadata log (blocking: an fsync).
    fn commit(&self, records: Vec<metadata::MetadataRecord>) -> Result<(), ApiError> {
        self.metadata.commit_now(records).map(|_| ()).map_err(ApiError::from)
    }

    /// The metadata log every change goes through.
    pub fn metadata(&self) -> &Arc<MetadataLog> {
        &self.metadata
    }

    /// Checks a creation request (`validate_only` stops here): name, partitions, replication
    /// factor against the unfenced brokers, configs, and collisions with existing topics (all
    /// of the cluster's, as the metadata image has them). Returns the partition count and the
    /// replica lists the topic's partitions get.
    /// `manual`: the replica lists a request gave (already checked against the registered
    /// brokers; the count and factor are then -1).
    pub fn check_create(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        manual: Option<&[Vec<i32>]>,
        overrides: &BTreeMap<String, String>,
    ) -> Result<(i32, Vec<Vec<i32>>), ApiError> {
        validate_topic_name(name)?;
        if let Some(manual) = manual {
            let factor = manual.first().map_or(1, |r| r.len() as i16);
            if factor > 1 {
                return Err(ApiError::new(
                    ErrorCode::InvalidReplicationFactor,
                    format!("replication factor {factor}: {NOT_REPLICATED}"),
                ));
            }
            let image = self.metadata.image();
            self.check_new_topic(&image, name, overrides, manual)?;
            return Ok((manual.len() as i32, manual.to_vec()));
        }
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
        let image = self.metadata.image();
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
        let assignments = self.place(&image, partitions, replication_factor)?;
        self.check_new_topic(&image, name, overrides, &assignments)?;
        Ok((partitions, assignments))
    }

    /// The checks of a new topic after its placement: this node's partition limit, configs,
    /// and collisions with the cluster's topics.
    fn check_new_topic(
        &self,
        image: &metadata::MetadataImage,
        name: &str,
        overrides: &BTreeMap<String, String>,
        assignments: &[Vec<i32>],
    ) -> Result<(), ApiError> {
        self.check_partition_limits(Self::here(assignments, self.node_id))?;
        TopicConfig::resolve(&self.defaults().configs, overrides, false)?;
        if image.topic(name).is_some() {
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
        if let Some(other) = image.topics().find(|t| collision_key(&t.name) == key) {
            return Err(ApiError::new(
                ErrorCode::InvalidTopicException,
                format!(
                    "topic {name} collides with existing topic {} ('.' and '_' are interchangeable)",
                    other.name
                ),
            ));
        }
        Ok(())
    }

    /// How many of `assignments` have a replica on `node`.
    fn here(assignments: &[Vec<i32>], node: i32) -> usize {
        assignments.iter().filter(|r| r.contains(&node)).count()
    }

    /// The indexes of new partitions `first`, `first + 1`, … (one per replica list in
    /// `assignments`) that have a replica on this node.
    fn placed_here(&self, first: i32, assignments: &[Vec<i32>]) -> Vec<i32> {
        (first..)
            .zip(assignments)
            .filter(|(_, r)| r.contains(&self.node_id))
            .map(|(i, _)| i)
            .collect()
    }

    /// Replica lists for `partitions` new partitions over the image's unfenced brokers (see
    /// `metadata::placement`). A node alone that has not registered yet (a test's `Topics`)
    /// places on itself. Replication factors above 1 are refused until replication exists
    /// (issue 20): a follower that never fetches would be a lie in the ISR.
    fn place(&self, image: &metadata::MetadataImage, partitions: i32, factor: i16) -> Result<Vec<Vec<i32>>, ApiError> {
        use metadata::placement::{self, Candidate, PlaceError};
        let mut brokers: Vec<Candidate> = image
            .brokers
            .values()
            .filter(|b| !b.fenced && !b.in_controlled_shutdown)
            .map(|b| Candidate {
                id: b.id,
                rack: b.rack.clone(),
            })
            .collect();
        if brokers.is_empty() && image.brokers.is_empty() && self.metadata.settings().is_alone() {
            brokers.push(Candidate {
                id: self.node_id,
                rack: None,
            });
        }
        // Rotates the first leader with every partition the cluster has, so that small topics
        // do not all lead on the same broker.
        let start = image.partition_count();
        let assignments = placement::place(&brokers, partitions, factor, start).map_err(|e| {
            let code = match e {
                PlaceError::NoBrokers | PlaceError::TooFewBrokers { .. } | PlaceError::BadFactor => {
                    ErrorCode::InvalidReplicationFactor
                }
            };
            ApiError::new(code, e.to_string())
        })?;
        if factor > 1 {
            return Err(ApiError::new(
                ErrorCode::InvalidReplicationFactor,
                format!("replication factor {factor}: {NOT_REPLICATED}"),
            ));
        }
        Ok(assignments)
    }

    /// Creates a topic (this node must be the active controller): placed over the brokers
    /// (or where `manual` says), this node's partitions created before the commit; the other
    /// brokers create theirs when they learn of it. Returns the topic's id and placement.
    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        manual: Option<&[Vec<i32>]>,
        overrides: BTreeMap<String, String>,
    ) -> Result<(Uuid, Vec<Vec<i32>>), ApiError> {
        let _serial = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let (partitions, assignments) = self.check_create(name, partitions, replication_factor, manual, &overrides)?;
        let topic = self.create_committed(name, &assignments, overrides)?;
        tracing::info!(topic = name, partitions, id = %topic.id, "topic created");
        Ok((topic.id, assignments))
    }

    /// Creates this node's logs of a new topic, then commits the topic: a crash in between
    /// leaves directories the next start removes as strays, and a failed commit removes them
    /// now. Returns the topic as this node holds it (maybe no partition at all).
    fn create_committed(
        &self,
        name: &str,
        assignments: &[Vec<i32>],
        overrides: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, ApiError> {
        let image = self.metadata.image();
        let id = loop {
            let id = Uuid(self.random.bytes16());
            if id != Uuid::ZERO && image.topic_by_id(&id).is_none() {
                break id;
            }
        };
        let records = crate::upgrade::topic_records(name, id, assignments, &overrides);
        let here = self.placed_here(0, assignments);
        let topic = self.materialize(name, id, &here, overrides, false, true)?;
        if let Err(e) = self.commit(records) {
            drop(topic);
            self.remove_new_dirs(name, &here);
            return Err(e);
        }
        Ok(self.insert(topic))
    }

    /// Creates one of the broker's internal topics (no name checks, `compact` allowed), or
    /// returns it if it exists (as this node holds it).
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
        let image = self.metadata.image();
        if image.topic(name).is_some() {
            return Err(ApiError::new(
                ErrorCode::NotLeaderOrFollower,
                format!("{name} exists, but no partition of it is on this node yet"),
            ));
        }
        let assignments = self.place(&image, partitions, 1)?;
        let topic = self.create_committed(name, &assignments, overrides)?;
        tracing::info!(topic = name, partitions, id = %topic.id, "internal topic created");
        Ok(topic)
    }

    /// A topic's overrides and resolved config, from the metadata image (whether or not this
    /// node holds a partition of it).
    pub fn settings(&self, name: &str) -> Result<TopicSettings, ApiError> {
        let image = self.metadata.image();
        if image.topic(name).is_none() {
            return Err(ApiError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {name} does not exist"),
            ));
        }
        let overrides = image.topic_configs(name).clone();
        let config = TopicConfig::resolve(&self.defaults().configs, &overrides, is_internal(name))?;
        Ok(TopicSettings { overrides, config })
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

    /// A user topic that exists (in the image), for the calls that change one.
    fn changeable(&self, name: &str) -> Result<(Arc<metadata::TopicImage>, TopicSettings), ApiError> {
        let settings = self.settings(name)?;
        if is_internal(name) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("{name} is an internal topic and cannot be changed"),
            ));
        }
        let topic = self.metadata.image().topic(name).cloned().ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {name} does not exist"),
            )
        })?;
        Ok((topic, settings))
    }

    /// Sets a topic's config overrides to what `change` makes of the current ones (after
    /// checking them), atomically with respect to other changes (this node must be the active
    /// controller). Logs take the new segment size from their next append; other brokers'
    /// logs when they learn of the change.
    pub fn update_overrides(
        &self,
        name: &str,
        validate_only: bool,
        change: impl FnOnce(&TopicSettings) -> Result<BTreeMap<String, String>, ApiError>,
    ) -> Result<(), ApiError> {
        let _serial = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let (_, current) = self.changeable(name)?;
        let overrides = change(&current)?;
        let config = TopicConfig::resolve(&self.defaults().configs, &overrides, false)?;
        if validate_only {
            return Ok(());
        }
        self.commit(crate::upgrade::config_changes(
            metadata::resource_type::TOPIC,
            name,
            &current.overrides,
            &overrides,
        ))?;
        if let Some(topic) = self.get(name) {
            for p in &topic.partitions {
                p.lock().log.set_config(config.log_config());
            }
            self.insert(Topic {
                name: topic.name.clone(),
                id: topic.id,
                partitions: topic.partitions.clone(),
                config,
                overrides,
            });
        }
        tracing::info!(topic = name, "topic configs changed");
        Ok(())
    }

    /// CreatePartitions: grows a topic to `count` partitions (this node must be the active
    /// controller), placed over the brokers as a new topic's are, or on the replicas `manual`
    /// gives each new partition (already checked against the registered brokers). Partitions
    /// are never removed.
    pub fn add_partitions(
        &self,
        name: &str,
        count: i32,
        manual: Option<&[Vec<i32>]>,
        validate_only: bool,
    ) -> Result<(), ApiError> {
        let _serial = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let (image_topic, settings) = self.changeable(name)?;
        let current = image_topic.partition_count() as i32;
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
        let image = self.metadata.image();
        let assignments = match manual {
            Some(m) if m.len() as i64 != i64::from(count) - i64::from(current) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidReplicaAssignment,
                    format!("{} replica assignments for {} new partitions", m.len(), count - current),
                ))
            }
            Some(m) if m.iter().any(|r| r.len() != 1) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidReplicaAssignment,
                    format!("every new partition must have one replica: {NOT_REPLICATED}"),
                ))
            }
            Some(m) => m.to_vec(),
            None => self.place(&image, count - current, 1)?,
        };
        self.check_partition_limits(Self::here(&assignments, self.node_id))?;
        if validate_only {
            return Ok(());
        }
        let here = self.placed_here(current, &assignments);
        let local = self.get(name).filter(|t| t.id == image_topic.id);
        let mut partitions = local.as_ref().map(|t| t.partitions.clone()).unwrap_or_default();
        for &index in &here {
            match self.open_partition(name, image_topic.id, index, &settings.config, false, true) {
                Ok(p) => partitions.push(p),
                Err(e) => {
                    self.remove_new_dirs(name, &here);
                    return Err(e);
                }
            }
        }
        // As for a new topic: logs first, then the commit (a crash between leaves strays).
        let records = crate::upgrade::partition_records(image_topic.id, current, &assignments).collect();
        if let Err(e) = self.commit(records) {
            drop(partitions);
            self.remove_new_dirs(name, &here);
            return Err(e);
        }
        if !here.is_empty() {
            self.insert(Topic {
                name: name.to_string(),
                id: image_topic.id,
                partitions,
                config: settings.config,
                overrides: settings.overrides,
            });
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

    /// Writes every partition's high watermark to `replication-offset-checkpoint` (Kafka's
    /// file; every `replica.high.watermark.checkpoint.interval.ms` and at shutdown).
    pub fn checkpoint_high_watermarks(&self) -> Result<(), String> {
        let mut entries = vec![];
        for topic in self.list() {
            for p in &topic.partitions {
                entries.push((topic.name.clone(), p.index, p.high_watermark()));
            }
        }
        crate::replica::write_hw_checkpoint(&*self.fs, &self.dir, &entries)
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

    /// Deletes a topic (this node must be the active controller): its removal is committed to
    /// the metadata log before anything is answered, then this node's logs of it are removed
    /// (`remove_local`; other brokers remove theirs when they learn of it).
    pub fn delete(&self, name: &str) -> Result<(), ApiError> {
        let _serial = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let image = self.metadata.image();
        let topic = image.topic(name).ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {name} does not exist"),
            )
        })?;
        if is_internal(name) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("{name} is an internal topic and cannot be deleted"),
            ));
        }
        self.commit(vec![metadata::MetadataRecord::RemoveTopicRecord(
            wire::kafka_records::metadata::RemoveTopicRecord { topic_id: topic.id },
        )])?;
        if let Some(local) = self.get(name).filter(|t| t.id == topic.id) {
            self.remove(name);
            self.remove_local(&local);
        }
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// Removes this node's logs of a deleted topic (already out of the maps): its partition
    /// directories are renamed to `<dir>.<hex>-delete` (so a topic re-created under the name
    /// starts empty, whatever happens next) and removed in the background. A crash before the
    /// rename leaves directories whose topic id the image does not know, which the next start
    /// removes as strays; one after it leaves `-delete` directories, which the next start
    /// removes.
    fn remove_local(&self, topic: &Topic) {
        let mut doomed = vec![];
        for p in &topic.partitions {
            let dir = self.partition_dir(&topic.name, p.index);
            let mut to = dir.as_os_str().to_owned();
            to.push(format!(".{}-delete", hex(&topic.id.0)));
            let to = PathBuf::from(to);
            match self.fs.rename_dir(&dir, &to) {
                Ok(()) => doomed.push(to),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not rename a deleted topic's directory; the next start moves it aside")
                }
            }
        }
        if let Err(e) = self.fs.sync_dir(&self.dir) {
            tracing::warn!(error = %e, "could not sync the data directory after a topic deletion");
        }
        storage::remove_dirs_later(&self.fs, doomed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_append_wakes_only_the_fetches_waiting_on_its_partition() {
        let dir = std::env::temp_dir().join(format!("sluice-topics-wake-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let defaults = crate::ConfigLayers::new().build().unwrap().topic_defaults;
        let fs = storage::default_fs();
        let metadata = Arc::new(MetadataLog::open(&dir, fs.clone(), u64::MAX).unwrap().log);
        let topics = Topics::open(
            &dir,
            defaults,
            false,
            fs,
            metadata,
            1,
            Arc::new(crate::clock::SystemClock::new()),
            Arc::new(crate::random::Random::seeded(1)),
        )
        .unwrap();
        topics.create("wake", 2, 1, None, BTreeMap::new()).unwrap();
        let topic = topics.get("wake").unwrap();
        let (a, b) = (&topic.partitions[0], &topic.partitions[1]);
        let on_a = Arc::new(tokio::sync::Notify::new());
        let on_b = Arc::new(tokio::sync::Notify::new());
        a.wake_on_data(&on_a);
        b.wake_on_data(&on_b);
        a.advance_high_watermark(0);
        let quick = std::time::Duration::from_millis(20);
        assert!(
            tokio::time::timeout(quick, on_a.notified()).await.is_err(),
            "no data, no wake-up"
        );
        // The watermark of A moves (as an append moves it): A's fetch wakes, B's does not.
        let mut state = a.lock();
        let mut batch = wire::records::BatchBuilder::new(wire::Compression::None);
        batch.push(0, None, Some(b"v"), &[]);
        state.log.append(batch.build(), 0, 0).unwrap();
        let end = state.log.log_end_offset();
        drop(state);
        a.advance_high_watermark(end);
        assert!(tokio::time::timeout(quick, on_a.notified()).await.is_ok());
        assert!(tokio::time::timeout(quick, on_b.notified()).await.is_err());
        // Registrations of fetches that ended do not pile up.
        for _ in 0..1000 {
            b.wake_on_data(&Arc::new(tokio::sync::Notify::new()));
        }
        assert!(b.waiting_fetches.lock().unwrap().wakers.len() <= 32);
        drop(topics);
        let _ = std::fs::remove_dir_all(&dir);
    }

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
    fn every_kafka_4_topic_config_resolves_with_kafkas_defaults() {
        let c = TopicConfig::resolve(&BTreeMap::new(), &BTreeMap::new(), false).unwrap();
        for d in TOPIC_CONFIGS {
            assert_eq!(c.value(d.name).as_deref(), Some(d.default), "{}", d.name);
            // The default itself passes the config's own check.
            assert!(d.check(d.default, false).is_ok(), "{}", d.name);
        }
        let names: Vec<_> = TOPIC_CONFIGS.iter().map(|d| d.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "TOPIC_CONFIGS is sorted by name");
        assert_eq!(c.value("min.cleanable.dirty.ratio").as_deref(), Some("0.5"));
    }

    #[test]
    fn topic_configs_are_validated_as_kafka_does() {
        let resolve = |k: &str, v: &str| {
            TopicConfig::resolve(
                &BTreeMap::new(),
                &BTreeMap::from([(k.to_string(), v.to_string())]),
                false,
            )
        };
        for (k, v, canonical) in [
            ("min.cleanable.dirty.ratio", "1", "1.0"),
            ("min.cleanable.dirty.ratio", " 0.25 ", "0.25"),
            ("preallocate", "TRUE", "true"),
            ("leader.replication.throttled.replicas", "0:1, 1:1", "0:1,1:1"),
            ("follower.replication.throttled.replicas", "*", "*"),
            ("segment.bytes", "14", "14"),
            ("local.retention.ms", "-2", "-2"),
            ("compression.gzip.level", "-1", "-1"),
            ("compression.zstd.level", "-5", "-5"),
            ("index.interval.bytes", "0", "0"),
        ] {
            assert_eq!(resolve(k, v).unwrap().value(k).as_deref(), Some(canonical), "{k}={v}");
        }
        for (k, v) in [
            ("min.cleanable.dirty.ratio", "1.5"),
            ("min.cleanable.dirty.ratio", "half"),
            ("segment.bytes", "13"),
            ("segment.bytes", "4294967296"),
            ("max.message.bytes", "-1"),
            ("preallocate", "yes"),
            ("leader.replication.throttled.replicas", "0:1,*"),
            ("leader.replication.throttled.replicas", "a:b"),
            ("compression.gzip.level", "0"),
            ("compression.lz4.level", "18"),
            ("segment.index.bytes", "3"),
            ("local.retention.bytes", "-3"),
            ("max.compaction.lag.ms", "0"),
            ("remote.storage.enable", "true"),
            ("message.timestamp.type", "Now"),
            ("no.such.config", "1"),
        ] {
            let e = resolve(k, v).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidConfig, "{k}={v}");
            assert!(
                e.message.contains(k) || k == "remote.storage.enable",
                "{k}={v}: {}",
                e.message
            );
        }
        // Removed in Kafka 4.0: accepted and ignored.
        for (k, v) in [
            ("message.format.version", "3.0"),
            ("message.timestamp.difference.max.ms", "1000"),
            ("message.downconversion.enable", "true"),
        ] {
            assert!(resolve(k, v).is_ok(), "{k}={v}");
        }
        let lag = TopicConfig::resolve(
            &BTreeMap::new(),
            &BTreeMap::from([
                ("min.compaction.lag.ms".to_string(), "10".to_string()),
                ("max.compaction.lag.ms".to_string(), "5".to_string()),
            ]),
            false,
        )
        .unwrap_err();
        assert!(lag
            .message
            .contains("min.compaction.lag.ms (10) > max.compaction.lag.ms (5)"));
        // Compaction: the message it always had; internal topics may be compact.
        let e = resolve("cleanup.policy", "compact").unwrap_err();
        assert_eq!(e.message, "cleanup.policy=compact: log compaction is not supported yet");
        assert!(resolve("cleanup.policy", "delete,compact").is_err());
        let internal = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        assert!(TopicConfig::resolve(&BTreeMap::new(), &internal, true).is_ok());
    }

    #[test]
    fn partition_metadata_is_kafkas_format() {
        let id = Uuid([0xfb; 16]);
        let text = partition_metadata_text(&id);
        assert!(text.starts_with("version: 0\ntopic_id: "), "{text}");
        assert_eq!(parse_partition_metadata(&text), Ok(meta::base64_url(&id.0)));
        assert!(parse_partition_metadata("").is_err());
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
fn load_producer_state(fs: &dyn storage::Fs, dir: &Path) -> HashMap<String, ProducerSnapshot> {
    let path = dir.join(PRODUCER_STATE_FILE);
    let bytes = match fs.read_all(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the producer state snapshot; scanning the logs instead");
            return HashMap::new();
        }
    };
    let _ = fs.remove(&path);
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
