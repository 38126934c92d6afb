//! Metadata: the brokers of the cluster, its id and controller, and topic layouts.
//!
//! Topics do not exist yet (the log and topic management come with issues 3 and 4): every
//! named topic is answered with `UNKNOWN_TOPIC_OR_PARTITION` (or `UNKNOWN_TOPIC_ID` when asked
//! for by id), and "all topics" is empty.

use crate::Broker;
use wire::messages::metadata_response::{MetadataResponseBroker, MetadataResponseTopic};
use wire::messages::{MetadataRequest, MetadataResponse};

use wire::ErrorCode;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = ErrorCode::UnknownTopicOrPartition as i16;
const INVALID_REQUEST: i16 = ErrorCode::InvalidRequest as i16;
const UNKNOWN_TOPIC_ID: i16 = ErrorCode::UnknownTopicId as i16;

pub fn handle(broker: &Broker, version: i16, request: MetadataRequest) -> MetadataResponse {
    let c = &broker.config;
    // Null means all topics; so does an empty list in version 0.
    let requested = match request.topics {
        Some(t) if !(version == 0 && t.is_empty()) => t,
        _ => vec![],
    };
    let topics = requested
        .into_iter()
        .map(|t| {
            let (name, error_code) = match t.name {
                Some(name) => (Some(name), UNKNOWN_TOPIC_OR_PARTITION),
                // By id: only version 12+ may leave the name out of the response.
                None if version >= 12 => (None, UNKNOWN_TOPIC_ID),
                None => (Some(String::new()), INVALID_REQUEST),
            };
            MetadataResponseTopic {
                error_code,
                name,
                topic_id: t.topic_id,
                ..Default::default()
            }
        })
        .collect();
    MetadataResponse {
        brokers: vec![MetadataResponseBroker {
            node_id: c.node_id,
            host: c.listener.advertised_host.clone(),
            port: i32::from(c.listener.advertised_port),
            rack: None,
        }],
        cluster_id: Some(broker.cluster_id.clone()),
        // A single node is its own controller; clients send admin requests here.
        controller_id: c.node_id,
        topics,
        ..Default::default()
    }
}
