//! The storage backend seam: every file the log touches goes through [`Fs`] and [`FsFile`].
//!
//! - [`RealFs`]: the operating system's files, with a bound on how many stay open at once
//!   (thousands of partitions must not need thousands of descriptors). A file whose
//!   descriptor was closed to make room is reopened on its next use.
//! - [`SimFs`] (in [`crate::sim`]): an in-memory file system for tests that injects faults
//!   (EIO, short writes, a full disk, failed fsyncs) and simulates a crash that keeps only
//!   what was fsynced.
//!
//! The calls are positional (`pread`/`pwrite` style) so that one handle serves concurrent
//! readers and a writer without a shared cursor.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// How [`Fs::open`] treats the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// The file must exist.
    Existing,
    /// Created if missing; existing contents kept.
    Create,
    /// Created if missing; existing contents dropped.
    Truncate,
}

/// A file system: directories, names, and files to open.
pub trait Fs: Send + Sync + std::fmt::Debug {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names (not paths) of the files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FsFile>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// The names of the subdirectories of `dir` (not its files).
    fn list_dirs(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Renames a directory with everything in it (durable once the parents are synced).
    fn rename_dir(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a directory and everything in it (durable once its parent is synced).
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Whether a file or a directory is at `path`.
    fn exists(&self, path: &Path) -> bool;

    /// Writes `path` whole so that a crash leaves the old contents or the new, never a mix:
    /// a temporary file, fsynced, renamed over it, and the directory fsynced.
    fn write_atomically(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        let f = self.open(&tmp, OpenMode::Truncate)?;
        f.write_all_at(data, 0)?;
        f.sync_data()?;
        drop(f);
        self.rename(&tmp, path)?;
        match path.parent() {
            Some(dir) => self.sync_dir(dir),
            None => Ok(()),
        }
    }

    /// The whole contents of a (small) file.
    fn read_all(&self, path: &Path) -> io::Result<Vec<u8>> {
        let f = self.open(path, OpenMode::Existing)?;
        let mut buf = vec![0u8; usize::try_from(f.len()?).map_err(|_| io::Error::other("file too large"))?];
        f.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// An open file. Shared (`Arc`) between the log and whoever fsyncs it outside the log's lock.
#[allow(clippy::len_without_is_empty)] // a file's length, not a collection's
pub trait FsFile: Send + Sync + std::fmt::Debug {
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()>;
    /// Exactly `len` bytes at `position`, in a new buffer. The default zeroes the buffer and
    /// reads into it; `RealFs` reads into fresh memory without zeroing it first (fetches read
    /// megabytes at a time, and zeroing cost as much CPU as the read).
    fn read_vec_at(&self, len: usize, position: u64) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read_exact_at(&mut buf, position)?;
        Ok(buf)
    }
    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    /// fsync of the data (and the size).
    fn sync_data(&self) -> io::Result<()>;
}

/// The operating system's files, at most `open_files_max` descriptors open at once (a soft
/// bound: see [`FdCache`]).
#[derive(Debug, Clone)]
pub struct RealFs {
    cache: Arc<FdCache>,
}

impl RealFs {
    pub fn new(open_files_max: usize) -> RealFs {
        RealFs {
            cache: Arc::new(FdCache {
                limit: open_files_max.max(1),
                open: AtomicUsize::new(0),
                ring: Mutex::new(Ring::default()),
            }),
        }
    }

    /// Descriptors open now, for metrics and tests.
    pub fn open_files(&self) -> usize {
        self.cache.open.load(Ordering::Relaxed)
    }
}

impl Default for RealFs {
    /// A bound that suits tests and tools: 256 descriptors.
    fn default() -> Self {
        RealFs::new(256)
    }
}

impl Fs for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FsFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(mode != OpenMode::Existing)
            .truncate(mode == OpenMode::Truncate)
            .open(path)?;
        let f = Arc::new_cyclic(|me| RealFile {
            path: path.to_path_buf(),
            cache: self.cache.clone(),
            me: me.clone(),
            referenced: AtomicBool::new(true),
            slot: Mutex::new(Slot {
                file: None,
                written: 0,
                synced: 0,
                poisoned: false,
            }),
            sync_lock: Mutex::new(()),
        });
        let mut slot = f.slot();
        slot.file = Some(Arc::new(file));
        f.cache.admit(f.me.clone());
        drop(slot);
        Ok(f)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn list_dirs(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = vec![];
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(out)
    }

    fn rename_dir(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(dir)
    }

    fn exists(&self, path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok()
    }

    fn read_all(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

/// The open descriptors of a [`RealFs`], closed in CLOCK order (an approximation of least
/// recently used that costs nothing on a hit: a use only sets the file's `referenced` bit).
///
/// At the limit, opening or reopening a file first closes another: one not used since the
/// clock hand last passed, preferring one with nothing to fsync. A file with unsynced writes
/// is fsynced before its descriptor closes (outside the cache's lock), because an error
/// reported on a closed descriptor would be lost (Linux reports a writeback error once per
/// open file); if that fsync fails, the file is poisoned and every later call on it fails with
/// EIO. A file in use by another thread at that moment is skipped. When every file is busy the
/// limit is exceeded for the moment rather than blocking; descriptors close again as soon as
/// files are reopened.
#[derive(Debug)]
struct FdCache {
    limit: usize,
    open: AtomicUsize,
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    files: Vec<Weak<RealFile>>,
    hand: usize,
}

impl FdCache {
    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a file that just got a descriptor, closing others beyond the limit. The
    /// caller holds `file`'s slot lock, so it is never chosen itself.
    fn admit(&self, file: Weak<RealFile>) {
        let dirty_victim = {
            let mut ring = self.ring();
            // Files dropped while under the limit leave dead entries behind: clear them out
            // before they outnumber the live ones.
            if ring.files.len() >= 2 * self.limit.max(64) {
                ring.files.retain(|f| f.strong_count() > 0);
                ring.hand = 0;
            }
            ring.files.push(file);
            self.open.fetch_add(1, Ordering::Relaxed);
            self.close_clean(&mut ring)
        };
        // Every idle file has unsynced writes: close one after an fsync, without holding the
        // ring (other files keep opening meanwhile).
        if let Some(victim) = dirty_victim {
            let Ok(_one_at_a_time) = victim.sync_lock.try_lock() else {
                return;
            };
            let Ok(mut slot) = victim.slot.try_lock() else { return };
            let Some(fd) = slot.file.take() else { return };
            match fd.sync_data() {
                Ok(()) => slot.synced = slot.written,
                Err(e) => {
                    tracing::error!(path = %victim.path.display(), error = %e, "fsync before closing an idle file failed; the file is poisoned");
                    slot.poisoned = true;
                }
            }
            self.open.fetch_sub(1, Ordering::Relaxed);
            // Its ring entry stays; the hand drops it (an entry whose file has no descriptor
            // is removed without counting).
        }
    }

    /// Moves the clock hand, closing idle files with nothing to fsync until the count is
    /// within the limit. Returns an idle file with unsynced writes when only such remain.
    fn close_clean(&self, ring: &mut Ring) -> Option<Arc<RealFile>> {
        let mut dirty = None;
        let mut budget = 2 * ring.files.len();
        while self.open.load(Ordering::Relaxed) > self.limit && budget > 0 && !ring.files.is_empty() {
            budget -= 1;
            if ring.hand >= ring.files.len() {
                ring.hand = 0;
            }
            let hand = ring.hand;
            let Some(victim) = ring.files[hand].upgrade() else {
                ring.files.swap_remove(hand); // dropped: its Drop already counted it out
                continue;
            };
            if victim.referenced.swap(false, Ordering::Relaxed) {
                ring.hand += 1;
                continue;
            }
            let Ok(mut slot) = victim.slot.try_lock() else {
                ring.hand += 1;
                continue;
            };
            if slot.file.is_some() && slot.written != slot.synced {
                drop(slot);
                dirty.get_or_insert(victim);
                ring.hand += 1;
                continue;
            }
            if slot.file.take().is_some() {
                self.open.fetch_sub(1, Ordering::Relaxed);
            }
            drop(slot);
            ring.files.swap_remove(hand);
        }
        if self.open.load(Ordering::Relaxed) > self.limit {
            dirty
        } else {
            None
        }
    }
}

#[derive(Debug)]
struct RealFile {
    path: PathBuf,
    cache: Arc<FdCache>,
    /// This file, for registering with the cache when it is reopened.
    me: Weak<RealFile>,
    /// Set on every use; cleared as the clock hand passes.
    referenced: AtomicBool,
    slot: Mutex<Slot>,
    /// Held across every fsync of the file (taken before `slot`; see `sync_data`).
    sync_lock: Mutex<()>,
}

#[derive(Debug)]
struct Slot {
    /// The descriptor, while open. Shared so an fsync can run without holding the slot.
    file: Option<Arc<File>>,
    /// Writes made, and how many of them the last good fsync covered.
    written: u64,
    synced: u64,
    poisoned: bool,
}

impl RealFile {
    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The descriptor, reopened if it was closed to make room; with the slot still locked.
    fn fd(&self) -> io::Result<(Arc<File>, std::sync::MutexGuard<'_, Slot>)> {
        self.referenced.store(true, Ordering::Relaxed);
        let mut slot = self.slot();
        if slot.poisoned {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        if let Some(f) = &slot.file {
            return Ok((f.clone(), slot));
        }
        let f = Arc::new(OpenOptions::new().read(true).write(true).open(&self.path)?);
        slot.file = Some(f.clone());
        // With the slot locked, so the cache never picks this file to close.
        self.cache.admit(self.me.clone());
        Ok((f, slot))
    }
}

impl Drop for RealFile {
    fn drop(&mut self) {
        if self.slot.get_mut().unwrap_or_else(|p| p.into_inner()).file.is_some() {
            self.cache.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl FsFile for RealFile {
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        let (f, slot) = self.fd()?;
        drop(slot);
        f.read_exact_at(buf, position)
    }

    fn read_vec_at(&self, len: usize, position: u64) -> io::Result<Vec<u8>> {
        use std::os::fd::AsRawFd;
        let (f, slot) = self.fd()?;
        drop(slot);
        let mut buf: Vec<u8> = Vec::with_capacity(len);
        let mut filled = 0usize;
        while filled < len {
            let at = position
                .checked_add(filled as u64)
                .and_then(|p| libc::off_t::try_from(p).ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "read position out of range"))?;
            // SAFETY: the destination is the buffer's allocation from `filled` on, `len - filled`
            // bytes of its capacity; pread writes at most that many bytes there and nothing else.
            let n = unsafe { libc::pread(f.as_raw_fd(), buf.as_mut_ptr().add(filled).cast(), len - filled, at) };
            match n {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file ends before the read",
                    ))
                }
                n if n < 0 => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
                n => filled += n as usize,
            }
        }
        // SAFETY: pread initialized all `len` bytes (the loop ends only when `filled == len`).
        unsafe { buf.set_len(len) };
        Ok(buf)
    }

    // Writes hold the slot lock until they have landed and are counted, so neither an fsync
    // nor the cache can take the file for clean while a write is in flight. (Writes to one
    // file are serialised by its log's lock anyway.)
    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        let (f, mut slot) = self.fd()?;
        let result = f.write_all_at(buf, position);
        slot.written += 1;
        result
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let (f, mut slot) = self.fd()?;
        let result = f.set_len(len);
        slot.written += 1;
        result
    }

    fn len(&self) -> io::Result<u64> {
        let (f, slot) = self.fd()?;
        drop(slot);
        Ok(f.metadata()?.len())
    }

    /// fsyncs of one file run one at a time, so that the error of a failed one cannot be
    /// reported to it alone while a concurrent one (a group commit and a seal, say) returns
    /// success: the second then finds the file poisoned.
    fn sync_data(&self) -> io::Result<()> {
        let _one_at_a_time = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        {
            // Closed after an fsync of every write (see `FdCache`): nothing to do, and no
            // reopen (the file may have been renamed for deletion since).
            let slot = self.slot();
            if slot.file.is_none() && !slot.poisoned && slot.written == slot.synced {
                return Ok(());
            }
        }
        let (f, slot) = self.fd()?;
        let covers = slot.written;
        drop(slot);
        let result = f.sync_data();
        let mut slot = self.slot();
        match result {
            Ok(()) if slot.poisoned => Err(io::Error::from_raw_os_error(libc::EIO)),
            Ok(()) => {
                slot.synced = slot.synced.max(covers);
                Ok(())
            }
            Err(e) => {
                slot.poisoned = true;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_stay_bounded_and_closed_files_reopen_with_their_data() {
        let dir = std::env::temp_dir().join(format!("sluice-fdcache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fs = RealFs::new(8);
        let files: Vec<_> = (0..100)
            .map(|i| {
                let f = fs.open(&dir.join(format!("{i}")), OpenMode::Truncate).unwrap();
                f.write_all_at(format!("file {i}").as_bytes(), 0).unwrap();
                // Never more than the limit: idle files (dirty ones fsynced first) are closed.
                assert!(fs.open_files() <= 8, "{} open", fs.open_files());
                f
            })
            .collect();
        for (i, f) in files.iter().enumerate().rev() {
            let want = format!("file {i}");
            let mut buf = vec![0u8; want.len()];
            f.read_exact_at(&mut buf, 0).unwrap();
            assert_eq!(buf, want.as_bytes());
            f.write_all_at(b"F", 0).unwrap();
            f.sync_data().unwrap();
            assert!(fs.open_files() <= 8);
        }
        drop(files);
        assert_eq!(fs.open_files(), 0, "dropping a handle closes its descriptor");
        // Short-lived handles (index and checkpoint writes) leave no growing trail behind.
        for i in 0..1000 {
            drop(fs.open(&dir.join(format!("{}", i % 10)), OpenMode::Create).unwrap());
        }
        assert!(
            fs.cache.ring().files.len() <= 2 * 64 + 1,
            "{}",
            fs.cache.ring().files.len()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn read_vec_at_reads_exactly_the_range_or_fails_at_the_end() {
        let dir = std::env::temp_dir().join(format!("sluice-readvec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fs = RealFs::new(4);
        let f = fs.open(&dir.join("f"), OpenMode::Truncate).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all_at(&data, 0).unwrap();
        assert_eq!(f.read_vec_at(data.len(), 0).unwrap(), data);
        assert_eq!(f.read_vec_at(1000, 12_345).unwrap(), &data[12_345..13_345]);
        assert!(f.read_vec_at(0, 5).unwrap().is_empty());
        let past = f.read_vec_at(10, data.len() as u64 - 5).unwrap_err();
        assert_eq!(past.kind(), io::ErrorKind::UnexpectedEof);
        assert!(f.read_vec_at(1, u64::MAX).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn many_threads_share_a_small_cache_without_losing_writes_or_deadlocking() {
        let dir = std::env::temp_dir().join(format!("sluice-fdcache-mt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fs = RealFs::new(4);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (fs, dir) = (fs.clone(), dir.clone());
                std::thread::spawn(move || {
                    let files: Vec<_> = (0..4)
                        .map(|i| fs.open(&dir.join(format!("{t}-{i}")), OpenMode::Truncate).unwrap())
                        .collect();
                    for round in 0..200u64 {
                        for (i, f) in files.iter().enumerate() {
                            f.write_all_at(&round.to_be_bytes(), 8 * round).unwrap();
                            if (round + i as u64) % 7 == 0 {
                                f.sync_data().unwrap();
                            }
                            let mut b = [0u8; 8];
                            f.read_exact_at(&mut b, 8 * round).unwrap();
                            assert_eq!(u64::from_be_bytes(b), round);
                        }
                    }
                    for f in &files {
                        assert_eq!(f.len().unwrap(), 8 * 200);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Every handle is dropped: the count of open descriptors stays exact under contention.
        assert_eq!(fs.open_files(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
