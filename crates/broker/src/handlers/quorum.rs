//! DescribeQuorum: the KRaft metadata quorum as its leader's core describes it (`answer`):
//! leader, epoch, high watermark, and each voter's and observer's log end and last fetch
//! (wall-clock times, from the core's monotonic ones); no directory ids (Kafka's `ZERO_UUID`,
//! voters without one). A node alone is the only voter and the leader. A node that does not
//! lead forwards the request to the leader's controller listener, as Kafka's brokers forward
//! it to the active controller; if that fails, it answers NOT_LEADER_OR_FOLLOWER with the
//! leader it knows. Version 2 adds `nodes`: the answering node with its client listener.
//!
//! A request for any other topic or partition, or for more than exactly that one partition,
//! gets `UNKNOWN_TOPIC_OR_PARTITION` on each partition asked for (Kafka's
//! `getPartitionLevelErrorResponse`).

use crate::Broker;
use wire::messages::describe_quorum_response::{Listener, Node, PartitionData, ReplicaState, TopicData};
use wire::messages::*;

pub const METADATA_TOPIC: &str = "__cluster_metadata";

pub fn handle(broker: &Broker, _version: i16, req: DescribeQuorumRequest) -> DescribeQuorumResponse {
    let valid = req.topics.len() == 1
        && req.topics[0].topic_name == METADATA_TOPIC
        && req.topics[0].partitions.len() == 1
        && req.topics[0].partitions[0].partition_index == 0;
    if !valid {
        return DescribeQuorumResponse {
            topics: req
                .topics
                .into_iter()
                .map(|t| TopicData {
                    topic_name: t.topic_name,
                    partitions: t
                        .partitions
                        .into_iter()
                        .map(|p| PartitionData {
                            partition_index: p.partition_index,
                            error_code: ErrorCode::UnknownTopicOrPartition as i16,
                            ..Default::default()
                        })
                        .collect(),
                })
                .collect(),
            ..Default::default()
        };
    }
    let Some(mut answer) = answer(&broker.metadata, broker.clock.now_ms()) else {
        // Not the leader: forwarded to it, as Kafka's brokers forward DescribeQuorum to the
        // active controller; if it cannot be reached, the leader as this node knows it.
        if let Some(answer) = forward(broker, &req) {
            return answer;
        }
        return DescribeQuorumResponse {
            topics: vec![TopicData {
                topic_name: METADATA_TOPIC.into(),
                partitions: vec![PartitionData {
                    partition_index: 0,
                    error_code: ErrorCode::NotLeaderOrFollower as i16,
                    leader_id: broker.metadata.leader().unwrap_or(-1),
                    leader_epoch: broker.metadata.leader_epoch(),
                    high_watermark: broker.metadata.quorum().2,
                    ..Default::default()
                }],
            }],
            ..Default::default()
        };
    };
    let c = &broker.config;
    answer.nodes = vec![Node {
        node_id: c.node_id,
        listeners: vec![Listener {
            name: "PLAINTEXT".into(),
            host: c.listener.advertised_host.clone(),
            port: c.listener.advertised_port,
        }],
    }];
    answer
}

/// The leader's answer from its quorum core (`None` elsewhere), without `nodes`.
pub fn answer(metadata: &crate::metadata_log::MetadataLog, now: i64) -> Option<DescribeQuorumResponse> {
    let d = metadata.quorum().3?;
    // The core keeps monotonic times; Kafka reports wall-clock ones (-1: never).
    let core_now = metadata.core_time() as i64;
    let wall = |t: Option<u64>| t.map_or(-1, |t| now - (core_now - t as i64).max(0));
    let state = |r: &raft::ReplicaDescription| ReplicaState {
        replica_id: r.id,
        replica_directory_id: wire::Uuid::ZERO,
        log_end_offset: r.end_offset,
        last_fetch_timestamp: wall(r.last_fetch_ms),
        last_caught_up_timestamp: wall(r.last_caught_up_ms),
    };
    Some(DescribeQuorumResponse {
        topics: vec![TopicData {
            topic_name: METADATA_TOPIC.into(),
            partitions: vec![PartitionData {
                partition_index: 0,
                error_code: 0,
                leader_id: d.leader,
                leader_epoch: d.epoch,
                high_watermark: d.high_watermark,
                current_voters: d.voters.iter().map(state).collect(),
                observers: d.observers.iter().map(state).collect(),
                ..Default::default()
            }],
        }],
        ..Default::default()
    })
}

/// Asks the leader's controller listener (blocking, briefly: this runs off the async workers).
fn forward(broker: &Broker, req: &DescribeQuorumRequest) -> Option<DescribeQuorumResponse> {
    let leader = broker.metadata.leader()?;
    let addr = broker.config.quorum.voters.get(&leader)?;
    match crate::quorum::net::call_blocking(addr, ApiKey::DescribeQuorum, 2, req, std::time::Duration::from_secs(5)) {
        Ok(ResponseBody::DescribeQuorum(r)) => Some(r),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(leader, error = %e, "cannot forward DescribeQuorum to the active controller");
            None
        }
    }
}
