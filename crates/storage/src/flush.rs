//! Making appends durable: group commit, so that concurrent appends to one log share an fsync.
//!
//! An append is made under the caller's lock on the log and is cheap (a write into the page
//! cache). Whoever then needs it durable calls [`GroupCommit::sync_to`] *without* that lock:
//! one caller at a time fsyncs, covering everything appended up to the moment it started;
//! callers that arrive meanwhile queue, and when their turn comes usually find their append
//! already covered and return without an fsync of their own. Under load, one fsync serves
//! every append that arrived during the previous one.
//!
//! After an fsync fails, the kernel may have dropped the dirty pages it could not write, so
//! nothing after the last good fsync can be trusted to be on disk. The log is then marked
//! failed: every later `sync_to` fails at once, and the owner must stop acknowledging writes
//! (the broker answers `KAFKA_STORAGE_ERROR` until it is restarted and recovery has re-checked
//! the files).

use crate::StorageError;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// What one fsync covers: the log's active segment file (older segments were synced when they
/// were rolled) and the log end offset when it was taken.
#[derive(Debug)]
pub struct SyncTarget {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    pub(crate) end_offset: i64,
}

#[derive(Debug)]
pub struct GroupCommit {
    /// Held for the length of one fsync; waiters queue on it.
    turn: Mutex<()>,
    /// Every offset below this is on disk.
    durable_end: AtomicI64,
    /// When the last fsync finished (ms since the epoch, as the caller's clock gives it).
    last_sync_ms: AtomicI64,
    failed: AtomicBool,
    /// fsyncs done, for benchmarks and metrics.
    syncs: AtomicU64,
}

impl GroupCommit {
    /// `durable_end`: the log end offset known to be on disk (after `Log::open`, its end).
    pub fn new(durable_end: i64, now_ms: i64) -> GroupCommit {
        GroupCommit {
            turn: Mutex::new(()),
            durable_end: AtomicI64::new(durable_end),
            last_sync_ms: AtomicI64::new(now_ms),
            failed: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
        }
    }

    pub fn durable_end(&self) -> i64 {
        self.durable_end.load(Ordering::Acquire)
    }

    pub fn last_sync_ms(&self) -> i64 {
        self.last_sync_ms.load(Ordering::Acquire)
    }

    /// How many fsyncs have been done.
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Whether an fsync has failed: nothing more may be acknowledged as durable.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Returns once every offset below `end_offset` is on disk. `target` is called (at most
    /// once, and only when an fsync is needed) to take the log's lock briefly and say what to
    /// fsync; it must not be called with that lock held. Blocks: call it off async threads.
    pub fn sync_to(
        &self,
        end_offset: i64,
        now_ms: impl Fn() -> i64,
        target: impl FnOnce() -> Result<SyncTarget, StorageError>,
    ) -> Result<(), StorageError> {
        if self.durable_end() >= end_offset {
            return self.check_failed();
        }
        let _turn = self.turn.lock().unwrap_or_else(|p| p.into_inner());
        self.check_failed()?;
        // The fsync that held the turn before us may have covered this append too.
        if self.durable_end() >= end_offset {
            return Ok(());
        }
        let t = target()?;
        if let Err(source) = t.file.sync_data() {
            self.failed.store(true, Ordering::Release);
            tracing::error!(path = %t.path.display(), error = %source, "fsync failed: the log takes no more writes until a restart");
            return Err(StorageError::Io { path: t.path, source });
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.durable_end.fetch_max(t.end_offset, Ordering::AcqRel);
        self.last_sync_ms.store(now_ms(), Ordering::Release);
        Ok(())
    }

    fn check_failed(&self) -> Result<(), StorageError> {
        if self.failed() {
            return Err(StorageError::Failed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Log, LogConfig};
    use std::sync::Arc;
    use wire::records::BatchBuilder;
    use wire::Compression;

    fn batch() -> bytes::Bytes {
        let mut b = BatchBuilder::new(Compression::None);
        b.push(1, None, Some(b"v"), &[]);
        b.build()
    }

    #[test]
    fn concurrent_appends_each_return_durable_and_share_fsyncs() {
        let dir = std::env::temp_dir().join(format!("sluice-flush-{}", std::process::id()));
        let log = Arc::new(Mutex::new(Log::open(&dir, LogConfig::default()).unwrap()));
        let commit = Arc::new(GroupCommit::new(0, 0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (log, commit) = (log.clone(), commit.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let end = {
                            let mut l = log.lock().unwrap();
                            l.append(batch(), 0, 0).unwrap().last_offset + 1
                        };
                        commit.sync_to(end, || 0, || log.lock().unwrap().sync_target()).unwrap();
                        // Durable once it returns: its own append and every earlier one.
                        assert!(commit.durable_end() >= end);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(commit.durable_end(), 400);
        assert!(commit.sync_count() <= 400, "never more fsyncs than appends");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_fsync_fails_every_later_sync() {
        let commit = GroupCommit::new(10, 0);
        // fsync of a pipe fails with EINVAL: a stand-in for a disk that refuses.
        let (reader, _writer) = std::io::pipe().unwrap();
        let file = File::from(std::os::fd::OwnedFd::from(reader));
        let target = SyncTarget {
            file,
            path: PathBuf::from("pipe"),
            end_offset: 20,
        };
        assert!(matches!(
            commit.sync_to(20, || 0, || Ok(target)),
            Err(StorageError::Io { .. })
        ));
        assert!(commit.failed());
        assert_eq!(commit.durable_end(), 10, "nothing past the failure counts as durable");
        // Even an append that was durable before: the log must stop acknowledging.
        assert!(matches!(
            commit.sync_to(5, || 0, || unreachable!()),
            Err(StorageError::Failed)
        ));
        assert!(matches!(
            commit.sync_to(30, || 0, || unreachable!()),
            Err(StorageError::Failed)
        ));
    }
}
