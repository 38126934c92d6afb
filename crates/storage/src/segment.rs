//! One segment of a partition log: a `.log` file of record batches exactly as stored, and a
//! sparse offset index (`.index`) kept in memory and appended to disk.
//!
//! File names are the segment's base offset, zero-padded to 20 digits, so a directory listing
//! sorts in offset order. The index is derived state: when it is missing or does not match the
//! log, it is rebuilt from the log.

use crate::fs::{Fs, FsFile, OpenMode};
use crate::StorageError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wire::records::{CRC_START, HEADER_BYTES, LOG_OVERHEAD};

/// An offset index entry: (offset relative to the segment base, byte position in the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IndexEntry {
    relative_offset: u32,
    position: u32,
}

/// On disk: relative offset (u32), position (u32), largest timestamp of the batches before
/// the position (i64, the time index), big-endian.
const INDEX_ENTRY_BYTES: usize = 16;

/// The first 8 bytes of the last entry of a sealed segment's index, whose other 8 hold the
/// size of the log it covers: no real entry has this offset and position.
const SEALED_MARK: [u8; 8] = [0xff; 8];

/// The most a batch may decompress to when the log reads inside it (timestamp lookups).
const BATCH_DECOMPRESSED_BYTES_MAX: usize = 256 << 20;

/// The fields of a stored batch header a segment needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    pub position: u64,
    pub size: u32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    /// The partition leader epoch stamped on the batch (-1: none).
    pub partition_leader_epoch: i32,
    /// Idempotent producer fields (-1 when the batch has none).
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

pub struct Segment {
    base_offset: i64,
    fs: Arc<dyn Fs>,
    log_path: PathBuf,
    index_path: PathBuf,
    log: Arc<dyn FsFile>,
    /// Index entries already written to the `.index` file (which is opened only to write).
    index_written: usize,
    /// Bytes in the log file that hold whole, valid batches.
    size: u64,
    index: Vec<IndexEntry>,
    /// For each index entry, the largest timestamp of the batches before its position: a
    /// nondecreasing list that narrows timestamp lookups (the time index, kept in memory and
    /// rebuilt with the offset index).
    index_prior_max_timestamp: Vec<i64>,
    /// A sealed segment's index lives only on disk: its `.index` file (fully written and
    /// fsynced) and how many entries it holds. Lookups binary-search it with small reads that
    /// the page cache serves, so an idle segment holds no index in memory (the in-memory
    /// vectors above are then empty).
    index_on_disk: Option<(Arc<dyn FsFile>, usize)>,
    /// Its index on disk carries the seal mark (see [`Segment::seal_bytes`]).
    sealed_on_disk: bool,
    bytes_since_index: u64,
    index_interval_bytes: u64,
    /// The offset after the last batch (the segment's log end), or the base if empty.
    next_offset: i64,
    max_timestamp: i64,
    /// The first batch's max timestamp: where `segment.ms` is measured from (as Kafka's
    /// `rollingBasedTimestamp`). `None` while the segment is empty.
    first_batch_timestamp: Option<i64>,
    /// When the segment was created, or first appended to after the log was opened: the
    /// fallback for `segment.ms` when batches carry no timestamp.
    created_ms: Option<i64>,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("base_offset", &self.base_offset)
            .field("size", &self.size)
            .field("next_offset", &self.next_offset)
            .finish()
    }
}

pub fn file_name(base_offset: i64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Parses the header at `position` of `file`, if a whole batch header is there.
fn read_batch_info(file: &dyn FsFile, position: u64, file_size: u64) -> Result<Option<BatchInfo>, std::io::Error> {
    if position + HEADER_BYTES as u64 > file_size {
        return Ok(None);
    }
    let mut h = [0u8; HEADER_BYTES];
    file.read_exact_at(&mut h, position)?;
    let base_offset = i64::from_be_bytes(h[0..8].try_into().unwrap_or_default());
    let length = i32::from_be_bytes(h[8..12].try_into().unwrap_or_default());
    let last_delta = i32::from_be_bytes(h[23..27].try_into().unwrap_or_default());
    let max_timestamp = i64::from_be_bytes(h[35..43].try_into().unwrap_or_default());
    if length < (HEADER_BYTES - LOG_OVERHEAD) as i32 || h[16] != 2 || last_delta < 0 {
        return Ok(None);
    }
    // The offset after the batch must exist (a damaged base near i64::MAX is not a batch).
    if base_offset.checked_add(i64::from(last_delta) + 1).is_none() {
        return Ok(None);
    }
    let size = LOG_OVERHEAD as u64 + length as u64;
    if position + size > file_size || size > u32::MAX as u64 {
        return Ok(None);
    }
    Ok(Some(BatchInfo {
        position,
        size: size as u32,
        base_offset,
        last_offset: base_offset + i64::from(last_delta),
        max_timestamp,
        partition_leader_epoch: i32::from_be_bytes(h[12..16].try_into().unwrap_or_default()),
        producer_id: i64::from_be_bytes(h[43..51].try_into().unwrap_or_default()),
        producer_epoch: i16::from_be_bytes(h[51..53].try_into().unwrap_or_default()),
        base_sequence: i32::from_be_bytes(h[53..57].try_into().unwrap_or_default()),
    }))
}

/// Whether `name` is a segment file name: 20 digits (the zero-padded base offset) and `.ext`.
pub fn parse_file_name(name: &str, ext: &str) -> Option<i64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse::<i64>().ok()
}

/// What the first bytes of a segment's log file say, before the segment is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBatch {
    /// The file is empty.
    Empty,
    /// A batch header that frames a batch inside the file, with its base offset.
    Base(i64),
    /// No readable batch header (torn or damaged): recovery decides.
    Unreadable,
}

/// Reads the first batch header of the segment at `base` (see [`FirstBatch`]).
pub fn first_batch(fs: &Arc<dyn Fs>, dir: &Path, base: i64) -> Result<FirstBatch, StorageError> {
    let path = dir.join(file_name(base, "log"));
    let file = fs.open(&path, OpenMode::Existing).map_err(io(&path))?;
    let size = file.len().map_err(io(&path))?;
    if size == 0 {
        return Ok(FirstBatch::Empty);
    }
    Ok(match read_batch_info(&*file, 0, size).map_err(io(&path))? {
        Some(info) => FirstBatch::Base(info.base_offset),
        None => FirstBatch::Unreadable,
    })
}

/// Whether the segment at `base` has a sealed index on disk (whether or not it fits its log):
/// the segment was fsynced whole once, so a log that now comes up short was damaged, not cut
/// short by a crash.
pub fn has_sealed_index(fs: &Arc<dyn Fs>, dir: &Path, base: i64) -> bool {
    fs.read_all(&dir.join(file_name(base, "index"))).is_ok_and(|b| {
        b.len() >= INDEX_ENTRY_BYTES && b.len() % INDEX_ENTRY_BYTES == 0 && {
            let at = b.len() - INDEX_ENTRY_BYTES;
            b[at..at + 8] == SEALED_MARK
        }
    })
}

impl Segment {
    /// Opens the segment's files: the log created empty when `fresh`, else it must exist; the
    /// index always starts empty (it is rebuilt from the log).
    fn open_files(
        fs: &Arc<dyn Fs>,
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u64,
        fresh: bool,
        created_ms: Option<i64>,
    ) -> Result<Segment, StorageError> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let index_path = dir.join(file_name(base_offset, "index"));
        let mode = if fresh { OpenMode::Truncate } else { OpenMode::Existing };
        let log = fs.open(&log_path, mode).map_err(io(&log_path))?;
        Ok(Segment {
            base_offset,
            fs: fs.clone(),
            log,
            index_written: 0,
            log_path,
            index_path,
            size: 0,
            index: vec![],
            index_prior_max_timestamp: vec![],
            index_on_disk: None,
            sealed_on_disk: false,
            bytes_since_index: 0,
            index_interval_bytes,
            next_offset: base_offset,
            max_timestamp: -1,
            first_batch_timestamp: None,
            created_ms,
        })
    }

    /// Creates a new, empty segment (truncating any leftover files of the same name). The
    /// caller must fsync the directory before anything in the file counts as durable (the
    /// name would not survive a power loss otherwise).
    pub fn create(
        fs: &Arc<dyn Fs>,
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u64,
        now_ms: Option<i64>,
    ) -> Result<Segment, StorageError> {
        let seg = Self::open_files(fs, dir, base_offset, index_interval_bytes, true, now_ms)?;
        // A leftover index of an earlier segment at this offset must not vouch for this one.
        match fs.remove(&seg.index_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&seg.index_path)(e)),
            _ => Ok(seg),
        }
    }

    /// Opens an existing segment that may hold writes never fsynced (after a crash: the log's
    /// last segment, and any sealed segment whose index was not yet written, see
    /// [`Segment::seal_bytes`]). Every batch's framing and CRC is checked, the file is cut
    /// after the last valid batch (a torn write), and the log is fsynced before the index is
    /// rebuilt and written. Returns the segment and the number of bytes cut.
    pub fn open_and_recover(
        fs: &Arc<dyn Fs>,
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u64,
    ) -> Result<(Segment, u64), StorageError> {
        let mut seg = Self::open_files(fs, dir, base_offset, index_interval_bytes, false, None)?;
        let file_size = seg.log.len().map_err(io(&seg.log_path))?;
        let mut position = 0u64;
        let mut expected_base = base_offset;
        loop {
            let info = match read_batch_info(&*seg.log, position, file_size).map_err(io(&seg.log_path))? {
                Some(i) => i,
                None => break,
            };
            // Offsets must continue where the previous batch ended, and the CRC must hold.
            // Batches follow each other with no gap (the base offset is outside the CRC).
            if info.base_offset != expected_base {
                break;
            }
            let mut raw = vec![0u8; info.size as usize];
            seg.log.read_exact_at(&mut raw, position).map_err(io(&seg.log_path))?;
            let valid = wire::records::RecordBatch::parse(&mut bytes::Bytes::from(raw))
                .map(|b| b.verify_crc().is_ok())
                .unwrap_or(false);
            if !valid {
                break;
            }
            seg.note_appended(&info)?;
            expected_base = info.last_offset + 1;
            position += u64::from(info.size);
        }
        let truncated = file_size - position;
        if truncated > 0 {
            seg.log.set_len(position).map_err(io(&seg.log_path))?;
        }
        // A written index vouches that the log under it is durable (see `open_clean`).
        seg.log.sync_data().map_err(io(&seg.log_path))?;
        // The index is derived: one that cannot be written now (a full disk) is kept in memory
        // and written later (a seal, a flush, shutdown); the log opens and serves reads.
        // Whatever a failed write left on disk fails the checks of the next open.
        if let Err(e) = seg.write_index() {
            tracing::warn!(error = %e, "cannot write the rebuilt index; it is kept in memory and written later");
            seg.index_written = 0;
        }
        Ok((seg, truncated))
    }

    /// Opens a segment trusting its files: the index is read from disk and only the batches
    /// after its last entry are scanned (no CRC checks). `None` when the index is missing or
    /// does not fit the log, so the caller recovers the segment instead.
    ///
    /// Trusted after a clean shutdown (every log and index was synced), and after a crash for
    /// a sealed segment: its index is written only once its log is fsynced, so an index that
    /// fits means the log under it is durable.
    pub fn open_clean(
        fs: &Arc<dyn Fs>,
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u64,
        require_sealed: bool,
    ) -> Result<Option<Segment>, StorageError> {
        let mut seg = Self::open_files(fs, dir, base_offset, index_interval_bytes, false, None)?;
        let file_size = seg.log.len().map_err(io(&seg.log_path))?;
        let mut bytes = match fs.read_all(&seg.index_path) {
            Ok(b) => b,
            // An empty segment has no index entries, so none was ever written: nothing to
            // check (this is every empty partition after a clean shutdown).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && file_size == 0 && !require_sealed => {
                return Ok(Some(seg))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&seg.index_path)(e)),
        };
        if bytes.len() % INDEX_ENTRY_BYTES != 0 {
            return Ok(None);
        }
        // A sealed index ends with a mark naming the log size it covers.
        let sealed_size = bytes
            .len()
            .checked_sub(INDEX_ENTRY_BYTES)
            .filter(|at| bytes[*at..*at + 8] == SEALED_MARK)
            .map(|at| {
                let size = u64::from_be_bytes(bytes[at + 8..].try_into().unwrap_or_default());
                bytes.truncate(at);
                size
            });
        if sealed_size.is_some_and(|s| s != file_size) || (require_sealed && sealed_size.is_none()) {
            return Ok(None);
        }
        if bytes.is_empty() != (file_size == 0) {
            return Ok(None);
        }
        seg.sealed_on_disk = sealed_size.is_some();
        let mut entries: Vec<(IndexEntry, i64)> = Vec::with_capacity(bytes.len() / INDEX_ENTRY_BYTES);
        for c in bytes.chunks_exact(INDEX_ENTRY_BYTES) {
            let e = IndexEntry {
                relative_offset: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                position: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
            };
            let prior = i64::from_be_bytes([c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]]);
            let fits = match entries.last() {
                None => e.position == 0,
                Some((p, t)) => p.position < e.position && p.relative_offset < e.relative_offset && *t <= prior,
            };
            if !fits || u64::from(e.position) >= file_size {
                return Ok(None);
            }
            entries.push((e, prior));
        }
        let Some(&(last, last_prior)) = entries.last() else {
            return Ok(Some(seg)); // an empty segment
        };
        let Some(first) = read_batch_info(&*seg.log, 0, file_size).map_err(io(&seg.log_path))? else {
            return Ok(None);
        };
        seg.first_batch_timestamp = Some(first.max_timestamp);
        // State as it was just before the batch at the last entry was appended; scanning from
        // there re-adds that entry and rebuilds the rest.
        entries.pop();
        seg.index_written = entries.len();
        (seg.index, seg.index_prior_max_timestamp) = entries.into_iter().unzip();
        seg.max_timestamp = last_prior;
        seg.bytes_since_index = index_interval_bytes;
        let mut position = u64::from(last.position);
        let Some(mut expected_base) = base_offset.checked_add(i64::from(last.relative_offset)) else {
            return Ok(None);
        };
        while position < file_size {
            let Some(info) = read_batch_info(&*seg.log, position, file_size).map_err(io(&seg.log_path))? else {
                return Ok(None);
            };
            if info.base_offset != expected_base {
                return Ok(None);
            }
            seg.note_appended(&info)?;
            expected_base = info.last_offset + 1;
            position += u64::from(info.size);
        }
        // Appends make the same index decisions again: a complete index gains exactly the entry
        // popped above. More means the file stopped short of the log.
        if seg.index.len() != seg.index_written + 1 {
            return Ok(None);
        }
        Ok(Some(seg))
    }

    /// Updates size, offsets and the sparse index after a batch lands at `info.position`.
    fn note_appended(&mut self, info: &BatchInfo) -> Result<(), StorageError> {
        if self.bytes_since_index >= self.index_interval_bytes || self.index.is_empty() {
            let entry = IndexEntry {
                relative_offset: (info.base_offset - self.base_offset) as u32,
                position: info.position as u32,
            };
            self.index.push(entry);
            self.index_prior_max_timestamp.push(self.max_timestamp);
            self.bytes_since_index = 0;
        }
        self.first_batch_timestamp.get_or_insert(info.max_timestamp);
        self.bytes_since_index += u64::from(info.size);
        self.size = info.position + u64::from(info.size);
        self.next_offset = info.last_offset + 1;
        self.max_timestamp = self.max_timestamp.max(info.max_timestamp);
        Ok(())
    }

    /// Appends one stamped batch covering offsets `base_offset..=last_offset`.
    pub fn append(
        &mut self,
        batch: &[u8],
        base_offset: i64,
        last_offset: i64,
        max_timestamp: i64,
    ) -> Result<(), StorageError> {
        assert!(
            base_offset >= self.next_offset,
            "offsets only grow: {base_offset} < {}",
            self.next_offset
        );
        assert!(
            last_offset - self.base_offset <= i64::from(u32::MAX),
            "segment offset span exceeds u32"
        );
        self.load_index()?;
        self.sealed_on_disk = false;
        let position = self.size;
        if let Err(source) = self.log.write_all_at(batch, position) {
            // A partial write may have landed: cut it off so the file ends at a batch boundary.
            let _ = self.log.set_len(position);
            return Err(StorageError::Io {
                path: self.log_path.clone(),
                source,
            });
        }
        self.note_appended(&BatchInfo {
            position,
            size: batch.len() as u32,
            base_offset,
            last_offset,
            max_timestamp,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        })
    }

    /// The header of the batch at `position`, which lies inside the segment's valid region
    /// (checked by recovery, or vouched for by a sealed index): an unreadable one there is
    /// corruption.
    fn header_at(&self, position: u64) -> Result<BatchInfo, StorageError> {
        read_batch_info(&*self.log, position, self.size)
            .map_err(io(&self.log_path))?
            .ok_or_else(|| StorageError::Corrupt {
                path: self.log_path.clone(),
                position,
                why: "batch header unreadable inside the valid region".into(),
            })
    }

    /// The header of the first batch whose last offset is at least `offset`, if any.
    pub fn find_batch(&self, offset: i64) -> Result<Option<BatchInfo>, StorageError> {
        self.find(offset)
    }

    /// The position of the first batch whose last offset is at least `offset`, if any.
    fn find(&self, offset: i64) -> Result<Option<BatchInfo>, StorageError> {
        let rel = (offset - self.base_offset).max(0);
        let entries = self.index_partition_point(|e, _| i64::from(e.relative_offset) <= rel)?;
        let mut position = self.index_position(entries)?;
        let mut first = true;
        while position < self.size {
            let info = self.header_at(position)?;
            if first && info.base_offset > offset.max(self.base_offset) {
                return Err(self.index_corrupt(position));
            }
            first = false;
            if info.last_offset >= offset {
                return Ok(Some(info));
            }
            position += u64::from(info.size);
        }
        Ok(None)
    }

    /// The damaged batch that starts at `offset` (a read there failed its CRC or framing):
    /// its position and the offset after it, when its header still frames it plausibly (it
    /// is followed by the next batch, or ends the segment where the segment ends). `None`
    /// when the header cannot be trusted to step over it.
    pub fn damaged_batch(&self, offset: i64) -> Result<Option<(u64, i64)>, StorageError> {
        let Ok(Some(info)) = self.find(offset) else {
            return Ok(None);
        };
        if info.base_offset != offset {
            return Ok(None);
        }
        let after = info.position + u64::from(info.size);
        let next = info.last_offset + 1;
        let fits = if after == self.size {
            next == self.next_offset
        } else {
            matches!(read_batch_info(&*self.log, after, self.size), Ok(Some(n)) if n.base_offset == next)
        };
        Ok(fits.then_some((info.position, next)))
    }

    /// Cuts the log file before the batch holding `offset` (found by a walk from the start
    /// that checks every CRC, as recovery does: a damaged batch before it cuts there instead)
    /// and reopens the segment. Returns the reopened segment.
    pub fn cut_at(self, offset: i64) -> Result<Segment, StorageError> {
        let dir = self.log_path.parent().map(Path::to_path_buf).unwrap_or_default();
        let (fs, base, interval) = (self.fs.clone(), self.base_offset, self.index_interval_bytes);
        let mut position = 0u64;
        let file_size = self.log.len().map_err(io(&self.log_path))?;
        while let Some(info) = read_batch_info(&*self.log, position, file_size).map_err(io(&self.log_path))? {
            if info.last_offset >= offset {
                break;
            }
            position += u64::from(info.size);
        }
        self.log.set_len(position).map_err(io(&self.log_path))?;
        match fs.remove(&self.index_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&self.index_path)(e)),
            _ => {}
        }
        drop(self);
        // Recovery checks every CRC again and cuts at the first bad batch, if earlier.
        Ok(Segment::open_and_recover(&fs, &dir, base, interval)?.0)
    }

    /// The first step of a truncation: brings the index into memory and removes its file,
    /// so that nothing vouches for the log once it is cut (the caller then fsyncs the
    /// directory, see `Log::truncate_to`). The index is rewritten whole at its next write.
    pub fn drop_index_file(&mut self) -> Result<(), StorageError> {
        self.load_index()?;
        self.sealed_on_disk = false;
        self.index_written = 0;
        match self.fs.remove(&self.index_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&self.index_path)(e)),
            _ => Ok(()),
        }
    }

    /// Cuts the log at `position`, a batch boundary inside the segment, and fsyncs it; the
    /// index entries at or past it go. Call [`Segment::drop_index_file`] first. On an error
    /// the segment in memory is as before (the file may be cut but not durably so).
    pub fn truncate_at(&mut self, position: u64) -> Result<(), StorageError> {
        self.load_index()?;
        // The state after the cut, as the appends that led there built it: from the last
        // index entry kept, re-walked up to the cut (header reads only), before anything is
        // changed.
        let keep = self.index.partition_point(|e| u64::from(e.position) < position);
        let from = keep.checked_sub(1).map_or(0, |i| u64::from(self.index[i].position));
        let mut walked = vec![];
        let mut at = from;
        while at < position {
            let info = self.header_at(at)?;
            at += u64::from(info.size);
            walked.push(info);
        }
        if at != position {
            return Err(StorageError::Corrupt {
                path: self.log_path.clone(),
                position,
                why: "a truncation point is not a batch boundary".into(),
            });
        }
        self.log.set_len(position).map_err(io(&self.log_path))?;
        self.log.sync_data().map_err(io(&self.log_path))?;
        match keep.checked_sub(1) {
            None => {
                self.index.clear();
                self.index_prior_max_timestamp.clear();
                self.max_timestamp = -1;
                self.first_batch_timestamp = None;
                self.bytes_since_index = 0;
                self.next_offset = self.base_offset;
            }
            Some(last) => {
                self.max_timestamp = self.index_prior_max_timestamp[last];
                self.index.truncate(last);
                self.index_prior_max_timestamp.truncate(last);
                // Makes the walk re-add the entry at `from`, as `open_clean` does.
                self.bytes_since_index = self.index_interval_bytes;
            }
        }
        self.size = from;
        for info in &walked {
            self.note_appended(info)?;
        }
        self.index_written = 0;
        self.sealed_on_disk = false;
        Ok(())
    }

    /// How many index entries satisfy `pred`, which holds for a prefix of them (entries are
    /// sorted by offset, position and prior max timestamp alike): a binary search, in memory
    /// or in the `.index` file of a sealed segment.
    fn index_partition_point(&self, pred: impl Fn(&IndexEntry, i64) -> bool) -> Result<usize, StorageError> {
        let (mut lo, mut hi) = (0usize, self.index_len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (e, prior) = self.index_entry(mid)?;
            if pred(&e, prior) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    fn index_len(&self) -> usize {
        match &self.index_on_disk {
            None => self.index.len(),
            Some((_, count)) => *count,
        }
    }

    /// Index entry `i` (below [`Segment::index_len`]) and the prior max timestamp with it.
    fn index_entry(&self, i: usize) -> Result<(IndexEntry, i64), StorageError> {
        match &self.index_on_disk {
            None => Ok((self.index[i], self.index_prior_max_timestamp[i])),
            Some((file, _)) => self.disk_entry(&**file, i),
        }
    }

    /// Where to start walking batches when the first `entries` index entries lie at or before
    /// the target: the last of them, or the segment start.
    fn index_position(&self, entries: usize) -> Result<u64, StorageError> {
        if entries == 0 {
            return Ok(0);
        }
        Ok(u64::from(self.index_entry(entries - 1)?.0.position))
    }

    fn disk_entry(&self, file: &dyn FsFile, i: usize) -> Result<(IndexEntry, i64), StorageError> {
        let mut c = [0u8; INDEX_ENTRY_BYTES];
        file.read_exact_at(&mut c, (i * INDEX_ENTRY_BYTES) as u64)
            .map_err(io(&self.index_path))?;
        let e = IndexEntry {
            relative_offset: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
            position: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
        };
        if u64::from(e.position) >= self.size {
            return Err(self.index_corrupt(u64::from(e.position)));
        }
        Ok((
            e,
            i64::from_be_bytes([c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]]),
        ))
    }

    fn index_corrupt(&self, position: u64) -> StorageError {
        StorageError::Corrupt {
            path: self.index_path.clone(),
            position,
            why: "the index points past the batch it names; delete the .index file and restart to rebuild it".into(),
        }
    }

    /// Drops the in-memory index of a segment that takes no more appends: from here on it is
    /// read from the `.index` file, which must be complete and durable.
    pub fn unload_index(&mut self) -> Result<(), StorageError> {
        if self.index_on_disk.is_some() {
            return Ok(());
        }
        self.write_index()?;
        let count = self.index.len();
        let file = if count == 0 {
            None
        } else {
            Some(
                self.fs
                    .open(&self.index_path, OpenMode::Existing)
                    .map_err(io(&self.index_path))?,
            )
        };
        if let Some(file) = file {
            self.index_on_disk = Some((file, count));
            self.index = Vec::new();
            self.index_prior_max_timestamp = Vec::new();
        }
        Ok(())
    }

    /// Brings a sealed segment's index back into memory, for appends (a roll that sealed the
    /// segment but then failed to create the next one leaves it active).
    fn load_index(&mut self) -> Result<(), StorageError> {
        let Some((file, count)) = self.index_on_disk.take() else {
            return Ok(());
        };
        for i in 0..count {
            match self.disk_entry(&*file, i) {
                Ok((e, prior)) => {
                    self.index.push(e);
                    self.index_prior_max_timestamp.push(prior);
                }
                Err(e) => {
                    self.index.clear();
                    self.index_prior_max_timestamp.clear();
                    self.index_on_disk = Some((file, count));
                    return Err(e);
                }
            }
        }
        self.index_written = count;
        Ok(())
    }

    /// Whole batches starting with the one that holds `offset`, up to `max_bytes` — but always
    /// the first batch, even when it is larger (so a consumer never stalls on a big batch).
    /// One read of the file: the batches' lengths are then walked in memory.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Option<bytes::Bytes>, StorageError> {
        let Some(first) = self.find(offset)? else {
            return Ok(None);
        };
        let available = self.size - first.position;
        let want = (max_bytes as u64).min(available).max(u64::from(first.size));
        let mut buf = self
            .log
            .read_vec_at(want as usize, first.position)
            .map_err(io(&self.log_path))?;
        // Cut after the last whole batch. Each batch's framing and CRC are checked as it is
        // walked: a batch that fails ends the read before it, and a read that starts at it
        // fails with `Corrupt`, so damaged bytes (bit rot in a sealed segment, say) are never
        // served. The CRC costs about one memcpy of the data (crc32c in hardware).
        let mut end = 0;
        let mut next_base = first.base_offset;
        while end + HEADER_BYTES <= buf.len() {
            let h = &buf[end..end + HEADER_BYTES];
            let base = i64::from_be_bytes(h[0..8].try_into().unwrap_or_default());
            let length = i32::from_be_bytes(h[8..12].try_into().unwrap_or_default());
            let crc = u32::from_be_bytes(h[17..21].try_into().unwrap_or_default());
            let last_delta = i32::from_be_bytes(h[23..27].try_into().unwrap_or_default());
            let framed = h[16] == 2 && length >= (HEADER_BYTES - LOG_OVERHEAD) as i32 && last_delta >= 0;
            if !framed || base != next_base {
                break;
            }
            let size = length as usize + LOG_OVERHEAD;
            if end + size > buf.len() || crc32c::crc32c(&buf[end + CRC_START..end + size]) != crc {
                break;
            }
            end += size;
            let Some(next) = base.checked_add(i64::from(last_delta) + 1) else {
                break;
            };
            next_base = next;
        }
        if end == 0 {
            return Err(StorageError::Corrupt {
                path: self.log_path.clone(),
                position: first.position,
                why: format!(
                    "the batch at offset {} fails its CRC or framing; not served",
                    first.base_offset
                ),
            });
        }
        buf.truncate(end);
        Ok(Some(bytes::Bytes::from(buf)))
    }

    /// The first record at or after `min_offset` whose timestamp is at least `target`:
    /// (offset, timestamp). Batches are skipped by their max timestamp; only the batch that
    /// holds the answer is decompressed.
    pub fn find_timestamp(&self, target: i64, min_offset: i64) -> Result<Option<(i64, i64)>, StorageError> {
        if self.max_timestamp < target {
            return Ok(None);
        }
        let by_time = self.index_partition_point(|_, prior| prior < target)?;
        let by_offset =
            self.index_partition_point(|e, _| i64::from(e.relative_offset) <= min_offset - self.base_offset)?;
        let mut position = self.index_position(by_time.min(by_offset))?;
        while position < self.size {
            let info = self.header_at(position)?;
            position += u64::from(info.size);
            if info.max_timestamp < target || info.last_offset < min_offset {
                continue;
            }
            for (ts, offset) in self.record_times(&info)? {
                if offset >= min_offset && ts >= target {
                    return Ok(Some((offset, ts)));
                }
            }
        }
        Ok(None)
    }

    /// The records of the stored batch `info`, decoded: (timestamp, offset) of each, with the
    /// timestamp as a consumer sees it (LogAppendTime batches give every record the batch's).
    fn record_times(&self, info: &BatchInfo) -> Result<Vec<(i64, i64)>, StorageError> {
        let mut raw = vec![0u8; info.size as usize];
        self.log
            .read_exact_at(&mut raw, info.position)
            .map_err(io(&self.log_path))?;
        let corrupt = |why: String| StorageError::Corrupt {
            path: self.log_path.clone(),
            position: info.position,
            why,
        };
        let batch =
            wire::records::RecordBatch::parse(&mut bytes::Bytes::from(raw)).map_err(|e| corrupt(e.to_string()))?;
        let mut out = vec![];
        for record in batch
            .records(BATCH_DECOMPRESSED_BYTES_MAX)
            .map_err(|e| corrupt(e.to_string()))?
        {
            let record = record.map_err(|e| corrupt(e.to_string()))?;
            let ts = if batch.is_log_append_time() {
                batch.max_timestamp()
            } else {
                record.timestamp
            };
            out.push((ts, record.offset));
        }
        Ok(out)
    }

    /// The earliest record at or after `min_offset` with the segment's largest timestamp
    /// (ListOffsets MAX_TIMESTAMP): (timestamp, offset). Only batch headers are read, from the
    /// time index's estimate on, and only the winning batch is decompressed.
    pub fn max_timestamp_record(&self, min_offset: i64) -> Result<Option<(i64, i64)>, StorageError> {
        let mut position = if min_offset > self.base_offset {
            match self.find(min_offset)? {
                Some(info) => info.position,
                None => return Ok(None),
            }
        } else {
            // No batch before the index entry whose prior max reaches the max holds it.
            let max = self.max_timestamp;
            self.index_position(self.index_partition_point(|_, prior| prior < max)?)?
        };
        let mut best: Option<BatchInfo> = None;
        while position < self.size {
            let info = self.header_at(position)?;
            position += u64::from(info.size);
            if info.last_offset >= min_offset && best.is_none_or(|b| info.max_timestamp > b.max_timestamp) {
                best = Some(info);
            }
        }
        let Some(best) = best else { return Ok(None) };
        let mut found: Option<(i64, i64)> = None;
        for (ts, offset) in self.record_times(&best)? {
            if offset >= min_offset && found.is_none_or(|(t, _)| ts > t) {
                found = Some((ts, offset));
            }
        }
        Ok(found)
    }

    /// Calls `f` with the header of every batch, in offset order (reads headers only).
    pub fn for_each_batch(&self, f: &mut dyn FnMut(&BatchInfo)) -> Result<(), StorageError> {
        let mut position = 0;
        while position < self.size {
            let info = self.header_at(position)?;
            f(&info);
            position += u64::from(info.size);
        }
        Ok(())
    }

    /// A second handle on the log file (to fsync without holding the log's lock), and its path.
    pub fn log_file(&self) -> (Arc<dyn FsFile>, PathBuf) {
        (self.log.clone(), self.log_path.clone())
    }

    /// Makes the log durable; the index is left to [`Segment::sync`].
    pub fn sync_log(&self) -> Result<(), StorageError> {
        self.log.sync_data().map_err(io(&self.log_path))
    }

    /// Writes the index entries not yet on disk (see [`Segment::sync`]).
    pub fn flush_index(&mut self) -> Result<(), StorageError> {
        self.write_index()
    }

    /// Makes the log durable, and the index current on disk.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.log.sync_data().map_err(io(&self.log_path))?;
        self.write_index()
    }

    /// Makes the segment read-only before the log rolls past it: cuts whatever a failed write
    /// left past the last batch. Nothing is fsynced here (that would stall the append that
    /// rolled); the log's background seal does it, see [`Segment::seal_bytes`].
    pub fn seal(&mut self) -> Result<(), StorageError> {
        if self.log.len().map_err(io(&self.log_path))? > self.size {
            self.log.set_len(self.size).map_err(io(&self.log_path))?;
        }
        Ok(())
    }

    /// What finishing the seal of this (sealed) segment takes, for running outside the log's
    /// lock: its log file to fsync, then its whole index to write at `index_path` and fsync.
    /// The index ends with a mark that names the log's size. The order is the invariant
    /// recovery relies on: a sealed index that fits means a durable log under it (an active
    /// segment's index, written at a sync, carries no mark and vouches for nothing after a
    /// crash, since the log may have grown past it).
    pub fn seal_bytes(&self) -> (Arc<dyn FsFile>, PathBuf, Vec<u8>) {
        let mut bytes = self.index_bytes(0);
        bytes.extend_from_slice(&SEALED_MARK);
        bytes.extend_from_slice(&self.size.to_be_bytes());
        (self.log.clone(), self.index_path.clone(), bytes)
    }

    /// Whether the index on disk carries the seal mark.
    pub fn is_sealed_on_disk(&self) -> bool {
        self.sealed_on_disk
    }

    /// The seal ran: the index is complete on disk, so the memory copy goes.
    pub fn sealed(&mut self) -> Result<(), StorageError> {
        self.sealed_on_disk = true;
        self.index_written = self.index.len();
        self.unload_index()
    }

    fn index_bytes(&self, from: usize) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.index.len().saturating_sub(from) * INDEX_ENTRY_BYTES);
        for (e, t) in self.index[from..].iter().zip(&self.index_prior_max_timestamp[from..]) {
            bytes.extend_from_slice(&e.relative_offset.to_be_bytes());
            bytes.extend_from_slice(&e.position.to_be_bytes());
            bytes.extend_from_slice(&t.to_be_bytes());
        }
        bytes
    }

    /// Writes (and fsyncs) the index entries not yet on disk, in one write. The index is
    /// derived data, so it is written only at a roll, a flush of the whole log, shutdown and
    /// recovery; it is read back only after a clean shutdown (see [`Segment::open_clean`]).
    fn write_index(&mut self) -> Result<(), StorageError> {
        if self.index_on_disk.is_some() || self.index_written == self.index.len() {
            return Ok(());
        }
        let bytes = self.index_bytes(self.index_written);
        let mode = if self.index_written == 0 {
            OpenMode::Truncate
        } else {
            OpenMode::Create
        };
        let f = self.fs.open(&self.index_path, mode).map_err(io(&self.index_path))?;
        f.write_all_at(&bytes, (self.index_written * INDEX_ENTRY_BYTES) as u64)
            .and_then(|()| f.sync_data())
            .map_err(io(&self.index_path))?;
        self.index_written = self.index.len();
        Ok(())
    }

    /// How long the segment has been open for `segment.ms`: from its first batch's timestamp to
    /// `incoming_max_timestamp`, or by the wall clock when either timestamp is missing.
    pub fn time_waited_for_roll(&mut self, incoming_max_timestamp: i64, now_ms: i64) -> i64 {
        let created = *self.created_ms.get_or_insert(now_ms);
        match self.first_batch_timestamp {
            Some(first) if first >= 0 && incoming_max_timestamp >= 0 => incoming_max_timestamp.saturating_sub(first),
            _ => now_ms.saturating_sub(created),
        }
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }
    /// The largest batch max timestamp in the segment, or -1 when it has none.
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    /// Takes the segment out of the log: its files are renamed with a `.deleted` suffix (so
    /// a restart no longer sees them) and returned, for the caller to remove in the background.
    pub fn retire(self) -> Result<Vec<PathBuf>, StorageError> {
        let mut retired = vec![];
        for path in [&self.log_path, &self.index_path] {
            let to = deleted_name(path);
            match self.fs.rename(path, &to) {
                Ok(()) => retired.push(to),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && path == &self.index_path => {}
                Err(e) => return Err(io(path)(e)),
            }
        }
        Ok(retired)
    }
}

/// The name a retired file takes until it is removed.
fn deleted_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(DELETED_SUFFIX);
    PathBuf::from(name)
}

/// Suffix of files retired but not yet removed (removed at the latest when the log reopens).
pub const DELETED_SUFFIX: &str = ".deleted";
