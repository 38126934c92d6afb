//! One consumer group of the classic protocol, as a state machine with no I/O.
//!
//! States: `Empty` (no members; may hold committed offsets), `PreparingRebalance` (waiting for
//! members to (re)join), `CompletingRebalance` (joined; waiting for the leader's assignment),
//! `Stable` (assignment handed out), `Dead` (deleted: the coordinator drops such a group at
//! once, so `Dead` is only ever reported, for groups it does not know).
//!
//! Calls take the time (`now`, milliseconds, the wall clock as Kafka uses) and a [`Token`] for
//! a request that may have to wait (JoinGroup, SyncGroup). Answers come back as [`Reply`]
//! values addressed by token, now or from a later call: a join waits until every member has
//! rejoined or the rebalance timeout passes. Timers (session timeouts, rebalance timeouts, the
//! initial rebalance delay) advance only in [`Group::tick`]. Nothing here reads a clock, touches
//! a file or a socket, so tests drive it with simulated time.
//!
//! What the coordinator must persist is signalled by [`Group::take_dirty`] (the membership and
//! assignment changed) and by the offset calls, which it applies only after the write.

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use wire::messages::ErrorCode;

/// Identifies one waiting JoinGroup or SyncGroup request.
pub type Token = u64;

/// A JoinGroup from a member that has not yet sent one is answered after at most this long, so
/// a client that gave up and retried does not leave a defunct member behind for ever (Kafka's
/// `NewMemberJoinTimeoutMs`).
pub const NEW_MEMBER_JOIN_TIMEOUT_MS: i64 = 5 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Group-wide limits from the broker's configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `group.min.session.timeout.ms`
    pub session_timeout_min_ms: i32,
    /// `group.max.session.timeout.ms`
    pub session_timeout_max_ms: i32,
    /// `group.initial.rebalance.delay.ms`: an empty group waits this long (and again, while
    /// members keep arriving, up to the rebalance timeout) before its first generation.
    pub initial_rebalance_delay_ms: i32,
    /// `group.max.size`: a join past this many members gets `GROUP_MAX_SIZE_REACHED`.
    pub members_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            session_timeout_min_ms: 6000,
            session_timeout_max_ms: 1_800_000,
            initial_rebalance_delay_ms: 3000,
            members_max: 1000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member first gets `MEMBER_ID_REQUIRED` and its id, then rejoins.
    pub require_known_member_id: bool,
    /// The id given to this member if it is new (made by the caller, which has the randomness).
    pub new_member_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    pub error: ErrorCode,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata for the chosen protocol: for the leader only.
    pub members: Vec<JoinedMember>,
}

impl JoinResult {
    pub fn error(error: ErrorCode, member_id: &str) -> JoinResult {
        JoinResult {
            error,
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResult {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: ErrorCode) -> SyncResult {
        SyncResult {
            error,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// An answer to a waiting request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Join(Token, JoinResult),
    Sync(Token, SyncResult),
}

#[derive(Debug, Clone)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    join_waiter: Option<Token>,
    sync_waiter: Option<Token>,
    last_heartbeat: i64,
    is_new: bool,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn same_protocols(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    /// Whether the member is still alive at `now` (Kafka's `shouldKeepAlive`): a member waiting
    /// in a join or a sync cannot heartbeat, so it is kept (a new one for a bounded time).
    fn alive(&self, now: i64) -> bool {
        self.expires_at().is_none_or(|at| at > now)
    }

    /// When the member's session ends unless it is heard from: `None` while it waits in a
    /// join (a known member) or a sync, which end by the group's own deadlines.
    fn expires_at(&self) -> Option<i64> {
        if self.join_waiter.is_some() {
            self.is_new.then(|| self.last_heartbeat + NEW_MEMBER_JOIN_TIMEOUT_MS)
        } else if self.sync_waiter.is_some() {
            None
        } else {
            Some(self.last_heartbeat + i64::from(self.session_timeout_ms))
        }
    }
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp: i64,
}

/// A group as persisted and reloaded (the `GroupMetadataValue` of `__consumer_offsets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSnapshot {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// What DescribeGroups shows of a member.
#[derive(Debug, Clone)]
pub struct MemberSummary {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug)]
struct InitialDelay {
    /// Rebalance time still available for further delays.
    remaining_ms: i64,
}

#[derive(Debug)]
pub struct Group {
    pub id: String,
    state: GroupState,
    /// When the group entered its current state (wall clock): offsets of an `Empty` group
    /// expire counting from here.
    state_timestamp: i64,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    generation: i32,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// `group.instance.id` → member id, for static members.
    static_members: HashMap<String, String>,
    /// Member ids handed out with `MEMBER_ID_REQUIRED`, and when they lapse if unused.
    /// (Ordered, as `pending_sync`: `tick` walks them, and the order decides the replies.)
    pending_members: BTreeMap<String, i64>,
    /// Members of the current generation that have not yet sent SyncGroup, and the deadline.
    pending_sync: BTreeSet<String>,
    sync_deadline: Option<i64>,
    /// When the join phase (PreparingRebalance) ends at the latest.
    join_deadline: Option<i64>,
    initial_delay: Option<InitialDelay>,
    new_member_added: bool,
    /// `group.initial.rebalance.delay.ms`, as of the last join.
    initial_delay_ms: i32,
    offsets: BTreeMap<(String, i32), CommittedOffset>,
    dirty: bool,
}

impl Group {
    pub fn new(id: &str, now: i64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            state_timestamp: now,
            protocol_type: None,
            protocol_name: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: BTreeMap::new(),
            pending_sync: BTreeSet::new(),
            sync_deadline: None,
            join_deadline: None,
            initial_delay: None,
            new_member_added: false,
            initial_delay_ms: Limits::default().initial_rebalance_delay_ms,
            offsets: BTreeMap::new(),
            dirty: false,
        }
    }

    /// Rebuilds a group from its persisted form: `Stable` with its members (who carry on
    /// heartbeating as if nothing happened) or `Empty`.
    pub fn restore(id: &str, snap: GroupSnapshot, now: i64) -> Group {
        let mut g = Group::new(id, snap.state_timestamp);
        g.protocol_type = (!snap.protocol_type.is_empty()).then_some(snap.protocol_type);
        g.generation = snap.generation;
        if snap.members.is_empty() || snap.protocol_name.is_none() {
            return g;
        }
        let protocol = snap.protocol_name.clone().unwrap_or_default();
        for m in snap.members {
            if let Some(instance) = &m.group_instance_id {
                g.static_members.insert(instance.clone(), m.member_id.clone());
            }
            g.members.insert(
                m.member_id.clone(),
                Member {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    protocols: vec![(protocol.clone(), m.subscription)],
                    assignment: m.assignment,
                    join_waiter: None,
                    sync_waiter: None,
                    last_heartbeat: now,
                    is_new: false,
                },
            );
        }
        g.protocol_name = snap.protocol_name;
        g.leader = snap.leader.filter(|l| g.members.contains_key(l));
        if g.leader.is_none() {
            g.leader = g.members.keys().next().cloned();
        }
        g.state = GroupState::Stable;
        g
    }

    /// The persisted form of the group's membership.
    pub fn snapshot(&self) -> GroupSnapshot {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        GroupSnapshot {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            state_timestamp: self.state_timestamp,
            members: self
                .members
                .values()
                .map(|m| MemberSnapshot {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn member_ids(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    pub fn assignment_of(&self, member_id: &str) -> Option<&Bytes> {
        self.members.get(member_id).map(|m| &m.assignment)
    }

    /// Whether the membership or assignment changed since the last call (then the coordinator
    /// persists [`Group::snapshot`]).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    fn transition(&mut self, to: GroupState, now: i64) {
        self.state = to;
        self.state_timestamp = now;
    }

    /// Members as DescribeGroups shows them: metadata and assignment only once `Stable`.
    pub fn member_summaries(&self) -> Vec<MemberSummary> {
        let stable = self.state == GroupState::Stable;
        let protocol = self.protocol_name.clone().unwrap_or_default();
        self.members
            .values()
            .map(|m| MemberSummary {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable { m.metadata(&protocol) } else { Bytes::new() },
                assignment: if stable { m.assignment.clone() } else { Bytes::new() },
            })
            .collect()
    }

    /// The chosen protocol's metadata of every member (for reading consumer subscriptions).
    pub fn member_metadata(&self) -> Vec<Bytes> {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        self.members.values().map(|m| m.metadata(&protocol)).collect()
    }

    // ---- JoinGroup ----

    pub fn join(&mut self, req: JoinRequest, token: Token, now: i64, limits: &Limits) -> Vec<Reply> {
        let mut out = vec![];
        let fail = |e: ErrorCode, id: &str| vec![Reply::Join(token, JoinResult::error(e, id))];
        self.initial_delay_ms = limits.initial_rebalance_delay_ms;
        if req.session_timeout_ms < limits.session_timeout_min_ms
            || req.session_timeout_ms > limits.session_timeout_max_ms
        {
            return fail(ErrorCode::InvalidSessionTimeout, &req.member_id);
        }
        if self.state == GroupState::Dead {
            return fail(ErrorCode::CoordinatorNotAvailable, &req.member_id);
        }
        if !self.supports(&req.member_id, &req.protocol_type, &req.protocols) {
            return fail(ErrorCode::InconsistentGroupProtocol, &req.member_id);
        }
        if req.member_id.is_empty() {
            self.join_unknown_member(req, token, now, limits, &mut out);
        } else {
            self.join_known_member(req, token, now, &mut out);
        }
        out
    }

    /// Whether a member may join with this protocol type and these protocols: the first member
    /// sets the type; later ones must match it and share a protocol with every other member.
    fn supports(&self, member_id: &str, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let others: Vec<&Member> = self.members.values().filter(|m| m.member_id != member_id).collect();
        protocols
            .iter()
            .any(|(name, _)| others.iter().all(|m| m.protocols.iter().any(|(n, _)| n == name)))
    }

    fn join_unknown_member(&mut self, req: JoinRequest, token: Token, now: i64, limits: &Limits, out: &mut Vec<Reply>) {
        if let Some(instance) = req.group_instance_id.clone() {
            if let Some(old_id) = self.static_members.get(&instance).cloned() {
                self.replace_static_member(&old_id, req, token, now, out);
                return;
            }
        }
        if self.members.len() + self.pending_members.len() >= limits.members_max {
            out.push(Reply::Join(
                token,
                JoinResult::error(ErrorCode::GroupMaxSizeReached, &req.member_id),
            ));
            return;
        }
        if req.require_known_member_id && req.group_instance_id.is_none() {
            let id = req.new_member_id.clone();
            self.pending_members
                .insert(id.clone(), now + i64::from(req.session_timeout_ms));
            out.push(Reply::Join(token, JoinResult::error(ErrorCode::MemberIdRequired, &id)));
            return;
        }
        let id = req.new_member_id.clone();
        self.add_member_and_rebalance(id, req, token, now, out);
    }

    fn join_known_member(&mut self, req: JoinRequest, token: Token, now: i64, out: &mut Vec<Reply>) {
        let id = req.member_id.clone();
        if self.pending_members.remove(&id).is_some() {
            self.add_member_and_rebalance(id, req, token, now, out);
            return;
        }
        if let Err(e) = self.check_member(&id, req.group_instance_id.as_deref()) {
            out.push(Reply::Join(token, JoinResult::error(e, &id)));
            return;
        }
        if let Some(instance) = &req.group_instance_id {
            if !self.static_members.contains_key(instance) {
                // A known member naming an instance id the group does not know (Kafka's
                // `groupInstanceIdNotFound`).
                out.push(Reply::Join(token, JoinResult::error(ErrorCode::UnknownMemberId, &id)));
                return;
            }
        }
        match self.state {
            GroupState::PreparingRebalance => self.update_member_and_rebalance(&id, req, token, now, out),
            GroupState::CompletingRebalance => {
                if self.members[&id].same_protocols(&req.protocols) {
                    // The member missed our answer: send it again.
                    let result = self.join_result_for(&id);
                    out.push(Reply::Join(token, result));
                } else {
                    self.update_member_and_rebalance(&id, req, token, now, out);
                }
            }
            GroupState::Stable => {
                let is_leader = self.leader.as_deref() == Some(id.as_str());
                if is_leader || !self.members[&id].same_protocols(&req.protocols) {
                    self.update_member_and_rebalance(&id, req, token, now, out);
                } else {
                    // A follower rejoining with the same metadata: nothing changes.
                    let mut result = self.join_result_for(&id);
                    result.members.clear();
                    out.push(Reply::Join(token, result));
                }
            }
            GroupState::Empty | GroupState::Dead => {
                out.push(Reply::Join(token, JoinResult::error(ErrorCode::UnknownMemberId, &id)));
            }
        }
    }

    /// Checks that `member_id` is a member and, for a static member, that it is the current
    /// holder of its instance id.
    fn check_member(&self, member_id: &str, instance: Option<&str>) -> Result<(), ErrorCode> {
        if let Some(instance) = instance {
            if let Some(current) = self.static_members.get(instance) {
                if current != member_id {
                    return Err(ErrorCode::FencedInstanceId);
                }
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ErrorCode::UnknownMemberId);
        }
        Ok(())
    }

    fn join_result_for(&self, member_id: &str) -> JoinResult {
        let is_leader = self.leader.as_deref() == Some(member_id);
        let protocol = self.protocol_name.clone().unwrap_or_default();
        JoinResult {
            error: ErrorCode::None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.members
                    .values()
                    .map(|m| JoinedMember {
                        member_id: m.member_id.clone(),
                        group_instance_id: m.group_instance_id.clone(),
                        metadata: m.metadata(&protocol),
                    })
                    .collect()
            } else {
                vec![]
            },
        }
    }

    fn add_member_and_rebalance(&mut self, id: String, req: JoinRequest, token: Token, now: i64, out: &mut Vec<Reply>) {
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(id.clone());
        }
        if self.initial_delay.is_some() {
            self.new_member_added = true;
        }
        if let Some(instance) = &req.group_instance_id {
            self.static_members.insert(instance.clone(), id.clone());
        }
        self.members.insert(
            id.clone(),
            Member {
                member_id: id,
                group_instance_id: req.group_instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocol_type: req.protocol_type,
                protocols: req.protocols,
                assignment: Bytes::new(),
                join_waiter: Some(token),
                sync_waiter: None,
                last_heartbeat: now,
                is_new: true,
            },
        );
        self.maybe_prepare_rebalance(now, out);
        self.try_complete_join(now, out);
    }

    fn update_member_and_rebalance(
        &mut self,
        id: &str,
        req: JoinRequest,
        token: Token,
        now: i64,
        out: &mut Vec<Reply>,
    ) {
        let Some(m) = self.members.get_mut(id) else {
            return;
        };
        if let Some(old) = m.join_waiter.replace(token) {
            out.push(Reply::Join(old, JoinResult::error(ErrorCode::RebalanceInProgress, id)));
        }
        m.protocols = req.protocols;
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.last_heartbeat = now;
        self.maybe_prepare_rebalance(now, out);
        self.try_complete_join(now, out);
    }

    /// A static member came back with no member id (a restart): it takes over its instance's
    /// membership under a new id, fencing the old one. A stable group whose protocol does not
    /// change keeps its assignment: no rebalance (KIP-345).
    fn replace_static_member(&mut self, old_id: &str, req: JoinRequest, token: Token, now: i64, out: &mut Vec<Reply>) {
        let Some(mut m) = self.members.remove(old_id) else {
            return;
        };
        let new_id = req.new_member_id.clone();
        if let Some(t) = m.join_waiter.take() {
            out.push(Reply::Join(t, JoinResult::error(ErrorCode::FencedInstanceId, old_id)));
        }
        if let Some(t) = m.sync_waiter.take() {
            out.push(Reply::Sync(t, SyncResult::error(ErrorCode::FencedInstanceId)));
        }
        let old_leader = self.leader.clone();
        if old_leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        m.member_id = new_id.clone();
        m.protocols = req.protocols;
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.last_heartbeat = now;
        m.join_waiter = Some(token);
        if let Some(instance) = &m.group_instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        self.members.insert(new_id.clone(), m);
        match self.state {
            GroupState::Stable => {
                if self.select_protocol().as_deref() == self.protocol_name.as_deref() {
                    let m = self.members.get_mut(&new_id).expect("just inserted");
                    m.join_waiter = None;
                    self.dirty = true;
                    // The old leader id is returned, so a returning leader does not compute a
                    // new assignment that a stable group would never hand out.
                    out.push(Reply::Join(
                        token,
                        JoinResult {
                            error: ErrorCode::None,
                            generation: self.generation,
                            protocol_type: self.protocol_type.clone(),
                            protocol_name: self.protocol_name.clone(),
                            leader: old_leader.unwrap_or_default(),
                            member_id: new_id,
                            members: vec![],
                        },
                    ));
                } else {
                    self.maybe_prepare_rebalance(now, out);
                }
            }
            GroupState::CompletingRebalance => self.maybe_prepare_rebalance(now, out),
            GroupState::PreparingRebalance => self.try_complete_join(now, out),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// The protocol every member supports that most members prefer.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| self.members.values().all(|m| m.protocols.iter().any(|(p, _)| p == *n)))
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for m in self.members.values() {
            if let Some((choice, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                if let Some(v) = votes.iter_mut().find(|(_, c)| *c == choice) {
                    v.0 += 1;
                }
            }
        }
        // Most votes; among equals, the first member's preference.
        let best = votes.iter().map(|(v, _)| *v).max()?;
        votes.into_iter().find(|(v, _)| *v == best).map(|(_, c)| c.clone())
    }

    fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    fn maybe_prepare_rebalance(&mut self, now: i64, out: &mut Vec<Reply>) {
        if matches!(
            self.state,
            GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance
        ) {
            self.prepare_rebalance(now, out);
        }
    }

    fn prepare_rebalance(&mut self, now: i64, out: &mut Vec<Reply>) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(t) = m.sync_waiter.take() {
                    out.push(Reply::Sync(t, SyncResult::error(ErrorCode::RebalanceInProgress)));
                }
            }
        }
        self.pending_sync.clear();
        self.sync_deadline = None;
        let timeout = self.rebalance_timeout_ms();
        if self.state == GroupState::Empty {
            let delay = i64::from(self.initial_delay_ms);
            self.initial_delay = Some(InitialDelay {
                remaining_ms: (timeout - delay).max(0),
            });
            self.new_member_added = false;
            self.join_deadline = Some(now + delay);
        } else {
            self.initial_delay = None;
            self.join_deadline = Some(now + timeout);
        }
        self.transition(GroupState::PreparingRebalance, now);
        self.try_complete_join(now, out);
    }

    /// Ends the join phase early once every member (and no pending one) has rejoined. The
    /// initial delay of an empty group is always waited out.
    fn try_complete_join(&mut self, now: i64, out: &mut Vec<Reply>) {
        if self.state == GroupState::PreparingRebalance
            && self.initial_delay.is_none()
            && self.pending_members.is_empty()
            && self.members.values().all(|m| m.join_waiter.is_some())
        {
            self.complete_join(now, out);
        }
    }

    fn complete_join(&mut self, now: i64, out: &mut Vec<Reply>) {
        self.initial_delay = None;
        self.join_deadline = None;
        // Dynamic members that did not rejoin in time leave the group; static ones stay.
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in gone {
            self.remove_member_only(&id, out);
        }
        if self.members.is_empty() {
            self.generation += 1;
            self.protocol_name = None;
            self.leader = None;
            self.transition(GroupState::Empty, now);
            self.dirty = true;
            return;
        }
        let leader_joined = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .is_some_and(|m| m.join_waiter.is_some());
        if !leader_joined {
            match self.members.values().find(|m| m.join_waiter.is_some()) {
                Some(m) => self.leader = Some(m.member_id.clone()),
                None => {
                    // Only static members that have not rejoined remain: wait another round
                    // for them to rejoin or for their sessions to end.
                    self.join_deadline = Some(now + self.rebalance_timeout_ms());
                    return;
                }
            }
        }
        self.generation += 1;
        self.protocol_name = self.select_protocol();
        self.transition(GroupState::CompletingRebalance, now);
        self.pending_sync = self.members.keys().cloned().collect();
        self.sync_deadline = Some(now + self.rebalance_timeout_ms());
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result_for(&id);
            let m = self.members.get_mut(&id).expect("listed");
            if let Some(t) = m.join_waiter.take() {
                out.push(Reply::Join(t, result));
            }
            m.last_heartbeat = now;
            m.is_new = false;
        }
    }

    /// Removes a member, answering anything it waits on with `UNKNOWN_MEMBER_ID`, without
    /// changing the group's state.
    fn remove_member_only(&mut self, id: &str, out: &mut Vec<Reply>) {
        let Some(m) = self.members.remove(id) else {
            return;
        };
        if let Some(t) = m.join_waiter {
            out.push(Reply::Join(t, JoinResult::error(ErrorCode::UnknownMemberId, id)));
        }
        if let Some(t) = m.sync_waiter {
            out.push(Reply::Sync(t, SyncResult::error(ErrorCode::UnknownMemberId)));
        }
        if let Some(instance) = &m.group_instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(id) {
                self.static_members.remove(instance);
            }
        }
        self.pending_sync.remove(id);
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.keys().next().cloned();
        }
    }

    /// A member left or its session ended: it goes, and the others rebalance.
    fn remove_member_and_update(&mut self, id: &str, now: i64, out: &mut Vec<Reply>) {
        self.remove_member_only(id, out);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now, out),
            GroupState::PreparingRebalance => self.try_complete_join(now, out),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Starts a rebalance from outside (the coordinator could not persist an assignment).
    pub fn rebalance(&mut self, now: i64) -> Vec<Reply> {
        let mut out = vec![];
        self.maybe_prepare_rebalance(now, &mut out);
        out
    }

    // ---- SyncGroup ----

    pub fn sync(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        token: Token,
        now: i64,
    ) -> Vec<Reply> {
        let mut out = vec![];
        let fail = |e| vec![Reply::Sync(token, SyncResult::error(e))];
        if self.state == GroupState::Dead {
            return fail(ErrorCode::CoordinatorNotAvailable);
        }
        if let Err(e) = self.check_member(member_id, group_instance_id) {
            return fail(e);
        }
        if generation != self.generation {
            return fail(ErrorCode::IllegalGeneration);
        }
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || protocol_name.is_some_and(|n| Some(n) != self.protocol_name.as_deref())
        {
            return fail(ErrorCode::InconsistentGroupProtocol);
        }
        match self.state {
            GroupState::Empty => return fail(ErrorCode::UnknownMemberId),
            GroupState::PreparingRebalance => return fail(ErrorCode::RebalanceInProgress),
            GroupState::CompletingRebalance => {
                self.pending_sync.remove(member_id);
                let m = self.members.get_mut(member_id).expect("checked");
                m.last_heartbeat = now;
                if let Some(old) = m.sync_waiter.replace(token) {
                    out.push(Reply::Sync(old, SyncResult::error(ErrorCode::RebalanceInProgress)));
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.remove(&m.member_id).unwrap_or_default();
                    }
                    self.transition(GroupState::Stable, now);
                    self.dirty = true;
                    for m in self.members.values_mut() {
                        if let Some(t) = m.sync_waiter.take() {
                            out.push(Reply::Sync(
                                t,
                                SyncResult {
                                    error: ErrorCode::None,
                                    protocol_type: self.protocol_type.clone(),
                                    protocol_name: self.protocol_name.clone(),
                                    assignment: m.assignment.clone(),
                                },
                            ));
                        }
                    }
                }
            }
            GroupState::Stable => {
                self.pending_sync.remove(member_id);
                let m = self.members.get_mut(member_id).expect("checked");
                m.last_heartbeat = now;
                out.push(Reply::Sync(
                    token,
                    SyncResult {
                        error: ErrorCode::None,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol_name.clone(),
                        assignment: m.assignment.clone(),
                    },
                ));
            }
            GroupState::Dead => return fail(ErrorCode::CoordinatorNotAvailable),
        }
        if self.pending_sync.is_empty() {
            self.sync_deadline = None;
        }
        out
    }

    // ---- Heartbeat ----

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
        now: i64,
    ) -> ErrorCode {
        if self.state == GroupState::Dead {
            return ErrorCode::CoordinatorNotAvailable;
        }
        if let Err(e) = self.check_member(member_id, group_instance_id) {
            return e;
        }
        if generation != self.generation {
            return ErrorCode::IllegalGeneration;
        }
        match self.state {
            GroupState::Empty => ErrorCode::UnknownMemberId,
            GroupState::Dead => ErrorCode::CoordinatorNotAvailable,
            GroupState::PreparingRebalance => {
                self.touch(member_id, now);
                ErrorCode::RebalanceInProgress
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.touch(member_id, now);
                ErrorCode::None
            }
        }
    }

    fn touch(&mut self, member_id: &str, now: i64) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat = now;
        }
    }

    // ---- LeaveGroup ----

    /// Members leaving: by member id, or by instance id alone (v3+). One error per member.
    pub fn leave(&mut self, leaving: &[(String, Option<String>)], now: i64) -> (Vec<ErrorCode>, Vec<Reply>) {
        let mut out = vec![];
        let mut errors = vec![];
        for (member_id, instance) in leaving {
            let id = match (member_id.is_empty(), instance) {
                (true, Some(i)) => match self.static_members.get(i) {
                    Some(id) => id.clone(),
                    None => {
                        errors.push(ErrorCode::UnknownMemberId);
                        continue;
                    }
                },
                _ => member_id.clone(),
            };
            if self.pending_members.remove(&id).is_some() {
                errors.push(ErrorCode::None);
                self.try_complete_join(now, &mut out);
                continue;
            }
            match self.check_member(&id, instance.as_deref()) {
                Ok(()) => {
                    self.remove_member_and_update(&id, now, &mut out);
                    errors.push(ErrorCode::None);
                }
                Err(e) => errors.push(e),
            }
        }
        (errors, out)
    }

    // ---- Timers ----

    /// The earliest time at which `tick` may change something (a pending member id lapsing,
    /// the join or sync phase ending, a session ending), or `None` when no timer runs. Hearing
    /// from a member only moves its own deadline later, so after a heartbeat or a commit the
    /// previous answer is still a safe (early) one.
    pub fn next_deadline(&self) -> Option<i64> {
        let join = (self.state == GroupState::PreparingRebalance)
            .then_some(self.join_deadline)
            .flatten();
        let sync = matches!(self.state, GroupState::CompletingRebalance | GroupState::Stable)
            .then_some(self.sync_deadline)
            .flatten();
        self.members
            .values()
            .filter_map(Member::expires_at)
            .chain(self.pending_members.values().copied())
            .chain(join)
            .chain(sync)
            .min()
    }

    /// Advances the group's timers to `now`: lapsed pending member ids, the end of the join
    /// phase (or of one round of the initial delay), members that did not sync in time, and
    /// members whose session ended.
    pub fn tick(&mut self, now: i64) -> Vec<Reply> {
        let mut out = vec![];
        let lapsed: Vec<String> = self
            .pending_members
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in lapsed {
            self.pending_members.remove(&id);
            self.try_complete_join(now, &mut out);
        }
        if self.state == GroupState::PreparingRebalance && self.join_deadline.is_some_and(|d| d <= now) {
            match &mut self.initial_delay {
                Some(delay) if self.new_member_added && delay.remaining_ms > 0 => {
                    // Members are still arriving: wait one more round, within the rebalance timeout.
                    let step = i64::from(self.initial_delay_ms).min(delay.remaining_ms);
                    delay.remaining_ms -= step;
                    self.new_member_added = false;
                    self.join_deadline = Some(now + step);
                }
                _ => self.complete_join(now, &mut out),
            }
        }
        if matches!(self.state, GroupState::CompletingRebalance | GroupState::Stable)
            && self.sync_deadline.is_some_and(|d| d <= now)
        {
            self.sync_deadline = None;
            let missing: Vec<String> = std::mem::take(&mut self.pending_sync).into_iter().collect();
            if !missing.is_empty() {
                for id in &missing {
                    self.remove_member_only(id, &mut out);
                }
                self.prepare_rebalance(now, &mut out);
                self.try_complete_join(now, &mut out);
            }
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.alive(now))
            .map(|m| m.member_id.clone())
            .collect();
        for id in expired {
            self.remove_member_and_update(&id, now, &mut out);
        }
        out
    }

    // ---- Offsets ----

    /// Whether a commit (or a fetch of offsets by a member, or its TxnOffsetCommit) from this
    /// member and generation is accepted. A generation below 0 is a consumer that manages its
    /// own partitions: accepted while the group has no members.
    pub fn check_commit(&mut self, member_id: &str, instance: Option<&str>, generation: i32, now: i64) -> ErrorCode {
        if self.state == GroupState::Dead {
            return ErrorCode::CoordinatorNotAvailable;
        }
        if generation < 0 && self.state == GroupState::Empty {
            return ErrorCode::None;
        }
        if self.pending_members.contains_key(member_id) {
            return ErrorCode::UnknownMemberId;
        }
        if let Err(e) = self.check_member(member_id, instance) {
            return e;
        }
        if generation != self.generation {
            return ErrorCode::IllegalGeneration;
        }
        if self.state == GroupState::CompletingRebalance {
            return ErrorCode::RebalanceInProgress;
        }
        self.touch(member_id, now);
        ErrorCode::None
    }

    /// Records a committed offset (after it has been written).
    pub fn put_offset(&mut self, topic: &str, partition: i32, offset: CommittedOffset) {
        self.offsets.insert((topic.to_string(), partition), offset);
    }

    pub fn remove_offset(&mut self, topic: &str, partition: i32) -> bool {
        self.offsets.remove(&(topic.to_string(), partition)).is_some()
    }

    pub fn offset(&self, topic: &str, partition: i32) -> Option<&CommittedOffset> {
        self.offsets.get(&(topic.to_string(), partition))
    }

    pub fn offsets(&self) -> impl Iterator<Item = (&(String, i32), &CommittedOffset)> {
        self.offsets.iter()
    }

    pub fn has_offsets(&self) -> bool {
        !self.offsets.is_empty()
    }

    /// Offsets that `offsets.retention.minutes` lets go at `now`: all of an `Empty` consumer
    /// group's once it has been empty that long; for a group that only stores offsets (no
    /// protocol), each one that long after its commit. Members keep a group's offsets alive.
    pub fn expired_offsets(&self, now: i64, retention_ms: i64) -> Vec<(String, i32)> {
        if self.state != GroupState::Empty {
            return vec![];
        }
        let by_group = self.protocol_type.is_some();
        self.offsets
            .iter()
            .filter(|(_, o)| {
                let base = if by_group {
                    self.state_timestamp
                } else {
                    o.commit_timestamp
                };
                base.saturating_add(retention_ms) <= now
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Whether an `Empty` group with nothing left can be forgotten.
    pub fn is_disposable(&self) -> bool {
        self.is_disposable_without(0)
    }

    /// Whether the group can be forgotten once `expiring` of its offsets are gone.
    pub fn is_disposable_without(&self, expiring: usize) -> bool {
        self.state == GroupState::Empty && self.offsets.len() <= expiring && self.pending_members.is_empty()
    }

    /// DeleteGroups: only a group without members can go.
    pub fn check_delete(&self) -> ErrorCode {
        match self.state {
            GroupState::Empty => ErrorCode::None,
            GroupState::Dead => ErrorCode::GroupIdNotFound,
            _ => ErrorCode::NonEmptyGroup,
        }
    }
}
