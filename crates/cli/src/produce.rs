//! `sluice produce`: one record per input line, from stdin or a file.

use crate::common::{block_on, key_value, print_json, Conn};
use anyhow::{Context, Result};
use bytes::Bytes;
use client::{Compression, Producer, ProducerConfig, ProducerRecord};
use serde_json::json;
use std::collections::VecDeque;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

/// Deliveries awaited at once; reading input pauses beyond this.
const MAX_PENDING: usize = 100_000;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  echo hello | sluice produce orders\n  sluice produce orders -K : < keyed.txt        # lines like user1:payload\n  sluice produce orders -f events.txt -z lz4 -H source=import\n\n\
Keyed records go to the partition the Java client would choose (murmur2 of the key);\n\
unkeyed ones fill one partition's batch at a time. Exits 1 if any record failed."
)]
pub struct ProduceArgs {
    #[command(flatten)]
    conn: Conn,
    topic: String,
    /// Read lines from this file instead of stdin.
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// Split each line at the first SEP into key and value.
    #[arg(long = "key-separator", short = 'K', value_name = "SEP")]
    key_separator: Option<String>,
    /// A header for every record, KEY=VALUE; may be repeated.
    #[arg(long = "header", short = 'H', value_parser = key_value)]
    headers: Vec<(String, String)>,
    /// Write every record to this partition.
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    /// all, 1 or 0.
    #[arg(long, default_value = "all")]
    acks: String,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, short = 'z', default_value = "none")]
    compression: String,
    /// How long a batch waits for more records.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
}

pub fn parse_acks(s: &str) -> Result<i16> {
    match s {
        "all" | "-1" => Ok(-1),
        "1" => Ok(1),
        "0" => Ok(0),
        _ => anyhow::bail!("--acks {s:?}: expected all, 1 or 0"),
    }
}

pub fn parse_compression(s: &str) -> Result<Compression> {
    Compression::from_name(s).with_context(|| format!("--compression {s:?}: expected none, gzip, snappy, lz4 or zstd"))
}

pub fn run(args: ProduceArgs) -> Result<()> {
    let acks = parse_acks(&args.acks)?;
    let compression = parse_compression(&args.compression)?;
    let input: Box<dyn BufRead + Send> = match &args.file {
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    block_on(async move {
        let client = args.conn.client().await?;
        let config = ProducerConfig {
            acks,
            compression,
            linger: Duration::from_millis(args.linger_ms),
            ..Default::default()
        };
        let producer = Producer::new(client, config).await?;
        let headers: Vec<(String, Option<Bytes>)> = args
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Some(Bytes::from(v.clone()))))
            .collect();
        // Lines are read on a blocking thread and handed over in chunks.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<Vec<u8>>>>(4);
        let reader = tokio::task::spawn_blocking(move || {
            let mut input = input;
            let mut chunk = Vec::with_capacity(1024);
            loop {
                let mut line = Vec::new();
                match input.read_until(b'\n', &mut line) {
                    Ok(0) => break,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                            if line.last() == Some(&b'\r') {
                                line.pop();
                            }
                        }
                        chunk.push(line);
                        if chunk.len() == 1024 && tx.blocking_send(Ok(std::mem::take(&mut chunk))).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
            if !chunk.is_empty() {
                let _ = tx.blocking_send(Ok(chunk));
            }
        });
        let mut pending = VecDeque::new();
        let (mut sent, mut failed) = (0u64, 0u64);
        let mut first_error: Option<String> = None;
        let mut note = |r: client::Result<client::RecordMetadata>, failed: &mut u64| {
            if let Err(e) = r {
                *failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        };
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk.context("reading input")?;
            for line in chunk {
                let (key, value) = match &args.key_separator {
                    Some(sep) => match find(&line, sep.as_bytes()) {
                        Some(i) => (
                            Some(Bytes::copy_from_slice(&line[..i])),
                            Bytes::copy_from_slice(&line[i + sep.len()..]),
                        ),
                        None => (None, Bytes::from(line)),
                    },
                    None => (None, Bytes::from(line)),
                };
                let rec = ProducerRecord {
                    topic: args.topic.clone(),
                    partition: args.partition,
                    key,
                    value: Some(value),
                    headers: headers.clone(),
                    timestamp: None,
                };
                match producer.send(rec).await {
                    Ok(f) => pending.push_back(f),
                    Err(e) => note(Err(e), &mut failed),
                }
                sent += 1;
                if pending.len() >= MAX_PENDING {
                    if let Some(f) = pending.pop_front() {
                        note(f.await, &mut failed);
                    }
                }
            }
        }
        let _ = reader.await;
        producer.flush().await;
        for f in pending {
            note(f.await, &mut failed);
        }
        producer.close().await;
        let ok = sent - failed;
        if args.conn.json() {
            print_json(&json!({"topic": args.topic, "produced": ok, "failed": failed, "error": first_error}));
        } else {
            eprintln!(
                "produced {ok} record{} to {}",
                if ok == 1 { "" } else { "s" },
                args.topic
            );
        }
        if let Some(e) = first_error {
            anyhow::bail!("{failed} of {sent} records failed; the first: {e}");
        }
        Ok(())
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}
