//! A partition's log: an ordered set of segments, the log start and end offsets, appends that
//! assign offsets, and reads by offset.
//!
//! Invariants (asserted, also in release builds):
//! - offsets only grow: each batch starts at the log end offset (only [`Log::truncate_to`], a
//!   follower's truncation, moves the end back);
//! - segments are sorted by base offset and do not overlap; only the last one is written to.
//!   They are contiguous unless a segment file was lost from the middle of the log, a hole
//!   that [`Log::open_on`] reports loudly and keeps (see there: nothing after it is dropped).
//!
//! Opening validates every file in the directory: a `.log` not named like a segment, or a
//! segment whose first batch does not fit its name, that overlaps the one before it, or that
//! holds no batch after a hole, is moved aside (`*.stray`, logged as an error), never read.
//!
//! Durability of rolled segments: a roll fsyncs nothing (an append must not wait for a whole
//! segment's writeback). The rolled segment is *unsealed* until [`Log::take_seal`]'s work has
//! run: its log fsynced, then its index written and fsynced. So on disk, an index that fits
//! its log vouches for a durable log, and recovery after a crash re-checks only the segments
//! without one (and the last). Anything that makes appends durable ([`Log::sync`],
//! [`Log::sync_target`]) covers unsealed segments and the directory too.

use crate::epoch::{EpochCheckpoint, EpochEntry, LeaderEpochCache};
use crate::fs::FsFile;
use crate::fs::{Fs, OpenMode, RealFs};
use crate::segment::{self, BatchInfo, FirstBatch, Segment, DELETED_SUFFIX};
use crate::{StorageError, SyncTarget};
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use wire::records::{self, RecordBatch};

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `segment.bytes`: roll to a new segment when the active one would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll to a new segment once the active one spans this much time (see
    /// [`Log::append`]); `None`: never by time.
    pub segment_ms: Option<i64>,
    /// `index.interval.bytes`: bytes of batches between offset index entries.
    pub index_interval_bytes: u64,
    /// `max.message.bytes`: the largest batch accepted.
    pub batch_bytes_max: usize,
    /// `flush.messages`: kept here for the log's owners, who wait for an fsync (through
    /// [`crate::GroupCommit`]) once this many records are unflushed; the log never fsyncs on
    /// its own except when rolling.
    pub flush_messages: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * 24 * 3600 * 1000),
            index_interval_bytes: 4096,
            batch_bytes_max: 1_048_588,
            flush_messages: i64::MAX,
        }
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug)]
pub struct Log {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    /// Rolled segments whose log is not yet known durable, nor their index written.
    unsealed: BTreeSet<i64>,
    /// Segment files created, and how many of those creations a directory fsync covered.
    dir_changes: u64,
    dir_synced: u64,
    /// Whether seal work is waiting (see [`Log::seal_pending`]).
    seal_pending: Arc<AtomicBool>,
    /// The leader-epoch cache (see [`crate::epoch`]), bumped in `epoch_version` at each
    /// change; `epoch_durable` is the version the checkpoint file is known to hold.
    epochs: LeaderEpochCache,
    epoch_version: u64,
    epoch_durable: u64,
    epoch_file: Arc<EpochCheckpoint>,
    /// A truncation failed part way: the log refuses writes (and syncs) until it is opened
    /// again, which finds it as before the truncation or as after.
    failed: bool,
    /// How many truncations the log has had, shared with seal work: held while the work
    /// writes indexes, so that a truncation never races with an index written for segments
    /// as they were before it (see [`SealWork::run`]).
    seal_gate: Arc<Mutex<u64>>,
}

/// Finishing the seal of rolled segments (see [`Log::take_seal`]): run it without the log's
/// lock, then hand it back to [`Log::sealed`].
#[derive(Debug)]
pub struct SealWork {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    segments: Vec<SealItem>,
    dir_changes: u64,
    /// The leader-epoch checkpoint to write, when it changed: its version and text.
    epochs: Option<(u64, Vec<u8>, Arc<EpochCheckpoint>)>,
    /// The log's truncation count when the work was taken: a truncation since makes the
    /// indexes stale, and they are not written.
    gate: Arc<Mutex<u64>>,
    generation: u64,
}

/// One unsealed segment in a [`SealWork`].
#[derive(Debug)]
struct SealItem {
    base: i64,
    log: Arc<dyn FsFile>,
    index_path: PathBuf,
    /// The whole index, ending in the seal mark.
    index: Vec<u8>,
}

impl SealWork {
    /// fsyncs each segment's log and the directory, then writes and fsyncs each index.
    ///
    /// On error, `data_lost` tells whether an fsync of records failed: the kernel may have
    /// dropped what it could not write, so the owner must stop acknowledging writes to this
    /// log (as after a failed [`crate::GroupCommit`] fsync). Otherwise (an index write, say)
    /// nothing is lost and the work can simply run again later.
    pub fn run(&self) -> Result<(), SealError> {
        let fail = |path: &Path, data_lost: bool| {
            let path = path.to_path_buf();
            move |source| SealError {
                error: StorageError::Io { path, source },
                data_lost,
            }
        };
        for s in &self.segments {
            s.log
                .sync_data()
                .map_err(fail(&s.index_path.with_extension("log"), true))?;
        }
        self.fs.sync_dir(&self.dir).map_err(fail(&self.dir, true))?;
        // The epoch checkpoint is durable before any index vouches for a segment: after a
        // crash, sealed segments are trusted for their epochs too (see `Log::load_epochs`).
        if let Some((version, bytes, file)) = &self.epochs {
            file.write(*version, bytes).map_err(|error| SealError {
                error,
                data_lost: false,
            })?;
        }
        let gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        if *gate != self.generation {
            // Truncated meanwhile: these indexes may describe bytes that are gone.
            // `Log::sealed` leaves the segments unsealed, for the next seal.
            return Ok(());
        }
        for s in &self.segments {
            let f = self
                .fs
                .open(&s.index_path, OpenMode::Truncate)
                .map_err(fail(&s.index_path, false))?;
            f.write_all_at(&s.index, 0)
                .and_then(|()| f.sync_data())
                .map_err(fail(&s.index_path, false))?;
        }
        Ok(())
    }
}

/// A failed [`SealWork::run`].
#[derive(Debug)]
pub struct SealError {
    pub error: StorageError,
    pub data_lost: bool,
}

impl From<SealError> for StorageError {
    fn from(e: SealError) -> StorageError {
        e.error
    }
}

impl Log {
    /// Opens the log in `dir` (creating it if need be), recovering it as after a crash: sealed
    /// segments are trusted, the last segment and any unsealed one are walked with their CRCs
    /// checked and cut at a torn batch, and segments after a short one are dropped. Files go
    /// through [`default_fs`].
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log, StorageError> {
        Self::open_on(&default_fs(), dir, config, false)
    }

    /// Opens the log after a clean shutdown (the caller kept a marker): segment indexes are
    /// read from disk and only the batches after each one's last index entry are read. A
    /// segment whose index does not fit is recovered as by [`Log::open`].
    pub fn open_after_clean_shutdown(dir: &Path, config: LogConfig) -> Result<Log, StorageError> {
        Self::open_on(&default_fs(), dir, config, true)
    }

    /// Opens the log on the file system `fs`: after a clean shutdown when `clean`, else as
    /// after a crash (see [`Log::open`] and [`Log::open_after_clean_shutdown`]).
    pub fn open_on(fs: &Arc<dyn Fs>, dir: &Path, config: LogConfig, clean: bool) -> Result<Log, StorageError> {
        let dir_err = |source| StorageError::Io {
            path: dir.to_path_buf(),
            source,
        };
        fs.create_dir_all(dir).map_err(dir_err)?;
        let mut bases = vec![];
        let mut retired = vec![];
        let mut indexes = vec![];
        let mut misnamed = vec![];
        for name in fs.list(dir).map_err(dir_err)? {
            if name.ends_with(DELETED_SUFFIX) {
                retired.push(dir.join(name));
            } else if name.ends_with(STRAY_SUFFIX) {
                // Quarantined by an earlier open: left for the operator.
            } else if name.ends_with(".log") {
                match segment::parse_file_name(&name, "log") {
                    Some(base) => bases.push(base),
                    None => misnamed.push(name),
                }
            } else if name.ends_with(".index") {
                indexes.push((segment::parse_file_name(&name, "index"), name.clone()));
            }
        }
        // A `.log` file that is not named like a segment may hold anything: never read as a
        // segment, never deleted either.
        for name in misnamed {
            let to = quarantine(fs, dir, &name)?;
            tracing::error!(file = %dir.join(&name).display(), moved_to = %to.display(), "not a segment file name (20 digits, then .log): moved aside, not read; delete it if it is not yours");
        }
        // An index without its log (the log was deleted while the index was being written).
        for (base, name) in indexes {
            if base.is_none_or(|b| !bases.contains(&b)) {
                retired.push(dir.join(name));
            }
        }
        // Segments deleted before a crash whose files were not yet removed.
        crate::delete::remove_later(fs, retired);
        bases.sort_unstable();
        let seg_path = |base: i64| dir.join(segment::file_name(base, "log"));
        let mut segments: BTreeMap<i64, Segment> = BTreeMap::new();
        // Segments (base offsets) vouched for as written whole once: opened after a clean
        // shutdown, or with a sealed index. One that now comes up short was damaged.
        let mut vouched = BTreeSet::new();
        // The first segment whose batches were re-read (not trusted by its index): the epoch
        // checkpoint is checked below it and rebuilt from the batches from it on.
        let mut recovered_from: Option<i64> = None;
        for (i, &base) in bases.iter().enumerate() {
            let last = i + 1 == bases.len();
            // Does the file continue the log? Checked before it is opened, since recovery would
            // cut a file whose batches do not fit its name.
            let prev = segments
                .values()
                .next_back()
                .map(|s| (s.base_offset(), s.next_offset()));
            let first = segment::first_batch(fs, dir, base)?;
            let quarantined = |why: String| -> Result<(), StorageError> {
                let to = quarantine_segment(fs, dir, base)?;
                tracing::error!(file = %seg_path(base).display(), moved_to = %to.display(), "segment file not trusted: {why}; moved aside, not served (it is not part of this log; delete it once you have checked it)");
                Ok(())
            };
            let misfit = match (first, prev) {
                (FirstBatch::Base(b), _) if b != base => {
                    Some(format!("its first batch has offset {b}, not the {base} its name says"))
                }
                (_, Some((pbase, pend))) if base < pend => Some(format!(
                    "it overlaps segment {} (offsets {pbase}..{pend})",
                    segment::file_name(pbase, "log")
                )),
                _ => None,
            };
            if let Some(why) = misfit {
                quarantined(why)?;
                continue;
            }
            if let Some((pbase, pend)) = prev.filter(|(pbase, pend)| base > *pend && !vouched.contains(pbase)) {
                // A segment recovered after a crash lost writes (torn, or simply shorter: its
                // unsynced pages never reached the disk), so it no longer ends where the next
                // one begins. The log stays a prefix with no hole in its offsets: what was
                // written after the torn point goes too (as Kafka's recovery does); none of
                // it was ever fsynced as a whole.
                let later = &bases[i..];
                tracing::warn!(dir = %dir.display(), after = %segment::file_name(pbase, "log"), first = %segment::file_name(base, "log"), segments = later.len(), offsets = %format!("{pend}.."), "dropping the segments after one cut short by a crash");
                let mut gone = vec![];
                for b in later {
                    for ext in ["log", "index"] {
                        let from = dir.join(segment::file_name(*b, ext));
                        let to = dir.join(format!("{}{DELETED_SUFFIX}", segment::file_name(*b, ext)));
                        match fs.rename(&from, &to) {
                            Ok(()) => gone.push(to),
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(source) => return Err(StorageError::Io { path: from, source }),
                        }
                    }
                }
                fs.sync_dir(dir).map_err(dir_err)?;
                crate::delete::remove_later(fs, gone);
                break;
            }
            if let Some((_, pend)) = prev.filter(|(_, pend)| base > *pend) {
                if matches!(first, FirstBatch::Empty | FirstBatch::Unreadable) {
                    quarantined(format!(
                        "it does not continue the log (which ends at {pend}) and holds no batch at {base}"
                    ))?;
                    continue;
                }
            }
            if let Some((pbase, pend)) = prev.filter(|(_, pend)| base > *pend) {
                // A hole between two segments that were both written whole: a segment file
                // was deleted or lost. Policy (Kafka's): keep serving what is there, loudly.
                // Cutting the log at the hole would drop acknowledged records after it, and
                // refusing the partition would keep them unreadable; keeping them loses
                // nothing, and offsets are never reused (appends continue at the end), so a
                // restored file can be put back. Consumers skip the missing range.
                let empty_prev = segments.get(&pbase).is_some_and(Segment::is_empty);
                if !empty_prev {
                    tracing::error!(dir = %dir.display(), before = %segment::file_name(pbase, "log"), after = %segment::file_name(base, "log"), missing = %format!("{pend}..{base}"), "offsets {pend}..{base} are missing between segments {} and {}: a segment file was deleted or lost; serving the rest (consumers skip the hole); restore the file from a backup to bring them back", segment::file_name(pbase, "log"), segment::file_name(base, "log"));
                }
            }
            // After a crash, the last segment always holds writes that may be torn; a sealed
            // one is trusted when its index fits (written only after its log was fsynced).
            if clean || !last {
                if let Some(seg) = Segment::open_clean(fs, dir, base, config.index_interval_bytes, !clean)? {
                    segments.insert(base, seg);
                    vouched.insert(base);
                    continue;
                }
                if clean {
                    tracing::warn!(dir = %dir.display(), segment = base, "index does not fit the log after a clean shutdown; recovering the segment");
                }
            }
            if clean || segment::has_sealed_index(fs, dir, base) {
                vouched.insert(base);
            }
            let (seg, truncated) = Segment::open_and_recover(fs, dir, base, config.index_interval_bytes)?;
            recovered_from.get_or_insert(base);
            if truncated > 0 {
                let level_is_damage = vouched.contains(&base);
                if level_is_damage {
                    tracing::error!(file = %seg_path(base).display(), bytes = truncated, "a segment written whole earlier has a damaged tail: cut after its last valid batch");
                } else {
                    tracing::warn!(dir = %dir.display(), segment = base, bytes = truncated, "truncated a torn or corrupt tail");
                }
            }
            segments.insert(base, seg);
        }
        // An empty segment never comes before another (a log rolls only from a non-empty one):
        // one that does was emptied by damage. It is moved aside so the log starts, or goes on,
        // at the next one; the hole is reported.
        let empty: Vec<i64> = segments
            .iter()
            .rev()
            .skip(1)
            .filter(|(_, s)| s.is_empty())
            .map(|(b, _)| *b)
            .collect();
        for base in empty {
            segments.remove(&base);
            let next = segments.range(base..).next().map_or(base, |(b, _)| *b);
            let to = quarantine_segment(fs, dir, base)?;
            tracing::error!(file = %seg_path(base).display(), moved_to = %to.display(), missing = %format!("{base}..{next}"), "segment is empty but later segments exist: offsets {base}..{next} are lost (the file was emptied or truncated); serving the later segments; restore the file from a backup to bring them back");
        }
        // Only the last segment takes appends; the others' indexes are read from disk on use.
        // Those without a sealed index (recovered now, or older files) are sealed below.
        let mut unsealed = BTreeSet::new();
        let older = segments.len().saturating_sub(1);
        for (base, seg) in segments.iter_mut().take(older) {
            if seg.is_sealed_on_disk() {
                seg.unload_index()?;
            } else {
                unsealed.insert(*base);
            }
        }
        if segments.is_empty() {
            segments.insert(0, Segment::create(fs, dir, 0, config.index_interval_bytes, None)?);
        }
        let first_base = *segments.keys().next().unwrap_or(&0);
        let mut log = Log {
            fs: fs.clone(),
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset: first_base,
            unsealed,
            // Names found or created may not be durable yet: the sync below covers them.
            dir_changes: 1,
            dir_synced: 0,
            seal_pending: Arc::new(AtomicBool::new(false)),
            epochs: LeaderEpochCache::default(),
            epoch_version: 0,
            epoch_durable: 0,
            epoch_file: Arc::new(EpochCheckpoint::new(fs.clone(), dir)),
            failed: false,
            seal_gate: Arc::new(Mutex::new(0)),
        };
        // DeleteRecords may have moved the start past the first segment's base.
        if let Some(saved) = read_checkpoint(&**fs, &dir.join(LOG_START_CHECKPOINT))? {
            if saved > log.log_end_offset() {
                // Records below `saved` were deleted on purpose and the tail above the log end
                // was lost in a crash. Offsets are never reused, so the log starts again, empty,
                // at the saved start (Kafka does the same).
                log.truncate_fully_and_start_at(saved)?;
            } else {
                log.log_start_offset = saved.max(first_base);
            }
        }
        log.load_epochs(recovered_from)?;
        // What a crash left in the page cache is on disk from here on (and cheap when clean),
        // so the whole log counts as durable after opening.
        log.sync_at_open()?;
        Ok(log)
    }

    fn active(&self) -> &Segment {
        self.segments.values().next_back().expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Changes the configuration (a topic's configs were altered): applies from the next append.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// The offset the next record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The latest partition leader epoch in the log (`None` when no batch carries one).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// Kafka's `LeaderEpochFileCache.endOffsetFor` (OffsetsForLeaderEpoch): the largest epoch
    /// at or below `epoch` and the offset where it ended — the start of the next higher
    /// epoch, or the log end for the latest one. (-1, -1) for epoch -1, an epoch above the
    /// latest, or an empty cache; an epoch below the first entry gives (`epoch`, the first
    /// entry's start offset), as Kafka answers.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// The leader-epoch cache: each epoch and the offset of its first batch (from the log
    /// start on), in order.
    pub fn epoch_entries(&self) -> Vec<EpochEntry> {
        self.epochs.entries().to_vec()
    }

    /// The header of the batch holding `offset`, if the log has one.
    fn batch_at(&self, offset: i64) -> Result<Option<BatchInfo>, StorageError> {
        let Some((_, seg)) = self.segments.range(..=offset).next_back() else {
            return Ok(None);
        };
        Ok(seg.find_batch(offset)?.filter(|b| b.base_offset <= offset))
    }

    /// Builds the leader-epoch cache at open. The log wins over the checkpoint file: the file
    /// is derived state (as the index is) and the batches carry their epochs, so an entry
    /// that the batches contradict means the file is stale or damaged, and it is rebuilt from
    /// the batches (as Kafka does). The file is trusted only below `recovered_from`, the first
    /// segment that recovery re-read (sealed segments were vouched for by their index, which
    /// the seal writes only after the checkpoint covering them), and only once each of its
    /// entries there was checked against the batch it names; from `recovered_from` on the
    /// cache is rebuilt from the batch headers. A missing or damaged file (reported, naming
    /// it) is rebuilt from the whole log.
    fn load_epochs(&mut self, recovered_from: Option<i64>) -> Result<(), StorageError> {
        let (start, end) = (self.log_start_offset, self.log_end_offset());
        let boundary = recovered_from.unwrap_or(end).clamp(start, end);
        let path = self.epoch_file.path().to_path_buf();
        let on_disk = match self.epoch_file.read() {
            Ok(Some(Ok(c))) => Some(c),
            Ok(Some(Err(why))) => {
                tracing::warn!(file = %path.display(), why, "leader-epoch checkpoint is damaged: not trusted, rebuilt from the log");
                None
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the leader-epoch checkpoint: rebuilt from the log");
                None
            }
        };
        let mut trusted = None;
        if let Some(mut c) = on_disk.clone() {
            c.truncate_from_start(start);
            c.truncate_from_end(boundary);
            match self.check_epochs(&c, boundary) {
                Ok(()) => trusted = Some(c),
                Err(why) => {
                    tracing::warn!(file = %path.display(), why, "leader-epoch checkpoint does not match the log: rebuilt from the log")
                }
            }
        }
        let scan_from = if trusted.is_some() { boundary } else { start };
        let mut cache = trusted.unwrap_or_default();
        let mut scan = |b: &BatchInfo| {
            if b.last_offset >= scan_from {
                cache.assign(b.partition_leader_epoch, b.base_offset.max(start));
            }
        };
        for (_, seg) in self
            .segments
            .range(..=scan_from)
            .next_back()
            .into_iter()
            .chain(self.segments.range(scan_from + 1..))
        {
            if let Err(e) = seg.for_each_batch(&mut scan) {
                // Damage is reported by reads; the cache keeps what came before it.
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read every batch header to rebuild the leader-epoch cache");
                break;
            }
        }
        if on_disk.as_ref() != Some(&cache) {
            self.epoch_version += 1;
        }
        self.epochs = cache;
        Ok(())
    }

    /// Whether `cache` (from the checkpoint, cut to the log start and to `boundary`) agrees
    /// with the batches below `boundary`: each entry names a batch of its epoch starting
    /// there (the first may start inside one, at the log start) after a batch of a lower
    /// epoch, and the batch just below `boundary` has no epoch above the latest entry's.
    fn check_epochs(&self, cache: &LeaderEpochCache, boundary: i64) -> Result<(), String> {
        let start = self.log_start_offset;
        let read = |offset: i64| self.batch_at(offset).map_err(|e| e.to_string());
        for e in cache.entries() {
            let Some(b) = read(e.start_offset)? else {
                return Err(format!("no batch at offset {} (epoch {})", e.start_offset, e.epoch));
            };
            if b.partition_leader_epoch != e.epoch || (b.base_offset != e.start_offset && e.start_offset != start) {
                return Err(format!(
                    "epoch {} is said to start at {}, but the batch at {} has epoch {}",
                    e.epoch, e.start_offset, b.base_offset, b.partition_leader_epoch
                ));
            }
            if e.start_offset > start {
                if let Some(prev) = read(e.start_offset - 1)? {
                    if prev.partition_leader_epoch >= e.epoch {
                        return Err(format!(
                            "epoch {} is said to start at {}, but the batch at {} already has epoch {}",
                            e.epoch, e.start_offset, prev.base_offset, prev.partition_leader_epoch
                        ));
                    }
                }
            }
        }
        if boundary > start {
            if let Some(last) = read(boundary - 1)? {
                let latest = cache.latest_epoch().unwrap_or(-1);
                if last.partition_leader_epoch > latest {
                    return Err(format!(
                        "the batch at {} has epoch {}, which has no entry",
                        last.base_offset, last.partition_leader_epoch
                    ));
                }
            }
        }
        Ok(())
    }

    /// Appends one record batch as received: checks it, stamps base offset and leader epoch
    /// (outside the CRC), and writes it. The caller has validated the records themselves.
    ///
    /// A new segment is rolled first when the batch would take the active one past
    /// `segment.bytes`, or, as Kafka does, when `segment.ms` has passed: measured between the
    /// first batch's max timestamp in the segment and this batch's, or by `now_ms` since the
    /// segment was opened when timestamps are missing (-1).
    pub fn append(&mut self, batch: Bytes, leader_epoch: i32, now_ms: i64) -> Result<AppendInfo, StorageError> {
        if self.failed {
            return Err(StorageError::Failed);
        }
        if batch.len() > self.config.batch_bytes_max {
            return Err(StorageError::BatchTooLarge {
                size: batch.len(),
                max: self.config.batch_bytes_max,
            });
        }
        let mut rest = batch.clone();
        let parsed = RecordBatch::parse(&mut rest).map_err(|e| StorageError::InvalidBatch(e.to_string()))?;
        if !rest.is_empty() {
            return Err(StorageError::InvalidBatch("trailing bytes after the batch".into()));
        }
        parsed
            .verify_crc()
            .map_err(|e| StorageError::InvalidBatch(e.to_string()))?;
        let base_offset = self.log_end_offset();
        if let Some(latest) = self.epochs.latest_epoch().filter(|l| leader_epoch < *l) {
            return Err(StorageError::EpochRegression {
                base_offset,
                epoch: leader_epoch,
                latest,
            });
        }
        let last_offset = base_offset + i64::from(parsed.last_offset_delta());
        let max_timestamp = parsed.max_timestamp();
        self.roll_if_due(base_offset, last_offset, max_timestamp, batch.len(), now_ms)?;
        let mut stamped = BytesMut::from(&batch[..]);
        records::stamp(&mut stamped, base_offset, leader_epoch);
        self.active_mut()
            .append(&stamped, base_offset, last_offset, max_timestamp)?;
        assert_eq!(
            self.log_end_offset(),
            last_offset + 1,
            "log end offset must follow the appended batch"
        );
        self.note_epoch(leader_epoch, base_offset);
        Ok(AppendInfo {
            base_offset,
            last_offset,
        })
    }

    /// A batch of `epoch` was appended at `base_offset`: a new, higher epoch starts an entry
    /// in the cache (in memory; the checkpoint is written by the seal work or a sync).
    fn note_epoch(&mut self, epoch: i32, base_offset: i64) {
        if self.epochs.assign(epoch, base_offset) {
            self.epoch_version += 1;
            self.update_seal_pending();
        }
    }

    /// Rolls a new segment before a batch of `size` bytes covering `base_offset..=last_offset`
    /// when the active one is full, too old or too wide for it (see [`Log::append`]).
    fn roll_if_due(
        &mut self,
        base_offset: i64,
        last_offset: i64,
        max_timestamp: i64,
        size: usize,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let (segment_ms, segment_bytes) = (self.config.segment_ms, self.config.segment_bytes);
        let active = self.active_mut();
        let waited = active.time_waited_for_roll(max_timestamp, now_ms);
        let too_big = active.size() + size as u64 > segment_bytes;
        let too_old = segment_ms.is_some_and(|ms| waited > ms);
        // Index entries hold offsets relative to the base as u32.
        let too_wide = last_offset - active.base_offset() > i64::from(u32::MAX);
        if (too_big || too_old || too_wide) && !active.is_empty() {
            let why = if too_big {
                "segment.bytes"
            } else if too_old {
                "segment.ms"
            } else {
                "offset range"
            };
            self.roll(base_offset, now_ms, why)?;
        }
        Ok(())
    }

    /// Appends record batches as fetched from the leader (a follower's append): one or more
    /// whole batches, already stamped with their base offsets and partition leader epochs,
    /// written as they are (never restamped). Every batch is checked before any is written:
    /// framing, size (`max.message.bytes`), CRC, offsets (the first batch starts at the log
    /// end, each next one right after the one before), and epochs (never negative, never
    /// below the one before nor the log's latest). Anything that does not continue the log
    /// is refused with [`StorageError::OffsetMismatch`] or [`StorageError::EpochRegression`]
    /// (the caller truncates or refetches); a damaged batch or trailing bytes with
    /// [`StorageError::InvalidBatch`].
    ///
    /// Kafka's followers take a batch past the log end in some cases (the leader's log start
    /// moved past it); here the one exception is an empty log (start = end): its start moves
    /// to the first batch's base offset (written to the log start checkpoint first, so a
    /// crash finishes the move at open). A new, higher epoch starts a leader-epoch cache
    /// entry, as a leader's append does. As with [`Log::append`], nothing is fsynced; on an
    /// I/O error the batches before the failing one stay appended (the log end says where it
    /// stopped).
    pub fn append_replicated(&mut self, batches: Bytes, now_ms: i64) -> Result<AppendInfo, StorageError> {
        if self.failed {
            return Err(StorageError::Failed);
        }
        let end = self.log_end_offset();
        let may_move_start = self.log_start_offset == end;
        let mut checked = vec![];
        let mut rest = batches;
        let mut expected = end;
        let mut latest = self.epochs.latest_epoch().unwrap_or(-1);
        while !rest.is_empty() {
            let available = rest.len();
            let parsed = RecordBatch::parse(&mut rest).map_err(|e| StorageError::InvalidBatch(e.to_string()))?;
            let size = available - rest.len();
            if size > self.config.batch_bytes_max {
                return Err(StorageError::BatchTooLarge {
                    size,
                    max: self.config.batch_bytes_max,
                });
            }
            parsed
                .verify_crc()
                .map_err(|e| StorageError::InvalidBatch(e.to_string()))?;
            let base = parsed.base_offset();
            let moves_start = checked.is_empty() && may_move_start && base > end;
            if base != expected && !moves_start {
                return Err(StorageError::OffsetMismatch {
                    base_offset: base,
                    log_end: expected,
                });
            }
            let last = base
                .checked_add(i64::from(parsed.last_offset_delta()))
                .filter(|l| *l >= base && l.checked_add(1).is_some())
                .ok_or_else(|| StorageError::InvalidBatch(format!("batch at {base} has no valid last offset")))?;
            let epoch = parsed.partition_leader_epoch();
            if epoch < 0 || epoch < latest {
                return Err(StorageError::EpochRegression {
                    base_offset: base,
                    epoch,
                    latest,
                });
            }
            latest = epoch;
            expected = last + 1;
            checked.push((parsed, last));
        }
        let Some(first) = checked.first().map(|(b, _)| b.base_offset()) else {
            return Err(StorageError::InvalidBatch("no batch to append".into()));
        };
        if first > end {
            tracing::info!(dir = %self.dir.display(), from = end, to = first, "the empty log starts at the leader's first offset");
            self.set_log_start_offset(first)?;
            self.truncate_fully_and_start_at(first)?;
        }
        for (b, last) in &checked {
            let (base, last) = (b.base_offset(), *last);
            let max_timestamp = b.max_timestamp();
            self.roll_if_due(base, last, max_timestamp, b.size_bytes(), now_ms)?;
            self.active_mut().append(b.as_bytes(), base, last, max_timestamp)?;
            assert_eq!(
                self.log_end_offset(),
                last + 1,
                "log end offset must follow the appended batch"
            );
            self.note_epoch(b.partition_leader_epoch(), base);
        }
        Ok(AppendInfo {
            base_offset: first,
            last_offset: self.log_end_offset() - 1,
        })
    }

    /// Starts a new segment at `base_offset`. Nothing is fsynced: the old segment becomes
    /// unsealed, and [`Log::take_seal`] (run in the background) makes it durable.
    /// `why`: what triggered the roll, for the log line.
    fn roll(&mut self, base_offset: i64, now_ms: i64, why: &str) -> Result<(), StorageError> {
        self.active_mut().seal()?;
        let seg = Segment::create(
            &self.fs,
            &self.dir,
            base_offset,
            self.config.index_interval_bytes,
            Some(now_ms),
        )?;
        let old = self.active().base_offset();
        // One line per roll: rare at the default segment.bytes (1 GiB).
        tracing::info!(dir = %self.dir.display(), base_offset, why, "rolled a new segment");
        self.segments.insert(base_offset, seg);
        self.unsealed.insert(old);
        self.dir_changes += 1;
        self.update_seal_pending();
        Ok(())
    }

    fn epochs_dirty(&self) -> bool {
        self.epoch_durable < self.epoch_version
    }

    fn update_seal_pending(&self) {
        let pending = !self.unsealed.is_empty() || self.dir_synced < self.dir_changes || self.epochs_dirty();
        self.seal_pending.store(pending, Ordering::Release);
    }

    /// A flag that is set while rolled segments wait for [`Log::take_seal`] (or the directory
    /// for an fsync), readable without the log's lock: a background task polls it.
    pub fn seal_pending(&self) -> Arc<AtomicBool> {
        self.seal_pending.clone()
    }

    /// The work that makes rolled segments durable and their indexes written, if any is
    /// waiting: run it ([`SealWork::run`]) without the log's lock, then pass it to
    /// [`Log::sealed`].
    pub fn take_seal(&self) -> Option<SealWork> {
        if self.unsealed.is_empty() && self.dir_synced >= self.dir_changes && !self.epochs_dirty() {
            return None;
        }
        let segments = self
            .unsealed
            .iter()
            .filter_map(|b| self.segments.get(b).map(|s| (*b, s)))
            .map(|(base, s)| {
                let (log, index_path, index) = s.seal_bytes();
                SealItem {
                    base,
                    log,
                    index_path,
                    index,
                }
            })
            .collect();
        Some(SealWork {
            fs: self.fs.clone(),
            dir: self.dir.clone(),
            segments,
            dir_changes: self.dir_changes,
            epochs: self
                .epochs_dirty()
                .then(|| (self.epoch_version, self.epochs.encode(), self.epoch_file.clone())),
            gate: self.seal_gate.clone(),
            generation: *self.seal_gate.lock().unwrap_or_else(|p| p.into_inner()),
        })
    }

    /// `work` ran successfully: its segments are sealed (their in-memory indexes dropped).
    pub fn sealed(&mut self, work: SealWork) -> Result<(), StorageError> {
        let stale = *self.seal_gate.lock().unwrap_or_else(|p| p.into_inner()) != work.generation;
        for SealItem { base, index_path, .. } in work.segments.iter().filter(|_| !stale) {
            if self.unsealed.remove(base) {
                if let Some(seg) = self.segments.get_mut(base) {
                    seg.sealed()?;
                }
            } else if !self.segments.contains_key(base) {
                // Deleted while its seal ran: the index just written belongs to nothing.
                crate::delete::remove_later(&self.fs, vec![index_path.clone()]);
            }
        }
        self.dir_synced = self.dir_synced.max(work.dir_changes);
        if let Some((version, ..)) = &work.epochs {
            self.epoch_durable = self.epoch_durable.max(*version);
        }
        self.update_seal_pending();
        Ok(())
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` (but always one whole
    /// batch). Empty at the log end; an error outside `log_start_offset..=log_end_offset`.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes, StorageError> {
        let (start, end) = (self.log_start_offset, self.log_end_offset());
        if offset < start || offset > end {
            return Err(StorageError::OffsetOutOfRange { offset, start, end });
        }
        for (_, seg) in self
            .segments
            .range(..=offset)
            .next_back()
            .into_iter()
            .chain(self.segments.range(offset + 1..))
        {
            if let Some(data) = seg.read(offset, max_bytes)? {
                return Ok(data);
            }
        }
        Ok(Bytes::new())
    }

    /// Works around the damaged batch at `offset` (a read there failed with `Corrupt`), for
    /// owners that must read past damage (the broker's own topics): when the batch's header
    /// still frames it plausibly, returns the offset after it (the batch stays on disk and is
    /// never served); otherwise cuts the log there, as recovery after a crash would, moving
    /// the later segments aside (`*.stray`), and returns the new log end.
    pub fn skip_damaged(&mut self, offset: i64) -> Result<Skipped, StorageError> {
        let (start, end) = (self.log_start_offset, self.log_end_offset());
        let Some((&base, seg)) = self.segments.range(..=offset).next_back() else {
            return Err(StorageError::OffsetOutOfRange { offset, start, end });
        };
        let path = seg.log_file().1;
        if let Some((_, next)) = seg.damaged_batch(offset)? {
            return Ok(Skipped {
                next_offset: next,
                cut: false,
                path,
            });
        }
        let later: Vec<i64> = self.segments.range(base + 1..).map(|(b, _)| *b).collect();
        for b in later {
            self.segments.remove(&b);
            self.unsealed.remove(&b);
            quarantine_segment(&self.fs, &self.dir, b)?;
        }
        let Some(seg) = self.segments.remove(&base) else {
            return Err(StorageError::OffsetOutOfRange { offset, start, end });
        };
        self.unsealed.remove(&base);
        let seg = match seg.cut_at(offset) {
            Ok(seg) => seg,
            Err(e) => {
                // Keep a segment in the map whatever happens: reopen it as it is on disk.
                let (seg, _) = Segment::open_and_recover(&self.fs, &self.dir, base, self.config.index_interval_bytes)?;
                self.segments.insert(base, seg);
                return Err(e);
            }
        };
        self.segments.insert(base, seg);
        self.dir_changes += 1;
        self.update_seal_pending();
        self.fs.sync_dir(&self.dir).map_err(|source| StorageError::Io {
            path: self.dir.clone(),
            source,
        })?;
        Ok(Skipped {
            next_offset: self.log_end_offset(),
            cut: true,
            path,
        })
    }

    /// Removes every record at or above `offset` (a follower's truncation after its log
    /// diverged from the leader's) and returns the new log end offset.
    ///
    /// The log is cut at a batch boundary: a batch holding `offset` is removed whole, so the
    /// new end is that batch's base offset, which may be below `offset` (Kafka cuts at the
    /// same boundary but then sets its log end to `offset` anyway, leaving a gap; offsets
    /// here never have one, so the caller refetches from the returned end). An `offset` at or
    /// past the log end changes nothing (as in Kafka). Below the log start, or where the
    /// batch to remove starts below it, is an error: the log start never moves back.
    ///
    /// Durable before it returns, and a crash at any point leaves the log as before or as
    /// after, never with a hole: first the cut segment's index file goes (directory fsynced),
    /// so nothing vouches for that segment any more; then its log is cut and fsynced — from
    /// here on, a crash leaves a short unvouched segment, and opening drops every segment
    /// after it (see [`Log::open_on`]), which is the state after; then the later segments
    /// are renamed `*.deleted` (newest first), the directory fsynced, and the files removed
    /// in the background; last the leader-epoch cache loses the entries starting at or past
    /// the new end, and its checkpoint is rewritten (a stale one is rebuilt at open from the
    /// segment recovery re-reads, which the cut one is). An error part way leaves the log
    /// refusing writes and syncs ([`StorageError::Failed`]) until it is opened again.
    /// An owner counting durable offsets with a [`crate::GroupCommit`] moves it back too
    /// ([`crate::GroupCommit::truncated_to`]), or a later sync would count as done early.
    pub fn truncate_to(&mut self, offset: i64) -> Result<i64, StorageError> {
        if self.failed {
            return Err(StorageError::Failed);
        }
        let (start, end) = (self.log_start_offset, self.log_end_offset());
        if offset < start {
            return Err(StorageError::OffsetOutOfRange { offset, start, end });
        }
        if offset >= end {
            return Ok(end);
        }
        let Some((&base, seg)) = self.segments.range(..=offset).next_back() else {
            return Err(StorageError::OffsetOutOfRange { offset, start, end });
        };
        let (position, new_end) = match seg.find_batch(offset)? {
            Some(b) => (b.position, b.base_offset),
            None => (seg.size(), seg.next_offset()),
        };
        if new_end < start {
            return Err(StorageError::TruncateBelowStart {
                offset,
                batch_base: new_end,
                log_start: start,
            });
        }
        let result = self.truncate_steps(base, position);
        if result.is_err() {
            self.failed = true;
        }
        result?;
        if self.epochs.truncate_from_end(self.log_end_offset()) {
            self.epoch_version += 1;
            match self.epoch_file.write(self.epoch_version, &self.epochs.encode()) {
                Ok(()) => self.epoch_durable = self.epoch_version,
                // Derived state: the next seal writes it, and an open rebuilds a stale one.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot rewrite the leader-epoch checkpoint after a truncation; retried by the next seal")
                }
            }
        }
        self.update_seal_pending();
        Ok(self.log_end_offset())
    }

    /// The file steps of [`Log::truncate_to`]: cut segment `base` at `position`, delete the
    /// segments after it.
    fn truncate_steps(&mut self, base: i64, position: u64) -> Result<(), StorageError> {
        let dir_err = |dir: &Path| {
            let path = dir.to_path_buf();
            move |source| StorageError::Io { path, source }
        };
        // Waits for seal work writing indexes, and makes any work taken before stale.
        *self.seal_gate.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        let active = self.active().base_offset();
        let seg = self.segments.get_mut(&base).expect("the segment to cut is in the log");
        if position < seg.size() {
            seg.drop_index_file()?;
            if base != active {
                // Its index is to be written again (and the seal work covers its log).
                self.unsealed.insert(base);
            }
            self.fs.sync_dir(&self.dir).map_err(dir_err(&self.dir))?;
            let seg = self.segments.get_mut(&base).expect("the segment to cut is in the log");
            seg.truncate_at(position)?;
        }
        let later: Vec<i64> = self.segments.range(base + 1..).map(|(b, _)| *b).collect();
        let mut retired = vec![];
        for b in later.iter().rev() {
            let Some(seg) = self.segments.remove(b) else { continue };
            self.unsealed.remove(b);
            tracing::info!(dir = %self.dir.display(), base_offset = b, "deleting segment: the log is truncated below it");
            retired.extend(seg.retire()?);
        }
        // The cut segment is the active one now.
        self.unsealed.remove(&base);
        self.dir_changes += 1;
        self.fs.sync_dir(&self.dir).map_err(dir_err(&self.dir))?;
        self.dir_synced = self.dir_changes;
        self.update_seal_pending();
        crate::delete::remove_later(&self.fs, retired);
        Ok(())
    }

    /// Advances the log start offset to `offset` (DeleteRecords): records below it are no
    /// longer readable, and segments wholly below it are deleted. The new start is written to
    /// a checkpoint before any file is removed. Returns the new log start offset.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, StorageError> {
        let end = self.log_end_offset();
        if offset < 0 || offset > end {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end,
            });
        }
        if offset > self.log_start_offset {
            self.set_log_start_offset(offset)?;
            self.delete_segments_below_start()?;
        }
        Ok(self.log_start_offset)
    }

    /// Deletes the oldest segments that retention no longer keeps: those whose newest record is
    /// older than `retention_ms` before `now_ms`, and those that take the log over
    /// `retention_bytes`. Whole segments only, and only those wholly below `high_watermark`.
    /// As in Kafka, the active segment goes too when it qualifies (a quiet topic still ages
    /// out): a new, empty segment is rolled first. The log start offset moves before any file
    /// is removed. Returns how many segments were deleted.
    pub fn enforce_retention(
        &mut self,
        now_ms: i64,
        high_watermark: i64,
        retention_ms: Option<i64>,
        retention_bytes: Option<u64>,
    ) -> Result<usize, StorageError> {
        let mut size = self.size_bytes();
        let mut new_start = None;
        let mut takes_active = false;
        let count = self.segments.len();
        for (i, (_, seg)) in self.segments.iter().enumerate() {
            let expired = retention_ms.is_some_and(|r| seg.max_timestamp() < now_ms.saturating_sub(r));
            let oversize = retention_bytes.is_some_and(|r| size - seg.size() >= r);
            if !(expired || oversize) || seg.next_offset() > high_watermark || seg.is_empty() {
                break;
            }
            size -= seg.size();
            new_start = Some(seg.next_offset());
            takes_active = i + 1 == count;
        }
        if takes_active {
            let end = self.log_end_offset();
            self.roll(end, now_ms, "retention takes the whole log")?;
        }
        if let Some(start) = new_start.filter(|s| *s > self.log_start_offset) {
            self.set_log_start_offset(start)?;
        }
        // Also removes segments that fell below the start while they were still active
        // (DeleteRecords inside the active segment, which has since rolled).
        self.delete_segments_below_start()
    }

    /// Drops every record and continues, empty, at `offset` (Kafka's `truncateFullyAndStartAt`):
    /// a follower that installs a snapshot ending there. First the records from `offset` on go
    /// (a truncation, itself crash-safe), then the start moves up: its checkpoint is written
    /// before any segment is removed. So a power loss part way leaves a prefix of the log as
    /// it was, or the empty log at `offset`, never a record it did not hold. `offset` below the
    /// log start is an error: the start never moves back.
    pub fn start_over_at(&mut self, offset: i64) -> Result<(), StorageError> {
        if self.failed {
            return Err(StorageError::Failed);
        }
        let (start, end) = (self.log_start_offset, self.log_end_offset());
        if offset < start {
            return Err(StorageError::OffsetOutOfRange { offset, start, end });
        }
        if offset < end {
            self.truncate_to(offset)?;
        }
        let end = self.log_end_offset();
        if end == offset {
            return self.delete_records_before(offset).map(|_| ());
        }
        self.set_log_start_offset(offset)?;
        let result = self.truncate_fully_and_start_at(offset);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    /// Drops every record and continues, empty, at `offset`.
    fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), StorageError> {
        let fresh = Segment::create(&self.fs, &self.dir, offset, self.config.index_interval_bytes, None)?;
        self.fs.sync_dir(&self.dir).map_err(|source| StorageError::Io {
            path: self.dir.clone(),
            source,
        })?;
        self.unsealed.clear();
        self.update_seal_pending();
        let mut retired = vec![];
        for (base, seg) in std::mem::take(&mut self.segments) {
            if base != offset {
                retired.extend(seg.retire()?);
            }
        }
        crate::delete::remove_later(&self.fs, retired);
        self.segments.insert(offset, fresh);
        self.log_start_offset = offset;
        if self.epochs.truncate_from_end(offset) {
            self.epoch_version += 1;
            self.update_seal_pending();
        }
        Ok(())
    }

    fn set_log_start_offset(&mut self, offset: i64) -> Result<(), StorageError> {
        assert!(offset >= self.log_start_offset, "the log start offset only grows");
        write_checkpoint(&*self.fs, &self.dir.join(LOG_START_CHECKPOINT), offset)?;
        self.log_start_offset = offset;
        // Written by the next seal work: a checkpoint left with entries below the start is
        // cut to it again at open. A start at the log end leaves no batch, so no entry (the
        // cache is what the batches say; Kafka drops it too when it next loads the log).
        let end = self.log_end_offset();
        if self.epochs.truncate_from_start(offset) | self.epochs.truncate_from_end(end) {
            self.epoch_version += 1;
            self.update_seal_pending();
        }
        Ok(())
    }

    /// Deletes every segment other than the active one whose records all lie below the start.
    /// Their files are renamed at once and removed in the background.
    fn delete_segments_below_start(&mut self) -> Result<usize, StorageError> {
        let mut deleted = 0;
        while self.segments.len() > 1 {
            let Some(mut first) = self.segments.first_entry() else {
                break;
            };
            if first.get_mut().next_offset() > self.log_start_offset {
                break;
            }
            let seg = first.remove();
            self.unsealed.remove(&seg.base_offset());
            tracing::info!(dir = %self.dir.display(), base_offset = seg.base_offset(), next_offset = seg.next_offset(), "deleting segment");
            let retired = seg.retire()?;
            crate::delete::remove_later(&self.fs, retired);
            deleted += 1;
        }
        self.update_seal_pending();
        Ok(deleted)
    }

    /// The earliest record whose timestamp is at least `target` (ListOffsets by time):
    /// (offset, timestamp), or `None` when every record is older.
    pub fn offset_for_timestamp(&self, target: i64) -> Result<Option<(i64, i64)>, StorageError> {
        let first = self
            .segments
            .range(..=self.log_start_offset)
            .next_back()
            .map_or(i64::MIN, |(b, _)| *b);
        for (_, seg) in self.segments.range(first..) {
            if let Some(found) = seg.find_timestamp(target, self.log_start_offset)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The earliest record with the largest timestamp in the log (ListOffsets MAX_TIMESTAMP):
    /// (timestamp, offset), or `None` when the log holds no records.
    pub fn max_timestamp_record(&self) -> Result<Option<(i64, i64)>, StorageError> {
        let start = self.log_start_offset;
        // Each segment's max timestamp is exact, except for a segment partly below the log
        // start (after DeleteRecords), whose live records must be read.
        let mut best: Option<(i64, &Segment, Option<(i64, i64)>)> = None;
        for seg in self
            .segments
            .values()
            .filter(|s| s.next_offset() > start && !s.is_empty())
        {
            let (max, exact) = if seg.base_offset() < start {
                match seg.max_timestamp_record(start)? {
                    Some(found) => (found.0, Some(found)),
                    None => continue,
                }
            } else {
                (seg.max_timestamp(), None)
            };
            if best.as_ref().is_none_or(|(m, ..)| max > *m) {
                best = Some((max, seg, exact));
            }
        }
        match best {
            None => Ok(None),
            Some((_, _, Some(found))) => Ok(Some(found)),
            Some((_, seg, None)) => seg.max_timestamp_record(start),
        }
    }

    /// Calls `f` with the header of every batch from the log start on, in offset order
    /// (rebuilding producer state on startup, for instance).
    pub fn for_each_batch(&self, mut f: impl FnMut(&BatchInfo)) -> Result<(), StorageError> {
        let start = self.log_start_offset;
        for seg in self.segments.values() {
            seg.for_each_batch(&mut |b: &BatchInfo| {
                if b.last_offset >= start {
                    f(b)
                }
            })?;
        }
        Ok(())
    }

    /// Makes everything appended so far durable, every rolled segment sealed, and the active
    /// segment's index current. Holds the log's lock throughout: for opening, shutdown and
    /// tests; appends use [`Log::sync_target`] and [`Log::take_seal`] instead.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        if self.failed {
            return Err(StorageError::Failed);
        }
        if let Some(work) = self.take_seal() {
            work.run()?;
            self.sealed(work)?;
        }
        self.active_mut().sync()
    }

    /// [`Log::sync`] for opening: every fsync must succeed, but an index that cannot be
    /// written (a full disk) does not keep the log from opening, so consumers can drain it.
    /// Unwritten seal work stays pending for the background seal; the active segment's index
    /// is written at the next flush or shutdown.
    fn sync_at_open(&mut self) -> Result<(), StorageError> {
        if let Some(work) = self.take_seal() {
            match work.run() {
                Ok(()) => self.sealed(work)?,
                Err(e) if !e.data_lost => {
                    tracing::warn!(dir = %self.dir.display(), error = %e.error, "cannot write segment indexes at open; retried in the background")
                }
                Err(e) => return Err(e.error),
            }
        }
        let active = self.active_mut();
        active.sync_log()?;
        if let Err(e) = active.flush_index() {
            tracing::warn!(error = %e, "cannot write the active segment's index at open; written at the next flush or shutdown");
        }
        Ok(())
    }

    /// What an fsync must cover for everything appended so far to be durable (see
    /// [`crate::GroupCommit`]): the active segment, the rolled segments not yet sealed, and the
    /// directory when a segment was created since its last fsync.
    pub fn sync_target(&self) -> Result<SyncTarget, StorageError> {
        let (file, path) = self.active().log_file();
        let mut files: Vec<_> = self
            .unsealed
            .iter()
            .filter_map(|b| self.segments.get(b))
            .map(|s| s.log_file().0)
            .collect();
        files.push(file);
        Ok(SyncTarget {
            files,
            dir: (self.dir_synced < self.dir_changes).then(|| (self.fs.clone(), self.dir.clone())),
            path,
            end_offset: self.log_end_offset(),
        })
    }
}

const LOG_START_CHECKPOINT: &str = "log-start-offset.checkpoint";

/// Suffix of files moved aside because they cannot be trusted (a `.log` that is not named like
/// a segment, or a segment that does not continue the log): never read, never deleted by the
/// broker; the operator decides.
pub const STRAY_SUFFIX: &str = ".stray";

/// Renames `dir/name` to `dir/name.<ms since the epoch>.stray`. Returns the new path.
fn quarantine(fs: &Arc<dyn Fs>, dir: &Path, name: &str) -> Result<PathBuf, StorageError> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let from = dir.join(name);
    let to = dir.join(format!("{name}.{ms}{STRAY_SUFFIX}"));
    fs.rename(&from, &to)
        .map_err(|source| StorageError::Io { path: from, source })?;
    Ok(to)
}

/// Moves a segment's log and index (if any) aside (see [`quarantine`]). Returns the log's new
/// path.
fn quarantine_segment(fs: &Arc<dyn Fs>, dir: &Path, base: i64) -> Result<PathBuf, StorageError> {
    let to = quarantine(fs, dir, &segment::file_name(base, "log"))?;
    match quarantine(fs, dir, &segment::file_name(base, "index")) {
        Err(StorageError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    Ok(to)
}

/// What [`Log::skip_damaged`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Where reading can go on.
    pub next_offset: i64,
    /// The log was cut at the damage (the batch's header could not be trusted to step over
    /// it): everything from there on was moved aside, and the log now ends at `next_offset`.
    pub cut: bool,
    /// The segment file that holds the damage.
    pub path: PathBuf,
}

fn read_checkpoint(fs: &dyn Fs, path: &Path) -> Result<Option<i64>, StorageError> {
    match fs.read_all(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes)
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|e| StorageError::Corrupt {
                path: path.to_path_buf(),
                position: 0,
                why: format!("checkpoint is not an offset: {e}; restore it from a backup, or write the first offset still to be served (removing it serves again the records DeleteRecords removed)"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StorageError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes a checkpoint so that a crash leaves the old value or the new one: temp file, fsync,
/// rename, fsync of the directory.
fn write_checkpoint(fs: &dyn Fs, path: &Path, value: i64) -> Result<(), StorageError> {
    fn err(p: &Path) -> impl Fn(std::io::Error) -> StorageError + '_ {
        move |source| StorageError::Io {
            path: p.to_path_buf(),
            source,
        }
    }
    let tmp = path.with_extension("tmp");
    let f = fs.open(&tmp, OpenMode::Truncate).map_err(err(&tmp))?;
    f.write_all_at(format!("{value}\n").as_bytes(), 0)
        .and_then(|()| f.sync_data())
        .map_err(err(&tmp))?;
    drop(f);
    fs.rename(&tmp, path).map_err(err(path))?;
    if let Some(dir) = path.parent() {
        fs.sync_dir(dir).map_err(err(dir))?;
    }
    Ok(())
}

/// The file system [`Log::open`] uses: the operating system's, shared by every log opened
/// that way in the process, with at most 1024 files open at once. A broker passes its own
/// [`RealFs`] to [`Log::open_on`] instead.
pub fn default_fs() -> Arc<dyn Fs> {
    static FS: OnceLock<Arc<dyn Fs>> = OnceLock::new();
    FS.get_or_init(|| Arc::new(RealFs::new(1024))).clone()
}
