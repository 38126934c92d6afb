//! `sluice verify run` and `sluice verify check`: a workload with the native client that writes
//! down everything its producers and consumers asked for and were told (the history format of
//! docs/verify.md, in the `verify` crate), and the checker over such histories.
//!
//! The run rides through broker restarts, pauses and full disks: every client retries on its
//! own, and what could not be confirmed is written down as unknown, never guessed. It ends
//! with a reader that reads every partition from where the run started to its end, so that
//! every acknowledged record is either read or proven lost.

use crate::common::{block_on, Conn, EXIT_FAILED, EXIT_USAGE};
use crate::produce::{parse_acks, parse_compression};
use anyhow::{bail, Context, Result};
use client::admin::NewTopic;
use client::{
    Admin, AutoOffsetReset, Client, ClientConfig, Consumer, ConsumerConfig, Error, OffsetSpec, Producer,
    ProducerConfig, ProducerRecord, Seek,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use verify::{Event, Kind, Outcome};

#[derive(clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: VerifyCmd,
}

#[derive(clap::Subcommand)]
enum VerifyCmd {
    /// Produce and consume unique records, writing down every attempt and every outcome.
    #[command(after_help = "Examples:\n  \
        sluice verify run --topic vt --partitions 4 --duration 20s --acks all --idempotent --history h.jsonl\n  \
        sluice verify run -b broker1:9092 --producers 4 --consumers 4 --acks 1,all --rate 5000 --history h.jsonl\n\n\
        Then: sluice verify check h.jsonl")]
    Run(RunArgs),
    /// Check histories: lost, unexpected, duplicated, reordered and skipped records, and
    /// committed offsets that went back. Exits 0 only when no safety violation is found.
    #[command(
        after_help = "Examples:\n  sluice verify check h.jsonl\n  sluice verify check native.jsonl py-*.jsonl -o json\n\n\
        The history format and every count: docs/verify.md."
    )]
    Check {
        /// History files (JSON lines), checked together.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// Topic to write and read; created with --partitions when missing.
    #[arg(long, short = 't', default_value = "sluice-verify")]
    topic: String,
    /// Partitions of the topic when it is created.
    #[arg(long, short = 'p', default_value_t = 4)]
    partitions: i32,
    /// Replication factor of the topic when it is created (-1: the broker's default).
    #[arg(long, default_value_t = -1)]
    replication_factor: i16,
    /// Producers, each with its own connection.
    #[arg(long, default_value_t = 2)]
    producers: usize,
    /// Consumers: even ones join a group and commit, odd ones are assigned every partition.
    #[arg(long, default_value_t = 2)]
    consumers: usize,
    /// How long to produce, e.g. 20s, 2m, 500ms (then the run drains and reads everything).
    #[arg(long, short = 'd', default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Records per second, in all.
    #[arg(long, short = 'r', default_value_t = 1000.0)]
    rate: f64,
    /// Acks of the producers, cycled over them: all, 1, or a list such as 1,all.
    #[arg(long, default_value = "all")]
    acks: String,
    /// Producers with acks=all are idempotent.
    #[arg(long)]
    idempotent: bool,
    /// Compression of the producers, cycled over them.
    #[arg(long, short = 'z', default_value = "none,lz4")]
    compression: String,
    /// How long a producer keeps retrying a record before it is written down as unknown.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    delivery_timeout: Duration,
    /// How long the final read may take before the run gives up on it.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// The consumer group of the group members (default: <topic>-verify-<run id>).
    #[arg(long)]
    group: Option<String>,
    /// Names this run's clients and values (default: the process id and start time).
    #[arg(long)]
    run_id: Option<String>,
    /// Where to write the history (JSON lines).
    #[arg(long, default_value = "history.jsonl")]
    history: PathBuf,
}

pub fn run(args: VerifyArgs) -> Result<()> {
    match args.cmd {
        VerifyCmd::Check { files } => check(&files, args.conn.json()),
        VerifyCmd::Run(run) => block_on(workload(args.conn, run)),
    }
}

fn check(files: &[PathBuf], json: bool) -> Result<()> {
    let mut histories = Vec::new();
    for f in files {
        let name = f.display().to_string();
        let file = std::fs::File::open(f).with_context(|| format!("cannot open {name}"))?;
        match verify::read_history(&name, std::io::BufReader::new(file)) {
            Ok((events, cut)) => histories.push((name, events, cut)),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(EXIT_USAGE);
            }
        }
    }
    let report = verify::check(&histories);
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    if !report.passed() {
        std::process::exit(EXIT_FAILED);
    }
    Ok(())
}

/// `20s`, `2m`, `500ms`, `1h` or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 20s, 2m or 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: the unit must be ms, s, m or h")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?}: out of range"))
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Where every client's events go: one writer thread appends them to the history file.
/// The channel holds at most `HISTORY_QUEUE` events; at the limit, clients wait for the disk
/// (the history is never allowed to fall behind what the clients were told).
const HISTORY_QUEUE: usize = 65_536;

#[derive(Clone)]
struct History(mpsc::Sender<Event>);

impl History {
    async fn write(&self, e: Event) {
        // The writer only stops after every sender is gone.
        let _ = self.0.send(e).await;
    }
}

fn spawn_writer(path: PathBuf) -> Result<(History, std::thread::JoinHandle<std::io::Result<u64>>)> {
    let file = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let (tx, mut rx) = mpsc::channel::<Event>(HISTORY_QUEUE);
    let handle = std::thread::spawn(move || {
        let mut out = std::io::BufWriter::new(file);
        let mut n = 0u64;
        while let Some(e) = rx.blocking_recv() {
            writeln!(out, "{}", e.to_line())?;
            n += 1;
            // Flushed whenever the queue runs dry, so a killed run leaves what it saw.
            if rx.is_empty() {
                out.flush()?;
            }
        }
        out.flush()?;
        Ok(n)
    });
    Ok((History(tx), handle))
}

/// A client that waits out broker restarts: connecting is retried until `deadline`.
async fn connect(conn: &Conn, name: &str, deadline: Instant) -> Result<Client> {
    let mut cfg = ClientConfig::new(&conn.bootstrap);
    cfg.client_id = name.to_string();
    cfg.connect_timeout = Duration::from_secs(5);
    cfg.request_timeout = Duration::from_secs(10);
    loop {
        match Client::connect(cfg.clone()).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(client = name, error = %e, "connect failed; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Retries `f` on retriable errors until `deadline`.
async fn retry<T, F, Fut>(what: &str, deadline: Instant, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = client::Result<T>>,
{
    loop {
        match f().await {
            Ok(x) => return Ok(x),
            Err(e) if e.is_retriable() && Instant::now() < deadline => {
                tracing::debug!(error = %e, "{what} failed; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(anyhow::Error::from(e).context(what.to_string())),
        }
    }
}

/// A failed delivery or commit is unknown when the client could not tell whether it happened
/// (no answer, a lost connection, a retriable error it gave up on), and failed otherwise.
fn outcome_of(e: &Error) -> Outcome {
    match e {
        Error::Timeout { .. } | Error::Io { .. } | Error::Unreachable { .. } | Error::Closed(_) => Outcome::Unknown,
        e if e.is_retriable() => Outcome::Unknown,
        _ => Outcome::Fail,
    }
}

async fn workload(conn: Conn, args: RunArgs) -> Result<()> {
    if args.producers == 0 && args.consumers == 0 {
        bail!("--producers and --consumers are both 0: nothing to run");
    }
    let acks: Vec<i16> = args
        .acks
        .split(',')
        .map(|a| parse_acks(a.trim()))
        .collect::<Result<_>>()?;
    let codecs: Vec<_> = args
        .compression
        .split(',')
        .map(|c| parse_compression(c.trim()).map(|z| (c.trim().to_string(), z)))
        .collect::<Result<_>>()?;
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| format!("{}-{}", std::process::id(), now_us() / 1_000_000 % 100_000));
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| format!("{}-verify-{run_id}", args.topic));
    let setup_deadline = Instant::now() + Duration::from_secs(60);

    // The topic, and where each partition ends now: the run reads from there, so records of
    // earlier runs are not mistaken for this one's.
    let admin = Admin::new(connect(&conn, &format!("{run_id}-admin"), setup_deadline).await?);
    let topic = args.topic.clone();
    let new = NewTopic {
        name: topic.clone(),
        partitions: args.partitions,
        replication_factor: args.replication_factor,
        configs: vec![],
    };
    let created = retry("create the topic", setup_deadline, || {
        admin.create_topics(std::slice::from_ref(&new), false)
    })
    .await?;
    for (_, r) in created {
        if let Err(e) = r {
            if e.code() != Some(wire::ErrorCode::TopicAlreadyExists) {
                return Err(anyhow::Error::from(e).context(format!("cannot create topic {topic}")));
            }
        }
    }
    let tps = retry("describe the topic", setup_deadline, || {
        admin.partitions_of(std::slice::from_ref(&topic))
    })
    .await?;
    if tps.is_empty() {
        bail!("topic {topic} has no partitions");
    }
    let start = retry("list the end offsets", setup_deadline, || {
        admin.list_offsets(&tps, OffsetSpec::Latest)
    })
    .await?;
    // The group starts where the run starts (a new group would otherwise begin at the log
    // start and read records no producer of this run sent).
    retry("set the group's starting offsets", setup_deadline, || {
        admin.reset_offsets(&group, &start)
    })
    .await?;

    let (history, writer) = spawn_writer(args.history.clone())?;
    let stop_at = Instant::now() + args.duration;
    let sent = Arc::new(AtomicU64::new(0));
    eprintln!(
        "verify: run {run_id}: {} producers, {} consumers on {topic} ({} partitions) for {:?}; history {}",
        args.producers,
        args.consumers,
        tps.len(),
        args.duration,
        args.history.display()
    );

    let mut producers = Vec::new();
    let per_producer = args.rate / args.producers.max(1) as f64;
    for i in 0..args.producers {
        let name = format!("{run_id}-p{i}");
        let acks = acks[i % acks.len()];
        let (codec_name, codec) = codecs[i % codecs.len()].clone();
        let cfg = ProducerConfig {
            acks,
            compression: codec,
            idempotence: Some(args.idempotent && acks == -1),
            delivery_timeout: args.delivery_timeout,
            ..Default::default()
        };
        let client = connect(&conn, &name, setup_deadline).await?;
        let producer = retry("start a producer", setup_deadline, || {
            Producer::new(client.clone(), cfg.clone())
        })
        .await?;
        let mut e = Event::new(Kind::Producer, &name, now_us());
        e.topic = Some(topic.clone());
        e.library = Some("sluice".into());
        e.idempotent = Some(args.idempotent && acks == -1);
        e.acks = Some(if acks == -1 { "all".into() } else { acks.to_string() });
        e.compression = Some(codec_name);
        history.write(e).await;
        producers.push(tokio::spawn(produce(
            producer,
            name,
            topic.clone(),
            tps.len() as i32,
            per_producer,
            stop_at,
            history.clone(),
            sent.clone(),
        )));
    }

    let mut consumers = Vec::new();
    for i in 0..args.consumers {
        let name = format!("{run_id}-c{i}");
        let group = (i % 2 == 0).then(|| group.clone());
        let client = connect(&conn, &name, setup_deadline).await?;
        consumers.push(tokio::spawn(consume(
            client,
            name,
            topic.clone(),
            group,
            start.clone(),
            stop_at,
            None,
            history.clone(),
        )));
    }

    let mut failures = Vec::new();
    for p in producers {
        match p.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{e:#}")),
            Err(e) => failures.push(format!("producer task: {e}")),
        }
    }
    // Producers are done: everything they were told is written down. Now the end of each
    // partition, and a reader that reads from the run's start to there.
    let drain_deadline = Instant::now() + args.drain_timeout;
    let end = retry("list the end offsets", drain_deadline, || {
        admin.list_offsets(&tps, OffsetSpec::Latest)
    })
    .await;
    for c in consumers {
        match c.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{e:#}")),
            Err(e) => failures.push(format!("consumer task: {e}")),
        }
    }
    match end {
        Ok(end) => {
            let name = format!("{run_id}-final");
            match connect(&conn, &name, drain_deadline).await {
                Ok(client) => {
                    let r = consume(
                        client,
                        name,
                        topic.clone(),
                        None,
                        start.clone(),
                        drain_deadline,
                        Some(end),
                        history.clone(),
                    )
                    .await;
                    if let Err(e) = r {
                        failures.push(format!("final read: {e:#}"));
                    }
                }
                Err(e) => failures.push(format!("final read: {e:#}")),
            }
        }
        Err(e) => failures.push(format!("final read: {e:#}")),
    }
    drop(history);
    let lines = match writer.join() {
        Ok(r) => r.with_context(|| format!("cannot write {}", args.history.display()))?,
        Err(_) => bail!("the history writer panicked"),
    };
    eprintln!(
        "verify: {} records sent, {lines} events written to {}",
        sent.load(Ordering::Relaxed),
        args.history.display()
    );
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("verify: {f}");
        }
        bail!(
            "{} client(s) could not finish; the history holds what they saw",
            failures.len()
        );
    }
    eprintln!("verify: now check it: sluice verify check {}", args.history.display());
    Ok(())
}

/// One producer: unique values `<client>-<n>` at `rate` per second, to the partitions in turn,
/// each written down before it is sent and again with its outcome.
#[allow(clippy::too_many_arguments)]
async fn produce(
    producer: Producer,
    name: String,
    topic: String,
    partitions: i32,
    rate: f64,
    stop_at: Instant,
    history: History,
    sent: Arc<AtomicU64>,
) -> Result<()> {
    // Outcomes are written by a task of their own, in send order, so a slow acknowledgement
    // never holds up sending. At most `IN_FLIGHT` records wait for their outcome; at the
    // limit, sending waits.
    const IN_FLIGHT: usize = 10_000;
    let (tx, mut rx) = mpsc::channel::<(i32, String, client::Result<client::producer::DeliveryFuture>)>(IN_FLIGHT);
    let outcomes = {
        let history = history.clone();
        let name = name.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            while let Some((partition, value, delivery)) = rx.recv().await {
                let result = match delivery {
                    Ok(d) => d.await,
                    Err(e) => Err(e),
                };
                let mut e = Event::new(Kind::Produce, &name, now_us());
                e.topic = Some(topic.clone());
                e.partition = Some(partition);
                e.value = Some(value);
                match result {
                    Ok(m) => {
                        e.outcome = Some(Outcome::Ok);
                        e.offset = Some(m.offset);
                    }
                    Err(err) => {
                        e.outcome = Some(outcome_of(&err));
                        e.error = Some(err.to_string());
                    }
                }
                history.write(e).await;
            }
        })
    };
    let began = Instant::now();
    let mut n: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while Instant::now() < stop_at {
        tick.tick().await;
        let due = (began.elapsed().as_secs_f64() * rate) as u64;
        while n < due && Instant::now() < stop_at {
            let partition = (n % partitions as u64) as i32;
            let value = format!("{name}-{n}");
            n += 1;
            let mut e = Event::new(Kind::Send, &name, now_us());
            e.topic = Some(topic.clone());
            e.partition = Some(partition);
            e.value = Some(value.clone());
            history.write(e).await;
            let record = ProducerRecord::new(topic.clone(), value.clone().into_bytes()).partition(partition);
            let delivery = producer.send(record).await;
            let refused = delivery.is_err();
            sent.fetch_add(1, Ordering::Relaxed);
            if tx.send((partition, value, delivery)).await.is_err() {
                bail!("{name}: the outcome writer stopped");
            }
            if refused {
                // Not even queued (no metadata while the broker is down): back off.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Every record queued is delivered or has failed by the delivery timeout.
    producer.close().await;
    drop(tx);
    outcomes.await.context("the outcome writer")?;
    Ok(())
}

/// One consumer until `stop_at`: a group member (committing after every poll) or assigned
/// every partition from the run's start. With `until`, it stops once it has read every
/// partition to those offsets (the final reader).
#[allow(clippy::too_many_arguments)]
async fn consume(
    client: Client,
    name: String,
    topic: String,
    group: Option<String>,
    start: BTreeMap<(String, i32), i64>,
    stop_at: Instant,
    until: Option<BTreeMap<(String, i32), i64>>,
    history: History,
) -> Result<()> {
    let cfg = ConsumerConfig {
        group_id: group.clone(),
        auto_offset_reset: AutoOffsetReset::Earliest,
        enable_auto_commit: false,
        session_timeout: Duration::from_secs(10),
        heartbeat_interval: Duration::from_secs(1),
        ..Default::default()
    };
    let mut consumer = Consumer::new(client, cfg)?;
    let mut e = Event::new(Kind::Consumer, &name, now_us());
    e.topic = Some(topic.clone());
    e.library = Some("sluice".into());
    e.group = group.clone();
    history.write(e).await;
    let assign_event = |partitions: Vec<i32>| {
        let mut e = Event::new(Kind::Assign, &name, now_us());
        e.topic = Some(topic.clone());
        e.partitions = Some(partitions);
        e
    };
    if group.is_some() {
        consumer.subscribe(std::slice::from_ref(&topic))?;
    } else {
        let tps: Vec<_> = start.keys().cloned().collect();
        consumer.assign(&tps);
        history.write(assign_event(tps.iter().map(|tp| tp.1).collect())).await;
        for (tp, offset) in &start {
            // A seek to an offset only sets the position: nothing to retry.
            consumer.seek(tp, Seek::Offset(*offset)).await?;
            let mut e = Event::new(Kind::Seek, &name, now_us());
            e.topic = Some(topic.clone());
            e.partition = Some(tp.1);
            e.offset = Some(*offset);
            history.write(e).await;
        }
    }
    // What the assignment was at the last poll: (member id, generation, partitions).
    let mut seen: Option<(String, Option<i32>, Vec<(String, i32)>)> = None;
    let mut failed_polls = 0u64;
    while Instant::now() < stop_at {
        if let Some(until) = &until {
            let done = until
                .iter()
                .all(|(tp, end)| consumer.position(tp).is_some_and(|p| p >= *end));
            if done {
                break;
            }
        }
        let records = match consumer.poll(Duration::from_millis(200)).await {
            Ok(r) => r,
            Err(e) => {
                failed_polls += 1;
                tracing::debug!(client = %name, error = %e, "poll failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if group.is_some() {
            let now = (
                consumer.member_id().unwrap_or_default().to_string(),
                consumer.generation(),
                consumer.assignment(),
            );
            if seen.as_ref() != Some(&now) {
                history.write(assign_event(now.2.iter().map(|tp| tp.1).collect())).await;
                seen = Some(now);
            }
        }
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for r in &records {
            let mut e = Event::new(Kind::Read, &name, now_us());
            e.topic = Some(r.topic.clone());
            e.partition = Some(r.partition);
            e.offset = Some(r.offset);
            e.value = Some(
                r.value
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default(),
            );
            history.write(e).await;
            next.insert((r.topic.clone(), r.partition), r.offset + 1);
        }
        if let (Some(g), false) = (&group, next.is_empty()) {
            let sent = now_us();
            let result = consumer.commit_offsets(next.clone()).await;
            let time = now_us();
            for (tp, offset) in &next {
                let mut e = Event::new(Kind::Commit, &name, time);
                e.topic = Some(tp.0.clone());
                e.partition = Some(tp.1);
                e.offset = Some(*offset);
                e.group = Some(g.clone());
                e.sent = Some(sent);
                match &result {
                    Ok(()) => e.outcome = Some(Outcome::Ok),
                    Err(err) => {
                        e.outcome = Some(outcome_of(err));
                        e.error = Some(err.to_string());
                    }
                }
                history.write(e).await;
            }
        }
    }
    if failed_polls > 0 {
        tracing::info!(client = %name, failed_polls, "polls failed and were retried");
    }
    if let Some(until) = &until {
        let short: Vec<String> = until
            .iter()
            .filter(|(tp, end)| consumer.position(tp).is_none_or(|p| p < **end))
            .map(|(tp, end)| format!("{}-{} (at {:?} of {end})", tp.0, tp.1, consumer.position(tp)))
            .collect();
        if !short.is_empty() {
            bail!(
                "{name} did not reach the end of {} before the drain timeout",
                short.join(", ")
            );
        }
    }
    // Leaving is best effort: a broker that is down now cannot be told.
    let _ = tokio::time::timeout(Duration::from_secs(5), consumer.close()).await;
    Ok(())
}
