//! The group coordinator with real files: committed offsets and groups survive a reopen, a
//! deleted group stays deleted, compaction keeps every live offset, retention expires them.

use broker::clock::{Clock, SimClock, SystemClock};
use broker::group::coordinator::{Coordinator, GroupConfig, OffsetToCommit, Started};
use broker::group::state::{CommittedOffset, JoinRequest, JoinResult, SyncResult};
use broker::topics::{Topics, CONSUMER_OFFSETS};
use broker::ConfigLayers;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
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
    open_with(dir, config, Arc::new(SystemClock::new()))
}

fn open_with(dir: &Path, config: GroupConfig, clock: Arc<dyn Clock>) -> (Topics, Coordinator) {
    let defaults = ConfigLayers::new().build().unwrap().topic_defaults;
    let fs = storage::default_fs();
    let metadata = std::sync::Arc::new(
        broker::metadata_log::MetadataLog::open(dir, fs.clone(), u64::MAX)
            .unwrap()
            .log,
    );
    let topics = Topics::open(
        dir,
        defaults,
        false,
        fs,
        metadata,
        1,
        clock.clone(),
        Arc::new(broker::random::Random::seeded(1)),
    )
    .unwrap();
    let c = Coordinator::open(&topics, config, clock).unwrap();
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
        topics.create("t", 4, 1, None, BTreeMap::new()).unwrap();
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
        topics.create("t", 8, 1, None, BTreeMap::new()).unwrap();
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
        // Commits are stamped with the system clock's time (`commit`); the coordinator's
        // clock is set past that and the retention instead of sleeping.
        let clock = Arc::new(SimClock::new(0));
        let (topics, c) = open_with(&dir, config.clone(), clock.clone());
        topics.create("t", 1, 1, None, BTreeMap::new()).unwrap();
        commit(&topics, &c, "old", 0, 1);
        clock.set_wall_ms(broker::clock::now_ms() + 5);
        assert_eq!(c.expire_offsets(), 1);
        assert!(committed(&topics, &c, "old").is_empty());
        assert!(c.list().is_empty(), "a group left with nothing is forgotten");
    }
    let (topics, c) = open(&dir, config);
    assert!(committed(&topics, &c, "old").is_empty(), "the expiry was persisted");
}

/// A JoinGroup or SyncGroup answer: taken now if it came, else `None` (still waiting).
fn answered<T>(started: &mut Started<T>) -> Option<T>
where
    T: Clone,
{
    match started {
        Started::Now(r) => Some(r.clone()),
        Started::Later(rx) => rx.try_recv().ok(),
    }
}

fn join_req(member_id: &str, new_id: &str) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
        require_known_member_id: false,
        new_member_id: new_id.into(),
    }
}

/// Advances the clock a second at a time, running the due timers, until every pending answer
/// has come (at most a minute of simulated time).
fn run_until_answered<T: Clone>(clock: &SimClock, c: &Coordinator, pending: &mut [Started<T>]) -> Vec<T> {
    for _ in 0..60 {
        let got: Vec<Option<T>> = pending.iter_mut().map(answered).collect();
        if got.iter().all(Option::is_some) {
            return got.into_iter().map(Option::unwrap).collect();
        }
        clock.advance(Duration::from_secs(1));
        c.tick_due();
    }
    panic!("no answer within a minute of simulated time");
}

fn sync(
    c: &Coordinator,
    topics: &Topics,
    member: &str,
    generation: i32,
    assignments: Vec<(String, Bytes)>,
) -> Started<SyncResult> {
    c.sync_begin(
        topics,
        "g",
        member,
        None,
        generation,
        Some("consumer"),
        Some("range"),
        assignments,
    )
}

/// The session timeout is driven by the coordinator's clock alone: a member that stops
/// heartbeating is removed exactly when `session.timeout.ms` has passed on that clock, and the
/// group rebalances without it. No sleeps: simulated time only (the system clock is decades
/// away from this one, so a coordinator that read it would never see the session end).
#[test]
fn a_silent_member_is_removed_when_its_session_ends_on_the_clock() {
    let dir = tempdir();
    let clock = Arc::new(SimClock::new(1_000_000));
    let (topics, c) = open_with(&dir, small(), clock.clone());
    c.ready(&topics).unwrap();

    // Two members join a new group; the initial rebalance delay runs on the clock.
    let mut joins = vec![
        c.join_begin(&topics, "g", join_req("", "a-1")),
        c.join_begin(&topics, "g", join_req("", "b-1")),
    ];
    let joined: Vec<JoinResult> = run_until_answered(&clock, &c, &mut joins);
    assert!(joined.iter().all(|r| r.error == ErrorCode::None), "{joined:?}");
    let generation = joined[0].generation;
    assert_eq!(joined[1].generation, generation);
    let leader = joined[0].leader.clone();
    let (a, b) = (joined[0].member_id.clone(), joined[1].member_id.clone());
    let assignments = vec![
        (a.clone(), Bytes::from_static(b"pa")),
        (b.clone(), Bytes::from_static(b"pb")),
    ];
    let mut syncs = vec![
        sync(&c, &topics, &leader, generation, assignments),
        sync(&c, &topics, if leader == a { &b } else { &a }, generation, vec![]),
    ];
    let synced: Vec<SyncResult> = run_until_answered(&clock, &c, &mut syncs);
    assert!(synced.iter().all(|r| r.error == ErrorCode::None), "{synced:?}");
    assert_eq!(c.describe(&topics, "g").unwrap().unwrap().state, "Stable");

    // From now on only b heartbeats. Just short of a's session end, nothing changes.
    let heartbeat = |m: &str| c.heartbeat(&topics, "g", m, None, generation);
    let mut since_a = Duration::ZERO;
    while since_a + Duration::from_secs(3) < Duration::from_millis(10_000) {
        clock.advance(Duration::from_secs(3));
        since_a += Duration::from_secs(3);
        c.tick_due();
        assert_eq!(heartbeat(&b), ErrorCode::None);
    }
    clock.advance(Duration::from_millis(10_000) - since_a - Duration::from_millis(1));
    c.tick_due();
    let d = c.describe(&topics, "g").unwrap().unwrap();
    assert_eq!((d.state, d.members.len()), ("Stable", 2), "a's session has 1 ms left");

    // One more millisecond: a's session has ended. It is removed and the group rebalances.
    clock.advance(Duration::from_millis(1));
    c.tick_due();
    let d = c.describe(&topics, "g").unwrap().unwrap();
    assert_eq!(d.state, "PreparingRebalance");
    let members: Vec<&str> = d.members.iter().map(|m| m.member_id.as_str()).collect();
    assert_eq!(members, vec![b.as_str()], "a was removed");
    assert_eq!(heartbeat(&b), ErrorCode::RebalanceInProgress);
    assert_eq!(heartbeat(&a), ErrorCode::UnknownMemberId);

    // b rejoins: a new generation with b alone, as leader.
    let mut rejoin = vec![c.join_begin(&topics, "g", join_req(&b, "unused"))];
    let r = run_until_answered(&clock, &c, &mut rejoin).remove(0);
    assert_eq!(r.error, ErrorCode::None);
    assert!(r.generation > generation, "the generation grew");
    assert_eq!(r.leader, b);
    assert_eq!(r.members.len(), 1);
}
