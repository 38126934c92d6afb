//! Whole brokers in one process, driven through the bytes-in/bytes-out entry point
//! (`handlers::handle_frame`) on a simulated file system (`SimFs`) with a simulated clock and
//! seeded randomness: no sockets, no real disk, no wall clock. The base the cluster
//! simulation builds on.

use broker::clock::{Clock, SimClock};
use broker::config::Source;
use broker::handlers::{self, Outcome};
use broker::random::Random;
use broker::{Broker, ConfigLayers};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use storage::sim::{CrashMode, SimFs};
use wire::messages::*;
use wire::records::RecordBatch;
use wire::{Encode, ErrorCode};

const WALL: i64 = 1_800_000_000_000;

struct Node {
    sim: Arc<SimFs>,
    clock: Arc<SimClock>,
    seed: u64,
}

impl Node {
    fn new(seed: u64) -> Node {
        Node {
            sim: Arc::new(SimFs::new()),
            clock: Arc::new(SimClock::new(WALL)),
            seed,
        }
    }

    fn open(&self) -> Arc<Broker> {
        let mut layers = ConfigLayers::new();
        for (k, v) in [
            ("log.dirs", "/data"),
            ("listeners", "127.0.0.1:9092"),
            ("admin.listeners", ""),
            ("offsets.topic.num.partitions", "2"),
            ("auto.create.topics.enable", "false"),
        ] {
            layers.set(k, v.to_string(), Source::Flag).unwrap();
        }
        let clock: Arc<dyn Clock> = self.clock.clone();
        let fs: Arc<dyn storage::Fs> = self.sim.clone();
        Arc::new(Broker::open(layers.build().unwrap(), fs, clock, Random::seeded(self.seed)).unwrap())
    }
}

/// The response frame (without its size prefix) to one request.
async fn raw<B: Encode>(broker: &Arc<Broker>, api: ApiKey, version: i16, body: &B) -> Bytes {
    let header = RequestHeader {
        request_api_key: api as i16,
        request_api_version: version,
        correlation_id: 7,
        client_id: Some("in-process".into()),
        ..Default::default()
    };
    let mut out = BytesMut::new();
    wire::frame::encode_request(&mut out, &header, body).unwrap();
    let chunks = match handlers::handle_frame(broker, "127.0.0.1:1".parse().unwrap(), out.freeze().slice(4..)).await {
        Outcome::Respond(c) | Outcome::RespondHeld(c, _) => c,
        other => panic!("{api:?} v{version}: {other:?}"),
    };
    let mut all = BytesMut::new();
    for c in chunks {
        all.extend_from_slice(&c);
    }
    all.freeze().slice(4..)
}

async fn call<B: Encode>(broker: &Arc<Broker>, api: ApiKey, version: i16, body: &B) -> ResponseBody {
    let mut frame = raw(broker, api, version, body).await;
    wire::frame::decode_response_header(&mut frame, api, version).unwrap();
    ResponseBody::decode(api, &mut frame, version).unwrap()
}

async fn create(b: &Arc<Broker>, name: &str, partitions: i32) -> CreateTopicsResponse {
    let req = CreateTopicsRequest {
        topics: vec![create_topics_request::CreatableTopic {
            name: name.into(),
            num_partitions: partitions,
            replication_factor: 1,
            ..Default::default()
        }],
        timeout_ms: 10_000,
        ..Default::default()
    };
    match call(b, ApiKey::CreateTopics, 7, &req).await {
        ResponseBody::CreateTopics(r) => r,
        other => panic!("{other:?}"),
    }
}

async fn delete(b: &Arc<Broker>, name: &str) {
    let req = DeleteTopicsRequest {
        topic_names: vec![name.into()],
        timeout_ms: 10_000,
        ..Default::default()
    };
    let ResponseBody::DeleteTopics(r) = call(b, ApiKey::DeleteTopics, 5, &req).await else {
        panic!()
    };
    assert_eq!(r.responses[0].error_code, 0, "{r:?}");
}

fn batch(values: &[&[u8]]) -> Bytes {
    let mut b = wire::records::BatchBuilder::new(wire::Compression::None);
    for v in values {
        b.push(WALL, None, Some(v), &[]);
    }
    b.build()
}

async fn produce(b: &Arc<Broker>, topic: &str, partition: i32, records: Bytes) -> (i16, i64) {
    let req = ProduceRequest {
        acks: -1,
        timeout_ms: 10_000,
        topic_data: vec![produce_request::TopicProduceData {
            name: topic.into(),
            partition_data: vec![produce_request::PartitionProduceData {
                index: partition,
                records: Some(records),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let ResponseBody::Produce(r) = call(b, ApiKey::Produce, 9, &req).await else {
        panic!()
    };
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn fetch_request(topic: &str, partition: i32, offset: i64, max_wait_ms: i32, max_bytes: i32) -> FetchRequest {
    FetchRequest {
        replica_id: -1,
        max_wait_ms,
        min_bytes: 1,
        max_bytes: 50 << 20,
        topics: vec![fetch_request::FetchTopic {
            topic: topic.into(),
            partitions: vec![fetch_request::FetchPartition {
                partition,
                fetch_offset: offset,
                partition_max_bytes: max_bytes,
                current_leader_epoch: -1,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// (error, high watermark, base offsets of the batches returned)
async fn fetch(b: &Arc<Broker>, req: &FetchRequest) -> (i16, i64, Vec<i64>) {
    let ResponseBody::Fetch(r) = call(b, ApiKey::Fetch, 12, req).await else {
        panic!()
    };
    let p = &r.responses[0].partitions[0];
    let batches = RecordBatch::iter_all(p.records.clone().unwrap_or_default())
        .map(|b| b.unwrap().base_offset())
        .collect();
    (p.error_code, p.high_watermark, batches)
}

async fn metadata(b: &Arc<Broker>) -> MetadataResponse {
    let req = MetadataRequest {
        topics: None,
        ..Default::default()
    };
    let ResponseBody::Metadata(r) = call(b, ApiKey::Metadata, 12, &req).await else {
        panic!()
    };
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_deleted_and_created_again_starts_empty_across_a_power_loss() {
    let node = Node::new(1);
    let b = node.open();
    let first = create(&b, "phoenix", 2).await.topics[0].topic_id;
    assert_eq!(produce(&b, "phoenix", 0, batch(&[b"a", b"b", b"c"])).await, (0, 0));
    assert_eq!(
        fetch(&b, &fetch_request("phoenix", 0, 0, 0, 1 << 20)).await,
        (0, 3, vec![0])
    );
    delete(&b, "phoenix").await;
    let second = create(&b, "phoenix", 1).await.topics[0].topic_id;
    assert_ne!(first, second);
    assert_eq!(
        fetch(&b, &fetch_request("phoenix", 0, 0, 0, 1 << 20)).await,
        (0, 0, vec![])
    );
    drop(b);
    storage::wait_for_deletions();
    // The power goes: only what was synced survives. The metadata log was synced at each
    // change, so the image is the one answered before.
    node.sim.crash(CrashMode::DropUnsynced);
    let b = node.open();
    let m = metadata(&b).await;
    let t = m.topics.iter().find(|t| t.name.as_deref() == Some("phoenix")).unwrap();
    assert_eq!((t.topic_id, t.partitions.len()), (second, 1));
    assert_eq!(
        fetch(&b, &fetch_request("phoenix", 0, 0, 0, 1 << 20)).await,
        (0, 0, vec![])
    );
    assert_eq!(m.brokers.len(), 1);
    assert_eq!((m.brokers[0].node_id, m.brokers[0].port), (1, 9092));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_is_validated_before_anything_is_appended() {
    let node = Node::new(2);
    let b = node.open();
    create(&b, "v", 1).await;
    let mut corrupt = batch(&[b"x"]).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert_eq!(
        produce(&b, "v", 0, corrupt.into()).await.0,
        ErrorCode::CorruptMessage as i16
    );
    let big = vec![7u8; 2 << 20];
    assert_eq!(
        produce(&b, "v", 0, batch(&[&big])).await.0,
        ErrorCode::MessageTooLarge as i16
    );
    assert_eq!(
        produce(&b, "nope", 0, batch(&[b"x"])).await.0,
        ErrorCode::UnknownTopicOrPartition as i16
    );
    assert_eq!(
        produce(&b, "v", 5, batch(&[b"x"])).await.0,
        ErrorCode::UnknownTopicOrPartition as i16
    );
    assert_eq!(
        fetch(&b, &fetch_request("v", 0, 0, 0, 1 << 20)).await,
        (0, 0, vec![]),
        "nothing appended"
    );
    assert_eq!(produce(&b, "v", 0, batch(&[b"ok"])).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_limits_give_whole_batches_and_the_first_one_always() {
    let node = Node::new(3);
    let b = node.open();
    create(&b, "f", 1).await;
    let value = vec![1u8; 1000];
    for _ in 0..5 {
        produce(&b, "f", 0, batch(&[&value])).await;
    }
    // A limit below one batch still returns the first batch whole; a larger one whole
    // batches up to it.
    assert_eq!(fetch(&b, &fetch_request("f", 0, 0, 0, 10)).await, (0, 5, vec![0]));
    assert_eq!(fetch(&b, &fetch_request("f", 0, 0, 0, 2500)).await, (0, 5, vec![0, 1]));
    assert_eq!(
        fetch(&b, &fetch_request("f", 0, 3, 0, 1 << 20)).await,
        (0, 5, vec![3, 4])
    );
    assert_eq!(
        fetch(&b, &fetch_request("f", 0, 6, 0, 1 << 20)).await.0,
        ErrorCode::OffsetOutOfRange as i16
    );
}

/// Long polls on paused tokio time: a fetch with nothing to return waits exactly its
/// `max_wait_ms`, and one that data arrives for returns at once.
#[tokio::test(start_paused = true)]
async fn a_long_poll_waits_its_max_wait_and_wakes_when_data_arrives() {
    let node = Node::new(4);
    let b = node.open();
    create(&b, "lp", 2).await;
    let started = tokio::time::Instant::now();
    assert_eq!(
        fetch(&b, &fetch_request("lp", 0, 0, 5_000, 1 << 20)).await,
        (0, 0, vec![])
    );
    assert_eq!(started.elapsed(), Duration::from_millis(5_000));

    let waiting = {
        let b = b.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let got = fetch(&b, &fetch_request("lp", 0, 0, 60_000, 1 << 20)).await;
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Data on the other partition does not end the wait; data on its own does.
    produce(&b, "lp", 1, batch(&[b"elsewhere"])).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished());
    produce(&b, "lp", 0, batch(&[b"here"])).await;
    let (got, elapsed) = waiting.await.unwrap();
    assert_eq!(got, (0, 1, vec![0]));
    assert_eq!(elapsed, Duration::from_millis(200));
}

/// The same requests on a broker with the same seed give the same bytes, response for
/// response; another seed gives other ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_broker_replays_identically() {
    async fn run(seed: u64) -> Vec<Bytes> {
        let node = Node::new(seed);
        let b = node.open();
        let mut out = vec![];
        let create = CreateTopicsRequest {
            topics: vec![create_topics_request::CreatableTopic {
                name: "r".into(),
                num_partitions: 2,
                replication_factor: 1,
                ..Default::default()
            }],
            timeout_ms: 10_000,
            ..Default::default()
        };
        out.push(raw(&b, ApiKey::CreateTopics, 7, &create).await);
        for i in 0..3u8 {
            let req = ProduceRequest {
                acks: -1,
                timeout_ms: 10_000,
                topic_data: vec![produce_request::TopicProduceData {
                    name: "r".into(),
                    partition_data: vec![produce_request::PartitionProduceData {
                        index: i32::from(i % 2),
                        records: Some(batch(&[&[i]])),
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            };
            out.push(raw(&b, ApiKey::Produce, 9, &req).await);
            node.clock.advance(Duration::from_millis(10));
        }
        out.push(raw(&b, ApiKey::Fetch, 12, &fetch_request("r", 0, 0, 0, 1 << 20)).await);
        out.push(
            raw(
                &b,
                ApiKey::Metadata,
                12,
                &MetadataRequest {
                    topics: None,
                    ..Default::default()
                },
            )
            .await,
        );
        out.push(raw(&b, ApiKey::DescribeCluster, 1, &DescribeClusterRequest::default()).await);
        out
    }
    let a = run(7).await;
    assert_eq!(a, run(7).await);
    let other = run(8).await;
    assert_ne!(a[0], other[0], "topic ids come from the seed");
    assert_eq!(a[1], other[1], "the same produce answers the same");
}

async fn alter(b: &Arc<Broker>, kind: i8, name: &str, key: &str, value: Option<&str>) -> i16 {
    let op = if value.is_some() { 0 } else { 1 };
    let req = IncrementalAlterConfigsRequest {
        resources: vec![incremental_alter_configs_request::AlterConfigsResource {
            resource_type: kind,
            resource_name: name.into(),
            configs: vec![incremental_alter_configs_request::AlterableConfig {
                name: key.into(),
                config_operation: op,
                value: value.map(Into::into),
            }],
        }],
        validate_only: false,
    };
    let ResponseBody::IncrementalAlterConfigs(r) = call(b, ApiKey::IncrementalAlterConfigs, 1, &req).await else {
        panic!()
    };
    r.responses[0].error_code
}

/// (value, source) of `key` on a resource.
async fn config(b: &Arc<Broker>, kind: i8, name: &str, key: &str) -> (Option<String>, i8) {
    let req = DescribeConfigsRequest {
        resources: vec![describe_configs_request::DescribeConfigsResource {
            resource_type: kind,
            resource_name: name.into(),
            configuration_keys: Some(vec![key.into()]),
        }],
        ..Default::default()
    };
    let ResponseBody::DescribeConfigs(r) = call(b, ApiKey::DescribeConfigs, 4, &req).await else {
        panic!()
    };
    let c = &r.results[0].configs[0];
    (c.value.clone(), c.config_source)
}

/// Topic and broker configs are committed to the metadata log before they are answered: after
/// a power loss they are as they were, and the topic defaults from the broker layers apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_survive_a_power_loss_with_their_sources() {
    let node = Node::new(5);
    let b = node.open();
    create(&b, "c", 1).await;
    assert_eq!(alter(&b, 2, "c", "retention.ms", Some("60000")).await, 0);
    assert_eq!(
        alter(&b, 2, "c", "retention.ms", Some("-5")).await,
        ErrorCode::InvalidConfig as i16
    );
    assert_eq!(alter(&b, 4, "", "log.retention.bytes", Some("1000000")).await, 0);
    assert_eq!(alter(&b, 4, "1", "log.cleaner.threads", Some("2")).await, 0);
    assert_eq!(alter(&b, 2, "c", "segment.ms", Some("100000")).await, 0);
    assert_eq!(alter(&b, 2, "c", "segment.ms", None).await, 0);
    drop(b);
    node.sim.crash(CrashMode::DropUnsynced);
    let b = node.open();
    assert_eq!(config(&b, 2, "c", "retention.ms").await, (Some("60000".into()), 1));
    assert_eq!(
        config(&b, 2, "c", "segment.ms").await.1,
        5,
        "deleted: back to the default"
    );
    // The cluster-wide broker default is the topic's default for retention.bytes.
    assert_eq!(config(&b, 2, "c", "retention.bytes").await, (Some("1000000".into()), 3));
    assert_eq!(config(&b, 4, "1", "log.cleaner.threads").await, (Some("2".into()), 2));
}
