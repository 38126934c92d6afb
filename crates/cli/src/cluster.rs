//! `sluice cluster describe`.

use crate::common::{block_on, print_json, print_table, Conn};
use anyhow::Result;
use serde_json::json;

#[derive(clap::Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    cmd: ClusterCmd,
}

#[derive(clap::Subcommand)]
enum ClusterCmd {
    /// Show the cluster id, the controller and the brokers.
    #[command(after_help = "Examples:\n  sluice cluster describe\n  sluice cluster describe -b 10.0.0.5:9092 -o json")]
    Describe,
}

pub fn run(args: ClusterArgs) -> Result<()> {
    block_on(async move {
        let conn = &args.conn;
        let ClusterCmd::Describe = args.cmd;
        let c = conn.admin().await?.describe_cluster().await?;
        if conn.json() {
            print_json(&json!({
                "cluster_id": c.cluster_id,
                "controller": c.controller,
                "brokers": c.brokers.iter().map(|b| json!({"id": b.id, "host": b.host, "port": b.port, "rack": b.rack})).collect::<Vec<_>>(),
            }));
        } else {
            println!(
                "Cluster: {}  Controller: {}",
                c.cluster_id.as_deref().unwrap_or("-"),
                c.controller
            );
            let rows: Vec<Vec<String>> = c
                .brokers
                .iter()
                .map(|b| {
                    vec![
                        b.id.to_string(),
                        b.host.clone(),
                        b.port.to_string(),
                        b.rack.clone().unwrap_or("-".into()),
                    ]
                })
                .collect();
            print_table(&["ID", "HOST", "PORT", "RACK"], &rows);
        }
        Ok(())
    })
}
