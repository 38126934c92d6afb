//! The local metadata log, `<data dir>/__cluster_metadata-0`: every change to cluster state
//! (topics created and deleted, partitions added, topic and broker configs, producer-id
//! blocks, this broker's registration) is one batch of Kafka's metadata records, appended and
//! fsynced before the change is answered, then applied to the [`MetadataImage`] every cluster
//! question is answered from.
//!
//! This node is a controller quorum of one: its log is the one the KRaft quorum will replicate
//! (next issue), in Kafka's layout, so Kafka's `kafka-dump-log --cluster-metadata-decoder`
//! reads it. At start the image is the newest snapshot plus the log after it; a snapshot is
//! written once [`SNAPSHOT_BYTES`] of records have been appended since the last one, and the
//! log before it is removed.
//!
//! A change is refused whole, before anything is written, when its records contradict the
//! image (see `metadata::MetadataDelta`). A failed write or fsync fails the change; the log then
//! takes no more writes until a restart (`storage::Log` stops after a failed fsync), so no
//! change is ever answered that is not on disk.

use metadata::{frame, snapshot, Changes, MetadataDelta, MetadataImage, MetadataRecord};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use storage::{Fs, Log, LogConfig};

/// The directory of the metadata log in the data directory.
pub const DIR: &str = "__cluster_metadata-0";

/// The leader epoch of every batch this node writes: the single voter's only epoch. (The
/// KRaft quorum will own epochs.)
pub const EPOCH: i32 = 1;

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
}

pub struct MetadataLog {
    dir: PathBuf,
    fs: Arc<dyn Fs>,
    state: Mutex<State>,
    image: RwLock<Arc<MetadataImage>>,
    snapshot_bytes: u64,
    /// Stamps the batches (`commit_now`).
    clock: Arc<dyn crate::clock::Clock>,
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
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        // The newest snapshot that the log continues: its end lies within the log.
        let mut image = None;
        for &(snap_end, epoch) in snapshots.iter().rev().filter(|(e, _)| (start..=end).contains(e)) {
            let path = dir.join(snapshot::file_name(snap_end, epoch));
            match fs
                .read_all(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| snapshot::read(bytes.into(), snap_end, epoch))
            {
                Ok(i) => {
                    image = Some(i);
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
        let mut offset = delta.image().offset + 1;
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
        let (image, _) = delta.apply();
        let empty = end == 0;
        Ok(Opened {
            empty,
            log: MetadataLog {
                dir,
                fs,
                state: Mutex::new(State {
                    log,
                    bytes_since_snapshot: 0,
                }),
                image: RwLock::new(Arc::new(image)),
                snapshot_bytes,
                clock: Arc::new(crate::clock::SystemClock::new()),
            },
        })
    }

    /// Stamps batches with `clock`'s time (the broker's).
    pub fn with_clock(mut self, clock: Arc<dyn crate::clock::Clock>) -> MetadataLog {
        self.clock = clock;
        self
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
        let base = self.image();
        let start = state.log.log_end_offset();
        let mut delta = MetadataDelta::new(base);
        for (i, r) in records.iter().enumerate() {
            delta
                .replay(start + i as i64, EPOCH, r)
                .map_err(|e| CommitError::Refused(e.to_string()))?;
        }
        let batch = frame::batch(&records, now_ms).map_err(CommitError::Refused)?;
        let size = batch.len() as u64;
        let storage = |e: storage::StorageError| CommitError::Storage(e.to_string());
        state.log.append(batch, EPOCH, now_ms).map_err(storage)?;
        state.log.sync().map_err(storage)?;
        if let Some(work) = state.log.take_seal() {
            // A rolled segment: sealed here (the metadata log is small and changes rarely).
            match work.run() {
                Ok(()) => state.log.sealed(work).map_err(storage)?,
                Err(e) => return Err(CommitError::Storage(e.error.to_string())),
            }
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
        let bytes = snapshot::write(image, EPOCH, now_ms)?;
        let path = self.dir.join(snapshot::file_name(end, EPOCH));
        let io = |e: std::io::Error| format!("{}: {e}", path.display());
        self.fs.write_atomically(&path, &bytes).map_err(io)?;
        state.log.delete_records_before(end).map_err(|e| e.to_string())?;
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
