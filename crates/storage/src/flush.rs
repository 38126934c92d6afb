//! Making appends durable: group commit, so that concurrent appends to one log share an fsync.
//!
//! An append is made under the caller's lock on the log and is cheap (a write into the page
//! cache). Whoever then needs it durable calls [`GroupCommit::sync_to`] *without* that lock.
//! If no fsync is running, the caller starts one covering everything appended by then; callers
//! arriving meanwhile wait, and when it ends, all those it covered return at once and one of
//! the others starts the next. Under load, one fsync serves every append that arrived during
//! the previous one.
//!
//! After an fsync fails, the kernel may have dropped the dirty pages it could not write, so
//! nothing after the last good fsync can be trusted to be on disk. The log is then marked
//! failed: every later `sync_to` fails at once, and the owner must stop acknowledging writes
//! (the broker answers `KAFKA_STORAGE_ERROR` until it is restarted and recovery has re-checked
//! the files).

use crate::fs::{Fs, FsFile};
use crate::StorageError;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::{Condvar, Mutex};

/// What one group fsync covers (see [`crate::Log::sync_target`]): the files holding
/// everything appended up to `end_offset`, and the directory when it has new names.
#[derive(Debug)]
pub struct SyncTarget {
    pub(crate) files: Vec<Arc<dyn FsFile>>,
    pub(crate) dir: Option<(Arc<dyn Fs>, PathBuf)>,
    /// The active segment's path, for error messages.
    pub(crate) path: PathBuf,
    pub(crate) end_offset: i64,
}

impl SyncTarget {
    /// fsyncs every file, then the directory.
    pub fn sync(&self) -> std::io::Result<()> {
        for f in &self.files {
            f.sync_data()?;
        }
        if let Some((fs, dir)) = &self.dir {
            fs.sync_dir(dir)?;
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct State {
    /// Every offset below this is on disk.
    durable_end: i64,
    /// An fsync is running; callers it may not cover wait for it to end.
    syncing: bool,
    failed: bool,
}

#[derive(Debug)]
pub struct GroupCommit {
    state: Mutex<State>,
    /// Signalled after every fsync, so all the callers it covered return together.
    synced: Condvar,
    /// Copies of `State::durable_end` and failure for lock-free checks.
    durable_end: AtomicI64,
    failed: AtomicBool,
    /// When the last fsync finished (ms since the epoch, as the caller's clock gives it).
    last_sync_ms: AtomicI64,
    /// fsyncs done, for benchmarks and metrics.
    syncs: AtomicU64,
}

impl GroupCommit {
    /// `durable_end`: the log end offset known to be on disk (after `Log::open`, its end).
    pub fn new(durable_end: i64, now_ms: i64) -> GroupCommit {
        GroupCommit {
            state: Mutex::new(State {
                durable_end,
                ..State::default()
            }),
            synced: Condvar::new(),
            durable_end: AtomicI64::new(durable_end),
            failed: AtomicBool::new(false),
            last_sync_ms: AtomicI64::new(now_ms),
            syncs: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Marks the log failed after an fsync of its records failed elsewhere (a background seal):
    /// as after a failed group fsync, nothing more may be acknowledged.
    pub fn fail(&self) {
        let mut state = self.lock();
        state.failed = true;
        self.failed.store(true, Ordering::Release);
        drop(state);
        self.synced.notify_all();
    }

    /// The log was cut back to `end` (its owner stepped over damage by cutting it, see
    /// `Log::skip_damaged`; the cut was fsynced): offsets from `end` on are not on disk any
    /// more, so appends there must be fsynced again before they count as durable.
    pub fn truncated_to(&self, end: i64) {
        let mut state = self.lock();
        state.durable_end = state.durable_end.min(end);
        self.durable_end.store(state.durable_end, Ordering::Release);
    }

    /// Whether an fsync has failed: nothing more may be acknowledged as durable.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Returns once every offset below `end_offset` is on disk. `target` is called (at most
    /// once, and only when this caller must fsync) to take the log's lock briefly and say what
    /// to fsync; it must not be called with that lock held. Blocks: call it off async threads.
    ///
    /// Leader and followers: a caller that finds no fsync running starts one covering all
    /// that is appended by then; callers arriving meanwhile wait, and when it ends they all
    /// return if it covered them, or one of them starts the next.
    pub fn sync_to(
        &self,
        end_offset: i64,
        now_ms: impl Fn() -> i64,
        target: impl FnOnce() -> Result<SyncTarget, StorageError>,
    ) -> Result<(), StorageError> {
        if self.failed() {
            return Err(StorageError::Failed);
        }
        if self.durable_end() >= end_offset {
            return Ok(());
        }
        let mut state = self.lock();
        loop {
            if state.failed {
                return Err(StorageError::Failed);
            }
            if state.durable_end >= end_offset {
                return Ok(());
            }
            if !state.syncing {
                break;
            }
            state = self.synced.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.syncing = true;
        drop(state);
        // Err(_, true): the fsync itself failed.
        let outcome = match target() {
            Err(e) => Err((e, false)),
            Ok(t) => match t.sync() {
                Ok(()) => Ok(t.end_offset),
                Err(source) => {
                    tracing::error!(path = %t.path.display(), error = %source, "fsync failed: the log takes no more writes until a restart");
                    Err((StorageError::Io { path: t.path, source }, true))
                }
            },
        };
        let mut state = self.lock();
        state.syncing = false;
        let result = match outcome {
            Ok(end) => {
                state.durable_end = state.durable_end.max(end);
                self.durable_end.store(state.durable_end, Ordering::Release);
                self.syncs.fetch_add(1, Ordering::Relaxed);
                self.last_sync_ms.store(now_ms(), Ordering::Release);
                Ok(())
            }
            Err((e, true)) => {
                state.failed = true;
                self.failed.store(true, Ordering::Release);
                Err(e)
            }
            // `target` failed before any fsync: nothing was lost, the next caller tries again.
            Err((e, false)) => Err(e),
        };
        drop(state);
        self.synced.notify_all();
        result
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
    fn concurrent_appends_each_return_durable() {
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
        let fs = crate::sim::SimFs::new();
        fs.create_dir_all(std::path::Path::new("/d")).unwrap();
        let file = fs.open(std::path::Path::new("/d/f"), crate::OpenMode::Create).unwrap();
        fs.fail(crate::sim::FaultOp::Sync, "/d/f", 1);
        let target = SyncTarget {
            files: vec![file],
            dir: None,
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
