//! ListOffsets: latest (-1), earliest (-2), max timestamp (-3, v7+), earliest local (-4,
//! v8+: the log start, all data being local), latest tiered (-5, v9+: none, as in Kafka without
//! tiered storage) and by timestamp. Version 0's list of old-style offsets is not served
//! (Kafka 4 dropped it too); v10's timeout only matters for tiered storage and is ignored.

use crate::Broker;
use wire::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use wire::messages::{ListOffsetsRequest, ListOffsetsResponse};
use wire::ErrorCode;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub fn handle(broker: &Broker, _version: i16, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.topics.get(&t.name);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let mut r = ListOffsetsPartitionResponse {
                        partition_index: p.partition_index,
                        timestamp: -1,
                        offset: -1,
                        leader_epoch: -1,
                        ..Default::default()
                    };
                    let Some(part) = topic.as_ref().and_then(|topic| topic.partition(p.partition_index)) else {
                        r.error_code =
                            super::not_held(broker.metadata.image().topic(&t.name).map(|t| &**t), p.partition_index)
                                as i16;
                        return r;
                    };
                    if let Err(code) = part.check_leader_epoch(p.current_leader_epoch) {
                        r.error_code = code as i16;
                        return r;
                    }
                    let state = part.lock();
                    let log = &state.log;
                    match p.timestamp {
                        LATEST => {
                            r.offset = part.high_watermark();
                            r.leader_epoch = part.leader_epoch();
                        }
                        EARLIEST | EARLIEST_LOCAL => {
                            r.offset = log.log_start_offset();
                            r.leader_epoch = part.leader_epoch();
                        }
                        MAX_TIMESTAMP => match log.max_timestamp_record() {
                            Ok(Some((found, offset))) if offset < part.high_watermark() => {
                                r.offset = offset;
                                r.timestamp = found;
                                r.leader_epoch = part.leader_epoch();
                            }
                            Ok(_) => {}
                            Err(_) => r.error_code = ErrorCode::KafkaStorageError as i16,
                        },
                        // Nothing is tiered: offset -1, as Kafka answers with remote storage off.
                        LATEST_TIERED => {}
                        ts if ts >= 0 => match log.offset_for_timestamp(ts) {
                            // Only committed records (below the high watermark) are visible.
                            Ok(Some((offset, found))) if offset < part.high_watermark() => {
                                r.offset = offset;
                                r.timestamp = found;
                                r.leader_epoch = part.leader_epoch();
                            }
                            Ok(_) => {}
                            Err(_) => r.error_code = ErrorCode::KafkaStorageError as i16,
                        },
                        _ => r.error_code = ErrorCode::InvalidRequest as i16,
                    }
                    r
                })
                .collect();
            ListOffsetsTopicResponse {
                name: t.name,
                partitions,
            }
        })
        .collect();
    ListOffsetsResponse {
        topics,
        ..Default::default()
    }
}
