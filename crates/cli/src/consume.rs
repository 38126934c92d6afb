//! `sluice consume`: print records, alone (every partition, from a chosen position) or as a
//! group member.

use crate::common::{block_on, text, Conn};
use anyhow::Result;
use client::assignor::Assignor;
use client::consumer::TopicPartition;
use client::{Admin, AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRecord, OffsetSpec, Seek};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  sluice consume orders --from-beginning -e           # everything, then exit\n  sluice consume orders -g billing                    # as a member of group billing\n  sluice consume orders -p 0 --offset 42 -n 10\n  sluice consume orders --from-beginning -f '%p/%o %k=%s\\n'\n  sluice consume orders --from-beginning -e -o json  # JSON lines\n\n\
Format tokens (-f): %t topic, %p partition, %o offset, %T timestamp (ms), %k key, %s value,\n\
%K key length, %S value length, %h headers (k=v,...), %% a percent sign; \\n, \\t and \\\\ escapes.\n\
Null keys and values print as nothing. Without -g the consumer starts at the end unless told\n\
otherwise; with -g it starts at the group's committed offsets (--from-beginning where none)."
)]
pub struct ConsumeArgs {
    #[command(flatten)]
    conn: Conn,
    #[arg(required = true)]
    topics: Vec<String>,
    /// Consume as a member of this group (partitions are shared with its other members).
    #[arg(long, short = 'g')]
    group: Option<String>,
    /// Start at the oldest record (with -g: where the group has no committed offset).
    #[arg(long)]
    from_beginning: bool,
    /// Start at this offset in every consumed partition (without -g).
    #[arg(long, conflicts_with_all = ["from_beginning", "timestamp", "group"])]
    offset: Option<i64>,
    /// Start at the first record at or after this time, in ms since the epoch (without -g).
    #[arg(long, conflicts_with_all = ["from_beginning", "group"])]
    timestamp: Option<i64>,
    /// Only these partitions (without -g); may be repeated.
    #[arg(long, short = 'p', conflicts_with = "group")]
    partition: Vec<i32>,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Stop at the end of every partition (its end when consuming began).
    #[arg(long, short = 'e')]
    exit_at_end: bool,
    /// Stop when no record arrives for this many ms.
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
    /// Partition assignor(s) to offer the group, in order of preference: range,
    /// cooperative-sticky; may be repeated.
    #[arg(long, requires = "group", default_values = ["range", "cooperative-sticky"], value_parser = parse_assignor)]
    assignor: Vec<Assignor>,
    /// Output template (see below); ignored with -o json.
    #[arg(long, short = 'f', default_value = "%s\\n")]
    format: String,
}

pub fn run(args: ConsumeArgs) -> Result<()> {
    block_on(async move {
        let client = args.conn.client().await?;
        let config = ConsumerConfig {
            group_id: args.group.clone(),
            auto_offset_reset: if args.from_beginning {
                AutoOffsetReset::Earliest
            } else {
                AutoOffsetReset::Latest
            },
            assignors: args.assignor.clone(),
            ..Default::default()
        };
        let admin = Admin::new(client.clone());
        let mut consumer = Consumer::new(client, config)?;
        if args.group.is_some() {
            consumer.subscribe(&args.topics)?;
        } else {
            let mut tps = admin.partitions_of(&args.topics).await?;
            if !args.partition.is_empty() {
                for p in &args.partition {
                    if !tps.iter().any(|(_, x)| x == p) {
                        anyhow::bail!("no partition {p} in {}", args.topics.join(", "));
                    }
                }
                tps.retain(|(_, p)| args.partition.contains(p));
            }
            consumer.assign(&tps);
            let to = match (args.offset, args.timestamp, args.from_beginning) {
                (Some(o), _, _) => Seek::Offset(o),
                (_, Some(t), _) => Seek::Timestamp(t),
                (_, _, true) => Seek::Beginning,
                _ => Seek::End,
            };
            for tp in &tps {
                consumer.seek(tp, to).await?;
            }
        }
        let template = parse_template(&args.format);
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut ends: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        let mut seen = 0u64;
        let mut last_record = Instant::now();
        let stop = crate::common::shutdown_signal();
        tokio::pin!(stop);
        let result: Result<()> = loop {
            let records = tokio::select! {
                r = consumer.poll(Duration::from_millis(200)) => r,
                _ = &mut stop => break Ok(()),
            };
            let records = match records {
                Ok(r) => r,
                Err(e) => break Err(e.into()),
            };
            if !records.is_empty() {
                last_record = Instant::now();
            }
            let mut done = false;
            let mut write_error = None;
            for (i, r) in records.iter().enumerate() {
                let written = if args.conn.json() {
                    writeln!(out, "{}", record_json(r))
                } else {
                    out.write_all(&render(&template, r))
                };
                if let Err(e) = written {
                    write_error = Some(e);
                    break;
                }
                seen += 1;
                if args.count.is_some_and(|n| seen >= n) {
                    // Records returned but not printed are not consumed: move each partition's
                    // position back to its first unprinted record, so the commit on close
                    // covers only what was printed.
                    let mut rewound = std::collections::BTreeSet::new();
                    for rest in &records[i + 1..] {
                        let tp = (rest.topic.clone(), rest.partition);
                        if rewound.insert(tp.clone()) {
                            consumer.seek(&tp, Seek::Offset(rest.offset)).await?;
                        }
                    }
                    done = true;
                    break;
                }
            }
            if let Some(e) = write_error.or_else(|| out.flush().err()) {
                // A closed pipe (`| head`) ends the command quietly, after a proper close.
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    break Ok(());
                }
                break Err(e.into());
            }
            if done {
                break Ok(());
            }
            if args.exit_at_end && at_end(&admin, &consumer, &mut ends).await? {
                break Ok(());
            }
            if args
                .idle_timeout_ms
                .is_some_and(|ms| last_record.elapsed() >= Duration::from_millis(ms))
            {
                break Ok(());
            }
        };
        let closed = consumer.close().await;
        result?;
        if args.group.is_some() {
            closed?;
        }
        Ok(())
    })
}

fn parse_assignor(s: &str) -> Result<Assignor, String> {
    Assignor::from_name(s).ok_or_else(|| format!("unknown assignor {s:?}: expected range or cooperative-sticky"))
}

/// Whether every assigned partition's position has reached its end offset (as first seen).
async fn at_end(admin: &Admin, consumer: &Consumer, ends: &mut BTreeMap<TopicPartition, i64>) -> Result<bool> {
    let assigned = consumer.assignment();
    if assigned.is_empty() {
        return Ok(false);
    }
    let unknown: Vec<TopicPartition> = assigned.iter().filter(|tp| !ends.contains_key(*tp)).cloned().collect();
    if !unknown.is_empty() {
        ends.extend(admin.list_offsets(&unknown, OffsetSpec::Latest).await?);
    }
    Ok(assigned.iter().all(|tp| {
        consumer
            .position(tp)
            .is_some_and(|p| p >= ends.get(tp).copied().unwrap_or(0))
    }))
}

fn record_json(r: &ConsumerRecord) -> serde_json::Value {
    json!({
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": r.timestamp,
        "key": text(&r.key),
        "value": text(&r.value),
        "headers": r.headers.iter().map(|(k, v)| json!({
            "key": String::from_utf8_lossy(k),
            "value": text(v),
        })).collect::<Vec<_>>(),
    })
}

#[derive(Debug, PartialEq)]
enum Part {
    Lit(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Timestamp,
    Key,
    Value,
    KeyLen,
    ValueLen,
    Headers,
}

fn parse_template(s: &str) -> Vec<Part> {
    let mut parts = vec![];
    let mut lit = vec![];
    let mut chars = s.chars().peekable();
    let push = |parts: &mut Vec<Part>, lit: &mut Vec<u8>, p: Part| {
        if !lit.is_empty() {
            parts.push(Part::Lit(std::mem::take(lit)));
        }
        parts.push(p);
    };
    while let Some(c) = chars.next() {
        match (c, chars.peek().copied()) {
            ('%', Some(n)) => {
                let p = match n {
                    't' => Some(Part::Topic),
                    'p' => Some(Part::Partition),
                    'o' => Some(Part::Offset),
                    'T' => Some(Part::Timestamp),
                    'k' => Some(Part::Key),
                    's' => Some(Part::Value),
                    'K' => Some(Part::KeyLen),
                    'S' => Some(Part::ValueLen),
                    'h' => Some(Part::Headers),
                    '%' => {
                        lit.push(b'%');
                        None
                    }
                    other => {
                        lit.push(b'%');
                        lit.extend(other.to_string().as_bytes());
                        None
                    }
                };
                chars.next();
                if let Some(p) = p {
                    push(&mut parts, &mut lit, p);
                }
            }
            ('\\', Some(n)) => {
                let e = match n {
                    'n' => "\n".to_string(),
                    't' => "\t".to_string(),
                    '\\' => "\\".to_string(),
                    other => format!("\\{other}"),
                };
                lit.extend(e.as_bytes());
                chars.next();
            }
            (c, _) => lit.extend(c.to_string().as_bytes()),
        }
    }
    if !lit.is_empty() {
        parts.push(Part::Lit(lit));
    }
    parts
}

fn render(template: &[Part], r: &ConsumerRecord) -> Vec<u8> {
    let mut out = Vec::new();
    let len = |b: &Option<bytes::Bytes>| b.as_ref().map_or(-1, |b| b.len() as i64).to_string();
    for p in template {
        match p {
            Part::Lit(l) => out.extend_from_slice(l),
            Part::Topic => out.extend_from_slice(r.topic.as_bytes()),
            Part::Partition => out.extend_from_slice(r.partition.to_string().as_bytes()),
            Part::Offset => out.extend_from_slice(r.offset.to_string().as_bytes()),
            Part::Timestamp => out.extend_from_slice(r.timestamp.to_string().as_bytes()),
            Part::Key => out.extend_from_slice(r.key.as_deref().unwrap_or_default()),
            Part::Value => out.extend_from_slice(r.value.as_deref().unwrap_or_default()),
            Part::KeyLen => out.extend_from_slice(len(&r.key).as_bytes()),
            Part::ValueLen => out.extend_from_slice(len(&r.value).as_bytes()),
            Part::Headers => {
                let hs: Vec<String> = r
                    .headers
                    .iter()
                    .map(|(k, v)| format!("{}={}", String::from_utf8_lossy(k), text(v).unwrap_or_default()))
                    .collect();
                out.extend_from_slice(hs.join(",").as_bytes());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_like_kcat() {
        let r = ConsumerRecord {
            topic: "t".into(),
            partition: 2,
            offset: 7,
            timestamp: 1000,
            key: Some("k".into()),
            value: Some("v".into()),
            headers: vec![("h".into(), Some("x".into())), ("n".into(), None)],
        };
        let t = parse_template("%t/%p@%o %T %k=%s (%K,%S) [%h] 100%% %q\\t\\n");
        assert_eq!(
            String::from_utf8(render(&t, &r)).unwrap(),
            "t/2@7 1000 k=v (1,1) [h=x,n=] 100% %q\t\n"
        );
        let null = ConsumerRecord { key: None, ..r };
        assert_eq!(render(&parse_template("%k|%K"), &null), b"|-1");
    }
}
