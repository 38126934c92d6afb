//! CreatePartitions: grows topics (never shrinks them), with `validate_only`.

use crate::topics::ApiError;
use crate::Broker;
use wire::messages::create_partitions_response::CreatePartitionsTopicResult;
use wire::messages::{CreatePartitionsRequest, CreatePartitionsResponse, ErrorCode};

/// Runs on the low-priority topic-change thread (`Broker::topic_changes`): creating
/// partitions is file work.
pub fn handle(broker: &Broker, _version: i16, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let node = broker.config.node_id;
    let per_request = broker.topics.defaults().partitions_per_request_max;
    // `max.partitions.per.request` covers the whole request, not each topic alone.
    let mut budget = per_request as i64;
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let current = broker
                .topics
                .get(&t.name)
                .map_or(0, |topic| topic.partitions.len() as i32);
            let adding = i64::from(t.count) - i64::from(current);
            // Manual assignments must place each new partition on this, the only, broker.
            let assignment_ok = t
                .assignments
                .as_ref()
                .is_none_or(|a| a.len() as i64 == adding && a.iter().all(|x| x.broker_ids == [node]));
            // An unknown topic, or a count that would shrink it, is answered as such by
            // `add_partitions`; only a real growth spends the budget.
            let result = if current > 0 && adding > budget {
                Err(ApiError::new(
                    ErrorCode::InvalidPartitions,
                    format!("the topics of this request add more than {per_request} partitions (max.partitions.per.request)"),
                ))
            } else if assignment_ok {
                broker
                    .topics
                    .add_partitions(&t.name, t.count, req.validate_only)
                    .inspect(|()| budget -= adding)
            } else {
                Err(ApiError::new(
                    ErrorCode::InvalidReplicaAssignment,
                    format!("each new partition must be assigned to broker {node} alone, one entry per new partition"),
                ))
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
