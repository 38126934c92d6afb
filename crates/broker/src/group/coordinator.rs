//! The group coordinator: the group state machines, their persistence in `__consumer_offsets`
//! and the waiting JoinGroup/SyncGroup requests.
//!
//! Groups are sharded by `__consumer_offsets` partition (`abs(javaHash(group)) % partitions`,
//! as Kafka), each shard with its own lock, its groups and the log it writes to. In a cluster
//! a shard will live on the leader of its partition; here every shard is on this node.
//!
//! Durability: an offset commit is answered only after its record is in the log; the group's
//! membership is written when an assignment is handed out and when the group empties. On
//! start the shards are rebuilt by reading their logs.
//!
//! Compaction: the coordinator holds the latest value of every key of its shard, so instead of
//! a log cleaner it writes all of them again once the log has grown well past their size, and
//! moves the log start offset to that snapshot; older segments are then deleted. A crash
//! mid-snapshot is harmless: the start moves only after the whole snapshot is written.
//!
//! Limits: `group.max.size` members per group; pending joins are bounded by members (one
//! each); `offset.metadata.max.bytes` per committed offset. The number of groups and offsets
//! is bounded by `offsets.retention.minutes` expiry, not by a count.
//!
//! Lock order: a shard's lock, then its partition's lock. Never held across an `.await`.

use super::state::{CommittedOffset, Group, JoinRequest, JoinResult, Limits, Reply, SyncResult, Token};
use super::store::{self, Entry};
use crate::clock::Clock;
use crate::topics::{Partition, Topics, CONSUMER_OFFSETS};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use storage::StorageError;
use tokio::sync::oneshot;
use wire::compression::Compression;
use wire::messages::ErrorCode;
use wire::records::{BatchBuilder, RecordBatch};

/// Records per batch when writing a snapshot.
const SNAPSHOT_BATCH_RECORDS: usize = 1000;
/// Largest decompressed batch read back on load (we write uncompressed batches).
const LOAD_BATCH_BYTES_MAX: usize = 256 << 20;

#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub limits: Limits,
    /// `offsets.topic.num.partitions` (when the topic is first created).
    pub offsets_partitions: i32,
    /// `offsets.topic.segment.bytes`.
    pub offsets_segment_bytes: i64,
    /// `offsets.retention.minutes`, in ms.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_ms: i64,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_bytes_max: usize,
    /// `group.max.member.metadata.bytes` (see `memory`).
    pub member_metadata_bytes_max: usize,
    /// `group.max.memory.bytes` (see `memory`).
    pub memory_bytes_max: usize,
    /// A shard's log is compacted once this much has been written since its last compaction
    /// and that is more than twice the size of the live state (not a setting; tests lower it).
    pub compact_after_bytes: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            limits: Limits::default(),
            offsets_partitions: 50,
            offsets_segment_bytes: 100 << 20,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offsets_retention_check_ms: 600_000,
            offset_metadata_bytes_max: 4096,
            member_metadata_bytes_max: 1 << 20,
            memory_bytes_max: 256 << 20,
            compact_after_bytes: 16 << 20,
        }
    }
}

enum Waiter {
    Join(oneshot::Sender<JoinResult>),
    Sync(oneshot::Sender<SyncResult>),
}

#[derive(Default)]
struct ShardState {
    /// Ordered maps where iteration decides what is written (compaction, expiry) or the
    /// order of answers (shutdown), so a run replays identically.
    groups: BTreeMap<String, Group>,
    waiters: BTreeMap<Token, Waiter>,
    /// The last group value written for each group: what compaction writes again. (Not the
    /// live state: a group mid-rebalance is persisted only once it is stable or empty.)
    persisted: BTreeMap<String, Bytes>,
    /// Bytes appended since the last compaction, and the size of that snapshot.
    written: u64,
    snapshot_bytes: u64,
    /// Groups by the time their timers next need a look (`Group::next_deadline`), and each
    /// group's entry in it: what `Coordinator::tick_due` visits instead of every group.
    timers: BTreeSet<(i64, String)>,
    scheduled: HashMap<String, i64>,
}

impl ShardState {
    /// Files the group under its next deadline (or takes it off the timers when it has none or
    /// is gone). Returns the new deadline.
    fn reschedule(&mut self, group_id: &str) -> Option<i64> {
        let next = self.groups.get(group_id).and_then(Group::next_deadline);
        let old = match next {
            Some(at) => self.scheduled.insert(group_id.to_string(), at),
            None => self.scheduled.remove(group_id),
        };
        if old != next {
            if let Some(old) = old {
                self.timers.remove(&(old, group_id.to_string()));
            }
            if let Some(at) = next {
                self.timers.insert((at, group_id.to_string()));
            }
        }
        next
    }

    fn dispatch(&mut self, replies: Vec<Reply>) {
        for r in replies {
            match r {
                Reply::Join(t, result) => {
                    if let Some(Waiter::Join(tx)) = self.waiters.remove(&t) {
                        // The client may have gone; its answer is then dropped.
                        let _ = tx.send(result);
                    }
                }
                Reply::Sync(t, result) => {
                    if let Some(Waiter::Sync(tx)) = self.waiters.remove(&t) {
                        let _ = tx.send(result);
                    }
                }
            }
        }
    }
}

struct Shard {
    partition: Arc<Partition>,
    state: Mutex<ShardState>,
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, ShardState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends records (key, value or tombstone) as one batch.
    fn write(&self, state: &mut ShardState, records: &[(Bytes, Option<Bytes>)], now: i64) -> Result<(), ErrorCode> {
        if records.is_empty() {
            return Ok(());
        }
        let mut b = BatchBuilder::new(Compression::None);
        for (k, v) in records {
            b.push(now, Some(k), v.as_deref(), &[]);
        }
        let batch = b.build();
        let len = batch.len() as u64;
        // The one leader append path (`Partition::append_as_leader`): the high watermark
        // moves and the fetches waiting on this partition wake, as for a produce.
        let appended = self.partition.append_as_leader::<std::convert::Infallible>(
            batch,
            now,
            |_| Ok(crate::replica::Admit::Append),
            |_, _| {},
        );
        match appended {
            Ok(a) => {
                state.written += len;
                // The topic's flush.messages (1 under `--durable`): a commit is acknowledged
                // only once it is on disk. This runs on the blocking pool (never an async
                // worker) and blocks this shard for one fsync, shared with others.
                if let crate::replica::Ack::Below(end) = a.ack {
                    if let Err(e) = self.partition.wait_for_ack_blocking(end) {
                        tracing::error!(partition = self.partition.index, error = %e, "cannot fsync {CONSUMER_OFFSETS}");
                        return Err(ErrorCode::NotCoordinator);
                    }
                }
                Ok(())
            }
            Err(e) => {
                let e = match e {
                    crate::replica::AppendError::NotLeader => "this broker does not lead the partition".to_string(),
                    crate::replica::AppendError::Storage(m) => m,
                    crate::replica::AppendError::Refused(never) => match never {},
                };
                tracing::error!(partition = self.partition.index, error = %e, "cannot write to {CONSUMER_OFFSETS}");
                // As Kafka: the client looks for the coordinator again and retries.
                Err(ErrorCode::NotCoordinator)
            }
        }
    }

    /// Writes the group's membership if it changed. False if that write failed (the group
    /// carries on from memory; after a restart its members would rejoin).
    fn persist_group(&self, state: &mut ShardState, group_id: &str, now: i64) -> bool {
        let Some(g) = state.groups.get_mut(group_id) else {
            return true;
        };
        if !g.take_dirty() {
            return true;
        }
        let value = store::group_value(&g.snapshot());
        let record = (store::group_key(group_id), Some(value.clone()));
        match self.write(state, &[record], now) {
            Ok(()) => {
                state.persisted.insert(group_id.to_string(), value);
                true
            }
            Err(e) => {
                tracing::warn!(group = group_id, error = ?e, "group metadata not persisted");
                false
            }
        }
    }

    /// Rewrites every live key and moves the log start past everything older.
    fn maybe_compact(&self, state: &mut ShardState, now: i64, after_bytes: u64) {
        if state.written < after_bytes.max(2 * state.snapshot_bytes) {
            return;
        }
        let mut records = vec![];
        for (id, value) in &state.persisted {
            records.push((store::group_key(id), Some(value.clone())));
        }
        for (id, g) in &state.groups {
            for ((topic, partition), o) in g.offsets() {
                records.push((store::offset_key(id, topic, *partition), Some(store::offset_value(o))));
            }
        }
        let start = self.partition.lock().log.log_end_offset();
        let before = state.written;
        for chunk in records.chunks(SNAPSHOT_BATCH_RECORDS) {
            if self.write(state, chunk, now).is_err() {
                return;
            }
        }
        let snapshot = state.written - before;
        let mut p = self.partition.lock();
        match p.log.delete_records_before(start) {
            Ok(_) => {
                tracing::info!(
                    partition = self.partition.index,
                    snapshot_bytes = snapshot,
                    "{CONSUMER_OFFSETS} partition compacted"
                );
                state.written = 0;
                state.snapshot_bytes = snapshot;
            }
            Err(e) => tracing::warn!(error = %e, "cannot compact {CONSUMER_OFFSETS}"),
        }
    }

    /// Rebuilds the shard's groups from its log.
    fn load(&self, now: i64) -> Result<(), String> {
        let mut state = self.lock();
        let mut p = self.partition.lock();
        let mut offset = p.log.log_start_offset();
        let mut end = p.log.log_end_offset();
        let mut read_bytes = 0u64;
        let mut skipped = 0usize;
        let mut snapshots: BTreeMap<String, Option<super::state::GroupSnapshot>> = BTreeMap::new();
        while offset < end {
            let data = match p.log.read(offset, 1 << 20) {
                Ok(data) => data,
                Err(StorageError::Corrupt { .. }) => {
                    // Damage in the broker's own topic must not keep the broker down: the
                    // damaged batch is stepped over (or, when its header cannot be trusted,
                    // the log is cut there as after a crash), loudly. What it held is lost;
                    // every group and offset before (and, when skipped, after) it is kept.
                    let skip = p.log.skip_damaged(offset).map_err(|e| e.to_string())?;
                    if skip.cut {
                        tracing::error!(file = %skip.path.display(), offset, "damaged batch in {CONSUMER_OFFSETS}-{}: the log is cut there (its header cannot be trusted) and what followed is moved aside (*.stray); groups and offsets committed from offset {offset} on are lost, those before are kept", self.partition.index);
                    } else {
                        tracing::error!(file = %skip.path.display(), offset, next = skip.next_offset, "damaged batch in {CONSUMER_OFFSETS}-{} at offsets {offset}..{}: skipped; the commits it held are lost, every other group and offset is kept (the batch goes with the next compaction)", self.partition.index, skip.next_offset);
                    }
                    offset = skip.next_offset;
                    end = p.log.log_end_offset();
                    if skip.cut {
                        self.partition.log_cut_to(end);
                    }
                    continue;
                }
                Err(e) => return Err(e.to_string()),
            };
            if data.is_empty() {
                break;
            }
            read_bytes += data.len() as u64;
            let before = offset;
            for batch in RecordBatch::iter_all(data) {
                let Ok(batch) = batch else { break };
                offset = batch.last_offset() + 1;
                let records = match batch.records(LOAD_BATCH_BYTES_MAX) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping an unreadable {CONSUMER_OFFSETS} batch");
                        continue;
                    }
                };
                for r in records {
                    let Ok(r) = r else {
                        skipped += 1;
                        break;
                    };
                    if r.offset < p.log.log_start_offset() {
                        continue;
                    }
                    let raw_value = r.value.clone();
                    match store::parse(r.key, r.value) {
                        Ok(Entry::Offset {
                            group,
                            topic,
                            partition,
                            value,
                        }) => {
                            let g = state
                                .groups
                                .entry(group.clone())
                                .or_insert_with(|| Group::new(&group, now));
                            match value {
                                Some(v) => g.put_offset(&topic, partition, v),
                                None => {
                                    g.remove_offset(&topic, partition);
                                }
                            }
                        }
                        Ok(Entry::Group { group, value }) => {
                            match &raw_value {
                                Some(v) => {
                                    state.persisted.insert(group.clone(), v.clone());
                                }
                                None => {
                                    // A deleted group: drop what was read of it so far.
                                    state.groups.remove(&group);
                                    state.persisted.remove(&group);
                                }
                            }
                            snapshots.insert(group, value);
                        }
                        Err(e) => {
                            skipped += 1;
                            tracing::debug!(error = %e, "skipping an unreadable {CONSUMER_OFFSETS} record");
                        }
                    }
                }
            }
            if offset == before {
                return Err(format!(
                    "{CONSUMER_OFFSETS}-{}: no progress reading at offset {offset}",
                    self.partition.index
                ));
            }
        }
        for (id, snap) in snapshots {
            let Some(snap) = snap else { continue };
            let offsets: Vec<_> = state
                .groups
                .remove(&id)
                .map(|g| g.offsets().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            let mut g = Group::restore(&id, snap, now);
            for ((topic, partition), o) in offsets {
                g.put_offset(&topic, partition, o);
            }
            state.groups.insert(id, g);
        }
        state
            .groups
            .retain(|_, g| !g.is_disposable() || g.protocol_type().is_some());
        state.written = read_bytes;
        if skipped > 0 {
            tracing::warn!(
                partition = self.partition.index,
                skipped,
                "unreadable {CONSUMER_OFFSETS} records skipped"
            );
        }
        Ok(())
    }
}

/// What is logged about a group: its state, generation and size before and after a call.
fn summary(g: Option<&Group>) -> Option<(&'static str, i32, usize)> {
    g.map(|g| (g.state().name(), g.generation(), g.member_count()))
}

fn log_change(
    group_id: &str,
    before: Option<(&'static str, i32, usize)>,
    after: Option<(&'static str, i32, usize)>,
    why: &str,
) {
    // A group's generation only grows (Kafka's clients rely on it to fence old members).
    if let (Some((_, was, _)), Some((_, is, _))) = (before, after) {
        assert!(is >= was, "group {group_id}: generation went back from {was} to {is}");
    }
    if before != after {
        if let Some((state, generation, members)) = after {
            tracing::info!(group = group_id, state, generation, members, why, "group changed");
        }
    }
}

/// Kafka's choice of `__consumer_offsets` partition: Java's `String.hashCode` of the group id
/// (over UTF-16 code units), made non-negative, modulo the partition count.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group_id.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let h = if h == i32::MIN { 0 } else { h.abs() };
    h % partitions.max(1)
}

/// The system clock's wall time, for code not yet given a `Clock` (`topics.rs`); the
/// coordinator itself reads the clock it was opened with.
pub use crate::clock::now_ms;

/// A group's members and committed offsets (topic, partition, offset), as metrics report them.
pub struct GroupOffsets {
    pub id: String,
    pub members: usize,
    pub offsets: Vec<(String, i32, i64)>,
}

/// A group as DescribeGroups reports it.
pub struct GroupDescription {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol_data: String,
    pub members: Vec<super::state::MemberSummary>,
}

pub struct Coordinator {
    config: GroupConfig,
    /// The `__consumer_offsets` partitions this node holds, by index (in a cluster, some of
    /// them), loaded once the topic exists here.
    shards: OnceLock<Vec<Shard>>,
    /// How many partitions `__consumer_offsets` has (all brokers' together): what a group id
    /// hashes over. Set with `shards`.
    offsets_partitions: OnceLock<i32>,
    creating: Mutex<()>,
    next_token: AtomicU64,
    /// Set at shutdown: waiting requests are answered and no new ones wait.
    closed: std::sync::atomic::AtomicBool,
    /// Member metadata and assignments held by all groups (`group.max.memory.bytes`).
    pub memory: super::memory::GroupMemory,
    /// When a failure to create `__consumer_offsets` was last logged (ms since the epoch).
    create_failure_reported_ms: std::sync::atomic::AtomicI64,
    /// The deadline the timer loop sleeps until (`tick_due`'s answer), and its wake-up when a
    /// group files an earlier one.
    armed_ms: std::sync::atomic::AtomicI64,
    timers_changed: tokio::sync::Notify,
    /// Every deadline, timestamp and timer of the groups is read from this clock.
    clock: Arc<dyn Clock>,
}

/// A JoinGroup's or SyncGroup's answer: known at once, or to come when the group moves on.
pub enum Started<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

impl<T> Started<T> {
    /// Waits for the answer; `gone` answers when the coordinator dropped the request.
    pub async fn answer(self, gone: impl FnOnce() -> T) -> T {
        match self {
            Started::Now(r) => r,
            Started::Later(rx) => rx.await.unwrap_or_else(|_| gone()),
        }
    }
}

/// Committed offsets by topic and partition (`None`: nothing committed).
pub type CommittedByTopic = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

/// A committed offset to store, as a request gives it.
pub struct OffsetToCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: CommittedOffset,
}

impl Coordinator {
    /// Loads the groups of an existing `__consumer_offsets`; without one, it is created when
    /// the first group appears.
    pub fn open(topics: &Topics, config: GroupConfig, clock: Arc<dyn Clock>) -> Result<Coordinator, String> {
        let c = Coordinator {
            memory: super::memory::GroupMemory::new(config.member_metadata_bytes_max, config.memory_bytes_max),
            config,
            shards: OnceLock::new(),
            offsets_partitions: OnceLock::new(),
            creating: Mutex::new(()),
            next_token: AtomicU64::new(1),
            closed: std::sync::atomic::AtomicBool::new(false),
            create_failure_reported_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
            armed_ms: std::sync::atomic::AtomicI64::new(i64::MAX),
            timers_changed: tokio::sync::Notify::new(),
            clock,
        };
        if topics.get(CONSUMER_OFFSETS).is_some() {
            c.shards(topics)
                .map_err(|e| format!("cannot load consumer groups: {e:?}"))?;
        }
        Ok(c)
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// The clock the coordinator reads (the broker's).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn shards(&self, topics: &Topics) -> Result<&[Shard], ErrorCode> {
        if let Some(s) = self.shards.get() {
            return Ok(s);
        }
        let _creating = self.creating.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = self.shards.get() {
            return Ok(s);
        }
        // In a cluster, the topic is the active controller's to create, and the groups are
        // coordinated where it lives (every partition has one replica, for now: issue 20):
        // elsewhere, NOT_COORDINATOR sends the client back to FindCoordinator.
        let metadata = topics.metadata();
        let me = metadata.settings().node_id;
        let hosted = topics.get(CONSUMER_OFFSETS).is_some();
        if !hosted && (metadata.image().topic(CONSUMER_OFFSETS).is_some() || metadata.leader() != Some(me)) {
            return Err(ErrorCode::NotCoordinator);
        }
        let overrides = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            (
                "segment.bytes".to_string(),
                self.config.offsets_segment_bytes.to_string(),
            ),
        ]);
        let topic = topics
            .create_internal(CONSUMER_OFFSETS, self.config.offsets_partitions, overrides)
            .map_err(|e| {
                // Every FindCoordinator retries this: one line a minute, not one per request.
                let now = self.clock.now_ms();
                let last = self.create_failure_reported_ms.load(Ordering::Relaxed);
                if now.saturating_sub(last) >= 60_000
                    && self
                        .create_failure_reported_ms
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::error!(error = %e.message, "cannot create {CONSUMER_OFFSETS}: consumer groups are unavailable until it can be (retried on every FindCoordinator; logged once a minute)");
                }
                ErrorCode::CoordinatorNotAvailable
            })?;
        let count = metadata
            .image()
            .topic(CONSUMER_OFFSETS)
            .map_or(topic.partitions.len(), |t| t.partition_count()) as i32;
        let now = self.clock.now_ms();
        let shards: Vec<Shard> = topic
            .partitions
            .iter()
            .map(|p| Shard {
                partition: p.clone(),
                state: Mutex::new(ShardState::default()),
            })
            .collect();
        let mut groups = 0;
        for s in &shards {
            s.load(now).map_err(|e| {
                tracing::error!(error = %e, "cannot load consumer groups");
                ErrorCode::CoordinatorLoadInProgress
            })?;
            let mut state = s.lock();
            let ids: Vec<String> = state.groups.keys().cloned().collect();
            for id in ids {
                state.reschedule(&id);
            }
            groups += state.groups.len();
        }
        if groups > 0 {
            tracing::info!(groups, "consumer groups loaded");
        }
        self.offsets_partitions.get_or_init(|| count);
        Ok(self.shards.get_or_init(|| shards))
    }

    fn shard(&self, topics: &Topics, group_id: &str) -> Result<&Shard, ErrorCode> {
        if self.closed.load(Ordering::Acquire) {
            return Err(ErrorCode::NotCoordinator);
        }
        // Compact strings may be longer than the int16-length strings of our records.
        if group_id.len() > i16::MAX as usize {
            return Err(ErrorCode::InvalidGroupId);
        }
        // The decoder maps bytes that are not UTF-8 to U+FFFD (as Java's String does), so
        // b"a\xff" and b"a\xfe" would arrive as the same id and share a group and its offsets.
        // No id carrying U+FFFD is accepted, which makes the mapping collision-free.
        if group_id.contains(char::REPLACEMENT_CHARACTER) {
            return Err(ErrorCode::InvalidGroupId);
        }
        let shards = self.shards(topics)?;
        let index = partition_for(group_id, self.offsets_partitions.get().copied().unwrap_or(0));
        // Another broker's partition: the client asks FindCoordinator again.
        shards
            .binary_search_by_key(&index, |s| s.partition.index)
            .map(|i| &shards[i])
            .map_err(|_| ErrorCode::NotCoordinator)
    }

    /// Whether `__consumer_offsets` is open (group requests then touch no files to start).
    pub fn loaded(&self) -> bool {
        self.shards.get().is_some()
    }

    /// Makes sure the coordinator can serve (FindCoordinator): `__consumer_offsets` exists.
    pub fn ready(&self, topics: &Topics) -> Result<(), ErrorCode> {
        self.shards(topics).map(|_| ())
    }

    fn token(&self) -> Token {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }

    /// JoinGroup, waiting for its answer. The first part (`join_begin`) may write the group
    /// to its log: a caller on an async worker runs that part off it, as `handlers::groups`.
    pub async fn join(&self, topics: &Topics, group_id: &str, req: JoinRequest) -> JoinResult {
        let member_id = req.member_id.clone();
        let r = self
            .join_begin(topics, group_id, req)
            .answer(|| JoinResult::error(ErrorCode::CoordinatorNotAvailable, &member_id))
            .await;
        tracing::debug!(group = group_id, member = member_id, error = ?r.error, generation = r.generation, leader = r.leader, "join answered");
        r
    }

    /// The part of a JoinGroup that runs at once: the group's state changes (and its write to
    /// `__consumer_offsets`, with the fsync `flush.messages` asks for — blocking work). The
    /// answer comes later, when the join phase ends.
    pub fn join_begin(&self, topics: &Topics, group_id: &str, req: JoinRequest) -> Started<JoinResult> {
        let member_id = req.member_id.clone();
        let shard = match self.shard(topics, group_id) {
            Ok(s) => s,
            Err(e) => return Started::Now(JoinResult::error(e, &member_id)),
        };
        {
            let mut state = shard.lock();
            let now = self.clock.now_ms();
            if !state.groups.contains_key(group_id) {
                if !req.member_id.is_empty() {
                    return Started::Now(JoinResult::error(ErrorCode::UnknownMemberId, &member_id));
                }
                state.groups.insert(group_id.to_string(), Group::new(group_id, now));
            }
            let token = self.token();
            let (tx, rx) = oneshot::channel();
            state.waiters.insert(token, Waiter::Join(tx));
            let group = state.groups.get_mut(group_id).expect("inserted");
            let before = summary(Some(group));
            let replies = group.join(req, token, now, &self.config.limits);
            log_change(group_id, before, summary(Some(group)), "join");
            state.dispatch(replies);
            shard.persist_group(&mut state, group_id, now);
            if state
                .groups
                .get(group_id)
                .is_some_and(|g| g.is_disposable() && g.protocol_type().is_none())
            {
                // A join refused before the group ever had a member leaves nothing behind.
                state.groups.remove(group_id);
            }
            self.armed(state.reschedule(group_id));
            Started::Later(rx)
        }
    }

    /// SyncGroup, waiting for its answer (see `sync_begin`).
    #[allow(clippy::too_many_arguments)]
    pub async fn sync(
        &self,
        topics: &Topics,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncResult {
        self.sync_begin(
            topics,
            group_id,
            member_id,
            instance,
            generation,
            protocol_type,
            protocol_name,
            assignments,
        )
        .answer(|| SyncResult::error(ErrorCode::CoordinatorNotAvailable))
        .await
    }

    /// The part of a SyncGroup that runs at once: the leader's assignment is written to
    /// `__consumer_offsets` (blocking work: run it off the async workers) before anyone is
    /// told it.
    #[allow(clippy::too_many_arguments)]
    pub fn sync_begin(
        &self,
        topics: &Topics,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Started<SyncResult> {
        let shard = match self.shard(topics, group_id) {
            Ok(s) => s,
            Err(e) => return Started::Now(SyncResult::error(e)),
        };
        {
            let mut state = shard.lock();
            let now = self.clock.now_ms();
            let token = self.token();
            let Some(group) = state.groups.get_mut(group_id) else {
                return Started::Now(SyncResult::error(ErrorCode::UnknownMemberId));
            };
            let before = summary(Some(group));
            let replies = group.sync(
                member_id,
                instance,
                generation,
                protocol_type,
                protocol_name,
                assignments,
                token,
                now,
            );
            log_change(group_id, before, summary(Some(group)), "sync");
            let (tx, rx) = oneshot::channel();
            state.waiters.insert(token, Waiter::Sync(tx));
            // The assignment is written before anyone is told it; if it cannot be, nobody gets
            // it (NOT_COORDINATOR, as Kafka) and the group rebalances.
            let replies = if shard.persist_group(&mut state, group_id, now) {
                replies
            } else {
                let mut failed: Vec<Reply> = replies
                    .into_iter()
                    .map(|r| match r {
                        Reply::Sync(t, res) if res.error == ErrorCode::None => {
                            Reply::Sync(t, SyncResult::error(ErrorCode::NotCoordinator))
                        }
                        other => other,
                    })
                    .collect();
                if let Some(g) = state.groups.get_mut(group_id) {
                    failed.extend(g.rebalance(now));
                }
                failed
            };
            state.dispatch(replies);
            self.armed(state.reschedule(group_id));
            Started::Later(rx)
        }
    }

    pub fn heartbeat(
        &self,
        topics: &Topics,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
    ) -> ErrorCode {
        let shard = match self.shard(topics, group_id) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let mut state = shard.lock();
        match state.groups.get_mut(group_id) {
            None => ErrorCode::UnknownMemberId,
            Some(g) => g.heartbeat(member_id, instance, generation, self.clock.now_ms()),
        }
    }

    /// Returns the request-level error and one error per leaving member.
    pub fn leave(
        &self,
        topics: &Topics,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> (ErrorCode, Vec<ErrorCode>) {
        let shard = match self.shard(topics, group_id) {
            Ok(s) => s,
            Err(e) => return (e, vec![]),
        };
        let mut state = shard.lock();
        let now = self.clock.now_ms();
        let Some(g) = state.groups.get_mut(group_id) else {
            return (ErrorCode::None, vec![ErrorCode::UnknownMemberId; members.len()]);
        };
        let before = summary(Some(g));
        let (errors, replies) = g.leave(members, now);
        log_change(group_id, before, summary(Some(g)), "leave");
        state.dispatch(replies);
        shard.persist_group(&mut state, group_id, now);
        self.armed(state.reschedule(group_id));
        (ErrorCode::None, errors)
    }

    /// Commits offsets: the group-level check, then per partition (`OFFSET_METADATA_TOO_LARGE`,
    /// unknown topics), then one write for all that passed. Returns an error per offset.
    pub fn commit(
        &self,
        topics: &Topics,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation: i32,
        offsets: Vec<OffsetToCommit>,
    ) -> Vec<ErrorCode> {
        let all = |e: ErrorCode, n: usize| vec![e; n];
        let n = offsets.len();
        let shard = match self.shard(topics, group_id) {
            Ok(s) => s,
            Err(e) => return all(e, n),
        };
        let mut state = shard.lock();
        let now = self.clock.now_ms();
        let check = match state.groups.get_mut(group_id) {
            Some(g) => g.check_commit(member_id, instance, generation, now),
            // A consumer that assigns its own partitions stores offsets in a new group.
            None if generation < 0 => ErrorCode::None,
            None => ErrorCode::IllegalGeneration,
        };
        if check != ErrorCode::None {
            return all(check, n);
        }
        let mut errors = Vec::with_capacity(n);
        let mut records = vec![];
        let mut accepted = vec![];
        // Offsets of any partition of the cluster (a group's consumers read from every broker).
        let image = topics.metadata().image();
        for o in offsets {
            let exists = image
                .topic(&o.topic)
                .is_some_and(|t| t.partition(o.partition).is_some());
            let e = if !exists {
                ErrorCode::UnknownTopicOrPartition
            } else if o.offset.metadata.as_ref().map_or(0, |m| m.len()) > self.config.offset_metadata_bytes_max {
                ErrorCode::OffsetMetadataTooLarge
            } else {
                records.push((
                    store::offset_key(group_id, &o.topic, o.partition),
                    Some(store::offset_value(&o.offset)),
                ));
                accepted.push(o);
                ErrorCode::None
            };
            errors.push(e);
        }
        if let Err(e) = shard.write(&mut state, &records, now) {
            return errors
                .into_iter()
                .map(|x| if x == ErrorCode::None { e } else { x })
                .collect();
        }
        let g = state
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, now));
        for o in accepted {
            g.put_offset(&o.topic, o.partition, o.offset);
        }
        shard.maybe_compact(&mut state, now, self.config.compact_after_bytes);
        errors
    }

    /// Committed offsets of a group: the partitions asked for (`None`: every one it has).
    /// An unknown group has none; partitions without a commit come back as `None`.
    pub fn fetch_offsets(
        &self,
        topics: &Topics,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<CommittedByTopic, ErrorCode> {
        let shard = self.shard(topics, group_id)?;
        let state = shard.lock();
        let group = state.groups.get(group_id);
        Ok(match wanted {
            Some(wanted) => wanted
                .into_iter()
                .map(|(topic, parts)| {
                    let parts = parts
                        .into_iter()
                        .map(|p| (p, group.and_then(|g| g.offset(&topic, p)).cloned()))
                        .collect();
                    (topic, parts)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, Option<CommittedOffset>)>> = BTreeMap::new();
                for ((topic, p), o) in group.into_iter().flat_map(|g| g.offsets()) {
                    by_topic.entry(topic.clone()).or_default().push((*p, Some(o.clone())));
                }
                by_topic.into_iter().collect()
            }
        })
    }

    pub fn describe(&self, topics: &Topics, group_id: &str) -> Result<Option<GroupDescription>, ErrorCode> {
        let shard = self.shard(topics, group_id)?;
        let state = shard.lock();
        Ok(state.groups.get(group_id).map(|g| GroupDescription {
            state: g.state().name(),
            protocol_type: g.protocol_type().unwrap_or("").to_string(),
            protocol_data: if g.state() == super::state::GroupState::Stable {
                g.protocol_name().unwrap_or("").to_string()
            } else {
                String::new()
            },
            members: g.member_summaries(),
        }))
    }

    /// Every group: id, protocol type, state. Nothing if no group was ever made.
    pub fn list(&self) -> Vec<(String, String, &'static str)> {
        let Some(shards) = self.shards.get() else {
            return vec![];
        };
        let mut all = vec![];
        for s in shards {
            for (id, g) in &s.lock().groups {
                all.push((
                    id.clone(),
                    g.protocol_type().unwrap_or("").to_string(),
                    g.state().name(),
                ));
            }
        }
        all.sort();
        all
    }

    /// Every group's member count and committed offsets, for metrics.
    pub fn lag_snapshot(&self) -> Vec<GroupOffsets> {
        let Some(shards) = self.shards.get() else {
            return vec![];
        };
        let mut all = vec![];
        for s in shards {
            for (id, g) in &s.lock().groups {
                all.push(GroupOffsets {
                    id: id.clone(),
                    members: g.member_count(),
                    offsets: g.offsets().map(|((t, p), o)| (t.clone(), *p, o.offset)).collect(),
                });
            }
        }
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    pub fn delete_group(&self, topics: &Topics, group_id: &str) -> ErrorCode {
        let shard = match self.shard(topics, group_id) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let mut state = shard.lock();
        let now = self.clock.now_ms();
        let Some(g) = state.groups.get(group_id) else {
            return ErrorCode::GroupIdNotFound;
        };
        let e = g.check_delete();
        if e != ErrorCode::None {
            return e;
        }
        let mut records: Vec<(Bytes, Option<Bytes>)> = g
            .offsets()
            .map(|((t, p), _)| (store::offset_key(group_id, t, *p), None))
            .collect();
        records.push((store::group_key(group_id), None));
        if let Err(e) = shard.write(&mut state, &records, now) {
            return e;
        }
        state.groups.remove(group_id);
        state.persisted.remove(group_id);
        state.reschedule(group_id);
        ErrorCode::None
    }

    /// OffsetDelete: removes committed offsets of topics the group does not consume. Returns
    /// the group-level error, or one error per partition.
    pub fn delete_offsets(
        &self,
        topics: &Topics,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        let shard = self.shard(topics, group_id)?;
        let mut state = shard.lock();
        let now = self.clock.now_ms();
        let g = state.groups.get(group_id).ok_or(ErrorCode::GroupIdNotFound)?;
        let subscribed: Option<Vec<String>> = match g.state() {
            super::state::GroupState::Empty | super::state::GroupState::Dead => Some(vec![]),
            _ if g.protocol_type() == Some("consumer") => subscribed_topics(g),
            _ => return Err(ErrorCode::NonEmptyGroup),
        };
        let mut errors = vec![];
        let mut records = vec![];
        for (topic, p) in partitions {
            // Subscriptions that cannot be read count as covering every topic.
            let in_use = subscribed.as_ref().is_none_or(|s| s.contains(topic));
            if in_use {
                errors.push(ErrorCode::GroupSubscribedToTopic);
            } else {
                if g.offset(topic, *p).is_some() {
                    records.push((store::offset_key(group_id, topic, *p), None));
                }
                errors.push(ErrorCode::None);
            }
        }
        shard.write(&mut state, &records, now)?;
        if let Some(g) = state.groups.get_mut(group_id) {
            for ((topic, p), e) in partitions.iter().zip(&errors) {
                if *e == ErrorCode::None {
                    g.remove_offset(topic, *p);
                }
            }
        }
        Ok(errors)
    }

    /// At shutdown: answers every waiting JoinGroup and SyncGroup with `NOT_COORDINATOR` (the
    /// client looks for the coordinator again), so connections are not held until the grace
    /// period ends, and refuses group requests from now on.
    pub fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        let Some(shards) = self.shards.get() else {
            return;
        };
        for s in shards {
            let mut state = s.lock();
            for (_, w) in std::mem::take(&mut state.waiters) {
                match w {
                    Waiter::Join(tx) => {
                        let _ = tx.send(JoinResult::error(ErrorCode::NotCoordinator, ""));
                    }
                    Waiter::Sync(tx) => {
                        let _ = tx.send(SyncResult::error(ErrorCode::NotCoordinator));
                    }
                }
            }
        }
    }

    /// Tells the timer loop about a group's new deadline, waking it when that is earlier than
    /// the one it sleeps until.
    fn armed(&self, at: Option<i64>) {
        if at.is_some_and(|at| at < self.armed_ms.load(Ordering::Acquire)) {
            self.timers_changed.notify_one();
        }
    }

    /// Advances the timers (session, join and sync timeouts, lapsed member ids) of the groups
    /// whose deadline has come, and only those. Returns the earliest deadline still filed.
    pub fn tick_due(&self) -> Option<i64> {
        let shards = self.shards.get()?;
        let now = self.clock.now_ms();
        let mut next: Option<i64> = None;
        for s in shards {
            let mut state = s.lock();
            while let Some((at, id)) = state.timers.first().cloned() {
                if at > now {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    break;
                }
                state.timers.pop_first();
                state.scheduled.remove(&id);
                if let Some(g) = state.groups.get_mut(&id) {
                    let before = summary(Some(g));
                    let replies = g.tick(now);
                    log_change(&id, before, summary(Some(g)), "timer");
                    if !replies.is_empty() {
                        state.dispatch(replies);
                    }
                    s.persist_group(&mut state, &id, now);
                }
                // Filed again under its next deadline (a later one: `tick` handled all up to now).
                state.reschedule(&id);
            }
        }
        self.armed_ms.store(next.unwrap_or(i64::MAX), Ordering::Release);
        next
    }

    /// Sleeps until `deadline_ms` (or `max`, whichever is sooner) or until a group files an
    /// earlier deadline.
    pub async fn wait_for_timers(&self, deadline_ms: Option<i64>, max: std::time::Duration) {
        let wait = deadline_ms.map_or(max, |at| {
            std::time::Duration::from_millis(at.saturating_sub(self.clock.now_ms()).max(0) as u64).min(max)
        });
        let _ = tokio::time::timeout(wait, self.timers_changed.notified()).await;
    }

    /// Expires offsets per `offsets.retention.minutes` and forgets `Empty` groups left with
    /// nothing (a tombstone for each). Returns how many offsets expired.
    pub fn expire_offsets(&self) -> usize {
        let Some(shards) = self.shards.get() else {
            return 0;
        };
        let now = self.clock.now_ms();
        let mut expired = 0;
        for s in shards {
            let mut state = s.lock();
            let mut records = vec![];
            // (group, its expired offsets, whether the group goes too)
            let mut changes = vec![];
            for (id, g) in &state.groups {
                let keys = g.expired_offsets(now, self.config.offsets_retention_ms);
                let group_goes = g.is_disposable_without(keys.len());
                if keys.is_empty() && !group_goes {
                    continue;
                }
                records.extend(keys.iter().map(|(t, p)| (store::offset_key(id, t, *p), None)));
                if group_goes {
                    records.push((store::group_key(id), None));
                }
                changes.push((id.clone(), keys, group_goes));
            }
            if s.write(&mut state, &records, now).is_err() {
                continue;
            }
            for (id, keys, group_goes) in changes {
                expired += keys.len();
                if group_goes {
                    state.groups.remove(&id);
                    state.persisted.remove(&id);
                } else if let Some(g) = state.groups.get_mut(&id) {
                    for (t, p) in keys {
                        g.remove_offset(&t, p);
                    }
                }
            }
        }
        expired
    }
}

/// Topics named by the consumer-protocol subscriptions of a group's members; `None` if one
/// cannot be read.
fn subscribed_topics(g: &Group) -> Option<Vec<String>> {
    use wire::messages::ConsumerProtocolSubscription;
    use wire::Decode;
    let mut topics = vec![];
    for mut m in g.member_metadata() {
        let version = wire::codec::get_i16(&mut m).ok()?;
        let s = ConsumerProtocolSubscription::decode(&mut m, version.clamp(0, 3)).ok()?;
        topics.extend(s.topics);
    }
    Some(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_match_kafkas_hash() {
        // Java: "my-group".hashCode() == -1906497762, so partition 1906497762 % 50.
        assert_eq!(partition_for("my-group", 50), 12);
        assert_eq!(partition_for("", 50), 0);
        // "polygenelubricants".hashCode() is Integer.MIN_VALUE, which Kafka maps to 0.
        assert_eq!(partition_for("polygenelubricants", 50), 0);
    }

    /// The coordinator appends through the one leader path: a commit moves the high watermark
    /// of its `__consumer_offsets` partition and wakes a fetch waiting there (and only there),
    /// also when `flush.messages` makes it wait for an fsync.
    #[tokio::test]
    async fn a_commit_wakes_a_fetch_waiting_on_its_offsets_partition() {
        let dir = std::env::temp_dir().join(format!("sluice-coordinator-wake-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dir = dir.as_path();
        let fs = storage::default_fs();
        let mut defaults = crate::ConfigLayers::new().build().unwrap().topic_defaults;
        defaults.configs.insert("flush.messages".into(), "1".into());
        let metadata = Arc::new(
            crate::metadata_log::MetadataLog::open(dir, fs.clone(), u64::MAX)
                .unwrap()
                .log,
        );
        let topics = Topics::open(
            dir,
            defaults,
            false,
            fs,
            metadata,
            1,
            Arc::new(crate::clock::SystemClock::new()),
            Arc::new(crate::random::Random::seeded(1)),
        )
        .unwrap();
        topics.create("t", 1, 1, None, BTreeMap::new()).unwrap();
        let other = topics.get("t").unwrap().partitions[0].clone();
        let config = GroupConfig {
            offsets_partitions: 1,
            ..Default::default()
        };
        let c = Coordinator::open(&topics, config, Arc::new(crate::clock::SystemClock::new())).unwrap();
        assert_eq!(c.ready(&topics), Ok(()));
        let offsets = topics.get(CONSUMER_OFFSETS).unwrap().partitions[0].clone();
        let (on_offsets, on_other) = (
            Arc::new(tokio::sync::Notify::new()),
            Arc::new(tokio::sync::Notify::new()),
        );
        offsets.wake_on_data(&on_offsets);
        other.wake_on_data(&on_other);
        let before = offsets.high_watermark();
        let commit = OffsetToCommit {
            topic: "t".into(),
            partition: 0,
            offset: CommittedOffset {
                offset: 7,
                leader_epoch: -1,
                metadata: None,
                commit_timestamp: 0,
            },
        };
        let topics = Arc::new(topics);
        let c = Arc::new(c);
        let (t2, c2) = (topics.clone(), c.clone());
        let errors = tokio::task::spawn_blocking(move || c2.commit(&t2, "g", "", None, -1, vec![commit]))
            .await
            .unwrap();
        assert_eq!(errors, vec![ErrorCode::None]);
        let end = offsets.lock().log.log_end_offset();
        assert!(end > before);
        assert_eq!(offsets.high_watermark(), end, "the high watermark moved to the log end");
        assert_eq!(
            offsets.commit.durable_end(),
            end,
            "flush.messages = 1: durable before the answer"
        );
        let quick = std::time::Duration::from_millis(20);
        assert!(
            tokio::time::timeout(quick, on_offsets.notified()).await.is_ok(),
            "the fetch on __consumer_offsets wakes"
        );
        assert!(
            tokio::time::timeout(quick, on_other.notified()).await.is_err(),
            "another partition's does not"
        );
        drop((c, topics));
        let _ = std::fs::remove_dir_all(dir);
    }
}
