//! Consumer group membership and admin: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, DescribeGroups, ListGroups, DeleteGroups. The protocol lives in
//! `group::state`; these turn requests into its calls, version by version.

use crate::group::memory::Refused;
use crate::group::state::{JoinRequest, JoinResult, SyncResult};
use crate::Broker;
use std::net::SocketAddr;
use std::sync::Arc;
use wire::messages::delete_groups_response::DeletableGroupResult;
use wire::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use wire::messages::find_coordinator_response::Coordinator;
use wire::messages::join_group_response::JoinGroupResponseMember;
use wire::messages::leave_group_response::MemberResponse;
use wire::messages::list_groups_response::ListedGroup;
use wire::messages::*;

pub fn find_coordinator(broker: &Broker, version: i16, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
    let keys = if version >= 4 {
        req.coordinator_keys
    } else {
        vec![req.key]
    };
    let coordinators: Vec<Coordinator> = keys
        .into_iter()
        .map(|key| {
            let mut c = Coordinator {
                key,
                node_id: -1,
                host: String::new(),
                port: -1,
                ..Default::default()
            };
            let coordinator = match req.key_type {
                // Groups: the broker holding the group's `__consumer_offsets` partition.
                0 => group_coordinator(broker, &c.key),
                // Transactions: InitProducerId refuses transactional ids with a clear error;
                // the coordinator lookup itself succeeds so clients get that far.
                1 => Ok(broker.config.node_id),
                t => Err((
                    ErrorCode::InvalidRequest,
                    format!("unsupported coordinator key type {t}"),
                )),
            };
            // Where it is, as its registration in the image says.
            let found = coordinator.and_then(|id| {
                super::live_brokers(broker)
                    .into_iter()
                    .find(|b| b.id == id)
                    .ok_or_else(|| {
                        (
                            ErrorCode::CoordinatorNotAvailable,
                            format!("broker {id} is not registered"),
                        )
                    })
            });
            match found {
                Ok(b) => {
                    c.node_id = b.id;
                    c.host = b.host;
                    c.port = i32::from(b.port);
                }
                Err((code, message)) => {
                    c.error_code = code as i16;
                    c.error_message = Some(message);
                }
            }
            c
        })
        .collect();
    if version >= 4 {
        return FindCoordinatorResponse {
            coordinators,
            ..Default::default()
        };
    }
    let c = coordinators.into_iter().next().unwrap_or_default();
    FindCoordinatorResponse {
        error_code: c.error_code,
        error_message: c.error_message,
        node_id: c.node_id,
        host: c.host,
        port: c.port,
        ..Default::default()
    }
}

/// The broker that coordinates `group`: the leader of its `__consumer_offsets` partition, or,
/// before the topic exists, the active controller (which creates it on the group's first
/// request; a node alone is its own). This node loads its groups first when it is the one.
fn group_coordinator(broker: &Broker, group: &str) -> Result<i32, (ErrorCode, String)> {
    let image = broker.metadata.image();
    let id = match image.topic(crate::topics::CONSUMER_OFFSETS) {
        Some(t) => t
            .partition(crate::group::coordinator::partition_for(
                group,
                t.partition_count() as i32,
            ))
            .map(|p| p.leader),
        None => broker.metadata.leader(),
    }
    .ok_or_else(|| {
        (
            ErrorCode::CoordinatorNotAvailable,
            "no coordinator is known yet".to_string(),
        )
    })?;
    if id == broker.config.node_id {
        broker.groups.ready(&broker.topics).map_err(|e| (e, format!("{e:?}")))?;
    }
    Ok(id)
}

/// A fresh member id in Kafka's form: the client (or instance) id, a dash, a random UUID
/// (drawn from the broker's seeded `Random`).
fn new_member_id(broker: &Broker, prefix: &str) -> String {
    let b = broker.random.bytes16();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{prefix}-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Logs (rate-limited) a join or sync refused by `group.max.member.metadata.bytes` or
/// `group.max.memory.bytes`.
fn refused_for_memory(broker: &Broker, peer: SocketAddr, group_id: &str, api: &str, e: ErrorCode) {
    if let Some(suppressed) = crate::ratelog::allow(&format!("group-memory {}", peer.ip())) {
        let c = broker.groups.config();
        tracing::warn!(
            %peer,
            group = %group_id.escape_debug(),
            api,
            error = e.name(),
            held = broker.groups.memory.held(),
            member_max = c.member_metadata_bytes_max,
            total_max = c.memory_bytes_max,
            suppressed,
            "refused: group.max.member.metadata.bytes or group.max.memory.bytes"
        );
    }
}

/// The coordinator's part runs on the blocking pool: it may write (and fsync) the group's
/// record in `__consumer_offsets`. The answer is awaited back on the async worker.
pub async fn join_group(
    broker: &Arc<Broker>,
    version: i16,
    client_id: Option<&str>,
    peer: SocketAddr,
    req: JoinGroupRequest,
) -> JoinGroupResponse {
    let error_response = |e: ErrorCode, member_id: String| JoinGroupResponse {
        error_code: e as i16,
        generation_id: -1,
        member_id,
        // Before v7 the protocol name is not nullable.
        protocol_name: (version < 7).then(String::new),
        ..Default::default()
    };
    if req.group_id.is_empty() {
        return error_response(ErrorCode::InvalidGroupId, req.member_id);
    }
    // Counted copies of the metadata, not slices that would pin the request frame.
    let admitted = broker
        .groups
        .memory
        .admit(peer.ip().to_canonical(), req.protocols.iter().map(|p| &p.metadata[..]));
    let metadata = match admitted {
        Ok(m) => m,
        Err(why) => {
            let e = match why {
                Refused::TooLarge => ErrorCode::MessageTooLarge,
                Refused::Full => ErrorCode::CoordinatorLoadInProgress,
            };
            refused_for_memory(broker, peer, &req.group_id, "JoinGroup", e);
            return error_response(e, req.member_id);
        }
    };
    let client_id = client_id.unwrap_or("").to_string();
    let prefix = req.group_instance_id.clone().unwrap_or_else(|| client_id.clone());
    let join = JoinRequest {
        member_id: req.member_id,
        group_instance_id: req.group_instance_id,
        client_id,
        client_host: format!("/{}", peer.ip()),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: the session timeout serves for both.
        rebalance_timeout_ms: if version == 0 {
            req.session_timeout_ms
        } else {
            req.rebalance_timeout_ms
        },
        protocol_type: req.protocol_type,
        protocols: req.protocols.into_iter().map(|p| p.name).zip(metadata).collect(),
        require_known_member_id: version >= 4,
        new_member_id: new_member_id(broker, &prefix),
    };
    let member_id = join.member_id.clone();
    let b = broker.clone();
    let group_id = req.group_id.clone();
    let started = tokio::task::spawn_blocking(move || b.groups.join_begin(&b.topics, &group_id, join)).await;
    let gone = || JoinResult::error(ErrorCode::CoordinatorNotAvailable, &member_id);
    let r = match started {
        Ok(started) => started.answer(gone).await,
        // The blocking pool is shutting down (or the call panicked, in tests).
        Err(_) => gone(),
    };
    tracing::debug!(group = req.group_id, member = member_id, error = ?r.error, generation = r.generation, leader = r.leader, "join answered");
    JoinGroupResponse {
        error_code: r.error as i16,
        generation_id: r.generation,
        protocol_type: r.protocol_type,
        // Before v7 the protocol name is not nullable.
        protocol_name: if version < 7 {
            Some(r.protocol_name.unwrap_or_default())
        } else {
            r.protocol_name
        },
        leader: r.leader,
        member_id: r.member_id,
        members: r
            .members
            .into_iter()
            .map(|m| JoinGroupResponseMember {
                member_id: m.member_id,
                group_instance_id: m.group_instance_id,
                metadata: m.metadata,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// As `join_group`, the coordinator's part (writing the assignment) runs on the blocking pool.
pub async fn sync_group(
    broker: &Arc<Broker>,
    _version: i16,
    peer: SocketAddr,
    req: SyncGroupRequest,
) -> SyncGroupResponse {
    if req.group_id.is_empty() {
        return SyncGroupResponse {
            error_code: ErrorCode::InvalidGroupId as i16,
            ..Default::default()
        };
    }
    // The leader's assignments, each a counted copy (see `group::memory`).
    let mut assignments = Vec::with_capacity(req.assignments.len());
    for a in req.assignments {
        match broker
            .groups
            .memory
            .admit(peer.ip().to_canonical(), [&a.assignment[..]])
        {
            Ok(mut copy) => assignments.push((a.member_id, copy.remove(0))),
            Err(why) => {
                let e = match why {
                    Refused::TooLarge => ErrorCode::MessageTooLarge,
                    Refused::Full => ErrorCode::RebalanceInProgress,
                };
                refused_for_memory(broker, peer, &req.group_id, "SyncGroup", e);
                return SyncGroupResponse {
                    error_code: e as i16,
                    ..Default::default()
                };
            }
        }
    }
    let b = broker.clone();
    let started = tokio::task::spawn_blocking(move || {
        b.groups.sync_begin(
            &b.topics,
            &req.group_id,
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
            req.protocol_type.as_deref(),
            req.protocol_name.as_deref(),
            assignments,
        )
    })
    .await;
    let gone = || SyncResult::error(ErrorCode::CoordinatorNotAvailable);
    let r = match started {
        Ok(started) => started.answer(gone).await,
        Err(_) => gone(),
    };
    SyncGroupResponse {
        error_code: r.error as i16,
        protocol_type: r.protocol_type,
        protocol_name: r.protocol_name,
        assignment: r.assignment,
        ..Default::default()
    }
}

pub fn heartbeat(broker: &Broker, _version: i16, req: HeartbeatRequest) -> HeartbeatResponse {
    let e = if req.group_id.is_empty() {
        ErrorCode::InvalidGroupId
    } else {
        broker.groups.heartbeat(
            &broker.topics,
            &req.group_id,
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
        )
    };
    HeartbeatResponse {
        error_code: e as i16,
        ..Default::default()
    }
}

pub fn leave_group(broker: &Broker, version: i16, req: LeaveGroupRequest) -> LeaveGroupResponse {
    // Before v3 one member leaves, named at the top; from v3 a batch, each with its error.
    let leaving: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.clone(), m.group_instance_id.clone()))
            .collect()
    } else {
        vec![(req.member_id.clone(), None)]
    };
    let (top, errors) = if req.group_id.is_empty() {
        (ErrorCode::InvalidGroupId, vec![])
    } else {
        broker.groups.leave(&broker.topics, &req.group_id, &leaving)
    };
    if version < 3 {
        let e = if top != ErrorCode::None {
            top
        } else {
            errors.first().copied().unwrap_or(ErrorCode::UnknownMemberId)
        };
        return LeaveGroupResponse {
            error_code: e as i16,
            ..Default::default()
        };
    }
    LeaveGroupResponse {
        error_code: top as i16,
        members: if top != ErrorCode::None {
            vec![]
        } else {
            leaving
                .into_iter()
                .zip(errors)
                .map(|((member_id, group_instance_id), e)| MemberResponse {
                    member_id,
                    group_instance_id,
                    error_code: e as i16,
                    ..Default::default()
                })
                .collect()
        },
        ..Default::default()
    }
}

pub fn describe_groups(broker: &Broker, _version: i16, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|group_id| {
            let mut d = DescribedGroup {
                group_id: group_id.clone(),
                authorized_operations: super::operations::if_asked(
                    req.include_authorized_operations,
                    super::operations::GROUP,
                ),
                ..Default::default()
            };
            match broker.groups.describe(&broker.topics, &group_id) {
                Err(e) => d.error_code = e as i16,
                // As Kafka before DescribeGroups v6: an unknown group is described as Dead.
                Ok(None) => d.group_state = "Dead".into(),
                Ok(Some(g)) => {
                    d.group_state = g.state.into();
                    d.protocol_type = g.protocol_type;
                    d.protocol_data = g.protocol_data;
                    d.members = g
                        .members
                        .into_iter()
                        .map(|m| DescribedGroupMember {
                            member_id: m.member_id,
                            group_instance_id: m.group_instance_id,
                            client_id: m.client_id,
                            client_host: m.client_host,
                            member_metadata: m.metadata,
                            member_assignment: m.assignment,
                            ..Default::default()
                        })
                        .collect();
                }
            }
            d
        })
        .collect();
    DescribeGroupsResponse {
        groups,
        ..Default::default()
    }
}

pub fn list_groups(broker: &Broker, _version: i16, req: ListGroupsRequest) -> ListGroupsResponse {
    let state_ok =
        |s: &str| req.states_filter.is_empty() || req.states_filter.iter().any(|f| f.eq_ignore_ascii_case(s));
    // Every group here uses the classic protocol.
    let type_ok = req.types_filter.is_empty() || req.types_filter.iter().any(|f| f.eq_ignore_ascii_case("classic"));
    let groups = broker
        .groups
        .list()
        .into_iter()
        .filter(|(_, _, state)| type_ok && state_ok(state))
        .map(|(group_id, protocol_type, state)| ListedGroup {
            group_id,
            protocol_type,
            group_state: state.to_string(),
            group_type: "classic".into(),
            ..Default::default()
        })
        .collect();
    ListGroupsResponse {
        groups,
        ..Default::default()
    }
}

pub fn delete_groups(broker: &Broker, _version: i16, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let results = req
        .groups_names
        .into_iter()
        .map(|group_id| {
            // As Kafka, the empty group id is a group like any other here.
            let e = broker.groups.delete_group(&broker.topics, &group_id);
            DeletableGroupResult {
                group_id,
                error_code: e as i16,
                ..Default::default()
            }
        })
        .collect();
    DeleteGroupsResponse {
        results,
        ..Default::default()
    }
}
