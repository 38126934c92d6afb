//! Metadata: the brokers of the cluster, its id and controller, and topic layouts.
//!
//! A topic asked for by name that does not exist is created when `auto.create.topics.enable`
//! is on and the client allows it (v4+), as Kafka does. One request creates at most
//! `AUTO_CREATE_TOPICS_MAX` topics and `max.partitions.per.request` partitions; the topics
//! past that are answered `LEADER_NOT_AVAILABLE`, which clients retry (and the next request
//! creates them), as Kafka answers for topics whose creation is under way.

use crate::Broker;
use metadata::{MetadataImage, TopicImage};
use wire::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use wire::messages::{MetadataRequest, MetadataResponse};
use wire::ErrorCode;

fn describe(topic: &TopicImage, operations: i32) -> MetadataResponseTopic {
    MetadataResponseTopic {
        error_code: 0,
        name: Some(topic.name.clone()),
        topic_id: topic.id,
        is_internal: crate::topics::is_internal(&topic.name),
        partitions: topic
            .partitions
            .iter()
            .map(|(index, p)| MetadataResponsePartition {
                error_code: if p.leader < 0 {
                    ErrorCode::LeaderNotAvailable as i16
                } else {
                    0
                },
                partition_index: *index,
                leader_id: p.leader,
                leader_epoch: p.leader_epoch,
                replica_nodes: p.replicas.clone(),
                isr_nodes: p.isr.clone(),
                offline_replicas: vec![],
            })
            .collect(),
        topic_authorized_operations: operations,
    }
}

fn failed(name: Option<String>, topic_id: wire::Uuid, code: ErrorCode) -> MetadataResponseTopic {
    MetadataResponseTopic {
        error_code: code as i16,
        name,
        topic_id,
        ..Default::default()
    }
}

/// Whether answering `request` may create topics (a named topic is missing and may be
/// auto-created): only then does it leave the async workers.
pub fn may_create_topics(broker: &Broker, version: i16, request: &MetadataRequest) -> bool {
    (version < 4 || request.allow_auto_topic_creation)
        && request.topics.as_ref().is_some_and(|topics| {
            topics
                .iter()
                .any(|t| t.name.as_ref().is_some_and(|n| broker.topics.get(n).is_none()))
        })
        && broker.topics.defaults().auto_create
}

/// Sends the active controller a CreateTopics for `name` with the defaults (auto-creation on a
/// broker that is not the controller), waiting for its answer; a failure is logged, and the
/// client's next Metadata asks again. Runs on the blocking pool (see `may_create_topics`).
fn ask_controller_to_create(broker: &Broker, name: &str) {
    use wire::messages::create_topics_request::CreatableTopic;
    let Some(addr) = broker
        .metadata
        .leader()
        .and_then(|l| broker.config.quorum.voters.get(&l))
    else {
        return;
    };
    let request = wire::messages::CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: name.to_string(),
            num_partitions: -1,
            replication_factor: -1,
            ..Default::default()
        }],
        timeout_ms: 10_000,
        ..Default::default()
    };
    let version = crate::handlers::supported_versions(wire::messages::ApiKey::CreateTopics).map_or(2, |(_, hi)| hi);
    let answer = crate::quorum::net::call_blocking(
        addr,
        wire::messages::ApiKey::CreateTopics,
        version,
        &request,
        std::time::Duration::from_secs(15),
    );
    let code = match answer {
        Ok(wire::messages::ResponseBody::CreateTopics(r)) => r.topics.first().map_or(0, |t| t.error_code),
        Ok(_) => ErrorCode::UnknownServerError as i16,
        Err(e) => {
            tracing::warn!(topic = name, error = %e, "cannot ask the active controller to auto-create a topic");
            return;
        }
    };
    if code != 0 && code != ErrorCode::TopicAlreadyExists as i16 {
        tracing::warn!(
            topic = name,
            error_code = code,
            "the active controller refused to auto-create a topic"
        );
    }
}

/// Topics one Metadata request may auto-create (each creation rewrites the topic table).
const AUTO_CREATE_TOPICS_MAX: usize = 100;

pub fn handle(broker: &Broker, version: i16, request: MetadataRequest) -> MetadataResponse {
    let defaults = broker.topics.defaults();
    let mut created_topics = 0usize;
    let mut created_partitions = 0usize;
    let ops = super::operations::if_asked(request.include_topic_authorized_operations, super::operations::TOPIC);
    // Every answer comes from the metadata image, one per request; a topic created here is
    // read from the image its creation made.
    let image = broker.metadata.image();
    let me = broker.config.node_id;
    let controller_here = broker.config.quorum.is_alone(me) || broker.metadata.leader() == Some(me);
    let describe_in = |image: &MetadataImage, name: &str| image.topic(name).map(|t| describe(t, ops));
    // Null means all topics; so does an empty list in version 0.
    let topics = match request.topics {
        Some(t) if !(version == 0 && t.is_empty()) => t
            .into_iter()
            .map(|t| match t.name {
                Some(name) => match describe_in(&image, &name) {
                    Some(topic) => topic,
                    None => {
                        // Before v4 there is no flag, and Kafka auto-creates.
                        let allowed = version < 4 || request.allow_auto_topic_creation;
                        let partitions = defaults.num_partitions.max(1) as usize;
                        let within_budget = created_topics < AUTO_CREATE_TOPICS_MAX
                            && created_partitions + partitions <= defaults.partitions_per_request_max;
                        if allowed && defaults.auto_create && !within_budget {
                            failed(Some(name), t.topic_id, ErrorCode::LeaderNotAvailable)
                        } else if allowed && defaults.auto_create && !controller_here {
                            created_topics += 1;
                            created_partitions += partitions;
                            // The active controller creates it; the client asks again, as it
                            // does of Kafka while a topic's leaders are elected.
                            ask_controller_to_create(broker, &name);
                            failed(Some(name), t.topic_id, ErrorCode::LeaderNotAvailable)
                        } else if allowed && defaults.auto_create {
                            created_topics += 1;
                            created_partitions += partitions;
                            match broker.topics.create(&name, -1, -1, None, Default::default()) {
                                // Kafka answers LEADER_NOT_AVAILABLE until the new topic's leaders
                                // are elected; here creation is synchronous and the partitions are
                                // ready, so the client gets the topic at once (no retry delay).
                                Err(e) if e.code != ErrorCode::TopicAlreadyExists => {
                                    failed(Some(name), t.topic_id, e.code)
                                }
                                // Created, here or by a request that raced this one.
                                _ => describe_in(&broker.metadata.image(), &name).unwrap_or_else(|| {
                                    failed(Some(name), t.topic_id, ErrorCode::UnknownTopicOrPartition)
                                }),
                            }
                        } else {
                            failed(Some(name), t.topic_id, ErrorCode::UnknownTopicOrPartition)
                        }
                    }
                },
                // By id: only version 12+ may leave the name out of the response.
                None if version >= 12 => match image.topic_by_id(&t.topic_id) {
                    Some(topic) => describe(topic, ops),
                    None => failed(None, t.topic_id, ErrorCode::UnknownTopicId),
                },
                None => failed(Some(String::new()), t.topic_id, ErrorCode::InvalidRequest),
            })
            .collect(),
        _ => image.topics().map(|t| describe(t, ops)).collect(),
    };
    MetadataResponse {
        brokers: super::live_brokers(broker)
            .into_iter()
            .map(|b| MetadataResponseBroker {
                node_id: b.id,
                host: b.host,
                port: i32::from(b.port),
                rack: b.rack,
            })
            .collect(),
        cluster_id: Some(broker.cluster_id.clone()),
        // The metadata quorum's leader: clients send admin requests there.
        controller_id: broker.metadata.leader().unwrap_or(-1),
        topics,
        // Versions 8 to 10 only; later ones ask DescribeCluster.
        cluster_authorized_operations: super::operations::if_asked(
            request.include_cluster_authorized_operations,
            super::operations::CLUSTER,
        ),
        ..Default::default()
    }
}
