//! `sluice cluster describe` (brokers and the metadata quorum) and `sluice cluster dev` (a
//! local cluster of combined nodes for development and tests).

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
    /// Show the cluster id, the controller, the brokers and the metadata quorum (leader,
    /// epoch, high watermark, each voter's and observer's lag).
    #[command(after_help = "Examples:\n  sluice cluster describe\n  sluice cluster describe -b 10.0.0.5:9092 -o json")]
    Describe,
    /// Start a local cluster of combined nodes (broker and controller each) on loopback ports,
    /// with their data under one directory; prints the bootstrap string and runs until Ctrl-C.
    #[command(
        after_help = "Examples:\n  sluice cluster dev\n  sluice cluster dev --nodes 5 --port 19092 --dir /tmp/dev"
    )]
    Dev(DevArgs),
}

#[derive(clap::Args)]
struct DevArgs {
    /// How many nodes (all of them voters).
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Node i's client listener is PORT+i-1; its controller listener is PORT+100+i-1, its
    /// admin HTTP port PORT+200+i-1.
    #[arg(long, default_value_t = 9092)]
    port: u16,
    /// Where the nodes' data directories (node-1, ...) and logs (node-1.log, ...) go.
    #[arg(long, default_value = "./sluice-cluster")]
    dir: std::path::PathBuf,
}

pub fn run(args: ClusterArgs) -> Result<()> {
    let conn = args.conn;
    match args.cmd {
        ClusterCmd::Describe => describe(&conn),
        ClusterCmd::Dev(dev) => run_dev(dev),
    }
}

fn describe(conn: &Conn) -> Result<()> {
    block_on(async move {
        let admin = conn.admin().await?;
        let c = admin.describe_cluster().await?;
        let q = admin.describe_quorum().await;
        let replica = |r: &client::admin::QuorumReplica, hw: i64| {
            json!({"id": r.id, "log_end_offset": r.log_end_offset, "lag": (hw - r.log_end_offset).max(0),
                   "last_fetch_ms": r.last_fetch_ms, "last_caught_up_ms": r.last_caught_up_ms})
        };
        if conn.json() {
            print_json(&json!({
                "cluster_id": c.cluster_id,
                "controller": c.controller,
                "brokers": c.registered.iter().map(|b| json!({"id": b.id, "host": b.host, "port": b.port, "rack": b.rack,
                    "fenced": b.fenced, "epoch": b.epoch})).collect::<Vec<_>>(),
                "quorum": match &q {
                    Ok(q) => json!({
                        "leader": q.leader, "epoch": q.epoch, "high_watermark": q.high_watermark,
                        "voters": q.voters.iter().map(|r| replica(r, q.high_watermark)).collect::<Vec<_>>(),
                        "observers": q.observers.iter().map(|r| replica(r, q.high_watermark)).collect::<Vec<_>>(),
                    }),
                    Err(e) => json!({"error": e.to_string()}),
                },
            }));
        } else {
            println!(
                "Cluster: {}  Controller: {}",
                c.cluster_id.as_deref().unwrap_or("-"),
                c.controller
            );
            let rows: Vec<Vec<String>> = c
                .registered
                .iter()
                .map(|b| {
                    vec![
                        b.id.to_string(),
                        b.host.clone(),
                        b.port.to_string(),
                        b.rack.clone().unwrap_or("-".into()),
                        if b.fenced { "fenced" } else { "unfenced" }.to_string(),
                        if b.epoch < 0 {
                            "-".to_string()
                        } else {
                            b.epoch.to_string()
                        },
                    ]
                })
                .collect();
            print_table(&["ID", "HOST", "PORT", "RACK", "STATE", "EPOCH"], &rows);
            println!();
            match &q {
                Ok(q) => {
                    println!(
                        "Metadata quorum: leader {}  epoch {}  high watermark {}",
                        q.leader, q.epoch, q.high_watermark
                    );
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    let ago = |t: i64| {
                        if t < 0 {
                            "-".to_string()
                        } else {
                            format!("{} ms", (now - t).max(0))
                        }
                    };
                    let rows: Vec<Vec<String>> = q
                        .voters
                        .iter()
                        .map(|r| ("voter", r))
                        .chain(q.observers.iter().map(|r| ("observer", r)))
                        .map(|(role, r)| {
                            vec![
                                r.id.to_string(),
                                role.to_string(),
                                r.log_end_offset.to_string(),
                                (q.high_watermark - r.log_end_offset).max(0).to_string(),
                                ago(r.last_fetch_ms),
                                ago(r.last_caught_up_ms),
                            ]
                        })
                        .collect();
                    print_table(&["ID", "ROLE", "LOG END", "LAG", "LAST FETCH", "LAST CAUGHT UP"], &rows);
                }
                Err(e) => println!("Metadata quorum: cannot describe it: {e}"),
            }
        }
        Ok(())
    })
}

/// `sluice cluster dev`: this binary's `server`, once per node, as child processes.
fn run_dev(args: DevArgs) -> Result<()> {
    anyhow::ensure!(args.nodes >= 1, "--nodes must be at least 1");
    let last = u32::from(args.port) + 200 + u32::from(args.nodes) - 1;
    anyhow::ensure!(
        last <= u32::from(u16::MAX),
        "--port {} leaves no room for {} nodes",
        args.port,
        args.nodes
    );
    std::fs::create_dir_all(&args.dir)?;
    let exe = std::env::current_exe()?;
    let port = |offset: u16, i: u16| args.port + offset + i - 1;
    let voters: Vec<String> = (1..=args.nodes)
        .map(|i| format!("{i}@127.0.0.1:{}", port(100, i)))
        .collect();
    let voters = voters.join(",");
    block_on(async move {
        // Watched before any child starts, so a Ctrl-C from here on stops them all.
        let stop = crate::common::shutdown_signal();
        let mut children = Vec::new();
        for i in 1..=args.nodes {
            let log = std::fs::File::create(args.dir.join(format!("node-{i}.log")))?;
            let child = std::process::Command::new(&exe)
                .arg("server")
                .arg("--listeners")
                .arg(format!(
                    "PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                    port(0, i),
                    port(100, i)
                ))
                .arg("--admin-listeners")
                .arg(format!("127.0.0.1:{}", port(200, i)))
                .arg("--data-dir")
                .arg(args.dir.join(format!("node-{i}")))
                .args([
                    "--set",
                    &format!("node.id={i}"),
                    "--set",
                    &format!("controller.quorum.voters={voters}"),
                ])
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?;
            children.push(child);
        }
        let bootstrap: Vec<String> = (1..=args.nodes).map(|i| format!("127.0.0.1:{}", port(0, i))).collect();
        let bootstrap = bootstrap.join(",");
        let ready = async {
            for i in 1..=args.nodes {
                let addr = format!("127.0.0.1:{}", port(0, i));
                while tokio::net::TcpStream::connect(&addr).await.is_err() {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        };
        tokio::pin!(stop);
        tokio::select! {
            _ = ready => {
                println!("{bootstrap}");
                eprintln!(
                    "{} nodes up (logs in {}); Ctrl-C stops them",
                    args.nodes,
                    args.dir.display()
                );
                (&mut stop).await;
            }
            _ = &mut stop => {}
        }
        for c in &children {
            // SIGTERM: each node shuts down cleanly. (A `cluster dev` killed with SIGKILL
            // leaves its nodes running: stop them with SIGTERM.)
            // SAFETY: kill(2) on a child's pid; no memory is touched.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        tokio::task::spawn_blocking(move || {
            for mut c in children {
                let _ = c.wait();
            }
        })
        .await?;
        Ok(())
    })
}
