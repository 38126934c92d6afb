//! Produce: batches are checked (framing, CRC, records, size) and appended exactly as
//! received, stamped with base offset and leader epoch; `LogAppendTime` topics also get the
//! append time stamped into the batch.
//!
//! Single node: with acks=1 or acks=all the write is replicated to the whole ISR (this node)
//! once it is appended, so the response goes out at once.
//!
//! Idempotent producers: a retried batch is answered with its original offset and not stored
//! twice; gaps and stale epochs are refused (`producers.rs`).
//!
//! A topic whose `compression.type` names a codec gets its batches in that codec: a batch in
//! another is recompressed (header fields kept), as Kafka does; `producer` keeps them as sent.
//!
//! Not yet: transactional producers.

use crate::producers::{ProducerBatch, SequenceCheck};
use crate::topics::{Partition, TimestampType};
use crate::Broker;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use storage::StorageError;
use wire::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use wire::messages::{ProduceRequest, ProduceResponse};
use wire::records::{self, BatchError, RecordBatch};
use wire::{Compression, ErrorCode};

/// The most one produced batch may decompress to while it is validated.
const DECOMPRESSED_BATCH_BYTES_MAX: usize = 64 << 20;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

struct Appended {
    base_offset: i64,
    log_append_time: i64,
    log_start_offset: i64,
    /// The topic's `flush.messages` calls for an fsync up to this offset before the answer.
    sync_to: Option<i64>,
}

fn error(code: ErrorCode, message: String) -> (ErrorCode, String) {
    (code, message)
}

fn too_large(size: usize, message_bytes_max: i64) -> Result<(), (ErrorCode, String)> {
    if size as i64 > message_bytes_max {
        return Err(error(
            ErrorCode::MessageTooLarge,
            format!("batch of {size} bytes exceeds max.message.bytes {message_bytes_max}"),
        ));
    }
    Ok(())
}

/// In-sync replicas of every partition: this node alone, until replication.
const ISR_SIZE: i32 = 1;

fn append(
    broker: &Broker,
    partition: &Partition,
    topic: &crate::topics::TopicConfig,
    acks: i16,
    records: Option<Bytes>,
) -> Result<Appended, (ErrorCode, String)> {
    // As Kafka: acks=all is refused before anything is written when the ISR is too small.
    if acks == -1 && topic.min_insync_replicas > ISR_SIZE {
        return Err(error(
            ErrorCode::NotEnoughReplicas,
            format!(
                "min.insync.replicas is {} but only {ISR_SIZE} replica is in sync (a single node)",
                topic.min_insync_replicas
            ),
        ));
    }
    let (message_bytes_max, timestamp_type) = (topic.message_bytes_max, topic.timestamp_type);
    let mut data = records
        .filter(|r| !r.is_empty())
        .ok_or_else(|| error(ErrorCode::InvalidRecord, "no records".into()))?;
    let batch = RecordBatch::parse(&mut data).map_err(|e| match e {
        BatchError::UnsupportedMagic(_) => error(ErrorCode::UnsupportedForMessageFormat, e.to_string()),
        e => error(ErrorCode::CorruptMessage, e.to_string()),
    })?;
    // As Kafka: from Produce v3 on, exactly one batch per partition.
    if !data.is_empty() {
        return Err(error(
            ErrorCode::InvalidRecord,
            "exactly one record batch per partition is allowed".into(),
        ));
    }
    too_large(batch.size_bytes(), message_bytes_max)?;
    if batch.is_transactional() || batch.is_control() {
        return Err(error(
            ErrorCode::UnsupportedVersion,
            "transactional producers are not supported yet".into(),
        ));
    }
    let summary = batch.validate(DECOMPRESSED_BATCH_BYTES_MAX).map_err(|e| match e {
        BatchError::CrcMismatch { .. } => error(ErrorCode::CorruptMessage, e.to_string()),
        e => error(ErrorCode::InvalidRecord, e.to_string()),
    })?;
    let now = now_ms();
    if timestamp_type == TimestampType::CreateTime {
        // As Kafka (KIP-937): every record's timestamp within the topic's window around now.
        let earliest = now.saturating_sub(topic.timestamp_before_max_ms);
        let latest = now.saturating_add(topic.timestamp_after_max_ms);
        for ts in [summary.min_timestamp, summary.max_timestamp] {
            if ts != records::NO_TIMESTAMP && ts != i64::MAX && !(earliest..=latest).contains(&ts) {
                return Err(error(
                    ErrorCode::InvalidTimestamp,
                    format!(
                        "timestamp {ts} is out of range: it must be within [{earliest}, {latest}] \
                         (message.timestamp.before.max.ms / after.max.ms of the broker clock {now})"
                    ),
                ));
            }
        }
    }
    // The codec the topic stores batches in; `None` for `producer` (as sent).
    let batch = match Compression::from_name(&topic.compression_type) {
        Some(codec) if batch.compression().ok() != Some(codec) => {
            let converted = batch
                .with_compression(codec, DECOMPRESSED_BATCH_BYTES_MAX)
                .map_err(|e| error(ErrorCode::InvalidRecord, e.to_string()))?;
            // As Kafka: the stored batch must fit too.
            too_large(converted.size_bytes(), message_bytes_max)?;
            converted
        }
        _ => batch,
    };
    let producer = (batch.producer_id() >= 0).then(|| {
        ProducerBatch::new(
            batch.producer_id(),
            batch.producer_epoch(),
            batch.base_sequence(),
            batch.last_offset_delta(),
        )
    });
    let record_count = batch.record_count().max(0) as u64;
    let log_append_time = match timestamp_type {
        TimestampType::LogAppendTime => now,
        TimestampType::CreateTime => -1,
    };
    let raw = match timestamp_type {
        // The header's max timestamp drives retention and time lookups: it must match.
        TimestampType::CreateTime if batch.max_timestamp() != summary.max_timestamp => {
            let mut b = BytesMut::from(&batch.as_bytes()[..]);
            records::set_max_timestamp(&mut b, summary.max_timestamp);
            b.freeze()
        }
        TimestampType::CreateTime => batch.into_bytes(),
        TimestampType::LogAppendTime => {
            let mut b = BytesMut::from(&batch.as_bytes()[..]);
            records::stamp_log_append_time(&mut b, log_append_time);
            b.freeze()
        }
    };
    if partition.commit.failed() {
        return Err(error(
            ErrorCode::KafkaStorageError,
            "an fsync of this partition's log failed: it takes no writes until the broker restarts".into(),
        ));
    }
    let mut state = partition.lock();
    if let Some(p) = &producer {
        if let SequenceCheck::Duplicate { base_offset } = state.producers.check(p)? {
            // A retry of a batch already appended: the original's offset, and no second copy.
            // The original may still be waiting for its fsync: the retry follows the same rule.
            let end = state.log.log_end_offset();
            return Ok(Appended {
                base_offset,
                log_append_time,
                log_start_offset: state.log.log_start_offset(),
                sync_to: needs_sync(partition, topic, end),
            });
        }
    }
    let bytes = raw.len();
    let info = state.log.append(raw, partition.leader_epoch, now).map_err(|e| {
        if matches!(e, StorageError::Io { .. } | StorageError::Failed) {
            partition.report_storage_error("an append", &e);
        }
        error(ErrorCode::KafkaStorageError, e.to_string())
    })?;
    partition.traffic.add_in(bytes, record_count);
    if let Some(p) = &producer {
        state.producers.record(p, info.base_offset);
    }
    let end = state.log.log_end_offset();
    partition.advance_high_watermark(end);
    let log_start_offset = state.log.log_start_offset();
    drop(state);
    broker.data_arrived.notify_waiters();
    Ok(Appended {
        base_offset: info.base_offset,
        log_append_time,
        log_start_offset,
        sync_to: needs_sync(partition, topic, end),
    })
}

/// `flush.messages`: the log end to fsync up to before answering, when that many records
/// (or more) are not yet on disk.
fn needs_sync(partition: &Partition, topic: &crate::topics::TopicConfig, end: i64) -> Option<i64> {
    (end - partition.commit.durable_end() >= topic.flush_messages).then_some(end)
}

/// Returns the response, or `None` for acks=0 (no response is sent). Partitions whose
/// `flush.messages` asks for it are fsynced (off the async threads, sharing fsyncs with
/// concurrent produces) before the response is built; a failed fsync answers
/// `KAFKA_STORAGE_ERROR` for that partition.
pub async fn handle(broker: &Broker, _version: i16, request: ProduceRequest) -> Option<ProduceResponse> {
    let acks = request.acks;
    let valid_acks = matches!(acks, -1..=1);
    let mut to_sync: Vec<(usize, usize, Arc<Partition>, i64)> = vec![];
    let mut responses: Vec<TopicProduceResponse> = request
        .topic_data
        .into_iter()
        .enumerate()
        .map(|(ti, t)| {
            let topic = broker.topics.get(&t.name);
            let partition_responses = t
                .partition_data
                .into_iter()
                .enumerate()
                .map(|(pi, p)| {
                    let mut r = PartitionProduceResponse {
                        index: p.index,
                        base_offset: -1,
                        log_append_time_ms: -1,
                        log_start_offset: -1,
                        ..Default::default()
                    };
                    let outcome = if !valid_acks {
                        Err(error(
                            ErrorCode::InvalidRequiredAcks,
                            format!("acks must be -1, 0 or 1, not {acks}"),
                        ))
                    } else {
                        match topic
                            .as_ref()
                            .and_then(|topic| topic.partition(p.index).map(|part| (topic, part)))
                        {
                            None => Err(error(
                                ErrorCode::UnknownTopicOrPartition,
                                format!("{}-{} does not exist", t.name, p.index),
                            )),
                            Some((topic, _)) if crate::topics::is_internal(&topic.name) => Err(error(
                                ErrorCode::InvalidTopicException,
                                format!("cannot append to internal topic {}", topic.name),
                            )),
                            Some((topic, part)) => append(broker, part, &topic.config, acks, p.records).inspect(|a| {
                                if let Some(end) = a.sync_to {
                                    to_sync.push((ti, pi, part.clone(), end));
                                }
                            }),
                        }
                    };
                    match outcome {
                        Ok(a) => {
                            r.base_offset = a.base_offset;
                            r.log_append_time_ms = a.log_append_time;
                            r.log_start_offset = a.log_start_offset;
                        }
                        Err((code, message)) => {
                            r.error_code = code as i16;
                            r.error_message = Some(message);
                        }
                    }
                    r
                })
                .collect();
            TopicProduceResponse {
                name: t.name,
                partition_responses,
            }
        })
        .collect();
    if !to_sync.is_empty() {
        let waiting: Vec<(usize, usize)> = to_sync.iter().map(|(ti, pi, ..)| (*ti, *pi)).collect();
        let _in_purgatory = crate::metrics::Waiting::new(&broker.metrics.produce_waiting);
        let synced = tokio::task::spawn_blocking(move || {
            to_sync
                .into_iter()
                .map(|(ti, pi, part, end)| {
                    let r = part.sync_to(end);
                    if let Err(e) = &r {
                        part.report_storage_error("an fsync", e);
                    }
                    (ti, pi, r)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let failures: Vec<(usize, usize, String)> = match synced {
            Ok(results) => results
                .into_iter()
                .filter_map(|(ti, pi, r)| r.err().map(|e| (ti, pi, e.to_string())))
                .collect(),
            // The blocking task itself failed: none of those appends can be called durable.
            Err(e) => waiting
                .into_iter()
                .map(|(ti, pi)| (ti, pi, format!("fsync task failed: {e}")))
                .collect(),
        };
        for (ti, pi, message) in failures {
            let r = &mut responses[ti].partition_responses[pi];
            r.error_code = ErrorCode::KafkaStorageError as i16;
            r.error_message = Some(message);
            r.base_offset = -1;
        }
    }
    if acks == 0 {
        return None;
    }
    Some(ProduceResponse {
        responses,
        ..Default::default()
    })
}
