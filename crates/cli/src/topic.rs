//! `sluice topic`: create, list, describe, alter, add-partitions, delete.

use crate::common::{block_on, check_results, key_value, print_json, print_table, Conn};
use anyhow::Result;
use client::admin::{ConfigOp, NewTopic, ResourceType};
use client::OffsetSpec;
use serde_json::json;

#[derive(clap::Args)]
pub struct TopicArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: TopicCmd,
}

#[derive(clap::Subcommand)]
enum TopicCmd {
    /// Create topics.
    #[command(
        after_help = "Examples:\n  sluice topic create orders\n  sluice topic create orders -p 6 -c retention.ms=86400000 -c cleanup.policy=delete"
    )]
    Create {
        #[arg(required = true)]
        names: Vec<String>,
        /// Partitions (default: the broker's num.partitions).
        #[arg(long, short = 'p')]
        partitions: Option<i32>,
        /// Replicas of each partition (default: the broker's default.replication.factor).
        #[arg(long, short = 'r')]
        replication_factor: Option<i16>,
        /// A topic config, KEY=VALUE; may be repeated.
        #[arg(long = "config", short = 'c', value_parser = key_value)]
        configs: Vec<(String, String)>,
        /// Succeed when the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List topics.
    #[command(after_help = "Examples:\n  sluice topic list\n  sluice topic list -o json")]
    List {
        /// Include internal topics.
        #[arg(long)]
        all: bool,
    },
    /// Show partitions (leader, replicas, in-sync replicas, offsets) and non-default configs.
    #[command(after_help = "Examples:\n  sluice topic describe orders")]
    Describe {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Change topic configs.
    #[command(
        after_help = "Examples:\n  sluice topic alter orders --set retention.ms=3600000\n  sluice topic alter orders --delete retention.ms"
    )]
    Alter {
        name: String,
        /// KEY=VALUE to set; may be repeated.
        #[arg(long = "set", value_parser = key_value)]
        set: Vec<(String, String)>,
        /// KEY to return to its default; may be repeated.
        #[arg(long = "delete")]
        delete: Vec<String>,
    },
    /// Grow a topic to a number of partitions (keys may then map to other partitions).
    #[command(after_help = "Examples:\n  sluice topic add-partitions orders --partitions 12")]
    AddPartitions {
        name: String,
        /// The new total number of partitions.
        #[arg(long, short = 'p')]
        partitions: i32,
    },
    /// Delete topics and their data.
    #[command(after_help = "Examples:\n  sluice topic delete orders")]
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
        /// Succeed when a topic does not exist.
        #[arg(long)]
        if_exists: bool,
    },
}

pub fn run(args: TopicArgs) -> Result<()> {
    block_on(async move {
        let conn = &args.conn;
        let admin = conn.admin().await?;
        match args.cmd {
            TopicCmd::Create {
                names,
                partitions,
                replication_factor,
                configs,
                if_not_exists,
            } => {
                let topics: Vec<NewTopic> = names
                    .iter()
                    .map(|n| NewTopic {
                        name: n.clone(),
                        partitions: partitions.unwrap_or(-1),
                        replication_factor: replication_factor.unwrap_or(-1),
                        configs: configs.clone(),
                    })
                    .collect();
                let mut results = admin.create_topics(&topics, false).await?;
                if if_not_exists {
                    for (_, r) in results.iter_mut() {
                        if r.as_ref().err().and_then(|e| e.code()) == Some(wire::ErrorCode::TopicAlreadyExists) {
                            *r = Ok(());
                        }
                    }
                }
                report(conn, "created", &results);
                check_results(&results)
            }
            TopicCmd::List { all } => {
                let topics: Vec<_> = admin
                    .list_topics()
                    .await?
                    .into_iter()
                    .filter(|t| all || !t.internal)
                    .collect();
                if conn.json() {
                    print_json(&json!(topics
                        .iter()
                        .map(|t| json!({
                            "name": t.name,
                            "partitions": t.partitions.len(),
                            "replication_factor": t.partitions.first().map_or(0, |p| p.replicas.len()),
                            "internal": t.internal,
                        }))
                        .collect::<Vec<_>>()));
                } else {
                    let rows: Vec<Vec<String>> = topics
                        .iter()
                        .map(|t| {
                            vec![
                                t.name.clone(),
                                t.partitions.len().to_string(),
                                t.partitions.first().map_or(0, |p| p.replicas.len()).to_string(),
                            ]
                        })
                        .collect();
                    print_table(&["TOPIC", "PARTITIONS", "REPLICAS"], &rows);
                }
                Ok(())
            }
            TopicCmd::Describe { names } => {
                let topics = admin.describe_topics(&names).await?;
                let listed: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
                let elr = admin.eligible_leader_replicas(&listed).await?;
                let mut out = vec![];
                for t in &topics {
                    // A partition without a leader has no offsets to list: shown as "-" (null).
                    let tps: Vec<(String, i32)> = t
                        .partitions
                        .iter()
                        .filter(|p| p.leader >= 0)
                        .map(|p| (t.name.clone(), p.id))
                        .collect();
                    let starts = admin.list_offsets(&tps, OffsetSpec::Earliest).await?;
                    let ends = admin.list_offsets(&tps, OffsetSpec::Latest).await?;
                    let configs: Vec<_> = admin
                        .describe_configs(ResourceType::Topic, &t.name, &[])
                        .await?
                        .into_iter()
                        .filter(|c| !c.is_default)
                        .collect();
                    if conn.json() {
                        out.push(json!({
                            "name": t.name,
                            "id": format!("{:?}", t.id),
                            "internal": t.internal,
                            "partitions": t.partitions.iter().map(|p| json!({
                                "partition": p.id,
                                "leader": p.leader,
                                "replicas": p.replicas,
                                "isr": p.isr,
                                "elr": elr.get(&(t.name.clone(), p.id)).cloned().unwrap_or_default(),
                                "start_offset": starts.get(&(t.name.clone(), p.id)),
                                "end_offset": ends.get(&(t.name.clone(), p.id)),
                            })).collect::<Vec<_>>(),
                            "configs": configs.iter().map(|c| (c.name.clone(), json!(c.value))).collect::<serde_json::Map<_, _>>(),
                        }));
                        continue;
                    }
                    println!("Topic: {}  Id: {:?}  Partitions: {}", t.name, t.id, t.partitions.len());
                    if !configs.is_empty() {
                        let c: Vec<String> = configs
                            .iter()
                            .map(|c| format!("{}={}", c.name, c.value.as_deref().unwrap_or("")))
                            .collect();
                        println!("Configs: {}", c.join(", "));
                    }
                    let list = |v: &[i32]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
                    let rows: Vec<Vec<String>> = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let key = (t.name.clone(), p.id);
                            vec![
                                p.id.to_string(),
                                p.leader.to_string(),
                                list(&p.replicas),
                                list(&p.isr),
                                list(elr.get(&key).map_or(&[][..], |v| v.as_slice())),
                                starts.get(&key).map_or("-".into(), |o| o.to_string()),
                                ends.get(&key).map_or("-".into(), |o| o.to_string()),
                            ]
                        })
                        .collect();
                    print_table(
                        &["PARTITION", "LEADER", "REPLICAS", "ISR", "ELR", "START", "END"],
                        &rows,
                    );
                }
                if conn.json() {
                    print_json(&json!(out));
                }
                Ok(())
            }
            TopicCmd::Alter { name, set, delete } => {
                if set.is_empty() && delete.is_empty() {
                    anyhow::bail!("nothing to change: give --set KEY=VALUE or --delete KEY");
                }
                let mut ops: Vec<(String, ConfigOp)> = set.into_iter().map(|(k, v)| (k, ConfigOp::Set(v))).collect();
                ops.extend(delete.into_iter().map(|k| (k, ConfigOp::Delete)));
                admin.alter_configs(ResourceType::Topic, &name, &ops).await?;
                report(conn, "altered", &[(name, Ok(()))]);
                Ok(())
            }
            TopicCmd::AddPartitions { name, partitions } => {
                admin.create_partitions(&name, partitions, false).await?;
                if conn.json() {
                    print_json(&json!({"topic": name, "partitions": partitions}));
                } else {
                    println!("topic {name} now has {partitions} partitions");
                }
                Ok(())
            }
            TopicCmd::Delete { names, if_exists } => {
                let mut results = admin.delete_topics(&names).await?;
                if if_exists {
                    for (_, r) in results.iter_mut() {
                        if r.as_ref().err().and_then(|e| e.code()) == Some(wire::ErrorCode::UnknownTopicOrPartition) {
                            *r = Ok(());
                        }
                    }
                }
                report(conn, "deleted", &results);
                check_results(&results)
            }
        }
    })
}

fn report(conn: &Conn, verb: &str, results: &[(String, client::Result<()>)]) {
    if conn.json() {
        print_json(&json!(results
            .iter()
            .map(|(n, r)| json!({"topic": n, "ok": r.is_ok(), "error": r.as_ref().err().map(|e| e.to_string())}))
            .collect::<Vec<_>>()));
        return;
    }
    for (n, r) in results {
        if r.is_ok() {
            println!("{verb} topic {n}");
        }
    }
}
