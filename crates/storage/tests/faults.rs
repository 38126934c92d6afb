//! The log on [`SimFs`]: injected I/O faults, a full disk, power losses and corruption.
//!
//! What must hold after every fault: the caller got an error (never a wrong answer), the log
//! still reads exactly the batches it acknowledged, and it opens again, crash or not. After a
//! power loss, everything fsynced is there and nothing half-written is visible.

mod common;

use bytes::Bytes;
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use storage::sim::{CrashMode, FaultOp, SimFs};
use storage::{Fs, Log, LogConfig, StorageError};
use wire::records::{BatchBuilder, RecordBatch};
use wire::Compression;

fn batch(first_value: u32, count: u32, value_bytes: usize) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..count {
        b.push(1_000, None, Some(value(first_value + i, value_bytes).as_bytes()), &[]);
    }
    b.build()
}

fn value(n: u32, bytes: usize) -> String {
    format!("{n:0width$}", width = bytes.max(8))
}

/// Every record from `offset` on: (offset, value). Batches must be whole and their CRCs good.
fn read_all(log: &Log, offset: i64) -> Result<Vec<(i64, String)>, StorageError> {
    common::read_records(log, offset, 4096)
}

fn open(fs: &SimFs, config: &LogConfig) -> Log {
    let fs: Arc<dyn Fs> = Arc::new(fs.clone());
    Log::open_on(&fs, Path::new("/data/t-0"), config.clone(), false).expect("the log opens")
}

/// A log on a fresh `SimFs` with `batches` batches of 5 records appended (6 batches fit in a
/// segment of `small_segments()`).
fn filled(batches: usize) -> (SimFs, LogConfig, Log, Vec<(i64, String)>, u32) {
    let fs = SimFs::new();
    let config = small_segments();
    let mut log = open(&fs, &config);
    let (mut model, mut n) = (vec![], 0);
    for _ in 0..batches {
        append(&mut log, &mut model, &mut n).unwrap();
    }
    (fs, config, log, model, n)
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 2_000,
        index_interval_bytes: 200,
        ..LogConfig::default()
    }
}

fn is_errno(e: &StorageError, errno: i32) -> bool {
    matches!(e, StorageError::Io { source, .. } if source.raw_os_error() == Some(errno))
}

/// Appends one batch of 5 records, returning the model's new entries if it was acknowledged.
fn append(log: &mut Log, model: &mut Vec<(i64, String)>, n: &mut u32) -> Result<(), StorageError> {
    append_in(log, model, n, 0)
}

/// [`append`] in leader epoch `epoch`.
fn append_in(log: &mut Log, model: &mut Vec<(i64, String)>, n: &mut u32, epoch: i32) -> Result<(), StorageError> {
    let info = log.append(batch(*n, 5, 40), epoch, 0)?;
    assert_eq!(info.base_offset, model.len() as i64, "offsets continue with no gap");
    for i in 0..5 {
        model.push((info.base_offset + i64::from(i), value(*n + i, 40)));
    }
    *n += 5;
    Ok(())
}

#[test]
fn every_write_fault_is_an_error_and_the_log_stays_whole() {
    let cases = [
        (FaultOp::Write, ".log"),
        (FaultOp::ShortWrite, ".log"),
        // A short write whose clean-up also fails leaves half a batch past the end.
        (FaultOp::SetLen, ".log"),
        // Creating the next segment while rolling.
        (FaultOp::Open, ".log"),
    ];
    for (op, path) in cases {
        let (fs, config, mut log, mut model, mut n) = filled(6);
        if op == FaultOp::SetLen {
            fs.fail(FaultOp::ShortWrite, ".log", 1);
        }
        fs.fail(op, path, 1);
        // Appends until the fault fires (the roll faults need a roll to come).
        let mut failed = 0;
        for _ in 0..20 {
            if let Err(e) = append(&mut log, &mut model, &mut n) {
                assert!(is_errno(&e, libc::EIO), "{op:?}: {e}");
                failed += 1;
            }
        }
        assert_eq!(failed, 1, "{op:?} on {path}: one append fails, the others succeed");
        assert!(fs.faults_fired() >= 1);
        assert_eq!(read_all(&log, 0).unwrap(), model, "{op:?}: reads after the fault");
        // Whatever the fault left on disk, a restart (clean or not) and a power loss recover.
        log.sync().unwrap();
        drop(log);
        let log = open(&fs, &config);
        assert_eq!(read_all(&log, 0).unwrap(), model, "{op:?}: after a restart");
        drop(log);
        fs.crash(CrashMode::DropUnsynced);
        let log = open(&fs, &config);
        assert_eq!(
            read_all(&log, 0).unwrap(),
            model,
            "{op:?}: after a power loss (all was synced)"
        );
    }
}

#[test]
fn a_failed_seal_is_an_error_says_whether_data_may_be_lost_and_runs_again() {
    let cases = [
        (FaultOp::SyncDir, "t-0", true),
        (FaultOp::Open, ".index", false),
        (FaultOp::Write, ".index", false),
        (FaultOp::Sync, ".index", false),
    ];
    for (op, path, data_lost) in cases {
        let (fs, config, mut log, model, _n) = filled(20);
        assert!(log.seal_pending().load(std::sync::atomic::Ordering::Acquire));
        fs.fail(op, path, 1);
        let work = log.take_seal().expect("rolled segments wait for their seal");
        let e = work.run().unwrap_err();
        assert_eq!(e.data_lost, data_lost, "{op:?} on {path}");
        assert_eq!(read_all(&log, 0).unwrap(), model, "{op:?}: reads after a failed seal");
        // The work is still pending; the next run completes it.
        let work = log.take_seal().expect("still pending");
        work.run().unwrap();
        log.sealed(work).unwrap();
        assert!(!log.seal_pending().load(std::sync::atomic::Ordering::Acquire));
        assert_eq!(read_all(&log, 0).unwrap(), model);
        // Sealed segments survive a power loss; only the active one's unsynced tail is lost.
        let active_base = model.len() as i64 - 5 * (20 % 6);
        drop(log);
        fs.crash(CrashMode::DropUnsynced);
        let log = open(&fs, &config);
        assert_eq!(log.log_end_offset(), active_base, "{op:?}");
        assert_eq!(read_all(&log, 0).unwrap(), model[..active_base as usize]);
    }
}

#[test]
fn a_failed_fsync_of_a_rolled_segment_loses_its_pages_and_poisons_it() {
    let (fs, config, log, model, _n) = filled(20);
    // As Linux does: the pages that failed to reach the disk are dropped, and the descriptor
    // that saw the error keeps failing, so nothing can be acknowledged past it by accident.
    fs.fail(FaultOp::Sync, ".log", 1);
    let e = log.take_seal().unwrap().run().unwrap_err();
    assert!(e.data_lost);
    assert!(log.take_seal().unwrap().run().is_err(), "the file stays failed");
    assert!(
        read_all(&log, 0).is_err(),
        "a read of the lost segment is an error, not wrong data"
    );
    // After a restart the log opens and holds a prefix of what was appended.
    drop(log);
    fs.crash(CrashMode::DropUnsynced);
    let log = open(&fs, &config);
    let end = log.log_end_offset() as usize;
    assert_eq!(read_all(&log, 0).unwrap(), model[..end]);
}

#[test]
fn a_roll_waits_for_no_fsync_and_a_power_loss_before_the_seal_keeps_a_prefix() {
    for seed in [1, 7, 99, 1234] {
        let fs = SimFs::new();
        let config = small_segments();
        let mut log = open(&fs, &config);
        let (mut model, mut n) = (vec![], 0);
        // Every fsync fails from here: appends and rolls must not need one.
        fs.fail(FaultOp::Sync, "", u32::MAX);
        fs.fail(FaultOp::SyncDir, "", u32::MAX);
        for _ in 0..20 {
            append(&mut log, &mut model, &mut n).unwrap();
        }
        assert!(log.segment_count() > 2);
        drop(log);
        fs.crash(CrashMode::Torn { seed });
        let log = open(&fs, &config);
        let end = log.log_end_offset() as usize;
        assert_eq!(
            read_all(&log, 0).unwrap(),
            model[..end],
            "a prefix of what was appended"
        );
    }
}

#[test]
fn a_read_fault_is_an_error_and_the_next_read_works() {
    let fs = SimFs::new();
    let mut log = open(&fs, &LogConfig::default());
    let (mut model, mut n) = (vec![], 0);
    append(&mut log, &mut model, &mut n).unwrap();
    fs.fail(FaultOp::Read, ".log", 1);
    assert!(matches!(log.read(0, 1000), Err(ref e) if is_errno(e, libc::EIO)));
    assert_eq!(read_all(&log, 0).unwrap(), model);
}

#[test]
fn a_full_disk_stops_appends_and_they_resume_when_space_returns() {
    let (fs, config, mut log, mut model, mut n) = filled(4);
    fs.set_capacity(Some(fs.used() + 1_000));
    let mut full = 0;
    for _ in 0..30 {
        match append(&mut log, &mut model, &mut n) {
            Ok(()) => {}
            Err(e) => {
                assert!(is_errno(&e, libc::ENOSPC), "{e}");
                full += 1;
            }
        }
        assert_eq!(read_all(&log, 0).unwrap(), model, "acknowledged data stays readable");
    }
    assert!(full >= 20, "the disk filled up: {full} appends refused");
    // Space returns (retention, an operator): appends work again, with no gap in offsets.
    fs.set_capacity(None);
    for _ in 0..10 {
        append(&mut log, &mut model, &mut n).unwrap();
    }
    assert_eq!(read_all(&log, 0).unwrap(), model);
    log.sync().unwrap();
    drop(log);
    fs.crash(CrashMode::DropUnsynced);
    assert_eq!(read_all(&open(&fs, &config), 0).unwrap(), model);
}

#[test]
fn a_power_loss_keeps_exactly_what_was_fsynced() {
    let (fs, config, mut log, mut model, mut n) = filled(30);
    log.sync().unwrap();
    let synced = model.len();
    for _ in 0..3 {
        append(&mut log, &mut model, &mut n).unwrap();
    }
    assert!(log.segment_count() > 1, "the sync covered rolled segments too");
    drop(log);
    fs.crash(CrashMode::DropUnsynced);
    let log = open(&fs, &config);
    assert_eq!(read_all(&log, 0).unwrap(), model[..synced]);
}

#[test]
fn a_corrupt_batch_inside_an_fsynced_segment_is_reported_not_served_or_cut() {
    let (fs, config, mut log, model, _n) = filled(20);
    assert!(log.segment_count() >= 3);
    log.sync().unwrap();
    drop(log);
    // Bit rot in the first (sealed, fsynced) segment: the third batch's magic byte.
    let first = PathBuf::from(format!("/data/t-0/{:020}.log", 0));
    let batch_bytes = batch(0, 5, 40).len();
    let before = fs.contents(&first).unwrap();
    fs.corrupt(&first, 2 * batch_bytes + 16, &[7]);
    let log = open(&fs, &config);
    assert_eq!(fs.contents(&first).unwrap().len(), before.len(), "nothing is cut");
    // The batches before it are served; a read reaching it fails; later segments still read.
    assert_eq!(read_all(&log, 0).unwrap_err().to_string().contains("corrupt"), true);
    let data = log.read(0, 1_000_000).unwrap();
    let served: Vec<_> = RecordBatch::iter_all(data).map(|b| b.unwrap().last_offset()).collect();
    assert_eq!(served, vec![4, 9], "only the two batches before the corruption");
    assert!(matches!(log.read(10, 1000), Err(StorageError::Corrupt { .. })));
    let last = model.len() as i64 - 1;
    assert_eq!(
        read_all(&log, last).unwrap(),
        model[last as usize..],
        "later segments are unaffected"
    );
    // A flipped bit inside a record (covered only by the CRC) in the second segment: the
    // batches before it are served, the damaged one is not.
    drop(log);
    let second = PathBuf::from(format!("/data/t-0/{:020}.log", 30));
    let at = 3 * batch_bytes + batch_bytes - 5;
    let byte = fs.contents(&second).unwrap()[at];
    fs.corrupt(&second, at, &[byte ^ 0x10]);
    let log = open(&fs, &config);
    let served: Vec<_> = RecordBatch::iter_all(log.read(30, 1_000_000).unwrap())
        .map(|b| b.unwrap().last_offset())
        .collect();
    assert_eq!(served, vec![34, 39, 44], "the three batches before the damaged one");
    assert!(matches!(log.read(45, 1000), Err(StorageError::Corrupt { .. })));
}

#[test]
fn retired_segment_files_are_removed_in_the_background_and_after_a_crash() {
    let (fs, config, mut log, model, _n) = filled(20);
    let segments = log.segment_count();
    log.delete_records_before(60).unwrap();
    assert!(log.segment_count() < segments);
    storage::wait_for_deletions();
    let names = fs.list(Path::new("/data/t-0")).unwrap();
    assert!(!names.iter().any(|n| n.ends_with(".deleted")), "{names:?}");
    // A crash between the rename and the removal: the next open removes the leftovers.
    drop(log);
    let stale = PathBuf::from("/data/t-0/00000000000000000007.log.deleted");
    fs.open(&stale, storage::OpenMode::Create).unwrap();
    let log = open(&fs, &config);
    storage::wait_for_deletions();
    assert!(fs.contents(&stale).is_none());
    assert_eq!(log.log_start_offset(), 60);
    assert_eq!(read_all(&log, 60).unwrap(), model[60..]);
}

#[derive(Debug, Clone)]
enum Op {
    Append,
    Sync,
    /// A group-commit fsync (`Log::sync_target`), as acknowledgements under flush.messages use.
    GroupSync,
    /// The background seal of rolled segments.
    Seal,
    /// Arms a fault on the next matching operation.
    Fault(FaultOp),
    Fill,
    Crash(CrashMode),
    Restart,
    DeleteBefore(u8),
    /// Later appends are in a new leader epoch.
    NewEpoch,
    /// A follower's truncation.
    TruncateTo(u8),
}

/// The leader-epoch cache the log's batches imply (from the log start).
fn implied_epochs(log: &Log) -> Vec<storage::EpochEntry> {
    let mut out: Vec<storage::EpochEntry> = vec![];
    let mut offset = log.log_start_offset();
    loop {
        let data = log.read(offset, 1 << 20).expect("read");
        if data.is_empty() {
            return out;
        }
        for b in RecordBatch::iter_all(data) {
            let b = b.expect("whole batches");
            let epoch = b.partition_leader_epoch();
            if epoch >= 0 && out.last().is_none_or(|e| epoch > e.epoch) {
                out.push(storage::EpochEntry {
                    epoch,
                    start_offset: b.base_offset().max(log.log_start_offset()),
                });
            }
            offset = b.last_offset() + 1;
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    let fault = prop_oneof![
        Just(FaultOp::Write),
        Just(FaultOp::ShortWrite),
        Just(FaultOp::Sync),
        Just(FaultOp::SetLen),
        Just(FaultOp::Open),
        Just(FaultOp::SyncDir),
        Just(FaultOp::Read),
    ];
    prop_oneof![
        10 => Just(Op::Append),
        1 => Just(Op::Sync),
        2 => Just(Op::GroupSync),
        2 => Just(Op::Seal),
        3 => fault.prop_map(Op::Fault),
        1 => Just(Op::Fill),
        2 => prop_oneof![Just(CrashMode::DropUnsynced), any::<u64>().prop_map(|seed| CrashMode::Torn { seed })].prop_map(Op::Crash),
        1 => Just(Op::Restart),
        1 => any::<u8>().prop_map(Op::DeleteBefore),
        1 => Just(Op::NewEpoch),
        1 => any::<u8>().prop_map(Op::TruncateTo),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// Random appends, fsyncs, faults, full disks, restarts and power losses against a model.
    #[test]
    fn faults_and_crashes_never_lose_synced_data_or_show_torn_writes(ops in proptest::collection::vec(op(), 1..80)) {
        let fs = SimFs::new();
        let config = small_segments();
        let mut log = open(&fs, &config);
        let mut commit = storage::GroupCommit::new(log.log_end_offset(), 0);
        let (mut model, mut n) = (Vec::<(i64, String)>::new(), 0u32);
        // Records below this count survived an fsync (a sync, or the log's open).
        let mut durable = 0usize;
        // An fsync failed and lost pages: as a broker would, acknowledge nothing more as
        // durable, and expect only a prefix after the next restart.
        let mut failed = false;
        let mut start = 0i64;
        let mut epoch = 0;
        for op in ops {
            let fsync_failures = fs.syncs_failed();
            match op.clone() {
                Op::Append => {
                    let _ = append_in(&mut log, &mut model, &mut n, epoch);
                }
                Op::NewEpoch => epoch += 1,
                Op::TruncateTo(at) => {
                    let target = start + i64::from(at) % (model.len() as i64 - start + 1);
                    match log.truncate_to(target) {
                        Ok(end) => {
                            prop_assert!(end <= target && end >= start);
                            model.truncate(end as usize);
                            durable = durable.min(model.len());
                            commit.truncated_to(end);
                        }
                        Err(StorageError::TruncateBelowStart { .. }) => {}
                        Err(_) => {
                            // Before or after, found by the next open; nothing is trusted
                            // until then.
                            durable = durable.min(target as usize);
                            failed = true;
                        }
                    }
                }
                Op::Sync => {
                    if log.sync().is_ok() && !failed {
                        durable = model.len();
                    }
                }
                Op::GroupSync => {
                    let end = log.log_end_offset();
                    let target = log.sync_target();
                    if commit.sync_to(end, || 0, || target).is_ok() && !failed {
                        durable = model.len();
                    }
                }
                Op::Seal => {
                    if let Some(work) = log.take_seal() {
                        if work.run().is_ok() {
                            log.sealed(work).unwrap();
                        }
                    }
                }
                Op::Fault(f) => fs.fail(f, "", 1),
                Op::Fill => fs.set_capacity(Some(fs.used() + 500)),
                Op::Crash(_) | Op::Restart => {
                    drop(log);
                    if let Op::Crash(mode) = op {
                        fs.crash(mode);
                    }
                    fs.clear_faults();
                    fs.set_capacity(None);
                    log = open(&fs, &config);
                    commit = storage::GroupCommit::new(log.log_end_offset(), 0);
                    let end = log.log_end_offset();
                    if matches!(op, Op::Restart) && !failed {
                        prop_assert_eq!(end, model.len() as i64, "a process restart loses nothing");
                    }
                    prop_assert!(end as usize >= durable, "fsynced records survive: end {} < {}", end, durable);
                    prop_assert!(end as usize <= model.len(), "nothing unacknowledged appears");
                    model.truncate(end as usize);
                    durable = model.len();
                    failed = false;
                }
                Op::DeleteBefore(at) => {
                    let target = i64::from(at) % (model.len() as i64 + 1);
                    if let Ok(s) = log.delete_records_before(target) {
                        start = s;
                    }
                }
            }
            failed |= fs.syncs_failed() > fsync_failures;
            if matches!(op, Op::Crash(_) | Op::Restart) {
                // A DeleteRecords that failed after its checkpoint landed may count after all.
                prop_assert!(log.log_start_offset() >= start);
                start = log.log_start_offset();
            }
            prop_assert_eq!(log.log_start_offset(), start);
            if matches!(op, Op::Fault(_)) || failed {
                continue; // armed for the next operation, or reads may fail until a restart
            }
            fs.clear_faults();
            let got = read_all(&log, start);
            prop_assert!(got.is_ok(), "{:?}", got);
            prop_assert_eq!(&got.unwrap()[..], &model[start as usize..]);
            prop_assert_eq!(log.epoch_entries(), implied_epochs(&log), "after {:?}", op);
        }
    }
}
