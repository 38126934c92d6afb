//! What the broker counts, and the Prometheus (OpenMetrics text) page a scrape of `/metrics`
//! returns.
//!
//! Two kinds of metric:
//! - Counted as they happen, here: requests, errors and latency per API; connections; requests
//!   waiting in purgatory. Label sets are bounded by the protocol (API names, error names).
//! - Read from the broker's state at scrape time (`encode`): per-topic traffic (counters kept on
//!   each partition, so a deleted topic's series disappear with it), log sizes and offsets per
//!   partition, consumer group lag, open segment files, the process's CPU and memory. A scrape
//!   costs one short lock per partition and per group shard; it runs off the async threads.

use crate::Broker;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use wire::messages::ApiKey;
use wire::ErrorCode;

type ApiLabel = [(&'static str, &'static str); 1];

/// The most group lag (and group member) series one scrape reports.
const GROUP_LAG_SERIES_MAX: usize = 10_000;

/// A label value as the text format needs it: `\`, `"` and newlines escaped; other control
/// characters (NUL, ESC, DEL, C1...), which scrapers and terminals mishandle, written as
/// `%XX` per UTF-8 byte, and `%` itself as `%25`, so distinct group ids keep distinct labels.
fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '%' => out.push_str("%25"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

type ApiErrorLabels = [(&'static str, &'static str); 2];

fn latency_histogram() -> Histogram {
    // 50 µs to ~52 s, doubling: covers a produce from page cache to a long-polled fetch.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 21))
}

/// Traffic through one partition, summed per topic at scrape time.
#[derive(Debug, Default)]
pub struct Traffic {
    pub bytes_in: AtomicU64,
    pub records_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub records_out: AtomicU64,
}

impl Traffic {
    pub fn add_in(&self, bytes: usize, records: u64) {
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
        self.records_in.fetch_add(records, Ordering::Relaxed);
    }

    pub fn add_out(&self, bytes: usize, records: u64) {
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
        self.records_out.fetch_add(records, Ordering::Relaxed);
    }
}

/// Counts one waiting request in a gauge for as long as it lives.
pub struct Waiting<'a>(&'a Gauge);

impl<'a> Waiting<'a> {
    pub fn new(gauge: &'a Gauge) -> Waiting<'a> {
        gauge.inc();
        Waiting(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counters and gauges updated as requests and connections come and go.
#[derive(Debug)]
pub struct Metrics {
    requests: Family<ApiLabel, Counter>,
    request_errors: Family<ApiErrorLabels, Counter>,
    request_seconds: Family<ApiLabel, Histogram, fn() -> Histogram>,
    /// Client connections open now, and accepted since start.
    pub connections: Gauge,
    pub connections_accepted: Counter,
    /// Connections closed at once because their address held `max.connections.per.ip`.
    pub connections_refused: Counter,
    /// Produce requests waiting for an fsync (`flush.messages`) before they are answered.
    pub produce_waiting: Gauge,
    /// Fetch requests long-polling for data (`fetch.min.bytes` not yet reached).
    pub fetch_waiting: Gauge,
    /// Segment descriptors open now, when the broker uses the real file system.
    segment_files: Option<Arc<storage::RealFs>>,
    /// Seconds since the epoch when the process started.
    start_time_seconds: f64,
}

impl Metrics {
    /// `started_ms`: when the process started, in ms since the epoch (the broker's clock).
    pub fn new(segment_files: Option<Arc<storage::RealFs>>, started_ms: i64) -> Metrics {
        Metrics {
            requests: Family::default(),
            request_errors: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            connections: Gauge::default(),
            connections_accepted: Counter::default(),
            connections_refused: Counter::default(),
            produce_waiting: Gauge::default(),
            fetch_waiting: Gauge::default(),
            segment_files,
            start_time_seconds: started_ms as f64 / 1000.0,
        }
    }

    /// Counts a request that was answered (or, for acks=0, handled), its duration and the
    /// errors its response carries.
    pub fn request_done(&self, api: ApiKey, seconds: f64, errors: &[i16]) {
        let label = [("api", api.name())];
        self.requests.get_or_create(&label).inc();
        self.request_seconds.get_or_create(&label).observe(seconds);
        for &code in errors {
            let error = ErrorCode::from_code(code).map_or("UNKNOWN_SERVER_ERROR", ErrorCode::name);
            self.request_errors
                .get_or_create(&[("api", api.name()), ("error", error)])
                .inc();
        }
    }

    /// The page `/metrics` returns. Reads every partition and group: call off the async threads.
    pub fn encode(&self, broker: &Arc<Broker>) -> Result<String, std::fmt::Error> {
        let mut root = Registry::default();
        // The process's own metrics go by their conventional names (`process_*`); ours by `sluice_*`.
        root.register_collector(Box::new(ProcessCollector {
            start_time_seconds: self.start_time_seconds,
        }));
        let registry = root.sub_registry_with_prefix("sluice");
        registry.register("requests", "Requests handled, by API", self.requests.clone());
        registry.register(
            "request_errors",
            "Error codes in responses (one per topic, partition or group that failed), by API and error",
            self.request_errors.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time from a whole request read to its response ready, by API",
            Unit::Seconds,
            self.request_seconds.clone(),
        );
        registry.register("connections", "Client connections open now", self.connections.clone());
        registry.register(
            "connections_accepted",
            "Client connections accepted since start",
            self.connections_accepted.clone(),
        );
        registry.register(
            "connections_refused",
            "Client connections closed at once because their address held max.connections.per.ip",
            self.connections_refused.clone(),
        );
        registry.register(
            "produce_purgatory_requests",
            "Produce requests waiting for an fsync before their answer",
            self.produce_waiting.clone(),
        );
        registry.register(
            "fetch_purgatory_requests",
            "Fetch requests waiting for data (long polling)",
            self.fetch_waiting.clone(),
        );
        registry.register_collector(Box::new(StateCollector { broker: broker.clone() }));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &root)?;
        Ok(out)
    }
}

/// Reads the broker's state at scrape time.
struct StateCollector {
    broker: Arc<Broker>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCollector")
    }
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, unit: Option<&Unit>, v: f64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, unit, g.metric_type())?)
}

impl Collector for StateCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let broker = &self.broker;
        let topics = broker.topics.list();

        // Per topic: traffic summed over its partitions.
        type Field = fn(&Traffic) -> &AtomicU64;
        let traffic: [(&str, &str, Field); 4] = [
            ("topic_bytes_in", "Record batch bytes appended, by topic", |t| {
                &t.bytes_in
            }),
            ("topic_records_in", "Records appended, by topic", |t| &t.records_in),
            (
                "topic_bytes_out",
                "Record batch bytes sent to consumers, by topic",
                |t| &t.bytes_out,
            ),
            ("topic_records_out", "Records sent to consumers, by topic", |t| {
                &t.records_out
            }),
        ];
        for (name, help, field) in &traffic {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for t in &topics {
                let total: u64 = t
                    .partitions
                    .iter()
                    .map(|p| field(&p.traffic).load(Ordering::Relaxed))
                    .sum();
                ConstCounter::new(total).encode(family.encode_family(&[("topic", t.name.as_str())])?)?;
            }
        }

        // Per partition: log size and offsets, read under one short lock each.
        let mut per_partition = vec![];
        for t in &topics {
            for p in &t.partitions {
                let state = p.lock();
                let log = &state.log;
                let values = [log.size_bytes() as i64, log.log_start_offset(), log.log_end_offset()];
                per_partition.push((t.name.as_str(), p.index.to_string(), values));
            }
        }
        let partitions = per_partition.len();
        let families: [(&str, &str); 3] = [
            ("log_size_bytes", "Bytes of a partition's log on disk"),
            ("log_start_offset", "First offset a consumer can read"),
            ("log_end_offset", "Offset the next appended record gets"),
        ];
        for (i, (name, help)) in families.iter().enumerate() {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (topic, partition, values) in &per_partition {
                let labels = [("topic", *topic), ("partition", partition.as_str())];
                ConstGauge::new(values[i]).encode(family.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut e,
            "topics",
            "Topics, internal ones included",
            None,
            topics.len() as f64,
        )?;
        gauge(
            &mut e,
            "partitions",
            "Partitions led by this broker",
            None,
            partitions as f64,
        )?;
        let failed = topics
            .iter()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.commit.failed())
            .count();
        gauge(
            &mut e,
            "partitions_failed",
            "Partitions refusing writes after a failed fsync, until a restart",
            None,
            failed as f64,
        )?;

        // The metadata quorum, as this node sees it (Kafka's raft-metrics: current-leader,
        // current-epoch, high-watermark, log-end-offset, current-state, commit latency).
        let (role, leader, hw, described) = broker.metadata.quorum();
        let (_, log_end) = broker.metadata.offsets();
        gauge(
            &mut e,
            "raft_current_leader",
            "The metadata quorum's leader as this node knows it (-1: none)",
            None,
            f64::from(leader.unwrap_or(-1)),
        )?;
        gauge(
            &mut e,
            "raft_current_epoch",
            "The metadata quorum's current epoch",
            None,
            f64::from(broker.metadata.leader_epoch()),
        )?;
        gauge(
            &mut e,
            "raft_high_watermark",
            "The metadata log's committed end, as this node knows it",
            None,
            hw as f64,
        )?;
        gauge(
            &mut e,
            "raft_log_end_offset",
            "The end of this node's metadata log",
            None,
            log_end as f64,
        )?;
        {
            let mut family = e.encode_descriptor(
                "raft_current_state",
                "This node's role in the metadata quorum (1 for the current one)",
                None,
                MetricType::Gauge,
            )?;
            for (name, r) in [
                ("leader", raft::RoleName::Leader),
                ("follower", raft::RoleName::Follower),
                ("candidate", raft::RoleName::Candidate),
                ("prospective", raft::RoleName::Prospective),
                ("unattached", raft::RoleName::Unattached),
                ("resigned", raft::RoleName::Resigned),
            ] {
                ConstGauge::new(i64::from(role == r)).encode(family.encode_family(&[("state", name)])?)?;
            }
        }
        gauge(
            &mut e,
            "metadata_last_applied_record_offset",
            "The offset of the last metadata record this node applied to its image (Kafka's broker-metadata-metrics last-applied-record-offset)",
            None,
            broker.metadata.image().offset as f64,
        )?;
        // On the leader: how far each voter and observer is behind the high watermark, as
        // DescribeQuorum reports their log ends (one series per replica: bounded by the
        // cluster's nodes).
        if let Some(d) = described {
            let mut family = e.encode_descriptor(
                "raft_replica_fetch_lag",
                "On the quorum's leader: records each voter and observer lacks up to the high watermark",
                None,
                MetricType::Gauge,
            )?;
            for (kind, replicas) in [("voter", &d.voters), ("observer", &d.observers)] {
                for r in replicas {
                    let id = r.id.to_string();
                    let lag = (d.high_watermark - r.end_offset).max(0);
                    ConstGauge::new(lag).encode(family.encode_family(&[("replica", id.as_str()), ("kind", kind)])?)?;
                }
            }
        }
        let (commits, commit_seconds) = broker.metadata.commit_stats();
        ConstCounter::new(commits).encode(e.encode_descriptor(
            "raft_commits",
            "Metadata changes this node committed as the active controller",
            None,
            MetricType::Counter,
        )?)?;
        ConstCounter::new(commit_seconds).encode(e.encode_descriptor(
            "raft_commit_latency",
            "Time from proposing a metadata change to its commit, summed (divide by raft_commits for the mean)",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?)?;

        // The cluster's partitions as the metadata image has them (Kafka's KafkaController
        // and ReplicaManager gauges). The controller's are reported by the active controller
        // only (0 elsewhere, as Kafka's are); the replica ones count the partitions this
        // broker leads. One pass over the image.
        let image = broker.metadata.image();
        let me = broker.config.node_id;
        let active = broker.metadata.leader() == Some(me);
        let (mut offline, mut imbalance, mut partitions) = (0u64, 0u64, 0u64);
        let (mut under_replicated, mut under_min_isr) = (0u64, 0u64);
        let min_isr_of = |v: Option<&String>| v.and_then(|v| v.parse::<usize>().ok());
        let default_min_isr = min_isr_of(broker.dynamic.topic_defaults().get("min.insync.replicas")).unwrap_or(1);
        for t in image.topics() {
            let min_isr =
                min_isr_of(image.topic_configs(&t.name).get("min.insync.replicas")).unwrap_or(default_min_isr);
            for p in t.partitions.values() {
                partitions += 1;
                if p.leader == -1 {
                    offline += 1;
                } else if p.replicas.first() != Some(&p.leader) {
                    imbalance += 1;
                }
                if p.leader == me {
                    under_replicated += u64::from(p.isr.len() < p.replicas.len());
                    under_min_isr += u64::from(p.isr.len() < min_isr);
                }
            }
        }
        let fenced = image.brokers.values().filter(|b| b.fenced).count() as u64;
        let only_active = |v: u64| if active { v as f64 } else { 0.0 };
        for (name, help, v) in [
            (
                "controller_active",
                "1 on the active controller (Kafka's ActiveControllerCount)",
                f64::from(u8::from(active)),
            ),
            (
                "controller_offline_partitions",
                "Partitions without a leader (OfflinePartitionsCount)",
                only_active(offline),
            ),
            (
                "controller_preferred_replica_imbalance",
                "Partitions led by another replica than their first (PreferredReplicaImbalanceCount)",
                only_active(imbalance),
            ),
            (
                "controller_partitions",
                "Partitions in the cluster (GlobalPartitionCount)",
                only_active(partitions),
            ),
            (
                "controller_topics",
                "Topics in the cluster (GlobalTopicCount)",
                only_active(image.topic_count() as u64),
            ),
            (
                "controller_fenced_brokers",
                "Registered brokers that are fenced (FencedBrokerCount)",
                only_active(fenced),
            ),
            (
                "controller_active_brokers",
                "Registered brokers that are not fenced (ActiveBrokerCount)",
                only_active(image.brokers.len() as u64 - fenced),
            ),
            (
                "under_replicated_partitions",
                "Partitions this broker leads whose ISR lacks some replica (UnderReplicatedPartitions)",
                under_replicated as f64,
            ),
            (
                "under_min_isr_partitions",
                "Partitions this broker leads whose ISR is below min.insync.replicas (UnderMinIsrPartitionCount)",
                under_min_isr as f64,
            ),
        ] {
            gauge(&mut e, name, help, None, v)?;
        }

        // Consumer groups: members, and lag per committed partition.
        // Group ids are any string a client picks: escaped here, since the encoder writes label
        // values as they are (a `"` or a newline would break the whole page). Series per group
        // and partition are capped at `GROUP_LAG_SERIES_MAX`; past it the rest are left out
        // and `sluice_group_lag_series_omitted` says how many.
        let groups = broker.groups.lag_snapshot();
        let ids: Vec<String> = groups.iter().map(|g| escape_label_value(&g.id)).collect();
        gauge(
            &mut e,
            "groups",
            "Consumer groups known to the coordinator",
            None,
            groups.len() as f64,
        )?;
        {
            let mut family =
                e.encode_descriptor("group_members", "Members of a consumer group", None, MetricType::Gauge)?;
            for (g, id) in groups.iter().zip(&ids).take(GROUP_LAG_SERIES_MAX) {
                ConstGauge::new(g.members as i64).encode(family.encode_family(&[("group", id.as_str())])?)?;
            }
        }
        let mut family = e.encode_descriptor(
            "group_lag",
            "Records between a group's committed offset and the partition's high watermark",
            None,
            MetricType::Gauge,
        )?;
        let (mut written, mut omitted) = (0usize, 0usize);
        for (g, id) in groups.iter().zip(&ids) {
            for (topic, partition, committed) in &g.offsets {
                let Some(hw) = broker
                    .topics
                    .get(topic)
                    .and_then(|t| t.partition(*partition).map(|p| p.high_watermark()))
                else {
                    continue;
                };
                if written == GROUP_LAG_SERIES_MAX {
                    omitted += 1;
                    continue;
                }
                written += 1;
                let lag = (hw - committed).max(0);
                let partition = partition.to_string();
                let labels = [
                    ("group", id.as_str()),
                    ("topic", topic.as_str()),
                    ("partition", partition.as_str()),
                ];
                ConstGauge::new(lag).encode(family.encode_family(&labels)?)?;
            }
        }
        drop(family);
        gauge(
            &mut e,
            "group_lag_series_omitted",
            "Group lag series left out of this page (past the cap of 10000)",
            None,
            omitted as f64,
        )?;
        if let Some(fs) = &broker.metrics.segment_files {
            gauge(
                &mut e,
                "segment_files_open",
                "Segment file descriptors open now (at most log.open.files.max, plus files in use)",
                None,
                fs.open_files() as f64,
            )?;
        }
        Ok(())
    }
}

/// The process's own CPU, memory and descriptors, as every Prometheus exporter names them.
/// Linux only: elsewhere they are left out.
#[derive(Debug)]
struct ProcessCollector {
    start_time_seconds: f64,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = ProcessStats::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(p.cpu_seconds);
        cpu.encode(e.encode_descriptor(
            "process_cpu",
            "User and system CPU time of the broker process",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        gauge(
            &mut e,
            "process_resident_memory",
            "Resident memory of the broker process",
            Some(&Unit::Bytes),
            p.rss_bytes as f64,
        )?;
        gauge(
            &mut e,
            "process_open_fds",
            "Descriptors the broker process has open",
            None,
            p.open_fds as f64,
        )?;
        gauge(
            &mut e,
            "process_start_time",
            "When the broker process started, since the Unix epoch",
            Some(&Unit::Seconds),
            self.start_time_seconds,
        )
    }
}

/// What `/proc/self` says about this process.
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub open_fds: usize,
}

impl ProcessStats {
    #[cfg(target_os = "linux")]
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) may hold spaces: fields are counted after its ')'.
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
        let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf only reads a configuration value.
        let (hz, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
        Some(ProcessStats {
            cpu_seconds: ticks as f64 / hz.max(1) as f64,
            rss_bytes: resident_pages * page.max(1) as u64,
            open_fds,
        })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn read() -> Option<ProcessStats> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label_value("plain-group.1"), "plain-group.1");
        assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_label_value("g\0\u{1b}[1m\u{7f}%"), "g%00%1B[1m%7F%25");
        assert_ne!(escape_label_value("a%00"), escape_label_value("a\0"));
    }
}
