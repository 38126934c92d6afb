//! The metadata log, `<data dir>/__cluster_metadata-0`: every change to cluster state
//! (topics created and deleted, partitions added, topic and broker configs, producer-id
//! blocks, broker registrations) is one batch of Kafka's metadata records, committed by the
//! metadata quorum, then applied to the [`MetadataImage`] every cluster question is answered
//! from.
//!
//! The log belongs to the KRaft core (`raft` crate), which decides every offset and epoch;
//! this module carries out what the core asks ([`MetadataLog::carry_out`]: the `quorum-state`
//! file, appends, truncations, snapshots fetched from the leader, and the messages it sends,
//! through an [`Outbox`]) and applies what the quorum has committed to the image, in log order,
//! on every node alike: the image never holds a record above the high watermark.
//!
//! - **A node alone** (the single-node default): a quorum of one voter, elected at each start
//!   (a new leader epoch, written to `quorum-state` and marked in the log by a
//!   LeaderChangeMessage control batch, as Kafka's controllers do); every change is committed
//!   as soon as it is fsynced, and the whole log is the image at start.
//! - **Several voters** (`controller.quorum.voters`): `crate::quorum::net` runs the core
//!   over the network ([`MetadataLog::step`] for what arrives and for its timers). A change
//!   is made only on the leader, one at a time ([`MetadataLog::commit`] waits for the high
//!   watermark to cover it); at start the image is the newest snapshot, and the log after it is
//!   applied once the leader says how far it is committed.
//!
//! The log is in Kafka's layout, so Kafka's `kafka-dump-log --cluster-metadata-decoder` reads
//! it. Snapshots are written once [`SNAPSHOT_BYTES`] of records have been applied since the
//! last one, at the committed end, and the log before it is removed.
//!
//! A change is refused whole, before anything is written, when its records contradict the
//! image (see `metadata::MetadataDelta`). A failed write or fsync fails the change; alone, the
//! quorum core is rebuilt from what is durable (a new election, written with the next change;
//! `storage::Log` itself takes no more writes after a failed fsync), so no change is ever
//! answered that is not on disk, and a full disk only holds changes up until space returns.

use bytes::Bytes;
use metadata::{frame, snapshot, Changes, MetadataDelta, MetadataImage, MetadataRecord};
use raft::{Action, BatchMeta, Fill, Input, LogView, Message, NodeId, Payload, QuorumState, Raft, SnapshotId};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;
use storage::{Fs, Log, LogConfig};

/// The directory of the metadata log in the data directory.
pub const DIR: &str = "__cluster_metadata-0";

/// The quorum's state file in the metadata log's directory (Kafka's name and format).
pub const QUORUM_STATE: &str = "quorum-state";

/// Record bytes applied between snapshots (Kafka's
/// `metadata.log.max.record.bytes.between.snapshots` is 20 MB; a smaller log replays faster
/// at start, and snapshots of one node's metadata are small).
pub const SNAPSHOT_BYTES: u64 = 4 << 20;

/// Segments of the metadata log: small, so the log before a snapshot is removed soon after.
const SEGMENT_BYTES: u64 = 1 << 20;

/// The most of the log one fetch answer carries.
const FETCH_BYTES: usize = 1 << 20;

/// The most of a snapshot one FetchSnapshot answer carries.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// The largest snapshot a follower takes from its leader (it is held in memory until whole):
/// a larger one is refused, and the follower stays behind with an error logged.
const FETCHED_SNAPSHOT_BYTES_MAX: usize = 1 << 30;

/// How long a change waits for the quorum to commit it (or, on a new leader, for the log
/// before it to be committed) before it is answered with a timeout.
const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// How this node takes part in the metadata quorum, with Kafka's settings.
#[derive(Debug, Clone)]
pub struct QuorumSettings {
    pub node_id: NodeId,
    /// `controller.quorum.voters`' ids; `[node_id]` for a node alone. A node not among them
    /// is an observer.
    pub voters: Vec<NodeId>,
    /// `controller.quorum.election.timeout.ms`.
    pub election_timeout_ms: u64,
    /// `controller.quorum.fetch.timeout.ms`.
    pub fetch_timeout_ms: u64,
    /// `controller.quorum.election.backoff.max.ms`.
    pub election_backoff_max_ms: u64,
    /// Seeds the core's randomized timeouts.
    pub seed: u64,
}

impl QuorumSettings {
    /// A quorum of one voter, `node_id`, with Kafka's timeouts.
    pub fn alone(node_id: NodeId) -> QuorumSettings {
        QuorumSettings::new(node_id, vec![node_id], node_id as u64)
    }

    /// Voters `voters`, with Kafka's timeouts.
    pub fn new(node_id: NodeId, voters: Vec<NodeId>, seed: u64) -> QuorumSettings {
        let d = raft::Config::new(node_id, [node_id], seed);
        QuorumSettings {
            node_id,
            voters,
            election_timeout_ms: d.election_timeout_ms,
            fetch_timeout_ms: d.fetch_timeout_ms,
            election_backoff_max_ms: d.election_backoff_max_ms,
            seed,
        }
    }

    /// This node is the only voter.
    pub fn is_alone(&self) -> bool {
        self.voters == [self.node_id]
    }

    fn raft_config(&self) -> raft::Config {
        let mut c = raft::Config::new(self.node_id, self.voters.iter().copied(), self.seed);
        c.election_timeout_ms = self.election_timeout_ms;
        c.fetch_timeout_ms = self.fetch_timeout_ms;
        c.election_backoff_max_ms = self.election_backoff_max_ms;
        c
    }
}

/// Where the core's messages go: `crate::quorum::net` sends requests to voters and answers
/// the requests it received. Never blocks; a message it cannot send is dropped (the core
/// sends again).
pub trait Outbox: Send + Sync {
    fn send(&self, to: NodeId, message: Message<Bytes>);
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The records contradict the image: a bug in whoever wrote them, or a change that raced
    /// another one. Nothing was written.
    #[error("{0}")]
    Refused(String),
    /// The write or its fsync failed: the change is not made.
    #[error("cannot write the metadata log: {0}")]
    Storage(String),
    /// This node does not lead the quorum (or stopped leading it before the change was
    /// committed, which then may or may not be): `leader` does, if known.
    #[error("this node is not the active controller (the leader is {})", .leader.map_or("unknown".to_string(), |l| format!("node {l}")))]
    NotController { leader: Option<NodeId> },
    /// The quorum did not commit the change in time; it may still be.
    #[error("the metadata quorum did not commit the change within {} s", COMMIT_WAIT.as_secs())]
    Timeout,
}

/// A snapshot arriving from the leader in chunks.
struct Fetching {
    id: SnapshotId,
    bytes: Vec<u8>,
}

struct State {
    log: Log,
    /// Record bytes applied to the image since the last snapshot.
    bytes_since_snapshot: u64,
    raft: Raft<Bytes>,
    /// What the core asked for that is not durable yet: an election whose writes failed (a
    /// full disk at start, or after a failed change). Carried out before the next change.
    /// A node alone only.
    pending: Vec<Action<Bytes>>,
    /// Every batch in the log and the state file as written: what a rebuilt core starts from.
    metas: Vec<BatchMeta>,
    persisted: QuorumState,
    snapshot: Option<SnapshotId>,
    /// The latest snapshot's bytes, read once to serve FetchSnapshot.
    serving: Option<(SnapshotId, Bytes)>,
    fetching: Option<Fetching>,
    /// An fsync failed: what the kernel kept is unknown, so nothing more is written until a
    /// restart reads the log as it is.
    fsync_failed: bool,
    /// Why the committed log could not be applied when last tried (a read that failed, or a
    /// record contradicting the image): the image stays where it was, and the next high
    /// watermark, or the next change, tries again.
    apply_failed: Option<String>,
}

impl State {
    /// A new core from what is durable (after a failed write, whose batch the old core
    /// believes is in the log): it elects itself again; its writes wait in `pending`.
    fn rebuild(&mut self, settings: &QuorumSettings, now: u64) -> Result<(), String> {
        let view = LogView::from_parts(self.snapshot, self.metas.iter().copied())?;
        let mut core = new_core(settings, self.persisted, view, now);
        self.pending = core.take_actions();
        self.raft = core;
        Ok(())
    }
}

/// The core for `settings` from what is durable. A voter alone elects itself at once (the
/// actions to carry out wait in `take_actions`), and its log proves its epochs existed,
/// whatever the state file says (a log written before the quorum had no state file).
fn new_core(settings: &QuorumSettings, persisted: QuorumState, view: LogView, now: u64) -> Raft<Bytes> {
    let mut state = persisted;
    if settings.is_alone() {
        state.epoch = state.epoch.max(view.last_epoch());
    }
    Raft::new(settings.raft_config(), state, view, now)
}

pub struct MetadataLog {
    dir: PathBuf,
    fs: Arc<dyn Fs>,
    settings: QuorumSettings,
    state: Mutex<State>,
    /// Signalled whenever the image moves or the core's role changes (commits wait on it).
    moved: Condvar,
    /// One change at a time: each is checked against the image with every earlier one in it.
    writes: Mutex<()>,
    image: RwLock<Arc<MetadataImage>>,
    snapshot_bytes: u64,
    /// Stamps the batches, and gives the core its (monotonic) time.
    clock: Arc<dyn crate::clock::Clock>,
    /// The quorum's current epoch, read without the state lock (DescribeQuorum).
    epoch: AtomicI32,
    /// The quorum's leader as this node knows it (-1: none), read without the state lock
    /// (Metadata's controller id).
    leader: AtomicI32,
    /// Changes committed by this node as leader, and the microseconds from proposal to
    /// commit summed over them (the `raft_commit*` metrics).
    commits: AtomicU64,
    commit_micros: AtomicU64,
    outbox: OnceLock<Arc<dyn Outbox>>,
    /// Notified each time the image moves, for whoever acts on changes (the publisher that
    /// opens and removes this node's partition logs, `crate::server`).
    applied: tokio::sync::Notify,
}

impl std::fmt::Debug for MetadataLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataLog")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// What [`MetadataLog::open`] found.
pub struct Opened {
    pub log: MetadataLog,
    /// The log did not exist (or held nothing): a new data directory, or one written by a
    /// release from before the metadata log (see `crate::upgrade`).
    pub empty: bool,
}

/// Why a log whose start has moved cannot be opened without a snapshot.
fn uncovered_start(dir: &Path, start: i64) -> String {
    format!(
        "the metadata log {} starts at offset {start}, and no readable snapshot covers the records before it; \
         restore the directory from a backup",
        dir.display()
    )
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        segment_ms: None,
        batch_bytes_max: frame::BATCH_BYTES_MAX + 1024,
        ..LogConfig::default()
    }
}

/// Calls `f` with each whole batch of the log from `from` up to `to` (exclusive; batch
/// boundaries), in order, and the offset it is read from (a batch may start below it: the
/// first after a snapshot, or one an earlier read cut).
fn for_each_batch(
    log: &Log,
    dir: &Path,
    from: i64,
    to: i64,
    mut f: impl FnMut(&wire::records::RecordBatch, i64) -> Result<(), String>,
) -> Result<(), String> {
    let mut offset = from;
    while offset < to {
        let bytes = log
            .read(offset, 1 << 20)
            .map_err(|e| format!("cannot read the metadata log {} at offset {offset}: {e}", dir.display()))?;
        if bytes.is_empty() {
            break;
        }
        for batch in wire::records::RecordBatch::iter_all(bytes) {
            let batch = batch.map_err(|e| format!("metadata log {} at offset {offset}: {e}", dir.display()))?;
            if batch.base_offset() >= to {
                return Ok(());
            }
            f(&batch, offset)?;
            offset = batch.last_offset() + 1;
        }
    }
    Ok(())
}

/// A batch's place, for the quorum core.
fn place(batch: &wire::records::RecordBatch) -> BatchMeta {
    BatchMeta {
        base_offset: batch.base_offset(),
        last_offset: batch.last_offset(),
        epoch: batch.partition_leader_epoch(),
    }
}

/// Replays one batch into `delta` (its records from `offset` on; a control batch is stepped
/// over). Returns the record bytes replayed.
fn replay(
    batch: &wire::records::RecordBatch,
    offset: i64,
    dir: &Path,
    delta: &mut MetadataDelta,
) -> Result<u64, String> {
    let epoch = batch.partition_leader_epoch();
    if batch.is_control() {
        delta.skip(batch.last_offset(), epoch);
        return Ok(0);
    }
    let records = frame::records_of(batch)
        .map_err(|e| format!("metadata log {}: {e}; restore it from a backup", dir.display()))?;
    for (at, record) in records.into_iter().filter(|(at, _)| *at >= offset) {
        delta.replay(at, epoch, &record).map_err(|e| {
            format!(
                "metadata log {} at offset {at}: {e}; the log does not describe one cluster state",
                dir.display()
            )
        })?;
    }
    Ok(batch.size_bytes() as u64)
}

impl MetadataLog {
    /// Opens (or creates) the metadata log in `data_dir` and rebuilds the image: the newest
    /// readable snapshot, then every batch after it. A record that cannot be read, or that
    /// contradicts the image, stops the start with the offset named: the cluster state would
    /// otherwise be guessed.
    pub fn open(data_dir: &Path, fs: Arc<dyn Fs>, snapshot_bytes: u64) -> Result<Opened, String> {
        MetadataLog::open_as(
            data_dir,
            fs,
            snapshot_bytes,
            1,
            Arc::new(crate::clock::SystemClock::new()),
        )
    }

    /// [`MetadataLog::open`] for node `node_id` (the quorum's one voter), stamping batches with
    /// `clock`'s time.
    pub fn open_as(
        data_dir: &Path,
        fs: Arc<dyn Fs>,
        snapshot_bytes: u64,
        node_id: i32,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> Result<Opened, String> {
        MetadataLog::open_quorum(data_dir, fs, snapshot_bytes, QuorumSettings::alone(node_id), clock)
    }

    /// [`MetadataLog::open`] as a member of the quorum `settings` describes. With other voters,
    /// the image at start is the newest snapshot's: what the log holds after it is applied as
    /// the leader's high watermark covers it.
    pub fn open_quorum(
        data_dir: &Path,
        fs: Arc<dyn Fs>,
        snapshot_bytes: u64,
        settings: QuorumSettings,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> Result<Opened, String> {
        let dir = data_dir.join(DIR);
        fs.create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let names = fs
            .list(&dir)
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        for n in names.iter().filter(|n| n.ends_with(".checkpoint.tmp")) {
            // A snapshot a crash interrupted: the log still holds everything it would have.
            let _ = fs.remove(&dir.join(n));
        }
        let mut snapshots: Vec<(i64, i32)> = names.iter().filter_map(|n| snapshot::parse_file_name(n)).collect();
        snapshots.sort();
        let log = Log::open_on(&fs, &dir, log_config(), false)
            .map_err(|e| format!("cannot open the metadata log {}: {e}", dir.display()))?;
        let quorum_state = read_quorum_state(&*fs, &dir)?;
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        // The newest snapshot that the log continues: its end lies within the log.
        let mut image = None;
        let mut snapshot_id = None;
        for &(snap_end, epoch) in snapshots.iter().rev().filter(|(e, _)| (start..=end).contains(e)) {
            let path = dir.join(snapshot::file_name(snap_end, epoch));
            match fs
                .read_all(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| snapshot::read(bytes.into(), snap_end, epoch))
            {
                Ok(i) => {
                    image = Some(i);
                    snapshot_id = Some(SnapshotId {
                        end_offset: snap_end,
                        epoch,
                    });
                    break;
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "metadata snapshot unreadable: an older one is tried")
                }
            }
        }
        let image = match image {
            Some(i) => i,
            None if start == 0 => MetadataImage::empty(),
            None => return Err(uncovered_start(&dir, start)),
        };
        let from = snapshot_id.map_or(0, |s| s.end_offset);
        // Every batch's place, for the quorum core; alone, every batch is committed and is
        // replayed into the image, else none is yet (the leader says how far it is committed).
        let mut metas: Vec<BatchMeta> = Vec::new();
        let mut delta = MetadataDelta::new(Arc::new(image));
        let mut data_batches = 0;
        let alone = settings.is_alone();
        for_each_batch(&log, &dir, from, end, |batch, offset| {
            if batch.base_offset() >= offset {
                metas.push(place(batch));
            }
            data_batches += u64::from(!batch.is_control());
            if alone {
                replay(batch, offset, &dir, &mut delta)?;
            }
            Ok(())
        })?;
        let records_seen = snapshot_id.is_some() || data_batches > 0;
        let view = LogView::from_parts(snapshot_id, metas.iter().copied())
            .map_err(|e| format!("metadata log {}: {e}; restore it from a backup", dir.display()))?;
        let now = core_now(&*clock);
        let mut core = new_core(&settings, quorum_state, view, now);
        let actions = core.take_actions();
        let (image, _) = delta.apply();
        let node_id = settings.node_id;
        let log = MetadataLog {
            dir: dir.clone(),
            fs,
            settings,
            state: Mutex::new(State {
                log,
                bytes_since_snapshot: 0,
                raft: core,
                pending: Vec::new(),
                metas,
                persisted: quorum_state,
                snapshot: snapshot_id,
                serving: None,
                fetching: None,
                fsync_failed: false,
                apply_failed: None,
            }),
            moved: Condvar::new(),
            writes: Mutex::new(()),
            image: RwLock::new(Arc::new(image)),
            snapshot_bytes,
            epoch: AtomicI32::new(0),
            leader: AtomicI32::new(-1),
            commits: AtomicU64::new(0),
            commit_micros: AtomicU64::new(0),
            clock,
            outbox: OnceLock::new(),
            applied: tokio::sync::Notify::new(),
        };
        {
            let mut state = log.lock();
            if let Err(e) = log.carry_out(&mut state, actions.clone()) {
                if !alone {
                    return Err(e);
                }
                // A full disk at start: the metadata is served as it is, and the election is
                // written with the next change (refused until it can be).
                tracing::warn!(dir = %dir.display(), error = %e, "cannot write the metadata quorum's election; metadata changes wait until it can be written");
                state.pending = actions;
            }
            if alone && state.raft.role() != raft::RoleName::Leader {
                return Err(format!(
                    "the metadata quorum of one (node {node_id}) did not elect itself: {:?}",
                    state.raft.role()
                ));
            }
            log.epoch.store(state.raft.epoch(), Ordering::Relaxed);
            log.leader.store(state.raft.leader().unwrap_or(-1), Ordering::Relaxed);
        }
        Ok(Opened {
            empty: !records_seen,
            log,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the core's messages go from now on (set once, by the network driver).
    pub fn set_outbox(&self, outbox: Arc<dyn Outbox>) {
        let _ = self.outbox.set(outbox);
    }

    pub fn settings(&self) -> &QuorumSettings {
        &self.settings
    }

    /// The quorum's current epoch.
    pub fn leader_epoch(&self) -> i32 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// This node holds everything the quorum has committed, as far as it knows (alone: always).
    pub fn caught_up(&self) -> bool {
        self.settings.is_alone() || self.lock().raft.caught_up()
    }

    /// Who leads the quorum, as far as this node knows. Takes no lock.
    pub fn leader(&self) -> Option<NodeId> {
        Some(self.leader.load(Ordering::Relaxed)).filter(|l| *l >= 0)
    }

    /// The core's role, leader and high watermark, and DescribeQuorum's data when leading.
    pub fn quorum(&self) -> (raft::RoleName, Option<NodeId>, i64, Option<raft::QuorumDescription>) {
        let s = self.lock();
        (
            s.raft.role(),
            s.raft.leader(),
            s.raft.high_watermark(),
            s.raft.describe(),
        )
    }

    /// [`MetadataLog::commit`] stamped with the log's clock.
    pub fn commit_now(&self, records: Vec<MetadataRecord>) -> Result<(Arc<MetadataImage>, Changes), CommitError> {
        self.commit(records, self.clock.now_ms())
    }

    /// Returns once the image has moved since the last return (at once if it has).
    pub async fn image_moved(&self) {
        self.applied.notified().await
    }

    /// The image as of the last change applied.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The end of what the image holds: the committed end of the log. Takes no lock (the
    /// state lock is held across a commit's fsync).
    pub fn end_offset(&self) -> i64 {
        self.image().offset + 1
    }

    /// Makes one change: checks `records` against the image, appends them as one batch,
    /// fsyncs it, and returns once the quorum has committed it and it is applied. Only the
    /// leader makes changes, one at a time; a new leader first waits until its log is
    /// committed and applied. Blocking (an fsync, and the quorum's round trips): call it off
    /// the async threads. Returns the new image and what changed.
    pub fn commit(
        &self,
        records: Vec<MetadataRecord>,
        now_ms: i64,
    ) -> Result<(Arc<MetadataImage>, Changes), CommitError> {
        if records.is_empty() {
            return Ok((self.image(), Changes::default()));
        }
        let _one_at_a_time = self.writes.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = self.lock();
        if state.fsync_failed {
            return Err(CommitError::Storage(
                "an fsync of the metadata log failed earlier; restart the broker".into(),
            ));
        }
        if !state.pending.is_empty() {
            // An election not yet written (see `State::pending`): first that.
            let pending = state.pending.clone();
            self.carry_out(&mut state, pending).map_err(CommitError::Storage)?;
            state.pending.clear();
        }
        // Leading, with every record of the log applied (a new leader's log holds records
        // of earlier epochs that commit with its first one).
        let deadline = std::time::Instant::now() + COMMIT_WAIT;
        loop {
            if state.raft.role() != raft::RoleName::Leader {
                return Err(CommitError::NotController {
                    leader: state.raft.leader(),
                });
            }
            self.catch_up(&mut state)?;
            if self.end_offset() == state.log.log_end_offset() {
                break;
            }
            state = self.wait(state, deadline)?;
        }
        let base = self.image();
        let start = state.log.log_end_offset();
        let epoch = state.raft.epoch();
        let mut delta = MetadataDelta::new(base);
        for (i, r) in records.iter().enumerate() {
            delta
                .replay(start + i as i64, epoch, r)
                .map_err(|e| CommitError::Refused(e.to_string()))?;
        }
        let batch = frame::batch(&records, now_ms).map_err(CommitError::Refused)?;
        let n = u32::try_from(records.len()).map_err(|_| CommitError::Refused("too many records".into()))?;
        let now = self.core_now();
        let proposed = self.clock.now();
        let (meta, actions) = state
            .raft
            .propose(now, batch, n)
            .map_err(|_| CommitError::NotController {
                leader: state.raft.leader(),
            })?;
        if let Err(e) = self.carry_out(&mut state, actions) {
            // The core believes the batch is in the log: start it again from what is (alone),
            // or stop leading from a log that may not hold it (several voters: a restart
            // reads the log as it is).
            if self.settings.is_alone() {
                if let Err(r) = state.rebuild(&self.settings, now) {
                    tracing::error!(error = %r, "cannot rebuild the metadata quorum after a failed write");
                }
            } else {
                state.fsync_failed = true;
            }
            return Err(CommitError::Storage(e));
        }
        loop {
            self.catch_up(&mut state)?;
            if self.end_offset() > meta.last_offset {
                break;
            }
            if state.raft.role() != raft::RoleName::Leader || state.raft.epoch() != meta.epoch {
                return Err(CommitError::NotController {
                    leader: state.raft.leader(),
                });
            }
            state = self.wait(state, deadline)?;
        }
        let took = self.clock.elapsed(proposed);
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.commit_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        let (_, changes) = delta.apply();
        Ok((self.image(), changes))
    }

    /// Changes committed here as leader, and the seconds from proposal to commit summed.
    pub fn commit_stats(&self) -> (u64, f64) {
        (
            self.commits.load(Ordering::Relaxed),
            self.commit_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }

    /// Applies what is committed and not yet applied (an earlier try failed); an error if it
    /// still cannot be.
    fn catch_up(&self, state: &mut State) -> Result<(), CommitError> {
        let hw = state.raft.high_watermark();
        if self.end_offset() < hw {
            self.apply_committed(state, hw, self.clock.now_ms());
        }
        match &state.apply_failed {
            Some(e) => Err(CommitError::Storage(e.clone())),
            None => Ok(()),
        }
    }

    /// Waits for the image or the role to move, until `deadline`.
    fn wait<'a>(
        &self,
        state: MutexGuard<'a, State>,
        deadline: std::time::Instant,
    ) -> Result<MutexGuard<'a, State>, CommitError> {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(CommitError::Timeout);
        }
        let (state, _) = self
            .moved
            .wait_timeout(state, left.min(Duration::from_millis(100)))
            .unwrap_or_else(|p| p.into_inner());
        Ok(state)
    }

    /// The core's time: the clock's monotonic reading in milliseconds.
    fn core_now(&self) -> u64 {
        core_now(&*self.clock)
    }

    /// When the core next wants a tick, in its time ([`MetadataLog::core_time`]).
    pub fn next_deadline(&self) -> u64 {
        self.lock().raft.next_deadline()
    }

    /// The core's time now (monotonic milliseconds).
    pub fn core_time(&self) -> u64 {
        self.core_now()
    }

    /// Hands the core a message that arrived (`Some`), or lets its time pass (`None`), and
    /// carries out what it asks. A failure to write stops this node taking part (its log may
    /// not hold what the core believes) until a restart.
    pub fn step(&self, input: Option<(NodeId, Message<Bytes>)>) {
        let mut state = self.lock();
        if state.fsync_failed {
            return;
        }
        let now = self.core_now();
        let before = (state.raft.role(), state.raft.epoch(), state.raft.leader());
        let actions = match input {
            Some((from, message)) => state.raft.step(now, Input::Receive { from, message }),
            None => state.raft.step(now, Input::Tick),
        };
        if let Err(e) = self.carry_out(&mut state, actions) {
            tracing::error!(error = %e, "cannot write the metadata log: this node stops taking part in the metadata quorum until it is restarted");
            state.fsync_failed = true;
        }
        let after = (state.raft.role(), state.raft.epoch(), state.raft.leader());
        if before != after && !self.settings.is_alone() {
            tracing::info!(node = self.settings.node_id, role = ?after.0, epoch = after.1, leader = ?after.2, "metadata quorum: role changed");
        }
    }

    /// Carries out what the core asks, in order: the state file and the log's writes, each
    /// durable before the next action; messages filled from the log or a snapshot and handed
    /// to the outbox; the high watermark applied to the image. Safe to repeat after a
    /// failure: what is already in the log is not written again.
    fn carry_out(&self, state: &mut State, actions: Vec<Action<Bytes>>) -> Result<(), String> {
        let storage = |e: storage::StorageError| e.to_string();
        let now_ms = self.clock.now_ms();
        let mut result = Ok(());
        for action in actions {
            let step = match action {
                Action::PersistState(s) => self.persist_state(state, s),
                Action::Append(batches) => self.append(state, batches, now_ms),
                Action::Truncate(offset) => state
                    .log
                    .truncate_to(offset)
                    .map(|_| state.metas.retain(|m| m.base_offset < offset))
                    .map_err(storage),
                Action::SnapshotChunk { id, position, chunk } => self.snapshot_chunk(state, id, position, chunk),
                Action::InstallSnapshot(id) => self.install_snapshot(state, id, now_ms),
                Action::Send { to, message, fill } => {
                    self.send(state, to, message, fill);
                    Ok(())
                }
                Action::HighWatermark(hw) => {
                    self.apply_committed(state, hw, now_ms);
                    Ok(())
                }
            };
            if let Err(e) = step {
                result = Err(e);
                break;
            }
        }
        self.epoch.store(state.raft.epoch(), Ordering::Relaxed);
        self.leader.store(state.raft.leader().unwrap_or(-1), Ordering::Relaxed);
        self.moved.notify_all();
        result
    }

    fn persist_state(&self, state: &mut State, s: QuorumState) -> Result<(), String> {
        let path = self.dir.join(QUORUM_STATE);
        match self
            .fs
            .write_atomically(&path, &quorum_state_json(&s, &self.settings.voters))
        {
            Ok(()) => {
                state.persisted = s;
                Ok(())
            }
            // A voter alone needs the file for nothing its log does not prove: its epoch is
            // the log's last one (read at start), and it never votes for another. So a full
            // disk (a new file needs a block, an append to the log's last one may not) does
            // not stop it; with others, it must.
            Err(e) if self.settings.is_alone() => {
                tracing::warn!(file = %path.display(), error = %e, "cannot write the quorum state; a voter alone goes on (its log holds its epoch)");
                Ok(())
            }
            Err(e) => Err(format!("cannot write {}: {e}", path.display())),
        }
    }

    /// Appends batches the core placed (its own, or fetched from the leader as they are) and
    /// fsyncs them: the core counts them as durable from here on.
    fn append(&self, state: &mut State, batches: Vec<(BatchMeta, Payload<Bytes>)>, now_ms: i64) -> Result<(), String> {
        let storage = |e: storage::StorageError| e.to_string();
        let log = &mut state.log;
        let mut appended = false;
        for (meta, payload) in batches {
            let at = log.log_end_offset();
            if at > meta.last_offset {
                continue; // written by an earlier try
            }
            if at != meta.base_offset {
                return Err(format!(
                    "the quorum placed a batch at {}, the log ends at {at}",
                    meta.base_offset
                ));
            }
            let bytes = match payload {
                // A fetched batch carries these offsets and epoch already; stamping them
                // again changes no byte.
                Payload::Data(b) => b,
                Payload::LeaderChange { leader, voters } => {
                    frame::leader_change_batch(leader, &voters, meta.base_offset, meta.epoch, now_ms)
                }
            };
            let info = log.append(bytes, meta.epoch, now_ms).map_err(storage)?;
            if info.last_offset != meta.last_offset {
                return Err(format!(
                    "the batch the quorum placed at {}..={} holds {}..={}",
                    meta.base_offset, meta.last_offset, info.base_offset, info.last_offset
                ));
            }
            state.metas.push(meta);
            appended = true;
        }
        if appended {
            // The records are durable once their files are fsynced. Sealing (a rolled
            // segment's index, the leader-epoch checkpoint, which a new epoch rewrites) is
            // derived data: a full disk leaves it for the next append (or is rebuilt at open).
            let target = log.sync_target().map_err(storage)?;
            if let Err(e) = target.sync() {
                state.fsync_failed = true;
                return Err(format!("cannot fsync the metadata log: {e}"));
            }
            if let Some(work) = log.take_seal() {
                match work.run() {
                    Ok(()) => log.sealed(work).map_err(storage)?,
                    Err(e) if !e.data_lost => {
                        tracing::warn!(error = %e.error, "cannot seal the metadata log's segments (indexes, epoch checkpoint); retried with the next change")
                    }
                    Err(e) => {
                        state.fsync_failed = true;
                        return Err(format!("cannot fsync the metadata log: {}", e.error));
                    }
                }
            }
        }
        Ok(())
    }

    fn snapshot_chunk(&self, state: &mut State, id: SnapshotId, position: u64, chunk: Vec<u8>) -> Result<(), String> {
        if position == 0 || state.fetching.as_ref().is_none_or(|f| f.id != id) {
            state.fetching = Some(Fetching { id, bytes: Vec::new() });
        }
        let f = state.fetching.as_mut().expect("just set");
        if f.bytes.len() as u64 != position {
            return Ok(()); // out of order: the core asks for the right position again
        }
        if f.bytes.len() + chunk.len() > FETCHED_SNAPSHOT_BYTES_MAX {
            state.fetching = None;
            return Err(format!(
                "the leader's metadata snapshot {id:?} is over {FETCHED_SNAPSHOT_BYTES_MAX} bytes"
            ));
        }
        f.bytes.extend_from_slice(&chunk);
        Ok(())
    }

    /// The snapshot fetched replaces the log: written (durably) first, then the log starts
    /// over at its end, then the image is the snapshot's.
    fn install_snapshot(&self, state: &mut State, id: SnapshotId, now_ms: i64) -> Result<(), String> {
        let Some(f) = state.fetching.take().filter(|f| f.id == id) else {
            return Err(format!("the metadata snapshot {id:?} to install was not fetched"));
        };
        let bytes = Bytes::from(f.bytes);
        let image = snapshot::read(bytes.clone(), id.end_offset, id.epoch)?;
        let path = self.dir.join(snapshot::file_name(id.end_offset, id.epoch));
        self.fs
            .write_atomically(&path, &bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        state.log.start_over_at(id.end_offset).map_err(|e| e.to_string())?;
        state.metas.clear();
        state.snapshot = Some(id);
        state.serving = Some((id, bytes));
        state.bytes_since_snapshot = 0;
        *self.image.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(image);
        self.applied.notify_one();
        self.remove_snapshots_before(id.end_offset);
        tracing::info!(
            offset = id.end_offset,
            epoch = id.epoch,
            at = now_ms,
            "metadata snapshot installed from the leader"
        );
        Ok(())
    }

    /// Fills a message from storage and hands it to the outbox.
    fn send(&self, state: &mut State, to: NodeId, mut message: Message<Bytes>, fill: Option<Fill>) {
        match (fill, &mut message) {
            (Some(Fill::Log(offset)), Message::FetchResponse(answer)) => match state.log.read(offset, FETCH_BYTES) {
                // The wire form carries the bytes only: one payload holds every batch read.
                Ok(bytes) => {
                    answer.batches = vec![(
                        BatchMeta {
                            base_offset: offset,
                            last_offset: offset,
                            epoch: answer.epoch,
                        },
                        Payload::Data(bytes),
                    )]
                }
                Err(e) => {
                    tracing::warn!(error = %e, offset, "cannot read the metadata log for a follower's fetch");
                    return;
                }
            },
            (Some(Fill::Snapshot { id, position }), Message::FetchSnapshotResponse(answer)) => {
                let bytes = match &state.serving {
                    Some((s, b)) if *s == id => b.clone(),
                    _ => {
                        let path = self.dir.join(snapshot::file_name(id.end_offset, id.epoch));
                        match self.fs.read_all(&path) {
                            Ok(b) => {
                                let b = Bytes::from(b);
                                state.serving = Some((id, b.clone()));
                                b
                            }
                            Err(e) => {
                                tracing::warn!(file = %path.display(), error = %e, "cannot read the metadata snapshot a follower fetches");
                                return;
                            }
                        }
                    }
                };
                let from = usize::try_from(position).unwrap_or(usize::MAX).min(bytes.len());
                let to = from.saturating_add(SNAPSHOT_CHUNK_BYTES).min(bytes.len());
                answer.size = bytes.len() as u64;
                answer.position = from as u64;
                answer.chunk = bytes[from..to].to_vec();
            }
            _ => {}
        }
        match self.outbox.get() {
            Some(out) => out.send(to, message),
            None => tracing::warn!(to, "the metadata quorum has no network to send on; dropped"),
        }
    }

    /// Applies the committed log up to `hw` to the image (every node alike), then takes a
    /// snapshot when enough has been applied since the last one.
    fn apply_committed(&self, state: &mut State, hw: i64, now_ms: i64) {
        let from = self.end_offset();
        if hw <= from {
            return;
        }
        let mut delta = MetadataDelta::new(self.image());
        let mut bytes = 0;
        let replayed = for_each_batch(&state.log, &self.dir, from, hw, |batch, offset| {
            bytes += replay(batch, offset, &self.dir, &mut delta)?;
            Ok(())
        });
        match replayed {
            Ok(()) => {
                let (image, _changes) = delta.apply();
                *self.image.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(image);
                self.applied.notify_one();
                state.bytes_since_snapshot += bytes;
                state.apply_failed = None;
            }
            Err(e) => {
                if state.apply_failed.as_ref() != Some(&e) {
                    tracing::error!(error = %e, "cannot apply the committed metadata log: the image stays at offset {} (tried again with the next change)", from - 1);
                }
                state.apply_failed = Some(e);
                return;
            }
        }
        if state.bytes_since_snapshot >= self.snapshot_bytes {
            match self.snapshot(state, now_ms) {
                Ok(()) => state.bytes_since_snapshot = 0,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write a metadata snapshot; the log keeps every record until one is written")
                }
            }
        }
    }

    /// Writes a snapshot of the image (the committed log), then removes the log before it
    /// and older snapshots.
    fn snapshot(&self, state: &mut State, now_ms: i64) -> Result<(), String> {
        let image = self.image();
        let end = image.offset + 1;
        // The snapshot's id: its end and the epoch of the last record it holds.
        let epoch = image.epoch;
        let bytes = snapshot::write(&image, epoch, now_ms)?;
        let path = self.dir.join(snapshot::file_name(end, epoch));
        let io = |e: std::io::Error| format!("{}: {e}", path.display());
        self.fs.write_atomically(&path, &bytes).map_err(io)?;
        let id = state.raft.snapshot_taken(end)?;
        state.log.delete_records_before(end).map_err(|e| e.to_string())?;
        state.snapshot = Some(id);
        state.serving = Some((id, bytes.clone()));
        state.metas.retain(|m| m.base_offset >= end);
        self.remove_snapshots_before(end);
        tracing::info!(offset = end, bytes = bytes.len(), "metadata snapshot written");
        Ok(())
    }

    fn remove_snapshots_before(&self, end: i64) {
        let Ok(names) = self.fs.list(&self.dir) else { return };
        for old in names {
            if let Some((e, _)) = snapshot::parse_file_name(&old) {
                if e < end {
                    let _ = self.fs.remove(&self.dir.join(&old));
                }
            }
        }
    }

    /// Offsets of the log: (start, end). Waits for a commit in progress (its fsync).
    pub fn offsets(&self) -> (i64, i64) {
        let s = self.lock();
        (s.log.log_start_offset(), s.log.log_end_offset())
    }
}

fn core_now(clock: &dyn crate::clock::Clock) -> u64 {
    clock
        .now()
        .saturating_duration_since(crate::clock::Instant::default())
        .as_millis() as u64
}

/// The quorum-state file: Kafka's JSON (version 0), read at start. A missing file is a quorum
/// that has never voted; an unreadable one stops the start (guessing could vote twice in an
/// epoch).
fn read_quorum_state(fs: &dyn Fs, dir: &Path) -> Result<QuorumState, String> {
    let path = dir.join(QUORUM_STATE);
    if !fs.exists(&path) {
        return Ok(QuorumState::default());
    }
    let bytes = fs
        .read_all(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bad = |why: String| {
        format!(
            "{} is unreadable ({why}); if this node is the only voter, removing the file is safe",
            path.display()
        )
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let int = |k: &str| v.get(k).and_then(|x| x.as_i64()).ok_or_else(|| bad(format!("no {k}")));
    let epoch = i32::try_from(int("leaderEpoch")?).map_err(|_| bad("leaderEpoch out of range".into()))?;
    let id = |x: i64| i32::try_from(x).ok().filter(|x| *x >= 0);
    Ok(QuorumState {
        epoch,
        voted_for: id(int("votedId")?),
        leader: id(int("leaderId")?),
    })
}

fn quorum_state_json(s: &QuorumState, voters: &[i32]) -> Vec<u8> {
    serde_json::json!({
        "clusterId": "",
        "leaderId": s.leader.unwrap_or(-1),
        "leaderEpoch": s.epoch,
        "votedId": s.voted_for.unwrap_or(-1),
        "appliedOffset": 0,
        "currentVoters": voters.iter().map(|v| serde_json::json!({"voterId": v})).collect::<Vec<_>>(),
        "data_version": 0,
    })
    .to_string()
    .into_bytes()
}
