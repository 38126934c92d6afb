//! CreatePartitions: grows topics (never shrinks them), with `validate_only`.

use crate::topics::ApiError;
use crate::Broker;
use wire::messages::create_partitions_response::CreatePartitionsTopicResult;
use wire::messages::{CreatePartitionsRequest, CreatePartitionsResponse, ErrorCode};

/// Runs on the low-priority topic-change thread (`Broker::topic_changes`): creating
/// partitions is file work.
pub fn handle(broker: &Broker, _version: i16, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let per_request = broker.topics.defaults().partitions_per_request_max;
    // `max.partitions.per.request` covers the whole request, not each topic alone.
    let mut budget = per_request as i64;
    let image = broker.metadata.image();
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let current = image.topic(&t.name).map_or(0, |topic| topic.partition_count() as i32);
            let adding = i64::from(t.count) - i64::from(current);
            // Manual assignments name registered brokers, each at most once per partition.
            let manual: Option<Vec<Vec<i32>>> =
                t.assignments.as_ref().map(|a| a.iter().map(|x| x.broker_ids.clone()).collect());
            let unknown = manual.iter().flatten().find_map(|replicas| {
                replicas.iter().enumerate().find_map(|(i, id)| {
                    if !image.brokers.contains_key(id) {
                        Some(format!("broker {id} is not registered"))
                    } else if replicas[..i].contains(id) {
                        Some(format!("broker {id} appears more than once in one partition's assignment"))
                    } else {
                        None
                    }
                })
            });
            // An unknown topic, or a count that would shrink it, is answered as such by
            // `add_partitions`; only a real growth spends the budget.
            let result = if current > 0 && adding > budget {
                Err(ApiError::new(
                    ErrorCode::InvalidPartitions,
                    format!("the topics of this request add more than {per_request} partitions (max.partitions.per.request)"),
                ))
            } else if let Some(why) = unknown {
                Err(ApiError::new(ErrorCode::InvalidReplicaAssignment, why))
            } else {
                broker
                    .topics
                    .add_partitions(&t.name, t.count, manual.as_deref(), req.validate_only)
                    .inspect(|()| budget -= adding)
            };
            let (error_code, error_message) = match result {
                Ok(()) => (0, None),
                Err(e) => (e.code as i16, Some(e.message)),
            };
            CreatePartitionsTopicResult {
                name: t.name,
                error_code,
                error_message,
                ..Default::default()
            }
        })
        .collect();
    CreatePartitionsResponse {
        results,
        ..Default::default()
    }
}
