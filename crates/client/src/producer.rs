//! The producer: `send` places a record in its partition's open batch and returns a future for
//! its delivery; one sender task seals batches (full, or older than `linger`) and sends them to
//! each partition's leader, retrying what may succeed on retry.
//!
//! Ordering and idempotence: each partition has at most one batch in flight, so batches reach
//! the log in the order they were sealed and a retry carries the sequence it was first sent
//! with. With idempotence on (the default with acks=all) the broker drops a retried batch it
//! already wrote. When a batch's fate is unknown at its delivery timeout, the producer takes a
//! new producer id, so the next batches do not collide with a sequence the broker may hold.
//!
//! Limits: records wait in at most `buffer_memory` bytes; `send` waits for room when it is
//! full. A record larger than `max_request_size` is refused at once with MESSAGE_TOO_LARGE.

use crate::cluster::Client;
use crate::error::{Error, Result};
use crate::partitioner::{partition_for_key, Rng};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify, Semaphore};
use wire::messages::produce_request::{PartitionProduceData, TopicProduceData};
use wire::messages::{InitProducerIdRequest, ProduceRequest};
use wire::records::BatchBuilder;
use wire::{Compression, ErrorCode};

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// 0 (no answer), 1 (the leader wrote it) or -1 (all in-sync replicas have it; default).
    pub acks: i16,
    /// How long an open batch waits for more records (linger.ms; default 5 ms).
    pub linger: Duration,
    /// A batch is sealed at this many bytes of records (batch.size; default 1,000,000 as in librdkafka).
    pub batch_size: usize,
    pub compression: Compression,
    /// Idempotent writes; `None` means on exactly when acks = -1 (as the Java client does).
    pub idempotence: Option<bool>,
    /// Give up on a record this long after `send` (delivery.timeout.ms; default 120 s).
    pub delivery_timeout: Duration,
    pub retry_backoff: Duration,
    /// Bytes of records waiting to be sent before `send` waits (buffer.memory; default 64 MiB).
    pub buffer_memory: usize,
    /// The largest record accepted (max.request.size; default 1 MiB).
    pub max_request_size: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: -1,
            linger: Duration::from_millis(5),
            batch_size: 1_000_000,
            compression: Compression::None,
            idempotence: None,
            delivery_timeout: Duration::from_secs(120),
            retry_backoff: Duration::from_millis(100),
            buffer_memory: 64 << 20,
            max_request_size: 1 << 20,
        }
    }
}

/// A record to send. `partition: None` lets the partitioner choose.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    pub topic: String,
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Milliseconds since the epoch; now when `None`.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> ProducerRecord {
        ProducerRecord {
            topic: topic.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn partition(mut self, p: i32) -> Self {
        self.partition = Some(p);
        self
    }

    fn size(&self) -> usize {
        let b = |x: &Option<Bytes>| x.as_ref().map_or(0, |x| x.len());
        21 + b(&self.key) + b(&self.value) + self.headers.iter().map(|(k, v)| 10 + k.len() + b(v)).sum::<usize>()
    }
}

/// Where a record was written. `offset` is -1 with acks=0 (the broker does not say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The broker's append time when the topic uses LogAppendTime, else the record's own.
    pub timestamp: i64,
}

/// Resolves once the record is written (or has failed for good).
pub struct DeliveryFuture(oneshot::Receiver<Result<RecordMetadata>>);

/// Boxed delivery callback (see `Producer::send_with`).
pub type Callback = Box<dyn FnOnce(Result<RecordMetadata>) + Send>;

/// How a record's outcome is reported.
enum Delivery {
    Future(oneshot::Sender<Result<RecordMetadata>>),
    Callback(Callback),
}

impl std::future::Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(Error::Closed("producer"))))
    }
}

type Waiter = (Delivery, i64);

struct Batch {
    builder: Option<BatchBuilder>,
    /// The encoded batch, kept once sent so a retry resends the same bytes and sequence.
    data: Option<Bytes>,
    /// The producer id the batch's sequence belongs to.
    pid: (i64, i16),
    waiters: Vec<Waiter>,
    bytes: usize,
    created: Instant,
    retry_at: Option<Instant>,
    /// Sent at least once without a definite answer: the broker may hold it.
    maybe_written: bool,
}

#[derive(Default)]
struct PartQueue {
    open: Option<Batch>,
    sealed: VecDeque<Batch>,
    in_flight: bool,
    pid: (i64, i16),
    next_seq: i32,
}

struct TopicQueues {
    partitions: Vec<PartQueue>,
    sticky: i32,
    fetched: Instant,
}

struct State {
    topics: HashMap<String, TopicQueues>,
    rng: Rng,
    flushing: usize,
    closed: bool,
    pid: (i64, i16),
    renew_pid: bool,
}

impl State {
    fn queue_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PartQueue> {
        self.topics
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(partition as usize))
    }

    fn is_idle(&self) -> bool {
        self.topics
            .values()
            .flat_map(|t| &t.partitions)
            .all(|q| q.open.is_none() && q.sealed.is_empty() && !q.in_flight)
    }
}

struct Shared {
    client: Client,
    config: ProducerConfig,
    idempotent: bool,
    state: Mutex<State>,
    wake: Notify,
    progress: Notify,
    memory: Semaphore,
    /// Records queued whose outcome has not been reported yet (what `flush` waits for).
    outstanding: std::sync::atomic::AtomicUsize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&self, bytes: usize) {
        self.memory.add_permits(bytes);
    }

    fn finish(&self, batch: Batch, topic: &str, partition: i32, result: Result<(i64, i64)>) {
        self.release(batch.bytes);
        let n = batch.waiters.len();
        for (i, (w, ts)) in batch.waiters.into_iter().enumerate() {
            let r = match &result {
                Ok((base, append_time)) => Ok(RecordMetadata {
                    topic: topic.to_string(),
                    partition,
                    offset: if *base < 0 { -1 } else { base.saturating_add(i as i64) },
                    timestamp: if *append_time >= 0 { *append_time } else { ts },
                }),
                Err(e) => Err(e.clone()),
            };
            match w {
                Delivery::Future(tx) => {
                    let _ = tx.send(r);
                }
                Delivery::Callback(cb) => cb(r),
            }
        }
        self.outstanding.fetch_sub(n, std::sync::atomic::Ordering::SeqCst);
        self.progress.notify_waiters();
    }
}

pub struct Producer {
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Producer {
    pub async fn new(client: Client, config: ProducerConfig) -> Result<Producer> {
        if ![-1, 0, 1].contains(&config.acks) {
            return Err(Error::Config(format!(
                "acks must be -1 (all), 0 or 1, not {}",
                config.acks
            )));
        }
        let idempotent = match config.idempotence {
            Some(true) if config.acks != -1 => {
                return Err(Error::Config("idempotence needs acks=all (-1)".into()));
            }
            Some(x) => x,
            None => config.acks == -1,
        };
        if config.batch_size == 0 || config.buffer_memory < config.max_request_size {
            return Err(Error::Config(
                "batch size must be positive and buffer memory at least max request size".into(),
            ));
        }
        let pid = if idempotent { init_pid(&client).await? } else { (-1, -1) };
        let memory = Semaphore::new(config.buffer_memory.min(Semaphore::MAX_PERMITS));
        let shared = Arc::new(Shared {
            client,
            config,
            idempotent,
            state: Mutex::new(State {
                topics: HashMap::new(),
                rng: Rng::new(),
                flushing: 0,
                closed: false,
                pid,
                renew_pid: false,
            }),
            wake: Notify::new(),
            progress: Notify::new(),
            memory,
            outstanding: Default::default(),
        });
        let task = tokio::spawn(run(shared.clone()));
        Ok(Producer {
            shared,
            task: Some(task),
        })
    }

    /// Queues `record` and returns a future for its delivery. Waits only when the buffer is full
    /// or the topic's metadata is not yet known.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(record, Delivery::Future(tx)).await?;
        Ok(DeliveryFuture(rx))
    }

    /// Like `send`, but calls `callback` with the outcome (on the producer's task: keep it short).
    pub async fn send_with(
        &self,
        record: ProducerRecord,
        callback: impl FnOnce(Result<RecordMetadata>) + Send + 'static,
    ) -> Result<()> {
        self.enqueue(record, Delivery::Callback(Box::new(callback))).await
    }

    async fn enqueue(&self, record: ProducerRecord, delivery: Delivery) -> Result<()> {
        let cfg = &self.shared.config;
        let size = record.size();
        if size > cfg.max_request_size {
            return Err(Error::Kafka {
                code: ErrorCode::MessageTooLarge.code(),
                context: format!(
                    "record of {size} bytes is over max.request.size {}",
                    cfg.max_request_size
                ),
                message: None,
            });
        }
        let count = self.partition_count(&record.topic).await?;
        if let Some(p) = record.partition {
            if p < 0 || p >= count {
                return Err(Error::Kafka {
                    code: ErrorCode::UnknownTopicOrPartition.code(),
                    context: format!("topic '{}' has {count} partitions, no partition {p}", record.topic),
                    message: None,
                });
            }
        }
        let permit = self
            .shared
            .memory
            .acquire_many(size as u32)
            .await
            .map_err(|_| Error::Closed("producer"))?;
        permit.forget();
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let mut wake = false;
        {
            let mut st = self.shared.lock();
            if st.closed {
                drop(st);
                self.shared.release(size);
                return Err(Error::Closed("producer"));
            }
            let State { topics, rng, .. } = &mut *st;
            let t = topics.get_mut(&record.topic).ok_or(Error::Closed("producer"))?;
            let n = t.partitions.len() as i32;
            let partition = match (record.partition, &record.key) {
                (Some(p), _) => p,
                (None, Some(k)) => partition_for_key(k, n),
                (None, None) => t.sticky,
            };
            let q = t
                .partitions
                .get_mut(partition as usize)
                .ok_or(Error::Closed("producer"))?;
            if let Some(open) = &q.open {
                if open.bytes + size > cfg.batch_size {
                    let full = q.open.take();
                    q.sealed.extend(full);
                    wake = true;
                    if record.partition.is_none() && record.key.is_none() && n > 1 {
                        // Sticky partitioning: the batch is full, move to another partition.
                        t.sticky = (t.sticky + 1 + rng.below(n - 1)) % n;
                    }
                }
            }
            let q = t
                .partitions
                .get_mut(partition as usize)
                .ok_or(Error::Closed("producer"))?;
            let open = q.open.get_or_insert_with(|| {
                // The sender learns of the new batch and its linger deadline.
                wake = true;
                Batch {
                    builder: Some(BatchBuilder::new(cfg.compression)),
                    data: None,
                    pid: (-1, -1),
                    waiters: vec![],
                    bytes: 0,
                    created: Instant::now(),
                    retry_at: None,
                    maybe_written: false,
                }
            });
            let headers: Vec<(&[u8], Option<&[u8]>)> = record
                .headers
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_deref()))
                .collect();
            if let Some(b) = open.builder.as_mut() {
                b.push(timestamp, record.key.as_deref(), record.value.as_deref(), &headers);
            }
            open.bytes += size;
            open.waiters.push((delivery, timestamp));
            self.shared
                .outstanding
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    async fn partition_count(&self, topic: &str) -> Result<i32> {
        let max_age = self.shared.client.config().metadata_max_age;
        {
            let st = self.shared.lock();
            if let Some(t) = st.topics.get(topic) {
                if t.fetched.elapsed() < max_age {
                    return Ok(t.partitions.len() as i32);
                }
            }
        }
        self.shared.client.invalidate(topic);
        let info = self.shared.client.topic(topic, true).await?;
        let n = info.partitions.len();
        if n == 0 {
            return Err(Error::Kafka {
                code: ErrorCode::LeaderNotAvailable.code(),
                context: format!("topic '{topic}' has no partitions yet"),
                message: None,
            });
        }
        let mut st = self.shared.lock();
        let State { topics, rng, .. } = &mut *st;
        let t = topics.entry(topic.to_string()).or_insert_with(|| TopicQueues {
            partitions: vec![],
            sticky: rng.below(n as i32),
            fetched: Instant::now(),
        });
        t.fetched = Instant::now();
        // Partitions only grow; keep the queues of the ones we had.
        while t.partitions.len() < n {
            t.partitions.push(PartQueue::default());
        }
        Ok(t.partitions.len() as i32)
    }

    /// Sends everything queued now and waits until each record is delivered or has failed.
    pub async fn flush(&self) {
        self.shared.lock().flushing += 1;
        self.shared.wake.notify_one();
        loop {
            let progressed = self.shared.progress.notified();
            if self.shared.outstanding.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                break;
            }
            self.shared.wake.notify_one();
            progressed.await;
        }
        self.shared.lock().flushing -= 1;
    }

    /// Flushes and stops the sender task.
    pub async fn close(mut self) {
        self.flush().await;
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Producer {
    /// Records already queued are still sent: the task ends once it has nothing left.
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn init_pid(client: &Client) -> Result<(i64, i16)> {
    let req = InitProducerIdRequest {
        transactional_id: None,
        transaction_timeout_ms: 60_000,
        producer_id: -1,
        producer_epoch: -1,
    };
    let resp = client.send_any(&req).await?;
    Error::check(resp.error_code, || "InitProducerId".into(), None)?;
    Ok((resp.producer_id, resp.producer_epoch))
}

/// A batch taken for sending.
struct Outgoing {
    topic: String,
    partition: i32,
    batch: Batch,
}

/// The sender task: takes ready batches, sends them, and sleeps until the next is due.
async fn run(shared: Arc<Shared>) {
    loop {
        let renew = {
            let mut st = shared.lock();
            std::mem::take(&mut st.renew_pid)
        };
        if renew {
            match init_pid(&shared.client).await {
                Ok(pid) => shared.lock().pid = pid,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot get a new producer id; retrying");
                    shared.lock().renew_pid = true;
                    tokio::time::sleep(shared.config.retry_backoff).await;
                    continue;
                }
            }
        }
        let wake = shared.wake.notified();
        let (ready, next, done) = take_ready(&shared);
        if done {
            shared.progress.notify_waiters();
            return;
        }
        if !ready.is_empty() {
            route(&shared, ready).await;
        }
        shared.progress.notify_waiters();
        match next {
            Some(at) => {
                tokio::select! {
                    _ = wake => {}
                    _ = tokio::time::sleep_until(at.into()) => {}
                }
            }
            None => wake.await,
        }
    }
}

/// Seals batches that are due, fails expired ones, and takes each partition's next batch when
/// it has none in flight. Returns the batches, when to look again, and whether to stop.
fn take_ready(shared: &Shared) -> (Vec<Outgoing>, Option<Instant>, bool) {
    let cfg = &shared.config;
    let now = Instant::now();
    let mut st = shared.lock();
    let hurry = st.flushing > 0 || st.closed;
    let pid = st.pid;
    let mut next: Option<Instant> = None;
    let mut soonest = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
    let mut ready = vec![];
    let mut expired = vec![];
    let mut renew = false;
    // First seal what is due and expire what is too old, everywhere.
    for (topic, t) in st.topics.iter_mut() {
        for (p, q) in t.partitions.iter_mut().enumerate() {
            if let Some(open) = &q.open {
                if hurry || open.created + cfg.linger <= now {
                    let b = q.open.take();
                    q.sealed.extend(b);
                } else {
                    soonest(open.created + cfg.linger);
                }
            }
            if q.in_flight {
                continue;
            }
            while let Some(front) = q.sealed.front() {
                if front.created + cfg.delivery_timeout > now {
                    break;
                }
                if let Some(b) = q.sealed.pop_front() {
                    if b.maybe_written && shared.idempotent {
                        renew = true;
                    } else if b.data.is_some() && q.pid == b.pid {
                        // Never written: its sequence is free again.
                        q.next_seq = q.next_seq.wrapping_sub(b.waiters.len() as i32);
                    }
                    expired.push((topic.clone(), p as i32, b));
                }
            }
        }
    }
    // A batch whose fate is unknown has expired: no new batch gets a sequence until the
    // producer id is renewed (the sender loop does that next).
    let renewing = renew || st.renew_pid;
    if renewing {
        soonest(now);
    }
    for (topic, t) in st.topics.iter_mut() {
        for (p, q) in t.partitions.iter_mut().enumerate() {
            if q.in_flight {
                continue;
            }
            let Some(front) = q.sealed.front() else { continue };
            if renewing && front.data.is_none() && shared.idempotent {
                continue;
            }
            if let Some(at) = front.retry_at {
                if at > now {
                    soonest(at);
                    continue;
                }
            }
            let Some(mut b) = q.sealed.pop_front() else { continue };
            if b.data.is_none() {
                let mut builder = b.builder.take().unwrap_or_else(|| BatchBuilder::new(cfg.compression));
                if shared.idempotent {
                    if q.pid != pid {
                        q.pid = pid;
                        q.next_seq = 0;
                    }
                    builder = builder.producer(pid.0, pid.1, q.next_seq, false);
                    q.next_seq = q.next_seq.wrapping_add(b.waiters.len() as i32) & i32::MAX;
                    b.pid = pid;
                }
                b.data = Some(builder.build());
            }
            q.in_flight = true;
            ready.push(Outgoing {
                topic: topic.clone(),
                partition: p as i32,
                batch: b,
            });
        }
    }
    if renew {
        st.renew_pid = true;
    }
    let done = st.closed && st.is_idle() && ready.is_empty();
    drop(st);
    for (topic, p, b) in expired {
        let err = Error::Timeout {
            after: cfg.delivery_timeout,
            what: format!("delivery to {topic}/{p} (delivery timeout)"),
        };
        shared.finish(b, &topic, p, Err(err));
    }
    (ready, next, done)
}

/// Groups batches by their partition's leader and sends one request per leader.
async fn route(shared: &Arc<Shared>, ready: Vec<Outgoing>) {
    let mut by_leader: HashMap<i32, Vec<Outgoing>> = HashMap::new();
    for o in ready {
        let leader = match shared.client.topic(&o.topic, false).await {
            Ok(info) => info.partitions.get(o.partition as usize).map_or(-1, |p| p.leader),
            Err(_) => -1,
        };
        if leader < 0 {
            shared.client.invalidate(&o.topic);
            let err = Error::Kafka {
                code: ErrorCode::LeaderNotAvailable.code(),
                context: format!("{}/{}", o.topic, o.partition),
                message: None,
            };
            requeue(shared, o, &err);
            continue;
        }
        by_leader.entry(leader).or_default().push(o);
    }
    for (leader, batches) in by_leader {
        let shared = shared.clone();
        tokio::spawn(async move {
            send_to_leader(&shared, leader, batches).await;
            shared.progress.notify_waiters();
            shared.wake.notify_one();
        });
    }
}

/// Puts a batch back at the front of its queue to try again after the backoff.
fn requeue(shared: &Shared, mut o: Outgoing, why: &Error) {
    tracing::debug!(topic = %o.topic, partition = o.partition, error = %why, "retrying a batch");
    o.batch.retry_at = Some(Instant::now() + shared.config.retry_backoff);
    if let Some(q) = shared.lock().queue_mut(&o.topic, o.partition) {
        q.in_flight = false;
        q.sealed.push_front(o.batch);
    }
    // The sender must look again: its next deadline was worked out before this batch came back.
    shared.wake.notify_one();
}

/// Reports a batch's outcome, then frees its partition for the next batch: a flush that sees
/// the partition idle knows every callback and future of the batch has been resolved.
fn done_with(shared: &Shared, o: Outgoing, result: Result<(i64, i64)>) {
    let refused = result.is_err() && !o.batch.maybe_written && shared.idempotent;
    let (count, pid) = (o.batch.waiters.len() as i32, o.batch.pid);
    shared.finish(o.batch, &o.topic, o.partition, result);
    if let Some(q) = shared.lock().queue_mut(&o.topic, o.partition) {
        q.in_flight = false;
        if refused && q.pid == pid {
            // A definite refusal: the broker did not take this sequence; reuse it.
            q.next_seq = q.next_seq.wrapping_sub(count);
        }
    }
}

async fn send_to_leader(shared: &Shared, leader: i32, mut batches: Vec<Outgoing>) {
    let cfg = &shared.config;
    let mut topics: Vec<TopicProduceData> = vec![];
    for o in &batches {
        let data = PartitionProduceData {
            index: o.partition,
            records: o.batch.data.clone(),
        };
        match topics.iter_mut().find(|t| t.name == o.topic) {
            Some(t) => t.partition_data.push(data),
            None => topics.push(TopicProduceData {
                name: o.topic.clone(),
                partition_data: vec![data],
            }),
        }
    }
    let req = ProduceRequest {
        transactional_id: None,
        acks: cfg.acks,
        timeout_ms: shared.client.config().request_timeout.as_millis().min(i32::MAX as u128) as i32,
        topic_data: topics,
    };
    let conn = match shared.client.broker(leader).await {
        Ok(c) => c,
        Err(e) => {
            for o in batches {
                shared.client.invalidate(&o.topic);
                requeue(shared, o, &e);
            }
            return;
        }
    };
    if cfg.acks == 0 {
        let r = conn.send_oneway(&req).await;
        for o in batches {
            match &r {
                Ok(()) => done_with(shared, o, Ok((-1, -1))),
                Err(e) => requeue(shared, o, e),
            }
        }
        return;
    }
    let resp = match conn.send(&req).await {
        Ok(r) => r,
        Err(e) => {
            for mut o in batches {
                o.batch.maybe_written = true;
                shared.client.invalidate(&o.topic);
                requeue(shared, o, &e);
            }
            return;
        }
    };
    for t in resp.responses {
        for p in t.partition_responses {
            let Some(i) = batches.iter().position(|o| o.topic == t.name && o.partition == p.index) else {
                continue;
            };
            let o = batches.swap_remove(i);
            let code = p.error_code;
            if code == 0 || code == ErrorCode::DuplicateSequenceNumber.code() {
                done_with(shared, o, Ok((p.base_offset, p.log_append_time_ms)));
                continue;
            }
            let err = Error::Kafka {
                code,
                context: format!("producing to {}/{}", o.topic, o.partition),
                message: p.error_message.filter(|m| !m.is_empty()),
            };
            if err.is_retriable() {
                if err.needs_metadata() {
                    shared.client.invalidate(&o.topic);
                }
                let mut o = o;
                // Only these refusals come before the append; after any other the broker may
                // hold the batch, and its sequence must not be given to another.
                let before_append = matches!(
                    ErrorCode::from_code(code),
                    Some(
                        ErrorCode::NotLeaderOrFollower
                            | ErrorCode::UnknownTopicOrPartition
                            | ErrorCode::LeaderNotAvailable
                            | ErrorCode::NotEnoughReplicas
                            | ErrorCode::CorruptMessage
                            | ErrorCode::KafkaStorageError
                    )
                );
                o.batch.maybe_written |= !before_append;
                requeue(shared, o, &err);
            } else {
                done_with(shared, o, Err(err));
            }
        }
    }
    // Partitions the response left out: the broker did not say, so try again.
    for mut o in batches {
        o.batch.maybe_written = true;
        let err = Error::Protocol {
            addr: conn.addr().to_string(),
            detail: "produce response omitted a partition".into(),
        };
        requeue(shared, o, &err);
    }
}
