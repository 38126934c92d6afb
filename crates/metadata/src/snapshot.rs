//! Snapshots: an image as the records that rebuild it, in the layout of Kafka's snapshot files
//! (`<end offset, 20 digits>-<epoch, 10 digits>.checkpoint` in the metadata log's directory):
//! a control batch holding a SnapshotHeaderRecord, data batches of metadata records, and a
//! control batch holding a SnapshotFooterRecord. A snapshot with id (end offset E, epoch P)
//! holds every record of the log below E, so the log continues at E.

use crate::delta::MetadataDelta;
use crate::frame;
use crate::image::MetadataImage;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use wire::codec::{self as c, Encode};
use wire::kafka_records::metadata::*;
use wire::messages::{SnapshotFooterRecord, SnapshotHeaderRecord};
use wire::records::RecordBatch;

/// Kafka's control record types for the snapshot's first and last batch.
const SNAPSHOT_HEADER: i16 = 3;
const SNAPSHOT_FOOTER: i16 = 4;

/// Records per data batch of a snapshot.
const RECORDS_PER_BATCH: usize = 1000;

/// The name of the snapshot file of id (`end_offset`, `epoch`).
pub fn file_name(end_offset: i64, epoch: i32) -> String {
    format!("{end_offset:020}-{epoch:010}.checkpoint")
}

/// The id (end offset, epoch) a snapshot file name gives, if it is one.
pub fn parse_file_name(name: &str) -> Option<(i64, i32)> {
    let stem = name.strip_suffix(".checkpoint")?;
    let (offset, epoch) = stem.split_once('-')?;
    if offset.len() != 20 || epoch.len() != 10 {
        return None;
    }
    Some((offset.parse().ok()?, epoch.parse().ok()?))
}

/// The records that rebuild `image` from nothing, in one order: features, brokers, each topic
/// with its partitions, configs, producer ids.
pub fn records(image: &MetadataImage) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    if image.cluster_id.is_some() && !image.features.contains_key("metadata.version") {
        // Never so in a log this node bootstrapped (metadata.version is its first record);
        // the id still needs a record to ride on: a level of 0 sets no feature.
        out.push(MetadataRecord::FeatureLevelRecord(FeatureLevelRecord {
            name: "metadata.version".into(),
            feature_level: 0,
            sluice_cluster_id: image.cluster_id.clone(),
        }));
    }
    for (name, level) in &image.features {
        out.push(MetadataRecord::FeatureLevelRecord(FeatureLevelRecord {
            name: name.clone(),
            feature_level: *level,
            // The cluster id rides on metadata.version, the record every snapshot begins with.
            sluice_cluster_id: if name == "metadata.version" {
                image.cluster_id.clone()
            } else {
                None
            },
        }));
    }
    for b in image.brokers.values() {
        out.push(MetadataRecord::RegisterBrokerRecord(RegisterBrokerRecord {
            broker_id: b.id,
            incarnation_id: b.incarnation_id,
            broker_epoch: b.epoch,
            end_points: b
                .endpoints
                .iter()
                .map(|e| register_broker_record::BrokerEndpoint {
                    name: e.name.clone(),
                    host: e.host.clone(),
                    port: e.port,
                    security_protocol: e.security_protocol,
                    ..Default::default()
                })
                .collect(),
            rack: b.rack.clone(),
            fenced: b.fenced,
            in_controlled_shutdown: b.in_controlled_shutdown,
            ..Default::default()
        }));
    }
    for t in image.topics_by_id.values() {
        out.push(MetadataRecord::TopicRecord(TopicRecord {
            name: t.name.clone(),
            topic_id: t.id,
            ..Default::default()
        }));
        for (index, p) in &t.partitions {
            out.push(MetadataRecord::PartitionRecord(PartitionRecord {
                partition_id: *index,
                topic_id: t.id,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                removing_replicas: p.removing_replicas.clone(),
                adding_replicas: p.adding_replicas.clone(),
                leader: p.leader,
                leader_recovery_state: p.leader_recovery_state,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                eligible_leader_replicas: (!p.elr.is_empty()).then(|| p.elr.clone()),
                last_known_elr: (!p.last_known_elr.is_empty()).then(|| p.last_known_elr.clone()),
                ..Default::default()
            }));
        }
    }
    for (resource, values) in &image.configs {
        for (name, value) in values {
            out.push(MetadataRecord::ConfigRecord(ConfigRecord {
                resource_type: resource.resource_type,
                resource_name: resource.name.clone(),
                name: name.clone(),
                value: Some(value.clone()),
                ..Default::default()
            }));
        }
    }
    if image.next_producer_id > 0 {
        out.push(MetadataRecord::ProducerIdsRecord(ProducerIdsRecord {
            broker_id: image.producer_ids_broker,
            broker_epoch: -1,
            next_producer_id: image.next_producer_id,
            ..Default::default()
        }));
    }
    out
}

/// The snapshot file of `image`, its batches stamped with `epoch` (the snapshot id's).
pub fn write(image: &MetadataImage, epoch: i32, timestamp: i64) -> Result<Bytes, String> {
    let mut out = BytesMut::new();
    let mut offset = 0i64;
    let mut header = BytesMut::new();
    c::put_i16(&mut header, 0);
    SnapshotHeaderRecord {
        version: 0,
        last_contained_log_timestamp: timestamp,
        ..Default::default()
    }
    .encode(&mut header, 0)
    .map_err(|e| e.to_string())?;
    out.extend_from_slice(&frame::control_batch(
        SNAPSHOT_HEADER,
        header.freeze(),
        offset,
        epoch,
        timestamp,
    ));
    offset += 1;
    let all = records(image);
    for chunk in all.chunks(RECORDS_PER_BATCH) {
        let batch = frame::batch(chunk, timestamp)?;
        let mut batch = BytesMut::from(&batch[..]);
        wire::records::stamp(&mut batch, offset, epoch);
        out.extend_from_slice(&batch);
        offset += chunk.len() as i64;
    }
    let mut footer = BytesMut::new();
    c::put_i16(&mut footer, 0);
    SnapshotFooterRecord {
        version: 0,
        ..Default::default()
    }
    .encode(&mut footer, 0)
    .map_err(|e| e.to_string())?;
    out.extend_from_slice(&frame::control_batch(
        SNAPSHOT_FOOTER,
        footer.freeze(),
        offset,
        epoch,
        timestamp,
    ));
    Ok(out.freeze())
}

/// The image a snapshot file of id (`end_offset`, `epoch`) holds. Every batch's CRC is
/// checked, and the file must end with its footer: a snapshot cut short by a crash is an
/// error, never a smaller image.
pub fn read(bytes: Bytes, end_offset: i64, epoch: i32) -> Result<MetadataImage, String> {
    let mut delta = MetadataDelta::new(Arc::new(MetadataImage::empty()));
    let mut footer = false;
    let mut first = true;
    for batch in RecordBatch::iter_all(bytes) {
        let batch = batch.map_err(|e| format!("bad batch: {e}"))?;
        batch
            .verify_crc()
            .map_err(|e| format!("batch at {}: {e}", batch.base_offset()))?;
        if footer {
            return Err("batches after the footer".into());
        }
        if batch.is_control() {
            let kind = control_kind(&batch)?;
            match (first, kind) {
                (true, SNAPSHOT_HEADER) => {}
                (false, SNAPSHOT_FOOTER) => footer = true,
                _ => return Err(format!("unexpected control record type {kind}")),
            }
        } else if first {
            return Err("no snapshot header".into());
        } else {
            for (offset, record) in frame::records_of(&batch).map_err(|e| e.to_string())? {
                delta.replay(offset, epoch, &record).map_err(|e| e.to_string())?;
            }
        }
        first = false;
    }
    if !footer {
        return Err("no snapshot footer: the file is incomplete".into());
    }
    let (mut image, _) = delta.apply();
    image.offset = end_offset - 1;
    image.epoch = epoch;
    Ok(image)
}

fn control_kind(batch: &RecordBatch) -> Result<i16, String> {
    let mut records = batch.records(frame::BATCH_BYTES_MAX).map_err(|e| e.to_string())?;
    let r = records
        .next()
        .ok_or("empty control batch")?
        .map_err(|e| e.to_string())?;
    let mut key = r.key.ok_or("control record without a key")?;
    let _version = c::get_i16(&mut key).map_err(|e| e.to_string())?;
    c::get_i16(&mut key).map_err(|e| e.to_string())
}
