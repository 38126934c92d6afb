//! One TCP connection to one broker: frames requests, matches responses by correlation id, and
//! negotiates each API's version from the broker's ApiVersions answer.
//!
//! Requests are pipelined: many may wait on one connection (at most `MAX_IN_FLIGHT`; the next
//! caller waits for a slot). A writer task owns the write half and a reader task the read half,
//! so a caller that is cancelled mid-request never leaves half a frame on the socket (its
//! waiter is removed when its future is dropped). When the connection fails every waiting
//! request gets the error and the connection is marked dead, so its owner reconnects.

use crate::error::{Error, Result};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Semaphore};
use wire::messages::*;
use wire::{ApiKey, ApiMessage, Decode, Message};

/// Requests outstanding on one connection; the next caller waits for a slot.
pub const MAX_IN_FLIGHT: usize = 256;
/// Largest response frame accepted; a bigger size prefix closes the connection as corrupt.
pub const MAX_RESPONSE_BYTES: usize = 512 << 20;

/// A request this client knows how to send, its response type and the highest version whose
/// fields the client fills in correctly (the broker's maximum may be higher).
pub trait Request: ApiMessage + 'static {
    type Response: Message;
    const CLIENT_MAX: i16;
}

macro_rules! requests {
    ($($req:ident => $resp:ident, $max:expr;)*) => {
        $(impl Request for $req {
            type Response = $resp;
            const CLIENT_MAX: i16 = $max;
        })*
    };
}

requests! {
    ProduceRequest => ProduceResponse, 11;
    FetchRequest => FetchResponse, 12; // 13+ names topics by id only
    ListOffsetsRequest => ListOffsetsResponse, 8;
    MetadataRequest => MetadataResponse, 12;
    ApiVersionsRequest => ApiVersionsResponse, 3;
    CreateTopicsRequest => CreateTopicsResponse, 7;
    DeleteTopicsRequest => DeleteTopicsResponse, 5; // 6+ names topics by id
    InitProducerIdRequest => InitProducerIdResponse, 4;
    FindCoordinatorRequest => FindCoordinatorResponse, 3; // 4+ is batched
    JoinGroupRequest => JoinGroupResponse, 9;
    SyncGroupRequest => SyncGroupResponse, 5;
    HeartbeatRequest => HeartbeatResponse, 4;
    LeaveGroupRequest => LeaveGroupResponse, 5;
    OffsetCommitRequest => OffsetCommitResponse, 8; // 9 is for the new consumer protocol
    OffsetFetchRequest => OffsetFetchResponse, 7; // 8+ is batched by group
    DescribeGroupsRequest => DescribeGroupsResponse, 5;
    ListGroupsRequest => ListGroupsResponse, 4;
    DeleteGroupsRequest => DeleteGroupsResponse, 2;
    DescribeConfigsRequest => DescribeConfigsResponse, 4;
    IncrementalAlterConfigsRequest => IncrementalAlterConfigsResponse, 1;
    CreatePartitionsRequest => CreatePartitionsResponse, 3;
    DescribeClusterRequest => DescribeClusterResponse, 2;
    DescribeQuorumRequest => DescribeQuorumResponse, 1;
    DescribeTopicPartitionsRequest => DescribeTopicPartitionsResponse, 0;
}

type Waiter = oneshot::Sender<Result<Bytes>>;

struct Pending {
    waiters: HashMap<i32, Waiter>,
    /// Set once the connection has failed; later requests get this error at once.
    failed: Option<Error>,
}

pub struct Connection {
    addr: String,
    client_id: String,
    /// (min, max) version the broker accepts, by API key.
    versions: HashMap<i16, (i16, i16)>,
    /// Whole frames for the writer task, in order.
    frames: tokio::sync::mpsc::Sender<BytesMut>,
    pending: Arc<Mutex<Pending>>,
    dead: Arc<AtomicBool>,
    next_correlation: AtomicI32,
    slots: Semaphore,
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
    request_timeout: Duration,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// Removes a request's waiter when its caller stops waiting (answered, timed out or cancelled).
struct WaiterGuard<'a> {
    pending: &'a Mutex<Pending>,
    correlation: i32,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiters
            .remove(&self.correlation);
    }
}

impl Connection {
    /// Connects and asks the broker which API versions it speaks.
    pub async fn connect(
        addr: &str,
        client_id: &str,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Connection> {
        let unreachable = |e: std::io::Error| Error::Unreachable {
            addr: addr.to_string(),
            error: Arc::new(e),
        };
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Ok(s) => s.map_err(unreachable)?,
            Err(_) => return Err(unreachable(std::io::Error::from(std::io::ErrorKind::TimedOut))),
        };
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let pending = Arc::new(Mutex::new(Pending {
            waiters: HashMap::new(),
            failed: None,
        }));
        let dead = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read_loop(read, addr.to_string(), pending.clone(), dead.clone()));
        let (frames, rx) = tokio::sync::mpsc::channel(MAX_IN_FLIGHT);
        let writer = tokio::spawn(write_loop(write, rx, addr.to_string(), pending.clone(), dead.clone()));
        let mut conn = Connection {
            addr: addr.to_string(),
            client_id: client_id.to_string(),
            versions: HashMap::new(),
            frames,
            writer,
            pending,
            dead,
            next_correlation: AtomicI32::new(0),
            slots: Semaphore::new(MAX_IN_FLIGHT),
            reader,
            request_timeout,
        };
        let req = ApiVersionsRequest {
            client_software_name: "sluice-client".into(),
            client_software_version: env!("CARGO_PKG_VERSION").into(),
        };
        let mut resp = conn.send_version(&req, 3).await?;
        if resp.error_code == wire::ErrorCode::UnsupportedVersion.code() {
            // The broker answers in v0 with its ranges; retry at v0, which every broker speaks.
            resp = conn.send_version(&req, 0).await?;
        }
        Error::check(resp.error_code, || "ApiVersions".into(), None)?;
        conn.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// The version to use for `R`: the highest both sides speak.
    pub fn version_for<R: Request>(&self) -> Result<i16> {
        let key = R::API_KEY;
        let name = ApiKey::from_i16(key).map(|k| k.name()).unwrap_or("?");
        let Some(&(min, max)) = self.versions.get(&key) else {
            return Err(self.protocol(format!("the broker does not support {name}")));
        };
        let v = max.min(R::CLIENT_MAX).min(R::MAX_VERSION);
        if v < min || v < R::MIN_VERSION {
            return Err(self.protocol(format!(
                "no common version of {name}: broker {min}..={max}, client {}..={}",
                R::MIN_VERSION,
                R::CLIENT_MAX
            )));
        }
        Ok(v)
    }

    fn protocol(&self, detail: String) -> Error {
        Error::Protocol {
            addr: self.addr.clone(),
            detail,
        }
    }

    /// Sends `req` at the negotiated version and waits for its response.
    pub async fn send<R: Request>(&self, req: &R) -> Result<R::Response> {
        let v = self.version_for::<R>()?;
        self.send_version(req, v).await
    }

    /// Sends `req` at the negotiated version and does not wait for (or expect) a response:
    /// only for Produce with acks=0.
    pub async fn send_oneway<R: Request>(&self, req: &R) -> Result<()> {
        let v = self.version_for::<R>()?;
        let (frame, _) = self.frame(req, v)?;
        self.write(frame).await
    }

    fn frame<R: Request>(&self, req: &R, version: i16) -> Result<(BytesMut, i32)> {
        let correlation = self.next_correlation.fetch_add(1, Ordering::Relaxed) & i32::MAX;
        let header = RequestHeader {
            request_api_key: R::API_KEY,
            request_api_version: version,
            correlation_id: correlation,
            client_id: Some(self.client_id.clone()),
        };
        let mut frame = BytesMut::new();
        wire::frame::encode_request(&mut frame, &header, req)
            .map_err(|e| Error::Invalid(format!("cannot encode {}: {e}", R::NAME)))?;
        Ok((frame, correlation))
    }

    /// Hands a whole frame to the writer task (cancel-safe: the frame is queued whole or not at all).
    async fn write(&self, frame: BytesMut) -> Result<()> {
        if self.frames.send(frame).await.is_err() {
            let p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            return Err(p.failed.clone().unwrap_or(Error::Closed("connection")));
        }
        Ok(())
    }

    async fn send_version<R: Request>(&self, req: &R, version: i16) -> Result<R::Response> {
        let _slot = self.slots.acquire().await.map_err(|_| Error::Closed("connection"))?;
        let (frame, correlation) = self.frame(req, version)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = &p.failed {
                return Err(e.clone());
            }
            p.waiters.insert(correlation, tx);
        }
        let _guard = WaiterGuard {
            pending: &self.pending,
            correlation,
        };
        self.write(frame).await?;
        let timeout = self.request_timeout + request_wait(req);
        let mut body = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(Error::Closed("connection")),
            Err(_) => {
                return Err(Error::Timeout {
                    after: timeout,
                    what: format!("{} from {}", R::NAME, self.addr),
                });
            }
        };
        let key = ApiKey::from_i16(R::API_KEY).ok_or_else(|| self.protocol("unknown api key".into()))?;
        let bad = |e: wire::DecodeError| Error::Protocol {
            addr: self.addr.clone(),
            detail: format!("cannot decode {} v{version}: {e}", R::NAME),
        };
        wire::frame::decode_response_header(&mut body, key, version).map_err(bad)?;
        R::Response::decode(&mut body, version).map_err(bad)
    }
}

/// Requests that wait on the broker by design (long-poll fetch, group join) get that long on
/// top of the request timeout.
fn request_wait<R: Request>(req: &R) -> Duration {
    let any: &dyn std::any::Any = req;
    if let Some(f) = any.downcast_ref::<FetchRequest>() {
        return Duration::from_millis(f.max_wait_ms.max(0) as u64);
    }
    if let Some(j) = any.downcast_ref::<JoinGroupRequest>() {
        return Duration::from_millis(j.rebalance_timeout_ms.max(0) as u64);
    }
    Duration::ZERO
}

fn fail_all(pending: &Mutex<Pending>, dead: &AtomicBool, err: Error) {
    dead.store(true, Ordering::Relaxed);
    let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
    if p.failed.is_none() {
        p.failed = Some(err.clone());
    }
    for (_, w) in p.waiters.drain() {
        let _ = w.send(Err(err.clone()));
    }
}

async fn write_loop(
    mut write: OwnedWriteHalf,
    mut frames: tokio::sync::mpsc::Receiver<BytesMut>,
    addr: String,
    pending: Arc<Mutex<Pending>>,
    dead: Arc<AtomicBool>,
) {
    while let Some(frame) = frames.recv().await {
        if let Err(e) = write.write_all(&frame).await {
            fail_all(&pending, &dead, io_err(&addr, e));
            return;
        }
    }
}

async fn read_loop(mut read: OwnedReadHalf, addr: String, pending: Arc<Mutex<Pending>>, dead: Arc<AtomicBool>) {
    let err = loop {
        let size = match read.read_i32().await {
            Ok(n) => n,
            Err(e) => break io_err(&addr, e),
        };
        if size < 4 || size as usize > MAX_RESPONSE_BYTES {
            break Error::Protocol {
                addr: addr.clone(),
                detail: format!("response frame of {size} bytes (limit {MAX_RESPONSE_BYTES})"),
            };
        }
        let mut buf = vec![0u8; size as usize];
        if let Err(e) = read.read_exact(&mut buf).await {
            break io_err(&addr, e);
        }
        let correlation = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let waiter = pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiters
            .remove(&correlation);
        // No waiter: the request timed out and its caller has gone; the answer is dropped.
        if let Some(w) = waiter {
            let _ = w.send(Ok(Bytes::from(buf)));
        }
    };
    fail_all(&pending, &dead, err);
}

fn io_err(addr: &str, e: std::io::Error) -> Error {
    let e = if e.kind() == std::io::ErrorKind::UnexpectedEof {
        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the broker closed the connection")
    } else {
        e
    };
    Error::Io {
        addr: addr.to_string(),
        error: Arc::new(e),
    }
}
