//! OffsetForLeaderEpoch (KIP-320, for clients): where a leader epoch ended in a partition's
//! log, so a consumer whose partition changed leader epoch (a failover, or a broker's restart
//! in a cluster) can check that the offset it holds was not truncated away. kafka-python
//! validates its position with it before fetching on; librdkafka and the Java client too.
//!
//! For each partition, after the checks Fetch makes (the partition held here and led by this
//! node, `current_leader_epoch`): the largest epoch at or below the one asked for and the
//! offset where it ended, from the log's leader-epoch cache (`storage::Log::end_offset_for_epoch`,
//! Kafka's `LeaderEpochFileCache.endOffsetFor`: the start of the next higher epoch, or the log
//! end for the latest; -1 and -1 for an epoch the log does not know).

use crate::Broker;
use wire::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use wire::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

pub fn handle(broker: &Broker, _version: i16, req: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let image = broker.metadata.image();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.topics.get(&t.topic);
            let known = image.topic(&t.topic);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let mut r = EpochEndOffset {
                        partition: p.partition,
                        leader_epoch: -1,
                        end_offset: -1,
                        ..Default::default()
                    };
                    let Some(part) = topic.as_ref().and_then(|topic| topic.partition(p.partition)) else {
                        r.error_code = super::not_held(known.map(|t| &**t), p.partition) as i16;
                        return r;
                    };
                    if let Err(code) = part.check_serves_clients(p.current_leader_epoch) {
                        r.error_code = code as i16;
                        return r;
                    }
                    let (epoch, end) = part.lock().log.end_offset_for_epoch(p.leader_epoch);
                    r.leader_epoch = epoch;
                    r.end_offset = end;
                    r
                })
                .collect();
            OffsetForLeaderTopicResult {
                topic: t.topic,
                partitions,
            }
        })
        .collect();
    OffsetForLeaderEpochResponse {
        topics,
        ..Default::default()
    }
}
