//! The controller's side of a cluster: brokers register with the active controller (Kafka's
//! BrokerRegistration, on the controller listener), which writes their RegisterBrokerRecord,
//! fenced; they heartbeat (BrokerHeartbeat, every `broker.heartbeat.interval.ms`), and the
//! controller unfences a broker once its heartbeat shows it has caught up with the metadata
//! log, and fences one it has not heard from for `broker.session.timeout.ms` — a fenced
//! broker's partitions lose their leader (one replica each: nobody else can lead them) and get
//! it back when it is unfenced. Producer-id blocks (AllocateProducerIds). A node starting in a
//! cluster waits for the metadata quorum before it opens anything that reads the image, and
//! for its unfencing before it listens.
//!
//! The rules themselves (what to write for a registration, a heartbeat, an expired session)
//! are `metadata::sessions`, pure and driven by its seeded simulation; this module commits
//! what they decide. Session times are the active controller's memory, not the log's: a new
//! active controller gives every broker a whole session from the moment it takes over (as
//! Kafka's does).
//!
//! Clients' admin requests that other brokers forward (`handlers::FORWARDED`) are answered
//! here by this node's broker (`Controller::attach`).

use crate::metadata_log::{CommitError, MetadataLog};
use crate::quorum::net::{self, ControllerApis, VoterAddresses};
use metadata::sessions::Heartbeat;
use metadata::MetadataRecord;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wire::messages::{
    broker_registration_request as brr, ApiKey, BrokerHeartbeatRequest, BrokerHeartbeatResponse,
    BrokerRegistrationRequest, BrokerRegistrationResponse,
};
use wire::{ErrorCode, Uuid};

pub use metadata::sessions::registration_record;

/// Commits the next block of producer ids for `broker_id` (ProducerIdsRecord): where the
/// image's last block ended, `producers::ID_BLOCK` long. A block another allocation committed
/// meanwhile makes the record contradict the image: tried again from the new end.
pub fn allocate_producer_ids(metadata: &MetadataLog, broker_id: i32) -> Result<(i64, i32), CommitError> {
    let len = crate::producers::ID_BLOCK;
    for _ in 0..3 {
        let start = metadata.image().next_producer_id;
        let end = start
            .checked_add(len)
            .ok_or_else(|| CommitError::Refused("producer ids are exhausted".into()))?;
        let record = MetadataRecord::ProducerIdsRecord(wire::kafka_records::metadata::ProducerIdsRecord {
            broker_id,
            broker_epoch: -1,
            next_producer_id: end,
        });
        match metadata.commit_now(vec![record]) {
            Ok(_) => return Ok((start, len as i32)),
            Err(CommitError::Refused(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(CommitError::Refused("producer-id blocks kept racing; try again".into()))
}

/// The active controller's answers on the controller listener, and its broker sessions.
pub struct Controller {
    metadata: Arc<MetadataLog>,
    cluster_id: String,
    clock: Arc<dyn crate::clock::Clock>,
    sessions: Mutex<metadata::sessions::Sessions>,
    /// The broker on this node, once assembled: it answers the admin requests other brokers
    /// forward (its handlers make the change, as for a client of its own).
    broker: std::sync::OnceLock<std::sync::Weak<crate::Broker>>,
}

impl Controller {
    pub fn new(
        metadata: Arc<MetadataLog>,
        cluster_id: String,
        clock: Arc<dyn crate::clock::Clock>,
        session_timeout_ms: u64,
    ) -> Controller {
        Controller {
            metadata,
            cluster_id,
            clock,
            sessions: Mutex::new(metadata::sessions::Sessions::new(session_timeout_ms as i64)),
            broker: std::sync::OnceLock::new(),
        }
    }

    /// Hands the controller this node's broker, which answers forwarded admin requests.
    pub fn attach(&self, broker: &Arc<crate::Broker>) {
        let _ = self.broker.set(Arc::downgrade(broker));
    }

    fn leading(&self) -> bool {
        self.metadata.leader() == Some(self.metadata.settings().node_id)
    }

    /// The partition rules of a broker's leaving and return: ISR, eligible leader replicas and
    /// elections (`replication::control`), each topic with its `min.insync.replicas` (its
    /// override, else the broker default as the dynamic configs give it).
    fn rules(&self) -> replication::control::IsrRules<impl Fn(&metadata::TopicImage) -> usize + '_> {
        let image = self.metadata.image();
        let default = self
            .broker
            .get()
            .and_then(|b| b.upgrade())
            .and_then(|b| b.dynamic.topic_defaults().get("min.insync.replicas").cloned());
        let parse = |v: Option<&String>| v.and_then(|v| v.parse::<usize>().ok());
        let default = parse(default.as_ref()).unwrap_or(1).max(1);
        replication::control::IsrRules {
            min_isr: move |t: &metadata::TopicImage| {
                parse(image.topic_configs(&t.name).get("min.insync.replicas"))
                    .unwrap_or(default)
                    .max(1)
            },
        }
    }

    /// The sessions, started again if the quorum's epoch moved since they began.
    fn sessions(&self) -> std::sync::MutexGuard<'_, metadata::sessions::Sessions> {
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.in_epoch(self.metadata.leader_epoch());
        s
    }

    /// Fences every unfenced broker not heard from for the session timeout (on the active
    /// controller; elsewhere nothing). Called every few hundred milliseconds by
    /// `run_sessions`. Blocking: each fence is a commit.
    pub fn fence_expired(&self) {
        if !self.leading() {
            return;
        }
        let now = self.clock.now_ms();
        let image = self.metadata.image();
        let expired = self.sessions().expired(&image, now, &self.rules());
        for e in expired {
            let moved = e.records.len() - 1;
            match self.metadata.commit_now(e.records) {
                Ok(_) => {
                    tracing::warn!(
                        broker = e.broker,
                        silent_ms = e.silent_ms,
                        partitions_without_leader = moved,
                        "broker fenced: no heartbeat within broker.session.timeout.ms"
                    );
                    self.sessions().fenced(e.broker);
                }
                Err(err) => tracing::warn!(broker = e.broker, error = %err, "cannot fence a broker; tried again"),
            }
        }
    }

    /// BrokerHeartbeat: records that the broker lives, and unfences it once it has caught up
    /// with the metadata log (and does not ask to stay fenced).
    pub fn broker_heartbeat(&self, r: BrokerHeartbeatRequest) -> BrokerHeartbeatResponse {
        let answer = |code: ErrorCode, caught_up: bool, fenced: bool| BrokerHeartbeatResponse {
            error_code: code.code(),
            is_caught_up: caught_up,
            is_fenced: fenced,
            ..Default::default()
        };
        if !self.leading() {
            return answer(ErrorCode::NotController, false, true);
        }
        let image = self.metadata.image();
        let now = self.clock.now_ms();
        let decided = self.sessions().heartbeat(
            &image,
            r.broker_id,
            r.broker_epoch,
            r.current_metadata_offset,
            r.want_fence,
            now,
            &self.rules(),
        );
        let records = match decided {
            Heartbeat::Answer {
                error,
                caught_up,
                fenced,
            } => return answer(error, caught_up, fenced),
            Heartbeat::Unfence { records } => records,
        };
        let led = records.len() - 1;
        match self.metadata.commit_now(records) {
            Ok(_) => {
                tracing::info!(
                    broker = r.broker_id,
                    epoch = r.broker_epoch,
                    partitions_led = led,
                    "broker unfenced"
                );
                answer(ErrorCode::None, true, false)
            }
            Err(CommitError::NotController { .. }) => answer(ErrorCode::NotController, true, true),
            // A fence or registration raced this one; the next heartbeat tries again.
            Err(e) => {
                tracing::debug!(broker = r.broker_id, error = %e, "cannot unfence a broker yet");
                answer(ErrorCode::None, true, true)
            }
        }
    }
}

impl Controller {
    /// AlterPartition (v2+: topics by id): each partition's ISR change checked as Kafka checks
    /// it (`replication::control::alter_partition`), all the changes committed together, then
    /// each partition answered with its registration as committed, or its error. Top-level
    /// errors: NOT_CONTROLLER, and STALE_BROKER_EPOCH for a leader that has registered again
    /// since (KIP-903 checks each new member's epoch the same way).
    pub fn alter_partition(&self, r: wire::messages::AlterPartitionRequest) -> wire::messages::AlterPartitionResponse {
        use wire::messages::alter_partition_response::{PartitionData, TopicData};
        let top = |code: ErrorCode| wire::messages::AlterPartitionResponse {
            error_code: code.code(),
            ..Default::default()
        };
        if !self.leading() {
            return top(ErrorCode::NotController);
        }
        let image = self.metadata.image();
        if image.brokers.get(&r.broker_id).map(|b| b.epoch) != Some(r.broker_epoch) {
            return top(ErrorCode::StaleBrokerEpoch);
        }
        let rules = self.rules();
        let eligible = |b: i32| {
            image
                .brokers
                .get(&b)
                .is_some_and(|x| !x.fenced && !x.in_controlled_shutdown)
        };
        let registered = |b: i32| image.brokers.get(&b).map(|x| x.epoch);
        let answer = |index: i32, code: ErrorCode, p: Option<&metadata::PartitionRegistration>| PartitionData {
            partition_index: index,
            error_code: code.code(),
            leader_id: p.map_or(-1, |p| p.leader),
            leader_epoch: p.map_or(-1, |p| p.leader_epoch),
            isr: p.map(|p| p.isr.clone()).unwrap_or_default(),
            leader_recovery_state: p.map_or(0, |p| p.leader_recovery_state),
            partition_epoch: p.map_or(-1, |p| p.partition_epoch),
            ..Default::default()
        };
        // (topic, partition, result: Ok(changed) or the error), in the request's order.
        let mut decided: Vec<(wire::Uuid, i32, Result<bool, ErrorCode>)> = vec![];
        let mut records = vec![];
        for t in &r.topics {
            let topic = image.topic_by_id(&t.topic_id);
            for p in &t.partitions {
                let Some(topic) = topic else {
                    decided.push((t.topic_id, p.partition_index, Err(ErrorCode::UnknownTopicId)));
                    continue;
                };
                let Some(reg) = topic.partition(p.partition_index) else {
                    decided.push((t.topic_id, p.partition_index, Err(ErrorCode::UnknownTopicOrPartition)));
                    continue;
                };
                let (isr, broker_epochs) = if p.new_isr_with_epochs.is_empty() {
                    (p.new_isr.clone(), vec![-1; p.new_isr.len()])
                } else {
                    p.new_isr_with_epochs
                        .iter()
                        .map(|b| (b.broker_id, b.broker_epoch))
                        .unzip()
                };
                // KIP-704: a leader may end its recovery, never start one.
                if p.leader_recovery_state == 1 && reg.leader_recovery_state == 0 {
                    decided.push((t.topic_id, p.partition_index, Err(ErrorCode::InvalidRequest)));
                    continue;
                }
                let change = replication::leader::IsrChange {
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    isr,
                    broker_epochs,
                };
                let min_isr = (rules.min_isr)(topic);
                let outcome =
                    replication::control::alter_partition(reg, r.broker_id, &change, min_isr, &eligible, registered);
                match outcome {
                    Ok(record) => {
                        let recovered = p.leader_recovery_state == 0 && reg.leader_recovery_state == 1;
                        let record = match (record, recovered) {
                            (None, false) => None,
                            (r, _) => Some(wire::kafka_records::metadata::PartitionChangeRecord {
                                leader_recovery_state: if recovered { 0 } else { -1 },
                                ..r.unwrap_or_default()
                            }),
                        };
                        let changed = record.is_some();
                        if let Some(record) = record {
                            records.push(MetadataRecord::PartitionChangeRecord(
                                wire::kafka_records::metadata::PartitionChangeRecord {
                                    topic_id: t.topic_id,
                                    partition_id: p.partition_index,
                                    ..record
                                },
                            ));
                        }
                        decided.push((t.topic_id, p.partition_index, Ok(changed)));
                    }
                    Err(code) => decided.push((t.topic_id, p.partition_index, Err(code))),
                }
            }
        }
        let after = if records.is_empty() {
            image.clone()
        } else {
            match self.metadata.commit_now(records) {
                Ok((image, _)) => image,
                Err(CommitError::NotController { .. }) => return top(ErrorCode::NotController),
                Err(CommitError::Timeout) => return top(ErrorCode::RequestTimedOut),
                Err(e) => {
                    tracing::warn!(broker = r.broker_id, error = %e, "cannot commit an ISR change");
                    return top(ErrorCode::UnknownServerError);
                }
            }
        };
        let mut topics: Vec<TopicData> = vec![];
        for (topic_id, index, result) in decided {
            let reg = after.topic_by_id(&topic_id).and_then(|t| t.partition(index));
            let data = match result {
                Ok(_) => answer(index, ErrorCode::None, reg),
                Err(code) => answer(index, code, None),
            };
            match topics.iter_mut().find(|t| t.topic_id == topic_id) {
                Some(t) => t.partitions.push(data),
                None => topics.push(TopicData {
                    topic_id,
                    partitions: vec![data],
                    ..Default::default()
                }),
            }
        }
        wire::messages::AlterPartitionResponse {
            topics,
            ..Default::default()
        }
    }
}

/// Runs the active controller's session checks until `stop` is set: a thread of its own,
/// since each fence waits for a commit.
pub fn run_sessions(
    controller: Arc<Controller>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("sluice-sessions".into())
        .spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                controller.fence_expired();
                std::thread::sleep(SESSION_CHECK);
            }
        })
        .expect("spawning a thread at start")
}

/// How often the active controller looks for expired sessions.
const SESSION_CHECK: Duration = Duration::from_millis(250);

impl ControllerApis for Controller {
    fn broker_heartbeat(&self, r: BrokerHeartbeatRequest) -> BrokerHeartbeatResponse {
        Controller::broker_heartbeat(self, r)
    }

    fn request_bytes_max(&self) -> usize {
        let client_max = self
            .broker
            .get()
            .and_then(|b| b.upgrade())
            .map(|b| b.config.request_frame_bytes_max);
        client_max.unwrap_or(0).max(net::REQUEST_BYTES_MAX)
    }

    fn forwarded(&self, version: i16, request: wire::messages::RequestBody) -> Option<wire::messages::ResponseBody> {
        let broker = self.broker.get()?.upgrade()?;
        crate::handlers::answer_forwarded(&broker, version, request)
    }

    fn allocate_producer_ids(
        &self,
        r: wire::messages::AllocateProducerIdsRequest,
    ) -> wire::messages::AllocateProducerIdsResponse {
        let refuse = |code: ErrorCode| wire::messages::AllocateProducerIdsResponse {
            error_code: code.code(),
            producer_id_start: -1,
            producer_id_len: 0,
            ..Default::default()
        };
        if !self.metadata.image().brokers.contains_key(&r.broker_id) {
            return refuse(ErrorCode::BrokerIdNotRegistered);
        }
        match allocate_producer_ids(&self.metadata, r.broker_id) {
            Ok((start, len)) => wire::messages::AllocateProducerIdsResponse {
                error_code: 0,
                producer_id_start: start,
                producer_id_len: len,
                ..Default::default()
            },
            Err(CommitError::NotController { .. }) => refuse(ErrorCode::NotController),
            Err(CommitError::Timeout) => refuse(ErrorCode::RequestTimedOut),
            Err(e) => {
                tracing::warn!(broker = r.broker_id, error = %e, "cannot allocate producer ids");
                refuse(ErrorCode::UnknownServerError)
            }
        }
    }

    fn alter_partition(&self, r: wire::messages::AlterPartitionRequest) -> wire::messages::AlterPartitionResponse {
        Controller::alter_partition(self, r)
    }

    fn describe_quorum(
        &self,
        _request: wire::messages::DescribeQuorumRequest,
    ) -> wire::messages::DescribeQuorumResponse {
        let now = self.clock.now_ms();
        crate::handlers::quorum::answer(&self.metadata, now).unwrap_or_else(|| wire::messages::DescribeQuorumResponse {
            error_code: ErrorCode::NotLeaderOrFollower.code(),
            ..Default::default()
        })
    }

    fn broker_registration(&self, r: BrokerRegistrationRequest) -> BrokerRegistrationResponse {
        let refuse = |code: ErrorCode| BrokerRegistrationResponse {
            error_code: code.code(),
            broker_epoch: -1,
            ..Default::default()
        };
        // The log's word on the cluster's id (this node's may be what it would have
        // bootstrapped with, had it been the first leader).
        let ours = self
            .metadata
            .image()
            .cluster_id
            .clone()
            .unwrap_or_else(|| self.cluster_id.clone());
        if r.cluster_id != ours {
            tracing::warn!(broker = r.broker_id, theirs = %r.cluster_id, %ours, "a broker of another cluster tried to register");
            return refuse(ErrorCode::InconsistentClusterId);
        }
        let epoch = self.metadata.end_offset();
        let record = registration_record(
            r.broker_id,
            r.incarnation_id,
            epoch,
            r.listeners.into_iter().map(|l| (l.name, l.host, l.port)).collect(),
            r.rack,
        );
        // An earlier incarnation whose epoch the broker does not name (Kafka's
        // PreviousBrokerEpoch) may have lost data: it leaves the eligible leader replicas.
        let image = self.metadata.image();
        let unclean = image
            .brokers
            .get(&r.broker_id)
            .is_some_and(|b| b.epoch != r.previous_broker_epoch);
        if unclean {
            tracing::warn!(
                broker = r.broker_id,
                previous_epoch = r.previous_broker_epoch,
                "broker registers after an unclean shutdown: it leaves its partitions' eligible leader replicas"
            );
        }
        let records = metadata::sessions::registration(&image, record, unclean, &self.rules());
        match self.metadata.commit_now(records) {
            Ok((image, _)) => {
                self.sessions()
                    .registered(r.broker_id, self.clock.now_ms(), image.offset);
                tracing::info!(broker = r.broker_id, epoch, "broker registered");
                BrokerRegistrationResponse {
                    error_code: 0,
                    broker_epoch: epoch,
                    ..Default::default()
                }
            }
            Err(CommitError::NotController { .. }) => refuse(ErrorCode::NotController),
            Err(CommitError::Timeout) => refuse(ErrorCode::RequestTimedOut),
            Err(e) => {
                tracing::warn!(broker = r.broker_id, error = %e, "cannot register a broker");
                refuse(ErrorCode::UnknownServerError)
            }
        }
    }
}

/// How long a starting node waits between looks at the quorum.
const POLL: Duration = Duration::from_millis(50);
/// How often a node still waiting for the quorum says so.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Waits until this node holds everything the quorum has committed (its leader's high
/// watermark), however long it takes: a cluster's nodes start in any order, and none can
/// answer for the cluster before a majority of the voters is up.
///
/// Gives up when a voter refuses this node as one of another cluster (its `meta.properties`
/// names another cluster than the quorum's).
pub async fn wait_for_quorum(metadata: &MetadataLog, quorum: &net::QuorumNode, cluster_id: &str) -> Result<(), String> {
    let started = std::time::Instant::now();
    let mut reported = started;
    loop {
        if let Some(voter) = quorum.refused_by() {
            return Err(format!(
                "voter {voter} refused this node as one of another cluster (INCONSISTENT_CLUSTER_ID): this node's meta.properties \
                 says it belongs to cluster {cluster_id}, so this data directory belongs to another cluster than the quorum of \
                 controller.quorum.voters; give the node an empty data directory to join, or point controller.quorum.voters at its own cluster"
            ));
        }
        if metadata.caught_up() {
            let (role, leader, hw, _) = metadata.quorum();
            tracing::info!(
                ?role,
                ?leader,
                high_watermark = hw,
                seconds = started.elapsed().as_secs_f64(),
                "caught up with the metadata quorum"
            );
            return Ok(());
        }
        if reported.elapsed() >= REPORT_EVERY {
            let (role, leader, hw, _) = metadata.quorum();
            tracing::info!(
                ?role,
                ?leader,
                high_watermark = hw,
                "waiting for the metadata quorum (a majority of controller.quorum.voters must be up)"
            );
            reported = std::time::Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the leader has bootstrapped the cluster's metadata (its features).
pub async fn wait_for_bootstrap(metadata: &MetadataLog) {
    let mut reported = std::time::Instant::now();
    while metadata.image().features.is_empty() {
        if reported.elapsed() >= REPORT_EVERY {
            tracing::info!("waiting for the active controller to bootstrap the cluster's metadata");
            reported = std::time::Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Registers this broker: in its own log when it leads the quorum, else with the active
/// controller over the controller listener. Retries (the leader may move) until the
/// registration is in this node's image.
pub async fn register(
    metadata: &Arc<MetadataLog>,
    voters: &VoterAddresses,
    cluster_id: &str,
    controller: Option<&Arc<Controller>>,
    request: BrokerRegistrationRequest,
) -> Result<i64, String> {
    let mut reported = std::time::Instant::now();
    loop {
        let attempt = ask(
            metadata,
            voters,
            controller,
            ApiKey::BrokerRegistration,
            request.clone(),
            |c, r| c.broker_registration(r),
            |a| match a {
                wire::messages::ResponseBody::BrokerRegistration(a) => Some(a),
                _ => None,
            },
        )
        .await;
        let last = match attempt {
            Ok(a) if a.error_code == 0 => {
                // Applied here once this node's log has it.
                while metadata
                    .image()
                    .brokers
                    .get(&request.broker_id)
                    .is_none_or(|b| b.epoch < a.broker_epoch)
                {
                    tokio::time::sleep(POLL).await;
                }
                return Ok(a.broker_epoch);
            }
            Ok(a) if a.error_code == ErrorCode::InconsistentClusterId.code() => {
                return Err(format!(
                    "the active controller belongs to another cluster than this node's meta.properties ({cluster_id})"
                ));
            }
            Ok(a) => format!("refused with error code {}", a.error_code),
            Err(e) => e,
        };
        if reported.elapsed() >= REPORT_EVERY {
            tracing::info!(error = %last, "cannot register with the active controller yet; retrying");
            reported = std::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends `request` to the active controller: this node's own `controller` when it leads the
/// quorum (on the blocking pool, as the listener would), else over the controller listener of
/// the leader this node knows.
async fn ask<Req, Resp>(
    metadata: &MetadataLog,
    voters: &VoterAddresses,
    controller: Option<&Arc<Controller>>,
    key: ApiKey,
    request: Req,
    direct: fn(&Controller, Req) -> Resp,
    unwrap: fn(wire::messages::ResponseBody) -> Option<Resp>,
) -> Result<Resp, String>
where
    Req: wire::codec::Encode + Send + 'static,
    Resp: Send + 'static,
{
    let me = metadata.settings().node_id;
    let leader = metadata.leader();
    match (leader, controller) {
        (Some(l), Some(c)) if l == me => {
            let c = c.clone();
            tokio::task::spawn_blocking(move || direct(&c, request))
                .await
                .map_err(|e| e.to_string())
        }
        (Some(l), _) => {
            let addr = voters.get(&l).ok_or_else(|| format!("no address for voter {l}"))?;
            let (lo, hi) = key.versions();
            let version = match key {
                // The versions the controller listener serves (`quorum::net::versions`).
                ApiKey::BrokerRegistration => hi.min(4).max(lo),
                _ => hi,
            };
            let answer = net::call(addr, key, version, &request, Duration::from_secs(15)).await?;
            unwrap(answer).ok_or_else(|| "an answer of another kind".to_string())
        }
        (None, _) => Err("no leader known yet".into()),
    }
}

/// Heartbeats to the active controller every `interval` (more often while fenced) until the
/// task is dropped, telling `unfenced` whether the controller has this broker unfenced.
pub async fn heartbeat_loop(
    metadata: Arc<MetadataLog>,
    voters: VoterAddresses,
    controller: Option<Arc<Controller>>,
    broker_id: i32,
    broker_epoch: i64,
    interval: Duration,
    unfenced: tokio::sync::watch::Sender<bool>,
) {
    loop {
        let request = BrokerHeartbeatRequest {
            broker_id,
            broker_epoch,
            current_metadata_offset: metadata.image().offset,
            ..Default::default()
        };
        let answer = ask(
            &metadata,
            &voters,
            controller.as_ref(),
            ApiKey::BrokerHeartbeat,
            request,
            |c, r| c.broker_heartbeat(r),
            |a| match a {
                wire::messages::ResponseBody::BrokerHeartbeat(a) => Some(a),
                _ => None,
            },
        )
        .await;
        match answer {
            Ok(a) if a.error_code == 0 => {
                if *unfenced.borrow() == a.is_fenced {
                    tracing::info!(
                        fenced = a.is_fenced,
                        caught_up = a.is_caught_up,
                        "the active controller changed this broker's fencing"
                    );
                }
                unfenced.send_replace(!a.is_fenced);
            }
            Ok(a) => {
                if let Some(suppressed) = crate::ratelog::allow("heartbeat-refused") {
                    tracing::warn!(
                        error_code = a.error_code,
                        suppressed,
                        "the active controller refused a heartbeat"
                    );
                }
            }
            Err(e) => {
                if let Some(suppressed) = crate::ratelog::allow("heartbeat-failed") {
                    tracing::info!(error = %e, suppressed, "cannot heartbeat to the active controller yet");
                }
            }
        }
        let fenced = !*unfenced.borrow();
        tokio::time::sleep(if fenced {
            interval.min(Duration::from_millis(250))
        } else {
            interval
        })
        .await;
    }
}

/// This node's BrokerRegistration: its client listener as advertised.
/// `previous_broker_epoch`: the epoch of this broker's last registration if its data is
/// intact since (a clean shutdown, or no restart of the machine), else -1.
pub fn registration_request(
    config: &crate::config::BrokerConfig,
    cluster_id: &str,
    incarnation: Uuid,
    previous_broker_epoch: i64,
) -> BrokerRegistrationRequest {
    BrokerRegistrationRequest {
        broker_id: config.node_id,
        cluster_id: cluster_id.to_string(),
        incarnation_id: incarnation,
        listeners: vec![brr::Listener {
            name: "PLAINTEXT".into(),
            host: config.listener.advertised_host.clone(),
            port: config.listener.advertised_port,
            security_protocol: 0,
        }],
        previous_broker_epoch,
        ..Default::default()
    }
}
