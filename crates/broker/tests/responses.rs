//! Responses as Kafka shapes them, through the bytes-in/bytes-out entry point
//! (`handlers::handle_frame`) of a real broker on a temporary data directory.
//!
//! Kafka sends a null `error_message` wherever there is no error; some clients check for null
//! (`errorMessage === null`), so an empty string is a difference they see. Every API that has
//! an `ErrorMessage` field in its response is driven here to success at every version it is
//! served in, and its response must carry no empty message.

use broker::config::Source;
use broker::handlers::{self, Outcome, SUPPORTED};
use broker::{Broker, ConfigLayers, Server};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use wire::messages::*;
use wire::Encode;

async fn broker() -> (Server, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("sluice-responses-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut layers = ConfigLayers::new();
    for (k, v) in [
        ("log.dirs", dir.to_str().unwrap()),
        ("listeners", "127.0.0.1:0"),
        ("admin.listeners", ""),
        ("offsets.topic.num.partitions", "2"),
    ] {
        layers.set(k, v.to_string(), Source::Flag).unwrap();
    }
    (Server::bind(layers.build().unwrap()).await.unwrap(), dir)
}

async fn call<B: Encode>(broker: &Arc<Broker>, api: ApiKey, version: i16, body: &B) -> ResponseBody {
    let header = RequestHeader {
        request_api_key: api as i16,
        request_api_version: version,
        correlation_id: 7,
        client_id: Some("responses-test".into()),
        ..Default::default()
    };
    let mut out = BytesMut::new();
    wire::frame::encode_request(&mut out, &header, body).unwrap();
    let frame = out.freeze().slice(4..);
    let chunks = match handlers::handle_frame(broker, "127.0.0.1:1".parse().unwrap(), frame).await {
        Outcome::Respond(c) => c,
        Outcome::RespondHeld(c, _) => c,
        other => panic!("{api:?} v{version}: {other:?}"),
    };
    let mut all = BytesMut::new();
    for c in chunks {
        all.extend_from_slice(&c);
    }
    let mut frame: Bytes = all.freeze().slice(4..);
    wire::frame::decode_response_header(&mut frame, api, version).unwrap();
    ResponseBody::decode(api, &mut frame, version).unwrap()
}

fn versions(api: ApiKey) -> std::ops::RangeInclusive<i16> {
    let (_, lo, hi) = SUPPORTED.iter().find(|(k, ..)| *k == api).copied().unwrap();
    lo..=hi
}

fn assert_no_empty_message(api: ApiKey, version: i16, response: &ResponseBody) {
    let text = format!("{response:?}");
    assert!(
        !text.contains("error_message: Some(\"\")"),
        "{api:?} v{version} says an empty error message: {text}"
    );
    assert!(
        text.contains("error_code: 0"),
        "{api:?} v{version} did not succeed: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_responses_carry_a_null_error_message() {
    let (server, dir) = broker().await;
    let b = server.broker().clone();
    let node = b.config.node_id;
    let mut n = 0;
    let mut topic = || {
        n += 1;
        format!("t{n}")
    };

    for v in versions(ApiKey::CreateTopics) {
        let name = topic();
        let req = CreateTopicsRequest {
            topics: vec![create_topics_request::CreatableTopic {
                name: name.clone(),
                num_partitions: 1,
                replication_factor: 1,
                ..Default::default()
            }],
            timeout_ms: 10_000,
            ..Default::default()
        };
        let r = call(&b, ApiKey::CreateTopics, v, &req).await;
        assert_no_empty_message(ApiKey::CreateTopics, v, &r);

        let req = CreatePartitionsRequest {
            topics: vec![create_partitions_request::CreatePartitionsTopic {
                name: name.clone(),
                count: 2,
                assignments: None,
            }],
            timeout_ms: 10_000,
            ..Default::default()
        };
        for pv in versions(ApiKey::CreatePartitions).take(1) {
            let r = call(&b, ApiKey::CreatePartitions, pv, &req).await;
            assert_no_empty_message(ApiKey::CreatePartitions, pv, &r);
        }
    }

    for v in versions(ApiKey::Produce) {
        let mut batch = wire::records::BatchBuilder::new(wire::Compression::None);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        batch.push(now, None, Some(b"v"), &[]);
        let req = ProduceRequest {
            acks: 1,
            timeout_ms: 10_000,
            topic_data: vec![produce_request::TopicProduceData {
                name: "t1".into(),
                partition_data: vec![produce_request::PartitionProduceData {
                    index: 0,
                    records: Some(batch.build()),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let r = call(&b, ApiKey::Produce, v, &req).await;
        assert_no_empty_message(ApiKey::Produce, v, &r);
    }

    for v in versions(ApiKey::FindCoordinator) {
        let req = FindCoordinatorRequest {
            key: "g".into(),
            key_type: 0,
            coordinator_keys: vec!["g".into()],
        };
        let r = call(&b, ApiKey::FindCoordinator, v, &req).await;
        assert_no_empty_message(ApiKey::FindCoordinator, v, &r);
    }

    let topic_resource = |name: &str| describe_configs_request::DescribeConfigsResource {
        resource_type: 2,
        resource_name: name.into(),
        configuration_keys: None,
    };
    for v in versions(ApiKey::DescribeConfigs) {
        let req = DescribeConfigsRequest {
            resources: vec![
                topic_resource("t1"),
                describe_configs_request::DescribeConfigsResource {
                    resource_type: 4,
                    resource_name: node.to_string(),
                    configuration_keys: None,
                },
            ],
            ..Default::default()
        };
        let r = call(&b, ApiKey::DescribeConfigs, v, &req).await;
        assert_no_empty_message(ApiKey::DescribeConfigs, v, &r);
    }

    for v in versions(ApiKey::AlterConfigs) {
        let req = AlterConfigsRequest {
            resources: vec![alter_configs_request::AlterConfigsResource {
                resource_type: 2,
                resource_name: "t1".into(),
                configs: vec![alter_configs_request::AlterableConfig {
                    name: "retention.ms".into(),
                    value: Some("100000".into()),
                }],
            }],
            validate_only: false,
        };
        let r = call(&b, ApiKey::AlterConfigs, v, &req).await;
        assert_no_empty_message(ApiKey::AlterConfigs, v, &r);
    }

    for v in versions(ApiKey::IncrementalAlterConfigs) {
        let req = IncrementalAlterConfigsRequest {
            resources: vec![incremental_alter_configs_request::AlterConfigsResource {
                resource_type: 2,
                resource_name: "t1".into(),
                configs: vec![incremental_alter_configs_request::AlterableConfig {
                    name: "retention.ms".into(),
                    config_operation: 0,
                    value: Some("200000".into()),
                }],
            }],
            validate_only: false,
        };
        let r = call(&b, ApiKey::IncrementalAlterConfigs, v, &req).await;
        assert_no_empty_message(ApiKey::IncrementalAlterConfigs, v, &r);
    }

    for v in versions(ApiKey::DescribeCluster) {
        let r = call(&b, ApiKey::DescribeCluster, v, &DescribeClusterRequest::default()).await;
        assert_no_empty_message(ApiKey::DescribeCluster, v, &r);
    }

    for v in versions(ApiKey::DeleteTopics) {
        let name = topic();
        let create = CreateTopicsRequest {
            topics: vec![create_topics_request::CreatableTopic {
                name: name.clone(),
                num_partitions: 1,
                replication_factor: 1,
                ..Default::default()
            }],
            timeout_ms: 10_000,
            ..Default::default()
        };
        call(&b, ApiKey::CreateTopics, 7, &create).await;
        let req = DeleteTopicsRequest {
            topic_names: vec![name.clone()],
            topics: vec![delete_topics_request::DeleteTopicState {
                name: Some(name),
                ..Default::default()
            }],
            timeout_ms: 10_000,
        };
        let r = call(&b, ApiKey::DeleteTopics, v, &req).await;
        assert_no_empty_message(ApiKey::DeleteTopics, v, &r);
    }
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
