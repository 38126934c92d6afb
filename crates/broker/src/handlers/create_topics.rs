//! CreateTopics: validated as Kafka does (name, partitions, replication factor or a manual
//! replica assignment, configs, collisions), with `validate_only`.

use crate::Broker;
use std::collections::BTreeMap;
use wire::messages::create_topics_request::CreatableReplicaAssignment;
use wire::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use wire::messages::{CreateTopicsRequest, CreateTopicsResponse};
use wire::ErrorCode;

/// Checks a manual replica assignment as Kafka's controller does and returns the partition
/// count and replication factor it implies: partitions numbered 0, 1, … in order, each with the
/// same number of distinct, registered brokers, and no count or factor given beside it.
fn manual_assignment(
    assignments: &[CreatableReplicaAssignment],
    num_partitions: i32,
    replication_factor: i16,
    brokers: &[i32],
) -> Result<(i32, i16), (ErrorCode, String)> {
    if replication_factor != -1 {
        return Err((
            ErrorCode::InvalidReplicationFactor,
            "A manual partition assignment was specified, but replication factor was not set to -1.".into(),
        ));
    }
    if num_partitions != -1 {
        return Err((
            ErrorCode::InvalidPartitions,
            "A manual partition assignment was specified, but numPartitions was not set to -1.".into(),
        ));
    }
    let invalid = |m: String| Err((ErrorCode::InvalidReplicaAssignment, m));
    let mut factor = None;
    for (i, a) in assignments.iter().enumerate() {
        if i64::from(a.partition_index) != i as i64 {
            return invalid("Partitions should be a consecutive 0-based integer sequence.".into());
        }
        if a.broker_ids.is_empty() {
            return invalid("The manual partition assignment includes an empty replica list.".into());
        }
        for (j, id) in a.broker_ids.iter().enumerate() {
            if a.broker_ids[..j].contains(id) {
                return invalid(format!(
                    "The manual partition assignment includes the broker {id} more than once."
                ));
            }
            if !brokers.contains(id) {
                return invalid(format!(
                    "The manual partition assignment includes broker {id}, but no such broker is registered."
                ));
            }
        }
        let n = a.broker_ids.len();
        if let Some(f) = factor.filter(|f| *f != n) {
            return invalid(format!(
                "The manual partition assignment includes a partition with {n} replica(s), but this is not \
                 consistent with previous partitions, which have {f} replica(s)."
            ));
        }
        factor = Some(n);
    }
    let partitions = i32::try_from(assignments.len()).unwrap_or(i32::MAX);
    // Distinct brokers out of `brokers` (one today): the factor fits an i16.
    Ok((partitions, factor.unwrap_or(1) as i16))
}

/// The replication factor of a placement (every partition has as many replicas).
fn factor(assignments: &[Vec<i32>]) -> i16 {
    assignments.first().map_or(0, |r| r.len() as i16)
}

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
            // A manual assignment gives the partition count and replication factor itself.
            let (num_partitions, replication_factor) = if t.assignments.is_empty() {
                (t.num_partitions, t.replication_factor)
            } else {
                match manual_assignment(
                    &t.assignments,
                    t.num_partitions,
                    t.replication_factor,
                    &broker.metadata.image().brokers.keys().copied().collect::<Vec<_>>(),
                ) {
                    Ok(shape) => shape,
                    Err((code, message)) => return fail(code, message),
                }
            };
            let manual: Option<Vec<Vec<i32>>> =
                (!t.assignments.is_empty()).then(|| t.assignments.iter().map(|a| a.broker_ids.clone()).collect());
            let mut overrides = BTreeMap::new();
            for c in t.configs {
                match c.value {
                    Some(v) => {
                        overrides.insert(c.name, v);
                    }
                    None => return fail(ErrorCode::InvalidConfig, format!("config {} has a null value", c.name)),
                }
            }
            let wanted = if num_partitions == -1 {
                defaults.num_partitions
            } else {
                num_partitions
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
                    .check_create(
                        &t.name,
                        num_partitions,
                        replication_factor,
                        manual.as_deref(),
                        &overrides,
                    )
                    .map(|(p, assignments)| (wire::Uuid::ZERO, p, factor(&assignments)))
            } else {
                broker
                    .topics
                    .create(
                        &t.name,
                        num_partitions,
                        replication_factor,
                        manual.as_deref(),
                        overrides,
                    )
                    .map(|(id, assignments)| (id, assignments.len() as i32, factor(&assignments)))
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
