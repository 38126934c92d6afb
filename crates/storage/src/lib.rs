//! The partition log on disk: `Log` → `Segment` (a `.log` file of record batches as received
//! plus a sparse offset index), with recovery of a torn tail on open.
//!
//! Knows nothing of requests, sockets or replication. Built so far (issue 3 is open): segmented
//! append and read, rolling by size and by `segment.ms`, offset index, recovery of the last segment, retention by time and
//! size (the active segment too, as Kafka), DeleteRecords with a log start offset checkpoint, timestamp lookups (an in-memory time
//! index rebuilt on open). Not yet: a persisted time index, clean-shutdown
//! fast start, recovery-point checkpoint, flush policy and group commit, a fault-injecting
//! backend, bounded open files, asynchronous file deletion.

pub mod disk;
mod flush;
mod log;
mod segment;

pub use crate::flush::{GroupCommit, SyncTarget};
pub use crate::log::{AppendInfo, Log, LogConfig};
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
    #[error("an earlier fsync of this log failed: it takes no writes until the broker restarts")]
    Failed,
}
