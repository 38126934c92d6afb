//! DescribeQuorum: the KRaft metadata quorum, as a Kafka 4 node running alone in combined mode
//! (broker and controller in one process) describes it: this node is the only voter and the
//! leader of `__cluster_metadata` partition 0, with no observers.
//!
//! The numbers are the local metadata log's (`crate::metadata_log`): its epoch, and its end
//! offset as both the voter's log end and the high watermark (a quorum of one commits what it
//! has written and fsynced); no directory id (Kafka's `ZERO_UUID`, a voter without one). The
//! replicated quorum (next issue) reports its own state here. Version 2 adds `nodes`: this node with
//! its client listener, the only endpoint it has (a Kafka controller would list its controller
//! listener).
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
    let c = &broker.config;
    let end = broker.metadata.end_offset();
    let now = broker.clock.now_ms();
    // The leader reports itself as fetched and caught up now (Kafka's `LeaderState`).
    let me = ReplicaState {
        replica_id: c.node_id,
        replica_directory_id: wire::Uuid::ZERO,
        log_end_offset: end,
        last_fetch_timestamp: now,
        last_caught_up_timestamp: now,
    };
    DescribeQuorumResponse {
        topics: vec![TopicData {
            topic_name: METADATA_TOPIC.into(),
            partitions: vec![PartitionData {
                partition_index: 0,
                error_code: 0,
                leader_id: c.node_id,
                leader_epoch: broker.metadata.leader_epoch(),
                high_watermark: end,
                current_voters: vec![me],
                observers: vec![],
                ..Default::default()
            }],
        }],
        nodes: vec![Node {
            node_id: c.node_id,
            listeners: vec![Listener {
                name: "PLAINTEXT".into(),
                host: c.listener.advertised_host.clone(),
                port: c.listener.advertised_port,
            }],
        }],
        ..Default::default()
    }
}
