//! The group coordinator with real files: committed offsets and groups survive a reopen, a
//! deleted group stays deleted, compaction keeps every live offset, retention expires them.

use broker::group::coordinator::{Coordinator, GroupConfig, OffsetToCommit};
use broker::group::state::CommittedOffset;
use broker::topics::{Topics, CONSUMER_OFFSETS};
use broker::ConfigLayers;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use wire::messages::ErrorCode;

fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "sluice-groups-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn open(dir: &Path, config: GroupConfig) -> (Topics, Coordinator) {
    let defaults = ConfigLayers::new().build().unwrap().topic_defaults;
    let fs = storage::default_fs();
    let metadata = std::sync::Arc::new(broker::metadata_log::MetadataLog::open(dir, fs.clone(), u64::MAX).unwrap().log);
    let topics = Topics::open(dir, defaults, false, fs, metadata, 1).unwrap();
    let c = Coordinator::open(&topics, config).unwrap();
    (topics, c)
}

fn small() -> GroupConfig {
    GroupConfig {
        offsets_partitions: 3,
        ..GroupConfig::default()
    }
}

fn commit(topics: &Topics, c: &Coordinator, group: &str, partition: i32, offset: i64) -> Vec<ErrorCode> {
    c.commit(
        topics,
        group,
        "",
        None,
        -1,
        vec![OffsetToCommit {
            topic: "t".into(),
            partition,
            offset: CommittedOffset {
                offset,
                leader_epoch: 0,
                metadata: Some(format!("m{offset}")),
                commit_timestamp: broker::group::coordinator::now_ms(),
            },
        }],
    )
}

fn committed(topics: &Topics, c: &Coordinator, group: &str) -> BTreeMap<i32, i64> {
    c.fetch_offsets(topics, group, None)
        .unwrap()
        .into_iter()
        .flat_map(|(_, parts)| parts.into_iter().map(|(p, o)| (p, o.unwrap().offset)))
        .collect()
}

#[test]
fn offsets_and_deletions_survive_a_reopen() {
    let dir = tempdir();
    {
        let (topics, c) = open(&dir, small());
        topics.create("t", 4, 1, BTreeMap::new()).unwrap();
        assert_eq!(commit(&topics, &c, "a", 0, 10), vec![ErrorCode::None]);
        assert_eq!(commit(&topics, &c, "a", 1, 20), vec![ErrorCode::None]);
        assert_eq!(commit(&topics, &c, "a", 1, 21), vec![ErrorCode::None]);
        assert_eq!(commit(&topics, &c, "b", 0, 5), vec![ErrorCode::None]);
        assert_eq!(
            commit(&topics, &c, "a", 9, 1),
            vec![ErrorCode::UnknownTopicOrPartition],
            "no such partition"
        );
        assert_eq!(c.delete_group(&topics, "b"), ErrorCode::None);
        assert_eq!(c.delete_group(&topics, "b"), ErrorCode::GroupIdNotFound);
    }
    let (topics, c) = open(&dir, small());
    assert_eq!(committed(&topics, &c, "a"), BTreeMap::from([(0, 10), (1, 21)]));
    assert!(committed(&topics, &c, "b").is_empty());
    let groups: Vec<String> = c.list().into_iter().map(|(g, _, _)| g).collect();
    assert_eq!(groups, vec!["a".to_string()]);
    // The partition count is fixed once the topic exists.
    assert_eq!(topics.get(CONSUMER_OFFSETS).unwrap().partitions.len(), 3);
}

#[test]
fn compaction_keeps_the_latest_offsets_and_bounds_what_is_replayed() {
    let dir = tempdir();
    let config = GroupConfig {
        offsets_partitions: 1,
        compact_after_bytes: 64 << 10,
        ..GroupConfig::default()
    };
    {
        let (topics, c) = open(&dir, config.clone());
        topics.create("t", 8, 1, BTreeMap::new()).unwrap();
        for i in 0..5000 {
            assert_eq!(
                commit(&topics, &c, &format!("g{}", i % 7), i % 8, i as i64),
                vec![ErrorCode::None]
            );
        }
        let p = topics.get(CONSUMER_OFFSETS).unwrap().partitions[0].clone();
        let start = p.lock().log.log_start_offset();
        assert!(start > 4000, "the log start moved past the compacted records: {start}");
    }
    let (topics, c) = open(&dir, config);
    // The last commit of each (group, partition) pair wins.
    let mut expected: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
    for i in 0..5000 {
        expected
            .entry(format!("g{}", i % 7))
            .or_default()
            .insert(i % 8, i as i64);
    }
    for (g, offsets) in expected {
        assert_eq!(committed(&topics, &c, &g), offsets, "group {g}");
    }
}

#[test]
fn retention_expires_offsets_of_groups_without_members() {
    let dir = tempdir();
    let config = GroupConfig {
        offsets_retention_ms: 1,
        ..small()
    };
    {
        let (topics, c) = open(&dir, config.clone());
        topics.create("t", 1, 1, BTreeMap::new()).unwrap();
        commit(&topics, &c, "old", 0, 1);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(c.expire_offsets(), 1);
        assert!(committed(&topics, &c, "old").is_empty());
        assert!(c.list().is_empty(), "a group left with nothing is forgotten");
    }
    let (topics, c) = open(&dir, config);
    assert!(committed(&topics, &c, "old").is_empty(), "the expiry was persisted");
}
