//! Fetch: whole batches from each partition's log, up to the per-partition and response byte
//! limits (the first batch always, so a consumer never stalls on a large one), with long
//! polling: the response waits up to `max_wait_ms` for `min_bytes`, waking when data arrives,
//! and never longer.
//!
//! Fetch sessions (KIP-227) are not kept: every response carries session id 0, which clients
//! take as "no session" and answer with full fetches.

use crate::response_memory::Held;
use crate::topics::{Partition, Topic};
use crate::Broker;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use wire::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use wire::messages::{FetchRequest, FetchResponse};
use wire::records::RecordBatch;
use wire::{ErrorCode, Uuid};

/// Upper bound on how long any fetch waits, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

struct Wanted {
    topic_name: String,
    topic_id: Uuid,
    /// The topic, if this node holds it, and the error to report for it otherwise.
    topic: Result<Arc<Topic>, ErrorCode>,
    /// The topic as the cluster has it: what a partition this node does not hold is answered.
    known: Option<Arc<metadata::TopicImage>>,
    partitions: Vec<wire::messages::fetch_request::FetchPartition>,
}

fn read_partition(
    part: &Partition,
    p: &wire::messages::fetch_request::FetchPartition,
    room: usize,
    is_first: bool,
) -> PartitionData {
    let mut r = PartitionData {
        partition_index: p.partition,
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
        // Never null: librdkafka treats null records as a parse failure.
        records: Some(Bytes::new()),
        ..Default::default()
    };
    if let Err(code) = part.check_serves_clients(p.current_leader_epoch) {
        r.error_code = code as i16;
        return r;
    }
    let state = part.lock();
    let log = &state.log;
    let hw = part.high_watermark();
    r.high_watermark = hw;
    r.last_stable_offset = hw;
    r.log_start_offset = log.log_start_offset();
    if p.fetch_offset < log.log_start_offset() || p.fetch_offset > hw {
        r.error_code = ErrorCode::OffsetOutOfRange as i16;
        return r;
    }
    if p.fetch_offset == hw || (room == 0 && !is_first) {
        return r;
    }
    let limit = (p.partition_max_bytes.max(0) as usize).min(room);
    match log.read(p.fetch_offset, limit) {
        Ok(data) => {
            // Consumers read below the high watermark only: a batch the ISR does not all hold
            // yet (a leader's unreplicated tail) is never served to them.
            // (On a leader whose ISR holds everything, the high watermark is the log end and
            // there is nothing to cut: no walk over the batch headers.)
            let data = if hw < log.log_end_offset() {
                below(data, hw)
            } else {
                data
            };
            // A batch larger than the limits is still sent whole when it is the first thing in
            // the response (Kafka's rule, so consumers make progress); otherwise it waits.
            if data.len() <= limit || is_first {
                r.records = Some(data);
            }
        }
        Err(e) => {
            // A consumer retries at once: logged once a minute per partition, not per fetch.
            part.report_storage_error("a fetch read", &e);
            // Corruption recovery found in a once-fsynced segment is not served (Kafka answers
            // a corrupt read the same way); any other failure is the disk's.
            r.error_code = match e {
                storage::StorageError::Corrupt { .. } => ErrorCode::CorruptMessage,
                _ => ErrorCode::KafkaStorageError,
            } as i16;
        }
    }
    r
}

/// The whole batches of `data` (as a log read returns them) that start below `end`.
fn below(data: Bytes, end: i64) -> Bytes {
    let mut at = 0usize;
    while data.len() >= at + 12 {
        let base = i64::from_be_bytes(data[at..at + 8].try_into().unwrap_or([0; 8]));
        let len = i32::from_be_bytes(data[at + 8..at + 12].try_into().unwrap_or([0; 4]));
        if base >= end || len < 0 || data.len() < at + 12 + len as usize {
            break;
        }
        at += 12 + len as usize;
    }
    data.slice(..at)
}

/// Reads every partition asked for, up to `max_bytes` of records in all (`None`: no records at
/// all, not even a first batch: the response pool had nothing).
fn collect(wanted: &[Wanted], version: i16, max_bytes: Option<usize>) -> (Vec<FetchableTopicResponse>, usize) {
    let read = max_bytes.is_some();
    let max_bytes = max_bytes.unwrap_or(0);
    let mut total = 0usize;
    let mut responses = Vec::with_capacity(wanted.len());
    for w in wanted {
        let partitions = w
            .partitions
            .iter()
            .map(|p| match &w.topic {
                Err(code) => PartitionData {
                    partition_index: p.partition,
                    error_code: match &w.known {
                        Some(t) => super::not_held(Some(t), p.partition) as i16,
                        None => *code as i16,
                    },
                    high_watermark: -1,
                    last_stable_offset: -1,
                    log_start_offset: -1,
                    records: Some(Bytes::new()),
                    ..Default::default()
                },
                Ok(topic) => match topic.partition(p.partition) {
                    None => PartitionData {
                        partition_index: p.partition,
                        error_code: super::not_held(w.known.as_deref(), p.partition) as i16,
                        high_watermark: -1,
                        last_stable_offset: -1,
                        log_start_offset: -1,
                        records: Some(Bytes::new()),
                        ..Default::default()
                    },
                    Some(part) => {
                        let r = read_partition(part, p, max_bytes.saturating_sub(total), read && total == 0);
                        total += r.records.as_ref().map_or(0, Bytes::len);
                        r
                    }
                },
            })
            .collect();
        responses.push(FetchableTopicResponse {
            topic: if version >= 13 {
                String::new()
            } else {
                w.topic_name.clone()
            },
            topic_id: w.topic_id,
            partitions,
        });
    }
    (responses, total)
}

/// Counts the bytes and records a response sends, per partition.
fn count_sent(wanted: &[Wanted], responses: &[FetchableTopicResponse]) {
    for (w, t) in wanted.iter().zip(responses) {
        let Ok(topic) = &w.topic else { continue };
        for p in &t.partitions {
            let Some(data) = p.records.as_ref().filter(|d| !d.is_empty()) else {
                continue;
            };
            if let Some(part) = topic.partition(p.partition_index) {
                let records = RecordBatch::iter_all(data.clone())
                    .map_while(Result::ok)
                    .map(|b| b.record_count().max(0) as u64)
                    .sum();
                part.traffic.add_out(data.len(), records);
            }
        }
    }
}

/// Answers a fetch from `ip`. The returned reservation holds the response's record data in the
/// response pool (`queued.max.response.bytes`, see `response_memory`) until the connection has
/// written it.
pub async fn handle(
    broker: &Broker,
    version: i16,
    ip: std::net::IpAddr,
    request: FetchRequest,
) -> (FetchResponse, Option<Held>) {
    let image = broker.metadata.image();
    let wanted: Vec<Wanted> = request
        .topics
        .into_iter()
        .map(|t| {
            let (topic, known) = if version >= 13 {
                (
                    broker.topics.get_by_id(&t.topic_id).ok_or(ErrorCode::UnknownTopicId),
                    image.topic_by_id(&t.topic_id).cloned(),
                )
            } else {
                (
                    broker.topics.get(&t.topic).ok_or(ErrorCode::UnknownTopicOrPartition),
                    image.topic(&t.topic).cloned(),
                )
            };
            let topic_id = topic.as_ref().map_or(t.topic_id, |topic| topic.id);
            Wanted {
                topic_name: t.topic,
                topic_id,
                topic,
                known,
                partitions: t.partitions,
            }
        })
        .collect();
    let asked = if version >= 3 {
        request.max_bytes.max(0) as usize
    } else {
        i32::MAX as usize
    };
    // `fetch.max.bytes` caps every response, whatever the client asks.
    let cap = asked.min(broker.config.fetch_response_bytes_max);
    let pool = &broker.response_memory;
    let min_bytes = request.min_bytes.max(0) as usize;
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let deadline = tokio::time::Instant::now() + wait;
    // The partitions asked for, to be woken by (and only by) their appends.
    let watched: Vec<Arc<Partition>> = wanted
        .iter()
        .filter_map(|w| w.topic.as_ref().ok().map(|t| (t, w)))
        .flat_map(|(t, w)| w.partitions.iter().filter_map(|p| t.partition(p.partition).cloned()))
        .collect();
    let waker = Arc::new(tokio::sync::Notify::new());
    // Registered only once the fetch has to wait: one that finds its data at once (the common
    // case under load) touches no partition's list of waiters.
    let mut armed = false;
    loop {
        let waiting = tokio::time::Instant::now() < deadline;
        if armed && waiting {
            // Before reading, so an append between the read and the wait is not missed (an
            // append takes the registrations it wakes, so each pass registers again).
            for p in &watched {
                p.wake_on_data(&waker);
            }
        }
        // Without memory by the deadline, the answer carries no records (clients fetch again).
        let mut held = pool.reserve(ip, cap, deadline).await;
        let budget = held.as_ref().map(Held::bytes);
        let (responses, total) = collect(&wanted, version, budget);
        let errors = responses.iter().flat_map(|t| &t.partitions).any(|p| p.error_code != 0);
        if total >= min_bytes || errors || !waiting {
            count_sent(&wanted, &responses);
            if let Some(h) = held.as_mut() {
                h.settle(total);
            }
            let response = FetchResponse {
                responses,
                session_id: 0,
                ..Default::default()
            };
            return (response, held);
        }
        // Nothing is held while waiting.
        drop((held, responses));
        if !armed {
            // Register, then look once more before waiting.
            armed = true;
            continue;
        }
        let in_purgatory = crate::metrics::Waiting::new(&broker.metrics.fetch_waiting);
        // Woken by an append or at the deadline: either way the next pass reads (and, at the
        // deadline, answers with what there is).
        let _ = tokio::time::timeout_at(deadline, waker.notified()).await;
        drop(in_purgatory);
    }
}

#[cfg(test)]
mod below_tests {
    use super::*;
    use crate::producers::ProducerStates;

    /// Consumers never see past the high watermark, even when the log holds more (a leader's
    /// tail not yet on every ISR member; here a replica restored at a checkpointed high
    /// watermark below its log end, before it leads).
    #[test]
    fn a_fetch_never_returns_batches_at_or_above_the_high_watermark() {
        let fs: Arc<dyn storage::Fs> = Arc::new(storage::sim::SimFs::new());
        let mut log = storage::Log::open_on(&fs, std::path::Path::new("/p-0"), Default::default(), false).unwrap();
        for i in 0..5u8 {
            let mut b = wire::records::BatchBuilder::new(wire::Compression::None);
            b.push(0, None, Some(&[i]), &[]);
            b.push(0, None, Some(&[i]), &[]);
            log.append(b.build(), 0, 0).unwrap();
        }
        assert_eq!(log.log_end_offset(), 10);
        let part = Partition::open(
            "p",
            0,
            0,
            log,
            ProducerStates::default(),
            Some(4),
            Arc::new(crate::clock::SystemClock::new()),
        );
        assert_eq!(part.high_watermark(), 4);
        // Consumers are served by a leader only; leading keeps the checkpointed watermark.
        part.set_leadership(true, 0);
        let ask = |offset| wire::messages::fetch_request::FetchPartition {
            partition: 0,
            fetch_offset: offset,
            partition_max_bytes: 1 << 20,
            current_leader_epoch: -1,
            ..Default::default()
        };
        let r = read_partition(&part, &ask(0), 1 << 20, true);
        assert_eq!(r.high_watermark, 4);
        let batches: Vec<i64> = RecordBatch::iter_all(r.records.clone().unwrap())
            .map(|b| b.unwrap().base_offset())
            .collect();
        assert_eq!(batches, [0, 2], "batches at 4 and after are not served");
        assert_eq!(read_partition(&part, &ask(4), 1 << 20, true).records.unwrap().len(), 0);
        assert_eq!(
            read_partition(&part, &ask(6), 1 << 20, true).error_code,
            ErrorCode::OffsetOutOfRange as i16
        );
        // Once it leads alone (its own log end is the ISR's), everything is below it.
        let part = part.lead_alone();
        assert_eq!(part.high_watermark(), 10);
        let r = read_partition(&part, &ask(0), 1 << 20, true);
        assert_eq!(RecordBatch::iter_all(r.records.unwrap()).count(), 5);
    }
}
