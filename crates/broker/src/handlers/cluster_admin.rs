//! DeleteRecords, DescribeCluster, and the log dirs: DescribeLogDirs and AlterReplicaLogDirs.

use crate::Broker;
use std::collections::HashMap;
use wire::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use wire::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use wire::messages::describe_cluster_response::DescribeClusterBroker;
use wire::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use wire::messages::*;

/// DeleteRecords: moves each partition's log start offset up to the offset given (-1: the high
/// watermark); segments wholly below it are deleted. Internal topics are refused.
pub fn delete_records(broker: &Broker, _version: i16, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.topics.get(&t.name);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let mut r = DeleteRecordsPartitionResult {
                        partition_index: p.partition_index,
                        low_watermark: -1,
                        ..Default::default()
                    };
                    let part = topic.as_ref().and_then(|t| t.partition(p.partition_index));
                    let outcome = match part {
                        None => Err(super::not_held(
                            broker.metadata.image().topic(&t.name).map(|t| &**t),
                            p.partition_index,
                        )),
                        Some(_) if crate::topics::is_internal(&t.name) => Err(ErrorCode::InvalidRequest),
                        Some(part) => {
                            let hw = part.high_watermark();
                            let target = if p.offset == -1 { hw } else { p.offset };
                            let mut state = part.lock();
                            if target < 0 || target > hw {
                                Err(ErrorCode::OffsetOutOfRange)
                            } else {
                                state.log.delete_records_before(target).map_err(|e| {
                                    tracing::warn!(topic = %t.name, partition = p.partition_index, error = %e, "DeleteRecords failed");
                                    ErrorCode::KafkaStorageError
                                })
                            }
                        }
                    };
                    match outcome {
                        Ok(low) => r.low_watermark = low,
                        Err(e) => r.error_code = e as i16,
                    }
                    r
                })
                .collect();
            DeleteRecordsTopicResult {
                name: t.name,
                partitions,
                ..Default::default()
            }
        })
        .collect();
    DeleteRecordsResponse {
        topics,
        ..Default::default()
    }
}

/// DescribeCluster: the cluster's id, the active controller and the unfenced brokers (v2
/// with `include_fenced_brokers`: every registered broker, `is_fenced` saying which), each with
/// its epoch in Sluice's tagged field.
pub fn describe_cluster(broker: &Broker, version: i16, req: DescribeClusterRequest) -> DescribeClusterResponse {
    // Endpoint type 1 is brokers; 2 (controllers) has no separate listener here.
    if req.endpoint_type != 1 {
        return DescribeClusterResponse {
            error_code: ErrorCode::UnsupportedEndpointType as i16,
            error_message: Some("only broker endpoints (1) are served".into()),
            endpoint_type: req.endpoint_type,
            ..Default::default()
        };
    }
    DescribeClusterResponse {
        endpoint_type: 1,
        cluster_id: broker.cluster_id.clone(),
        controller_id: broker.metadata.leader().unwrap_or(-1),
        brokers: broker
            .metadata
            .image()
            .brokers
            .values()
            .filter(|b| !b.fenced || (version >= 2 && req.include_fenced_brokers))
            .filter_map(|b| {
                let e = b.endpoints.first()?;
                Some(DescribeClusterBroker {
                    broker_id: b.id,
                    host: e.host.clone(),
                    port: i32::from(e.port),
                    rack: b.rack.clone(),
                    is_fenced: b.fenced,
                    sluice_broker_epoch: b.epoch,
                })
            })
            .collect(),
        cluster_authorized_operations: super::operations::if_asked(
            req.include_cluster_authorized_operations,
            super::operations::CLUSTER,
        ),
        ..Default::default()
    }
}

/// DescribeLogDirs: the one data directory, with the size of each partition asked for (all
/// when `topics` is null) that this node holds.
pub fn describe_log_dirs(broker: &Broker, _version: i16, req: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let wanted: Vec<(std::sync::Arc<crate::topics::Topic>, Vec<i32>)> = match req.topics {
        None => broker
            .topics
            .list()
            .into_iter()
            .map(|t| {
                let all = t.partitions.iter().map(|p| p.index).collect();
                (t, all)
            })
            .collect(),
        Some(ts) => ts
            .into_iter()
            .filter_map(|t| broker.topics.get(&t.topic).map(|topic| (topic, t.partitions)))
            .collect(),
    };
    let topics = wanted
        .into_iter()
        .map(|(topic, parts)| DescribeLogDirsTopic {
            name: topic.name.clone(),
            partitions: parts
                .into_iter()
                .filter_map(|i| topic.partition(i))
                .map(|p| DescribeLogDirsPartition {
                    partition_index: p.index,
                    partition_size: p.lock().log.size_bytes() as i64,
                    offset_lag: 0,
                    is_future_key: false,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    let dir = log_dir(broker);
    // -1 when the file system cannot say, as Kafka's "unknown".
    let (total, usable) = storage::disk::space(&dir).map_or((-1, -1), |(t, u)| (t as i64, u as i64));
    DescribeLogDirsResponse {
        results: vec![DescribeLogDirsResult {
            log_dir: dir.display().to_string(),
            topics,
            total_bytes: total,
            usable_bytes: usable,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The one log dir, as DescribeLogDirs names it: the data directory's canonical path.
fn log_dir(broker: &Broker) -> std::path::PathBuf {
    broker
        .config
        .data_dir
        .canonicalize()
        .unwrap_or_else(|_| broker.config.data_dir.clone())
}

/// The paths that name the one log dir: the one DescribeLogDirs reports, and the configured
/// directory made absolute (Kafka compares with each log dir's absolute path).
fn log_dir_names(broker: &Broker) -> [std::path::PathBuf; 2] {
    let configured = std::path::absolute(&broker.config.data_dir).unwrap_or_else(|_| broker.config.data_dir.clone());
    [log_dir(broker), configured]
}

/// Kafka refuses a move when the future log's directory name (`<topic>-<n>.<32 hex>-future`)
/// would pass 255 bytes (`UnifiedLog.logFutureDirName`, KAFKA-4893).
fn future_dir_name_too_long(topic: &str, partition: i32) -> bool {
    topic.len() + 1 + partition.to_string().len() + 1 + 32 + "-future".len() > 255
}

/// AlterReplicaLogDirs, as Kafka's `ReplicaManager.alterReplicaLogDirs` with one log dir: per
/// partition (the last dir given wins when one is named twice), a topic name too long for a
/// future log `INVALID_TOPIC_EXCEPTION`; a path that is not the log dir `LOG_DIR_NOT_FOUND`
/// (checked before the partition, as Kafka does); a partition that does not exist
/// `UNKNOWN_TOPIC_OR_PARTITION`; otherwise the replica is already in that dir and nothing
/// moves: NONE. Results are grouped by topic in the order topics first appear.
pub fn alter_replica_log_dirs(
    broker: &Broker,
    _version: i16,
    req: AlterReplicaLogDirsRequest,
) -> AlterReplicaLogDirsResponse {
    // (topic, partition) -> destination, keeping the order first seen (indexed: a request may
    // name millions of partitions).
    let mut moves: Vec<((String, i32), String)> = vec![];
    let mut index: HashMap<(String, i32), usize> = HashMap::new();
    for dir in req.dirs {
        for t in dir.topics {
            for p in t.partitions {
                let key = (t.name.clone(), p);
                match index.get(&key) {
                    Some(&i) => moves[i].1 = dir.path.clone(),
                    None => {
                        index.insert(key.clone(), moves.len());
                        moves.push((key, dir.path.clone()));
                    }
                }
            }
        }
    }
    let ours = log_dir_names(broker);
    let is_our_log_dir = |path: &str| ours.iter().any(|d| d.as_path() == std::path::Path::new(path));
    let mut results: Vec<AlterReplicaLogDirTopicResult> = vec![];
    let mut by_topic: HashMap<String, usize> = HashMap::new();
    for ((topic, partition), dir) in moves {
        let code = if future_dir_name_too_long(&topic, partition) {
            ErrorCode::InvalidTopicException
        } else if !is_our_log_dir(&dir) {
            ErrorCode::LogDirNotFound
        } else if broker
            .topics
            .get(&topic)
            .and_then(|t| t.partition(partition).cloned())
            .is_none()
        {
            ErrorCode::UnknownTopicOrPartition
        } else {
            ErrorCode::None
        };
        let result = AlterReplicaLogDirPartitionResult {
            partition_index: partition,
            error_code: code as i16,
        };
        match by_topic.get(&topic) {
            Some(&i) => results[i].partitions.push(result),
            None => {
                by_topic.insert(topic.clone(), results.len());
                results.push(AlterReplicaLogDirTopicResult {
                    topic_name: topic,
                    partitions: vec![result],
                });
            }
        }
    }
    AlterReplicaLogDirsResponse {
        results,
        ..Default::default()
    }
}
