//! CreateTopics: validated as Kafka does (name, partitions, replication factor, configs,
//! collisions), with `validate_only`.

use crate::Broker;
use std::collections::BTreeMap;
use wire::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use wire::messages::{CreateTopicsRequest, CreateTopicsResponse};
use wire::ErrorCode;

/// Runs on the low-priority topic-change thread (`Broker::topic_changes`): creating
/// partitions is file work.
pub fn handle(broker: &Broker, version: i16, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut seen = std::collections::HashSet::new();
    let defaults = broker.topics.defaults();
    // `max.partitions.per.request` covers the whole request, not each topic alone.
    let mut budget = defaults.partitions_per_request_max;
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let mut result = CreatableTopicResult {
                name: t.name.clone(),
                ..Default::default()
            };
            let mut fail = |code: ErrorCode, message: String| {
                result.error_code = code as i16;
                result.error_message = Some(message);
                result.num_partitions = -1;
                result.replication_factor = -1;
                result.clone()
            };
            if !seen.insert(t.name.clone()) {
                return fail(
                    ErrorCode::InvalidRequest,
                    format!("topic {} appears more than once", t.name),
                );
            }
            if !t.assignments.is_empty() {
                return fail(
                    ErrorCode::InvalidRequest,
                    "manual replica assignment is not supported yet".into(),
                );
            }
            let mut overrides = BTreeMap::new();
            for c in t.configs {
                match c.value {
                    Some(v) => {
                        overrides.insert(c.name, v);
                    }
                    None => return fail(ErrorCode::InvalidConfig, format!("config {} has a null value", c.name)),
                }
            }
            let wanted = if t.num_partitions == -1 {
                defaults.num_partitions
            } else {
                t.num_partitions
            };
            if wanted > 0 && wanted as usize > budget {
                return fail(
                    ErrorCode::InvalidPartitions,
                    format!(
                        "the topics of this request add more than {} partitions (max.partitions.per.request)",
                        defaults.partitions_per_request_max
                    ),
                );
            }
            let outcome = if request.validate_only {
                broker
                    .topics
                    .check_create(&t.name, t.num_partitions, t.replication_factor, &overrides)
                    .map(|(p, r)| (wire::Uuid::ZERO, p, r))
            } else {
                broker
                    .topics
                    .create(&t.name, t.num_partitions, t.replication_factor, overrides)
                    .map(|topic| (topic.id, topic.partitions.len() as i32, 1))
            };
            match outcome {
                Ok((id, partitions, replication)) => {
                    budget = budget.saturating_sub(partitions.max(0) as usize);
                    result.topic_id = id;
                    result.num_partitions = partitions;
                    result.replication_factor = replication;
                    if version >= 5 {
                        // As Kafka: the created topic's configs, with their sources (none for a
                        // validate-only request, which created nothing to describe).
                        let configs = crate::handlers::configs::describe_topic(broker, &t.name, None, false, false)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|c| CreatableTopicConfigs {
                                name: c.name,
                                value: c.value,
                                read_only: c.read_only,
                                config_source: c.config_source,
                                is_sensitive: c.is_sensitive,
                            })
                            .collect();
                        result.configs = Some(if request.validate_only { vec![] } else { configs });
                    }
                    result
                }
                Err(e) => fail(e.code, e.message),
            }
        })
        .collect();
    CreateTopicsResponse {
        topics,
        ..Default::default()
    }
}
