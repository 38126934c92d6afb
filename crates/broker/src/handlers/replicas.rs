//! Replica placement and leadership on one node: ElectLeaders, ListPartitionReassignments and
//! AlterPartitionReassignments, answered as Kafka's controller (`ReplicationControlManager`)
//! answers them for a cluster of this one broker. This node leads every partition and is its
//! only (preferred) replica, so no election is ever needed and no reassignment is ever in
//! progress; the only reassignment that can succeed is onto this node, a no-op.

use crate::Broker;
use wire::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use wire::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use wire::messages::*;

/// Kafka's default message for `ELECTION_NOT_NEEDED` (`new ApiError(ELECTION_NOT_NEEDED)`).
const ELECTION_NOT_NEEDED: &str = "Leader election not needed for topic partition.";

fn partition_exists(broker: &Broker, topic: &str, partition: i32) -> Result<(), String> {
    match broker.metadata.image().topic(topic) {
        None => Err(format!("No such topic as {topic}")),
        Some(t) if t.partition(partition).is_none() => Err(format!("No such partition as {topic}-{partition}")),
        Some(_) => Ok(()),
    }
}

/// ElectLeaders: preferred (0) and unclean (1) elections both find the leader already where it
/// should be: `ELECTION_NOT_NEEDED` for each partition named, `UNKNOWN_TOPIC_OR_PARTITION` for
/// one that does not exist. A null list means every partition; Kafka then leaves out the
/// partitions that needed no election, so each topic comes back with no partitions. Any
/// other election type fails the request with `INVALID_REQUEST` (Kafka's `getErrorResponse`).
/// Version 0 has no election type: it is preferred.
pub fn elect_leaders(broker: &Broker, _version: i16, req: ElectLeadersRequest) -> ElectLeadersResponse {
    if !matches!(req.election_type, 0 | 1) {
        let message = format!("Unknown election type {}", req.election_type);
        return ElectLeadersResponse {
            error_code: ErrorCode::InvalidRequest as i16,
            replica_election_results: req
                .topic_partitions
                .unwrap_or_default()
                .into_iter()
                .map(|t| ReplicaElectionResult {
                    topic: t.topic,
                    partition_result: t
                        .partitions
                        .into_iter()
                        .map(|p| PartitionResult {
                            partition_id: p,
                            error_code: ErrorCode::InvalidRequest as i16,
                            error_message: Some(message.clone()),
                        })
                        .collect(),
                })
                .collect(),
            ..Default::default()
        };
    }
    let results = match req.topic_partitions {
        None => broker
            .topics
            .list()
            .iter()
            .map(|t| ReplicaElectionResult {
                topic: t.name.clone(),
                partition_result: vec![],
            })
            .collect(),
        Some(topics) => topics
            .into_iter()
            .map(|t| {
                let partition_result = t
                    .partitions
                    .iter()
                    .map(|&p| {
                        let (code, message) = match partition_exists(broker, &t.topic, p) {
                            Ok(()) => (ErrorCode::ElectionNotNeeded, ELECTION_NOT_NEEDED.to_string()),
                            Err(message) => (ErrorCode::UnknownTopicOrPartition, message),
                        };
                        PartitionResult {
                            partition_id: p,
                            error_code: code as i16,
                            error_message: Some(message),
                        }
                    })
                    .collect();
                ReplicaElectionResult {
                    topic: t.topic,
                    partition_result,
                }
            })
            .collect(),
    };
    ElectLeadersResponse {
        error_code: 0,
        replica_election_results: results,
        ..Default::default()
    }
}

/// ListPartitionReassignments: nothing is ever in progress, so the list is empty, for all
/// topics (null) or for those named (unknown ones are skipped, as Kafka skips them). Kafka sets
/// the error message to null.
pub fn list_reassignments(
    _broker: &Broker,
    _version: i16,
    _req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    ListPartitionReassignmentsResponse {
        error_code: 0,
        error_message: None,
        topics: vec![],
        ..Default::default()
    }
}

/// AlterPartitionReassignments, per partition in Kafka's order of checks: a missing topic or
/// partition `UNKNOWN_TOPIC_OR_PARTITION`; a cancellation (null replicas) when nothing is in
/// progress `NO_REASSIGNMENT_IN_PROGRESS`; an empty target, a broker that is not registered
/// or one named twice `INVALID_REPLICA_ASSIGNMENT`; what is left must be the partition's
/// current replicas: success with a null message (nothing to move). A move is refused until
/// reassignment exists (issue 22).
pub fn alter_reassignments(
    broker: &Broker,
    _version: i16,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let image = broker.metadata.image();
    let registered: Vec<i32> = image.brokers.keys().copied().collect();
    let responses = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = image.topic(&t.name);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let outcome = match &topic {
                        None => Err((
                            ErrorCode::UnknownTopicOrPartition,
                            format!("Unable to find a topic named {}.", t.name),
                        )),
                        Some(topic) if topic.partition(p.partition_index).is_none() => Err((
                            ErrorCode::UnknownTopicOrPartition,
                            format!("Unable to find partition {}:{}.", t.name, p.partition_index),
                        )),
                        Some(topic) => match &p.replicas {
                            None => Err((
                                ErrorCode::NoReassignmentInProgress,
                                "No partition reassignment is in progress.".to_string(),
                            )),
                            Some(replicas) => check_target(
                                replicas,
                                &registered,
                                topic.partition(p.partition_index).map_or(&[][..], |r| &r.replicas),
                            ),
                        },
                    };
                    let (code, message) = match outcome {
                        Ok(()) => (0, None),
                        Err((code, message)) => (code as i16, Some(message)),
                    };
                    ReassignablePartitionResponse {
                        partition_index: p.partition_index,
                        error_code: code,
                        error_message: message,
                    }
                })
                .collect();
            ReassignableTopicResponse {
                name: t.name,
                partitions,
            }
        })
        .collect();
    AlterPartitionReassignmentsResponse {
        error_code: 0,
        error_message: None,
        responses,
        ..Default::default()
    }
}

/// Kafka's `validateManualPartitionAssignment`, brokers checked in ascending order.
/// A reassignment's target: registered brokers, each once. Only the partition's current
/// replicas are accepted (nothing to move): moving replicas is the work of issue 22, and a
/// success for a move that never happens would be a lie.
fn check_target(replicas: &[i32], registered: &[i32], current: &[i32]) -> Result<(), (ErrorCode, String)> {
    let invalid = |m: String| Err((ErrorCode::InvalidReplicaAssignment, m));
    if replicas.is_empty() {
        return invalid("The manual partition assignment includes an empty replica list.".into());
    }
    for (i, b) in replicas.iter().enumerate() {
        if !registered.contains(b) {
            return invalid(format!(
                "The manual partition assignment includes broker {b}, but no such broker is registered."
            ));
        }
        if replicas[..i].contains(b) {
            return invalid(format!(
                "The manual partition assignment includes the broker {b} more than once."
            ));
        }
    }
    if replicas != current {
        return invalid(format!(
            "moving replicas ({current:?} to {replicas:?}) is not supported yet: Sluice keeps each partition where it was placed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_current_replicas_once_are_a_valid_target() {
        assert_eq!(check_target(&[1], &[1], &[1]), Ok(()));
        assert_eq!(
            check_target(&[], &[1], &[1]).unwrap_err().0,
            ErrorCode::InvalidReplicaAssignment
        );
        assert!(check_target(&[1, 2], &[1], &[1])
            .unwrap_err()
            .1
            .contains("broker 2, but no such broker"));
        assert!(check_target(&[1, 1], &[1], &[1])
            .unwrap_err()
            .1
            .contains("more than once"));
        assert!(check_target(&[2], &[1, 2], &[1])
            .unwrap_err()
            .1
            .contains("not supported yet"));
    }
}
