//! `sluice group`: list, describe (offsets, ends, lag, members), reset-offsets, delete.

use crate::common::{block_on, check_results, print_json, print_table, Conn};
use anyhow::Result;
use client::consumer::TopicPartition;
use client::OffsetSpec;
use serde_json::json;
use std::collections::BTreeMap;

#[derive(clap::Args)]
pub struct GroupArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: GroupCmd,
}

#[derive(clap::Subcommand)]
enum GroupCmd {
    /// List consumer groups.
    #[command(after_help = "Examples:\n  sluice group list")]
    List,
    /// Show a group's state and members, and per partition its committed offset, end offset and lag.
    #[command(after_help = "Examples:\n  sluice group describe billing\n  sluice group describe billing -o json")]
    Describe { group: String },
    /// Move a group's committed offsets (the group must have no active members). Shows the
    /// plan; --execute applies it.
    #[command(
        after_help = "Examples:\n  sluice group reset-offsets billing --topic orders --to-earliest            # dry run\n  sluice group reset-offsets billing --topic orders --to-earliest --execute\n  sluice group reset-offsets billing --topic orders --shift-by -100 --execute\n  sluice group reset-offsets billing --topic orders --to-timestamp 1767225600000 --execute"
    )]
    ResetOffsets {
        group: String,
        /// Topic whose offsets to move (all its partitions); may be repeated.
        #[arg(long, required = true)]
        topic: Vec<String>,
        #[arg(long, group = "to")]
        to_earliest: bool,
        #[arg(long, group = "to")]
        to_latest: bool,
        #[arg(long, group = "to")]
        to_offset: Option<i64>,
        /// The first offset at or after this time (ms since the epoch).
        #[arg(long, group = "to")]
        to_timestamp: Option<i64>,
        /// Move the committed offsets by N (negative: back), within the log.
        #[arg(long, group = "to", allow_hyphen_values = true)]
        shift_by: Option<i64>,
        /// Apply the plan (without it, only print it).
        #[arg(long)]
        execute: bool,
    },
    /// Delete groups (they must have no active members).
    #[command(after_help = "Examples:\n  sluice group delete billing")]
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
}

fn opt(v: Option<i64>) -> String {
    v.map_or("-".into(), |x| x.to_string())
}

pub fn run(args: GroupArgs) -> Result<()> {
    block_on(async move {
        let conn = &args.conn;
        let admin = conn.admin().await?;
        match args.cmd {
            GroupCmd::List => {
                let groups = admin.list_groups().await?;
                if conn.json() {
                    print_json(&json!(groups
                        .iter()
                        .map(|g| json!({"group": g.group_id, "state": g.state, "protocol_type": g.protocol_type}))
                        .collect::<Vec<_>>()));
                } else {
                    let rows: Vec<Vec<String>> = groups
                        .iter()
                        .map(|g| vec![g.group_id.clone(), g.state.clone(), g.protocol_type.clone()])
                        .collect();
                    print_table(&["GROUP", "STATE", "PROTOCOL TYPE"], &rows);
                }
                Ok(())
            }
            GroupCmd::Describe { group } => {
                let desc = admin.describe_group(&group).await?;
                if desc.state == "Dead" {
                    anyhow::bail!("group '{group}' does not exist");
                }
                let lag = admin.group_lag(&group).await?;
                let client_of: BTreeMap<&str, &str> = desc
                    .members
                    .iter()
                    .map(|m| (m.member_id.as_str(), m.client_id.as_str()))
                    .collect();
                if conn.json() {
                    print_json(&json!({
                        "group": desc.group_id,
                        "state": desc.state,
                        "protocol_type": desc.protocol_type,
                        "assignor": desc.protocol,
                        "members": desc.members.iter().map(|m| json!({
                            "member_id": m.member_id,
                            "client_id": m.client_id,
                            "host": m.client_host,
                            "assignment": m.assignment.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                        "offsets": lag.iter().map(|l| json!({
                            "topic": l.topic,
                            "partition": l.partition,
                            "committed": (l.committed >= 0).then_some(l.committed),
                            "end": l.end,
                            "lag": l.lag,
                            "member": l.member,
                        })).collect::<Vec<_>>(),
                    }));
                    return Ok(());
                }
                println!(
                    "Group: {}  State: {}  Assignor: {}  Members: {}",
                    desc.group_id,
                    desc.state,
                    if desc.protocol.is_empty() { "-" } else { &desc.protocol },
                    desc.members.len()
                );
                let rows: Vec<Vec<String>> = lag
                    .iter()
                    .map(|l| {
                        vec![
                            l.topic.clone(),
                            l.partition.to_string(),
                            opt((l.committed >= 0).then_some(l.committed)),
                            l.end.to_string(),
                            opt(l.lag),
                            l.member.clone().unwrap_or_else(|| "-".into()),
                            l.member
                                .as_deref()
                                .and_then(|m| client_of.get(m))
                                .map_or("-".into(), |c| c.to_string()),
                        ]
                    })
                    .collect();
                print_table(
                    &["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "MEMBER", "CLIENT"],
                    &rows,
                );
                Ok(())
            }
            GroupCmd::ResetOffsets {
                group,
                topic,
                to_earliest,
                to_latest,
                to_offset,
                to_timestamp,
                shift_by,
                execute,
            } => {
                let tps = admin.partitions_of(&topic).await?;
                let starts = admin.list_offsets(&tps, OffsetSpec::Earliest).await?;
                let ends = admin.list_offsets(&tps, OffsetSpec::Latest).await?;
                let current = admin.group_offsets(&group, &tps).await?;
                let target: BTreeMap<TopicPartition, i64> = if to_earliest {
                    starts.clone()
                } else if to_latest {
                    ends.clone()
                } else if let Some(t) = to_timestamp {
                    let mut m = admin.list_offsets(&tps, OffsetSpec::Timestamp(t)).await?;
                    for (tp, o) in m.iter_mut() {
                        if *o < 0 {
                            *o = ends.get(tp).copied().unwrap_or(0);
                        }
                    }
                    m
                } else if let Some(o) = to_offset {
                    tps.iter().map(|tp| (tp.clone(), o)).collect()
                } else if let Some(n) = shift_by {
                    tps.iter()
                        .map(|tp| {
                            let from = current
                                .get(tp)
                                .copied()
                                .unwrap_or_else(|| ends.get(tp).copied().unwrap_or(0));
                            (tp.clone(), from.saturating_add(n))
                        })
                        .collect()
                } else {
                    anyhow::bail!(
                        "say where to: --to-earliest, --to-latest, --to-offset N, --to-timestamp MS or --shift-by N"
                    );
                };
                // Clamp into each partition's log, as Kafka's tool does.
                let target: BTreeMap<TopicPartition, i64> = target
                    .into_iter()
                    .map(|(tp, o)| {
                        let lo = starts.get(&tp).copied().unwrap_or(0);
                        let hi = ends.get(&tp).copied().unwrap_or(o);
                        let clamped = o.clamp(lo, hi.max(lo));
                        (tp, clamped)
                    })
                    .collect();
                if execute {
                    admin.reset_offsets(&group, &target).await?;
                }
                if conn.json() {
                    print_json(&json!({
                        "group": group,
                        "executed": execute,
                        "offsets": target.iter().map(|((t, p), o)| json!({
                            "topic": t, "partition": p, "from": current.get(&(t.clone(), *p)), "to": o,
                        })).collect::<Vec<_>>(),
                    }));
                } else {
                    let rows: Vec<Vec<String>> = target
                        .iter()
                        .map(|((t, p), o)| {
                            vec![
                                t.clone(),
                                p.to_string(),
                                opt(current.get(&(t.clone(), *p)).copied()),
                                o.to_string(),
                            ]
                        })
                        .collect();
                    print_table(&["TOPIC", "PARTITION", "FROM", "TO"], &rows);
                    if !execute {
                        eprintln!("dry run: nothing changed; add --execute to apply");
                    }
                }
                Ok(())
            }
            GroupCmd::Delete { groups } => {
                let results = admin.delete_groups(&groups).await?;
                if conn.json() {
                    print_json(&json!(results
                        .iter()
                        .map(|(g, r)| json!({"group": g, "ok": r.is_ok(), "error": r.as_ref().err().map(|e| e.to_string())}))
                        .collect::<Vec<_>>()));
                } else {
                    for (g, r) in &results {
                        if r.is_ok() {
                            println!("deleted group {g}");
                        }
                    }
                }
                check_results(&results)
            }
        }
    })
}
