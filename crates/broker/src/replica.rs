//! The replica layer: one partition's replica on this node (`Partition`: its log, producer
//! state, role, leader epoch and high watermark) and the high-watermark checkpoint.
//!
//! A single node leads every partition and is its whole ISR, but the shape is the replicated
//! one: the high watermark is its own value beside the log end, restored at start from Kafka's
//! `replication-offset-checkpoint` (never above the log end), and moved by the leader from the
//! log ends of its ISR — here only its own, so `become_leader` and every append bring it to the
//! log end at once. Consumers read below it; replicas (later) read to the log end.
//!
//! Invariants, asserted in release builds: log start ≤ high watermark ≤ log end; the high
//! watermark never moves back except when the log is cut at open; the leader epoch never
//! goes back.
//!
//! **The one append path** (Kafka's `ReplicaManager.appendRecords` → `Partition.appendRecordsToLeader`):
//! `Partition::append_as_leader` is how produce and the group coordinator write to a partition
//! this node leads. It refuses when this node is not the leader, appends under the partition
//! lock (the caller's admission check — produce's idempotence — runs under the same lock),
//! moves the high watermark (one node: the ISR is itself, so to the log end), which wakes the
//! fetches waiting on this partition, logs storage errors at most once a minute, and says what
//! the append needs before it may be acknowledged (`Ack`): nothing, or every offset below N
//! acknowledgeable (the log's `flush.messages` asks for an fsync).
//!
//! **The produce purgatory** (Kafka's `DelayedProduce`, keyed by partition): a produce that
//! must wait registers a oneshot keyed by the offset it needs (`Partition::wait_for_ack`) in
//! this partition's ordered map, and awaits it on its async worker with the request's
//! deadline; no thread is held per request. The completion condition is one watermark,
//! `Partition::ack_watermark` (today the durable end; with replication the high watermark
//! too): whenever it moves, every waiter at or below it completes, and no other partition's
//! waiters are looked at. One fsync task per partition at a time runs on the blocking pool
//! (`run_fsyncs`) while waiters exist: each fsync covers everything appended by then, then
//! completes every waiter it covered; a failed fsync fails every waiter (KAFKA_STORAGE_ERROR)
//! and the partition stays failed (`GroupCommit`). A waiter past its deadline answers
//! REQUEST_TIMED_OUT; its records stay appended.

use crate::producers::ProducerStates;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use storage::{GroupCommit, Log, StorageError};
use tokio::sync::oneshot;
use wire::ErrorCode;

/// This node's part in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Takes appends from clients; moves the high watermark from its ISR's log ends.
    Leader,
    /// Fetches from the leader (replication, next issue); never appended to by clients.
    Follower,
}

/// What a partition's lock guards: the log and the producer state that must change with it.
#[derive(Debug)]
pub struct PartitionState {
    pub log: Log,
    pub producers: ProducerStates,
}

/// One partition: its log and its replication state.
/// Kafka's high-watermark checkpoint in the data directory.
pub const HW_CHECKPOINT: &str = "replication-offset-checkpoint";

/// Reads `replication-offset-checkpoint` (version 0, a count, then `topic partition offset`
/// lines). A missing or unreadable file gives nothing: each partition then starts from its
/// log start offset, and its leader moves the high watermark up (a warning says why).
pub fn read_hw_checkpoint(
    fs: &dyn storage::Fs,
    dir: &std::path::Path,
) -> std::collections::HashMap<(String, i32), i64> {
    let path = dir.join(HW_CHECKPOINT);
    let text = match fs.read_all(&path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Default::default(),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the high-watermark checkpoint");
            return Default::default();
        }
    };
    let parse = || -> Option<std::collections::HashMap<(String, i32), i64>> {
        let mut lines = text.lines();
        if lines.next()?.trim() != "0" {
            return None;
        }
        let count: usize = lines.next()?.trim().parse().ok()?;
        let mut out = std::collections::HashMap::new();
        for line in lines.by_ref().take(count) {
            let mut f = line.split(' ');
            let (t, p, o) = (f.next()?, f.next()?.parse().ok()?, f.next()?.parse().ok()?);
            if f.next().is_some() || o < 0 {
                return None;
            }
            out.insert((t.to_string(), p), o);
        }
        (out.len() == count).then_some(out)
    };
    parse().unwrap_or_else(|| {
        tracing::warn!(file = %path.display(), "the high-watermark checkpoint is damaged: ignored (partitions start from their log start, and their leader moves the high watermark up)");
        Default::default()
    })
}

/// Writes `replication-offset-checkpoint` atomically (`Fs::write_atomically`).
pub fn write_hw_checkpoint(
    fs: &dyn storage::Fs,
    dir: &std::path::Path,
    entries: &[(String, i32, i64)],
) -> Result<(), String> {
    let mut text = format!("0\n{}\n", entries.len());
    for (t, p, o) in entries {
        text.push_str(&format!("{t} {p} {o}\n"));
    }
    let path = dir.join(HW_CHECKPOINT);
    fs.write_atomically(&path, text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
    /// The partition's leader epoch as this node last learned it (the metadata image's).
    leader_epoch: std::sync::atomic::AtomicI32,
    /// Whether this node leads the partition (`Role::Leader`): set from the image.
    leading: AtomicBool,
    /// The broker's clock: fsync times (`flush.ms`) and the once-a-minute error reports.
    clock: Arc<dyn crate::clock::Clock>,
    pub(crate) state: Mutex<PartitionState>,
    pub(crate) high_watermark: AtomicI64,
    /// fsyncs of the log, shared by concurrent appends (`flush.messages`, `flush.ms`).
    pub commit: GroupCommit,
    /// Set while rolled segments wait to be sealed (see `storage::Log::take_seal`).
    pub(crate) seal_pending: Arc<AtomicBool>,
    /// When a failed seal was last reported (ms since the epoch).
    pub(crate) seal_failure_reported_ms: AtomicI64,
    /// When a failed append or read was last logged (ms since the epoch).
    pub(crate) storage_error_reported_ms: AtomicI64,
    /// Bytes and records appended and fetched, for metrics.
    pub traffic: crate::metrics::Traffic,
    /// Long-polling fetches waiting for this partition's high watermark to move (Kafka's
    /// fetch purgatory, keyed by partition): an append wakes only the fetches that asked for
    /// this partition.
    pub(crate) waiting_fetches: Mutex<FetchWaiters>,
    /// Produces waiting for `ack_watermark` to reach their offset (the produce purgatory).
    pub(crate) purgatory: Mutex<ProducePurgatory>,
}

/// What an append needs before it may be acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Nothing: it may be answered at once (one node: the whole ISR has it).
    Now,
    /// Every offset below this must be under `Partition::ack_watermark` first.
    Below(i64),
}

/// A leader's append that was made (or found to be made already: a duplicate).
#[derive(Debug, Clone, Copy)]
pub struct LeaderAppend {
    pub base_offset: i64,
    pub log_start_offset: i64,
    pub ack: Ack,
}

/// What the caller's admission check (run under the partition lock) decided.
pub enum Admit {
    Append,
    /// Already in the log at `base_offset` (an idempotent retry): nothing is appended, and the
    /// answer waits by the same rule as the original.
    Duplicate {
        base_offset: i64,
    },
}

/// Why an append as leader was not made.
#[derive(Debug)]
pub enum AppendError<E> {
    /// This node does not lead the partition (NOT_LEADER_OR_FOLLOWER to a client).
    NotLeader,
    /// The log refused the write or failed before (KAFKA_STORAGE_ERROR to a client).
    Storage(String),
    /// The caller's admission check refused it.
    Refused(E),
}

/// Why a waiting append was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckError {
    /// Its deadline passed first (REQUEST_TIMED_OUT); the records stay appended.
    TimedOut,
    /// The purgatory of its partition was full (REQUEST_TIMED_OUT at once).
    Full,
    /// The fsync failed, now or before (KAFKA_STORAGE_ERROR).
    Storage(String),
}

/// The most produces waiting on one partition. Each waiter is one request of one connection
/// (one request in flight per connection), so this is reached only with thousands of
/// connections producing to one partition under `flush.messages`. At the limit a new waiter is
/// not registered: its produce is answered REQUEST_TIMED_OUT at once (retriable; the records
/// stay appended, and an idempotent retry is answered as a duplicate once durable).
pub const PRODUCE_WAITERS_MAX: usize = 10_000;

/// The produce purgatory of one partition: waiters by (offset needed, registration number).
#[derive(Debug, Default)]
pub(crate) struct ProducePurgatory {
    waiters: BTreeMap<(i64, u64), oneshot::Sender<Result<(), String>>>,
    next_id: u64,
    /// An fsync task (`Partition::run_fsyncs`) is on the blocking pool for this partition.
    fsync_running: bool,
}

impl ProducePurgatory {
    /// Completes every waiter whose offset `watermark` reached; the others stay.
    fn complete_to(&mut self, watermark: i64) {
        let later = self.waiters.split_off(&(watermark.saturating_add(1), 0));
        for tx in std::mem::replace(&mut self.waiters, later).into_values() {
            // The request may have ended (its client went away): nothing to answer.
            let _ = tx.send(Ok(()));
        }
    }

    fn fail_all(&mut self, message: &str) {
        for tx in std::mem::take(&mut self.waiters).into_values() {
            let _ = tx.send(Err(message.to_string()));
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.waiters.len()
    }
}

/// A registered wait for an append's acknowledgement (`Partition::wait_for_ack`).
#[derive(Debug)]
pub enum AckWait {
    Ready(Result<(), AckError>),
    Waiting {
        partition: Arc<Partition>,
        key: (i64, u64),
        rx: oneshot::Receiver<Result<(), String>>,
    },
}

impl AckWait {
    /// Waits (asynchronously, holding no thread) until the append may be acknowledged, or
    /// `deadline` (Kafka's produce `timeout_ms`) passes: then `TimedOut`, exactly at it.
    pub async fn until(self, deadline: tokio::time::Instant) -> Result<(), AckError> {
        let (partition, key, mut rx) = match self {
            AckWait::Ready(r) => return r,
            AckWait::Waiting { partition, key, rx } => (partition, key, rx),
        };
        let lost = || AckError::Storage("the fsync task ended without an answer".into());
        match tokio::time::timeout_at(deadline, &mut rx).await {
            Ok(Ok(r)) => r.map_err(AckError::Storage),
            Ok(Err(_)) => Err(lost()),
            Err(_) => {
                // Taken off the purgatory, or completed meanwhile: then its answer is there.
                if partition.purgatory_lock().waiters.remove(&key).is_some() {
                    Err(AckError::TimedOut)
                } else {
                    rx.try_recv().map_err(|_| lost())?.map_err(AckError::Storage)
                }
            }
        }
    }
}

/// The wake-ups of fetches waiting on one partition. Entries of fetches that ended are pruned
/// whenever the list doubles since the last pruning, so it stays within twice the fetches
/// really waiting.
#[derive(Debug, Default)]
pub(crate) struct FetchWaiters {
    pub(crate) wakers: Vec<std::sync::Weak<tokio::sync::Notify>>,
    prune_at: usize,
}

impl Partition {
    /// A partition's replica on this node, over its opened `log`: a follower until told to
    /// lead, its high watermark the checkpointed one (never outside the log).
    pub fn open(
        topic: &str,
        index: i32,
        leader_epoch: i32,
        log: Log,
        producers: ProducerStates,
        checkpointed_high_watermark: Option<i64>,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> Partition {
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        let high_watermark = checkpointed_high_watermark.unwrap_or(start).clamp(start, end);
        let seal_pending = log.seal_pending();
        Partition {
            seal_pending,
            seal_failure_reported_ms: AtomicI64::new(i64::MIN),
            storage_error_reported_ms: AtomicI64::new(i64::MIN),
            traffic: Default::default(),
            topic: topic.to_string(),
            index,
            leader_epoch: std::sync::atomic::AtomicI32::new(leader_epoch),
            leading: AtomicBool::new(false),
            state: Mutex::new(PartitionState { log, producers }),
            high_watermark: AtomicI64::new(high_watermark),
            // `Log::open` synced what it found.
            commit: GroupCommit::new(end, clock.now_ms()),
            clock,
            waiting_fetches: Mutex::default(),
            purgatory: Mutex::default(),
        }
    }

    /// The one append path for a partition this node leads (clients and coordinators alike).
    /// `admit` runs under the partition lock before the append (produce's idempotence check);
    /// `appended` runs under it after (recording the producer's sequence). Moves the high
    /// watermark — one node: the ISR is itself, so to the log end — which wakes the fetches
    /// waiting on this partition, and says what the append needs before it is acknowledged:
    /// `Ack::Below(end)` when the log's `flush.messages` records (or more) are not yet on disk.
    pub fn append_as_leader<E>(
        &self,
        batch: Bytes,
        now: i64,
        admit: impl FnOnce(&mut PartitionState) -> Result<Admit, E>,
        appended: impl FnOnce(&mut PartitionState, &storage::AppendInfo),
    ) -> Result<LeaderAppend, AppendError<E>> {
        if !self.leading.load(Ordering::Acquire) {
            return Err(AppendError::NotLeader);
        }
        if self.commit.failed() {
            return Err(AppendError::Storage(
                "an fsync of this partition's log failed: it takes no writes until the broker restarts".into(),
            ));
        }
        let mut state = self.lock();
        let base_offset = match admit(&mut state).map_err(AppendError::Refused)? {
            Admit::Duplicate { base_offset } => base_offset,
            Admit::Append => {
                let info = state.log.append(batch, self.leader_epoch(), now).map_err(|e| {
                    if matches!(e, StorageError::Io { .. } | StorageError::Failed) {
                        self.report_storage_error("an append", &e);
                    }
                    AppendError::Storage(e.to_string())
                })?;
                assert!(
                    info.last_offset < state.log.log_end_offset(),
                    "an appended batch ends below the log end"
                );
                appended(&mut state, &info);
                self.advance_high_watermark(state.log.log_end_offset());
                info.base_offset
            }
        };
        let end = state.log.log_end_offset();
        let flush_messages = state.log.config().flush_messages;
        let log_start_offset = state.log.log_start_offset();
        drop(state);
        let ack = if end - self.commit.durable_end() >= flush_messages {
            Ack::Below(end)
        } else {
            Ack::Now
        };
        Ok(LeaderAppend {
            base_offset,
            log_start_offset,
            ack,
        })
    }

    /// The offset below which appends may be acknowledged: what the produce purgatory's
    /// waiters wait for. Today the durable end (`flush.messages`), never above the high
    /// watermark; with replication acks=all waits for the high watermark, and whatever moves
    /// it calls `complete_waiters` too.
    pub fn ack_watermark(&self) -> i64 {
        self.commit.durable_end().min(self.high_watermark())
    }

    pub(crate) fn purgatory_lock(&self) -> MutexGuard<'_, ProducePurgatory> {
        self.purgatory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Completes every produce waiting on this partition that `ack_watermark` reached.
    pub fn complete_waiters(&self) {
        let mark = self.ack_watermark();
        self.purgatory_lock().complete_to(mark);
    }

    /// Registers a wait until every offset below `end` may be acknowledged (call after the
    /// append, on a tokio runtime). Starts this partition's fsync task if none runs.
    pub fn wait_for_ack(self: &Arc<Self>, end: i64) -> AckWait {
        if self.commit.failed() {
            return AckWait::Ready(Err(AckError::Storage(StorageError::Failed.to_string())));
        }
        if self.ack_watermark() >= end {
            return AckWait::Ready(Ok(()));
        }
        let (tx, rx) = oneshot::channel();
        let mut p = self.purgatory_lock();
        if p.waiters.len() >= PRODUCE_WAITERS_MAX {
            return AckWait::Ready(Err(AckError::Full));
        }
        let key = (end, p.next_id);
        p.next_id += 1;
        p.waiters.insert(key, tx);
        if !p.fsync_running {
            p.fsync_running = true;
            let me = self.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || me.run_fsyncs())),
                // Not on a runtime (never in the broker): fsync here.
                Err(_) => {
                    drop(p);
                    me.run_fsyncs();
                }
            }
        }
        AckWait::Waiting {
            partition: self.clone(),
            key,
            rx,
        }
    }

    /// This partition's fsync task (blocking pool): while produces wait, fsyncs everything
    /// appended so far (sharing the fsync with any other caller through `GroupCommit`), then
    /// completes every waiter it covered; a failure fails them all. Ends when none waits.
    fn run_fsyncs(&self) {
        loop {
            let end = self.lock().log.log_end_offset();
            let synced = self.sync_to(end);
            let mut p = self.purgatory_lock();
            match synced {
                Ok(()) => p.complete_to(self.ack_watermark()),
                Err(e) => {
                    self.report_storage_error("an fsync", &e);
                    p.fail_all(&e.to_string());
                }
            }
            if p.waiters.is_empty() {
                p.fsync_running = false;
                return;
            }
        }
    }

    /// Waits until every offset below `end` may be acknowledged, for callers already on the
    /// blocking pool (the group coordinator): fsyncs in place (one fsync at a time per
    /// partition: `GroupCommit` shares it with the fsync task), then completes whatever else
    /// that covered.
    pub fn wait_for_ack_blocking(&self, end: i64) -> Result<(), StorageError> {
        let r = self.sync_to(end);
        match &r {
            Ok(()) => self.complete_waiters(),
            Err(e) => self.report_storage_error("an fsync", e),
        }
        r
    }

    /// Becomes the leader with itself as the whole ISR (one node): the high watermark is the
    /// lowest log end of the ISR (Kafka's `maybeIncrementLeaderHW` on becoming leader), so its
    /// own.
    pub fn lead_alone(mut self) -> Partition {
        *self.leading.get_mut() = true;
        let end = self
            .state
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .log
            .log_end_offset();
        self.advance_high_watermark(end);
        self
    }

    pub fn role(&self) -> Role {
        if self.leading.load(Ordering::Acquire) {
            Role::Leader
        } else {
            Role::Follower
        }
    }

    /// The leader epoch as this node knows it.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    /// Takes the image's word on this partition: its leader epoch, and whether this node
    /// leads it (with one replica, it does unless the controller took the leadership away
    /// while this broker was fenced; a follower takes no appends). Under the partition's lock,
    /// so no append straddles the change.
    pub fn set_leadership(&self, leading: bool, epoch: i32) {
        let _state = self.lock();
        self.leader_epoch.store(epoch, Ordering::Release);
        self.leading.store(leading, Ordering::Release);
    }

    /// Wakes `waker` (once) when the high watermark next moves. Call before reading, so an
    /// append between the read and the wait is not missed (`Notify` keeps one wake-up).
    pub fn wake_on_data(&self, waker: &Arc<tokio::sync::Notify>) {
        let mut w = self.waiting_fetches.lock().unwrap_or_else(|p| p.into_inner());
        if w.wakers.len() >= w.prune_at.max(16) {
            w.wakers.retain(|x| x.strong_count() > 0);
            w.prune_at = w.wakers.len() * 2;
        }
        w.wakers.push(Arc::downgrade(waker));
    }

    fn wake_fetches(&self) {
        let wakers = std::mem::take(&mut self.waiting_fetches.lock().unwrap_or_else(|p| p.into_inner()).wakers);
        for w in wakers.iter().filter_map(std::sync::Weak::upgrade) {
            w.notify_one();
        }
    }

    /// The log and producer state, locked. Appends and reads are short file operations done
    /// under this lock.
    pub fn lock(&self) -> MutexGuard<'_, PartitionState> {
        // A panic while holding the lock leaves the log as consistent as any crash would;
        // keep serving rather than poisoning every later request.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks the leader epoch a client believes current (-1: it does not say).
    pub fn check_leader_epoch(&self, current: i32) -> Result<(), ErrorCode> {
        let epoch = self.leader_epoch();
        if current > epoch {
            Err(ErrorCode::UnknownLeaderEpoch)
        } else if current >= 0 && current < epoch {
            Err(ErrorCode::FencedLeaderEpoch)
        } else {
            Ok(())
        }
    }

    /// Whether this node may serve clients' reads of the partition: the leader epoch a client
    /// believes current checks out, and this node leads (consumers read from the leader).
    pub fn check_serves_clients(&self, current: i32) -> Result<(), ErrorCode> {
        self.check_leader_epoch(current)?;
        if self.role() != Role::Leader {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        Ok(())
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
        let now = self.clock.now_ms();
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
        self.commit
            .sync_to(end_offset, || self.clock.now_ms(), || self.lock().log.sync_target())
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
        if log_end > prev {
            self.wake_fetches();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys() -> Arc<dyn crate::clock::Clock> {
        Arc::new(crate::clock::SystemClock::new())
    }
    use std::path::Path;
    use storage::sim::SimFs;
    use storage::Fs;

    #[test]
    fn the_high_watermark_checkpoint_is_kafkas_file_and_a_damaged_one_is_ignored() {
        let fs = SimFs::new();
        let dir = Path::new("/data");
        fs.create_dir_all(dir).unwrap();
        let entries = vec![
            ("orders".to_string(), 0, 42),
            ("orders".to_string(), 1, 0),
            ("a.b".to_string(), 7, 9),
        ];
        write_hw_checkpoint(&fs, dir, &entries).unwrap();
        let text = String::from_utf8(fs.read_all(&dir.join(HW_CHECKPOINT)).unwrap()).unwrap();
        assert_eq!(text, "0\n3\norders 0 42\norders 1 0\na.b 7 9\n");
        let read = read_hw_checkpoint(&fs, dir);
        assert_eq!(read.len(), 3);
        assert_eq!(read[&("orders".to_string(), 0)], 42);
        for bad in [
            "1\n1\nt 0 5\n",
            "0\n2\nt 0 5\n",
            "0\n1\nt x 5\n",
            "0\n1\nt 0 -1\n",
            "0\n1\nt 0 5 6\n",
            "",
        ] {
            let f = fs.open(&dir.join(HW_CHECKPOINT), storage::OpenMode::Truncate).unwrap();
            f.write_all_at(bad.as_bytes(), 0).unwrap();
            assert!(read_hw_checkpoint(&fs, dir).is_empty(), "{bad:?}");
        }
        assert!(read_hw_checkpoint(&fs, Path::new("/nowhere")).is_empty());
    }

    #[test]
    fn a_restored_high_watermark_stays_within_the_log_and_leading_alone_brings_it_to_the_end() {
        let fs: Arc<dyn storage::Fs> = Arc::new(SimFs::new());
        let mut log = Log::open_on(&fs, Path::new("/p-0"), Default::default(), false).unwrap();
        for _ in 0..3 {
            let mut b = wire::records::BatchBuilder::new(wire::Compression::None);
            b.push(0, None, Some(b"v"), &[]);
            log.append(b.build(), 0, 0).unwrap();
        }
        let open = |log, hw| Partition::open("p", 0, 0, log, ProducerStates::default(), hw, sys());
        let p = open(log, Some(99));
        assert_eq!(
            (p.high_watermark(), p.role()),
            (3, Role::Follower),
            "never above the log end"
        );
        let log = std::mem::replace(
            &mut p.lock().log,
            Log::open_on(&fs, Path::new("/q-0"), Default::default(), false).unwrap(),
        );
        drop(p);
        let p = open(log, None);
        assert_eq!(p.high_watermark(), 0, "without a checkpoint: the log start");
        let p = p.lead_alone();
        assert_eq!((p.high_watermark(), p.role()), (3, Role::Leader));
    }

    /// A partition on `fs` that leads alone, with `flush.messages` = 1 (every append waits).
    fn durable_partition(fs: &Arc<dyn storage::Fs>, dir: &str) -> Arc<Partition> {
        let config = storage::LogConfig {
            flush_messages: 1,
            ..Default::default()
        };
        let log = Log::open_on(fs, Path::new(dir), config, false).unwrap();
        Arc::new(Partition::open(dir, 0, 0, log, ProducerStates::default(), None, sys()).lead_alone())
    }

    fn one_record() -> Bytes {
        let mut b = wire::records::BatchBuilder::new(wire::Compression::None);
        b.push(0, None, Some(b"v"), &[]);
        b.build()
    }

    /// Appends one record as leader; the offset its acknowledgement needs.
    fn append(p: &Partition) -> i64 {
        let a = p
            .append_as_leader::<()>(one_record(), 0, |_| Ok(Admit::Append), |_, _| {})
            .unwrap();
        match a.ack {
            Ack::Below(end) => end,
            Ack::Now => panic!("flush.messages = 1 needs an fsync"),
        }
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    fn wait(
        p: &Arc<Partition>,
        end: i64,
        deadline: tokio::time::Instant,
    ) -> tokio::task::JoinHandle<Result<(), AckError>> {
        tokio::spawn(p.wait_for_ack(end).until(deadline))
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_produce_times_out_exactly_at_its_deadline_and_the_others_complete_with_the_fsync() {
        let fs: Arc<dyn storage::Fs> = Arc::new(SimFs::new());
        let p = durable_partition(&fs, "/t-0");
        let ends: Vec<i64> = (0..3).map(|_| append(&p)).collect();
        assert_eq!(ends, [1, 2, 3]);
        let start = tokio::time::Instant::now();
        let ms = std::time::Duration::from_millis;
        // The fsync task cannot take the log while this lock is held: its fsync is in flight.
        let held = p.lock();
        let early = wait(&p, 1, start + ms(100));
        let late = [wait(&p, 2, start + ms(500)), wait(&p, 3, start + ms(500))];
        settle().await;
        assert_eq!(p.purgatory_lock().len(), 3);
        tokio::time::advance(ms(99)).await;
        settle().await;
        assert!(!early.is_finished(), "not before its deadline");
        tokio::time::advance(ms(1)).await;
        settle().await;
        assert!(early.is_finished(), "exactly at its deadline");
        assert_eq!(early.await.unwrap(), Err(AckError::TimedOut));
        assert_eq!(p.purgatory_lock().len(), 2, "a timed-out waiter leaves the purgatory");
        assert!(late.iter().all(|h| !h.is_finished()));
        // The records stay appended; the fsync lands and completes the others.
        assert_eq!(held.log.log_end_offset(), 3);
        drop(held);
        for h in late {
            assert_eq!(h.await.unwrap(), Ok(()));
        }
        assert_eq!(
            tokio::time::Instant::now() - start,
            ms(100),
            "completed by the fsync, not a timer"
        );
        assert_eq!(p.commit.durable_end(), 3);
        assert_eq!(p.commit.sync_count(), 1, "one fsync covered every waiter");
        assert_eq!(p.purgatory_lock().len(), 0);
        // An append already durable is answered at once.
        assert!(matches!(p.wait_for_ack(2), AckWait::Ready(Ok(()))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_fsync_fails_every_waiter_and_the_partition_stays_failed() {
        let sim = Arc::new(SimFs::new());
        let fs: Arc<dyn storage::Fs> = sim.clone();
        let p = durable_partition(&fs, "/f-0");
        for _ in 0..3 {
            append(&p);
        }
        sim.fail(storage::sim::FaultOp::Sync, "/f-0", 1);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        let held = p.lock();
        let waiters: Vec<_> = (1..=3).map(|end| wait(&p, end, deadline)).collect();
        settle().await;
        drop(held);
        for h in waiters {
            assert!(
                matches!(h.await.unwrap(), Err(AckError::Storage(_))),
                "every waiter fails, none times out"
            );
        }
        assert!(p.commit.failed());
        assert_eq!(p.commit.durable_end(), 0, "nothing past the failure is durable");
        assert!(matches!(p.wait_for_ack(1), AckWait::Ready(Err(AckError::Storage(_)))));
        assert!(matches!(
            p.append_as_leader::<()>(one_record(), 0, |_| Ok(Admit::Append), |_, _| {}),
            Err(AppendError::Storage(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn one_partitions_fsync_completes_none_of_anothers_waiters() {
        let fs: Arc<dyn storage::Fs> = Arc::new(SimFs::new());
        let (x, y) = (durable_partition(&fs, "/x-0"), durable_partition(&fs, "/y-0"));
        assert_eq!((append(&x), append(&y)), (1, 1));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        // Y's fsync is held up; X's is not.
        let held = y.lock();
        let on_y = wait(&y, 1, deadline);
        let on_x = wait(&x, 1, deadline);
        assert_eq!(on_x.await.unwrap(), Ok(()));
        settle().await;
        assert!(!on_y.is_finished(), "X's fsync does not complete Y's waiter");
        assert_eq!(y.purgatory_lock().len(), 1);
        assert_eq!(y.commit.durable_end(), 0);
        drop(held);
        assert_eq!(on_y.await.unwrap(), Ok(()));
    }

    #[test]
    fn a_follower_refuses_appends() {
        let fs: Arc<dyn storage::Fs> = Arc::new(SimFs::new());
        let log = Log::open_on(&fs, Path::new("/r-0"), Default::default(), false).unwrap();
        let p = Partition::open("r", 0, 0, log, ProducerStates::default(), None, sys());
        assert!(matches!(
            p.append_as_leader::<()>(one_record(), 0, |_| Ok(Admit::Append), |_, _| {}),
            Err(AppendError::NotLeader)
        ));
        assert_eq!(p.lock().log.log_end_offset(), 0);
    }
}
