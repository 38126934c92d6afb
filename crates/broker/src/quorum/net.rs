//! The metadata quorum over the network: one thread per node drives the `raft` core in the
//! [`MetadataLog`] (what arrives, and its timers), voters answer their peers on the controller
//! listener, and each peer voter gets two outgoing connections — one for fetches, which a
//! leader holds up to 500 ms, one for votes and epoch notices, so an election is never
//! queued behind a parked fetch. Messages are Kafka's (`super::wire`).
//!
//! Bounds, and what happens at them: the driver's inbox holds [`INBOX`] messages (a message
//! arriving when it is full is dropped, as a lossy network would; the core sends again);
//! each outgoing lane holds [`LANE`] messages (the same); the controller listener takes
//! [`CONNECTIONS_MAX`] connections (more wait to be accepted) and requests of up to
//! [`REQUEST_BYTES_MAX`] (on a controller, `socket.request.max.bytes` if larger, as a
//! forwarded admin request is a client's); a response of more than [`RESPONSE_BYTES_MAX`] closes the
//! connection. A request the core does not answer in time (a fetch it replaced with a newer
//! one) is answered with REQUEST_TIMED_OUT, which the asking node reads as a lost message.

use super::wire::{self as qwire, Asked, Request, Response};
use crate::metadata_log::{MetadataLog, Outbox};
use bytes::{Bytes, BytesMut};
use raft::{Message, NodeId};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use wire::codec::Encode;
use wire::messages::{
    api_versions_response as avr, ApiKey, ApiVersionsResponse, BeginQuorumEpochResponse, EndQuorumEpochResponse,
    RequestBody, RequestHeader, ResponseBody,
};
use wire::ErrorCode;

/// Messages waiting for the driver thread.
pub const INBOX: usize = 4096;
/// Messages waiting to go to one peer on one lane.
pub const LANE: usize = 64;
/// Connections the controller listener serves at once (voters and observing brokers).
pub const CONNECTIONS_MAX: usize = 1024;
/// The largest request a peer may send to a node without controller APIs (quorum requests
/// are small); a controller's listener takes `ControllerApis::request_bytes_max`.
pub const REQUEST_BYTES_MAX: usize = 1 << 20;
/// The largest response read from a peer: a fetch answer or a snapshot chunk, and some room.
pub const RESPONSE_BYTES_MAX: usize = (qwire::FETCH_MAX_BYTES as usize) + (1 << 20);
/// How long a peer that does not answer is waited for, beyond what the request may park.
const ANSWER_SLACK: Duration = Duration::from_secs(2);
/// How long a connection attempt to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The client id the quorum's requests carry.
const CLIENT_ID: &str = "sluice-raft";

/// Where each voter's controller listener is (`controller.quorum.voters`).
pub type VoterAddresses = BTreeMap<NodeId, String>;

/// The controller's own requests on the controller listener, beside the quorum's: brokers
/// registering. Called on the blocking pool (a change waits for the quorum to commit it).
pub trait ControllerApis: Send + Sync {
    fn broker_registration(
        &self,
        request: wire::messages::BrokerRegistrationRequest,
    ) -> wire::messages::BrokerRegistrationResponse;
    /// A block of producer ids for a broker (AllocateProducerIds), committed before the answer.
    fn allocate_producer_ids(
        &self,
        request: wire::messages::AllocateProducerIdsRequest,
    ) -> wire::messages::AllocateProducerIdsResponse;
    /// BrokerHeartbeat: a broker lives (and may be unfenced).
    fn broker_heartbeat(
        &self,
        request: wire::messages::BrokerHeartbeatRequest,
    ) -> wire::messages::BrokerHeartbeatResponse;
    /// A client's admin request that another broker forwarded here (one of
    /// `handlers::FORWARDED`), answered as this node answers it; `None` if this node cannot
    /// (not a broker yet).
    fn forwarded(&self, version: i16, request: RequestBody) -> Option<ResponseBody>;
    /// DescribeQuorum as the leader answers it (brokers forward theirs here).
    fn describe_quorum(&self, request: wire::messages::DescribeQuorumRequest)
        -> wire::messages::DescribeQuorumResponse;
    /// AlterPartition: a partition leader's ISR change, committed before the answer.
    fn alter_partition(&self, request: wire::messages::AlterPartitionRequest)
        -> wire::messages::AlterPartitionResponse;
    /// The largest request frame this listener reads: a forwarded admin request may be as
    /// large as a client's (`socket.request.max.bytes`), so a controller takes what its
    /// brokers' clients may send.
    fn request_bytes_max(&self) -> usize {
        REQUEST_BYTES_MAX
    }
}

/// Requests this node received that wait for the core's answer.
#[derive(Default)]
struct Waiting {
    next_id: u64,
    /// Fetch and FetchSnapshot, by the id the core echoes in its answer.
    by_id: HashMap<u64, (NodeId, oneshot::Sender<Message<Bytes>>)>,
    /// Votes, by candidate, oldest first (the core answers a vote in the step it arrives).
    votes: HashMap<NodeId, VecDeque<oneshot::Sender<Message<Bytes>>>>,
}

struct Lanes {
    fetch: tokio::sync::mpsc::Sender<Message<Bytes>>,
    other: tokio::sync::mpsc::Sender<Message<Bytes>>,
}

/// The core's outbox on the network, and the driver's inbox.
pub struct Net {
    inbox: mpsc::SyncSender<Option<(NodeId, Message<Bytes>)>>,
    waiting: Mutex<Waiting>,
    lanes: BTreeMap<NodeId, Lanes>,
    /// This node's cluster, sent with every request and checked on every one received
    /// (`None`: not known yet; a new node learns it from the log).
    cluster_id: std::sync::RwLock<Option<String>>,
    /// A voter that answered INCONSISTENT_CLUSTER_ID (-1: none): this node is of another
    /// cluster than the quorum it was pointed at.
    refused_by: std::sync::atomic::AtomicI32,
}

impl Net {
    fn cluster_id(&self) -> Option<String> {
        self.cluster_id.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Outbox for Net {
    fn send(&self, to: NodeId, message: Message<Bytes>) {
        let answer = |w: &mut Waiting| -> Option<oneshot::Sender<Message<Bytes>>> {
            match &message {
                Message::VoteResponse { .. } => w.votes.get_mut(&to).and_then(|q| q.pop_front()),
                Message::FetchResponse(a) => w.by_id.remove(&a.id).map(|(_, tx)| tx),
                Message::FetchSnapshotResponse(a) => w.by_id.remove(&a.id).map(|(_, tx)| tx),
                _ => None,
            }
        };
        let is_answer = matches!(
            message,
            Message::VoteResponse { .. } | Message::FetchResponse(_) | Message::FetchSnapshotResponse(_)
        );
        if is_answer {
            let tx = answer(&mut self.waiting.lock().unwrap_or_else(|p| p.into_inner()));
            if let Some(tx) = tx {
                let _ = tx.send(message);
            }
            return;
        }
        let Some(lanes) = self.lanes.get(&to) else {
            tracing::debug!(to, "the metadata quorum has no address for this node; message dropped");
            return;
        };
        let lane = match message {
            Message::Fetch { .. } | Message::FetchSnapshot { .. } => &lanes.fetch,
            _ => &lanes.other,
        };
        // Full: dropped, as a lossy network would (the core sends again).
        let _ = lane.try_send(message);
    }
}

impl Net {
    fn deliver(&self, from: NodeId, message: Message<Bytes>) {
        // Full: dropped (see the module's bounds).
        let _ = self.inbox.try_send(Some((from, message)));
    }
}

/// The quorum running on the network for one node, until it is stopped or dropped.
pub struct QuorumNode {
    net: Arc<Net>,
    thread: Option<std::thread::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl QuorumNode {
    /// This node's cluster, once learned from the log: sent with every request from now on,
    /// and checked on every one received.
    pub fn set_cluster_id(&self, id: &str) {
        *self.net.cluster_id.write().unwrap_or_else(|p| p.into_inner()) = Some(id.to_string());
    }

    /// A voter that refused this node as one of another cluster, if any has.
    pub fn refused_by(&self) -> Option<NodeId> {
        let n = self.net.refused_by.load(std::sync::atomic::Ordering::Acquire);
        (n >= 0).then_some(n)
    }

    /// Starts the driver thread and the connections to the other voters, and serves
    /// `listener` (the controller listener; `None` for an observer, which only fetches) on
    /// the current tokio runtime.
    pub fn start(
        log: Arc<MetadataLog>,
        voters: &VoterAddresses,
        listener: Option<TcpListener>,
        cluster_id: Option<String>,
        apis: Option<Arc<dyn ControllerApis>>,
    ) -> QuorumNode {
        let me = log.settings().node_id;
        let (inbox_tx, inbox_rx) = mpsc::sync_channel(INBOX);
        let mut lanes = BTreeMap::new();
        let mut receivers = Vec::new();
        for (&id, addr) in voters.iter().filter(|(id, _)| **id != me) {
            let (fetch_tx, fetch_rx) = tokio::sync::mpsc::channel(LANE);
            let (other_tx, other_rx) = tokio::sync::mpsc::channel(LANE);
            lanes.insert(
                id,
                Lanes {
                    fetch: fetch_tx,
                    other: other_tx,
                },
            );
            receivers.push((id, addr.clone(), fetch_rx, other_rx));
        }
        let net = Arc::new(Net {
            inbox: inbox_tx,
            waiting: Mutex::new(Waiting::default()),
            lanes,
            cluster_id: std::sync::RwLock::new(cluster_id),
            refused_by: std::sync::atomic::AtomicI32::new(-1),
        });
        log.set_outbox(net.clone());
        let fetch_wait = Duration::from_millis(raft::Config::new(me, [me], 0).fetch_max_wait_ms);
        let mut tasks = Vec::new();
        for (id, addr, fetch_rx, other_rx) in receivers {
            for rx in [fetch_rx, other_rx] {
                tasks.push(tokio::spawn(lane(id, addr.clone(), rx, net.clone(), fetch_wait)));
            }
        }
        if let Some(listener) = listener {
            tasks.push(tokio::spawn(serve(listener, net.clone(), fetch_wait, apis)));
        }
        let driver = log.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sluice-quorum-{me}"))
            .spawn(move || drive(driver, inbox_rx))
            .expect("a thread for the metadata quorum");
        QuorumNode {
            net,
            thread: Some(thread),
            tasks,
        }
    }

    /// Stops the driver thread and every connection (a node's crash, as far as its peers
    /// can tell; the log is as the last step left it). Dropping the node does the same.
    pub fn stop(self) {}
}

impl Drop for QuorumNode {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // `None` is the driver's signal to stop; it may wait behind a full inbox.
        let _ = self.net.inbox.send(None);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The driver thread: hands the core what arrives, and ticks it at its deadlines.
fn drive(log: Arc<MetadataLog>, inbox: mpsc::Receiver<Option<(NodeId, Message<Bytes>)>>) {
    loop {
        let wait = log.next_deadline().saturating_sub(log.core_time());
        match inbox.recv_timeout(Duration::from_millis(wait.max(1))) {
            Ok(Some(received)) => log.step(Some(received)),
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => log.step(None),
        }
        if log.core_time() >= log.next_deadline() {
            log.step(None);
        }
    }
}

/// What one outgoing request turns into.
enum Sent {
    /// The core's message for the answer.
    Answer(Message<Bytes>),
    /// An acknowledgement the core does not need (BeginQuorumEpoch, EndQuorumEpoch).
    Acknowledged,
}

/// One lane to one peer: sends its messages one at a time and hands the answers to the core.
async fn lane(
    to: NodeId,
    addr: String,
    mut rx: tokio::sync::mpsc::Receiver<Message<Bytes>>,
    net: Arc<Net>,
    fetch_wait: Duration,
) {
    let mut conn: Option<TcpStream> = None;
    let mut correlation_id: i32 = 0;
    let mut last_error = String::new();
    while let Some(message) = rx.recv().await {
        let Some((request, asked)) = qwire::request(net.cluster_id().as_deref(), to, &message) else {
            continue;
        };
        if conn.is_none() {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    conn = Some(s);
                }
                Ok(Err(e)) => {
                    note_error(&mut last_error, to, &addr, &e.to_string());
                    continue;
                }
                Err(_) => {
                    note_error(&mut last_error, to, &addr, "connect timed out");
                    continue;
                }
            }
        }
        let stream = conn.as_mut().expect("connected above");
        correlation_id = correlation_id.wrapping_add(1);
        let wait = match asked {
            Asked::Fetch { .. } | Asked::FetchSnapshot { .. } => fetch_wait + ANSWER_SLACK,
            _ => ANSWER_SLACK,
        };
        match tokio::time::timeout(wait, exchange(stream, correlation_id, request, asked)).await {
            Ok(Ok(Sent::Answer(m))) => {
                last_error.clear();
                net.deliver(to, m);
            }
            Ok(Ok(Sent::Acknowledged)) => last_error.clear(),
            Ok(Err(e)) => {
                if e == INCONSISTENT {
                    net.refused_by.store(to, std::sync::atomic::Ordering::Release);
                }
                note_error(&mut last_error, to, &addr, &e);
                conn = None;
            }
            Err(_) => {
                note_error(&mut last_error, to, &addr, "no answer in time");
                conn = None;
            }
        }
    }
}

/// What `exchange` says when a voter refused this node as one of another cluster.
const INCONSISTENT: &str = "INCONSISTENT_CLUSTER_ID: the voter belongs to another cluster";

/// Logs a peer's trouble once, not once per message, until it goes away or changes.
fn note_error(last: &mut String, to: NodeId, addr: &str, error: &str) {
    if last != error {
        if error == INCONSISTENT {
            tracing::warn!(
                peer = to,
                addr,
                "metadata quorum: the voter refused this node as one of another cluster (INCONSISTENT_CLUSTER_ID)"
            );
        } else {
            tracing::info!(
                peer = to,
                addr,
                error,
                "metadata quorum: cannot reach a voter (retried)"
            );
        }
        *last = error.to_string();
    }
}

/// One request and its response on `stream`.
async fn exchange(stream: &mut TcpStream, correlation_id: i32, request: Request, asked: Asked) -> Result<Sent, String> {
    let (key, version) = match &request {
        Request::Vote(_) => (ApiKey::Vote, qwire::VOTE_VERSION),
        Request::BeginQuorumEpoch(_) => (ApiKey::BeginQuorumEpoch, qwire::BEGIN_QUORUM_EPOCH_VERSION),
        Request::EndQuorumEpoch(_) => (ApiKey::EndQuorumEpoch, qwire::END_QUORUM_EPOCH_VERSION),
        Request::Fetch(_) => (ApiKey::Fetch, qwire::FETCH_VERSION),
        Request::FetchSnapshot(_) => (ApiKey::FetchSnapshot, qwire::FETCH_SNAPSHOT_VERSION),
    };
    let out = match &request {
        Request::Vote(r) => request_frame(key, version, correlation_id, r),
        Request::BeginQuorumEpoch(r) => request_frame(key, version, correlation_id, r),
        Request::EndQuorumEpoch(r) => request_frame(key, version, correlation_id, r),
        Request::Fetch(r) => request_frame(key, version, correlation_id, r),
        Request::FetchSnapshot(r) => request_frame(key, version, correlation_id, r),
    }?;
    stream.write_all(&out).await.map_err(|e| e.to_string())?;
    let frame = read_frame(stream, RESPONSE_BYTES_MAX).await?;
    let body = answer_of(frame, key, version, correlation_id)?;
    let response = match body {
        ResponseBody::Vote(v) => Response::Vote(v),
        ResponseBody::Fetch(f) => Response::Fetch(f),
        ResponseBody::FetchSnapshot(f) => Response::FetchSnapshot(f),
        ResponseBody::BeginQuorumEpoch(b) if b.error_code == ErrorCode::InconsistentClusterId.code() => {
            return Err(INCONSISTENT.into())
        }
        ResponseBody::EndQuorumEpoch(e) if e.error_code == ErrorCode::InconsistentClusterId.code() => {
            return Err(INCONSISTENT.into())
        }
        ResponseBody::BeginQuorumEpoch(_) | ResponseBody::EndQuorumEpoch(_) => return Ok(Sent::Acknowledged),
        other => return Err(format!("an answer of another kind: {:?}", other.api_key())),
    };
    if response_error(&response) == Some(ErrorCode::InconsistentClusterId.code()) {
        return Err(INCONSISTENT.into());
    }
    if let Some(code) = response_error(&response) {
        // The peer could not answer (REQUEST_TIMED_OUT: the core never did): a lost message.
        return Err(format!("answered with error {code}"));
    }
    qwire::from_response(asked, &response).map(Sent::Answer)
}

fn response_error(r: &Response) -> Option<i16> {
    let code = match r {
        Response::Vote(v) => v.error_code,
        Response::Fetch(f) => f.error_code,
        Response::FetchSnapshot(f) => f.error_code,
    };
    (code != 0).then_some(code)
}

/// A whole request frame: header (this driver's client id) and body.
fn request_frame<B: Encode>(key: ApiKey, version: i16, correlation_id: i32, body: &B) -> Result<BytesMut, String> {
    let header = RequestHeader {
        request_api_key: key as i16,
        request_api_version: version,
        correlation_id,
        client_id: Some(CLIENT_ID.into()),
    };
    let mut out = BytesMut::new();
    wire::frame::encode_request(&mut out, &header, body).map_err(|e| format!("cannot encode {key:?}: {e}"))?;
    Ok(out)
}

/// The body of a response frame (without its size) to request `correlation_id`.
fn answer_of(mut frame: Bytes, key: ApiKey, version: i16, correlation_id: i32) -> Result<ResponseBody, String> {
    let h = wire::frame::decode_response_header(&mut frame, key, version).map_err(|e| e.to_string())?;
    if h.correlation_id != correlation_id {
        return Err(format!("answer {} to request {correlation_id}", h.correlation_id));
    }
    ResponseBody::decode(key, &mut frame, version).map_err(|e| e.to_string())
}

/// A whole response frame.
fn response_frame<B: Encode>(correlation_id: i32, key: ApiKey, version: i16, body: &B) -> Result<BytesMut, String> {
    let mut out = BytesMut::new();
    wire::frame::encode_response(&mut out, correlation_id, key, version, body).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Reads one size-prefixed frame of at most `max` bytes.
async fn read_frame(stream: &mut TcpStream, max: usize) -> Result<Bytes, String> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).await.map_err(|e| e.to_string())?;
    let size = i32::from_be_bytes(size);
    let size = usize::try_from(size).map_err(|_| format!("a frame of size {size}"))?;
    if size > max {
        return Err(format!("a frame of {size} bytes, over the {max} allowed"));
    }
    let mut buf = vec![0u8; size];
    stream.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    Ok(Bytes::from(buf))
}

/// The controller listener: answers the quorum's requests (and ApiVersions).
async fn serve(listener: TcpListener, net: Arc<Net>, fetch_wait: Duration, apis: Option<Arc<dyn ControllerApis>>) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    // Connections are this task's: aborting it (a node stopping) closes every one of them.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "controller listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let net = net.clone();
        let apis = apis.clone();
        connections.spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            if let Err(e) = connection(stream, net, fetch_wait, apis).await {
                tracing::debug!(error = %e, "controller listener: connection closed");
            }
        });
    }
}

/// The quorum APIs this listener answers, with the versions it speaks.
fn versions() -> Vec<avr::ApiVersion> {
    [
        (ApiKey::ApiVersions, 0, 4),
        (ApiKey::Fetch, qwire::FETCH_VERSION, qwire::FETCH_VERSION),
        (ApiKey::Vote, qwire::VOTE_VERSION, qwire::VOTE_VERSION),
        (ApiKey::BeginQuorumEpoch, 0, qwire::BEGIN_QUORUM_EPOCH_VERSION),
        (ApiKey::EndQuorumEpoch, 0, qwire::END_QUORUM_EPOCH_VERSION),
        (ApiKey::FetchSnapshot, 0, qwire::FETCH_SNAPSHOT_VERSION),
        (
            ApiKey::BrokerRegistration,
            ApiKey::BrokerRegistration.versions().0,
            ApiKey::BrokerRegistration.versions().1,
        ),
        (ApiKey::DescribeQuorum, 0, 2),
        (ApiKey::AllocateProducerIds, 0, 0),
        // Topic ids (2) and member broker epochs (3, KIP-903).
        (ApiKey::AlterPartition, 2, 3),
        (ApiKey::BrokerHeartbeat, 0, ApiKey::BrokerHeartbeat.versions().1),
    ]
    .into_iter()
    .chain(crate::handlers::FORWARDED.iter().filter_map(|&k| {
        let (min, max) = crate::handlers::supported_versions(k)?;
        Some((k, min, max))
    }))
    .map(|(k, min, max)| avr::ApiVersion {
        api_key: k as i16,
        min_version: min,
        max_version: max,
    })
    .collect()
}

async fn connection(
    mut stream: TcpStream,
    net: Arc<Net>,
    fetch_wait: Duration,
    apis: Option<Arc<dyn ControllerApis>>,
) -> Result<(), String> {
    // Once per connection, not per frame: quorum fetches arrive every few hundred ms.
    let limit = apis.as_ref().map_or(REQUEST_BYTES_MAX, |a| a.request_bytes_max());
    loop {
        let mut frame = read_frame(&mut stream, limit).await?;
        let header = wire::frame::decode_request_header(&mut frame).map_err(|e| e.to_string())?;
        let version = header.request_api_version;
        let Some(key) = ApiKey::from_i16(header.request_api_key) else {
            return Err(format!("unknown API key {}", header.request_api_key));
        };
        let supported = versions()
            .into_iter()
            .any(|v| v.api_key == key as i16 && (v.min_version..=v.max_version).contains(&version));
        let cid = header.correlation_id;
        if key == ApiKey::ApiVersions {
            let body = ApiVersionsResponse {
                error_code: if supported {
                    0
                } else {
                    ErrorCode::UnsupportedVersion.code()
                },
                api_keys: versions(),
                ..Default::default()
            };
            // An unknown version is answered as v0, as Kafka does.
            let v = if supported { version } else { 0 };
            let out = response_frame(cid, key, v, &body)?;
            stream.write_all(&out).await.map_err(|e| e.to_string())?;
            continue;
        }
        if !supported {
            return Err(format!("{key:?} v{version} is not served on the controller listener"));
        }
        let body = RequestBody::decode(key, &mut frame, version).map_err(|e| e.to_string())?;
        let out = match body {
            RequestBody::BrokerRegistration(_)
            | RequestBody::AllocateProducerIds(_)
            | RequestBody::AlterPartition(_)
            | RequestBody::BrokerHeartbeat(_)
            | RequestBody::CreateTopics(_)
            | RequestBody::DeleteTopics(_)
            | RequestBody::CreatePartitions(_)
            | RequestBody::AlterConfigs(_)
            | RequestBody::IncrementalAlterConfigs(_)
            | RequestBody::DescribeQuorum(_) => {
                let apis = apis
                    .clone()
                    .ok_or_else(|| format!("{key:?} on a listener without a controller"))?;
                // Off the async workers: a registration or a block of ids waits for a commit.
                tokio::task::spawn_blocking(move || match body {
                    RequestBody::BrokerRegistration(r) => {
                        response_frame(cid, key, version, &apis.broker_registration(r))
                    }
                    RequestBody::AllocateProducerIds(r) => {
                        response_frame(cid, key, version, &apis.allocate_producer_ids(r))
                    }
                    RequestBody::DescribeQuorum(r) => response_frame(cid, key, version, &apis.describe_quorum(r)),
                    RequestBody::AlterPartition(r) => response_frame(cid, key, version, &apis.alter_partition(r)),
                    RequestBody::BrokerHeartbeat(r) => response_frame(cid, key, version, &apis.broker_heartbeat(r)),
                    forwarded => match apis.forwarded(version, forwarded) {
                        Some(answer) => response_frame(cid, key, version, &AnyResponse(&answer)),
                        None => Err(format!("{key:?}: this controller cannot answer forwarded requests yet")),
                    },
                })
                .await
                .map_err(|e| e.to_string())??
            }
            body => quorum_answer(body, key, version, cid, &net, fetch_wait).await?,
        };
        stream.write_all(&out).await.map_err(|e| e.to_string())?;
    }
}

/// Hands a quorum request to the core and answers with what the core says (or
/// REQUEST_TIMED_OUT when it says nothing in time).
async fn quorum_answer(
    body: RequestBody,
    key: ApiKey,
    version: i16,
    cid: i32,
    net: &Net,
    fetch_wait: Duration,
) -> Result<BytesMut, String> {
    let request = match body {
        RequestBody::Vote(r) => Request::Vote(r),
        RequestBody::BeginQuorumEpoch(r) => Request::BeginQuorumEpoch(r),
        RequestBody::EndQuorumEpoch(r) => Request::EndQuorumEpoch(r),
        RequestBody::Fetch(r) => Request::Fetch(r),
        RequestBody::FetchSnapshot(r) => Request::FetchSnapshot(r),
        _ => return Err(format!("{key:?} is not served on the controller listener")),
    };
    let (from, mut message) = qwire::from_request(&request)?;
    // A node of another cluster takes no part (Kafka's check): its vote could otherwise make
    // a foreign log the quorum's.
    if let (Some(theirs), Some(ours)) = (qwire::cluster_id_of(&request), net.cluster_id()) {
        if theirs != ours {
            if let Some(suppressed) = crate::ratelog::allow("quorum-foreign-cluster") {
                tracing::warn!(node = from, theirs, %ours, suppressed, "metadata quorum: refused a request from a node of another cluster (INCONSISTENT_CLUSTER_ID)");
            }
            return error_frame(cid, key, version, ErrorCode::InconsistentClusterId);
        }
    }
    let wait = match &message {
        Message::Fetch { .. } | Message::FetchSnapshot { .. } => fetch_wait + ANSWER_SLACK,
        _ => ANSWER_SLACK,
    };
    let rx = {
        let mut w = net.waiting.lock().unwrap_or_else(|p| p.into_inner());
        match &mut message {
            Message::Fetch { id, .. } | Message::FetchSnapshot { id, .. } => {
                w.next_id += 1;
                *id = w.next_id;
                // A node has one fetch in flight: an older one from it is dropped (its
                // asker gave up on it).
                w.by_id.retain(|_, (asker, _)| *asker != from);
                let (tx, rx) = oneshot::channel();
                w.by_id.insert(*id, (from, tx));
                Some(rx)
            }
            Message::Vote { .. } => {
                let (tx, rx) = oneshot::channel();
                let q = w.votes.entry(from).or_default();
                q.retain(|tx| !tx.is_closed());
                q.push_back(tx);
                Some(rx)
            }
            _ => None,
        }
    };
    net.deliver(from, message);
    let Some(rx) = rx else {
        // Epoch notices are acknowledged at once; the core needs no answer sent.
        return if key == ApiKey::BeginQuorumEpoch {
            response_frame(cid, key, version, &BeginQuorumEpochResponse::default())
        } else {
            response_frame(cid, key, version, &EndQuorumEpochResponse::default())
        };
    };
    let answer = tokio::time::timeout(wait, rx).await.ok().and_then(|r| r.ok());
    match answer.as_ref().and_then(qwire::response) {
        Some(Response::Vote(v)) => response_frame(cid, key, version, &v),
        Some(Response::Fetch(f)) => response_frame(cid, key, version, &f),
        Some(Response::FetchSnapshot(f)) => response_frame(cid, key, version, &f),
        None => error_frame(cid, key, version, ErrorCode::RequestTimedOut),
    }
}

/// An answer of `key`'s kind carrying only `code`: REQUEST_TIMED_OUT for a request the core
/// did not answer, INCONSISTENT_CLUSTER_ID for one from another cluster.
fn error_frame(cid: i32, key: ApiKey, version: i16, code: ErrorCode) -> Result<BytesMut, String> {
    use wire::messages::{FetchResponse, FetchSnapshotResponse, VoteResponse};
    let error_code = code.code();
    match key {
        ApiKey::BeginQuorumEpoch => response_frame(
            cid,
            key,
            version,
            &BeginQuorumEpochResponse {
                error_code,
                ..Default::default()
            },
        ),
        ApiKey::EndQuorumEpoch => response_frame(
            cid,
            key,
            version,
            &EndQuorumEpochResponse {
                error_code,
                ..Default::default()
            },
        ),
        ApiKey::Vote => response_frame(
            cid,
            key,
            version,
            &VoteResponse {
                error_code,
                ..Default::default()
            },
        ),
        ApiKey::Fetch => response_frame(
            cid,
            key,
            version,
            &FetchResponse {
                error_code,
                ..Default::default()
            },
        ),
        _ => response_frame(
            cid,
            key,
            version,
            &FetchSnapshotResponse {
                error_code,
                ..Default::default()
            },
        ),
    }
}

/// Any request body, as a body to encode (a client's admin request forwarded as it came).
pub struct AnyRequest<'a>(pub &'a RequestBody);

impl Encode for AnyRequest<'_> {
    fn encode(&self, buf: &mut BytesMut, version: i16) -> Result<(), wire::codec::EncodeError> {
        self.0.encode(buf, version)
    }
}

/// Any response body, as a body to encode (the answer to a forwarded request).
struct AnyResponse<'a>(&'a ResponseBody);

impl Encode for AnyResponse<'_> {
    fn encode(&self, buf: &mut BytesMut, version: i16) -> Result<(), wire::codec::EncodeError> {
        self.0.encode(buf, version)
    }
}

/// Sends one request to `addr` on a connection of its own and returns the answer's body
/// (a broker registering with the active controller, and the like).
pub async fn call<B: Encode>(
    addr: &str,
    key: ApiKey,
    version: i16,
    body: &B,
    timeout: Duration,
) -> Result<ResponseBody, String> {
    let out = request_frame(key, version, 1, body)?;
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream.write_all(&out).await.map_err(|e| e.to_string())?;
        let frame = read_frame(&mut stream, RESPONSE_BYTES_MAX).await?;
        answer_of(frame, key, version, 1)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer from {addr} in {timeout:?}"))?
}

/// [`call`] on the calling thread, with std's sockets (for a handler running off the async
/// workers).
pub fn call_blocking<B: Encode>(
    addr: &str,
    key: ApiKey,
    version: i16,
    body: &B,
    timeout: Duration,
) -> Result<ResponseBody, String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let out = request_frame(key, version, 1, body)?;
    let target = addr
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&target, timeout).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.write_all(&out).map_err(|e| e.to_string())?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).map_err(|e| e.to_string())?;
    let size = usize::try_from(i32::from_be_bytes(size)).map_err(|_| "a negative frame size".to_string())?;
    if size > RESPONSE_BYTES_MAX {
        return Err(format!(
            "a frame of {size} bytes, over the {RESPONSE_BYTES_MAX} allowed"
        ));
    }
    let mut buf = vec![0u8; size];
    stream.read_exact(&mut buf).map_err(|e| e.to_string())?;
    answer_of(Bytes::from(buf), key, version, 1)
}
