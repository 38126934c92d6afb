//! Storage benchmark (not a test): the partition log against the disk's own limits, measured in
//! the same run on the same disk.
//!
//! ```sh
//! cargo run --release -p sluice-storage --example storage_bench -- [dir] [MiB]
//! ```
//!
//! 1. Sequential write: raw `write`s of 1 MiB and of one batch's size, then the log appending
//!    batches of 16 records of 1 KiB each (about 16.6 KiB per batch), each followed by one
//!    fsync at the end.
//! 2. Sequential read, cold: the page cache is emptied for the files first
//!    (`posix_fadvise(DONTNEED)`, no root needed), then raw 1 MiB reads and log reads of up
//!    to 1 MiB.
//! 3. Durable appends: one writer fsyncing after every append, and 1, 4 and 16 writers sharing
//!    fsyncs through group commit, with the latency of each acknowledged append.
//! 4. Append latency across segment rolls (64 MiB segments): sealing the rolled segment
//!    (fsync + index) inline on the appending thread, as a roll did before, against sealing
//!    it in a background thread, as the broker does.
//!
//! Prints a Markdown report for `docs/benchmarks.md`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use storage::{GroupCommit, Log, LogConfig};
use wire::records::{BatchBuilder, RecordBatch};
use wire::Compression;

const RECORD: usize = 1024;
const RECORDS_PER_BATCH: usize = 16;
const CHUNK: usize = 1 << 20;

fn batch() -> bytes::Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    let value = vec![b'x'; RECORD];
    for i in 0..RECORDS_PER_BATCH {
        b.push(1_700_000_000_000 + i as i64, None, Some(&value), &[]);
    }
    b.build()
}

fn evict(path: &Path) {
    let f = File::open(path).expect("open to evict");
    f.sync_all().expect("sync before evict");
    // SAFETY: a valid open descriptor; advice only, no memory is touched.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

fn files_in(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// `writers` threads each append `per_writer` batches and wait for them to be durable, either
/// with an fsync each (`group: false`, one writer) or through group commit.
fn durable_appends(dir: &Path, writers: usize, per_writer: usize, group: bool) -> (f64, Vec<Duration>, u64) {
    let _ = std::fs::remove_dir_all(dir);
    let log = Arc::new(Mutex::new(Log::open(dir, LogConfig::default()).expect("open")));
    let commit = Arc::new(GroupCommit::new(0, 0));
    let b = batch();
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (log, commit, b) = (log.clone(), commit.clone(), b.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(per_writer);
                for _ in 0..per_writer {
                    let t = Instant::now();
                    let end = {
                        let mut l = log.lock().expect("lock");
                        let info = l.append(b.clone(), 0, 0).expect("append");
                        if !group {
                            l.sync_target().expect("target").sync().expect("sync");
                        }
                        info.last_offset + 1
                    };
                    if group {
                        commit
                            .sync_to(end, || 0, || log.lock().expect("lock").sync_target())
                            .expect("sync");
                    }
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = vec![];
    for t in threads {
        all.extend(t.join().expect("writer"));
    }
    let elapsed = start.elapsed();
    all.sort();
    let appends_per_s = (writers * per_writer) as f64 / elapsed.as_secs_f64();
    let syncs = if group {
        commit.sync_count()
    } else {
        (writers * per_writer) as u64
    };
    let _ = std::fs::remove_dir_all(dir);
    (appends_per_s, all, syncs)
}

/// Writes `total` bytes to `path` in writes of `size` bytes, then fsyncs: MiB/s.
fn raw_write(path: &Path, total: u64, size: usize) -> f64 {
    let chunk = vec![b'x'; size];
    let t = Instant::now();
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .expect("raw file");
    let mut written = 0;
    while written < total {
        f.write_all(&chunk).expect("raw write");
        written += size as u64;
    }
    f.sync_all().expect("raw sync");
    mb_per_s(total, t.elapsed())
}

/// One round of sequential write and read, raw and through the log: MiB/s for raw write, log
/// write, raw read and log read, and the seconds the log took to open after a crash and after
/// a clean shutdown.
fn sequential(root: &Path, total: u64, b: &bytes::Bytes) -> (f64, f64, f64, f64, f64, f64, f64) {
    let raw_path = root.join("raw.bin");
    let raw_write_big = raw_write(&raw_path, total, CHUNK);
    // The same raw write in writes the size of one batch.
    let raw_write_small = raw_write(&raw_path, total, b.len());

    let log_dir = root.join("log");
    let _ = std::fs::remove_dir_all(&log_dir);
    let batches = total / b.len() as u64;
    let t = Instant::now();
    {
        let mut log = Log::open(&log_dir, LogConfig::default()).expect("open log");
        for _ in 0..batches {
            log.append(b.clone(), 0, 0).expect("append");
        }
        log.sync().expect("sync");
    }
    let log_write = mb_per_s(batches * b.len() as u64, t.elapsed());

    evict(&raw_path);
    let t = Instant::now();
    {
        let mut f = File::open(&raw_path).expect("raw open");
        let mut buf = vec![0u8; CHUNK];
        while f.read(&mut buf).expect("raw read") > 0 {}
    }
    let raw_read = mb_per_s(total, t.elapsed());

    for seg in files_in(&log_dir, "log") {
        evict(&seg);
    }
    let t = Instant::now();
    drop(Log::open(&log_dir, LogConfig::default()).expect("recover log"));
    let recover = t.elapsed().as_secs_f64();
    for seg in files_in(&log_dir, "log") {
        evict(&seg);
    }
    let t = Instant::now();
    let log = Log::open_after_clean_shutdown(&log_dir, LogConfig::default()).expect("reopen log");
    let clean_open = t.elapsed().as_secs_f64();
    // Opening read the files: empty the cache again so the reads below come from the disk.
    for seg in files_in(&log_dir, "log") {
        evict(&seg);
    }
    let t = Instant::now();
    let mut read_bytes = 0u64;
    let mut offset = 0;
    loop {
        let data = log.read(offset, CHUNK).expect("read");
        if data.is_empty() {
            break;
        }
        read_bytes += data.len() as u64;
        let mut last = 0;
        for b in RecordBatch::iter_all(data) {
            last = b.expect("batch").last_offset();
        }
        offset = last + 1;
    }
    let log_read = mb_per_s(read_bytes, t.elapsed());
    drop(log);
    let _ = std::fs::remove_file(&raw_path);
    let _ = std::fs::remove_dir_all(&log_dir);
    (
        raw_write_big,
        raw_write_small,
        log_write,
        raw_read,
        log_read,
        recover,
        clean_open,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let root = PathBuf::from(args.get(1).cloned().unwrap_or_else(|| "target/storage-bench".into()));
    let mib: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let total = mib << 20;
    std::fs::create_dir_all(&root).expect("create bench dir");
    // 1 and 2, three times, alternating raw and log so that both see the same disk weather;
    // medians are reported.
    let b = batch();
    let (mut raw_w, mut log_w, mut raw_r, mut log_r) = (vec![], vec![], vec![], vec![]);
    let (mut recovers, mut clean_opens, mut raw_ws) = (vec![], vec![], vec![]);
    for _ in 0..3 {
        let (rw, rws, lw, rr, lr, recover, clean_open) = sequential(&root, total, &b);
        raw_ws.push(rws);
        raw_w.push(rw);
        log_w.push(lw);
        raw_r.push(rr);
        log_r.push(lr);
        recovers.push(recover);
        clean_opens.push(clean_open);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (raw_write, log_write) = (median(&mut raw_w), median(&mut log_w));
    let raw_write_small = median(&mut raw_ws);
    let (raw_read, log_read) = (median(&mut raw_r), median(&mut log_r));
    let (recover_s, clean_s) = (median(&mut recovers), median(&mut clean_opens));

    println!(
        "Sequential, {mib} MiB, batches of {RECORDS_PER_BATCH} × {RECORD} B records ({} B); median of 3 alternating runs:",
        b.len()
    );
    println!();
    println!("| | raw file | log | log / raw |");
    println!("|---|---:|---:|---:|");
    println!(
        "| write + one fsync, raw in 1 MiB writes (MiB/s) | {raw_write:.0} | {log_write:.0} | {:.0}% |",
        100.0 * log_write / raw_write
    );
    println!(
        "| write + one fsync, raw in {} B writes (MiB/s) | {raw_write_small:.0} | {log_write:.0} | {:.0}% |",
        b.len(),
        100.0 * log_write / raw_write_small
    );
    println!(
        "| read from disk (MiB/s) | {raw_read:.0} | {log_read:.0} | {:.0}% |",
        100.0 * log_read / raw_read
    );
    println!();
    println!(
        "Opening the {mib} MiB log from a cold cache: {recover_s:.3} s after a crash (every batch walked, CRCs checked), {clean_s:.4} s after a clean shutdown (indexes read)."
    );
    println!();

    // 3. Durable appends.
    println!("Durable appends of one {} B batch each:", b.len());
    println!();
    println!("| mode | writers | appends/s | MiB/s | fsyncs per append | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let dir = root.join("durable");
    let runs: [(&str, usize, usize, bool); 4] = [
        ("fsync per append", 1, 400, false),
        ("group commit", 1, 400, true),
        ("group commit", 4, 200, true),
        ("group commit", 16, 100, true),
    ];
    for (mode, writers, per_writer, group) in runs {
        let (rate, lat, syncs) = durable_appends(&dir, writers, per_writer, group);
        println!(
            "| {mode} | {writers} | {rate:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} |",
            rate * b.len() as f64 / (1 << 20) as f64,
            syncs as f64 / (writers * per_writer) as f64,
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        );
    }

    // 4. Append latency across rolls.
    println!();
    println!("Append latency, {mib} MiB through 64 MiB segments (page cache, no fsync per append):");
    println!();
    println!("| rolled segment sealed | MiB/s | p50 ms | p99.9 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for inline in [true, false] {
        let (rate, lat) = rolling_appends(&root.join("rolling"), total, &b, inline);
        println!(
            "| {} | {rate:.0} | {:.3} | {:.3} | {:.2} |",
            if inline {
                "inline, on the append path"
            } else {
                "in the background"
            },
            percentile(&lat, 0.5),
            percentile(&lat, 0.999),
            lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        );
    }
}

/// Appends `total` bytes through 64 MiB segments, timing each append; the rolled segments are
/// sealed right after the append that rolled (`inline`) or by a thread polling for seal work.
fn rolling_appends(dir: &Path, total: u64, b: &bytes::Bytes, inline: bool) -> (f64, Vec<Duration>) {
    let _ = std::fs::remove_dir_all(dir);
    let config = LogConfig {
        segment_bytes: 64 << 20,
        ..LogConfig::default()
    };
    let log = Arc::new(Mutex::new(Log::open(dir, config).expect("open log")));
    let pending = log.lock().expect("lock").seal_pending();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sealer = (!inline).then(|| {
        let (log, done, pending) = (log.clone(), done.clone(), pending.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                if pending.load(std::sync::atomic::Ordering::Acquire) {
                    let work = log.lock().expect("lock").take_seal();
                    if let Some(work) = work {
                        work.run().expect("seal");
                        log.lock().expect("lock").sealed(work).expect("sealed");
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    });
    let mut lat = Vec::with_capacity((total / b.len() as u64) as usize);
    let started = Instant::now();
    let mut written = 0u64;
    while written < total {
        let t = Instant::now();
        {
            let mut l = log.lock().expect("lock");
            l.append(b.clone(), 0, 0).expect("append");
            if inline {
                if let Some(work) = l.take_seal() {
                    work.run().expect("seal");
                    l.sealed(work).expect("sealed");
                }
            }
        }
        lat.push(t.elapsed());
        written += b.len() as u64;
    }
    let rate = mb_per_s(written, started.elapsed());
    done.store(true, std::sync::atomic::Ordering::Release);
    if let Some(s) = sealer {
        s.join().expect("sealer");
    }
    lat.sort();
    drop(log);
    let _ = std::fs::remove_dir_all(dir);
    (rate, lat)
}
