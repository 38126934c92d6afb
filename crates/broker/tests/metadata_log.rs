//! The metadata log: every change that returned is there after a crash at any fsync, snapshots
//! rebuild the same image, and a deletion cut short by a crash never lets old records back.

use broker::metadata_log::MetadataLog;
use broker::topics::Topics;
use broker::ConfigLayers;
use metadata::MetadataRecord;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use storage::sim::{CrashMode, SimFs};
use wire::kafka_records::metadata::{RemoveTopicRecord, TopicRecord};

fn topic(i: u32) -> MetadataRecord {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&(i + 1).to_be_bytes());
    MetadataRecord::TopicRecord(TopicRecord {
        name: format!("t{i}"),
        topic_id: metadata::Uuid(id),
    })
}

fn open(fs: &Arc<dyn storage::Fs>, snapshot_bytes: u64) -> MetadataLog {
    MetadataLog::open(Path::new("/data"), fs.clone(), snapshot_bytes)
        .unwrap()
        .log
}

#[test]
fn every_change_that_returned_survives_a_power_loss_at_any_fsync() {
    for seed in 0..40u64 {
        let sim = Arc::new(SimFs::new());
        let fs: Arc<dyn storage::Fs> = sim.clone();
        let log = open(&fs, 300);
        // The power goes off at the n-th fsync from here (snapshots included).
        sim.power_off_after_syncs(seed % 13);
        let mut acked = 0;
        for i in 0..10 {
            match log.commit(vec![topic(i)], 0) {
                Ok(_) => acked = i + 1,
                Err(_) => break,
            }
        }
        drop(log);
        sim.crash(if seed % 2 == 0 {
            CrashMode::DropUnsynced
        } else {
            CrashMode::Torn { seed }
        });
        let image = open(&fs, 300).image();
        let names: Vec<String> = image.topics().map(|t| t.name.clone()).collect();
        // Acknowledged changes are all there; the one in flight may be too (written, then
        // its fsync failed after reaching the disk); nothing else.
        for i in 0..acked {
            assert!(
                names.contains(&format!("t{i}")),
                "seed {seed}: acknowledged t{i} lost: {names:?}"
            );
        }
        for n in &names {
            let i: u32 = n[1..].parse().unwrap();
            assert!(i <= acked, "seed {seed}: {n} was never committed (acked {acked})");
        }
    }
}

#[test]
fn snapshots_replace_the_log_before_them_and_rebuild_the_same_image() {
    let sim = Arc::new(SimFs::new());
    let fs: Arc<dyn storage::Fs> = sim.clone();
    let log = open(&fs, 2_000);
    for i in 0..300 {
        log.commit(vec![topic(i)], 0).unwrap();
        if i % 3 == 0 {
            let id = log.image().topic(&format!("t{i}")).unwrap().id;
            log.commit(
                vec![MetadataRecord::RemoveTopicRecord(RemoveTopicRecord { topic_id: id })],
                0,
            )
            .unwrap();
        }
    }
    let before = log.image();
    let (start, end) = log.offsets();
    assert!(
        start > 0,
        "the log before a snapshot is removed (start {start}, end {end})"
    );
    let files = fs.list(Path::new("/data/__cluster_metadata-0")).unwrap();
    let snapshots: Vec<_> = files
        .iter()
        .filter(|f| metadata::snapshot::parse_file_name(f).is_some())
        .collect();
    assert_eq!(snapshots.len(), 1, "older snapshots are removed: {files:?}");
    drop(log);
    sim.crash(CrashMode::DropUnsynced);
    let after = open(&fs, 2_000).image();
    // Reopened, the quorum of one elects itself in a new epoch, whose LeaderChangeMessage is
    // the only record after the ones before.
    assert_eq!((after.offset, after.epoch), (before.offset + 1, before.epoch + 1));
    let mut same = (*after).clone();
    (same.offset, same.epoch) = (before.offset, before.epoch);
    assert!(
        same == *before,
        "the image rebuilt from the snapshot and the log differs"
    );
    assert_eq!(after.topic_count(), 200);
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sluice-mlog-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn open_topics(dir: &Path) -> Topics {
    let defaults = ConfigLayers::new().build().unwrap().topic_defaults;
    let fs = storage::default_fs();
    let metadata = Arc::new(MetadataLog::open(dir, fs.clone(), u64::MAX).unwrap().log);
    Topics::open(
        dir,
        defaults,
        false,
        fs,
        metadata,
        1,
        Arc::new(broker::clock::SystemClock::new()),
        Arc::new(broker::random::Random::seeded(1)),
    )
    .unwrap()
}

fn append(topics: &Topics, name: &str, value: &[u8]) {
    let t = topics.get(name).unwrap();
    let mut state = t.partitions[0].lock();
    let mut batch = wire::records::BatchBuilder::new(wire::Compression::None);
    batch.push(0, None, Some(value), &[]);
    state.log.append(batch.build(), 0, 0).unwrap();
    state.log.sync().unwrap();
}

#[test]
fn a_deletion_cut_short_by_a_crash_before_its_directories_moved_never_brings_old_records_back() {
    let dir = temp_dir("delete-crash");
    let topics = open_topics(&dir);
    topics.create("phoenix", 2, 1, None, BTreeMap::new()).unwrap();
    append(&topics, "phoenix", b"old");
    // The removal is committed, then the process dies before the directories are renamed.
    let id = topics.get("phoenix").unwrap().id;
    topics
        .metadata()
        .commit(
            vec![MetadataRecord::RemoveTopicRecord(RemoveTopicRecord { topic_id: id })],
            0,
        )
        .unwrap();
    drop(topics);
    assert!(dir.join("phoenix-0").exists());
    let topics = open_topics(&dir);
    assert!(topics.get("phoenix").is_none());
    storage::wait_for_deletions();
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("phoenix"))
        .collect();
    assert!(left.is_empty(), "the deleted topic's directories are removed: {left:?}");
    topics.create("phoenix", 2, 1, None, BTreeMap::new()).unwrap();
    let t = topics.get("phoenix").unwrap();
    assert_ne!(t.id, id);
    assert_eq!(
        t.partitions[0].lock().log.log_end_offset(),
        0,
        "the new topic starts empty"
    );
    drop(topics);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn topics_and_their_configs_come_back_from_the_metadata_log() {
    let dir = temp_dir("reopen");
    let topics = open_topics(&dir);
    let overrides = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
    topics.create("kept", 3, 1, None, overrides).unwrap();
    topics.add_partitions("kept", 5, None, false).unwrap();
    topics
        .update_overrides("kept", false, |t| {
            let mut o = t.overrides.clone();
            o.remove("retention.ms");
            o.insert("max.message.bytes".into(), "2000".into());
            Ok(o)
        })
        .unwrap();
    let id = topics.get("kept").unwrap().id;
    drop(topics);
    let topics = open_topics(&dir);
    let t = topics.get("kept").unwrap();
    assert_eq!((t.id, t.partitions.len()), (id, 5));
    assert_eq!(
        t.overrides,
        BTreeMap::from([("max.message.bytes".to_string(), "2000".to_string())])
    );
    let image = topics.metadata().image();
    let p = image.topic("kept").unwrap().partition(4).unwrap();
    assert_eq!((p.leader, p.leader_epoch, &p.isr[..]), (1, 0, &[1][..]));
    drop(topics);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_quorum_of_one_elects_itself_in_a_new_epoch_at_every_start() {
    let sim = Arc::new(SimFs::new());
    let fs: Arc<dyn storage::Fs> = sim.clone();
    let dir = Path::new("/data/__cluster_metadata-0");
    let opened = MetadataLog::open(Path::new("/data"), fs.clone(), u64::MAX).unwrap();
    assert!(opened.empty, "a LeaderChangeMessage alone is not metadata");
    assert_eq!(opened.log.leader_epoch(), 1);
    drop(opened);
    // Power lost right after the election: still empty, so the bootstrap still happens.
    sim.crash(CrashMode::DropUnsynced);
    let opened = MetadataLog::open(Path::new("/data"), fs.clone(), u64::MAX).unwrap();
    assert!(opened.empty);
    assert_eq!(opened.log.leader_epoch(), 2);
    opened.log.commit(vec![topic(1)], 0).unwrap();
    assert_eq!(opened.log.image().epoch, 2, "records carry the quorum's epoch");
    drop(opened);
    sim.crash(CrashMode::DropUnsynced);
    let log = open(&fs, u64::MAX);
    assert_eq!(log.leader_epoch(), 3);
    assert!(log.image().topic("t1").is_some());
    // Kafka's quorum-state file, version 0.
    let state: serde_json::Value = serde_json::from_slice(&fs.read_all(&dir.join("quorum-state")).unwrap()).unwrap();
    assert_eq!(
        (
            &state["leaderId"],
            &state["leaderEpoch"],
            &state["votedId"],
            &state["data_version"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(3),
            &serde_json::json!(1),
            &serde_json::json!(0)
        )
    );
    // Every start left a LeaderChangeMessage control batch in its epoch.
    let bytes = {
        let (start, end) = log.offsets();
        assert_eq!((start, end), (0, 4), "three elections and one change");
        drop(log);
        let l = storage::Log::open_on(&fs, dir, storage::LogConfig::default(), false).unwrap();
        l.read(0, 1 << 20).unwrap()
    };
    let batches: Vec<_> = wire::records::RecordBatch::iter_all(bytes)
        .map(|b| b.unwrap())
        .collect();
    let shape: Vec<(i64, i32, bool)> = batches
        .iter()
        .map(|b| (b.base_offset(), b.partition_leader_epoch(), b.is_control()))
        .collect();
    assert_eq!(shape, [(0, 1, true), (1, 2, true), (2, 2, false), (3, 3, true)]);
}

#[test]
fn an_unreadable_quorum_state_stops_the_start_and_says_why() {
    let sim = Arc::new(SimFs::new());
    let fs: Arc<dyn storage::Fs> = sim.clone();
    drop(open(&fs, u64::MAX));
    let path = Path::new("/data/__cluster_metadata-0/quorum-state");
    fs.write_atomically(path, b"{\"leaderEpoch\": \"x\"").unwrap();
    let err = MetadataLog::open(Path::new("/data"), fs.clone(), u64::MAX)
        .err()
        .unwrap();
    assert!(err.contains("quorum-state is unreadable"), "{err}");
}

#[test]
fn a_full_disk_holds_changes_back_until_space_returns() {
    let sim = Arc::new(SimFs::new());
    let fs: Arc<dyn storage::Fs> = sim.clone();
    let log = open(&fs, u64::MAX);
    log.commit(vec![topic(0)], 0).unwrap();
    // Full during a change: refused, and nothing of it stays.
    sim.set_capacity(Some(sim.used()));
    assert!(log.commit(vec![topic(1)], 0).is_err());
    assert!(log.image().topic("t1").is_none());
    sim.set_capacity(None);
    log.commit(vec![topic(2)], 0).unwrap();
    assert!(log.image().topic("t2").is_some() && log.image().topic("t1").is_none());
    drop(log);
    // Full at start: the election cannot be written, the metadata is served, changes wait.
    sim.set_capacity(Some(sim.used()));
    let log = open(&fs, u64::MAX);
    assert!(log.image().topic("t2").is_some());
    assert!(log.commit(vec![topic(3)], 0).is_err());
    sim.set_capacity(None);
    log.commit(vec![topic(4)], 0).unwrap();
    drop(log);
    sim.crash(CrashMode::DropUnsynced);
    let log = open(&fs, u64::MAX);
    let image = log.image();
    let names: Vec<bool> = (0..5).map(|i| image.topic(&format!("t{i}")).is_some()).collect();
    assert_eq!(names, [true, false, true, false, true]);
}
