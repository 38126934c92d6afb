//! DescribeTopicPartitions (KIP-966): topic layouts page by page, as Kafka's
//! `DescribeTopicPartitionsRequestHandler` and `KRaftMetadataCache.describeTopicResponse`
//! answer them.
//!
//! Topics (the ones named, or all when none is) are deduplicated and sorted by name; a cursor
//! starts at its topic and partition, skipping every topic before it. At most
//! `response_partition_limit` partitions (clamped to 1..=2000, Kafka's
//! `max.request.partition.size.limit` default) are returned; when the limit cuts a topic,
//! `next_cursor` names that topic and the next partition, and when it is used up exactly at the
//! end of a topic with more to come, the next topic and partition 0. An unknown topic
//! (only possible when topics are named) gets `UNKNOWN_TOPIC_OR_PARTITION`, or
//! `INVALID_TOPIC_EXCEPTION` for a name Kafka could never accept, and uses none of the limit.
//! A cursor whose topic is not among those named, or with a negative partition, fails every
//! named topic with `INVALID_REQUEST` (Kafka's `getErrorResponse`).
//!
//! On one node this node leads every partition and is its only replica and in-sync replica;
//! the eligible leader replicas and last known ELR are empty lists (not null), as Kafka sends
//! for a partition without ELR, and no replica is offline.

use crate::Broker;
use metadata::TopicImage;
use wire::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use wire::messages::*;

/// Kafka's `max.request.partition.size.limit` default: the most partitions one response holds.
const MAX_PARTITIONS: i32 = 2000;

/// Every operation the topic resource type has, which is what a broker without an authorizer
/// reports as authorized (3576; DescribeTopicPartitions has no flag to leave it out).
const TOPIC_AUTHORIZED_OPERATIONS: i32 = super::operations::TOPIC;

fn partitions(topic: &TopicImage, start: i32, max: i32) -> (Vec<DescribeTopicPartitionsResponsePartition>, i32) {
    let count = topic.partition_count() as i32;
    let start = start.max(0);
    let upper = count.min(start.saturating_add(max));
    let next = if upper < count { upper } else { -1 };
    let parts = (start..upper)
        .filter_map(|i| topic.partition(i).map(|p| (i, p)))
        .map(|(i, p)| DescribeTopicPartitionsResponsePartition {
            error_code: if p.leader < 0 {
                ErrorCode::LeaderNotAvailable as i16
            } else {
                0
            },
            partition_index: i,
            leader_id: p.leader,
            leader_epoch: p.leader_epoch,
            replica_nodes: p.replicas.clone(),
            isr_nodes: p.isr.clone(),
            eligible_leader_replicas: Some(p.elr.clone()),
            last_known_elr: Some(p.last_known_elr.clone()),
            offline_replicas: vec![],
        })
        .collect();
    (parts, next)
}

fn failed_request(req: DescribeTopicPartitionsRequest) -> DescribeTopicPartitionsResponse {
    DescribeTopicPartitionsResponse {
        topics: req
            .topics
            .into_iter()
            .map(|t| DescribeTopicPartitionsResponseTopic {
                error_code: ErrorCode::InvalidRequest as i16,
                name: Some(t.name),
                is_internal: false,
                partitions: vec![],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

pub fn handle(broker: &Broker, _version: i16, req: DescribeTopicPartitionsRequest) -> DescribeTopicPartitionsResponse {
    let fetch_all = req.topics.is_empty();
    if let Some(c) = &req.cursor {
        if c.partition_index < 0 || (!fetch_all && !req.topics.iter().any(|t| t.name == c.topic_name)) {
            return failed_request(req);
        }
    }
    let cursor_topic = req.cursor.as_ref().map(|c| c.topic_name.clone());
    let image = broker.metadata.image();
    let mut names: Vec<String> = if fetch_all {
        image.topics().map(|t| t.name.clone()).collect()
    } else {
        req.topics.iter().map(|t| t.name.clone()).collect()
    };
    names.sort();
    names.dedup();
    if let Some(first) = &cursor_topic {
        names.retain(|n| n >= first);
    }
    let start_of = |name: &str| match &req.cursor {
        Some(c) if c.topic_name == name => c.partition_index,
        _ => 0,
    };
    let mut remaining = req.response_partition_limit.clamp(1, MAX_PARTITIONS);
    let mut topics = vec![];
    let mut next_cursor = None;
    for name in names {
        if remaining == 0 {
            next_cursor = Some(Cursor {
                topic_name: name,
                partition_index: 0,
            });
            break;
        }
        let Some(topic) = image.topic(&name) else {
            // Only named topics can be missing (all topics are listed from what exists).
            let code = match crate::topics::validate_topic_name(&name) {
                Ok(()) => ErrorCode::UnknownTopicOrPartition,
                Err(_) => ErrorCode::InvalidTopicException,
            };
            topics.push(DescribeTopicPartitionsResponseTopic {
                error_code: code as i16,
                is_internal: crate::topics::is_internal(&name),
                name: Some(name),
                topic_id: wire::Uuid::ZERO,
                partitions: vec![],
                topic_authorized_operations: TOPIC_AUTHORIZED_OPERATIONS,
            });
            continue;
        };
        let (parts, next) = partitions(topic, start_of(&name), remaining);
        remaining -= parts.len() as i32;
        topics.push(DescribeTopicPartitionsResponseTopic {
            error_code: 0,
            is_internal: crate::topics::is_internal(&name),
            name: Some(name.clone()),
            topic_id: topic.id,
            partitions: parts,
            topic_authorized_operations: TOPIC_AUTHORIZED_OPERATIONS,
        });
        if next != -1 {
            next_cursor = Some(Cursor {
                topic_name: name,
                partition_index: next,
            });
            break;
        }
    }
    DescribeTopicPartitionsResponse {
        topics,
        next_cursor,
        ..Default::default()
    }
}
