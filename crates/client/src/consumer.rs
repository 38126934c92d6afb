//! The consumer: manual assignment or group subscription, seek, poll, commit, pause/resume.
//!
//! `poll` does the work on the caller's task: it (re)joins the group when needed, resolves
//! positions for new partitions (committed offset, else `auto_offset_reset`), sends one Fetch
//! per leader in parallel, and returns records in offset order per partition. Records fetched
//! but not yet returned wait in a buffer bounded by one fetch response (`fetch_max_bytes`).
//! Positions advance only as records are handed out, so a commit never runs ahead of what the
//! caller has seen. Only read_uncommitted is supported (Sluice has no transactions yet).

use crate::admin::{commit_offsets, committed_offsets, list_offsets, OffsetSpec};
use crate::assignor::Assignor;
use crate::cluster::Client;
use crate::error::{Error, Result};
use crate::group::{self, GroupSettings, Signals};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wire::messages::fetch_request::{FetchPartition, FetchTopic};
use wire::messages::FetchRequest;
use wire::records::RecordBatch;
use wire::ErrorCode;

pub type TopicPartition = (String, i32);

/// How often a group member compares its subscribed topics' partition counts with those of its
/// last join (Kafka's leader does this on each metadata refresh).
const METADATA_CHECK: Duration = Duration::from_secs(30);
/// The most a single batch may decompress to.
const MAX_BATCH_DECOMPRESSED: usize = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoOffsetReset {
    Earliest,
    Latest,
    /// Fail the poll when a partition has no valid position.
    None,
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub group_id: Option<String>,
    pub auto_offset_reset: AutoOffsetReset,
    pub enable_auto_commit: bool,
    pub auto_commit_interval: Duration,
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// How long the group waits for a member to rejoin (max.poll.interval.ms).
    pub max_poll_interval: Duration,
    pub fetch_min_bytes: i32,
    pub fetch_max_wait: Duration,
    pub fetch_max_bytes: i32,
    pub max_partition_fetch_bytes: i32,
    pub max_poll_records: usize,
    /// Offered in order of preference; the group picks one every member offers.
    pub assignors: Vec<Assignor>,
    /// Verify each batch's CRC (check.crcs).
    pub check_crcs: bool,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group_id: None,
            auto_offset_reset: AutoOffsetReset::Latest,
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            max_poll_interval: Duration::from_secs(300),
            fetch_min_bytes: 1,
            fetch_max_wait: Duration::from_millis(500),
            fetch_max_bytes: 50 << 20,
            max_partition_fetch_bytes: 1 << 20,
            max_poll_records: 500,
            assignors: vec![Assignor::Range, Assignor::CooperativeSticky],
            check_crcs: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

/// Where to move a partition's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    Offset(i64),
    Beginning,
    End,
    /// The first record at or after this timestamp (ms since the epoch).
    Timestamp(i64),
}

#[derive(Debug, Clone, Default)]
struct PartState {
    /// Next offset to hand to the caller; `None` until resolved.
    position: Option<i64>,
    /// Next offset to fetch (ahead of `position` while records wait in the buffer).
    fetch_position: Option<i64>,
    paused: bool,
    high_watermark: i64,
    /// The position fell outside the log: take `auto_offset_reset`'s offset, not the committed one.
    needs_reset: bool,
}

struct Membership {
    settings: GroupSettings,
    member_id: String,
    generation: i32,
    assignor: Option<Assignor>,
    joined: bool,
    signals: Arc<Signals>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    /// Partition counts of the subscribed topics at the last join, and when they were checked.
    counts: BTreeMap<String, usize>,
    checked: Instant,
}

impl Membership {
    fn stop_heartbeat(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    subscription: Vec<String>,
    parts: BTreeMap<TopicPartition, PartState>,
    group: Option<Membership>,
    buffer: VecDeque<ConsumerRecord>,
    last_auto_commit: Instant,
    /// What was last committed, so unchanged positions are not committed again.
    committed: BTreeMap<TopicPartition, i64>,
}

impl Consumer {
    pub fn new(client: Client, config: ConsumerConfig) -> Result<Consumer> {
        if config.assignors.is_empty() {
            return Err(Error::Config("at least one assignor is needed".into()));
        }
        let group = config.group_id.clone().map(|g| Membership {
            settings: GroupSettings {
                group_id: g,
                session_timeout: config.session_timeout,
                rebalance_timeout: config.max_poll_interval,
                heartbeat_interval: config.heartbeat_interval,
                assignors: config.assignors.clone(),
            },
            member_id: String::new(),
            generation: -1,
            assignor: None,
            joined: false,
            signals: Arc::new(Signals::default()),
            heartbeat: None,
            counts: BTreeMap::new(),
            checked: Instant::now(),
        });
        Ok(Consumer {
            client,
            config,
            subscription: vec![],
            parts: BTreeMap::new(),
            group,
            buffer: VecDeque::new(),
            last_auto_commit: Instant::now(),
            committed: BTreeMap::new(),
        })
    }

    /// Joins the group for `topics`; partitions arrive with the first `poll`.
    pub fn subscribe(&mut self, topics: &[String]) -> Result<()> {
        let Some(g) = &mut self.group else {
            return Err(Error::Config(
                "subscribe needs a group id; use assign without one".into(),
            ));
        };
        self.subscription = topics.to_vec();
        // The next poll commits (if auto-commit is on) and rejoins with the new topics.
        g.signals.rejoin.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Consumes exactly these partitions, outside any group rebalancing.
    pub fn assign(&mut self, partitions: &[TopicPartition]) {
        self.subscription.clear();
        let keep: BTreeSet<&TopicPartition> = partitions.iter().collect();
        self.parts.retain(|tp, _| keep.contains(tp));
        for tp in partitions {
            self.parts.entry(tp.clone()).or_default();
        }
        self.buffer.retain(|r| keep.contains(&(r.topic.clone(), r.partition)));
    }

    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.parts.keys().cloned().collect()
    }

    /// The group generation this member last joined (`None` outside a group or before a
    /// join). A new generation may have moved every position of the assignment.
    pub fn generation(&self) -> Option<i32> {
        self.group.as_ref().filter(|g| g.joined).map(|g| g.generation)
    }

    pub fn member_id(&self) -> Option<&str> {
        self.group.as_ref().map(|g| g.member_id.as_str())
    }

    /// The next offset `poll` will return for `tp`, once known.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.parts.get(tp).and_then(|p| p.position)
    }

    /// The partition's high watermark from the latest fetch (-1 before any).
    pub fn high_watermark(&self, tp: &TopicPartition) -> i64 {
        self.parts.get(tp).map_or(-1, |p| p.high_watermark)
    }

    pub async fn seek(&mut self, tp: &TopicPartition, to: Seek) -> Result<()> {
        if !self.parts.contains_key(tp) {
            return Err(Error::Invalid(format!(
                "{}/{} is not assigned to this consumer",
                tp.0, tp.1
            )));
        }
        let offset = match to {
            Seek::Offset(o) => o,
            Seek::Beginning => self.lookup(tp, OffsetSpec::Earliest).await?,
            Seek::End => self.lookup(tp, OffsetSpec::Latest).await?,
            Seek::Timestamp(t) => self.lookup(tp, OffsetSpec::Timestamp(t)).await?,
        };
        self.set_position(tp, offset);
        Ok(())
    }

    fn set_position(&mut self, tp: &TopicPartition, offset: i64) {
        if let Some(p) = self.parts.get_mut(tp) {
            p.position = Some(offset);
            p.fetch_position = Some(offset);
        }
        self.buffer.retain(|r| !(r.topic == tp.0 && r.partition == tp.1));
    }

    async fn lookup(&self, tp: &TopicPartition, spec: OffsetSpec) -> Result<i64> {
        let got = list_offsets(&self.client, std::slice::from_ref(tp), spec).await?;
        let (offset, _) = got
            .get(tp)
            .copied()
            .ok_or_else(|| Error::Invalid(format!("no offset for {}/{}", tp.0, tp.1)))?;
        if offset >= 0 {
            return Ok(offset);
        }
        // No record at or after the timestamp: the end of the log, as Kafka consumers do.
        let end = list_offsets(&self.client, std::slice::from_ref(tp), OffsetSpec::Latest).await?;
        Ok(end.get(tp).map_or(0, |x| x.0))
    }

    pub fn pause(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if let Some(p) = self.parts.get_mut(tp) {
                p.paused = true;
            }
        }
    }

    pub fn resume(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if let Some(p) = self.parts.get_mut(tp) {
                p.paused = false;
            }
        }
    }

    /// Records from assigned, unpaused partitions; empty when none arrive within `timeout`.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            self.ensure_group().await?;
            self.maybe_auto_commit().await;
            self.resolve_positions().await?;
            let out = self.take_buffered();
            if !out.is_empty() {
                return Ok(out);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(vec![]);
            }
            let fetchable = self.parts.values().any(|p| !p.paused && p.fetch_position.is_some());
            if !fetchable {
                tokio::time::sleep(left.min(Duration::from_millis(100))).await;
                continue;
            }
            self.fetch(left.min(self.config.fetch_max_wait)).await?;
        }
    }

    fn take_buffered(&mut self) -> Vec<ConsumerRecord> {
        let n = self.buffer.len().min(self.config.max_poll_records);
        let out: Vec<ConsumerRecord> = self.buffer.drain(..n).collect();
        // A partition's records sit together in the buffer: update its position once, from the
        // last of its run.
        for (i, r) in out.iter().enumerate() {
            let last_of_run = out
                .get(i + 1)
                .is_none_or(|n| n.partition != r.partition || n.topic != r.topic);
            if last_of_run {
                if let Some(p) = self.parts.get_mut(&(r.topic.clone(), r.partition)) {
                    p.position = Some(r.offset.saturating_add(1));
                }
            }
        }
        out
    }

    async fn ensure_group(&mut self) -> Result<()> {
        let Some(g) = &mut self.group else { return Ok(()) };
        if self.subscription.is_empty() {
            return Ok(());
        }
        if g.joined && !g.signals.rejoin.load(Ordering::SeqCst) && g.checked.elapsed() >= METADATA_CHECK {
            // A subscribed topic created or grown since the join needs a new assignment.
            g.checked = Instant::now();
            if let Ok(got) = self.client.refresh(&self.subscription).await {
                let now: BTreeMap<String, usize> = got
                    .into_iter()
                    .filter_map(|(n, _, t)| t.map(|t| (n, t.partitions.len())))
                    .collect();
                if now != g.counts {
                    tracing::info!(group = %g.settings.group_id, "subscribed topics changed; rejoining");
                    g.signals.rejoin.store(true, Ordering::SeqCst);
                }
            }
        }
        if g.joined && !g.signals.rejoin.load(Ordering::SeqCst) {
            return Ok(());
        }
        g.stop_heartbeat();
        if g.signals.forget_member.swap(false, Ordering::SeqCst) {
            g.member_id.clear();
        }
        let lost = g.signals.lost.swap(false, Ordering::SeqCst);
        g.signals.rejoin.store(false, Ordering::SeqCst);
        if lost {
            // Fenced: these partitions may be another member's by now. Drop them uncommitted.
            self.parts.clear();
            self.buffer.clear();
            self.committed.clear();
        } else if self.config.enable_auto_commit && g.joined {
            // Commit what was consumed before anything may move (errors: the rebalance wins).
            if let Err(e) = self.commit().await {
                tracing::debug!(error = %e, "commit before rebalance failed");
            }
        }
        let Some(g) = &mut self.group else { return Ok(()) };
        // Until the join succeeds this member holds no valid generation.
        g.joined = false;
        let cooperative = g.assignor.is_some_and(|a| a.is_cooperative());
        if !cooperative {
            // Eager protocol: give everything up before joining.
            self.parts.clear();
            self.buffer.clear();
        }
        let owned: Vec<TopicPartition> = self.parts.keys().cloned().collect();
        let joined = group::join(&self.client, &g.settings, &mut g.member_id, &self.subscription, &owned).await?;
        tracing::info!(
            group = %g.settings.group_id,
            member = %joined.member_id,
            generation = joined.generation,
            assignor = joined.assignor.name(),
            partitions = joined.assignment.len(),
            "joined group"
        );
        g.generation = joined.generation;
        g.assignor = Some(joined.assignor);
        g.joined = true;
        g.checked = Instant::now();
        g.counts = match self.client.refresh(&self.subscription).await {
            Ok(got) => got
                .into_iter()
                .filter_map(|(n, _, t)| t.map(|t| (n, t.partitions.len())))
                .collect(),
            Err(_) => BTreeMap::new(),
        };
        let new: BTreeSet<TopicPartition> = joined.assignment.iter().cloned().collect();
        let revoked: Vec<TopicPartition> = self.parts.keys().filter(|tp| !new.contains(*tp)).cloned().collect();
        for tp in &revoked {
            self.parts.remove(tp);
        }
        self.buffer.retain(|r| new.contains(&(r.topic.clone(), r.partition)));
        for tp in new {
            self.parts.entry(tp).or_default();
        }
        if joined.assignor.is_cooperative() && !revoked.is_empty() {
            // KIP-429: having let go of partitions, rejoin so they can be handed over.
            g.signals.rejoin.store(true, Ordering::SeqCst);
        }
        g.heartbeat = Some(group::spawn_heartbeat(
            self.client.clone(),
            g.settings.clone(),
            g.member_id.clone(),
            g.generation,
            g.signals.clone(),
        ));
        Ok(())
    }

    /// Gives partitions without a position their committed offset, else the reset policy's.
    async fn resolve_positions(&mut self) -> Result<()> {
        let missing: Vec<TopicPartition> = self
            .parts
            .iter()
            .filter(|(_, p)| p.position.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        match self.lookup_positions(&missing).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_retriable() => {
                // A leader moving or a coordinator loading: the next poll tries again.
                tracing::debug!(error = %e, "cannot resolve positions yet");
                for tp in &missing {
                    self.client.invalidate(&tp.0);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn lookup_positions(&mut self, missing: &[TopicPartition]) -> Result<()> {
        let mut found = BTreeMap::new();
        let fresh: Vec<TopicPartition> = missing
            .iter()
            .filter(|tp| !self.parts.get(*tp).is_some_and(|p| p.needs_reset))
            .cloned()
            .collect();
        if let (Some(g), false) = (&self.config.group_id, fresh.is_empty()) {
            found = committed_offsets(&self.client, g, &fresh).await?;
        }
        let rest: Vec<TopicPartition> = missing.iter().filter(|tp| !found.contains_key(*tp)).cloned().collect();
        if !rest.is_empty() {
            let spec = match self.config.auto_offset_reset {
                AutoOffsetReset::Earliest => OffsetSpec::Earliest,
                AutoOffsetReset::Latest => OffsetSpec::Latest,
                AutoOffsetReset::None => {
                    return Err(Error::Invalid(format!(
                        "no committed offset for {}/{} and auto offset reset is none",
                        rest[0].0, rest[0].1
                    )))
                }
            };
            for (tp, (o, _)) in list_offsets(&self.client, &rest, spec).await? {
                found.insert(tp, o);
            }
        }
        for (tp, o) in found {
            if let Some(p) = self.parts.get_mut(&tp) {
                p.position = Some(o);
                p.fetch_position = Some(o);
                p.needs_reset = false;
            }
        }
        Ok(())
    }

    async fn fetch(&mut self, wait: Duration) -> Result<()> {
        // `poll` fetches only once the buffer is drained, so no partition has records waiting.
        debug_assert!(self.buffer.is_empty());
        let mut by_leader: BTreeMap<i32, Vec<(TopicPartition, i64)>> = BTreeMap::new();
        for (tp, p) in &self.parts {
            let (false, Some(pos)) = (p.paused, p.fetch_position) else {
                continue;
            };
            let leader = match self.client.topic(&tp.0, false).await {
                Ok(t) => t.partitions.iter().find(|x| x.id == tp.1).map_or(-1, |x| x.leader),
                Err(e) if e.is_retriable() => -1,
                Err(e) => return Err(e),
            };
            if leader < 0 {
                self.client.invalidate(&tp.0);
                continue;
            }
            by_leader.entry(leader).or_default().push((tp.clone(), pos));
        }
        if by_leader.is_empty() {
            tokio::time::sleep(wait.min(Duration::from_millis(100))).await;
            return Ok(());
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (leader, parts) in by_leader {
            let client = self.client.clone();
            let req = self.fetch_request(&parts, wait);
            tasks.spawn(async move { (client.send_to(leader, &req).await, parts) });
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok((resp, asked)) = joined else { continue };
            let resp = match resp {
                Ok(r) => r,
                Err(e) if e.is_retriable() => {
                    tracing::debug!(error = %e, "fetch failed; will retry");
                    for (tp, _) in &asked {
                        self.client.invalidate(&tp.0);
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            if resp.error_code != 0 {
                Error::check(resp.error_code, || "fetch".into(), None)?;
            }
            for t in resp.responses {
                for p in t.partitions {
                    let tp = (t.topic.clone(), p.partition_index);
                    self.take_partition(tp, p)?;
                }
            }
        }
        Ok(())
    }

    fn fetch_request(&self, parts: &[(TopicPartition, i64)], wait: Duration) -> FetchRequest {
        let mut topics: Vec<FetchTopic> = vec![];
        for ((t, p), pos) in parts {
            let fp = FetchPartition {
                partition: *p,
                current_leader_epoch: -1,
                fetch_offset: *pos,
                last_fetched_epoch: -1,
                log_start_offset: -1,
                partition_max_bytes: self.config.max_partition_fetch_bytes,
                ..Default::default()
            };
            match topics.iter_mut().find(|x| &x.topic == t) {
                Some(x) => x.partitions.push(fp),
                None => topics.push(FetchTopic {
                    topic: t.clone(),
                    partitions: vec![fp],
                    ..Default::default()
                }),
            }
        }
        FetchRequest {
            replica_id: -1,
            max_wait_ms: wait.as_millis().min(i32::MAX as u128) as i32,
            min_bytes: self.config.fetch_min_bytes,
            max_bytes: self.config.fetch_max_bytes,
            isolation_level: 0,
            session_id: 0,
            session_epoch: -1,
            topics,
            ..Default::default()
        }
    }

    fn take_partition(&mut self, tp: TopicPartition, p: wire::messages::fetch_response::PartitionData) -> Result<()> {
        let Some(state) = self.parts.get_mut(&tp) else {
            return Ok(());
        };
        let Some(pos) = state.fetch_position else { return Ok(()) };
        match ErrorCode::from_code(p.error_code) {
            Some(ErrorCode::None) => {}
            Some(ErrorCode::OffsetOutOfRange) => {
                tracing::info!(topic = %tp.0, partition = tp.1, offset = pos, "offset out of range; resetting");
                if self.config.auto_offset_reset == AutoOffsetReset::None {
                    return Err(Error::Kafka {
                        code: p.error_code,
                        context: format!("fetching {}/{} at offset {pos}", tp.0, tp.1),
                        message: None,
                    });
                }
                state.position = None;
                state.fetch_position = None;
                state.needs_reset = true;
                return Ok(());
            }
            Some(c) if c.is_retriable() => {
                self.client.invalidate(&tp.0);
                return Ok(());
            }
            _ => {
                return Err(Error::Kafka {
                    code: p.error_code,
                    context: format!("fetching {}/{}", tp.0, tp.1),
                    message: None,
                })
            }
        }
        state.high_watermark = p.high_watermark;
        let Some(data) = p.records else { return Ok(()) };
        let corrupt = |at: String, e: &dyn std::fmt::Display| Error::Kafka {
            code: ErrorCode::CorruptMessage.code(),
            context: format!("{}/{} {at}", tp.0, tp.1),
            message: Some(e.to_string()),
        };
        let mut next = pos;
        let mut buffered = false;
        for batch in RecordBatch::iter_all(data) {
            let batch = match batch {
                Ok(b) => b,
                // A partial batch at the end is normal: the response was cut at max bytes.
                Err(wire::records::BatchError::Truncated(_)) => break,
                Err(e) => return Err(corrupt(format!("at offset {next}"), &e)),
            };
            if batch.last_offset() < next {
                continue;
            }
            if self.config.check_crcs {
                batch
                    .verify_crc()
                    .map_err(|e| corrupt(format!("batch at offset {}", batch.base_offset()), &e))?;
            }
            if !batch.is_control() {
                let append_time = batch.is_log_append_time().then(|| batch.max_timestamp());
                let records = batch
                    .records(MAX_BATCH_DECOMPRESSED)
                    .map_err(|e| corrupt(format!("batch at offset {}", batch.base_offset()), &e))?;
                for r in records {
                    let r = r.map_err(|e| corrupt(format!("batch at offset {}", batch.base_offset()), &e))?;
                    if r.offset < next {
                        continue;
                    }
                    buffered = true;
                    self.buffer.push_back(ConsumerRecord {
                        topic: tp.0.clone(),
                        partition: tp.1,
                        offset: r.offset,
                        timestamp: append_time.unwrap_or(r.timestamp),
                        key: r.key,
                        value: r.value,
                        headers: r.headers.into_iter().map(|h| (h.key, h.value)).collect(),
                    });
                }
            }
            next = batch.last_offset().saturating_add(1);
        }
        // Batches wholly before the position (or control batches) still move it on.
        state.fetch_position = Some(next);
        if !buffered {
            state.position = Some(next);
        }
        Ok(())
    }

    /// Positions of every assigned partition that has one.
    pub fn positions(&self) -> BTreeMap<TopicPartition, i64> {
        self.parts
            .iter()
            .filter_map(|(tp, p)| p.position.map(|o| (tp.clone(), o)))
            .collect()
    }

    /// Commits the current positions and waits for the answer.
    pub async fn commit(&mut self) -> Result<()> {
        let offsets: BTreeMap<TopicPartition, i64> = self
            .positions()
            .into_iter()
            .filter(|(tp, o)| self.committed.get(tp) != Some(o))
            .collect();
        self.commit_offsets(offsets).await
    }

    /// Commits these offsets (the next offset to read, as Kafka defines a commit).
    pub async fn commit_offsets(&mut self, offsets: BTreeMap<TopicPartition, i64>) -> Result<()> {
        let Some(group) = self.config.group_id.clone() else {
            return Err(Error::Config("committing needs a group id".into()));
        };
        let (generation, member) = match &self.group {
            Some(g) if g.joined => (g.generation, g.member_id.clone()),
            _ => (-1, String::new()),
        };
        let r = commit_offsets(&self.client, &group, generation, &member, &offsets).await;
        match &r {
            Ok(()) => self.committed.extend(offsets),
            Err(e) => {
                let stale = matches!(
                    e.code(),
                    Some(ErrorCode::RebalanceInProgress | ErrorCode::IllegalGeneration | ErrorCode::UnknownMemberId)
                );
                if let (true, Some(g)) = (stale, &self.group) {
                    g.signals.rejoin.store(true, Ordering::SeqCst);
                }
            }
        }
        r
    }

    /// Starts a commit of the current positions without waiting; a failure is logged.
    pub fn commit_async(&mut self) {
        let Some(group) = self.config.group_id.clone() else {
            return;
        };
        let (generation, member) = match &self.group {
            Some(g) if g.joined => (g.generation, g.member_id.clone()),
            _ => (-1, String::new()),
        };
        // `committed` is not updated: a later commit sends these offsets again, which is
        // harmless, while marking them done before the answer could skip them for good.
        let offsets = self.positions();
        let client = self.client.clone();
        let signals = self.group.as_ref().map(|g| g.signals.clone());
        tokio::spawn(async move {
            if let Err(e) = commit_offsets(&client, &group, generation, &member, &offsets).await {
                tracing::warn!(error = %e, "asynchronous commit failed");
                let stale = matches!(
                    e.code(),
                    Some(ErrorCode::RebalanceInProgress | ErrorCode::IllegalGeneration | ErrorCode::UnknownMemberId)
                );
                if let (true, Some(s)) = (stale, signals) {
                    s.rejoin.store(true, Ordering::SeqCst);
                }
            }
        });
    }

    /// The group's committed offsets for `partitions`.
    pub async fn committed(&self, partitions: &[TopicPartition]) -> Result<BTreeMap<TopicPartition, i64>> {
        let Some(group) = &self.config.group_id else {
            return Err(Error::Config("committed offsets need a group id".into()));
        };
        committed_offsets(&self.client, group, partitions).await
    }

    async fn maybe_auto_commit(&mut self) {
        if !self.config.enable_auto_commit || self.config.group_id.is_none() {
            return;
        }
        if self.last_auto_commit.elapsed() < self.config.auto_commit_interval {
            return;
        }
        self.last_auto_commit = Instant::now();
        if let Err(e) = self.commit().await {
            tracing::warn!(error = %e, "auto-commit failed");
        }
    }

    /// Commits (with auto-commit on) and leaves the group so its partitions move at once.
    pub async fn close(mut self) -> Result<()> {
        let mut result = Ok(());
        if self.config.enable_auto_commit && self.config.group_id.is_some() {
            result = self.commit().await;
        }
        if let Some(g) = &mut self.group {
            g.stop_heartbeat();
            if g.joined && !g.member_id.is_empty() {
                let r = group::leave(&self.client, &g.settings.group_id, &g.member_id).await;
                if result.is_ok() {
                    result = r;
                }
            }
        }
        result
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(g) = &mut self.group {
            g.stop_heartbeat();
        }
    }
}
