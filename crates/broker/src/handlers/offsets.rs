//! Committed offsets: OffsetCommit, OffsetFetch (one group, or several from v8), OffsetDelete.

use crate::group::coordinator::{CommittedByTopic, OffsetToCommit};
use crate::group::state::CommittedOffset;
use crate::Broker;
use wire::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use wire::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use wire::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use wire::messages::*;

/// Writes (and may fsync) `__consumer_offsets`: dispatched on the blocking pool.
pub fn commit(broker: &Broker, _version: i16, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let now = broker.clock.now_ms();
    let shape: Vec<(String, Vec<i32>)> = req
        .topics
        .iter()
        .map(|t| (t.name.clone(), t.partitions.iter().map(|p| p.partition_index).collect()))
        .collect();
    let offsets: Vec<OffsetToCommit> = req
        .topics
        .into_iter()
        .flat_map(|t| {
            let name = t.name;
            t.partitions.into_iter().map(move |p| OffsetToCommit {
                topic: name.clone(),
                partition: p.partition_index,
                offset: CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: Some(p.committed_metadata.unwrap_or_default()),
                    commit_timestamp: now,
                },
            })
        })
        .collect();
    // As Kafka, an empty group id is allowed here (for backwards compatibility).
    let errors = broker.groups.commit(
        &broker.topics,
        &req.group_id,
        &req.member_id,
        req.group_instance_id.as_deref(),
        req.generation_id_or_member_epoch,
        offsets,
    );
    let mut errors = errors.into_iter();
    let topics = shape
        .into_iter()
        .map(|(name, parts)| OffsetCommitResponseTopic {
            name,
            partitions: parts
                .into_iter()
                .map(|partition_index| OffsetCommitResponsePartition {
                    partition_index,
                    error_code: errors.next().unwrap_or(ErrorCode::UnknownServerError) as i16,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    OffsetCommitResponse {
        topics,
        ..Default::default()
    }
}

fn fetch_group(
    broker: &Broker,
    group_id: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<CommittedByTopic, ErrorCode> {
    broker.groups.fetch_offsets(&broker.topics, group_id, wanted)
}

/// (offset, leader epoch, metadata) as the response shows them; no commit: -1, -1, "".
fn shown(o: Option<CommittedOffset>) -> (i64, i32, Option<String>) {
    match o {
        Some(o) => (o.offset, o.leader_epoch, o.metadata),
        None => (-1, -1, Some(String::new())),
    }
}

/// The response's topics from committed offsets: v8+ and older versions have the same fields
/// in different generated types.
macro_rules! response_topics {
    ($topics:expr, $topic:ident, $partition:ident) => {
        $topics
            .into_iter()
            .map(|(name, parts)| $topic {
                name,
                partitions: parts
                    .into_iter()
                    .map(|(partition_index, o)| {
                        let (committed_offset, committed_leader_epoch, metadata) = shown(o);
                        $partition {
                            partition_index,
                            committed_offset,
                            committed_leader_epoch,
                            metadata,
                            ..Default::default()
                        }
                    })
                    .collect(),
                ..Default::default()
            })
            .collect()
    };
}

pub fn fetch(broker: &Broker, version: i16, req: OffsetFetchRequest) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g
                    .topics
                    .map(|ts| ts.into_iter().map(|t| (t.name, t.partition_indexes)).collect());
                match fetch_group(broker, &g.group_id, wanted) {
                    Err(e) => OffsetFetchResponseGroup {
                        group_id: g.group_id,
                        error_code: e as i16,
                        ..Default::default()
                    },
                    Ok(topics) => OffsetFetchResponseGroup {
                        group_id: g.group_id,
                        topics: response_topics!(topics, OffsetFetchResponseTopics, OffsetFetchResponsePartitions),
                        ..Default::default()
                    },
                }
            })
            .collect();
        return OffsetFetchResponse {
            groups,
            ..Default::default()
        };
    }
    let wanted = req
        .topics
        .clone()
        .map(|ts| ts.into_iter().map(|t| (t.name, t.partition_indexes)).collect());
    match fetch_group(broker, &req.group_id, wanted) {
        Ok(topics) => OffsetFetchResponse {
            topics: response_topics!(topics, OffsetFetchResponseTopic, OffsetFetchResponsePartition),
            ..Default::default()
        },
        // v0-1 have no top-level error: it goes on every partition asked for.
        Err(e) if version < 2 => OffsetFetchResponse {
            topics: req
                .topics
                .unwrap_or_default()
                .into_iter()
                .map(|t| OffsetFetchResponseTopic {
                    name: t.name,
                    partitions: t
                        .partition_indexes
                        .into_iter()
                        .map(|partition_index| OffsetFetchResponsePartition {
                            partition_index,
                            committed_offset: -1,
                            committed_leader_epoch: -1,
                            metadata: Some(String::new()),
                            error_code: e as i16,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        },
        Err(e) => OffsetFetchResponse {
            error_code: e as i16,
            ..Default::default()
        },
    }
}

pub fn delete(broker: &Broker, _version: i16, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let mut wanted = vec![];
    for t in &req.topics {
        for p in &t.partitions {
            let exists = broker
                .topics
                .get(&t.name)
                .is_some_and(|topic| topic.partition(p.partition_index).is_some());
            // Partitions of topics that do not exist get UNKNOWN_TOPIC_OR_PARTITION below.
            if exists {
                wanted.push((t.name.clone(), p.partition_index));
            }
        }
    }
    let result = if req.group_id.is_empty() {
        Err(ErrorCode::InvalidGroupId)
    } else {
        broker.groups.delete_offsets(&broker.topics, &req.group_id, &wanted)
    };
    let errors = match result {
        Err(e) => {
            return OffsetDeleteResponse {
                error_code: e as i16,
                ..Default::default()
            }
        }
        Ok(errors) => errors,
    };
    let error_of = |topic: &str, p: i32| {
        wanted
            .iter()
            .zip(&errors)
            .find(|((t, q), _)| t == topic && *q == p)
            .map_or(ErrorCode::UnknownTopicOrPartition, |(_, e)| *e)
    };
    let topics = req
        .topics
        .into_iter()
        .map(|t| OffsetDeleteResponseTopic {
            partitions: t
                .partitions
                .iter()
                .map(|p| OffsetDeleteResponsePartition {
                    partition_index: p.partition_index,
                    error_code: error_of(&t.name, p.partition_index) as i16,
                    ..Default::default()
                })
                .collect(),
            name: t.name,
            ..Default::default()
        })
        .collect();
    OffsetDeleteResponse {
        topics,
        ..Default::default()
    }
}
