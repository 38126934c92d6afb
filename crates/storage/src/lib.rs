//! The partition log on disk: `Log` → `Segment` (a `.log` file of record batches as received
//! plus a sparse index, which also serves as the time index), and `GroupCommit`, which lets
//! concurrent appends share fsyncs.
//!
//! Knows nothing of requests, sockets or the replication protocol; it gives followers what
//! they need from a log: [`Log::append_replicated`] (batches as fetched, never restamped),
//! [`Log::truncate_to`] (all or nothing across a crash) and the leader-epoch cache
//! ([`Log::end_offset_for_epoch`], Kafka's `leader-epoch-checkpoint`). Built: segmented append and read,
//! rolling by size and by `segment.ms` with rolled segments sealed in the background (no fsync
//! on the append path), recovery after a crash (sealed segments trusted, the rest re-checked
//! and cut at a torn write) and a fast open after a clean shutdown, retention by time and size
//! (the active segment too, as Kafka), DeleteRecords with a log start offset checkpoint,
//! deleted files removed in the background, timestamp and max-timestamp lookups, group
//! commit, and a backend seam ([`Fs`]) with a descriptor-bounded real backend and a
//! fault-injecting simulated one ([`sim::SimFs`]).
//!
//! Reads verify every batch's CRC before serving it. A read is one `pread` into fresh, unzeroed
//! memory (`FsFile::read_vec_at`), and the broker sends that buffer as it is; `sendfile` is not
//! used because it would serve bytes nobody checked (docs/benchmarks.md measures both costs).

mod delete;
pub mod disk;
mod epoch;
mod flush;
pub mod fs;
mod log;
mod segment;
pub mod sim;

pub use crate::delete::{remove_dirs_later, wait_for_deletions};
pub use crate::epoch::{
    EpochEntry, LeaderEpochCache, LEADER_EPOCH_CHECKPOINT, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET,
};
pub use crate::flush::{GroupCommit, SyncTarget};
pub use crate::fs::{Fs, FsFile, OpenMode, RealFs};
pub use crate::log::{default_fs, AppendInfo, Log, LogConfig, SealError, SealWork, Skipped, STRAY_SUFFIX};
pub use crate::segment::BatchInfo;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("offset {offset} is outside the log ({start}..={end})")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    #[error("batch of {size} bytes exceeds the limit of {max}")]
    BatchTooLarge { size: usize, max: usize },
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    #[error("{path} is corrupt at byte {position}: {why}")]
    Corrupt { path: PathBuf, position: u64, why: String },
    /// A replicated batch does not start at the log end (the caller truncates or refetches).
    #[error("batch at offset {base_offset} does not continue the log, which ends at {log_end}")]
    OffsetMismatch { base_offset: i64, log_end: i64 },
    /// A batch's partition leader epoch is below the log's latest (or negative in a
    /// replicated batch).
    #[error("batch at offset {base_offset} has leader epoch {epoch}, below the log's latest epoch {latest}")]
    EpochRegression { base_offset: i64, epoch: i32, latest: i32 },
    /// A truncation would remove records below the log start offset.
    #[error("cannot truncate to {offset}: the batch holding it starts at {batch_base}, below the log start offset {log_start}")]
    TruncateBelowStart {
        offset: i64,
        batch_base: i64,
        log_start: i64,
    },
    #[error("an earlier fsync of this log failed: it takes no writes until the broker restarts")]
    Failed,
}
