//! Listeners and connections.
//!
//! Limits, and what happens at each:
//! - `max.connections`: at the limit, the connection that has been open longest without
//!   sending a byte is closed to make room for a new one; when every connection has spoken,
//!   the accept loop waits for a free slot and new clients queue in the kernel's backlog.
//! - `max.connections.per.ip` (and `.overrides`): a new connection from an address that
//!   already holds that many is closed at once, as Kafka does.
//! - `socket.request.max.bytes`: a frame announcing more (or a negative size) closes the
//!   connection, as Kafka does, before any of it is buffered.
//! - `queued.max.request.bytes`: request bytes are reserved from this pool as they arrive (in
//!   steps that at most double what already arrived), never on the announced size, so a client
//!   that announces a large frame and stalls holds about what it sent. When the pool is empty,
//!   connections stop reading until memory is freed, except the oldest of the bodies waiting,
//!   which may overdraw (`RequestMemory`), so that partly read bodies never wait on each other
//!   for good.
//! - `socket.request.read.timeout.ms`: a request body that has not fully arrived this long after
//!   its size did, not counting time spent waiting for memory, is dropped with its connection
//!   (freeing what it held).
//! - `queued.max.response.bytes` (in `handlers::fetch`): record data of responses not yet written
//!   is bounded across connections; fetches shrink to what the pool has.
//! - `socket.write.timeout.ms`: a response that makes no progress into the socket this long
//!   (a client that stopped reading) closes the connection and frees what it held.
//! - `connections.max.idle.ms`: a connection that sends nothing between requests for that long
//!   is closed.
//! - In flight per connection: one request is handled at a time and responses are written in
//!   request order; pipelined requests wait in the socket buffer (Kafka does the same).
//!
//! Every connection-level log line names the client's address, and repeats are rate-limited
//! (`ratelog`).

use crate::handlers::{self, Outcome};
use crate::meta::{self, DataDirLock, MetaError};
use crate::{Broker, BrokerConfig};
use bytes::BytesMut;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tracing::{debug, info, warn};

/// How long requests in progress may take to finish once shutdown starts.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("{0}")]
    Topics(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A bound broker, ready to run.
pub struct Server {
    listener: TcpListener,
    /// The metadata quorum on the network (a node among other voters, or an observer);
    /// stopped when the server is.
    quorum: Option<crate::quorum::net::QuorumNode>,
    /// This broker's heartbeats and (on a controller) the broker sessions; stopped with the
    /// server.
    membership: Option<Membership>,
    /// The admin HTTP port, unless `admin.listeners` is empty.
    admin: Option<TcpListener>,
    broker: Arc<Broker>,
    _lock: DataDirLock,
}

/// A broker's part in a cluster beside the quorum: its heartbeat task, and on a controller
/// the thread that fences brokers whose sessions expired. Dropping it stops both.
struct Membership {
    heartbeats: tokio::task::JoinHandle<()>,
    sessions: Option<(Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<()>)>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.heartbeats.abort();
        if let Some((stop, thread)) = self.sessions.take() {
            stop.store(true, std::sync::atomic::Ordering::Release);
            let _ = thread.join();
        }
    }
}

/// What a broker opens from its data directory before it listens.
struct Opened {
    cluster_id: String,
    /// The last run ended with a clean shutdown.
    clean: bool,
    fs: Arc<dyn storage::Fs>,
    metadata: Arc<crate::metadata_log::MetadataLog>,
    dynamic: crate::dynamic_config::DynamicConfigs,
    topics: crate::topics::Topics,
}

/// The data directory's identity and metadata log, opened before anything reads the image.
struct Metadata {
    /// In a cluster, until the node has caught up: the id it would bootstrap a new cluster
    /// with, unless `cluster_id_known`.
    cluster_id: String,
    /// `cluster_id` is what `meta.properties` says (not a candidate).
    cluster_id_known: bool,
    clean: bool,
    metadata: Arc<crate::metadata_log::MetadataLog>,
    /// The log held nothing when opened.
    empty: bool,
}

/// Opens the node identity (`meta.properties`) and the metadata log on `fs`: alone, or as a
/// member of the quorum `config.quorum` describes.
fn open_metadata(
    config: &BrokerConfig,
    fs: &Arc<dyn storage::Fs>,
    clock: &Arc<dyn crate::clock::Clock>,
    random: &Arc<crate::random::Random>,
) -> Result<Metadata, StartError> {
    let dir = &config.data_dir;
    fs.create_dir_all(dir).map_err(|e| MetaError::Io {
        path: dir.clone(),
        why: e.to_string(),
    })?;
    let q = &config.quorum;
    let alone = q.is_alone(config.node_id);
    let known = meta::read(&**fs, dir, config.node_id)?;
    if let (Some(known), Some(given)) = (&known, &config.cluster_id) {
        if known != given {
            return Err(StartError::Topics(format!(
                "{} belongs to cluster {known}, not to the cluster.id given ({given}); give this node an empty data directory to join {given}",
                dir.join("meta.properties").display()
            )));
        }
    }
    let cluster_id_known = known.is_some();
    let cluster_id = match known {
        Some(id) => id,
        None => {
            let id = config
                .cluster_id
                .clone()
                .unwrap_or_else(|| meta::new_cluster_id(random));
            // A node alone is its cluster; in a cluster the id is the quorum's, written once
            // this node has caught up (`join_quorum`).
            if alone {
                meta::write(&**fs, dir, config.node_id, &id)?;
            }
            id
        }
    };
    let clean = meta::take_clean_shutdown_marker(&**fs, dir)?;
    let settings = if alone {
        crate::metadata_log::QuorumSettings::alone(config.node_id)
    } else {
        let mut s = crate::metadata_log::QuorumSettings::new(
            config.node_id,
            q.voters.keys().copied().collect(),
            random.next_u64(),
        );
        s.election_timeout_ms = q.election_timeout_ms;
        s.fetch_timeout_ms = q.fetch_timeout_ms;
        s.election_backoff_max_ms = q.election_backoff_max_ms;
        s
    };
    let opened = crate::metadata_log::MetadataLog::open_quorum(
        dir,
        fs.clone(),
        crate::metadata_log::SNAPSHOT_BYTES,
        settings,
        clock.clone(),
    )
    .map_err(StartError::Topics)?;
    Ok(Metadata {
        cluster_id,
        cluster_id_known,
        clean,
        metadata: Arc::new(opened.log),
        empty: opened.empty,
    })
}

/// Opens the data directory's state on `fs`: node identity, the metadata log (bootstrapped or
/// converted on a first start), dynamic configs and every partition log.
fn open_state(
    config: &BrokerConfig,
    fs: Arc<dyn storage::Fs>,
    clock: &Arc<dyn crate::clock::Clock>,
    random: &Arc<crate::random::Random>,
) -> Result<Opened, StartError> {
    let m = open_metadata(config, &fs, clock, random)?;
    crate::upgrade::prepare(
        &*fs,
        &config.data_dir,
        &m.metadata,
        m.empty,
        config.node_id,
        &m.cluster_id,
    )
    .map_err(StartError::Topics)?;
    open_the_rest(config, fs, clock, random, m)
}

/// What opens after the metadata: dynamic configs and this node's partition logs, from the
/// image.
fn open_the_rest(
    config: &BrokerConfig,
    fs: Arc<dyn storage::Fs>,
    clock: &Arc<dyn crate::clock::Clock>,
    random: &Arc<crate::random::Random>,
    m: Metadata,
) -> Result<Opened, StartError> {
    let Metadata {
        cluster_id,
        clean,
        metadata,
        ..
    } = m;
    let dir = &config.data_dir;
    let dynamic =
        crate::dynamic_config::DynamicConfigs::open(metadata.clone(), config.node_id, config.settings.clone())
            .map_err(StartError::Topics)?;
    let mut topic_defaults = config.topic_defaults.clone();
    topic_defaults.configs = dynamic.topic_defaults();
    let started = std::time::Instant::now();
    let topics = crate::topics::Topics::open(
        dir,
        topic_defaults,
        clean,
        fs.clone(),
        metadata.clone(),
        config.node_id,
        clock.clone(),
        random.clone(),
    )
    .map_err(StartError::Topics)?;
    info!(
        clean_shutdown = clean,
        seconds = started.elapsed().as_secs_f64(),
        "logs opened{}",
        if clean { "" } else { " and recovered" }
    );
    Ok(Opened {
        cluster_id,
        clean,
        fs,
        metadata,
        dynamic,
        topics,
    })
}

/// A node among other voters, or an observer: opens the metadata log, runs the quorum on the
/// network (serving the controller listener on a voter), waits until it holds everything
/// committed, has the leader bootstrap an empty cluster, and only then opens what reads the
/// image (its partitions, and the removal of directories the image does not know, would be
/// wrong from a stale image).
async fn join_quorum(
    config: &BrokerConfig,
    fs: Arc<dyn storage::Fs>,
    clock: &Arc<dyn crate::clock::Clock>,
    random: &Arc<crate::random::Random>,
) -> Result<
    (
        Opened,
        crate::quorum::net::QuorumNode,
        Option<Arc<crate::controller::Controller>>,
    ),
    StartError,
> {
    let mut m = open_metadata(config, &fs, clock, random)?;
    let listener = match config.quorum.listener {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?,
        ),
        None => None,
    };
    let controller = config.quorum.controller.then(|| {
        Arc::new(crate::controller::Controller::new(
            m.metadata.clone(),
            m.cluster_id.clone(),
            clock.clone(),
            config.quorum.session_timeout_ms,
        ))
    });
    let apis = controller
        .clone()
        .map(|c| c as Arc<dyn crate::quorum::net::ControllerApis>);
    info!(
        node_id = config.node_id,
        voters = ?config.quorum.voters,
        controller_listener = ?config.quorum.listener,
        cluster_id = %m.cluster_id,
        "joining the metadata quorum"
    );
    let quorum = crate::quorum::net::QuorumNode::start(
        m.metadata.clone(),
        &config.quorum.voters,
        listener,
        m.cluster_id_known.then(|| m.cluster_id.clone()),
        apis,
    );
    crate::controller::wait_for_quorum(&m.metadata, &quorum, &m.cluster_id)
        .await
        .map_err(StartError::Topics)?;
    if m.metadata.image().features.is_empty() {
        if m.metadata.leader() == Some(config.node_id) {
            // The first leader of an empty quorum bootstraps the cluster (as a node alone
            // does its own data directory).
            let (metadata, dir, node) = (m.metadata.clone(), config.data_dir.clone(), config.node_id);
            let (fs2, id) = (fs.clone(), m.cluster_id.clone());
            tokio::task::spawn_blocking(move || crate::upgrade::prepare(&*fs2, &dir, &metadata, true, node, &id))
                .await
                .map_err(|e| StartError::Topics(e.to_string()))?
                .map_err(StartError::Topics)?;
        }
        crate::controller::wait_for_bootstrap(&m.metadata).await;
    }
    // The cluster's id is the one its first leader wrote into the log: a node of another
    // cluster (its meta.properties says so) refuses to go on; a new node takes it.
    let quorum_id = m
        .metadata
        .image()
        .cluster_id
        .clone()
        .unwrap_or_else(|| meta::cluster_id_for_voters(&config.quorum.voters));
    if m.cluster_id_known && quorum_id != m.cluster_id {
        return Err(StartError::Topics(format!(
            "{} says this node belongs to cluster {}, but the metadata quorum of controller.quorum.voters is cluster {quorum_id}: \
             this data directory belongs to another cluster; give the node an empty data directory to join this one, or point \
             controller.quorum.voters at its own cluster",
            config.data_dir.join("meta.properties").display(),
            m.cluster_id
        )));
    }
    if let Some(given) = config.cluster_id.as_ref().filter(|g| **g != quorum_id) {
        return Err(StartError::Topics(format!(
            "cluster.id is {given}, but the metadata quorum of controller.quorum.voters is cluster {quorum_id}"
        )));
    }
    if !m.cluster_id_known {
        meta::write(&*fs, &config.data_dir, config.node_id, &quorum_id)?;
        info!(cluster_id = %quorum_id, "joined the cluster: its id is written to meta.properties");
        m.cluster_id = quorum_id;
    }
    quorum.set_cluster_id(&m.cluster_id);
    let opened = open_the_rest(config, fs, clock, random, m)?;
    Ok((opened, quorum, controller))
}

/// The broker over its opened state: registered in the metadata log with its listener as
/// `config` now advertises it, with its producer ids, groups and worker pools.
fn assemble(
    config: BrokerConfig,
    opened: Opened,
    clock: Arc<dyn crate::clock::Clock>,
    random: Arc<crate::random::Random>,
    real_fs: Option<Arc<storage::RealFs>>,
) -> Result<Broker, StartError> {
    let Opened {
        cluster_id,
        fs,
        metadata,
        dynamic,
        topics,
        ..
    } = opened;
    if config.quorum.is_alone(config.node_id) {
        // In a cluster the node registered with the active controller before (`bind_with`).
        crate::upgrade::register_broker(&metadata, &config, &random).map_err(StartError::Topics)?;
    }
    let producer_ids =
        crate::producers::ProducerIds::open(metadata.clone(), config.node_id, config.quorum.voters.clone());
    let groups = crate::group::coordinator::Coordinator::open(&topics, config.groups.clone(), clock.clone())
        .map_err(StartError::Topics)?;
    let response_memory = crate::response_memory::ResponseMemory::new(config.queued_response_bytes_max);
    Ok(Broker {
        config,
        cluster_id,
        fs,
        metadata,
        topics,
        dynamic,
        producer_ids,
        groups,
        response_memory,
        checks: crate::heavy::Heavy::start("checks", crate::heavy::Heavy::all_but_one_core()),
        topic_changes: crate::heavy::Heavy::start("topics", 1),
        metrics: crate::metrics::Metrics::new(real_fs, clock.now_ms()),
        clock,
        random,
    })
}

impl Broker {
    /// A broker over the data directory `config.data_dir` on `fs`, with `clock` and `random`:
    /// everything `Server::bind` builds except the lock and the listeners, for in-process
    /// tests and simulations that drive it through `handlers::handle_frame` (on a `SimFs`
    /// with a `SimClock`). It advertises `config`'s listener as it is.
    pub fn open(
        config: BrokerConfig,
        fs: Arc<dyn storage::Fs>,
        clock: Arc<dyn crate::clock::Clock>,
        random: crate::random::Random,
    ) -> Result<Broker, StartError> {
        let random = Arc::new(random);
        let opened = open_state(&config, fs, &clock, &random)?;
        assemble(config, opened, clock, random, None)
    }
}

/// Connections the kernel queues per listener before they are accepted (tokio's default).
const LISTEN_BACKLOG: u32 = 1024;

/// A socket bound to `addr` (with `SO_REUSEADDR`, as `TcpListener::bind` sets it) but not yet
/// listening: the port is ours, and connecting to it is refused until `listen`.
fn reserve_port(addr: SocketAddr) -> Result<tokio::net::TcpSocket, StartError> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|source| StartError::Bind { addr, source })?;
    socket
        .set_reuseaddr(true)
        .map_err(|source| StartError::Bind { addr, source })?;
    socket.bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    Ok(socket)
}

impl Server {
    /// Locks and prepares the data directory and binds the listener, with the system clock and
    /// randomness seeded from the OS.
    pub async fn bind(config: BrokerConfig) -> Result<Server, StartError> {
        let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::SystemClock::new());
        Server::bind_with(config, clock, crate::random::Random::from_os()).await
    }

    /// As `bind`, with the clock and the source of randomness the broker is to use (tests and
    /// simulations pass a `SimClock` and a seed).
    pub async fn bind_with(
        mut config: BrokerConfig,
        clock: Arc<dyn crate::clock::Clock>,
        random: crate::random::Random,
    ) -> Result<Server, StartError> {
        let lock = meta::lock_data_dir(&config.data_dir)?;
        raise_open_files_limit(config.open_files_max + config.connections_max + 256);
        keep_freed_memory();
        let real_fs = Arc::new(storage::RealFs::new(config.open_files_max));
        let fs: Arc<dyn storage::Fs> = real_fs.clone();
        let random = Arc::new(random);
        let (opened, quorum, controller) = if config.quorum.is_alone(config.node_id) {
            (open_state(&config, fs, &clock, &random)?, None, None)
        } else {
            let (opened, quorum, controller) = join_quorum(&config, fs, &clock, &random).await?;
            (opened, Some(quorum), controller)
        };
        // Ports are bound (reserved, so an advertised port of 0 is known to the metadata) once
        // the logs are open, but listened on only once everything is loaded, groups included:
        // a port that accepts is what clients and tests take as "up", and until `listen` a
        // connection is refused rather than left waiting in the backlog.
        let addr = config.listener.bind;
        let listener = reserve_port(addr)?;
        let local = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        if config.listener.advertised_port == 0 {
            config.listener.advertised_port = local.port();
        }
        config.listener.bind = local;
        let admin = match config.admin_bind {
            None => None,
            Some(addr) => {
                let admin = reserve_port(addr)?;
                config.admin_bind = Some(admin.local_addr().map_err(|source| StartError::Bind { addr, source })?);
                Some((addr, admin))
            }
        };
        let mut membership = None;
        if !config.quorum.is_alone(config.node_id) {
            // Registered once the advertised port is known, and unfenced before listening, so
            // a client that reaches this broker finds it in the metadata, leading its
            // partitions.
            // The epoch of the last registration, if that incarnation's data is intact: it shut
            // down cleanly, or the machine has not restarted since (a crashed process loses
            // nothing it wrote). Otherwise -1, and the controller counts this start as after
            // an unclean shutdown (KIP-966: it leaves its partitions' eligible leader replicas).
            let boot = meta::boot_id();
            let previous = match meta::read_broker_epoch(&*opened.fs, &config.data_dir) {
                Ok(Some((epoch, was))) if opened.clean || (boot.is_some() && was.as_deref() == boot.as_deref()) => {
                    epoch
                }
                Ok(_) => -1,
                Err(e) => {
                    warn!(error = %e, "cannot read this broker's last epoch: it registers as after an unclean shutdown");
                    -1
                }
            };
            let request = crate::controller::registration_request(
                &config,
                &opened.cluster_id,
                wire::Uuid(random.bytes16()),
                previous,
            );
            let epoch = crate::controller::register(
                &opened.metadata,
                &config.quorum.voters,
                &opened.cluster_id,
                controller.as_ref(),
                request,
            )
            .await
            .map_err(StartError::Topics)?;
            info!(
                broker_epoch = epoch,
                previous_broker_epoch = previous,
                "registered with the active controller"
            );
            meta::write_broker_epoch(&*opened.fs, &config.data_dir, epoch, boot.as_deref())?;
            let (unfenced_tx, mut unfenced) = tokio::sync::watch::channel(false);
            let heartbeats = tokio::spawn(crate::controller::heartbeat_loop(
                opened.metadata.clone(),
                config.quorum.voters.clone(),
                controller.clone(),
                config.node_id,
                epoch,
                std::time::Duration::from_millis(config.quorum.heartbeat_interval_ms),
                unfenced_tx,
            ));
            let sessions = controller.clone().map(|c| {
                let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let thread = crate::controller::run_sessions(c, stop.clone());
                (stop, thread)
            });
            let m = Membership { heartbeats, sessions };
            let started = std::time::Instant::now();
            loop {
                match tokio::time::timeout(std::time::Duration::from_secs(10), unfenced.wait_for(|u| *u)).await {
                    Ok(_) => break,
                    Err(_) => info!(
                        seconds = started.elapsed().as_secs(),
                        "waiting for the active controller to unfence this broker"
                    ),
                }
            }
            info!("unfenced by the active controller");
            membership = Some(m);
        }
        let broker = Arc::new(assemble(config, opened, clock, random, Some(real_fs))?);
        if let Some(c) = &controller {
            c.attach(&broker);
        }
        let listener = listener
            .listen(LISTEN_BACKLOG)
            .map_err(|source| StartError::Bind { addr, source })?;
        let admin = match admin {
            None => None,
            Some((addr, socket)) => Some(
                socket
                    .listen(LISTEN_BACKLOG)
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
        };
        Ok(Server {
            listener,
            quorum,
            membership,
            admin,
            broker,
            _lock: lock,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.broker.config.listener.bind
    }

    /// Where the admin HTTP port listens, if it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.broker.config.admin_bind
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Accepts and serves clients until `shutdown` completes, then lets each connection finish
    /// the request it is handling and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        // Runs until this returns: the node leaves the quorum when it stops serving.
        let _quorum = self.quorum;
        let _membership = self.membership;
        let broker = self.broker;
        let c = &broker.config;
        info!(
            node_id = c.node_id,
            listener = %c.listener.bind,
            advertised = %format!("{}:{}", c.listener.advertised_host, c.listener.advertised_port),
            admin = %c.admin_bind.map_or("off".to_string(), |a| format!("http://{a}")),
            data_dir = %c.data_dir.display(),
            cluster_id = %broker.cluster_id,
            topics = broker.topics.list().len(),
            random_seed = broker.random.seed(),
            "sluice broker started"
        );
        let connections = Arc::new(Semaphore::new(c.connections_max));
        let memory = Arc::new(RequestMemory::new(c.queued_request_bytes_max));

        let (stop_tx, stop_rx) = watch::channel(false);
        let retention = tokio::spawn(retention_loop(broker.clone(), stop_rx.clone()));
        let group_timers = tokio::spawn(group_loop(broker.clone(), stop_rx.clone()));
        let flusher = tokio::spawn(flush_loop(broker.clone(), stop_rx.clone()));
        let hw_checkpoints = tokio::spawn(hw_checkpoint_loop(broker.clone(), stop_rx.clone()));
        let publisher = tokio::spawn(publish_loop(broker.clone(), stop_rx.clone()));
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(true));
        // The admin port outlives the client listener: `/ready` says 503 while connections drain.
        let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
        let admin = self.admin.map(|listener| {
            let mut stop = admin_stop_rx;
            tokio::spawn(crate::admin::serve(
                listener,
                broker.clone(),
                ready.clone(),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            ))
        });
        let mut tasks = tokio::task::JoinSet::new();
        let registry = Arc::new(Registry::default());
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = &mut shutdown => break,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    if let Some(suppressed) = crate::ratelog::allow("accept-failed") {
                        warn!(error = %e, suppressed, "accept failed");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let ip_max = c
                .connections_per_ip_overrides
                .get(&peer.ip().to_canonical())
                .copied()
                .unwrap_or(c.connections_per_ip_max);
            let Some(registered) = registry.register(peer, ip_max) else {
                broker.metrics.connections_refused.inc();
                if let Some(suppressed) = crate::ratelog::allow(&format!("per-ip-limit {}", peer.ip())) {
                    warn!(%peer, limit = ip_max, suppressed, "closing a new connection: its address holds max.connections.per.ip");
                }
                drop(stream);
                continue;
            };
            // At max.connections: make room by closing the connection that has been silent
            // longest, or wait for one to close.
            let permit = match connections.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    if let Some(evicted) = registry.evict_silent() {
                        if let Some(suppressed) = crate::ratelog::allow("evict-silent") {
                            info!(%peer, evicted = %evicted, suppressed, "at max.connections: closing the oldest connection that never sent a request");
                        }
                    }
                    tokio::select! {
                        p = connections.clone().acquire_owned() => match p {
                            Ok(p) => p,
                            Err(_) => break,
                        },
                        _ = &mut shutdown => break,
                    }
                }
            };
            registered.seated();
            let broker = broker.clone();
            let memory = memory.clone();
            let stop = stop_rx.clone();
            broker.metrics.connections_accepted.inc();
            tasks.spawn(async move {
                let _permit = permit;
                let _open = crate::metrics::Waiting::new(&broker.metrics.connections);
                debug!(%peer, "connection opened");
                if let Err(e) = serve(stream, peer, &broker, &memory, stop, &registered).await {
                    debug!(%peer, error = %e, "connection closed");
                }
                drop(registered);
            });
            // Reap finished connections so the set does not grow with every client ever seen.
            while tasks.try_join_next().is_some() {}
        }
        info!("shutting down: no new connections; finishing requests in progress");
        ready.store(false, std::sync::atomic::Ordering::Release);
        let _ = stop_tx.send(true);
        broker.groups.shutdown();
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while tasks.join_next().await.is_some() {} });
        if drained.await.is_err() {
            warn!(
                connections = tasks.len(),
                "connections still busy after the grace period; closing them"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        let _ = retention.await;
        let _ = group_timers.await;
        let _ = flusher.await;
        let _ = hw_checkpoints.await;
        let _ = publisher.await;
        // Everything acknowledged is on disk before the process ends, whatever the policy.
        let b = broker.clone();
        match tokio::task::spawn_blocking(move || b.topics.sync_all()).await {
            // The next start may trust the logs' indexes instead of scanning them.
            Ok(Ok(())) => {
                if let Err(e) = broker.topics.checkpoint_high_watermarks() {
                    warn!(error = %e, "could not write the high-watermark checkpoint");
                }
                if let Err(e) = broker.topics.save_producer_state() {
                    warn!(error = %e, "could not save producer state: the next start reads it from the logs");
                }
                if let Err(e) = meta::write_clean_shutdown_marker(&*broker.fs, &broker.config.data_dir) {
                    warn!(error = %e, "could not mark the shutdown clean: the next start recovers every log");
                }
            }
            Ok(Err(e)) => warn!(error = %e, "could not sync every log at shutdown: the next start recovers them"),
            Err(e) => warn!(error = %e, "shutdown sync task failed"),
        }
        let _ = admin_stop_tx.send(true);
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        info!("sluice broker stopped");
    }
}

/// How long the publisher waits before trying again a change it could not make (a full disk):
/// it also tries at the next image change.
const PUBLISH_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// The publisher: makes this node's partition logs follow the metadata image — each time the
/// image moves, `Topics::reconcile` opens the partitions the controller placed here, removes
/// the logs of deleted topics and applies changed topic configs, and the dynamic broker
/// configs take up the image's (`DynamicConfigs::reload`) — until shutdown. Changes this
/// node made as the controller are already done when it looks (they hold the same lock), so it
/// finds nothing to do for them. File work: on the blocking pool.
async fn publish_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut done = None;
    loop {
        let offset = broker.metadata.image().offset;
        if done != Some(offset) {
            let b = broker.clone();
            let publish = move || {
                b.dynamic.reload(&b.topics);
                b.topics.reconcile()
            };
            match tokio::task::spawn_blocking(publish).await {
                Ok(Ok(())) => done = Some(offset),
                Ok(Err(e)) => {
                    if let Some(suppressed) = crate::ratelog::allow("publish-failed") {
                        warn!(error = %e, suppressed, "cannot bring this node's partitions up to the metadata image; trying again");
                    }
                }
                Err(e) => warn!(error = %e, "publisher task failed"),
            }
        }
        tokio::select! {
            _ = broker.metadata.image_moved() => {}
            _ = tokio::time::sleep(PUBLISH_RETRY), if done != Some(broker.metadata.image().offset) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Applies retention every `log.retention.check.interval.ms` until shutdown.
async fn retention_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let every = std::time::Duration::from_millis(broker.config.topic_defaults.retention_check_interval_ms as u64);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = broker.clock.now_ms();
        let b = broker.clone();
        // File deletion is blocking work: keep it off the connection threads.
        match tokio::task::spawn_blocking(move || b.topics.enforce_retention(now)).await {
            Ok(0) => {}
            Ok(n) => info!(segments = n, "retention deleted segments"),
            Err(e) => warn!(error = %e, "retention task failed"),
        }
    }
}

/// Kafka's `replica.high.watermark.checkpoint.interval.ms` default.
const HW_CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Writes `replication-offset-checkpoint` every [`HW_CHECKPOINT_EVERY`] when a high watermark
/// moved, until shutdown (which writes it once more after the final sync).
async fn hw_checkpoint_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut last = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(HW_CHECKPOINT_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let b = broker.clone();
        let written = tokio::task::spawn_blocking(move || {
            // A cheap fingerprint of every high watermark: unchanged means nothing to write.
            let print: u64 = b
                .topics
                .list()
                .iter()
                .flat_map(|t| t.partitions.iter())
                .fold(0u64, |h, p| {
                    h.rotate_left(5) ^ (p.high_watermark() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                });
            if last == Some(print) {
                return Ok(last);
            }
            b.topics.checkpoint_high_watermarks().map(|()| Some(print))
        })
        .await;
        match written {
            Ok(Ok(print)) => last = print,
            Ok(Err(e)) => warn!(error = %e, "could not write the high-watermark checkpoint; retrying"),
            Err(_) => {}
        }
    }
}

/// How often partitions are checked against their `flush.ms`: its resolution.
const FLUSH_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Fsyncs partitions whose last fsync is older than their topic's `flush.ms` and that have
/// records waiting, until shutdown.
async fn flush_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(FLUSH_TICK) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = broker.clock.now_ms();
        let topics = broker.topics.list();
        let partitions = topics.iter().flat_map(|t| t.partitions.iter().map(move |p| (t, p)));
        // Rolled segments to seal, and partitions whose last fsync is older than flush.ms.
        let mut seal = vec![];
        let mut due = vec![];
        for (t, p) in partitions {
            if p.commit.failed() {
                continue;
            }
            if p.seal_pending() {
                seal.push(p.clone());
            }
            // Single node: the high watermark is the log end.
            if t.config.flush_ms < i64::MAX
                && p.high_watermark() > p.commit.durable_end()
                && now.saturating_sub(p.commit.last_sync_ms()) >= t.config.flush_ms
            {
                due.push(p.clone());
            }
        }
        if due.is_empty() && seal.is_empty() {
            continue;
        }
        let synced = tokio::task::spawn_blocking(move || {
            for p in seal {
                if let Err(e) = p.seal() {
                    // Retried every tick; said once a minute per partition (a full disk would
                    // otherwise fill the log with it).
                    if p.should_report_seal_failure(now) {
                        warn!(topic = %p.topic, partition = p.index, error = %e, "sealing a rolled segment failed; retrying");
                    }
                }
            }
            for p in due {
                let end = p.lock().log.log_end_offset();
                if let Err(e) = p.sync_to(end) {
                    warn!(topic = %p.topic, partition = p.index, error = %e, "flush.ms fsync failed");
                }
            }
        });
        if let Err(e) = synced.await {
            warn!(error = %e, "flush task failed");
        }
    }
}

/// The longest the group timer loop sleeps without looking (deadlines wake it sooner).
const GROUP_TIMER_MAX_SLEEP: std::time::Duration = std::time::Duration::from_secs(1);

/// Drives the group coordinator's timers — each group is visited when its next deadline
/// (session, join or sync timeout) comes, within a millisecond or two of it — and expires
/// committed offsets every `offsets.retention.check.interval.ms`, until shutdown. Both write
/// (and may fsync) `__consumer_offsets`, so they run on the blocking pool; what is due is
/// decided by the broker's clock, and tokio only sleeps.
async fn group_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let expire_every = std::time::Duration::from_millis(broker.groups.config().offsets_retention_check_ms as u64);
    let mut next_expiry = broker.clock.now() + expire_every;
    let mut next_deadline = None;
    loop {
        tokio::select! {
            _ = broker.groups.wait_for_timers(next_deadline, GROUP_TIMER_MAX_SLEEP) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let expire = broker.clock.now() >= next_expiry;
        if expire {
            next_expiry += expire_every;
        }
        let b = broker.clone();
        let ran = tokio::task::spawn_blocking(move || {
            let next = b.groups.tick_due();
            (next, if expire { b.groups.expire_offsets() } else { 0 })
        })
        .await;
        match ran {
            Ok((next, expired)) => {
                next_deadline = next;
                if expired > 0 {
                    info!(offsets = expired, "expired committed offsets");
                }
            }
            Err(e) => {
                // Shutting down (or a panic, in tests): look again after the longest sleep.
                warn!(error = %e, "group timer task failed");
                next_deadline = None;
            }
        }
    }
}

#[derive(Default)]
struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    per_ip: HashMap<IpAddr, usize>,
    /// Connection id (in order of arrival) → its address and the signal that closes it.
    silent: BTreeMap<u64, (SocketAddr, Arc<Notify>)>,
    next_id: u64,
}

/// One registered connection; dropping it unregisters it.
struct Registered {
    registry: Arc<Registry>,
    ip: IpAddr,
    peer: SocketAddr,
    id: u64,
    /// Notified when the connection is to close to make room (while it is still silent).
    evict: Arc<Notify>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection from `peer`, unless its address already holds `ip_max`. It is
    /// not yet among the silent ones (`Registered::seated`): a connection waiting for a slot
    /// must not be the one evicted to make room for itself.
    fn register(self: &Arc<Self>, peer: SocketAddr, ip_max: usize) -> Option<Registered> {
        let ip = peer.ip().to_canonical();
        let mut inner = self.lock();
        let held = inner.per_ip.entry(ip).or_insert(0);
        if *held >= ip_max {
            if *held == 0 {
                inner.per_ip.remove(&ip);
            }
            return None;
        }
        *held += 1;
        let id = inner.next_id;
        inner.next_id += 1;
        Some(Registered {
            registry: self.clone(),
            ip,
            peer,
            id,
            evict: Arc::new(Notify::new()),
        })
    }

    /// Closes the oldest connection that has not sent a byte yet, if there is one.
    fn evict_silent(&self) -> Option<SocketAddr> {
        let (_, (peer, evict)) = self.lock().silent.pop_first()?;
        // `notify_one` keeps the wake-up for a task that is not waiting yet.
        evict.notify_one();
        Some(peer)
    }
}

impl Registered {
    /// The connection has its slot: until it speaks, it is among the first to go.
    fn seated(&self) {
        self.registry
            .lock()
            .silent
            .insert(self.id, (self.peer, self.evict.clone()));
    }

    /// The connection sent its first bytes: it is no longer the first to go. False when it was
    /// chosen for eviction meanwhile (its wake-up may have lost the race with those bytes):
    /// it must close all the same, since the newcomer waits for its slot.
    fn spoke(&self) -> bool {
        self.registry.lock().silent.remove(&self.id).is_some()
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        inner.silent.remove(&self.id);
        if let Some(n) = inner.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                inner.per_ip.remove(&self.ip);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("request frame of {0} bytes is outside 0..={1} (socket.request.max.bytes)")]
    FrameSize(i64, usize),
    #[error("{0}")]
    Protocol(String),
    #[error("idle for longer than connections.max.idle.ms")]
    Idle,
    #[error("a request of {0} bytes did not arrive within socket.request.read.timeout.ms")]
    ReadTimeout(usize),
    #[error("a response made no progress for socket.write.timeout.ms: the client is not reading")]
    WriteTimeout,
    #[error("closed to make room at max.connections: it had sent nothing")]
    Evicted,
}

/// The first step of memory reserved for a request body, once its first bytes are here.
const BODY_STEP_FIRST: usize = 8 * 1024;

/// The request memory pool (`queued.max.request.bytes`) and the request bodies waiting for it.
///
/// Bodies reserve memory in steps as they arrive, so two large bodies could each hold part of
/// the pool and wait for the rest forever. To rule that out, of the bodies that have had to
/// wait for memory, the one that began arriving first may take a step the pool does not have
/// ("overdraw"): it then always completes and gives its memory back. Memory held past the pool
/// is thus at most about one request (`socket.request.max.bytes`) at a time. A body that never
/// waits costs one atomic increment here.
struct RequestMemory {
    pool: Semaphore,
    waiting: Mutex<std::collections::BTreeSet<u64>>,
    /// The id of the oldest body that has waited and is still arriving (`u64::MAX`: none).
    oldest: watch::Sender<u64>,
    next_id: std::sync::atomic::AtomicU64,
}

/// A body being read, numbered in order of arrival; dropping it takes it off the waiters.
struct Arrival<'a> {
    memory: &'a RequestMemory,
    id: u64,
    waited: bool,
}

impl RequestMemory {
    fn new(bytes: usize) -> RequestMemory {
        RequestMemory {
            pool: Semaphore::new(bytes),
            waiting: Mutex::default(),
            oldest: watch::channel(u64::MAX).0,
            next_id: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn begin(&self) -> Arrival<'_> {
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arrival {
            memory: self,
            id,
            waited: false,
        }
    }

    /// Updates `waiting` with `change` and publishes its oldest member.
    fn waiters(&self, change: impl FnOnce(&mut std::collections::BTreeSet<u64>)) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut waiting);
        self.oldest.send_replace(waiting.first().copied().unwrap_or(u64::MAX));
    }
}

impl<'a> Arrival<'a> {
    /// Waits for `step` bytes of the pool: `Some` with them, or `None` once this is the oldest
    /// body that has waited (it then overdraws: see `RequestMemory`).
    async fn wait_for(&mut self, step: u32) -> Result<Option<tokio::sync::SemaphorePermit<'a>>, ConnError> {
        let (memory, id): (&'a RequestMemory, u64) = (self.memory, self.id);
        if !self.waited {
            self.waited = true;
            memory.waiters(|w| {
                w.insert(id);
            });
        }
        let mut oldest = memory.oldest.subscribe();
        tokio::select! {
            p = memory.pool.acquire_many(step) => {
                p.map(Some).map_err(|_| ConnError::Protocol("memory pool closed".into()))
            }
            _ = oldest.wait_for(|oldest| *oldest == id) => Ok(None),
        }
    }
}

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        if self.waited {
            let id = self.id;
            self.memory.waiters(|w| {
                w.remove(&id);
            });
        }
    }
}

/// Reads a request body of exactly `size` bytes into fresh memory, without zeroing it first (a
/// produce request is mostly record data; zeroing it cost as much as reading it). Memory is
/// taken from the pool as bytes arrive: a step is reserved only once bytes are waiting to be
/// read, and each step is at most as large as what arrived before it, so a client that stalls
/// holds at most about twice what it sent. The body must arrive within `read_timeout`, not
/// counting time spent waiting for memory (another client's doing). The returned permit holds
/// what the pool gave (all of `size`, unless this body overdrew; see `RequestMemory`).
async fn read_body<'a>(
    rd: &mut BufReader<impl tokio::io::AsyncRead + Unpin>,
    size: usize,
    memory: &'a RequestMemory,
    read_timeout: std::time::Duration,
) -> Result<(BytesMut, tokio::sync::SemaphorePermit<'a>), ConnError> {
    let closed = |_| ConnError::Protocol("memory pool closed".into());
    let eof = || ConnError::Io(std::io::ErrorKind::UnexpectedEof.into());
    let mut deadline = tokio::time::Instant::now() + read_timeout;
    let mut arrival = memory.begin();
    // The buffer's capacity is address space, not memory: pages are touched as data lands.
    let mut frame = BytesMut::with_capacity(size);
    let mut held = memory.pool.acquire_many(0).await.map_err(closed)?;
    let mut reserved = 0usize;
    while frame.len() < size {
        if frame.len() == reserved {
            // Wait for bytes before reserving memory for them.
            match tokio::time::timeout_at(deadline, rd.fill_buf()).await {
                Err(_) => return Err(ConnError::ReadTimeout(size)),
                Ok(r) => {
                    if r?.is_empty() {
                        return Err(eof());
                    }
                }
            }
            let step = (size - reserved).min(reserved.max(BODY_STEP_FIRST));
            // `step <= size <= socket.request.max.bytes <= i32::MAX`.
            match memory.pool.try_acquire_many(step as u32) {
                Ok(p) => held.merge(p),
                Err(tokio::sync::TryAcquireError::Closed) => {
                    return Err(ConnError::Protocol("memory pool closed".into()))
                }
                Err(tokio::sync::TryAcquireError::NoPermits) => {
                    let waited = tokio::time::Instant::now();
                    // `None`: the oldest waiting body overdraws (see `RequestMemory`).
                    if let Some(p) = arrival.wait_for(step as u32).await? {
                        held.merge(p);
                    }
                    deadline += waited.elapsed();
                }
            }
            reserved += step;
        }
        let room = (reserved - frame.len()) as u64;
        match tokio::time::timeout_at(deadline, (&mut *rd).take(room).read_buf(&mut frame)).await {
            Err(_) => return Err(ConnError::ReadTimeout(size)),
            Ok(r) => {
                if r? == 0 {
                    return Err(eof());
                }
            }
        }
    }
    Ok((frame, held))
}

/// True when `buf` starts with a whole size-prefixed frame.
fn holds_whole_frame(buf: &[u8]) -> bool {
    if buf.len() < 4 {
        return false;
    }
    let n = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    n >= 0 && buf.len() - 4 >= n as usize
}

/// The most written in one step under `socket.write.timeout.ms`: a response must keep moving.
const WRITE_STEP: usize = 256 * 1024;

/// Writes `chunks` (and flushes when `flush`), failing when any step of at most `WRITE_STEP`
/// bytes makes no progress for `timeout`.
async fn write_response(
    wr: &mut BufWriter<impl tokio::io::AsyncWrite + Unpin>,
    chunks: &[bytes::Bytes],
    flush: bool,
    timeout: std::time::Duration,
) -> Result<(), ConnError> {
    for chunk in chunks {
        // Chunks past the buffer's size (record data) go straight to the socket.
        for piece in chunk.chunks(WRITE_STEP) {
            match tokio::time::timeout(timeout, wr.write_all(piece)).await {
                Err(_) => return Err(ConnError::WriteTimeout),
                Ok(r) => r?,
            }
        }
    }
    if flush {
        match tokio::time::timeout(timeout, wr.flush()).await {
            Err(_) => return Err(ConnError::WriteTimeout),
            Ok(r) => r?,
        }
    }
    Ok(())
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    broker: &Arc<Broker>,
    memory: &RequestMemory,
    mut stop: watch::Receiver<bool>,
    registered: &Registered,
) -> Result<(), ConnError> {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    // Small buffers: an idle connection should cost little (large frames bypass them).
    let mut rd = BufReader::with_capacity(8 * 1024, rd);
    let mut wr = BufWriter::with_capacity(8 * 1024, wr);
    let c = &broker.config;
    let (max, idle) = (c.request_frame_bytes_max, c.connection_idle_max);
    let mut silent = true;
    loop {
        let size = tokio::select! {
            r = tokio::time::timeout(idle, rd.read_i32()) => match r {
                Err(_) => return Err(ConnError::Idle),
                Ok(Ok(n)) => n,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(e)) => return Err(e.into()),
            },
            _ = registered.evict.notified(), if silent => return Err(ConnError::Evicted),
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        if silent {
            silent = false;
            if !registered.spoke() {
                return Err(ConnError::Evicted);
            }
        }
        if size < 0 || size as usize > max {
            if let Some(suppressed) = crate::ratelog::allow("frame-size") {
                warn!(%peer, size, max, suppressed, "closing connection: request frame size outside 0..=socket.request.max.bytes");
            }
            return Err(ConnError::FrameSize(size.into(), max));
        }
        let size = size as usize;
        let (frame, permit) = tokio::select! {
            r = read_body(&mut rd, size, memory, c.request_read_timeout) => match r {
                Err(ConnError::ReadTimeout(size)) => {
                    if let Some(suppressed) = crate::ratelog::allow(&format!("read-timeout {}", peer.ip())) {
                        warn!(%peer, size, suppressed, "closing connection: its request did not arrive within socket.request.read.timeout.ms");
                    }
                    return Err(ConnError::ReadTimeout(size));
                }
                r => r?,
            },
            // A request cut off by shutdown was never acknowledged: drop it.
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        let outcome = handlers::handle_frame(broker, peer, frame.freeze()).await;
        drop(permit);
        let (chunks, held) = match outcome {
            Outcome::Respond(chunks) => (chunks, None),
            Outcome::RespondHeld(chunks, held) => (chunks, Some(held)),
            Outcome::NoResponse => (vec![], None),
            Outcome::Close(why) => {
                let _ = tokio::time::timeout(c.write_timeout, wr.flush()).await;
                if let Some(suppressed) = crate::ratelog::allow("protocol-close") {
                    warn!(%peer, reason = %why, suppressed, "closing connection");
                }
                return Err(ConnError::Protocol(why));
            }
        };
        // Flush unless the next request is already here in full (pipelining): its response
        // then goes out in the same write.
        let flush = !holds_whole_frame(rd.buffer());
        let written = write_response(&mut wr, &chunks, flush, c.write_timeout).await;
        if matches!(written, Err(ConnError::WriteTimeout)) {
            if let Some(suppressed) = crate::ratelog::allow("write-timeout") {
                warn!(%peer, suppressed, "closing connection: it stopped reading its responses (socket.write.timeout.ms)");
            }
        }
        written?;
        // Response memory (`queued.max.response.bytes`) is free once it is in the socket.
        drop(held);
    }
}

/// Fetch reads and request bodies are buffers of up to a few MiB, freed after each response.
/// glibc's defaults hand such buffers back to the kernel and map fresh ones for the next
/// request, so every fetch paid for page faults and for zeroing new pages (a third of the
/// broker's CPU while serving consumers, measured with perf; docs/benchmarks.md). Freed memory
/// is now kept for reuse: up to `TRIM_BYTES` of free memory at the top of a heap before it is
/// returned, and no separate mapping below `MMAP_BYTES` (larger buffers are still mapped fresh). The cost: after a burst, up to that
/// much freed memory stays in the process's RSS.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's largest accepted mmap threshold on 64-bit (HEAP_MAX_SIZE / 2); a larger
        // value is refused, and setting the trim threshold alone would pin the mmap threshold
        // at its 128 KiB start.
        const MMAP_BYTES: libc::c_int = 32 << 20;
        const TRIM_BYTES: libc::c_int = 256 << 20;
        // SAFETY: mallopt only changes allocator parameters and is safe to call at any time.
        let accepted = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_BYTES) == 1 };
        if accepted {
            // SAFETY: as above.
            unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_BYTES) };
        } else {
            tracing::warn!("the allocator refused the mmap threshold; fetch buffers are mapped fresh each time");
        }
    }
}

/// Raises the soft limit on open descriptors to the hard limit (as Go's runtime and many servers
/// do): segment files (`log.open.files.max`) and connections (`max.connections`) both need
/// them, and the usual soft limit of 1024 is far below what a broker holds. Warns when even
/// the hard limit is below `wanted`; past the limit, accepts and opens fail with EMFILE and
/// the broker keeps running.
fn raise_open_files_limit(wanted: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    if (limit.rlim_cur as u128) < wanted as u128 {
        tracing::warn!(
            limit = limit.rlim_cur,
            wanted,
            "the open-file limit is below log.open.files.max + max.connections; raise `ulimit -n` or lower them"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

    #[tokio::test]
    async fn read_body_reads_exactly_the_frame_and_leaves_the_rest() {
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let mut rd = BufReader::with_capacity(8 * 1024, rx);
        let memory = RequestMemory::new(1 << 20);
        let first: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let second = vec![7u8; 5000];
        tokio::spawn(async move {
            tx.write_all(&first).await.unwrap();
            tx.write_all(&second).await.unwrap();
        });
        let (a, held) = read_body(&mut rd, 100_000, &memory, NO_TIMEOUT).await.unwrap();
        assert_eq!(a.len(), 100_000);
        assert_eq!(
            held.num_permits(),
            100_000,
            "the whole body is held while it is handled"
        );
        assert!(a.iter().enumerate().all(|(i, b)| *b == i as u8));
        drop(held);
        let (b, _held) = read_body(&mut rd, 5000, &memory, NO_TIMEOUT).await.unwrap();
        assert_eq!(&b[..], &[7u8; 5000][..]);
        assert!(
            read_body(&mut rd, 1, &memory, NO_TIMEOUT).await.is_err(),
            "end of stream"
        );
    }

    #[tokio::test]
    async fn a_stalled_body_holds_about_what_arrived_not_what_was_announced() {
        const POOL: usize = 64 << 20;
        let announced = 50 << 20;
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        let memory = Arc::new(RequestMemory::new(POOL));
        let m = memory.clone();
        let task = tokio::spawn(async move {
            let mut rd = BufReader::with_capacity(8 * 1024, rx);
            let _ = read_body(&mut rd, announced, &m, NO_TIMEOUT).await;
        });
        let settle = || tokio::time::sleep(std::time::Duration::from_millis(50));
        settle().await;
        assert_eq!(
            memory.pool.available_permits(),
            POOL,
            "nothing is reserved before a byte arrives"
        );
        tx.write_all(&vec![1u8; 100 * 1024]).await.unwrap();
        settle().await;
        let held = POOL - memory.pool.available_permits();
        assert!(held >= 100 * 1024, "what arrived is held ({held})");
        assert!(
            held <= 2 * 100 * 1024 + BODY_STEP_FIRST,
            "at most about twice what arrived, not the {announced} announced ({held})"
        );
        task.abort();
        let _ = task.await;
        assert_eq!(
            memory.pool.available_permits(),
            POOL,
            "a dropped read gives its memory back"
        );
    }

    #[tokio::test]
    async fn bodies_that_together_need_more_than_the_pool_still_all_arrive() {
        // Each needs 80% of the pool; stepping up together, they would each hold half and
        // wait for the rest forever, but the oldest overdraws and completes.
        const POOL: usize = 1 << 20;
        let memory = Arc::new(RequestMemory::new(POOL));
        let mut readers = vec![];
        let mut writers = vec![];
        for _ in 0..3 {
            let (tx, rx) = tokio::io::duplex(64 * 1024);
            let m = memory.clone();
            readers.push(tokio::spawn(async move {
                let mut rd = BufReader::with_capacity(8 * 1024, rx);
                let (body, held) = read_body(&mut rd, POOL * 4 / 5, &m, NO_TIMEOUT).await.unwrap();
                // Handled a moment later: the memory is held meanwhile.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                drop(held);
                body.len()
            }));
            writers.push(tx);
        }
        // Each writer sends its body in small pieces, so that all three are part-way in
        // together (a writer whose reader waits for memory blocks on its own stream only).
        let feeders: Vec<_> = writers
            .into_iter()
            .map(|mut w| {
                tokio::spawn(async move {
                    let chunk = vec![5u8; 16 * 1024];
                    let mut left = POOL * 4 / 5;
                    while left > 0 {
                        let n = left.min(chunk.len());
                        w.write_all(&chunk[..n]).await.unwrap();
                        left -= n;
                        tokio::task::yield_now().await;
                    }
                    w
                })
            })
            .collect();
        for r in readers {
            let n = tokio::time::timeout(std::time::Duration::from_secs(20), r)
                .await
                .expect("no deadlock")
                .unwrap();
            assert_eq!(n, POOL * 4 / 5);
        }
        for f in feeders {
            drop(f.await.unwrap());
        }
        assert_eq!(memory.pool.available_permits(), POOL);
    }
}
