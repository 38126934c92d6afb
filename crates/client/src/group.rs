//! Classic group membership for consumers: JoinGroup/SyncGroup with the leader running the
//! assignor, heartbeats in a background task, and the consumer protocol's subscription and
//! assignment encodings.

use crate::assignor::{Assignor, MemberSubscription, TopicPartition};
use crate::cluster::Client;
use crate::error::{Error, Result};
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wire::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use wire::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use wire::messages::join_group_request::JoinGroupRequestProtocol;
use wire::messages::sync_group_request::SyncGroupRequestAssignment;
use wire::messages::*;
use wire::{Decode, Encode, ErrorCode};

/// The consumer-protocol version this client writes (1 adds owned partitions).
const PROTOCOL_VERSION: i16 = 1;

fn group_by_topic(tps: &[TopicPartition]) -> BTreeMap<String, Vec<i32>> {
    let mut m: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p) in tps {
        m.entry(t.clone()).or_default().push(*p);
    }
    m
}

pub fn encode_subscription(topics: &[String], owned: &[TopicPartition]) -> Bytes {
    let s = ConsumerProtocolSubscription {
        topics: topics.to_vec(),
        user_data: None,
        owned_partitions: group_by_topic(owned)
            .into_iter()
            .map(|(topic, partitions)| OwnedTopic { topic, partitions })
            .collect(),
        ..Default::default()
    };
    let mut b = BytesMut::new();
    b.put_i16(PROTOCOL_VERSION);
    // Encoding cannot fail: every field is valid in version 1.
    let _ = s.encode(&mut b, PROTOCOL_VERSION);
    b.freeze()
}

pub struct Subscription {
    pub topics: Vec<String>,
    pub owned: Vec<TopicPartition>,
}

/// Reads a member's subscription (any version; newer fields beyond 3 are ignored).
pub fn decode_subscription(data: &Bytes) -> Option<Subscription> {
    let mut b = data.clone();
    let version = wire::codec::get_i16(&mut b).ok()?;
    let s = ConsumerProtocolSubscription::decode(&mut b, version.clamp(0, 3)).ok()?;
    Some(Subscription {
        topics: s.topics,
        owned: s
            .owned_partitions
            .into_iter()
            .flat_map(|t| t.partitions.into_iter().map(move |p| (t.topic.clone(), p)))
            .collect(),
    })
}

pub fn encode_assignment(tps: &[TopicPartition]) -> Bytes {
    let a = ConsumerProtocolAssignment {
        assigned_partitions: group_by_topic(tps)
            .into_iter()
            .map(|(topic, partitions)| AssignedTopic { topic, partitions })
            .collect(),
        user_data: None,
    };
    let mut b = BytesMut::new();
    b.put_i16(PROTOCOL_VERSION);
    let _ = a.encode(&mut b, PROTOCOL_VERSION);
    b.freeze()
}

/// Reads an assignment; an empty byte string is an empty assignment.
pub fn decode_assignment(data: &Bytes) -> Option<Vec<TopicPartition>> {
    if data.is_empty() {
        return Some(vec![]);
    }
    let mut b = data.clone();
    let version = wire::codec::get_i16(&mut b).ok()?;
    let a = ConsumerProtocolAssignment::decode(&mut b, version.clamp(0, 3)).ok()?;
    Some(
        a.assigned_partitions
            .into_iter()
            .flat_map(|t| t.partitions.into_iter().map(move |p| (t.topic.clone(), p)))
            .collect(),
    )
}

/// Settings for membership.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    pub group_id: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub assignors: Vec<Assignor>,
}

/// The result of one successful join + sync.
#[derive(Debug, Clone)]
pub struct Joined {
    pub member_id: String,
    pub generation: i32,
    pub assignor: Assignor,
    pub assignment: Vec<TopicPartition>,
}

/// Flags the heartbeat task raises for the consumer's next poll.
#[derive(Debug, Default)]
pub struct Signals {
    pub rejoin: AtomicBool,
    /// The coordinator no longer knows the member id: join as a new member.
    pub forget_member: AtomicBool,
    /// The member was fenced (unknown member or stale generation): its partitions may already
    /// belong to another member, so it drops them without committing (KIP-429's "lost").
    pub lost: AtomicBool,
}

/// Joins (or rejoins) the group and returns the assignment. `member_id` is updated as the
/// coordinator hands one out.
pub async fn join(
    client: &Client,
    s: &GroupSettings,
    member_id: &mut String,
    topics: &[String],
    owned: &[TopicPartition],
) -> Result<Joined> {
    let g = &s.group_id;
    let metadata = encode_subscription(topics, owned);
    let mut attempts = 0;
    loop {
        attempts += 1;
        if attempts > 50 {
            return Err(Error::Timeout {
                after: s.rebalance_timeout,
                what: format!("joining group '{g}'"),
            });
        }
        let req = JoinGroupRequest {
            group_id: g.clone(),
            session_timeout_ms: s.session_timeout.as_millis() as i32,
            rebalance_timeout_ms: s.rebalance_timeout.as_millis() as i32,
            member_id: member_id.clone(),
            group_instance_id: None,
            protocol_type: "consumer".into(),
            protocols: s
                .assignors
                .iter()
                .map(|a| JoinGroupRequestProtocol {
                    name: a.name().into(),
                    metadata: metadata.clone(),
                })
                .collect(),
            reason: None,
        };
        let resp = client.send_coordinator(g, &req, |r| r.error_code).await?;
        let code = ErrorCode::from_code(resp.error_code);
        match code {
            Some(ErrorCode::None) => {}
            Some(ErrorCode::MemberIdRequired) => {
                *member_id = resp.member_id;
                continue;
            }
            Some(ErrorCode::UnknownMemberId) => {
                member_id.clear();
                continue;
            }
            Some(ErrorCode::RebalanceInProgress)
            | Some(ErrorCode::CoordinatorLoadInProgress)
            | Some(ErrorCode::NotCoordinator)
            | Some(ErrorCode::CoordinatorNotAvailable) => {
                client.forget_coordinator(g);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            _ => Error::check(resp.error_code, || format!("joining group '{g}'"), None)?,
        }
        *member_id = resp.member_id.clone();
        let protocol = resp.protocol_name.clone().unwrap_or_default();
        let assignor = Assignor::from_name(&protocol).ok_or_else(|| Error::Protocol {
            addr: String::new(),
            detail: format!("group '{g}' chose assignor '{protocol}', which this client did not offer"),
        })?;
        let assignments = if resp.leader == resp.member_id {
            leader_assign(client, assignor, &resp.members).await?
        } else {
            vec![]
        };
        let sync = SyncGroupRequest {
            group_id: g.clone(),
            generation_id: resp.generation_id,
            member_id: member_id.clone(),
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some(protocol.clone()),
            assignments,
        };
        let sresp = client.send_coordinator(g, &sync, |r| r.error_code).await?;
        match ErrorCode::from_code(sresp.error_code) {
            Some(ErrorCode::None) => {}
            Some(ErrorCode::RebalanceInProgress) => continue,
            Some(ErrorCode::UnknownMemberId) | Some(ErrorCode::IllegalGeneration) => {
                if sresp.error_code == ErrorCode::UnknownMemberId.code() {
                    member_id.clear();
                }
                continue;
            }
            _ => Error::check(sresp.error_code, || format!("syncing group '{g}'"), None)?,
        }
        let assignment = decode_assignment(&sresp.assignment).ok_or_else(|| Error::Protocol {
            addr: String::new(),
            detail: format!("unreadable assignment from group '{g}'"),
        })?;
        return Ok(Joined {
            member_id: member_id.clone(),
            generation: resp.generation_id,
            assignor,
            assignment,
        });
    }
}

async fn leader_assign(
    client: &Client,
    assignor: Assignor,
    members: &[join_group_response::JoinGroupResponseMember],
) -> Result<Vec<SyncGroupRequestAssignment>> {
    let subs: Vec<MemberSubscription> = members
        .iter()
        .map(|m| {
            let s = decode_subscription(&m.metadata).unwrap_or(Subscription {
                topics: vec![],
                owned: vec![],
            });
            MemberSubscription {
                member_id: m.member_id.clone(),
                topics: s.topics,
                owned: s.owned,
            }
        })
        .collect();
    let mut topics: Vec<String> = subs.iter().flat_map(|s| s.topics.iter().cloned()).collect();
    topics.sort();
    topics.dedup();
    let mut counts = BTreeMap::new();
    if !topics.is_empty() {
        for (name, _, info) in client.refresh(&topics).await? {
            if let Some(i) = info {
                counts.insert(name, i.partitions.len() as i32);
            }
        }
    }
    let plan = assignor.assign(&subs, &counts);
    Ok(plan
        .into_iter()
        .map(|(member_id, tps)| SyncGroupRequestAssignment {
            member_id,
            assignment: encode_assignment(&tps),
        })
        .collect())
}

/// Heartbeats until the coordinator says to rejoin (or the member is gone); then raises the
/// flag and stops. Aborted when the consumer rejoins or closes.
pub fn spawn_heartbeat(
    client: Client,
    s: GroupSettings,
    member_id: String,
    generation: i32,
    signals: Arc<Signals>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(s.heartbeat_interval).await;
            let req = HeartbeatRequest {
                group_id: s.group_id.clone(),
                generation_id: generation,
                member_id: member_id.clone(),
                group_instance_id: None,
            };
            let code = match client.send_coordinator(&s.group_id, &req, |r| r.error_code).await {
                Ok(r) => r.error_code,
                Err(e) => {
                    tracing::debug!(error = %e, "heartbeat failed; trying again");
                    continue;
                }
            };
            match ErrorCode::from_code(code) {
                Some(ErrorCode::None) => {}
                Some(ErrorCode::UnknownMemberId) | Some(ErrorCode::FencedInstanceId) => {
                    signals.forget_member.store(true, Ordering::SeqCst);
                    signals.lost.store(true, Ordering::SeqCst);
                    signals.rejoin.store(true, Ordering::SeqCst);
                    return;
                }
                Some(ErrorCode::IllegalGeneration) => {
                    signals.lost.store(true, Ordering::SeqCst);
                    signals.rejoin.store(true, Ordering::SeqCst);
                    return;
                }
                // Keep heartbeating until the next poll rejoins, so a member busy between
                // polls is not expired by the session timeout during the rebalance.
                Some(ErrorCode::RebalanceInProgress) => signals.rejoin.store(true, Ordering::SeqCst),
                _ => tracing::debug!(code, "heartbeat error; trying again"),
            }
        }
    })
}

pub async fn leave(client: &Client, group: &str, member_id: &str) -> Result<()> {
    let req = LeaveGroupRequest {
        group_id: group.to_string(),
        member_id: member_id.to_string(),
        members: vec![leave_group_request::MemberIdentity {
            member_id: member_id.to_string(),
            group_instance_id: None,
            reason: Some("the consumer is closing".into()),
        }],
    };
    let resp = client.send_coordinator(group, &req, |r| r.error_code).await?;
    Error::check(resp.error_code, || format!("leaving group '{group}'"), None)
}
