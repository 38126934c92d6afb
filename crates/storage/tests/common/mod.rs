//! Helpers shared by the storage integration tests.

#![allow(dead_code)] // each test file uses some of these

use bytes::Bytes;
use std::path::Path;
use std::sync::Arc;
use storage::sim::SimFs;
use storage::{Fs, Log, LogConfig, StorageError};
use wire::records::{BatchBuilder, RecordBatch};
use wire::Compression;

/// The partition directory of the small logs below.
pub const DIR: &str = "/data/t-0";

/// A batch of five records whose values are `n`..`n + 5`, zero-padded to 40 bytes.
pub fn small_batch(n: u32) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..5 {
        b.push(1_000, None, Some(format!("{:040}", n + i).as_bytes()), &[]);
    }
    b.build()
}

/// Segments of 2,000 bytes (a few batches each), an index entry every 200 bytes.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 2_000,
        index_interval_bytes: 200,
        ..LogConfig::default()
    }
}

/// Opens the log in `DIR` on `fs` with `small_config`.
pub fn open_small(fs: &SimFs, clean: bool) -> Log {
    let fs: Arc<dyn Fs> = Arc::new(fs.clone());
    Log::open_on(&fs, Path::new(DIR), small_config(), clean).expect("the log opens")
}

/// Every record from `offset` on, read `max_bytes` at a time: (offset, value). Batches must be
/// whole and their CRCs good.
pub fn read_records(log: &Log, mut offset: i64, max_bytes: usize) -> Result<Vec<(i64, String)>, StorageError> {
    let mut out = vec![];
    loop {
        let data = log.read(offset, max_bytes)?;
        if data.is_empty() {
            return Ok(out);
        }
        for b in RecordBatch::iter_all(data) {
            let b = b.expect("whole batches");
            b.verify_crc().expect("crc");
            for r in b.records(1 << 20).expect("records") {
                let r = r.expect("record");
                if r.offset >= offset {
                    let value = r.value.expect("a value").to_vec();
                    out.push((r.offset, String::from_utf8(value).expect("utf-8")));
                }
            }
            offset = b.last_offset() + 1;
        }
    }
}
