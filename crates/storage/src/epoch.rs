//! The leader-epoch cache: for each partition leader epoch seen in the log, the offset of its
//! first batch (Kafka's `LeaderEpochFileCache`), kept in Kafka's `leader-epoch-checkpoint`
//! file format in the partition directory:
//!
//! ```text
//! 0            <- version
//! 2            <- number of entries
//! 0 0          <- epoch, start offset
//! 3 1200
//! ```
//!
//! The cache is derived from the batches (each carries its partition leader epoch): the log
//! wins over the file. Entries are strictly increasing in both epoch and start offset, and
//! never negative.

use crate::fs::{Fs, OpenMode};
use crate::StorageError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The file's name in the partition directory (Kafka's).
pub const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";

/// Kafka's `UNDEFINED_EPOCH` and `UNDEFINED_EPOCH_OFFSET`.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// One epoch and the offset of its first batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// The entries, in increasing epoch and start offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// A batch of `epoch` starts at `start_offset` (or a new leader's epoch begins at its log
    /// end), as Kafka's `LeaderEpochFileCache.assign`: nothing changes for the latest epoch
    /// at or after its start (a negative epoch, "none", never makes an entry); otherwise the
    /// entries the new one supersedes — an epoch at or above it, or a start at or after it —
    /// go, and it is added. So an epoch a leader put at its log end and never wrote is
    /// replaced by the epoch of the next leader's batches there, even a lower one. Returns
    /// whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        if let Some(last) = self.entries.last() {
            if epoch == last.epoch && start_offset >= last.start_offset {
                return false;
            }
        }
        self.entries
            .retain(|e| e.epoch < epoch && e.start_offset < start_offset);
        self.entries.push(EpochEntry { epoch, start_offset });
        true
    }

    /// The log was truncated to `end_offset`: entries starting at or past it go (Kafka's
    /// `truncateFromEnd`). Returns whether the cache changed.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let keep = self.entries.partition_point(|e| e.start_offset < end_offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// The log start moved to `start_offset`: entries wholly below it go, and the one holding
    /// it starts there (Kafka's `truncateFromStart`). Returns whether the cache changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        // The last entry starting at or below the start holds it; those before it go.
        let at_or_below = self.entries.partition_point(|e| e.start_offset <= start_offset);
        if at_or_below == 0 {
            return false;
        }
        let first = at_or_below - 1;
        let changed = first > 0 || self.entries[first].start_offset != start_offset;
        self.entries.drain(..first);
        self.entries[0].start_offset = start_offset;
        changed
    }

    /// Kafka's `LeaderEpochFileCache.endOffsetFor`: for a follower (or a consumer) at
    /// `requested` epoch, the largest epoch at or below it and the offset where it ended (the
    /// start of the next higher epoch, or `log_end` for the latest epoch):
    /// - `requested` is -1, above the latest epoch, or the cache is empty: (-1, -1);
    /// - `requested` is the latest epoch: (requested, `log_end`);
    /// - `requested` is below the first entry: (requested, the first entry's start offset), as
    ///   Kafka answers (the data before it is gone; the follower truncates to there);
    /// - otherwise (floor epoch, start of the first epoch above `requested`).
    pub fn end_offset_for(&self, requested: i32, log_end: i64) -> (i32, i64) {
        const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested == UNDEFINED_EPOCH {
            return UNDEFINED;
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end);
        }
        let higher = self.entries.partition_point(|e| e.epoch <= requested);
        let Some(next) = self.entries.get(higher) else {
            return UNDEFINED;
        };
        match higher.checked_sub(1).map(|i| self.entries[i]) {
            None => (requested, next.start_offset),
            Some(floor) => (floor.epoch, next.start_offset),
        }
    }

    /// The checkpoint file's text.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            s.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        s.into_bytes()
    }

    /// Parses the checkpoint file's text; says what is wrong otherwise. Entries must be
    /// non-negative and strictly increasing in epoch and start offset.
    pub fn parse(bytes: &[u8]) -> Result<LeaderEpochCache, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
        let mut lines = text.lines();
        let version = lines.next().ok_or("empty file")?.trim();
        if version != "0" {
            return Err(format!("unknown version {version:?} (expected 0)"));
        }
        let count_line = lines.next().ok_or("no entry count line")?.trim();
        let count: usize = count_line
            .parse()
            .map_err(|_| format!("entry count {count_line:?} is not a number"))?;
        let mut cache = LeaderEpochCache::default();
        for i in 0..count {
            let line = lines
                .next()
                .ok_or_else(|| format!("{count} entries announced, {i} found"))?;
            let mut fields = line.split_whitespace();
            let (Some(epoch), Some(offset), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(format!("entry {line:?} is not \"epoch offset\""));
            };
            let (Ok(epoch), Ok(start_offset)) = (epoch.parse::<i32>(), offset.parse::<i64>()) else {
                return Err(format!("entry {line:?} is not two numbers"));
            };
            // Both strictly increasing in the file (no entry replaces another there).
            let follows = cache
                .entries
                .last()
                .is_none_or(|l| epoch > l.epoch && start_offset > l.start_offset);
            if !follows || !cache.assign(epoch, start_offset) {
                return Err(format!(
                    "entry {line:?} is negative or does not follow the one before it"
                ));
            }
        }
        if lines.any(|l| !l.trim().is_empty()) {
            return Err(format!("more than the {count} entries announced"));
        }
        Ok(cache)
    }
}

/// Writes the checkpoint file: temp file, fsync, rename, directory fsync, so that a crash
/// leaves the old file or the new one. Shared between the log and its background seal work;
/// a write older than the one on disk is skipped (versions only grow).
#[derive(Debug)]
pub struct EpochCheckpoint {
    fs: Arc<dyn Fs>,
    path: PathBuf,
    /// The version of the cache last written (and made durable).
    written: Mutex<u64>,
}

impl EpochCheckpoint {
    pub fn new(fs: Arc<dyn Fs>, dir: &Path) -> EpochCheckpoint {
        EpochCheckpoint {
            fs,
            path: dir.join(LEADER_EPOCH_CHECKPOINT),
            written: Mutex::new(0),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the file holds now: `Ok(None)` when it is missing, `Err` (why) when it is damaged.
    pub fn read(&self) -> Result<Option<Result<LeaderEpochCache, String>>, StorageError> {
        match self.fs.read_all(&self.path) {
            Ok(bytes) => Ok(Some(LeaderEpochCache::parse(&bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StorageError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Makes `bytes` (the cache at `version`) the file's durable contents, unless a later
    /// version was written already.
    pub fn write(&self, version: u64, bytes: &[u8]) -> Result<(), StorageError> {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if version <= *written {
            return Ok(());
        }
        let err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StorageError::Io { path: p, source }
        };
        let tmp = self.path.with_extension("tmp");
        let f = self.fs.open(&tmp, OpenMode::Truncate).map_err(err(&tmp))?;
        f.write_all_at(bytes, 0)
            .and_then(|()| f.sync_data())
            .map_err(err(&tmp))?;
        drop(f);
        self.fs.rename(&tmp, &self.path).map_err(err(&self.path))?;
        if let Some(dir) = self.path.parent() {
            self.fs.sync_dir(dir).map_err(err(dir))?;
        }
        *written = version;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut c = LeaderEpochCache::default();
        for &(e, o) in entries {
            assert!(c.assign(e, o));
        }
        c
    }

    fn entries(list: &[(i32, i64)]) -> Vec<EpochEntry> {
        list.iter()
            .map(|&(epoch, start_offset)| EpochEntry { epoch, start_offset })
            .collect()
    }

    #[test]
    fn end_offset_for_follows_kafka() {
        // Epochs 1, 3 (a gap: 2 never wrote), 4 and 7.
        let c = cache(&[(1, 0), (3, 10), (4, 25), (7, 40)]);
        let end = 55;
        assert_eq!(c.end_offset_for(-1, end), (-1, -1), "undefined epoch");
        assert_eq!(c.end_offset_for(7, end), (7, 55), "latest: the log end");
        assert_eq!(c.end_offset_for(8, end), (-1, -1), "above the latest");
        assert_eq!(c.end_offset_for(1, end), (1, 10), "first: the start of the next");
        assert_eq!(c.end_offset_for(2, end), (1, 10), "in a gap: the floor epoch");
        assert_eq!(c.end_offset_for(3, end), (3, 25));
        assert_eq!(c.end_offset_for(5, end), (4, 40), "between: the floor and the next");
        assert_eq!(c.end_offset_for(6, end), (4, 40));
        assert_eq!(
            c.end_offset_for(0, end),
            (0, 0),
            "below the first: the requested epoch and the first start (Kafka)"
        );
        let later = cache(&[(5, 100), (6, 120)]);
        assert_eq!(later.end_offset_for(2, 130), (2, 100));
        assert_eq!(LeaderEpochCache::default().end_offset_for(0, 10), (-1, -1), "empty");
        assert_eq!(cache(&[(0, 0)]).end_offset_for(0, 10), (0, 10));
    }

    #[test]
    fn assign_adds_new_epochs_and_drops_what_they_supersede_as_kafka() {
        let mut c = cache(&[(2, 5)]);
        assert!(!c.assign(2, 9), "the latest epoch, later");
        assert!(!c.assign(-1, 20), "no epoch");
        assert!(c.assign(3, 9));
        assert_eq!(c.entries(), &entries(&[(2, 5), (3, 9)]));
        // A leader elected again before it wrote a batch: its new epoch takes the old one's place.
        assert!(c.assign(4, 9), "same start offset");
        assert_eq!(c.entries(), &entries(&[(2, 5), (4, 9)]));
        // Epoch 4 was a leader's that never wrote: the next leader's epoch-3 batches replace it.
        assert!(c.assign(3, 9));
        assert_eq!(c.entries(), &entries(&[(2, 5), (3, 9)]));
        assert!(c.assign(3, 7), "the latest epoch, earlier");
        assert_eq!(c.entries(), &entries(&[(2, 5), (3, 7)]));
    }

    #[test]
    fn truncations_from_either_end() {
        let mut c = cache(&[(1, 0), (3, 10), (4, 25), (7, 40)]);
        assert!(!c.truncate_from_end(41));
        assert!(c.truncate_from_end(40), "an entry starting at the cut goes");
        assert_eq!(c.latest_epoch(), Some(4));
        assert!(!c.truncate_from_start(0));
        assert!(c.truncate_from_start(12), "the entry holding the start moves up to it");
        assert_eq!(c, cache(&[(3, 12), (4, 25)]));
        assert!(c.truncate_from_start(25));
        assert_eq!(c, cache(&[(4, 25)]));
        assert!(!c.truncate_from_start(25));
        assert!(c.truncate_from_start(30));
        assert_eq!(c, cache(&[(4, 30)]));
        assert!(c.truncate_from_end(30));
        assert_eq!(c, LeaderEpochCache::default());
        let mut c = cache(&[(5, 100)]);
        assert!(!c.truncate_from_start(50), "a start below every entry changes nothing");
    }

    #[test]
    fn the_file_format_is_kafkas_and_damage_is_refused() {
        let c = cache(&[(0, 0), (3, 1200)]);
        assert_eq!(c.encode(), b"0\n2\n0 0\n3 1200\n");
        assert_eq!(LeaderEpochCache::parse(&c.encode()).unwrap(), c);
        assert_eq!(LeaderEpochCache::parse(b"0\n0\n").unwrap(), LeaderEpochCache::default());
        for bad in [
            &b""[..],
            b"1\n0\n",
            b"0\n",
            b"0\nx\n",
            b"0\n2\n0 0\n",
            b"0\n1\n0 0\n1 5\n",
            b"0\n1\n0\n",
            b"0\n1\n0 0 0\n",
            b"0\n2\n3 0\n2 5\n",
            b"0\n2\n1 5\n2 5\n",
            b"0\n1\n-1 0\n",
            b"0\n1\n1 x\n",
            b"\xff\xfe",
        ] {
            assert!(
                LeaderEpochCache::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
