//! CreatePartitions: grows topics (never shrinks them), with `validate_only`.

use crate::topics::ApiError;
use crate::Broker;
use wire::messages::create_partitions_response::CreatePartitionsTopicResult;
use wire::messages::{CreatePartitionsRequest, CreatePartitionsResponse, ErrorCode};

pub fn handle(broker: &Broker, _version: i16, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let node = broker.config.node_id;
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let current = broker
                .topics
                .get(&t.name)
                .map_or(0, |topic| topic.partitions.len() as i32);
            // Manual assignments must place each new partition on this, the only, broker.
            let assignment_ok = t
                .assignments
                .as_ref()
                .is_none_or(|a| a.len() as i32 == t.count - current && a.iter().all(|x| x.broker_ids == [node]));
            let result = if assignment_ok {
                broker.topics.add_partitions(&t.name, t.count, req.validate_only)
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
