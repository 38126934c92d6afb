//! Request dispatch: reads the header, checks the API and version against what this broker
//! serves, decodes the body with `wire`, calls the API's handler, encodes the response.
//!
//! One module per API (or per family: `groups`, `offsets`, `replicas`, `acls`, `scram`).
//! Handlers take the decoded request and return the response value; they never see bytes.

mod acls;
mod api_versions;
mod cluster_admin;
mod configs;
mod create_partitions;
mod create_topics;
mod delete_topics;
mod describe_topic_partitions;
mod fetch;
mod groups;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod offset_for_leader_epoch;
mod offsets;
mod produce;
pub(crate) mod quorum;
mod replicas;
mod scram;

use crate::Broker;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use wire::messages::{ApiKey, RequestBody, RequestHeader, ResponseBody};
use wire::{frame, Encode, ErrorCodes};

/// Kafka's `AclOperation` codes as bits of an `authorized_operations` field. With no authorizer
/// (Sluice has none yet) Kafka answers every operation the resource type supports
/// (`AclEntry.supportedOperations`), and `i32::MIN` when the request did not ask.
pub mod operations {
    const READ: i32 = 1 << 3;
    const WRITE: i32 = 1 << 4;
    const CREATE: i32 = 1 << 5;
    const DELETE: i32 = 1 << 6;
    const ALTER: i32 = 1 << 7;
    const DESCRIBE: i32 = 1 << 8;
    const CLUSTER_ACTION: i32 = 1 << 9;
    const DESCRIBE_CONFIGS: i32 = 1 << 10;
    const ALTER_CONFIGS: i32 = 1 << 11;
    const IDEMPOTENT_WRITE: i32 = 1 << 12;

    pub const TOPIC: i32 = READ | WRITE | CREATE | DESCRIBE | DELETE | ALTER | DESCRIBE_CONFIGS | ALTER_CONFIGS;
    pub const GROUP: i32 = READ | DESCRIBE | DELETE | DESCRIBE_CONFIGS | ALTER_CONFIGS;
    pub const CLUSTER: i32 =
        CREATE | CLUSTER_ACTION | DESCRIBE_CONFIGS | ALTER_CONFIGS | IDEMPOTENT_WRITE | ALTER | DESCRIBE;

    /// `all` when the request asked for authorized operations, else Kafka's "not asked".
    pub fn if_asked(asked: bool, all: i32) -> i32 {
        if asked {
            all
        } else {
            i32::MIN
        }
    }
}

/// What the connection does after a request.
#[derive(Debug)]
pub enum Outcome {
    /// Write this whole response frame: its chunks in order (a fetch's record data stays in
    /// the buffers it was read into; see `wire::frame::encode_response_chunks`).
    Respond(Vec<Bytes>),
    /// The same, holding memory of the response pool (`queued.max.response.bytes`) until it
    /// has been written.
    RespondHeld(Vec<Bytes>, crate::response_memory::Held),
    /// Nothing to send (a produce with acks=0).
    NoResponse,
    /// Close the connection, as Kafka does for requests it cannot read or does not serve.
    Close(String),
}

/// The APIs this broker serves, with the versions it accepts: what ApiVersions advertises.
/// Only APIs with a real handler are listed; clients do not send what is not advertised.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 10),
    // Kafka 4.0 serves versions 2 to 4 (KIP-896 removed 0 and 1).
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::FindCoordinator, 0, 5),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 0, 9),
    (ApiKey::OffsetFetch, 0, 9),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeCluster, 0, 2),
    // Kafka 4.0 removed version 0 of the log dir and ACL APIs (KIP-896).
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::AlterReplicaLogDirs, 1, 2),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 0),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::DescribeTopicPartitions, 0, 0),
];

/// A broker as Metadata and DescribeCluster list it.
pub struct LiveBroker {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

/// The brokers clients may use, from the metadata image: registered and not fenced, each at
/// its first listener, by id.
pub fn live_brokers(broker: &Broker) -> Vec<LiveBroker> {
    broker
        .metadata
        .image()
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .filter_map(|b| {
            let e = b.endpoints.first()?;
            Some(LiveBroker {
                id: b.id,
                host: e.host.clone(),
                port: e.port,
                rack: b.rack.clone(),
            })
        })
        .collect()
}

/// The error for partition `partition` of `topic` (as the image has it, if it does) that this
/// node does not hold: `NOT_LEADER_OR_FOLLOWER` when the cluster has it (another broker's, or
/// not open here yet), so the client refreshes its metadata and goes to the leader;
/// `UNKNOWN_TOPIC_OR_PARTITION` when it does not exist.
pub fn not_held(topic: Option<&::metadata::TopicImage>, partition: i32) -> wire::ErrorCode {
    match topic.and_then(|t| t.partition(partition)) {
        Some(_) => wire::ErrorCode::NotLeaderOrFollower,
        None => wire::ErrorCode::UnknownTopicOrPartition,
    }
}

/// The admin requests a broker that is not the active controller forwards to it (as Kafka's
/// brokers do since KIP-590, here without the Envelope: the request goes as it came to the
/// controller listener, whose node answers it with the same handler).
pub const FORWARDED: &[ApiKey] = &[
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::CreatePartitions,
    ApiKey::AlterConfigs,
    ApiKey::IncrementalAlterConfigs,
];

/// How long a forwarded request may take: the controller's commit wait and then some.
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Sends a request of `FORWARDED` to the active controller and answers with what it says.
/// `None` when this node is the controller (or alone), knows none, or cannot reach it: its own
/// handler answers then (NOT_CONTROLLER for a change, so the client tries again).
async fn forward(ctx: &Ctx<'_>, body: &RequestBody) -> Option<Outcome> {
    let broker = ctx.broker;
    let me = broker.config.node_id;
    if broker.config.quorum.is_alone(me) {
        return None;
    }
    let leader = broker.metadata.leader().filter(|&l| l != me)?;
    let addr = broker.config.quorum.voters.get(&leader)?;
    let request = crate::quorum::net::AnyRequest(body);
    match crate::quorum::net::call(addr, ctx.api_key, ctx.version, &request, FORWARD_TIMEOUT).await {
        Ok(answer) => Some(match answer {
            ResponseBody::CreateTopics(r) => respond(ctx, &r),
            ResponseBody::DeleteTopics(r) => respond(ctx, &r),
            ResponseBody::CreatePartitions(r) => respond(ctx, &r),
            ResponseBody::AlterConfigs(r) => respond(ctx, &r),
            ResponseBody::IncrementalAlterConfigs(r) => respond(ctx, &r),
            _ => Outcome::Close(format!(
                "the controller answered {} with another kind",
                ctx.api_key.name()
            )),
        }),
        Err(e) => {
            if let Some(suppressed) = crate::ratelog::allow("forward-failed") {
                tracing::warn!(controller = leader, error = %e, suppressed, "cannot forward an admin request to the active controller");
            }
            None
        }
    }
}

/// Answers a request another broker forwarded (one of `FORWARDED`), on the blocking pool.
pub fn answer_forwarded(broker: &Broker, version: i16, body: RequestBody) -> Option<ResponseBody> {
    Some(match body {
        RequestBody::CreateTopics(r) => ResponseBody::CreateTopics(create_topics::handle(broker, version, r)),
        RequestBody::DeleteTopics(r) => ResponseBody::DeleteTopics(delete_topics::handle(broker, version, r)),
        RequestBody::CreatePartitions(r) => {
            ResponseBody::CreatePartitions(create_partitions::handle(broker, version, r))
        }
        RequestBody::AlterConfigs(r) => ResponseBody::AlterConfigs(configs::alter(broker, version, r)),
        RequestBody::IncrementalAlterConfigs(r) => {
            ResponseBody::IncrementalAlterConfigs(configs::incremental_alter(broker, version, r))
        }
        _ => return None,
    })
}

pub fn supported_versions(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, lo, hi)| (*lo, *hi))
}

/// The request being answered: what its response needs, and when it started (for metrics).
struct Ctx<'a> {
    broker: &'a Arc<Broker>,
    header: RequestHeader,
    api_key: ApiKey,
    version: i16,
    /// A reading of `Broker::clock`.
    started: crate::clock::Instant,
}

impl Ctx<'_> {
    /// Counts the request, its duration and the error codes in its response.
    fn count(&self, errors: &[i16]) {
        let seconds = self.broker.clock.elapsed(self.started).as_secs_f64();
        self.broker.metrics.request_done(self.api_key, seconds, errors);
    }
}

fn respond<B: Encode + ErrorCodes>(ctx: &Ctx, body: &B) -> Outcome {
    let (api_key, version) = (ctx.api_key, ctx.version);
    match frame::encode_response_chunks(ctx.header.correlation_id, api_key, version, body) {
        Ok(out) => {
            let mut errors = vec![];
            body.error_codes(&mut |code| errors.push(code));
            ctx.count(&errors);
            Outcome::Respond(out)
        }
        Err(e) => Outcome::Close(format!("cannot encode {} v{version} response: {e}", api_key.name())),
    }
}

/// `peer`: the client's address (shown as a group member's host). Every request the broker
/// serves is counted, with its duration and the errors in its response; one it closes the
/// connection over is not.
pub async fn handle_frame(broker: &Arc<Broker>, peer: SocketAddr, mut frame: Bytes) -> Outcome {
    let started = broker.clock.now();
    let header = match frame::decode_request_header(&mut frame) {
        Ok(h) => h,
        Err(e) => return Outcome::Close(format!("unreadable request header: {e}")),
    };
    let version = header.request_api_version;
    let Some(api_key) = ApiKey::from_i16(header.request_api_key) else {
        return Outcome::Close(format!("unknown api key {}", header.request_api_key));
    };
    if api_key == ApiKey::ApiVersions {
        // ApiVersions is answered even for versions we lack, so clients can find ours.
        let response = api_versions::handle(&header, frame);
        let ctx = Ctx {
            broker,
            header,
            api_key,
            version: response.version,
            started,
        };
        return respond(&ctx, &response.body);
    }
    let Some((lo, hi)) = supported_versions(api_key) else {
        return Outcome::Close(format!("{} is not served by this broker", api_key.name()));
    };
    if !(lo..=hi).contains(&version) {
        return Outcome::Close(format!(
            "{} v{version} is not supported (versions {lo}-{hi})",
            api_key.name()
        ));
    }
    let body = match RequestBody::decode(api_key, &mut frame, version) {
        Ok(b) => b,
        Err(e) => return Outcome::Close(format!("malformed {} v{version} request: {e}", api_key.name())),
    };
    let ctx = Ctx {
        broker,
        header,
        api_key,
        version,
        started,
    };
    dispatch(&ctx, peer, body).await
}

/// Where a handler that does file work runs, off the async workers.
#[derive(Clone, Copy)]
enum OffAsync {
    /// tokio's blocking pool.
    Blocking,
    /// The low-priority topic-change thread (`Broker::topic_changes`): changes that take the
    /// topic change lock, one at a time.
    TopicChanges,
}

/// Runs a handler off the async workers and answers with what it returns.
async fn off_async<B, F>(ctx: &Ctx<'_>, pool: OffAsync, handler: F) -> Outcome
where
    B: Encode + ErrorCodes + Send + 'static,
    F: FnOnce(&Broker) -> B + Send + 'static,
{
    let broker = ctx.broker.clone();
    let body = match pool {
        // `None`: the handler panicked, or the runtime is shutting down.
        OffAsync::Blocking => tokio::task::spawn_blocking(move || handler(&broker)).await.ok(),
        OffAsync::TopicChanges => ctx.broker.topic_changes.run(move || handler(&broker)).await,
    };
    match body {
        Some(body) => respond(ctx, &body),
        None => Outcome::Close(format!("{} handler failed", ctx.api_key.name())),
    }
}

/// Group requests load (or create) `__consumer_offsets` on first use: file work, done on the
/// blocking pool before the request itself runs on an async worker.
async fn ensure_groups_loaded(broker: &Arc<Broker>) {
    if !broker.groups.loaded() {
        let b = broker.clone();
        // Its failure is the request's own to report (COORDINATOR_NOT_AVAILABLE).
        let _ = tokio::task::spawn_blocking(move || b.groups.ready(&b.topics)).await;
    }
}

async fn dispatch(ctx: &Ctx<'_>, peer: SocketAddr, body: RequestBody) -> Outcome {
    let (broker, version) = (ctx.broker, ctx.version);
    if matches!(
        body,
        RequestBody::JoinGroup(_)
            | RequestBody::SyncGroup(_)
            | RequestBody::Heartbeat(_)
            | RequestBody::LeaveGroup(_)
            | RequestBody::OffsetCommit(_)
            | RequestBody::OffsetFetch(_)
            | RequestBody::OffsetDelete(_)
            | RequestBody::DescribeGroups(_)
            | RequestBody::DeleteGroups(_)
    ) {
        ensure_groups_loaded(broker).await;
    }
    if FORWARDED.contains(&ctx.api_key) {
        if let Some(answered) = forward(ctx, &body).await {
            return answered;
        }
    }
    match body {
        RequestBody::Produce(req) => match produce::handle(broker, version, req).await {
            Some(resp) => respond(ctx, &resp),
            // acks=0: handled, and counted, without a response.
            None => {
                ctx.count(&[]);
                Outcome::NoResponse
            }
        },
        RequestBody::Fetch(req) => {
            let (response, held) = fetch::handle(broker, version, peer.ip().to_canonical(), req).await;
            match (respond(ctx, &response), held) {
                (Outcome::Respond(chunks), Some(held)) => Outcome::RespondHeld(chunks, held),
                (other, _) => other,
            }
        }
        RequestBody::ListOffsets(req) => respond(ctx, &list_offsets::handle(broker, version, req)),
        RequestBody::OffsetForLeaderEpoch(req) => respond(ctx, &offset_for_leader_epoch::handle(broker, version, req)),
        // These may create or delete topics: file work, and a lock held for as long as it
        // takes, so never on an async worker. A Metadata request that will auto-create (within
        // a per-request budget) goes to the blocking pool; the others are answered in place.
        RequestBody::Metadata(req) if metadata::may_create_topics(broker, version, &req) => {
            off_async(ctx, OffAsync::Blocking, move |b| metadata::handle(b, version, req)).await
        }
        RequestBody::Metadata(req) => respond(ctx, &metadata::handle(broker, version, req)),
        RequestBody::CreateTopics(req) => {
            off_async(ctx, OffAsync::TopicChanges, move |b| {
                create_topics::handle(b, version, req)
            })
            .await
        }
        RequestBody::DeleteTopics(req) => {
            off_async(ctx, OffAsync::TopicChanges, move |b| {
                delete_topics::handle(b, version, req)
            })
            .await
        }
        // May need a new block of ids: an fsync, or a round trip to the active controller.
        RequestBody::InitProducerId(req) => {
            off_async(ctx, OffAsync::Blocking, move |b| {
                init_producer_id::handle(b, version, req)
            })
            .await
        }
        // The first one creates (or loads) `__consumer_offsets`.
        RequestBody::FindCoordinator(req) if !broker.groups.loaded() => {
            off_async(ctx, OffAsync::Blocking, move |b| {
                groups::find_coordinator(b, version, req)
            })
            .await
        }
        RequestBody::FindCoordinator(req) => respond(ctx, &groups::find_coordinator(broker, version, req)),
        RequestBody::JoinGroup(req) => {
            let client_id = ctx.header.client_id.as_deref();
            let resp = groups::join_group(broker, version, client_id, peer, req).await;
            respond(ctx, &resp)
        }
        RequestBody::SyncGroup(req) => {
            let resp = groups::sync_group(broker, version, peer, req).await;
            respond(ctx, &resp)
        }
        RequestBody::Heartbeat(req) => respond(ctx, &groups::heartbeat(broker, version, req)),
        // These write (and may fsync) `__consumer_offsets`: off the async workers. So do the
        // first parts of JoinGroup and SyncGroup, inside their handlers.
        RequestBody::LeaveGroup(req) => {
            off_async(ctx, OffAsync::Blocking, move |b| groups::leave_group(b, version, req)).await
        }
        RequestBody::DescribeGroups(req) => respond(ctx, &groups::describe_groups(broker, version, req)),
        RequestBody::ListGroups(req) => respond(ctx, &groups::list_groups(broker, version, req)),
        RequestBody::DeleteGroups(req) => {
            off_async(ctx, OffAsync::Blocking, move |b| groups::delete_groups(b, version, req)).await
        }
        RequestBody::OffsetCommit(req) => {
            off_async(ctx, OffAsync::Blocking, move |b| offsets::commit(b, version, req)).await
        }
        RequestBody::OffsetFetch(req) => respond(ctx, &offsets::fetch(broker, version, req)),
        RequestBody::OffsetDelete(req) => {
            off_async(ctx, OffAsync::Blocking, move |b| offsets::delete(b, version, req)).await
        }
        RequestBody::DescribeConfigs(req) => respond(ctx, &configs::describe(broker, version, req)),
        RequestBody::AlterConfigs(req) => {
            off_async(ctx, OffAsync::TopicChanges, move |b| configs::alter(b, version, req)).await
        }
        RequestBody::IncrementalAlterConfigs(req) => {
            off_async(ctx, OffAsync::TopicChanges, move |b| {
                configs::incremental_alter(b, version, req)
            })
            .await
        }
        RequestBody::CreatePartitions(req) => {
            off_async(ctx, OffAsync::TopicChanges, move |b| {
                create_partitions::handle(b, version, req)
            })
            .await
        }
        RequestBody::DeleteRecords(req) => respond(ctx, &cluster_admin::delete_records(broker, version, req)),
        RequestBody::DescribeCluster(req) => respond(ctx, &cluster_admin::describe_cluster(broker, version, req)),
        RequestBody::DescribeLogDirs(req) => respond(ctx, &cluster_admin::describe_log_dirs(broker, version, req)),
        RequestBody::AlterReplicaLogDirs(req) => {
            respond(ctx, &cluster_admin::alter_replica_log_dirs(broker, version, req))
        }
        RequestBody::DescribeAcls(req) => respond(ctx, &acls::describe(version, req)),
        RequestBody::CreateAcls(req) => respond(ctx, &acls::create(version, req)),
        RequestBody::DeleteAcls(req) => respond(ctx, &acls::delete(version, req)),
        RequestBody::ElectLeaders(req) => respond(ctx, &replicas::elect_leaders(broker, version, req)),
        RequestBody::AlterPartitionReassignments(req) => {
            respond(ctx, &replicas::alter_reassignments(broker, version, req))
        }
        RequestBody::ListPartitionReassignments(req) => {
            respond(ctx, &replicas::list_reassignments(broker, version, req))
        }
        RequestBody::DescribeUserScramCredentials(req) => respond(ctx, &scram::describe(version, req)),
        RequestBody::AlterUserScramCredentials(req) => respond(ctx, &scram::alter(version, req)),
        // May forward to the active controller: a blocking round trip, off the async workers.
        RequestBody::DescribeQuorum(req) if broker.metadata.leader() != Some(broker.config.node_id) => {
            off_async(ctx, OffAsync::Blocking, move |b| quorum::handle(b, version, req)).await
        }
        RequestBody::DescribeQuorum(req) => respond(ctx, &quorum::handle(broker, version, req)),
        RequestBody::DescribeTopicPartitions(req) => {
            respond(ctx, &describe_topic_partitions::handle(broker, version, req))
        }
        other => Outcome::Close(format!("no handler for {}", other.api_key().name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use wire::Message;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("sluice-handlers-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    async fn server(name: &str) -> crate::Server {
        let mut layers = crate::ConfigLayers::new();
        let dir = temp_dir(name);
        let flag = crate::config::Source::Flag;
        layers.set("log.dirs", dir.display().to_string(), flag.clone()).unwrap();
        layers.set("listeners", "127.0.0.1:0".into(), flag.clone()).unwrap();
        layers.set("admin.listeners", String::new(), flag).unwrap();
        crate::Server::bind(layers.build().unwrap()).await.unwrap()
    }

    /// A JoinGroup v4 from a new member (answered at once with MEMBER_ID_REQUIRED and the id
    /// the broker made for it), through the bytes-in/bytes-out seam of a broker given a
    /// `SimClock` and a seeded `Random`: the answer's bytes.
    async fn first_join_answer(name: &str, seed: u64) -> Vec<u8> {
        let mut layers = crate::ConfigLayers::new();
        let dir = temp_dir(name);
        let flag = crate::config::Source::Flag;
        layers.set("log.dirs", dir.display().to_string(), flag.clone()).unwrap();
        layers.set("listeners", "127.0.0.1:0".into(), flag.clone()).unwrap();
        layers.set("admin.listeners", String::new(), flag).unwrap();
        let clock = Arc::new(crate::clock::SimClock::new(1_000_000));
        let server = crate::Server::bind_with(layers.build().unwrap(), clock, crate::random::Random::seeded(seed))
            .await
            .unwrap();
        let broker = server.broker().clone();
        let header = RequestHeader {
            request_api_key: ApiKey::JoinGroup as i16,
            request_api_version: 4,
            correlation_id: 7,
            client_id: Some("test".into()),
        };
        let body = wire::messages::JoinGroupRequest {
            group_id: "g".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: vec![wire::messages::join_group_request::JoinGroupRequestProtocol {
                name: "range".into(),
                metadata: Bytes::from_static(b"m"),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut frame = BytesMut::new();
        header
            .encode(&mut frame, frame::request_header_version(ApiKey::JoinGroup as i16, 4))
            .unwrap();
        body.encode(&mut frame, 4).unwrap();
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let out = match handle_frame(&broker, peer, frame.freeze()).await {
            Outcome::Respond(chunks) => chunks.concat(),
            other => panic!("{other:?}"),
        };
        drop(broker);
        drop(server);
        let _ = std::fs::remove_dir_all(temp_dir(name));
        out
    }

    /// The same seed gives the same member id, byte for byte; another seed another one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_seeded_broker_answers_identically() {
        let a = first_join_answer("seed-a", 7).await;
        let b = first_join_answer("seed-b", 7).await;
        let c = first_join_answer("seed-c", 8).await;
        let text = String::from_utf8_lossy(&a);
        assert!(
            text.contains("test-"),
            "the member id is made from the client id: {text:?}"
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    /// The default request of `key` with its spec's version range, for each API in
    /// `SUPPORTED` (an API added there must be added here too, or the tests fail).
    fn default_request_of(key: ApiKey) -> (RequestBody, i16, i16) {
        macro_rules! requests {
            ($($k:ident => $t:ident),* $(,)?) => {
                match key {
                    $(ApiKey::$k => (
                        RequestBody::$k(wire::messages::$t::default()),
                        <wire::messages::$t as Message>::MIN_VERSION,
                        <wire::messages::$t as Message>::MAX_VERSION,
                    ),)*
                    other => panic!("add {} to default_request_of", other.name()),
                }
            };
        }
        requests!(
            Produce => ProduceRequest,
            Fetch => FetchRequest,
            ListOffsets => ListOffsetsRequest,
            OffsetForLeaderEpoch => OffsetForLeaderEpochRequest,
            Metadata => MetadataRequest,
            ApiVersions => ApiVersionsRequest,
            CreateTopics => CreateTopicsRequest,
            DeleteTopics => DeleteTopicsRequest,
            InitProducerId => InitProducerIdRequest,
            FindCoordinator => FindCoordinatorRequest,
            JoinGroup => JoinGroupRequest,
            SyncGroup => SyncGroupRequest,
            Heartbeat => HeartbeatRequest,
            LeaveGroup => LeaveGroupRequest,
            OffsetCommit => OffsetCommitRequest,
            OffsetFetch => OffsetFetchRequest,
            OffsetDelete => OffsetDeleteRequest,
            DescribeGroups => DescribeGroupsRequest,
            ListGroups => ListGroupsRequest,
            DeleteGroups => DeleteGroupsRequest,
            DescribeConfigs => DescribeConfigsRequest,
            AlterConfigs => AlterConfigsRequest,
            IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
            CreatePartitions => CreatePartitionsRequest,
            DeleteRecords => DeleteRecordsRequest,
            DescribeCluster => DescribeClusterRequest,
            DescribeLogDirs => DescribeLogDirsRequest,
            AlterReplicaLogDirs => AlterReplicaLogDirsRequest,
            DescribeAcls => DescribeAclsRequest,
            CreateAcls => CreateAclsRequest,
            DeleteAcls => DeleteAclsRequest,
            ElectLeaders => ElectLeadersRequest,
            AlterPartitionReassignments => AlterPartitionReassignmentsRequest,
            ListPartitionReassignments => ListPartitionReassignmentsRequest,
            DescribeUserScramCredentials => DescribeUserScramCredentialsRequest,
            AlterUserScramCredentials => AlterUserScramCredentialsRequest,
            DescribeQuorum => DescribeQuorumRequest,
            DescribeTopicPartitions => DescribeTopicPartitionsRequest,
        )
    }

    /// A frame (without its size prefix) holding the default request of `key` at `version`.
    fn default_request(key: ApiKey, version: i16) -> Bytes {
        let header = RequestHeader {
            request_api_key: key as i16,
            request_api_version: version,
            correlation_id: 7,
            client_id: Some("test".into()),
        };
        let (body, _, _) = default_request_of(key);
        let header_version = frame::request_header_version(key as i16, version);
        let mut out = BytesMut::new();
        header.encode(&mut out, header_version).unwrap();
        body.encode(&mut out, version).unwrap();
        out.freeze()
    }

    /// Every API advertised is answered at its lowest and highest version: a response (or, for
    /// a produce with acks=0, none), never a closed connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_supported_api_has_a_handler() {
        let server = server("dispatch").await;
        let broker = server.broker().clone();
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for &(key, lo, hi) in SUPPORTED {
            for version in [lo, hi] {
                let frame = default_request(key, version);
                let outcome =
                    tokio::time::timeout(std::time::Duration::from_secs(20), handle_frame(&broker, peer, frame))
                        .await
                        .unwrap_or_else(|_| panic!("{} v{version} got no answer", key.name()));
                match outcome {
                    Outcome::Respond(_) | Outcome::RespondHeld(..) => {}
                    Outcome::NoResponse if key == ApiKey::Produce => {}
                    other => panic!("{} v{version}: {other:?}", key.name()),
                }
            }
        }
        drop(broker);
        drop(server);
        let _ = std::fs::remove_dir_all(temp_dir("dispatch"));
    }

    /// The request's versions in its spec file ("validVersions").
    fn spec_versions(key: ApiKey) -> (i16, i16) {
        let (_, min, max) = default_request_of(key);
        (min, max)
    }

    #[test]
    fn supported_versions_are_within_the_specs() {
        for &(key, lo, hi) in SUPPORTED {
            let (min, max) = spec_versions(key);
            assert!(
                min <= lo && lo <= hi && hi <= max,
                "{} {lo}-{hi} vs spec {min}-{max}",
                key.name()
            );
        }
    }

    /// The README's API table lists exactly `SUPPORTED`, in its order, with the same versions.
    #[test]
    fn readme_table_matches_supported() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"));
        let section = readme
            .split("\n## Kafka APIs\n")
            .nth(1)
            .expect("README has a \"## Kafka APIs\" section");
        let section = section.split("\n## ").next().unwrap_or(section);
        let rows: Vec<(i16, String, String)> = section
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.trim().trim_matches('|').split('|').map(str::trim).collect();
                let key = cells.first()?.parse::<i16>().ok()?;
                Some((key, cells.get(1)?.to_string(), cells.get(2)?.to_string()))
            })
            .collect();
        let expected: Vec<(i16, String, String)> = SUPPORTED
            .iter()
            .map(|&(k, lo, hi)| {
                let versions = if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") };
                (k as i16, k.name().to_string(), versions)
            })
            .collect();
        for (row, want) in rows.iter().zip(&expected) {
            assert_eq!(row, want, "README row differs from SUPPORTED");
        }
        assert_eq!(rows.len(), expected.len(), "README rows: {rows:?}");
    }
}
