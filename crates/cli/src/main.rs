//! The `sluice` binary: `sluice server` runs a broker; `topic`, `produce`, `consume`, `group`,
//! `config`, `cluster` and `bench` drive a cluster through the `client` crate. Argument parsing,
//! output formatting and process setup only; everything else lives in the library crates.

mod bench;
mod cluster;
mod common;
mod config;
mod consume;
mod group;
mod produce;
mod topic;
mod verify;

use anyhow::Result;
use broker::config::{ConfigLayers, Source, SETTINGS};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A Kafka-compatible event streaming platform in one binary",
    after_help = "Client commands reach 127.0.0.1:9092 unless given -b HOST:PORT (or SLUICE_BOOTSTRAP), and print\n\
                  tables unless given -o json. Exit codes: 0 done, 1 the operation failed, 2 bad usage or settings.\n\n\
                  Examples:\n  sluice server\n  sluice topic create orders -p 6\n  echo hello | sluice produce orders\n  \
                  sluice consume orders --from-beginning -e\n  sluice group describe billing\n  sluice bench produce -d 10"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (a single node by default, listening on 127.0.0.1:9092).
    #[command(after_help = server_help())]
    Server(ServerArgs),
    /// Create, list, describe, alter, grow and delete topics.
    Topic(topic::TopicArgs),
    /// Write lines from stdin or a file as records.
    Produce(produce::ProduceArgs),
    /// Print records, alone or as a member of a consumer group.
    Consume(consume::ConsumeArgs),
    /// List, describe (lag), reset offsets of and delete consumer groups.
    Group(group::GroupArgs),
    /// Show and change topic and broker configs.
    Config(config::ConfigArgs),
    /// Show the cluster's brokers and controller.
    Cluster(cluster::ClusterArgs),
    /// Measure produce, consume and end-to-end throughput and latency.
    Bench(bench::BenchArgs),
    /// Prove with a workload that nothing acknowledged is lost, duplicated or reordered:
    /// `verify run` writes a history, `verify check` finds anomalies in histories.
    Verify(verify::VerifyArgs),
}

#[derive(clap::Args)]
struct ServerArgs {
    /// TOML file of settings (keys as listed below); also SLUICE_CONFIG.
    #[arg(long, short = 'c', env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// This broker's numeric id (node.id).
    #[arg(long)]
    node_id: Option<String>,
    /// The id of a new cluster (cluster.id); empty: a random one.
    #[arg(long)]
    cluster_id: Option<String>,
    /// Address to accept clients on, host:port (listeners).
    #[arg(long)]
    listeners: Option<String>,
    /// Address clients are told to connect to (advertised.listeners).
    #[arg(long)]
    advertised_listeners: Option<String>,
    /// Address of the admin HTTP port for /metrics, /health and /ready; empty turns it off
    /// (admin.listeners).
    #[arg(long)]
    admin_listeners: Option<String>,
    /// Directory for the broker's data (log.dirs).
    #[arg(long)]
    data_dir: Option<String>,
    /// Fsync every write before acknowledging it (log.flush.interval.messages=1): acknowledged
    /// records survive a power loss, at a cost in peak throughput (see docs/benchmarks.md).
    #[arg(long)]
    durable: bool,
    /// Any setting as key=value; may be repeated.
    #[arg(long = "set", short = 's', value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn server_help() -> String {
    let mut s = String::from(
        "Settings come from, later winning: defaults, the --config file, SLUICE_* environment variables\n\
         (SLUICE_NODE_ID for node.id), flags. Log verbosity: SLUICE_LOG (e.g. debug, or broker=debug).\n\nSettings:\n",
    );
    for (k, v, about) in SETTINGS {
        s.push_str(&format!(
            "  {k:<26} {about} (default: {})\n",
            if v.is_empty() { "-" } else { v }
        ));
    }
    s.push_str(
        "\nExamples:\n  sluice server\n  sluice server --data-dir /var/lib/sluice --listeners 127.0.0.1:19092\n  sluice server --durable\n",
    );
    s
}

fn layers(args: &ServerArgs) -> Result<ConfigLayers> {
    let mut l = ConfigLayers::new();
    if let Some(path) = &args.config {
        l.load_toml(path)?;
    }
    for name in l.load_env(std::env::vars())? {
        tracing::warn!(variable = %name, "environment variable names no setting; ignored (see `sluice server --help`)");
    }
    let flags = [
        ("node.id", &args.node_id),
        ("cluster.id", &args.cluster_id),
        ("listeners", &args.listeners),
        ("advertised.listeners", &args.advertised_listeners),
        ("admin.listeners", &args.admin_listeners),
        ("log.dirs", &args.data_dir),
    ];
    for (key, value) in flags {
        if let Some(v) = value {
            l.set(key, v.clone(), Source::Flag)?;
        }
    }
    if args.durable {
        l.set("log.flush.interval.messages", "1".into(), Source::Flag)?;
    }
    for kv in &args.set {
        let Some((k, v)) = kv.split_once('=') else {
            anyhow::bail!("--set {kv:?}: expected KEY=VALUE");
        };
        l.set(k.trim(), v.to_string(), Source::Flag)?;
    }
    Ok(l)
}

fn main() {
    let cli = Cli::parse();
    // Client commands log only warnings unless SLUICE_LOG says otherwise: their output is data.
    let default_level = if matches!(cli.command, Command::Server(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let server = matches!(cli.command, Command::Server(_));
    let result = match cli.command {
        Command::Server(args) => run_server(args),
        Command::Topic(args) => topic::run(args),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Group(args) => group::run(args),
        Command::Config(args) => config::run(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Verify(args) => verify::run(args),
    };
    if let Err(e) = result {
        eprintln!("sluice: {e:#}");
        // A server that cannot start was almost always given a bad setting: a usage error.
        std::process::exit(if server {
            common::EXIT_USAGE
        } else {
            common::EXIT_FAILED
        });
    }
}

fn run_server(args: ServerArgs) -> Result<()> {
    let config = layers(&args)?.build()?;
    broker::fail_stop_on_panic();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        // Watched before the listener binds: a SIGTERM as soon as the port answers stops the
        // broker cleanly instead of killing it.
        let stop = common::shutdown_signal();
        let server = broker::Server::bind(config).await?;
        server.run(stop).await;
        Ok(())
    })
}
