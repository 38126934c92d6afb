//! DeleteTopics: by name (all versions) or by topic id (v6+).

use crate::Broker;
use wire::messages::delete_topics_response::DeletableTopicResult;
use wire::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use wire::ErrorCode;

pub fn handle(broker: &Broker, version: i16, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    // Before v6 the names come as a plain list; from v6 as (name or id) pairs.
    let wanted: Vec<(Option<String>, wire::Uuid)> = if version >= 6 {
        request.topics.into_iter().map(|t| (t.name, t.topic_id)).collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|n| (Some(n), wire::Uuid::ZERO))
            .collect()
    };
    let responses = wanted
        .into_iter()
        .map(|(name, id)| {
            let image = broker.metadata.image();
            let name = match name {
                Some(n) => Ok(n),
                None => image
                    .topic_by_id(&id)
                    .map(|t| t.name.clone())
                    .ok_or(ErrorCode::UnknownTopicId),
            };
            let topic_id = |n: &str| image.topic(n).map_or(id, |t| t.id);
            match name.map(|n| (broker.topics.delete(&n), n)) {
                Ok((Ok(()), n)) => DeletableTopicResult {
                    topic_id: topic_id(&n),
                    name: Some(n),
                    ..Default::default()
                },
                Ok((Err(e), n)) => DeletableTopicResult {
                    name: Some(n),
                    topic_id: id,
                    error_code: e.code as i16,
                    error_message: Some(e.message),
                },
                Err(code) => DeletableTopicResult {
                    name: None,
                    topic_id: id,
                    error_code: code as i16,
                    error_message: Some(format!("no topic has id {id}")),
                },
            }
        })
        .collect();
    DeleteTopicsResponse {
        responses,
        ..Default::default()
    }
}
