//! The first start on a data directory whose metadata log is empty: a new directory gets the
//! bootstrap records; one written by a release from before the metadata log (`topics.json`,
//! `broker-configs.json`, `producer-ids`) is converted into one batch of records, so every
//! topic, config and producer-id block is in the log afterwards. The old files are renamed
//! `<name>.migrated` once the batch is fsynced (kept for a downgrade by hand); a crash before
//! that leaves them in place, and since the log is then not empty, they are only renamed.

use crate::metadata_log::MetadataLog;
use crate::topics::{collision_key, is_internal, partition_dirs, validate_topic_name, PARTITIONS_MAX};
use metadata::{resource_type, MetadataRecord, Uuid};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use wire::kafka_records::metadata::*;

/// The files of the release before the metadata log.
pub const OLD_FILES: [&str; 3] = ["topics.json", "broker-configs.json", "producer-ids"];

/// An entry of the old `topics.json`.
#[derive(Deserialize)]
pub(crate) struct OldTopic {
    pub name: String,
    pub id: String,
    pub partitions: i32,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

/// The old `broker-configs.json`: the two dynamic layers.
#[derive(Deserialize, Default)]
struct OldBrokerConfigs {
    #[serde(default)]
    cluster: BTreeMap<String, String>,
    #[serde(default)]
    broker: BTreeMap<String, String>,
}

pub(crate) fn parse_uuid(s: &str) -> Option<Uuid> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Uuid(id))
}

/// Checks every entry of `topics.json` (at `path`) as CreateTopics would: name, partition
/// count, id, and no two entries alike. Returns each entry's id.
pub(crate) fn check_old_topics(path: &Path, records: &[OldTopic]) -> Result<Vec<Uuid>, String> {
    let mut ids = Vec::with_capacity(records.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut seen_ids: HashMap<Uuid, usize> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        let bad = |why: String| {
            format!(
                "{}: entry {i} (topic {:?}) {why}; fix or remove that entry (or restore the file from a backup)",
                path.display(),
                r.name
            )
        };
        if !is_internal(&r.name) {
            validate_topic_name(&r.name).map_err(|e| bad(e.message))?;
        }
        if !(1..=PARTITIONS_MAX).contains(&r.partitions) {
            return Err(bad(format!(
                "has {} partitions: the count must be 1 to {PARTITIONS_MAX}",
                r.partitions
            )));
        }
        let id = parse_uuid(&r.id).ok_or_else(|| bad(format!("has a bad topic id {:?}", r.id)))?;
        if id == Uuid::ZERO {
            return Err(bad("has the zero topic id".into()));
        }
        if let Some(j) = names.insert(collision_key(&r.name), i) {
            return Err(bad(format!("collides with entry {j} (topic {:?})", records[j].name)));
        }
        if let Some(j) = seen_ids.insert(id, i) {
            return Err(bad(format!(
                "has the same id as entry {j} (topic {:?})",
                records[j].name
            )));
        }
        ids.push(id);
    }
    Ok(ids)
}

/// The records of a new topic: the topic, its config overrides, and partitions 0, 1, … on
/// the replicas `assignments` gives each.
pub fn topic_records(
    name: &str,
    id: Uuid,
    assignments: &[Vec<i32>],
    configs: &BTreeMap<String, String>,
) -> Vec<MetadataRecord> {
    let mut out = vec![MetadataRecord::TopicRecord(TopicRecord {
        name: name.to_string(),
        topic_id: id,
    })];
    out.extend(
        configs
            .iter()
            .map(|(k, v)| config_record(resource_type::TOPIC, name, k, Some(v))),
    );
    out.extend(partition_records(id, 0, assignments));
    out
}

/// New partitions `first`, `first + 1`, … of topic `id`, one per replica list in
/// `assignments`: every replica in the ISR, the first the leader, epochs 0.
pub fn partition_records(id: Uuid, first: i32, assignments: &[Vec<i32>]) -> impl Iterator<Item = MetadataRecord> + '_ {
    assignments.iter().zip(first..).map(move |(replicas, index)| {
        MetadataRecord::PartitionRecord(PartitionRecord {
            partition_id: index,
            topic_id: id,
            replicas: replicas.clone(),
            isr: replicas.clone(),
            leader: replicas.first().copied().unwrap_or(-1),
            leader_epoch: 0,
            partition_epoch: 0,
            ..Default::default()
        })
    })
}

/// The ConfigRecords that take resource (`kind`, `resource`) from configs `before` to
/// `after`: a value for each key set or changed, a null for each key removed.
pub fn config_changes(
    kind: i8,
    resource: &str,
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<MetadataRecord> {
    let set = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(v))
        .map(|(k, v)| config_record(kind, resource, k, Some(v)));
    let removed = before
        .keys()
        .filter(|k| !after.contains_key(*k))
        .map(|k| config_record(kind, resource, k, None));
    set.chain(removed).collect()
}

pub fn config_record(kind: i8, resource: &str, name: &str, value: Option<&String>) -> MetadataRecord {
    MetadataRecord::ConfigRecord(ConfigRecord {
        resource_type: kind,
        resource_name: resource.to_string(),
        name: name.to_string(),
        value: value.cloned(),
    })
}

/// The bootstrap record: `metadata.version`, carrying the cluster's id.
fn feature_record(cluster_id: &str) -> MetadataRecord {
    MetadataRecord::FeatureLevelRecord(FeatureLevelRecord {
        name: "metadata.version".into(),
        feature_level: metadata::METADATA_VERSION_LEVEL,
        sluice_cluster_id: Some(cluster_id.to_string()),
    })
}

fn read_json<T: serde::de::DeserializeOwned>(fs: &dyn storage::Fs, path: &Path) -> Result<Option<T>, String> {
    match fs.read_all(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is corrupt: {e}; restore it from a backup", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Reads the old files of `dir` into the records of one batch. `None`: there are none.
fn old_records(
    fs: &dyn storage::Fs,
    dir: &Path,
    node_id: i32,
    cluster_id: &str,
) -> Result<Option<Vec<MetadataRecord>>, String> {
    let topics_path = dir.join("topics.json");
    let topics: Option<Vec<OldTopic>> = read_json(fs, &topics_path)?;
    let configs: Option<OldBrokerConfigs> = read_json(fs, &dir.join("broker-configs.json"))?;
    let ids_path = dir.join("producer-ids");
    let next_producer_id = match fs.read_all(&ids_path).map(|b| String::from_utf8_lossy(&b).into_owned()) {
        Ok(t) => Some(t.trim().parse::<i64>().ok().filter(|n| (0..=i64::MAX - crate::producers::ID_BLOCK).contains(n)).ok_or_else(|| {
            format!(
                "{} is corrupt ({:?} is not a producer id): restore it from a backup, or write a number larger than any producer id in use",
                ids_path.display(),
                t.trim()
            )
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", ids_path.display())),
    };
    if topics.is_none() && configs.is_none() && next_producer_id.is_none() {
        return Ok(None);
    }
    let mut records = vec![feature_record(cluster_id)];
    if let Some(topics) = topics {
        let ids = check_old_topics(&topics_path, &topics)?;
        for (t, id) in topics.iter().zip(ids) {
            records.extend(topic_records(
                &t.name,
                id,
                &vec![vec![node_id]; t.partitions.max(0) as usize],
                &t.configs,
            ));
        }
    }
    let configs = configs.unwrap_or_default();
    let node = node_id.to_string();
    for (resource, values) in [("", &configs.cluster), (node.as_str(), &configs.broker)] {
        records.extend(
            values
                .iter()
                .map(|(k, v)| config_record(resource_type::BROKER, resource, k, Some(v))),
        );
    }
    if let Some(next) = next_producer_id.filter(|n| *n > 0) {
        records.push(MetadataRecord::ProducerIdsRecord(ProducerIdsRecord {
            broker_id: node_id,
            broker_epoch: -1,
            next_producer_id: next,
        }));
    }
    Ok(Some(records))
}

fn retire_old_files(fs: &dyn storage::Fs, dir: &Path) {
    for name in OLD_FILES {
        let path = dir.join(name);
        if fs.exists(&path) {
            let to = dir.join(format!("{name}.migrated"));
            if let Err(e) = fs.rename(&path, &to) {
                tracing::warn!(file = %path.display(), error = %e, "cannot rename a file converted into the metadata log; it is ignored");
            }
        }
    }
    if let Err(e) = fs.sync_dir(dir) {
        tracing::warn!(error = %e, "cannot sync the data directory");
    }
}

/// Brings an empty metadata log up to date with `dir` (see the module doc), writing
/// `cluster_id` on its first record. `empty`: the log held nothing when opened.
pub fn prepare(
    fs: &dyn storage::Fs,
    dir: &Path,
    log: &MetadataLog,
    empty: bool,
    node_id: i32,
    cluster_id: &str,
) -> Result<(), String> {
    if !empty {
        // Converted before, and a crash came before the old files were renamed.
        retire_old_files(fs, dir);
        return Ok(());
    }
    let records = match old_records(fs, dir, node_id, cluster_id)? {
        Some(records) => {
            tracing::info!(
                records = records.len(),
                "converting topics.json, broker-configs.json and producer-ids into the metadata log {}",
                crate::metadata_log::DIR
            );
            records
        }
        None => {
            // A new data directory, unless partition directories say the metadata was lost:
            // starting empty would hide their records, and a topic created again under an
            // old name would meet them.
            let found = partition_dirs(fs, dir);
            if !found.is_empty() {
                let shown: Vec<&str> = found.iter().take(5).map(String::as_str).collect();
                return Err(format!(
                    "the metadata log {} is empty, but {} holds {} partition director{} ({}{}): the cluster metadata was lost. \
                     Restore {} from a backup, or move those directories out of the data directory to start without them",
                    crate::metadata_log::DIR,
                    dir.display(),
                    found.len(),
                    if found.len() == 1 { "y" } else { "ies" },
                    shown.join(", "),
                    if found.len() > shown.len() { ", ..." } else { "" },
                    crate::metadata_log::DIR,
                ));
            }
            vec![feature_record(cluster_id)]
        }
    };
    log.commit_now(records)
        .map_err(|e| format!("cannot write the metadata log: {e}"))?;
    retire_old_files(fs, dir);
    Ok(())
}

/// Registers this broker in the metadata log, as a Kafka broker registers with its controller
/// at every start: its listener as advertised, and a broker epoch above every earlier one (the
/// log end offset, as Kafka uses the registration's offset).
pub fn register_broker(
    log: &MetadataLog,
    config: &crate::config::BrokerConfig,
    random: &crate::random::Random,
) -> Result<(), String> {
    let l = &config.listener;
    let record = crate::controller::registration_record(
        config.node_id,
        Uuid(random.bytes16()),
        log.end_offset(),
        vec![("PLAINTEXT".into(), l.advertised_host.clone(), l.advertised_port)],
        None,
    );
    log.commit_now(vec![record])
        .map(|_| ())
        .map_err(|e| format!("cannot register this broker in the metadata log: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_topic_entries_are_checked_like_create_topics() {
        let path = Path::new("/data/topics.json");
        let entry = |name: &str, partitions: i32| OldTopic {
            name: name.into(),
            id: Uuid(crate::meta::random_id()).to_string(),
            partitions,
            configs: BTreeMap::new(),
        };
        assert!(check_old_topics(path, &[entry("a", 1), entry(crate::topics::CONSUMER_OFFSETS, 50)]).is_ok());
        for (records, says) in [
            (vec![entry("../../etc", 1)], "../../etc"),
            (vec![entry("a", 0)], "0 partitions"),
            (vec![entry("a", PARTITIONS_MAX + 1)], "1000001 partitions"),
            (vec![entry("a.b", 1), entry("a_b", 1)], "collides"),
        ] {
            let e = check_old_topics(path, &records).unwrap_err();
            assert!(e.contains("topics.json") && e.contains(says), "{e}");
        }
    }

    #[test]
    fn uuids_round_trip_through_text() {
        let id = Uuid([0xab; 16]);
        assert_eq!(parse_uuid(&id.to_string()), Some(id));
        assert_eq!(parse_uuid("nope"), None);
        assert_eq!(parse_uuid("zz000000000000000000000000000000"), None);
    }
}
