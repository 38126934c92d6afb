//! Removing retired segment files in the background.
//!
//! Unlinking a large file can take tens of milliseconds while the file system frees its
//! extents, and retention runs with the partition locked. So a deleted segment's files are
//! renamed at once (`*.deleted`, see [`crate::segment::Segment::retire`]) and removed here, by
//! one thread for the whole process. The queue is bounded: when it is full the caller removes
//! the files itself (slower, never lost). Files still pending at a crash are removed when
//! their log is next opened.

use crate::fs::Fs;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

/// Files waiting to be removed, at most.
const QUEUE_MAX: usize = 4096;

enum Job {
    Remove(Arc<dyn Fs>, PathBuf),
    /// A whole directory (a deleted topic's partition, renamed aside first).
    RemoveDir(Arc<dyn Fs>, PathBuf),
    /// Answered once every job queued before it is done.
    Barrier(SyncSender<()>),
}

fn queue() -> Option<&'static Mutex<SyncSender<Job>>> {
    static QUEUE: OnceLock<Option<Mutex<SyncSender<Job>>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = sync_channel(QUEUE_MAX);
            let spawned = std::thread::Builder::new()
                .name("sluice-file-deleter".into())
                .spawn(move || run(rx));
            match spawned {
                Ok(_) => Some(Mutex::new(tx)),
                Err(e) => {
                    tracing::warn!(error = %e, "no background file deleter: segment files are removed inline");
                    None
                }
            }
        })
        .as_ref()
}

fn run(rx: Receiver<Job>) {
    for job in rx {
        match job {
            Job::Remove(fs, path) => remove(&*fs, &path),
            Job::RemoveDir(fs, dir) => remove_dir(&*fs, &dir),
            Job::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
}

fn remove(fs: &dyn Fs, path: &std::path::Path) {
    match fs.remove(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // Left for the next open of the log to retry.
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not remove a deleted segment file"),
    }
}

/// Removes `paths` in the background (inline when the queue is full).
pub(crate) fn remove_later(fs: &Arc<dyn Fs>, paths: Vec<PathBuf>) {
    for path in paths {
        let Some(q) = queue() else {
            remove(&**fs, &path);
            continue;
        };
        let sent = q
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_send(Job::Remove(fs.clone(), path));
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(Job::Remove(fs, path)) | TrySendError::Disconnected(Job::Remove(fs, path))) => {
                remove(&*fs, &path)
            }
            Err(_) => {}
        }
    }
}

fn remove_dir(fs: &dyn Fs, dir: &std::path::Path) {
    match fs.remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        // Left for the next start to retry (it removes `*-delete` directories).
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "could not remove a deleted partition directory"),
    }
}

/// Removes whole directories in the background (inline when the queue is full): a deleted
/// topic's partition directories, already renamed aside so that nothing else opens them.
pub fn remove_dirs_later(fs: &Arc<dyn Fs>, dirs: Vec<PathBuf>) {
    for dir in dirs {
        let Some(q) = queue() else {
            remove_dir(&**fs, &dir);
            continue;
        };
        let sent = q
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_send(Job::RemoveDir(fs.clone(), dir));
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(Job::RemoveDir(fs, dir)) | TrySendError::Disconnected(Job::RemoveDir(fs, dir))) => {
                remove_dir(&*fs, &dir)
            }
            Err(_) => {}
        }
    }
}

/// Waits until every removal queued so far is done (tests, and shutdown).
pub fn wait_for_deletions() {
    let Some(q) = queue() else { return };
    let (tx, rx) = sync_channel(1);
    let sent = q.lock().unwrap_or_else(|p| p.into_inner()).send(Job::Barrier(tx));
    if sent.is_ok() {
        let _ = rx.recv();
    }
}
