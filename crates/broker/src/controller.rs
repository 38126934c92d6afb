//! The controller's side of a cluster, as far as it goes today: brokers register with the
//! active controller (Kafka's BrokerRegistration, on the controller listener), which writes
//! their RegisterBrokerRecord; and a node starting in a cluster waits for the metadata quorum
//! before it opens anything that reads the image.
//!
//! Not yet (issue 19): heartbeats and fencing, forwarding of clients' admin requests, placement
//! over brokers, producer-id blocks from the controller. A change a client asks of a broker
//! that is not the active controller is answered NOT_CONTROLLER; Kafka's admin clients send
//! those requests to the controller Metadata names, which is the quorum's leader.

use crate::metadata_log::{CommitError, MetadataLog};
use crate::quorum::net::{self, ControllerApis, VoterAddresses};
use metadata::MetadataRecord;
use std::sync::Arc;
use std::time::Duration;
use wire::kafka_records::metadata::{register_broker_record, RegisterBrokerRecord};
use wire::messages::{
    broker_registration_request as brr, ApiKey, BrokerRegistrationRequest, BrokerRegistrationResponse,
};
use wire::{ErrorCode, Uuid};

/// A broker's registration as the metadata log records it. Its epoch is the log's end offset
/// when it is written (as Kafka uses the registration record's offset): above every earlier
/// one.
pub fn registration_record(
    broker_id: i32,
    incarnation_id: Uuid,
    epoch: i64,
    listeners: Vec<(String, String, u16)>,
    rack: Option<String>,
) -> MetadataRecord {
    MetadataRecord::RegisterBrokerRecord(RegisterBrokerRecord {
        broker_id,
        incarnation_id,
        broker_epoch: epoch,
        end_points: listeners
            .into_iter()
            .map(|(name, host, port)| register_broker_record::BrokerEndpoint {
                name,
                host,
                port,
                security_protocol: 0,
            })
            .collect(),
        rack,
        fenced: false,
        in_controlled_shutdown: false,
        ..Default::default()
    })
}

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

/// The active controller's answers on the controller listener.
pub struct Controller {
    pub metadata: Arc<MetadataLog>,
    pub cluster_id: String,
    pub clock: Arc<dyn crate::clock::Clock>,
}

impl ControllerApis for Controller {
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
        if r.cluster_id != self.cluster_id {
            tracing::warn!(broker = r.broker_id, theirs = %r.cluster_id, ours = %self.cluster_id, "a broker of another cluster tried to register");
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
        match self.metadata.commit_now(vec![record]) {
            Ok(_) => {
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
pub async fn wait_for_quorum(metadata: &MetadataLog) {
    let started = std::time::Instant::now();
    let mut reported = started;
    loop {
        if metadata.caught_up() {
            let (role, leader, hw, _) = metadata.quorum();
            tracing::info!(
                ?role,
                ?leader,
                high_watermark = hw,
                seconds = started.elapsed().as_secs_f64(),
                "caught up with the metadata quorum"
            );
            return;
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
    clock: &Arc<dyn crate::clock::Clock>,
    request: BrokerRegistrationRequest,
) -> Result<i64, String> {
    let (lo, hi) = ApiKey::BrokerRegistration.versions();
    let version = hi.min(4).max(lo);
    let mut reported = std::time::Instant::now();
    loop {
        let (role, leader, _, _) = metadata.quorum();
        let attempt = if role == raft::RoleName::Leader {
            let c = Controller {
                metadata: metadata.clone(),
                cluster_id: cluster_id.to_string(),
                clock: clock.clone(),
            };
            let r = request.clone();
            let answer = tokio::task::spawn_blocking(move || c.broker_registration(r))
                .await
                .map_err(|e| e.to_string())?;
            Ok(answer)
        } else if let Some(addr) = leader.and_then(|l| voters.get(&l)) {
            match net::call(
                addr,
                ApiKey::BrokerRegistration,
                version,
                &request,
                Duration::from_secs(15),
            )
            .await
            {
                Ok(wire::messages::ResponseBody::BrokerRegistration(a)) => Ok(a),
                Ok(_) => Err("an answer of another kind".to_string()),
                Err(e) => Err(e),
            }
        } else {
            Err("no leader known yet".into())
        };
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

/// This node's BrokerRegistration: its client listener as advertised.
pub fn registration_request(
    config: &crate::config::BrokerConfig,
    cluster_id: &str,
    incarnation: Uuid,
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
        previous_broker_epoch: -1,
        ..Default::default()
    }
}
