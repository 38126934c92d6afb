//! AlterPartition on the active controller: a leader's ISR changes checked as Kafka checks
//! them, committed, and answered with the registration as committed; the eligible leader
//! replicas follow `min.insync.replicas`. (The rules under every fault are
//! `replication`'s seeded simulation; this checks the controller's request handling.)

use broker::controller::{registration_record, Controller};
use broker::metadata_log::{MetadataLog, QuorumSettings};
use broker::quorum::net::{QuorumNode, VoterAddresses};
use metadata::{MetadataRecord, Uuid};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wire::kafka_records::metadata::{ConfigRecord, PartitionRecord, TopicRecord};
use wire::messages::alter_partition_request::{BrokerState, PartitionData, TopicData};
use wire::messages::{AlterPartitionRequest, AlterPartitionResponse};
use wire::ErrorCode;

const TOPIC: Uuid = Uuid([9; 16]);

fn request(
    broker_epoch: i64,
    topic: Uuid,
    leader_epoch: i32,
    partition_epoch: i32,
    isr: &[(i32, i64)],
) -> AlterPartitionRequest {
    AlterPartitionRequest {
        broker_id: 1,
        broker_epoch,
        topics: vec![TopicData {
            topic_id: topic,
            partitions: vec![PartitionData {
                partition_index: 0,
                leader_epoch,
                new_isr_with_epochs: isr
                    .iter()
                    .map(|&(broker_id, broker_epoch)| BrokerState {
                        broker_id,
                        broker_epoch,
                        ..Default::default()
                    })
                    .collect(),
                partition_epoch,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// (top-level error, partition error, ISR, partition epoch) of an answer.
fn outcome(r: &AlterPartitionResponse) -> (i16, i16, Vec<i32>, i32) {
    let p = r.topics.first().and_then(|t| t.partitions.first());
    (
        r.error_code,
        p.map_or(-99, |p| p.error_code),
        p.map(|p| p.isr.clone()).unwrap_or_default(),
        p.map_or(-99, |p| p.partition_epoch),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_checks_commits_and_answers_isr_changes() {
    let dir = std::env::temp_dir().join(format!("sluice-alter-partition-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fs: Arc<dyn storage::Fs> = Arc::new(storage::RealFs::new(64));
    let clock = Arc::new(broker::clock::SystemClock::new());
    let settings = QuorumSettings::new(1, vec![1], 7);
    let log = Arc::new(
        MetadataLog::open_quorum(&dir, fs, 1 << 20, settings, clock.clone())
            .expect("opens")
            .log,
    );
    let voters: VoterAddresses = [(1, "127.0.0.1:1".to_string())].into_iter().collect();
    let _quorum = QuorumNode::start(log.clone(), &voters, None, Some("alter-test".into()), None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while log.leader() != Some(1) {
        assert!(Instant::now() < deadline, "a single voter elects itself");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Three brokers (epochs 11, 12, 13), a topic on all three with the ISR [1, 2], and
    // min.insync.replicas 2 for it.
    let mut records: Vec<MetadataRecord> = (1..=3)
        .map(|b| registration_record(b, Uuid([b as u8; 16]), 10 + b as i64, vec![], None))
        .collect();
    records.push(MetadataRecord::TopicRecord(TopicRecord {
        name: "t".into(),
        topic_id: TOPIC,
    }));
    records.push(MetadataRecord::PartitionRecord(PartitionRecord {
        partition_id: 0,
        topic_id: TOPIC,
        replicas: vec![1, 2, 3],
        isr: vec![1, 2],
        leader: 1,
        leader_epoch: 4,
        partition_epoch: 0,
        ..Default::default()
    }));
    records.push(MetadataRecord::ConfigRecord(ConfigRecord {
        resource_type: metadata::resource_type::TOPIC,
        resource_name: "t".into(),
        name: "min.insync.replicas".into(),
        value: Some("2".into()),
    }));
    let l = log.clone();
    tokio::task::spawn_blocking(move || l.commit_now(records))
        .await
        .unwrap()
        .expect("commits");
    let controller = Arc::new(Controller::new(log.clone(), "alter-test".into(), clock, 9000));
    let ask = |r: AlterPartitionRequest| {
        let c = controller.clone();
        async move { tokio::task::spawn_blocking(move || c.alter_partition(r)).await.unwrap() }
    };

    // 3 joins, with the epoch it fetched with.
    let r = ask(request(11, TOPIC, 4, 0, &[(1, -1), (2, 12), (3, 13)])).await;
    assert_eq!(outcome(&r), (0, 0, vec![1, 2, 3], 1));
    // The same change again, from the partition epoch it replaced: refused.
    let r = ask(request(11, TOPIC, 4, 0, &[(1, -1), (2, 12), (3, 13)])).await;
    assert_eq!(outcome(&r).1, ErrorCode::InvalidUpdateVersion.code());
    // A stale leader epoch; a broker that registered again (the leader's own epoch, at the top).
    assert_eq!(
        outcome(&ask(request(11, TOPIC, 3, 1, &[(1, -1)])).await).1,
        ErrorCode::FencedLeaderEpoch.code()
    );
    assert_eq!(
        outcome(&ask(request(10, TOPIC, 4, 1, &[(1, -1)])).await).0,
        ErrorCode::StaleBrokerEpoch.code()
    );
    assert_eq!(
        outcome(&ask(request(11, Uuid([1; 16]), 4, 1, &[(1, -1)])).await).1,
        ErrorCode::UnknownTopicId.code()
    );
    // Shrinking to [1], below min.insync.replicas: 2 and 3 wait among the eligible leader replicas.
    let r = ask(request(11, TOPIC, 4, 1, &[(1, -1)])).await;
    assert_eq!(outcome(&r), (0, 0, vec![1], 2));
    let p = log.image().topic("t").unwrap().partition(0).unwrap().clone();
    assert_eq!((p.isr, p.elr), (vec![1], vec![2, 3]));
    // A member that restarted since the leader saw it fetch may not join (KIP-903).
    let r = ask(request(11, TOPIC, 4, 2, &[(1, -1), (2, 7)])).await;
    assert_eq!(outcome(&r).1, ErrorCode::IneligibleReplica.code());
    // Back at min.insync.replicas: no ELR.
    let r = ask(request(11, TOPIC, 4, 2, &[(1, -1), (2, 12)])).await;
    assert_eq!(outcome(&r), (0, 0, vec![1, 2], 3));
    assert!(log.image().topic("t").unwrap().partition(0).unwrap().elr.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
