//! Metadata: the brokers of the cluster, its id and controller, and topic layouts.
//!
//! Topics do not exist yet (the log and topic management come with issues 3 and 4): every
//! named topic is answered with `UNKNOWN_TOPIC_OR_PARTITION`, and "all topics" is empty.

use crate::Broker;
use wire::messages::metadata_response::{MetadataResponseBroker, MetadataResponseTopic};
use wire::messages::{MetadataRequest, MetadataResponse};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

pub fn handle(broker: &Broker, _version: i16, request: MetadataRequest) -> MetadataResponse {
    let c = &broker.config;
    let topics = request
        .topics
        .unwrap_or_default()
        .into_iter()
        .map(|t| MetadataResponseTopic {
            error_code: UNKNOWN_TOPIC_OR_PARTITION,
            name: t.name,
            topic_id: t.topic_id,
            ..Default::default()
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
