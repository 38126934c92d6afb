//! Produce: batches are checked (framing, CRC, records, size) and appended exactly as
//! received, stamped with base offset and leader epoch; `LogAppendTime` topics also get the
//! append time stamped into the batch.
//!
//! Single node: with acks=1 or acks=all the write is replicated to the whole ISR (this node)
//! once it is appended (`Partition::append_as_leader`, the one leader append path), so the
//! response goes out at once — unless the topic's `flush.messages` asks for an fsync first:
//! then the request waits in each such partition's produce purgatory (`replica.rs`, no thread
//! held) until that partition's fsync task covers it, or `timeout_ms` passes
//! (REQUEST_TIMED_OUT; the records stay appended).
//!
//! Idempotent producers: a retried batch is answered with its original offset and not stored
//! twice; gaps and stale epochs are refused (`producers.rs`).
//!
//! A topic whose `compression.type` names a codec gets its batches in that codec: a batch in
//! another is recompressed (header fields kept), as Kafka does; `producer` keeps them as sent.
//!
//! Not yet: transactional producers.

use crate::producers::{ProducerBatch, SequenceCheck};
use crate::replica::{Ack, AckError, Admit, AppendError};
use crate::topics::{Partition, TimestampType};
use crate::Broker;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use wire::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use wire::messages::{ProduceRequest, ProduceResponse};
use wire::records::{self, BatchError, RecordBatch};
use wire::{Compression, ErrorCode};

/// The most one produced batch may decompress to while it is validated.
const DECOMPRESSED_BATCH_BYTES_MAX: usize = 64 << 20;

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

/// A batch checked and ready to append: its bytes as they will be stored.
struct Prepared {
    raw: Bytes,
    producer: Option<ProducerBatch>,
    record_count: u64,
    log_append_time: i64,
}

/// Checks one partition's records as Kafka does (framing, one batch, size, CRC, every record,
/// timestamps) and converts them to the topic's codec. CPU work proportional to what the batch
/// decompresses to: large or compressed batches run here on the blocking pool (`handle`).
fn prepare(
    topic: &crate::topics::TopicConfig,
    acks: i16,
    records: Option<Bytes>,
    now: i64,
) -> Result<Prepared, (ErrorCode, String)> {
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
    Ok(Prepared {
        raw,
        producer,
        record_count,
        log_append_time,
    })
}

/// Requests whose batches add up to more than this, or that hold a compressed one, are
/// checked on the low-priority threads.
const INLINE_CHECK_BYTES_MAX: usize = 64 * 1024;

/// Whether checking `records` may cost more than a few microseconds of CPU: compressed (it
/// may decompress to `DECOMPRESSED_BATCH_BYTES_MAX`) or large.
fn costly(records: &Option<Bytes>) -> bool {
    records.as_ref().is_some_and(|r| {
        // The attributes' codec bits, at their fixed place in a v2 batch header.
        r.len() > INLINE_CHECK_BYTES_MAX || r.get(22).is_some_and(|a| a & 0x07 != 0)
    })
}

/// Appends through the one leader append path (`Partition::append_as_leader`), with the
/// idempotence check under the partition lock.
fn append(partition: &Partition, prepared: Prepared, now: i64) -> Result<Appended, (ErrorCode, String)> {
    let Prepared {
        raw,
        producer,
        record_count,
        log_append_time,
    } = prepared;
    let bytes = raw.len();
    let appended = partition.append_as_leader(
        raw,
        now,
        |state| match &producer {
            Some(p) => match state.producers.check(p)? {
                // A retry of a batch already appended: the original's offset, and no second
                // copy. The original may still be waiting for its fsync: the retry follows the
                // same rule.
                SequenceCheck::Duplicate { base_offset } => Ok(Admit::Duplicate { base_offset }),
                _ => Ok(Admit::Append),
            },
            None => Ok(Admit::Append),
        },
        |state, info| {
            partition.traffic.add_in(bytes, record_count);
            if let Some(p) = &producer {
                state.producers.record(p, info.base_offset);
            }
        },
    );
    match appended {
        Ok(a) => Ok(Appended {
            base_offset: a.base_offset,
            log_append_time,
            log_start_offset: a.log_start_offset,
            sync_to: match a.ack {
                Ack::Now => None,
                Ack::Below(end) => Some(end),
            },
        }),
        Err(AppendError::Refused(e)) => Err(e),
        Err(AppendError::NotLeader) => Err(error(
            ErrorCode::NotLeaderOrFollower,
            format!("this broker does not lead {}-{}", partition.topic, partition.index),
        )),
        Err(AppendError::Storage(message)) => Err(error(ErrorCode::KafkaStorageError, message)),
    }
}

type Job = (usize, usize, Arc<crate::topics::Topic>, Arc<Partition>, Option<Bytes>);
type Checked = (
    usize,
    usize,
    Arc<crate::topics::Topic>,
    Arc<Partition>,
    Result<Prepared, (ErrorCode, String)>,
);

/// Checks every batch of a request (`prepare`). When any is costly, all of them are checked on
/// the low-priority threads of `Broker::checks` (cores − 1 of them, at nice +19, so the async
/// threads keep a core whatever batches arrive); a cheap request is checked in place.
async fn check_all(broker: &Broker, acks: i16, jobs: Vec<Job>) -> Vec<Checked> {
    // The time is read where the check runs (the broker's clock).
    let clock = broker.clock.clone();
    let run = move |jobs: Vec<Job>| -> Vec<Checked> {
        jobs.into_iter()
            .map(|(ti, pi, topic, part, records)| {
                let prepared = prepare(&topic.config, acks, records, clock.now_ms());
                (ti, pi, topic, part, prepared)
            })
            .collect()
    };
    let inline_bytes: usize = jobs.iter().map(|(.., r)| r.as_ref().map_or(0, Bytes::len)).sum();
    if inline_bytes <= INLINE_CHECK_BYTES_MAX && !jobs.iter().any(|(.., records)| costly(records)) {
        return run(jobs);
    }
    let positions: Vec<_> = jobs
        .iter()
        .map(|(ti, pi, t, p, _)| (*ti, *pi, t.clone(), p.clone()))
        .collect();
    match broker.checks.run(move || run(jobs)).await {
        Some(checked) => checked,
        None => positions
            .into_iter()
            .map(|(ti, pi, t, p)| {
                (
                    ti,
                    pi,
                    t,
                    p,
                    Err(error(ErrorCode::UnknownServerError, "the batch check failed".into())),
                )
            })
            .collect(),
    }
}

/// Returns the response, or `None` for acks=0 (no response is sent). Partitions whose
/// `flush.messages` asks for it wait in their produce purgatory (no thread held) until their
/// fsync task has made the append durable; a failed fsync answers `KAFKA_STORAGE_ERROR` for
/// that partition, and one not done by the request's `timeout_ms` `REQUEST_TIMED_OUT`.
pub async fn handle(broker: &Broker, _version: i16, request: ProduceRequest) -> Option<ProduceResponse> {
    let acks = request.acks;
    // Kafka's DelayedProduce: the wait for durability ends `timeout_ms` after the request
    // arrived (REQUEST_TIMED_OUT; the records stay appended).
    let timeout_ms = request.timeout_ms.max(0);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(timeout_ms as u64);
    let valid_acks = matches!(acks, -1..=1);
    // Every partition's outcome, by (topic, partition) position in the request; the batches to
    // check and append are collected first so that the costly checks run together off the
    // async threads.
    let mut outcomes: Vec<Vec<Option<Result<Appended, (ErrorCode, String)>>>> = vec![];
    let mut jobs: Vec<Job> = vec![];
    let mut responses: Vec<TopicProduceResponse> = vec![];
    for (ti, t) in request.topic_data.into_iter().enumerate() {
        let topic = broker.topics.get(&t.name);
        let mut row = vec![];
        let mut partition_responses = vec![];
        for (pi, p) in t.partition_data.into_iter().enumerate() {
            partition_responses.push(PartitionProduceResponse {
                index: p.index,
                base_offset: -1,
                log_append_time_ms: -1,
                log_start_offset: -1,
                ..Default::default()
            });
            let refused = if !valid_acks {
                Some(error(
                    ErrorCode::InvalidRequiredAcks,
                    format!("acks must be -1, 0 or 1, not {acks}"),
                ))
            } else {
                match topic
                    .as_ref()
                    .and_then(|topic| topic.partition(p.index).map(|part| (topic, part)))
                {
                    None => Some(
                        match super::not_held(broker.metadata.image().topic(&t.name).map(|t| &**t), p.index) {
                            ErrorCode::NotLeaderOrFollower => error(
                                ErrorCode::NotLeaderOrFollower,
                                format!("this broker does not lead {}-{}", t.name, p.index),
                            ),
                            code => error(code, format!("{}-{} does not exist", t.name, p.index)),
                        },
                    ),
                    Some((topic, _)) if crate::topics::is_internal(&topic.name) => Some(error(
                        ErrorCode::InvalidTopicException,
                        format!("cannot append to internal topic {}", topic.name),
                    )),
                    Some((topic, part)) => {
                        jobs.push((ti, pi, topic.clone(), part.clone(), p.records));
                        None
                    }
                }
            };
            row.push(refused.map(Err));
        }
        outcomes.push(row);
        responses.push(TopicProduceResponse {
            name: t.name,
            partition_responses,
        });
    }
    let checked = check_all(broker, acks, jobs).await;
    let mut to_sync: Vec<(usize, usize, Arc<Partition>, i64)> = vec![];
    for (ti, pi, _topic, part, prepared) in checked {
        let outcome = prepared.and_then(|prepared| append(&part, prepared, broker.clock.now_ms()));
        if let Ok(Appended { sync_to: Some(end), .. }) = &outcome {
            to_sync.push((ti, pi, part.clone(), *end));
        }
        outcomes[ti][pi] = Some(outcome);
    }
    for (t, row) in responses.iter_mut().zip(outcomes) {
        for (r, outcome) in t.partition_responses.iter_mut().zip(row) {
            match outcome {
                Some(Ok(a)) => {
                    r.base_offset = a.base_offset;
                    r.log_append_time_ms = a.log_append_time;
                    r.log_start_offset = a.log_start_offset;
                }
                Some(Err((code, message))) => {
                    r.error_code = code as i16;
                    r.error_message = Some(message);
                }
                // Every partition was refused or checked above: this is unreachable, and
                // never answered as a success.
                None => {
                    r.error_code = ErrorCode::UnknownServerError as i16;
                    r.error_message = Some("the batch was not checked".into());
                }
            }
        }
    }
    if !to_sync.is_empty() {
        // The produce purgatory: each partition's wait is a oneshot in that partition's
        // purgatory, completed by its fsync task; this request holds no thread meanwhile.
        let _in_purgatory = crate::metrics::Waiting::new(&broker.metrics.produce_waiting);
        let waits: Vec<_> = to_sync
            .into_iter()
            .map(|(ti, pi, part, end)| (ti, pi, part.wait_for_ack(end)))
            .collect();
        for (ti, pi, wait) in waits {
            let (code, message) = match wait.until(deadline).await {
                Ok(()) => continue,
                Err(AckError::TimedOut) => (
                    ErrorCode::RequestTimedOut,
                    format!("not durable within the request's timeout of {timeout_ms} ms (the records are appended)"),
                ),
                Err(AckError::Full) => (
                    ErrorCode::RequestTimedOut,
                    "too many produces wait for this partition's fsync (the records are appended)".to_string(),
                ),
                Err(AckError::Storage(message)) => (ErrorCode::KafkaStorageError, message),
            };
            let r = &mut responses[ti].partition_responses[pi];
            r.error_code = code as i16;
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
