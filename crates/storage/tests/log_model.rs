//! The log against an in-memory model: random appends, reads, restarts and torn tails.

mod common;

use bytes::Bytes;
use proptest::prelude::*;
use storage::{Log, LogConfig};
use wire::records::BatchBuilder;
use wire::Compression;

fn batch(first_value: u32, count: u32, value_bytes: usize) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..count {
        let v = format!("{:0width$}", first_value + i, width = value_bytes.max(8));
        b.push(1_000 + i64::from(i), Some(b"k"), Some(v.as_bytes()), &[]);
    }
    b.build()
}

/// Every record value readable from `offset` on, in order.
fn read_values(log: &Log, offset: i64, max_bytes: usize) -> Vec<(i64, String)> {
    common::read_records(log, offset, max_bytes).expect("read")
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        count: u32,
        value_bytes: usize,
    },
    Read {
        at: u8,
        max_bytes: usize,
    },
    Reopen,
    /// Sync, then reopen trusting the indexes (a clean shutdown).
    CleanReopen,
    /// Reopen trusting the indexes without syncing first: a marker that lies must still give
    /// a correct log (stale or missing indexes are detected and the segment recovered).
    UnsyncedCleanReopen,
    TearTail {
        bytes: u16,
    },
    DeleteBefore {
        at: u8,
    },
    RetainBytes {
        bytes: u64,
    },
    /// A follower's truncation (`Log::truncate_to`).
    TruncateTo {
        at: u8,
    },
    /// A follower's append of a batch the leader stamped, maybe in a new epoch.
    Replicate {
        count: u32,
        value_bytes: usize,
        new_epoch: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u32..20, 8usize..300).prop_map(|(count, value_bytes)| Op::Append { count, value_bytes }),
        3 => (any::<u8>(), 1usize..4000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => Just(Op::Reopen),
        1 => Just(Op::CleanReopen),
        1 => Just(Op::UnsyncedCleanReopen),
        1 => (1u16..200).prop_map(|bytes| Op::TearTail { bytes }),
        1 => any::<u8>().prop_map(|at| Op::DeleteBefore { at }),
        1 => (0u64..30_000).prop_map(|bytes| Op::RetainBytes { bytes }),
        1 => any::<u8>().prop_map(|at| Op::TruncateTo { at }),
        3 => (1u32..20, 8usize..300, any::<bool>()).prop_map(|(count, value_bytes, new_epoch)| Op::Replicate { count, value_bytes, new_epoch }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn log_matches_the_model(ops in proptest::collection::vec(op(), 1..60), segment_bytes in 500u64..20_000) {
        let dir = tempdir();
        let config = LogConfig { segment_bytes, index_interval_bytes: 256, ..LogConfig::default() };
        let mut log = Log::open(&dir, config.clone()).unwrap();
        // The model: (offset, value) of every record, and batch boundaries for tearing.
        let mut model: Vec<(i64, String)> = vec![];
        // Each batch's base offset and leader epoch.
        let mut batch_starts: Vec<(i64, i32)> = vec![];
        let mut epoch = 3;
        let mut next_value = 0u32;
        // The log start offset: records below it are gone.
        let mut start = 0i64;
        for op in ops {
            match op.clone() {
                Op::Append { count, value_bytes } => {
                    let info = log.append(batch(next_value, count, value_bytes), epoch, 0).unwrap();
                    prop_assert_eq!(info.base_offset, model.len() as i64);
                    prop_assert_eq!(info.last_offset, info.base_offset + i64::from(count) - 1);
                    batch_starts.push((info.base_offset, epoch));
                    for i in 0..count {
                        let v = format!("{:0width$}", next_value + i, width = value_bytes.max(8));
                        model.push((info.base_offset + i64::from(i), v));
                    }
                    next_value += count;
                }
                Op::Read { at, max_bytes } => {
                    let len = model.len() as i64;
                    let offset = start + i64::from(at) % (len - start + 1);
                    let got = read_values(&log, offset, max_bytes);
                    prop_assert_eq!(&got[..], &model[offset as usize..]);
                    if start > 0 {
                        prop_assert!(log.read(start - 1, max_bytes).is_err(), "read below the log start");
                    }
                }
                Op::Reopen => {
                    drop(log);
                    log = Log::open(&dir, config.clone()).unwrap();
                    prop_assert_eq!(log.log_end_offset(), model.len() as i64);
                }
                Op::CleanReopen | Op::UnsyncedCleanReopen => {
                    if matches!(op, Op::CleanReopen) {
                        log.sync().unwrap();
                    }
                    let segments = log.segment_count();
                    drop(log);
                    log = Log::open_after_clean_shutdown(&dir, config.clone()).unwrap();
                    prop_assert_eq!(log.log_end_offset(), model.len() as i64);
                    prop_assert_eq!(log.segment_count(), segments);
                }
                Op::TearTail { bytes } => {
                    // A crash mid-write: the last batch loses its tail and must disappear whole.
                    let Some(&(last_start, _)) = batch_starts.last() else { continue };
                    drop(log);
                    let newest = std::fs::read_dir(&dir).unwrap()
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "log"))
                        .max().unwrap();
                    let len = std::fs::metadata(&newest).unwrap().len();
                    if len == 0 {
                        log = Log::open(&dir, config.clone()).unwrap();
                        continue;
                    }
                    let f = std::fs::OpenOptions::new().write(true).open(&newest).unwrap();
                    f.set_len(len.saturating_sub(u64::from(bytes))).unwrap();
                    log = Log::open(&dir, config.clone()).unwrap();
                    batch_starts.pop();
                    // Tearing more than the last batch removes earlier ones of that segment too.
                    // If the tear reaches below the log start, the log restarts empty there:
                    // offsets are never reused. Model entries below the start are never read.
                    let end = log.log_end_offset();
                    prop_assert!(end <= last_start.max(start));
                    prop_assert!(end >= start);
                    model.truncate(end as usize);
                    batch_starts.retain(|s| s.0 < end);
                }
                Op::DeleteBefore { at } => {
                    let len = model.len() as i64;
                    let target = i64::from(at) % (len + 1);
                    let new_start = log.delete_records_before(target).unwrap();
                    prop_assert_eq!(new_start, start.max(target));
                    start = new_start;
                }
                Op::RetainBytes { bytes } => {
                    // First drop segments already below the start (after DeleteRecords).
                    log.enforce_retention(0, i64::MAX, None, None).unwrap();
                    let before = log.size_bytes();
                    log.enforce_retention(0, i64::MAX, None, Some(bytes)).unwrap();
                    // As Kafka: at least `bytes` stay, and no more than one segment's worth over.
                    let after = log.size_bytes();
                    prop_assert!(after >= bytes.min(before), "kept {} of {} under {}", after, before, bytes);
                    prop_assert!(after < bytes + segment_bytes.max(8_000), "kept {} of {} under {}", after, before, bytes);
                    prop_assert!(log.log_start_offset() >= start, "the log start offset only grows");
                    start = log.log_start_offset();
                }
                Op::TruncateTo { at } => {
                    let len = model.len() as i64;
                    let target = start + i64::from(at) % (len - start + 1);
                    // The batch holding the target goes whole.
                    let cut = batch_starts.iter().rev().map(|s| s.0).find(|b| *b <= target && target < len).unwrap_or(len);
                    match log.truncate_to(target) {
                        Ok(end) => {
                            prop_assert!(cut >= start);
                            prop_assert_eq!(end, cut);
                            model.truncate(cut as usize);
                            batch_starts.retain(|s| s.0 < cut);
                        }
                        Err(storage::StorageError::TruncateBelowStart { batch_base, .. }) => {
                            prop_assert!(cut < start);
                            prop_assert_eq!(batch_base, cut);
                        }
                        Err(e) => prop_assert!(false, "{}", e),
                    }
                }
                Op::Replicate { count, value_bytes, new_epoch } => {
                    if new_epoch {
                        epoch += 1;
                    }
                    let base = model.len() as i64;
                    let mut raw = bytes::BytesMut::from(&batch(next_value, count, value_bytes)[..]);
                    wire::records::stamp(&mut raw, base, epoch);
                    let info = log.append_replicated(raw.freeze(), 0).unwrap();
                    prop_assert_eq!((info.base_offset, info.last_offset), (base, base + i64::from(count) - 1));
                    batch_starts.push((base, epoch));
                    for i in 0..count {
                        let v = format!("{:0width$}", next_value + i, width = value_bytes.max(8));
                        model.push((base + i64::from(i), v));
                    }
                    next_value += count;
                }
            }
            // The epoch cache is what the live batches say.
            let len = model.len() as i64;
            let mut implied: Vec<storage::EpochEntry> = vec![];
            for (i, &(b, e)) in batch_starts.iter().enumerate() {
                let last = batch_starts.get(i + 1).map_or(len, |n| n.0) - 1;
                if last >= start && implied.last().is_none_or(|x| e > x.epoch) {
                    implied.push(storage::EpochEntry { epoch: e, start_offset: b.max(start) });
                }
            }
            prop_assert_eq!(log.epoch_entries(), implied, "after {:?}", op);
            prop_assert_eq!(log.log_end_offset(), model.len() as i64);
            prop_assert_eq!(log.log_start_offset(), start);
        }
        let got = read_values(&log, start, 1 << 16);
        prop_assert_eq!(&got[..], &model[start as usize..]);
        drop(log);
        let log = Log::open(&dir, config).unwrap();
        prop_assert_eq!(log.log_start_offset(), start, "the log start offset survives a restart");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn reading_outside_the_log_is_an_error_and_the_end_is_empty() {
    let dir = tempdir();
    let mut log = Log::open(&dir, LogConfig::default()).unwrap();
    log.append(batch(0, 5, 10), 0, 0).unwrap();
    assert!(log.read(5, 100).unwrap().is_empty());
    assert!(matches!(
        log.read(6, 100),
        Err(storage::StorageError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        log.read(-1, 100),
        Err(storage::StorageError::OffsetOutOfRange { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_batch_larger_than_max_bytes_is_still_returned_whole() {
    let dir = tempdir();
    let mut log = Log::open(&dir, LogConfig::default()).unwrap();
    let big = batch(0, 10, 2000);
    let size = big.len();
    log.append(big, 0, 0).unwrap();
    log.append(batch(10, 1, 10), 0, 0).unwrap();
    assert_eq!(log.read(3, 100).unwrap().len(), size);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupt_and_oversized_batches_are_refused() {
    let dir = tempdir();
    let mut log = Log::open(
        &dir,
        LogConfig {
            batch_bytes_max: 1000,
            ..LogConfig::default()
        },
    )
    .unwrap();
    assert!(matches!(
        log.append(batch(0, 10, 200), 0, 0),
        Err(storage::StorageError::BatchTooLarge { .. })
    ));
    let mut bad = bytes::BytesMut::from(&batch(0, 1, 10)[..]);
    let n = bad.len();
    bad[n - 3] ^= 1;
    assert!(matches!(
        log.append(bad.freeze(), 0, 0),
        Err(storage::StorageError::InvalidBatch(_))
    ));
    assert_eq!(log.log_end_offset(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn time_retention_deletes_only_expired_whole_segments() {
    let dir = tempdir();
    let mut log = Log::open(
        &dir,
        LogConfig {
            segment_bytes: 300,
            ..LogConfig::default()
        },
    )
    .unwrap();
    for i in 0..10 {
        log.append(batch(i, 1, 100), 0, 0).unwrap();
    }
    let segments = log.segment_count();
    assert!(segments > 3, "{segments} segments");
    // Every record has a timestamp near 1000: at now=1000+50 with 10 ms retention, every
    // segment has expired, the active one too (as in Kafka, which rolls an empty one first)…
    // but not the records above the high watermark.
    assert_eq!(log.enforce_retention(1_050, 9, Some(10), None).unwrap(), segments - 1);
    assert_eq!(log.log_start_offset(), log.log_end_offset() - 1);
    assert_eq!(log.enforce_retention(1_050, 10, Some(10), None).unwrap(), 1);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), log.log_end_offset());
    assert_eq!(log.log_end_offset(), 10, "offsets continue");
    assert!(log.read(10, 1000).unwrap().is_empty());
    // Nothing expires under a long retention.
    log.append(batch(10, 1, 100), 0, 0).unwrap();
    assert_eq!(log.enforce_retention(1_050, 11, Some(1_000_000), None).unwrap(), 0);
    assert_eq!(log.log_start_offset(), 10);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_clean_shutdown_skips_the_scan_and_a_crash_does_not() {
    let dir = tempdir();
    let config = LogConfig {
        index_interval_bytes: 1000,
        ..LogConfig::default()
    };
    let mut log = Log::open(&dir, config.clone()).unwrap();
    for i in 0..20 {
        log.append(batch(i * 5, 5, 100), 0, 0).unwrap();
    }
    log.sync().unwrap();
    drop(log);
    // Damage a record byte of batch 10 (its CRC no longer holds; its framing does).
    let path = dir.join(format!("{:020}.log", 0));
    let mut data = std::fs::read(&path).unwrap();
    let batch_len = data.len() / 20;
    data[10 * batch_len + 100] ^= 0xff;
    std::fs::write(&path, &data).unwrap();
    // Trusted after a clean shutdown: nothing is re-read, the end stays.
    let log = Log::open_after_clean_shutdown(&dir, config.clone()).unwrap();
    assert_eq!(log.log_end_offset(), 100);
    assert_eq!(
        log.offset_for_timestamp(1_003).unwrap(),
        Some((3, 1_003)),
        "the time index came back"
    );
    drop(log);
    // After a crash the last segment's CRCs are checked: the log ends before batch 10.
    let log = Log::open(&dir, config).unwrap();
    assert_eq!(log.log_end_offset(), 50);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn batch_at(timestamp: i64) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    b.push(timestamp, None, Some(b"v"), &[]);
    b.build()
}

#[test]
fn segment_ms_rolls_by_record_time_or_by_the_clock_without_timestamps() {
    let dir = tempdir();
    let config = LogConfig {
        segment_ms: Some(100),
        ..LogConfig::default()
    };
    let mut log = Log::open(&dir, config.clone()).unwrap();
    // Measured from the segment's first batch timestamp to the new batch's, not by the clock.
    log.append(batch_at(1_000), 0, 0).unwrap();
    log.append(batch_at(1_100), 0, 999_999).unwrap();
    assert_eq!(log.segment_count(), 1, "exactly segment.ms apart does not roll");
    log.append(batch_at(1_101), 0, 0).unwrap();
    assert_eq!(log.segment_count(), 2, "past segment.ms rolls");
    log.append(batch_at(1_150), 0, 0).unwrap();
    assert_eq!(log.segment_count(), 2);
    // Without timestamps the clock since the segment opened decides.
    log.append(batch_at(-1), 0, 5_000).unwrap();
    log.append(batch_at(-1), 0, 5_050).unwrap();
    assert_eq!(
        log.segment_count(),
        3,
        "the segment rolled at clock 0 is 5 s old at the first append without a timestamp"
    );
    log.append(batch_at(-1), 0, 5_100).unwrap();
    assert_eq!(log.segment_count(), 3);
    log.append(batch_at(-1), 0, 5_200).unwrap();
    assert_eq!(log.segment_count(), 4);
    drop(log);
    // After a restart the first batch's timestamp still counts.
    let mut log = Log::open(&dir, config).unwrap();
    log.append(batch_at(-1), 0, 9_000).unwrap();
    assert_eq!(
        log.segment_count(),
        4,
        "an opened segment's clock starts at its first append"
    );
    assert_eq!(log.log_end_offset(), 9);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn timestamps_find_the_first_record_at_or_after_them() {
    let dir = tempdir();
    let mut log = Log::open(
        &dir,
        LogConfig {
            segment_bytes: 400,
            index_interval_bytes: 100,
            ..LogConfig::default()
        },
    )
    .unwrap();
    // Batch i holds records at timestamps 10*i+1 .. 10*i+5 (offsets 5i .. 5i+4), out of order
    // inside the batch to check that the lookup reads records, not just batch bounds.
    for i in 0..20i64 {
        let mut b = BatchBuilder::new(if i % 2 == 0 {
            Compression::Lz4
        } else {
            Compression::None
        });
        for ts in [3, 1, 2, 5, 4] {
            b.push(10 * i + ts, None, Some(b"v"), &[]);
        }
        log.append(b.build(), 0, 0).unwrap();
    }
    assert!(log.segment_count() > 2);
    assert_eq!(log.offset_for_timestamp(i64::MIN).unwrap(), Some((0, 3)));
    assert_eq!(
        log.offset_for_timestamp(54).unwrap(),
        Some((28, 55)),
        "batch 5: ts 53,51,52,55 → offset 28"
    );
    assert_eq!(
        log.offset_for_timestamp(51).unwrap(),
        Some((25, 53)),
        "first record with ts >= 51 is the first"
    );
    assert_eq!(log.offset_for_timestamp(196).unwrap(), None);
    log.delete_records_before(27).unwrap();
    assert_eq!(
        log.offset_for_timestamp(0).unwrap(),
        Some((27, 52)),
        "records below the start are gone"
    );
    drop(log);
    let log = Log::open(
        &dir,
        LogConfig {
            segment_bytes: 400,
            index_interval_bytes: 100,
            ..LogConfig::default()
        },
    )
    .unwrap();
    assert_eq!(
        log.offset_for_timestamp(54).unwrap(),
        Some((28, 55)),
        "after a restart too"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn max_timestamp_is_the_earliest_record_holding_it() {
    let dir = tempdir();
    let config = LogConfig {
        segment_bytes: 400,
        index_interval_bytes: 100,
        ..LogConfig::default()
    };
    let mut log = Log::open(&dir, config.clone()).unwrap();
    assert_eq!(log.max_timestamp_record().unwrap(), None, "an empty log has none");
    // Batch i (offsets 3i..3i+2) has timestamps 100+i, 50, 100+i: the max is in batch 7, and
    // batch 12 repeats it (the earlier one wins).
    for i in 0..20i64 {
        let mut b = BatchBuilder::new(if i % 3 == 0 {
            Compression::Zstd
        } else {
            Compression::None
        });
        let top = match i {
            7 | 12 => 500,
            _ => 100 + i,
        };
        for ts in [50, top, top] {
            b.push(ts, None, Some(b"v"), &[]);
        }
        log.append(b.build(), 0, 0).unwrap();
    }
    assert!(log.segment_count() > 3);
    assert_eq!(log.max_timestamp_record().unwrap(), Some((500, 22)));
    // Deleting past it inside its segment leaves batch 12's copy.
    log.delete_records_before(24).unwrap();
    assert_eq!(log.max_timestamp_record().unwrap(), Some((500, 37)));
    log.delete_records_before(39).unwrap();
    assert_eq!(log.max_timestamp_record().unwrap(), Some((119, 58)));
    drop(log);
    let log = Log::open(&dir, config).unwrap();
    assert_eq!(
        log.max_timestamp_record().unwrap(),
        Some((119, 58)),
        "after a restart too"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "sluice-log-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}
