//! Storage for followers: the leader-epoch cache, truncation, and appends of batches that
//! already carry their offsets and epochs — on `SimFs`, with power losses at every step.

mod common;

use bytes::{Bytes, BytesMut};
use std::path::{Path, PathBuf};
use storage::sim::{CrashMode, SimFs};
use storage::{EpochEntry, Fs, Log, LEADER_EPOCH_CHECKPOINT};
use wire::records::{self, RecordBatch};

use common::{open_small as open, small_batch as batch, DIR};

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

/// The batches of `before` that lie wholly below `end`.
fn below(before: &[(i64, i64, i32)], end: i64) -> Vec<(i64, i64, i32)> {
    before.iter().copied().filter(|b| b.1 < end).collect()
}

#[test]
fn truncation_cuts_at_a_batch_boundary_and_moves_the_end_back() {
    let (fs, mut log) = filled();
    let before = batches(&log);
    assert!(log.segment_count() >= 3);
    // Inside a batch: the batch goes whole, the end is its base.
    assert_eq!(log.truncate_to(73).unwrap(), 70);
    assert_eq!(batches(&log), below(&before, 70));
    assert_eq!(log.epoch_entries(), entries(&[(0, 0), (2, 30)]));
    assert_eq!(log.end_offset_for_epoch(2), (2, 70));
    // At or past the end: nothing happens.
    assert_eq!(log.truncate_to(70).unwrap(), 70);
    assert_eq!(log.truncate_to(1_000).unwrap(), 70);
    // The log goes on at the new end, and the cut survives a restart and a power loss.
    assert_eq!(log.append(batch(500), 3, 0).unwrap().base_offset, 70);
    assert_eq!(log.epoch_entries(), entries(&[(0, 0), (2, 30), (3, 70)]));
    let now = batches(&log);
    log.sync().unwrap();
    drop(log);
    fs.crash(CrashMode::DropUnsynced);
    let mut log = open(&fs, false);
    assert_eq!(batches(&log), now);
    assert_eq!(log.epoch_entries(), implied_epochs(&log));
    // Below the log start is refused, and so is a cut whose batch starts below it.
    log.delete_records_before(12).unwrap();
    assert!(matches!(
        log.truncate_to(11),
        Err(storage::StorageError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        log.truncate_to(13),
        Err(storage::StorageError::TruncateBelowStart { batch_base: 10, .. })
    ));
    // To exactly a batch boundary at the start: the log is empty there.
    log.delete_records_before(15).unwrap();
    assert_eq!(log.truncate_to(15).unwrap(), 15);
    assert_eq!(batches(&log), vec![]);
    assert_eq!(log.epoch_entries(), vec![]);
    assert_eq!(log.append(batch(600), 4, 0).unwrap().base_offset, 15);
    drop(log);
    let log = open(&fs, false);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (15, 20));
    assert_eq!(log.epoch_entries(), entries(&[(4, 15)]));
}

/// Runs `op` on a fresh [`filled`] log with a power loss after each of its fsyncs in turn
/// (and once with none), then checks that the reopened log is `before` or the state `op`
/// leads to, whole and with an epoch cache that fits its batches. Returns the fault points.
fn crash_at_every_step(op: impl Fn(&mut Log) -> Result<(), storage::StorageError>) -> u64 {
    crash_at_every_step_with(true, op)
}

/// [`crash_at_every_step`]; when not `atomic`, any state from `before` to `after` that is a
/// prefix of `after` is allowed (appends are not atomic; what was fsynced stays).
fn crash_at_every_step_with(atomic: bool, op: impl Fn(&mut Log) -> Result<(), storage::StorageError>) -> u64 {
    let (fs, mut log) = filled();
    let before = batches(&log);
    let ops = fs.durability_ops();
    op(&mut log).expect("the operation works without faults");
    let steps = fs.durability_ops() - ops;
    let after = batches(&log);
    let after_epochs = log.epoch_entries();
    assert_eq!(after_epochs, implied_epochs(&log));
    assert_ne!(before, after);
    drop(log);
    for k in 0..=steps {
        for mode in [CrashMode::DropUnsynced, CrashMode::Torn { seed: k + 1 }] {
            let (fs, mut log) = filled();
            fs.power_off_after_syncs(k);
            let result = op(&mut log);
            // Ok early only when what failed was derived state (the epoch checkpoint).
            assert!(result.is_ok() || k < steps, "step {k}: {result:?}");
            drop(log);
            fs.crash(mode);
            let mut log = open(&fs, false);
            let got = batches(&log);
            if atomic {
                assert!(
                    got == before || got == after,
                    "step {k} of {steps} ({mode:?}): neither before nor after: {got:?}"
                );
            } else {
                assert!(
                    got.len() >= before.len() && after.starts_with(&got),
                    "step {k} of {steps} ({mode:?}): not a prefix of after holding before: {got:?}"
                );
            }
            assert_eq!(log.epoch_entries(), implied_epochs(&log), "step {k} ({mode:?})");
            if result.is_ok() {
                assert_eq!(got, after, "step {k}: done means durable");
            }
            if got == after {
                assert_eq!(log.epoch_entries(), after_epochs);
            }
            // And it goes on: an append lands at the end, and survives a clean restart.
            let end = log.log_end_offset();
            assert_eq!(log.append(batch(900), 9, 0).unwrap().base_offset, end);
            log.sync().unwrap();
            drop(log);
            let log = open(&fs, true);
            assert_eq!(log.log_end_offset(), end + 5);
            assert_eq!(log.epoch_entries(), implied_epochs(&log));
        }
    }
    steps
}

#[test]
fn a_power_loss_at_any_step_of_a_truncation_leaves_the_log_before_or_after() {
    // Inside the active segment, inside an earlier one, at a segment's first batch, inside a
    // batch, and to the start of the log.
    for target in [97, 72, 33, 30, 3, 0] {
        let steps = crash_at_every_step(|log| log.truncate_to(target).map(|_| ()));
        assert!(steps >= 2, "{target}: {steps} fsyncs");
        eprintln!("truncate_to({target}): a power loss after each of {steps} fsyncs, and none");
    }
}

/// What a follower of [`filled`] fetches from its leader: batches from offset 100 on, with
/// epochs 5, 6 and 8, as the leader stamped and stored them.
fn fetched_from_leader() -> Bytes {
    let (_fs, mut leader) = filled();
    for (i, epoch) in [5, 5, 6, 6, 6, 8, 8].into_iter().enumerate() {
        leader.append(batch(1_000 + i as u32 * 5), epoch, 0).unwrap();
    }
    read_from(&leader, 100)
}

/// Every batch from `offset` on, as stored (a read stops at a segment's end).
fn read_from(log: &Log, mut offset: i64) -> Bytes {
    let mut out = BytesMut::new();
    loop {
        let data = log.read(offset, 1 << 20).unwrap();
        if data.is_empty() {
            return out.freeze();
        }
        for b in RecordBatch::iter_all(data) {
            let b = b.unwrap();
            offset = b.last_offset() + 1;
            out.extend_from_slice(b.as_bytes());
        }
    }
}

fn restamped(data: &Bytes, which: usize, base: i64, epoch: i32) -> Bytes {
    let mut out = BytesMut::new();
    for (i, b) in RecordBatch::iter_all(data.clone()).enumerate() {
        let mut raw = BytesMut::from(&b.unwrap().as_bytes()[..]);
        if i == which {
            records::stamp(&mut raw, base, epoch);
        }
        out.extend_from_slice(&raw);
    }
    out.freeze()
}

#[test]
fn replicated_batches_are_appended_as_they_are_and_must_continue_the_log() {
    let (_fs, mut log) = filled();
    let data = fetched_from_leader();
    let n = RecordBatch::iter_all(data.clone()).count();
    assert_eq!(n, 7);
    let refused = |log: &mut Log, data: Bytes| {
        let e = log.append_replicated(data, 0).unwrap_err();
        assert_eq!(log.log_end_offset(), 100, "nothing written: {e}");
        e
    };
    // A gap, an overlap, a gap between two batches, a falling epoch, a damaged CRC, a
    // trailing partial batch, nothing at all.
    assert!(matches!(
        refused(&mut log, restamped(&data, 0, 101, 5)),
        storage::StorageError::OffsetMismatch {
            base_offset: 101,
            log_end: 100
        }
    ));
    assert!(matches!(
        refused(&mut log, restamped(&data, 0, 95, 5)),
        storage::StorageError::OffsetMismatch { .. }
    ));
    assert!(matches!(
        refused(&mut log, restamped(&data, 3, 116, 6)),
        storage::StorageError::OffsetMismatch {
            base_offset: 116,
            log_end: 115
        }
    ));
    assert!(matches!(
        refused(&mut log, restamped(&data, 0, 100, 4)),
        storage::StorageError::EpochRegression {
            epoch: 4,
            latest: 5,
            ..
        }
    ));
    assert!(matches!(
        refused(&mut log, restamped(&data, 4, 120, 5)),
        storage::StorageError::EpochRegression {
            epoch: 5,
            latest: 6,
            ..
        }
    ));
    assert!(matches!(
        refused(&mut log, restamped(&data, 0, 100, -1)),
        storage::StorageError::EpochRegression { epoch: -1, .. }
    ));
    let mut bad = BytesMut::from(&data[..]);
    let at = bad.len() - 3;
    bad[at] ^= 1;
    assert!(matches!(
        refused(&mut log, bad.freeze()),
        storage::StorageError::InvalidBatch(_)
    ));
    assert!(matches!(
        refused(&mut log, data.slice(..data.len() - 10)),
        storage::StorageError::InvalidBatch(_)
    ));
    assert!(matches!(
        refused(&mut log, Bytes::new()),
        storage::StorageError::InvalidBatch(_)
    ));
    // The real thing lands byte for byte, with its epochs in the cache.
    let info = log.append_replicated(data.clone(), 0).unwrap();
    assert_eq!((info.base_offset, info.last_offset), (100, 134));
    assert_eq!(read_from(&log, 100), data, "stored as fetched");
    assert_eq!(
        log.epoch_entries(),
        entries(&[(0, 0), (2, 30), (5, 70), (6, 110), (8, 125)])
    );
    assert_eq!(log.end_offset_for_epoch(5), (5, 110));
    assert_eq!(log.end_offset_for_epoch(7), (6, 125));
    assert_eq!(log.end_offset_for_epoch(8), (8, 135));
    // A follower diverged: it truncates to the leader's end of its epoch and fetches again.
    assert_eq!(log.truncate_to(log.end_offset_for_epoch(5).1).unwrap(), 110);
    assert_eq!(log.latest_epoch(), Some(5));
    let again = fetched_from_leader();
    let from_110: Bytes = {
        let mut out = BytesMut::new();
        for b in RecordBatch::iter_all(again)
            .map(Result::unwrap)
            .filter(|b| b.base_offset() >= 110)
        {
            out.extend_from_slice(b.as_bytes());
        }
        out.freeze()
    };
    log.append_replicated(from_110, 0).unwrap();
    assert_eq!(read_from(&log, 100), data);
    assert_eq!(log.epoch_entries(), implied_epochs(&log));
}

#[test]
fn an_empty_follower_log_starts_at_the_leaders_first_offset() {
    let fs = SimFs::new();
    let mut log = open(&fs, false);
    let data = fetched_from_leader();
    let info = log.append_replicated(data.clone(), 0).unwrap();
    assert_eq!(
        (info.base_offset, log.log_start_offset(), log.log_end_offset()),
        (100, 100, 135)
    );
    assert_eq!(log.epoch_entries(), entries(&[(5, 100), (6, 110), (8, 125)]));
    log.sync().unwrap();
    drop(log);
    fs.crash(CrashMode::DropUnsynced);
    let log = open(&fs, false);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 135));
    assert_eq!(read_from(&log, 100), data);
    assert_eq!(log.epoch_entries(), implied_epochs(&log));
}

#[test]
fn a_power_loss_at_any_step_of_a_replicated_append_and_its_sync_keeps_a_prefix() {
    let data = fetched_from_leader();
    let steps = crash_at_every_step_with(false, |log| {
        log.append_replicated(data.clone(), 0)?;
        log.sync()
    });
    assert!(steps >= 3, "{steps} fsyncs");
    eprintln!("append_replicated + sync: a power loss after each of {steps} fsyncs, and none");
}

#[test]
fn seal_work_taken_before_a_truncation_writes_no_stale_index() {
    let (fs, mut log) = filled();
    for i in 0..12 {
        log.append(batch(2_000 + i * 5), 5, 0).unwrap();
    }
    let work = log.take_seal().expect("rolled segments wait for their seal");
    let bases: Vec<i64> = fs
        .list(Path::new(DIR))
        .unwrap()
        .iter()
        .filter_map(|n| n.strip_suffix(".log").and_then(|b| b.parse().ok()))
        .collect();
    let cut_segment = *bases.iter().filter(|b| **b <= 133).max().unwrap();
    let index = Path::new(DIR).join(format!("{cut_segment:020}.index"));
    assert_eq!(log.truncate_to(133).unwrap(), 130);
    assert!(fs.contents(&index).is_none());
    // The work runs (off the lock) after the truncation: it must not vouch for the segment
    // as it was.
    work.run().unwrap();
    assert!(fs.contents(&index).is_none(), "no index for bytes that are gone");
    log.sealed(work).unwrap();
    let after = batches(&log);
    for i in 0..12 {
        log.append(batch(3_000 + i * 5), 6, 0).unwrap();
    }
    let want = batches(&log);
    log.sync().unwrap();
    drop(log);
    fs.crash(CrashMode::DropUnsynced);
    let log = open(&fs, false);
    assert_eq!(batches(&log), want);
    assert!(want.starts_with(&after));
    assert_eq!(log.epoch_entries(), implied_epochs(&log));
}

#[test]
fn starting_over_at_a_snapshot_end_empties_the_log_and_survives_a_power_loss_at_any_step() {
    // Past the end (a follower far behind), inside a batch (its tail diverged), and at a
    // segment's first offset.
    for target in [150, 97, 30] {
        let (fs, mut log) = filled();
        let before = batches(&log);
        let ops = fs.durability_ops();
        log.start_over_at(target).unwrap();
        let steps = fs.durability_ops() - ops;
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (target, target));
        assert_eq!(batches(&log), vec![]);
        assert_eq!(log.epoch_entries(), vec![]);
        // A replicated batch continues it, as a follower's first fetch after the snapshot.
        log.append_replicated(restamped(&batch(0), 0, target, 9), 0).unwrap();
        assert_eq!(log.log_end_offset(), target + 5);
        drop(log);
        for k in 0..=steps {
            for mode in [CrashMode::DropUnsynced, CrashMode::Torn { seed: k + 1 }] {
                let (fs, mut log) = filled();
                fs.power_off_after_syncs(k);
                let result = log.start_over_at(target);
                drop(log);
                fs.crash(mode);
                let log = open(&fs, false);
                let got = batches(&log);
                let (start, end) = (log.log_start_offset(), log.log_end_offset());
                let emptied = got.is_empty() && (start, end) == (target, target);
                assert!(
                    emptied || before.starts_with(&got),
                    "step {k} of {steps} ({mode:?}): not a prefix of the log before, nor empty at {target}: \
                     {start}..{end} {got:?}"
                );
                if result.is_ok() {
                    assert!(emptied, "step {k}: done means durable");
                }
                assert_eq!(log.epoch_entries(), implied_epochs(&log), "step {k} ({mode:?})");
            }
        }
        eprintln!("start_over_at({target}): a power loss after each of {steps} fsyncs, and none");
    }
    let (_fs, mut log) = filled();
    log.delete_records_before(40).unwrap();
    assert!(log.start_over_at(39).is_err(), "the start never moves back");
}
