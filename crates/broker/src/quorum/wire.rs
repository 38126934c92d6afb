//! The quorum core's messages (`raft::Message`) as Kafka's requests and responses: Vote (v2,
//! with KIP-996's pre-vote), BeginQuorumEpoch, EndQuorumEpoch, Fetch and FetchSnapshot, all
//! for partition 0 of `__cluster_metadata`. Pure conversions; the network driver sends them.
//!
//! Kafka's responses do not repeat what the request asked, so the requester keeps an
//! [`Asked`] per request in flight and reads the answer with it (the core's fetch id and
//! whether a vote was a pre-vote). Anything that is not for the metadata partition, or that
//! lacks what the core needs, is an error naming it: a peer's bytes are never trusted.

use bytes::{Bytes, BytesMut};
use raft::{BatchMeta, FetchAnswer, FetchError, Message, NodeId, Payload, SnapshotAnswer, SnapshotId};
use wire::messages::{
    begin_quorum_epoch_request as bqe, end_quorum_epoch_request as eqe, fetch_request as freq, fetch_response as fres,
    fetch_snapshot_request as fsreq, fetch_snapshot_response as fsres, vote_request as vreq, vote_response as vres,
    BeginQuorumEpochRequest, EndQuorumEpochRequest, FetchRequest, FetchResponse, FetchSnapshotRequest,
    FetchSnapshotResponse, VoteRequest, VoteResponse,
};
use wire::records::RecordBatch;
use wire::{ErrorCode, Uuid};

pub const TOPIC: &str = "__cluster_metadata";
/// Kafka's id of the metadata topic (`Uuid.METADATA_TOPIC_ID`, AAAAAAAAAAAAAAAAAAAAAQ).
pub const TOPIC_ID: Uuid = Uuid([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);

/// The versions the quorum speaks (Kafka 4.0's for Vote; pre-vote needs 2).
pub const VOTE_VERSION: i16 = 2;
pub const BEGIN_QUORUM_EPOCH_VERSION: i16 = 1;
pub const END_QUORUM_EPOCH_VERSION: i16 = 1;
pub const FETCH_VERSION: i16 = 17;
pub const FETCH_SNAPSHOT_VERSION: i16 = 1;

/// How long a leader may hold a fetch (the core parks it; this is what the request says).
const FETCH_MAX_WAIT_MS: i32 = 500;
/// The most a fetch or snapshot chunk asks for at once.
pub const FETCH_MAX_BYTES: i32 = 8 << 20;

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Vote(VoteRequest),
    BeginQuorumEpoch(BeginQuorumEpochRequest),
    EndQuorumEpoch(EndQuorumEpochRequest),
    Fetch(FetchRequest),
    FetchSnapshot(FetchSnapshotRequest),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Vote(VoteResponse),
    Fetch(FetchResponse),
    FetchSnapshot(FetchSnapshotResponse),
}

/// What a request in flight asked, to read its response in the core's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    Vote {
        pre_vote: bool,
    },
    /// Answered with an acknowledgement the core does not need.
    BeginQuorumEpoch,
    EndQuorumEpoch,
    Fetch {
        id: u64,
    },
    FetchSnapshot {
        id: u64,
    },
}

fn none_if_negative(id: i32) -> Option<NodeId> {
    (id >= 0).then_some(id)
}

fn error_of(code: i16) -> Result<Option<FetchError>, String> {
    match ErrorCode::from_code(code) {
        _ if code == 0 => Ok(None),
        Some(ErrorCode::FencedLeaderEpoch) => Ok(Some(FetchError::FencedLeaderEpoch)),
        Some(ErrorCode::NotLeaderOrFollower) => Ok(Some(FetchError::NotLeader)),
        Some(ErrorCode::SnapshotNotFound) => Ok(Some(FetchError::SnapshotNotFound)),
        _ => Err(format!("error code {code}")),
    }
}

fn code_of(e: Option<FetchError>) -> i16 {
    match e {
        None => 0,
        Some(FetchError::FencedLeaderEpoch) => ErrorCode::FencedLeaderEpoch.code(),
        Some(FetchError::NotLeader) => ErrorCode::NotLeaderOrFollower.code(),
        Some(FetchError::SnapshotNotFound) => ErrorCode::SnapshotNotFound.code(),
    }
}

/// A request for the core's message `m` to node `to`, and what to remember to read its answer;
/// `None` for a message that answers a request (see [`response`]).
/// `cluster_id`: this node's cluster, or `None` while it does not know it yet (a new node that
/// learns it from the log).
pub fn request(cluster_id: Option<&str>, to: NodeId, m: &Message<Bytes>) -> Option<(Request, Asked)> {
    let cluster_id = cluster_id.map(str::to_string);
    Some(match m {
        Message::Vote {
            epoch,
            candidate,
            last_epoch,
            end_offset,
            pre_vote,
        } => (
            Request::Vote(VoteRequest {
                cluster_id,
                voter_id: to,
                topics: vec![vreq::TopicData {
                    topic_name: TOPIC.into(),
                    partitions: vec![vreq::PartitionData {
                        partition_index: 0,
                        candidate_epoch: *epoch,
                        candidate_id: *candidate,
                        last_offset_epoch: *last_epoch,
                        last_offset: *end_offset,
                        pre_vote: *pre_vote,
                        ..Default::default()
                    }],
                }],
            }),
            Asked::Vote { pre_vote: *pre_vote },
        ),
        Message::BeginQuorumEpoch { epoch, leader } => (
            Request::BeginQuorumEpoch(BeginQuorumEpochRequest {
                cluster_id,
                voter_id: to,
                topics: vec![bqe::TopicData {
                    topic_name: TOPIC.into(),
                    partitions: vec![bqe::PartitionData {
                        partition_index: 0,
                        leader_id: *leader,
                        leader_epoch: *epoch,
                        ..Default::default()
                    }],
                }],
                ..Default::default()
            }),
            Asked::BeginQuorumEpoch,
        ),
        Message::EndQuorumEpoch {
            epoch,
            leader,
            preferred_successors,
        } => (
            Request::EndQuorumEpoch(EndQuorumEpochRequest {
                cluster_id,
                topics: vec![eqe::TopicData {
                    topic_name: TOPIC.into(),
                    partitions: vec![eqe::PartitionData {
                        partition_index: 0,
                        leader_id: *leader,
                        leader_epoch: *epoch,
                        // Version 0 names them; version 1 (KIP-853) names them with their
                        // directories, which static voters do not have.
                        preferred_successors: preferred_successors.clone(),
                        preferred_candidates: preferred_successors
                            .iter()
                            .map(|id| eqe::ReplicaInfo {
                                candidate_id: *id,
                                candidate_directory_id: Uuid::ZERO,
                            })
                            .collect(),
                    }],
                }],
                ..Default::default()
            }),
            Asked::EndQuorumEpoch,
        ),
        Message::Fetch {
            id,
            epoch,
            replica,
            fetch_offset,
            last_fetched_epoch,
        } => (
            Request::Fetch(FetchRequest {
                cluster_id,
                replica_id: -1,
                replica_state: freq::ReplicaState {
                    replica_id: *replica,
                    replica_epoch: -1,
                },
                max_wait_ms: FETCH_MAX_WAIT_MS,
                min_bytes: 0,
                max_bytes: FETCH_MAX_BYTES,
                topics: vec![freq::FetchTopic {
                    topic: TOPIC.into(),
                    topic_id: TOPIC_ID,
                    partitions: vec![freq::FetchPartition {
                        partition: 0,
                        current_leader_epoch: *epoch,
                        fetch_offset: *fetch_offset,
                        last_fetched_epoch: *last_fetched_epoch,
                        log_start_offset: -1,
                        partition_max_bytes: FETCH_MAX_BYTES,
                        ..Default::default()
                    }],
                }],
                ..Default::default()
            }),
            Asked::Fetch { id: *id },
        ),
        Message::FetchSnapshot {
            id,
            epoch,
            replica,
            snapshot,
            position,
        } => (
            Request::FetchSnapshot(FetchSnapshotRequest {
                cluster_id,
                replica_id: *replica,
                max_bytes: FETCH_MAX_BYTES,
                topics: vec![fsreq::TopicSnapshot {
                    name: TOPIC.into(),
                    partitions: vec![fsreq::PartitionSnapshot {
                        partition: 0,
                        current_leader_epoch: *epoch,
                        snapshot_id: fsreq::SnapshotId {
                            end_offset: snapshot.end_offset,
                            epoch: snapshot.epoch,
                        },
                        position: *position as i64,
                        ..Default::default()
                    }],
                }],
            }),
            Asked::FetchSnapshot { id: *id },
        ),
        Message::VoteResponse { .. } | Message::FetchResponse(_) | Message::FetchSnapshotResponse(_) => return None,
    })
}

/// The one partition of a request or response, which must be the metadata partition.
fn only<'a, T>(what: &str, topics: &'a [T], name: impl Fn(&T) -> &str) -> Result<&'a T, String> {
    match topics {
        [t] if name(t) == TOPIC => Ok(t),
        [t] => Err(format!("{what} for topic {:?}, not {TOPIC}", name(t))),
        _ => Err(format!("{what} for {} topics, not one", topics.len())),
    }
}

fn only_partition<'a, T>(what: &str, parts: &'a [T], index: impl Fn(&T) -> i32) -> Result<&'a T, String> {
    match parts {
        [p] if index(p) == 0 => Ok(p),
        _ => Err(format!("{what} for other partitions than {TOPIC}-0")),
    }
}

/// The core's message for a request from a peer, with the peer's node id. A fetch's id is 0:
/// it matters only to the fetcher, which matches the answer by its own [`Asked`].
/// The cluster a request says its sender belongs to (`None`: it does not say).
pub fn cluster_id_of(r: &Request) -> Option<&str> {
    match r {
        Request::Vote(v) => v.cluster_id.as_deref(),
        Request::BeginQuorumEpoch(b) => b.cluster_id.as_deref(),
        Request::EndQuorumEpoch(e) => e.cluster_id.as_deref(),
        Request::Fetch(f) => f.cluster_id.as_deref(),
        Request::FetchSnapshot(f) => f.cluster_id.as_deref(),
    }
}

pub fn from_request(r: &Request) -> Result<(NodeId, Message<Bytes>), String> {
    match r {
        Request::Vote(v) => {
            let t = only("a vote", &v.topics, |t| &t.topic_name)?;
            let p = only_partition("a vote", &t.partitions, |p| p.partition_index)?;
            Ok((
                p.candidate_id,
                Message::Vote {
                    epoch: p.candidate_epoch,
                    candidate: p.candidate_id,
                    last_epoch: p.last_offset_epoch,
                    end_offset: p.last_offset,
                    pre_vote: p.pre_vote,
                },
            ))
        }
        Request::BeginQuorumEpoch(b) => {
            let t = only("BeginQuorumEpoch", &b.topics, |t| &t.topic_name)?;
            let p = only_partition("BeginQuorumEpoch", &t.partitions, |p| p.partition_index)?;
            Ok((
                p.leader_id,
                Message::BeginQuorumEpoch {
                    epoch: p.leader_epoch,
                    leader: p.leader_id,
                },
            ))
        }
        Request::EndQuorumEpoch(e) => {
            let t = only("EndQuorumEpoch", &e.topics, |t| &t.topic_name)?;
            let p = only_partition("EndQuorumEpoch", &t.partitions, |p| p.partition_index)?;
            Ok((
                p.leader_id,
                Message::EndQuorumEpoch {
                    epoch: p.leader_epoch,
                    leader: p.leader_id,
                    preferred_successors: if p.preferred_candidates.is_empty() {
                        p.preferred_successors.clone()
                    } else {
                        p.preferred_candidates.iter().map(|c| c.candidate_id).collect()
                    },
                },
            ))
        }
        Request::Fetch(f) => {
            // From version 13 a fetch names topics by id only.
            let t = only("a fetch", &f.topics, |t| {
                if t.topic_id == TOPIC_ID {
                    TOPIC
                } else {
                    &t.topic
                }
            })?;
            let p = only_partition("a fetch", &t.partitions, |p| p.partition)?;
            // Kafka puts the replica in ReplicaState from version 15; before, in ReplicaId.
            let replica = if f.replica_state.replica_id >= 0 {
                f.replica_state.replica_id
            } else {
                f.replica_id
            };
            if replica < 0 {
                return Err("a fetch of the metadata log from a client, not a replica".into());
            }
            Ok((
                replica,
                Message::Fetch {
                    id: 0,
                    epoch: p.current_leader_epoch,
                    replica,
                    fetch_offset: p.fetch_offset,
                    last_fetched_epoch: p.last_fetched_epoch,
                },
            ))
        }
        Request::FetchSnapshot(s) => {
            let t = only("FetchSnapshot", &s.topics, |t| &t.name)?;
            let p = only_partition("FetchSnapshot", &t.partitions, |p| p.partition)?;
            let position = u64::try_from(p.position).map_err(|_| format!("snapshot position {}", p.position))?;
            Ok((
                s.replica_id,
                Message::FetchSnapshot {
                    id: 0,
                    epoch: p.current_leader_epoch,
                    replica: s.replica_id,
                    snapshot: SnapshotId {
                        end_offset: p.snapshot_id.end_offset,
                        epoch: p.snapshot_id.epoch,
                    },
                    position,
                },
            ))
        }
    }
}

/// The response for the core's answer `m` (a fetch answer with its batches already filled);
/// `None` for a message that is a request.
pub fn response(m: &Message<Bytes>) -> Option<Response> {
    Some(match m {
        Message::VoteResponse {
            epoch, leader, granted, ..
        } => Response::Vote(VoteResponse {
            error_code: 0,
            topics: vec![vres::TopicData {
                topic_name: TOPIC.into(),
                partitions: vec![vres::PartitionData {
                    partition_index: 0,
                    error_code: 0,
                    leader_id: leader.unwrap_or(-1),
                    leader_epoch: *epoch,
                    vote_granted: *granted,
                }],
            }],
            ..Default::default()
        }),
        Message::FetchResponse(FetchAnswer {
            epoch,
            leader,
            error,
            high_watermark,
            diverging,
            snapshot,
            batches,
            ..
        }) => {
            let mut records = BytesMut::new();
            for (_, p) in batches {
                if let Payload::Data(b) = p {
                    records.extend_from_slice(b);
                }
            }
            let mut part = fres::PartitionData {
                partition_index: 0,
                error_code: code_of(*error),
                high_watermark: *high_watermark,
                current_leader: fres::LeaderIdAndEpoch {
                    leader_id: leader.unwrap_or(-1),
                    leader_epoch: *epoch,
                },
                records: Some(records.freeze()),
                ..Default::default()
            };
            if let Some((e, end)) = diverging {
                part.diverging_epoch = fres::EpochEndOffset {
                    epoch: *e,
                    end_offset: *end,
                };
            }
            if let Some(s) = snapshot {
                part.snapshot_id = fres::SnapshotId {
                    end_offset: s.end_offset,
                    epoch: s.epoch,
                };
            }
            Response::Fetch(FetchResponse {
                responses: vec![fres::FetchableTopicResponse {
                    topic: TOPIC.into(),
                    topic_id: TOPIC_ID,
                    partitions: vec![part],
                }],
                ..Default::default()
            })
        }
        Message::FetchSnapshotResponse(SnapshotAnswer {
            epoch,
            leader,
            error,
            snapshot,
            size,
            position,
            chunk,
            ..
        }) => Response::FetchSnapshot(FetchSnapshotResponse {
            topics: vec![fsres::TopicSnapshot {
                name: TOPIC.into(),
                partitions: vec![fsres::PartitionSnapshot {
                    index: 0,
                    error_code: code_of(*error),
                    snapshot_id: fsres::SnapshotId {
                        end_offset: snapshot.end_offset,
                        epoch: snapshot.epoch,
                    },
                    current_leader: fsres::LeaderIdAndEpoch {
                        leader_id: leader.unwrap_or(-1),
                        leader_epoch: *epoch,
                    },
                    size: *size as i64,
                    position: *position as i64,
                    unaligned_records: Bytes::from(chunk.clone()),
                }],
            }],
            ..Default::default()
        }),
        _ => return None,
    })
}

/// The core's message for a response to a request that asked `asked`. A fetch's records are
/// cut at the first batch that does not parse (a leader may end a response with part of one).
pub fn from_response(asked: Asked, r: &Response) -> Result<Message<Bytes>, String> {
    match (asked, r) {
        (Asked::Vote { pre_vote }, Response::Vote(v)) => {
            if v.error_code != 0 {
                return Err(format!("vote refused with error code {}", v.error_code));
            }
            let t = only("a vote answer", &v.topics, |t| &t.topic_name)?;
            let p = only_partition("a vote answer", &t.partitions, |p| p.partition_index)?;
            Ok(Message::VoteResponse {
                epoch: p.leader_epoch,
                leader: none_if_negative(p.leader_id),
                granted: p.vote_granted && p.error_code == 0,
                pre_vote,
            })
        }
        (Asked::Fetch { id }, Response::Fetch(f)) => {
            if f.error_code != 0 {
                return Err(format!("fetch refused with error code {}", f.error_code));
            }
            let t = only("a fetch answer", &f.responses, |t| {
                if t.topic_id == TOPIC_ID {
                    TOPIC
                } else {
                    &t.topic
                }
            })?;
            let p = only_partition("a fetch answer", &t.partitions, |p| p.partition_index)?;
            let mut batches = Vec::new();
            for b in RecordBatch::iter_all(p.records.clone().unwrap_or_default()) {
                let Ok(b) = b else { break };
                let meta = BatchMeta {
                    base_offset: b.base_offset(),
                    last_offset: b.last_offset(),
                    epoch: b.partition_leader_epoch(),
                };
                batches.push((meta, Payload::Data(b.into_bytes())));
            }
            Ok(Message::FetchResponse(FetchAnswer {
                id,
                epoch: p.current_leader.leader_epoch,
                leader: none_if_negative(p.current_leader.leader_id),
                error: error_of(p.error_code)?,
                high_watermark: p.high_watermark,
                diverging: (p.diverging_epoch.epoch >= 0)
                    .then_some((p.diverging_epoch.epoch, p.diverging_epoch.end_offset)),
                snapshot: (p.snapshot_id.epoch >= 0 && p.snapshot_id.end_offset >= 0).then_some(SnapshotId {
                    end_offset: p.snapshot_id.end_offset,
                    epoch: p.snapshot_id.epoch,
                }),
                batches,
            }))
        }
        (Asked::FetchSnapshot { id }, Response::FetchSnapshot(s)) => {
            if s.error_code != 0 {
                return Err(format!("snapshot fetch refused with error code {}", s.error_code));
            }
            let t = only("a snapshot answer", &s.topics, |t| &t.name)?;
            let p = only_partition("a snapshot answer", &t.partitions, |p| p.index)?;
            let size = u64::try_from(p.size).map_err(|_| format!("snapshot size {}", p.size))?;
            let position = u64::try_from(p.position).map_err(|_| format!("snapshot position {}", p.position))?;
            Ok(Message::FetchSnapshotResponse(SnapshotAnswer {
                id,
                epoch: p.current_leader.leader_epoch,
                leader: none_if_negative(p.current_leader.leader_id),
                error: error_of(p.error_code)?,
                snapshot: SnapshotId {
                    end_offset: p.snapshot_id.end_offset,
                    epoch: p.snapshot_id.epoch,
                },
                size,
                position,
                chunk: p.unaligned_records.to_vec(),
            }))
        }
        (asked, _) => Err(format!("an answer that does not match the request ({asked:?})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::codec::{Decode, Encode};

    /// Through the bytes of the version the quorum speaks, as a peer would see them.
    fn over_the_wire<T: Encode + Decode>(m: &T, version: i16) -> T {
        let mut b = BytesMut::new();
        m.encode(&mut b, version).expect("encodes");
        T::decode(&mut b.freeze(), version).expect("decodes")
    }

    fn carry(r: Request) -> Request {
        match r {
            Request::Vote(v) => Request::Vote(over_the_wire(&v, VOTE_VERSION)),
            Request::BeginQuorumEpoch(v) => Request::BeginQuorumEpoch(over_the_wire(&v, BEGIN_QUORUM_EPOCH_VERSION)),
            Request::EndQuorumEpoch(v) => Request::EndQuorumEpoch(over_the_wire(&v, END_QUORUM_EPOCH_VERSION)),
            Request::Fetch(v) => Request::Fetch(over_the_wire(&v, FETCH_VERSION)),
            Request::FetchSnapshot(v) => Request::FetchSnapshot(over_the_wire(&v, FETCH_SNAPSHOT_VERSION)),
        }
    }

    fn carry_response(r: Response) -> Response {
        match r {
            Response::Vote(v) => Response::Vote(over_the_wire(&v, VOTE_VERSION)),
            Response::Fetch(v) => Response::Fetch(over_the_wire(&v, FETCH_VERSION)),
            Response::FetchSnapshot(v) => Response::FetchSnapshot(over_the_wire(&v, FETCH_SNAPSHOT_VERSION)),
        }
    }

    #[test]
    fn every_request_arrives_as_sent() {
        let snapshot = SnapshotId {
            end_offset: 40,
            epoch: 3,
        };
        let sent: Vec<(NodeId, Message<Bytes>)> = vec![
            (
                1,
                Message::Vote {
                    epoch: 5,
                    candidate: 1,
                    last_epoch: 4,
                    end_offset: 99,
                    pre_vote: true,
                },
            ),
            (
                1,
                Message::Vote {
                    epoch: 5,
                    candidate: 1,
                    last_epoch: 4,
                    end_offset: 99,
                    pre_vote: false,
                },
            ),
            (2, Message::BeginQuorumEpoch { epoch: 6, leader: 2 }),
            (
                2,
                Message::EndQuorumEpoch {
                    epoch: 6,
                    leader: 2,
                    preferred_successors: vec![3, 1],
                },
            ),
            (
                3,
                Message::Fetch {
                    id: 0,
                    epoch: 6,
                    replica: 3,
                    fetch_offset: 120,
                    last_fetched_epoch: 5,
                },
            ),
            (
                3,
                Message::FetchSnapshot {
                    id: 0,
                    epoch: 6,
                    replica: 3,
                    snapshot,
                    position: 4096,
                },
            ),
        ];
        for (from, m) in sent {
            let (req, _) = request(Some("cluster"), 9, &m).expect("a request");
            assert_eq!(from_request(&carry(req)).unwrap(), (from, m));
        }
        assert!(request(
            Some("c"),
            1,
            &Message::<Bytes>::VoteResponse {
                epoch: 1,
                leader: None,
                granted: true,
                pre_vote: false
            }
        )
        .is_none());
    }

    #[test]
    fn every_answer_arrives_as_sent() {
        let batch = |base: i64, epoch: i32| {
            let mut b = wire::records::BatchBuilder::new(wire::Compression::None);
            b.push(0, None, Some(b"v"), &[]);
            b.push(0, None, Some(b"w"), &[]);
            let mut bytes = BytesMut::from(&b.build()[..]);
            wire::records::stamp(&mut bytes, base, epoch);
            let bytes = bytes.freeze();
            (
                BatchMeta {
                    base_offset: base,
                    last_offset: base + 1,
                    epoch,
                },
                Payload::Data(bytes),
            )
        };
        let answers: Vec<(Asked, Message<Bytes>)> = vec![
            (
                Asked::Vote { pre_vote: true },
                Message::VoteResponse {
                    epoch: 5,
                    leader: None,
                    granted: true,
                    pre_vote: true,
                },
            ),
            (
                Asked::Vote { pre_vote: false },
                Message::VoteResponse {
                    epoch: 6,
                    leader: Some(2),
                    granted: false,
                    pre_vote: false,
                },
            ),
            (
                Asked::Fetch { id: 7 },
                Message::FetchResponse(FetchAnswer {
                    id: 7,
                    epoch: 6,
                    leader: Some(2),
                    error: None,
                    high_watermark: 12,
                    diverging: None,
                    snapshot: None,
                    batches: vec![batch(10, 5), batch(12, 6)],
                }),
            ),
            (
                Asked::Fetch { id: 8 },
                Message::FetchResponse(FetchAnswer {
                    id: 8,
                    epoch: 6,
                    leader: Some(2),
                    error: None,
                    high_watermark: 12,
                    diverging: Some((4, 30)),
                    snapshot: None,
                    batches: vec![],
                }),
            ),
            (
                Asked::Fetch { id: 9 },
                Message::FetchResponse(FetchAnswer {
                    id: 9,
                    epoch: 7,
                    leader: None,
                    error: Some(FetchError::NotLeader),
                    high_watermark: -1,
                    diverging: None,
                    snapshot: None,
                    batches: vec![],
                }),
            ),
            (
                Asked::Fetch { id: 10 },
                Message::FetchResponse(FetchAnswer {
                    id: 10,
                    epoch: 6,
                    leader: Some(2),
                    error: None,
                    high_watermark: 50,
                    diverging: None,
                    snapshot: Some(SnapshotId {
                        end_offset: 40,
                        epoch: 3,
                    }),
                    batches: vec![],
                }),
            ),
            (
                Asked::FetchSnapshot { id: 11 },
                Message::FetchSnapshotResponse(SnapshotAnswer {
                    id: 11,
                    epoch: 6,
                    leader: Some(2),
                    error: None,
                    snapshot: SnapshotId {
                        end_offset: 40,
                        epoch: 3,
                    },
                    size: 10_000,
                    position: 4096,
                    chunk: vec![1, 2, 3],
                }),
            ),
        ];
        for (asked, m) in answers {
            let r = response(&m).expect("an answer");
            assert_eq!(from_response(asked, &carry_response(r)).unwrap(), m);
        }
    }

    #[test]
    fn a_fetch_answer_cut_inside_a_batch_keeps_the_whole_batches() {
        let mut b = wire::records::BatchBuilder::new(wire::Compression::None);
        b.push(0, None, Some(b"v"), &[]);
        let one = b.build();
        let mut records = BytesMut::new();
        records.extend_from_slice(&one);
        records.extend_from_slice(&one[..one.len() / 2]);
        let r = Response::Fetch(FetchResponse {
            responses: vec![fres::FetchableTopicResponse {
                topic: TOPIC.into(),
                topic_id: TOPIC_ID,
                partitions: vec![fres::PartitionData {
                    records: Some(records.freeze()),
                    current_leader: fres::LeaderIdAndEpoch {
                        leader_id: 1,
                        leader_epoch: 2,
                    },
                    ..Default::default()
                }],
            }],
            ..Default::default()
        });
        let Message::FetchResponse(FetchAnswer { batches, .. }) = from_response(Asked::Fetch { id: 1 }, &r).unwrap()
        else {
            panic!("a fetch answer")
        };
        assert_eq!(batches.len(), 1);
    }

    #[test]
    fn requests_for_anything_but_the_metadata_partition_are_refused() {
        let (Request::Vote(mut v), _) = request(
            Some("c"),
            2,
            &Message::<Bytes>::Vote {
                epoch: 1,
                candidate: 1,
                last_epoch: 0,
                end_offset: 0,
                pre_vote: false,
            },
        )
        .unwrap() else {
            panic!("a vote")
        };
        v.topics[0].topic_name = "orders".into();
        assert!(from_request(&Request::Vote(v.clone())).unwrap_err().contains("orders"));
        v.topics[0].topic_name = TOPIC.into();
        v.topics[0].partitions[0].partition_index = 3;
        assert!(from_request(&Request::Vote(v)).is_err());
        // A client's fetch of the metadata log (no replica id) is not the quorum's.
        let (Request::Fetch(mut f), _) = request(
            Some("c"),
            2,
            &Message::<Bytes>::Fetch {
                id: 1,
                epoch: 1,
                replica: 3,
                fetch_offset: 0,
                last_fetched_epoch: 0,
            },
        )
        .unwrap() else {
            panic!("a fetch")
        };
        f.replica_state.replica_id = -1;
        assert!(from_request(&Request::Fetch(f)).is_err());
        // An answer to another kind of request is refused too.
        let r = response(&Message::<Bytes>::VoteResponse {
            epoch: 1,
            leader: None,
            granted: true,
            pre_vote: false,
        })
        .unwrap();
        assert!(from_response(Asked::Fetch { id: 1 }, &r).is_err());
    }
}
