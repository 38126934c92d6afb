//! The local metadata log, `<data dir>/__cluster_metadata-0`: every change to cluster state
//! (topics created and deleted, partitions added, topic and broker configs, producer-id
//! blocks, this broker's registration) is one batch of Kafka's metadata records, appended and
//! fsynced before the change is answered, then applied to the [`MetadataImage`] every cluster
//! question is answered from.
//!
//! The log belongs to the KRaft core (`raft` crate), which decides every offset and epoch:
//! this node is a quorum of one voter, elected at each start (a new leader epoch, written to
//! `quorum-state` and marked in the log by a LeaderChangeMessage control batch, as Kafka's
//! controllers do), and every change is committed as soon as it is fsynced. The log is in
//! Kafka's layout, so Kafka's `kafka-dump-log --cluster-metadata-decoder` reads it. At start
//! the image is the newest snapshot plus the log after it; a snapshot is written once
//! [`SNAPSHOT_BYTES`] of records have been appended since the last one, and the log before
//! it is removed. (A quorum of several voters is the rest of issue 19: the same core, with a
//! network between the nodes.)
//!
//! A change is refused whole, before anything is written, when its records contradict the
//! image (see `metadata::MetadataDelta`). A failed write or fsync fails the change, and the
//! quorum core is rebuilt from what is durable (a new election, written with the next change;
//! `storage::Log` itself takes no more writes after a failed fsync), so no change is ever
//! answered that is not on disk, and a full disk only holds changes up until space returns.

use bytes::Bytes;
use metadata::{frame, snapshot, Changes, MetadataDelta, MetadataImage, MetadataRecord};
use raft::{Action, BatchMeta, LogView, Payload, QuorumState, Raft, SnapshotId};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use storage::{Fs, Log, LogConfig};

/// The directory of the metadata log in the data directory.
pub const DIR: &str = "__cluster_metadata-0";

/// The quorum's state file in the metadata log's directory (Kafka's name and format).
pub const QUORUM_STATE: &str = "quorum-state";

/// Record bytes appended between snapshots (Kafka's
/// `metadata.log.max.record.bytes.between.snapshots` is 20 MB; a smaller log replays faster
/// at start, and snapshots of one node's metadata are small).
pub const SNAPSHOT_BYTES: u64 = 4 << 20;

/// Segments of the metadata log: small, so the log before a snapshot is removed soon after.
const SEGMENT_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The records contradict the image: a bug in whoever wrote them, or a change that raced
    /// another one. Nothing was written.
    #[error("{0}")]
    Refused(String),
    /// The write or its fsync failed: the change is not made.
    #[error("cannot write the metadata log: {0}")]
    Storage(String),
}

struct State {
    log: Log,
    bytes_since_snapshot: u64,
    raft: Raft<Bytes>,
    /// What the core asked for that is not durable yet: an election whose writes failed (a
    /// full disk at start, or after a failed change). Carried out before the next change.
    pending: Vec<Action<Bytes>>,
    /// Every batch in the log and the state file as written: what a rebuilt core starts from.
    metas: Vec<BatchMeta>,
    persisted: QuorumState,
    snapshot: Option<SnapshotId>,
    /// An fsync failed: what the kernel kept is unknown, so nothing more is written until a
    /// restart reads the log as it is.
    fsync_failed: bool,
}

impl State {
    /// A new core from what is durable (after a failed write, whose batch the old core
    /// believes is in the log): it elects itself again; its writes wait in `pending`.
    fn rebuild(&mut self, node_id: i32, now_ms: i64) -> Result<(), String> {
        let view = LogView::from_parts(self.snapshot, self.metas.iter().copied())?;
        let mut core = elect_alone(node_id, self.persisted, view, now_ms);
        self.pending = core.take_actions();
        self.raft = core;
        Ok(())
    }
}

/// The core of a quorum whose only voter is `node_id`, from what is durable: it elects itself
/// at once (the actions to carry out wait in `take_actions`). The log proves its epochs
/// existed, whatever the state file says (a log written before the quorum had no state file).
fn elect_alone(node_id: i32, persisted: QuorumState, view: LogView, now_ms: i64) -> Raft<Bytes> {
    let mut state = persisted;
    state.epoch = state.epoch.max(view.last_epoch());
    let config = raft::Config::new(node_id, [node_id], node_id as u64);
    Raft::new(config, state, view, now_ms.max(0) as u64)
}

pub struct MetadataLog {
    dir: PathBuf,
    fs: Arc<dyn Fs>,
    state: Mutex<State>,
    image: RwLock<Arc<MetadataImage>>,
    snapshot_bytes: u64,
    /// Stamps the batches (`commit_now`).
    clock: Arc<dyn crate::clock::Clock>,
    /// The quorum's current leader epoch, read without the state lock (DescribeQuorum).
    epoch: AtomicI32,
    node_id: i32,
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
        let mut log = Log::open_on(&fs, &dir, log_config(), false)
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
        let mut delta = MetadataDelta::new(Arc::new(image));
        let mut offset = snapshot_id.map_or(0, |s| s.end_offset);
        // Every batch's place, for the quorum core, and whether any holds metadata records.
        let mut metas: Vec<BatchMeta> = Vec::new();
        let mut records_seen = snapshot_id.is_some();
        while offset < end {
            let bytes = log
                .read(offset, 1 << 20)
                .map_err(|e| format!("cannot read the metadata log {} at offset {offset}: {e}", dir.display()))?;
            if bytes.is_empty() {
                break;
            }
            for batch in wire::records::RecordBatch::iter_all(bytes) {
                let batch = batch.map_err(|e| format!("metadata log {} at offset {offset}: {e}", dir.display()))?;
                let epoch = batch.partition_leader_epoch();
                if batch.base_offset() >= offset {
                    metas.push(BatchMeta {
                        base_offset: batch.base_offset(),
                        last_offset: batch.last_offset(),
                        epoch,
                    });
                }
                if batch.is_control() {
                    delta.skip(batch.last_offset(), epoch);
                } else {
                    records_seen = true;
                }
                for (at, record) in frame::records_of(&batch)
                    .map_err(|e| format!("metadata log {}: {e}; restore it from a backup", dir.display()))?
                {
                    if at < offset {
                        continue;
                    }
                    delta.replay(at, epoch, &record).map_err(|e| {
                        format!("metadata log {}: {e}; the log does not describe one cluster state: restore it from a backup", dir.display())
                    })?;
                }
                offset = batch.last_offset() + 1;
            }
        }
        // The quorum of one: it elects itself, which writes the new epoch and its
        // LeaderChangeMessage before anything else is committed.
        let view = LogView::from_parts(snapshot_id, metas.iter().copied())
            .map_err(|e| format!("metadata log {}: {e}; restore it from a backup", dir.display()))?;
        let now = clock.now_ms();
        let mut core = elect_alone(node_id, quorum_state, view, now);
        let actions = core.take_actions();
        let io = QuorumIo {
            dir: &dir,
            fs: &*fs,
            now_ms: now,
            voters: &[node_id],
        };
        let mut persisted = quorum_state;
        let mut fsync_failed = false;
        let pending = match io.carry_out(&mut log, &mut metas, &mut persisted, &mut fsync_failed, actions.clone()) {
            Ok(controls) => {
                for (last, epoch) in controls {
                    delta.skip(last, epoch);
                }
                Vec::new()
            }
            Err(e) => {
                // A full disk at start: the metadata is served as it is, and the election is
                // written with the next change (refused until it can be).
                tracing::warn!(dir = %dir.display(), error = %e, "cannot write the metadata quorum's election; metadata changes wait until it can be written");
                actions
            }
        };
        if core.role() != raft::RoleName::Leader {
            return Err(format!(
                "the metadata quorum of one (node {node_id}) did not elect itself: {:?}",
                core.role()
            ));
        }
        let (image, _) = delta.apply();
        let epoch = AtomicI32::new(core.epoch());
        Ok(Opened {
            empty: !records_seen,
            log: MetadataLog {
                dir,
                fs,
                state: Mutex::new(State {
                    log,
                    bytes_since_snapshot: 0,
                    raft: core,
                    pending,
                    metas,
                    persisted,
                    snapshot: snapshot_id,
                    fsync_failed,
                }),
                image: RwLock::new(Arc::new(image)),
                snapshot_bytes,
                clock,
                epoch,
                node_id,
            },
        })
    }

    /// The quorum's current leader epoch (this node leads it).
    pub fn leader_epoch(&self) -> i32 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// [`MetadataLog::commit`] stamped with the log's clock.
    pub fn commit_now(&self, records: Vec<MetadataRecord>) -> Result<(Arc<MetadataImage>, Changes), CommitError> {
        self.commit(records, self.clock.now_ms())
    }

    /// The image as of the last change made.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The end offset of the log: the image is always the whole log (asserted at each
    /// commit), so this takes no lock (the state lock is held across a commit's fsync).
    pub fn end_offset(&self) -> i64 {
        self.image().offset + 1
    }

    /// Makes one change: checks `records` against the image, appends them as one batch,
    /// fsyncs it, and only then applies them. Blocking (an fsync): call it off the async
    /// threads. Returns the new image and what changed.
    pub fn commit(
        &self,
        records: Vec<MetadataRecord>,
        now_ms: i64,
    ) -> Result<(Arc<MetadataImage>, Changes), CommitError> {
        if records.is_empty() {
            return Ok((self.image(), Changes::default()));
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.fsync_failed {
            return Err(CommitError::Storage(
                "an fsync of the metadata log failed earlier; restart the broker".into(),
            ));
        }
        let io = QuorumIo {
            dir: &self.dir,
            fs: &*self.fs,
            now_ms,
            voters: &[self.node_id],
        };
        if !state.pending.is_empty() {
            // An election not yet written (see `State::pending`): first that.
            let pending = state.pending.clone();
            let State {
                log,
                metas,
                persisted,
                fsync_failed,
                ..
            } = &mut *state;
            let controls = io
                .carry_out(log, metas, persisted, fsync_failed, pending)
                .map_err(CommitError::Storage)?;
            state.pending.clear();
            let mut d = MetadataDelta::new(self.image());
            for (last, epoch) in controls {
                d.skip(last, epoch);
            }
            *self.image.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(d.apply().0);
            self.epoch.store(state.raft.epoch(), Ordering::Relaxed);
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
        let size = batch.len() as u64;
        let n = u32::try_from(records.len()).map_err(|_| CommitError::Refused("too many records".into()))?;
        let State {
            log,
            raft,
            metas,
            persisted,
            fsync_failed,
            ..
        } = &mut *state;
        let (_, actions) = raft.propose(now_ms.max(0) as u64, batch, n).map_err(|e| {
            CommitError::Storage(format!(
                "this node does not lead the metadata quorum (epoch {})",
                e.epoch
            ))
        })?;
        if let Err(e) = io.carry_out(log, metas, persisted, fsync_failed, actions) {
            // The core believes the batch is in the log: start it again from what is.
            if let Err(r) = state.rebuild(self.node_id, now_ms) {
                tracing::error!(error = %r, "cannot rebuild the metadata quorum after a failed write");
            }
            return Err(CommitError::Storage(e));
        }
        let (image, changes) = delta.apply();
        assert_eq!(
            image.offset,
            state.log.log_end_offset() - 1,
            "the image follows the metadata log"
        );
        let image = Arc::new(image);
        *self.image.write().unwrap_or_else(|p| p.into_inner()) = image.clone();
        state.bytes_since_snapshot += size;
        if state.bytes_since_snapshot >= self.snapshot_bytes {
            match self.snapshot(&mut state, &image, now_ms) {
                Ok(()) => state.bytes_since_snapshot = 0,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write a metadata snapshot; the log keeps every record until one is written")
                }
            }
        }
        Ok((image, changes))
    }

    /// Writes a snapshot of `image` (which is the log up to its end), then removes the log
    /// before it and older snapshots.
    fn snapshot(&self, state: &mut State, image: &MetadataImage, now_ms: i64) -> Result<(), String> {
        let end = state.log.log_end_offset();
        // The snapshot's id: its end and the epoch of the last record it holds.
        let epoch = image.epoch;
        let bytes = snapshot::write(image, epoch, now_ms)?;
        let path = self.dir.join(snapshot::file_name(end, epoch));
        let io = |e: std::io::Error| format!("{}: {e}", path.display());
        self.fs.write_atomically(&path, &bytes).map_err(io)?;
        state.log.delete_records_before(end).map_err(|e| e.to_string())?;
        let id = state.raft.snapshot_taken(end)?;
        state.snapshot = Some(id);
        state.metas.retain(|m| m.base_offset >= end);
        for old in self.fs.list(&self.dir).map_err(io)? {
            if let Some((e, _)) = snapshot::parse_file_name(&old) {
                if e < end {
                    let _ = self.fs.remove(&self.dir.join(&old));
                }
            }
        }
        tracing::info!(offset = end, bytes = bytes.len(), "metadata snapshot written");
        Ok(())
    }

    /// Offsets of the log: (start, end). Waits for a commit in progress (its fsync).
    pub fn offsets(&self) -> (i64, i64) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (s.log.log_start_offset(), s.log.log_end_offset())
    }
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

/// Carries out what the quorum core asks, in order: the state file and the log's writes, each
/// durable before the next; messages (none, with one voter) after.
struct QuorumIo<'a> {
    dir: &'a Path,
    fs: &'a dyn Fs,
    now_ms: i64,
    voters: &'a [i32],
}

impl QuorumIo<'_> {
    /// Returns the control batches appended (last offset, epoch), which the image steps over.
    /// Safe to repeat after a failure: what is already in the log is not written again.
    fn carry_out(
        &self,
        log: &mut Log,
        metas: &mut Vec<BatchMeta>,
        persisted: &mut QuorumState,
        fsync_failed: &mut bool,
        actions: Vec<Action<Bytes>>,
    ) -> Result<Vec<(i64, i32)>, String> {
        let storage = |e: storage::StorageError| e.to_string();
        let mut controls = Vec::new();
        let mut appended = false;
        for action in actions {
            match action {
                Action::PersistState(s) => {
                    let path = self.dir.join(QUORUM_STATE);
                    match self.fs.write_atomically(&path, &quorum_state_json(&s, self.voters)) {
                        Ok(()) => *persisted = s,
                        // A voter alone needs the file for nothing its log does not prove: its
                        // epoch is the log's last one (read at start), and it never votes for
                        // another. So a full disk (a new file needs a block, an append to the
                        // log's last one may not) does not stop it; with others, it must.
                        Err(e) if self.voters.len() == 1 => {
                            tracing::warn!(file = %path.display(), error = %e, "cannot write the quorum state; a voter alone goes on (its log holds its epoch)");
                        }
                        Err(e) => return Err(format!("cannot write {}: {e}", path.display())),
                    }
                }
                Action::Append(batches) => {
                    for (meta, payload) in batches {
                        let control = matches!(payload, Payload::LeaderChange { .. });
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
                            Payload::Data(b) => b,
                            Payload::LeaderChange { leader, voters } => {
                                frame::leader_change_batch(leader, &voters, meta.base_offset, meta.epoch, self.now_ms)
                            }
                        };
                        log.append(bytes, meta.epoch, self.now_ms).map_err(storage)?;
                        metas.push(meta);
                        if control {
                            controls.push((meta.last_offset, meta.epoch));
                        }
                        appended = true;
                    }
                }
                Action::Truncate(_) | Action::SnapshotChunk { .. } | Action::InstallSnapshot(_) => {
                    return Err("a quorum of one never truncates or fetches a snapshot".into());
                }
                Action::Send { to, .. } => {
                    tracing::warn!(to, "the metadata quorum of one has no one to send to; dropped");
                }
                Action::HighWatermark(_) => {
                    // One voter: everything fsynced is committed, and the image follows the log.
                }
            }
        }
        if appended {
            // The records are durable once their files are fsynced. Sealing (a rolled
            // segment's index, the leader-epoch checkpoint, which a new epoch rewrites) is
            // derived data: a full disk leaves it for the next commit (or is rebuilt at open).
            let target = log.sync_target().map_err(storage)?;
            target.sync().map_err(|e| {
                *fsync_failed = true;
                format!("cannot fsync the metadata log: {e}")
            })?;
            if let Some(work) = log.take_seal() {
                match work.run() {
                    Ok(()) => log.sealed(work).map_err(storage)?,
                    Err(e) if !e.data_lost => {
                        tracing::warn!(error = %e.error, "cannot seal the metadata log's segments (indexes, epoch checkpoint); retried with the next change")
                    }
                    Err(e) => {
                        *fsync_failed = true;
                        return Err(format!("cannot fsync the metadata log: {}", e.error));
                    }
                }
            }
        }
        Ok(controls)
    }
}
