//! The image built by replaying records: changes reported, contradictions refused, snapshots
//! that rebuild the same image, and the bytes of Kafka's framing.

use metadata::snapshot;
use metadata::{ConfigResource, MetadataDelta, MetadataImage, MetadataRecord, Uuid};
use proptest::prelude::*;
use std::sync::Arc;
use wire::kafka_records::metadata::*;

fn topic(name: &str, id: u8) -> MetadataRecord {
    MetadataRecord::TopicRecord(TopicRecord {
        name: name.into(),
        topic_id: Uuid([id; 16]),
    })
}

fn partition(id: u8, index: i32) -> MetadataRecord {
    MetadataRecord::PartitionRecord(PartitionRecord {
        partition_id: index,
        topic_id: Uuid([id; 16]),
        replicas: vec![1],
        isr: vec![1],
        leader: 1,
        leader_epoch: 0,
        partition_epoch: 0,
        ..Default::default()
    })
}

fn config(kind: i8, resource: &str, name: &str, value: Option<&str>) -> MetadataRecord {
    MetadataRecord::ConfigRecord(ConfigRecord {
        resource_type: kind,
        resource_name: resource.into(),
        name: name.into(),
        value: value.map(Into::into),
    })
}

fn remove(id: u8) -> MetadataRecord {
    MetadataRecord::RemoveTopicRecord(RemoveTopicRecord {
        topic_id: Uuid([id; 16]),
    })
}

fn apply(
    base: MetadataImage,
    records: &[MetadataRecord],
) -> Result<(MetadataImage, metadata::Changes), metadata::ReplayError> {
    let start = base.offset + 1;
    let mut d = MetadataDelta::new(Arc::new(base));
    for (i, r) in records.iter().enumerate() {
        d.replay(start + i as i64, 1, r)?;
    }
    Ok(d.apply())
}

#[test]
fn topics_partitions_and_configs_build_up_and_report_what_changed() {
    let (image, changes) = apply(
        MetadataImage::empty(),
        &[
            topic("orders", 1),
            partition(1, 0),
            partition(1, 1),
            config(2, "orders", "retention.ms", Some("1000")),
            config(4, "", "log.retention.bytes", Some("5")),
        ],
    )
    .unwrap();
    assert_eq!(image.offset, 4);
    let orders = image.topic("orders").unwrap();
    assert_eq!(orders.partition_count(), 2);
    assert_eq!(image.topic_by_id(&Uuid([1; 16])).unwrap().name, "orders");
    assert_eq!(image.topic_configs("orders").get("retention.ms").unwrap(), "1000");
    assert_eq!(image.configs(&ConfigResource::broker("")).len(), 1);
    assert!(changes.created_topics.contains(&Uuid([1; 16])));
    assert!(
        changes.changed_topics.is_empty(),
        "partitions of a new topic are part of its creation"
    );

    // Grow, unset a config, delete: the deleted topic is reported as it was, its configs go.
    let (image2, changes) = apply(
        image.clone(),
        &[partition(1, 2), config(2, "orders", "retention.ms", None)],
    )
    .unwrap();
    assert_eq!(image2.topic("orders").unwrap().partition_count(), 3);
    assert!(changes.changed_topics.contains(&Uuid([1; 16])));
    assert!(image2.topic_configs("orders").is_empty());
    let (image3, changes) = apply(image, &[remove(1)]).unwrap();
    assert!(image3.topic("orders").is_none());
    assert_eq!(changes.deleted_topics[&Uuid([1; 16])].partition_count(), 2);
    assert!(image3.topic_configs("orders").is_empty());
    assert!(changes.configs.contains(&ConfigResource::topic("orders")));

    // Deleted and re-created under the same name in one delta: both are reported.
    let (image4, changes) = apply(image3, &[topic("orders", 2), partition(2, 0)]).unwrap();
    assert_eq!(image4.topic("orders").unwrap().id, Uuid([2; 16]));
    assert!(changes.created_topics.contains(&Uuid([2; 16])));
}

#[test]
fn records_that_contradict_the_image_are_refused_and_change_nothing() {
    let (image, _) = apply(MetadataImage::empty(), &[topic("a", 1), partition(1, 0)]).unwrap();
    let refused = [
        topic("a", 2),   // the name is taken
        topic("b", 1),   // the id is taken
        partition(9, 0), // no such topic
        remove(9),       // no such topic
        MetadataRecord::ProducerIdsRecord(ProducerIdsRecord {
            broker_id: 1,
            broker_epoch: 0,
            next_producer_id: 0,
        }),
        MetadataRecord::PartitionChangeRecord(PartitionChangeRecord {
            topic_id: Uuid([1; 16]),
            partition_id: 5,
            ..Default::default()
        }),
        MetadataRecord::PartitionRecord(PartitionRecord {
            partition_id: 0,
            topic_id: Uuid([1; 16]),
            replicas: vec![1],
            isr: vec![2],
            leader: 1,
            ..Default::default()
        }),
    ];
    for r in refused {
        let mut d = MetadataDelta::new(Arc::new(image.clone()));
        let e = d.replay(10, 1, &r).unwrap_err();
        assert_eq!(e.offset, 10);
        assert_eq!(d.apply().0, image, "{e}");
    }
}

#[test]
fn a_new_leader_bumps_the_leader_epoch_and_every_change_the_partition_epoch() {
    let (image, _) = apply(MetadataImage::empty(), &[topic("a", 1), partition(1, 0)]).unwrap();
    let change = |leader| {
        MetadataRecord::PartitionChangeRecord(PartitionChangeRecord {
            topic_id: Uuid([1; 16]),
            partition_id: 0,
            leader,
            ..Default::default()
        })
    };
    let (image, _) = apply(image, &[change(-2), change(1)]).unwrap();
    let p = image.topic("a").unwrap().partition(0).unwrap();
    assert_eq!((p.leader_epoch, p.partition_epoch), (1, 2));
}

#[test]
fn eligible_leader_replicas_are_kept_framed_replayed_and_snapshotted() {
    // partition(1, 0) has replicas [1]: a three-replica one for the ELR.
    let p = MetadataRecord::PartitionRecord(PartitionRecord {
        partition_id: 0,
        topic_id: Uuid([1; 16]),
        replicas: vec![1, 2, 3],
        isr: vec![1],
        leader: 1,
        leader_epoch: 0,
        partition_epoch: 0,
        ..Default::default()
    });
    let elr = MetadataRecord::PartitionChangeRecord(PartitionChangeRecord {
        topic_id: Uuid([1; 16]),
        partition_id: 0,
        isr: Some(vec![]),
        leader: -1,
        eligible_leader_replicas: Some(vec![1, 2]),
        last_known_elr: Some(vec![]),
        ..Default::default()
    });
    // Written at version 2, where the ELR fields live, and read back whole.
    let framed = metadata::frame::encode(&elr).unwrap();
    assert_eq!(&framed[..3], &[1, 5, 2], "frame version 1, type 5, version 2");
    assert_eq!(metadata::frame::decode(&framed).unwrap(), elr);
    let (image, _) = apply(MetadataImage::empty(), &[topic("a", 1), p, elr]).unwrap();
    let reg = image.topic("a").unwrap().partition(0).unwrap().clone();
    assert_eq!((reg.isr.clone(), reg.elr.clone(), reg.leader), (vec![], vec![1, 2], -1));
    let rebuilt = apply(MetadataImage::empty(), &metadata::snapshot::records(&image))
        .unwrap()
        .0;
    assert_eq!(rebuilt.topic("a").unwrap().partition(0).unwrap(), &reg);
    // An ELR member may not be in the ISR at once.
    let both = MetadataRecord::PartitionChangeRecord(PartitionChangeRecord {
        topic_id: Uuid([1; 16]),
        partition_id: 0,
        isr: Some(vec![1]),
        ..Default::default()
    });
    assert!(apply(image, &[both]).is_err());
}

#[test]
fn records_are_framed_as_kafkas_metadata_record_serde() {
    // Built by hand from TopicRecord.json (version 0, flexible): frame version 1, type 2,
    // version 0 as unsigned varints; compact string name (length + 1); uuid; no tagged fields.
    let r = topic("ab", 7);
    let bytes = metadata::frame::encode(&r).unwrap();
    let mut expected = vec![1u8, 2, 0, 3, b'a', b'b'];
    expected.extend_from_slice(&[7; 16]);
    expected.push(0);
    assert_eq!(&bytes[..], &expected[..]);
    assert_eq!(metadata::frame::decode(&bytes).unwrap(), r);
    let mut trailing = expected.clone();
    trailing.push(0);
    assert!(metadata::frame::decode(&trailing).is_err());
}

#[test]
fn snapshot_file_names_are_kafkas() {
    assert_eq!(snapshot::file_name(42, 3), "00000000000000000042-0000000003.checkpoint");
    assert_eq!(
        snapshot::parse_file_name("00000000000000000042-0000000003.checkpoint"),
        Some((42, 3))
    );
    assert_eq!(snapshot::parse_file_name("42-3.checkpoint"), None);
}

#[test]
fn a_snapshot_cut_short_is_refused() {
    let (image, _) = apply(MetadataImage::empty(), &[topic("a", 1), partition(1, 0)]).unwrap();
    let bytes = snapshot::write(&image, 1, 0).unwrap();
    for cut in [bytes.len() - 1, bytes.len() - 70, 10] {
        assert!(snapshot::read(bytes.slice(..cut), 2, 1).is_err(), "cut at {cut}");
    }
    let mut flipped = bytes.to_vec();
    let at = flipped.len() / 2;
    flipped[at] ^= 1;
    assert!(snapshot::read(flipped.into(), 2, 1).is_err());
}

/// One random change to an image: the records a controller could write for it.
fn change(image: &MetadataImage, pick: u8, n: u8) -> Vec<MetadataRecord> {
    let topics: Vec<_> = image.topics().cloned().collect();
    match pick % 6 {
        0 => {
            let id = n.max(1);
            if image.topic_by_id(&Uuid([id; 16])).is_some() || image.topic(&format!("t{id}")).is_some() {
                return vec![];
            }
            let mut v = vec![topic(&format!("t{id}"), id)];
            v.extend((0..(n % 4) as i32 + 1).map(|i| partition(id, i)));
            v
        }
        1 if !topics.is_empty() => vec![MetadataRecord::RemoveTopicRecord(RemoveTopicRecord {
            topic_id: topics[n as usize % topics.len()].id,
        })],
        2 if !topics.is_empty() => {
            let t = &topics[n as usize % topics.len()];
            vec![partition(t.id.0[0], t.partition_count() as i32)]
        }
        3 => vec![config(
            if n % 2 == 0 { 2 } else { 4 },
            &format!("t{}", n % 5),
            &format!("k{}", n % 3),
            (n % 4 != 0).then_some("v"),
        )],
        4 => vec![MetadataRecord::ProducerIdsRecord(ProducerIdsRecord {
            broker_id: 1,
            broker_epoch: 0,
            next_producer_id: image.next_producer_id + 1000,
        })],
        5 if !topics.is_empty() => {
            let t = &topics[n as usize % topics.len()];
            vec![MetadataRecord::PartitionChangeRecord(PartitionChangeRecord {
                topic_id: t.id,
                partition_id: 0,
                leader: if n % 2 == 0 { 1 } else { -2 },
                ..Default::default()
            })]
        }
        _ => vec![MetadataRecord::FeatureLevelRecord(FeatureLevelRecord {
            name: "metadata.version".into(),
            feature_level: n as i16,
            sluice_cluster_id: (n % 3 == 0).then(|| "c1uster1d".to_string()),
        })],
    }
}

proptest! {
    /// Any image, written as a snapshot and read back, is the same image: a start from a
    /// snapshot sees what a replay of the whole log would.
    #[test]
    fn a_snapshot_rebuilds_the_image_it_was_written_from(steps in prop::collection::vec((any::<u8>(), any::<u8>()), 0..60)) {
        let mut image = MetadataImage::empty();
        for (pick, n) in steps {
            let records = change(&image, pick, n);
            image = apply(image, &records).unwrap().0;
        }
        let bytes = snapshot::write(&image, image.epoch.max(0), 0).unwrap();
        let read = snapshot::read(bytes, image.offset + 1, image.epoch.max(0)).unwrap();
        let mut expected = image.clone();
        expected.epoch = expected.epoch.max(0);
        prop_assert_eq!(read, expected);
    }
}
