//! `sluice config get|set`: topic and broker configs.

use crate::common::{block_on, key_value, print_json, print_table, Conn};
use anyhow::Result;
use client::admin::{ConfigOp, ResourceType};
use serde_json::json;

#[derive(clap::Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: ConfigCmd,
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct Resource {
    /// A topic's configs.
    #[arg(long)]
    topic: Option<String>,
    /// A broker's configs, by node id.
    #[arg(long)]
    broker: Option<i32>,
}

impl Resource {
    fn target(&self) -> (ResourceType, String) {
        match (&self.topic, self.broker) {
            (Some(t), _) => (ResourceType::Topic, t.clone()),
            (None, Some(b)) => (ResourceType::Broker, b.to_string()),
            (None, None) => (ResourceType::Broker, "1".into()),
        }
    }
}

#[derive(clap::Subcommand)]
enum ConfigCmd {
    /// Show configs with their values and where each comes from.
    #[command(
        after_help = "Examples:\n  sluice config get --topic orders\n  sluice config get --topic orders retention.ms\n  sluice config get --broker 1"
    )]
    Get {
        #[command(flatten)]
        resource: Resource,
        /// Only these keys.
        keys: Vec<String>,
    },
    /// Set configs (KEY=VALUE) or return them to their defaults (--delete KEY).
    #[command(
        after_help = "Examples:\n  sluice config set --topic orders retention.ms=3600000 max.message.bytes=2097152\n  sluice config set --topic orders --delete retention.ms"
    )]
    Set {
        #[command(flatten)]
        resource: Resource,
        #[arg(value_parser = key_value)]
        pairs: Vec<(String, String)>,
        /// KEY to return to its default; may be repeated.
        #[arg(long)]
        delete: Vec<String>,
    },
}

pub fn run(args: ConfigArgs) -> Result<()> {
    block_on(async move {
        let conn = &args.conn;
        let admin = conn.admin().await?;
        match args.cmd {
            ConfigCmd::Get { resource, keys } => {
                let (kind, name) = resource.target();
                let entries = admin.describe_configs(kind, &name, &keys).await?;
                if conn.json() {
                    print_json(&json!(entries
                        .iter()
                        .map(|c| json!({
                            "name": c.name,
                            "value": if c.sensitive { None } else { c.value.clone() },
                            "source": c.source,
                            "read_only": c.read_only,
                            "sensitive": c.sensitive,
                        }))
                        .collect::<Vec<_>>()));
                } else {
                    let rows: Vec<Vec<String>> = entries
                        .iter()
                        .map(|c| {
                            let v = if c.sensitive {
                                "(sensitive)".into()
                            } else {
                                c.value.clone().unwrap_or_else(|| "(null)".into())
                            };
                            vec![c.name.clone(), v, c.source.to_string()]
                        })
                        .collect();
                    print_table(&["NAME", "VALUE", "SOURCE"], &rows);
                }
                Ok(())
            }
            ConfigCmd::Set {
                resource,
                pairs,
                delete,
            } => {
                if pairs.is_empty() && delete.is_empty() {
                    anyhow::bail!("nothing to change: give KEY=VALUE pairs or --delete KEY");
                }
                let (kind, name) = resource.target();
                let mut ops: Vec<(String, ConfigOp)> = pairs.into_iter().map(|(k, v)| (k, ConfigOp::Set(v))).collect();
                ops.extend(delete.into_iter().map(|k| (k, ConfigOp::Delete)));
                admin.alter_configs(kind, &name, &ops).await?;
                if conn.json() {
                    print_json(&json!({"resource": name, "changed": ops.len()}));
                } else {
                    println!(
                        "updated {} config{} of {name}",
                        ops.len(),
                        if ops.len() == 1 { "" } else { "s" }
                    );
                }
                Ok(())
            }
        }
    })
}
