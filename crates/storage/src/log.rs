//! A partition's log: an ordered set of segments, the log start and end offsets, appends that
//! assign offsets, and reads by offset.
//!
//! Invariants (asserted, also in release builds):
//! - offsets only grow: each batch starts at the log end offset;
//! - segments are contiguous and sorted by base offset; only the last one is written to.

use crate::segment::{self, Segment};
use crate::StorageError;
use bytes::{Bytes, BytesMut};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use wire::records::{self, RecordBatch};

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `segment.bytes`: roll to a new segment when the active one would grow past this.
    pub segment_bytes: u64,
    /// `index.interval.bytes`: bytes of batches between offset index entries.
    pub index_interval_bytes: u64,
    /// `max.message.bytes`: the largest batch accepted.
    pub batch_bytes_max: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            index_interval_bytes: 4096,
            batch_bytes_max: 1_048_588,
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
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
}

impl Log {
    /// Opens the log in `dir` (creating it if need be), recovering the last segment: its
    /// batches are checked (framing and CRC) and a torn or corrupt tail is truncated.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log, StorageError> {
        std::fs::create_dir_all(dir).map_err(|source| StorageError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut bases = vec![];
        let entries = std::fs::read_dir(dir).map_err(|source| StorageError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        for e in entries {
            let e = e.map_err(|source| StorageError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(stem) = name.strip_suffix(".log") {
                if let Ok(base) = stem.parse::<i64>() {
                    bases.push(base);
                }
            }
        }
        bases.sort_unstable();
        let mut segments = BTreeMap::new();
        for (i, base) in bases.iter().enumerate() {
            let last = i + 1 == bases.len();
            let (seg, truncated) = Segment::open_and_recover(dir, *base, config.index_interval_bytes, last)?;
            if truncated > 0 {
                tracing::warn!(dir = %dir.display(), segment = base, bytes = truncated, "truncated a torn or corrupt tail");
            }
            segments.insert(*base, seg);
        }
        if segments.is_empty() {
            segments.insert(0, Segment::create(dir, 0, config.index_interval_bytes)?);
        }
        let log_start_offset = *segments.keys().next().unwrap_or(&0);
        Ok(Log {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
        })
    }

    fn active(&self) -> &Segment {
        self.segments.values().next_back().expect("a log always has a segment")
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

    /// Appends one record batch as received: checks it, stamps base offset and leader epoch
    /// (outside the CRC), and writes it. The caller has validated the records themselves.
    pub fn append(&mut self, batch: Bytes, leader_epoch: i32) -> Result<AppendInfo, StorageError> {
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
        let last_offset = base_offset + i64::from(parsed.last_offset_delta());
        let max_timestamp = parsed.max_timestamp();
        if self.active().size() + batch.len() as u64 > self.config.segment_bytes && !self.active().is_empty() {
            self.roll(base_offset)?;
        }
        let mut stamped = BytesMut::from(&batch[..]);
        records::stamp(&mut stamped, base_offset, leader_epoch);
        let active = self
            .segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment");
        active.append(&stamped, base_offset, last_offset, max_timestamp)?;
        assert_eq!(
            self.log_end_offset(),
            last_offset + 1,
            "log end offset must follow the appended batch"
        );
        Ok(AppendInfo {
            base_offset,
            last_offset,
        })
    }

    fn roll(&mut self, base_offset: i64) -> Result<(), StorageError> {
        self.active().sync()?;
        let seg = Segment::create(&self.dir, base_offset, self.config.index_interval_bytes)?;
        tracing::debug!(dir = %self.dir.display(), base_offset, "rolled a new segment");
        self.segments.insert(base_offset, seg);
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

    /// Makes everything appended so far durable.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.active().sync()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn segment_file(&self, base_offset: i64) -> PathBuf {
        self.dir.join(segment::file_name(base_offset, "log"))
    }
}
