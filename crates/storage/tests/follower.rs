//! Storage for followers: the leader-epoch cache, truncation, and appends of batches that
//! already carry their offsets and epochs — on `SimFs`, with power losses at every step.

mod common;

use bytes::{Bytes, BytesMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use storage::sim::{CrashMode, SimFs};
use storage::{EpochEntry, Fs, Log, LogConfig, LEADER_EPOCH_CHECKPOINT};
use wire::records::{self, BatchBuilder, RecordBatch};
use wire::Compression;

const DIR: &str = "/data/t-0";

fn batch(n: u32) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..5 {
        b.push(1_000, None, Some(format!("{:040}", n + i).as_bytes()), &[]);
    }
    b.build()
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2_000,
        index_interval_bytes: 200,
        ..LogConfig::default()
    }
}

fn open(fs: &SimFs, clean: bool) -> Log {
    let fs: Arc<dyn Fs> = Arc::new(fs.clone());
    Log::open_on(&fs, Path::new(DIR), config(), clean).expect("the log opens")
}

fn checkpoint() -> PathBuf {
    Path::new(DIR).join(LEADER_EPOCH_CHECKPOINT)
}

fn entries(list: &[(i32, i64)]) -> Vec<EpochEntry> {
    list.iter()
        .map(|&(epoch, start_offset)| EpochEntry { epoch, start_offset })
        .collect()
}

/// Every batch from the log start: (base offset, last offset, epoch), CRCs checked, offsets
/// continuous.
fn batches(log: &Log) -> Vec<(i64, i64, i32)> {
    let mut out = vec![];
    let mut offset = log.log_start_offset();
    loop {
        let data = log.read(offset, 1 << 20).expect("read");
        if data.is_empty() {
            return out;
        }
        for b in RecordBatch::iter_all(data) {
            let b = b.expect("whole batches");
            b.verify_crc().expect("crc");
            if let Some(&(_, last, _)) = out.last() {
                assert_eq!(b.base_offset(), last + 1, "offsets continue");
            }
            out.push((b.base_offset(), b.last_offset(), b.partition_leader_epoch()));
            offset = b.last_offset() + 1;
        }
    }
}

/// The epoch cache the batches imply: each higher epoch's first offset (from the log start).
fn implied_epochs(log: &Log) -> Vec<EpochEntry> {
    let mut out: Vec<EpochEntry> = vec![];
    for (base, _, epoch) in batches(log) {
        if epoch >= 0 && out.last().is_none_or(|e| epoch > e.epoch) {
            out.push(EpochEntry {
                epoch,
                start_offset: base.max(log.log_start_offset()),
            });
        }
    }
    out
}

/// A synced log of 20 batches (100 records) over several segments, epochs 0, 2 and 5 starting
/// at offsets 0, 30 and 70.
fn filled() -> (SimFs, Log) {
    let fs = SimFs::new();
    let mut log = open(&fs, false);
    for i in 0..20 {
        let epoch = match i {
            0..6 => 0,
            6..14 => 2,
            _ => 5,
        };
        log.append(batch(i * 5), epoch, 0).unwrap();
    }
    log.sync().unwrap();
    (fs, log)
}

#[test]
fn leader_appends_fill_the_epoch_cache_and_it_survives_restarts_and_crashes() {
    let (fs, mut log) = filled();
    let want = entries(&[(0, 0), (2, 30), (5, 70)]);
    assert_eq!(log.epoch_entries(), want);
    assert_eq!(log.latest_epoch(), Some(5));
    assert_eq!(log.end_offset_for_epoch(2), (2, 70));
    assert_eq!(log.end_offset_for_epoch(4), (2, 70));
    assert_eq!(log.end_offset_for_epoch(5), (5, 100));
    assert!(matches!(
        log.append(batch(100), 4, 0),
        Err(storage::StorageError::EpochRegression {
            epoch: 4,
            latest: 5,
            ..
        })
    ));
    let text = String::from_utf8(fs.contents(&checkpoint()).expect("written by the sync")).unwrap();
    assert_eq!(text, "0\n3\n0 0\n2 30\n5 70\n", "Kafka's format");
    drop(log);
    for clean in [true, false] {
        assert_eq!(open(&fs, clean).epoch_entries(), want, "clean={clean}");
    }
    // A new epoch not yet synced: a power loss loses its batch and its entry.
    let mut log = open(&fs, false);
    log.append(batch(100), 7, 0).unwrap();
    assert_eq!(log.latest_epoch(), Some(7));
    drop(log);
    fs.crash(CrashMode::DropUnsynced);
    let log = open(&fs, false);
    assert_eq!(log.epoch_entries(), want);
    assert_eq!(log.log_end_offset(), 100);
}

#[test]
fn a_missing_stale_or_damaged_checkpoint_is_rebuilt_from_the_log() {
    let (fs, log) = filled();
    drop(log);
    let want = entries(&[(0, 0), (2, 30), (5, 70)]);
    let cases: [&[u8]; 5] = [
        b"",
        b"garbage",
        b"0\n1\n0 0\n",
        b"0\n3\n0 0\n2 35\n5 70\n",
        b"0\n4\n0 0\n2 30\n5 70\n9 90\n",
    ];
    for text in cases {
        for clean in [true, false] {
            let f = fs.open(&checkpoint(), storage::OpenMode::Truncate).unwrap();
            f.write_all_at(text, 0).unwrap();
            f.sync_data().unwrap();
            let mut log = open(&fs, clean);
            assert_eq!(
                log.epoch_entries(),
                want,
                "{:?} clean={clean}",
                String::from_utf8_lossy(text)
            );
            log.sync().unwrap();
            assert_eq!(
                fs.contents(&checkpoint()).unwrap(),
                b"0\n3\n0 0\n2 30\n5 70\n",
                "rewritten"
            );
        }
    }
    fs.remove(&checkpoint()).unwrap();
    assert_eq!(open(&fs, true).epoch_entries(), want, "missing");
}

#[test]
fn the_log_start_moving_cuts_the_epoch_cache() {
    let (fs, mut log) = filled();
    log.delete_records_before(42).unwrap();
    assert_eq!(log.epoch_entries(), entries(&[(2, 42), (5, 70)]));
    log.delete_records_before(80).unwrap();
    assert_eq!(log.epoch_entries(), entries(&[(5, 80)]));
    drop(log);
    for clean in [false, true] {
        let log = open(&fs, clean);
        assert_eq!(log.epoch_entries(), entries(&[(5, 80)]), "clean={clean}");
        assert_eq!(log.epoch_entries(), implied_epochs(&log));
    }
    // Retention takes the whole log: no batch is left, so no entry either.
    let mut log = open(&fs, false);
    log.enforce_retention(0, i64::MAX, None, Some(0)).unwrap();
    assert_eq!(log.log_start_offset(), 100);
    assert_eq!(log.epoch_entries(), vec![]);
    drop(log);
    assert_eq!(open(&fs, false).epoch_entries(), vec![]);
}
