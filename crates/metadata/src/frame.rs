//! Metadata records in and out of record batches, in Kafka's layout: each record of a batch
//! has a null key and, as its value, one record framed as `MetadataRecordSerde` frames it
//! (unsigned varints: frame version 1, record type, record version; then the record).

use bytes::{Bytes, BytesMut};
use wire::codec as c;
use wire::kafka_records::metadata::{MetadataRecord, FRAME_VERSION};
use wire::records::{BatchBuilder, RecordBatch};
use wire::Compression;

/// The largest batch of metadata records written or read: Kafka's KRaft limit
/// (`KafkaRaftClient.MAX_BATCH_SIZE_BYTES`, 8 MiB). A change that would need more is refused
/// before anything is written.
pub const BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Why bytes are not metadata records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad record batch: {0}")]
    Batch(String),
    #[error("record at offset {offset}: {why}")]
    Record { offset: i64, why: String },
}

/// The version each record is written in: the one Kafka writes at
/// [`crate::METADATA_VERSION_LEVEL`] for the fields Sluice sets, and version 2 of a
/// partition's records when they carry eligible leader replicas (KIP-966, whose fields exist
/// only from there).
pub fn write_version(record: &MetadataRecord) -> i16 {
    match record {
        MetadataRecord::RegisterBrokerRecord(_) => 3,
        MetadataRecord::PartitionRecord(r) => {
            if r.eligible_leader_replicas.is_some() || r.last_known_elr.is_some() {
                2
            } else {
                0
            }
        }
        MetadataRecord::PartitionChangeRecord(r) => {
            if r.eligible_leader_replicas.is_some() || r.last_known_elr.is_some() {
                2
            } else {
                0
            }
        }
        other => other.record_type().versions().0,
    }
}

/// One record as the value of a batch record.
pub fn encode(record: &MetadataRecord) -> Result<Bytes, c::EncodeError> {
    let t = record.record_type();
    let version = write_version(record);
    let mut buf = BytesMut::new();
    c::put_uvarint(&mut buf, FRAME_VERSION);
    c::put_uvarint(&mut buf, t.id() as u32);
    c::put_uvarint(&mut buf, version as u32);
    record.encode(&mut buf, version)?;
    Ok(buf.freeze())
}

/// The record in a batch record's value; every byte must belong to it.
pub fn decode(value: &[u8]) -> Result<MetadataRecord, String> {
    let mut buf = Bytes::copy_from_slice(value);
    let (record, _version) = wire::kafka_records::metadata::read_record(&mut buf).map_err(|e| e.to_string())?;
    if !buf.is_empty() {
        return Err(format!("{} bytes after the record", buf.len()));
    }
    Ok(record)
}

/// One change as one batch (appended whole or not at all), stamped at `timestamp`.
pub fn batch(records: &[MetadataRecord], timestamp: i64) -> Result<Bytes, String> {
    let mut b = BatchBuilder::new(Compression::None);
    for r in records {
        let value = encode(r).map_err(|e| format!("cannot encode {}: {e}", r.record_type().name()))?;
        b.push(timestamp, None, Some(&value), &[]);
        if b.body_bytes() > BATCH_BYTES_MAX {
            return Err(format!(
                "a change of {} records is more than one metadata batch may hold ({BATCH_BYTES_MAX} bytes)",
                records.len()
            ));
        }
    }
    Ok(b.build())
}

/// The records of one batch read from the log, each with its offset, and the batch's leader
/// epoch. Control batches (the quorum's own records) yield nothing.
pub fn records_of(batch: &RecordBatch) -> Result<Vec<(i64, MetadataRecord)>, FrameError> {
    if batch.is_control() {
        return Ok(vec![]);
    }
    let records = batch
        .records(BATCH_BYTES_MAX)
        .map_err(|e| FrameError::Batch(e.to_string()))?;
    let mut out = Vec::new();
    for r in records {
        let r = r.map_err(|e| FrameError::Batch(e.to_string()))?;
        let value = r.value.as_deref().ok_or(FrameError::Record {
            offset: r.offset,
            why: "no value".into(),
        })?;
        let record = decode(value).map_err(|why| FrameError::Record { offset: r.offset, why })?;
        out.push((r.offset, record));
    }
    Ok(out)
}

/// Kafka's control record type of the record a new quorum leader writes first.
pub const LEADER_CHANGE: i16 = 2;

/// A control batch of one record of control type `kind` holding `value`, stamped at `offset`
/// with `epoch`.
pub fn control_batch(kind: i16, value: Bytes, offset: i64, epoch: i32, timestamp: i64) -> Bytes {
    let mut key = BytesMut::new();
    c::put_i16(&mut key, 0);
    c::put_i16(&mut key, kind);
    let mut b = BatchBuilder::new(Compression::None).control();
    b.push(timestamp, Some(&key), Some(&value), &[]);
    let mut bytes = BytesMut::from(&b.build()[..]);
    wire::records::stamp(&mut bytes, offset, epoch);
    bytes.freeze()
}

/// The LeaderChangeMessage batch a quorum leader appends at the start of its epoch (Kafka's
/// `ControlRecordUtils`: version 0 of the message, no version prefix).
pub fn leader_change_batch(leader: i32, voters: &[i32], offset: i64, epoch: i32, timestamp: i64) -> Bytes {
    use wire::codec::Encode;
    use wire::messages::leader_change_message::{LeaderChangeMessage, Voter};
    let all: Vec<Voter> = voters
        .iter()
        .map(|v| Voter {
            voter_id: *v,
            ..Default::default()
        })
        .collect();
    let message = LeaderChangeMessage {
        version: 0,
        leader_id: leader,
        voters: all.clone(),
        granting_voters: all,
    };
    let mut value = BytesMut::new();
    // A fixed message of a few integers at a version it supports cannot fail to encode.
    let _ = message.encode(&mut value, 0);
    control_batch(LEADER_CHANGE, value.freeze(), offset, epoch, timestamp)
}
