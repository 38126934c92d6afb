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

use crate::producers::ProducerStates;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use storage::{GroupCommit, Log, StorageError};
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
pub fn read_hw_checkpoint(fs: &dyn storage::Fs, dir: &std::path::Path) -> std::collections::HashMap<(String, i32), i64> {
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

/// Writes `replication-offset-checkpoint`: temp file, fsync, rename, fsync of the directory.
pub fn write_hw_checkpoint(fs: &dyn storage::Fs, dir: &std::path::Path, entries: &[(String, i32, i64)]) -> Result<(), String> {
    let mut text = format!("0\n{}\n", entries.len());
    for (t, p, o) in entries {
        text.push_str(&format!("{t} {p} {o}\n"));
    }
    let path = dir.join(HW_CHECKPOINT);
    let tmp = dir.join(format!("{HW_CHECKPOINT}.tmp"));
    let io = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let f = fs.open(&tmp, storage::OpenMode::Truncate).map_err(io)?;
    f.write_all_at(text.as_bytes(), 0).map_err(io)?;
    f.sync_data().map_err(io)?;
    drop(f);
    fs.rename(&tmp, &path).map_err(io)?;
    fs.sync_dir(dir).map_err(io)
}

#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub leader_epoch: i32,
    pub(crate) role: Role,
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
            leader_epoch,
            role: Role::Follower,
            state: Mutex::new(PartitionState { log, producers }),
            high_watermark: AtomicI64::new(high_watermark),
            // `Log::open` synced what it found.
            commit: GroupCommit::new(end, crate::group::coordinator::now_ms()),
            waiting_fetches: Mutex::default(),
        }
    }

    /// Becomes the leader with itself as the whole ISR (one node): the high watermark is the
    /// lowest log end of the ISR (Kafka's `maybeIncrementLeaderHW` on becoming leader), so its
    /// own.
    pub fn lead_alone(mut self) -> Partition {
        self.role = Role::Leader;
        let end = self.state.get_mut().unwrap_or_else(|p| p.into_inner()).log.log_end_offset();
        self.advance_high_watermark(end);
        self
    }

    pub fn role(&self) -> Role {
        self.role
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
        if log_end > prev {
            self.wake_fetches();
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use storage::sim::SimFs;
    use storage::Fs;

    #[test]
    fn the_high_watermark_checkpoint_is_kafkas_file_and_a_damaged_one_is_ignored() {
        let fs = SimFs::new();
        let dir = Path::new("/data");
        fs.create_dir_all(dir).unwrap();
        let entries = vec![("orders".to_string(), 0, 42), ("orders".to_string(), 1, 0), ("a.b".to_string(), 7, 9)];
        write_hw_checkpoint(&fs, dir, &entries).unwrap();
        let text = String::from_utf8(fs.read_all(&dir.join(HW_CHECKPOINT)).unwrap()).unwrap();
        assert_eq!(text, "0\n3\norders 0 42\norders 1 0\na.b 7 9\n");
        let read = read_hw_checkpoint(&fs, dir);
        assert_eq!(read.len(), 3);
        assert_eq!(read[&("orders".to_string(), 0)], 42);
        for bad in ["1\n1\nt 0 5\n", "0\n2\nt 0 5\n", "0\n1\nt x 5\n", "0\n1\nt 0 -1\n", "0\n1\nt 0 5 6\n", ""] {
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
        let open = |log, hw| Partition::open("p", 0, 0, log, ProducerStates::default(), hw);
        let p = open(log, Some(99));
        assert_eq!((p.high_watermark(), p.role()), (3, Role::Follower), "never above the log end");
        let log = std::mem::replace(&mut p.lock().log, Log::open_on(&fs, Path::new("/q-0"), Default::default(), false).unwrap());
        drop(p);
        let p = open(log, None);
        assert_eq!(p.high_watermark(), 0, "without a checkpoint: the log start");
        let p = p.lead_alone();
        assert_eq!((p.high_watermark(), p.role()), (3, Role::Leader));
    }
}
