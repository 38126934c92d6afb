//! `sluice bench produce|consume|e2e`: load generators that report throughput and latency
//! percentiles, with a live progress bar on a terminal, a plain line a second otherwise, and
//! `--json` for scripts (bench/suite.py reads it).

use crate::common::{block_on, Conn};
use crate::produce::{parse_acks, parse_compression};
use anyhow::Result;
use bytes::Bytes;
use client::admin::NewTopic;
use client::{
    Admin, Client, ClientConfig, Consumer, ConsumerConfig, OffsetSpec, Producer, ProducerConfig, ProducerRecord, Seek,
};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: BenchCmd,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Topic to use; created with --partitions when missing.
    #[arg(long, short = 't', default_value = "sluice-bench")]
    topic: String,
    /// Partitions of the topic when it is created.
    #[arg(long, short = 'p', default_value_t = 1)]
    partitions: i32,
    /// Stop after this many records (in all).
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, short = 'd')]
    duration: Option<f64>,
    /// Print one JSON object with the results on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Clone)]
struct ProduceOpts {
    /// Bytes of each record's value.
    #[arg(long, short = 's', default_value_t = 1024)]
    record_size: usize,
    /// Records per second in all (0: as fast as possible).
    #[arg(long, short = 'r', default_value_t = 0.0)]
    rate: f64,
    /// all, 1 or 0.
    #[arg(long, default_value = "1")]
    acks: String,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, short = 'z', default_value = "none")]
    compression: String,
    /// Producers, each with its own connection.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    #[arg(long, default_value_t = 1_000_000)]
    batch_size: usize,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
}

#[derive(clap::Subcommand)]
enum BenchCmd {
    /// Produce as fast as possible (or at --rate); report records/s, MiB/s and the latency
    /// from send to acknowledgement.
    #[command(
        after_help = "Examples:\n  sluice bench produce -n 1000000 -s 100\n  sluice bench produce -d 10 -p 16 --acks all -z lz4 --producers 2\n  sluice bench produce -d 30 --rate 50000 --json"
    )]
    Produce {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: ProduceOpts,
    },
    /// Read the topic from the beginning (to its end, --count or --duration); report records/s
    /// and MiB/s.
    #[command(after_help = "Examples:\n  sluice bench consume\n  sluice bench consume -t orders --consumers 2 --json")]
    Consume {
        #[command(flatten)]
        common: Common,
        /// Consumers, each with its own connection and a share of the partitions.
        #[arg(long, default_value_t = 1)]
        consumers: usize,
    },
    /// Produce at --rate while a consumer reads; report the latency from send to receipt.
    #[command(
        after_help = "Examples:\n  sluice bench e2e -d 10 --rate 10000\n  sluice bench e2e -d 30 --rate 50000 -p 4 --acks all --json"
    )]
    E2e {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: ProduceOpts,
    },
}

/// Latency histogram: exact below 128 µs, then 64 buckets per power of two (under 1.6% error);
/// constant memory however many samples.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; 128 + 57 * 64],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    fn index(us: u64) -> usize {
        if us < 128 {
            return us as usize;
        }
        let m = 63 - us.leading_zeros() as usize; // 7..=63
        128 + (m - 7) * 64 + ((us >> (m - 6)) as usize - 64)
    }

    fn value(i: usize) -> u64 {
        if i < 128 {
            return i as u64;
        }
        let m = (i - 128) / 64 + 7;
        let sub = ((i - 128) % 64) as u64 + 64;
        // The middle of the bucket.
        (sub << (m - 6)) + (1u64 << (m - 6)) / 2
    }

    pub fn record(&mut self, us: u64) {
        let i = Self::index(us).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.total += 1;
        self.max = self.max.max(us);
    }

    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.max = self.max.max(o.max);
    }

    /// The value at quantile `q` (0..=1), in µs.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank == self.total {
            return self.max;
        }
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i).min(self.max);
            }
        }
        self.max
    }

    fn summary(&self) -> serde_json::Value {
        let ms = |us: u64| us as f64 / 1000.0;
        json!({
            "samples": self.total,
            "p50": ms(self.quantile(0.50)),
            "p95": ms(self.quantile(0.95)),
            "p99": ms(self.quantile(0.99)),
            "p99_9": ms(self.quantile(0.999)),
            "max": ms(self.max),
        })
    }

    fn line(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "p50 {:.2}  p95 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            ms(self.quantile(0.50)),
            ms(self.quantile(0.95)),
            ms(self.quantile(0.99)),
            ms(self.quantile(0.999)),
            ms(self.max)
        )
    }
}

/// Counters the workers bump and the progress display reads.
#[derive(Default)]
struct Progress {
    records: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
}

/// Shows progress until `stop` is set: a bar on a terminal, a line a second otherwise.
fn spawn_progress(
    p: Arc<Progress>,
    what: &'static str,
    count: Option<u64>,
    duration: Option<f64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = tty.then(|| {
            let (len, unit) = match (count, duration) {
                (Some(n), _) => (n, "records"),
                (None, Some(d)) => ((d * 1000.0) as u64, "ms"),
                _ => (0, ""),
            };
            let b = indicatif::ProgressBar::new(len);
            let style =
                indicatif::ProgressStyle::with_template(&format!("{what} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}}"))
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            b.set_style(style);
            b
        });
        let mut last_line = Instant::now();
        while !p.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            let n = p.records.load(Ordering::Relaxed);
            let mib = p.bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64;
            let msg = format!("{:.0} records/s, {:.1} MiB/s", n as f64 / secs, mib / secs);
            if let Some(b) = &bar {
                b.set_position(if count.is_some() {
                    n
                } else {
                    start.elapsed().as_millis() as u64
                });
                b.set_message(msg);
            } else if last_line.elapsed() >= Duration::from_secs(1) {
                last_line = Instant::now();
                eprintln!("{what}: {secs:.1} s, {n} records, {msg}");
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
    })
}

fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

async fn new_client(conn: &Conn) -> Result<Client> {
    let mut cfg = ClientConfig::new(&conn.bootstrap);
    cfg.client_id = "sluice-bench".into();
    Ok(Client::connect(cfg).await?)
}

async fn ensure_topic(admin: &Admin, topic: &str, partitions: i32) -> Result<i32> {
    if let Ok(t) = admin.describe_topics(&[topic.to_string()]).await {
        return Ok(t.first().map_or(0, |t| t.partitions.len() as i32));
    }
    let r = admin
        .create_topics(
            &[NewTopic {
                name: topic.to_string(),
                partitions,
                replication_factor: -1,
                configs: vec![],
            }],
            false,
        )
        .await?;
    crate::common::check_results(&r)?;
    Ok(partitions)
}

fn limits(common: &Common) -> (Option<u64>, Option<Duration>) {
    let d = common.duration.map(Duration::from_secs_f64);
    match (common.count, d) {
        (None, None) => (None, Some(Duration::from_secs(10))),
        x => x,
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    block_on(async move {
        match args.cmd {
            BenchCmd::Produce { common, opts } => produce(&args.conn, common, opts).await,
            BenchCmd::Consume { common, consumers } => consume(&args.conn, common, consumers).await,
            BenchCmd::E2e { common, opts } => e2e(&args.conn, common, opts).await,
        }
    })
}

/// Runs the producers; `stamp` puts the send time into each value (for e2e).
async fn run_producers(
    conn: &Conn,
    common: &Common,
    opts: &ProduceOpts,
    progress: Arc<Progress>,
    stamp: bool,
) -> Result<(Histogram, u64, u64, Duration)> {
    let (count, duration) = limits(common);
    let acks = parse_acks(&opts.acks)?;
    let compression = parse_compression(&opts.compression)?;
    let k = opts.producers.max(1);
    let mut tasks = vec![];
    let start = Instant::now();
    for i in 0..k {
        let client = new_client(conn).await?;
        let config = ProducerConfig {
            acks,
            compression,
            batch_size: opts.batch_size,
            linger: Duration::from_millis(opts.linger_ms),
            ..Default::default()
        };
        let producer = Producer::new(client, config).await?;
        let my_count = count.map(|n| n / k as u64 + u64::from((i as u64) < n % k as u64));
        let rate = if opts.rate > 0.0 { opts.rate / k as f64 } else { 0.0 };
        let topic = common.topic.clone();
        let size = opts.record_size;
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let hist = Arc::new(Mutex::new(Histogram::default()));
            // Distinct, incompressible-enough payload per producer (not all zeros).
            let payload: Vec<u8> = (0..size).map(|j| (j * 31 + i * 7) as u8).collect();
            let payload = Bytes::from(payload);
            let mut sent = 0u64;
            let mut failed_send = None;
            loop {
                if my_count.is_some_and(|n| sent >= n) || duration.is_some_and(|d| start.elapsed() >= d) {
                    break;
                }
                if rate > 0.0 {
                    let due = start + Duration::from_secs_f64(sent as f64 / rate);
                    if due > Instant::now() {
                        tokio::time::sleep_until(due.into()).await;
                    }
                }
                let value = if stamp && size >= 8 {
                    let mut v = payload.to_vec();
                    v[..8].copy_from_slice(&unix_nanos().to_be_bytes());
                    Bytes::from(v)
                } else {
                    payload.clone()
                };
                let rec = ProducerRecord {
                    topic: topic.clone(),
                    value: Some(value),
                    ..Default::default()
                };
                let t0 = Instant::now();
                let h = hist.clone();
                let p = progress.clone();
                let r = producer
                    .send_with(rec, move |r| {
                        if r.is_ok() {
                            p.records.fetch_add(1, Ordering::Relaxed);
                            p.bytes.fetch_add(size as u64, Ordering::Relaxed);
                            if let Ok(mut h) = h.lock() {
                                h.record(t0.elapsed().as_micros() as u64);
                            }
                        } else {
                            p.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                    .await;
                if let Err(e) = r {
                    failed_send = Some(e);
                    break;
                }
                sent += 1;
            }
            producer.close().await;
            let h = hist.lock().map(|h| h.clone()).unwrap_or_default();
            (h, sent, failed_send)
        }));
    }
    let mut hist = Histogram::default();
    let mut sent = 0;
    for t in tasks {
        let (h, n, err) = t.await?;
        if let Some(e) = err {
            anyhow::bail!("producing failed: {e}");
        }
        hist.merge(&h);
        sent += n;
    }
    let elapsed = start.elapsed();
    Ok((hist, sent, progress.errors.load(Ordering::Relaxed), elapsed))
}

/// What a workload moved, for the report.
struct Totals {
    records: u64,
    bytes: u64,
    errors: u64,
    secs: f64,
}

fn report(kind: &str, common: &Common, extra: serde_json::Value, t: Totals, hist: Option<&Histogram>) {
    let Totals {
        records,
        bytes,
        errors,
        secs,
    } = t;
    let secs = secs.max(1e-9);
    let rps = records as f64 / secs;
    let mibps = bytes as f64 / (1 << 20) as f64 / secs;
    if common.json {
        let mut v = json!({
            "kind": kind,
            "topic": common.topic,
            "records": records,
            "bytes": bytes,
            "errors": errors,
            "seconds": secs,
            "records_per_sec": rps,
            "mib_per_sec": mibps,
            "mb_per_sec": bytes as f64 / 1e6 / secs,
            "latency_ms": hist.map(|h| h.summary()),
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        println!("{v}");
    } else {
        println!(
            "{kind}: {records} records, {:.1} MiB in {secs:.2} s: {rps:.0} records/s, {mibps:.1} MiB/s{}",
            bytes as f64 / (1 << 20) as f64,
            if errors > 0 {
                format!(", {errors} errors")
            } else {
                String::new()
            }
        );
        if let Some(h) = hist {
            println!("latency ms: {}", h.line());
        }
    }
}

async fn produce(conn: &Conn, common: Common, opts: ProduceOpts) -> Result<()> {
    let admin = Admin::new(new_client(conn).await?);
    let partitions = ensure_topic(&admin, &common.topic, common.partitions).await?;
    let progress = Arc::new(Progress::default());
    let (count, _) = limits(&common);
    let shown = spawn_progress(
        progress.clone(),
        "produce",
        count,
        common.duration.or(count.is_none().then_some(10.0)),
    );
    let (hist, _sent, errors, elapsed) = run_producers(conn, &common, &opts, progress.clone(), false).await?;
    progress.stop.store(true, Ordering::Relaxed);
    let _ = shown.await;
    let records = progress.records.load(Ordering::Relaxed);
    let extra = json!({
        "partitions": partitions, "record_size": opts.record_size, "acks": opts.acks,
        "compression": opts.compression, "producers": opts.producers, "rate": opts.rate,
    });
    report(
        "produce",
        &common,
        extra,
        Totals {
            records,
            bytes: progress.bytes.load(Ordering::Relaxed),
            errors,
            secs: elapsed.as_secs_f64(),
        },
        Some(&hist),
    );
    if errors > 0 {
        anyhow::bail!("{errors} records failed");
    }
    Ok(())
}

async fn consume(conn: &Conn, common: Common, consumers: usize) -> Result<()> {
    let admin = Admin::new(new_client(conn).await?);
    let tps = admin.partitions_of(std::slice::from_ref(&common.topic)).await?;
    let starts = admin.list_offsets(&tps, OffsetSpec::Earliest).await?;
    let ends = admin.list_offsets(&tps, OffsetSpec::Latest).await?;
    let available: u64 = tps
        .iter()
        .map(|tp| (ends.get(tp).copied().unwrap_or(0) - starts.get(tp).copied().unwrap_or(0)).max(0) as u64)
        .sum();
    let (count, duration) = limits(&common);
    let target = count.unwrap_or(available).min(available);
    let duration = if common.count.is_none() && common.duration.is_none() {
        None
    } else {
        duration
    };
    let progress = Arc::new(Progress::default());
    let shown = spawn_progress(progress.clone(), "consume", Some(target), None);
    let k = consumers.max(1).min(tps.len().max(1));
    let start = Instant::now();
    let mut tasks = vec![];
    for i in 0..k {
        let mine: Vec<_> = tps
            .iter()
            .enumerate()
            .filter(|(j, _)| j % k == i)
            .map(|(_, tp)| tp.clone())
            .collect();
        let client = new_client(conn).await?;
        let progress = progress.clone();
        let ends = ends.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Consumer::new(client, ConsumerConfig::default())?;
            c.assign(&mine);
            for tp in &mine {
                c.seek(tp, Seek::Beginning).await?;
            }
            loop {
                let done = progress.records.load(Ordering::Relaxed) >= target
                    || duration.is_some_and(|d| start.elapsed() >= d)
                    || mine
                        .iter()
                        .all(|tp| c.position(tp).unwrap_or(0) >= ends.get(tp).copied().unwrap_or(0));
                if done {
                    break;
                }
                for r in c.poll(Duration::from_millis(500)).await? {
                    let n = r.value.as_ref().map_or(0, |v| v.len()) + r.key.as_ref().map_or(0, |k| k.len());
                    progress.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    progress.records.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = start.elapsed();
    progress.stop.store(true, Ordering::Relaxed);
    let _ = shown.await;
    let records = progress.records.load(Ordering::Relaxed);
    report(
        "consume",
        &common,
        json!({"partitions": tps.len(), "consumers": k}),
        Totals {
            records,
            bytes: progress.bytes.load(Ordering::Relaxed),
            errors: 0,
            secs: elapsed.as_secs_f64(),
        },
        None,
    );
    Ok(())
}

async fn e2e(conn: &Conn, common: Common, opts: ProduceOpts) -> Result<()> {
    if opts.record_size < 8 {
        anyhow::bail!("--record-size must be at least 8 (the send time travels in the value)");
    }
    let admin = Admin::new(new_client(conn).await?);
    let partitions = ensure_topic(&admin, &common.topic, common.partitions).await?;
    let tps = admin.partitions_of(std::slice::from_ref(&common.topic)).await?;
    let mut consumer = Consumer::new(
        new_client(conn).await?,
        ConsumerConfig {
            fetch_max_wait: Duration::from_millis(100),
            ..Default::default()
        },
    )?;
    consumer.assign(&tps);
    for tp in &tps {
        consumer.seek(tp, Seek::End).await?;
    }
    let received = Arc::new(Progress::default());
    let hist = Arc::new(Mutex::new(Histogram::default()));
    let produced_all = Arc::new(AtomicU64::new(u64::MAX));
    let reader = {
        let received = received.clone();
        let hist = hist.clone();
        let produced_all = produced_all.clone();
        tokio::spawn(async move {
            let mut drain_deadline: Option<Instant> = None;
            loop {
                let n = received.records.load(Ordering::Relaxed);
                let total = produced_all.load(Ordering::Relaxed);
                if total != u64::MAX {
                    let d = *drain_deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(10));
                    if n >= total || Instant::now() >= d {
                        break;
                    }
                }
                for r in consumer.poll(Duration::from_millis(100)).await? {
                    let now = unix_nanos();
                    if let Some(v) = r.value.as_ref().filter(|v| v.len() >= 8) {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&v[..8]);
                        let sent = u64::from_be_bytes(b);
                        if let Ok(mut h) = hist.lock() {
                            h.record(now.saturating_sub(sent) / 1000);
                        }
                        received.bytes.fetch_add(v.len() as u64, Ordering::Relaxed);
                    }
                    received.records.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        })
    };
    let progress = Arc::new(Progress::default());
    let (count, _) = limits(&common);
    let shown = spawn_progress(
        progress.clone(),
        "e2e",
        count,
        common.duration.or(count.is_none().then_some(10.0)),
    );
    let (phist, _sent, errors, elapsed) = run_producers(conn, &common, &opts, progress.clone(), true).await?;
    progress.stop.store(true, Ordering::Relaxed);
    let _ = shown.await;
    let acked = progress.records.load(Ordering::Relaxed);
    produced_all.store(acked, Ordering::Relaxed);
    reader.await??;
    let got = received.records.load(Ordering::Relaxed);
    let h = hist.lock().map(|h| h.clone()).unwrap_or_default();
    let extra = json!({
        "partitions": partitions, "record_size": opts.record_size, "acks": opts.acks,
        "compression": opts.compression, "producers": opts.producers, "rate": opts.rate,
        "produced": acked, "received": got, "produce_latency_ms": phist.summary(),
    });
    report(
        "e2e",
        &common,
        extra,
        Totals {
            records: got,
            bytes: received.bytes.load(Ordering::Relaxed),
            errors,
            secs: elapsed.as_secs_f64(),
        },
        Some(&h),
    );
    if got < acked {
        anyhow::bail!(
            "{} acknowledged records were not received within 10 s of the end",
            acked - got
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_two_percent() {
        let mut h = Histogram::default();
        for us in 1..=100_000u64 {
            h.record(us);
        }
        for (q, want) in [(0.5, 50_000.0), (0.99, 99_000.0), (0.999, 99_900.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.02, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), 100_000);
        assert_eq!(h.quantile(0.0), 1);
        let mut big = Histogram::default();
        big.record(u64::MAX / 2);
        big.record(5);
        assert_eq!(big.quantile(0.5), 5);
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }

    #[test]
    fn histogram_buckets_are_monotonic() {
        let mut last = 0;
        for us in (0..10_000_000u64).step_by(997) {
            let i = Histogram::index(us);
            assert!(i >= last);
            last = i;
            let v = Histogram::value(i) as f64;
            assert!(
                us < 128 || (v - us as f64).abs() / us as f64 <= 1.0 / 64.0 + 1e-9,
                "{us} -> {v}"
            );
        }
    }
}
