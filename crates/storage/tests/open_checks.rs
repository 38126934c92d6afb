//! Opening a log validates every file it finds: segment names, that each segment continues
//! the one before it, and that a segment's content fits its name. Damage is reported and
//! worked around (quarantined, or a hole kept and reported), never trusted silently, and an
//! acknowledged record after the damage is never dropped.

mod common;

use std::path::{Path, PathBuf};
use storage::sim::SimFs;
use storage::{Fs, Log, OpenMode, StorageError};

use common::{open_small as open, small_batch as batch, DIR};

/// A synced log of 20 batches (100 records) over several segments; returns the base offsets.
fn filled() -> (SimFs, Vec<i64>) {
    let fs = SimFs::new();
    let mut log = open(&fs, false);
    for i in 0..20 {
        log.append(batch(i * 5), 0, 0).unwrap();
    }
    log.sync().unwrap();
    drop(log);
    let b = bases(&fs);
    (fs, b)
}

fn names(fs: &SimFs) -> Vec<String> {
    let mut n = fs.list(Path::new(DIR)).unwrap();
    n.sort();
    n
}

fn bases(fs: &SimFs) -> Vec<i64> {
    names(fs)
        .iter()
        .filter_map(|n| n.strip_suffix(".log").and_then(|s| s.parse().ok()))
        .collect()
}

fn path(base: i64, ext: &str) -> PathBuf {
    Path::new(DIR).join(format!("{base:020}.{ext}"))
}

fn offsets(log: &Log) -> Vec<i64> {
    common::read_records(log, log.log_start_offset(), 4096)
        .unwrap()
        .into_iter()
        .map(|(o, _)| o)
        .collect()
}

#[test]
fn a_missing_middle_segment_leaves_a_reported_hole_and_keeps_what_follows() {
    for clean in [true, false] {
        let (fs, bases) = filled();
        assert!(bases.len() >= 4, "{bases:?}");
        let (gone, next) = (bases[1], bases[2]);
        fs.remove(&path(gone, "log")).unwrap();
        let _ = fs.remove(&path(gone, "index"));
        let log = open(&fs, clean);
        assert_eq!(
            log.log_end_offset(),
            100,
            "clean={clean}: acknowledged records after the hole stay"
        );
        let want: Vec<i64> = (0..100).filter(|o| !(gone..next).contains(o)).collect();
        assert_eq!(offsets(&log), want, "clean={clean}");
        // Reopening finds the same log (nothing was dropped the first time).
        drop(log);
        assert_eq!(offsets(&open(&fs, clean)), want);
    }
}

#[test]
fn a_stray_segment_that_does_not_continue_the_log_is_quarantined() {
    for clean in [true, false] {
        let (fs, bases) = filled();
        // A copy of the first segment under a name far past the end, and an empty one.
        let copy = fs.contents(&path(bases[0], "log")).unwrap();
        let f = fs.open(&path(99_999, "log"), OpenMode::Truncate).unwrap();
        f.write_all_at(&copy, 0).unwrap();
        f.sync_data().unwrap();
        fs.open(&path(500_000, "log"), OpenMode::Truncate).unwrap();
        // A copy inside the log's range, under the name of no segment.
        let f = fs.open(&path(bases[1] + 2, "log"), OpenMode::Truncate).unwrap();
        f.write_all_at(&copy, 0).unwrap();
        let log = open(&fs, clean);
        assert_eq!(
            log.log_end_offset(),
            100,
            "clean={clean}: the stray file does not move the end"
        );
        assert_eq!(offsets(&log), (0..100).collect::<Vec<_>>());
        let n = names(&fs);
        assert!(!n.contains(&format!("{:020}.log", 500_000)), "{n:?}");
        for stray in [99_999, bases[1] + 2] {
            let name = format!("{stray:020}.log");
            assert!(!n.contains(&name), "clean={clean}: {name} is not trusted: {n:?}");
            assert!(n.iter().any(|x| x.starts_with(&name) && x.ends_with(".stray")), "{n:?}");
        }
    }
}

#[test]
fn badly_named_segment_files_are_quarantined() {
    let (fs, _) = filled();
    fs.open(&Path::new(DIR).join("junk.log"), OpenMode::Truncate).unwrap();
    fs.open(&Path::new(DIR).join("123.log"), OpenMode::Truncate).unwrap();
    let log = open(&fs, true);
    assert_eq!(log.log_end_offset(), 100);
    let n = names(&fs);
    assert!(
        !n.contains(&"junk.log".to_string()) && !n.contains(&"123.log".to_string()),
        "{n:?}"
    );
    assert!(
        n.iter().any(|x| x.starts_with("junk.log") && x.ends_with(".stray")),
        "{n:?}"
    );
}

#[test]
fn an_emptied_first_segment_does_not_drop_the_later_ones() {
    for clean in [true, false] {
        let (fs, bases) = filled();
        let f = fs.open(&path(bases[0], "log"), OpenMode::Existing).unwrap();
        f.set_len(0).unwrap();
        f.sync_data().unwrap();
        let log = open(&fs, clean);
        assert_eq!(log.log_end_offset(), 100, "clean={clean}");
        assert_eq!(log.log_start_offset(), bases[1], "clean={clean}");
        assert_eq!(offsets(&log), (bases[1]..100).collect::<Vec<_>>());
    }
}

#[test]
fn an_emptied_middle_segment_is_a_reported_hole() {
    let (fs, bases) = filled();
    let f = fs.open(&path(bases[1], "log"), OpenMode::Existing).unwrap();
    f.set_len(0).unwrap();
    let log = open(&fs, true);
    assert_eq!(log.log_end_offset(), 100);
    let want: Vec<i64> = (0..100).filter(|o| !(bases[1]..bases[2]).contains(o)).collect();
    assert_eq!(offsets(&log), want);
}

#[test]
fn a_damaged_batch_can_be_skipped_by_its_header_or_the_log_cut_there() {
    let (fs, bases) = filled();
    // Bit rot inside the second batch's records (past its CRC field): the header still holds.
    let seg = path(bases[0], "log");
    let data = fs.contents(&seg).unwrap();
    let second = i32::from_be_bytes(data[8..12].try_into().unwrap()) as usize + 12;
    fs.corrupt(&seg, second + 70, &[data[second + 70] ^ 0xff]);
    let mut log = open(&fs, true);
    let Err(StorageError::Corrupt { path, .. }) = log.read(5, 4096) else {
        panic!("damaged bytes are never served")
    };
    assert_eq!(path, seg);
    let skip = log.skip_damaged(5).unwrap();
    assert_eq!((skip.next_offset, skip.cut), (10, false));
    assert_eq!(log.log_end_offset(), 100);
    assert_eq!(offsets_from(&log, 10), (10..100).collect::<Vec<_>>());
    // A damaged header cannot be stepped over: the log is cut there, as after a crash.
    fs.corrupt(&seg, second + 8, &[0x7f]);
    let mut log = open(&fs, true);
    assert!(log.read(5, 4096).is_err());
    let skip = log.skip_damaged(5).unwrap();
    assert_eq!((skip.next_offset, skip.cut), (5, true));
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(offsets(&log), (0..5).collect::<Vec<_>>());
    let mut log = log;
    assert_eq!(log.append(batch(0), 0, 0).unwrap().base_offset, 5);
}

fn offsets_from(log: &Log, from: i64) -> Vec<i64> {
    common::read_records(log, from, 4096)
        .unwrap()
        .into_iter()
        .map(|(o, _)| o)
        .collect()
}

#[test]
fn a_full_disk_does_not_keep_a_log_from_opening() {
    for clean in [true, false] {
        let (fs, _) = filled();
        // Indexes that recovery would rewrite are gone, and not a byte is free.
        for name in names(&fs).iter().filter(|n| n.ends_with(".index")) {
            fs.remove(&Path::new(DIR).join(name)).unwrap();
        }
        fs.set_capacity(Some(fs.used()));
        let mut log = open(&fs, clean);
        assert_eq!(
            offsets(&log),
            (0..100).collect::<Vec<_>>(),
            "clean={clean}: reads are served"
        );
        assert!(
            log.append(batch(100), 0, 0).is_err(),
            "writes fail while the disk is full"
        );
        fs.set_capacity(None);
        assert_eq!(
            log.append(batch(100), 0, 0).unwrap().base_offset,
            100,
            "and succeed once space returns"
        );
        log.sync().unwrap();
        drop(log);
        assert_eq!(open(&fs, clean).log_end_offset(), 105);
    }
}
