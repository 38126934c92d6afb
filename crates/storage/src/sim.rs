//! [`SimFs`]: an in-memory file system for tests, with injected faults and simulated crashes.
//!
//! It keeps, for every file, what a process sees (the page cache) and what is durable (what
//! the last successful `sync_data` covered), and for every directory entry whether a
//! `sync_dir` made it durable. [`SimFs::crash`] then throws away everything else, as a power
//! loss would: unsynced bytes, and files created or renamed without a directory sync. Handles
//! opened before a crash fail afterwards (the process that held them is gone).
//!
//! Faults: [`SimFs::fail`] arms EIO on the next matching operations (a write, a short write
//! that lands half its bytes, a read, an fsync, ...), and [`SimFs::set_capacity`] makes the
//! disk fill up (writes land what fits, then fail with ENOSPC).

use crate::fs::{Fs, FsFile, OpenMode};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An operation a fault can be armed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// A write fails with EIO and nothing lands.
    Write,
    /// A write lands the first half of its bytes, then fails with EIO.
    ShortWrite,
    Read,
    /// An fsync fails with EIO. As on Linux, the unsynced pages are gone (the file reverts to
    /// its durable contents) and the handle that saw the error fails every later call.
    Sync,
    Open,
    SetLen,
    SyncDir,
    Rename,
    Remove,
}

/// How a crash treats bytes written but not fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// All of them are lost.
    DropUnsynced,
    /// A prefix of each file's unsynced tail survives (a torn write), its length drawn from
    /// the seed; the surviving part may also have its last byte flipped.
    Torn { seed: u64 },
}

#[derive(Debug, Clone)]
struct Fault {
    op: FaultOp,
    path_contains: String,
    times: u32,
}

#[derive(Debug, Clone)]
enum DirOp {
    Rename(PathBuf, PathBuf),
    Remove(PathBuf),
}

impl DirOp {
    fn parents(&self) -> Vec<&Path> {
        match self {
            DirOp::Rename(a, b) => a.parent().into_iter().chain(b.parent()).collect(),
            DirOp::Remove(a) => a.parent().into_iter().collect(),
        }
    }
}

/// `path` with its prefix `from` replaced by `to`, if it is under `from`.
fn moved(path: &Path, from: &Path, to: &Path) -> Option<PathBuf> {
    path.strip_prefix(from).ok().map(|rest| {
        if rest.as_os_str().is_empty() {
            to.to_path_buf()
        } else {
            to.join(rest)
        }
    })
}

fn apply_dir_op(names: &mut BTreeMap<PathBuf, u64>, dirs: &mut BTreeSet<PathBuf>, op: &DirOp) {
    match op {
        DirOp::Rename(from, to) => {
            *names = std::mem::take(names)
                .into_iter()
                .map(|(p, i)| (moved(&p, from, to).unwrap_or(p), i))
                .collect();
            *dirs = std::mem::take(dirs)
                .into_iter()
                .map(|p| moved(&p, from, to).unwrap_or(p))
                .collect();
        }
        DirOp::Remove(dir) => {
            names.retain(|p, _| !p.starts_with(dir));
            dirs.retain(|p| !p.starts_with(dir));
        }
    }
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    /// Directories as a crash finds them: created ones at once (a simplification: directory
    /// creation is taken as durable), renamed and removed ones once `sync_dir` of their parent.
    durable_dirs: BTreeSet<PathBuf>,
    /// Directory renames and removals not yet made durable, in order.
    pending_dir_ops: Vec<DirOp>,
    faults: Vec<Fault>,
    capacity: Option<u64>,
    /// Bumped by every crash: handles from an earlier boot are dead.
    boot: u64,
    /// Faults that fired, for tests to check that one did.
    fired: u64,
    /// File fsyncs that failed (and lost data).
    syncs_failed: u64,
    /// Successful fsyncs of files and directories (the only steps that change what a crash
    /// keeps), and how many more may succeed before the power goes off.
    durability_ops: u64,
    syncs_left: Option<u64>,
    /// The power is off: every operation fails until [`SimFs::crash`].
    off: bool,
}

impl State {
    /// Consumes an armed fault matching `op` on `path`, if any.
    fn take_fault(&mut self, op: FaultOp, path: &Path) -> bool {
        let p = path.to_string_lossy();
        let Some(i) = self
            .faults
            .iter()
            .position(|f| f.op == op && f.times > 0 && p.contains(&f.path_contains))
        else {
            return false;
        };
        self.faults[i].times -= 1;
        if self.faults[i].times == 0 {
            self.faults.remove(i);
        }
        self.fired += 1;
        true
    }

    /// Fails when the power is off; counts a durability step (an fsync) when `sync`, turning
    /// the power off instead when no more may succeed.
    fn power(&mut self, sync: bool) -> io::Result<()> {
        if self.off {
            return Err(eio("power off"));
        }
        if sync {
            if self.syncs_left == Some(0) {
                self.off = true;
                return Err(eio("power off"));
            }
            if let Some(n) = &mut self.syncs_left {
                *n -= 1;
            }
            self.durability_ops += 1;
        }
        Ok(())
    }

    fn used(&self) -> u64 {
        let live: BTreeSet<u64> = self.names.values().copied().collect();
        live.iter()
            .filter_map(|i| self.inodes.get(i))
            .map(|n| n.data.len() as u64)
            .sum()
    }

    fn parent_exists(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(d) if !self.dirs.contains(d) => Err(io::Error::new(io::ErrorKind::NotFound, "no such directory")),
            _ => Ok(()),
        }
    }
}

/// An injected failure: EIO, as the kernel reports a failed device (`_what` names the call,
/// for reading the code).
fn eio(_what: &str) -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

/// A shared handle on one simulated file system (clones see the same files).
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl SimFs {
    pub fn new() -> SimFs {
        SimFs::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Arms a fault: the next `times` operations `op` on a path containing `path_contains`
    /// fail.
    pub fn fail(&self, op: FaultOp, path_contains: &str, times: u32) {
        self.lock().faults.push(Fault {
            op,
            path_contains: path_contains.to_string(),
            times,
        });
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// How many armed faults have fired.
    pub fn faults_fired(&self) -> u64 {
        self.lock().fired
    }

    /// How many file fsyncs failed, each losing that file's unsynced writes.
    pub fn syncs_failed(&self) -> u64 {
        self.lock().syncs_failed
    }

    /// Limits the bytes all files may hold (`None`: unlimited).
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock().capacity = bytes;
    }

    /// Bytes held by all files now.
    pub fn used(&self) -> u64 {
        self.lock().used()
    }

    /// Fsyncs (of files and directories) that succeeded so far: the steps at which a crash
    /// can leave a different state (everything else SimFs keeps is lost by a crash).
    pub fn durability_ops(&self) -> u64 {
        self.lock().durability_ops
    }

    /// Lets `n` more fsyncs succeed; at the next one the power goes off: it and every later
    /// operation fail (nothing more reaches the disk) until [`SimFs::crash`]. Looping `n` over
    /// the fsyncs an operation does simulates a power loss at each of its steps.
    pub fn power_off_after_syncs(&self, n: u64) {
        self.lock().syncs_left = Some(n);
    }

    /// A power loss: keeps only durable state (see [`CrashMode`]). Every open handle dies.
    pub fn crash(&self, mode: CrashMode) {
        let mut s = self.lock();
        s.boot += 1;
        s.off = false;
        s.syncs_left = None;
        s.faults.clear();
        s.names = s.durable_names.clone();
        s.dirs = s.durable_dirs.clone();
        s.pending_dir_ops.clear();
        let live: BTreeSet<u64> = s.names.values().copied().collect();
        s.inodes.retain(|i, _| live.contains(i));
        let mut rng = match mode {
            CrashMode::DropUnsynced => 0,
            CrashMode::Torn { seed } => seed | 1,
        };
        let mut next = || {
            // xorshift64
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut inodes: Vec<_> = s.inodes.iter_mut().collect();
        inodes.sort_by_key(|(i, _)| **i);
        for (_, inode) in inodes {
            let torn = mode != CrashMode::DropUnsynced
                && inode.data.len() > inode.durable.len()
                && inode.data.starts_with(&inode.durable);
            if torn {
                let extra = inode.data.len() - inode.durable.len();
                let keep = inode.durable.len() + (next() % (extra as u64 + 1)) as usize;
                inode.data.truncate(keep);
                if keep > inode.durable.len() && next() % 4 == 0 {
                    if let Some(b) = inode.data.last_mut() {
                        *b ^= 0x5a;
                    }
                }
                inode.durable = inode.data.clone();
            } else {
                inode.data = inode.durable.clone();
            }
        }
    }

    /// The current contents of a file (for tests that corrupt or inspect files).
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.lock();
        s.names.get(path).and_then(|i| s.inodes.get(i)).map(|n| n.data.clone())
    }

    /// Overwrites bytes of a file in place, durably (bit rot, for tests).
    pub fn corrupt(&self, path: &Path, position: usize, bytes: &[u8]) {
        let mut s = self.lock();
        let Some(&i) = s.names.get(path) else { return };
        if let Some(n) = s.inodes.get_mut(&i) {
            for (k, b) in bytes.iter().enumerate() {
                if let Some(x) = n.data.get_mut(position + k) {
                    *x = *b;
                }
                if let Some(x) = n.durable.get_mut(position + k) {
                    *x = *b;
                }
            }
        }
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.power(false)?;
        for d in dir.ancestors() {
            s.dirs.insert(d.to_path_buf());
            s.durable_dirs.insert(d.to_path_buf());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut s = self.lock();
        s.power(false)?;
        if !s.dirs.contains(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        Ok(s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FsFile>> {
        let mut s = self.lock();
        s.power(false)?;
        if s.take_fault(FaultOp::Open, path) {
            return Err(eio("open"));
        }
        s.parent_exists(path)?;
        let inode = match (s.names.get(path).copied(), mode) {
            (Some(i), OpenMode::Truncate) => {
                if let Some(n) = s.inodes.get_mut(&i) {
                    n.data.clear();
                }
                i
            }
            (Some(i), _) => i,
            (None, OpenMode::Existing) => return Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
            (None, _) => {
                s.next_inode += 1;
                let i = s.next_inode;
                s.inodes.insert(i, Inode::default());
                s.names.insert(path.to_path_buf(), i);
                i
            }
        };
        Ok(Arc::new(SimFile {
            fs: self.clone(),
            inode,
            boot: s.boot,
            path: path.to_path_buf(),
            poisoned: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.power(false)?;
        if s.take_fault(FaultOp::Rename, from) {
            return Err(eio("rename"));
        }
        s.parent_exists(to)?;
        let i = s
            .names
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        s.names.insert(to.to_path_buf(), i);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.power(false)?;
        if s.take_fault(FaultOp::Remove, path) {
            return Err(eio("remove"));
        }
        s.names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    fn list_dirs(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut s = self.lock();
        s.power(false)?;
        if !s.dirs.contains(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        Ok(s.dirs
            .iter()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn rename_dir(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.power(false)?;
        if s.take_fault(FaultOp::Rename, from) {
            return Err(eio("rename"));
        }
        if !s.dirs.contains(from) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        s.parent_exists(to)?;
        if s.dirs.contains(to) || s.names.contains_key(to) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "target exists"));
        }
        let op = DirOp::Rename(from.to_path_buf(), to.to_path_buf());
        let State { names, dirs, .. } = &mut *s;
        apply_dir_op(names, dirs, &op);
        s.pending_dir_ops.push(op);
        Ok(())
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.power(false)?;
        if s.take_fault(FaultOp::Remove, dir) {
            return Err(eio("remove"));
        }
        if !s.dirs.contains(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        let op = DirOp::Remove(dir.to_path_buf());
        let State { names, dirs, .. } = &mut *s;
        apply_dir_op(names, dirs, &op);
        s.pending_dir_ops.push(op);
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let s = self.lock();
        s.dirs.contains(path) || s.names.contains_key(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        if s.take_fault(FaultOp::SyncDir, dir) {
            return Err(eio("sync_dir"));
        }
        s.power(true)?;
        // Directory renames and removals under `dir` become durable, in order.
        let (now, later): (Vec<DirOp>, Vec<DirOp>) = std::mem::take(&mut s.pending_dir_ops)
            .into_iter()
            .partition(|op| op.parents().contains(&dir));
        s.pending_dir_ops = later;
        for op in &now {
            let State {
                durable_names,
                durable_dirs,
                ..
            } = &mut *s;
            apply_dir_op(durable_names, durable_dirs, op);
        }
        s.durable_names.retain(|p, _| p.parent() != Some(dir));
        let current: Vec<(PathBuf, u64)> = s
            .names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        s.durable_names.extend(current);
        Ok(())
    }
}

#[derive(Debug)]
struct SimFile {
    fs: SimFs,
    inode: u64,
    boot: u64,
    path: PathBuf,
    /// An fsync through this handle failed.
    poisoned: std::sync::atomic::AtomicBool,
}

impl SimFile {
    /// The file system's state and this file's inode, if the handle is still alive.
    fn with<T>(&self, f: impl FnOnce(&mut State, u64) -> io::Result<T>) -> io::Result<T> {
        let mut s = self.fs.lock();
        if s.boot != self.boot || !s.inodes.contains_key(&self.inode) {
            return Err(eio("stale handle"));
        }
        s.power(false)?;
        if self.poisoned.load(std::sync::atomic::Ordering::Acquire) {
            return Err(eio("after a failed fsync"));
        }
        f(&mut s, self.inode)
    }
}

impl FsFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        self.with(|s, i| {
            if s.take_fault(FaultOp::Read, &self.path) {
                return Err(eio("read"));
            }
            let data = &s.inodes[&i].data;
            let start = usize::try_from(position).unwrap_or(usize::MAX);
            match data.get(start..start.saturating_add(buf.len())) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    Ok(())
                }
                None => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end")),
            }
        })
    }

    fn write_all_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        self.with(|s, i| {
            let mut len = buf.len();
            let mut error = None;
            if s.take_fault(FaultOp::Write, &self.path) {
                return Err(eio("write"));
            }
            if s.take_fault(FaultOp::ShortWrite, &self.path) {
                len /= 2;
                error = Some(eio("short write"));
            }
            let position = usize::try_from(position).map_err(|_| io::Error::other("position"))?;
            let old_len = s.inodes[&i].data.len();
            if let Some(cap) = s.capacity {
                let room = cap.saturating_sub(s.used()) as usize;
                let fits = (old_len + room).saturating_sub(position);
                if len > fits {
                    len = fits;
                    error = Some(io::Error::from_raw_os_error(libc::ENOSPC));
                }
            }
            let data = &mut s.inodes.get_mut(&i).expect("checked by with()").data;
            if data.len() < position + len {
                data.resize(position + len, 0);
            }
            data[position..position + len].copy_from_slice(&buf[..len]);
            error.map_or(Ok(()), Err)
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|s, i| {
            if s.take_fault(FaultOp::SetLen, &self.path) {
                return Err(eio("set_len"));
            }
            let len = usize::try_from(len).map_err(|_| io::Error::other("length"))?;
            s.inodes.get_mut(&i).expect("checked by with()").data.resize(len, 0);
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|s, i| Ok(s.inodes[&i].data.len() as u64))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|s, i| {
            if s.take_fault(FaultOp::Sync, &self.path) {
                s.syncs_failed += 1;
                let n = s.inodes.get_mut(&i).expect("checked by with()");
                n.data = n.durable.clone();
                self.poisoned.store(true, std::sync::atomic::Ordering::Release);
                return Err(eio("fsync"));
            }
            s.power(true)?;
            let n = s.inodes.get_mut(&i).expect("checked by with()");
            n.durable = n.data.clone();
            Ok(())
        })
    }
}
